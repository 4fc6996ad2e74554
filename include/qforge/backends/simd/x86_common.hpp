#pragma once
/// @file
/// Pieces shared by the x86 vector backends. Everything is a member of a template on the
/// architecture tag so that each dispatch translation unit, built with its own -m flags, emits
/// its own symbols: a helper built for AVX-512 can never be linked into the AVX2 path.
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "qforge/backends/codecs.hpp"

#define QFORGE_INLINE [[gnu::always_inline]] inline

namespace qforge::simd::detail {

template <class Arch>
struct X86 {
    /// fp16 -> float by F16C; equal to qforge::half_to_float for every input (tests/unit/test_half).
    QFORGE_INLINE static float fp16(std::uint16_t h) noexcept { return _cvtsh_ss(h); }
    QFORGE_INLINE static void fp16_n(const std::uint16_t* h, int n, float* out) noexcept {
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
        for (; i < n; ++i) out[i] = _cvtsh_ss(h[i]);
    }

    /// A hint only: prefetching past the end of a buffer is harmless.
    QFORGE_INLINE static void prefetch(const void* p) noexcept { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

    QFORGE_INLINE static std::int32_t hsum(__m256i v) noexcept {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        return _mm_cvtsi128_si32(s);
    }

    /// Horizontal sums of four vectors of int32 into d[0..4).
    QFORGE_INLINE static void hsum4(__m256i a0, __m256i a1, __m256i a2, __m256i a3, std::int32_t* d) noexcept {
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d),
                         _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
    }
    /// Horizontal sums of eight vectors of int32 into d[0..8): one hadd tree, then each
    /// 128-bit half's partial sums (vectors 0-3 in the first, 4-7 in the second) added.
    QFORGE_INLINE static void hsum8(const __m256i* a, std::int32_t* d) noexcept {
        const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
        const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                                                             _mm256_permute2x128_si256(h0, h1, 0x31)));
    }

    /// 32 natural-order 3-bit codes from an LSB-first stream; reads bytes [0, 16) of `p`
    /// (12 hold the codes) when `shifted` is false, bytes [-4, 12) when true, so the last chunk of
    /// a sub-block never reads past its own bytes.
    QFORGE_INLINE static __m256i decode3x32(const std::uint8_t* p, bool shifted) noexcept {
        // byte of code i: (3i)/8 within the chunk; shift: (3i)%8. Lane 0 of A holds codes 0..7,
        // lane 1 codes 8..15; B holds 16..23 and 24..31.
        alignas(32) static constexpr std::uint8_t idx_a[32] = {
            0, 1, 0, 1, 0, 1, 1, 2, 1, 2, 1, 2, 2, 3, 2, 3,    // codes 0..7
            3, 4, 3, 4, 3, 4, 4, 5, 4, 5, 4, 5, 5, 6, 5, 6};   // codes 8..15
        alignas(32) static constexpr std::uint8_t idx_b[32] = {
            6, 7, 6, 7, 6, 7, 7, 8, 7, 8, 7, 8, 8, 9, 8, 9,    // codes 16..23
            9, 10, 9, 10, 9, 10, 10, 11, 10, 11, 10, 11, 11, 12, 11, 12};  // codes 24..31
        // multiply by 2^(13 - shift) moves the code to bits 13..15
        const __m256i mult = _mm256_setr_epi16(1 << 13, 1 << 10, 1 << 7, 1 << 12, 1 << 9, 1 << 6, 1 << 11, 1 << 8,
                                               1 << 13, 1 << 10, 1 << 7, 1 << 12, 1 << 9, 1 << 6, 1 << 11, 1 << 8);
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(shifted ? p - 4 : p));
        const __m256i both = _mm256_broadcastsi128_si256(raw);
        const __m256i bias = _mm256_set1_epi8(shifted ? 4 : 0);
        const __m256i ia = _mm256_add_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(idx_a)), bias);
        const __m256i ib = _mm256_add_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(idx_b)), bias);
        const __m256i a = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(both, ia), mult), 13);
        const __m256i b = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(both, ib), mult), 13);
        return _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8);
    }

    /// Natural-order codes of one sub-block (n <= 128) into out[0..n) (writes up to 128).
    template <int B>
    static void decode(Bitstream<B>, const std::uint8_t* bytes, int n, std::uint8_t* out) noexcept {
        const int nb = (n * B + 7) / 8;
        alignas(32) std::uint8_t tmp[64 + 16] = {};
        if constexpr (B == 8) {
            std::memcpy(out, bytes, std::size_t(n));
            return;
        } else if constexpr (B == 3) {
            if (n < act_sub_block) {  // partial: work on a zero-padded copy
                std::memcpy(tmp + 4, bytes, std::size_t(nb));
                bytes = tmp + 4;
            }
            for (int c = 0; c * 32 < n; ++c)
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * c), decode3x32(bytes + 12 * c, c == 3));
        } else {
            constexpr int chunk = 32 * B / 8;  // bytes per 32 codes
            const __m128i mask = _mm_set1_epi8(B == 4 ? 0x0f : 0x03);
            for (int c = 0; c * 32 < n; ++c) {
                const std::uint8_t* src = bytes + chunk * c;
                if (chunk * (c + 1) > nb) {
                    std::memcpy(tmp, src, std::size_t(nb - chunk * c));
                    src = tmp;
                }
                if constexpr (B == 4) {
                    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
                    const __m128i lo = _mm_and_si128(v, mask), hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * c), _mm_unpacklo_epi8(lo, hi));
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * c + 16), _mm_unpackhi_epi8(lo, hi));
                } else {
                    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
                    const __m128i p0 = _mm_and_si128(v, mask), p1 = _mm_and_si128(_mm_srli_epi16(v, 2), mask);
                    const __m128i p2 = _mm_and_si128(_mm_srli_epi16(v, 4), mask), p3 = _mm_and_si128(_mm_srli_epi16(v, 6), mask);
                    const __m128i a = _mm_unpacklo_epi8(p0, p1), b = _mm_unpacklo_epi8(p2, p3);
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * c), _mm_unpacklo_epi16(a, b));
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 32 * c + 16), _mm_unpackhi_epi16(a, b));
                }
            }
        }
    }
    static void decode(NibbleBlock, const std::uint8_t* bytes, int, std::uint8_t* out) noexcept {
        const __m128i mask = _mm_set1_epi8(0x0f);
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_and_si128(v, mask));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_and_si128(_mm_srli_epi16(v, 4), mask));
    }
    static void decode(SignedBytes, const std::uint8_t* bytes, int, std::uint8_t* out) noexcept {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_xor_si256(v, _mm256_set1_epi8(char(0x80))));
    }

    /// Codes -> floats with xsimd doing the float arithmetic of QuantizedMatrix::dequantize.
    static void dequantize(const std::uint8_t* codes, int n, const GroupRef& g, bool float_min, float* out) noexcept {
        using batch = xsimd::batch<float, xsimd::fma3<xsimd::avx2>>;
        const batch scale(g.scale), min(g.min);
        const __m256i zero = _mm256_set1_epi32(g.zero_code);
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
            batch v;
            if (float_min) v = xsimd::fma(scale, batch(_mm256_cvtepi32_ps(q)), min);
            else v = scale * batch(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zero)));
            v.store_unaligned(out + i);
        }
        for (; i < n; ++i)
            out[i] = float_min ? std::fma(g.scale, float(codes[i]), g.min) : g.scale * float(int(codes[i]) - g.zero_code);
    }
};

}  // namespace qforge::simd::detail
#endif
