#pragma once
/// @file
/// Dequantize, GEMV and GEMM over packed rows, written once for every backend and format: the
/// format says where groups and codes are (FormatTraits), the backend how to decode and multiply
/// them (Primitives). Kernels take row ranges so callers can split rows over threads; every row
/// is computed the same way whatever the split.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "qforge/backends/activation.hpp"
#include "qforge/backends/backend.hpp"
#include "qforge/backends/codecs.hpp"
#include "qforge/backends/panel.hpp"
#include "qforge/backends/scalar/primitives.hpp"

namespace qforge {

/// From this many activations the panel kernel's one decode of each weight per product pays for
/// its packing (a backend may give its own figure per codec: Primitives::panel_min_tokens):
/// bench_gemm on the Zen 4 VM (2026-12-04), SmolLM2's two MLP shapes with Dense<4> g128, Q4_0
/// and Q4_1: at 8 activations the panels were faster on 2 of the 6 (29-65 GMAC/s, the row
/// kernels 29-63), at 16 on 4 of 6 (38-107 against 42-66; the two Q4_1 shapes lost).
inline constexpr std::size_t gemm_panel_min_tokens = 16;

template <class B, class F>
struct Kernels {
    using traits = FormatTraits<F>;
    using prims = Primitives<B>;
    using View = typename traits::View;
    using codec = typename traits::codec;
    /// The code that stands for 0 on a symmetric grid; a codebook's kernel codes are level + 128.
    static constexpr int zero_code = [] {
        if constexpr (requires { codec::codebook; }) return 128;
        else return 1 << (codec::bits - 1);
    }();

    /// Calls fn(std::integral_constant<ZeroPoint, z>) for the view's zero-point kind, so kernels
    /// see it as a constant.
    template <class Fn>
    static void with_zero(const View& v, Fn&& fn) noexcept {
        switch (traits::zero(v)) {
            case ZeroPoint::symmetric: return fn(std::integral_constant<ZeroPoint, ZeroPoint::symmetric>{});
            case ZeroPoint::integer: return fn(std::integral_constant<ZeroPoint, ZeroPoint::integer>{});
            case ZeroPoint::float_min: return fn(std::integral_constant<ZeroPoint, ZeroPoint::float_min>{});
        }
    }

    /// out[(r - r0) * cols + c] = dequantized weight (r, c), for rows [r0, r1).
    static void dequantize_rows(const View& v, int r0, int r1, float* out) noexcept {
        if constexpr (requires { codec::codebook; }) {
            // codebook: d * levels[q] through the float table, one multiply: the same on every backend
            constexpr int N = codec::weights;
            const auto& levels = codec::codebook->levels;
            const int cols = traits::cols(v);
            for (int r = r0; r < r1; ++r)
                for (int g = 0; g < traits::groups(v); ++g) {
                    const std::uint8_t* bytes = traits::group_bytes(v, r, g);
                    const float s = traits::template dequant_scale<prims>(v, r, g);
                    float* dst = out + std::size_t(r - r0) * std::size_t(cols) + std::size_t(g) * N;
                    for (int j = 0; j < N / 2; ++j) {
                        dst[j] = s * levels[bytes[j] & 0x0f];
                        dst[j + N / 2] = s * levels[bytes[j] >> 4];
                    }
                }
        } else {
            with_zero(v, [&](auto zero) { dequantize_rows<zero()>(v, r0, r1, out); });
        }
    }
    template <ZeroPoint Zero>
    static void dequantize_rows(const View& v, int r0, int r1, float* out) noexcept {
        alignas(64) std::uint8_t codes[act_sub_block];
        const int cols = traits::cols(v);
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        for (int r = r0; r < r1; ++r) {
            float* row = out + std::size_t(r - r0) * std::size_t(cols);
            for (int g = 0; g < traits::groups(v); ++g) {
                const GroupRef grp = traits::template group<prims, Zero>(v, r, g);
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
    template <int Rows, ZeroPoint Zero>
    static void dot_rows(const View& v, const QuantizedActivation& a, int r, float* y) noexcept {
        if (a.subs_per_group == 1) return dot_rows_split<Rows, Zero>(v, a, r, y);
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        float out[Rows] = {};
        for (int g = 0; g < traits::groups(v); ++g) {
            GroupRef grp[Rows];
            float acc[Rows] = {};
            for (int i = 0; i < Rows; ++i) grp[i] = traits::template group<prims, Zero>(v, r + i, g);
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

    /// d[i][g] for groups [g0, g0 + count): the full groups with their length as a constant
    /// (128 or 32 codes: the length tests fold away), a short last group of the row apart.
    /// How many of groups [g0, g0 + count) have all group_length codes (only a row's last can not).
    [[gnu::always_inline]] static int whole_groups(const View& v, int g0, int count) noexcept {
        return std::min(count, traits::cols(v) / traits::group_length(v) - g0);
    }

    template <int Rows>
    [[gnu::always_inline]] static void group_dots(const View& v, const QuantizedActivation& a, int r, int g0, int count,
                                                  std::int32_t (*d)[64]) noexcept {
        const int length = traits::group_length(v);
        const int whole = whole_groups(v, g0, count);
        if (length == act_sub_block)
            integer_dots<Rows, act_sub_block>(v, a, r, g0, whole, d);
        else if (length == 32)
            integer_dots<Rows, 32>(v, a, r, g0, whole, d);
        else
            integer_dots<Rows, 0>(v, a, r, g0, whole, d);
        if (whole < count) integer_dots<Rows, 0>(v, a, r, g0 + whole, count - whole, d, whole);
    }

    /// The same recipe when every group is one sub-block (groups of at most 128 codes): the
    /// integer dots of a run of groups come first, then each row's float steps run over arrays,
    /// the elementwise part vectorised.
    /// The operations and their order per row are those of dot_rows.
    /// d[i][g - g0] for rows r + i and groups [g0, g0 + count) of one sub-block each;
    /// Length = the codes per group when constant, 0 to compute it per group.
    template <int Rows, int Length>
    [[gnu::always_inline]] static void integer_dots(const View& v, const QuantizedActivation& a, int r, int g0, int count,
                                                    std::int32_t (*d)[64], int d0 = 0) noexcept {
        const std::uint8_t* bytes[Rows];
        for (int i = 0; i < Rows; ++i) bytes[i] = traits::group_bytes(v, r + i, g0);
        const std::size_t step = traits::group_step(v);
        const std::size_t ahead = prefetch_rows * traits::row_stride(v);
        for (int g = 0; g < count; ++g) {
            if constexpr (requires { prims::prefetch(bytes[0]); }) {
                for (int i = 0; i < Rows; ++i) prims::prefetch(bytes[i] + ahead);
            }
            const int n = Length ? Length
                                 : std::min(traits::group_length(v), traits::cols(v) - (g0 + g) * traits::group_length(v));
            const std::int8_t* x = a.slots(g0 + g);
            std::int32_t dots[Rows];
            if constexpr (Rows == row_block && requires { prims::sub_dot4(codec{}, bytes, n, x, a.order, dots); }) {
                prims::sub_dot4(codec{}, bytes, n, x, a.order, dots);
            } else {
                for (int i = 0; i < Rows; ++i) dots[i] = prims::sub_dot(codec{}, bytes[i], n, x, a.order);
            }
            for (int i = 0; i < Rows; ++i) {
                d[i][d0 + g] = dots[i];
                bytes[i] += step;
            }
        }
    }

    template <int Rows, ZeroPoint Zero>
    static void dot_rows_split(const View& v, const QuantizedActivation& a, int r, float* y) noexcept {
        constexpr int chunk = 64;
        const int groups = traits::groups(v);
        alignas(64) std::int32_t d[Rows][chunk];
        static_assert(chunk == 64, "integer_dots writes rows of 64");
        alignas(64) float scale[Rows][chunk], term[Rows][chunk], min[Zero == ZeroPoint::float_min ? Rows : 1][chunk];
        float out[Rows] = {};
        for (int g0 = 0; g0 < groups; g0 += chunk) {
            const int count = std::min(chunk, groups - g0);
            group_dots<Rows>(v, a, r, g0, count, d);
            constexpr bool float_min = Zero == ZeroPoint::float_min;
            for (int i = 0; i < Rows; ++i) {  // elementwise: vectorised
                traits::template scales<prims>(v, r + i, g0, count, scale[i]);
                if constexpr (float_min) traits::template mins<prims>(v, r + i, g0, count, min[i]);
                if constexpr (Zero == ZeroPoint::integer) {
                    const std::uint8_t* z = traits::zeros(v, r + i, g0);
                    for (int g = 0; g < count; ++g) term[i][g] = accumulate_sub(0.0f, d[i][g], a, g0 + g, false, int(z[g]));
                } else {
                    const int z = zero_code;
                    for (int g = 0; g < count; ++g) term[i][g] = accumulate_sub(0.0f, d[i][g], a, g0 + g, float_min, z);
                }
            }
            for (int g = 0; g < count; ++g)  // the sequential chains, Rows of them side by side
                for (int i = 0; i < Rows; ++i)
                    out[i] = finish_group(out[i], term[i][g], a, g0 + g, float_min, scale[i][g], float_min ? min[i][g] : 0.0f);
        }
        for (int i = 0; i < Rows; ++i) y[i] = out[i];
    }

    /// Rows [r0, r1) of one activation: blocks of row_block, then single rows.
    template <ZeroPoint Zero>
    static void dot_range(const View& v, const QuantizedActivation& a, int r0, int r1, float* y) noexcept {
        int r = r0;
        for (; r + row_block <= r1; r += row_block) dot_rows<row_block, Zero>(v, a, r, y + (r - r0));
        for (; r < r1; ++r) dot_rows<1, Zero>(v, a, r, y + (r - r0));
    }
    static void dot_range(const View& v, const QuantizedActivation& a, int r0, int r1, float* y) noexcept {
        with_zero(v, [&](auto zero) { dot_range<zero()>(v, a, r0, r1, y); });
    }

    /// y[r] = row r . x for rows [r0, r1).
    static void gemv_rows(const View& v, const QuantizedActivation& a, int r0, int r1, float* y) noexcept {
        dot_range(v, a, r0, r1, y + r0);
    }

    /// y[t * ldy + r] = row r . x_t for n activations, rows [r0, r1). A block of rows stays in
    /// L1 across the n activations.
    static void gemm_rows(const View& v, const QuantizedActivation* xs, int n, int r0, int r1, float* y,
                          std::size_t ldy) noexcept {
        if (n > 1 && xs[0].subs_per_group == 1) {
            with_zero(v, [&](auto zero) { gemm_rows_split<zero()>(v, xs, n, r0, r1, y, ldy); });
            return;
        }
        for (int r = r0; r < r1; r += row_block) {
            const int end = std::min(r + row_block, r1);
            for (int t = 0; t < n; ++t) dot_range(v, xs[t], r, end, y + std::size_t(t) * ldy + std::size_t(r));
        }
    }

    /// Activations whose float steps run side by side in gemm_rows_split (one vector lane each).
    static constexpr int token_block = 16;

    /// gemm_rows when every group is one sub-block (groups of at most 128 codes), for blocks of
    /// token_block activations: the integer dots of a run of groups for every (row, activation)
    /// come first; the float steps then run across the activations, which the compiler
    /// vectorises, where dot_rows_split runs them as one scalar chain per row and activation.
    /// Each (row, activation) still takes exactly dot_rows_split's operations in its order; the
    /// running sums wait in y between runs of groups (a float stored and loaded is unchanged).
    template <ZeroPoint Zero>
    static void gemm_rows_split(const View& v, const QuantizedActivation* xs, int n, int r0, int r1, float* y,
                                std::size_t ldy) noexcept {
        constexpr int chunk = 64, T = token_block;
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        const int groups = traits::groups(v);
        for (int t0 = 0; t0 < n; t0 += T) {
            const int nt = std::min(T, n - t0);
            for (int g0 = 0; g0 < groups; g0 += chunk) {
                const int count = std::min(chunk, groups - g0);
                // the activations' terms of each group, one lane per activation (lanes past nt: 0)
                alignas(64) float dx[chunk][T] = {}, xsum[float_min ? chunk : 1][T] = {};
                alignas(64) std::int32_t sx[float_min ? 1 : chunk][T] = {};
                for (int t = 0; t < nt; ++t) {
                    const QuantizedActivation& a = xs[t0 + t];
                    for (int g = 0; g < count; ++g) {
                        dx[g][t] = a.scale[std::size_t(g0 + g)];
                        if constexpr (float_min) xsum[g][t] = a.group_sum[std::size_t(g0 + g)];
                        else sx[g][t] = a.sum[std::size_t(g0 + g)];
                    }
                }
                int r = r0;
                for (; r + row_block <= r1; r += row_block)
                    split_tile<row_block, Zero>(v, xs + t0, nt, r, g0, count, dx, sx, xsum, y + std::size_t(t0) * ldy, ldy);
                for (; r < r1; ++r) split_tile<1, Zero>(v, xs + t0, nt, r, g0, count, dx, sx, xsum, y + std::size_t(t0) * ldy, ldy);
            }
        }
    }

    /// d[k] = the codes at `bytes` (one sub-block of n) . x[k], for 8 activations: where the
    /// backend has sub_dot8 the codes are decoded once and the 8 sums reduced together.
    [[gnu::always_inline]] static void token_dots8(const std::uint8_t* bytes, int n, const std::int8_t* const* x, LaneOrder order,
                                                   std::int32_t* d) noexcept {
        if constexpr (requires { prims::sub_dot8(codec{}, bytes, n, x, order, d); })
            prims::sub_dot8(codec{}, bytes, n, x, order, d);
        else
            for (int k = 0; k < 8; ++k) d[k] = prims::sub_dot(codec{}, bytes, n, x[k], order);
    }

    /// Rows [r, r + Rows) x activations [0, nt) over groups [g0, g0 + count), for gemm_rows_split.
    template <int Rows, ZeroPoint Zero>
    static void split_tile(const View& v, const QuantizedActivation* xs, int nt, int r, int g0, int count,
                           const float (*dx)[token_block], const std::int32_t (*sx)[token_block],
                           const float (*xsum)[token_block], float* y, std::size_t ldy) noexcept {
        constexpr int chunk = 64, T = token_block;
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        // d[i][g][t]: row r + i, group g0 + g, activation t; lanes past nt repeat the last
        // activation (their outputs are never stored)
        alignas(64) std::int32_t d[Rows][chunk][T];
        const int length = traits::group_length(v);
        const int whole = whole_groups(v, g0, count);
        const std::size_t step = traits::group_step(v);
        for (int i = 0; i < Rows; ++i) {
            const std::uint8_t* bytes = traits::group_bytes(v, r + i, g0);
            for (int g = 0; g < count; ++g, bytes += step) {
                if constexpr (requires { prims::prefetch(bytes); }) prims::prefetch(bytes + prefetch_rows * traits::row_stride(v));
                const int n = g < whole ? length : traits::cols(v) - (g0 + g) * length;
                for (int t0 = 0; t0 < nt; t0 += 8) {
                    const std::int8_t* x[8];
                    for (int k = 0; k < 8; ++k) x[k] = xs[std::min(t0 + k, nt - 1)].slots(g0 + g);
                    token_dots8(bytes, n, x, xs[0].order, &d[i][g][t0]);
                }
            }
        }
        for (int i = 0; i < Rows; ++i) {
            alignas(64) float scale[chunk];
            [[maybe_unused]] alignas(64) float min[float_min ? chunk : 1];
            traits::template scales<prims>(v, r + i, g0, count, scale);
            if constexpr (float_min) traits::template mins<prims>(v, r + i, g0, count, min);
            alignas(64) float out[T] = {};
            if (g0 > 0)
                for (int t = 0; t < nt; ++t) out[t] = y[std::size_t(t) * ldy + std::size_t(r + i)];
            for (int g = 0; g < count; ++g) {
                int z = zero_code;
                if constexpr (Zero == ZeroPoint::integer) z = int(traits::zeros(v, r + i, g0)[g]);
                const std::int32_t* dg = d[i][g];
                for (int t = 0; t < T; ++t) {  // one lane per activation: vectorised
                    const std::int32_t centred = float_min ? dg[t] : dg[t] - z * sx[float_min ? 0 : g][t];
                    const float term = std::fma(dx[g][t], float(centred), 0.0f);
                    out[t] = std::fma(scale[g], term, out[t]);
                    if constexpr (float_min) out[t] = std::fma(min[g], xsum[g][t], out[t]);
                }
            }
            for (int t = 0; t < nt; ++t) y[std::size_t(t) * ldy + std::size_t(r + i)] = out[t];
        }
    }
    // ---- tiled GEMM over row panels (panel.hpp) ----

    /// Whether this backend has a vector kernel for panels of this codec (AVX-512 VNNI: every
    /// codec; AVX2: Dense 2/3/4-bit, Q4_0, Q4_1); without one the tiled GEMM still runs (the plain
    /// loops below), for tests, but gemm() keeps the per-row kernels.
    static constexpr bool has_panel_kernel = requires(const RowPanel& p, const QuantizedActivation* xs, const PanelTerms& terms, float* y) {
        prims::template panel_gemm<ZeroPoint::symmetric>(codec{}, p, xs, 1, terms, y, std::size_t(1));
    };
    /// From how many activations gemm() takes the panel kernel: the backend's own figure for this
    /// codec where it gives one, else gemm_panel_min_tokens.
    static constexpr int panel_min_tokens = [] {
        if constexpr (requires { prims::template panel_min_tokens<codec>; }) return prims::template panel_min_tokens<codec>;
        else return int(gemm_panel_min_tokens);
    }();

    /// A thread's panel buffers, sized for one matrix and one cut of the activations.
    struct PanelBuffer {
        std::unique_ptr<std::uint8_t[]> storage;
        std::uint8_t* codes = nullptr;
        std::unique_ptr<float[]> scale, min;
        std::unique_ptr<std::int32_t[]> zero;
        std::size_t code_bytes = 0;
        PanelBuffer(const View& v, const QuantizedActivation& a) {
            std::size_t chunks = 0;
            for (int g = 0; g < a.groups; ++g)
                for (int k = 0; k < a.sub_blocks_in_group(g); ++k) chunks += std::size_t(panel_chunks(a, g, k));
            code_bytes = chunks * panel_chunk_bytes;
            storage.reset(new std::uint8_t[code_bytes + 64]);
            codes = storage.get() + (64 - reinterpret_cast<std::uintptr_t>(storage.get()) % 64) % 64;
            const std::size_t lanes = std::size_t(traits::groups(v)) * panel_rows;
            scale.reset(new float[lanes]);
            min.reset(new float[lanes]);
            zero.reset(new std::int32_t[lanes]);
        }
    };

    /// Stored row r into lane `lane` of a panel (panel.hpp) cut as activation `cut` is: each
    /// sub-block's codes decoded, less `code_offset`, padded with zero codes to whole chunks, and
    /// scattered 4 codes to a lane step in `code_bits` bits (8: bytes, per-product panels; 4, 5,
    /// 6: nibbles and bit planes, kept panels). Every bit of the lane is written. The one writer
    /// of a panel row, for per-product panels (pack_panel) and kept ones (build_panels) alike.
    /// `halves`: sub-blocks of at most 16 positions take half a chunk (kept sets, panel.hpp).
    static void write_panel_lane(const View& v, int r, int lane, const QuantizedActivation& cut, int code_bits, int code_offset,
                                 bool halves, std::uint8_t* panel) noexcept {
        const int groups = traits::groups(v), length = traits::group_length(v);
        const std::size_t chunk_bytes = panel_chunk_bytes_of(code_bits);
        alignas(64) std::uint8_t codes[act_sub_block + 64];
        std::uint8_t* chunk = panel;
        for (int g = 0; g < groups; ++g) {
            const std::uint8_t* bytes = traits::group_bytes(v, r, g);
            const int glen = std::min(length, traits::cols(v) - g * length);
            for (int k = 0; k < cut.sub_blocks_in_group(g); ++k) {
                const int len = std::min(act_sub_block, glen - k * act_sub_block);
                const int chunks = panel_chunks(cut, g, k);
                const std::uint8_t* src = bytes + std::size_t(k) * traits::sub_block_bytes;
                // vector backends decode codebook nibbles inside their dots only
                if constexpr (requires { prims::decode(codec{}, src, len, codes); }) prims::decode(codec{}, src, len, codes);
                else Primitives<Scalar>::decode(codec{}, src, len, codes);
                if (code_offset != 0)
                    for (int i = 0; i < len; ++i) codes[i] = std::uint8_t(codes[i] - code_offset);
                std::memset(codes + len, 0, std::size_t(chunks * panel_chunk - len));
                const bool half = halves && kept_half_chunk(cut, g, k);
                const int steps = half ? 4 : 8;  // byte steps of 4 positions
                for (int c = 0; c < chunks; ++c) {
                    std::uint8_t* base = chunk + std::size_t(c) * chunk_bytes;
                    std::uint8_t* out = base + std::size_t(lane) * 4;
                    const std::uint8_t* in = codes + c * panel_chunk;
                    if (code_bits == 8) {
                        for (int j = 0; j < steps; ++j) std::memcpy(out + 64 * j, in + 4 * j, 4);
                        continue;
                    }
                    for (int j = 0; j < steps / 2; ++j)
                        for (int b = 0; b < 4; ++b) out[64 * j + b] = std::uint8_t((in[8 * j + b] & 0x0f) | ((in[8 * j + 4 + b] & 0x0f) << 4));
                    // lane i owns bits 4i .. 4i + 3 of each plane mask: half of byte i / 2
                    for (int q = 0; q < code_bits - 4; ++q)
                        for (int step = 0; step < steps; ++step) {
                            std::uint8_t& m = base[32 * steps + 8 * steps * q + 8 * step + lane / 2];
                            std::uint8_t bits = 0;
                            for (int b = 0; b < 4; ++b) bits = std::uint8_t(bits | (((in[4 * step + b] >> (4 + q)) & 1) << b));
                            const int shift = 4 * (lane % 2);
                            m = std::uint8_t((m & ~(0x0f << shift)) | (bits << shift));
                        }
                }
                chunk += half ? chunk_bytes / 2 : std::size_t(chunks) * chunk_bytes;
            }
        }
    }
    /// Stored row r's per-group terms, put(g, scale, min, zero) for every group g: min is 0
    /// unless the grid has a float minimum, zero 0 unless it has integer zero points.
    template <class Put>
    static void for_row_terms(const View& v, int r, Put&& put) noexcept {
        const int groups = traits::groups(v);
        alignas(64) float scales[64], mins[64] = {};
        for (int g0 = 0; g0 < groups; g0 += 64) {
            const int count = std::min(64, groups - g0);
            traits::template scales<prims>(v, r, g0, count, scales);
            if (traits::zero(v) == ZeroPoint::float_min) traits::template mins<prims>(v, r, g0, count, mins);
            for (int g = 0; g < count; ++g)
                put(g0 + g, scales[g], mins[g], traits::zero(v) == ZeroPoint::integer ? std::int32_t(traits::zeros(v, r, g0)[g]) : 0);
        }
    }

    /// Rows [r, r + valid) (valid <= 16) into `buf`, cut as activation `a` is cut.
    static RowPanel pack_panel(const View& v, int r, int valid, const QuantizedActivation& a, PanelBuffer& buf) noexcept {
        // a valid row writes every byte of its lane; only the lanes of missing rows need clearing
        if (valid < panel_rows) std::memset(buf.codes, 0, buf.code_bytes);
        const std::size_t lanes = std::size_t(traits::groups(v)) * panel_rows;
        for (int i = 0; i < valid; ++i) {
            write_panel_lane(v, r + i, i, a, 8, 0, false, buf.codes);
            for_row_terms(v, r + i, [&](int g, float scale, float min, std::int32_t zero) {
                const std::size_t at = std::size_t(g) * panel_rows + std::size_t(i);
                buf.scale[at] = scale;
                buf.min[at] = min;
                buf.zero[at] = zero;
            });
        }
        for (int i = valid; i < panel_rows; ++i)  // missing rows: terms 0, as their codes
            for (std::size_t at = std::size_t(i); at < lanes; at += panel_rows) buf.scale[at] = buf.min[at] = 0.0f, buf.zero[at] = 0;
        RowPanel p;
        p.codes = buf.codes;
        p.scale = buf.scale.get();
        p.min = buf.min.get();
        p.zero = buf.zero.get();
        p.zero_code = zero_code;
        p.valid = valid;
        return p;
    }

    /// The recipe for one panel and n activations, written as plain loops: lane i of every step
    /// is row i computed alone, in the recipe's order (the oracle for the vector panel kernels).
    template <ZeroPoint Zero>
    static void panel_gemm_plain(const RowPanel& p, const QuantizedActivation* xs, int n, float* y, std::size_t ldy) noexcept {
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        for (int t = 0; t < n; ++t) {
            const QuantizedActivation& a = xs[t];
            float out[panel_rows] = {};
            const std::uint8_t* w = p.codes;
            for (int g = 0; g < a.groups; ++g) {
                float acc[panel_rows] = {};
                for (int k = 0; k < a.sub_blocks_in_group(g); ++k) {
                    const int s = a.sub_index(g, k);
                    const std::int8_t* x = a.slots(s);
                    std::int32_t d[panel_rows] = {};
                    for (int step = 0; step < panel_chunks(a, g, k) * 8; ++step, w += 64, x += 4)
                        for (int i = 0; i < panel_rows; ++i)
                            for (int b = 0; b < 4; ++b) d[i] += std::int32_t(w[4 * i + b]) * std::int32_t(x[b]);
                    for (int i = 0; i < panel_rows; ++i) {
                        const int z = Zero == ZeroPoint::integer ? p.zero[std::size_t(g) * panel_rows + std::size_t(i)] : p.zero_code;
                        const std::int32_t centred = float_min ? d[i] : d[i] - z * a.sum[std::size_t(s)];
                        acc[i] = std::fma(a.scale[std::size_t(s)], float(centred), acc[i]);
                    }
                }
                for (int i = 0; i < panel_rows; ++i) {
                    out[i] = std::fma(p.scale[std::size_t(g) * panel_rows + std::size_t(i)], acc[i], out[i]);
                    if constexpr (float_min) out[i] = std::fma(p.min[std::size_t(g) * panel_rows + std::size_t(i)], a.group_sum[std::size_t(g)], out[i]);
                }
            }
            for (int i = 0; i < p.valid; ++i) y[std::size_t(t) * ldy + std::size_t(i)] = out[i];
        }
    }

    // ---- row panels kept with the weights, for single-activation products (PanelSet) ----

    static constexpr bool codebook_codec = requires { codec::codebook; };
    /// The kept panels' code width and the offset taken off each kernel code (panel.hpp): a
    /// format's traits may say (`panel_code_bits`, `panel_code_offset`: K-quants and 5-bit
    /// blocks, whose kernel form spends a byte on 2 to 6 bits); else 4-bit codes as nibbles and
    /// 8-bit ones as bytes, as stored. 0: no kept panels (2/3-bit and codebook grids: a nibble
    /// layout would read more than the stored rows).
    static constexpr int panel_code_bits = [] {
        if constexpr (requires { traits::panel_code_bits; }) return traits::panel_code_bits;
        else if constexpr (codebook_codec) return 0;
        else return codec::bits == 4 || codec::bits == 8 ? codec::bits : 0;
    }();
    static constexpr int panel_code_offset = [] {
        if constexpr (requires { traits::panel_code_offset; }) return traits::panel_code_offset;
        else return 0;
    }();
    static_assert(panel_code_bits == 0 || panel_code_bits == 4 || panel_code_bits == 5 || panel_code_bits == 6 || panel_code_bits == 8,
                  "qforge: kept row panels hold codes of 4, 5, 6 or 8 bits (panel.hpp)");
    /// Kept panels read no more bytes than the row kernels, so a GEMV over them is worth it.
    static constexpr bool panel_set_worth = panel_code_bits != 0;
    /// Whether this backend has a vector GEMV over kept panels (AVX-512 VNNI).
    static constexpr bool has_panel_gemv_kernel = panel_set_worth && requires(const PanelSet& s, const QuantizedActivation& a, float* y) {
        prims::template panel_gemv<ZeroPoint::symmetric, (panel_code_bits != 0 ? panel_code_bits : 8)>(codec{}, s, 0, a, y);
    };

    /// An empty set sized for `v`: storage for every panel, float terms (build_panels fills
    /// panels, compact_panel_terms may then store the terms as halfs).
    static PanelSet panel_set_for(const View& v) {
        PanelSet s;
        s.rows = traits::rows(v);
        s.cols = traits::cols(v);
        s.group_length = traits::group_length(v);
        s.groups = traits::groups(v);
        s.code_bits = panel_code_bits != 0 ? panel_code_bits : 8;  // 8: tests force a set where none is worth it
        s.code_offset = panel_code_bits != 0 ? panel_code_offset : 0;
        s.zero_kind = traits::zero(v);
        s.zero_code = zero_code - s.code_offset;
        s.code_bytes = (PanelSet::code_bytes_for(activation_cut(s.cols, s.group_length), s.code_bits) + 63) / 64 * 64;  // each panel 64-byte aligned
        const std::size_t total = std::size_t(s.panels()) * s.code_bytes;
        s.storage.reset(new std::uint8_t[total + 64]);
        s.codes = s.storage.get() + (64 - reinterpret_cast<std::uintptr_t>(s.storage.get()) % 64) % 64;
        const std::size_t lanes = std::size_t(s.panels()) * std::size_t(s.groups) * panel_rows;
        s.scale.assign(lanes * 4, 0);
        if (s.zero_kind == ZeroPoint::float_min) s.min.assign(lanes * 4, 0);
        if (s.zero_kind == ZeroPoint::integer) s.zero.assign(lanes, 0);
        return s;
    }

    /// Panels [p0, p1) of `s` (made by panel_set_for(v)) from the stored rows, float terms.
    static void build_panels(const View& v, int p0, int p1, PanelSet& s) noexcept {
        const QuantizedActivation cut = activation_cut(s.cols, s.group_length);
        for (int p = p0; p < p1; ++p) {
            std::uint8_t* panel = s.codes + std::size_t(p) * s.code_bytes;
            const int valid = std::min(panel_rows, s.rows - p * panel_rows);
            if (valid < panel_rows) std::memset(panel, 0, s.code_bytes);  // the terms of missing rows stay 0 from panel_set_for
            for (int i = 0; i < valid; ++i) {
                write_panel_lane(v, p * panel_rows + i, i, cut, s.code_bits, s.code_offset, true, panel);
                for_row_terms(v, p * panel_rows + i, [&](int g, float scale, float min, std::int32_t zero) {
                    const std::size_t at = (std::size_t(p) * std::size_t(s.groups) + std::size_t(g)) * panel_rows + std::size_t(i);
                    std::memcpy(s.scale.data() + at * 4, &scale, 4);
                    if (s.zero_kind == ZeroPoint::float_min) std::memcpy(s.min.data() + at * 4, &min, 4);
                    if (s.zero_kind == ZeroPoint::integer) s.zero[at] = zero;
                });
            }
        }
    }

    /// The recipe over kept panel p for one activation, as plain loops (lane i = row 16p + i
    /// computed alone): the reference for the vector kernel and the path of backends without one.
    template <ZeroPoint Zero>
    static void panel_gemv_plain(const PanelSet& s, int p, const QuantizedActivation& a, float* y) noexcept {
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        const std::size_t chunk_bytes = panel_chunk_bytes_of(s.code_bits);
        const std::uint8_t* w = s.panel_codes(p);
        float out[panel_rows] = {};
        for (int g = 0; g < a.groups; ++g) {
            float acc[panel_rows] = {};
            for (int k = 0; k < a.sub_blocks_in_group(g); ++k) {
                const int sub = a.sub_index(g, k);
                std::int32_t d[panel_rows] = {};
                const bool half = kept_half_chunk(a, g, k);
                const int positions = half ? panel_chunk / 2 : panel_chunk, steps = positions / 4;
                for (int c = 0; c < panel_chunks(a, g, k); ++c, w += half ? chunk_bytes / 2 : chunk_bytes) {
                    const std::int8_t* x = a.slots(sub) + c * panel_chunk;
                    for (int i = 0; i < panel_rows; ++i)
                        for (int pos = 0; pos < positions; ++pos) {
                            int code;
                            if (s.code_bits == 8) {
                                code = w[64 * (pos / 4) + 4 * i + pos % 4];
                            } else {
                                const int j = pos / 8, b = pos % 4;
                                const std::uint8_t byte = w[64 * j + 4 * i + b];
                                code = pos % 8 < 4 ? byte & 0x0f : byte >> 4;
                                const int bit = 4 * i + pos % 4;  // in the plane masks of step pos / 4
                                for (int q = 0; q < s.code_bits - 4; ++q)
                                    code |= ((w[32 * steps + 8 * steps * q + 8 * (pos / 4) + bit / 8] >> (bit % 8)) & 1) << (4 + q);
                            }
                            d[i] += code * std::int32_t(x[pos]);
                        }
                }
                for (int i = 0; i < panel_rows; ++i) {
                    const int z = Zero == ZeroPoint::integer ? s.zeros(p, g)[i] : s.zero_code;
                    const std::int32_t centred = float_min ? d[i] : d[i] - z * a.sum[std::size_t(sub)];
                    acc[i] = std::fma(a.scale[std::size_t(sub)], float(centred), acc[i]);
                }
            }
            for (int i = 0; i < panel_rows; ++i) {
                out[i] = std::fma(s.term(s.scale, p, g, i), acc[i], out[i]);
                if constexpr (float_min) out[i] = std::fma(s.term(s.min, p, g, i), a.group_sum[std::size_t(g)], out[i]);
            }
        }
        const int valid = std::min(panel_rows, s.rows - p * panel_rows);
        for (int i = 0; i < valid; ++i) y[i] = out[i];
    }

    /// y[r] = row r . x for the rows of kept panels [p0, p1); `a` in LaneOrder::natural, cut for
    /// the matrix. The vector kernel where the backend has one, else plain loops.
    static void panel_gemv_rows(const PanelSet& s, const QuantizedActivation& a, int p0, int p1, float* y) noexcept {
        const auto run = [&](auto zero) {
            for (int p = p0; p < p1; ++p) {
                float* yp = y + std::size_t(p) * panel_rows;
                if constexpr (has_panel_gemv_kernel) prims::template panel_gemv<zero(), panel_code_bits>(codec{}, s, p, a, yp);
                else panel_gemv_plain<zero()>(s, p, a, yp);
            }
        };
        switch (s.zero_kind) {
            case ZeroPoint::symmetric: return run(std::integral_constant<ZeroPoint, ZeroPoint::symmetric>{});
            case ZeroPoint::integer: return run(std::integral_constant<ZeroPoint, ZeroPoint::integer>{});
            case ZeroPoint::float_min: return run(std::integral_constant<ZeroPoint, ZeroPoint::float_min>{});
        }
    }

    /// The activations' terms for the panel kernel of this format (PanelTerms), made once per
    /// product by its caller; empty where there is no panel kernel.
    static PanelTerms panel_terms(const View& v, const QuantizedActivation* xs, int n) {
        if constexpr (has_panel_kernel) return PanelTerms(xs, n, zero_code, traits::zero(v) == ZeroPoint::symmetric);
        else return PanelTerms{};
    }

    /// y[t * ldy + r] = row r . x_t for n activations quantized in LaneOrder::natural, rows
    /// [r0, r1) in panels of 16 from r0: each panel decoded once, then every activation run over
    /// it. `terms`: panel_terms(v, xs, n).
    static void gemm_tiled_rows(const View& v, const QuantizedActivation* xs, int n, int r0, int r1, float* y, std::size_t ldy,
                                const PanelTerms& terms) noexcept {
        if (n == 0 || r0 >= r1) return;
        PanelBuffer buf(v, xs[0]);
        with_zero(v, [&](auto zero) {
            for (int r = r0; r < r1; r += panel_rows) {
                const RowPanel p = pack_panel(v, r, std::min(panel_rows, r1 - r), xs[0], buf);
                if constexpr (has_panel_kernel) prims::template panel_gemm<zero()>(codec{}, p, xs, n, terms, y + r, ldy);
                else panel_gemm_plain<zero()>(p, xs, n, y + r, ldy);
            }
        });
    }
};

}  // namespace qforge
