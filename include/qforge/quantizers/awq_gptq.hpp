#pragma once
/// @file
/// AWQ+GPTQ: AWQ's input-channel scales, then GPTQ (with its options: act-order, static groups,
/// damping) as the final quantizer on the scaled weights and the correspondingly scaled Hessian.
/// In a model, the next block is calibrated through the quantized block (GPTQ's convention).
#include "qforge/quantizers/awq.hpp"
#include "qforge/quantizers/gptq.hpp"

namespace qforge {

struct AwqGptq {
    static constexpr MethodInfo info{"awq+gptq", true, Pipeline::activation_scaled, false, true};
};

template <>
struct quantizer<AwqGptq> {
    /// GPTQ on weights already scaled; `c.hessian` is that of the scaled inputs. AWQ's own clip
    /// search does not apply (GPTQ chooses each group's grid from the error-fed weights).
    static QuantizedLayer round(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        return to_layer(gptq_quantize(w, detail::need(c.hessian, AwqGptq::info.name, "the input Hessian"), s.spec, gptq_options(s, o, false)));
    }
    static QuantizedLayer quantize(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        return awq_scaled_layer(w, s, c, o, AwqGptq::info.name, &round);
    }
};

}  // namespace qforge
