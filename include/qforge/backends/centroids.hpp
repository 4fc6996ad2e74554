#pragma once
/// @file
/// The nearest-centroid search of vector quantization: k-means' assignment and seeding steps
/// (quantizers/kmeans.hpp) and GPTQ-PQ's rounding of each sub-vector (quantizers/gptq_pq.hpp).
/// For point x (d floats) with non-negative weights h (d floats), the distance to centroid c is
///     D(x, c) = Σ_j h_j (x_j − c_j)²,
/// computed in double as e_j = x_j − c_j, t_j = (h_j · e_j) · e_j, summed from j = 0 upwards
/// (starting at 0.0); the nearest centroid is the lowest index among the smallest distances.
///
/// `CentroidKernels<Scalar>` is the oracle. `CentroidKernels<Simd<Arch>>` puts one point in each
/// double lane of the arch's xsimd batch (AVX2: 4, AVX-512: 8; two or four registers of points
/// per pass) and runs the centroids in order with a strict comparison, so each lane keeps the first minimum: the same operations in
/// the same order, the same codes and distances bit for bit (tests/unit/test_pq.cpp). A product
/// t_j is never fused into the running sum: both kernels keep the compiler from contracting it
/// where FMA is available (optimised GNU-mode builds would otherwise, in the vector TUs only).
/// The scalar search was 76% of a whole-SmolLM2 `gptq:pq2n64g1024c8` run and 39% of
/// `gptq:pq4n16g256` (perf, 2026-12-07); docs/pq.md has the before and after.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "qforge/backends/backend.hpp"

/// Keeps double `t` rounded as a product before it is added (no FMA contraction across it). A
/// macro, not an inline function: the TUs that include this are compiled with different flags.
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && defined(__FMA__)
#define QFORGE_KEEP_ROUNDED(t) __asm__("" : "+x"(t))
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
#define QFORGE_KEEP_ROUNDED(t) __asm__("" : "+w"(t))
#else
#define QFORGE_KEEP_ROUNDED(t) ((void)0)
#endif

namespace qforge {

/// For each of `n` points (point i: d floats at x + i·x_stride; its weights d floats at
/// h + i·h_stride, or h itself for every point when h_stride is 0), the nearest of the k
/// centroids `ct` (transposed: d x k, centroid c's coordinate j at ct[j·k + c]) under the
/// weighted distance above: its index in codes[i] and its distance in dist[i]. Requires
/// 1 <= k <= 65536 (k-means checks); the vector kernels hold d <= 16 in their lanes and hand
/// longer points to the oracle.
using NearestCentroidsFn = void (*)(const float* x, std::size_t x_stride, const float* h, std::size_t h_stride, std::size_t n, int d, const float* ct,
                                    int k, std::uint16_t* codes, double* dist) noexcept;

template <class B>
struct CentroidKernels {
    static_assert(sizeof(B) == 0, "qforge: no nearest-centroid kernels for this backend; include its header");
};

/// The oracle: one point at a time, the centroids in chunks of 256 (each distance summed over j
/// in order; a later chunk replaces the best only when strictly nearer).
template <>
struct CentroidKernels<Scalar> {
    static void nearest(const float* x, std::size_t x_stride, const float* h, std::size_t h_stride, std::size_t n, int d, const float* ct, int k,
                        std::uint16_t* codes, double* dist) noexcept {
        constexpr int chunk = 256;
        double s[chunk];
        const std::size_t K = std::size_t(k);
        for (std::size_t i = 0; i < n; ++i) {
            const float* xi = x + i * x_stride;
            const float* hi = h + i * h_stride;
            double best = 0.0;
            int best_c = -1;
            for (int c0 = 0; c0 < k; c0 += chunk) {
                const int m = std::min(chunk, k - c0);
                for (int c = 0; c < m; ++c) s[c] = 0.0;
                for (int j = 0; j < d; ++j) {
                    const double xj = xi[j], hj = hi[j];
                    const float* cj = ct + std::size_t(j) * K + std::size_t(c0);
                    for (int c = 0; c < m; ++c) {
                        const double e = xj - double(cj[c]);
                        double t = hj * e * e;
                        QFORGE_KEEP_ROUNDED(t);
                        s[c] += t;
                    }
                }
                for (int c = 0; c < m; ++c)
                    if (best_c < 0 || s[c] < best) best = s[c], best_c = c0 + c;
            }
            codes[i] = std::uint16_t(best_c);
            dist[i] = best;
        }
    }
};

}  // namespace qforge

#if __has_include(<xsimd/xsimd.hpp>)
#include <xsimd/xsimd.hpp>

namespace qforge {
namespace detail {
/// Points in passes of U registers of the arch's double lanes; a last pass that is not full
/// repeats its last point in the spare lanes and stores only the real ones. DC > 0 fixes d at
/// compile time (the loops over coordinates and registers unroll and the points stay in
/// registers); 0 reads `d_run`. Templated on the arch, so each instruction set's TU compiles its
/// own symbols with its own flags.
template <class Arch, int DC, int U>
void nearest_centroids_lanes(const float* x, std::size_t x_stride, const float* h, std::size_t h_stride, std::size_t n, int d_run, const float* ct, int k,
                             std::uint16_t* codes, double* dist) noexcept {
    using V = xsimd::batch<double, typename Arch::xsimd_float_arch>;
    constexpr int L = int(V::size), P = L * U;
    const int d = DC > 0 ? DC : d_run;
    alignas(64) double xb[16 * P], hb[16 * P], out_best[P], out_index[P];
    const std::size_t K = std::size_t(k);
    const auto distances = [&](int c, V* s) {
#pragma GCC unroll 16
        for (int j = 0; j < d; ++j) {
            const V cj(static_cast<double>(ct[std::size_t(j) * K + std::size_t(c)]));
#pragma GCC unroll 8
            for (int u = 0; u < U; ++u) {
                const V e = V::load_aligned(xb + j * P + u * L) - cj;
                V t = (V::load_aligned(hb + j * P + u * L) * e) * e;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
                __asm__("" : "+v"(t.data));  // the product stays rounded: no FMA contraction into the sum
#endif
                s[u] = j == 0 ? t : s[u] + t;  // 0.0 + t is t: t >= +0
            }
        }
    };
    for (std::size_t i0 = 0; i0 < n; i0 += P) {
        const std::size_t count = std::min(std::size_t(P), n - i0);
        for (std::size_t l = 0; l < std::size_t(P); ++l) {
            const std::size_t p = i0 + std::min(l, count - 1);
            const float* xi = x + p * x_stride;
            const float* hi = h + p * h_stride;
            for (int j = 0; j < d; ++j) xb[j * P + int(l)] = xi[j], hb[j * P + int(l)] = hi[j];
        }
        V best[U], index[U];
        distances(0, best);
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) index[u] = V(0.0);
        const V one(1.0);
        V cv(0.0);
        for (int c = 1; c < k; ++c) {
            V s[U];
            distances(c, s);
            cv = cv + one;  // c, exactly (integers below 2^53)
#pragma GCC unroll 8
            for (int u = 0; u < U; ++u) {
                const auto nearer = s[u] < best[u];  // strict: each lane keeps its first minimum
                best[u] = xsimd::select(nearer, s[u], best[u]);
                index[u] = xsimd::select(nearer, cv, index[u]);
            }
        }
        for (int u = 0; u < U; ++u) best[u].store_aligned(out_best + u * L), index[u].store_aligned(out_index + u * L);
        for (std::size_t l = 0; l < count; ++l) {
            codes[i0 + l] = std::uint16_t(out_index[l]);
            dist[i0 + l] = out_best[l];
        }
    }
}
}  // namespace detail

/// d = 1, 2 and 4 (PQ's usual sub-vector lengths) compiled as constants, four registers of points
/// for d <= 2; d up to 16 read at run time; longer points go to the oracle.
template <class Arch>
struct CentroidKernels<Simd<Arch>> {
    static void nearest(const float* x, std::size_t x_stride, const float* h, std::size_t h_stride, std::size_t n, int d, const float* ct, int k,
                        std::uint16_t* codes, double* dist) noexcept {
        switch (d) {
            case 1: return detail::nearest_centroids_lanes<Arch, 1, 4>(x, x_stride, h, h_stride, n, d, ct, k, codes, dist);
            case 2: return detail::nearest_centroids_lanes<Arch, 2, 4>(x, x_stride, h, h_stride, n, d, ct, k, codes, dist);
            case 4: return detail::nearest_centroids_lanes<Arch, 4, 2>(x, x_stride, h, h_stride, n, d, ct, k, codes, dist);
            default:
                if (d > 16) return CentroidKernels<Scalar>::nearest(x, x_stride, h, h_stride, n, d, ct, k, codes, dist);
                return detail::nearest_centroids_lanes<Arch, 0, 2>(x, x_stride, h, h_stride, n, d, ct, k, codes, dist);
        }
    }
};

}  // namespace qforge
#endif
