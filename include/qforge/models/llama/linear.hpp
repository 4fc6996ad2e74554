#pragma once
/// @file
/// A linear layer: FP32 weights or any packed format, multiplied on a backend without
/// materialising FP32 weights.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "qforge/formats/linear_weights.hpp"
#include "qforge/linalg/hadamard.hpp"
#include "qforge/runtime/backend.hpp"

namespace qforge::llama {

using qforge::Fp32Matrix;
using qforge::LinearWeights;

/// A linear layer: its weights, and optionally the order of its input columns.
///
/// `input_order` serves GPTQ act-order checkpoints with dynamic groups, whose groups are runs of
/// columns in the processing order: the weights stay in that order (so every packed format and
/// kernel works unchanged, groups contiguous) and the layer gathers its input x[order[k]] into a
/// scratch row before the product, O(cols) per token against the product's O(rows x cols).
/// Static groups avoid even that; dequantizing restores the original order.
///
/// `input_transform` (`,had`, linalg/hadamard.hpp): the weights are W Tᵀ and the layer applies T
/// to its input first (then the input order, if any); dequantizing gives W back.
class Linear {
public:
    Linear() = default;
    explicit Linear(LinearWeights w, std::vector<int> input_order = {}, std::shared_ptr<const HadamardTransform> input_transform = nullptr)
        : w_(std::move(w)), order_(std::move(input_order)), transform_(std::move(input_transform)) {
        if (transform_ && transform_->n != cols())
            throw InvalidArgument("Linear: the input transform is " + std::to_string(transform_->n) + " wide, the layer has " + std::to_string(cols()) + " columns");
        if (!order_.empty()) {
            if (order_.size() != std::size_t(cols())) throw InvalidArgument("Linear: the input order must list every column once");
            std::vector<char> seen(order_.size(), 0);
            for (const int c : order_) {
                if (c < 0 || std::size_t(c) >= order_.size() || seen[std::size_t(c)]) throw InvalidArgument("Linear: the input order is not a permutation");
                seen[std::size_t(c)] = 1;
            }
        }
    }

    /// Empty: columns in the original order; else column k of the weights multiplies x[order[k]].
    const std::vector<int>& input_order() const noexcept { return order_; }
    /// The randomized Hadamard transform applied to the input first (`,had`), or null.
    const std::shared_ptr<const HadamardTransform>& input_transform() const noexcept { return transform_; }

    int rows() const {
        return std::visit([](const auto& w) { return w.rows; }, w_);
    }
    int cols() const {
        return std::visit([](const auto& w) { return w.cols; }, w_);
    }
    const LinearWeights& weights() const noexcept { return w_; }

    /// Stored bytes of the layer: packed codes, scales, zeros/minimums, and the input order of
    /// an act-order layer (int32 per column, as the container stores it: GPTQ's g_idx costs the
    /// same), and 8 bytes for an input transform's seed. The one definition behind every "bits
    /// per weight" qforge prints (8 x bytes / weights; docs/conventions.md).
    std::size_t bytes() const {
        return std::visit(
                   [](const auto& w) -> std::size_t {
                       if constexpr (std::is_same_v<std::decay_t<decltype(w)>, Fp32Matrix>) return w.data.size() * 4;
                       else return w.bytes();
                   },
                   w_) +
               order_.size() * sizeof(std::int32_t) + (transform_ ? sizeof(std::uint64_t) : 0);
    }

    /// y = W x (one activation).
    void forward(std::span<const float> x, std::span<float> y, const Backend& backend) const {
        forward(MatrixView<const float>(x.data(), 1, x.size()), MatrixView<float>(y.data(), 1, y.size()), backend);
    }

    /// Y = X W^T for n activations (rows of X), on `backend` (Backend::linear: packed weights
    /// are never materialised as FP32).
    void forward(MatrixView<const float> x, MatrixView<float> y, const Backend& backend) const {
        if (transform_) {
            if (x.cols != std::size_t(transform_->n))
                throw InvalidArgument("Linear: input has " + std::to_string(x.cols) + " columns, the layer " + std::to_string(transform_->n));
            std::vector<float> t(x.rows * x.cols), tmp(x.cols);
            const auto fn = backend.host_fp32().hadamard;
            for (std::size_t r = 0; r < x.rows; ++r) {
                std::copy_n(x.row(r).data(), x.cols, t.data() + r * x.cols);
                fn(*transform_, t.data() + r * x.cols, tmp.data(), false);
            }
            forward_plain(MatrixView<const float>(t.data(), x.rows, x.cols), y, backend);
            return;
        }
        forward_plain(x, y, backend);
    }

    /// Y_i = X W_i^T for layers that read the same X (a block's q/k/v, its gate and up), through
    /// Backend::linear_together: the CPU backend quantizes a single activation once and runs the
    /// layers' row panels in one parallel section. The same bits as each layer's forward.
    /// Throws InvalidArgument on shapes (as forward does).
    static void forward_together(std::span<const Linear* const> layers, MatrixView<const float> x, std::span<const MatrixView<float>> ys,
                                 const Backend& backend) {
        if (layers.size() != ys.size())
            throw InvalidArgument("Linear::forward_together: " + std::to_string(layers.size()) + " layers, " + std::to_string(ys.size()) + " outputs");
        bool own_input = false;
        for (const Linear* l : layers) own_input = own_input || !l->order_.empty() || l->transform_;
        if (own_input) {  // act-order and transformed layers prepare their own input
            for (std::size_t i = 0; i < layers.size(); ++i) layers[i]->forward(x, ys[i], backend);
            return;
        }
        std::vector<std::shared_ptr<const PreparedLinear>> kept;
        std::vector<const PreparedLinear*> raw;
        for (const Linear* l : layers) {
            kept.push_back(l->prepared(backend));
            raw.push_back(kept.back().get());
        }
        backend.linear_together(raw, x, ys);
    }

private:
    void forward_plain(MatrixView<const float> x, MatrixView<float> y, const Backend& backend) const {
        if (!order_.empty()) {
            if (x.cols != order_.size()) throw InvalidArgument("Linear: input has " + std::to_string(x.cols) + " columns, the layer " + std::to_string(order_.size()));
            std::vector<float> gathered(x.rows * x.cols);
            for (std::size_t t = 0; t < x.rows; ++t)
                for (std::size_t k = 0; k < x.cols; ++k) gathered[t * x.cols + k] = x(t, std::size_t(order_[k]));
            prepared(backend)->forward(MatrixView<const float>(gathered.data(), x.rows, x.cols), y);
            return;
        }
        prepared(backend)->forward(x, y);
    }

    /// The weights as the last backend that multiplied them keeps them (Backend::prepare: on the
    /// CPU, row panels for decode's GEMV). A copy or a move starts empty: what is kept refers to
    /// the weights of the layer it was made for.
    struct Prepared {
        std::mutex mutex;
        const BackendInterface* backend = nullptr;       // the key; `weights` keeps it alive
        std::shared_ptr<const PreparedLinear> weights;
        Prepared() = default;
        Prepared(const Prepared&) {}
        Prepared& operator=(const Prepared&) {
            const std::lock_guard<std::mutex> lock(mutex);
            backend = nullptr;
            weights.reset();
            return *this;
        }
    };

    /// Shared: another thread may replace what is kept while this one multiplies.
    std::shared_ptr<const PreparedLinear> prepared(const Backend& backend) const {
        const std::lock_guard<std::mutex> lock(prepared_.mutex);
        if (prepared_.backend != &backend.implementation()) {
            // the prepared weights refer to the backend: their deleter holds it
            std::shared_ptr<const BackendInterface> impl = backend.shared_implementation();
            prepared_.weights = std::shared_ptr<const PreparedLinear>(backend.prepare(w_).release(),
                                                                      [impl](const PreparedLinear* p) { delete p; });
            prepared_.backend = impl.get();
        }
        return prepared_.weights;
    }

    LinearWeights w_;
    std::vector<int> order_;
    std::shared_ptr<const HadamardTransform> transform_;
    mutable Prepared prepared_;
};

}  // namespace qforge::llama
