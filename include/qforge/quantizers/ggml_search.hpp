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

namespace qforge::ggml_search {

/// ggml's nearest_int: round half to even through the float mantissa (|f| < 2^22).
inline int nearest_int(float f) noexcept {
    const float v = f + 12582912.0f;
    std::int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
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
            const int q = int(std::int8_t((x[j] - min) * id + 0.5f));
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
        for (int j = 0; j < qk; ++j) codes[j] = std::uint8_t(int(std::round(x[j] * id)) + 128);
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
        const int q = int(std::int8_t(x[j] * id + (float(zero) + 0.5f)));
        codes[j] = std::uint8_t(q > 2 * zero - 1 ? 2 * zero - 1 : q);
    }
    return d;
}

}  // namespace qforge::ggml_search
