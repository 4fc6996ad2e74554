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

/// Input channels a layer keeps in FP16 beside its quantized weights (`,salient=P`,
/// quantizers/salient.hpp): their original indices, ascending, and their weights (rows x
/// columns.size(), row-major, fp16-exact values).
struct WideColumns {
    std::vector<int> columns;
    std::vector<float> values;
};

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
///
/// `wide` (`,salient=P`): the layer's input has cols() = the weights' columns + the kept ones;
/// `input_order` then names the original column of each weight column (a subset: never the
/// kept ones), and Y = X[:, order] Wᵀ + X[:, kept] Vᵀ.
class Linear {
public:
    Linear() = default;
    explicit Linear(LinearWeights w, std::vector<int> input_order = {}, std::shared_ptr<const HadamardTransform> input_transform = nullptr,
                    std::shared_ptr<const WideColumns> wide = nullptr)
        : w_(std::move(w)), order_(std::move(input_order)), transform_(std::move(input_transform)), wide_(std::move(wide)) {
        if (wide_) {
            const int stored = stored_cols(), k = int(wide_->columns.size());
            if (transform_) throw InvalidArgument("Linear: kept FP16 input channels and an input transform do not combine");
            if (k == 0 || wide_->values.size() != std::size_t(k) * std::size_t(rows()) || order_.size() != std::size_t(stored))
                throw InvalidArgument("Linear: kept FP16 input channels need their rows x channels weights and the order of the other columns");
            std::vector<char> seen(std::size_t(stored + k), 0);
            for (const int c : wide_->columns) {
                if (c < 0 || c >= stored + k || seen[std::size_t(c)]) throw InvalidArgument("Linear: a kept input channel is out of range or repeated");
                seen[std::size_t(c)] = 1;
            }
            for (const int c : order_) {
                if (c < 0 || c >= stored + k)
                    throw InvalidArgument("Linear: the input order names column " + std::to_string(c) + " of " + std::to_string(stored + k));
                if (seen[std::size_t(c)]) throw InvalidArgument("Linear: the input order repeats column " + std::to_string(c) + " or names a kept one");
                seen[std::size_t(c)] = 1;
            }
            return;
        }
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
    /// Input width: the stored weights' columns plus any kept FP16 channels.
    int cols() const { return stored_cols() + (wide_ ? int(wide_->columns.size()) : 0); }
    /// Columns of the stored (quantized) weights.
    int stored_cols() const {
        return std::visit([](const auto& w) { return w.cols; }, w_);
    }
    /// The input channels kept in FP16 (`,salient=P`), or null.
    const std::shared_ptr<const WideColumns>& wide() const noexcept { return wide_; }
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
               (wide_ && std::is_sorted(order_.begin(), order_.end()) ? 0 : order_.size() * sizeof(std::int32_t)) +
               (transform_ ? sizeof(std::uint64_t) : 0) +
               (wide_ ? wide_->columns.size() * (sizeof(std::int32_t) + 2 * std::size_t(rows())) : 0);
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
        for (const Linear* l : layers) own_input = own_input || !l->order_.empty() || l->transform_ || l->wide_;
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
            if (x.cols != std::size_t(cols())) throw InvalidArgument("Linear: input has " + std::to_string(x.cols) + " columns, the layer " + std::to_string(cols()));
            const std::size_t S = order_.size();
            std::vector<float> gathered(x.rows * S);
            for (std::size_t t = 0; t < x.rows; ++t)
                for (std::size_t k = 0; k < S; ++k) gathered[t * S + k] = x(t, std::size_t(order_[k]));
            prepared(backend)->forward(MatrixView<const float>(gathered.data(), x.rows, S), y);
            if (wide_) {  // Y += X[:, kept] Vᵀ
                const std::size_t K = wide_->columns.size();
                std::vector<float> kept(x.rows * K);
                for (std::size_t t = 0; t < x.rows; ++t)
                    for (std::size_t j = 0; j < K; ++j) kept[t * K + j] = x(t, std::size_t(wide_->columns[j]));
                backend.gemm_fp32_add(MatrixView<const float>(wide_->values.data(), std::size_t(rows()), K), MatrixView<const float>(kept.data(), x.rows, K), y,
                                      1.0f);
            }
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
    std::shared_ptr<const WideColumns> wide_;
    mutable Prepared prepared_;
};

}  // namespace qforge::llama
