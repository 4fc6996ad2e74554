#pragma once
/// @file
/// One entry point for quantizing a Llama decoder with any scheme: the scheme's pipeline
/// (run_pipeline: MethodInfo::pipeline from the registry, or the sequential-Hessian one for RTN
/// keeping salient channels) picks the block driver — every layer on its own
/// (independent), GPTQ's sequential Hessians (pipelines/llama/gptq.hpp), or AWQ's folded scales
/// (pipelines/llama/awq.hpp). Embeddings, norms (except where AWQ folds scales) and the head are
/// kept as they are.
///
/// `BlockQuantizer` is the driver one block at a time: it holds the calibration hidden states
/// (tokens x dim) and nothing of the blocks already done, so a caller that reads each block's
/// weights just before and writes its output just after (QuantizingSource) quantizes a model of
/// any depth in the memory of one block. `quantize_model` runs it over a model in memory.
#include <map>
#include <optional>
#include <span>
#include <string>

#include "qforge/pipelines/llama/awq.hpp"
#include "qforge/pipelines/llama/gptq.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

/// The pipeline of a run with `scheme` and per-tensor schemes `tensors` (a scheme map):
/// pipeline_of(scheme), or the sequential-Hessian one when an RTN tensor keeps salient channels
/// (`,salient=P`: calibration finds them; RTN rounds the other columns as it does without).
inline Pipeline run_pipeline(const RuntimeScheme& scheme, const std::map<std::string, RuntimeScheme>& tensors = {}) {
    const Pipeline p = pipeline_of(scheme);
    if (p != Pipeline::independent) return p;
    for (const auto& [name, s] : tensors)
        if (pipeline_of(s) != Pipeline::independent) return pipeline_of(s);
    return p;
}

class BlockQuantizer {
public:
    /// `token_embedding`: vocab_size x dim (only the calibration tokens' rows are copied; the
    /// table may go after). `tokens`: calibration tokens (ignored by methods that need none;
    /// InvalidArgument when a method needs them and there are none). `label` names the model in
    /// errors. Throws InvalidArgument for a bad scheme/option combination before any work.
    BlockQuantizer(const Config& config, std::span<const float> token_embedding, std::span<const int> tokens, RuntimeScheme scheme,
                   ModelQuantizeOptions options = {}, std::string label = {})
        : config_(config), scheme_(std::move(scheme)), options_(std::move(options)), label_(std::move(label)),
          pipeline_(run_pipeline(scheme_, options_.tensor_schemes)), settings_(options_.run_settings()) {
        if (pipeline_ != Pipeline::independent && tokens.empty()) throw InvalidArgument(to_string(scheme_) + " needs calibration tokens");
        check_tensor_schemes(config_, scheme_, options_);
        if (pipeline_ == Pipeline::activation_scaled) awq_method(scheme_, options_, std::size_t(config_.n_layers));
        if (pipeline_ != Pipeline::independent)
            calibration_.emplace(config_, token_embedding, tokens, options_.calibration);
    }

    const RuntimeScheme& scheme() const noexcept { return scheme_; }
    /// The block `quantize` expects next (0, 1, ...; n_layers when done).
    int next_block() const noexcept { return next_; }

    /// Block `next_block()` quantized: `fp32` has that block's weights with FP32 linears (moved in:
    /// it is reused as scratch). Returns the block with packed linears and its norms (folded by
    /// AWQ). Errors name the model and the tensor.
    Layer quantize(Layer fp32) {
        if (next_ >= config_.n_layers) throw InvalidArgument("block quantizer: all " + std::to_string(config_.n_layers) + " blocks are done");
        const int l = next_;
        const int blocks = config_.n_layers;
        Layer q;
        switch (pipeline_) {
            case Pipeline::sequential_hessian:
                q = with_context(label_, [&] { return gptq_quantize_block(*calibration_, std::move(fp32), l, scheme_, options_, settings_); });
                break;
            case Pipeline::activation_scaled:
                q = with_context(label_, [&] { return awq_quantize_block(*calibration_, std::move(fp32), l, scheme_, options_, settings_); });
                break;
            case Pipeline::independent:
                if (options_.progress) options_.progress(l, blocks, "quantize");
                q.attention_norm = std::move(fp32.attention_norm);
                q.ffn_norm = std::move(fp32.ffn_norm);
                {
                    std::string note;
                    for (const auto& b : block_linears) {
                        const auto name = block_tensor_name(l, b.gguf);
                        std::string n;
                        q.*b.member = with_tensor_context(label_, name, [&] {
                            return quantize_linear(fp32.*b.member, options_.scheme_for(name, scheme_), options_.calibration.backend, nullptr, &n);
                        });
                        if (!n.empty()) note += std::string(b.gguf) + ": " + n;
                    }
                    if (!note.empty() && options_.note) options_.note("block " + std::to_string(l) + ": " + note);
                }
                break;
        }
        if (++next_ == blocks && options_.progress) options_.progress(blocks, blocks, "done");
        return q;
    }

private:
    Config config_;
    RuntimeScheme scheme_;
    ModelQuantizeOptions options_;
    std::string label_;
    Pipeline pipeline_;
    QuantizeSettings settings_;
    std::optional<LayerwiseCalibration> calibration_;
    int next_ = 0;
};

/// `model`'s block linears must be FP32 (dequantized_weights first for a packed source).
/// `tokens`: calibration tokens (see BlockQuantizer). `label` names the model in errors.
inline Weights quantize_model(const Weights& model, std::span<const int> tokens, const RuntimeScheme& scheme, const ModelQuantizeOptions& o = {},
                              const std::string& label = {}) {
    BlockQuantizer quantizer(model.config, model.token_embedding, tokens, scheme, o, label);
    Weights out;
    out.config = model.config;
    out.token_embedding = model.token_embedding;
    out.norm = model.norm;
    out.output = model.output;
    for (const auto& block : model.layers) out.layers.push_back(quantizer.quantize(block));
    return out;
}

}  // namespace qforge::llama
