#pragma once
/// @file
/// Calibrated quantization (GPTQ, AWQ, ...) in the memory of one decoder block: a `ModelSource`
/// over another source whose block linears come out quantized, block by block, as a reader asks
/// for them. Asking for any tensor of block l (its norms or one of its seven linears) reads that
/// block's weights from the underlying source (each released as soon as it is copied), runs the
/// method's block driver (BlockQuantizer) on the calibration hidden states, and drops block l-1's
/// results. A reader that takes tensors in file order (write_container, load_weights) therefore
/// holds one block's FP32 weights, its statistics and the hidden states (calibration tokens x
/// dim) — independent of the model's depth — and writes each block as it finishes.
///
/// Blocks must be read in order: asking for block l after block l+1 was made is an
/// InvalidArgument (the hidden states have moved on). Other tensors (embedding, output norm,
/// head) come from the underlying source unchanged. `layout()` of a block linear is planned from
/// the scheme (scheme_layout), so a container header can be written before the work.
#include <map>
#include <optional>
#include <span>
#include <string>

#include "qforge/pipelines/llama/quantize_model.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

/// Block `l`'s norms and linears from `src`, linears as FP32 (packed ones dequantized on
/// `backend`, bit for bit the scalar result); each tensor released as soon as it is copied. Errors
/// name the model and the tensor.
inline Layer read_fp32_block(const ModelSource& src, int l, const Backend& backend) {
    const Config& c = src.config();
    Layer L;
    const auto vec = [&](const char* what) {
        const std::string name = block_tensor_name(l, what);
        auto v = with_tensor_context(src.label(), name, [&] { return src.values(name, std::size_t(c.dim)); });
        src.release(name);
        return v;
    };
    L.attention_norm = vec("attn_norm");
    L.ffn_norm = vec("ffn_norm");
    for (const auto& b : block_linears) {
        const auto [rows, cols] = block_linear_shape(c, b);
        const std::string name = block_tensor_name(l, b.gguf);
        Linear stored = with_tensor_context(src.label(), name, [&] { return src.linear(name, rows, cols); });
        src.release(name);
        const bool plain = std::holds_alternative<Fp32Matrix>(stored.weights()) && stored.input_order().empty();
        L.*b.member = plain ? std::move(stored) : dequantized_linear(stored, backend);
    }
    return L;
}

class QuantizingSource : public ModelSource {
public:
    /// `src` must outlive this source. `tokens`: calibration tokens. The embedding table is read
    /// once here (only the calibration tokens' rows are kept). Throws before any block is read
    /// when the scheme has no packed format for a block linear's shape or a method's options are
    /// wrong (BlockQuantizer).
    QuantizingSource(const ModelSource& src, std::span<const int> tokens, const RuntimeScheme& scheme, const ModelQuantizeOptions& o = {})
        : src_(src), backend_(o.run_settings().backend) {
        const Config& c = src.config();
        check_tensor_schemes(c, scheme, o);
        for (const auto& b : block_linears) {
            const auto [rows, cols] = block_linear_shape(c, b);
            layouts_.push_back(with_tensor_context(src.label(), block_tensor_name(0, b.gguf), [&] { return scheme_layout(scheme, rows, cols); }));
        }
        // a type mix's tensors: their own layouts, planned (and checked) before any work
        for (const auto& [name, s] : o.tensor_schemes) {
            const auto [l, what] = block_tensor_slot(name, c.n_layers);
            for (const auto& b : block_linears)
                if (b.gguf == what) {
                    const auto [rows, cols] = block_linear_shape(c, b);
                    tensor_layouts_[name] = {to_string(s), with_tensor_context(src.label(), name, [&] { return scheme_layout(s, rows, cols); })};
                }
        }
        const std::size_t n = std::size_t(c.vocab_size) * std::size_t(c.dim);
        const auto embedding = with_tensor_context(src.label(), "token_embd.weight", [&] { return src.values("token_embd.weight", n); });
        quantizer_.emplace(c, embedding, tokens, scheme, o, src.label());
        src.release("token_embd.weight");
    }

    const Config& config() const override { return src_.config(); }
    const std::string& label() const override { return src_.label(); }
    bool has(const std::string& name) const override { return src_.has(name); }

    std::vector<float> values(const std::string& name, std::size_t n) const override {
        const auto [l, what] = block_tensor_slot(name, config().n_layers);
        if (l < 0 || (what != "attn_norm" && what != "ffn_norm")) return src_.values(name, n);
        const Layer& block = quantized(l);
        const auto& v = what == "attn_norm" ? block.attention_norm : block.ffn_norm;
        if (v.size() != n) throw FileError(label(), "tensor " + name + " has " + std::to_string(v.size()) + " elements, expected " + std::to_string(n));
        return v;
    }

    Linear linear(const std::string& name, int rows, int cols) const override {
        const auto [l, b] = block_linear(name);
        if (!b) return src_.linear(name, rows, cols);
        const Linear& q = quantized(l).*b->member;
        check_shape(name, std::uint64_t(q.rows()), std::uint64_t(q.cols()), rows, cols);
        return q;
    }

    TensorLayout layout(const std::string& name) const override {
        const auto [l, b] = block_linear(name);
        if (!b) return src_.layout(name);
        if (const auto it = tensor_layouts_.find(name); it != tensor_layouts_.end()) return it->second.second;
        return layouts_[std::size_t(b - block_linears.data())];
    }

    /// Block tensors are dropped when the next block is made; others pass to the source.
    void release(const std::string& name) const override {
        if (block_tensor_slot(name, config().n_layers).first < 0) src_.release(name);
    }

    /// The scheme of a block linear (its tensor_schemes entry, else the run's); other matrices:
    /// the underlying source's answer.
    std::string scheme_of(const std::string& name) const override {
        if (!block_linear(name).second) return src_.scheme_of(name);
        const auto it = tensor_layouts_.find(name);
        return it == tensor_layouts_.end() ? to_string(scheme()) : it->second.first;
    }
    /// The scheme the block linears are quantized with.
    const RuntimeScheme& scheme() const noexcept { return quantizer_->scheme(); }

private:
    /// (block, its entry in block_linears) for a block linear's name; (-1, nullptr) otherwise.
    std::pair<int, const BlockLinear*> block_linear(const std::string& name) const {
        const auto [l, what] = block_tensor_slot(name, config().n_layers);
        if (l >= 0)
            for (const auto& b : block_linears)
                if (b.gguf == what) return {l, &b};
        return {-1, nullptr};
    }

    /// Block `l` quantized: made now when it is the next one, kept while it is the current one.
    const Layer& quantized(int l) const {
        if (l == current_) return block_;
        if (l != quantizer_->next_block())
            throw InvalidArgument(label() + ": block " + std::to_string(l) + " was asked for after block " +
                                  std::to_string(quantizer_->next_block() - 1) +
                                  " was quantized; a quantizing source gives its blocks in order, once");
        block_ = Layer();  // the previous block's results go before this one's weights are read
        current_ = -1;
        block_ = quantizer_->quantize(read_fp32_block(src_, l, backend_));
        current_ = l;
        return block_;
    }

    const ModelSource& src_;
    Backend backend_;  // the run's: dequantizes packed blocks (bit for bit the scalar result)
    std::vector<TensorLayout> layouts_;  // per block_linears entry
    std::map<std::string, std::pair<std::string, TensorLayout>> tensor_layouts_;  // tensor_schemes: name -> (scheme text, layout)
    mutable std::optional<BlockQuantizer> quantizer_;
    mutable Layer block_;  // the current block's results
    mutable int current_ = -1;
};

}  // namespace qforge::llama
