#pragma once
/// @file
/// One entry point for quantizing a Llama decoder with any scheme: the method's pipeline
/// (MethodInfo::pipeline, from the registry) picks the driver — every layer on its own
/// (independent), GPTQ's sequential Hessians (pipelines/llama/gptq.hpp), or AWQ's folded scales
/// (pipelines/llama/awq.hpp). Embeddings, norms (except where AWQ folds scales) and the head are
/// kept as they are.
#include <span>
#include <string>

#include "qforge/pipelines/llama/awq.hpp"
#include "qforge/pipelines/llama/gptq.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

/// `model`'s block linears must be FP32 (dequantized_weights first for a packed source).
/// `tokens`: calibration tokens (ignored by methods that need none; InvalidArgument when a
/// method needs them and there are none). `label` names the model in errors.
inline Weights quantize_model(const Weights& model, std::span<const int> tokens, const RuntimeScheme& scheme, const ModelQuantizeOptions& o = {},
                              const std::string& label = {}) {
    const MethodEntry& method = find_method(scheme.method);
    if (method.info.needs_calibration() && tokens.empty()) throw InvalidArgument(to_string(scheme) + " needs calibration tokens");
    switch (method.info.pipeline) {
        case Pipeline::sequential_hessian: return with_context(label, [&] { return gptq_quantize_model(model, tokens, scheme, o); });
        case Pipeline::activation_scaled: return with_context(label, [&] { return awq_quantize_model(model, tokens, scheme, o); });
        case Pipeline::independent: break;
    }
    std::size_t done = 0;  // linears so far; progress is reported per block
    return map_named_block_linears(
        model,
        [&](const std::string&, const Linear& l) {
            if (o.progress) o.progress(int(done++ / block_linears.size()), model.config.n_layers, "quantize");
            return quantize_linear(l, scheme, o.calibration.backend);
        },
        label);
}

}  // namespace qforge::llama
