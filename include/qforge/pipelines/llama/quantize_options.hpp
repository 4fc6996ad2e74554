#pragma once
/// @file
/// Options shared by the model-level quantization drivers (pipelines/llama/gptq.hpp, awq.hpp,
/// quantize_model.hpp).
#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qforge/pipelines/llama/calibration.hpp"
#include "qforge/quantizers/quantizer.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

/// Per block, the MLP neurons (down_proj input indices) to protect.
struct NeuronSet {
    std::vector<std::vector<int>> per_layer;
    std::size_t size() const {
        std::size_t n = 0;
        for (const auto& l : per_layer) n += l.size();
        return n;
    }
};

/// Options of the model drivers (both pipelines; fields a pipeline does not use are ignored).
struct ModelQuantizeOptions {
    CalibrationOptions calibration{};  ///< sequence length and backend (the backend is copied into `settings`)
    QuantizeSettings settings{};       ///< GPTQ block, AWQ grid and clip search
    bool true_sequential = true;       ///< sequential_hessian: capture each step's Hessian after the earlier steps
    const NeuronSet* targets = nullptr;  ///< methods that need_targets (TWQ): the neurons to protect
    float lambda = 1.0f;                        ///< ... and the weight of their error
    /// (block index, blocks, what is happening) as the work goes
    std::function<void(int, int, const std::string&)> progress;
    /// notes from the quantizer (damping raised, dead inputs), one line per block that had any
    std::function<void(const std::string&)> note;
    /// Block linears quantized with another scheme than the run's (a type mix such as Q4_K_M,
    /// container/llama/type_mix.hpp): tensor name (blk.N.attn_v.weight) -> scheme. Each must have
    /// the run's method (it changes the grid and options, not the pipeline) and name a block
    /// linear of the model; BlockQuantizer checks both before any work (InvalidArgument).
    std::map<std::string, RuntimeScheme> tensor_schemes;

    /// The scheme tensor `name` is quantized with: its tensor_schemes entry, else `run`.
    const RuntimeScheme& scheme_for(const std::string& name, const RuntimeScheme& run) const {
        const auto it = tensor_schemes.find(name);
        return it == tensor_schemes.end() ? run : it->second;
    }

    QuantizeSettings run_settings() const {
        QuantizeSettings s = settings;
        s.backend = calibration.backend;
        return s;
    }
};

/// Checks `o.tensor_schemes` against a model of `c` run with `scheme`: every name is a block
/// linear of the model, every scheme has the run's method. InvalidArgument naming the tensor.
inline void check_tensor_schemes(const Config& c, const RuntimeScheme& scheme, const ModelQuantizeOptions& o) {
    for (const auto& [name, s] : o.tensor_schemes) {
        const auto [l, what] = block_tensor_slot(name, c.n_layers);
        const auto& slot = what;  // a lambda cannot capture a structured binding before C++20's P1091 (clang < 16)
        const bool linear = l >= 0 && std::any_of(block_linears.begin(), block_linears.end(), [&](const BlockLinear& b) { return b.gguf == slot; });
        if (!linear)
            throw InvalidArgument("per-tensor scheme for '" + name + "': not a block linear of this model (blk.0.attn_q.weight ... blk." +
                                  std::to_string(c.n_layers - 1) + ".ffn_down.weight)");
        if (s.method != scheme.method)
            throw InvalidArgument("per-tensor scheme for '" + name + "': " + to_string(s) + " has another method than the run's " + to_string(scheme) +
                                  " (a per-tensor scheme changes the grid and options, not the method)");
    }
}

}  // namespace qforge::llama
