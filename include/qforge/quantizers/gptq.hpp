#pragma once
/// @file
/// GPTQ (Frantar et al., 2022): quantize a weight matrix column by column, feeding each
/// column's rounding error into the columns not yet quantized through the Cholesky factor of the
/// inverse input Hessian H = 2 X^T X / n, so the layer's output error ||W X - Ŵ X|| stays small.
///
/// Steps, as in the reference implementation:
/// 1. dead inputs (H_ii = 0) get H_ii = 1 and their weights zeroed;
/// 2. act-order: columns are processed by descending H_ii;
/// 3. damping: H += damp * mean(diag H) * I (default 0.01); if H is still not positive definite
///    the damping is raised stepwise (x2, up to 10 tries) and the result says so;
/// 4. U = the upper Cholesky factor of H^{-1};
/// 5. for each column i in processing order: q_i = RTN(w_i) on its group's grid,
///    e = (w_i - q_i) / U_ii, w_j -= e U_ij for the later columns j. Updates are applied
///    immediately inside blocks of `block_size` columns and to the columns after the block as one
///    GEMM at its end ("lazy batch"), which changes the order of additions only.
///
/// Grids: any spec of the foundation (2/3/4/8 bits, symmetric / integer zero / float minimum,
/// per-channel or groups), optionally with the MSE clip search. A group's parameters are
/// computed when its first column comes up, from the weights as error-fed at that point. The
/// lazy block is shrunk to a multiple of the group length (or grown to it) so those weights
/// have received every earlier column's update. (The reference code reads them from the
/// matrix not yet given the current block's updates when groups are smaller than the block.)
///
/// Groups under act-order: *dynamic* groups are runs of `group` columns in processing order —
/// the result keeps the columns in that order and lists it (`column_order`), and `g_idx` gives
/// each original column its group as GPTQModel stores it; *static* groups are runs of
/// `group` columns in the original order, so the result needs no reordering at all. Without
/// act-order the two are the same thing.
///
/// Rows are independent given H: a block's in-block feedback is split over rows, and its lazy
/// batch is one FP32 GEMM over all rows on the backend (a tuned BLAS on the CPU, runtime/blas.hpp).
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "qforge/core/quantized.hpp"
#include "qforge/quantizers/gptq_factor.hpp"
#include "qforge/quantizers/gptq_pq.hpp"
#include "qforge/quantizers/rtn.hpp"

namespace qforge {

/// GPTQ: error feedback through the inverse input Hessian. Needs LayerCalibration::hessian.
struct Gptq {
    static constexpr MethodInfo info{"gptq", true, Pipeline::sequential_hessian, false, false, {}, true};
};

struct GptqOptions {
    float damp = 0.01f;       ///< fraction of the mean Hessian diagonal added to it
    int block_size = 128;     ///< lazy-batch block (columns)
    bool act_order = false;   ///< process columns by descending H_ii
    bool static_groups = false;  ///< with act-order: groups in the original column order
    bool clip_search = false; ///< MSE clip search for each group's grid
    ClipSearch search{};
    Backend backend;  ///< Cholesky GEMMs, the lazy-batch updates' FP32 kernels, row threads
    /// where set, H's checked diagonal and U come from (and go to) this memo (gptq_factor.hpp)
    std::shared_ptr<detail::GptqFactorCache> factor_cache;
};

struct GptqResult {
    /// Codes and grid parameters. Column k holds original column column_order[k] when
    /// column_order is not empty (act-order with dynamic groups), else original column k.
    QuantizedMatrix q;
    std::vector<int> column_order;
    std::vector<int> g_idx;  ///< for each original column, the index of its group's parameters
    float damp = 0.0f;       ///< the damping fraction finally used
    int dead_columns = 0;    ///< inputs with H_ii = 0 (weights zeroed)
    std::string note;        ///< what was adjusted (damping raised), empty if nothing

    /// Ŵ in the original column order.
    std::vector<float> dequantize() const {
        std::vector<float> w(std::size_t(q.rows) * std::size_t(q.cols));
        for (int r = 0; r < q.rows; ++r)
            for (int k = 0; k < q.cols; ++k) {
                const int c = column_order.empty() ? k : column_order[std::size_t(k)];
                w[std::size_t(r) * std::size_t(q.cols) + std::size_t(c)] = q.dequantize(r, k);
            }
        return w;
    }
};


/// `w` rows x cols (out x in features), `hessian` cols x cols (symmetric).
inline GptqResult gptq_quantize(MatrixView<const float> w, const std::vector<float>& hessian, const QuantSpec& spec,
                                const GptqOptions& o = {}) {
    spec.validate();
    require_finite_matrix(w, "GPTQ weight matrix");
    require_int_shape(w.rows, w.cols, "GPTQ weight matrix");
    const int rows = int(w.rows), cols = int(w.cols);
    const std::size_t C = std::size_t(cols);
    auto hd = detail::hessian_diagonal(o.factor_cache.get(), hessian, C, "GPTQ");
    const std::vector<float>& diag = hd.diag;
    const std::vector<bool>& dead = hd.dead;
    if (!(o.damp >= 0.0f) || o.block_size < 1) throw InvalidArgument("GPTQ: damping must be >= 0 and the block size >= 1");

    GptqResult res;
    res.dead_columns = hd.dead_count;
    std::vector<float> wk(w.rows * C);  // working copy, processing order, error-fed
    std::vector<int> order(C);
    std::iota(order.begin(), order.end(), 0);
    if (o.act_order)
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return diag[std::size_t(a)] > diag[std::size_t(b)]; });
    // the copies into processing order run on every thread: serial, they left the other one
    // waiting for a sixth of a whole-model run (SmolLM2, perf)
    const int threads = o.backend.threads();
    parallel_for(std::size_t(rows), threads, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t k = 0; k < C; ++k) {
                const std::size_t c = std::size_t(order[k]);
                wk[r * C + k] = dead[c] ? 0.0f : w(r, c);
            }
    }, grain_for(C));

    auto factor = detail::gptq_inverse_factor(o.factor_cache.get(), hessian, order, diag, o.damp, o.backend);
    std::vector<float>& u = factor.u;
    res.note += factor.note;
    res.damp = factor.damp;

    // groups: in processing order (dynamic) or in the original order (static)
    const int g = spec.group_length(cols);
    const bool static_groups = o.act_order && o.static_groups;
    std::vector<int> group_of(C);  // processing position -> group index
    for (std::size_t k = 0; k < C; ++k) group_of[k] = static_groups ? order[k] / g : int(k) / g;
    std::vector<std::vector<int>> members(std::size_t(spec.groups_per_row(cols)));  // processing positions of each group
    for (std::size_t k = 0; k < C; ++k) members[std::size_t(group_of[k])].push_back(int(k));
    int block = o.block_size;
    if (!static_groups && g < cols) block = g >= block ? g : std::max(g, block / g * g);

    QuantizedMatrix q(spec, rows, cols);
    const int groups = q.groups_per_row();
    const int per_super = spec.super ? spec.super->weights / g : 1;  // groups per super-block
    const std::size_t R = std::size_t(rows);
    // The lazy batch multiplies by U[i1:i2, i2:]^T: copied per block into a (C - i2) x block
    // panel rather than keeping all of U^T (another C x C floats)
    std::vector<float> panel(C * std::size_t(block));
    std::vector<float> err(R * std::size_t(block));
    std::vector<char> have(R * std::size_t(groups), 0);
    std::vector<GroupParams> params(R * std::size_t(groups));
    const Fp32Functions& fns = o.backend.host_fp32();
    constexpr std::size_t tile_rows = 16;
    for (int i1 = 0; i1 < cols; i1 += block) {
        const int i2 = std::min(cols, i1 + block), bs = i2 - i1;
        // the block's columns for a tile of rows at a time, held transposed (column k's tile
        // values contiguous): each row's in-block error feedback (about bs^2 / 2 multiply-adds)
        // is one axpy_columns call per column for the whole tile, rounded as a per-row axpy
        // would, plus a grid per group that starts here
        parallel_for((R + tile_rows - 1) / tile_rows, o.backend.threads(), [&](std::size_t a0, std::size_t a1) {
            std::vector<float> values, cols_t(std::size_t(bs) * tile_rows);
            float alpha[tile_rows];
            for (std::size_t a = a0; a < a1; ++a) {
                const std::size_t r0 = a * tile_rows, width = std::min(tile_rows, R - r0);
                for (std::size_t t = 0; t < width; ++t)
                    for (int k = i1; k < i2; ++k) cols_t[std::size_t(k - i1) * tile_rows + t] = wk[(r0 + t) * C + std::size_t(k)];
                // row r0 + t's weight at processing position j as it stands now
                const auto value = [&](std::size_t t, int j) {
                    return j >= i1 && j < i2 ? cols_t[std::size_t(j - i1) * tile_rows + t] : wk[(r0 + t) * C + std::size_t(j)];
                };
                for (int k = i1; k < i2; ++k) {
                    const int grp = group_of[std::size_t(k)];
                    float* col = cols_t.data() + std::size_t(k - i1) * tile_rows;
                    for (std::size_t t = 0; t < width; ++t) {
                        const std::size_t r = r0 + t;
                        GroupParams& p = params[r * std::size_t(groups) + std::size_t(grp)];
                        if (!have[r * std::size_t(groups) + std::size_t(grp)]) {  // first column: its grid from the weights as they are now
                            if (spec.super) {
                                // a two-level grid: the whole super-block's grid, from its error-fed
                                // weights when the loop reaches its first column (superblock.hpp)
                                const int sb = grp / per_super, g0 = sb * per_super, g1 = std::min(groups, g0 + per_super);
                                values.clear();
                                for (int gg = g0; gg < g1; ++gg)
                                    for (const int j : members[std::size_t(gg)]) values.push_back(value(t, j));
                                const SuperBlockParams sp = o.clip_search ? search_super_block(values, spec, o.search, &params[r * std::size_t(groups) + std::size_t(g0)])
                                                                          : fit_super_block(values, spec, &params[r * std::size_t(groups) + std::size_t(g0)]);
                                q.super[(r * std::size_t(q.supers_per_row()) + std::size_t(sb)) * 2] = sp.d;
                                q.super[(r * std::size_t(q.supers_per_row()) + std::size_t(sb)) * 2 + 1] = sp.dmin;
                                for (int gg = g0; gg < g1; ++gg) have[r * std::size_t(groups) + std::size_t(gg)] = 1;
                            } else {
                                values.clear();
                                for (const int j : members[std::size_t(grp)]) values.push_back(value(t, j));
                                p = o.clip_search ? search_group_params(values, spec, o.search) : find_group_params(values, spec);
                                have[r * std::size_t(groups) + std::size_t(grp)] = 1;
                            }
                        }
                        const std::uint8_t code = quantize_value(col[t], p, spec);
                        q.codes[r * C + std::size_t(k)] = code;
                        const float e = (col[t] - dequantize_value(code, p, spec)) / u[std::size_t(k) * C + std::size_t(k)];
                        err[r * std::size_t(block) + std::size_t(k - i1)] = e;
                        alpha[t] = -e;
                    }
                    fns.axpy_columns(alpha, int(width), u.data() + std::size_t(k) * C + std::size_t(k + 1), col + tile_rows, tile_rows, i2 - k - 1);
                }
                for (std::size_t t = 0; t < width; ++t)
                    for (int k = i1; k < i2; ++k) wk[(r0 + t) * C + std::size_t(k)] = cols_t[std::size_t(k - i1) * tile_rows + t];
            }
        }, std::max<std::size_t>(1, grain_for(tile_rows * (std::size_t(bs) * std::size_t(bs) / 2 + C))));
        if (i2 == cols) break;
        // lazy batch: W[:, i2:] -= E U[i1:i2, i2:], one GEMM over all rows (the backend's)
        const std::size_t rest = std::size_t(cols - i2), B = std::size_t(bs);
        constexpr std::size_t tile = 64;  // in tiles: a plain column-order write misses the cache on every element
        parallel_for((rest + tile - 1) / tile, threads, [&](std::size_t t0, std::size_t t1) {
            for (std::size_t j0 = t0 * tile; j0 < std::min(rest, t1 * tile); j0 += tile)
                for (std::size_t i = 0; i < B; ++i) {
                    const float* from = u.data() + (std::size_t(i1) + i) * C + std::size_t(i2);
                    for (std::size_t j = j0; j < std::min(rest, j0 + tile); ++j) panel[j * B + i] = from[j];
                }
        }, grain_for(tile * B));
        o.backend.gemm_fp32_add(MatrixView<const float>(panel.data(), rest, B, B),
                                MatrixView<const float>(err.data(), R, std::size_t(bs), std::size_t(block)),
                                MatrixView<float>(wk.data() + std::size_t(i2), R, rest, C), -1.0f);
    }
    for (std::size_t r = 0; r < R; ++r)  // the grids
        for (int grp = 0; grp < groups; ++grp) {
            const GroupParams& p = params[r * std::size_t(groups) + std::size_t(grp)];
            const std::size_t idx = q.group_index(int(r), grp);
            q.scales[idx] = p.scale;
            if (spec.zero == ZeroPoint::integer) q.zeros[idx] = std::uint8_t(p.zero);
            if (spec.zero == ZeroPoint::float_min) q.mins[idx] = p.min;
        }

    // back to the original column order unless the groups are runs of the processing order
    res.g_idx.assign(C, 0);
    const bool keep_order = o.act_order && !static_groups;
    if (keep_order) {
        res.column_order = order;
        for (std::size_t k = 0; k < C; ++k) res.g_idx[std::size_t(order[k])] = int(k) / g;
        res.q = std::move(q);
    } else {
        QuantizedMatrix out(spec, rows, cols);
        out.scales = std::move(q.scales);
        out.zeros = std::move(q.zeros);
        out.mins = std::move(q.mins);
        out.super = std::move(q.super);
        parallel_for(std::size_t(rows), threads, [&](std::size_t r0, std::size_t r1) {
            for (std::size_t r = r0; r < r1; ++r)
                for (std::size_t k = 0; k < C; ++k) out.codes[r * C + std::size_t(order[k])] = q.codes[r * C + k];
        }, grain_for(C));
        for (std::size_t c = 0; c < C; ++c) res.g_idx[c] = int(c) / g;
        res.q = std::move(out);
    }
    return res;
}

/// GptqOptions from a scheme's options and the run settings.
inline GptqOptions gptq_options(const RuntimeScheme& s, const QuantizeSettings& o, bool clip) {
    GptqOptions g;
    g.damp = s.options.damp;
    g.block_size = o.gptq_block;
    g.act_order = s.options.act_order;
    g.static_groups = s.options.static_groups;
    g.clip_search = clip;
    g.search = o.clip_search;
    g.backend = o.backend;
    g.factor_cache = o.gptq_factor_cache;
    return g;
}

/// A GptqResult as the common QuantizedLayer (its note includes the dead inputs zeroed).
inline QuantizedLayer to_layer(GptqResult r) {
    QuantizedLayer out(std::move(r.q), std::move(r.column_order));
    out.note = std::move(r.note);
    if (r.dead_columns) out.note += std::to_string(r.dead_columns) + " dead input(s) zeroed; ";
    return out;
}

template <>
struct quantizer<Gptq> {
    static QuantizedLayer quantize(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        const auto& h = detail::need(c.hessian, Gptq::info.name, "the input Hessian");
        if (s.pq) return to_layer(gptq_pq_quantize(w, h, *s.pq, gptq_pq_options(s, o)));
        return to_layer(gptq_quantize(w, h, s.spec, gptq_options(s, o, s.options.clip)));
    }
};

}  // namespace qforge
