#pragma once
/// @file
/// llama-quantize's weighted rounding searches, so that RTN given an importance matrix writes the
/// blocks llama-quantize writes (tests/peer: ggml's own quantize_chunk on the same rows, byte for
/// byte). The algorithms are those of ggml/src/ggml-quants.c (llama.cpp 0c1e570):
/// - `make_qx_quants` (Q4_0, Q5_0 with an imatrix): symmetric codes l in [-nmax, nmax-1] at scale
///   -max/nmax, where max is the signed extreme; then 18 other scales -(nmax + 0.1 is)/max,
///   is = ±1..±9, each with its least-squares scale Σwxl/Σwl², keeping the one that maximises
///   (Σwxl)²/Σwl² (least weighted error).
/// - `make_qkx3_quants` (Q4_1, Q5_1 with an imatrix): codes in [0, nmax] on [min(0, lo), hi], then
///   nstep+1 inverse scales (rmin + rdelta is + nmax)/(hi - lo), each with its weighted
///   least-squares scale and minimum (the minimum clamped to at most 0), keeping the least
///   weighted squared error.
/// Each weight's importance is imatrix[j] · sqrt(σ² + x_j²), σ² the row's mean square. The float
/// operations follow ggml's order so that the results agree to the bit (no FMA contraction in
/// ggml's generic C, none in qforge's scalar build).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "qforge/core/half.hpp"

namespace qforge::ggml_search {

/// The GGUF types whose llama-quantize search this file reproduces: the one-level grids
/// (k_bits 0) and the K-quants (k_bits: their code width). The one list RTN consults.
struct Reproduced {
    std::string_view block;
    int k_bits;
};
inline constexpr Reproduced reproduced[] = {{"q4_0", 0}, {"q5_0", 0}, {"q4_1", 0}, {"q5_1", 0}, {"q8_0", 0}, {"q4_k", 4}, {"q5_k", 5}, {"q6_k", 6}};

/// The entry for a block type, or null when llama-quantize's search for it is not reproduced.
constexpr const Reproduced* reproduced_for(std::string_view block) noexcept {
    for (const auto& r : reproduced)
        if (r.block == block) return &r;
    return nullptr;
}

/// "q4_0, q5_0, ..." for messages.
inline std::string reproduced_names() {
    std::string s;
    for (const auto& r : reproduced) s += (s.empty() ? "" : ", ") + std::string(r.block);
    return s;
}

/// ggml's nearest_int: round half to even through the float mantissa (|f| < 2^22).
inline int nearest_int(float f) noexcept {
    const float v = f + 12582912.0f;
    std::int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/// A float converted as C converts it to an integer (truncation toward zero) where that is
/// defined, clamped to [lo, hi] otherwise (NaN gives lo): ggml's `(int8_t)(v)` casts, without their
/// undefined behaviour on the degenerate groups (a range so small that 1/d overflows).
inline int trunc_clamped(float v, int lo, int hi) noexcept {
    if (!(v >= float(lo))) return lo;
    if (!(v <= float(hi))) return hi;
    return int(v);
}

/// ggml's per-weight importance for a row: imatrix[j] * sqrt(sigma2 + x_j^2), sigma2 = the row's
/// sum of squares over its length (accumulated in float, in order).
inline float row_sigma2(std::span<const float> row) noexcept {
    float s = 0.0f;
    for (const float x : row) s += x * x;
    return s / float(row.size());
}

/// make_qx_quants with weights (rmse_type 1): returns the scale d; L[i] in [0, 2 nmax) holds
/// l + nmax. All-zero groups (|max| < 1e-15) give d = 0 and L = 0 (ggml writes code 0 then).
inline float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, const float* w) noexcept {
    float max = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    float iscale = -float(nmax) / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = std::int8_t(l + nmax);
        sumlx += w[i] * x[i] * float(l);
        suml2 += w[i] * float(l) * float(l);
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(float(nmax) + 0.1f * float(is)) / max;
        sumlx = suml2 = 0.0f;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            sumlx += w[i] * x[i] * float(l);
            suml2 += w[i] * float(l) * float(l);
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = std::int8_t(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/// make_qkx3_quants with weights (use_mad off): returns the scale; *the_min receives minus the
/// group's minimum (ggml stores m = -the_min); L[i] in [0, nmax]. `Laux`: n bytes of scratch.
inline float make_qkx3_quants(int n, int nmax, const float* x, const float* w, std::uint8_t* L, float* the_min, std::uint8_t* Laux, float rmin,
                              float rdelta, int nstep) noexcept {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max <= min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.0f;
    }
    float iscale = float(nmax) / (max - min);
    float scale = 1.0f / iscale;
    float best_mad = 0.0f;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = std::uint8_t(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * float(L[i]) + min - x[i];
        diff = diff * diff;
        best_mad += w[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = std::uint8_t(l);
            sum_l += w[i] * float(l);
            sum_l2 += w[i] * float(l) * float(l);
            sum_xl += w[i] * float(l) * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0.0f) {
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0.0f;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * float(Laux[i]) + this_min - x[i];
                diff = diff * diff;
                mad += w[i] * diff;
            }
            if (mad < best_mad) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/// ggml's reference rounding of one group of 32 (quantize_row_q4_0_ref ... q8_0_ref: what
/// llama-quantize writes without an imatrix), `nbits` 4, 5 or 8: symmetric (Q4_0, Q5_0:
/// d = max / -2^(nbits-1), max the signed extreme; Q8_0: d = amax / 127) or, with `float_min`,
/// d = (max - min) / (2^nbits - 1) and the minimum (Q4_1, Q5_1). Codes from x · (1/d) of the
/// unrounded d: truncation of v + zero + 0.5 (Q4_0/Q5_0), of v + 0.5 (Q4_1/Q5_1), roundf
/// (Q8_0); written here as qforge's unsigned codes (the signed value plus 2^(nbits-1)). Returns
/// d; *min receives the minimum for `float_min`.
inline float ref_group(int nbits, bool float_min, const float* x, std::uint8_t* codes, float* min_out) noexcept {
    constexpr int qk = 32;
    if (float_min) {
        float min = 3.402823466e+38f, max = -3.402823466e+38f;
        for (int j = 0; j < qk; ++j) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const int top = (1 << nbits) - 1;
        const float d = (max - min) / float(top);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < qk; ++j) {
            const int q = trunc_clamped((x[j] - min) * id + 0.5f, 0, 127);
            codes[j] = std::uint8_t(q > top ? top : q);
        }
        *min_out = min;
        return d;
    }
    if (nbits == 8) {
        float amax = 0.0f;
        for (int j = 0; j < qk; ++j) amax = amax > std::fabs(x[j]) ? amax : std::fabs(x[j]);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < qk; ++j) codes[j] = std::uint8_t(trunc_clamped(std::round(x[j] * id), -128, 127) + 128);
        return d;
    }
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < qk; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    const int zero = 1 << (nbits - 1);
    const float d = max / -float(zero);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < qk; ++j) {
        const int q = trunc_clamped(x[j] * id + (float(zero) + 0.5f), 0, 127);
        codes[j] = std::uint8_t(q > 2 * zero - 1 ? 2 * zero - 1 : q);
    }
    return d;
}

/// make_qkx2_quants: make_qkx3_quants' search with its own empty-range test (max == min), as
/// quantize_row_q4_K_ref / q5_K_ref call it.
inline float make_qkx2_quants(int n, int nmax, const float* x, const float* w, std::uint8_t* L, float* the_min, std::uint8_t* Laux, float rmin,
                              float rdelta, int nstep) noexcept {
    float min = x[0], max = x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.0f;
    }
    // from here the two searches are the same computation
    return make_qkx3_quants(n, nmax, x, w, L, the_min, Laux, rmin, rdelta, nstep);
}

/// make_qp_quants: the n non-negative values x (a super-block's group scales or minimums) coded in
/// [0, nmax] against one scale, weighted by `w`: 9 candidate scales, then up to 5 passes moving
/// single codes while that raises (Σwxl)²/Σwl². Returns the scale Σwxl/Σwl².
inline float make_qp_quants(int n, int nmax, const float* x, std::uint8_t* L, const float* w) noexcept {
    float max = 0.0f;
    for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
    if (max < 1e-15f) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    float iscale = float(nmax) / max;
    int Li[64];
    for (int i = 0; i < n; ++i) Li[i] = nearest_int(iscale * x[i]);
    const float scale = 1.0f / iscale;
    float best_mse = 0.0f;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * float(Li[i]);
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * float(is) + float(nmax)) / max;
        const float scale_is = 1.0f / iscale_is;
        float mse = 0.0f;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale_is * x[i]);
            l = l < nmax ? l : nmax;
            const float diff = x[i] - scale_is * float(l);
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = l < nmax ? l : nmax;
        Li[i] = l;
        sumlx += w[i] * x[i] * float(l);
        suml2 += w[i] * float(l) * float(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float slx = sumlx - w[i] * x[i] * float(Li[i]);
            float sl2 = suml2 - w[i] * float(Li[i]) * float(Li[i]);
            if (slx > 0.0f && sl2 > 0.0f) {
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = new_l < nmax ? new_l : nmax;
                if (new_l != Li[i]) {
                    slx += w[i] * x[i] * float(new_l);
                    sl2 += w[i] * float(new_l) * float(new_l);
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        Li[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = std::uint8_t(Li[i]);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/// One K-quant super-block of 256 as llama-quantize writes it without an imatrix
/// (quantize_row_q4_K_ref, q5_K_ref, q6_K_ref), `nbits` 4, 5 or 6:
/// - Q4_K/Q5_K: per group of 32, weights sqrt(Σx²/32) + |x_i| and make_qkx2_quants (nmax 15 or
///   31; rmin -1 / -0.5, rdelta 0.1, 20 / 15 steps); the scales and minimums then coded in 6 bits
///   against their largest (sc = min(63, nearest_int(63 / max_scale · scale))), d = fp16(max_scale
///   / 63), dmin = fp16(max_min / 63); codes nearest_int((x + dmin·m) / (d·sc)).
/// - Q6_K: per group of 16, make_qx_quants(nmax 32, weights x²); the scales coded as int8 against
///   the one of largest magnitude (iscale = -128 / max_scale, d = fp16(1 / iscale)); codes
///   nearest_int(x / (d·sc)) + 32. A super-block whose scales are all below 1e-15 is all zero.
/// With an imatrix `qw` (its 256 entries for this super-block; quantize_row_q4_K_impl ... q6_K_impl):
/// Q4_K/Q5_K weigh each weight qw · sqrt(σ² + x²) with σ² = 2 Σx² / 256, search with
/// make_qkx3_quants (rmin -0.9, rdelta 0.05, 36 steps) and code the scales and minimums with
/// make_qp_quants weighted by each group's summed weight (d, dmin its results in fp16); Q6_K
/// weighs make_qx_quants by qw itself.
/// Writes d and dmin (fp16 values), each group's scale code `sc` and minimum code `m`, and the
/// codes `L` (qforge's unsigned codes); where a group's d·sc is 0 the codes stay those of the
/// group's own search, as ggml leaves them.
inline void k_ref_super_block(int nbits, const float* x, float* d_out, float* dmin_out, int* sc, int* m, std::uint8_t* L,
                              const float* qw = nullptr) noexcept;

namespace detail {
/// The codes of a super-block once its scales are coded (the last loop of ggml's Q4_K/Q5_K/Q6_K
/// quantizers): nearest_int((x + dmin·m_j) / (d·sc_j)) clamped to [lo, hi], plus `offset`; groups
/// whose d·sc_j is 0 keep the codes they have.
inline void k_codes(const float* x, int groups, int group, float d, float dmin, const int* sc, const int* m, int lo, int hi, int offset,
                    std::uint8_t* L) noexcept {
    for (int j = 0; j < groups; ++j) {
        const float dj = d * float(sc[j]);
        if (dj == 0.0f) continue;
        const float dm = m ? dmin * float(m[j]) : 0.0f;
        for (int ii = 0; ii < group; ++ii) {
            int l = nearest_int((m ? x[group * j + ii] + dm : x[group * j + ii]) / dj);
            l = l < lo ? lo : l > hi ? hi : l;
            L[group * j + ii] = std::uint8_t(l + offset);
        }
    }
}

/// Q6_K: 16 groups of 16, make_qx_quants each (weights x², or the imatrix), scales as int8.
inline void q6_k_super_block(const float* x, const float* qw, float* d_out, int* sc, std::uint8_t* L) noexcept {
    float scales[16], w[16];
    std::int8_t l8[16];
    float max_scale = 0.0f, max_abs_scale = 0.0f;
    for (int ib = 0; ib < 16; ++ib) {
        for (int i = 0; i < 16; ++i) w[i] = qw ? qw[16 * ib + i] : x[16 * ib + i] * x[16 * ib + i];
        const float scale = make_qx_quants(16, 32, x + 16 * ib, l8, w);
        for (int i = 0; i < 16; ++i) L[16 * ib + i] = std::uint8_t(l8[i]);
        scales[ib] = scale;
        if (std::fabs(scale) > max_abs_scale) {
            max_abs_scale = std::fabs(scale);
            max_scale = scale;
        }
    }
    if (max_abs_scale < 1e-15f) {  // ggml zeroes the whole block: scales and every code byte 0
        *d_out = 0.0f;
        for (int ib = 0; ib < 16; ++ib) sc[ib] = 0;
        for (int i = 0; i < 256; ++i) L[i] = 0;
        return;
    }
    const float iscale = -128.0f / max_scale;
    const float d = round_to_half(1.0f / iscale);
    *d_out = d;
    for (int ib = 0; ib < 16; ++ib) {
        const int v = nearest_int(iscale * scales[ib]);
        sc[ib] = v > 127 ? 127 : v;
    }
    k_codes(x, 16, 16, d, 0.0f, sc, nullptr, -32, 31, 32, L);
}

/// Q4_K, Q5_K: 8 groups of 32, each searched with a minimum; scales and minimums in 6 bits.
inline void q45_k_super_block(int nbits, const float* x, const float* qw, float* d_out, float* dmin_out, int* sc, int* m,
                              std::uint8_t* L) noexcept {
    const int nmax = nbits == 4 ? 15 : 31;
    float mins[8], scales[8], w[32];
    std::uint8_t aux[32];
    float d = 0.0f, dmin = 0.0f;
    if (qw) {
        float sum_x2 = 0.0f;
        for (int l = 0; l < 256; ++l) sum_x2 += x[l] * x[l];
        const float sigma2 = 2.0f * sum_x2 / 256.0f;
        float sw[8];
        for (int j = 0; j < 8; ++j) {
            for (int l = 0; l < 32; ++l) w[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
            float sumw = 0.0f;
            for (int l = 0; l < 32; ++l) sumw += w[l];
            sw[j] = sumw;
            scales[j] = make_qkx3_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], aux, -0.9f, 0.05f, 36);
        }
        std::uint8_t ls[8], lm[8];
        d = round_to_half(make_qp_quants(8, 63, scales, ls, sw));
        dmin = round_to_half(make_qp_quants(8, 63, mins, lm, sw));
        for (int j = 0; j < 8; ++j) {
            sc[j] = ls[j] & 63;  // ggml packs 6 bits of each
            m[j] = lm[j] & 63;
        }
    } else {
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 8; ++j) {
            float sum_x2 = 0.0f;
            for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
            const float av_x = std::sqrt(sum_x2 / 32.0f);
            for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(x[32 * j + l]);
            scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], aux, nbits == 4 ? -1.0f : -0.5f, 0.1f, nbits == 4 ? 20 : 15);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
        const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
        for (int j = 0; j < 8; ++j) {
            const int ls = std::uint8_t(nearest_int(inv_scale * scales[j])), lm = std::uint8_t(nearest_int(inv_min * mins[j]));
            sc[j] = ls > 63 ? 63 : ls;
            m[j] = lm > 63 ? 63 : lm;
        }
        d = round_to_half(max_scale / 63.0f);
        dmin = round_to_half(max_min / 63.0f);
    }
    *d_out = d;
    *dmin_out = dmin;
    k_codes(x, 8, 32, d, dmin, sc, m, 0, nmax, 0, L);
}
}  // namespace detail

inline void k_ref_super_block(int nbits, const float* x, float* d_out, float* dmin_out, int* sc, int* m, std::uint8_t* L, const float* qw) noexcept {
    if (nbits == 6) {
        *dmin_out = 0.0f;
        detail::q6_k_super_block(x, qw, d_out, sc, L);
    } else {
        detail::q45_k_super_block(nbits, x, qw, d_out, dmin_out, sc, m, L);
    }
}

}  // namespace qforge::ggml_search
