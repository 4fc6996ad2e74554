#pragma once
/// @file
/// Options shared by the model-level quantization drivers (pipelines/llama/gptq.hpp, awq.hpp,
/// quantize_model.hpp).
#include <functional>
#include <string>
#include <vector>

#include "qforge/pipelines/llama/calibration.hpp"
#include "qforge/quantizers/quantizer.hpp"

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

    QuantizeSettings run_settings() const {
        QuantizeSettings s = settings;
        s.backend = calibration.backend;
        return s;
    }
};

}  // namespace qforge::llama
