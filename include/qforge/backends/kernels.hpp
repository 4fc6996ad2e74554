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
                const GroupRef grp = traits::template group<prims>(v, r, g);
                float* dst = row + std::size_t(g) * std::size_t(traits::group_length(v));
                for (int off = 0, k = 0; off < grp.length; off += act_sub_block, ++k) {
                    const int n = std::min(act_sub_block, grp.length - off);
                    prims::decode(codec{}, grp.bytes + std::size_t(k) * traits::sub_block_bytes, n, codes);
                    prims::dequantize(codes, n, grp, float_min, dst + off);
                }
            }
        }
    }

    /// Rows handled together: their dots share each activation load and one horizontal reduction.
    static constexpr int row_block = 4;
    static constexpr std::size_t prefetch_rows = 8;

    /// The recipe of activation.hpp for rows [r, r + Rows). Each row's arithmetic is exactly
    /// that of a row computed alone; Rows is a constant so the per-row state stays in registers.
    template <int Rows>
    static void dot_rows(const View& v, const QuantizedActivation& a, int r, float* y) noexcept {
        const bool float_min = traits::zero(v) == ZeroPoint::float_min;
        float out[Rows] = {};
        for (int g = 0; g < traits::groups(v); ++g) {
            GroupRef grp[Rows];
            float acc[Rows] = {};
            for (int i = 0; i < Rows; ++i) grp[i] = traits::template group<prims>(v, r + i, g);
            const int length = grp[0].length;
            for (int off = 0, k = 0; off < length; off += act_sub_block, ++k) {
                const int n = std::min(act_sub_block, length - off);
                const int sub = a.sub_index(g, k);
                const std::uint8_t* bytes[Rows];
                for (int i = 0; i < Rows; ++i) bytes[i] = grp[i].bytes + std::size_t(k) * traits::sub_block_bytes;
                if constexpr (requires { prims::prefetch(bytes[0]); }) {
                    // the rows after this block: sequential per row, but too short for the
                    // hardware prefetcher to ramp up before the kernel moves on
                    for (int i = 0; i < Rows; ++i) prims::prefetch(bytes[i] + prefetch_rows * traits::row_stride(v));
                }
                std::int32_t d[Rows];
                if constexpr (Rows == row_block && requires { prims::sub_dot4(codec{}, bytes, n, a.slots(sub), a.order, d); }) {
                    prims::sub_dot4(codec{}, bytes, n, a.slots(sub), a.order, d);
                } else {
                    for (int i = 0; i < Rows; ++i) d[i] = prims::sub_dot(codec{}, bytes[i], n, a.slots(sub), a.order);
                }
                for (int i = 0; i < Rows; ++i) acc[i] = accumulate_sub(acc[i], d[i], a, sub, float_min, grp[i].zero_code);
            }
            for (int i = 0; i < Rows; ++i) out[i] = finish_group(out[i], acc[i], a, g, float_min, grp[i].scale, grp[i].min);
        }
        for (int i = 0; i < Rows; ++i) y[i] = out[i];
    }

    /// Rows [r0, r1) of one activation: blocks of row_block, then single rows.
    static void dot_range(const View& v, const QuantizedActivation& a, int r0, int r1, float* y) noexcept {
        int r = r0;
        for (; r + row_block <= r1; r += row_block) dot_rows<row_block>(v, a, r, y + (r - r0));
        for (; r < r1; ++r) dot_rows<1>(v, a, r, y + (r - r0));
    }

    /// y[r] = row r . x for rows [r0, r1).
    static void gemv_rows(const View& v, const QuantizedActivation& a, int r0, int r1, float* y) noexcept {
        dot_range(v, a, r0, r1, y + r0);
    }

    /// y[t * ldy + r] = row r . x_t for n activations, rows [r0, r1). A block of rows stays in
    /// L1 across the n activations.
    static void gemm_rows(const View& v, const QuantizedActivation* xs, int n, int r0, int r1, float* y,
                          std::size_t ldy) noexcept {
        for (int r = r0; r < r1; r += row_block) {
            const int end = std::min(r + row_block, r1);
            for (int t = 0; t < n; ++t) dot_range(v, xs[t], r, end, y + std::size_t(t) * ldy + std::size_t(r));
        }
    }
};

}  // namespace qforge
