#pragma once
/// @file
/// ggml's "i-quants" and ternary types, read so that the GGUF files llama-quantize writes with
/// them can be dequantized (qforge's kernels do not multiply from these blocks). Super-blocks of
/// 256 weights except IQ4_NL (32). Layouts and arithmetic: ggml-common.h (`block_iq2_xxs` ...)
/// and ggml-quants.c (`dequantize_row_iq2_xxs` ...); the lattice grids are formats/iq_grids.hpp.
///
/// | block         | bytes | layout                                                                   |
/// |---------------|-------|--------------------------------------------------------------------------|
/// | block_iq2_xxs | 66    | d: fp16; qs[32] uint16: per 32 weights two uint32, (a) four 8-bit grid   |
/// |               |       | indices (8 weights each), (b) four 7-bit sign indices + 4-bit scale (top) |
/// | block_iq2_xs  | 74    | d; qs[32] uint16: 9-bit grid index + 7-bit sign index; scales[8]: nibbles |
/// | block_iq2_s   | 82    | d; qs[64]: 32 grid index low bytes, then 32 sign bytes; qh[8]: 2 high    |
/// |               |       | index bits per group; scales[8]: nibbles per 16 weights                  |
/// | block_iq3_xxs | 98    | d; qs[96]: 64 8-bit grid indices (4 weights each), then per 32 weights a  |
/// |               |       | uint32 of four 7-bit sign indices + 4-bit scale                          |
/// | block_iq3_s   | 110   | d; qs[64]: grid index low bytes; qh[8]: 9th bits; signs[32]: 1 bit per   |
/// |               |       | weight; scales[4]: nibbles per 32 weights                                |
/// | block_iq1_s   | 50    | d; qs[32]: grid index low bytes; qh[8] uint16 per 32 weights: 4 x 3 high |
/// |               |       | index bits, 3-bit scale (bits 12-14), delta sign (bit 15)                |
/// | block_iq1_m   | 56    | qs[32]; qh[16]: per 8 weights 3 high index bits + delta sign; scales[8]: |
/// |               |       | 4 uint16, each 4 x 3-bit scales (per 16 weights) + 4 bits of fp16 d      |
/// | block_iq4_nl  | 18    | d; qs[16]: nibbles as Q4_0, into the IQ4_NL table (formats/codebook.hpp) |
/// | block_iq4_xs  | 136   | d; scales_h uint16: 2 high bits per 32 weights; scales_l[4]: nibbles;    |
/// |               |       | qs[128]: nibbles per 32 weights as Q4_0, into the IQ4_NL table            |
/// | block_tq1_0   | 54    | qs[48]: 5 ternary digits per byte (base 3, scaled by 256/243); qh[4]: 4; |
/// |               |       | d: fp16                                                                  |
/// | block_tq2_0   | 66    | qs[64]: 2-bit codes (q - 1) in Q2_K's order; d: fp16                     |
///
/// Sign indices address ggml's `ksigns_iq2xs`: 7 sign bits plus an eighth that makes the count of
/// minus signs even, computed here rather than tabled.
#include <array>
#include <cstdint>
#include <cstring>

#include "qforge/core/half.hpp"
#include "qforge/formats/iq_grids.hpp"
#include "qforge/grids/iq4_nl.hpp"

namespace qforge {

struct block_iq2_xxs {
    std::uint16_t d;
    std::uint16_t qs[32];
};
struct block_iq2_xs {
    std::uint16_t d;
    std::uint16_t qs[32];
    std::uint8_t scales[8];
};
struct block_iq2_s {
    std::uint16_t d;
    std::uint8_t qs[64];
    std::uint8_t qh[8];
    std::uint8_t scales[8];
};
struct block_iq3_xxs {
    std::uint16_t d;
    std::uint8_t qs[96];
};
struct block_iq3_s {
    std::uint16_t d;
    std::uint8_t qs[64];
    std::uint8_t qh[8];
    std::uint8_t signs[32];
    std::uint8_t scales[4];
};
struct block_iq1_s {
    std::uint16_t d;
    std::uint8_t qs[32];
    std::uint16_t qh[8];
};
struct block_iq1_m {
    std::uint8_t qs[32];
    std::uint8_t qh[16];
    std::uint8_t scales[8];
};
struct block_iq4_xs {
    std::uint16_t d;
    std::uint16_t scales_h;
    std::uint8_t scales_l[4];
    std::uint8_t qs[128];
};
struct block_tq1_0 {
    std::uint8_t qs[48];
    std::uint8_t qh[4];
    std::uint16_t d;
};
struct block_tq2_0 {
    std::uint8_t qs[64];
    std::uint16_t d;
};
static_assert(sizeof(block_iq2_xxs) == 66, "block_iq2_xxs must match ggml's 66-byte layout");
static_assert(sizeof(block_iq2_xs) == 74, "block_iq2_xs must match ggml's 74-byte layout");
static_assert(sizeof(block_iq2_s) == 82, "block_iq2_s must match ggml's 82-byte layout");
static_assert(sizeof(block_iq3_xxs) == 98, "block_iq3_xxs must match ggml's 98-byte layout");
static_assert(sizeof(block_iq3_s) == 110, "block_iq3_s must match ggml's 110-byte layout");
static_assert(sizeof(block_iq1_s) == 50, "block_iq1_s must match ggml's 50-byte layout");
static_assert(sizeof(block_iq1_m) == 56, "block_iq1_m must match ggml's 56-byte layout");
static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs must match ggml's 136-byte layout");
static_assert(sizeof(block_tq1_0) == 54, "block_tq1_0 must match ggml's 54-byte layout");
static_assert(sizeof(block_tq2_0) == 66, "block_tq2_0 must match ggml's 66-byte layout");

namespace detail {
/// A grid of iq_grids.hpp expanded to rows x dim values.
template <class G>
inline constexpr auto iq_grid = [] {
    std::array<std::int8_t, std::size_t(G::rows) * G::dim> out{};
    constexpr int bits = G::values.size() > 4 ? 3 : 2;  // ceil(log2(values))
    constexpr int per_byte = 8 / bits, step = 8 / per_byte;
    std::size_t k = 0;
    for (std::size_t i = 0; G::hex[i] && G::hex[i + 1] && k < out.size(); i += 2) {
        const auto digit = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
        const int byte = digit(G::hex[i]) << 4 | digit(G::hex[i + 1]);
        for (int e = 0; e < per_byte && k < out.size(); ++e) out[k++] = G::values[std::size_t((byte >> (e * step)) & ((1 << bits) - 1))];
    }
    return out;
}();

/// ggml's ksigns_iq2xs[i]: the 7 bits of i, and bit 7 set when they hold an odd count of ones.
constexpr int ksigns(int i) noexcept { return i | ((__builtin_popcount(unsigned(i)) & 1) << 7); }
constexpr float sign_of(int signs, int bit) noexcept { return (signs >> bit) & 1 ? -1.0f : 1.0f; }

inline std::uint32_t load_u32(const void* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
}  // namespace detail

inline void dequantize_block(const block_iq2_xxs& b, float* out) noexcept {
    const auto& grid = detail::iq_grid<iq_grids::iq2xxs>;
    const float d = half_to_float(b.d);
    for (int s = 0; s < 8; ++s) {
        const std::uint32_t idx = detail::load_u32(&b.qs[4 * s]), aux = detail::load_u32(&b.qs[4 * s + 2]);
        const float db = d * (0.5f + float(aux >> 28)) * 0.25f;
        for (int k = 0; k < 4; ++k) {
            const int signs = detail::ksigns(int((aux >> (7 * k)) & 127));
            const std::int8_t* g = &grid[((idx >> (8 * k)) & 0xFF) * 8];
            for (int i = 0; i < 8; ++i) out[32 * s + 8 * k + i] = db * float(g[i]) * detail::sign_of(signs, i);
        }
    }
}

inline void dequantize_block(const block_iq2_xs& b, float* out) noexcept {
    const auto& grid = detail::iq_grid<iq_grids::iq2xs>;
    const float d = half_to_float(b.d);
    for (int j = 0; j < 32; ++j) {
        const int scale = (b.scales[j / 4] >> (4 * ((j / 2) % 2))) & 0x0F;
        const float db = d * (0.5f + float(scale)) * 0.25f;
        const int signs = detail::ksigns(b.qs[j] >> 9);
        const std::int8_t* g = &grid[(b.qs[j] & 511) * 8];
        for (int i = 0; i < 8; ++i) out[8 * j + i] = db * float(g[i]) * detail::sign_of(signs, i);
    }
}

inline void dequantize_block(const block_iq2_s& b, float* out) noexcept {
    const auto& grid = detail::iq_grid<iq_grids::iq2s>;
    const float d = half_to_float(b.d);
    for (int j = 0; j < 32; ++j) {
        const int scale = (b.scales[j / 4] >> (4 * ((j / 2) % 2))) & 0x0F;
        const float db = d * (0.5f + float(scale)) * 0.25f;
        const int index = b.qs[j] | ((b.qh[j / 4] >> (2 * (j % 4))) & 3) << 8;
        const int signs = b.qs[32 + j];
        const std::int8_t* g = &grid[std::size_t(index) * 8];
        for (int i = 0; i < 8; ++i) out[8 * j + i] = db * float(g[i]) * detail::sign_of(signs, i);
    }
}

inline void dequantize_block(const block_iq3_xxs& b, float* out) noexcept {
    const auto& grid = detail::iq_grid<iq_grids::iq3xxs>;
    const float d = half_to_float(b.d);
    for (int s = 0; s < 8; ++s) {
        const std::uint32_t aux = detail::load_u32(b.qs + 64 + 4 * s);
        const float db = d * (0.5f + float(aux >> 28)) * 0.5f;
        for (int k = 0; k < 4; ++k) {
            const int signs = detail::ksigns(int((aux >> (7 * k)) & 127));
            for (int half = 0; half < 2; ++half) {
                const std::int8_t* g = &grid[std::size_t(b.qs[8 * s + 2 * k + half]) * 4];
                for (int i = 0; i < 4; ++i) out[32 * s + 8 * k + 4 * half + i] = db * float(g[i]) * detail::sign_of(signs, 4 * half + i);
            }
        }
    }
}

inline void dequantize_block(const block_iq3_s& b, float* out) noexcept {
    const auto& grid = detail::iq_grid<iq_grids::iq3s>;
    const float d = half_to_float(b.d);
    for (int k = 0; k < 64; ++k) {  // groups of 4 weights
        const int scale = (b.scales[k / 16] >> (4 * ((k / 8) % 2))) & 0x0F;
        const float db = d * float(1 + 2 * scale);
        const int index = b.qs[k] | ((b.qh[k / 8] >> (k % 8)) & 1) << 8;
        const std::int8_t* g = &grid[std::size_t(index) * 4];
        for (int i = 0; i < 4; ++i) {
            const int w = 4 * k + i;
            out[w] = db * float(g[i]) * detail::sign_of(b.signs[w / 8], w % 8);
        }
    }
}

namespace detail {
inline constexpr float iq1_delta = 0.125f;
}

inline void dequantize_block(const block_iq1_s& b, float* out) noexcept {
    const auto& grid = detail::iq_grid<iq_grids::iq1s>;
    const float d = half_to_float(b.d);
    for (int s = 0; s < 8; ++s) {
        const int qh = b.qh[s];
        const float dl = d * float(2 * ((qh >> 12) & 7) + 1);
        const float delta = qh & 0x8000 ? -detail::iq1_delta : detail::iq1_delta;
        for (int k = 0; k < 4; ++k) {
            const int index = b.qs[4 * s + k] | ((qh >> (3 * k)) & 7) << 8;
            const std::int8_t* g = &grid[std::size_t(index) * 8];
            for (int i = 0; i < 8; ++i) out[32 * s + 8 * k + i] = dl * (float(g[i]) + delta);
        }
    }
}

/// IQ1_M's fp16 super-block scale, spread over the top 4 bits of its four scale words.
inline std::uint16_t iq1_m_d(const block_iq1_m& b) noexcept {
    std::uint16_t sc[4];
    std::memcpy(sc, b.scales, 8);
    return std::uint16_t((sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000));
}

inline void dequantize_block(const block_iq1_m& b, float* out) noexcept {
    const auto& grid = detail::iq_grid<iq_grids::iq1s>;
    std::uint16_t sc[4];
    std::memcpy(sc, b.scales, 8);
    const float d = half_to_float(iq1_m_d(b));
    for (int k = 0; k < 32; ++k) {  // groups of 8 weights; a 3-bit scale per two groups
        const int h = k / 2;
        const int scale = (sc[h / 4] >> (3 * (h % 4))) & 7;
        const float dl = d * float(2 * scale + 1);
        const int nibble = (b.qh[k / 2] >> (4 * (k % 2))) & 0x0F;
        const float delta = nibble & 8 ? -detail::iq1_delta : detail::iq1_delta;
        const int index = b.qs[k] | (nibble & 7) << 8;
        const std::int8_t* g = &grid[std::size_t(index) * 8];
        for (int i = 0; i < 8; ++i) out[8 * k + i] = dl * (float(g[i]) + delta);
    }
}

inline void dequantize_iq4_nl_block(std::uint16_t d16, const std::uint8_t* qs, float* out) noexcept {
    const float d = half_to_float(d16);
    for (int j = 0; j < 16; ++j) {
        out[j] = d * float(detail::iq4nl_int[qs[j] & 0x0F]);
        out[j + 16] = d * float(detail::iq4nl_int[qs[j] >> 4]);
    }
}

inline void dequantize_block(const block_iq4_xs& b, float* out) noexcept {
    const float d = half_to_float(b.d);
    for (int s = 0; s < 8; ++s) {
        const int low = (b.scales_l[s / 2] >> (4 * (s % 2))) & 0x0F, high = (b.scales_h >> (2 * s)) & 3;
        const float dl = d * float((low | high << 4) - 32);
        for (int j = 0; j < 16; ++j) {
            out[32 * s + j] = dl * float(detail::iq4nl_int[b.qs[16 * s + j] & 0x0F]);
            out[32 * s + j + 16] = dl * float(detail::iq4nl_int[b.qs[16 * s + j] >> 4]);
        }
    }
}

inline void dequantize_block(const block_tq1_0& b, float* out) noexcept {
    static constexpr int pow3[5] = {1, 3, 9, 27, 81};
    const float d = half_to_float(b.d);
    // A byte holds 5 ternary digits as round(256 * value / 243); multiplying by 3^p (mod 256)
    // brings digit p to the top, and * 3 >> 8 reads it.
    const auto digit = [](int byte, int p) { return ((((byte * pow3[p]) & 0xFF) * 3) >> 8) - 1; };
    int w = 0;
    for (int p = 0; p < 5; ++p)
        for (int l = 0; l < 32; ++l) out[w++] = d * float(digit(b.qs[l], p));
    for (int p = 0; p < 5; ++p)
        for (int l = 0; l < 16; ++l) out[w++] = d * float(digit(b.qs[32 + l], p));
    for (int p = 0; p < 4; ++p)
        for (int l = 0; l < 4; ++l) out[w++] = d * float(digit(b.qh[l], p));
}

inline void dequantize_block(const block_tq2_0& b, float* out) noexcept {
    const float d = half_to_float(b.d);
    for (int w = 0; w < 256; ++w) {
        const int c = w / 128, s = (w / 32) % 4, l = w % 32;
        out[w] = d * float(((b.qs[32 * c + l] >> (2 * s)) & 3) - 1);
    }
}

}  // namespace qforge
