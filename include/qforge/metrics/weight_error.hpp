#pragma once
/// @file
/// Error between a weight matrix and its quantized reconstruction. Sums run in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>

#include "qforge/core/error.hpp"

namespace qforge {

struct WeightError {
    double mse = 0.0;            ///< mean of (w - w_hat)^2
    double sqnr_db = 0.0;        ///< 10 log10(sum w^2 / sum (w - w_hat)^2); +inf when exact
    double max_abs = 0.0;        ///< max |w - w_hat|
    double relative_fro = 0.0;   ///< ||w - w_hat||_F / ||w||_F
};

inline WeightError weight_error(std::span<const float> w, std::span<const float> w_hat) {
    if (w.size() != w_hat.size())
        throw InvalidArgument("weight_error: sizes differ (" + std::to_string(w.size()) + " vs " +
                              std::to_string(w_hat.size()) + ")");
    if (w.empty()) throw InvalidData("weight_error: empty input");
    double signal = 0.0, noise = 0.0, max_abs = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        const double d = double(w[i]) - double(w_hat[i]);
        signal += double(w[i]) * double(w[i]);
        noise += d * d;
        max_abs = std::max(max_abs, std::fabs(d));
    }
    WeightError e;
    e.mse = noise / double(w.size());
    e.max_abs = max_abs;
    e.sqnr_db = noise == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(signal / noise);
    e.relative_fro = signal == 0.0 ? (noise == 0.0 ? 0.0 : std::numeric_limits<double>::infinity())
                                   : std::sqrt(noise / signal);
    return e;
}

}  // namespace qforge
