#pragma once
/// @file
/// Fitting a two-level grid (ggml's K-quants, core/spec.hpp `SuperBlockGrid`) to a super-block
/// of weights: each group's plain grid from its own range (as group_params does, with an optional
/// shrink), then the group scales quantized to `scale_bits`-bit codes against one fp16 d per
/// super-block, and the minimums (float-minimum grids) to `min_bits`-bit codes against one fp16
/// dmin. Every quantizer that supports such grids (RTN, GPTQ) fits through here, so the
/// parameters a super-block gets depend only on the weights it holds when it is fitted.
///
/// The rule, per super-block (groups j):
/// - symmetric: s_j = extreme_j / -2^(b-1) (the group's own scale, may be negative);
///   d = s_e / min_code where s_e is the s_j of largest magnitude (so it lands exactly on the most
///   negative code, as the symmetric rule does for weights); sc_j = clamp(round(s_j / d)).
/// - float minimum: M_j = -min(0, lo_j) >= 0 and s_j = (hi_j + M_j) / (2^b - 1);
///   d = max s_j / max_code, dmin = max M_j / max_min_code; sc_j, m_j rounded and clamped.
/// d and dmin are rounded to fp16 first, and the codes computed against the rounded values; the
/// group's scale is then d * sc_j and its minimum -(dmin * m_j), both exact in float.
#include <algorithm>
#include <cmath>
#include <span>

#include "qforge/core/error.hpp"
#include "qforge/core/half.hpp"
#include "qforge/core/spec.hpp"
#include "qforge/quantizers/rtn.hpp"

namespace qforge {

/// The fitted grid of one super-block: `groups[j]` for its groups, and d, dmin (fp16 values).
struct SuperBlockParams {
    float d = 0.0f, dmin = 0.0f;
};

/// Fits the two-level grid of `spec` (spec.super set) to `values`, the super-block's weights in
/// column order (fewer than `weights` only for a row's last, shorter super-block); writes one
/// GroupParams per group of spec.group_size into `groups`. InvalidData when d or dmin does not
/// fit fp16.
inline SuperBlockParams fit_super_block(std::span<const float> values, const QuantSpec& spec, GroupParams* groups, float shrink = 1.0f) {
    const SuperBlockGrid& sb = *spec.super;
    const std::size_t g = std::size_t(spec.group_size), n = (values.size() + g - 1) / g;
    float s[64], m[64];  // a super-block holds at most 256 / 4 groups
    SuperBlockParams out;
    float s_extreme = 0.0f, m_max = 0.0f;
    for (std::size_t j = 0; j < n; ++j) {
        const auto v = values.subspan(j * g, std::min(g, values.size() - j * g));
        const GroupRange r = group_range(v, spec);
        if (spec.zero == ZeroPoint::symmetric) {
            s[j] = r.extreme * shrink / -float(spec.symmetric_zero());
            m[j] = 0.0f;
        } else {
            m[j] = -std::min(r.lo, 0.0f) * shrink;
            s[j] = std::max(0.0f, (r.hi * shrink + m[j]) / float(spec.max_code()));
        }
        if (std::fabs(s[j]) > std::fabs(s_extreme)) s_extreme = s[j];
        m_max = std::max(m_max, m[j]);
    }
    const float d_exact = spec.zero == ZeroPoint::symmetric ? s_extreme / float(sb.min_scale_code()) : s_extreme / float(sb.max_scale_code());
    out.d = detail::store_scale(d_exact, ScaleType::f16, "super-block scale d");
    if (sb.min_bits > 0) out.dmin = detail::store_scale(m_max / float(sb.max_min_code()), ScaleType::f16, "super-block minimum scale dmin");
    for (std::size_t j = 0; j < n; ++j) {
        const int sc = out.d == 0.0f ? 0 : std::clamp(int(std::nearbyint(s[j] / out.d)), sb.min_scale_code(), sb.max_scale_code());
        groups[j] = {};
        groups[j].scale = out.d * float(sc);
        if (sb.min_bits > 0) {
            const int mc = out.dmin == 0.0f ? 0 : std::clamp(int(std::nearbyint(m[j] / out.dmin)), 0, sb.max_min_code());
            groups[j].min = -(out.dmin * float(mc));
        }
    }
    return out;
}

/// fit_super_block over the clip search's shrink factors, keeping the one with the least squared
/// error over the super-block (shrink 1 first, kept on ties).
inline SuperBlockParams search_super_block(std::span<const float> values, const QuantSpec& spec, const ClipSearch& search, GroupParams* groups) {
    const std::size_t g = std::size_t(spec.group_size), n = (values.size() + g - 1) / g;
    GroupParams trial[64];
    const auto error = [&](const GroupParams* ps) {
        double e = 0.0;
        for (std::size_t j = 0; j < n; ++j) e += group_squared_error(values.subspan(j * g, std::min(g, values.size() - j * g)), ps[j], spec);
        return e;
    };
    SuperBlockParams best = fit_super_block(values, spec, groups, 1.0f);
    double best_err = error(groups);
    for (int i = 1; i <= search.grid; ++i) {
        const float shrink = 1.0f - search.max_shrink * float(i) / float(search.grid);
        const SuperBlockParams p = fit_super_block(values, spec, trial, shrink);
        if (const double e = error(trial); e < best_err) {
            best_err = e;
            best = p;
            std::copy(trial, trial + n, groups);
        }
    }
    return best;
}

// Declared in RtnQuantizer (rtn.hpp), which includes this file at its end.
inline QuantizedMatrix RtnQuantizer::quantize_two_level(MatrixView<const float> w) const {
    QuantizedMatrix q(spec_, int(w.rows), int(w.cols));
    const int g = spec_.group_size, per = spec_.super->weights, supers = q.supers_per_row();
    // Q4_K, Q5_K, Q6_K: llama-quantize's own search (ggml_search::k_ref_super_block), so the
    // blocks are llama-quantize's; rows are whole super-blocks there (the fallback saw to it)
    const int k_bits = ggml_k_bits();
    if (importance_ && !(k_bits && q.cols % per == 0))
        throw InvalidArgument("rtn with an importance matrix on " + std::string(spec_.block) + ": " +
                              (k_bits ? "rows of " + std::to_string(q.cols) + " are not whole super-blocks of " + std::to_string(per)
                                      : std::string("llama-quantize's search for this type is not reproduced yet")));
    if (k_bits && !clip_ && q.cols % per == 0) {
        if (importance_) check_importance(w.cols);
        parallel_for(w.rows, threads_, [&](std::size_t begin, std::size_t end) {
            int sc[16], m[16];
            for (std::size_t r = begin; r < end; ++r) {
                const auto row = w.row(r);
                std::uint8_t* out = q.codes.data() + r * std::size_t(q.cols);
                for (int sbi = 0; sbi < supers; ++sbi) {
                    const int c0 = sbi * per;
                    float d = 0.0f, dmin = 0.0f;
                    ggml_search::k_ref_super_block(k_bits, row.data() + c0, &d, &dmin, sc, m, out + c0,
                                                   importance_ ? importance_->data() + c0 : nullptr);
                    if (!std::isfinite(d) || !std::isfinite(dmin))
                        throw InvalidData("row " + std::to_string(r) + ", super-block " + std::to_string(sbi) +
                                          ": the super-block scale does not fit fp16 (max 65504); the weights are too large for fp16 scales");
                    q.super[(r * std::size_t(supers) + std::size_t(sbi)) * 2] = d;
                    q.super[(r * std::size_t(supers) + std::size_t(sbi)) * 2 + 1] = dmin;
                    for (int j = 0; j < per / g; ++j) {
                        const std::size_t idx = q.group_index(int(r), c0 / g + j);
                        q.scales[idx] = d * float(k_bits == 6 ? int(std::int8_t(sc[j])) : sc[j]);
                        if (spec_.zero == ZeroPoint::float_min) q.mins[idx] = -(dmin * float(m[j]));
                    }
                }
            }
        }, grain_for(w.cols * 8 * 24));
        return q;
    }
    parallel_for(w.rows, threads_, [&](std::size_t begin, std::size_t end) {
        GroupParams ps[64];
        for (std::size_t r = begin; r < end; ++r) {
            const auto row = w.row(r);
            for (int sbi = 0; sbi < supers; ++sbi) {
                const int c0 = sbi * per, c1 = std::min(q.cols, c0 + per);
                const auto values = row.subspan(std::size_t(c0), std::size_t(c1 - c0));
                SuperBlockParams sp;
                try {
                    sp = clip_ ? search_super_block(values, spec_, search_, ps) : fit_super_block(values, spec_, ps);
                } catch (const Error&) {
                    rethrow_with_context("row " + std::to_string(r) + ", super-block " + std::to_string(sbi) + " (columns " + std::to_string(c0) +
                                         "-" + std::to_string(c1 - 1) + ")");
                }
                q.super[(r * std::size_t(supers) + std::size_t(sbi)) * 2] = sp.d;
                q.super[(r * std::size_t(supers) + std::size_t(sbi)) * 2 + 1] = sp.dmin;
                std::uint8_t* out = q.codes.data() + r * std::size_t(q.cols);
                for (int c = c0; c < c1; ++c) {
                    const GroupParams& p = ps[(c - c0) / g];
                    const std::size_t idx = q.group_index(int(r), c / g);
                    q.scales[idx] = p.scale;
                    if (spec_.zero == ZeroPoint::float_min) q.mins[idx] = p.min;
                    out[c] = quantize_value(row[std::size_t(c)], p, spec_);
                }
            }
        }
    }, grain_for(w.cols * 8 * (clip_ ? std::size_t(search_.grid) + 1 : 1)));
    return q;
}

}  // namespace qforge
