#pragma once
/// @file
/// qforge's own blocked factorisations, nearly all of their work one GEMM given by the caller
/// (the default implementations of BackendInterface::cholesky_lower / invert_lower; a backend
/// with a LAPACK uses that instead). Row-major n x n floats in blocks of `block` rows (64).
#include <algorithm>
#include <cmath>
#include <vector>

#include "qforge/core/parallel.hpp"
#include "qforge/core/view.hpp"
#include "qforge/runtime/dispatch.hpp"

namespace qforge::linalg::blocked {

inline constexpr int block = 64;

/// In place: the lower triangle of `a` becomes L with L L^T = A (the strict upper triangle is
/// zeroed). Returns false, leaving `a` partly overwritten, when A is not positive definite.
template <class Gemm>
bool cholesky_lower(float* a, int n, const Fp32Functions& fns, int threads, Gemm&& gemm) {
    const std::size_t N = std::size_t(n);
    std::vector<float> update;
    for (int k0 = 0; k0 < n; k0 += block) {
        const int k1 = std::min(n, k0 + block), b = k1 - k0;
        // the diagonal block (earlier blocks' contributions already subtracted)
        for (int j = k0; j < k1; ++j) {
            float* rj = a + std::size_t(j) * N;
            const float d = rj[j] - fns.dot(rj + k0, rj + k0, j - k0);
            if (!(d > 0.0f) || !std::isfinite(d)) return false;
            rj[j] = std::sqrt(d);
            for (int i = j + 1; i < k1; ++i) {
                float* ri = a + std::size_t(i) * N;
                ri[j] = (ri[j] - fns.dot(ri + k0, rj + k0, j - k0)) / rj[j];
            }
        }
        if (k1 == n) break;
        // the panel below it: rows solve x L11^T = a
        parallel_for(N - std::size_t(k1), threads, [&](std::size_t r0, std::size_t r1) {
            for (std::size_t r = r0; r < r1; ++r) {
                float* ri = a + (std::size_t(k1) + r) * N;
                for (int j = k0; j < k1; ++j) {
                    const float* rj = a + std::size_t(j) * N;
                    ri[j] = (ri[j] - fns.dot(ri + k0, rj + k0, j - k0)) / rj[j];
                }
            }
        }, grain_for(std::size_t(b) * std::size_t(b) / 2));  // a row: b dots of up to b
        // the trailing matrix, lower triangle only, in row chunks: A22 -= P P^T
        const int m = n - k1;
        constexpr int chunk = 256;
        update.resize(std::size_t(chunk) * std::size_t(m));
        for (int t0 = 0; t0 < m; t0 += chunk) {
            const int t1 = std::min(m, t0 + chunk);
            const MatrixView<const float> rows_p(a + std::size_t(k1 + t0) * N + std::size_t(k0), std::size_t(t1 - t0), std::size_t(b), N);
            const MatrixView<const float> cols_p(a + std::size_t(k1) * N + std::size_t(k0), std::size_t(t1), std::size_t(b), N);
            const MatrixView<float> y(update.data(), std::size_t(t1 - t0), std::size_t(t1), std::size_t(m));
            gemm(cols_p, rows_p, y);
            for (int t = t0; t < t1; ++t) {
                float* row = a + std::size_t(k1 + t) * N + std::size_t(k1);
                const float* u = update.data() + std::size_t(t - t0) * std::size_t(m);
                for (int c = 0; c <= t; ++c) row[c] -= u[c];
            }
        }
    }
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) a[std::size_t(i) * N + std::size_t(j)] = 0.0f;
    return true;
}

/// In place: lower-triangular L (non-zero diagonal) becomes L^{-1}, also lower triangular.
template <class Gemm>
void invert_lower(float* l, int n, Gemm&& gemm) {
    const std::size_t N = std::size_t(n);
    std::vector<float> inv(N * N, 0.0f), inv_t(N * N, 0.0f), s, st, y;
    for (int i0 = 0; i0 < n; i0 += block) {
        const int i1 = std::min(n, i0 + block), b = i1 - i0;
        // the diagonal block's inverse by forward substitution
        for (int c = i0; c < i1; ++c) {
            inv[std::size_t(c) * N + std::size_t(c)] = 1.0f / l[std::size_t(c) * N + std::size_t(c)];
            for (int r = c + 1; r < i1; ++r) {
                float acc = 0.0f;
                for (int k = c; k < r; ++k) acc += l[std::size_t(r) * N + std::size_t(k)] * inv[std::size_t(k) * N + std::size_t(c)];
                inv[std::size_t(r) * N + std::size_t(c)] = -acc / l[std::size_t(r) * N + std::size_t(r)];
            }
        }
        if (i0 > 0) {
            // S = L[i0:i1, 0:i0] * X[0:i0, 0:i0], then X[i0:i1, 0:i0] = -X_ii S
            s.assign(std::size_t(b) * std::size_t(i0), 0.0f);
            gemm(MatrixView<const float>(inv_t.data(), std::size_t(i0), std::size_t(i0), N),
                      MatrixView<const float>(l + std::size_t(i0) * N, std::size_t(b), std::size_t(i0), N),
                      MatrixView<float>(s.data(), std::size_t(b), std::size_t(i0)));
            st.assign(std::size_t(i0) * std::size_t(b), 0.0f);
            for (int t = 0; t < b; ++t)
                for (int c = 0; c < i0; ++c) st[std::size_t(c) * std::size_t(b) + std::size_t(t)] = s[std::size_t(t) * std::size_t(i0) + std::size_t(c)];
            y.assign(std::size_t(b) * std::size_t(i0), 0.0f);
            gemm(MatrixView<const float>(st.data(), std::size_t(i0), std::size_t(b)),
                      MatrixView<const float>(inv.data() + std::size_t(i0) * N + std::size_t(i0), std::size_t(b), std::size_t(b), N),
                      MatrixView<float>(y.data(), std::size_t(b), std::size_t(i0)));
            for (int t = 0; t < b; ++t)
                for (int c = 0; c < i0; ++c) inv[std::size_t(i0 + t) * N + std::size_t(c)] = -y[std::size_t(t) * std::size_t(i0) + std::size_t(c)];
        }
        for (int t = i0; t < i1; ++t)
            for (int c = 0; c <= t; ++c) inv_t[std::size_t(c) * N + std::size_t(t)] = inv[std::size_t(t) * N + std::size_t(c)];
    }
    std::copy(inv.begin(), inv.end(), l);
}

}  // namespace qforge::linalg::blocked
