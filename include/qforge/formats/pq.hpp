#pragma once
/// @file
/// Product quantization (PQ) of a weight matrix: each row is cut into sub-vectors of d
/// consecutive input columns, and each sub-vector is stored as the index of one of n centroids
/// of a codebook shared by a block of g sub-vectors (Jégou, Douze & Schmid, TPAMI 2011; for LLM
/// weights with GPTQ's error feedback, van Baalen et al., "GPTVQ", 2024).
///
/// Which sub-vectors share a codebook: a block of 64 rows × (g·d/64) columns (`PqSpec::block_rows`,
/// `block_cols`): 64 rows × 32 columns for (d, n, g) = (2, 64, 1024). Rows of 64 divide every
/// matrix of the target models (SmolLM2's 192, 576 and 1536 rows; Llama's multiples of 128),
/// and a block a few dozen columns wide is complete as soon as GPTQ's column loop has passed
/// it, so GPTQ-PQ fits each codebook from the error-fed weights when its loop reaches the
/// block's first column, as scalar GPTQ fits a group's grid (quantizers/gptq_pq.hpp). A block
/// holding whole columns of 1024 rows instead would need 1024-row matrices (SmolLM2 has none).
/// Edge blocks (rows or columns not a multiple of the block) hold fewer sub-vectors and still a
/// whole codebook; the bits per weight count them.
///
/// Stored bytes, in this order (little-endian), which is what `stored_bytes` counts:
/// 1. codes: rows × (cols/d) indices of ceil(log2 n) bits each, row-major, as one bitstream with
///    the first code in the lowest bits of byte 0 (`pack_pq_codes`), padded to a whole byte;
/// 2. codebooks, block-row-major (block (i, j) at i·block_col_count + j), each n × d values:
///    fp16 (`centroid_bits` 16), or int8 (`centroid_bits` 8) after all the int8 codebooks one
///    fp16 scale per codebook, centroid = scale · int8.
/// Bits per weight = 8 · stored bytes / (rows · cols); (2, 64, 1024) with fp16 centroids is
/// 3 + 16·2·64/2048 = 4.0 for whole blocks, 3.5 with int8 (+ 16/2048 for the scales).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/core/half.hpp"
#include "qforge/core/spec.hpp"

namespace qforge {

/// A PQ-quantized matrix, unpacked: one code per sub-vector and the stored centroid values.
struct PqMatrix {
    PqSpec spec{};
    int rows = 0;
    int cols = 0;
    std::vector<std::uint16_t> codes;        ///< rows x (cols / d), the centroid of each sub-vector
    std::vector<float> centroids;            ///< codebooks x n x d: the stored values (fp16-exact, or scale * int8)
    std::vector<std::int8_t> centroid_codes; ///< codebooks x n x d (int8 centroids only)
    std::vector<float> centroid_scales;      ///< per codebook, fp16-exact (int8 centroids only)

    PqMatrix() = default;
    /// Throws InvalidArgument for a bad spec or cols not a multiple of d.
    PqMatrix(const PqSpec& s, int r, int c) : spec(s), rows(r), cols(c) {
        s.validate();
        if (r < 1 || c < 1 || c % s.d != 0)
            throw InvalidArgument("PQ: a " + std::to_string(r) + " x " + std::to_string(c) + " matrix is not rows of whole sub-vectors of " + std::to_string(s.d) + " columns");
        codes.assign(std::size_t(r) * std::size_t(c / s.d), 0);
        centroids.assign(std::size_t(codebooks()) * std::size_t(s.n) * std::size_t(s.d), 0.0f);
        if (s.centroid_bits == 8) {
            centroid_codes.assign(centroids.size(), 0);
            centroid_scales.assign(std::size_t(codebooks()), 0.0f);
        }
    }
    int block_row_count() const noexcept { return (rows + PqSpec::block_rows - 1) / PqSpec::block_rows; }
    int block_col_count() const noexcept { return (cols + spec.block_cols() - 1) / spec.block_cols(); }
    int codebooks() const noexcept { return block_row_count() * block_col_count(); }
    int subvectors_per_row() const noexcept { return cols / spec.d; }
    /// The codebook of the block holding (row, col).
    int codebook_of(int row, int col) const noexcept { return (row / PqSpec::block_rows) * block_col_count() + col / spec.block_cols(); }
    const float* codebook(int b) const noexcept { return centroids.data() + std::size_t(b) * std::size_t(spec.n) * std::size_t(spec.d); }

    /// The reference meaning of the stored codes: weight (row, col).
    float dequantize(int row, int col) const noexcept {
        const std::size_t code = codes[std::size_t(row) * std::size_t(subvectors_per_row()) + std::size_t(col / spec.d)];
        return codebook(codebook_of(row, col))[code * std::size_t(spec.d) + std::size_t(col % spec.d)];
    }
    /// Every weight into `out` (rows x cols, row-major, `out` holding rows·cols floats), row by
    /// row and sub-vector by sub-vector: d consecutive values copied from one centroid. The same
    /// values as dequantize(row, col); what evaluation and a PQ batch product decode through.
    void dequantize_into(float* out) const noexcept {
        const std::size_t D = std::size_t(spec.d), per_row = std::size_t(subvectors_per_row()), C = std::size_t(cols);
        const std::size_t bc = std::size_t(spec.block_cols()) / D;  // sub-vectors per codebook block, per row
        for (std::size_t r = 0; r < std::size_t(rows); ++r) {
            const std::uint16_t* code = codes.data() + r * per_row;
            float* o = out + r * C;
            const std::size_t book_row = (r / std::size_t(PqSpec::block_rows)) * std::size_t(block_col_count());
            for (std::size_t v = 0; v < per_row; ++v) {
                const float* c = codebook(int(book_row + v / bc)) + std::size_t(code[v]) * D;
                std::copy_n(c, D, o + v * D);
            }
        }
    }
    /// rows x cols, row-major.
    std::vector<float> dequantize() const {
        std::vector<float> out(std::size_t(rows) * std::size_t(cols));
        dequantize_into(out.data());
        return out;
    }
    /// Bytes of the packed form (see the file comment).
    std::size_t stored_bytes() const noexcept {
        const std::size_t code_bits = codes.size() * std::size_t(spec.code_bits());
        const std::size_t book = std::size_t(codebooks()) * std::size_t(spec.n) * std::size_t(spec.d);
        return (code_bits + 7) / 8 + (spec.centroid_bits == 16 ? 2 * book : book + 2 * std::size_t(codebooks()));
    }
    double bits_per_weight() const noexcept { return 8.0 * double(stored_bytes()) / (double(rows) * double(cols)); }
    /// Stored bytes, as every linear weight counts them (llama::Linear::bytes).
    std::size_t bytes() const noexcept { return stored_bytes(); }

    /// Rows [r0, r1) with their codebooks: r0 a multiple of 64 and r1 too or the last row, so
    /// that the codebook blocks stay whole (how GPTQ's stacked q/k/v are cut apart). Throws
    /// InvalidArgument otherwise.
    PqMatrix row_range(int r0, int r1) const {
        constexpr int B = PqSpec::block_rows;
        if (r0 < 0 || r1 > rows || r0 >= r1 || r0 % B != 0 || (r1 % B != 0 && r1 != rows))
            throw InvalidArgument("PQ: rows [" + std::to_string(r0) + ", " + std::to_string(r1) + ") of " + std::to_string(rows) +
                                  " do not cut along the 64-row codebook blocks");
        PqMatrix out(spec, r1 - r0, cols);
        const std::size_t per_row = std::size_t(subvectors_per_row());
        std::copy(codes.begin() + std::ptrdiff_t(std::size_t(r0) * per_row), codes.begin() + std::ptrdiff_t(std::size_t(r1) * per_row), out.codes.begin());
        const std::size_t books = std::size_t(block_col_count()), m = std::size_t(spec.n) * std::size_t(spec.d);
        const std::size_t b0 = std::size_t(r0 / B) * books;
        std::copy_n(centroids.begin() + std::ptrdiff_t(b0 * m), out.centroids.size(), out.centroids.begin());
        if (spec.centroid_bits == 8) {
            std::copy_n(centroid_codes.begin() + std::ptrdiff_t(b0 * m), out.centroid_codes.size(), out.centroid_codes.begin());
            std::copy_n(centroid_scales.begin() + std::ptrdiff_t(b0), out.centroid_scales.size(), out.centroid_scales.begin());
        }
        return out;
    }

    /// Sets codebook b's stored values from `values` (n x d): fp16-rounded, or int8 with an fp16
    /// scale max|v| / 127 (0 for an all-zero codebook). Throws InvalidData for a value that fp16
    /// cannot hold.
    void set_codebook(int b, const float* values) {
        const std::size_t m = std::size_t(spec.n) * std::size_t(spec.d), at = std::size_t(b) * m;
        if (spec.centroid_bits == 16) {
            for (std::size_t i = 0; i < m; ++i) {
                const float h = round_to_half(values[i]);
                if (!std::isfinite(h)) throw InvalidData("PQ: a centroid (" + std::to_string(values[i]) + ") does not fit fp16");
                centroids[at + i] = h;
            }
            return;
        }
        float amax = 0.0f;
        for (std::size_t i = 0; i < m; ++i) amax = std::max(amax, std::fabs(values[i]));
        const float scale = round_to_half(amax / 127.0f);
        if (!std::isfinite(scale)) throw InvalidData("PQ: a codebook's int8 scale (" + std::to_string(amax / 127.0f) + ") does not fit fp16");
        centroid_scales[std::size_t(b)] = scale;
        for (std::size_t i = 0; i < m; ++i) {
            const float q = scale > 0.0f ? std::nearbyint(values[i] / scale) : 0.0f;
            const auto c = std::int8_t(std::max(-127.0f, std::min(127.0f, q)));
            centroid_codes[at + i] = c;
            centroids[at + i] = scale * float(c);
        }
    }
};

/// The codes as one bitstream of `bits`-bit fields, first code in the lowest bits of byte 0.
inline std::vector<std::uint8_t> pack_pq_codes(const std::vector<std::uint16_t>& codes, int bits) {
    std::vector<std::uint8_t> out((codes.size() * std::size_t(bits) + 7) / 8, 0);
    std::size_t at = 0;  // bit position
    for (const std::uint16_t c : codes) {
        for (int b = 0; b < bits; ++b, ++at)
            if ((c >> b) & 1u) out[at / 8] |= std::uint8_t(1u << (at % 8));
    }
    return out;
}

/// The inverse of pack_pq_codes: `count` codes of `bits` bits. Throws InvalidData when `bytes`
/// is not the packed size of that many codes.
inline std::vector<std::uint16_t> unpack_pq_codes(const std::vector<std::uint8_t>& bytes, std::size_t count, int bits) {
    if (bytes.size() != (count * std::size_t(bits) + 7) / 8)
        throw InvalidData("PQ codes: " + std::to_string(bytes.size()) + " bytes are not " + std::to_string(count) + " codes of " + std::to_string(bits) + " bits");
    std::vector<std::uint16_t> out(count, 0);
    std::size_t at = 0;
    for (auto& c : out)
        for (int b = 0; b < bits; ++b, ++at)
            if ((bytes[at / 8] >> (at % 8)) & 1u) c = std::uint16_t(c | (1u << b));
    return out;
}

}  // namespace qforge
