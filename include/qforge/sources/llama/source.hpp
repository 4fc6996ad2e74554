#pragma once
/// @file
/// Where a Llama model's tensors come from, one tensor at a time. Every checkpoint format
/// (GGUF, llama2.c, qforge's container, Hugging Face safetensors) is a `ModelSource` that names
/// tensors the llama.cpp way (`blk.3.attn_q.weight`) and materialises a tensor only when asked,
/// so quantizing can stream a checkpoint larger than RAM: take a tensor, quantize it, write it,
/// `release` it.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qforge/models/llama/model.hpp"
#include "qforge/quantizers/salient.hpp"

namespace qforge::llama {

/// How a tensor is stored: "f32" (plain values), "dense" (qforge's bit-packed codes with
/// fp16 scales; `spec` says bits, group and zero point) or a GGUF block format ("q4_0",
/// "q4_1", "q8_0").
struct TensorLayout {
    std::string format = "f32";
    QuantSpec spec{};
    int rows = 0, cols = 0;  ///< the layer's shape: outputs x inputs (kept FP16 channels included)
    bool ordered = false;  ///< the weights' columns are in their own order (Linear::input_order)
    /// Input channels kept in FP16 beside the packed weights (`,salient=P`, Linear::wide): the
    /// packed weights have cols - salient columns, the others in ascending order unless `ordered`.
    int salient = 0;
    /// Columns of the packed weights.
    int packed_cols() const noexcept { return cols - salient; }
};

/// Throws InvalidArgument for a layer with an input transform (`,had`) or PQ weights: no stored
/// layout has a field for them yet.
inline TensorLayout layout_of(const Linear& l) {
    if (l.input_transform())
        throw InvalidArgument("a layer with a Hadamard input transform (',had') has no stored layout yet (container, GGUF and checkpoints lack the field)");
    TensorLayout t = std::visit(
        [](const auto& w) -> TensorLayout {
            using T = std::decay_t<decltype(w)>;
            if constexpr (std::is_same_v<T, Fp32Matrix>) return {"f32", {}, w.rows, w.cols};
            else if constexpr (std::is_same_v<T, PqMatrix>)
                throw InvalidArgument("a product-quantized layer (PQ grid) has no stored layout yet (container, GGUF and checkpoints lack the format)");
            else return {std::string(format_of_packed<T>::info.stored_as), w.spec, w.rows, w.cols};
        },
        l.weights());
    if (const auto& wide = l.wide()) {
        t.salient = int(wide->columns.size());
        t.cols = l.cols();
        // the kept channels imply the others' ascending order; only act-order's is stored
        t.ordered = !std::is_sorted(l.input_order().begin(), l.input_order().end());
    } else {
        t.ordered = !l.input_order().empty();
    }
    return t;
}

/// The seven block linear layers: llama.cpp's name, the Layer member, and its shape.
struct BlockLinear {
    std::string_view gguf, short_name;
    Linear Layer::*member;
    bool out_is_kv;      ///< rows = kv_dim (k, v)
    bool in_is_hidden;   ///< cols = hidden_dim (down)
    bool out_is_hidden;  ///< rows = hidden_dim (gate, up)
};
inline constexpr std::array<BlockLinear, 7> block_linears{{
    {"attn_q", "wq", &Layer::wq, false, false, false},
    {"attn_k", "wk", &Layer::wk, true, false, false},
    {"attn_v", "wv", &Layer::wv, true, false, false},
    {"attn_output", "wo", &Layer::wo, false, false, false},
    {"ffn_gate", "w1", &Layer::w1, false, false, true},
    {"ffn_down", "w2", &Layer::w2, false, true, false},
    {"ffn_up", "w3", &Layer::w3, false, false, true},
}};

inline std::string block_tensor_name(int layer, std::string_view what) {
    std::string s = "blk.";
    s += std::to_string(layer);
    s += '.';
    s += what;
    s += ".weight";
    return s;
}

/// "blk.N.WHAT.weight" -> (N, "WHAT"); (-1, "") for any other name or a block outside
/// [0, n_layers).
inline std::pair<int, std::string> block_tensor_slot(const std::string& name, int n_layers) {
    if (name.rfind("blk.", 0) != 0) return {-1, ""};
    const auto dot = name.find('.', 4);
    if (dot == std::string::npos || dot == 4) return {-1, ""};
    for (std::size_t i = 4; i < dot; ++i)
        if (name[i] < '0' || name[i] > '9') return {-1, ""};
    const long l = dot - 4 > 9 ? -1 : std::atol(name.substr(4, dot - 4).c_str());
    const auto end = name.rfind(".weight");
    if (l < 0 || l >= n_layers || end == std::string::npos || end <= dot || end + 7 != name.size()) return {-1, ""};
    return {int(l), name.substr(dot + 1, end - dot - 1)};
}

/// How a `rows` x `cols` matrix quantized with `scheme` is stored (the registry's packing format
/// for its grid; `ordered` for act-order with dynamic groups, whose columns keep GPTQ's
/// processing order). InvalidArgument when no packed format stores that grid at that shape.
inline TensorLayout scheme_layout(const RuntimeScheme& scheme, int rows, int cols) {
    // `,salient=P` keeps salient_count(P, cols) channels in FP16; the grid packs the others
    const int salient = scheme.options.salient > 0.0f ? salient_count(scheme.options.salient, cols) : 0;
    const int packed = cols - salient;
    // a GGUF block grid whose blocks do not divide the row: llama-quantize's fallback type, as the
    // quantizers apply it (quantizers/registry.hpp)
    const auto spec = fitting_block_grid(scheme.spec, packed);
    if (!spec)
        throw InvalidArgument(std::to_string(packed) + " columns are not whole blocks of " + std::string(scheme.spec.block) +
                              " nor of its fallback type: no GGUF block grid holds this layer");
    std::string format;
    if (!visit_packing_format(*spec, rows, packed, [&](auto f) { format = decltype(f)::type::info.stored_as; }))
        throw InvalidArgument("no packed format stores the grid of '" + to_string(scheme) + "' (formats/registry.hpp)");
    return {format, *spec, rows, cols, scheme.options.act_order && !scheme.options.static_groups, salient};
}

inline std::pair<int, int> block_linear_shape(const Config& c, const BlockLinear& b) {
    const int rows = b.out_is_kv ? c.kv_dim() : b.out_is_hidden ? c.hidden_dim : c.dim;
    return {rows, b.in_is_hidden ? c.hidden_dim : c.dim};
}

inline void validate_config(const Config& c, const std::string& label) {
    if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 ||
        c.seq_len <= 0)
        throw FileError(label, "llama hyperparameters must be positive");
    if (c.dim % c.n_heads || c.n_heads % c.n_kv_heads || c.head_size() % 2)
        throw FileError(label, "inconsistent llama hyperparameters: dim " + std::to_string(c.dim) + ", heads " +
                                   std::to_string(c.n_heads) + ", kv heads " + std::to_string(c.n_kv_heads));
}

class ModelSource {
public:
    virtual ~ModelSource() = default;
    virtual const Config& config() const = 0;
    /// The file (or directory) the tensors come from, for messages.
    virtual const std::string& label() const = 0;
    virtual bool has(const std::string& name) const = 0;
    /// FP32 values of a tensor with `n` elements (norms, the embedding table).
    virtual std::vector<float> values(const std::string& name, std::size_t n) const = 0;
    /// A matrix as stored: packed formats stay packed, float types become FP32.
    virtual Linear linear(const std::string& name, int rows, int cols) const = 0;
    /// How `linear(name, ...)` will be stored, without reading its data.
    virtual TensorLayout layout(const std::string& name) const = 0;
    /// The tensor has been consumed; its pages may go.
    virtual void release(const std::string&) const {}
    /// The scheme (with its options) that produced matrix `name` as this source gives it, when the
    /// source knows (a qforge container's record, a QuantizingSource's scheme); empty otherwise.
    virtual std::string scheme_of(const std::string&) const { return {}; }

    /// The output head: output.weight, or the embedding table when they are tied.
    bool tied_output() const { return !has("output.weight"); }
    std::string output_name() const { return tied_output() ? "token_embd.weight" : "output.weight"; }

protected:
    void check_shape(const std::string& name, std::uint64_t rows, std::uint64_t cols, int want_rows, int want_cols) const {
        if (rows != std::uint64_t(want_rows) || cols != std::uint64_t(want_cols))
            throw FileError(label(), "tensor " + name + " is " + std::to_string(rows) + " x " + std::to_string(cols) + ", expected " +
                                         std::to_string(want_rows) + " x " + std::to_string(want_cols));
    }
};

/// A model already in memory as a source (to export a model quantized in memory).
class WeightsSource : public ModelSource {
public:
    WeightsSource(const Weights& w, std::string label, bool tied = false) : w_(w), label_(std::move(label)), tied_(tied) {}
    const Config& config() const override { return w_.config; }
    const std::string& label() const override { return label_; }
    bool has(const std::string& name) const override {
        if (name == "output.weight") return !tied_;
        return name == "token_embd.weight" || name == "output_norm.weight" || slot(name).first >= 0;
    }
    std::vector<float> values(const std::string& name, std::size_t n) const override {
        const std::vector<float>* v = nullptr;
        if (name == "token_embd.weight") v = &w_.token_embedding;
        else if (name == "output_norm.weight") v = &w_.norm;
        else if (const auto [l, what] = slot(name); l >= 0 && what == "attn_norm") v = &w_.layers[std::size_t(l)].attention_norm;
        else if (l >= 0 && what == "ffn_norm") v = &w_.layers[std::size_t(l)].ffn_norm;
        if (!v) throw FileError(label_, "no vector named '" + name + "'");
        if (v->size() != n) throw FileError(label_, "tensor " + name + " has the wrong size");
        return *v;
    }
    Linear linear(const std::string& name, int rows, int cols) const override {
        if (untied_embedding(name)) {
            check_shape(name, std::uint64_t(w_.config.vocab_size), std::uint64_t(w_.config.dim), rows, cols);
            return Linear(Fp32Matrix{rows, cols, w_.token_embedding});
        }
        const Linear& l = find(name);
        check_shape(name, std::uint64_t(l.rows()), std::uint64_t(l.cols()), rows, cols);
        return l;
    }
    TensorLayout layout(const std::string& name) const override {
        if (untied_embedding(name)) return {"f32", {}, w_.config.vocab_size, w_.config.dim};
        return layout_of(find(name));
    }

private:
    std::pair<int, std::string> slot(const std::string& name) const { return block_tensor_slot(name, w_.config.n_layers); }
    /// The embedding of an untied model is a plain table (Weights::token_embedding), read as an FP32 matrix.
    bool untied_embedding(const std::string& name) const { return !tied_ && name == "token_embd.weight"; }
    const Linear& find(const std::string& name) const {
        if (name == "output.weight" || (tied_ && name == "token_embd.weight")) return w_.output;
        const auto [l, what] = slot(name);
        if (l >= 0)
            for (const auto& b : block_linears)
                if (b.gguf == what) return w_.layers[std::size_t(l)].*b.member;
        throw FileError(label_, "no matrix named '" + name + "'");
    }
    const Weights& w_;
    std::string label_;
    bool tied_;
};

/// The one bits-per-weight definition (models/llama/size.hpp: `Linear::bytes()` over the decoder's
/// linear layers) for a model on disk, read one layer at a time (each released before the next,
/// so memory stays one layer), as `eval` counts the models it holds.
inline double block_bits_per_weight(const ModelSource& src) {
    const Config& c = src.config();
    double bytes = 0, weights = 0;
    for (int l = 0; l < c.n_layers; ++l)
        for (const auto& b : block_linears) {
            const auto shape = block_linear_shape(c, b);  // not a structured binding: lambdas cannot capture those before C++20 P1091 (clang 15)
            const int rows = shape.first, cols = shape.second;
            const auto name = block_tensor_name(l, b.gguf);
            bytes += double(with_tensor_context(src.label(), name, [&] { return src.linear(name, rows, cols); }).bytes());
            weights += double(rows) * double(cols);
            src.release(name);
        }
    return weights > 0 ? 8.0 * bytes / weights : 0.0;
}

/// The whole model in memory (packed tensors stay packed). Every error names the source and the
/// tensor being read.
inline Weights load_weights(const ModelSource& src) {
    Weights w;
    w.config = src.config();
    const Config& c = w.config;
    const auto D = std::size_t(c.dim);
    const auto values = [&](const std::string& name, std::size_t n) {
        return with_tensor_context(src.label(), name, [&] { return src.values(name, n); });
    };
    const auto linear = [&](const std::string& name, int rows, int cols) {
        return with_tensor_context(src.label(), name, [&] { return src.linear(name, rows, cols); });
    };
    w.token_embedding = values("token_embd.weight", std::size_t(c.vocab_size) * D);
    for (int l = 0; l < c.n_layers; ++l) {
        Layer L;
        L.attention_norm = values(block_tensor_name(l, "attn_norm"), D);
        L.ffn_norm = values(block_tensor_name(l, "ffn_norm"), D);
        for (const auto& b : block_linears) {
            const auto [rows, cols] = block_linear_shape(c, b);
            L.*b.member = linear(block_tensor_name(l, b.gguf), rows, cols);
        }
        w.layers.push_back(std::move(L));
    }
    w.norm = values("output_norm.weight", D);
    w.output = linear(src.output_name(), c.vocab_size, c.dim);
    return w;
}

/// The llama.cpp name of block linear `member` of layer `layer` ("blk.3.attn_q.weight").
inline std::string block_linear_name(int layer, Linear Layer::*member) {
    for (const auto& b : block_linears)
        if (b.member == member) return block_tensor_name(layer, b.gguf);
    return block_tensor_name(layer, "?");
}

/// Applies `fn(name, layer)` to every linear layer inside the decoder blocks (not the embedding
/// or the head), `name` being its llama.cpp name. An error `fn` throws names the tensor, and
/// `label` (the model's file) when given: "model.gguf: tensor blk.0.ffn_up.weight: row 5, ...".
template <class Fn>
Weights map_named_block_linears(const Weights& w, Fn&& fn, const std::string& label = {}) {
    Weights out = w;
    for (std::size_t l = 0; l < out.layers.size(); ++l)
        for (const auto& b : block_linears) {
            const std::string name = block_tensor_name(int(l), b.gguf);
            Linear& slot = out.layers[l].*b.member;
            slot = with_tensor_context(label, name, [&] { return fn(name, std::as_const(slot)); });
        }
    return out;
}

/// quantize_linear for the tensor `name` of model `label`: errors name both, and the row and
/// group where the quantizer failed.
inline Linear quantize_named_linear(const std::string& label, const std::string& name, const Linear& layer, const RuntimeScheme& scheme,
                                    const Backend& backend = {}) {
    return with_tensor_context(label, name, [&] { return quantize_linear(layer, scheme, backend); });
}

/// Every decoder linear layer quantized with an RTN scheme (quantize_linear), errors naming the
/// model (`label`), the tensor, the row and the group.
inline Weights quantize_block_linears(const Weights& w, const RuntimeScheme& scheme, const Backend& backend = {}, const std::string& label = {}) {
    return map_named_block_linears(
        w, [&](const std::string&, const Linear& l) { return quantize_linear(l, scheme, backend); }, label);
}

}  // namespace qforge::llama
