#pragma once
/// @file
/// Weighted k-means for vector-quantization codebooks: k-means++ seeding (Arthur & Vassilvitskii,
/// SODA 2007), then Lloyd iterations, under the distance Σ_j h_j (x_j − c_j)² with one
/// non-negative weight per dimension (GPTQ-PQ passes the Hessian diagonal of the sub-vector's
/// input columns, so a dimension whose input is larger counts for more).
///
/// Deterministic for a seed on every platform: the random numbers come from SplitMix64 and are
/// mapped to [0, 1) by hand (the standard distributions are implementation-defined), sums are in
/// double and in point order, and ties go to the lowest centroid index, whichever
/// nearest-centroid kernel (backends/centroids.hpp) searches.
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "qforge/backends/centroids.hpp"
#include "qforge/core/error.hpp"
#include "qforge/core/random.hpp"

namespace qforge {

struct KmeansOptions {
    int iterations = 25;       ///< Lloyd iterations at most (stops earlier when no point moves)
    std::uint64_t seed = 0;    ///< k-means++'s random choices
    /// The nearest-centroid search (a backend's Fp32Functions::nearest_centroids); null: the
    /// scalar oracle. Every kernel gives the same bits, so the result does not depend on it.
    NearestCentroidsFn nearest = nullptr;
};

struct KmeansResult {
    std::vector<float> centroids;   ///< k x d, row-major
    std::vector<std::uint16_t> assignment;  ///< per point, its centroid (k <= 65536)
    double inertia = 0.0;           ///< Σ over points of the weighted squared distance to its centroid
    int iterations = 0;             ///< Lloyd iterations run
};

namespace detail {
/// Centroids k x d (row-major) as d x k, the layout the nearest-centroid search takes.
inline void transpose_centroids(const float* c, int k, int d, float* ct) noexcept {
    for (int i = 0; i < k; ++i)
        for (int j = 0; j < d; ++j) ct[std::size_t(j) * std::size_t(k) + std::size_t(i)] = c[std::size_t(i) * std::size_t(d) + std::size_t(j)];
}
}  // namespace detail

/// k-means of `points` (count x d, row-major) into k centroids under the weights `h`: d values
/// shared by every point, or count x d (each point's own, e.g. the Hessian diagonal of the
/// columns it came from); each >= 0 and finite, and a centroid moves to its points' weighted
/// mean per dimension (the plain mean where a dimension's weights are all zero). Fewer distinct
/// points than k leaves some centroids repeated; a cluster that empties keeps its centroid.
/// Throws InvalidArgument for k < 1, k > 65536, d < 1, a size mismatch or a bad weight,
/// InvalidData for a non-finite point.
inline KmeansResult kmeans(std::span<const float> points, int d, int k, std::span<const float> h, const KmeansOptions& o = {}) {
    if (d < 1 || k < 1 || k > 65536) throw InvalidArgument("k-means: needs d >= 1 and 1 <= k <= 65536, got d = " + std::to_string(d) + ", k = " + std::to_string(k));
    if (points.size() % std::size_t(d) != 0 || points.empty())
        throw InvalidArgument("k-means: " + std::to_string(points.size()) + " values are not a positive number of " + std::to_string(d) + "-dimensional points");
    const std::size_t n = points.size() / std::size_t(d), D = std::size_t(d);
    if (h.size() != D && h.size() != n * D)
        throw InvalidArgument("k-means: " + std::to_string(h.size()) + " weights for " + std::to_string(n) + " points of " + std::to_string(d) +
                              " dimensions (d or count x d)");
    for (const float v : h)
        if (!(v >= 0.0f) || !std::isfinite(v)) throw InvalidArgument("k-means: a weight is negative or not finite");
    for (const float v : points)
        if (!std::isfinite(v)) throw InvalidData("k-means: a point has a non-finite coordinate");
    const float* x = points.data();
    const bool per_point = h.size() != D || n == 1;
    const std::size_t h_stride = per_point ? D : 0;
    const auto wt = [&](std::size_t i) { return h.data() + i * h_stride; };
    const NearestCentroidsFn search = o.nearest ? o.nearest : &CentroidKernels<Scalar>::nearest;
    std::vector<std::uint16_t> codes(n);
    std::vector<double> dist(n);

    KmeansResult r;
    r.centroids.resize(std::size_t(k) * D);
    r.assignment.assign(n, 0);
    SplitMix64 rng{o.seed};
    // k-means++: the first centre uniformly, each next one with probability proportional to a
    // point's distance to its nearest centre so far
    std::vector<double> nearest(n);
    std::size_t first = std::min(n - 1, std::size_t(rng.uniform() * double(n)));
    std::copy_n(x + first * D, D, r.centroids.data());
    // a single centre's distances: the search over one centroid (d x 1 is the centre itself)
    search(x, D, h.data(), h_stride, n, d, r.centroids.data(), 1, codes.data(), nearest.data());
    for (int c = 1; c < k; ++c) {
        double total = 0.0;
        for (const double v : nearest) total += v;
        std::size_t pick = 0;
        if (total > 0.0) {
            const double target = rng.uniform() * total;
            double run = 0.0;
            pick = n - 1;
            for (std::size_t i = 0; i < n; ++i) {
                run += nearest[i];
                if (run > target && nearest[i] > 0.0) {
                    pick = i;
                    break;
                }
            }
        } else {
            rng.next();  // every point is a centre already: repeat the first
        }
        float* cc = r.centroids.data() + std::size_t(c) * D;
        std::copy_n(x + pick * D, D, cc);
        search(x, D, h.data(), h_stride, n, d, cc, 1, codes.data(), dist.data());
        for (std::size_t i = 0; i < n; ++i) nearest[i] = std::min(nearest[i], dist[i]);
    }
    // Lloyd: assign, then move each centre to its points' weighted mean, dimension by dimension
    std::vector<double> sum(std::size_t(k) * D), wsum(sum.size()), plain(sum.size());
    std::vector<std::size_t> count(static_cast<std::size_t>(k));
    std::vector<float> ct(r.centroids.size());
    bool moved = true;
    for (int it = 0; it <= o.iterations && moved; ++it) {
        moved = false;
        r.inertia = 0.0;
        detail::transpose_centroids(r.centroids.data(), k, d, ct.data());
        search(x, D, h.data(), h_stride, n, d, ct.data(), k, codes.data(), dist.data());
        for (std::size_t i = 0; i < n; ++i) {
            if (it == 0 || r.assignment[i] != codes[i]) moved = true;
            r.assignment[i] = codes[i];
            r.inertia += dist[i];
        }
        if (!moved || it == o.iterations) break;
        std::fill(sum.begin(), sum.end(), 0.0);
        std::fill(wsum.begin(), wsum.end(), 0.0);
        std::fill(plain.begin(), plain.end(), 0.0);
        std::fill(count.begin(), count.end(), 0);
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t c = r.assignment[i];
            const float* wi = wt(i);
            ++count[c];
            for (std::size_t j = 0; j < D; ++j) {
                sum[c * D + j] += double(wi[j]) * double(x[i * D + j]);
                wsum[c * D + j] += double(wi[j]);
                plain[c * D + j] += double(x[i * D + j]);
            }
        }
        for (std::size_t c = 0; c < std::size_t(k); ++c)
            if (count[c])
                for (std::size_t j = 0; j < D; ++j)
                    r.centroids[c * D + j] = float(wsum[c * D + j] > 0.0 ? sum[c * D + j] / wsum[c * D + j] : plain[c * D + j] / double(count[c]));
        r.iterations = it + 1;
    }
    return r;
}

}  // namespace qforge
