#pragma once
/// @file
/// ggml's K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and 5-bit blocks (Q5_0, Q5_1) as packed formats
/// of qforge: quantizers write onto their grids (`rtn:q4_k`, `gptq:q6_k`, `gptq:q5_0`; the K-quants'
/// are two-level, core/spec.hpp `SuperBlockGrid`), the blocks go to GGUF and the container byte for
/// byte, and GGUF files holding them load in place. Q5_0/Q5_1 are what llama-quantize writes where
/// a row is not whole 256-weight super-blocks (Q4_K -> Q5_0, Q5_K -> Q5_1), so they are here too.
///
/// A packed matrix keeps two forms of the same numbers:
/// - `blocks`: ggml's super-blocks of 256 weights (layouts in formats/gguf_k.hpp), what files hold
///   and what `bytes()` counts;
/// - the kernels' form, derived from the blocks: one signed byte per weight (SignedBytes codec:
///   the code minus 128 for float-minimum grids, the code minus the zero code for symmetric ones)
///   and each group's float scale d*sc and minimum -(dmin*m) (exact products), so the integer-dot
///   kernels run on K-quants as on any block format. (For decode the CPU backend also keeps row
///   panels of the codes in the type's own 4, 5 or 6 bits: backends/panel.hpp.)
///
/// | type | code bits | group | grid of a group                | scale code sc     | min code m |
/// |------|-----------|-------|--------------------------------|-------------------|------------|
/// | Q2_K | 2         | 16    | d*sc*q - dmin*m                | 4-bit unsigned    | 4-bit      |
/// | Q3_K | 3         | 16    | d*sc*(q - 4)                   | 6-bit, minus 32   | -          |
/// | Q4_K | 4         | 32    | d*sc*q - dmin*m                | 6-bit unsigned    | 6-bit      |
/// | Q5_K | 5         | 32    | d*sc*q - dmin*m                | 6-bit unsigned    | 6-bit      |
/// | Q6_K | 6         | 16    | d*sc*(q - 32)                  | int8              | -          |
/// | Q5_0 | 5         | 32    | d*(q - 16)   (d fp16 per block of 32)                   | -          |
/// | Q5_1 | 5         | 32    | d*q + m      (d, m fp16 per block of 32)                | -          |
/// Source: ggml-common.h (block structs), ggml-quants.c (dequantize_row_q*_K).
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qforge/core/half.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/formats/format.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/formats/gguf_k.hpp"
#include "qforge/formats/gguf_q5.hpp"

namespace qforge {

/// One block in integers: codes (qforge's unsigned convention); for a K-quant the group scale codes
/// sc and minimum codes m and d, dmin as fp16 bits; for Q5_0/Q5_1 d (and m, in dmin) as fp16 bits.
struct KSuperBlock {
    std::uint8_t codes[k_block];
    int sc[16], m[16];
    std::uint16_t d = 0, dmin = 0;
};

namespace detail {
/// Q4_K/Q5_K's 12 bytes of eight 6-bit scales and eight 6-bit minimums (inverse of k_scale_min).
inline void k_pack_scale_min(const int* sc, const int* m, std::uint8_t* s) noexcept {
    for (int j = 0; j < 4; ++j) {
        s[j] = std::uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = std::uint8_t((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        s[j + 8] = std::uint8_t((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
}
/// Q3_K's 12 bytes of sixteen 6-bit scales (stored as sc + 32).
inline void k3_pack_scales(const int* sc, std::uint8_t* s) noexcept {
    std::memset(s, 0, 12);
    for (int k = 0; k < 16; ++k) {
        const int v = sc[k] + 32;
        s[k % 8] |= std::uint8_t((v & 0x0F) << (4 * (k / 8)));
        s[8 + k % 4] |= std::uint8_t(((v >> 4) & 3) << (2 * (k / 4)));
    }
}
inline int k3_scale(const std::uint8_t* s, int k) noexcept {
    return (((s[k % 8] >> (4 * (k / 8))) & 0x0F) | (((s[8 + k % 4] >> (2 * (k / 4))) & 3) << 4)) - 32;
}
/// Q4_K/Q5_K's qs: the low 4 bits of groups 2i and 2i+1 share 32 bytes (low nibble, high nibble).
inline void k_pack_pair_nibbles(const std::uint8_t* codes, std::uint8_t* qs) noexcept {
    for (int j = 0; j < 8; j += 2)
        for (int l = 0; l < 32; ++l) qs[16 * j + l] = std::uint8_t((codes[32 * j + l] & 0x0F) | ((codes[32 * (j + 1) + l] & 0x0F) << 4));
}
inline int k_pair_nibble(const std::uint8_t* qs, int j, int l) noexcept { return j % 2 ? qs[16 * (j - 1) + l] >> 4 : qs[16 * j + l] & 0x0F; }
/// Q5_0/Q5_1's qh (bit i: the 5th bit of weight i) and qs (nibbles as Q4_0) from 32 codes.
inline void q5_pack(const std::uint8_t* codes, std::uint8_t* qh, std::uint8_t* qs) noexcept {
    std::uint32_t bits = 0;
    for (int i = 0; i < 32; ++i) bits |= std::uint32_t((codes[i] >> 4) & 1) << i;
    std::memcpy(qh, &bits, 4);
    for (int j = 0; j < 16; ++j) qs[j] = std::uint8_t((codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4));
}
/// Position of weight w's 2 low bits in Q2_K/Q3_K's qs: byte 32*(w/128) + w%32, shift 2*((w/32)%4).
constexpr int k2_byte(int w) noexcept { return 32 * (w / 128) + w % 32; }
constexpr int k2_shift(int w) noexcept { return 2 * ((w / 32) % 4); }
}  // namespace detail

/// The facts of one K-quant type and its block codec (to and from KSuperBlock).
template <class Block>
struct KQuantType;

template <>
struct KQuantType<block_q4_K> {
    static constexpr const char* name = "q4_k";
    static constexpr GgmlType type = GgmlType::Q4_K;
    static constexpr int bits = 4, group = 32;
    static constexpr ZeroPoint zero = ZeroPoint::float_min;
    static constexpr SuperBlockGrid grid{"q4_k", k_block, 6, false, 6};
    static constexpr int weights = k_block;
    static constexpr const SuperBlockGrid* super = &grid;
    static constexpr bool two_level = true;  // a trait: &grid == nullptr is no constant expression under the sanitizers
    static void encode(const KSuperBlock& k, block_q4_K& b) noexcept {
        b.d = k.d, b.dmin = k.dmin;
        detail::k_pack_scale_min(k.sc, k.m, b.scales);
        detail::k_pack_pair_nibbles(k.codes, b.qs);
    }
    static void decode(const block_q4_K& b, KSuperBlock& k) noexcept {
        k.d = b.d, k.dmin = b.dmin;
        for (int j = 0; j < 8; ++j) {
            detail::k_scale_min(j, b.scales, k.sc[j], k.m[j]);
            for (int l = 0; l < 32; ++l) k.codes[32 * j + l] = std::uint8_t(detail::k_pair_nibble(b.qs, j, l));
        }
    }
};

template <>
struct KQuantType<block_q5_K> {
    static constexpr const char* name = "q5_k";
    static constexpr GgmlType type = GgmlType::Q5_K;
    static constexpr int bits = 5, group = 32;
    static constexpr ZeroPoint zero = ZeroPoint::float_min;
    static constexpr SuperBlockGrid grid{"q5_k", k_block, 6, false, 6};
    static constexpr int weights = k_block;
    static constexpr const SuperBlockGrid* super = &grid;
    static constexpr bool two_level = true;  // a trait: &grid == nullptr is no constant expression under the sanitizers
    static void encode(const KSuperBlock& k, block_q5_K& b) noexcept {
        b.d = k.d, b.dmin = k.dmin;
        detail::k_pack_scale_min(k.sc, k.m, b.scales);
        std::memset(b.qh, 0, sizeof b.qh);
        for (int j = 0; j < 8; ++j)
            for (int l = 0; l < 32; ++l) b.qh[l] |= std::uint8_t(((k.codes[32 * j + l] >> 4) & 1) << j);
        detail::k_pack_pair_nibbles(k.codes, b.qs);
    }
    static void decode(const block_q5_K& b, KSuperBlock& k) noexcept {
        k.d = b.d, k.dmin = b.dmin;
        for (int j = 0; j < 8; ++j) {
            detail::k_scale_min(j, b.scales, k.sc[j], k.m[j]);
            for (int l = 0; l < 32; ++l) k.codes[32 * j + l] = std::uint8_t(detail::k_pair_nibble(b.qs, j, l) | (((b.qh[l] >> j) & 1) << 4));
        }
    }
};

template <>
struct KQuantType<block_q6_K> {
    static constexpr const char* name = "q6_k";
    static constexpr GgmlType type = GgmlType::Q6_K;
    static constexpr int bits = 6, group = 16;
    static constexpr ZeroPoint zero = ZeroPoint::symmetric;
    static constexpr SuperBlockGrid grid{"q6_k", k_block, 8, true, 0};
    static constexpr int weights = k_block;
    static constexpr const SuperBlockGrid* super = &grid;
    static constexpr bool two_level = true;  // a trait: &grid == nullptr is no constant expression under the sanitizers
    static void encode(const KSuperBlock& k, block_q6_K& b) noexcept {
        b.d = k.d;
        for (int i = 0; i < 16; ++i) b.scales[i] = std::int8_t(k.sc[i]);
        for (int half = 0; half < 2; ++half) {
            const std::uint8_t* c = k.codes + 128 * half;
            std::uint8_t* ql = b.ql + 64 * half;
            std::uint8_t* qh = b.qh + 32 * half;
            for (int l = 0; l < 32; ++l) {
                ql[l] = std::uint8_t((c[l] & 0x0F) | ((c[l + 64] & 0x0F) << 4));
                ql[l + 32] = std::uint8_t((c[l + 32] & 0x0F) | ((c[l + 96] & 0x0F) << 4));
                qh[l] = std::uint8_t((c[l] >> 4) | ((c[l + 32] >> 4) << 2) | ((c[l + 64] >> 4) << 4) | ((c[l + 96] >> 4) << 6));
            }
        }
    }
    static void decode(const block_q6_K& b, KSuperBlock& k) noexcept {
        k.d = b.d, k.dmin = 0;
        for (int i = 0; i < 16; ++i) k.sc[i] = b.scales[i], k.m[i] = 0;
        for (int half = 0; half < 2; ++half) {
            std::uint8_t* c = k.codes + 128 * half;
            const std::uint8_t* ql = b.ql + 64 * half;
            const std::uint8_t* qh = b.qh + 32 * half;
            for (int l = 0; l < 32; ++l) {
                c[l] = std::uint8_t((ql[l] & 0x0F) | ((qh[l] & 3) << 4));
                c[l + 32] = std::uint8_t((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4));
                c[l + 64] = std::uint8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                c[l + 96] = std::uint8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
    }
};

template <>
struct KQuantType<block_q3_K> {
    static constexpr const char* name = "q3_k";
    static constexpr GgmlType type = GgmlType::Q3_K;
    static constexpr int bits = 3, group = 16;
    static constexpr ZeroPoint zero = ZeroPoint::symmetric;
    static constexpr SuperBlockGrid grid{"q3_k", k_block, 6, true, 0};
    static constexpr int weights = k_block;
    static constexpr const SuperBlockGrid* super = &grid;
    static constexpr bool two_level = true;  // a trait: &grid == nullptr is no constant expression under the sanitizers
    static void encode(const KSuperBlock& k, block_q3_K& b) noexcept {
        b.d = k.d;
        detail::k3_pack_scales(k.sc, b.scales);
        std::memset(b.qs, 0, sizeof b.qs);
        std::memset(b.hmask, 0, sizeof b.hmask);
        for (int w = 0; w < k_block; ++w) {  // code = low 2 bits + 4 * high bit; value code - 4
            b.qs[detail::k2_byte(w)] |= std::uint8_t((k.codes[w] & 3) << detail::k2_shift(w));
            b.hmask[w % 32] |= std::uint8_t(((k.codes[w] >> 2) & 1) << (w / 32));
        }
    }
    static void decode(const block_q3_K& b, KSuperBlock& k) noexcept {
        k.d = b.d, k.dmin = 0;
        for (int i = 0; i < 16; ++i) k.sc[i] = detail::k3_scale(b.scales, i), k.m[i] = 0;
        for (int w = 0; w < k_block; ++w)
            k.codes[w] = std::uint8_t(((b.qs[detail::k2_byte(w)] >> detail::k2_shift(w)) & 3) | (((b.hmask[w % 32] >> (w / 32)) & 1) << 2));
    }
};

template <>
struct KQuantType<block_q2_K> {
    static constexpr const char* name = "q2_k";
    static constexpr GgmlType type = GgmlType::Q2_K;
    static constexpr int bits = 2, group = 16;
    static constexpr ZeroPoint zero = ZeroPoint::float_min;
    static constexpr SuperBlockGrid grid{"q2_k", k_block, 4, false, 4};
    static constexpr int weights = k_block;
    static constexpr const SuperBlockGrid* super = &grid;
    static constexpr bool two_level = true;  // a trait: &grid == nullptr is no constant expression under the sanitizers
    static void encode(const KSuperBlock& k, block_q2_K& b) noexcept {
        b.d = k.d, b.dmin = k.dmin;
        for (int i = 0; i < 16; ++i) b.scales[i] = std::uint8_t((k.sc[i] & 0x0F) | ((k.m[i] & 0x0F) << 4));
        std::memset(b.qs, 0, sizeof b.qs);
        for (int w = 0; w < k_block; ++w) b.qs[detail::k2_byte(w)] |= std::uint8_t((k.codes[w] & 3) << detail::k2_shift(w));
    }
    static void decode(const block_q2_K& b, KSuperBlock& k) noexcept {
        k.d = b.d, k.dmin = b.dmin;
        for (int i = 0; i < 16; ++i) k.sc[i] = b.scales[i] & 0x0F, k.m[i] = b.scales[i] >> 4;
        for (int w = 0; w < k_block; ++w) k.codes[w] = std::uint8_t((b.qs[detail::k2_byte(w)] >> detail::k2_shift(w)) & 3);
    }
};

template <>
struct KQuantType<block_q5_0> {
    static constexpr const char* name = "q5_0";
    static constexpr GgmlType type = GgmlType::Q5_0;
    static constexpr int bits = 5, group = 32, weights = 32;
    static constexpr ZeroPoint zero = ZeroPoint::symmetric;
    static constexpr const SuperBlockGrid* super = nullptr;
    static constexpr bool two_level = false;
    static void encode(const KSuperBlock& k, block_q5_0& b) noexcept {
        b.d = k.d;
        detail::q5_pack(k.codes, b.qh, b.qs);
    }
    static void decode(const block_q5_0& b, KSuperBlock& k) noexcept {
        k.d = b.d, k.dmin = 0;
        for (int i = 0; i < 32; ++i) k.codes[i] = std::uint8_t(detail::q5_code(b, i));
    }
};

template <>
struct KQuantType<block_q5_1> {
    static constexpr const char* name = "q5_1";
    static constexpr GgmlType type = GgmlType::Q5_1;
    static constexpr int bits = 5, group = 32, weights = 32;
    static constexpr ZeroPoint zero = ZeroPoint::float_min;
    static constexpr const SuperBlockGrid* super = nullptr;
    static constexpr bool two_level = false;
    static void encode(const KSuperBlock& k, block_q5_1& b) noexcept {
        b.d = k.d, b.m = k.dmin;
        detail::q5_pack(k.codes, b.qh, b.qs);
    }
    static void decode(const block_q5_1& b, KSuperBlock& k) noexcept {
        k.d = b.d, k.dmin = b.m;
        for (int i = 0; i < 32; ++i) k.codes[i] = std::uint8_t(detail::q5_code(b, i));
    }
};

/// The kernels' view of a K-quant matrix (formats/gguf_kq.hpp's kernel form).
struct KQuantView {
    int rows = 0, cols = 0, group_length = 32;
    const std::int8_t* codes = nullptr;  ///< rows x cols, code minus `code_offset`
    const float* scales = nullptr;       ///< rows x groups
    const float* mins = nullptr;         ///< rows x groups (float-minimum grids), else null
    [[gnu::always_inline]] int groups_per_row() const noexcept { return cols / group_length; }
    [[gnu::always_inline]] std::size_t gi(int r, int g) const noexcept { return std::size_t(r) * std::size_t(groups_per_row()) + std::size_t(g); }
};

template <class Block>
struct KQuantFormat {
    using T = KQuantType<Block>;
    using block_type = Block;
    static constexpr int bits = T::bits;
    static constexpr FormatInfo info{T::name, T::name, Storage::blocks, T::bits, T::type};
    /// The type's own grid, named in scheme text by the type's name (`rtn:q4_k`).
    static constexpr QuantSpec grid_spec{T::bits, T::group, T::zero, ScaleType::f16, nullptr, T::name, T::super};
    static constexpr int block_weights = T::weights;
    /// The kernel byte of code q: q - 128 (float minimum) or q - zero (symmetric).
    static constexpr int code_offset = T::zero == ZeroPoint::float_min ? 128 : 1 << (T::bits - 1);
    static constexpr std::size_t code_pad = 32;
    static std::string name() { return T::name; }

    struct Packed {
        QuantSpec spec = grid_spec;
        int rows = 0, cols = 0;
        std::vector<Block> blocks;          ///< ggml's blocks, rows x cols/block_weights
        std::vector<std::int8_t> codes;     ///< the kernels' form (complete() derives it from blocks), rows x cols + code_pad
        std::vector<float> scales, mins;
        std::size_t bytes() const noexcept { return blocks.size() * sizeof(Block); }
        KQuantView view() const noexcept {
            return {rows, cols, T::group, codes.data(), scales.data(), mins.empty() ? nullptr : mins.data()};
        }
        BlockView<Block> block_view() const noexcept { return {rows, cols, blocks.data()}; }
    };

    static std::string unsupported(const QuantSpec& spec, int rows, int cols) {
        if (rows <= 0 || cols <= 0) return "empty matrix";
        if (cols % block_weights != 0)
            return name() + " needs rows of whole " + std::to_string(block_weights) + "-weight blocks; got " + std::to_string(cols) + " columns";
        if (!same_grid(spec, grid_spec)) return name() + " stores its own grid, named '" + name() + "' in a scheme; the spec differs";
        return {};
    }

    /// Why the stored blocks cannot be used (a NaN/Inf d or dmin); empty when they can.
    static std::string fault(const Packed& p) {
        return nonfinite_block<Block>(reinterpret_cast<const std::uint8_t*>(p.blocks.data()), p.blocks.size(), std::size_t(p.cols));
    }

    /// Fills the kernels' form from `blocks` (after a load of the blocks as stored).
    static void complete(Packed& p) {
        const int groups = p.cols / T::group, supers = p.cols / block_weights, per = block_weights / T::group;
        // 32 bytes of zeros past the last code: the vector kernels load a group's codes 32 bytes at
        // a time, so groups of 16 read 16 bytes beyond (against zero activation slots: no effect)
        p.codes.assign(std::size_t(p.rows) * std::size_t(p.cols) + code_pad, 0);
        p.scales.assign(std::size_t(p.rows) * std::size_t(groups), 0.0f);
        if (T::zero == ZeroPoint::float_min) p.mins.assign(p.scales.size(), 0.0f);
        KSuperBlock k;
        for (int r = 0; r < p.rows; ++r)
            for (int s = 0; s < supers; ++s) {
                T::decode(p.blocks[std::size_t(r) * std::size_t(supers) + std::size_t(s)], k);
                const float d = half_to_float(k.d), dmin = half_to_float(k.dmin);
                for (int j = 0; j < per; ++j) {
                    const std::size_t gi = std::size_t(r) * std::size_t(groups) + std::size_t(s * per + j);
                    if constexpr (T::two_level) {
                        p.scales[gi] = d * float(k.sc[j]);
                        if (T::zero == ZeroPoint::float_min) p.mins[gi] = -(dmin * float(k.m[j]));
                    } else {  // Q5_0/Q5_1: d and m themselves
                        p.scales[gi] = d;
                        if (T::zero == ZeroPoint::float_min) p.mins[gi] = dmin;
                    }
                }
                std::int8_t* out = p.codes.data() + std::size_t(r) * std::size_t(p.cols) + std::size_t(s) * block_weights;
                for (int w = 0; w < block_weights; ++w) out[w] = std::int8_t(int(k.codes[w]) - code_offset);
            }
    }

    /// InvalidArgument when the matrix is not on this type's grid (its scales and minimums not
    /// the products of its super-blocks' d, dmin with in-range codes), naming row and super-block.
    static Packed pack(const QuantizedMatrix& q);

private:
    /// A K-quant super-block's d, dmin, sc and m from the matrix's products (pack's check).
    template <class Where>
    static void encode_super(const QuantizedMatrix& q, int r, int s, Where&& where, KSuperBlock& k);

public:

    static QuantizedMatrix unpack(const Packed& p) {
        QuantizedMatrix q(p.spec, p.rows, p.cols);
        const int supers = p.cols / block_weights;
        q.scales = p.scales;
        if (T::zero == ZeroPoint::float_min) q.mins = p.mins;
        for (std::size_t i = 0; i < q.codes.size(); ++i) q.codes[i] = std::uint8_t(int(p.codes[i]) + code_offset);
        if constexpr (T::two_level)
            for (int r = 0; r < p.rows; ++r)
                for (int s = 0; s < supers; ++s) {
                    const Block& b = p.blocks[std::size_t(r) * std::size_t(supers) + std::size_t(s)];
                    q.super[(std::size_t(r) * std::size_t(supers) + std::size_t(s)) * 2] = half_to_float(b.d);
                    if constexpr (requires { b.dmin; }) q.super[(std::size_t(r) * std::size_t(supers) + std::size_t(s)) * 2 + 1] = half_to_float(b.dmin);
                }
        return q;
    }
};

template <class Block>
typename KQuantFormat<Block>::Packed KQuantFormat<Block>::pack(const QuantizedMatrix& q) {
    if (auto why = unsupported(q.spec, q.rows, q.cols); !why.empty()) throw InvalidArgument(why);
    Packed p;
    p.spec = q.spec;
    p.rows = q.rows;
    p.cols = q.cols;
    const int supers = q.cols / block_weights;
    p.blocks.resize(std::size_t(q.rows) * std::size_t(supers));
    KSuperBlock k;
    for (int r = 0; r < q.rows; ++r)
        for (int s = 0; s < supers; ++s) {
            const auto where = [&] { return name() + ": row " + std::to_string(r) + ", block " + std::to_string(s) + " (columns " +
                                            std::to_string(s * block_weights) + "-" + std::to_string(s * block_weights + block_weights - 1) + ")"; };
            const std::uint8_t* codes = q.codes.data() + std::size_t(r) * std::size_t(q.cols) + std::size_t(s) * block_weights;
            for (int w = 0; w < block_weights; ++w) {
                if (codes[w] >> T::bits) throw InvalidArgument(where() + ": a code is out of range");
                k.codes[w] = codes[w];
            }
            if constexpr (!T::two_level) {  // Q5_0/Q5_1: the group's own scale (and minimum), as fp16
                const std::size_t gi = q.group_index(r, s);
                k.d = detail::exact_half(q.scales[gi], name(), "scale", where);
                k.dmin = T::zero == ZeroPoint::float_min ? detail::exact_half(q.mins[gi], name(), "minimum", where) : std::uint16_t(0);
            } else {
                encode_super(q, r, s, where, k);
            }
            T::encode(k, p.blocks[std::size_t(r) * std::size_t(supers) + std::size_t(s)]);
        }
    complete(p);
    return p;
}

template <class Block>
template <class Where>
void KQuantFormat<Block>::encode_super(const QuantizedMatrix& q, int r, int s, Where&& where, KSuperBlock& k) {
    const int supers = q.cols / block_weights, per = block_weights / T::group;
    const float d = q.super[(std::size_t(r) * std::size_t(supers) + std::size_t(s)) * 2];
    const float dmin = q.super[(std::size_t(r) * std::size_t(supers) + std::size_t(s)) * 2 + 1];
    k.d = float_to_half(d);
    k.dmin = float_to_half(dmin);
    if (half_to_float(k.d) != d || half_to_float(k.dmin) != dmin) throw InvalidArgument(where() + ": d or dmin is not an fp16 value");
    for (int j = 0; j < per; ++j) {
        const std::size_t gi = q.group_index(r, s * per + j);
        const float scale = q.scales[gi], min = T::zero == ZeroPoint::float_min ? q.mins[gi] : 0.0f;
        k.sc[j] = d == 0.0f ? 0 : int(std::nearbyint(scale / d));
        k.m[j] = T::zero != ZeroPoint::float_min || dmin == 0.0f ? 0 : int(std::nearbyint(-min / dmin));
        if (k.sc[j] < T::super->min_scale_code() || k.sc[j] > T::super->max_scale_code() || d * float(k.sc[j]) != scale ||
            (T::zero == ZeroPoint::float_min && (k.m[j] < 0 || k.m[j] > T::super->max_min_code() || -(dmin * float(k.m[j])) != min)))
            throw InvalidArgument(where() + ", group " + std::to_string(j) + ": scale " + std::to_string(scale) +
                                  " or minimum is not on the grid of d = " + std::to_string(d) + ", dmin = " + std::to_string(dmin));
    }
}

struct Q2_K : KQuantFormat<block_q2_K> {};
struct Q3_K : KQuantFormat<block_q3_K> {};
struct Q4_K : KQuantFormat<block_q4_K> {};
struct Q5_K : KQuantFormat<block_q5_K> {};
struct Q6_K : KQuantFormat<block_q6_K> {};
struct Q5_0 : KQuantFormat<block_q5_0> {};
struct Q5_1 : KQuantFormat<block_q5_1> {};

}  // namespace qforge
