#pragma once
/// @file
/// Non-owning matrix views: how callers hand qforge their own buffers.
#include <cstddef>
#include <span>
#include <string>

#include "qforge/core/error.hpp"

namespace qforge {

/// A row-major matrix in someone else's memory: element (r, c) is data[r * row_stride + c].
template <class T>
struct MatrixView {
    T* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t row_stride = 0;  ///< elements between the starts of consecutive rows

    MatrixView() = default;
    MatrixView(T* d, std::size_t r, std::size_t c) : data(d), rows(r), cols(c), row_stride(c) {}
    MatrixView(T* d, std::size_t r, std::size_t c, std::size_t stride)
        : data(d), rows(r), cols(c), row_stride(stride) {
        if (stride < c) throw InvalidArgument("matrix view: row stride smaller than the row length");
    }
    /// Views of mutable data convert to views of const data.
    template <class U>
        requires std::is_same_v<T, const U>
    MatrixView(const MatrixView<U>& other)
        : data(other.data), rows(other.rows), cols(other.cols), row_stride(other.row_stride) {}

    T& operator()(std::size_t r, std::size_t c) const noexcept { return data[r * row_stride + c]; }
    std::span<T> row(std::size_t r) const noexcept { return {data + r * row_stride, cols}; }
    bool empty() const noexcept { return rows == 0 || cols == 0; }
};

template <class T>
MatrixView(T*, std::size_t, std::size_t) -> MatrixView<T>;

}  // namespace qforge
