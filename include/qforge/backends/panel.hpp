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
#include <vector>

#include "qforge/backends/activation.hpp"

namespace qforge {

inline constexpr int panel_rows = 16;
/// Positions per chunk and bytes per chunk of a panel's codes.
inline constexpr int panel_chunk = 32;
inline constexpr std::size_t panel_chunk_bytes = std::size_t(panel_chunk) * panel_rows;

/// Chunks of 32 positions in sub-block k of group g for activations cut as `a` is.
[[gnu::always_inline]] inline int panel_chunks(const QuantizedActivation& a, int g, int k) noexcept {
    const int glen = a.group_length < a.cols - g * a.group_length ? a.group_length : a.cols - g * a.group_length;
    const int len = glen - k * act_sub_block < act_sub_block ? glen - k * act_sub_block : act_sub_block;
    return (len + panel_chunk - 1) / panel_chunk;
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

}  // namespace qforge
