#pragma once
/// @file
/// TWQ (targeted AWQ): AWQ whose scale search weights a chosen set of MLP neurons' error by λ,
/// as output rows of gate/up (LayerCalibration::row_weight) and as input channels of down (the
/// driver weights that layer's Hessian: diag(√λ) H diag(√λ), quantizers/awq.hpp's
/// weight_inputs). On one layer it is AWQ with those weights; a model needs a neuron set
/// (pipelines/llama/neurons.hpp), which is what `needs_targets` tells the driver.
#include "qforge/quantizers/awq.hpp"

namespace qforge {

struct Twq {
    static constexpr MethodInfo info{"twq", false, Pipeline::activation_scaled, true, false, "awq"};
};

template <>
struct quantizer<Twq> {
    static QuantizedLayer round(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        return quantizer<Awq>::round(w, s, c, o);
    }
    static QuantizedLayer quantize(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
        return awq_scaled_layer(w, s, c, o, Twq::info.name, &round);
    }
};

}  // namespace qforge
