#pragma once
/// @file
/// A Llama model from a GGUF file (llama.cpp's tensor names). Packed tensors stay packed: Q4_0,
/// Q4_1 and Q8_0 blocks are byte-identical to qforge's formats, so the decoder multiplies
/// straight from the file's blocks; F32/F16/BF16 matrices become FP32 layers. llama.cpp stores
/// q/k rows already ordered for the adjacent-pair rotation the decoder uses.
#include <cstring>
#include <string>

#include "qforge/io/gguf.hpp"
#include "qforge/models/llama/model.hpp"

namespace qforge::llama {

namespace detail {
template <class F>
Linear packed_linear(const io::GgufFile& f, const io::GgufTensorInfo& t) {
    typename F::Packed p;
    p.rows = int(t.rows());
    p.cols = int(t.cols());
    p.blocks.resize(std::size_t(t.bytes) / sizeof(typename F::block_type));
    std::memcpy(p.blocks.data(), f.data(t).data(), std::size_t(t.bytes));
    return Linear(std::move(p));
}
}  // namespace detail

/// The tensor as a linear layer (rows = out features).
inline Linear gguf_linear(const io::GgufFile& f, const io::GgufTensorInfo& t) {
    if (t.ne.size() != 2) throw FileError(f.path(), "tensor " + t.name + " is not a matrix");
    switch (t.type) {
        case 2: return detail::packed_linear<Q4_0>(f, t);
        case 3: return detail::packed_linear<Q4_1>(f, t);
        case 8: return detail::packed_linear<Q8_0>(f, t);
        default: return Linear(Fp32Matrix{int(t.rows()), int(t.cols()), f.dequantize(t)});
    }
}

inline Weights from_gguf(const io::GgufFile& f) {
    const std::string arch = f.get("general.architecture").as_string();
    if (arch != "llama") throw FileError(f.path(), "architecture '" + arch + "' is not llama");
    const auto num = [&](const std::string& key) { return int(f.get("llama." + key).as_int()); };
    Weights w;
    Config& c = w.config;
    c.dim = num("embedding_length");
    c.hidden_dim = num("feed_forward_length");
    c.n_layers = num("block_count");
    c.n_heads = num("attention.head_count");
    c.n_kv_heads = f.has("llama.attention.head_count_kv") ? num("attention.head_count_kv") : c.n_heads;
    c.seq_len = num("context_length");
    if (f.has("llama.rope.freq_base")) c.rope_theta = float(f.get("llama.rope.freq_base").as_double());
    if (f.has("llama.attention.layer_norm_rms_epsilon"))
        c.norm_eps = float(f.get("llama.attention.layer_norm_rms_epsilon").as_double());
    const auto& embd = f.tensor("token_embd.weight");
    c.vocab_size = int(embd.rows());
    if (c.dim <= 0 || c.n_heads <= 0 || c.dim % c.n_heads || c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads ||
        int(embd.cols()) != c.dim)
        throw FileError(f.path(), "inconsistent llama hyperparameters");

    const auto vec = [&](const std::string& name, int n) {
        const auto& t = f.tensor(name);
        if (t.elements() != std::uint64_t(n)) throw FileError(f.path(), "tensor " + name + " has the wrong size");
        return f.dequantize(t);
    };
    const auto mat = [&](const std::string& name, int rows, int cols) {
        const auto& t = f.tensor(name);
        if (t.rows() != std::uint64_t(rows) || t.cols() != std::uint64_t(cols))
            throw FileError(f.path(), "tensor " + name + " is " + std::to_string(t.rows()) + " x " + std::to_string(t.cols()) +
                                          ", expected " + std::to_string(rows) + " x " + std::to_string(cols));
        return gguf_linear(f, t);
    };
    w.token_embedding = f.dequantize(embd);
    const int kv = c.kv_dim();
    for (int l = 0; l < c.n_layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        w.layers.push_back({vec(p + "attn_norm.weight", c.dim), vec(p + "ffn_norm.weight", c.dim),
                            mat(p + "attn_q.weight", c.dim, c.dim), mat(p + "attn_k.weight", kv, c.dim),
                            mat(p + "attn_v.weight", kv, c.dim), mat(p + "attn_output.weight", c.dim, c.dim),
                            mat(p + "ffn_gate.weight", c.hidden_dim, c.dim), mat(p + "ffn_down.weight", c.dim, c.hidden_dim),
                            mat(p + "ffn_up.weight", c.hidden_dim, c.dim)});
    }
    w.norm = vec("output_norm.weight", c.dim);
    w.output = f.find("output.weight") ? mat("output.weight", c.vocab_size, c.dim) : gguf_linear(f, embd);
    return w;
}

}  // namespace qforge::llama
