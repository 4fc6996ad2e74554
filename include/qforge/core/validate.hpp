#pragma once
/// @file
/// Input checks shared by every entry point: bad data becomes a clear exception, never UB.
#include <cmath>
#include <string>

#include "qforge/core/error.hpp"
#include "qforge/core/view.hpp"

namespace qforge {

/// Throws InvalidData for an empty matrix or a non-finite element, naming `what` and the position.
inline void require_finite_matrix(MatrixView<const float> m, const std::string& what) {
    if (m.empty())
        throw InvalidData(what + " is empty (" + std::to_string(m.rows) + " x " +
                          std::to_string(m.cols) + ")");
    for (std::size_t r = 0; r < m.rows; ++r)
        for (std::size_t c = 0; c < m.cols; ++c) {
            const float v = m(r, c);
            if (!std::isfinite(v))
                throw InvalidData(what + " has " + (std::isnan(v) ? "NaN" : "Inf") + " at (row " +
                                  std::to_string(r) + ", col " + std::to_string(c) + ")");
        }
}

/// qforge indexes rows and columns with int; larger matrices are refused up front.
inline void require_int_shape(std::size_t rows, std::size_t cols, const std::string& what) {
    constexpr std::size_t limit = std::size_t(1) << 30;
    if (rows >= limit || cols >= limit)
        throw InvalidArgument(what + " is too large (" + std::to_string(rows) + " x " +
                              std::to_string(cols) + ")");
}

}  // namespace qforge
