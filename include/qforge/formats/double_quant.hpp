#pragma once
/// @file
/// QLoRA's double quantization of the scales (Dettmers et al., 2023, "QLoRA", section 3, "Double
/// Quantization"), and the codebook format that stores it (`NF4_DQ`, scheme `nf4g64,dq`).
///
/// The quantizer keeps one fp32 absmax scale per block of N weights (ScaleType::dq8). Packing
/// then treats the matrix's scales, in row-major block order, as data: their mean is subtracted
/// (one fp32 `offset`), and each run of 256 centred scales is quantized with an fp32 absmax
/// `absmax2` of its own to 8-bit codes of the signed dynamic map (Dettmers 2016, "8-Bit
/// Approximations for Parallelism in Deep Learning"; bitsandbytes' `create_dynamic_map()`, the
/// map QLoRA's second quantization uses). A block's scale is then
///     scale = fma(dynamic_map[code], absmax2[block / 256], offset)
/// (one rounding, so every backend computes the same float; bitsandbytes multiplies and adds
/// in two steps, which can differ in the last bit of a scale). The weights' codes are those chosen
/// with the fp32 scales, as in QLoRA: double quantization changes the scales only.
///
/// Bytes, N = 64:
/// | part                    | bytes                 | layout |
/// |-------------------------|-----------------------|--------|
/// | block_codebook_dq<64>   | 1 + 32 per 64 weights | sc: u8 code of the scale; qs[32]: low nibble of byte j = code j, high = code j+32 |
/// | absmax2                 | 4 per 256 blocks      | fp32, the last run may be shorter |
/// | offset                  | 4 per matrix          | fp32 |
/// 4 + 8/64 + 32/(64*256) = 4.127 bits per weight, plus 32 bits per matrix (QLoRA's 0.127).
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/formats/codebook.hpp"
#include "qforge/grids/nf4.hpp"

namespace qforge {

/// Scales per second-level block.
inline constexpr int dq_block = 256;

namespace detail {
/// The signed dynamic map (max_exponent_bits 7, 8 bits): for i = 0..6, the 2^i midpoints of 2^i
/// equal steps of [0.1, 1], times 10^(i-6), with both signs; then 0 and 1; ascending. Each
/// value is the exact rational (2^(i+1) + 9(2k+1)) / (20 * 2^i * 10^(6-i)) rounded to float.
inline constexpr std::array<float, 256> make_dynamic_map() {
    std::array<float, 256> t{};
    std::size_t n = 0;
    double p10 = 1e6;  // 10^(6-i), exact in double
    for (int i = 0; i < 7; ++i, p10 /= 10.0) {
        const double steps = double(1 << i);
        for (int k = 0; k < (1 << i); ++k) {
            const double v = (2.0 * steps + 9.0 * double(2 * k + 1)) / (20.0 * steps * p10);
            t[n++] = float(v);
            t[n++] = -float(v);
        }
    }
    t[n++] = 0.0f;
    t[n++] = 1.0f;
    for (std::size_t i = 1; i < t.size(); ++i)  // insertion sort, ascending
        for (std::size_t j = i; j > 0 && t[j - 1] > t[j]; --j) {
            const float x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    return t;
}
}  // namespace detail

/// bitsandbytes' signed 8-bit dynamic map, ascending (254 non-zero values, 0 and 1; no -1).
inline constexpr std::array<float, 256> dynamic_map = detail::make_dynamic_map();

/// Index of the value of `dynamic_map` nearest to x (the first on ties).
inline std::uint8_t dynamic_map_code(float x) noexcept {
    int best = 0;
    float err = std::fabs(x - dynamic_map[0]);
    for (int i = 1; i < 256; ++i)
        if (const float e = std::fabs(x - dynamic_map[std::size_t(i)]); e < err) err = e, best = i;
    return std::uint8_t(best);
}

/// Double-quantized scales: codes[i] for scale i, one absmax per 256 scales, one offset.
struct DoubleQuantScales {
    std::vector<std::uint8_t> codes;
    std::vector<float> absmax2;
    float offset = 0.0f;
    float scale(std::size_t i) const noexcept { return std::fma(dynamic_map[codes[i]], absmax2[i / dq_block], offset); }
};

/// Second quantization of `scales` (all finite). The mean is accumulated in double.
inline DoubleQuantScales double_quantize(std::span<const float> scales) {
    DoubleQuantScales out;
    out.codes.resize(scales.size());
    out.absmax2.resize((scales.size() + dq_block - 1) / dq_block);
    double sum = 0.0;
    for (const float s : scales) sum += double(s);
    out.offset = scales.empty() ? 0.0f : float(sum / double(scales.size()));
    const std::uint8_t zero = dynamic_map_code(0.0f);
    for (std::size_t b = 0; b < out.absmax2.size(); ++b) {
        const std::size_t i0 = b * dq_block, i1 = std::min(scales.size(), i0 + dq_block);
        float a = 0.0f;
        for (std::size_t i = i0; i < i1; ++i) a = std::max(a, std::fabs(scales[i] - out.offset));
        out.absmax2[b] = a;
        const float inv = a > 0.0f ? 1.0f / a : 0.0f;
        for (std::size_t i = i0; i < i1; ++i) out.codes[i] = a > 0.0f ? dynamic_map_code((scales[i] - out.offset) * inv) : zero;
    }
    return out;
}

/// A block of N 4-bit codebook codes with its scale as an 8-bit dynamic-map code.
template <int N>
struct block_codebook_dq {
    std::uint8_t sc;         // code of the block's scale
    std::uint8_t qs[N / 2];  // nibbles, as block_codebook<N>
};
static_assert(sizeof(block_codebook_dq<64>) == 33, "block_codebook_dq<64> is 1 + 32 bytes");

template <int N>
struct block_fields<block_codebook_dq<N>> {
    static constexpr std::size_t weights = N;
    static constexpr const char* noun = "block";
    static constexpr std::array<BlockField, 0> fields{};  // the scale is a code: nothing to check per block
};

/// Rows of double-quantized codebook blocks, as kernels see them.
template <class Block>
struct DqBlockView {
    int rows = 0, cols = 0;
    const Block* blocks = nullptr;
    const float* absmax2 = nullptr;
    float offset = 0.0f;
    [[gnu::always_inline]] int blocks_per_row() const noexcept { return cols / int(block_fields<Block>::weights); }
    [[gnu::always_inline]] std::size_t index(int r, int b) const noexcept { return std::size_t(r) * std::size_t(blocks_per_row()) + std::size_t(b); }
    [[gnu::always_inline]] const Block& block(int r, int b) const noexcept { return blocks[index(r, b)]; }
    /// The block's scale (std::fma: the same float on every backend).
    [[gnu::always_inline]] float scale(int r, int b) const noexcept {
        const std::size_t i = index(r, b);
        return std::fma(dynamic_map[blocks[i].sc], absmax2[i / dq_block], offset);
    }
};

/// The packed format of codebook grid `Grid` in blocks of N with double-quantized scales.
template <class Grid, int Block, const char* Name>
struct DoubleQuantCodebookBlocks {
    static constexpr int N = Block;
    using dq_grid = Grid;
    static_assert(Grid::bits == 4 && N % 2 == 0, "qforge::DoubleQuantCodebookBlocks: 4-bit codebooks in blocks of an even size");
    static_assert(Grid::codebook->double_quant, "qforge::DoubleQuantCodebookBlocks: the grid does not define double quantization");
    using block_type = block_codebook_dq<N>;
    static constexpr int bits = 4;
    static constexpr const Codebook* codebook = Grid::codebook;
    static constexpr FormatInfo info{Name, Name, Storage::blocks, 4, std::nullopt, Grid::codebook, ScaleType::dq8};
    static std::string name() { return Name; }
    static constexpr QuantSpec grid_spec{4, N, ZeroPoint::symmetric, ScaleType::dq8, Grid::codebook};

    struct Packed {
        QuantSpec spec = grid_spec;
        int rows = 0, cols = 0;
        std::vector<block_type> blocks;
        std::vector<float> absmax2;  ///< one per 256 blocks, row-major block order
        float offset = 0.0f;
        /// Every stored byte: blocks, absmax2, offset.
        std::size_t bytes() const noexcept { return blocks.size() * sizeof(block_type) + absmax2.size() * 4 + 4; }
        DqBlockView<block_type> view() const noexcept { return {rows, cols, blocks.data(), absmax2.data(), offset}; }
    };

    /// The float tables stored beside the blocks (the container's extra parts): suffix and count.
    static std::vector<std::pair<std::string, std::size_t>> table_parts(int rows, int cols) {
        const std::size_t blocks = std::size_t(rows) * std::size_t(cols / N);
        return {{".absmax2", (blocks + dq_block - 1) / dq_block}, {".offset", 1}};
    }
    static std::span<const float> table(const Packed& p, std::string_view suffix) {
        if (suffix == ".absmax2") return p.absmax2;
        return {&p.offset, 1};
    }
    /// Sized for the matrix, for a reader to fill.
    static std::span<float> table(Packed& p, std::string_view suffix) {
        if (suffix == ".absmax2") {
            p.absmax2.resize(table_parts(p.rows, p.cols)[0].second);
            return p.absmax2;
        }
        return {&p.offset, 1};
    }

    static std::string unsupported(const QuantSpec& spec, int rows, int cols) {
        return detail::codebook_unsupported(name(), N, spec, grid_spec, rows, cols, "double-quantized");
    }

    /// Why the stored tables cannot be used ("" when they can): sizes, a non-finite or negative
    /// second-level absmax, a non-finite offset.
    static std::string fault(const Packed& p) {
        const std::size_t want = table_parts(p.rows, p.cols)[0].second;
        if (p.absmax2.size() != want)
            return std::to_string(p.absmax2.size()) + " second-level scales, the matrix needs " + std::to_string(want);
        for (std::size_t i = 0; i < p.absmax2.size(); ++i)
            if (!std::isfinite(p.absmax2[i]) || p.absmax2[i] < 0.0f)
                return "second-level block " + std::to_string(i) + " (blocks " + std::to_string(i * dq_block) + "-" +
                       std::to_string(i * dq_block + dq_block - 1) + ") has a bad absmax (" + std::to_string(p.absmax2[i]) + ")";
        if (!std::isfinite(p.offset)) return "the scales' offset is not finite (" + std::to_string(p.offset) + ")";
        return {};
    }

    static Packed pack(const QuantizedMatrix& q) {
        if (auto why = unsupported(q.spec, q.rows, q.cols); !why.empty()) throw InvalidArgument(why);
        const int per_row = q.cols / N;
        std::vector<float> scales(std::size_t(q.rows) * std::size_t(per_row));
        for (int r = 0; r < q.rows; ++r)
            for (int b = 0; b < per_row; ++b) {
                const float s = q.scales[q.group_index(r, b)];
                if (!std::isfinite(s))
                    throw InvalidData(name() + ": row " + std::to_string(r) + ", " + detail::group_text(b, N, q.cols) + " has a non-finite scale");
                scales[std::size_t(r) * std::size_t(per_row) + std::size_t(b)] = s;
            }
        auto dq = double_quantize(scales);
        Packed p;
        p.rows = q.rows;
        p.cols = q.cols;
        p.absmax2 = std::move(dq.absmax2);
        p.offset = dq.offset;
        p.blocks.resize(scales.size());
        for (int r = 0; r < q.rows; ++r)
            for (int b = 0; b < per_row; ++b) {
                const std::size_t i = std::size_t(r) * std::size_t(per_row) + std::size_t(b);
                block_type& blk = p.blocks[i];
                blk.sc = dq.codes[i];
                const std::uint8_t* codes = q.codes.data() + std::size_t(r) * std::size_t(q.cols) + std::size_t(b) * N;
                if (!detail::pack_nibbles(codes, N, blk.qs))
                    throw InvalidData(name() + ": row " + std::to_string(r) + ", " + detail::group_text(b, N, q.cols) + ": a code is out of range");
            }
        return p;
    }

    /// Codes and the scales as stored (after the second quantization).
    static QuantizedMatrix unpack(const Packed& p) {
        QuantizedMatrix q(p.spec, p.rows, p.cols);
        const auto v = p.view();
        const int per_row = p.cols / N;
        for (int r = 0; r < p.rows; ++r)
            for (int b = 0; b < per_row; ++b) {
                q.scales[q.group_index(r, b)] = v.scale(r, b);
                detail::unpack_nibbles(v.block(r, b).qs, N, q.codes.data() + std::size_t(r) * std::size_t(p.cols) + std::size_t(b) * N);
            }
        return q;
    }
};

// ---- the format (one row; the list of all formats is formats/registry.hpp) ----
inline constexpr char nf4_dq_name[] = "nf4_dq";
/// NF4 with QLoRA's double quantization: blocks of 64, 8-bit scale codes, 4.127 bits per weight.
struct NF4_DQ : DoubleQuantCodebookBlocks<Nf4, 64, nf4_dq_name> {};

}  // namespace qforge
