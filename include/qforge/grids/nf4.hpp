#pragma once
/// @file
/// NF4, QLoRA's 4-bit NormalFloat (Dettmers et al., 2023, section 3 and appendix E): 16 levels
/// at quantiles of N(0, 1) — 8 for the positive half, 7 for the negative, and an exact 0 —
/// normalised to [-1, 1], in blocks of 64 weights with an absmax scale (s = max|w|), w = s *
/// levels[q]. qforge stores the scale as fp16 (QLoRA keeps fp32 absmax): 2 + 32 bytes per 64
/// weights, 4.25 bits per weight; or, with QLoRA's double quantization (`nf4g64,dq`,
/// formats/double_quant.hpp), as an 8-bit code: 1 + 32 bytes per 64 weights plus 4 bytes per
/// 256 blocks and 4 per matrix, about 4.127 bits per weight.
#include <array>
#include <cstdint>

#include "qforge/core/spec.hpp"

namespace qforge {

namespace detail {
// the table as published (bitsandbytes' NF4 map, QLoRA appendix E), as float
inline constexpr std::array<float, 16> nf4_float{-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                                  -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                                  0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
                                                  0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
// round(127 * level): the integer kernels' levels, in steps of 1/127
inline constexpr std::array<std::int8_t, 16> nf4_int{-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127};
}  // namespace detail

inline constexpr Codebook nf4_codebook{"nf4", 4, detail::nf4_float, detail::nf4_int, 1.0f / 127.0f, Codebook::ScaleRule::absmax, 64, true};

/// Grid tag for compile-time schemes: `Scheme<Gptq, Nf4, Group<64>>`.
struct Nf4 {
    static constexpr int bits = 4;
    static constexpr const Codebook* codebook = &nf4_codebook;
};

}  // namespace qforge
