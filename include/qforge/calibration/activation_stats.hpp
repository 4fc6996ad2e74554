#pragma once
/// @file
/// What post-training quantizers need to know about the activations a linear layer multiplies:
/// the input Hessian H = 2 X^T X / n (GPTQ's OBS error feedback), per-channel mean |x| and max
/// |x| (AWQ's scale search), and per-channel activation probability P(x > 0) (selecting
/// neurons that fire for a language or domain). Accumulated over batches of rows of X (one row
/// per token); the Hessian in double across batches, its per-batch products by the FP32 GEMM.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/core/parallel.hpp"
#include "qforge/core/view.hpp"
#include "qforge/runtime/backend.hpp"

namespace qforge {

class ActivationStats {
public:
    ActivationStats() = default;
    ActivationStats(std::size_t width, bool with_hessian)
        : width_(width), with_hessian_(with_hessian), sum_abs_(width), max_abs_(width), positive_(width) {
        if (with_hessian) xtx_.assign(width * width, 0.0);
    }

    std::size_t width() const noexcept { return width_; }
    long count() const noexcept { return count_; }
    bool has_hessian() const noexcept { return with_hessian_; }

    /// Adds n activations (rows of x, each `width` long); X^T X runs on `backend` (gram_fp32).
    void add(MatrixView<const float> x, const Backend& backend = {}) {
        if (x.cols != width_)
            throw InvalidArgument("activation statistics: rows of " + std::to_string(x.cols) + " values, expected " +
                                  std::to_string(width_));
        // channels split over threads, each channel's sums in token order (the same at any thread count)
        parallel_for(width_, backend.threads(), [&](std::size_t j0, std::size_t j1) {
            for (std::size_t t = 0; t < x.rows; ++t) {
                const auto row = x.row(t);
                for (std::size_t j = j0; j < j1; ++j) {
                    const float v = row[j];
                    if (!std::isfinite(v))
                        throw InvalidData("activation statistics: non-finite activation at token " + std::to_string(t) +
                                          ", channel " + std::to_string(j));
                    sum_abs_[j] += std::fabs(double(v));
                    max_abs_[j] = std::max(max_abs_[j], std::fabs(v));
                    positive_[j] += v > 0.0f;
                }
            }
        }, grain_for(x.rows * 4));
        if (with_hessian_ && x.rows > 0) {
            // every element is written by the product: no need to zero it first
            const std::unique_ptr<float[]> product(new float[width_ * width_]);
            backend.gram_fp32(x, MatrixView<float>(product.get(), width_, width_));
            parallel_for(width_, backend.threads(), [&](std::size_t i0, std::size_t i1) {
                for (std::size_t i = i0 * width_; i < i1 * width_; ++i) xtx_[i] += double(product[i]);
            }, grain_for(width_));
        }
        count_ += long(x.rows);
    }

    /// H = 2 X^T X / n, width x width row-major.
    std::vector<float> hessian() const {
        if (!with_hessian_) throw InvalidArgument("activation statistics were gathered without the Hessian");
        std::vector<float> h(xtx_.size());
        const double scale = count_ ? 2.0 / double(count_) : 0.0;
        for (std::size_t i = 0; i < h.size(); ++i) h[i] = float(xtx_[i] * scale);
        return h;
    }
    std::vector<float> mean_abs() const {
        std::vector<float> m(width_);
        for (std::size_t j = 0; j < width_; ++j) m[j] = count_ ? float(sum_abs_[j] / double(count_)) : 0.0f;
        return m;
    }
    const std::vector<float>& max_abs() const noexcept { return max_abs_; }
    /// Fraction of tokens on which each channel was positive.
    std::vector<float> activation_probability() const {
        std::vector<float> p(width_);
        for (std::size_t j = 0; j < width_; ++j) p[j] = count_ ? float(double(positive_[j]) / double(count_)) : 0.0f;
        return p;
    }

    /// Bytes held (what layer-at-a-time capture keeps bounded).
    std::size_t bytes() const noexcept {
        return xtx_.size() * sizeof(double) + sum_abs_.size() * sizeof(double) + max_abs_.size() * sizeof(float) +
               positive_.size() * sizeof(std::int64_t);
    }

private:
    std::size_t width_ = 0;
    bool with_hessian_ = false;
    long count_ = 0;
    std::vector<double> xtx_, sum_abs_;
    std::vector<float> max_abs_;
    std::vector<std::int64_t> positive_;
};

}  // namespace qforge
