#pragma once
/// @file
/// An importance matrix (io/imatrix.hpp) of a Llama model on calibration tokens, as llama.cpp's
/// llama-imatrix computes it: the model as given (FP32, or packed weights dequantized) runs the
/// calibration sequences, and each block linear's entry sums x_j² of its inputs over every token.
/// Layers sharing an input (q/k/v, gate/up) get equal entries. The head (llama-imatrix only with
/// --process-output) and the embedding (not a product) get none.
///
/// The blocks are read from the source one at a time (LayerwiseCalibration): the memory of one
/// block and the hidden states (tokens x dim), whatever the depth.
#include <span>
#include <string>

#include "qforge/io/imatrix.hpp"
#include "qforge/pipelines/llama/calibration.hpp"
#include "qforge/pipelines/llama/quantizing_source.hpp"

namespace qforge::llama {

/// `tokens`: the calibration text's tokens, cut into sequences of `o.sequence_length` (each one
/// llama-imatrix chunk: chunk_size = that length, chunk_count = sequences). `dataset` is recorded
/// as the file's imatrix.datasets. `progress(block, blocks)` as the blocks go. Throws what the
/// source and LayerwiseCalibration throw (naming the model and the tensor), InvalidArgument with
/// no tokens.
inline io::Imatrix compute_imatrix(const ModelSource& src, std::span<const int> tokens, CalibrationOptions o, const std::string& dataset = {},
                                   const std::function<void(int, int)>& progress = {}) {
    if (tokens.empty()) throw InvalidArgument("imatrix: no calibration tokens");
    const Config& c = src.config();
    o.hessian = true;  // its diagonal is the sum of squares
    const std::size_t n = std::size_t(c.vocab_size) * std::size_t(c.dim);
    std::optional<LayerwiseCalibration> cal;
    {
        const auto embedding = with_tensor_context(src.label(), "token_embd.weight", [&] { return src.values("token_embd.weight", n); });
        cal.emplace(c, embedding, tokens, o);
        src.release("token_embd.weight");
    }
    io::Imatrix im;
    im.chunk_size = std::uint32_t(std::min(o.sequence_length, c.seq_len));
    im.chunk_count = std::uint32_t((std::size_t(cal->tokens()) + im.chunk_size - 1) / im.chunk_size);
    if (!dataset.empty()) im.datasets.push_back(dataset);
    const auto count = float(cal->tokens());
    struct Group {
        Site site;
        std::vector<const char*> members;
    };
    const std::vector<Group> groups = {{Site::attention_input, {"attn_q", "attn_k", "attn_v"}},
                                       {Site::attention_output, {"attn_output"}},
                                       {Site::mlp_input, {"ffn_gate", "ffn_up"}},
                                       {Site::mlp_hidden, {"ffn_down"}}};
    for (int l = 0; l < c.n_layers; ++l) {
        if (progress) progress(l, c.n_layers);
        const Layer block = read_fp32_block(src, l, o.backend);
        auto stats = cal->capture(block, 0xFu);
        for (const auto& g : groups) {
            const auto& s = stats.at(g.site);
            const auto h = s.hessian();  // 2 X^T X / n
            const std::size_t w = s.width();
            io::ImatrixEntry e;
            e.in_sum2.resize(w);
            for (std::size_t j = 0; j < w; ++j) e.in_sum2[j] = float(double(h[j * w + j]) * double(s.count()) / 2.0);
            e.counts = {count};
            for (const char* m : g.members) im.entries[block_tensor_name(l, m)] = e;
        }
        stats = BlockStats();
        cal->advance(block, true);  // from the capture's stop at the down projection
    }
    if (progress) progress(c.n_layers, c.n_layers);
    return im;
}

}  // namespace qforge::llama
