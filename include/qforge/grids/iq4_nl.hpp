#pragma once
/// @file
/// The IQ4_NL grid: llama.cpp's fixed non-uniform 4-bit table (`kvalues_iq4nl` in
/// ggml-common.h), blocks of 32 with one fp16 scale, w = d * kvalues[q]. The scale maps the
/// block's weight of largest magnitude onto the level -127 (ggml's d = max / kvalues[0], before
/// its own scale search; qforge's `,clip` searches shrink factors instead).
#include <array>
#include <cstdint>

#include "qforge/core/spec.hpp"

namespace qforge {

namespace detail {
inline constexpr std::array<std::int8_t, 16> iq4nl_int{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
inline constexpr std::array<float, 16> iq4nl_float = [] {
    std::array<float, 16> out{};
    for (std::size_t i = 0; i < 16; ++i) out[i] = float(iq4nl_int[i]);
    return out;
}();
}  // namespace detail

inline constexpr Codebook iq4nl_codebook{"iq4nl", 4, detail::iq4nl_float, detail::iq4nl_int, 1.0f, Codebook::ScaleRule::signed_extreme, 32};

/// Grid tag for compile-time schemes: `Scheme<Gptq, Iq4Nl, Group<32>>`.
struct Iq4Nl {
    static constexpr int bits = 4;
    static constexpr const Codebook* codebook = &iq4nl_codebook;
};

}  // namespace qforge
