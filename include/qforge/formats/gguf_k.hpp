#pragma once
/// @file
/// llama.cpp's K-quant super-blocks (256 weights each: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), read so that GGUF models stored with
/// them can be dequantized to FP32 (the reference weights qforge then quantizes). Reading only:
/// qforge's kernels do not multiply from these blocks.
///
/// | struct     | bytes | fields                                                        | weight                   |
/// |------------|-------|---------------------------------------------------------------|--------------------------|
/// | block_q4_K | 144   | d, dmin: fp16; scales[12]: 8 x (6-bit scale, 6-bit min);       | d*sc_j*q - dmin*m_j      |
/// |            |       | qs[128]: 4-bit, sub-block pairs share bytes (low, high nibble) |                          |
/// | block_q5_K | 176   | as q4_K plus qh[32]: bit j of qh[l] is the 5th bit of sub-block j | d*sc_j*q - dmin*m_j   |
/// | block_q6_K | 210   | ql[128]: low 4 bits; qh[64]: high 2 bits; scales[16]: int8;    | d*sc_k*(q - 32), 16 per k |
/// |            |       | d: fp16                                                        |                          |
/// | block_q2_K | 84    | scales[16]: 4-bit scale (low), 4-bit min (high) per 16 weights; | d*sc_k*q - dmin*m_k    |
/// |            |       | qs[64]: 2-bit codes; d, dmin: fp16                             |                          |
/// | block_q3_K | 110   | hmask[32]: 3rd bit; qs[64]: low 2 bits; scales[12]: 16 6-bit   | d*(sc_k - 32)*(q - 4*!h) |
/// |            |       | scales; d: fp16                                                |                          |
///
/// Code order of Q2_K/Q3_K: weight w = 128*c + 32*s + l takes bits 2s..2s+1 of qs[32*c + l]; Q3_K's
/// high bit of weight w = 32*j + l is bit j of hmask[l], and its value is q - 4 when that bit is 0.
///
/// Arithmetic is llama.cpp's, in float, in its order: (d*sc)*q - (dmin*m). Compile without
/// FMA contraction to reproduce it bit for bit.
#include <cstdint>
#include <cstring>

#include "qforge/core/half.hpp"

namespace qforge {

inline constexpr int k_block = 256;

struct block_q4_K {
    std::uint16_t d, dmin;
    std::uint8_t scales[12];
    std::uint8_t qs[128];
};
static_assert(sizeof(block_q4_K) == 144, "block_q4_K must match ggml's 144-byte layout");

struct block_q5_K {
    std::uint16_t d, dmin;
    std::uint8_t scales[12];
    std::uint8_t qh[32];
    std::uint8_t qs[128];
};
static_assert(sizeof(block_q5_K) == 176, "block_q5_K must match ggml's 176-byte layout");

struct block_q6_K {
    std::uint8_t ql[128];
    std::uint8_t qh[64];
    std::int8_t scales[16];
    std::uint16_t d;
};
static_assert(sizeof(block_q6_K) == 210, "block_q6_K must match ggml's 210-byte layout");

struct block_q2_K {
    std::uint8_t scales[16];
    std::uint8_t qs[64];
    std::uint16_t d, dmin;
};
static_assert(sizeof(block_q2_K) == 84, "block_q2_K must match ggml's 84-byte layout");

struct block_q3_K {
    std::uint8_t hmask[32];
    std::uint8_t qs[64];
    std::uint8_t scales[12];
    std::uint16_t d;
};
static_assert(sizeof(block_q3_K) == 110, "block_q3_K must match ggml's 110-byte layout");

namespace detail {
/// Scale and min of sub-block j (0..7), 6 bits each, packed into 12 bytes.
inline void k_scale_min(int j, const std::uint8_t* s, int& scale, int& min) noexcept {
    if (j < 4) {
        scale = s[j] & 63;
        min = s[j + 4] & 63;
    } else {
        scale = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}
}  // namespace detail

/// 256 weights of a Q4_K or Q5_K block.
template <class Block>
void dequantize_k_block(const Block& b, float* out) noexcept {
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int j = 0; j < 8; ++j) {
        int sc, m;
        detail::k_scale_min(j, b.scales, sc, m);
        const float scale = d * float(sc), offset = dmin * float(m);
        const std::uint8_t* q = b.qs + 32 * (j / 2);
        for (int l = 0; l < 32; ++l) {
            int v = (j % 2) ? q[l] >> 4 : q[l] & 0x0F;
            if constexpr (sizeof(Block) == sizeof(block_q5_K)) v |= ((b.qh[l] >> j) & 1) << 4;
            const float scaled = scale * float(v);
            out[32 * j + l] = scaled - offset;
        }
    }
}

inline void dequantize_k_block(const block_q6_K& b, float* out) noexcept {
    const float d = half_to_float(b.d);
    for (int half = 0; half < 2; ++half) {
        const std::uint8_t* ql = b.ql + 64 * half;
        const std::uint8_t* qh = b.qh + 32 * half;
        const std::int8_t* sc = b.scales + 8 * half;
        float* y = out + 128 * half;
        for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * float(sc[is + 0]) * float(q1);
            y[l + 32] = d * float(sc[is + 2]) * float(q2);
            y[l + 64] = d * float(sc[is + 4]) * float(q3);
            y[l + 96] = d * float(sc[is + 6]) * float(q4);
        }
    }
}

inline void dequantize_k_block(const block_q2_K& b, float* out) noexcept {
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int w = 0; w < k_block; ++w) {
        const int c = w / 128, s = (w / 32) % 4, l = w % 32;
        const int q = (b.qs[32 * c + l] >> (2 * s)) & 3;
        const std::uint8_t sc = b.scales[w / 16];
        const float dl = d * float(sc & 0x0F), ml = dmin * float(sc >> 4);
        const float scaled = dl * float(q);
        out[w] = scaled - ml;
    }
}

inline void dequantize_k_block(const block_q3_K& b, float* out) noexcept {
    const float d = half_to_float(b.d);
    int scales[16];
    for (int k = 0; k < 16; ++k) {
        const int low = (b.scales[k % 8] >> (4 * (k / 8))) & 0x0F;
        const int high = (b.scales[8 + k % 4] >> (2 * (k / 4))) & 0x03;
        scales[k] = (low | (high << 4)) - 32;
    }
    for (int w = 0; w < k_block; ++w) {
        const int c = w / 128, s = (w / 32) % 4, l = w % 32;
        const int low = (b.qs[32 * c + l] >> (2 * s)) & 3;
        const int high = (b.hmask[l] >> (w / 32)) & 1;
        out[w] = d * float(scales[w / 16]) * float(low - (high ? 0 : 4));
    }
}

}  // namespace qforge
