#pragma once
/// @file
/// AWQ (Lin et al., MLSys 2024): activation-aware weight quantization. Weights feeding large
/// activations matter most, so before quantizing, input channel c of the layers that share an
/// input is multiplied by s_c = (s_x,c)^α (and the activations divided by it, folded into the
/// previous operation): the grid's relative resolution moves to the salient channels. α is
/// searched on a grid, and each group's clipping range is searched afterwards.
///
/// Errors are measured with the input Hessian H = 2 X^T X / n of the calibration inputs X: the
/// output error of a weight error D is ||X D^T||^2 = (n/2) sum_r d_r H d_r^T, so the search needs
/// neither the raw activations nor a forward pass per grid point. TWQ (targeted AWQ) weights
/// chosen channels' error by λ: `row_weight` for output rows (the MLP neurons of gate/up),
/// `input_weight` for input channels (the same neurons as inputs of down): H becomes
/// diag(√w) H diag(√w).
#include <algorithm>
#include <cmath>
#include <vector>

#include "qforge/quantizers/rtn.hpp"
#include "qforge/runtime/backend.hpp"

namespace qforge {

/// AWQ: per-input-channel scales searched on the calibration statistics, then RTN with a
/// per-group clip search on the scaled weights. Needs LayerCalibration::hessian and mean_abs.
struct Awq {
    static constexpr MethodInfo info{"awq", false, Pipeline::activation_scaled};
};

struct AwqOptions {
    int grid = 20;      ///< α in {0, 1/grid, ..., (grid-1)/grid}
    bool clip = true;   ///< search each weight group's clipping range afterwards
    ClipSearch clip_search{};
    /// Output rows of each layer that the α search measures: a stride sample of this many rows
    /// (plus every TWQ-weighted row), each row's error scaled so the layer's sum stays unbiased.
    /// 0: every row. The search's cost is 2 rows cols^2 FLOPs per grid point, so on a 4096-row
    /// layer 512 rows cut it 8-fold; docs/awq.md gives the measured effect on the chosen α.
    int search_rows = 512;
    /// The α search's coarse step: the error is measured at every `coarse_step`-th grid point
    /// (α = 0, coarse_step/grid, ...), then at every point within coarse_step - 1 of the best of
    /// those; the least error among all measured wins (the first on ties, as on the full grid).
    /// 1 (or less): every grid point. The default 5 measures at most 12 of the 20 points; on
    /// SmolLM2 it chose the full grid's α in all 360 searches of w4g128a, w3g128m and w3g32a
    /// (docs/awq.md): the error curves are rough near their minimum but not far from it.
    int coarse_step = 5;
    Backend backend;  ///< Hessian-weighted errors' FP32 GEMM, row threads
};

/// H folded onto its lower triangle, 2 tril(H, -1) + diag(H) (cols x cols, row-major): for any
/// d, d H d^T = d F d^T, and D F^T needs only F's lower triangle, half of D H's multiply-adds.
inline std::vector<float> fold_lower(const std::vector<float>& h, std::size_t cols) {
    std::vector<float> f(h.size(), 0.0f);
    for (std::size_t i = 0; i < cols; ++i) {
        for (std::size_t j = 0; j < i; ++j) f[i * cols + j] = 2.0f * h[i * cols + j];
        f[i * cols + i] = h[i * cols + i];
    }
    return f;
}

/// DF = D F^T for D (rows x cols, row-major) and `folded` = fold_lower(H) (cols x cols): in
/// column blocks, block b reading only the columns up to its end (F is zero above the diagonal),
/// each block one FP32 product on the backend. Row r of DF depends only on row r of D.
inline void hessian_products(const float* d, std::size_t rows, std::size_t cols, const std::vector<float>& folded, const Backend& backend, float* df) {
    // blocks of 64 columns below 1024 inputs, 128 above: 0.56 and 0.54 of the full product's
    // work at SmolLM2's 576 and 1536 inputs, with products still wide enough for the BLAS
    const std::size_t block = cols < 1024 ? 64 : 128;
    for (std::size_t j0 = 0; j0 < cols; j0 += block) {
        const std::size_t j1 = std::min(cols, j0 + block);
        backend.gemm_fp32(MatrixView<const float>(folded.data() + j0 * cols, j1 - j0, j1, cols), MatrixView<const float>(d, rows, j1, cols),
                          MatrixView<float>(df + j0, rows, j1 - j0, cols));
    }
}

/// sum_r λ_r d_r · df_r in double, rows in order (λ = 1 without `row_weight`).
inline double weighted_row_dots(const float* d, const float* df, std::size_t rows, int cols, const std::vector<float>* row_weight,
                                const Fp32Functions& fns) {
    double e = 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
        const double v = fns.dot(d + r * std::size_t(cols), df + r * std::size_t(cols), cols);
        e += row_weight ? double((*row_weight)[r]) * v : v;
    }
    return e;
}

/// sum_r λ_r d_r H d_r^T for D (rows x cols), with `folded` = fold_lower(H): proportional to the
/// output error (hessian_products, then weighted_row_dots).
inline double hessian_error(const std::vector<float>& d, int rows, int cols, const std::vector<float>& folded, const std::vector<float>* row_weight,
                            const Backend& backend) {
    std::vector<float> df(d.size());
    hessian_products(d.data(), std::size_t(rows), std::size_t(cols), folded, backend, df.data());
    return weighted_row_dots(d.data(), df.data(), std::size_t(rows), cols, row_weight, backend.host_fp32());
}

/// H with input channel c's error weighted by w_c: diag(√w) H diag(√w).
inline std::vector<float> weight_inputs(const std::vector<float>& h, const std::vector<float>& w) {
    const std::size_t n = w.size();
    std::vector<float> out(h.size());
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) out[i * n + j] = h[i * n + j] * std::sqrt(w[i] * w[j]);
    return out;
}

/// W (rows x cols) with column c multiplied by s_c, RTN-quantized, then divided back: the weights
/// the layer effectively multiplies after scaling.
inline std::vector<float> scaled_rtn(MatrixView<const float> w, const std::vector<float>& s, const QuantSpec& spec, int threads) {
    const std::size_t R = w.rows, C = w.cols;
    std::vector<float> ws(R * C);
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t c = 0; c < C; ++c) ws[r * C + c] = w(r, c) * s[c];
    const auto q = RtnQuantizer(spec, false, {}, threads).quantize(MatrixView<const float>(ws.data(), R, C));
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t c = 0; c < C; ++c) ws[r * C + c] = q.dequantize(int(r), int(c)) / s[c];
    return ws;
}

/// scaled_rtn_error written into `d` (rows x cols, row-major), W not checked for non-finite
/// values (the α search checks each layer once, not once per grid point).
inline void scaled_rtn_error_into(MatrixView<const float> w, const std::vector<float>& s, const QuantSpec& spec, const Backend& backend, float* d) {
    const std::size_t R = w.rows, C = w.cols;
    const int g = spec.group_length(int(C)), groups = spec.groups_per_row(int(C));
    const RoundingKernels rounding{backend.host_fp32().grid_round, backend.host_fp32().codebook_round};
    parallel_for(R, backend.threads(), [&](std::size_t r0, std::size_t r1) {
        std::vector<float> ws(C);
        for (std::size_t r = r0; r < r1; ++r) {
            const auto row = w.row(r);
            for (std::size_t c = 0; c < C; ++c) ws[c] = row[c] * s[c];
            float* dr = d + r * C;
            for (int gi = 0; gi < groups; ++gi) {
                const std::size_t c0 = std::size_t(gi) * std::size_t(g), n = std::min(C, c0 + std::size_t(g)) - c0;
                const std::span<const float> values(ws.data() + c0, n);
                GroupParams p;
                try {
                    p = find_group_params(values, spec);
                } catch (const Error&) {
                    rethrow_with_context("row " + std::to_string(r) + ", group " + std::to_string(gi) + " (columns " + std::to_string(c0) + "-" +
                                         std::to_string(c0 + n - 1) + ")");
                }
                round_group(values, p, spec, rounding, nullptr, dr + c0, false);
            }
            for (std::size_t c = 0; c < C; ++c) dr[c] = row[c] - dr[c] / s[c];
        }
    }, grain_for(C * 8));
}
/// W - scaled_rtn(W, s): the weight error after scaling, RTN and unscaling (rows x cols,
/// row-major), the same values as from scaled_rtn, with the rounding on the backend's vector
/// kernel. Throws InvalidData for a non-finite weight, or naming the row and group whose scaled
/// range does not fit the scale type.
inline std::vector<float> scaled_rtn_error(MatrixView<const float> w, const std::vector<float>& s, const QuantSpec& spec, const Backend& backend) {
    spec.validate();
    require_finite_matrix(w, "AWQ weight matrix");  // as RtnQuantizer does: a NaN would reach the rounding
    std::vector<float> d(w.rows * w.cols);
    scaled_rtn_error_into(w, s, spec, backend, d.data());
    return d;
}

struct AwqLayer {
    MatrixView<const float> w;                    ///< rows x cols
    const std::vector<float>* row_weight = nullptr;  ///< TWQ: λ per output row, or null
    const QuantSpec* spec = nullptr;              ///< this layer's grid when it differs from the search's (a type mix), or null
};

struct AwqScales {
    std::vector<float> scales;   ///< per input channel; W columns are multiplied by them
    float alpha = 0.0f;
    std::vector<double> error;   ///< per grid point, summed over the layers (NaN: not measured, see AwqOptions::coarse_step)
};

/// The α search for layers sharing one input with mean |x| `mean_abs` and Hessian `h` (already
/// input-weighted for TWQ if wanted), each layer's error measured on `o.search_rows` of its rows. `tie` (optional): channel c must share the scale of
/// channel tie[c] (grouped-query attention: the o_proj inputs coming from one v row); the
/// activation magnitudes of tied channels are averaged. A layer's error is measured on its own
/// AwqLayer::spec when it has one (a type mix gives layers sharing an input different grids),
/// else on `spec`.
inline AwqScales awq_search_scales(const std::vector<AwqLayer>& layers, const std::vector<float>& mean_abs, const std::vector<float>& h,
                                   const QuantSpec& spec, const AwqOptions& o, const std::vector<int>* tie = nullptr) {
    const std::size_t C = mean_abs.size();
    for (const auto& l : layers)
        if (l.w.cols != C) throw InvalidArgument("AWQ: a layer has " + std::to_string(l.w.cols) + " inputs, the statistics " + std::to_string(C));
    if (h.size() != C * C) throw InvalidArgument("AWQ: the Hessian does not match the layers' inputs");
    std::vector<float> magnitude = mean_abs;
    if (tie) {
        std::vector<double> sum(C, 0.0);
        std::vector<int> count(C, 0);
        for (std::size_t c = 0; c < C; ++c) {
            sum[std::size_t((*tie)[c])] += mean_abs[c];
            ++count[std::size_t((*tie)[c])];
        }
        for (std::size_t c = 0; c < C; ++c) magnitude[c] = float(sum[std::size_t((*tie)[c])] / count[std::size_t((*tie)[c])]);
    }
    for (auto& m : magnitude) m = std::max(m, 1e-8f);  // dead channels: a finite scale
    // the rows each layer's error is measured on, and each one's weight in the sum
    struct Measured {
        std::vector<float> w;       // the sampled rows, contiguous
        std::vector<float> weight;  // per sampled row: TWQ's λ times the sampling factor
        bool weighted = false;
        const QuantSpec* spec = nullptr;  // the grid its error is measured on
    };
    std::vector<Measured> measured;
    for (const auto& l : layers) {
        Measured m;
        m.spec = l.spec ? l.spec : &spec;
        const std::size_t rows = l.w.rows;
        std::vector<std::size_t> pick;
        if (o.search_rows <= 0 || rows <= std::size_t(o.search_rows)) {
            for (std::size_t r = 0; r < rows; ++r) pick.push_back(r);
            m.weight.assign(rows, 1.0f);
        } else {
            std::vector<std::size_t> plain;  // rows without a TWQ weight are sampled; weighted rows are all kept
            for (std::size_t r = 0; r < rows; ++r) {
                if (l.row_weight && (*l.row_weight)[r] != 1.0f) {
                    pick.push_back(r);
                    m.weight.push_back(1.0f);
                } else {
                    plain.push_back(r);
                }
            }
            const std::size_t k = std::min(plain.size(), std::size_t(o.search_rows));
            for (std::size_t i = 0; i < k; ++i) {
                pick.push_back(plain[i * plain.size() / k]);
                m.weight.push_back(float(double(plain.size()) / double(k)));
            }
            m.weighted = true;
        }
        if (l.row_weight) {
            for (std::size_t i = 0; i < pick.size(); ++i) m.weight[i] *= (*l.row_weight)[pick[i]];
            m.weighted = true;
        }
        m.w.resize(pick.size() * C);
        for (std::size_t i = 0; i < pick.size(); ++i) std::copy_n(l.w.row(pick[i]).data(), C, m.w.data() + i * C);
        measured.push_back(std::move(m));
    }
    const auto folded = fold_lower(h, C);
    AwqScales best;
    if (o.grid < 1) throw InvalidArgument("AWQ: the α grid needs at least one point, is " + std::to_string(o.grid));
    best.error.assign(std::size_t(o.grid), NAN);
    const auto scales_at = [&](int i) {
        const float alpha = float(i) / float(o.grid);
        std::vector<float> s(C);
        float lo = INFINITY, hi = 0.0f;
        for (std::size_t c = 0; c < C; ++c) {
            s[c] = std::pow(magnitude[c], alpha);
            lo = std::min(lo, s[c]);
            hi = std::max(hi, s[c]);
        }
        const float norm = std::sqrt(lo * hi);  // AutoAWQ's normalisation: geometric middle of the range at 1
        for (auto& v : s) v /= norm;
        return s;
    };
    for (const auto& m : measured) m.spec->validate();
    for (const auto& m : measured) require_finite_matrix(MatrixView<const float>(m.w.data(), m.weight.size(), C), "AWQ weight matrix");
    // A grid point's layers are measured together: their D stacked into one matrix, whose H
    // products (hessian_products) are then one product per column block instead of one per layer
    // and block; each layer's sum is what its own product gives. (Stacking grid points as well
    // was slower on SmolLM2 (the stack outgrew the caches) and would make a row's product depend
    // on how many points are measured with it: the BLAS's result can depend on the row count.)
    std::size_t rows_per_point = 0;
    for (const auto& m : measured) rows_per_point += m.weight.size();
    // Grid points are measured on threads of their own, each point's work (its rounding and its
    // products) on one thread: the products are small (a stack of ~2.5K rows times 64 columns of
    // H on SmolLM2), and cutting each one across 2 cores sped the search up 1.73x where whole
    // points give 1.8-1.9x (SmolLM2, 2026-12-05). A point's error is computed the same on any
    // thread (the BLAS's tiles depend on the shape alone).
    const auto measure = [&](int i, std::vector<float>& d, std::vector<float>& df) {
        const auto s = scales_at(i);
        d.resize(rows_per_point * C);
        df.resize(d.size());
        std::size_t at = 0;  // rows of the stack so far
        for (const auto& m : measured) {
            scaled_rtn_error_into(MatrixView<const float>(m.w.data(), m.weight.size(), C), s, *m.spec, o.backend, d.data() + at * C);
            at += m.weight.size();
        }
        hessian_products(d.data(), at, C, folded, o.backend, df.data());
        double e = 0.0;
        at = 0;
        for (const auto& m : measured) {
            e += weighted_row_dots(d.data() + at * C, df.data() + at * C, m.weight.size(), int(C), m.weighted ? &m.weight : nullptr,
                                   o.backend.host_fp32());
            at += m.weight.size();
        }
        best.error[std::size_t(i)] = e;
    };
    const auto measure_all = [&](const std::vector<int>& points) {
        std::vector<int> todo;
        for (const int i : points)
            if (std::isnan(best.error[std::size_t(i)])) todo.push_back(i);
        parallel_for(todo.size(), o.backend.threads(), [&](std::size_t p0, std::size_t p1) {
            std::vector<float> d, df;
            for (std::size_t p = p0; p < p1; ++p) measure(todo[p], d, df);
        }, 1);
    };
    // the least measured error, the first grid point on ties (NaN errors never win)
    const auto argmin = [&] {
        int k = -1;
        for (int i = 0; i < o.grid; ++i)
            if (!std::isnan(best.error[std::size_t(i)]) && (k < 0 || best.error[std::size_t(i)] < best.error[std::size_t(k)])) k = i;
        return k;
    };
    const int step = std::max(1, o.coarse_step);
    std::vector<int> coarse;
    for (int i = 0; i < o.grid; i += step) coarse.push_back(i);
    measure_all(coarse);
    if (step > 1) {
        const int k = std::max(0, argmin());
        std::vector<int> fine;
        for (int i = std::max(0, k - (step - 1)); i <= std::min(o.grid - 1, k + (step - 1)); ++i) fine.push_back(i);
        measure_all(fine);
    }
    const int k = argmin();
    best.alpha = float(std::max(k, 0)) / float(o.grid);
    best.scales = scales_at(std::max(k, 0));
    return best;
}

/// RTN whose every (row, group) range is shrunk by the factor (clip search grid) that minimises
/// that group's own output error d_g H_gg d_g^T (H restricted to the group's inputs; the first
/// smallest shrink wins ties; a group whose errors are all NaN keeps its plain range).
///
/// The errors of a block of rows, for every shrink, are FP32 products on the backend: D (block
/// rows x shrinks, g) times H_gg folded onto its lower triangle (fold_lower), then a dot per row.
/// Blocks are fixed row ranges, so the result does not depend on the thread count.
inline QuantizedMatrix awq_clip_quantize(MatrixView<const float> w, const std::vector<float>& h, const QuantSpec& spec, const AwqOptions& o) {
    spec.validate();
    require_finite_matrix(w, "AWQ clip search weight matrix");
    const int rows = int(w.rows), cols = int(w.cols);
    const std::size_t C = std::size_t(cols);
    if (h.size() != C * C) throw InvalidArgument("AWQ clip search: the Hessian does not match the layer's inputs");
    QuantizedMatrix q(spec, rows, cols);
    const int g = spec.group_length(cols), groups = q.groups_per_row();
    const int shrinks = o.clip_search.grid + 1;
    const Fp32Functions& fns = o.backend.host_fp32();
    const RoundingKernels rounding{fns.grid_round, fns.codebook_round};
    const auto shrink_of = [&](int k) { return 1.0f - o.clip_search.max_shrink * float(k) / float(o.clip_search.grid); };
    constexpr std::size_t block_rows = 32;  // D of 32 x 21 rows: a product large enough for the BLAS
    const std::size_t blocks = (std::size_t(rows) + block_rows - 1) / block_rows;
    const std::size_t block_ops = block_rows * C * std::size_t(g) * std::size_t(shrinks);
    parallel_for(blocks, o.backend.threads(), [&](std::size_t b0, std::size_t b1) {
        std::vector<float> d(block_rows * std::size_t(shrinks) * std::size_t(g)), hd(d.size()), fg(std::size_t(g) * std::size_t(g));
        int folded_at = -1;  // the group whose F_gg is in fg
        const auto fold_group = [&](int c0, int n) {
            if (folded_at == c0) return;
            for (int i = 0; i < n; ++i)
                for (int j = 0; j < n; ++j) {
                    const float v = h[std::size_t(c0 + i) * C + std::size_t(c0 + j)];
                    fg[std::size_t(i) * std::size_t(n) + std::size_t(j)] = j < i ? 2.0f * v : j == i ? v : 0.0f;
                }
            folded_at = c0;
        };
        for (std::size_t b = b0; b < b1; ++b) {
            const std::size_t r0 = b * block_rows, nr = std::min(block_rows, std::size_t(rows) - r0);
            for (int gi = 0; gi < groups; ++gi) {
                const int c0 = gi * g, n = std::min(cols, c0 + g) - c0;
                const std::size_t N = std::size_t(n);
                for (std::size_t i = 0; i < nr; ++i) {
                    const auto values = w.row(r0 + i).subspan(std::size_t(c0), N);
                    const GroupRange range = group_range(values, spec);
                    for (int k = 0; k < shrinks; ++k) {
                        const GroupParams p = group_params(range, spec, shrink_of(k));
                        round_group(values, p, spec, rounding, nullptr, d.data() + (i * std::size_t(shrinks) + std::size_t(k)) * N, true);
                    }
                }
                const std::size_t m = nr * std::size_t(shrinks);
                // HD = D F_gg^T with F_gg = fold_lower(H_gg) (d H_gg d^T = d F_gg d^T), in column
                // blocks of 32 reading only the columns up to each block's end (F_gg is zero
                // above its diagonal): 5/8 of the full product's work for groups of 128. On
                // SmolLM2 awq:w4g128a chose the same shrink for every group as with D H_gg.
                fold_group(c0, n);
                for (std::size_t j0 = 0; j0 < N; j0 += 32) {
                    const std::size_t j1 = std::min(N, j0 + 32);
                    o.backend.gemm_fp32(MatrixView<const float>(fg.data() + j0 * N, j1 - j0, j1, N), MatrixView<const float>(d.data(), m, j1, N),
                                        MatrixView<float>(hd.data() + j0, m, j1 - j0, N));
                }
                for (std::size_t i = 0; i < nr; ++i) {
                    const std::size_t r = r0 + i;
                    const auto values = w.row(r).subspan(std::size_t(c0), N);
                    int best_k = -1;
                    double best_e = INFINITY;
                    for (int k = 0; k < shrinks; ++k) {
                        const std::size_t at = (i * std::size_t(shrinks) + std::size_t(k)) * N;
                        const double e = fns.dot(d.data() + at, hd.data() + at, n);
                        if (e < best_e) best_e = e, best_k = k;
                    }
                    const GroupParams best = best_k < 0 ? find_group_params(values, spec) : find_group_params(values, spec, shrink_of(best_k));
                    const std::size_t idx = q.group_index(int(r), gi);
                    q.scales[idx] = best.scale;
                    if (spec.zero == ZeroPoint::integer) q.zeros[idx] = std::uint8_t(best.zero);
                    if (spec.zero == ZeroPoint::float_min) q.mins[idx] = best.min;
                    round_group(values, best, spec, rounding, q.codes.data() + r * C + std::size_t(c0), nullptr, false);
                }
            }
        }
    }, grain_for(block_ops));
    return q;
}

inline AwqOptions awq_options(const QuantizeSettings& o) {
    AwqOptions a;
    a.grid = o.awq_grid;
    a.clip = o.awq_clip;
    a.clip_search = o.clip_search;
    a.search_rows = o.awq_search_rows;
    a.coarse_step = o.awq_coarse_step;
    a.backend = o.backend;
    return a;
}

/// H of the scaled inputs x / s: H_ij / (s_i s_j).
inline std::vector<float> scale_hessian(const std::vector<float>& h, const std::vector<float>& s) {
    const std::size_t n = s.size();
    std::vector<float> out(h.size());
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) out[i * n + j] = h[i * n + j] / (s[i] * s[j]);
    return out;
}

/// The AWQ family on one layer: the scale search for this layer alone, then `Round` (the
/// method's final quantizer) on W diag(s) with the Hessian of the scaled inputs.
template <class Round>
QuantizedLayer awq_scaled_layer(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o,
                                std::string_view method, Round&& round) {
    const auto& h = detail::need(c.hessian, method, "the input Hessian");
    const auto& mean_abs = detail::need(c.mean_abs, method, "the mean |x| of each input channel");
    const auto found = awq_search_scales({{w, c.row_weight}}, mean_abs, h, s.spec, awq_options(o));
    std::vector<float> ws(w.rows * w.cols);
    for (std::size_t r = 0; r < w.rows; ++r)
        for (std::size_t col = 0; col < w.cols; ++col) ws[r * w.cols + col] = w(r, col) * found.scales[col];
    const auto hs = scale_hessian(h, found.scales);
    QuantizedLayer out = round(MatrixView<const float>(ws.data(), w.rows, w.cols), s, LayerCalibration{&hs, nullptr, c.row_weight}, o);
    out.input_scales = found.scales;
    out.alpha = found.alpha;
    return out;
}

template <>
struct quantizer<Awq> {
    /// The final quantizer on weights already scaled (and `c.hessian` of the scaled inputs).
    static QuantizedLayer round(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        if (o.awq_clip && !s.spec.super)
            return QuantizedLayer(awq_clip_quantize(w, detail::need(c.hessian, Awq::info.name, "the input Hessian"), s.spec, awq_options(o)));
        QuantizedLayer out(RtnQuantizer(s.spec, false, {}, o.backend.threads()).quantize(w));
        // AWQ's clip search shrinks each group's own range; a two-level grid (K-quants) fits a
        // whole super-block at once, so it takes RTN's fit there (said in the layer's note)
        if (o.awq_clip) out.note += "AWQ's per-group clip search does not apply to the two-level grid " + std::string(s.spec.block) + ": RTN's fit; ";
        return out;
    }
    static QuantizedLayer quantize(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        return awq_scaled_layer(w, s, c, o, Awq::info.name, &round);
    }
};

}  // namespace qforge
