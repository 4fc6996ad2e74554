#pragma once
/// @file
/// AWQ and TWQ on a whole Llama decoder, block by block.
///
/// Four scale groups per block, each a set of layers sharing one input and the operation the
/// inverse scales fold into so the FP32 model is unchanged:
///   q/k/v   <- attention norm gain      o    <- v_proj rows
///   gate/up <- MLP norm gain            down <- up_proj rows
/// Grouped-query attention: o_proj has n_heads*head_size inputs, v_proj only n_kv_heads*head_size
/// rows, so the o_proj channels fed by one v row share one scale (their activation magnitudes
/// averaged): the v->o pair is tied, not skipped.
///
/// Each block's statistics (Hessians, mean |x|) are captured on calibration inputs; AWQ feeds the
/// next block through the scaled FP32 block (AutoAWQ's convention), AWQ+GPTQ through the
/// quantized one (GPTQ's). Final quantizer: RTN with the per-group clip search (`awq:`), or GPTQ
/// on the scaled weights with the correspondingly scaled Hessian (`awq+gptq:`, GPTQ options).
///
/// TWQ: a set of MLP neurons per block (indices of down_proj inputs) whose error counts λ times:
/// as output rows of gate/up and as input channels of down, in the scale search and the clip
/// search.
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "qforge/pipelines/llama/calibration.hpp"
#include "qforge/pipelines/llama/gptq.hpp"
#include "qforge/sources/llama/source.hpp"
#include "qforge/quantizers/registry.hpp"

namespace qforge::llama {


/// The scales AWQ chose for one block (for reports and the folding test).
struct BlockScales {
    std::vector<float> qkv, o, gate_up, down;
    float alpha_qkv = 0, alpha_o = 0, alpha_gate_up = 0, alpha_down = 0;
};

/// For each o_proj input channel, the first channel fed by the same v_proj row.
inline std::vector<int> gqa_tie(const Config& c) {
    std::vector<int> tie(std::size_t(c.dim));
    const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
    for (int ch = 0; ch < c.dim; ++ch) {
        const int head = ch / hs, kv = head / group;
        tie[std::size_t(ch)] = kv * group * hs + ch % hs;
    }
    return tie;
}

namespace detail {
inline Fp32Matrix& fp32_of(Linear& l) {
    auto* m = std::get_if<Fp32Matrix>(&l.weights());
    if (!m || !l.input_order().empty()) throw InvalidArgument("AWQ: block linears must be plain FP32");
    return const_cast<Fp32Matrix&>(*m);
}
inline void scale_columns(Linear& l, const std::vector<float>& s) {
    auto& m = fp32_of(l);
    for (std::size_t r = 0; r < std::size_t(m.rows); ++r)
        for (std::size_t c = 0; c < std::size_t(m.cols); ++c) m.data[r * std::size_t(m.cols) + c] *= s[c];
}
inline void divide_rows(Linear& l, const std::vector<float>& s) {
    auto& m = fp32_of(l);
    for (std::size_t r = 0; r < std::size_t(m.rows); ++r)
        for (std::size_t c = 0; c < std::size_t(m.cols); ++c) m.data[r * std::size_t(m.cols) + c] /= s[r];
}
}  // namespace detail

/// Folds the four groups' scales into an FP32 block: columns of the consuming layers times s,
/// the preceding operation divided by s. The block computes the same function.
inline void fold_block_scales(const Config& c, Layer& L, const BlockScales& s) {
    const auto D = std::size_t(c.dim);
    for (std::size_t i = 0; i < D; ++i) L.attention_norm[i] /= s.qkv[i];
    for (auto* m : {&L.wq, &L.wk, &L.wv}) detail::scale_columns(*m, s.qkv);
    const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
    std::vector<float> v_rows(std::size_t(c.kv_dim()));
    for (int j = 0; j < c.kv_dim(); ++j) v_rows[std::size_t(j)] = s.o[std::size_t((j / hs) * group * hs + j % hs)];
    detail::divide_rows(L.wv, v_rows);
    detail::scale_columns(L.wo, s.o);
    for (std::size_t i = 0; i < D; ++i) L.ffn_norm[i] /= s.gate_up[i];
    for (auto* m : {&L.w1, &L.w3}) detail::scale_columns(*m, s.gate_up);
    detail::divide_rows(L.w3, s.down);
    detail::scale_columns(L.w2, s.down);
}

/// Checks a run of an activation_scaled method on a model of `layers` blocks before any work.
inline const MethodEntry& awq_method(const RuntimeScheme& scheme, const ModelQuantizeOptions& o, std::size_t layers) {
    const MethodEntry& method = find_method(scheme.method);
    if (method.info.pipeline != Pipeline::activation_scaled)
        throw InvalidArgument("awq_quantize_model: scheme '" + to_string(scheme) + "' is not of the activation-scaled pipeline (awq, awq+gptq, twq)");
    if (method.info.needs_targets && !o.targets) throw InvalidArgument(std::string(method.info.name) + ": no neuron set to target");
    if (o.targets && o.targets->per_layer.size() != layers)
        throw InvalidArgument("TWQ: the neuron set has " + std::to_string(o.targets->per_layer.size()) + " layers, the model " +
                              std::to_string(layers));
    return method;
}

/// Block `l` (`scaled`: FP32 linears, scaled in place) quantized by a method of the
/// activation_scaled pipeline from `stats`, its inputs' statistics at the four linear-input
/// sites (mean |x| and H): scales searched (`bs`) and folded, each linear rounded by the
/// method's `round` (for methods that `advance_quantized`, `scaled`'s linears then hold their
/// dequantized form). The core of awq_quantize_block, and one unit of the sensitivity table
/// (sensitivity.hpp) on the reference's statistics. `release_stats`, when given, is called once
/// `stats` is no longer read (the pipeline frees its accumulators there, before the rounding).
/// Returns the packed block, norms folded.
inline Layer awq_block_from_stats(const BlockStats& stats, Layer& scaled, int l, const Config& c, const RuntimeScheme& scheme, const ModelQuantizeOptions& o,
                                  const QuantizeSettings& settings, BlockScales& bs, const std::function<void()>& release_stats = {}) {
    const MethodEntry& method = find_method(scheme.method);
    const AwqOptions ao = awq_options(settings);
    const auto tie = gqa_tie(c);
    const int blocks = c.n_layers;
    // TWQ weights of this block's targeted neurons
    std::vector<float> neuron_weight(std::size_t(c.hidden_dim), 1.0f);
    if (o.targets)
        for (const int n : o.targets->per_layer[std::size_t(l)]) {
            if (n < 0 || n >= c.hidden_dim) throw InvalidArgument("TWQ: neuron " + std::to_string(n) + " out of range in layer " + std::to_string(l));
            neuron_weight[std::size_t(n)] = o.lambda;
        }
    const std::vector<float>* rows_w = o.targets ? &neuron_weight : nullptr;
    const auto view = [](const Linear& lin) {
        const auto& m = std::get<Fp32Matrix>(lin.weights());
        return MatrixView<const float>(m.data.data(), std::size_t(m.rows), std::size_t(m.cols));
    };
    if (o.progress) o.progress(l, blocks, "search scales");
    // an error in a scale search names the tensors that share the scales
    const auto names = [&](std::initializer_list<Linear Layer::*> members) {
        std::string s = "AWQ scale search for";
        for (const auto m : members) s += (m == *members.begin() ? " " : ", ") + block_linear_name(l, m);
        return s;
    };
    // each layer's own grid (o.tensor_schemes: a type mix) in the search as in the final rounding
    const auto spec_of = [&](Linear Layer::*m) { return &o.scheme_for(block_linear_name(l, m), scheme).spec; };
    const auto& a = stats.at(Site::attention_input);
    auto r = with_context(names({&Layer::wq, &Layer::wk, &Layer::wv}), [&] {
        return awq_search_scales({{view(scaled.wq), nullptr, spec_of(&Layer::wq)}, {view(scaled.wk), nullptr, spec_of(&Layer::wk)},
                                  {view(scaled.wv), nullptr, spec_of(&Layer::wv)}},
                                 a.mean_abs(), a.hessian(), scheme.spec, ao);
    });
    bs.qkv = r.scales, bs.alpha_qkv = r.alpha;
    const auto& ao_stats = stats.at(Site::attention_output);
    r = with_context(names({&Layer::wo}), [&] {
        return awq_search_scales({{view(scaled.wo), nullptr, spec_of(&Layer::wo)}}, ao_stats.mean_abs(), ao_stats.hessian(), scheme.spec, ao, &tie);
    });
    bs.o = r.scales, bs.alpha_o = r.alpha;
    const auto& mi = stats.at(Site::mlp_input);
    r = with_context(names({&Layer::w1, &Layer::w3}), [&] {
        return awq_search_scales({{view(scaled.w1), rows_w, spec_of(&Layer::w1)}, {view(scaled.w3), rows_w, spec_of(&Layer::w3)}}, mi.mean_abs(),
                                 mi.hessian(), scheme.spec, ao);
    });
    bs.gate_up = r.scales, bs.alpha_gate_up = r.alpha;
    const auto& mh = stats.at(Site::mlp_hidden);
    const auto h_down = o.targets ? weight_inputs(mh.hessian(), neuron_weight) : mh.hessian();
    r = with_context(names({&Layer::w2}), [&] { return awq_search_scales({{view(scaled.w2), nullptr, spec_of(&Layer::w2)}}, mh.mean_abs(), h_down, scheme.spec, ao); });
    bs.down = r.scales, bs.alpha_down = r.alpha;
    fold_block_scales(c, scaled, bs);

    if (o.progress) o.progress(l, blocks, "quantize");
    Layer q;
    q.attention_norm = scaled.attention_norm;
    q.ffn_norm = scaled.ffn_norm;
    struct Member {
        Linear Layer::*m;
        const std::vector<float>* h;
        const std::vector<float>* s;
    };
    const auto h_qkv = scale_hessian(a.hessian(), bs.qkv), h_o = scale_hessian(ao_stats.hessian(), bs.o),
               h_gu = scale_hessian(mi.hessian(), bs.gate_up), h_dn = scale_hessian(h_down, bs.down);
    if (release_stats) release_stats();  // the accumulators (doubles) may go before the quantizer's work
    for (const Member& m : {Member{&Layer::wq, &h_qkv, &bs.qkv}, Member{&Layer::wk, &h_qkv, &bs.qkv}, Member{&Layer::wv, &h_qkv, &bs.qkv},
                            Member{&Layer::wo, &h_o, &bs.o}, Member{&Layer::w1, &h_gu, &bs.gate_up}, Member{&Layer::w3, &h_gu, &bs.gate_up},
                            Member{&Layer::w2, &h_dn, &bs.down}}) {
        const auto w = view(scaled.*m.m);
        q.*m.m = with_tensor_context({}, block_linear_name(l, m.m), [&] {  // an error names the tensor
            LayerCalibration calib;
            calib.hessian = m.h;
            const auto res = method.round(w, o.scheme_for(block_linear_name(l, m.m), scheme), calib, settings);
            return packed_linear(res);  // its column order and any channels kept in FP16 (,salient=)
        });
        // the next block's inputs go through the quantized layer: its scaled FP32 form is not needed again
        if (method.info.advance_quantized) scaled.*m.m = dequantized_linear(q.*m.m, settings.backend);
    }
    return q;
}

/// One decoder block quantized by a method of the activation_scaled pipeline (AWQ, AWQ+GPTQ,
/// TWQ): statistics from `cal`'s hidden states (at block `l`), then awq_block_from_stats; `cal`
/// then advances: to the original FP32 block's outputs (resumed from the capture at the down
/// projection), or through the quantized block for methods that `advance_quantized`. `block`:
/// FP32 linears, taken by value and scaled in place. Returns the block with packed linears and
/// the folded norms.
inline Layer awq_quantize_block(LayerwiseCalibration& cal, Layer scaled, int l, const RuntimeScheme& scheme, const ModelQuantizeOptions& o,
                                const QuantizeSettings& settings, std::vector<BlockScales>* report = nullptr) {
    const MethodEntry& method = find_method(scheme.method);
    const int blocks = cal.config().n_layers;
    if (o.progress) o.progress(l, blocks, "capture");
    auto stats = cal.capture(scaled, 0xFu);
    // the capture stopped at the down projection's input with the original weights: the next
    // block's inputs are this block's original FP32 outputs (as AutoAWQ feeds the next layer),
    // finished from there with the unscaled down projection instead of a second run of the block
    const Linear original_down = method.info.advance_quantized ? Linear{} : scaled.w2;
    BlockScales bs;
    Layer q = awq_block_from_stats(stats, scaled, l, cal.config(), scheme, o, settings, bs, [&] { stats = BlockStats(); });
    if (report) report->push_back(bs);
    if (o.progress) o.progress(l, blocks, "advance");
    if (method.info.advance_quantized) {
        cal.advance(scaled);
    } else {
        scaled.w2 = original_down;
        cal.advance(scaled, true);
    }
    return q;
}

/// A method of the activation_scaled pipeline (AWQ, AWQ+GPTQ, TWQ) on the whole decoder:
/// `model`'s block linears must be FP32. The method's `round` is the final quantizer.
inline Weights awq_quantize_model(const Weights& model, std::span<const int> tokens, const RuntimeScheme& scheme, const ModelQuantizeOptions& o = {},
                                  std::vector<BlockScales>* report = nullptr) {
    awq_method(scheme, o, model.layers.size());
    check_tensor_schemes(model.config, scheme, o);
    Weights out = model;
    LayerwiseCalibration cal(model, tokens, o.calibration);
    const QuantizeSettings settings = o.run_settings();
    const int blocks = model.config.n_layers;
    for (int l = 0; l < blocks; ++l)
        out.layers[std::size_t(l)] = awq_quantize_block(cal, model.layers[std::size_t(l)], l, scheme, o, settings, report);
    if (o.progress) o.progress(blocks, blocks, "done");
    return out;
}

}  // namespace qforge::llama
