#pragma once
/// @file
/// How big a model is as held: the one definition of "bits per weight" that every qforge
/// command prints (docs/conventions.md). Bits per weight = 8 x stored bytes / weights over the
/// decoder's linear layers (the seven per block), where stored bytes are `Linear::bytes()`:
/// codes, scales, zeros or minimums, and the int32 input order of act-order layers.
#include <cstddef>

#include "qforge/models/llama/model.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

/// Weights (parameters) of one block's seven linear layers.
inline std::size_t layer_params(const Layer& L) {
    std::size_t n = 0;
    for (const auto& b : block_linears) n += std::size_t((L.*b.member).rows()) * std::size_t((L.*b.member).cols());
    return n;
}

/// Weights (parameters) of the decoder's linear layers.
inline std::size_t block_params(const Weights& w) {
    std::size_t n = 0;
    for (const auto& L : w.layers) n += layer_params(L);
    return n;
}

/// Stored bytes of the decoder's linear layers.
inline std::size_t block_bytes(const Weights& w) {
    std::size_t n = 0;
    for (const auto& L : w.layers)
        for (const auto& b : block_linears) n += (L.*b.member).bytes();
    return n;
}

/// 8 x block_bytes / block_params.
inline double block_bits_per_weight(const Weights& w) { return 8.0 * double(block_bytes(w)) / double(block_params(w)); }

}  // namespace qforge::llama
