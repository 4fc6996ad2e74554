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
#include <algorithm>
#include <bit>
#include <cmath>
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
/// half when every one of the matrix's converts exactly (`half`: GGUF's fp16 d and m); else, when
/// each is exactly a half times a small integer shared by `span` consecutive groups (`span` > 0:
/// the K-quants' d·sc and -(dmin·m), one d per 256 weights), as int8 multipliers [panel][group][16]
/// in `scale`/`min` and half bases [panel][group / span][16] in `scale_base`/`min_base`, the
/// float product of the two being the term bit for bit; else float. `zero` as int32
/// (ZeroPoint::integer). Lanes past the last row hold zero codes and terms; their outputs are
/// never stored.
struct PanelSet {
    int rows = 0, cols = 0;
    int group_length = 0, groups = 0;
    int code_bits = 8;                  ///< 4, 5, 6 or 8 (layout above)
    int code_offset = 0;                ///< subtracted from each kernel code before it is kept
    bool half = false;
    int span = 0;                       ///< groups per half base of factored terms; 0: not factored
    ZeroPoint zero_kind = ZeroPoint::symmetric;
    int zero_code = 0;                  ///< z of a symmetric grid, minus code_offset
    std::size_t code_bytes = 0;         ///< per panel
    std::unique_ptr<std::uint8_t[]> storage;
    std::uint8_t* codes = nullptr;      ///< panels() x code_bytes, 64-byte aligned
    std::vector<std::uint8_t> scale;    ///< panels() x groups x 16 halfs, floats or int8 multipliers
    std::vector<std::uint8_t> min;      ///< same, ZeroPoint::float_min only
    std::vector<std::uint8_t> scale_base, min_base;  ///< panels() x groups/span x 16 halfs (factored terms only)
    std::vector<std::int32_t> zero;     ///< panels() x groups x 16, ZeroPoint::integer only

    int panels() const noexcept { return (rows + panel_rows - 1) / panel_rows; }
    /// Bytes held (codes and terms), for memory reports.
    std::size_t bytes() const noexcept {
        return std::size_t(panels()) * code_bytes + scale.size() + min.size() + scale_base.size() + min_base.size() +
               zero.size() * sizeof(std::int32_t);
    }
    const std::uint8_t* panel_codes(int p) const noexcept { return codes + std::size_t(p) * code_bytes; }
    std::size_t term_bytes() const noexcept { return span > 0 ? 1 : half ? 2 : 4; }
    /// Entry (panel p, group g, lane 0) of a per-lane term array (multipliers, if factored).
    const std::uint8_t* terms(const std::vector<std::uint8_t>& t, int p, int g) const noexcept {
        return t.data() + (std::size_t(p) * std::size_t(groups) + std::size_t(g)) * panel_rows * term_bytes();
    }
    /// Entry (panel p, group g's span, lane 0) of `scale_base` or `min_base` (factored terms).
    const std::uint8_t* bases(const std::vector<std::uint8_t>& b, int p, int g) const noexcept {
        const std::size_t spans = std::size_t((groups + span - 1) / span);
        return b.data() + (std::size_t(p) * spans + std::size_t(g / span)) * panel_rows * 2;
    }
    /// Term (scale or min, with its bases) of lane `lane`, group g of panel p, as a float.
    float term(const std::vector<std::uint8_t>& t, int p, int g, int lane) const noexcept {
        const std::uint8_t* at = terms(t, p, g) + std::size_t(lane) * term_bytes();
        if (span > 0) {
            std::uint16_t h;
            std::memcpy(&h, bases(&t == &scale ? scale_base : min_base, p, g) + std::size_t(lane) * 2, 2);
            return half_to_float(h) * float(std::int8_t(*at));
        }
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

namespace detail {
/// A half base b and int8 multipliers k with float(b) * k == t bit for bit for every term t of
/// `n` (a lane's terms over one span), or false. Any such pair gives the same floats, so the
/// base is searched from the largest term: t_max / k for k = ±1 .. ±128 (Q6_K's sc is any int8).
inline bool factor_terms(const float* t, int n, std::uint16_t& base, std::int8_t* k) noexcept {
    int top = 0;
    for (int i = 1; i < n; ++i)
        if (std::fabs(t[i]) > std::fabs(t[top])) top = i;
    const auto fits = [&](float b) {
        for (int i = 0; i < n; ++i) {
            const float r = b == 0.0f ? 0.0f : std::nearbyint(t[i] / b);
            if (!(r >= -128.0f && r <= 127.0f)) return false;
            const float q = float(int(r));  // as the kernels convert the int8: no -0
            const float back = b * q;
            if (std::memcmp(&back, &t[i], 4) != 0) return false;
            k[i] = std::int8_t(q);
        }
        return true;
    };
    // b = t_max / m is a half only if m's odd part divides the odd part of t_max's significand
    // and leaves at most 11 bits (a half's significand): an integer test before any float one
    const std::uint32_t top_bits = std::bit_cast<std::uint32_t>(std::fabs(t[top]));
    std::uint32_t odd_sig = (top_bits & 0x7fffffu) | ((top_bits >> 23) != 0 ? 0x800000u : 0u);
    if (odd_sig != 0) odd_sig >>= std::countr_zero(odd_sig);
    for (int m = 1; m <= 128; ++m) {
        const std::uint32_t odd_m = std::uint32_t(m) >> std::countr_zero(std::uint32_t(m));
        if (odd_sig != 0 && (odd_sig % odd_m != 0 || odd_sig / odd_m >= 2048u)) continue;
        for (const int sign : {1, -1}) {
            // t_max = 0 (every term ±0): a base of ±1 and k = 0 give ±0 by the base's sign
            const float b = t[top] == 0.0f ? float(sign) : t[top] / float(sign * m);
            const std::uint16_t h = float_to_half(b);
            if (half_to_float(h) != b || !std::isfinite(b)) continue;
            if (fits(b)) return base = h, true;
        }
    }
    return false;
}
}  // namespace detail

/// After every panel is built with float terms: stores them as halfs when each converts exactly
/// (bit for bit, so the kernels' half-to-float conversion gives them back), halving their bytes;
/// else, for `span` > 0, as half bases per `span` groups and int8 multipliers when every lane's
/// terms factor so exactly (the K-quants': a quarter of the float bytes and a little more).
inline void compact_panel_terms(PanelSet& s, int span = 0) {
    if (s.half || s.span > 0) return;
    const auto exact = [](const std::vector<std::uint8_t>& t) {
        for (std::size_t i = 0; i < t.size(); i += 4) {
            float f;
            std::memcpy(&f, t.data() + i, 4);
            const float back = half_to_float(float_to_half(f));
            if (std::memcmp(&back, &f, 4) != 0) return false;
        }
        return true;
    };
    const bool halves = exact(s.scale) && exact(s.min);
    if (!halves && span > 0 && span <= 256 && s.groups % span == 0) {
        // all or nothing: the kernels read one kind of term per set
        const std::size_t spans = std::size_t(s.groups / span), panels = std::size_t(s.panels());
        std::vector<std::uint8_t> k_scale(panels * std::size_t(s.groups) * panel_rows), k_min(s.min.empty() ? 0 : k_scale.size());
        std::vector<std::uint8_t> b_scale(panels * spans * panel_rows * 2), b_min(s.min.empty() ? 0 : b_scale.size());
        const auto factor = [&](const std::vector<std::uint8_t>& t, std::vector<std::uint8_t>& k, std::vector<std::uint8_t>& b) {
            float lane[256];
            std::int8_t mult[256];
            for (std::size_t p = 0; p < panels; ++p)
                for (std::size_t sp = 0; sp < spans; ++sp)
                    for (std::size_t i = 0; i < std::size_t(panel_rows); ++i) {
                        for (std::size_t j = 0; j < std::size_t(span); ++j)
                            std::memcpy(&lane[j], t.data() + ((p * std::size_t(s.groups) + sp * std::size_t(span) + j) * panel_rows + i) * 4, 4);
                        std::uint16_t base;
                        if (!detail::factor_terms(lane, span, base, mult)) return false;
                        std::memcpy(b.data() + ((p * spans + sp) * panel_rows + i) * 2, &base, 2);
                        for (std::size_t j = 0; j < std::size_t(span); ++j)
                            k[(p * std::size_t(s.groups) + sp * std::size_t(span) + j) * panel_rows + i] = std::uint8_t(mult[j]);
                    }
            return true;
        };
        if (factor(s.scale, k_scale, b_scale) && (s.min.empty() || factor(s.min, k_min, b_min))) {
            s.scale = std::move(k_scale), s.min = std::move(k_min);
            s.scale_base = std::move(b_scale), s.min_base = std::move(b_min);
            s.span = span;
            return;
        }
    }
    if (!halves) return;
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
