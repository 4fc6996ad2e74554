#pragma once
/// @file
/// Salient input channels kept wide (`,salient=P`, issue #17): the P% input channels of a layer
/// with the largest activation magnitude keep their weights in FP16, and the method quantizes
/// the other columns alone. Mixed precision by input channel, as LLM.int8() (Dettmers et al.,
/// 2022: outlier features in 16 bits) and OWQ (Lee et al., 2024: GPTQ with "weak columns" kept
/// in FP16) do it.
///
/// With the kept columns exact (ΔW = 0 there), GPTQ's objective tr(ΔW H ΔWᵀ) is that of the other
/// columns on H restricted to them, H_rr: so the method runs on (W_r, H_rr), exactly the
/// problem that is left, and every column it quantizes is compensated through the others as
/// usual. Magnitude of channel j: H_jj = (2/n) Σ_t x_tj² (its mean square up to the factor 2).
///
/// Bytes (Linear::bytes): the quantized columns as their format stores them, plus per kept
/// channel its int32 index and its FP16 weights (4 + 2 · rows bytes); the column order only
/// when act-order permutes it (the kept channels imply the others' order).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "qforge/core/half.hpp"
#include "qforge/quantizers/quantizer.hpp"

namespace qforge {

/// The number of channels `,salient=P` keeps of `cols`: round(P% of cols), at least 1, at most
/// cols − 1 (something is left to quantize).
inline int salient_count(float percent, int cols) {
    const int k = int(std::lround(double(percent) / 100.0 * double(cols)));
    return std::clamp(k, 1, std::max(1, cols - 1));
}

/// `fn` (a method's quantize) with `,salient=P` applied: see the file comment. Needs the
/// Hessian (InvalidArgument otherwise, and for a layer of one column). The result's q holds
/// the cols − k quantized columns, `column_order` maps them to the original columns (composed
/// with the method's own act-order), `wide_columns`/`wide_values` the kept ones.
template <class Fn>
QuantizedLayer quantize_with_salient(Fn&& fn, MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
    if (!(s.options.salient > 0.0f)) return fn(w, s, c, o);
    const std::size_t R = w.rows, C = w.cols;
    if (!c.hessian) throw InvalidArgument("',salient=': the input channels are picked by their activation magnitude: needs the Hessian (calibration)");
    if (c.hessian->size() != C * C)
        throw InvalidArgument("',salient=': a Hessian of " + std::to_string(c.hessian->size()) + " values for " + std::to_string(C) + " columns");
    if (C < 2) throw InvalidArgument("',salient=': a layer of one column has nothing left to quantize");
    const std::size_t K = std::size_t(salient_count(s.options.salient, int(C)));
    const auto& H = *c.hessian;
    std::vector<int> by_magnitude(C);
    std::iota(by_magnitude.begin(), by_magnitude.end(), 0);
    // largest H_jj first, the lower index on ties (the same channels on every run)
    std::stable_sort(by_magnitude.begin(), by_magnitude.end(),
                     [&](int a, int b) { return H[std::size_t(a) * C + std::size_t(a)] > H[std::size_t(b) * C + std::size_t(b)]; });
    std::vector<int> wide(by_magnitude.begin(), by_magnitude.begin() + std::ptrdiff_t(K));
    std::sort(wide.begin(), wide.end());
    std::vector<int> rest;
    rest.reserve(C - K);
    for (std::size_t j = 0, at = 0; j < C; ++j) {
        if (at < K && std::size_t(wide[at]) == j) ++at;
        else rest.push_back(int(j));
    }
    const std::size_t Cr = rest.size();
    std::vector<float> wr(R * Cr), hr(Cr * Cr);
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t k = 0; k < Cr; ++k) wr[r * Cr + k] = w(r, std::size_t(rest[k]));
    for (std::size_t i = 0; i < Cr; ++i)
        for (std::size_t k = 0; k < Cr; ++k) hr[i * Cr + k] = H[std::size_t(rest[i]) * C + std::size_t(rest[k])];
    LayerCalibration cr = c;
    cr.hessian = &hr;
    std::vector<float> mean_abs_r, importance_r;
    const auto restrict_to_rest = [&](const std::vector<float>* v, std::vector<float>& out) -> const std::vector<float>* {
        if (!v) return nullptr;
        out.resize(Cr);
        for (std::size_t k = 0; k < Cr; ++k) out[k] = (*v)[std::size_t(rest[k])];
        return &out;
    };
    cr.mean_abs = restrict_to_rest(c.mean_abs, mean_abs_r);
    cr.importance = restrict_to_rest(c.importance, importance_r);
    RuntimeScheme t = s;
    t.options.salient = 0.0f;
    QuantizedLayer out = fn(MatrixView<const float>(wr.data(), R, Cr), t, cr, o);
    std::vector<int> order(Cr);
    for (std::size_t k = 0; k < Cr; ++k) order[k] = rest[out.column_order.empty() ? k : std::size_t(out.column_order[k])];
    out.column_order = std::move(order);
    out.wide_values.resize(R * K);
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t j = 0; j < K; ++j) out.wide_values[r * K + j] = round_to_half(w(r, std::size_t(wide[j])));
    out.wide_columns = std::move(wide);
    return out;
}

}  // namespace qforge
