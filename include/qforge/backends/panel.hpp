#pragma once
/// @file
/// A row panel: 16 consecutive weight rows of any packed format, decoded and interleaved so that
/// one vector of 16 int32 lanes holds the dot products of 16 rows with one activation. The tiled
/// GEMM (Kernels::gemm_tiled_rows) builds one panel at a time in a thread's buffer and runs every
/// activation of the product over it, so each weight is decoded once per product instead of once
/// per few activations, and no horizontal reduction is left: lane i is row i from the integer dot
/// to the stored output. The idea is llama.cpp's repacked Q4_0 GEMM (block_q4_0x8), built here on
/// the fly from the stored format rather than kept as a second copy of the weights.
///
/// Byte layout of `codes`: the row's sub-blocks (activation.hpp) in order; each sub-block of len
/// codes takes ceil(len / 32) chunks of 32 positions; a chunk is 8 steps of 64 bytes, and step j
/// holds, for lane (row) i = 0..15, the kernel codes (unsigned bytes, natural order) at positions
/// 4j .. 4j + 3 of the chunk in bytes 4i .. 4i + 3. Positions past a sub-block's length and lanes
/// past the panel's valid rows hold 0 (the activation's slots there are 0 as well).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "qforge/backends/activation.hpp"
#include "qforge/core/half.hpp"

namespace qforge {

inline constexpr int panel_rows = 16;
/// Positions per chunk and bytes per chunk of a panel's codes.
inline constexpr int panel_chunk = 32;
inline constexpr std::size_t panel_chunk_bytes = std::size_t(panel_chunk) * panel_rows;
/// Bytes of one chunk of 32 positions in a PanelSet's codes of `code_bits` bits (4, 5, 6 or 8).
inline constexpr std::size_t panel_chunk_bytes_of(int code_bits) noexcept { return std::size_t(panel_chunk) * panel_rows * std::size_t(code_bits) / 8; }
static_assert(panel_chunk_bytes_of(8) == panel_chunk_bytes && panel_chunk_bytes_of(5) == 320, "a chunk: 4 nibble steps of 64 bytes, then 64 bytes per bit plane");

/// Positions in sub-block k of group g for activations cut as `a` is.
[[gnu::always_inline]] inline int panel_sub_length(const QuantizedActivation& a, int g, int k) noexcept {
    const int glen = a.group_length < a.cols - g * a.group_length ? a.group_length : a.cols - g * a.group_length;
    return glen - k * act_sub_block < act_sub_block ? glen - k * act_sub_block : act_sub_block;
}
/// Chunks of 32 positions in sub-block k of group g for activations cut as `a` is.
[[gnu::always_inline]] inline int panel_chunks(const QuantizedActivation& a, int g, int k) noexcept {
    return (panel_sub_length(a, g, k) + panel_chunk - 1) / panel_chunk;
}
/// Whether a kept panel set (PanelSet) stores sub-block k of group g as half a chunk: a
/// sub-block of at most 16 positions (every group of Q2_K, Q3_K and Q6_K) would be half padding
/// in a whole one.
[[gnu::always_inline]] inline bool kept_half_chunk(const QuantizedActivation& a, int g, int k) noexcept {
    return panel_sub_length(a, g, k) <= panel_chunk / 2;
}

/// 16 rows ready for the tiled GEMM. Per-group arrays are [group][16] (lane = row).
struct RowPanel {
    const std::uint8_t* codes = nullptr;  ///< layout above, 64-byte aligned
    const float* scale = nullptr;         ///< the recipe's s_g per lane
    const float* min = nullptr;           ///< m_g per lane (ZeroPoint::float_min only)
    const std::int32_t* zero = nullptr;   ///< z_g per lane (ZeroPoint::integer only)
    int zero_code = 0;                    ///< z of a symmetric grid (all lanes)
    int valid = panel_rows;               ///< rows of the 16 that exist (outputs stored)
};

/// The activations' per-sub-block terms of the recipe, gathered once per product so a panel
/// kernel reads each as one broadcast memory operand: tile τ holds activations 8τ .. 8τ + 7 (the
/// last activation repeated past n), entry [(τ · subs + s) · 8 + t] for sub-block s.
struct PanelTerms {
    static constexpr int tokens = 8;
    int subs = 0, groups = 0;
    std::vector<std::int32_t> zsum;  ///< z · sx_s on a symmetric grid (z = zero_code), else sx_s
    std::vector<float> dx;           ///< dx_s
    std::vector<float> gsum;         ///< xsum_g, entry [(τ · groups + g) · 8 + t]

    /// The terms of activations t0, t0 + 1, ... (t0 need not start a tile of 8): entry
    /// [s * 8 + t] of `zsum` and `dx`, [g * 8 + t] of `gsum`, for activation t0 + t.
    struct Tile {
        const std::int32_t* zsum;
        const float* dx;
        const float* gsum;
    };
    Tile tile(int t0) const noexcept {
        const std::size_t at = std::size_t(t0 / tokens) * tokens, in = std::size_t(t0 % tokens);
        return {zsum.data() + at * std::size_t(subs) + in, dx.data() + at * std::size_t(subs) + in,
                gsum.data() + at * std::size_t(groups) + in};
    }

    PanelTerms() = default;
    PanelTerms(const QuantizedActivation* xs, int n, int zero_code, bool symmetric)
        : subs(int(xs[0].scale.size())), groups(xs[0].groups) {
        const int tiles = (n + tokens - 1) / tokens;
        zsum.resize(std::size_t(tiles) * std::size_t(subs) * tokens);
        dx.resize(zsum.size());
        gsum.resize(std::size_t(tiles) * std::size_t(groups) * tokens);
        for (int tile = 0; tile < tiles; ++tile)
            for (int t = 0; t < tokens; ++t) {
                const QuantizedActivation& a = xs[tile * tokens + t < n ? tile * tokens + t : n - 1];
                for (int s = 0; s < subs; ++s) {
                    const std::size_t at = (std::size_t(tile) * std::size_t(subs) + std::size_t(s)) * tokens + std::size_t(t);
                    zsum[at] = symmetric ? zero_code * a.sum[std::size_t(s)] : a.sum[std::size_t(s)];
                    dx[at] = a.scale[std::size_t(s)];
                }
                for (int g = 0; g < groups; ++g)
                    gsum[(std::size_t(tile) * std::size_t(groups) + std::size_t(g)) * tokens + std::size_t(t)] = a.group_sum[std::size_t(g)];
            }
    }
};

/// Every row panel of one matrix, built once and kept beside the weights for repeated
/// single-activation products (a decode step's GEMV): lane i of a vector is row i, so the GEMV
/// runs no horizontal sum and decodes nothing but nibbles and bit planes. llama.cpp keeps its
/// Q4_0 weights repacked the same way (block_q4_0x8) for its CPU GEMV; qforge keeps the stored
/// format as well (it is what is saved, dequantized and multiplied for prompts) and builds this
/// from it (CpuBackend::prepare). Outputs are those of the row kernels, bit for bit: the same
/// recipe (activation.hpp), lane by lane.
///
/// Codes are kept as narrow as the grid allows (`code_bits`): a kernel code c is stored as
/// c - `code_offset`, and a symmetric grid's `zero_code` is the kernel's minus the same offset,
/// so every integer dot minus zero x sum is unchanged. Q5_0's kernel codes 112..143 are kept as
/// 0..31 in 5 bits, Q6_K's 96..159 as 0..63 in 6, Q3_K's 124..131 as 0..7 in a nibble: a decode
/// step reads 5/8, 6/8 or 4/8 of the kernel form's one byte per weight.
///
/// Byte layout, panel after panel (`code_bytes` each, 64-byte aligned), sub-blocks and chunks of
/// 32 positions in order as in RowPanel; a chunk takes 64 x code_bits bytes:
///   - bytes (code_bits 8): RowPanel's layout, 8 steps of 64 bytes per chunk;
///   - nibbles (code_bits 4, 5 or 6): 4 steps of 64 bytes; step j, lane i, byte b holds the low
///     4 bits of position 8j + b in its low nibble and of 8j + 4 + b in its high one;
///   - bit planes (code_bits 5 or 6), after the nibbles: plane q (bit 4 + q of the codes) is 8
///     little-endian 64-bit masks, mask s at byte 256 + 64q + 8s; its bit 4i + b is bit 4 + q of
///     lane i's code at position 4s + b (the byte a vector of step s holds it in);
///   - a sub-block of at most 16 positions (kept_half_chunk) takes half a chunk: the first half
///     of the steps (bytes: 4; nibbles: 2, then per plane 4 masks, at 128 + 32q + 8s).
/// Per-lane terms are [panel][group][16]: `scale` (and `min` for ZeroPoint::float_min) as IEEE
/// half when every one of the matrix's converts exactly (`half`: GGUF's fp16 d and m), else
/// float; `zero` as int32 (ZeroPoint::integer). Lanes past the last row hold zero codes and
/// terms; their outputs are never stored.
struct PanelSet {
    int rows = 0, cols = 0;
    int group_length = 0, groups = 0;
    int code_bits = 8;                  ///< 4, 5, 6 or 8 (layout above)
    int code_offset = 0;                ///< subtracted from each kernel code before it is kept
    bool half = false;
    ZeroPoint zero_kind = ZeroPoint::symmetric;
    int zero_code = 0;                  ///< z of a symmetric grid, minus code_offset
    std::size_t code_bytes = 0;         ///< per panel
    std::unique_ptr<std::uint8_t[]> storage;
    std::uint8_t* codes = nullptr;      ///< panels() x code_bytes, 64-byte aligned
    std::vector<std::uint8_t> scale;    ///< panels() x groups x 16 halfs or floats
    std::vector<std::uint8_t> min;      ///< same, ZeroPoint::float_min only
    std::vector<std::int32_t> zero;     ///< panels() x groups x 16, ZeroPoint::integer only

    int panels() const noexcept { return (rows + panel_rows - 1) / panel_rows; }
    /// Bytes held (codes and terms), for memory reports.
    std::size_t bytes() const noexcept {
        return std::size_t(panels()) * code_bytes + scale.size() + min.size() + zero.size() * sizeof(std::int32_t);
    }
    const std::uint8_t* panel_codes(int p) const noexcept { return codes + std::size_t(p) * code_bytes; }
    std::size_t term_bytes() const noexcept { return half ? 2 : 4; }
    /// Entry (panel p, group g, lane 0) of a per-lane term array.
    const std::uint8_t* terms(const std::vector<std::uint8_t>& t, int p, int g) const noexcept {
        return t.data() + (std::size_t(p) * std::size_t(groups) + std::size_t(g)) * panel_rows * term_bytes();
    }
    float term(const std::vector<std::uint8_t>& t, int p, int g, int lane) const noexcept {
        const std::uint8_t* at = terms(t, p, g) + std::size_t(lane) * term_bytes();
        if (half) {
            std::uint16_t h;
            std::memcpy(&h, at, 2);
            return half_to_float(h);
        }
        float f;
        std::memcpy(&f, at, 4);
        return f;
    }
    const std::int32_t* zeros(int p, int g) const noexcept {
        return zero.data() + (std::size_t(p) * std::size_t(groups) + std::size_t(g)) * panel_rows;
    }
    /// Bytes of one kept panel's codes for a matrix whose activations are cut as `cut` is.
    static std::size_t code_bytes_for(const QuantizedActivation& cut, int code_bits) noexcept {
        std::size_t bytes = 0;
        for (int g = 0; g < cut.groups; ++g)
            for (int k = 0; k < cut.sub_blocks_in_group(g); ++k)
                bytes += kept_half_chunk(cut, g, k) ? panel_chunk_bytes_of(code_bits) / 2
                                                    : std::size_t(panel_chunks(cut, g, k)) * panel_chunk_bytes_of(code_bits);
        return bytes;
    }
};

/// After every panel is built with float terms: stores them as halfs when each converts exactly
/// (bit for bit, so the kernels' half-to-float conversion gives them back), halving their bytes.
inline void compact_panel_terms(PanelSet& s) {
    if (s.half) return;
    const auto exact = [](const std::vector<std::uint8_t>& t) {
        for (std::size_t i = 0; i < t.size(); i += 4) {
            float f;
            std::memcpy(&f, t.data() + i, 4);
            const float back = half_to_float(float_to_half(f));
            if (std::memcmp(&back, &f, 4) != 0) return false;
        }
        return true;
    };
    if (!exact(s.scale) || !exact(s.min)) return;
    const auto shrink = [](std::vector<std::uint8_t>& t) {
        std::vector<std::uint8_t> h(t.size() / 2);
        for (std::size_t i = 0; i < t.size() / 4; ++i) {
            float f;
            std::memcpy(&f, t.data() + 4 * i, 4);
            const std::uint16_t v = float_to_half(f);
            std::memcpy(h.data() + 2 * i, &v, 2);
        }
        t = std::move(h);
    };
    shrink(s.scale);
    shrink(s.min);
    s.half = true;
}


/// An activation's cut (groups, sub-blocks) for a matrix of `cols` columns and groups of
/// `group_length`, without its values: what a PanelSet's layout depends on.
inline QuantizedActivation activation_cut(int cols, int group_length) noexcept {
    QuantizedActivation a;
    a.cols = cols;
    a.group_length = group_length;
    a.groups = (cols + group_length - 1) / group_length;
    a.subs_per_group = (group_length + act_sub_block - 1) / act_sub_block;
    return a;
}

}  // namespace qforge
