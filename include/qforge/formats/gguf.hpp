#pragma once
/// @file
/// GGUF-compatible blocks (ggml's Q4_0, Q4_1, Q8_0): 32 weights per block, byte-identical to
/// llama.cpp's `block_q4_0`, `block_q4_1` and `block_q8_0`. A packed row is cols / 32 blocks,
/// so these formats need cols to be a multiple of 32 and a group size of exactly 32.
///
/// | block      | bytes | layout                                                    | weight i    |
/// |------------|-------|-----------------------------------------------------------|-------------|
/// | block_q4_0 | 18    | d: fp16; qs[16]: low nibble = weight j, high = weight j+16 | d*(q-8)     |
/// | block_q4_1 | 20    | d: fp16; m: fp16; qs[16]: nibbles as Q4_0                 | d*q + m     |
/// | block_q8_0 | 34    | d: fp16; qs[32]: int8                                     | d*qs[i]     |
///
/// In qforge's terms Q4_0 is the 4-bit symmetric grid with group 32, Q4_1 the 4-bit float-min
/// grid with group 32, and Q8_0 the 8-bit symmetric grid with group 32 (ggml's signed int8 q is
/// qforge's unsigned code minus 128).
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qforge/core/half.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/formats/dense.hpp"
#include "qforge/formats/gguf_iq.hpp"
#include "qforge/formats/gguf_k.hpp"
#include "qforge/formats/gguf_q5.hpp"

namespace qforge {

inline constexpr int gguf_block = 32;

struct block_q4_0 {
    std::uint16_t d;       // fp16 scale
    std::uint8_t qs[16];   // nibbles
};
struct block_q4_1 {
    std::uint16_t d;       // fp16 scale
    std::uint16_t m;       // fp16 minimum
    std::uint8_t qs[16];   // nibbles
};
struct block_q8_0 {
    std::uint16_t d;       // fp16 scale
    std::int8_t qs[32];    // signed codes
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must match ggml's 18-byte layout");
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 must match ggml's 20-byte layout");
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must match ggml's 34-byte layout");

/// The fp16 fields of a GGUF block that scale its codes: where each lies in the block, and its
/// name in messages. Every one must be finite for the block to stand for numbers.
struct BlockField {
    std::size_t offset;
    const char* what;
};
template <class Block> struct block_fields;
template <> struct block_fields<block_q4_0> {
    static constexpr std::size_t weights = 32;
    static constexpr const char* noun = "block";
    static constexpr std::array<BlockField, 1> fields{{{offsetof(block_q4_0, d), "scale"}}};
};
template <> struct block_fields<block_q4_1> {
    static constexpr std::size_t weights = 32;
    static constexpr const char* noun = "block";
    static constexpr std::array<BlockField, 2> fields{{{offsetof(block_q4_1, d), "scale"}, {offsetof(block_q4_1, m), "minimum"}}};
};
template <> struct block_fields<block_q8_0> {
    static constexpr std::size_t weights = 32;
    static constexpr const char* noun = "block";
    static constexpr std::array<BlockField, 1> fields{{{offsetof(block_q8_0, d), "scale"}}};
};
template <> struct block_fields<block_q4_K> {
    static constexpr std::size_t weights = k_block;
    static constexpr const char* noun = "super-block";
    static constexpr std::array<BlockField, 2> fields{{{offsetof(block_q4_K, d), "scale d"}, {offsetof(block_q4_K, dmin), "minimum scale dmin"}}};
};
template <> struct block_fields<block_q5_K> {
    static constexpr std::size_t weights = k_block;
    static constexpr const char* noun = "super-block";
    static constexpr std::array<BlockField, 2> fields{{{offsetof(block_q5_K, d), "scale d"}, {offsetof(block_q5_K, dmin), "minimum scale dmin"}}};
};
/// A block type whose only fp16 field is the scale `d` at offset Offset.
template <std::size_t Weights, std::size_t Offset, const char* Noun>
struct scale_only_fields {
    static constexpr std::size_t weights = Weights;
    static constexpr const char* noun = Noun;
    static constexpr std::array<BlockField, 1> fields{{{Offset, Weights == 32 ? "scale" : "scale d"}}};
};
inline constexpr char block_noun[] = "block";
inline constexpr char super_block_noun[] = "super-block";
template <> struct block_fields<block_q5_0> : scale_only_fields<32, offsetof(block_q5_0, d), block_noun> {};
template <> struct block_fields<block_q5_1> {
    static constexpr std::size_t weights = 32;
    static constexpr const char* noun = "block";
    static constexpr std::array<BlockField, 2> fields{{{offsetof(block_q5_1, d), "scale"}, {offsetof(block_q5_1, m), "minimum"}}};
};
template <> struct block_fields<block_q2_K> {
    static constexpr std::size_t weights = k_block;
    static constexpr const char* noun = "super-block";
    static constexpr std::array<BlockField, 2> fields{{{offsetof(block_q2_K, d), "scale d"}, {offsetof(block_q2_K, dmin), "minimum scale dmin"}}};
};
template <> struct block_fields<block_q3_K> : scale_only_fields<k_block, offsetof(block_q3_K, d), super_block_noun> {};
template <> struct block_fields<block_iq2_xxs> : scale_only_fields<k_block, offsetof(block_iq2_xxs, d), super_block_noun> {};
template <> struct block_fields<block_iq2_xs> : scale_only_fields<k_block, offsetof(block_iq2_xs, d), super_block_noun> {};
template <> struct block_fields<block_iq2_s> : scale_only_fields<k_block, offsetof(block_iq2_s, d), super_block_noun> {};
template <> struct block_fields<block_iq3_xxs> : scale_only_fields<k_block, offsetof(block_iq3_xxs, d), super_block_noun> {};
template <> struct block_fields<block_iq3_s> : scale_only_fields<k_block, offsetof(block_iq3_s, d), super_block_noun> {};
template <> struct block_fields<block_iq1_s> : scale_only_fields<k_block, offsetof(block_iq1_s, d), super_block_noun> {};
template <> struct block_fields<block_iq4_xs> : scale_only_fields<k_block, offsetof(block_iq4_xs, d), super_block_noun> {};
template <> struct block_fields<block_tq1_0> : scale_only_fields<k_block, offsetof(block_tq1_0, d), super_block_noun> {};
template <> struct block_fields<block_tq2_0> : scale_only_fields<k_block, offsetof(block_tq2_0, d), super_block_noun> {};
template <> struct block_fields<block_q6_K> {
    static constexpr std::size_t weights = k_block;
    static constexpr const char* noun = "super-block";
    static constexpr std::array<BlockField, 1> fields{{{offsetof(block_q6_K, d), "scale d"}}};
};

/// Why stored blocks cannot be used: the first block whose fp16 scale (or minimum) is NaN or
/// Inf, as "block 3 (row 1, columns 32-63) has a non-finite scale (nan)"; empty when every
/// block is finite. `bytes` holds `n_blocks` blocks of type Block at any alignment, in rows of
/// `cols` weights. Reads two bytes per field and block: a small fraction of the data.
template <class Block>
std::string nonfinite_block(const std::uint8_t* bytes, std::size_t n_blocks, std::size_t cols) {
    using F = block_fields<Block>;
    const std::size_t per_row = cols / F::weights;
    for (std::size_t b = 0; b < n_blocks; ++b)
        for (const BlockField& field : F::fields) {
            std::uint16_t h;
            std::memcpy(&h, bytes + b * sizeof(Block) + field.offset, 2);
            if ((h & 0x7C00u) != 0x7C00u) continue;  // exponent not all ones: finite
            const std::size_t row = per_row ? b / per_row : 0, c0 = per_row ? (b % per_row) * F::weights : 0;
            return std::string(F::noun) + " " + std::to_string(b) + " (row " + std::to_string(row) + ", columns " + std::to_string(c0) + "-" +
                   std::to_string(c0 + F::weights - 1) + ") has a non-finite " + field.what + " (" + detail::value_text(half_to_float(h)) + ")";
        }
    return {};
}

/// Kernel-side view of a matrix of GGUF blocks.
template <class Block>
struct BlockView {
    int rows = 0, cols = 0;
    const Block* blocks = nullptr;
    [[gnu::always_inline]] int blocks_per_row() const noexcept { return cols / int(block_fields<Block>::weights); }
    [[gnu::always_inline]] const Block& block(int r, int b) const noexcept {
        return blocks[std::size_t(r) * std::size_t(blocks_per_row()) + std::size_t(b)];
    }
};

/// Whether `spec` is the grid of a block type whose grid is `own`: equal but for the type's name,
/// which may be missing (a matrix quantized on the same numbers without naming the type, packed
/// into it by a direct call) or must be the type's.
constexpr bool same_grid(const QuantSpec& spec, const QuantSpec& own) noexcept {
    if (!spec.block.empty() && spec.block != own.block) return false;
    QuantSpec a = spec;
    a.block = own.block;
    return a == own;
}

namespace detail {
/// n 4-bit codes into n/2 bytes, ggml's nibble order: low nibble of byte j = code j, high nibble =
/// code j + n/2. False (nothing written past the first bad byte) when a code does not fit 4 bits.
inline bool pack_nibbles(const std::uint8_t* codes, int n, std::uint8_t* qs) noexcept {
    for (int j = 0; j < n / 2; ++j) {
        if ((codes[j] | codes[j + n / 2]) >> 4) return false;
        qs[j] = std::uint8_t(codes[j] | (codes[j + n / 2] << 4));
    }
    return true;
}
inline void unpack_nibbles(const std::uint8_t* qs, int n, std::uint8_t* codes) noexcept {
    for (int j = 0; j < n / 2; ++j) {
        codes[j] = qs[j] & 0x0f;
        codes[j + n / 2] = qs[j] >> 4;
    }
}

template <class Block, ZeroPoint Zero, int Bits, const char* Name, GgmlType Type>
struct GgufFormat {
    using block_type = Block;
    static constexpr int bits = Bits;
    static constexpr FormatInfo info{Name, Name, Storage::blocks, Bits, Type};
    /// The type's own grid, named in scheme text by the format's name (`rtn:q4_0`).
    static constexpr QuantSpec grid_spec{Bits, gguf_block, Zero, ScaleType::f16, nullptr, Name};
    static std::string name() { return Name; }

    struct Packed {
        QuantSpec spec = grid_spec;
        int rows = 0, cols = 0;
        std::vector<Block> blocks;
        std::size_t bytes() const noexcept { return blocks.size() * sizeof(Block); }
        BlockView<Block> view() const noexcept { return {rows, cols, blocks.data()}; }
    };

    static std::string unsupported(const QuantSpec& spec, int rows, int cols) {
        if (rows <= 0 || cols <= 0) return "empty matrix";
        if (cols % gguf_block != 0)
            return name() + " needs rows of whole 32-weight blocks; got " + std::to_string(cols) + " columns";
        if (!same_grid(spec, grid_spec))
            return name() + " stores its own grid (" + std::to_string(Bits) + "-bit " + to_string(Zero) +
                   ", group size 32, fp16 scales), named '" + name() + "' in a scheme; the spec differs";
        return {};
    }

    /// Why the stored blocks cannot be used (a NaN/Inf scale or minimum, see nonfinite_block);
    /// empty when they can.
    static std::string fault(const Packed& p) {
        return nonfinite_block<Block>(reinterpret_cast<const std::uint8_t*>(p.blocks.data()), p.blocks.size(), std::size_t(p.cols));
    }

    static Packed pack(const QuantizedMatrix& q) {
        if (auto why = unsupported(q.spec, q.rows, q.cols); !why.empty()) throw InvalidArgument(why);
        Packed p;
        p.spec = q.spec;  // as given: the type's name, or the same numbers unnamed (a direct pack)
        p.rows = q.rows;
        p.cols = q.cols;
        p.blocks.resize(std::size_t(q.rows) * std::size_t(q.cols / gguf_block));
        for (int r = 0; r < q.rows; ++r)
            for (int b = 0; b < q.cols / gguf_block; ++b) {
                Block& blk = p.blocks[std::size_t(r) * std::size_t(q.cols / gguf_block) + std::size_t(b)];
                const std::size_t gi = q.group_index(r, b);
                const std::uint8_t* codes = q.codes.data() + std::size_t(r) * std::size_t(q.cols) + std::size_t(b) * gguf_block;
                const auto where = [&] {
                    return "row " + std::to_string(r) + ", " + detail::group_text(b, gguf_block, q.cols);
                };
                blk.d = exact_half(q.scales[gi], name(), "scale", where);
                if constexpr (Bits == 8) {
                    for (int i = 0; i < 32; ++i) blk.qs[i] = std::int8_t(int(codes[i]) - 128);
                } else {
                    if constexpr (Zero == ZeroPoint::float_min) blk.m = exact_half(q.mins[gi], name(), "minimum", where);
                    if (!pack_nibbles(codes, gguf_block, blk.qs)) throw InvalidData(name() + ": " + where() + ": a code is out of range");
                }
            }
        return p;
    }

    static QuantizedMatrix unpack(const Packed& p) {
        QuantizedMatrix q(p.spec, p.rows, p.cols);
        for (int r = 0; r < p.rows; ++r)
            for (int b = 0; b < p.cols / gguf_block; ++b) {
                const Block& blk = p.view().block(r, b);
                const std::size_t gi = q.group_index(r, b);
                std::uint8_t* codes = q.codes.data() + std::size_t(r) * std::size_t(p.cols) + std::size_t(b) * gguf_block;
                q.scales[gi] = half_to_float(blk.d);
                if constexpr (Bits == 8) {
                    for (int i = 0; i < 32; ++i) codes[i] = std::uint8_t(int(blk.qs[i]) + 128);
                } else {
                    if constexpr (Zero == ZeroPoint::float_min) q.mins[gi] = half_to_float(blk.m);
                    unpack_nibbles(blk.qs, gguf_block, codes);
                }
            }
        return q;
    }
};
inline constexpr char q4_0_name[] = "q4_0";
inline constexpr char q4_1_name[] = "q4_1";
inline constexpr char q8_0_name[] = "q8_0";
}  // namespace detail

struct Q4_0 : detail::GgufFormat<block_q4_0, ZeroPoint::symmetric, 4, detail::q4_0_name, GgmlType::Q4_0> {};
struct Q4_1 : detail::GgufFormat<block_q4_1, ZeroPoint::float_min, 4, detail::q4_1_name, GgmlType::Q4_1> {};
struct Q8_0 : detail::GgufFormat<block_q8_0, ZeroPoint::symmetric, 8, detail::q8_0_name, GgmlType::Q8_0> {};

}  // namespace qforge
