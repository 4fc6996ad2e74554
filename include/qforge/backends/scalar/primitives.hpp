#pragma once
/// @file
/// The scalar oracle's primitives: the plainest code that follows each format's layout.
#include <cmath>
#include <cstdint>

#include "qforge/backends/backend.hpp"
#include "qforge/backends/codecs.hpp"

namespace qforge {

template <>
struct Primitives<Scalar> {
    static float fp16(std::uint16_t h) noexcept { return half_to_float(h); }
    static void fp16_n(const std::uint16_t* h, int n, float* out) noexcept {
        for (int i = 0; i < n; ++i) out[i] = half_to_float(h[i]);
    }

    template <int B>
    static void decode(Bitstream<B>, const std::uint8_t* bytes, int n, std::uint8_t* out) noexcept {
        for (int i = 0; i < n; ++i) out[i] = std::uint8_t(detail::get_bits(bytes, std::size_t(i), B));
    }
    static void decode(NibbleBlock, const std::uint8_t* bytes, int, std::uint8_t* out) noexcept {
        for (int j = 0; j < 16; ++j) {
            out[j] = bytes[j] & 0x0f;
            out[j + 16] = bytes[j] >> 4;
        }
    }
    template <int N, const Codebook* C>
    static void decode(CodebookNibbles<N, C>, const std::uint8_t* bytes, int, std::uint8_t* out) noexcept {
        for (int j = 0; j < N / 2; ++j) {
            out[j] = kernel_table_u8<C>[bytes[j] & 0x0f];
            out[j + N / 2] = kernel_table_u8<C>[bytes[j] >> 4];
        }
    }
    static void decode(SignedBytes, const std::uint8_t* bytes, int n, std::uint8_t* out) noexcept {
        for (int i = 0; i < n; ++i) out[i] = std::uint8_t(bytes[i] ^ 0x80u);
    }

    /// d = sum q_i * xq_i over one sub-block of n codes; activations sit in `order`.
    template <class Codec>
    static std::int32_t sub_dot(Codec codec, const std::uint8_t* bytes, int n, const std::int8_t* slots,
                                LaneOrder order) noexcept {
        std::uint8_t codes[act_sub_block];
        decode(codec, bytes, n, codes);
        std::int32_t d = 0;
        for (int i = 0; i < n; ++i) d += std::int32_t(codes[i]) * slots[lane_slot(order, i)];
        return d;
    }

    static void dequantize(const std::uint8_t* codes, int n, const GroupRef& g, bool float_min,
                           float* out) noexcept {
        if (float_min) {
            for (int i = 0; i < n; ++i) out[i] = std::fma(g.scale, float(codes[i]), g.min);
        } else {
            for (int i = 0; i < n; ++i) out[i] = g.scale * float(int(codes[i]) - g.zero_code);
        }
    }
};

}  // namespace qforge
