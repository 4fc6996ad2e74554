#pragma once
/// @file
/// Convenience overloads taking xtensor expressions. The core API takes views of the caller's
/// buffers; these evaluate an expression into a row-major FP32 tensor first (a copy unless the
/// expression already is one) and return xtensor containers.
#include <xtensor/xadapt.hpp>
#include <xtensor/xeval.hpp>
#include <xtensor/xtensor.hpp>

#include "qforge/core/quantized.hpp"
#include "qforge/core/view.hpp"
#include "qforge/metrics/weight_error.hpp"
#include "qforge/quantizers/registry.hpp"

namespace qforge {

/// A 2-D expression as a contiguous row-major FP32 tensor.
template <class E>
xt::xtensor<float, 2, xt::layout_type::row_major> to_matrix(const xt::xexpression<E>& e) {
    const auto& expr = e.derived_cast();
    if (expr.dimension() != 2)
        throw InvalidArgument("expected a 2-D weight matrix, got " + std::to_string(expr.dimension()) + " dimensions");
    return xt::xtensor<float, 2, xt::layout_type::row_major>(expr);
}

/// A view of a row-major tensor's storage.
inline MatrixView<const float> view_of(const xt::xtensor<float, 2, xt::layout_type::row_major>& t) {
    return {t.data(), t.shape()[0], t.shape()[1]};
}

/// `quantize<Scheme<...>>(expression, calibration, settings)`.
template <class S, class E>
QuantizedLayer quantize(const xt::xexpression<E>& w, const LayerCalibration& calib = {}, const QuantizeSettings& o = {}) {
    const auto m = to_matrix(w);
    return quantize<S>(view_of(m), calib, o);
}

/// Any quantizer on an expression.
template <class Q, class E>
    requires requires(const Q& q, MatrixView<const float> v) { q.quantize(v); }
QuantizedMatrix quantize_with(const Q& quantizer, const xt::xexpression<E>& w) {
    const auto m = to_matrix(w);
    return quantizer.quantize(view_of(m));
}

/// The dequantized matrix as an xtensor.
inline xt::xtensor<float, 2> dequantize_xt(const QuantizedMatrix& q) {
    const std::array<std::size_t, 2> shape{std::size_t(q.rows), std::size_t(q.cols)};
    return xt::adapt(q.dequantize(), shape);
}

template <class E1, class E2>
WeightError weight_error(const xt::xexpression<E1>& w, const xt::xexpression<E2>& w_hat) {
    const auto a = to_matrix(w), b = to_matrix(w_hat);
    if (a.shape() != b.shape()) throw InvalidArgument("weight_error: shapes differ");
    return weight_error(std::span<const float>(a.data(), a.size()), std::span<const float>(b.data(), b.size()));
}

}  // namespace qforge
