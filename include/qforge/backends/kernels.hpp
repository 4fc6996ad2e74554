#pragma once
/// @file
/// Dequantize, GEMV and GEMM over packed rows, written once for every backend and format: the
/// format says where groups and codes are (FormatTraits), the backend how to decode and multiply
/// them (Primitives). Kernels take row ranges so callers can split rows over threads; every row
/// is computed the same way whatever the split.
#include <algorithm>
#include <cstddef>

#include "qforge/backends/activation.hpp"
#include "qforge/backends/backend.hpp"
#include "qforge/backends/codecs.hpp"

namespace qforge {

template <class B, class F>
struct Kernels {
    using traits = FormatTraits<F>;
    using prims = Primitives<B>;
    using View = typename traits::View;
    using codec = typename traits::codec;

    /// out[(r - r0) * cols + c] = dequantized weight (r, c), for rows [r0, r1).
    static void dequantize_rows(const View& v, int r0, int r1, float* out) noexcept {
        alignas(64) std::uint8_t codes[act_sub_block];
        const int cols = traits::cols(v);
        const bool float_min = traits::zero(v) == ZeroPoint::float_min;
        for (int r = r0; r < r1; ++r) {
            float* row = out + std::size_t(r - r0) * std::size_t(cols);
            for (int g = 0; g < traits::groups(v); ++g) {
                const GroupRef grp = traits::group(v, r, g);
                float* dst = row + std::size_t(g) * std::size_t(traits::group_length(v));
                for (int off = 0, k = 0; off < grp.length; off += act_sub_block, ++k) {
                    const int n = std::min(act_sub_block, grp.length - off);
                    prims::decode(codec{}, grp.bytes + std::size_t(k) * traits::sub_block_bytes, n, codes);
                    prims::dequantize(codes, n, grp, float_min, dst + off);
                }
            }
        }
    }

    /// The recipe of activation.hpp for one row.
    static float dot_row(const View& v, const QuantizedActivation& a, int r) noexcept {
        const bool float_min = traits::zero(v) == ZeroPoint::float_min;
        float y = 0.0f;
        for (int g = 0; g < traits::groups(v); ++g) {
            const GroupRef grp = traits::group(v, r, g);
            float acc = 0.0f;
            for (int off = 0, k = 0; off < grp.length; off += act_sub_block, ++k) {
                const int n = std::min(act_sub_block, grp.length - off);
                const int sub = a.sub_index(g, k);
                const std::int32_t d = prims::sub_dot(
                    codec{}, grp.bytes + std::size_t(k) * traits::sub_block_bytes, n, a.slots(sub), a.order);
                acc = accumulate_sub(acc, d, a, sub, float_min, grp.zero_code);
            }
            y = finish_group(y, acc, a, g, float_min, grp.scale, grp.min);
        }
        return y;
    }

    /// y[r] = row r . x for rows [r0, r1).
    static void gemv_rows(const View& v, const QuantizedActivation& a, int r0, int r1, float* y) noexcept {
        for (int r = r0; r < r1; ++r) y[r] = dot_row(v, a, r);
    }

    /// y[t * ldy + r] = row r . x_t for n activations, rows [r0, r1). Each row's bytes stay in L1
    /// across the n activations.
    static void gemm_rows(const View& v, const QuantizedActivation* xs, int n, int r0, int r1, float* y,
                          std::size_t ldy) noexcept {
        for (int r = r0; r < r1; ++r)
            for (int t = 0; t < n; ++t) y[std::size_t(t) * ldy + std::size_t(r)] = dot_row(v, xs[t], r);
    }
};

}  // namespace qforge
