#pragma once
/// @file
/// How codes sit in the bytes of each packed format, and what a kernel needs to walk a format's
/// rows. Formats describe their bytes (formats/); this file adapts them for kernels, so adding a
/// format means one FormatTraits specialisation here plus codec primitives per backend.
#include <array>
#include <cstdint>

#include "qforge/backends/activation.hpp"
#include "qforge/core/half.hpp"
#include "qforge/formats/codebook.hpp"
#include "qforge/formats/dense.hpp"
#include "qforge/formats/double_quant.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/formats/gguf_kq.hpp"

namespace qforge {

// ---- codecs: the byte-level encodings the backends implement ----
/// LSB-first bitstream of B-bit codes (`Dense<B>`).
template <int B>
struct Bitstream {
    static constexpr int bits = B;
};
/// 16 bytes holding 32 nibbles: low nibble of byte j is code j, high nibble code j+16 (Q4_0, Q4_1).
struct NibbleBlock {
    static constexpr int bits = 4;
};
/// Signed bytes; the unsigned code is the byte plus 128 (Q8_0).
struct SignedBytes {
    static constexpr int bits = 8;
};

/// A block of N 4-bit codes of a codebook grid (formats/codebook.hpp): low nibble of byte j =
/// code j, high nibble = code j + N/2. For the integer kernels each code decodes to its
/// kernel level + 128 (an unsigned byte; the recipe's zero code is 128), so a dot product is
/// sum(level * x) exactly, whatever the backend.
template <int N, const Codebook* C>
struct CodebookNibbles {
    static constexpr int bits = 4;
    static constexpr int weights = N;
    static constexpr const Codebook* codebook = C;
};
/// The kernel levels of a codebook offset by 128 (unsigned), as a table for byte shuffles; the
/// signed levels are the codebook's own `kernel_levels`.
template <const Codebook* C>
inline constexpr std::array<std::uint8_t, 16> kernel_table_u8 = [] {
    std::array<std::uint8_t, 16> t{};
    for (std::size_t i = 0; i < 16; ++i) t[i] = std::uint8_t(int(C->kernel_levels[i]) + 128);
    return t;
}();

/// One group of one row, as a kernel sees it.
struct GroupRef {
    const std::uint8_t* bytes;  ///< the group's first code byte
    int length;                 ///< codes in this group
    float scale;
    int zero_code;              ///< the code of 0 (symmetric and integer grids)
    float min;                  ///< ZeroPoint::float_min
};

template <class F>
struct FormatTraits {
    static_assert(sizeof(F) == 0,
                  "qforge: this format has no kernel traits; specialise qforge::FormatTraits for it");
};

template <int B>
struct FormatTraits<Dense<B>> {
    using View = DenseView;
    using codec = Bitstream<B>;
    static constexpr LaneOrder order = B == 4 ? LaneOrder::pairs : B == 2 ? LaneOrder::quads : LaneOrder::natural;
    static constexpr std::size_t sub_block_bytes = std::size_t(act_sub_block) * B / 8;

    [[gnu::always_inline]] static int rows(const View& v) noexcept { return v.rows; }
    [[gnu::always_inline]] static int cols(const View& v) noexcept { return v.cols; }
    [[gnu::always_inline]] static int group_length(const View& v) noexcept { return v.group_length; }
    [[gnu::always_inline]] static int groups(const View& v) noexcept { return v.groups_per_row; }
    [[gnu::always_inline]] static ZeroPoint zero(const View& v) noexcept { return v.zero; }
    [[gnu::always_inline]] static std::size_t row_stride(const View& v) noexcept { return v.row_bytes; }

    // Runs of groups, for kernels that take a row's integer dots first and its float steps after.
    [[gnu::always_inline]] static const std::uint8_t* group_bytes(const View& v, int r, int g) noexcept { return v.group_codes(r, g); }
    [[gnu::always_inline]] static std::size_t group_step(const View& v) noexcept { return std::size_t(v.group_length) * B / 8; }
    template <class Prims>
    [[gnu::always_inline]] static void scales(const View& v, int r, int g0, int n, float* out) noexcept { Prims::fp16_n(v.scales + v.gi(r, g0), n, out); }
    template <class Prims>
    [[gnu::always_inline]] static void mins(const View& v, int r, int g0, int n, float* out) noexcept { Prims::fp16_n(v.mins + v.gi(r, g0), n, out); }
    [[gnu::always_inline]] static const std::uint8_t* zeros(const View& v, int r, int g0) noexcept { return v.zeros + v.gi(r, g0); }

    /// `Prims` supplies fp16 -> float (bit-identical on every backend; vector ones use F16C).
    /// `Zero` must equal zero(v); kernels pass it as a constant so no test is left per group.
    template <class Prims, ZeroPoint Zero>
    [[gnu::always_inline]] static GroupRef group(const View& v, int r, int g) noexcept {
        const std::size_t gi = v.gi(r, g);
        const int len = v.group_length < v.cols - g * v.group_length ? v.group_length : v.cols - g * v.group_length;
        return {v.group_codes(r, g), len, Prims::fp16(v.scales[gi]),
                Zero == ZeroPoint::integer ? int(v.zeros[gi]) : (1 << (B - 1)),
                Zero == ZeroPoint::float_min ? Prims::fp16(v.mins[gi]) : 0.0f};
    }
};

template <class Block, ZeroPoint Zero, class Codec>
struct BlockFormatTraits {
    using View = BlockView<Block>;
    using codec = Codec;
    static constexpr LaneOrder order = LaneOrder::natural;
    static constexpr std::size_t sub_block_bytes = 0;  // one sub-block per 32-weight group

    [[gnu::always_inline]] static int rows(const View& v) noexcept { return v.rows; }
    [[gnu::always_inline]] static int cols(const View& v) noexcept { return v.cols; }
    [[gnu::always_inline]] static int group_length(const View&) noexcept { return gguf_block; }
    [[gnu::always_inline]] static int groups(const View& v) noexcept { return v.blocks_per_row(); }
    [[gnu::always_inline]] static ZeroPoint zero(const View&) noexcept { return Zero; }
    [[gnu::always_inline]] static std::size_t row_stride(const View& v) noexcept { return std::size_t(v.blocks_per_row()) * sizeof(Block); }
    [[gnu::always_inline]] static const std::uint8_t* group_bytes(const View& v, int r, int g) noexcept {
        return reinterpret_cast<const std::uint8_t*>(v.block(r, g).qs);
    }
    [[gnu::always_inline]] static std::size_t group_step(const View&) noexcept { return sizeof(Block); }
    template <class Prims>
    [[gnu::always_inline]] static void scales(const View& v, int r, int g0, int n, float* out) noexcept {
        for (int g = 0; g < n; ++g) out[g] = Prims::fp16(v.block(r, g0 + g).d);
    }
    template <class Prims>
    [[gnu::always_inline]] static void mins(const View& v, int r, int g0, int n, float* out) noexcept {
        if constexpr (Zero == ZeroPoint::float_min)
            for (int g = 0; g < n; ++g) out[g] = Prims::fp16(v.block(r, g0 + g).m);
    }
    [[gnu::always_inline]] static const std::uint8_t* zeros(const View&, int, int) noexcept { return nullptr; }  // no integer zeros

    template <class Prims, ZeroPoint = Zero>
    [[gnu::always_inline]] static GroupRef group(const View& v, int r, int g) noexcept {
        const Block& b = v.block(r, g);
        float min = 0.0f;
        if constexpr (Zero == ZeroPoint::float_min) min = Prims::fp16(b.m);
        return {reinterpret_cast<const std::uint8_t*>(b.qs), gguf_block, Prims::fp16(b.d),
                1 << (Codec::bits - 1), min};
    }
};

/// Codebook blocks: the scales the integer kernels use are d * kernel_unit (exactly d for an
/// integer table); dequantization reads d and the float levels (`dequant_scale`). A block's d is
/// its fp16 field, or for a view with `scale(r, b)` (double-quantized scales) what that returns.
template <class Grid, int Blk, class Block = block_codebook<Blk>, class View_ = BlockView<Block>>
struct CodebookFormatTraits {
    using View = View_;
    using codec = CodebookNibbles<Blk, Grid::codebook>;
    static constexpr LaneOrder order = LaneOrder::natural;
    static constexpr std::size_t sub_block_bytes = 0;  // one sub-block per block
    static constexpr float unit = Grid::codebook->kernel_unit;

    [[gnu::always_inline]] static int rows(const View& v) noexcept { return v.rows; }
    [[gnu::always_inline]] static int cols(const View& v) noexcept { return v.cols; }
    [[gnu::always_inline]] static int group_length(const View&) noexcept { return Blk; }
    [[gnu::always_inline]] static int groups(const View& v) noexcept { return v.blocks_per_row(); }
    [[gnu::always_inline]] static ZeroPoint zero(const View&) noexcept { return ZeroPoint::symmetric; }
    [[gnu::always_inline]] static std::size_t row_stride(const View& v) noexcept { return std::size_t(v.blocks_per_row()) * sizeof(Block); }
    [[gnu::always_inline]] static const std::uint8_t* group_bytes(const View& v, int r, int g) noexcept { return v.block(r, g).qs; }
    [[gnu::always_inline]] static std::size_t group_step(const View&) noexcept { return sizeof(Block); }
    template <class Prims>
    [[gnu::always_inline]] static float block_scale(const View& v, int r, int g) noexcept {
        if constexpr (requires { v.scale(r, g); }) return v.scale(r, g);
        else return Prims::fp16(v.block(r, g).d);
    }
    template <class Prims>
    [[gnu::always_inline]] static void scales(const View& v, int r, int g0, int n, float* out) noexcept {
        for (int g = 0; g < n; ++g) out[g] = block_scale<Prims>(v, r, g0 + g) * unit;
    }
    template <class Prims>
    [[gnu::always_inline]] static void mins(const View&, int, int, int, float*) noexcept {}
    [[gnu::always_inline]] static const std::uint8_t* zeros(const View&, int, int) noexcept { return nullptr; }
    template <class Prims, ZeroPoint = ZeroPoint::symmetric>
    [[gnu::always_inline]] static GroupRef group(const View& v, int r, int g) noexcept {
        return {v.block(r, g).qs, Blk, block_scale<Prims>(v, r, g) * unit, 128, 0.0f};
    }
    template <class Prims>
    [[gnu::always_inline]] static float dequant_scale(const View& v, int r, int g) noexcept { return block_scale<Prims>(v, r, g); }
};

/// Every codebook format (a CodebookBlocks, or a type derived from one) gets its traits here.
template <class F>
    requires requires { typename F::codebook_grid; }
struct FormatTraits<F> : CodebookFormatTraits<typename F::codebook_grid, F::N> {};
/// ... and every double-quantized codebook format (formats/double_quant.hpp): the same codec.
template <class F>
    requires requires { typename F::dq_grid; }
struct FormatTraits<F> : CodebookFormatTraits<typename F::dq_grid, F::N, typename F::block_type, DqBlockView<typename F::block_type>> {};

/// K-quants (formats/gguf_kq.hpp) through their kernel form: one signed byte per weight and a
/// float scale and minimum per group, so SignedBytes' kernels run them as they run Q8_0.
template <class F>
struct DerivedBytesTraits {
    using View = KQuantView;
    using codec = SignedBytes;
    static constexpr ZeroPoint zero_kind = F::T::zero;
    static constexpr LaneOrder order = LaneOrder::natural;
    static constexpr std::size_t sub_block_bytes = 0;  // one sub-block per group
    /// Kept row panels (backends/panel.hpp) hold the type's own codes q (kernel code q -
    /// code_offset + 128) in 4, 5 or 6 bits, not the kernel form's byte.
    static constexpr int panel_code_bits = F::T::bits <= 4 ? 4 : F::T::bits;
    static constexpr int panel_code_offset = 128 - F::code_offset;
    /// Kept panels factor the group terms d·sc, -(dmin·m) back into a half per super-block and
    /// int8 per group (panel.hpp compact_panel_terms) for the two-level types.
    static constexpr int panel_term_span = F::T::two_level ? F::block_weights / F::T::group : 0;

    [[gnu::always_inline]] static int rows(const View& v) noexcept { return v.rows; }
    [[gnu::always_inline]] static int cols(const View& v) noexcept { return v.cols; }
    [[gnu::always_inline]] static int group_length(const View& v) noexcept { return v.group_length; }
    [[gnu::always_inline]] static int groups(const View& v) noexcept { return v.groups_per_row(); }
    [[gnu::always_inline]] static ZeroPoint zero(const View&) noexcept { return zero_kind; }
    [[gnu::always_inline]] static std::size_t row_stride(const View& v) noexcept { return std::size_t(v.cols); }
    [[gnu::always_inline]] static const std::uint8_t* group_bytes(const View& v, int r, int g) noexcept {
        return reinterpret_cast<const std::uint8_t*>(v.codes + std::size_t(r) * std::size_t(v.cols) + std::size_t(g) * std::size_t(v.group_length));
    }
    [[gnu::always_inline]] static std::size_t group_step(const View& v) noexcept { return std::size_t(v.group_length); }
    template <class Prims>
    [[gnu::always_inline]] static void scales(const View& v, int r, int g0, int n, float* out) noexcept {
        for (int g = 0; g < n; ++g) out[g] = v.scales[v.gi(r, g0 + g)];
    }
    template <class Prims>
    [[gnu::always_inline]] static void mins(const View& v, int r, int g0, int n, float* out) noexcept {
        if constexpr (zero_kind == ZeroPoint::float_min)
            for (int g = 0; g < n; ++g) out[g] = v.mins[v.gi(r, g0 + g)];
    }
    [[gnu::always_inline]] static const std::uint8_t* zeros(const View&, int, int) noexcept { return nullptr; }
    template <class Prims, ZeroPoint = zero_kind>
    [[gnu::always_inline]] static GroupRef group(const View& v, int r, int g) noexcept {
        const std::size_t gi = v.gi(r, g);
        return {group_bytes(v, r, g), v.group_length, v.scales[gi], 128, zero_kind == ZeroPoint::float_min ? v.mins[gi] : 0.0f};
    }
};
template <class F>
    requires requires { typename F::T; F::code_offset; }
struct FormatTraits<F> : DerivedBytesTraits<F> {};

template <>
struct FormatTraits<Q4_0> : BlockFormatTraits<block_q4_0, ZeroPoint::symmetric, NibbleBlock> {};
template <>
struct FormatTraits<Q4_1> : BlockFormatTraits<block_q4_1, ZeroPoint::float_min, NibbleBlock> {};
template <>
struct FormatTraits<Q8_0> : BlockFormatTraits<block_q8_0, ZeroPoint::symmetric, SignedBytes> {};

}  // namespace qforge
