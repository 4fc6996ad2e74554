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

}  // namespace qforge
