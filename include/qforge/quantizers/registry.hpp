#pragma once
/// @file
/// The one runtime registry of methods: the text form of a scheme (`gptq:w4g128a,act`) reaches
/// the same `quantizer<Tag>` specialisations as `quantize<Scheme<Gptq, ...>>`. Adding a method
/// means one file in quantizers/ and one tag in `Methods` below; nothing else compares method
/// names (model drivers read `MethodInfo` and `pipeline_of`, the CLI asks `needs_calibration(scheme)`).
#include <array>
#include <span>
#include <string>
#include <string_view>

#include "qforge/formats/registry.hpp"
#include "qforge/grids/registry.hpp"
#include "qforge/quantizers/awq.hpp"
#include "qforge/quantizers/awq_gptq.hpp"
#include "qforge/quantizers/gptq.hpp"
#include "qforge/quantizers/quantizer.hpp"
#include "qforge/quantizers/rtn.hpp"
#include "qforge/quantizers/salient.hpp"
#include "qforge/quantizers/twq.hpp"

namespace qforge {

template <class... Tags>
struct method_list {};

/// Every method a runtime scheme may name, in the order `--help` lists them.
using Methods = method_list<Rtn, Gptq, Awq, AwqGptq, Twq>;

using LayerQuantizeFn = QuantizedLayer (*)(MatrixView<const float>, const RuntimeScheme&, const LayerCalibration&, const QuantizeSettings&);

/// A method as the runtime sees it.
struct MethodEntry {
    MethodInfo info;
    LayerQuantizeFn quantize = nullptr;  ///< quantizer<Tag>::quantize (after GGUF's block fallback, detail::with_block_fallback)
    LayerQuantizeFn round = nullptr;     ///< quantizer<Tag>::round (activation_scaled methods), else null; the same fallback
};

namespace detail {
/// A method's quantize (or round) with GGUF's block fallback first: a layer whose rows are not
/// whole blocks of the scheme's GGUF type is quantized onto llama-quantize's fallback type instead
/// (fitting_block_grid), and its note says so; InvalidArgument when no block type fits.
template <LayerQuantizeFn Fn>
QuantizedLayer with_block_fallback(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
    if (s.spec.block.empty()) return Fn(w, s, c, o);
    const auto fit = fitting_block_grid(s.spec, int(w.cols));
    if (!fit)
        throw InvalidArgument(std::to_string(w.cols) + " columns are not whole blocks of " + std::string(s.spec.block) +
                              " nor of its fallback type: no GGUF block grid holds this layer (llama-quantize writes such a tensor as F16)");
    if (*fit == s.spec) return Fn(w, s, c, o);
    RuntimeScheme t = s;
    t.spec = *fit;
    QuantizedLayer out = Fn(w, t, c, o);
    out.note += std::to_string(w.cols) + " columns are not whole " + std::string(s.spec.block) + " blocks: quantized onto " +
                std::string(fit->block) + " instead, as llama-quantize falls back; ";
    return out;
}

/// A method's quantize with `,had` first (quantize_with_hadamard, quantizers/quantizer.hpp).
template <LayerQuantizeFn Fn>
QuantizedLayer with_hadamard(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
    return quantize_with_hadamard(Fn, w, s, c, o);
}

/// A method's quantize with `,salient=P` first (quantize_with_salient, quantizers/salient.hpp).
template <LayerQuantizeFn Fn>
QuantizedLayer with_salient(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
    return quantize_with_salient(Fn, w, s, c, o);
}

template <class Tag>
constexpr MethodEntry method_entry() {
    static_assert(Tag::info.pipeline != Pipeline::activation_scaled || requires { &quantizer<Tag>::round; },
                  "qforge: a method of the activation_scaled pipeline must give its quantizer a round(...) (the final "
                  "quantizer on scaled weights)");
    MethodEntry e{Tag::info, &with_block_fallback<&with_salient<&with_hadamard<&quantizer<Tag>::quantize>>>, nullptr};
    // the activation-scaled pipeline's final rounding keeps salient channels too (picked by the
    // scaled inputs' H diagonal, the Hessian it is given)
    if constexpr (requires { &quantizer<Tag>::round; }) e.round = &with_block_fallback<&with_salient<&quantizer<Tag>::round>>;
    return e;
}
template <class... Tags>
constexpr auto method_table(method_list<Tags...>) {
    return std::array<MethodEntry, sizeof...(Tags)>{method_entry<Tags>()...};
}
template <class... Tags>
constexpr auto method_infos(method_list<Tags...>) {
    return std::array<MethodInfo, sizeof...(Tags)>{Tags::info...};
}
}  // namespace detail

inline constexpr auto method_table = detail::method_table(Methods{});
inline constexpr auto method_infos = detail::method_infos(Methods{});

/// The registry entry of a method name; throws InvalidArgument listing the known ones.
inline const MethodEntry& find_method(std::string_view name) {
    for (const auto& m : method_table)
        if (m.info.name == name) return m;
    std::string known;
    for (const auto& m : method_table) known += (known.empty() ? "" : ", ") + std::string(m.info.name);
    throw InvalidArgument("unknown method '" + std::string(name) + "' (known: " + known + ")");
}

/// Parses scheme text (grammar in core/scheme.hpp) against the registry's methods.
inline RuntimeScheme parse_scheme(std::string_view text) { return parse_scheme(text, method_infos, codebooks, block_grids); }

/// The method facts of a parsed scheme.
inline const MethodInfo& method_of(const RuntimeScheme& s) { return find_method(s.method).info; }

/// The pipeline a scheme runs in: its method's, except that `,salient=P` on a method that needs
/// no calibration (RTN) runs in the sequential-Hessian one: the kept channels are picked by their
/// inputs' mean square (H's diagonal), which only calibration gives. RTN itself ignores the
/// Hessian, so its other columns are rounded as without calibration.
inline Pipeline pipeline_of(const RuntimeScheme& s) {
    const Pipeline p = method_of(s).pipeline;
    return p == Pipeline::independent && s.options.salient > 0.0f ? Pipeline::sequential_hessian : p;
}

/// Whether quantizing with `s` needs calibration tokens (pipeline_of is not independent).
inline bool needs_calibration(const RuntimeScheme& s) { return pipeline_of(s) != Pipeline::independent; }

/// Quantizes one layer with a scheme known at run time: the same specialisation, bit for bit, as
/// `quantize<S>` for the compile-time scheme with that text.
inline QuantizedLayer quantize(MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& calib = {},
                               const QuantizeSettings& o = {}) {
    return find_method(s.method).quantize(w, s, calib, o);
}

}  // namespace qforge
