#pragma once
/// @file
/// GPTQ on a whole Llama decoder, block by block (`LayerwiseCalibration`): each block's
/// Hessians come from calibration inputs that went through the already-quantized earlier
/// blocks, and only one block's statistics are held at a time.
///
/// True-sequential (default, as in the reference code): inside a block, the linear layers are
/// quantized in the order the block runs them — q/k/v, then o, then gate/up, then down — and
/// each group's Hessian is captured with the earlier groups already quantized. Without it, all
/// seven layers use the Hessians of the unquantized block.
#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "qforge/pipelines/llama/calibration.hpp"
#include "qforge/pipelines/llama/quantize_options.hpp"
#include "qforge/sources/llama/source.hpp"
#include "qforge/quantizers/registry.hpp"

namespace qforge::llama {


/// A linear layer quantized by `scheme`'s method from FP32 weights and the Hessian of its inputs.
inline Linear hessian_linear(const Linear& layer, const std::vector<float>& hessian, const RuntimeScheme& scheme, const QuantizeSettings& o,
                             std::string* note = nullptr) {
    const auto* fp32 = std::get_if<Fp32Matrix>(&layer.weights());
    if (!fp32 || !layer.input_order().empty() || layer.input_transform()) throw InvalidArgument("hessian_linear: the layer must be plain FP32");
    LayerCalibration calib;
    calib.hessian = &hessian;
    auto r = find_method(scheme.method).quantize(MatrixView<const float>(fp32->data.data(), std::size_t(fp32->rows), std::size_t(fp32->cols)),
                                                 scheme, calib, o);
    if (note) *note += r.note;
    return packed_linear(r);
}

/// The layers of one step (sharing their inputs, so their Hessian) quantized as one matrix, their
/// rows stacked: GPTQ's rows are independent given H, so each layer gets the codes it would get
/// alone (SmolLM2 containers byte-identical), and H is permuted, damped and factorised once per
/// step instead of once per layer. Returns false, having written nothing, for a single layer or
/// when the stacked run throws (the caller then quantizes them one by one, whose errors name the
/// tensor and its own row).
inline bool quantize_stacked(const Layer& block, Layer& q, const std::vector<Linear Layer::*>& members, const std::vector<float>& h,
                             const RuntimeScheme& scheme, const QuantizeSettings& o, std::string& note) {
    if (members.size() < 2) return false;
    std::size_t rows = 0, cols = 0;
    for (const auto m : members) {
        const auto* w = std::get_if<Fp32Matrix>(&(block.*m).weights());
        if (!w || !(block.*m).input_order().empty() || (block.*m).input_transform() || (cols && std::size_t(w->cols) != cols)) return false;
        // a PQ grid's codebooks are blocks of 64 rows: each layer must start and end on one
        if (scheme.pq && w->rows % PqSpec::block_rows != 0) return false;
        cols = std::size_t(w->cols), rows += std::size_t(w->rows);
    }
    std::vector<float> stacked;
    stacked.reserve(rows * cols);
    for (const auto m : members) {
        const auto& w = std::get<Fp32Matrix>((block.*m).weights());
        stacked.insert(stacked.end(), w.data.begin(), w.data.end());
    }
    LayerCalibration calib;
    calib.hessian = &h;
    QuantizedLayer r;
    try {
        r = find_method(scheme.method).quantize(MatrixView<const float>(stacked.data(), rows, cols), scheme, calib, o);
    } catch (const Error&) {
        return false;
    }
    stacked = {};
    int r0 = 0;
    for (const auto m : members) {
        const int n = std::get<Fp32Matrix>((block.*m).weights()).rows;
        q.*m = packed_linear(r, r0, r0 + n);
        r0 += n;
    }
    note += r.note;
    return true;
}

/// GPTQ's steps inside a block, in order: the site whose inputs' Hessian serves the linears that
/// read it (stacked into one matrix when they share a scheme). Also the sensitivity table's
/// order (sensitivity.hpp), so that a block quantized alone is quantized as the pipeline does.
struct GptqStep {
    Site site;
    std::vector<Linear Layer::*> members;
    const char* what;
};
inline const std::vector<GptqStep> gptq_block_steps = {{Site::attention_input, {&Layer::wq, &Layer::wk, &Layer::wv}, "q/k/v"},
                                                        {Site::attention_output, {&Layer::wo}, "o"},
                                                        {Site::mlp_input, {&Layer::w1, &Layer::w3}, "gate/up"},
                                                        {Site::mlp_hidden, {&Layer::w2}, "down"}};

/// One decoder block quantized by a method of the sequential_hessian pipeline (GPTQ), its
/// Hessians from `cal`'s hidden states (which must be at block `l`); `cal` then advances through
/// the quantized block. `block`: the block with FP32 linears, taken by value and reused as the
/// block calibration runs (each linear replaced by its dequantized form once quantized), so one
/// block's FP32 weights are held, not two. Returns the block with packed linears (norms kept).
inline Layer gptq_quantize_block(LayerwiseCalibration& cal, Layer block, int l, const RuntimeScheme& scheme, const ModelQuantizeOptions& o,
                                 const QuantizeSettings& settings) {
    const auto& steps = gptq_block_steps;
    const int blocks = cal.layers();
    // `block` is what calibration runs: quantized layers dequantized, so inputs pass through
    // exactly Ŵ (weight-only, as evaluation) and the batched FP32 GEMM does the work.
    Layer q;
    q.attention_norm = block.attention_norm;
    q.ffn_norm = block.ffn_norm;
    std::string note;
    BlockStats stats;
    if (!o.true_sequential) {
        if (o.progress) o.progress(l, blocks, "capture");
        stats = cal.capture(block, 0xFu);  // the four linear-input sites
    }
    for (const auto& step : steps) {
        if (o.true_sequential) {
            if (o.progress) o.progress(l, blocks, std::string("capture for ") + step.what);
            // earlier steps of this block already quantized; the block resumes where the previous
            // capture stopped, since only the layers after that site changed
            stats = cal.capture(block, 1u << unsigned(step.site), &step != &steps.front());
        }
        const auto h = stats.at(step.site).hessian();
        if (o.true_sequential) stats = BlockStats();  // the accumulators (doubles) go before the quantizer's work
        if (o.progress) o.progress(l, blocks, std::string("quantize ") + step.what);
        // members with the same scheme (o.tensor_schemes may set one apart) are stacked
        std::vector<std::pair<const RuntimeScheme*, std::vector<Linear Layer::*>>> by_scheme;
        for (const auto member : step.members) {
            const RuntimeScheme* s = &o.scheme_for(block_linear_name(l, member), scheme);
            const auto same = std::find_if(by_scheme.begin(), by_scheme.end(), [&](const auto& e) { return *e.first == *s; });
            if (same == by_scheme.end()) by_scheme.push_back({s, {member}});
            else same->second.push_back(member);
        }
        for (const auto& entry : by_scheme) {  // not a structured binding: the lambda below captures the scheme
            const RuntimeScheme& s = *entry.first;
            if (!quantize_stacked(block, q, entry.second, h, s, settings, note))
                for (const auto member : entry.second)  // one by one: also what names the tensor and row of an error
                    q.*member = with_tensor_context({}, block_linear_name(l, member), [&] { return hessian_linear(block.*member, h, s, settings, &note); });
        }
        for (const auto member : step.members) block.*member = dequantized_linear(q.*member, settings.backend);
    }
    if (!note.empty() && o.note) o.note("block " + std::to_string(l) + ": " + note);
    if (o.progress) o.progress(l, blocks, "advance");
    cal.advance(block, o.true_sequential);  // only down changed since the last capture (mlp_hidden)
    return q;
}

/// The decoder's seven linear layers of every block quantized by a method of the
/// sequential_hessian pipeline (GPTQ), calibrated on `tokens`; embeddings, norms and the head
/// are kept. `model`'s block linears must be FP32 (dequantize packed sources first).
inline Weights gptq_quantize_model(const Weights& model, std::span<const int> tokens, const RuntimeScheme& scheme,
                                   const ModelQuantizeOptions& o = {}) {
    if (pipeline_of(scheme) != Pipeline::sequential_hessian)
        throw InvalidArgument("gptq_quantize_model: scheme '" + to_string(scheme) + "' is not of the sequential-Hessian pipeline (gptq, rtn with ',salient=')");
    check_tensor_schemes(model.config, scheme, o);
    Weights out = model;
    LayerwiseCalibration cal(model, tokens, o.calibration);
    const QuantizeSettings settings = o.run_settings();
    const int blocks = model.config.n_layers;
    for (int l = 0; l < blocks; ++l) out.layers[std::size_t(l)] = gptq_quantize_block(cal, model.layers[std::size_t(l)], l, scheme, o, settings);
    if (o.progress) o.progress(blocks, blocks, "done");
    return out;
}

}  // namespace qforge::llama
