#pragma once
/// @file
/// Round-to-nearest quantization, per channel or per group, with an optional MSE clip search.
/// The per-group helpers here are the grid that every other quantizer (GPTQ, AWQ) rounds onto.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <span>
#include <string>

#include "qforge/backends/fp32.hpp"
#include "qforge/core/error.hpp"
#include "qforge/core/half.hpp"
#include "qforge/core/parallel.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/core/scheme.hpp"
#include "qforge/core/validate.hpp"
#include "qforge/core/view.hpp"
#include "qforge/quantizers/ggml_search.hpp"
#include "qforge/quantizers/gptq_pq.hpp"
#include "qforge/quantizers/quantizer.hpp"

namespace qforge {

/// Round to nearest: each group's grid from its own min/max (or the MSE clip search), every
/// weight rounded onto it. No calibration.
struct Rtn {
    static constexpr MethodInfo info{"rtn", false, Pipeline::independent, false, false, {}, true};
};

/// The parameters of one group's grid.
struct GroupParams {
    float scale = 0.0f;
    int zero = 0;       ///< ZeroPoint::integer
    float min = 0.0f;   ///< ZeroPoint::float_min
};

namespace detail {
/// A number for messages, to three significant digits ("6.67e+28").
inline std::string short_number(float v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", double(v));
    return buf;
}
/// The value stored for a group's scale (or minimum, `what`) in the scale type; one that does
/// not fit is an error saying so (the caller adds the row and group).
inline float store_scale(float s, ScaleType t, const char* what = "scale") {
    const float stored = t == ScaleType::f16 ? round_to_half(s) : s;
    if (!std::isfinite(stored)) {
        if (!std::isfinite(s))
            throw InvalidData(std::string("the group's ") + what + " " + short_number(s) +
                              " is not a finite number; the weights' range overflows float");
        throw InvalidData(std::string("the group's ") + what + " " + short_number(s) +
                          " does not fit fp16 (max 65504); the weights are too large for fp16 scales");
    }
    return stored;
}
}  // namespace detail

/// What a group's grid depends on, whatever the shrink: the value of largest magnitude (the
/// first one on ties; symmetric and codebook grids) or the minimum and maximum (zero-point grids).
struct GroupRange {
    float extreme = 0.0f;
    float lo = 0.0f;
    float hi = 0.0f;
    bool empty = true;
};

namespace detail {
/// Lanes of the vector min/max scans: independent accumulators whose `x < m ? x : m` the
/// compiler turns into vector min/max (that expression is exactly minps/vminps, NaN and all);
/// a scalar scan through one accumulator is one dependent min per weight, and was 70% of the
/// AWQ α search's rounding (perf, SmolLM2, 2026-12-05).
inline constexpr std::size_t scan_lanes = 16;

/// The least and greatest of `v` (non-empty) as values, lane by lane; false (lo, hi unset)
/// when `v` holds a NaN or an infinity, whose order std::minmax_element defines its own way.
inline bool lane_min_max(std::span<const float> v, float& lo, float& hi) {
    constexpr std::size_t L = scan_lanes;
    const std::size_t n = v.size();
    lo = v[0], hi = v[0];
    float finite = 0.0f;  // x - x: NaN once any x is NaN or infinite
    std::size_t i = 0;
    if (n >= L) {
        float l[L], h[L], f[L] = {};
        for (std::size_t j = 0; j < L; ++j) l[j] = h[j] = v[j];
        for (i = 0; i + L <= n; i += L)
            for (std::size_t j = 0; j < L; ++j) {
                const float x = v[i + j];
                l[j] = x < l[j] ? x : l[j];
                h[j] = x > h[j] ? x : h[j];
                f[j] += x - x;
            }
        for (std::size_t j = 0; j < L; ++j) {
            lo = l[j] < lo ? l[j] : lo;
            hi = h[j] > hi ? h[j] : hi;
            finite += f[j];
        }
    }
    for (; i < n; ++i) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        finite += v[i] - v[i];
    }
    return finite == 0.0f;
}

/// The greatest |v|, lane by lane (NaN ignored unless in v[0..L)).
inline float lane_max_abs(std::span<const float> v) {
    constexpr std::size_t L = scan_lanes;
    const std::size_t n = v.size();
    float m = 0.0f;
    std::size_t i = 0;
    if (n >= L) {
        float a[L] = {};
        for (i = 0; i + L <= n; i += L)
            for (std::size_t j = 0; j < L; ++j) {
                const float x = std::fabs(v[i + j]);
                a[j] = x > a[j] ? x : a[j];
            }
        for (std::size_t j = 0; j < L; ++j) m = a[j] > m ? a[j] : m;
    }
    for (; i < n; ++i) m = std::fabs(v[i]) > m ? std::fabs(v[i]) : m;
    return m;
}
}  // namespace detail

inline GroupRange group_range(std::span<const float> values, const QuantSpec& spec) {
    GroupRange r;
    if (values.empty()) return r;
    r.empty = false;
    if (spec.codebook || spec.zero == ZeroPoint::symmetric) {
        // the sign of the extreme decides the scale's: the first value of largest magnitude,
        // found by a scan for the maximum's first occurrence
        const float m = detail::lane_max_abs(values);
        if (m > 0.0f && std::isfinite(m)) {
            for (const float v : values)
                if (std::fabs(v) == m) {
                    r.extreme = v;
                    return r;
                }
        }
        for (const float v : values)  // NaN, infinity or all zeros: the plain scan's answer
            if (std::fabs(v) > std::fabs(r.extreme)) r.extreme = v;
    } else {
        // -0 and +0 compare equal but are stored differently: a zero end (or a NaN, an infinity)
        // takes the plain scan's first minimum and last maximum
        if (!detail::lane_min_max(values, r.lo, r.hi) || r.lo == 0.0f || r.hi == 0.0f) {
            const auto [lo_it, hi_it] = std::minmax_element(values.begin(), values.end());
            r.lo = *lo_it, r.hi = *hi_it;
        }
    }
    return r;
}

/// Grid parameters of a group with range `r`, shrunk by `shrink` (1 = plain min/max). Throws
/// InvalidData when a scale or minimum does not fit the scale type.
inline GroupParams group_params(const GroupRange& r, const QuantSpec& spec, float shrink = 1.0f) {
    GroupParams p;
    if (r.empty) return p;
    if (const Codebook* cb = spec.codebook) {
        const float anchor = cb->levels[std::size_t(cb->anchor())];
        p.scale = detail::store_scale(cb->scale_rule == Codebook::ScaleRule::absmax ? std::fabs(r.extreme) * shrink / std::fabs(anchor)
                                                                                   : r.extreme * shrink / anchor,
                                      spec.scale_type);
        return p;
    }
    switch (spec.zero) {
        case ZeroPoint::symmetric:
            p.scale = detail::store_scale(r.extreme * shrink / -float(spec.symmetric_zero()), spec.scale_type);
            break;
        case ZeroPoint::integer: {
            const float lo = std::min(r.lo, 0.0f) * shrink, hi = std::max(r.hi, 0.0f) * shrink;
            p.scale = detail::store_scale((hi - lo) / float(spec.max_code()), spec.scale_type);
            p.zero = p.scale == 0.0f
                         ? 0
                         : std::clamp(int(std::nearbyint(-lo / p.scale)), 0, spec.max_code());
            break;
        }
        case ZeroPoint::float_min:
            p.min = detail::store_scale(r.lo * shrink, spec.scale_type, "minimum");
            p.scale = detail::store_scale((r.hi * shrink - p.min) / float(spec.max_code()), spec.scale_type);
            if (p.scale < 0.0f) p.scale = 0.0f;  // fp16 rounding of min can pass a tiny range
            break;
    }
    return p;
}

/// Grid parameters for `values` with its range shrunk by `shrink` (1 = plain min/max).
inline GroupParams find_group_params(std::span<const float> values, const QuantSpec& spec,
                                     float shrink = 1.0f) {
    return group_params(group_range(values, spec), spec, shrink);
}

/// The code of one weight on a group's grid.
inline std::uint8_t quantize_value(float w, const GroupParams& p, const QuantSpec& spec) noexcept {
    if (const Codebook* cb = spec.codebook) {  // the nearest level, the lower one on ties
        // a scan of all 16: branch-free, it measured twice as fast as a binary search here
        // (qforge weights on SmolLM2, rtn:iq4nlg32, 1 thread: 1.6-1.8 s against 3.2 s)
        const float t = p.scale == 0.0f ? 0.0f : w / p.scale;
        int best = 0;
        float best_d = std::fabs(t - cb->levels[0]);
        for (int i = 1; i < int(cb->levels.size()); ++i)
            if (const float d = std::fabs(t - cb->levels[std::size_t(i)]); d < best_d) best_d = d, best = i;
        return std::uint8_t(best);
    }
    switch (spec.zero) {
        case ZeroPoint::symmetric: {
            if (p.scale == 0.0f) return std::uint8_t(spec.symmetric_zero());
            const float c = std::nearbyint(w / p.scale);
            const float half = float(spec.symmetric_zero());
            return std::uint8_t(int(std::clamp(c, -half, half - 1.0f)) + spec.symmetric_zero());
        }
        case ZeroPoint::integer: {
            if (p.scale == 0.0f) return std::uint8_t(p.zero);
            const float q = std::nearbyint(w / p.scale) + float(p.zero);
            return std::uint8_t(std::clamp(q, 0.0f, float(spec.max_code())));
        }
        case ZeroPoint::float_min: {
            if (p.scale == 0.0f) return 0;
            const float q = std::nearbyint((w - p.min) / p.scale);
            return std::uint8_t(std::clamp(q, 0.0f, float(spec.max_code())));
        }
    }
    return 0;
}

/// The value a code stands for; identical to QuantizedMatrix::dequantize.
inline float dequantize_value(int q, const GroupParams& p, const QuantSpec& spec) noexcept {
    if (spec.codebook) return p.scale * spec.codebook->levels[std::size_t(q)];
    switch (spec.zero) {
        case ZeroPoint::symmetric: return p.scale * float(q - spec.symmetric_zero());
        case ZeroPoint::integer: return p.scale * float(q - p.zero);
        case ZeroPoint::float_min: return std::fma(p.scale, float(q), p.min);
    }
    return 0.0f;
}

/// The grid `p` in the form of the vector rounding kernel (backends/fp32.hpp), which gives the
/// same codes and values as quantize_value/dequantize_value; none for codebook grids and for a
/// zero scale (whose codes quantize_value fixes by rule).
inline std::optional<AffineGrid> affine_grid(const GroupParams& p, const QuantSpec& spec) noexcept {
    if (spec.codebook || p.scale == 0.0f) return std::nullopt;
    AffineGrid g;
    g.scale = p.scale;
    switch (spec.zero) {
        case ZeroPoint::symmetric:
            g.lo = -float(spec.symmetric_zero()), g.hi = float(spec.symmetric_zero()) - 1.0f, g.bias = float(spec.symmetric_zero());
            break;
        case ZeroPoint::integer: g.zero = float(p.zero), g.hi = float(spec.max_code()); break;
        case ZeroPoint::float_min: g.min = p.min, g.hi = float(spec.max_code()), g.fused_min = true; break;
    }
    return g;
}

/// The function types of Fp32Functions::grid_round and Fp32Functions::codebook_round (runtime/dispatch.hpp).
using GridRoundFn = void (*)(const float*, int, const AffineGrid&, std::uint8_t*, float*, bool) noexcept;
using CodebookRoundFn = void (*)(const float*, int, const float*, int, float, std::uint8_t*, float*, bool) noexcept;

/// The rounding kernels round_group uses, from a backend's Fp32Functions; a null one falls back
/// to quantize_value.
struct RoundingKernels {
    GridRoundFn grid = nullptr;
    CodebookRoundFn codebook = nullptr;
};

/// `values` onto the grid `p`: codes (if not null), and into `out` (if not null) each value's
/// dequantized form, or the value minus it when `residual`. Affine grids run on `k.grid`,
/// codebook grids on `k.codebook` (a backend's vector kernels), zero scales and missing kernels
/// on quantize_value; the results are the same either way.
inline void round_group(std::span<const float> values, const GroupParams& p, const QuantSpec& spec, const RoundingKernels& k,
                        std::uint8_t* codes, float* out, bool residual) noexcept {
    if (const auto g = affine_grid(p, spec); g && k.grid) {
        k.grid(values.data(), int(values.size()), *g, codes, out, residual);
        return;
    }
    if (const Codebook* cb = spec.codebook; cb && p.scale != 0.0f && k.codebook) {
        k.codebook(values.data(), int(values.size()), cb->levels.data(), int(cb->levels.size()), p.scale, codes, out, residual);
        return;
    }
    for (std::size_t j = 0; j < values.size(); ++j) {
        const std::uint8_t q = quantize_value(values[j], p, spec);
        if (codes) codes[j] = q;
        if (out) {
            const float v = dequantize_value(q, p, spec);
            out[j] = residual ? values[j] - v : v;
        }
    }
}

/// Squared error of `values` on the grid `p`.
inline double group_squared_error(std::span<const float> values, const GroupParams& p,
                                  const QuantSpec& spec) noexcept {
    double err = 0.0;
    for (const float v : values) {
        const double d = double(v) - double(dequantize_value(quantize_value(v, p, spec), p, spec));
        err += d * d;
    }
    return err;
}

/// Grid parameters minimising the group's squared error over the clip-search shrink factors.
/// Shrink 1 (plain min/max) is tried first and kept on ties, so the search never does worse.
inline GroupParams search_group_params(std::span<const float> values, const QuantSpec& spec,
                                       const ClipSearch& search) {
    GroupParams best = find_group_params(values, spec, 1.0f);
    double best_err = group_squared_error(values, best, spec);
    for (int i = 1; i <= search.grid; ++i) {
        const float shrink = 1.0f - search.max_shrink * float(i) / float(search.grid);
        const GroupParams p = find_group_params(values, spec, shrink);
        const double err = group_squared_error(values, p, spec);
        if (err < best_err) {
            best_err = err;
            best = p;
        }
    }
    return best;
}

/// Round-to-nearest quantizer.
///
/// On the 32-weight GGUF grids (q4_0, q4_1, q5_0, q5_1, q8_0) it rounds as llama-quantize does
/// (ggml_search.hpp), so its blocks are llama-quantize's, byte for byte: ggml's reference
/// rounding, or with an importance vector (`importance`: one weight per column, an imatrix's
/// mean of x², io/imatrix.hpp) its weighted searches (q4_0, q5_0: make_qx_quants; q4_1, q5_1:
/// make_qkx3_quants; q8_0 ignores it, as ggml does). Q4_K, Q5_K and Q6_K likewise follow
/// llama-quantize's searches with and without an imatrix (ggml_search::k_ref_super_block). An
/// importance vector on another grid (Q2_K, Q3_K, qforge's own) is an InvalidArgument, as is one
/// of the wrong length or with negative or non-finite entries.
class RtnQuantizer {
public:
    explicit RtnQuantizer(const QuantSpec& spec, bool clip_search = false, ClipSearch search = {},
                          int threads = 0, const std::vector<float>* importance = nullptr)
        : spec_(spec), clip_(clip_search), search_(search), threads_(threads), importance_(importance) {
        spec_.validate();
        if (clip_ && (search_.grid < 1 || !(search_.max_shrink > 0.0f && search_.max_shrink < 1.0f)))
            throw InvalidArgument("clip search needs grid >= 1 and 0 < max_shrink < 1");
        if (importance_ && !ggml_search::reproduced_for(spec_.block))
            throw InvalidArgument("rtn with an importance matrix rounds as llama-quantize on " + ggml_search::reproduced_names() + " so far, not on " +
                                  (spec_.block.empty() ? std::string("qforge's own grids") : std::string(spec_.block)));
        if (importance_ && clip_) throw InvalidArgument("rtn with an importance matrix searches its own scales; ',clip' does not apply");
    }
    const QuantSpec& spec() const noexcept { return spec_; }

    QuantizedMatrix quantize(MatrixView<const float> w) const {
        require_finite_matrix(w, "weight matrix");
        require_int_shape(w.rows, w.cols, "weight matrix");
        if (ggml_grid() && !clip_) return quantize_ggml(w);
        if (spec_.super) return quantize_two_level(w);
        QuantizedMatrix q(spec_, int(w.rows), int(w.cols));
        const int g = spec_.group_length(q.cols), groups = q.groups_per_row();
        const std::size_t row_ops = w.cols * 8 * (clip_ ? std::size_t(search_.grid) + 1 : 1);  // a grid per shrink tried
        parallel_for(w.rows, threads_, [&](std::size_t begin, std::size_t end) {
            for (std::size_t r = begin; r < end; ++r) {
                const auto row = w.row(r);
                for (int gi = 0; gi < groups; ++gi) {
                    const int c0 = gi * g, c1 = std::min(q.cols, c0 + g);
                    const auto values = row.subspan(std::size_t(c0), std::size_t(c1 - c0));
                    GroupParams p;
                    try {
                        p = clip_ ? search_group_params(values, spec_, search_) : find_group_params(values, spec_);
                    } catch (const Error&) {
                        rethrow_with_context("row " + std::to_string(r) + ", group " + std::to_string(gi) + " (columns " +
                                             std::to_string(c0) + "-" + std::to_string(c1 - 1) + ")");
                    }
                    const std::size_t idx = q.group_index(int(r), gi);
                    q.scales[idx] = p.scale;
                    if (spec_.zero == ZeroPoint::integer) q.zeros[idx] = std::uint8_t(p.zero);
                    if (spec_.zero == ZeroPoint::float_min) q.mins[idx] = p.min;
                    std::uint8_t* out = q.codes.data() + r * std::size_t(q.cols);
                    for (int c = c0; c < c1; ++c) out[c] = quantize_value(row[std::size_t(c)], p, spec_);
                }
            }
        }, grain_for(row_ops));
        return q;
    }

private:
    /// Two-level grids: each super-block fitted as a whole (quantizers/superblock.hpp).
    QuantizedMatrix quantize_two_level(MatrixView<const float> w) const;

    /// A one-level GGUF grid whose llama-quantize search ggml_search reproduces.
    bool ggml_grid() const noexcept {
        const auto* r = ggml_search::reproduced_for(spec_.block);
        return r && r->k_bits == 0;
    }
    /// The code width of a K-quant whose search ggml_search reproduces, else 0.
    int ggml_k_bits() const noexcept {
        const auto* r = ggml_search::reproduced_for(spec_.block);
        return r ? r->k_bits : 0;
    }

    /// An importance vector must have one finite, non-negative entry per column.
    void check_importance(std::size_t cols) const {
        const auto& imp = *importance_;
        if (imp.size() != cols)
            throw InvalidArgument("importance matrix has " + std::to_string(imp.size()) + " entries, the weight matrix " + std::to_string(cols) +
                                  " columns");
        for (std::size_t j = 0; j < imp.size(); ++j)
            if (!std::isfinite(imp[j]) || imp[j] < 0.0f)
                throw InvalidArgument("importance matrix entry " + std::to_string(j) + " is " + detail::short_number(imp[j]) +
                                      " (means of squares are finite and not negative)");
    }

    /// llama-quantize's rounding of the 32-weight types: without an importance vector, or on
    /// q8_0, ggml's reference rounding (ggml_search::ref_group); with one
    /// (quantize_row_q4_0_impl ... q5_1_impl), per group of 32 the weights
    /// imatrix[j] * sqrt(sigma2 + x_j^2), then make_qx_quants (symmetric) or
    /// make_qkx3_quants(rmin -0.9, rdelta 0.05, 36 steps) (float minimum). The scale and minimum
    /// are stored in fp16, the codes as ggml computed them from the unrounded scale.
    QuantizedMatrix quantize_ggml(MatrixView<const float> w) const {
        static const std::vector<float> none;
        const bool weighted = importance_ && spec_.block != "q8_0";
        const auto& imp = importance_ ? *importance_ : none;
        if (importance_) check_importance(w.cols);
        QuantizedMatrix q(spec_, int(w.rows), int(w.cols));
        const int g = spec_.group_length(q.cols), groups = q.groups_per_row();
        if (g != 32) throw InvalidArgument("rtn with an importance matrix: groups of 32 expected, the grid has " + std::to_string(g));
        const bool symmetric = spec_.zero == ZeroPoint::symmetric;
        const int nmax = symmetric ? spec_.symmetric_zero() : spec_.max_code();
        parallel_for(w.rows, threads_, [&](std::size_t begin, std::size_t end) {
            float weight[32];
            std::int8_t L[32];
            std::uint8_t U[32], aux[32];
            for (std::size_t r = begin; r < end; ++r) {
                const auto row = w.row(r);
                const float sigma2 = weighted ? ggml_search::row_sigma2(row) : 0.0f;
                std::uint8_t* out = q.codes.data() + r * std::size_t(q.cols);
                for (int gi = 0; gi < groups; ++gi) {
                    const std::size_t c0 = std::size_t(gi) * 32;
                    const float* x = row.data() + c0;
                    if (weighted)
                        for (int j = 0; j < 32; ++j) weight[j] = imp[c0 + std::size_t(j)] * std::sqrt(sigma2 + x[j] * x[j]);
                    const std::size_t idx = q.group_index(int(r), gi);
                    try {
                        if (!weighted) {
                            float min = 0.0f;
                            q.scales[idx] = detail::store_scale(ggml_search::ref_group(spec_.bits, !symmetric, x, U, &min), spec_.scale_type);
                            if (!symmetric) q.mins[idx] = detail::store_scale(min, spec_.scale_type, "minimum");
                            for (int j = 0; j < 32; ++j) out[c0 + std::size_t(j)] = U[j];
                        } else if (symmetric) {
                            q.scales[idx] = detail::store_scale(ggml_search::make_qx_quants(32, nmax, x, L, weight), spec_.scale_type);
                            for (int j = 0; j < 32; ++j) out[c0 + std::size_t(j)] = std::uint8_t(L[j]);
                        } else {
                            float the_min = 0.0f;
                            const float d = ggml_search::make_qkx3_quants(32, nmax, x, weight, U, &the_min, aux, -0.9f, 0.05f, 36);
                            q.scales[idx] = detail::store_scale(d, spec_.scale_type);
                            q.mins[idx] = detail::store_scale(-the_min, spec_.scale_type, "minimum");
                            for (int j = 0; j < 32; ++j) out[c0 + std::size_t(j)] = U[j];
                        }
                    } catch (const Error&) {
                        rethrow_with_context("row " + std::to_string(r) + ", group " + std::to_string(gi));
                    }
                }
            }
        }, grain_for(w.cols * 8 * 20));
        return q;
    }

    QuantSpec spec_;
    bool clip_;
    ClipSearch search_;
    int threads_;
    const std::vector<float>* importance_ = nullptr;
};

template <>
struct quantizer<Rtn> {
    static QuantizedLayer quantize(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        if (s.pq) {  // plain PQ: k-means on the weights as they are
            if (c.importance) throw InvalidArgument("rtn with a PQ grid: an importance matrix is not used by plain PQ's k-means");
            return to_layer(pq_quantize(w, *s.pq, gptq_pq_options(s, o)));
        }
        return QuantizedLayer(RtnQuantizer(s.spec, s.options.clip, o.clip_search, o.backend.threads(), c.importance).quantize(w));
    }
};

}  // namespace qforge

// RtnQuantizer::quantize_two_level and the two-level grid fit
#include "qforge/quantizers/superblock.hpp"
