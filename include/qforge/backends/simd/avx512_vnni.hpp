#pragma once
/// @file
/// AVX-512 (F/BW/VL) + VNNI + VBMI primitives. vpdpbusd multiplies u8 codes by s8 activations
/// and adds groups of four into i32 without saturation, so codes of every width are used as
/// they are. Partial sub-blocks use masked loads, so nothing past a row's bytes is read.
/// 3-bit streams are unpacked with vpermb + vpmultishiftqb (VBMI). Compiled only where the
/// compiler targets these extensions.
#include "qforge/backends/backend.hpp"
#include "qforge/backends/codecs.hpp"
#include "qforge/backends/panel.hpp"
#include "qforge/backends/simd/arch.hpp"
#include "qforge/backends/simd/x86_common.hpp"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && \
    defined(__AVX512VBMI__)
namespace qforge {

template <>
struct Primitives<Simd<simd::avx512_vnni>> : simd::detail::X86<simd::avx512_vnni> {
    using base = simd::detail::X86<simd::avx512_vnni>;

    QFORGE_INLINE static __m512i load(const void* p) noexcept { return _mm512_loadu_si512(p); }
    /// The first n bytes at p, zero beyond; never reads past p + n. Full registers use a plain
    /// load: a masked load measured far slower on the bench machine (Zen 4) even with all bits set.
    QFORGE_INLINE static __m512i load_n(const void* p, int n) noexcept {
        if (n >= 64) return _mm512_loadu_si512(p);
        return _mm512_maskz_loadu_epi8((__mmask64(1) << n) - 1, p);
    }
    /// 64 natural-order 3-bit codes (codes 64*upper .. 64*upper+63 of a sub-block) from `v`.
    QFORGE_INLINE static __m512i unpack3x64(__m512i v, int upper) noexcept {
        // qword lane c gets bytes 24*upper + 3c .. + 3; multishift then picks 8 bits at
        // offsets 0, 3, ..., 21 of each lane, i.e. codes 8c .. 8c + 7.
        struct Table {
            alignas(64) std::uint8_t idx[2][64];
        };
        static constexpr Table table = [] {
            Table t{};
            for (int h = 0; h < 2; ++h)
                for (int c = 0; c < 8; ++c)
                    for (int j = 0; j < 8; ++j) t.idx[h][8 * c + j] = std::uint8_t(24 * h + 3 * c + (j < 4 ? j : 3));
            return t;
        }();
        const std::uint8_t* idx = table.idx[upper];
        const __m512i gathered = _mm512_permutexvar_epi8(_mm512_load_si512(reinterpret_cast<const void*>(idx)), v);
        const __m512i ctrl = _mm512_set1_epi64(0x15120f0c09060300LL);  // 0,3,6,...,21
        return _mm512_and_si512(_mm512_multishift_epi64_epi8(ctrl, gathered), _mm512_set1_epi8(7));
    }

    template <int B>
    static void decode(Bitstream<B> codec, const std::uint8_t* bytes, int n, std::uint8_t* out) noexcept {
        if constexpr (B == 3) {
            const __m512i v = load_n(bytes, (3 * n + 7) / 8);
            _mm512_storeu_si512(out, unpack3x64(v, 0));
            if (n > 64) _mm512_storeu_si512(out + 64, unpack3x64(v, 1));
        } else {
            base::decode(codec, bytes, n, out);
        }
    }
    using base::decode;

    /// Unreduced int32 partial dots of one sub-block.
    template <int B>
    QFORGE_INLINE static __m512i acc(Bitstream<B>, const std::uint8_t* bytes, int n, const std::int8_t* x) noexcept {
        const int nb = (n * B + 7) / 8;
        __m512i a = _mm512_setzero_si512();
        if constexpr (B == 8) {
            a = _mm512_dpbusd_epi32(a, load_n(bytes, nb), load(x));
            if (n > 64) a = _mm512_dpbusd_epi32(a, load_n(bytes + 64, nb - 64), load(x + 64));
        } else if constexpr (B == 4) {
            const __m512i m = _mm512_set1_epi8(0x0f);
            const __m512i v = load_n(bytes, nb);
            a = _mm512_dpbusd_epi32(a, _mm512_and_si512(v, m), load(x));
            a = _mm512_dpbusd_epi32(a, _mm512_and_si512(_mm512_srli_epi16(v, 4), m), load(x + 64));
        } else if constexpr (B == 2) {
            const __m512i m = _mm512_set1_epi8(0x03);
            const __m256i half = nb >= 32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes))
                                          : _mm256_maskz_loadu_epi8((__mmask32(1) << nb) - 1, bytes);
            const __m512i v = _mm512_broadcast_i64x4(half);
            // low half shifted by 0 (codes 4j), high half by 2 (codes 4j+1); then 4 and 6
            const __m512i s01 = _mm512_setr_epi64(0, 0, 0, 0, 0x0002000200020002LL, 0x0002000200020002LL,
                                                  0x0002000200020002LL, 0x0002000200020002LL);
            const __m512i s23 = _mm512_add_epi16(s01, _mm512_set1_epi16(4));
            a = _mm512_dpbusd_epi32(a, _mm512_and_si512(_mm512_srlv_epi16(v, s01), m), load(x));
            a = _mm512_dpbusd_epi32(a, _mm512_and_si512(_mm512_srlv_epi16(v, s23), m), load(x + 64));
        } else {  // B == 3
            const __m512i v = load_n(bytes, nb);
            a = _mm512_dpbusd_epi32(a, unpack3x64(v, 0), load(x));
            if (n > 64) a = _mm512_dpbusd_epi32(a, unpack3x64(v, 1), load(x + 64));
        }
        return a;
    }

    QFORGE_INLINE static __m256i acc(NibbleBlock, const std::uint8_t* bytes, int, const std::int8_t* x) noexcept {
        const __m128i m = _mm_set1_epi8(0x0f);
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
        const __m256i codes = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
    }
    /// Codebook nibbles: a byte shuffle looks up level + 128 (unsigned), which vpdpbusd multiplies
    /// exactly; the recipe's zero code 128 removes the offset.
    template <int N, const Codebook* C>
    QFORGE_INLINE static auto acc(CodebookNibbles<N, C>, const std::uint8_t* bytes, int, const std::int8_t* x) noexcept {
        const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kernel_table_u8<C>.data()));
        if constexpr (N == 32) {
            const __m128i m = _mm_set1_epi8(0x0f);
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
            const __m256i codes = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
            const __m256i u = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(t), codes);
            return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
        } else {
            static_assert(N == 64, "qforge: AVX-512 codebook blocks of 32 or 64 weights");
            const __m256i m = _mm256_set1_epi8(0x0f);
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes));
            const __m512i codes = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m)), _mm256_and_si256(_mm256_srli_epi16(v, 4), m), 1);
            const __m512i u = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(t), codes);
            return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, load(x));
        }
    }

    QFORGE_INLINE static __m256i acc(SignedBytes, const std::uint8_t* bytes, int, const std::int8_t* x) noexcept {
        const __m256i codes = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes)),
                                               _mm256_set1_epi8(char(0x80)));
        return _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
    }

    QFORGE_INLINE static __m256i fold(__m512i v) noexcept {
        return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
    }
    QFORGE_INLINE static __m256i fold(__m256i v) noexcept { return v; }

    template <class Codec>
    QFORGE_INLINE static std::int32_t sub_dot(Codec codec, const std::uint8_t* bytes, int n, const std::int8_t* x, LaneOrder) noexcept {
        return hsum(fold(acc(codec, bytes, n, x)));
    }
    /// One sub-block's codes against 8 activations (a GEMM's token tile): the 8 inlined `acc`
    /// share the codes' load and unpacking, and one hadd tree reduces the 8 sums together.
    template <class Codec>
    QFORGE_INLINE static void sub_dot8(Codec codec, const std::uint8_t* bytes, int n, const std::int8_t* const* x, LaneOrder,
                                       std::int32_t* d) noexcept {
        __m256i a[8];
        for (int k = 0; k < 8; ++k) a[k] = fold(acc(codec, bytes, n, x[k]));
        hsum8(a, d);
    }
    template <class Codec>
    QFORGE_INLINE static void sub_dot4(Codec codec, const std::uint8_t* const* bytes, int n, const std::int8_t* x, LaneOrder,
                         std::int32_t* d) noexcept {
        hsum4(fold(acc(codec, bytes[0], n, x)), fold(acc(codec, bytes[1], n, x)), fold(acc(codec, bytes[2], n, x)),
              fold(acc(codec, bytes[3], n, x)), d);
    }
    /// acc += vpdpbusd(w, the 4 bytes at x in every lane), the broadcast folded into the
    /// instruction's memory operand ({1to16}); the compiler emits a separate vpbroadcastd.
    QFORGE_INLINE static __m512i dpbusd_broadcast(__m512i acc, __m512i w, const std::int8_t* x) noexcept {
#if defined(__GNUC__)
        asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const std::int32_t*>(x)));
        return acc;
#else
        std::int32_t xb;
        std::memcpy(&xb, x, 4);
        return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(xb));
#endif
    }

    /// A kept panel's bit-plane mask (panel.hpp): 64 bits, little-endian, at `at`.
    QFORGE_INLINE static __mmask64 plane_mask(const std::uint8_t* at) noexcept {
        std::uint64_t m;
        std::memcpy(&m, at, 8);
        return _cvtu64_mask64(m);
    }

    /// Bit 4 (and 5) of byte step `step` added to the nibbles `v` where its plane mask is set:
    /// the planes of a kept chunk (panel.hpp) start at `planes`, `plane_bytes` apart.
    template <int Bits>
    QFORGE_INLINE static __m512i widen(__m512i v, const std::uint8_t* planes, int plane_bytes, int step) noexcept {
        if constexpr (Bits >= 5) v = _mm512_mask_add_epi8(v, plane_mask(planes + 8 * step), v, _mm512_set1_epi8(16));
        if constexpr (Bits >= 6) v = _mm512_mask_add_epi8(v, plane_mask(planes + plane_bytes + 8 * step), v, _mm512_set1_epi8(32));
        return v;
    }

    /// The 16 per-lane terms `t` (s.scale or s.min; `base`: its bases) of group g of kept panel p
    /// as floats: halfs, floats, or half base x int8 multiplier (factored: exact, panel.hpp).
    QFORGE_INLINE static __m512 panel_term(const PanelSet& s, const std::vector<std::uint8_t>& t, const std::vector<std::uint8_t>& base, int p,
                                           int g) noexcept {
        const std::uint8_t* at = s.terms(t, p, g);
        if (s.span > 0)
            return _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s.bases(base, p, g)))),
                                 _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at)))));
        if (s.half) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(at)));
        return _mm512_loadu_ps(reinterpret_cast<const float*>(at));
    }

    /// The recipe over kept panel p (panel.hpp, PanelSet) for one activation: per 64 bytes of
    /// codes one load and one vpdpbusd per code plane (nibbles: low and high), the 4 activation
    /// bytes broadcast from memory; four accumulators so the dot products do not wait on each
    /// other (integer sums: the order does not matter). 5- and 6-bit codes: each nibble vector
    /// gets bit 4 (and 5) from a 64-bit mask by a byte-masked add, no extra shuffle. The float
    /// steps are Kernels::panel_gemv_plain's, lane by lane, so outputs equal the scalar oracle
    /// bit for bit.
    template <ZeroPoint Zero, int Bits, class Codec>
    [[gnu::noinline]] static void panel_gemv(Codec, const PanelSet& s, int p, const QuantizedActivation& a, float* y) noexcept {
        static_assert(Bits == 4 || Bits == 5 || Bits == 6 || Bits == 8, "qforge: kept panels hold 4, 5, 6 or 8-bit codes");
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        const std::uint8_t* w = s.panel_codes(p);
        const int valid = s.rows - p * panel_rows;
        const __mmask16 keep = valid >= panel_rows ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
        const __m512i low = _mm512_set1_epi8(0x0f);
        __m512 out = _mm512_setzero_ps();
        for (int g = 0; g < a.groups; ++g) {
            __m512 acc = _mm512_setzero_ps();
            const int subs = a.sub_blocks_in_group(g);
            for (int k = 0; k < subs; ++k) {
                const int sub = a.sub_index(g, k);
                const int chunks = panel_chunks(a, g, k);
                const std::int8_t* x = a.slots(sub);
                __m512i d0 = _mm512_setzero_si512(), d1 = d0, d2 = d0, d3 = d0;
                // a sub-block of at most 16 positions is half a chunk (kept_half_chunk): 2 nibble
                // steps (4 byte steps) and 4 masks per plane
                const int nsteps = kept_half_chunk(a, g, k) ? 2 : 4;
                for (int c = 0; c < chunks; ++c, x += panel_chunk) {
                    if constexpr (Bits < 8) {
                        const std::uint8_t* planes = w + 64 * nsteps;
                        const int plane_bytes = 16 * nsteps;
#pragma GCC unroll 2
                        for (int j = 0; j < nsteps; j += 2) {
                            // unaligned loads: a 5-bit half chunk is 160 bytes
                            const __m512i v0 = _mm512_loadu_si512(reinterpret_cast<const void*>(w + 64 * j));
                            const __m512i v1 = _mm512_loadu_si512(reinterpret_cast<const void*>(w + 64 * j + 64));
                            d0 = dpbusd_broadcast(d0, widen<Bits>(_mm512_and_si512(v0, low), planes, plane_bytes, 2 * j), x + 8 * j);
                            d1 = dpbusd_broadcast(d1, widen<Bits>(_mm512_and_si512(_mm512_srli_epi16(v0, 4), low), planes, plane_bytes, 2 * j + 1), x + 8 * j + 4);
                            d2 = dpbusd_broadcast(d2, widen<Bits>(_mm512_and_si512(v1, low), planes, plane_bytes, 2 * j + 2), x + 8 * j + 8);
                            d3 = dpbusd_broadcast(d3, widen<Bits>(_mm512_and_si512(_mm512_srli_epi16(v1, 4), low), planes, plane_bytes, 2 * j + 3), x + 8 * j + 12);
                        }
                        w += 16 * Bits * nsteps;
                    } else {
#pragma GCC unroll 2
                        for (int j = 0; j < 2 * nsteps; j += 4, w += 256) {
                            d0 = dpbusd_broadcast(d0, _mm512_load_si512(reinterpret_cast<const void*>(w)), x + 4 * j);
                            d1 = dpbusd_broadcast(d1, _mm512_load_si512(reinterpret_cast<const void*>(w + 64)), x + 4 * j + 4);
                            d2 = dpbusd_broadcast(d2, _mm512_load_si512(reinterpret_cast<const void*>(w + 128)), x + 4 * j + 8);
                            d3 = dpbusd_broadcast(d3, _mm512_load_si512(reinterpret_cast<const void*>(w + 192)), x + 4 * j + 12);
                        }
                    }
                }
                __m512i centred = _mm512_add_epi32(_mm512_add_epi32(d0, d1), _mm512_add_epi32(d2, d3));
                if constexpr (Zero == ZeroPoint::symmetric)
                    centred = _mm512_sub_epi32(centred, _mm512_set1_epi32(s.zero_code * a.sum[std::size_t(sub)]));
                if constexpr (Zero == ZeroPoint::integer)
                    centred = _mm512_sub_epi32(centred, _mm512_mullo_epi32(_mm512_loadu_si512(s.zeros(p, g)), _mm512_set1_epi32(a.sum[std::size_t(sub)])));
                acc = _mm512_fmadd_ps(_mm512_set1_ps(a.scale[std::size_t(sub)]), _mm512_cvtepi32_ps(centred), acc);
            }
            out = _mm512_fmadd_ps(panel_term(s, s.scale, s.scale_base, p, g), acc, out);
            if constexpr (float_min) out = _mm512_fmadd_ps(panel_term(s, s.min, s.min_base, p, g), _mm512_set1_ps(a.group_sum[std::size_t(g)]), out);
        }
        _mm512_mask_storeu_ps(y, keep, out);
    }

    /// The recipe for one row panel (panel.hpp) and n activations: 8 activations at a time, 16
    /// rows per vector; vpdpbusd adds each lane's 4 code x activation products, the activation
    /// bytes broadcast. Every lane takes the operations of its row computed alone, in order
    /// (Kernels::panel_gemm_plain), so outputs equal the scalar oracle bit for bit.
    template <ZeroPoint Zero, class Codec>
    [[gnu::noinline]] static void panel_gemm(Codec, const RowPanel& p, const QuantizedActivation* xs, int n, const PanelTerms& terms,
                                             float* y, std::size_t ldy) noexcept {
        constexpr int T = PanelTerms::tokens;
        constexpr bool float_min = Zero == ZeroPoint::float_min;
        const QuantizedActivation& a0 = xs[0];
        const __mmask16 keep = p.valid >= panel_rows ? __mmask16(0xffff) : __mmask16((1u << p.valid) - 1);
        for (int t0 = 0; t0 < n; t0 += T) {
            const int nt = n - t0 < T ? n - t0 : T;
            const QuantizedActivation* a[T];
            for (int t = 0; t < T; ++t) a[t] = &xs[t0 + (t < nt ? t : nt - 1)];
            const auto [zsum, dx, gsum] = terms.tile(t0);
            __m512 out[T];
            for (int t = 0; t < T; ++t) out[t] = _mm512_setzero_ps();
            const std::uint8_t* w = p.codes;
            for (int g = 0; g < a0.groups; ++g) {
                __m512 acc[T];
                const int subs = a0.sub_blocks_in_group(g);
                for (int k = 0; k < subs; ++k) {
                    const int s = a0.sub_index(g, k);
                    const int chunks = panel_chunks(a0, g, k);
                    const std::int8_t* x[T];
                    for (int t = 0; t < T; ++t) x[t] = a[t]->slots(s);
                    __m512i d[T];
                    for (int t = 0; t < T; ++t) d[t] = _mm512_setzero_si512();
                    for (int c = 0; c < chunks; ++c, w += panel_chunk_bytes) {
                        // the 8 steps of a chunk unrolled: each d[t] stays in its register
#pragma GCC unroll 8
                        for (int j = 0; j < 8; ++j) {
                            const __m512i wv = _mm512_load_si512(reinterpret_cast<const void*>(w + 64 * j));
                            for (int t = 0; t < T; ++t) d[t] = dpbusd_broadcast(d[t], wv, x[t] + panel_chunk * c + 4 * j);
                        }
                    }
                    [[maybe_unused]] __m512i z;
                    if constexpr (Zero == ZeroPoint::integer) z = _mm512_loadu_si512(p.zero + std::size_t(g) * panel_rows);
                    const std::int32_t* zs = zsum + std::size_t(s) * T;
                    const float* ds = dx + std::size_t(s) * T;
                    for (int t = 0; t < T; ++t) {
                        __m512i centred = d[t];
                        if constexpr (Zero == ZeroPoint::symmetric) centred = _mm512_sub_epi32(centred, _mm512_set1_epi32(zs[t]));
                        if constexpr (Zero == ZeroPoint::integer) centred = _mm512_sub_epi32(centred, _mm512_mullo_epi32(z, _mm512_set1_epi32(zs[t])));
                        acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(ds[t]), _mm512_cvtepi32_ps(centred), k == 0 ? _mm512_setzero_ps() : acc[t]);
                    }
                }
                const __m512 sc = _mm512_loadu_ps(p.scale + std::size_t(g) * panel_rows);
                for (int t = 0; t < T; ++t) out[t] = _mm512_fmadd_ps(sc, acc[t], out[t]);
                if constexpr (float_min) {
                    const __m512 mn = _mm512_loadu_ps(p.min + std::size_t(g) * panel_rows);
                    const float* gs = gsum + std::size_t(g) * T;
                    for (int t = 0; t < T; ++t) out[t] = _mm512_fmadd_ps(mn, _mm512_set1_ps(gs[t]), out[t]);
                }
            }
            for (int t = 0; t < nt; ++t) _mm512_mask_storeu_ps(y + std::size_t(t0 + t) * ldy, keep, out[t]);
        }
    }
};

}  // namespace qforge
#endif
