#pragma once
/// @file
/// FP32 kernels the model needs besides packed GEMV/GEMM: Y = X W^T on plain FP32 weights (the
/// reference model, calibration Hessians), the dot/axpy/softmax of attention and the MLP's SwiGLU. `Fp32Kernels<Scalar>`
/// is the oracle; `Fp32Kernels<Simd<Arch>>` uses the arch's xsimd batch and is compiled into
/// qforge::dispatch with that arch's flags. Vector sums are reassociated, so they differ from
/// the oracle by rounding only (tests bound it relative to sum |w x|).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qforge/backends/activation.hpp"
#include "qforge/backends/backend.hpp"
#include "qforge/linalg/hadamard.hpp"

namespace qforge {

/// One group's affine grid as the rounding kernel (`grid_round`) takes it. Weight w gets the
/// level c = clamp(nearbyint((w - min) / scale) + zero, lo, hi), stored as the code c + bias,
/// and stands for scale * (c - zero) + min (one fused multiply-add when `fused_min`, else the
/// product alone). The three affine kinds of QuantSpec (rtn.hpp's `affine_grid` builds them):
/// symmetric: min 0, zero 0, [lo, hi] = [-2^(b-1), 2^(b-1) - 1], bias 2^(b-1);
/// integer zero point z: min 0, zero z, [0, 2^b - 1], bias 0;
/// float minimum m: min m, zero 0, [0, 2^b - 1], bias 0, fused_min.
/// `scale` must not be 0 (a zero-range group's codes are the caller's rule).
struct AffineGrid {
    float scale = 1.0f;
    float min = 0.0f;
    float zero = 0.0f;
    float lo = 0.0f;
    float hi = 0.0f;
    float bias = 0.0f;
    bool fused_min = false;
};

namespace detail {
/// Fp32Kernels::channel_stats's one loop. Templated on the backend tag only so that each
/// instruction set's TU compiles its own symbol with its own flags (one shared inline function
/// would be compiled with several sets of flags and the linker would keep either copy).
template <class Tag>
inline void channel_stats_loop(const float* x, std::size_t rows, std::size_t stride, std::size_t j0, std::size_t j1, double* __restrict sum_abs,
                               float* __restrict max_abs, std::int64_t* __restrict positive) noexcept {
    for (std::size_t t = 0; t < rows; ++t) {
        const float* __restrict row = x + t * stride;
        for (std::size_t j = j0; j < j1; ++j) {
            const float v = row[j], a = std::fabs(v);
            sum_abs[j] += double(a);
            max_abs[j] = max_abs[j] < a ? a : max_abs[j];
            positive[j] += v > 0.0f ? 1 : 0;
        }
    }
}
}  // namespace detail

template <class B>
struct Fp32Kernels {
    static_assert(sizeof(B) == 0, "qforge: no FP32 kernels for this backend; include its header");
};

template <>
struct Fp32Kernels<Scalar> {
    static float dot(const float* a, const float* b, int n) noexcept {
        float s = 0.0f;
        for (int i = 0; i < n; ++i) s += a[i] * b[i];
        return s;
    }
    static void axpy(float alpha, const float* x, float* y, int n) noexcept {
        for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
    }
    /// `axpy` on `width` rows at once, stored as the columns of a panel: panel[j * ld + t] +=
    /// alpha[t] * x[j] for t < width, j < n, each element rounded as axpy(alpha[t], x, row t, n)
    /// rounds it (the same bits). GPTQ's in-block error feedback for a tile of rows: one call per
    /// column, and no scalar load of an element just written by a vector store.
    static void axpy_columns(const float* alpha, int width, const float* x, float* panel, std::size_t ld, int n) noexcept {
        for (int j = 0; j < n; ++j) {
            float* p = panel + std::size_t(j) * ld;
            for (int t = 0; t < width; ++t) p[t] += alpha[t] * x[j];
        }
    }
    /// Per-channel statistics of activations x (rows x stride floats, channels [j0, j1)): for each
    /// channel j, sum_abs[j] += |x| in double in row order, max_abs[j] = max(max_abs[j], |x|),
    /// positive[j] += (x > 0). Exact, so every backend gives the same bits; the loop has no branch
    /// so that it vectorises across channels (the arch's compile flags set the width).
    static void channel_stats(const float* x, std::size_t rows, std::size_t stride, std::size_t j0, std::size_t j1, double* __restrict sum_abs,
                              float* __restrict max_abs, std::int64_t* __restrict positive) noexcept {
        detail::channel_stats_loop<Scalar>(x, rows, stride, j0, j1, sum_abs, max_abs, positive);
    }
    /// The softmax of row[0, n) in place, of the entries scaled by `scale` (attention's 1/sqrt(d)):
    /// row[p] = exp(scale row[p] - m) / sum with m the largest scaled entry and the sum taken in
    /// ascending p. n >= 1. The one softmax of the decoder (prompt products and decode loop), so
    /// both round alike.
    static void softmax(float* row, int n, float scale) noexcept {
        float max_score = -INFINITY;
        for (int p = 0; p < n; ++p) max_score = std::max(max_score, row[p] *= scale);
        float sum = 0.0f;
        for (int p = 0; p < n; ++p) sum += (row[p] = std::exp(row[p] - max_score));
        for (int p = 0; p < n; ++p) row[p] /= sum;
    }
    /// SwiGLU of the MLP in place: gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
    static void swiglu(float* gate, const float* up, std::size_t n) noexcept {
        for (std::size_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }
    /// One weight onto the grid (AffineGrid's formula): its level, as a float.
    static float grid_level(float w, const AffineGrid& g) noexcept {
        return std::clamp(std::nearbyint((w - g.min) / g.scale) + g.zero, g.lo, g.hi);
    }
    static float grid_value(float c, const AffineGrid& g) noexcept {
        return g.fused_min ? std::fma(g.scale, c - g.zero, g.min) : g.scale * (c - g.zero);
    }
    /// n weights onto the grid: `codes` (if not null) gets each code; `out` (if not null) the
    /// value it stands for, or w minus that value when `residual`.
    static void grid_round(const float* w, int n, const AffineGrid& g, std::uint8_t* codes, float* out, bool residual) noexcept {
        for (int i = 0; i < n; ++i) {
            const float c = grid_level(w[i], g);
            if (codes) codes[i] = std::uint8_t(int(c + g.bias));
            if (out) out[i] = residual ? w[i] - grid_value(c, g) : grid_value(c, g);
        }
    }
    /// n weights onto a codebook grid (NF4, IQ4_NL): t = w / scale, its nearest of the `count`
    /// ascending `levels`, the lower one on ties (a scan from the lowest keeping the first
    /// strictly smaller distance); `codes` (if not null) gets the level's index, `out` (if not
    /// null) scale * level, or w minus it when `residual`. The rule of rtn.hpp's quantize_value /
    /// dequantize_value for codebook specs. `scale` must not be 0 (a zero-range group's codes
    /// are the caller's rule).
    static void codebook_round(const float* w, int n, const float* levels, int count, float scale, std::uint8_t* codes, float* out,
                               bool residual) noexcept {
        for (int i = 0; i < n; ++i) {
            const float t = w[i] / scale;
            int best = 0;
            float best_d = std::fabs(t - levels[0]);
            for (int k = 1; k < count; ++k)
                if (const float d = std::fabs(t - levels[k]); d < best_d) best_d = d, best = k;
            if (codes) codes[i] = std::uint8_t(best);
            if (out) {
                const float v = scale * levels[best];
                out[i] = residual ? w[i] - v : v;
            }
        }
    }
    /// One activation sub-block to 8 bits (activation.hpp's quantize_sub_scalar).
    static float quantize_sub(const float* x, int n, std::int8_t* q, std::int32_t* total) noexcept {
        return quantize_sub_scalar(x, n, q, total);
    }
    /// y[t * ldy + r] = w_r . x_t for rows [r0, r1) of w (row stride ldw) and n rows of x
    /// (row stride ldx), each `cols` long.
    static void gemm_rows(const float* w, std::size_t ldw, const float* x, std::size_t ldx, int n, int cols, int r0,
                          int r1, float* y, std::size_t ldy) noexcept {
        for (int r = r0; r < r1; ++r)
            for (int t = 0; t < n; ++t) y[std::size_t(t) * ldy + std::size_t(r)] = dot(w + std::size_t(r) * ldw, x + std::size_t(t) * ldx, cols);
    }

    /// The randomized Hadamard transform in place: the oracle (linalg/hadamard.hpp).
    static void hadamard(const HadamardTransform& t, float* x, float* tmp, bool transpose) noexcept { rht_apply(t, x, tmp, transpose); }
};

}  // namespace qforge

#if __has_include(<xsimd/xsimd.hpp>)
#include <type_traits>

#include <xsimd/xsimd.hpp>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace qforge {

/// Tiles of 4 weight rows x 4 activations keep 16 vector accumulators in registers, so each
/// loaded vector feeds four FMAs; that is what lets a compute-bound GEMM (prompt processing)
/// run well above a dot-at-a-time loop.
template <class Arch>
struct Fp32Kernels<Simd<Arch>> {
    using batch = xsimd::batch<float, typename Arch::xsimd_float_arch>;
    static constexpr int lanes = int(batch::size);

    static float tail_dot(const float* a, const float* b, int i, int n) noexcept {
        float s = 0.0f;
        for (; i < n; ++i) s += a[i] * b[i];
        return s;
    }
    static float dot(const float* a, const float* b, int n) noexcept {
        batch acc0(0.0f), acc1(0.0f);
        int i = 0;
        for (; i + 2 * lanes <= n; i += 2 * lanes) {
            acc0 = xsimd::fma(batch::load_unaligned(a + i), batch::load_unaligned(b + i), acc0);
            acc1 = xsimd::fma(batch::load_unaligned(a + i + lanes), batch::load_unaligned(b + i + lanes), acc1);
        }
        for (; i + lanes <= n; i += lanes) acc0 = xsimd::fma(batch::load_unaligned(a + i), batch::load_unaligned(b + i), acc0);
        return xsimd::hadd(acc0 + acc1) + tail_dot(a, b, i, n);
    }
    static void axpy(float alpha, const float* x, float* y, int n) noexcept {
        const batch a(alpha);
        int i = 0;
        for (; i + lanes <= n; i += lanes) xsimd::fma(a, batch::load_unaligned(x + i), batch::load_unaligned(y + i)).store_unaligned(y + i);
        for (; i < n; ++i) y[i] += alpha * x[i];
    }
    /// Fp32Kernels<Scalar>::channel_stats compiled with this arch's flags (exact: the same bits).
    static void channel_stats(const float* x, std::size_t rows, std::size_t stride, std::size_t j0, std::size_t j1, double* __restrict sum_abs,
                              float* __restrict max_abs, std::int64_t* __restrict positive) noexcept {
        detail::channel_stats_loop<Simd<Arch>>(x, rows, stride, j0, j1, sum_abs, max_abs, positive);
    }
    /// Fp32Kernels<Scalar>::axpy_columns in this arch's rounding: every element as `axpy` above
    /// rounds it. Row t's element j went through axpy's vector part when j < n rounded down to
    /// the lanes, else through its scalar tail; xsimd::fma is a true FMA on fma3<avx2> but the
    /// generic x * y + z on avx512f (fused only where the compiler contracts it: GNU mode,
    /// optimised builds, not the -O0 sanitizer build), so each column takes the same expression
    /// that element took in axpy (the test compares the two bit for bit in both builds).
    static void axpy_columns(const float* alpha, int width, const float* x, float* panel, std::size_t ld, int n) noexcept {
        const int vector_part = n / lanes * lanes;
        int t0 = 0;
        for (; t0 + lanes <= width; t0 += lanes) {
            const batch a = batch::load_unaligned(alpha + t0);
            for (int j = 0; j < vector_part; ++j) {
                float* p = panel + std::size_t(j) * ld + t0;
                xsimd::fma(a, batch(x[j]), batch::load_unaligned(p)).store_unaligned(p);
            }
            for (int j = vector_part; j < n; ++j) {
                float* p = panel + std::size_t(j) * ld + t0;
                for (int t = 0; t < lanes; ++t) p[t] += alpha[t0 + t] * x[j];
            }
        }
        if (t0 == width) return;
        const int rest = width - t0;
        const batch a = load_tail(alpha + t0, rest, 0.0f);
        for (int j = 0; j < vector_part; ++j) {
            float* p = panel + std::size_t(j) * ld + t0;
            store_tail(xsimd::fma(a, batch(x[j]), load_tail(p, rest, 0.0f)), p, rest);
        }
        for (int j = vector_part; j < n; ++j) {
            float* p = panel + std::size_t(j) * ld;
            for (int t = t0; t < width; ++t) p[t] += alpha[t] * x[j];
        }
    }

    /// softmax and swiglu below read a partial last vector through a copy padded with `fill`.
    static batch load_tail(const float* p, int count, float fill) noexcept {
        alignas(64) float buf[lanes];
        for (int j = 0; j < lanes; ++j) buf[j] = j < count ? p[j] : fill;
        return batch::load_aligned(buf);
    }
    static void store_tail(const batch& v, float* p, int count) noexcept {
        alignas(64) float buf[lanes];
        v.store_aligned(buf);
        for (int j = 0; j < count; ++j) p[j] = buf[j];
    }
    /// Fp32Kernels<Scalar>::softmax with xsimd's vector exp (within a few ulp of std::exp) and the
    /// sum reassociated: differs from the oracle by rounding only (test_forward bounds it).
    static void softmax(float* row, int n, float scale) noexcept {
        const batch s(scale);
        batch m(-INFINITY);
        int i = 0;
        for (; i + lanes <= n; i += lanes) {
            const batch v = batch::load_unaligned(row + i) * s;
            v.store_unaligned(row + i);
            m = xsimd::max(m, v);
        }
        const int tail = n - i;
        if (tail > 0) {
            const batch v = load_tail(row + i, tail, -INFINITY) * s;
            store_tail(v, row + i, tail);
            m = xsimd::max(m, v);
        }
        alignas(64) float mv[lanes];
        m.store_aligned(mv);
        float top = mv[0];
        for (int j = 1; j < lanes; ++j) top = std::max(top, mv[j]);
        const batch mx(top);
        batch acc(0.0f);
        for (i = 0; i + lanes <= n; i += lanes) {
            const batch e = xsimd::exp(batch::load_unaligned(row + i) - mx);
            e.store_unaligned(row + i);
            acc += e;
        }
        if (tail > 0) {  // the padding's exp(-inf) is 0
            const batch e = xsimd::exp(load_tail(row + i, tail, -INFINITY) - mx);
            store_tail(e, row + i, tail);
            acc += e;
        }
        const batch sum(xsimd::hadd(acc));
        for (i = 0; i + lanes <= n; i += lanes) (batch::load_unaligned(row + i) / sum).store_unaligned(row + i);
        if (tail > 0) store_tail(load_tail(row + i, tail, 0.0f) / sum, row + i, tail);
    }
    static void swiglu(float* gate, const float* up, std::size_t n) noexcept {
        const batch one(1.0f);
        std::size_t i = 0;
        for (; i + lanes <= n; i += lanes) {
            const batch g = batch::load_unaligned(gate + i);
            (g / (one + xsimd::exp(-g)) * batch::load_unaligned(up + i)).store_unaligned(gate + i);
        }
        if (const int tail = int(n - i); tail > 0) {
            const batch g = load_tail(gate + i, tail, 0.0f);
            store_tail(g / (one + xsimd::exp(-g)) * load_tail(up + i, tail, 0.0f), gate + i, tail);
        }
    }

    /// a * b + c rounded once. xsimd 8's fma on avx512f is a multiply then an add (two
    /// roundings), so AVX-512 calls the instruction itself.
    static batch fused(const batch& a, const batch& b, const batch& c) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
        if constexpr (std::is_same_v<typename Arch::xsimd_float_arch, xsimd::avx512f>) return batch(_mm512_fmadd_ps(a, b, c));
        else
#endif
            return xsimd::fma(a, b, c);
    }
    /// Fp32Kernels<Scalar>::grid_round with one lane per weight: the same operations in the same
    /// order (IEEE division, round-to-nearest-even, min/max of finite values, the same FMA), so
    /// the same bits.
    static void grid_round(const float* w, int n, const AffineGrid& g, std::uint8_t* codes, float* out, bool residual) noexcept {
        const batch scale(g.scale), mn(g.min), zero(g.zero), lo(g.lo), hi(g.hi), bias(g.bias);
        int i = 0;
        for (; i + lanes <= n; i += lanes) {
            const batch wv = batch::load_unaligned(w + i);
            // clamp(x, lo, hi) of std::clamp for finite x: x < lo ? lo : hi < x ? hi : x
            const batch c = xsimd::min(xsimd::max(xsimd::nearbyint((wv - mn) / scale) + zero, lo), hi);
            if (codes) {
                alignas(64) std::int32_t k[lanes];
                xsimd::to_int(c + bias).store_aligned(k);
                for (int j = 0; j < lanes; ++j) codes[i + j] = std::uint8_t(k[j]);
            }
            if (out) {
                const batch v = g.fused_min ? fused(scale, c - zero, mn) : scale * (c - zero);
                (residual ? wv - v : v).store_unaligned(out + i);
            }
        }
        if (i < n) Fp32Kernels<Scalar>::grid_round(w + i, n - i, g, codes ? codes + i : nullptr, out ? out + i : nullptr, residual);
    }

    /// Fp32Kernels<Scalar>::codebook_round with one lane per weight: the same division,
    /// distances and strict comparisons level by level, so the same index and value. The scalar
    /// scan was 55% of `qforge quantize --scheme awq:iq4nlg32` (its clip search rounds every group
    /// 21 times).
    static void codebook_round(const float* w, int n, const float* levels, int count, float scale, std::uint8_t* codes, float* out,
                               bool residual) noexcept {
        const batch s(scale);
        int i = 0;
        for (; i + lanes <= n; i += lanes) {
            const batch wv = batch::load_unaligned(w + i), t = wv / s;
            batch best_level(levels[0]), best_index(0.0f), best_d = xsimd::abs(t - best_level);
            for (int k = 1; k < count; ++k) {
                const batch level(levels[k]), d = xsimd::abs(t - level);
                const auto nearer = d < best_d;
                best_d = xsimd::select(nearer, d, best_d);
                best_level = xsimd::select(nearer, level, best_level);
                best_index = xsimd::select(nearer, batch(float(k)), best_index);
            }
            if (codes) {
                alignas(64) std::int32_t k[lanes];
                xsimd::to_int(best_index).store_aligned(k);
                for (int j = 0; j < lanes; ++j) codes[i + j] = std::uint8_t(k[j]);
            }
            if (out) {
                const batch v = s * best_level;
                (residual ? wv - v : v).store_unaligned(out + i);
            }
        }
        if (i < n) Fp32Kernels<Scalar>::codebook_round(w + i, n - i, levels, count, scale, codes ? codes + i : nullptr, out ? out + i : nullptr, residual);
    }

    /// quantize_sub_scalar with one lane per entry: the maximum of |x| is exact in any order, and
    /// the division, round-to-nearest-even and clamp are those of the scalar code, so the same bits.
    static float quantize_sub(const float* x, int n, std::int8_t* q, std::int32_t* total) noexcept {
        batch m(0.0f);
        int i = 0;
        for (; i + lanes <= n; i += lanes) m = xsimd::max(m, xsimd::abs(batch::load_unaligned(x + i)));
        alignas(64) float mv[lanes];
        m.store_aligned(mv);
        float amax = 0.0f;
        for (int j = 0; j < lanes; ++j) amax = std::max(amax, mv[j]);
        for (; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float dx = amax / 127.0f;
        std::int32_t sum = 0;
        if (dx > 0.0f) {
            const batch d(dx), lo(-127.0f), hi(127.0f);
            using ibatch = xsimd::batch<std::int32_t, typename Arch::xsimd_float_arch>;
            ibatch acc(0);
            for (i = 0; i + lanes <= n; i += lanes) {
                const ibatch k = xsimd::to_int(xsimd::min(xsimd::max(xsimd::nearbyint(batch::load_unaligned(x + i) / d), lo), hi));
                acc += k;
                alignas(64) std::int32_t kv[lanes];
                k.store_aligned(kv);
                for (int j = 0; j < lanes; ++j) q[i + j] = std::int8_t(kv[j]);
            }
            alignas(64) std::int32_t av[lanes];
            acc.store_aligned(av);
            for (int j = 0; j < lanes; ++j) sum += av[j];
            for (; i < n; ++i) {
                const float v = std::clamp(std::nearbyint(x[i] / dx), -127.0f, 127.0f);
                q[i] = std::int8_t(v);
                sum += std::int32_t(v);
            }
        }
        *total = sum;
        return dx;
    }

    template <int R, int T>
    static void tile(const float* w, std::size_t ldw, const float* x, std::size_t ldx, int cols, float* y,
                     std::size_t ldy) noexcept {
        batch acc[R][T];
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < T; ++t) acc[r][t] = batch(0.0f);
        int c = 0;
        for (; c + lanes <= cols; c += lanes) {
            batch xv[T];
            for (int t = 0; t < T; ++t) xv[t] = batch::load_unaligned(x + std::size_t(t) * ldx + std::size_t(c));
            for (int r = 0; r < R; ++r) {
                const batch wv = batch::load_unaligned(w + std::size_t(r) * ldw + std::size_t(c));
                for (int t = 0; t < T; ++t) acc[r][t] = xsimd::fma(wv, xv[t], acc[r][t]);
            }
        }
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < T; ++t)
                y[std::size_t(t) * ldy + std::size_t(r)] =
                    xsimd::hadd(acc[r][t]) + tail_dot(w + std::size_t(r) * ldw, x + std::size_t(t) * ldx, c, cols);
    }

    /// Rows are walked in blocks that stay in L2 while every activation passes over them.
    static void gemm_rows(const float* w, std::size_t ldw, const float* x, std::size_t ldx, int n, int cols, int r0,
                          int r1, float* y, std::size_t ldy) noexcept {
        constexpr int R = 4, T = 4;
        const int block = std::max(R, int((96 * 1024) / (sizeof(float) * std::size_t(std::max(cols, 1)))) / R * R);
        for (int rb = r0; rb < r1; rb += block) {
            const int re = std::min(rb + block, r1);
            for (int t = 0; t < n; t += T) {
                const int nt = std::min(T, n - t);
                const float* xt = x + std::size_t(t) * ldx;
                float* yt = y + std::size_t(t) * ldy;
                int r = rb;
                for (; r + R <= re; r += R) {
                    const float* wr = w + std::size_t(r) * ldw;
                    switch (nt) {
                        case 4: tile<R, 4>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                        case 3: tile<R, 3>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                        case 2: tile<R, 2>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                        default: tile<R, 1>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                    }
                }
                for (; r < re; ++r) {
                    const float* wr = w + std::size_t(r) * ldw;
                    switch (nt) {
                        case 4: tile<1, 4>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                        case 3: tile<1, 3>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                        case 2: tile<1, 2>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                        default: tile<1, 1>(wr, ldw, xt, ldx, cols, yt + r, ldy); break;
                    }
                }
            }
        }
    }

    /// The randomized Hadamard transform (linalg/hadamard.hpp's rht_apply, the oracle): the same
    /// adds, subtractions and products per value in the same order, `lanes` values at a time;
    /// the mixing across runs keeps four outputs' sums in registers over each chunk.
    static void hadamard(const HadamardTransform& t, float* x, float* tmp, bool transpose) noexcept {
        const std::size_t n = std::size_t(t.n), P = std::size_t(t.pow2), M = std::size_t(t.m), L = std::size_t(lanes);
        const auto scale_by = [&](const float* f) {
            std::size_t i = 0;
            for (; i + L <= n; i += L) (batch::load_unaligned(x + i) * batch::load_unaligned(f + i)).store_unaligned(x + i);
            for (; i < n; ++i) x[i] *= f[i];
        };
        const auto scale_all = [&] {
            const batch sc(t.scale);
            std::size_t i = 0;
            for (; i + L <= n; i += L) (batch::load_unaligned(x + i) * sc).store_unaligned(x + i);
            for (; i < n; ++i) x[i] *= t.scale;
        };
        const auto butterflies = [&] {
            for (std::size_t a = 0; a < M; ++a) {
                float* v = x + a * P;
                for (std::size_t h = 1; h < P; h *= 2)
                    for (std::size_t i = 0; i < P; i += 2 * h) {
                        std::size_t j = 0;
                        if (h >= L)
                            for (; j < h; j += L) {
                                const batch u = batch::load_unaligned(v + i + j), w = batch::load_unaligned(v + i + j + h);
                                (u + w).store_unaligned(v + i + j);
                                (u - w).store_unaligned(v + i + j + h);
                            }
                        for (; j < h; ++j) {
                            const float u = v[i + j], w = v[i + j + h];
                            v[i + j] = u + w;
                            v[i + j + h] = u - w;
                        }
                    }
            }
        };
        const auto mix = [&] {
            if (M == 1) return;
            const auto plus = [&](std::size_t a, std::size_t c) { return (transpose ? t.hm[c * M + a] : t.hm[a * M + c]) > 0; };
            if (P % L != 0 || M % 4 != 0) {
                rht_mix_plain(t, x, tmp, transpose);
                return;
            }
            for (std::size_t a = 0; a < M; a += 4)
                for (std::size_t b = 0; b < P; b += L) {
                    batch acc[4] = {batch(0.0f), batch(0.0f), batch(0.0f), batch(0.0f)};
                    for (std::size_t c = 0; c < M; ++c) {
                        const batch in = batch::load_unaligned(x + c * P + b);
                        for (std::size_t k = 0; k < 4; ++k) acc[k] = plus(a + k, c) ? acc[k] + in : acc[k] - in;
                    }
                    for (std::size_t k = 0; k < 4; ++k) acc[k].store_unaligned(tmp + (a + k) * P + b);
                }
            std::copy_n(tmp, n, x);
        };
        if (!transpose) {
            scale_by(t.signs.data());
            butterflies();
            mix();
            scale_all();
        } else {
            scale_all();
            mix();
            butterflies();
            scale_by(t.signs.data());
        }
    }
};

}  // namespace qforge
#endif
