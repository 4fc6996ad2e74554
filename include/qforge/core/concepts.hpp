#pragma once
/// @file
/// What each kind of policy must provide, named as C++20 concepts.
#include <concepts>
#include <cstddef>
#include <string>

#include "qforge/backends/backend.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/core/view.hpp"

namespace qforge {

/// Turns a weight matrix into codes, scales and zeros.
template <class Q>
concept Quantizer = requires(const Q& q, MatrixView<const float> w) {
    { q.quantize(w) } -> std::same_as<QuantizedMatrix>;
    { q.spec() } -> std::convertible_to<QuantSpec>;
};

/// Packs quantized matrices into a byte layout and back, losslessly.
template <class F>
concept Format = requires(const QuantizedMatrix& q, const typename F::Packed& p, const QuantSpec& s) {
    { F::name() } -> std::convertible_to<std::string>;
    { F::unsupported(s, 1, 1) } -> std::same_as<std::string>;
    { F::pack(q) } -> std::same_as<typename F::Packed>;
    { F::unpack(p) } -> std::same_as<QuantizedMatrix>;
    { p.bytes() } -> std::convertible_to<std::size_t>;
    p.view();
};

/// Stored bits per weight of a packed matrix: every byte the format keeps, over rows * cols.
template <Format F>
double bits_per_weight(const typename F::Packed& p) {
    return 8.0 * double(p.bytes()) / (double(p.rows) * double(p.cols));
}

}  // namespace qforge
