#pragma once
/// @file
/// Dense symmetric positive-definite algebra for GPTQ on a backend (runtime/backend.hpp): a
/// Cholesky factorisation, the inverse of a lower-triangular matrix, and from them the upper
/// Cholesky factor of an inverse. Matrices are row-major n x n floats. Working in float matches
/// the reference GPTQ (PyTorch float32). The backend runs the first two: the CPU backend with
/// LAPACK's spotrf/strtri when it uses OpenBLAS, else qforge's blocked versions on its GEMM
/// (linalg/blocked.hpp).
#include <algorithm>
#include <cmath>
#include <vector>

#include "qforge/runtime/backend.hpp"

namespace qforge::linalg {

/// In place: the lower triangle of `a` becomes L with L L^T = A (the strict upper triangle is
/// zeroed). Returns false, leaving `a` partly overwritten, when A is not positive definite.
inline bool cholesky_lower(float* a, int n, const Backend& backend = {}) { return backend.implementation().cholesky_lower(a, n); }

/// In place: lower-triangular L (non-zero diagonal) becomes L^{-1}, also lower triangular.
inline void invert_lower(float* l, int n, const Backend& backend = {}) { backend.implementation().invert_lower(l, n); }

/// From SPD H: the upper-triangular U with U^T U = H^{-1} (what GPTQ's error feedback uses).
/// With P the order-reversing permutation and P H P = M M^T, U = P M^{-1} P: one Cholesky and
/// one triangular inverse, no explicit H^{-1}. Returns false when H is not positive definite.
inline bool inverse_cholesky_upper_in_place(std::vector<float>& a, int n, const Backend& backend = {});
inline bool inverse_cholesky_upper(const std::vector<float>& h, int n, std::vector<float>& u, const Backend& backend = {}) {
    u = h;
    return inverse_cholesky_upper_in_place(u, n, backend);
}

/// The same in place: `a` holds H and becomes U (no other n x n buffer: GPTQ on an 11008-column
/// layer keeps 485 MB per matrix). P X P of a row-major matrix is its elements in reverse order.
/// Returns false, leaving `a` overwritten, when H is not positive definite.
inline bool inverse_cholesky_upper_in_place(std::vector<float>& a, int n, const Backend& backend) {
    std::reverse(a.begin(), a.end());
    if (!cholesky_lower(a.data(), n, backend)) return false;
    invert_lower(a.data(), n, backend);
    std::reverse(a.begin(), a.end());
    return true;
}

}  // namespace qforge::linalg
