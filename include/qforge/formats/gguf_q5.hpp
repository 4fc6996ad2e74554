#pragma once
/// @file
/// ggml's 5-bit blocks of 32 weights, read so that GGUF files holding them (llama-quantize writes
/// Q5_0 wherever a K-quant does not fit a row, as on SmolLM2's 576-wide rows) can be dequantized.
/// Reading only: qforge's kernels do not multiply from these blocks.
///
/// | block      | bytes | layout                                                     | weight i      |
/// |------------|-------|------------------------------------------------------------|---------------|
/// | block_q5_0 | 22    | d: fp16; qh[4]: bit i = 5th bit of weight i; qs[16]: nibbles | d*(q - 16)  |
/// | block_q5_1 | 24    | d: fp16; m: fp16; qh[4]; qs[16]                             | d*q + m       |
///
/// qs as in Q4_0: low nibble of byte j = weight j, high nibble = weight j + 16; qh is a
/// little-endian uint32. Source: ggml-common.h (`block_q5_0`, `block_q5_1`), ggml-quants.c
/// (`dequantize_row_q5_0`).
#include <cstdint>
#include <cstring>

#include "qforge/core/half.hpp"

namespace qforge {

struct block_q5_0 {
    std::uint16_t d;
    std::uint8_t qh[4];
    std::uint8_t qs[16];
};
static_assert(sizeof(block_q5_0) == 22, "block_q5_0 must match ggml's 22-byte layout");

struct block_q5_1 {
    std::uint16_t d, m;
    std::uint8_t qh[4];
    std::uint8_t qs[16];
};
static_assert(sizeof(block_q5_1) == 24, "block_q5_1 must match ggml's 24-byte layout");

namespace detail {
/// The 5-bit code of weight i of a Q5_0/Q5_1 block.
template <class Block>
int q5_code(const Block& b, int i) noexcept {
    std::uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    const int low = i < 16 ? b.qs[i] & 0x0F : b.qs[i - 16] >> 4;
    return low | int((qh >> i) & 1u) << 4;
}
}  // namespace detail

inline void dequantize_block(const block_q5_0& b, float* out) noexcept {
    const float d = half_to_float(b.d);
    for (int i = 0; i < 32; ++i) out[i] = d * float(detail::q5_code(b, i) - 16);
}

inline void dequantize_block(const block_q5_1& b, float* out) noexcept {
    const float d = half_to_float(b.d), m = half_to_float(b.m);
    for (int i = 0; i < 32; ++i) {
        const float scaled = d * float(detail::q5_code(b, i));  // exact: 11-bit d times a 5-bit code
        out[i] = scaled + m;
    }
}

}  // namespace qforge
