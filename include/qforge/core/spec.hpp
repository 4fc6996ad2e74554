#pragma once
/// @file
/// The quantization grid: how many bits, how weights are grouped, and how zero is represented.
///
/// Conventions (every quantizer, format and kernel follows them):
/// - A weight matrix has rows = output features and columns = input features. Groups run along a
///   row: group g of a row covers columns [g*G, min((g+1)*G, cols)). The last group of a row may be
///   shorter. `group_size == 0` (per-channel) or `group_size >= cols` means one group per row.
/// - Codes are stored unsigned, 0 .. 2^b-1, and dequantize as
///   - `ZeroPoint::symmetric`: w = s * (q - 2^(b-1)). The signed code c = q - 2^(b-1) spans
///     -2^(b-1) .. 2^(b-1)-1. The scale is s = m / -2^(b-1) where m is the group's weight of
///     largest magnitude (the first one on ties), so m is represented exactly and every one of the
///     2^b levels is usable (the rule of GGUF's Q4_0); s carries m's sign, so it may be negative.
///   - `ZeroPoint::integer` (GPTQ/AWQ style asymmetric): w = s * (q - z) with an integer zero
///     z in 0 .. 2^b-1. The range is [min(w_min, 0), max(w_max, 0)] so 0 is exactly representable,
///     s = range / (2^b - 1), z = round(-lo / s).
///   - `ZeroPoint::float_min` (GGUF Q4_1 style): w = s * q + m with a float minimum m = w_min and
///     s = (w_max - w_min) / (2^b - 1); evaluated as one fused multiply-add.
/// - Codes are computed as clamp(round_half_even(w / s) + offset) against the *stored* scale: a
///   scale kept as fp16 is rounded to fp16 first, so packing to fp16 is lossless.
/// - A group whose range is 0 (all zeros, or all equal under float_min) gets s = 0 and dequantizes
///   to exactly its value (0, or m).
/// - Codebook grids (`codebook` set: NF4, the IQ4_NL grid): w = s * levels[q] with 2^b levels
///   from a fixed table (grids/). The scale is s = max|w| / max|level| (`absmax`, QLoRA's NF4) or
///   s = m / levels[anchor] with m the group's weight of largest magnitude and the anchor the
///   level of largest magnitude (`signed_extreme`, ggml's IQ4_NL: m lands exactly on a level, s
///   may be negative); q is the level nearest w / s (the lower one on ties). `zero` is symmetric.
/// - Bits per weight count everything a format stores: codes, scales, zeros, block headers.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "qforge/core/error.hpp"

namespace qforge {

/// How the zero of the grid is represented.
enum class ZeroPoint : std::uint8_t { symmetric, integer, float_min };

/// How scales (and float minimums) are stored.
/// - f16, f32: each scale as a half or single float.
/// - dq8: QLoRA's double quantization (Dettmers et al., 2023, section 3): the quantizer keeps
///   fp32 absmax scales; packing subtracts their mean (one fp32 offset per matrix) and quantizes
///   them to 8-bit codes of the signed dynamic map, in blocks of 256 scales with an fp32 absmax
///   each (formats/double_quant.hpp). Only for codebook grids whose `double_quant` is set (NF4).
enum class ScaleType : std::uint8_t { f16, f32, dq8 };

/// A codebook grid: the value each code stands for, as a fixed table (one file per grid in
/// grids/, listed in grids/registry.hpp). Kernels multiply integer levels with 8-bit
/// activations: `kernel_levels[q] * kernel_unit` is levels[q] exactly for an integer table
/// (IQ4_NL) and rounded to 1/127 for a fractional one (NF4); dequantization always uses `levels`.
struct Codebook {
    enum class ScaleRule : std::uint8_t { absmax, signed_extreme };
    std::string_view name;                   ///< in scheme text ("nf4", "iq4nl")
    int bits = 4;
    std::span<const float> levels;           ///< 2^bits values, ascending
    std::span<const std::int8_t> kernel_levels;  ///< 2^bits integers for the integer kernels
    float kernel_unit = 1.0f;                ///< the value of one kernel level step
    ScaleRule scale_rule = ScaleRule::absmax;
    int default_group = 32;                  ///< the group when the scheme text names none (the format's block)
    bool double_quant = false;               ///< ScaleType::dq8 is defined for it (QLoRA: NF4) and a format stores it
    /// Index of the level of largest magnitude (the first on ties). The levels ascend (checked at
    /// compile time for every codebook in grids/registry.hpp), so it is one of the two ends: a
    /// scan of all of them, once per group and shrink, was 21% of a profile of `qforge quantize
    /// --scheme awq:iq4nlg32` (docs/awq.md).
    constexpr int anchor() const noexcept {
        const float lo = levels.front(), hi = levels.back();
        return (lo < 0 ? -lo : lo) >= (hi < 0 ? -hi : hi) ? 0 : int(levels.size()) - 1;
    }
};

/// A two-level grid (ggml's K-quants): groups ("sub-blocks") of `group_size` weights gather into
/// super-blocks of `weights`; each group's scale is d * sc and its minimum -(dmin * m), with d and
/// dmin fp16 per super-block and sc, m small integers per group. The scales and minimums a
/// QuantizedMatrix holds are those products (exact in float), and `QuantizedMatrix::super`
/// holds d and dmin. Affine grids only (symmetric or float minimum).
struct SuperBlockGrid {
    std::string_view name;       ///< the GGUF type ("q4_k")
    int weights = 256;           ///< per super-block
    int scale_bits = 6;          ///< bits of each group's scale code sc
    bool signed_scales = false;  ///< sc is signed (two's complement int8, or offset by 2^(bits-1))
    int min_bits = 0;            ///< bits of each group's minimum code m (float-minimum grids)
    constexpr int max_scale_code() const noexcept { return signed_scales ? (1 << (scale_bits - 1)) - 1 : (1 << scale_bits) - 1; }
    constexpr int min_scale_code() const noexcept { return signed_scales ? -(1 << (scale_bits - 1)) : 0; }
    constexpr int max_min_code() const noexcept { return (1 << min_bits) - 1; }
};

/// A runtime description of one quantization grid. Compile-time schemes produce one of these.
struct QuantSpec {
    int bits = 4;
    int group_size = 0;  ///< 0: per-channel (one group per row)
    ZeroPoint zero = ZeroPoint::integer;
    ScaleType scale_type = ScaleType::f16;
    const Codebook* codebook = nullptr;  ///< a codebook grid (levels from a table), or null: affine
    /// The GGUF block type whose own grid this is ("q4_0", "q4_1", "q8_0": a format's `stored_as`),
    /// so the weights pack into exactly that block format; empty: the registry's default packing
    /// for the grid (dense rows). Scheme text names such grids directly (`rtn:q4_0`).
    std::string_view block{};
    const SuperBlockGrid* super = nullptr;  ///< a two-level grid (K-quants; `block` names its type), or null

    /// The largest group size accepted; larger values would only mean "per-channel".
    static constexpr int max_group_size = 1 << 24;

    constexpr int max_code() const noexcept { return (1 << bits) - 1; }
    /// The code that stands for 0 on the symmetric grid.
    constexpr int symmetric_zero() const noexcept { return 1 << (bits - 1); }
    constexpr bool per_channel() const noexcept { return group_size == 0; }

    /// Length of every group but possibly the last, for rows of `cols` columns.
    constexpr int group_length(int cols) const noexcept {
        return (group_size == 0 || group_size >= cols) ? cols : group_size;
    }
    constexpr int groups_per_row(int cols) const noexcept {
        const int g = group_length(cols);
        return g == 0 ? 0 : (cols + g - 1) / g;
    }

    /// Throws InvalidArgument naming the problem when the spec cannot be used.
    void validate() const {
        if (codebook && (bits != codebook->bits || zero != ZeroPoint::symmetric || int(codebook->levels.size()) != (1 << bits)))
            throw InvalidArgument("the codebook grid " + std::string(codebook->name) + " has " + std::to_string(codebook->bits) +
                                  "-bit codes and no zero point");
        if (scale_type == ScaleType::dq8 && !(codebook && codebook->double_quant))
            throw InvalidArgument("double quantization of the scales (dq) is defined for the nf4 grid only (QLoRA)");
        if (codebook && group_size == 0)
            throw InvalidArgument("the codebook grid " + std::string(codebook->name) + " is per group: give a group size");
        if (bits != 2 && bits != 3 && bits != 4 && bits != 8 && !(!block.empty() && (bits == 5 || bits == 6)))
            throw InvalidArgument("unsupported bit width " + std::to_string(bits) +
                                  " (supported: 2, 3, 4, 8)");
        if (super && (codebook || zero == ZeroPoint::integer || group_size <= 0 || super->weights % group_size != 0))
            throw InvalidArgument("the two-level grid " + std::string(super->name) + " needs an affine grid with groups dividing its super-block");
        if (group_size < 0 || group_size > max_group_size)
            throw InvalidArgument("group size " + std::to_string(group_size) +
                                  " is out of range (0 for per-channel, or 1.." +
                                  std::to_string(max_group_size) + ")");
    }

    friend constexpr bool operator==(const QuantSpec&, const QuantSpec&) = default;
};

/// Product quantization's parameters (d, n, g) and the centroids' storage: the grid of a PQ
/// scheme (`gptq:pq2n64g1024`); the layout and its bytes are formats/pq.hpp's.
struct PqSpec {
    int d = 2;               ///< sub-vector length: consecutive input columns
    int n = 64;              ///< centroids per codebook
    int g = 1024;            ///< sub-vectors sharing one codebook
    int centroid_bits = 16;  ///< 16: fp16 centroids; 8: int8 with one fp16 scale per codebook
    static constexpr int block_rows = 64;

    constexpr int block_cols() const noexcept { return g * d / block_rows; }
    /// Bits of one code: ceil(log2 n).
    constexpr int code_bits() const noexcept {
        int b = 0;
        while ((1 << b) < n) ++b;
        return b;
    }
    /// Throws InvalidArgument saying what is out of range.
    void validate() const {
        if (d < 1 || d > 16) throw InvalidArgument("PQ: the sub-vector length d must be 1..16, is " + std::to_string(d));
        if (n < 2 || n > 65536) throw InvalidArgument("PQ: the codebook size n must be 2..65536, is " + std::to_string(n));
        if (g < block_rows || g % block_rows != 0)
            throw InvalidArgument("PQ: g = " + std::to_string(g) + " sub-vectors per codebook is not a block of 64 rows times a whole number of "
                                  "sub-vectors per row (g must be a positive multiple of 64)");
        if (centroid_bits != 16 && centroid_bits != 8) throw InvalidArgument("PQ: centroids are stored in 16 (fp16) or 8 (int8) bits, not " + std::to_string(centroid_bits));
    }
    friend constexpr bool operator==(const PqSpec&, const PqSpec&) = default;
};

inline const char* to_string(ZeroPoint z) {
    switch (z) {
        case ZeroPoint::symmetric: return "symmetric";
        case ZeroPoint::integer: return "asymmetric (integer zero)";
        case ZeroPoint::float_min: return "asymmetric (float minimum)";
    }
    return "?";
}

}  // namespace qforge
