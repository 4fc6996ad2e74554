#pragma once
/// @file
/// What post-training quantizers need to know about the activations a linear layer multiplies:
/// the input Hessian H = 2 X^T X / n (GPTQ's OBS error feedback), per-channel mean |x| and max
/// |x| (AWQ's scale search), and per-channel activation probability P(x > 0) (selecting
/// neurons that fire for a language or domain). Accumulated over batches of rows of X (one row
/// per token); X^T X in FP32 (its lower triangle only; GPTQ's reference accumulates H in FP32
/// too), each batch's product added by the FP32 GEMM (Backend::gram_fp32_accumulate).
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
        : width_(width), with_hessian_(with_hessian), sum_abs_(width), max_abs_(width), positive_(width) {}
    // move-only (the accumulator is a unique_ptr, allocated uninitialised by the first batch)

    std::size_t width() const noexcept { return width_; }
    long count() const noexcept { return count_; }
    bool has_hessian() const noexcept { return with_hessian_; }

    /// Adds n activations (rows of x, each `width` long); X^T X runs on `backend` (gram_fp32).
    void add(MatrixView<const float> x, const Backend& backend = {}) {
        if (x.cols != width_)
            throw InvalidArgument("activation statistics: rows of " + std::to_string(x.cols) + " values, expected " +
                                  std::to_string(width_));
        // channels split over threads, each channel's sums in token order (the same at any thread
        // count and on any backend: the kernel is exact); a non-finite activation found afterwards
        // from its channel's sum (|x| summed in double cannot overflow from finite floats)
        const auto stats_kernel = backend.host_fp32().channel_stats;
        parallel_for(width_, backend.threads(), [&](std::size_t j0, std::size_t j1) {
            double* sum_abs = sum_abs_.data();
            stats_kernel(x.data, x.rows, x.row_stride, j0, j1, sum_abs, max_abs_.data(), positive_.data());
            for (std::size_t j = j0; j < j1; ++j)
                if (!std::isfinite(sum_abs[j]))
                    for (std::size_t t = 0; t < x.rows; ++t)
                        if (!std::isfinite(x(t, j)))
                            throw InvalidData("activation statistics: non-finite activation at token " + std::to_string(t) +
                                              ", channel " + std::to_string(j));
        }, grain_for(x.rows * 4));
        if (with_hessian_ && x.rows > 0) {
            // allocated, not zeroed: the first batch's product is written, not added (zeroing and
            // first-touching a 4096-wide layer's accumulator cost about 8% of one batch's
            // accumulation). FP32, not double: a later batch then adds in the GEMM itself, with no
            // tile buffer and half the memory (the double accumulator's conversion pass and page
            // faults cost 10-15% of a 2048 x 4096 batch, 2026-12-07).
            const bool first = !xtx_;
            if (first) xtx_.reset(new float[width_ * width_]);
            backend.gram_fp32_accumulate(x, MatrixView<float>(xtx_.get(), width_, width_), first);
        }
        count_ += long(x.rows);
    }

    /// H = 2 X^T X / n, width x width row-major.
    std::vector<float> hessian() const {
        if (!with_hessian_) throw InvalidArgument("activation statistics were gathered without the Hessian");
        std::vector<float> h(width_ * width_, 0.0f);
        if (!xtx_) return h;
        const double scale = 2.0 / double(count_);
        const std::size_t w = width_;
        for (std::size_t i = 0; i < w; ++i)
            for (std::size_t j = 0; j <= i; ++j) h[i * w + j] = float(double(xtx_[i * w + j]) * scale);
        constexpr std::size_t tile = 64;  // the upper triangle mirrored in square tiles (cache-friendly on wide layers)
        for (std::size_t i0 = 0; i0 < w; i0 += tile)
            for (std::size_t j0 = i0; j0 < w; j0 += tile)
                for (std::size_t i = i0; i < std::min(w, i0 + tile); ++i)
                    for (std::size_t j = std::max(j0, i + 1); j < std::min(w, j0 + tile); ++j) h[i * w + j] = h[j * w + i];
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
        return (xtx_ ? width_ * width_ * sizeof(float) : 0) + sum_abs_.size() * sizeof(double) + max_abs_.size() * sizeof(float) +
               positive_.size() * sizeof(std::int64_t);
    }

private:
    std::size_t width_ = 0;
    bool with_hessian_ = false;
    long count_ = 0;
    std::unique_ptr<float[]> xtx_;  // X^T X's lower triangle (row-major, width x width), from the first batch on
    std::vector<double> sum_abs_;
    std::vector<float> max_abs_;
    std::vector<std::int64_t> positive_;
};

}  // namespace qforge
