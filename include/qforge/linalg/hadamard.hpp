#pragma once
/// @file
/// Hadamard matrices and the randomized Hadamard transform (RHT) of incoherence processing
/// (QuIP#: Tseng et al., ICML 2024; QuaRot: Ashkboos et al., 2024): x ↦ T x with
/// T = H_n diag(s) / √n, s a seeded vector of random signs, T orthogonal (Tᵀ T = I). A linear
/// layer y = W x keeps its outputs when its weights are stored as W Tᵀ (each row w ↦ T w) and
/// its inputs are transformed at run time (x ↦ T x); the transformed weights have no outlier
/// columns left for a grid to waste its range on.
///
/// Orders: n = m · 2^k with m ∈ {1, 12, 20, 36}, H_n = H_m ⊗ H_{2^k} (Sylvester's construction
/// for 2^k; Paley's for m: construction I with q = 11, 19 for 12 and 20, construction II with
/// q = 17 for 36), the choice QuIP# makes for widths that are not powers of two. SmolLM2's
/// 576 = 36 · 16, 1536 = 12 · 128 and 192 = 12 · 16 all fit, as do Llama's 4096 and 8192.
/// Other widths (Llama-2-7B's 11008 = 43 · 256) are refused by name, not padded.
///
/// Applying T to x (n values): signs, then the Walsh-Hadamard butterflies within each of the m
/// runs of 2^k values (x indexed a · 2^k + b; H_n = H_m ⊗ H_{2^k}), then H_m across the runs
/// (for each b a sum over the runs in order, with H_m's ±1 entries), then the scale 1/√n.
/// `rht_apply` is the oracle; each instruction set's kernel (Fp32Kernels<B>::hadamard, reached
/// through Fp32Functions::hadamard) computes the same floats.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/core/random.hpp"

namespace qforge {

namespace detail {
/// χ(a) mod prime q: 0, 1 for a quadratic residue, -1 otherwise.
inline int legendre(int a, int q) {
    a = ((a % q) + q) % q;
    if (a == 0) return 0;
    long long r = 1, b = a;
    for (int e = (q - 1) / 2; e > 0; e >>= 1, b = b * b % q)
        if (e & 1) r = r * b % q;
    return r == 1 ? 1 : -1;
}
/// Paley I (q prime, q ≡ 3 mod 4): order q + 1, H = I + S with S = [[0, 1ᵀ], [-1, Q]].
inline std::vector<int> paley1(int q) {
    const int n = q + 1;
    std::vector<int> h(std::size_t(n) * std::size_t(n), 0);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
            int s;
            if (i == 0) s = j == 0 ? 0 : 1;
            else if (j == 0) s = -1;
            else s = legendre(j - i, q);
            h[std::size_t(i) * std::size_t(n) + std::size_t(j)] = (i == j ? 1 : 0) + s;
        }
    return h;
}
/// Paley II (q prime, q ≡ 1 mod 4): order 2(q + 1), C ⊗ [[1, 1], [1, -1]] + I ⊗ [[1, -1], [-1, -1]]
/// with C = [[0, 1ᵀ], [1, Q]] the symmetric conference matrix.
inline std::vector<int> paley2(int q) {
    const int m = q + 1, n = 2 * m;
    std::vector<int> h(std::size_t(n) * std::size_t(n), 0);
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < m; ++j) {
            const int c = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? 1 : legendre(j - i, q);
            const int a[2][2] = {{1, 1}, {1, -1}}, b[2][2] = {{1, -1}, {-1, -1}};
            for (int u = 0; u < 2; ++u)
                for (int v = 0; v < 2; ++v)
                    h[std::size_t(2 * i + u) * std::size_t(n) + std::size_t(2 * j + v)] = c * a[u][v] + (i == j ? b[u][v] : 0);
        }
    return h;
}
}  // namespace detail

/// A Hadamard matrix of order m ∈ {1, 2, 12, 20, 36} (m x m, entries ±1, H Hᵀ = m I), row-major.
/// Throws InvalidArgument for other orders.
inline std::vector<int> small_hadamard(int m) {
    switch (m) {
        case 1: return {1};
        case 2: return {1, 1, 1, -1};
        case 12: return detail::paley1(11);
        case 20: return detail::paley1(19);
        case 36: return detail::paley2(17);
        default: throw InvalidArgument("no built-in Hadamard matrix of order " + std::to_string(m) + " (1, 2, 12, 20, 36)");
    }
}

/// The randomized Hadamard transform of one width: T = H_m ⊗ H_{2^k} · diag(signs) / √n.
struct HadamardTransform {
    int n = 0;       ///< the width
    int m = 1;       ///< the non-power-of-two factor (1, 12, 20 or 36)
    int pow2 = 1;    ///< 2^k
    std::vector<int> hm;        ///< H_m, m x m
    std::vector<float> signs;   ///< ±1 per position (the seed's)
    float scale = 1.0f;         ///< 1 / √n (float)

    /// Throws InvalidArgument, naming n, when n is not m · 2^k for a built-in m.
    HadamardTransform(int width, std::uint64_t seed) : n(width) {
        if (width < 1) throw InvalidArgument("Hadamard transform: width " + std::to_string(width));
        bool found = false;
        for (const int f : {1, 12, 20, 36}) {
            if (width % f != 0) continue;
            const int p = width / f;
            if ((p & (p - 1)) == 0) {
                m = f, pow2 = p, found = true;
                break;
            }
        }
        if (!found)
            throw InvalidArgument("Hadamard transform: width " + std::to_string(width) +
                                  " is not 2^k times 1, 12, 20 or 36 (no Hadamard matrix of that order is built in)");
        hm = small_hadamard(m);
        signs.resize(std::size_t(n));
        SplitMix64 rng{seed};
        for (auto& s : signs) s = (rng.next() >> 63) ? -1.0f : 1.0f;
        scale = float(1.0 / std::sqrt(double(n)));
    }

    /// x ↦ T x in place, the oracle (rht_apply). `tmp`: n floats of scratch.
    void apply(float* x, float* tmp) const noexcept;
    /// x ↦ Tᵀ x in place (the inverse).
    void apply_transpose(float* x, float* tmp) const noexcept;
};

/// H_m (or its transpose) across the m runs of x into tmp, then back into x: for each position b
/// of a run, out[a, b] = sum over runs c in order of ±x[c, b] (the oracle's order).
inline void rht_mix_plain(const HadamardTransform& t, float* x, float* tmp, bool transpose) noexcept {
    const std::size_t n = std::size_t(t.n), P = std::size_t(t.pow2), M = std::size_t(t.m);
    for (std::size_t a = 0; a < M; ++a)
        for (std::size_t b = 0; b < P; ++b) {
            float v = 0.0f;
            for (std::size_t c = 0; c < M; ++c) v = (transpose ? t.hm[c * M + a] : t.hm[a * M + c]) > 0 ? v + x[c * P + b] : v - x[c * P + b];
            tmp[a * P + b] = v;
        }
    for (std::size_t i = 0; i < n; ++i) x[i] = tmp[i];
}

/// T x (or Tᵀ x when `transpose`) in place: the oracle. Each instruction set's kernel
/// (Fp32Kernels<B>::hadamard) does the same adds, subtractions and products per value in the
/// same order.
inline void rht_apply(const HadamardTransform& t, float* x, float* tmp, bool transpose) noexcept {
    const std::size_t n = std::size_t(t.n), P = std::size_t(t.pow2), M = std::size_t(t.m);
    const auto butterflies = [&] {
        for (std::size_t a = 0; a < M; ++a) {
            float* v = x + a * P;
            for (std::size_t h = 1; h < P; h *= 2)
                for (std::size_t i = 0; i < P; i += 2 * h)
                    for (std::size_t j = i; j < i + h; ++j) {
                        const float u = v[j], w = v[j + h];
                        v[j] = u + w;
                        v[j + h] = u - w;
                    }
        }
    };
    const float* s = t.signs.data();
    if (!transpose) {
        for (std::size_t i = 0; i < n; ++i) x[i] *= s[i];
        butterflies();
        if (M > 1) rht_mix_plain(t, x, tmp, false);
        for (std::size_t i = 0; i < n; ++i) x[i] *= t.scale;
    } else {
        for (std::size_t i = 0; i < n; ++i) x[i] *= t.scale;
        if (M > 1) rht_mix_plain(t, x, tmp, true);
        butterflies();  // H_{2^k} is symmetric
        for (std::size_t i = 0; i < n; ++i) x[i] *= s[i];
    }
}

inline void HadamardTransform::apply(float* x, float* tmp) const noexcept { rht_apply(*this, x, tmp, false); }
inline void HadamardTransform::apply_transpose(float* x, float* tmp) const noexcept { rht_apply(*this, x, tmp, true); }

}  // namespace qforge
