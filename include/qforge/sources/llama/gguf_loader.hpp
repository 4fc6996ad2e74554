#pragma once
/// @file
/// A Llama model from a GGUF file (llama.cpp's tensor names). Packed tensors stay packed when a
/// format of the registry has the ggml type's bytes (`FormatInfo::gguf`: Q4_0, Q4_1, Q8_0, IQ4_NL,
/// Q2_K-Q6_K), so the decoder multiplies from the file's blocks (K-quants through their kernel
/// form, formats/gguf_kq.hpp); other readable types (F32, F16, BF16, Q5_0/Q5_1, i-quants,
/// ternary) become FP32 layers. llama.cpp stores
/// q/k rows already ordered for the adjacent-pair rotation the decoder uses.
#include <cstring>
#include <string>

#include "qforge/formats/registry.hpp"
#include "qforge/io/gguf.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

namespace detail {
/// The tensor's blocks as stored (no conversion), after checking every block's scale and
/// minimum: a NaN/Inf one is an error naming the file, the tensor and the block, here at load,
/// so neither the decoder nor a container that keeps the blocks ever sees it.
template <class F>
Linear packed_linear(const io::GgufFile& f, const io::GgufTensorInfo& t) {
    f.check_blocks(t);
    typename F::Packed p;
    p.rows = int(t.rows());
    p.cols = int(t.cols());
    p.blocks.resize(std::size_t(t.bytes) / sizeof(typename F::block_type));
    std::memcpy(p.blocks.data(), f.data(t).data(), std::size_t(t.bytes));
    if constexpr (requires { F::complete(p); }) F::complete(p);  // a K-quant's kernel form
    return Linear(std::move(p));
}
}  // namespace detail

/// The tensor as a linear layer (rows = out features). Stored scales and values are checked
/// (GgufFile::check_blocks, GgufFile::dequantize).
inline Linear gguf_linear(const io::GgufFile& f, const io::GgufTensorInfo& t) {
    if (t.ne.size() != 2) throw FileError(f.path(), "tensor " + t.name + " is not a matrix");
    Linear out;
    // a type whose blocks are a qforge format's bytes stays packed; any other readable type becomes FP32
    if (visit_format([&](const FormatInfo& i) { return i.gguf && std::uint32_t(*i.gguf) == t.type; },
                     [&](auto fmt) {
                         using F = typename decltype(fmt)::type;
                         if constexpr (F::info.gguf.has_value()) out = detail::packed_linear<F>(f, t);
                     }))
        return out;
    return Linear(Fp32Matrix{int(t.rows()), int(t.cols()), f.dequantize(t)});
}

/// A GGUF file as a model source (llama.cpp's names are already the source's names).
class GgufSource : public ModelSource {
public:
    explicit GgufSource(const io::GgufFile& f) : f_(f), label_(f.path()) {
        const std::string arch = f.get("general.architecture").as_string();
        if (arch != "llama") throw FileError(f.path(), "architecture '" + arch + "' is not llama");
        const auto num = [&](const std::string& key) { return int(f.get("llama." + key).as_int()); };
        Config& c = config_;
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
        validate_config(c, f.path());
        if (int(embd.cols()) != c.dim) throw FileError(f.path(), "token_embd.weight has " + std::to_string(embd.cols()) + " columns, dim is " + std::to_string(c.dim));
    }
    const Config& config() const override { return config_; }
    const std::string& label() const override { return label_; }
    bool has(const std::string& name) const override { return f_.find(name) != nullptr; }
    std::vector<float> values(const std::string& name, std::size_t n) const override {
        const auto& t = f_.tensor(name);
        if (t.elements() != std::uint64_t(n))
            throw FileError(label_, "tensor " + name + " has " + std::to_string(t.elements()) + " elements, expected " + std::to_string(n));
        return f_.dequantize(t);
    }
    Linear linear(const std::string& name, int rows, int cols) const override {
        const auto& t = f_.tensor(name);
        if (t.ne.size() != 2) throw FileError(label_, "tensor " + name + " is not a matrix");
        check_shape(name, t.rows(), t.cols(), rows, cols);
        return gguf_linear(f_, t);
    }
    TensorLayout layout(const std::string& name) const override {
        const auto& t = f_.tensor(name);
        const int rows = int(t.rows()), cols = int(t.cols());
        TensorLayout out{"f32", {}, rows, cols};
        visit_format([&](const FormatInfo& i) { return i.gguf && std::uint32_t(*i.gguf) == t.type; }, [&](auto fmt) {
            using F = typename decltype(fmt)::type;
            out = {std::string(F::info.stored_as), typename F::Packed{}.spec, rows, cols};
        });
        return out;
    }
    void release(const std::string& name) const override {
        if (const auto* t = f_.find(name)) f_.release(*t);
    }

private:
    const io::GgufFile& f_;
    std::string label_;
    Config config_;
};

inline Weights from_gguf(const io::GgufFile& f) { return load_weights(GgufSource(f)); }

}  // namespace qforge::llama
