#pragma once
/// @file
/// IEEE-754 binary16 conversions done in integer arithmetic, so the result is the same on every
/// CPU and compiler flag set (F16C and the scalar oracle must agree bit for bit).
#include <bit>
#include <cstdint>

namespace qforge {

/// binary16 -> binary32; exact (every half is a float).
[[gnu::always_inline]] inline float half_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    std::uint32_t exponent = (h >> 10) & 0x1fu;
    std::uint32_t mantissa = h & 0x3ffu;
    std::uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {  // subnormal half: normalise it
        exponent = 113;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    return std::bit_cast<float>(bits);
}

/// binary32 -> binary16 with round-to-nearest-even, overflow to infinity, NaN kept quiet.
[[gnu::always_inline]] inline std::uint16_t float_to_half(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
    const std::uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) {  // Inf or NaN
        return std::uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    }
    if (abs >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds past 65504
    if (abs < 0x38800000u) {                                      // subnormal or zero half
        if (abs < 0x33000000u) return sign;                       // below half the smallest step
        const std::uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
        const int shift = 126 - int(abs >> 23);  // 14..24
        std::uint32_t half = mantissa >> shift;
        const std::uint32_t rest = mantissa & ((1u << shift) - 1);
        const std::uint32_t midpoint = 1u << (shift - 1);
        if (rest > midpoint || (rest == midpoint && (half & 1u))) ++half;
        return std::uint16_t(sign | half);
    }
    std::uint32_t half = ((abs >> 13) - (112u << 10));
    const std::uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
    return std::uint16_t(sign | half);
}

/// The nearest binary16 value, as a float.
inline float round_to_half(float f) noexcept { return half_to_float(float_to_half(f)); }

}  // namespace qforge
