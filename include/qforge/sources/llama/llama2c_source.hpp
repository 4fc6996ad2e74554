#pragma once
/// @file
/// A llama2.c checkpoint as a model source (its tensors renamed the llama.cpp way).
#include <map>
#include <string>

#include "qforge/io/llama2c.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

class Llama2cSource : public ModelSource {
public:
    Llama2cSource(const io::Llama2cCheckpoint& ck, std::string label) : ck_(ck), label_(std::move(label)) {
        const auto& c = ck.config();
        config_ = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len};
        names_["token_embd.weight"] = "tok_embeddings";
        names_["output_norm.weight"] = "norm";
        if (!c.shared_classifier) names_["output.weight"] = "output";
        static const std::map<std::string, std::string> block = {
            {"attn_norm", "attention_norm"}, {"ffn_norm", "ffn_norm"},        {"attn_q", "attention.wq"},
            {"attn_k", "attention.wk"},      {"attn_v", "attention.wv"},      {"attn_output", "attention.wo"},
            {"ffn_gate", "feed_forward.w1"}, {"ffn_down", "feed_forward.w2"}, {"ffn_up", "feed_forward.w3"}};
        for (int l = 0; l < c.n_layers; ++l)
            for (const auto& [gguf, native] : block)
                names_[block_tensor_name(l, gguf)] = "layers." + std::to_string(l) + "." + native;
    }
    const Config& config() const override { return config_; }
    const std::string& label() const override { return label_; }
    bool has(const std::string& name) const override { return names_.count(name) != 0; }
    std::vector<float> values(const std::string& name, std::size_t n) const override {
        const auto& t = find(name);
        if (t.data.size() != n) throw FileError(label_, "tensor " + name + " has the wrong size");
        return {t.data.begin(), t.data.end()};
    }
    Linear linear(const std::string& name, int rows, int cols) const override {
        const auto& t = find(name);
        check_shape(name, std::uint64_t(t.rows), std::uint64_t(t.cols), rows, cols);
        return Linear(Fp32Matrix{t.rows, t.cols, std::vector<float>(t.data.begin(), t.data.end())});
    }
    TensorLayout layout(const std::string& name) const override {
        const auto& t = find(name);
        return {"f32", {}, t.rows, t.cols};
    }

private:
    const io::NamedTensor& find(const std::string& name) const {
        const auto it = names_.find(name);
        if (it == names_.end()) throw FileError(label_, "no tensor named '" + name + "'");
        return ck_.tensor(it->second);
    }
    const io::Llama2cCheckpoint& ck_;
    std::string label_;
    Config config_;
    std::map<std::string, std::string> names_;
};

}  // namespace qforge::llama
