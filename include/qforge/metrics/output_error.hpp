#pragma once
/// @file
/// Layer-output error: how far the quantized layer's outputs are from the original's on given
/// activations. X holds one activation per row (n x cols), as a layer sees a batch of tokens.
#include <cmath>
#include <string>

#include "qforge/core/error.hpp"
#include "qforge/core/view.hpp"

namespace qforge {

/// ||X W^T - X W_hat^T||_F / ||X W^T||_F, accumulated in double.
inline double output_error(MatrixView<const float> w, MatrixView<const float> w_hat, MatrixView<const float> x) {
    if (w.rows != w_hat.rows || w.cols != w_hat.cols)
        throw InvalidArgument("output_error: W and W_hat shapes differ");
    if (x.cols != w.cols)
        throw InvalidArgument("output_error: activations have " + std::to_string(x.cols) +
                              " columns, the layer has " + std::to_string(w.cols) + " inputs");
    if (w.empty() || x.empty()) throw InvalidData("output_error: empty input");
    double signal = 0.0, noise = 0.0;
    for (std::size_t t = 0; t < x.rows; ++t)
        for (std::size_t r = 0; r < w.rows; ++r) {
            double y = 0.0, y_hat = 0.0;
            for (std::size_t c = 0; c < w.cols; ++c) {
                y += double(w(r, c)) * double(x(t, c));
                y_hat += double(w_hat(r, c)) * double(x(t, c));
            }
            signal += y * y;
            noise += (y - y_hat) * (y - y_hat);
        }
    return signal == 0.0 ? (noise == 0.0 ? 0.0 : INFINITY) : std::sqrt(noise / signal);
}

}  // namespace qforge
