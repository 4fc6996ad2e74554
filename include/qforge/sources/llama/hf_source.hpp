#pragma once
/// @file
/// A Hugging Face Llama checkpoint as a model source: `config.json` plus `model.safetensors`, or
/// shards listed by `model.safetensors.index.json`; F32/F16/BF16 tensors. Hugging Face stores the
/// q and k projections permuted for its rotate-half RoPE (pairs (j, j + head_size/2) of a head);
/// qforge's decoder rotates adjacent pairs (2j, 2j + 1) as llama.cpp does, so q/k rows are
/// reordered on load: row h*hs + 2j + t takes Hugging Face row h*hs + t*hs/2 + j.
///
/// GPTQ and AWQ checkpoints load too (config.json's `quantization_config`, or AutoGPTQ's
/// quantize_config.json / AutoAWQ's quant_config.json beside it): a layer stored as
/// `W.qweight`, `W.qzeros`, `W.scales` (and GPTQ's `W.g_idx`) becomes a qforge Dense layer on the
/// same grid, exactly (formats/gptq_awq.hpp; act-order as an input order), its q/k rows reordered
/// as above.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "qforge/io/json.hpp"
#include "qforge/io/safetensors.hpp"
#include "qforge/io/text_file.hpp"
#include "qforge/sources/llama/hf_quantized.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

namespace detail {
inline io::Json read_json(const std::string& path) {
    const std::string text = io::read_text_file(path, "a JSON file");
    try {
        return io::Json::parse(text);
    } catch (const InvalidData& e) {
        throw FileError(path, e.what());
    }
}
}  // namespace detail

/// Rows of a projection in Hugging Face's rotate-half order -> adjacent-pair order.
inline std::vector<float> unpermute_rotary_rows(const std::vector<float>& w, int heads, int head_size, int cols) {
    std::vector<float> out(w.size());
    const int half = head_size / 2;
    for (int h = 0; h < heads; ++h)
        for (int j = 0; j < half; ++j)
            for (int t = 0; t < 2; ++t) {
                const std::size_t to = std::size_t(h * head_size + 2 * j + t), from = std::size_t(h * head_size + t * half + j);
                std::copy_n(w.begin() + std::ptrdiff_t(from * std::size_t(cols)), cols, out.begin() + std::ptrdiff_t(to * std::size_t(cols)));
            }
    return out;
}

class HfSource : public ModelSource {
public:
    /// `path`: the checkpoint directory, or a .safetensors file with config.json beside it.
    explicit HfSource(const std::string& path) {
        namespace fs = std::filesystem;
        const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
        label_ = dir.string();
        const auto cfg_path = (dir / "config.json").string();
        const auto cfg = detail::read_json(cfg_path);
        try {
            if (const auto* arch = cfg.find("model_type"); arch && arch->as_string() != "llama")
                throw FileError(cfg_path, "model_type '" + arch->as_string() + "' is not llama");
            const auto i = [&](const char* k) { return int(cfg.at(k).as_int()); };
            config_.dim = i("hidden_size");
            config_.hidden_dim = i("intermediate_size");
            config_.n_layers = i("num_hidden_layers");
            config_.n_heads = i("num_attention_heads");
            config_.n_kv_heads = cfg.find("num_key_value_heads") ? i("num_key_value_heads") : config_.n_heads;
            config_.vocab_size = i("vocab_size");
            config_.seq_len = i("max_position_embeddings");
            if (const auto* t = cfg.find("rope_theta")) config_.rope_theta = float(t->as_double());
            if (const auto* e = cfg.find("rms_norm_eps")) config_.norm_eps = float(e->as_double());
            if (const auto* s = cfg.find("rope_scaling"); s && !s->is_null()) throw FileError(cfg_path, "rope_scaling is not supported");
            tied_ = cfg.find("tie_word_embeddings") && cfg.at("tie_word_embeddings").as_bool();
            if (const auto* q = cfg.find("quantization_config"); q && !q->is_null()) quant_ = HfQuantConfig::from_json(*q);
        } catch (const InvalidData& e) {
            throw FileError(cfg_path, e.what());
        }
        for (const char* side : {"quantize_config.json", "quant_config.json"})
            if (!quant_ && fs::exists(dir / side)) {
                const auto side_path = (dir / side).string();
                try {
                    quant_ = HfQuantConfig::from_json(detail::read_json(side_path));
                } catch (const InvalidData& e) {
                    throw FileError(side_path, e.what());
                }
            }
        validate_config(config_, cfg_path);
        // the shards
        const auto index = dir / "model.safetensors.index.json";
        std::vector<std::string> files;
        if (fs::is_regular_file(path) && fs::path(path).extension() == ".safetensors") files.push_back(path);
        else if (fs::exists(index)) {
            const auto j = detail::read_json(index.string());
            std::map<std::string, bool> seen;
            try {
                for (const auto& [name, file] : j.at("weight_map").as_object())
                    if (!seen[file.as_string()]) {
                        seen[file.as_string()] = true;
                        files.push_back((dir / file.as_string()).string());
                    }
            } catch (const InvalidData& e) {
                throw FileError(index.string(), e.what());
            }
        } else {
            files.push_back((dir / "model.safetensors").string());
        }
        for (const auto& f : files) {
            shards_.push_back(std::make_shared<io::SafetensorsFile>(io::SafetensorsFile::open(f)));
            for (const auto& t : shards_.back()->tensors()) where_[t.name] = shards_.size() - 1;
        }
    }

    const Config& config() const override { return config_; }
    const std::string& label() const override { return label_; }
    bool has(const std::string& name) const override {
        if (name == "output.weight" && tied_) return false;
        return where_.count(hf_name(name)) != 0 || quantized(name);
    }
    /// For a quantized layer, the scheme qforge recorded when it wrote the checkpoint
    /// (`qforge.scheme` in the safetensors metadata, when it names one scheme); else empty.
    std::string scheme_of(const std::string& name) const override {
        if (!quantized(name)) return {};
        const auto& [file, t] = find_part(name, ".qweight");
        (void)t;
        const auto it = file.metadata().find("qforge.scheme");
        if (it == file.metadata().end() || it->second == "keep" || it->second.find(", ") != std::string::npos) return {};
        return it->second;
    }
    /// The checkpoint's quantization_config (GPTQ or AWQ), if it has one.
    const std::optional<HfQuantConfig>& quantization() const noexcept { return quant_; }
    std::vector<float> values(const std::string& name, std::size_t n) const override {
        const auto& [file, t] = find(name);
        if (t.elements() != n) throw FileError(file.path(), "tensor " + t.name + " has " + std::to_string(t.elements()) + " elements, expected " + std::to_string(n));
        return floats(file, t, name);
    }
    Linear linear(const std::string& name, int rows, int cols) const override {
        if (quantized(name)) return quantized_linear(name, rows, cols);
        const auto& [file, t] = find(name);
        if (t.shape.size() != 2) throw FileError(file.path(), "tensor " + t.name + " is not a matrix");
        check_shape(name, t.shape[0], t.shape[1], rows, cols);
        auto w = floats(file, t, name);
        const int hs = config_.head_size();
        if (name.find(".attn_q.") != std::string::npos) w = unpermute_rotary_rows(w, config_.n_heads, hs, cols);
        if (name.find(".attn_k.") != std::string::npos) w = unpermute_rotary_rows(w, config_.n_kv_heads, hs, cols);
        return Linear(Fp32Matrix{rows, cols, std::move(w)});
    }
    TensorLayout layout(const std::string& name) const override {
        if (quantized(name)) {
            const auto& [file, t] = find_part(name, ".qweight");
            (void)file;
            TensorLayout l;
            l.format = "dense";
            l.spec.bits = quant_->bits;
            l.spec.zero = quant_->sym ? ZeroPoint::symmetric : ZeroPoint::integer;
            l.cols = quant_->method == "awq" ? int(t.shape[0]) : int(t.shape[0] * 32 / std::uint64_t(quant_->bits));
            l.rows = quant_->method == "awq" ? int(t.shape[1] * 8) : int(t.shape[1]);
            l.spec.group_size = quant_->group_size < 0 || quant_->group_size >= l.cols ? 0 : quant_->group_size;
            if (where_.count(hf_base(name) + ".g_idx")) {  // act-order: a g_idx that is not i / group_size
                const auto& [gfile, g] = find_part(name, ".g_idx");
                (void)gfile;
                const int gl = l.spec.group_length(l.cols);
                for (std::size_t i = 0; i < g.bytes.size() / 4 && !l.ordered; ++i) {
                    std::int32_t v;
                    std::memcpy(&v, g.bytes.data() + 4 * i, 4);
                    l.ordered = v != int(i) / gl;
                }
            }
            return l;
        }
        const auto& [file, t] = find(name);
        (void)file;
        return {"f32", {}, t.shape.empty() ? 1 : int(t.shape[0]), t.shape.size() < 2 ? int(t.elements()) : int(t.shape[1])};
    }
    void release(const std::string& name) const override {
        if (quantized(name)) {
            for (const char* part : {".qweight", ".qzeros", ".scales", ".g_idx"})
                if (where_.count(hf_base(name) + part)) {
                    const auto& [file, t] = find_part(name, part);
                    file.release(t);
                }
            return;
        }
        const auto& [file, t] = find(name);
        file.release(t);
    }

    /// Hugging Face's name for a tensor named the llama.cpp way.
    static std::string hf_name(const std::string& name) {
        if (name == "token_embd.weight") return "model.embed_tokens.weight";
        if (name == "output_norm.weight") return "model.norm.weight";
        if (name == "output.weight") return "lm_head.weight";
        static const std::map<std::string, std::string> block = {
            {"attn_norm", "input_layernorm"},        {"ffn_norm", "post_attention_layernorm"}, {"attn_q", "self_attn.q_proj"},
            {"attn_k", "self_attn.k_proj"},          {"attn_v", "self_attn.v_proj"},          {"attn_output", "self_attn.o_proj"},
            {"ffn_gate", "mlp.gate_proj"},           {"ffn_up", "mlp.up_proj"},               {"ffn_down", "mlp.down_proj"}};
        if (name.rfind("blk.", 0) == 0) {
            const auto dot = name.find('.', 4), end = name.rfind(".weight");
            if (dot != std::string::npos && end != std::string::npos && end > dot)
                if (const auto it = block.find(name.substr(dot + 1, end - dot - 1)); it != block.end())
                    return "model.layers." + name.substr(4, dot - 4) + "." + it->second + ".weight";
        }
        return name;
    }

private:
    /// Hugging Face's name of a layer without ".weight" (the prefix of its GPTQ/AWQ parts).
    static std::string hf_base(const std::string& name) {
        const std::string hf = hf_name(name);
        return hf.size() > 7 && hf.compare(hf.size() - 7, 7, ".weight") == 0 ? hf.substr(0, hf.size() - 7) : hf;
    }
    bool quantized(const std::string& name) const { return quant_ && where_.count(hf_base(name) + ".qweight") != 0; }

    std::pair<const io::SafetensorsFile&, const io::SafetensorsTensor&> find_part(const std::string& name, const char* part) const {
        const std::string hf = hf_base(name) + part;
        const auto it = where_.find(hf);
        if (it == where_.end()) throw FileError(label_, "no tensor named '" + hf + "' (" + name + " is " + quant_->method + "-quantized: it needs " + hf + ")");
        const auto& file = *shards_[it->second];
        return {file, file.tensor(hf)};
    }

    /// A GPTQ/AWQ layer's parts unpacked into qforge's Dense layout (rows in adjacent-pair order).
    Linear quantized_linear(const std::string& name, int rows, int cols) const {
        std::string path = label_;
        try {
            IntGridLayer l = read_checkpoint_layer(*quant_, [&](const char* part) -> const io::SafetensorsTensor* {
                if (!where_.count(hf_base(name) + part)) return nullptr;
                const auto& [file, t] = find_part(name, part);
                path = file.path();
                return &t;
            }, rows, cols);
            const int hs = config_.head_size();
            if (name.find(".attn_q.") != std::string::npos) l = l.permute_outputs(rotary_rows_from_hf(config_.n_heads, hs));
            if (name.find(".attn_k.") != std::string::npos) l = l.permute_outputs(rotary_rows_from_hf(config_.n_kv_heads, hs));
            return linear_of(l, quant_->sym);  // as layout() says; zeros off 2^(b-1) in a "sym" checkpoint are an error
        } catch (const FileError&) {
            throw;
        } catch (const Error& e) {
            throw FileError(path, "layer " + hf_base(name) + " (" + name + "), " + quant_->method + " " + std::to_string(quant_->bits) + "-bit: " + e.what());
        }
    }

    /// The tensor's F32/F16/BF16 values as FP32. A NaN or Inf is an error naming the shard, the
    /// tensor (both names) and where in it, with the row as stored in the file.
    static std::vector<float> floats(const io::SafetensorsFile& file, const io::SafetensorsTensor& t, const std::string& name) {
        if (t.dtype != "F32" && t.dtype != "F16" && t.dtype != "BF16") return file.to_float(t);  // refuses, naming the dtype
        std::vector<float> out(std::size_t(t.elements()));
        const std::uint8_t* p = t.bytes.data();
        if (t.dtype == "F32") {
            std::memcpy(out.data(), p, out.size() * 4);
        } else {
            const bool bf16 = t.dtype == "BF16";
            for (std::size_t i = 0; i < out.size(); ++i) {
                std::uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                if (bf16) {
                    const std::uint32_t bits = std::uint32_t(h) << 16;
                    std::memcpy(&out[i], &bits, 4);
                } else {
                    out[i] = half_to_float(h);
                }
            }
        }
        for (std::size_t i = 0; i < out.size(); ++i)
            if (!std::isfinite(out[i])) {
                const std::size_t cols = t.shape.size() == 2 ? std::size_t(t.shape[1]) : 0;
                const std::string at = cols ? "row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols)
                                            : "element " + std::to_string(i);
                throw FileError(file.path(), "tensor " + t.name + " (" + name + ", " + t.dtype + "): " + at + " has a non-finite value (" +
                                                 qforge::detail::value_text(out[i]) + ")");
            }
        return out;
    }

    std::pair<const io::SafetensorsFile&, const io::SafetensorsTensor&> find(const std::string& name) const {
        const std::string hf = hf_name(name);
        const auto it = where_.find(hf);
        if (it == where_.end() && !quant_ && where_.count(hf_base(name) + ".qweight"))
            throw FileError(label_, "tensor " + hf_base(name) + ".qweight (" + name + ") is GPTQ/AWQ-packed, but config.json has no "
                                    "quantization_config (nor is there a quantize_config.json or quant_config.json beside it)");
        if (it == where_.end()) throw FileError(label_, "no tensor named '" + hf + "' (" + name + ")");
        const auto& file = *shards_[it->second];
        return {file, file.tensor(hf)};
    }

    std::string label_;
    Config config_;
    bool tied_ = false;
    std::optional<HfQuantConfig> quant_;
    std::vector<std::shared_ptr<io::SafetensorsFile>> shards_;
    std::map<std::string, std::size_t> where_;
};

}  // namespace qforge::llama
