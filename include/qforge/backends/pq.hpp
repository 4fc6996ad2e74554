#pragma once
/// @file
/// The GEMV of product-quantized weights (formats/pq.hpp) through their codebooks: no weight is
/// decoded to FP32. For each codebook block and each sub-vector position p of it, a table of the
/// n centroids' dot products with x's sub-vector at p is built (n·d multiply-adds), and every row
/// of the block adds the entry its code names. `PqKernels<Scalar>::gemv` is the oracle; the
/// vector kernels (AVX2: 8 rows per register, AVX-512: 16) compute the same floats in the same
/// order, so they equal it bit for bit (tests/unit/test_pq.cpp):
/// - table entry c at p: v = cent_0[c] · x_0, then v = fma(cent_t[c], x_t, v) for t = 1 .. d-1;
/// - row r: y_r = 0, then y_r += entry(code) for the blocks of its row in column order and,
///   within a block, positions in order: one running float sum per row.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "qforge/backends/backend.hpp"
#include "qforge/backends/simd/arch.hpp"
#include "qforge/core/error.hpp"
#include "qforge/formats/pq.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace qforge {

/// PQ weights in the GEMV's form: each codebook block's codes position-major (for position p,
/// the 64 rows' codes as bytes, rows past the matrix 0) and its centroids transposed (d rows of n
/// floats, padded to a multiple of 16 with zeros). Codes are bytes, so n <= 256.
struct PqKernel {
    int rows = 0, cols = 0, d = 0, n = 0, n_pad = 0;
    int positions = 0;  ///< sub-vectors per block row (block_cols / d); the last column block may hold fewer
    int row_blocks = 0, col_blocks = 0;
    std::vector<std::uint8_t> codes;  ///< [block][p][64]
    std::vector<float> cents;         ///< [block][t][n_pad]

    /// Throws InvalidArgument when n > 256.
    static PqKernel from(const PqMatrix& m) {
        if (m.spec.n > 256) throw InvalidArgument("PQ GEMV: codes of " + std::to_string(m.spec.n) + " centroids do not fit a byte (n <= 256)");
        PqKernel k;
        k.rows = m.rows, k.cols = m.cols, k.d = m.spec.d, k.n = m.spec.n, k.n_pad = (m.spec.n + 15) / 16 * 16;
        k.positions = m.spec.block_cols() / m.spec.d;
        k.row_blocks = m.block_row_count(), k.col_blocks = m.block_col_count();
        const std::size_t books = std::size_t(m.codebooks()), P = std::size_t(k.positions), D = std::size_t(k.d);
        k.codes.assign(books * P * 64, 0);
        k.cents.assign(books * D * std::size_t(k.n_pad), 0.0f);
        const int per_row = m.subvectors_per_row();
        for (int r = 0; r < m.rows; ++r)
            for (int s = 0; s < per_row; ++s) {
                const int book = (r / 64) * k.col_blocks + s / k.positions, p = s % k.positions;
                k.codes[(std::size_t(book) * P + std::size_t(p)) * 64 + std::size_t(r % 64)] =
                    std::uint8_t(m.codes[std::size_t(r) * std::size_t(per_row) + std::size_t(s)]);
            }
        for (std::size_t b = 0; b < books; ++b) {
            const float* cb = m.codebook(int(b));
            for (std::size_t c = 0; c < std::size_t(k.n); ++c)
                for (std::size_t t = 0; t < D; ++t) k.cents[(b * D + t) * std::size_t(k.n_pad) + c] = cb[c * D + t];
        }
        return k;
    }
    /// Positions in column block j (the last one may be partial).
    int positions_in(int j) const noexcept {
        const int c0 = j * positions * d;
        return std::min(positions, (cols - c0) / d);
    }
    /// Bytes the GEMV reads for the weights (codes and centroids as held here).
    std::size_t bytes() const noexcept { return codes.size() + cents.size() * sizeof(float); }
};

using PqGemvFn = void (*)(const PqKernel&, const float* x, float* y, std::size_t rb0, std::size_t rb1) noexcept;

template <class B>
struct PqKernels {
    static_assert(sizeof(B) == 0, "qforge: no PQ kernels for this backend; include its header");
};

/// The oracle: row blocks [rb0, rb1) of y = W x (y has `rows` entries; x `cols`).
template <>
struct PqKernels<Scalar> {
    static void gemv(const PqKernel& k, const float* x, float* y, std::size_t rb0, std::size_t rb1) noexcept {
        const std::size_t P = std::size_t(k.positions), D = std::size_t(k.d), NP = std::size_t(k.n_pad);
        std::vector<float> table(NP);
        for (std::size_t rb = rb0; rb < rb1; ++rb) {
            float acc[64] = {};
            for (int j = 0; j < k.col_blocks; ++j) {
                const std::size_t book = rb * std::size_t(k.col_blocks) + std::size_t(j);
                const float* cents = k.cents.data() + book * D * NP;
                for (int p = 0; p < k.positions_in(j); ++p) {
                    const float* xs = x + (std::size_t(j) * P + std::size_t(p)) * D;
                    for (std::size_t c = 0; c < NP; ++c) {
                        float v = cents[c] * xs[0];
                        for (std::size_t t = 1; t < D; ++t) v = std::fma(cents[t * NP + c], xs[t], v);
                        table[c] = v;
                    }
                    const std::uint8_t* codes = k.codes.data() + (book * P + std::size_t(p)) * 64;
                    for (int r = 0; r < 64; ++r) acc[r] += table[codes[r]];
                }
            }
            const int r0 = int(rb) * 64;
            for (int r = 0; r < 64 && r0 + r < k.rows; ++r) y[r0 + r] = acc[r];
        }
    }
};

template <class Arch>
struct PqKernels<Simd<Arch>> {
    static void gemv(const PqKernel& k, const float* x, float* y, std::size_t rb0, std::size_t rb1) noexcept {
#if defined(__AVX2__) && defined(__FMA__)
        if constexpr (std::is_same_v<Arch, simd::avx512_vnni>) {
#if defined(__AVX512F__)
            run<16>(k, x, y, rb0, rb1);
#else
            PqKernels<Scalar>::gemv(k, x, y, rb0, rb1);
#endif
        } else {
            run<8>(k, x, y, rb0, rb1);
        }
#else
        PqKernels<Scalar>::gemv(k, x, y, rb0, rb1);
#endif
    }

private:
#if defined(__AVX2__) && defined(__FMA__)
    template <int L>
    static void run(const PqKernel& k, const float* x, float* y, std::size_t rb0, std::size_t rb1) noexcept {
        const std::size_t P = std::size_t(k.positions), D = std::size_t(k.d), NP = std::size_t(k.n_pad);
        alignas(64) float table[256];
        for (std::size_t rb = rb0; rb < rb1; ++rb) {
            alignas(64) float acc[64] = {};
            if constexpr (L == 16) {
#if defined(__AVX512F__)
                __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
                for (int j = 0; j < k.col_blocks; ++j) {
                    const std::size_t book = rb * std::size_t(k.col_blocks) + std::size_t(j);
                    const float* cents = k.cents.data() + book * D * NP;
                    for (int p = 0; p < k.positions_in(j); ++p) {
                        const float* xs = x + (std::size_t(j) * P + std::size_t(p)) * D;
                        const __m512 x0 = _mm512_set1_ps(xs[0]);
                        for (std::size_t c = 0; c < NP; c += 16) {
                            __m512 v = _mm512_mul_ps(_mm512_loadu_ps(cents + c), x0);
                            for (std::size_t t = 1; t < D; ++t) v = _mm512_fmadd_ps(_mm512_loadu_ps(cents + t * NP + c), _mm512_set1_ps(xs[t]), v);
                            _mm512_store_ps(table + c, v);
                        }
                        const std::uint8_t* codes = k.codes.data() + (book * P + std::size_t(p)) * 64;
                        if (NP <= 64) {  // the table in four registers: two-source permutes, then bit 5 picks the half
                            const __m512 t0 = _mm512_load_ps(table), t1 = _mm512_load_ps(table + 16), t2 = _mm512_load_ps(table + 32),
                                         t3 = _mm512_load_ps(table + 48);
                            for (int g = 0; g < 4; ++g) {
                                const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16 * g)));
                                const __m512 lo = _mm512_permutex2var_ps(t0, idx, t1), hi = _mm512_permutex2var_ps(t2, idx, t3);
                                const __mmask16 upper = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
                                a[g] = _mm512_add_ps(a[g], _mm512_mask_blend_ps(upper, lo, hi));
                            }
                        } else {
                            for (int g = 0; g < 4; ++g) {
                                const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16 * g)));
                                a[g] = _mm512_add_ps(a[g], _mm512_i32gather_ps(idx, table, 4));
                            }
                        }
                    }
                }
                for (int g = 0; g < 4; ++g) _mm512_store_ps(acc + 16 * g, a[g]);
#endif
            } else {
                __m256 a[8];
                for (auto& v : a) v = _mm256_setzero_ps();
                for (int j = 0; j < k.col_blocks; ++j) {
                    const std::size_t book = rb * std::size_t(k.col_blocks) + std::size_t(j);
                    const float* cents = k.cents.data() + book * D * NP;
                    for (int p = 0; p < k.positions_in(j); ++p) {
                        const float* xs = x + (std::size_t(j) * P + std::size_t(p)) * D;
                        const __m256 x0 = _mm256_set1_ps(xs[0]);
                        for (std::size_t c = 0; c < NP; c += 8) {
                            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(cents + c), x0);
                            for (std::size_t t = 1; t < D; ++t) v = _mm256_fmadd_ps(_mm256_loadu_ps(cents + t * NP + c), _mm256_set1_ps(xs[t]), v);
                            _mm256_store_ps(table + c, v);
                        }
                        const std::uint8_t* codes = k.codes.data() + (book * P + std::size_t(p)) * 64;
                        for (int g = 0; g < 8; ++g) {
                            const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + 8 * g)));
                            a[g] = _mm256_add_ps(a[g], _mm256_i32gather_ps(table, idx, 4));
                        }
                    }
                }
                for (int g = 0; g < 8; ++g) _mm256_store_ps(acc + 8 * g, a[g]);
            }
            const int r0 = int(rb) * 64;
            for (int r = 0; r < 64 && r0 + r < k.rows; ++r) y[r0 + r] = acc[r];
        }
    }
#endif
};

}  // namespace qforge
