#pragma once
/// @file
/// GPTQ-PQ: product quantization inside GPTQ's column loop (the seed project's "GPTQ + PQ";
/// van Baalen et al., "GPTVQ", 2024, for the same idea with other codebook shapes). The layout
/// is formats/pq.hpp's: sub-vectors of d consecutive columns, a codebook of n centroids per block
/// of 64 rows × g·d/64 columns.
///
/// The loop, on H's upper inverse Cholesky factor U exactly as scalar GPTQ (quantizers/gptq.hpp:
/// dead inputs, damping raised until positive definite, lazy batches of columns):
/// 1. when the loop reaches a codebook block's first column, its codebook is fitted by k-means
///    (quantizers/kmeans.hpp) on the block's sub-vectors as they are at that point (error-fed
///    by every earlier column), each dimension weighted by the Hessian diagonal H_jj of the
///    column it came from, then rounded to its storage (fp16 or int8);
/// 2. every d columns, each row's sub-vector takes its nearest stored centroid under the same
///    weights, and the error is fed back column by column through U exactly as GPTQ does for a
///    scalar grid: for i in the sub-vector, e_i = (w_i − q_i) / U_ii and w_j −= e_i U_ij for
///    every later j (the sub-vector's own later columns included, so the d × d block of U acts on
///    the whole vector's error: E = (W_blk − Q_blk) U_blk⁻¹).
/// With d = 1 and one fixed codebook holding a scalar grid's levels, this is scalar GPTQ with
/// that grid, bit for bit (tests/unit/test_pq.cpp). Without error feedback (`error_feedback`
/// false) it is plain PQ: k-means on the original weights, the nearest centroid, nothing fed back.
///
/// Not supported: act-order (columns must stay in their blocks' order).
#include <string>
#include <vector>

#include "qforge/core/parallel.hpp"
#include "qforge/formats/pq.hpp"
#include "qforge/core/validate.hpp"
#include "qforge/quantizers/gptq_factor.hpp"
#include "qforge/quantizers/kmeans.hpp"
#include "qforge/quantizers/quantizer.hpp"

namespace qforge {

struct GptqPqOptions {
    float damp = 0.01f;          ///< fraction of the mean Hessian diagonal added to it
    int block_size = 128;        ///< GPTQ's lazy batch (columns), rounded to whole codebook blocks
    bool error_feedback = true;  ///< false: plain PQ (no feedback, no factorisation)
    KmeansOptions kmeans{};      ///< the codebooks' k-means (the seed is mixed with each block's index)
    /// If set (n x d values), every block uses this codebook as stored, no k-means: a scalar grid's
    /// levels with d = 1 make GPTQ-PQ scalar GPTQ (the check); its values are rounded to storage.
    const std::vector<float>* fixed_codebook = nullptr;
    Backend backend;             ///< the factorisation's and the lazy batches' products, row-block threads
    /// where set, H's checked diagonal and U come from (and go to) this memo (gptq_factor.hpp)
    std::shared_ptr<detail::GptqFactorCache> factor_cache;
};

struct GptqPqResult {
    PqMatrix q;
    float damp = 0.0f;       ///< the damping fraction finally used (0 without feedback)
    int dead_columns = 0;    ///< inputs with H_ii = 0 (weights zeroed)
    std::string note;        ///< what was adjusted, empty if nothing
};

namespace detail {
/// GPTQ-PQ (`hessian` given) or plain PQ (null: unit weights; `o.error_feedback` must be false).
inline GptqPqResult pq_quantize_impl(MatrixView<const float> w, const std::vector<float>* hessian, const PqSpec& spec, const GptqPqOptions& o) {
    if (!hessian && o.error_feedback) throw InvalidArgument("GPTQ-PQ: error feedback needs the input Hessian");
    spec.validate();
    require_finite_matrix(w, "GPTQ-PQ weight matrix");
    require_int_shape(w.rows, w.cols, "GPTQ-PQ weight matrix");
    const int rows = int(w.rows), cols = int(w.cols);
    const std::size_t C = std::size_t(cols), R = std::size_t(rows), D = std::size_t(spec.d), N = std::size_t(spec.n);
    if (!(o.damp >= 0.0f) || o.block_size < 1) throw InvalidArgument("GPTQ-PQ: damping must be >= 0 and the block size >= 1");
    if (o.fixed_codebook && o.fixed_codebook->size() != N * D)
        throw InvalidArgument("GPTQ-PQ: the fixed codebook has " + std::to_string(o.fixed_codebook->size()) + " values, n x d = " + std::to_string(N * D));

    GptqPqResult res;
    res.q = PqMatrix(spec, rows, cols);  // checks cols against d
    PqMatrix& q = res.q;
    std::vector<float> wk(R * C);
    // without a Hessian (plain PQ of `pq_quantize`): every dimension weighs 1, no input is dead
    auto hd = hessian ? detail::hessian_diagonal(o.factor_cache.get(), *hessian, C, "GPTQ-PQ")
                      : detail::HessianDiagonal{std::vector<float>(C, 1.0f), std::vector<bool>(C, false), 0};
    const std::vector<float>& diag = hd.diag;
    const std::vector<bool>& dead = hd.dead;
    res.dead_columns = hd.dead_count;
    const int threads = o.backend.threads();
    parallel_for(R, threads, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t c = 0; c < C; ++c) wk[r * C + c] = dead[c] ? 0.0f : w(r, c);
    }, grain_for(C));
    std::vector<float> u;
    if (o.error_feedback) {
        std::vector<int> order(C);
        for (std::size_t i = 0; i < C; ++i) order[i] = int(i);
        auto f = detail::gptq_inverse_factor(o.factor_cache.get(), *hessian, order, diag, o.damp, o.backend);
        u = std::move(f.u);
        res.damp = f.damp;
        res.note += f.note;
    }
    // k-means and assignment weights: the Hessian diagonal, damped as the factorisation saw it
    std::vector<float> weight(diag);
    {
        double mean = 0.0;
        for (const float v : diag) mean += double(v);
        mean /= double(C);
        for (auto& v : weight) v += float(double(res.damp) * mean);
    }
    if (o.fixed_codebook)
        for (int b = 0; b < q.codebooks(); ++b) q.set_codebook(b, o.fixed_codebook->data());

    const int bc = spec.block_cols();
    // the lazy batch holds whole codebook blocks, so a block's weights have had every earlier
    // column's update when its codebook is fitted
    const int block = bc >= o.block_size ? bc : std::max(bc, o.block_size / bc * bc);
    const std::size_t B = std::size_t(block);
    std::vector<float> panel(C * B), err(R * B);
    const Fp32Functions& fns = o.backend.host_fp32();
    const int row_blocks = q.block_row_count(), per_row = q.subvectors_per_row();
    for (int i1 = 0; i1 < cols; i1 += block) {
        const int i2 = std::min(cols, i1 + block), bs = i2 - i1;
        parallel_for(std::size_t(row_blocks), threads, [&](std::size_t b0, std::size_t b1) {
            std::vector<float> points, pw, ct(N * D);
            std::vector<std::uint16_t> codes(PqSpec::block_rows);
            std::vector<double> dist(PqSpec::block_rows);
            int transposed = -1;  // the codebook held in ct
            for (std::size_t rb = b0; rb < b1; ++rb) {
                const int r0 = int(rb) * PqSpec::block_rows, r1 = std::min(rows, r0 + PqSpec::block_rows);
                for (int k = i1; k < i2; k += spec.d) {
                    const int book = q.codebook_of(r0, k);
                    if (k % bc == 0 && !o.fixed_codebook) {  // the block's first column: fit its codebook
                        const int c1 = std::min(cols, k + bc);
                        points.clear();
                        pw.clear();
                        for (int r = r0; r < r1; ++r)
                            for (int c = k; c < c1; ++c) {
                                points.push_back(wk[std::size_t(r) * C + std::size_t(c)]);
                                pw.push_back(weight[std::size_t(c)]);
                            }
                        KmeansOptions ko = o.kmeans;
                        ko.seed = o.kmeans.seed ^ (0x9E3779B97F4A7C15ull * std::uint64_t(book + 1));
                        if (!ko.nearest) ko.nearest = fns.nearest_centroids;
                        const auto km = kmeans(points, spec.d, spec.n, pw, ko);
                        q.set_codebook(book, km.centroids.data());
                    }
                    const float* cb = q.codebook(book);
                    if (book != transposed) detail::transpose_centroids(cb, spec.n, spec.d, ct.data()), transposed = book;
                    // every row's sub-vector at k has had its earlier columns' feedback (rows are
                    // independent), so the block's rows are searched at once, then fed back
                    fns.nearest_centroids(wk.data() + std::size_t(r0) * C + std::size_t(k), C, weight.data() + k, 0, std::size_t(r1 - r0), spec.d, ct.data(),
                                          spec.n, codes.data(), dist.data());
                    for (int r = r0; r < r1; ++r) {
                        float* row = wk.data() + std::size_t(r) * C;
                        const int code = codes[std::size_t(r - r0)];
                        q.codes[std::size_t(r) * std::size_t(per_row) + std::size_t(k / spec.d)] = std::uint16_t(code);
                        if (!o.error_feedback) continue;
                        const float* c = cb + std::size_t(code) * D;
                        for (int i = k; i < k + spec.d; ++i) {
                            const float e = (row[i] - c[i - k]) / u[std::size_t(i) * C + std::size_t(i)];
                            err[std::size_t(r) * B + std::size_t(i - i1)] = e;
                            fns.axpy(-e, u.data() + std::size_t(i) * C + std::size_t(i + 1), row + i + 1, i2 - i - 1);
                        }
                    }
                }
            }
        }, 1);
        if (i2 == cols || !o.error_feedback) continue;
        // lazy batch: W[:, i2:] -= E U[i1:i2, i2:], one product over all rows (as GPTQ's)
        const std::size_t rest = std::size_t(cols - i2);
        constexpr std::size_t tile = 64;
        parallel_for((rest + tile - 1) / tile, threads, [&](std::size_t t0, std::size_t t1) {
            for (std::size_t j0 = t0 * tile; j0 < std::min(rest, t1 * tile); j0 += tile)
                for (std::size_t i = 0; i < std::size_t(bs); ++i) {
                    const float* from = u.data() + (std::size_t(i1) + i) * C + std::size_t(i2);
                    for (std::size_t j = j0; j < std::min(rest, j0 + tile); ++j) panel[j * std::size_t(bs) + i] = from[j];
                }
        }, grain_for(tile * std::size_t(bs)));
        o.backend.gemm_fp32_add(MatrixView<const float>(panel.data(), rest, std::size_t(bs), std::size_t(bs)),
                                MatrixView<const float>(err.data(), R, std::size_t(bs), B), MatrixView<float>(wk.data() + std::size_t(i2), R, rest, C), -1.0f);
    }
    return res;
}
}  // namespace detail

/// GPTQ-PQ (or, with `o.error_feedback` false, PQ weighted by H's diagonal). `w` rows x cols (out x
/// in features), `hessian` cols x cols (symmetric, H = 2XᵀX/n). Throws InvalidArgument (a bad
/// spec, shapes, cols not a multiple of d, a fixed codebook of the wrong size) or InvalidData
/// (non-finite weights or Hessian, H not positive definite with damping).
inline GptqPqResult gptq_pq_quantize(MatrixView<const float> w, const std::vector<float>& hessian, const PqSpec& spec, const GptqPqOptions& o = {}) {
    return detail::pq_quantize_impl(w, &hessian, spec, o);
}

/// Plain PQ without calibration (`rtn:pq...`): k-means with unit weights on the weights as they
/// are, each sub-vector's nearest centroid. `o.error_feedback` is ignored (there is no Hessian).
/// Throws as gptq_pq_quantize.
inline GptqPqResult pq_quantize(MatrixView<const float> w, const PqSpec& spec, GptqPqOptions o = {}) {
    o.error_feedback = false;
    return detail::pq_quantize_impl(w, nullptr, spec, o);
}

/// A GptqPqResult as the common QuantizedLayer (its note includes the dead inputs zeroed).
inline QuantizedLayer to_layer(GptqPqResult r) {
    QuantizedLayer out(std::move(r.q));
    out.note = std::move(r.note);
    if (r.dead_columns) out.note += std::to_string(r.dead_columns) + " dead input(s) zeroed; ";
    return out;
}

/// GptqPqOptions from a scheme with a PQ grid (damp=) and the quantizer's settings.
inline GptqPqOptions gptq_pq_options(const RuntimeScheme& s, const QuantizeSettings& o) {
    GptqPqOptions p;
    p.damp = s.options.damp;
    p.block_size = o.gptq_block;
    p.backend = o.backend;
    p.factor_cache = o.gptq_factor_cache;
    return p;
}

}  // namespace qforge
