#pragma once
/// @file
/// AVX2 + FMA primitives. Integer dots use vpmaddubsw (u8 x s8 -> saturating i16 pairs), so
/// every code is kept small enough that no i16 sum can saturate: 2-, 3- and 4-bit codes are
/// used as they are (at most 4 * 2 * 15 * 127 = 15240 per lane); 8-bit codes go through the
/// sign trick (q - 128 as signed, |q - 128| * sign(x)), at most 2 * 128 * 127 per lane.
/// Compiled only where the compiler targets AVX2 and FMA.
#include <type_traits>

#include "qforge/backends/backend.hpp"
#include "qforge/backends/codecs.hpp"
#include "qforge/backends/panel.hpp"
#include "qforge/backends/simd/arch.hpp"
#include "qforge/backends/simd/x86_common.hpp"

#if defined(__AVX2__) && defined(__FMA__)
namespace qforge {

template <>
struct Primitives<Simd<simd::avx2>> : simd::detail::X86<simd::avx2> {
    using base = simd::detail::X86<simd::avx2>;
    using base::decode;

    QFORGE_INLINE static __m256i load(const void* p) noexcept {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    }
    /// The first n bytes at p (n <= 0: none), zero beyond; never reads past p + n. Whole 4-byte
    /// words come by a masked load (masked-out words are not read, so cannot fault); only a
    /// ragged end of 1-3 bytes goes through a copy. (A memset + memcpy per short sub-block was
    /// 40% of a GEMM on 576-wide rows.)
    QFORGE_INLINE static __m256i load_n(const std::uint8_t* p, int n) noexcept {
        if (n >= 32) return load(p);
        if (n <= 0) return _mm256_setzero_si256();
        const int words = n / 4;
        const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(words), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256i v = _mm256_maskload_epi32(reinterpret_cast<const int*>(p), live);
        if (n % 4) {
            alignas(32) std::uint8_t tmp[32];
            _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v);
            for (int i = words * 4; i < n; ++i) tmp[i] = p[i];
            v = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
        }
        return v;
    }
    QFORGE_INLINE static __m256i mad(__m256i codes, const std::int8_t* x) noexcept {
        return _mm256_maddubs_epi16(codes, load(x));
    }
    /// sum (c_i - 128) * x_i for 32 bytes of codes c (any 0..255), as i16 pairs.
    QFORGE_INLINE static __m256i mad_signed(__m256i codes, const std::int8_t* x) noexcept {
        const __m256i s = _mm256_xor_si256(codes, _mm256_set1_epi8(char(0x80)));
        const __m256i xv = load(x);
        return _mm256_maddubs_epi16(_mm256_abs_epi8(s), _mm256_sign_epi8(xv, s));
    }
    /// sum x_i over n <= 128 slots, for the +128 of the sign trick.
    QFORGE_INLINE static std::int32_t slot_sum(const std::int8_t* x, int n) noexcept {
        const __m256i ones = _mm256_set1_epi8(1);
        __m256i s = _mm256_setzero_si256();
        for (int i = 0; i < n; i += 32) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(ones, load(x + i)));
        return hsum(_mm256_madd_epi16(s, _mm256_set1_epi16(1)));
    }

    QFORGE_INLINE static __m256i widen(__m256i i16_pairs) noexcept {
        return _mm256_madd_epi16(i16_pairs, _mm256_set1_epi16(1));
    }

    /// Unreduced int32 partial dots of one sub-block; `correction` is added after reduction
    /// (the +128 of the sign trick, the same for every row).
    template <int B>
    QFORGE_INLINE static __m256i acc(Bitstream<B>, const std::uint8_t* bytes, int n, const std::int8_t* x) noexcept {
        const int nb = (n * B + 7) / 8;
        if constexpr (B == 3) {
            alignas(32) std::uint8_t tmp[128 + 16];
            if (n < act_sub_block) {
                std::memset(tmp, 0, sizeof tmp);
                std::memcpy(tmp + 4, bytes, std::size_t(nb));
                bytes = tmp + 4;
            }
            __m256i s = _mm256_setzero_si256();
            for (int c = 0; c * 32 < n; ++c) s = _mm256_add_epi16(s, mad(decode3x32(bytes + 12 * c, c == 3), x + 32 * c));
            return widen(s);
        } else {
            // a short sub-block (a row's last group) reads only its own bytes; the slots past n
            // hold zeros, so the zeroed code lanes add nothing
            if constexpr (B == 8) {
                __m256i s = _mm256_setzero_si256();
                for (int i = 0; i < n; i += 32) s = _mm256_add_epi32(s, widen(mad_signed(load_n(bytes + i, nb - i), x + i)));
                return s;
            } else if constexpr (B == 4) {
                const __m256i m = _mm256_set1_epi8(0x0f);
                const __m256i v0 = load_n(bytes, nb), v1 = load_n(bytes + 32, nb - 32);
                __m256i s = mad(_mm256_and_si256(v0, m), x);
                s = _mm256_add_epi16(s, mad(_mm256_and_si256(v1, m), x + 32));
                s = _mm256_add_epi16(s, mad(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m), x + 64));
                s = _mm256_add_epi16(s, mad(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m), x + 96));
                return widen(s);
            } else {  // B == 2
                const __m256i m = _mm256_set1_epi8(0x03);
                const __m256i v = load_n(bytes, nb);
                __m256i s = mad(_mm256_and_si256(v, m), x);
                s = _mm256_add_epi16(s, mad(_mm256_and_si256(_mm256_srli_epi16(v, 2), m), x + 32));
                s = _mm256_add_epi16(s, mad(_mm256_and_si256(_mm256_srli_epi16(v, 4), m), x + 64));
                s = _mm256_add_epi16(s, mad(_mm256_and_si256(_mm256_srli_epi16(v, 6), m), x + 96));
                return widen(s);
            }
        }
    }
    template <int B>
    QFORGE_INLINE static std::int32_t correction(Bitstream<B>, const std::int8_t* x, int n) noexcept {
        return B == 8 ? 128 * slot_sum(x, n) : 0;
    }

    QFORGE_INLINE static __m256i acc(NibbleBlock, const std::uint8_t* bytes, int, const std::int8_t* x) noexcept {
        const __m128i m = _mm_set1_epi8(0x0f);
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
        return widen(mad(_mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m)), x));
    }
    QFORGE_INLINE static std::int32_t correction(NibbleBlock, const std::int8_t*, int) noexcept { return 0; }

    /// Codebook nibbles: a byte shuffle looks the signed kernel levels up; the sign trick keeps
    /// vpmaddubsw exact (|level| <= 127). The correction adds the +128 of the unsigned codes.
    template <int N, const Codebook* C>
    QFORGE_INLINE static __m256i acc(CodebookNibbles<N, C>, const std::uint8_t* bytes, int, const std::int8_t* x) noexcept {
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(C->kernel_levels.data())));
        const auto dot = [&](__m256i codes, const std::int8_t* xs) {
            const __m256i lv = _mm256_shuffle_epi8(table, codes);
            return _mm256_maddubs_epi16(_mm256_abs_epi8(lv), _mm256_sign_epi8(load(xs), lv));
        };
        if constexpr (N == 32) {
            const __m128i m = _mm_set1_epi8(0x0f);
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
            return widen(dot(_mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m)), x));
        } else {
            static_assert(N == 64, "qforge: AVX2 codebook blocks of 32 or 64 weights");
            const __m256i m = _mm256_set1_epi8(0x0f);
            const __m256i v = load(bytes);
            return widen(_mm256_add_epi16(dot(_mm256_and_si256(v, m), x), dot(_mm256_and_si256(_mm256_srli_epi16(v, 4), m), x + 32)));
        }
    }
    template <int N, const Codebook* C>
    QFORGE_INLINE static std::int32_t correction(CodebookNibbles<N, C>, const std::int8_t* x, int) noexcept { return 128 * slot_sum(x, N); }

    QFORGE_INLINE static __m256i acc(SignedBytes, const std::uint8_t* bytes, int, const std::int8_t* x) noexcept {
        return widen(mad_signed(_mm256_xor_si256(load(bytes), _mm256_set1_epi8(char(0x80))), x));
    }
    QFORGE_INLINE static std::int32_t correction(SignedBytes, const std::int8_t* x, int) noexcept { return 128 * slot_sum(x, 32); }

    template <class Codec>
    QFORGE_INLINE static std::int32_t sub_dot(Codec codec, const std::uint8_t* bytes, int n, const std::int8_t* x, LaneOrder) noexcept {
        return hsum(acc(codec, bytes, n, x)) + correction(codec, x, n);
    }
    /// One sub-block's codes against 8 activations (a GEMM's token tile): the 8 inlined `acc`
    /// share the codes' load and unpacking, and one hadd tree reduces the 8 sums together.
    template <class Codec>
    QFORGE_INLINE static void sub_dot8(Codec codec, const std::uint8_t* bytes, int n, const std::int8_t* const* x, LaneOrder,
                                       std::int32_t* d) noexcept {
        __m256i a[8];
        for (int k = 0; k < 8; ++k) a[k] = acc(codec, bytes, n, x[k]);
        hsum8(a, d);
        for (int k = 0; k < 8; ++k) d[k] += correction(codec, x[k], n);
    }
    template <class Codec>
    QFORGE_INLINE static void sub_dot4(Codec codec, const std::uint8_t* const* bytes, int n, const std::int8_t* x, LaneOrder,
                         std::int32_t* d) noexcept {
        hsum4(acc(codec, bytes[0], n, x), acc(codec, bytes[1], n, x), acc(codec, bytes[2], n, x), acc(codec, bytes[3], n, x), d);
        const std::int32_t c = correction(codec, x, n);
        for (int i = 0; i < 4; ++i) d[i] += c;
    }
    /// From how many activations `gemm` takes this backend's panel kernel for a codec (else the
    /// row kernels). The 32-wide GGUF blocks' float steps (a scale, and for Q4_1 a minimum, per
    /// 32 codes) weigh more on 8 lanes than Dense's per 128: at 16 activations Q4_1's panels lost
    /// to the row kernels on all three shapes of bench_gemm, and from 32 they won in most paired
    /// runs, by 1.3-2x from 64 (QFORGE_ISA=avx2 on the Zen 5 VM, 2026-12-07; docs/kernels.md).
    template <class Codec>
    static constexpr int panel_min_tokens = std::is_same_v<Codec, NibbleBlock> ? 32 : 16;
    /// The recipe for one row panel (panel.hpp) and n activations, for Dense 2-, 3- and 4-bit
    /// codes and Q4_0/Q4_1's 4-bit blocks (below 16: vpmaddubsw's pairs stay below 2 * 15 * 127,
    /// far from saturation; 8-bit and codebook codes keep the row kernels here). A 64-byte step is
    /// two vectors of 8 rows; vpmaddubsw + vpmaddwd give each lane its 4 products, as vpdpbusd
    /// does on AVX-512. Every lane takes the operations of its row computed alone, in order
    /// (Kernels::panel_gemm_plain).
    template <ZeroPoint Zero, class Codec>
        requires((std::is_same_v<Codec, Bitstream<Codec::bits>> && Codec::bits <= 4) || std::is_same_v<Codec, NibbleBlock>)
    [[gnu::noinline]] static void panel_gemm(Codec, const RowPanel& p, const QuantizedActivation* xs, int n,
                                             const PanelTerms& terms, float* y, std::size_t ldy) noexcept {
        constexpr int T = 4, TT = PanelTerms::tokens;
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        const QuantizedActivation& a0 = xs[0];
        const __m256i ones = _mm256_set1_epi16(1);
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i keep[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(p.valid), lane),
                                 _mm256_cmpgt_epi32(_mm256_set1_epi32(p.valid - 8), lane)};
        for (int t0 = 0; t0 < n; t0 += T) {
            const int nt = n - t0 < T ? n - t0 : T;
            const QuantizedActivation* a[T];
            for (int t = 0; t < T; ++t) a[t] = &xs[t0 + (t < nt ? t : nt - 1)];
            const auto [zsum, dx, gsum] = terms.tile(t0);  // 4 activations: half a tile of 8
            __m256 out[T][2];
            for (int t = 0; t < T; ++t) out[t][0] = out[t][1] = _mm256_setzero_ps();
            const std::uint8_t* w = p.codes;
            for (int g = 0; g < a0.groups; ++g) {
                __m256 acc[T][2];
                const int subs = a0.sub_blocks_in_group(g);
                for (int k = 0; k < subs; ++k) {
                    const int s = a0.sub_index(g, k);
                    const int chunks = panel_chunks(a0, g, k);
                    const std::int8_t* x[T];
                    for (int t = 0; t < T; ++t) x[t] = a[t]->slots(s);
                    __m256i d[T][2];
                    for (int t = 0; t < T; ++t) d[t][0] = d[t][1] = _mm256_setzero_si256();
                    for (int c = 0; c < chunks; ++c, w += panel_chunk_bytes) {
#pragma GCC unroll 8
                        for (int j = 0; j < 8; ++j) {
                            const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 64 * j));
                            const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 64 * j + 32));
                            for (int t = 0; t < T; ++t) {
                                std::int32_t xb;
                                std::memcpy(&xb, x[t] + panel_chunk * c + 4 * j, 4);
                                const __m256i xv = _mm256_set1_epi32(xb);
                                d[t][0] = _mm256_add_epi32(d[t][0], _mm256_madd_epi16(_mm256_maddubs_epi16(w0, xv), ones));
                                d[t][1] = _mm256_add_epi32(d[t][1], _mm256_madd_epi16(_mm256_maddubs_epi16(w1, xv), ones));
                            }
                        }
                    }
                    for (int h = 0; h < 2; ++h) {
                        [[maybe_unused]] __m256i z;
                        if constexpr (Zero == ZeroPoint::integer)
                            z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.zero + std::size_t(g) * panel_rows + 8 * std::size_t(h)));
                        for (int t = 0; t < T; ++t) {
                            __m256i centred = d[t][h];
                            const std::int32_t zs = zsum[std::size_t(s) * TT + std::size_t(t)];
                            if constexpr (Zero == ZeroPoint::symmetric) centred = _mm256_sub_epi32(centred, _mm256_set1_epi32(zs));
                            if constexpr (Zero == ZeroPoint::integer) centred = _mm256_sub_epi32(centred, _mm256_mullo_epi32(z, _mm256_set1_epi32(zs)));
                            acc[t][h] = _mm256_fmadd_ps(_mm256_set1_ps(dx[std::size_t(s) * TT + std::size_t(t)]), _mm256_cvtepi32_ps(centred),
                                                        k == 0 ? _mm256_setzero_ps() : acc[t][h]);
                        }
                    }
                }
                for (int h = 0; h < 2; ++h) {
                    const __m256 sc = _mm256_loadu_ps(p.scale + std::size_t(g) * panel_rows + 8 * std::size_t(h));
                    for (int t = 0; t < T; ++t) out[t][h] = _mm256_fmadd_ps(sc, acc[t][h], out[t][h]);
                    if constexpr (float_min) {
                        const __m256 mn = _mm256_loadu_ps(p.min + std::size_t(g) * panel_rows + 8 * std::size_t(h));
                        for (int t = 0; t < T; ++t)
                            out[t][h] = _mm256_fmadd_ps(mn, _mm256_set1_ps(gsum[std::size_t(g) * TT + std::size_t(t)]), out[t][h]);
                    }
                }
            }
            for (int t = 0; t < nt; ++t)
                for (int h = 0; h < 2; ++h) _mm256_maskstore_ps(y + std::size_t(t0 + t) * ldy + 8 * std::size_t(h), keep[h], out[t][h]);
        }
    }
};

}  // namespace qforge
#endif
