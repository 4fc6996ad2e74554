#pragma once
/// @file
/// The weights of one linear layer as a value: FP32, PQ, or any packed format of the registry.
/// What a backend (runtime/backend.hpp) multiplies and what the decoder's layers hold.
#include <variant>
#include <vector>

#include "qforge/formats/pq.hpp"
#include "qforge/formats/registry.hpp"

namespace qforge {

/// Plain FP32 weights, rows x cols row-major; y = W x with float accumulation in column order.
struct Fp32Matrix {
    int rows = 0, cols = 0;
    std::vector<float> data;
};

/// FP32 weights, product-quantized weights (codes and codebooks, formats/pq.hpp; multiplied
/// through the codebooks, backends/pq.hpp), or any packed format of the registry
/// (formats/registry.hpp).
using LinearWeights = packed_variant<Formats, Fp32Matrix, PqMatrix>::type;

}  // namespace qforge
