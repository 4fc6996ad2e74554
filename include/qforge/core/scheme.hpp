#pragma once
/// @file
/// Quantization schemes, chosen at compile time (`Scheme<Rtn, Int<4>, Group<128>, Asym>`) or at
/// run time from text (`rtn:w4g128a`). Both produce the same QuantSpec, and a compile-time
/// scheme's `text()` parses back to the equal runtime scheme.
///
/// Text grammar:
///     scheme := method ":" grid { "," option }
///     grid   := "w" bits [ "g" group ] [ zero ]         (affine: scale and zero point)
///             | codebook [ "g" group ]                 (a codebook grid of grids/: nf4, iq4nl;
///                                                        without "g", its format's block)
///             | block                                  (a GGUF block type's own grid: q4_0, q4_1,
///                                                        q5_0, q5_1, q8_0, q2_k ... q6_k; packed
///                                                        into exactly that type)
///             | "pq" d "n" n "g" g [ "c8" ]           (product quantization, PqSpec: sub-vectors of
///                                                        d columns, n centroids per codebook, g
///                                                        sub-vectors per codebook; fp16 centroids,
///                                                        or int8 with "c8"; rtn and gptq only;
///                                                        formats/pq.hpp)
///     zero   := "s" (symmetric) | "a" (integer zero, the default) | "m" (float minimum)
///     option := "clip" (MSE clip search)
///             | "act" (GPTQ act-order) | "static" (GPTQ static groups) | "damp=" fraction (GPTQ;
///               also for awq+gptq)
///             | "dq" (QLoRA's double quantization of the scales: ScaleType::dq8; nf4 only)
///             | "had" (incoherence processing: the weights quantized after a randomized Hadamard
///               transform of their inputs, the inputs transformed at run time; rtn and gptq,
///               whose calibration is a Hessian; linalg/hadamard.hpp)
/// Scales are fp16, or with "dq" 8-bit double-quantized codes (an fp32-scale option was dropped
/// from the grammar because no format could store what it asked for). Without "g" the grid is per-channel. `to_string` always writes the zero letter, so canonical
/// text round-trips exactly.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <span>
#include <type_traits>
#include <vector>

#include "qforge/core/spec.hpp"

namespace qforge {

// ---- methods ----
/// What the scheme grammar and the pipelines need to know of a method. Each method's tag (in its
/// own file in quantizers/, next to its `quantizer<Tag>` specialisation) carries one of these as
/// `Tag::info`, and quantizers/registry.hpp lists the tags.
enum class Pipeline : std::uint8_t {
    independent,         ///< every layer on its own, no calibration (RTN)
    sequential_hessian,  ///< each layer from its input Hessian, inputs through the quantized earlier layers (GPTQ)
    activation_scaled,   ///< input-channel scales searched per block and folded, then a final quantizer (AWQ family)
};
struct MethodInfo {
    std::string_view name;        ///< the text before ':' in a scheme
    bool gptq_options = false;    ///< accepts act, static and damp=
    Pipeline pipeline = Pipeline::independent;
    bool needs_targets = false;   ///< needs a neuron set (TWQ)
    /// activation_scaled: the next block's calibration inputs go through the quantized block (true,
    /// GPTQ's convention) or through the scaled FP32 block (false, AutoAWQ's)
    bool advance_quantized = false;
    /// needs_targets: the method this one equals with no neuron targeted (TWQ: "awq"), for reports
    std::string_view untargeted{};
    /// accepts a product-quantization grid (`pq2n64g1024`): rtn (plain PQ) and gptq (GPTQ-PQ)
    bool pq_grid = false;
    constexpr bool needs_calibration() const noexcept { return pipeline != Pipeline::independent; }
};

// ---- grid policies ----
template <int B>
struct Int {
    static_assert(B == 2 || B == 3 || B == 4 || B == 8,
                  "qforge::Int<B>: only 2, 3, 4 and 8-bit codes are supported");
    static constexpr int bits = B;
};

template <int G>
struct Group {
    static_assert(G > 0 && G <= QuantSpec::max_group_size,
                  "qforge::Group<G>: the group size must be positive (use PerChannel for one "
                  "group per row)");
    static constexpr int size = G;
};

struct PerChannel {
    static constexpr int size = 0;
};

struct Sym {
    static constexpr ZeroPoint zero = ZeroPoint::symmetric;
};
struct Asym {
    static constexpr ZeroPoint zero = ZeroPoint::integer;
};
struct AsymMin {
    static constexpr ZeroPoint zero = ZeroPoint::float_min;
};

// ---- options ----
/// Search a shrink factor of each group's range that minimises the weight MSE.
struct Clip {};
/// GPTQ: process columns by descending Hessian diagonal.
struct ActOrder {};
/// GPTQ with act-order: groups are runs of the original column order.
struct StaticGroups {};
/// Incoherence processing: a randomized Hadamard transform on each layer's inputs (`,had`).
struct Hadamard {};

/// A product-quantization grid in place of `Int<bits>` (`Scheme<Gptq, Pq<2, 64, 1024>>` is
/// `gptq:pq2n64g1024`): sub-vectors of D columns, N centroids per codebook shared by G sub-vectors,
/// centroids in CentroidBits (16: fp16, 8: int8 with an fp16 scale per codebook).
template <int D, int N, int G, int CentroidBits = 16>
struct Pq {
    static_assert(D >= 1 && D <= 16 && N >= 2 && N <= 65536 && G >= 64 && G % 64 == 0 && (CentroidBits == 16 || CentroidBits == 8),
                  "qforge::Pq<D, N, G, CentroidBits>: D in 1..16, N in 2..65536, G a positive multiple of 64, centroids in 16 or 8 bits");
    static constexpr PqSpec pq{D, N, G, CentroidBits};
};
/// QLoRA's double quantization of a codebook grid's absmax scales (ScaleType::dq8; NF4).
struct DoubleQuant {};

/// Options that change how a quantizer runs but not the grid itself.
struct SchemeOptions {
    bool clip = false;
    bool act_order = false;      ///< GPTQ only
    bool static_groups = false;  ///< GPTQ only
    float damp = 0.01f;          ///< GPTQ only: fraction of the mean Hessian diagonal
    bool hadamard = false;       ///< `,had`: a randomized Hadamard transform on the inputs (rtn, gptq)
    /// `,salient=P`: the P% input channels of largest activation magnitude kept in FP16, the rest
    /// on the grid (quantizers/salient.hpp; any method: RTN then calibrates to find them). 0: none.
    float salient = 0.0f;
    friend constexpr bool operator==(const SchemeOptions&, const SchemeOptions&) = default;
};

/// A scheme known only at run time: what the CLI builds from `--scheme`.
struct RuntimeScheme {
    std::string method = "rtn";  ///< a MethodInfo::name
    QuantSpec spec{};            ///< the scalar grid (left at its default for a PQ grid)
    SchemeOptions options{};
    std::optional<PqSpec> pq{};  ///< a product-quantization grid instead of `spec`, or none
    friend bool operator==(const RuntimeScheme&, const RuntimeScheme&) = default;
};

namespace detail {
template <class T>
concept MethodTag = requires { { T::info } -> std::convertible_to<MethodInfo>; };
template <class T>
concept BitsTag = requires { { T::bits } -> std::convertible_to<int>; } || requires { { T::pq } -> std::convertible_to<PqSpec>; };
template <class T>
inline constexpr bool is_pq_grid = requires { T::pq; };
template <class T>
constexpr std::optional<PqSpec> pq_of() noexcept {
    if constexpr (is_pq_grid<T>) return T::pq;
    else return std::nullopt;
}
template <class T>
constexpr int bits_of() noexcept {
    if constexpr (is_pq_grid<T>) return QuantSpec{}.bits;
    else return T::bits;
}
/// A codebook grid tag (grids/) rather than `Int<bits>`. A trait, not a pointer test: comparing an
/// object's address with null is not a constant expression under the sanitizers.
template <class T>
inline constexpr bool is_codebook_grid = requires { T::codebook; };
template <class T>
constexpr const Codebook* codebook_of() noexcept {
    if constexpr (is_codebook_grid<T>) return T::codebook;
    else return nullptr;
}
template <class T>
constexpr bool supports_double_quant() noexcept {
    if constexpr (is_codebook_grid<T>) return T::codebook->double_quant;
    else return false;
}
template <class T>
concept GroupingTag = requires { { T::size } -> std::convertible_to<int>; };
template <class T>
concept ZeroTag = requires { { T::zero } -> std::convertible_to<ZeroPoint>; };
template <class T>
concept OptionTag = std::is_same_v<T, Clip> || std::is_same_v<T, ActOrder> ||
                    std::is_same_v<T, StaticGroups> || std::is_same_v<T, DoubleQuant> || std::is_same_v<T, Hadamard>;
}  // namespace detail

/// Canonical text of a runtime scheme.
inline std::string to_string(const RuntimeScheme& s) {
    // appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "g" + std::to_string(...)
    std::string out = s.method;
    out += ':';
    if (s.pq) {
        out += "pq" + std::to_string(s.pq->d) + 'n' + std::to_string(s.pq->n) + 'g' + std::to_string(s.pq->g);
        if (s.pq->centroid_bits == 8) out += "c8";
    } else if (!s.spec.block.empty()) {
        out += s.spec.block;
    } else if (s.spec.codebook) {
        out += s.spec.codebook->name;
        out += 'g';
        out += std::to_string(s.spec.group_size);
    } else {
        out += 'w';
        out += std::to_string(s.spec.bits);
        if (!s.spec.per_channel()) {
            out += 'g';
            out += std::to_string(s.spec.group_size);
        }
        out += s.spec.zero == ZeroPoint::symmetric ? "s"
               : s.spec.zero == ZeroPoint::integer ? "a"
                                                   : "m";
    }
    if (s.spec.scale_type == ScaleType::dq8) out += ",dq";
    if (s.options.clip) out += ",clip";
    if (s.options.act_order) out += ",act";
    if (s.options.static_groups) out += ",static";
    if (s.options.hadamard) out += ",had";
    // the shortest text that reads back as the same float, so canonical text round-trips
    const auto value = [&](const char* key, float v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%g", double(v));
        if (std::strtof(buf, nullptr) != v) std::snprintf(buf, sizeof buf, "%.9g", double(v));
        out += key;
        out += buf;
    };
    if (s.options.damp != 0.01f) value(",damp=", s.options.damp);
    if (s.options.salient != 0.0f) value(",salient=", s.options.salient);
    return out;
}

/// Parses scheme text against a list of methods (quantizers/registry.hpp's `parse_scheme(text)`
/// passes the registry's); throws InvalidArgument quoting the text and saying what is wrong.
inline RuntimeScheme parse_scheme(std::string_view text, std::span<const MethodInfo> methods,
                                  std::span<const Codebook* const> codebooks = {}, std::span<const QuantSpec> block_grids = {}) {
    // the example follows the kind of grid being read: a PQ grid's error shows a PQ grid
    std::string_view examples = "rtn:w4g128a, rtn:w3s, rtn:w4g32m,clip";
    const auto fail = [&](const std::string& why) -> RuntimeScheme {
        throw InvalidArgument("bad scheme '" + std::string(text) + "': " + why + " (expected e.g. " + std::string(examples) + ")");
    };
    RuntimeScheme s;
    const auto colon = text.find(':');
    if (colon == std::string_view::npos || colon == 0) return fail("missing 'method:'");
    s.method = std::string(text.substr(0, colon));
    const auto method = std::find_if(methods.begin(), methods.end(), [&](const MethodInfo& m) { return m.name == s.method; });
    if (method == methods.end()) {
        std::string known;
        for (const auto& m : methods) known += (known.empty() ? "" : ", ") + std::string(m.name);
        return fail("unknown method '" + s.method + "' (known: " + known + ")");
    }

    std::string_view rest = text.substr(colon + 1);
    const auto comma = rest.find(',');
    std::string_view grid = rest.substr(0, comma);
    std::string_view options = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
    if (comma != std::string_view::npos && (options.empty() || options.back() == ','))
        return fail("empty option after ','");

    const auto read_int = [&](std::string_view& sv, const char* what) {
        int value = 0;
        const auto [ptr, ec] = std::from_chars(sv.data(), sv.data() + sv.size(), value);
        if (ec != std::errc{} || ptr == sv.data())
            fail(std::string("expected a number after '") + what + "'");
        sv.remove_prefix(std::size_t(ptr - sv.data()));
        return value;
    };
    const Codebook* codebook = nullptr;
    for (const Codebook* cb : codebooks)
        if (grid.substr(0, cb->name.size()) == cb->name && (!codebook || cb->name.size() > codebook->name.size())) codebook = cb;
    const auto block = std::find_if(block_grids.begin(), block_grids.end(), [&](const QuantSpec& b) { return grid == b.block; });
    if (block != block_grids.end()) {
        s.spec = *block;  // the type fixes bits, group, zero point and scales
        grid = {};
    } else if (grid.substr(0, 2) == "pq") {
        examples = "gptq:pq2n64g1024, rtn:pq4n256g2048c8,had";
        if (!method->pq_grid) return fail("a product-quantization grid is for rtn (plain PQ) and gptq (GPTQ-PQ), not " + s.method);
        grid.remove_prefix(2);
        PqSpec p;
        p.d = read_int(grid, "pq");
        if (grid.empty() || grid.front() != 'n') return fail("a PQ grid is pq<d>n<n>g<g>[c8], e.g. pq2n64g1024");
        grid.remove_prefix(1);
        p.n = read_int(grid, "n");
        if (grid.empty() || grid.front() != 'g') return fail("a PQ grid is pq<d>n<n>g<g>[c8], e.g. pq2n64g1024");
        grid.remove_prefix(1);
        p.g = read_int(grid, "g");
        if (grid == "c8") p.centroid_bits = 8, grid = {};
        if (!grid.empty()) return fail("unexpected '" + std::string(grid) + "' after the PQ grid (only 'c8', int8 centroids)");
        try {
            p.validate();
        } catch (const InvalidArgument& e) {
            return fail(e.what());
        }
        s.pq = p;
    } else if (codebook) {
        grid.remove_prefix(codebook->name.size());
        s.spec.bits = codebook->bits;
        s.spec.codebook = codebook;
        s.spec.zero = ZeroPoint::symmetric;
        s.spec.group_size = codebook->default_group;
    } else {
        if (grid.empty() || grid.front() != 'w') {
            for (const QuantSpec& b : block_grids)
                if (grid.substr(0, b.block.size()) == b.block)
                    return fail(std::string(b.block) + " is a GGUF block type with its own grid (group 32): unexpected '" +
                                std::string(grid.substr(b.block.size())) + "'");
            std::string names, blocks;
            for (const Codebook* cb : codebooks) names += ", " + std::string(cb->name);
            for (const QuantSpec& b : block_grids) blocks += ", " + std::string(b.block);
            return fail("the grid must start with 'w<bits>'" + (names.empty() ? std::string() : ", or be a codebook (" + names.substr(2) + ")") +
                        (blocks.empty() ? std::string() : " or a GGUF block type (" + blocks.substr(2) + ")"));
        }
        grid.remove_prefix(1);
        s.spec.bits = read_int(grid, "w");
    }
    if (!grid.empty() && grid.front() == 'g') {
        grid.remove_prefix(1);
        s.spec.group_size = read_int(grid, "g");
        if (s.spec.group_size <= 0) return fail("the group size must be positive");
    }
    if (!grid.empty() && codebook) return fail("a codebook grid has no zero point: unexpected '" + std::string(grid) + "'");
    if (!grid.empty()) {
        switch (grid.front()) {
            case 's': s.spec.zero = ZeroPoint::symmetric; break;
            case 'a': s.spec.zero = ZeroPoint::integer; break;
            case 'm': s.spec.zero = ZeroPoint::float_min; break;
            default: return fail("unknown zero-point letter '" + std::string(1, grid.front()) + "'");
        }
        grid.remove_prefix(1);
    }
    if (!grid.empty()) return fail("unexpected '" + std::string(grid) + "'");

    std::vector<std::string_view> seen;  // an option given twice is refused, not dropped
    while (!options.empty()) {
        const auto next = options.find(',');
        const std::string_view opt = options.substr(0, next);
        const std::string_view key = opt.substr(0, opt.find('='));
        if (std::find(seen.begin(), seen.end(), key) != seen.end()) return fail("option '" + std::string(key) + "' is given twice");
        seen.push_back(key);
        const bool gptq = method->gptq_options;
        if (opt == "clip") s.options.clip = true;
        else if (opt == "dq") s.spec.scale_type = ScaleType::dq8;  // validate() says when the grid has none
        else if (opt == "f32") return fail("option 'f32' is not offered: packed formats store fp16 scales (or 8-bit ones with 'dq')");
        else if (opt == "act" && gptq) s.options.act_order = true;
        else if (opt == "static" && gptq) s.options.static_groups = true;
        else if (opt == "had") {
            // the activation-scaled methods' statistics (mean |x|, neuron targets) are of the
            // inputs as they are, not transformed
            if (method->pipeline == Pipeline::activation_scaled)
                return fail("option 'had' is for rtn and gptq (" + s.method + " scales channels by their own activations, which the transform mixes)");
            s.options.hadamard = true;
        }
        else if (opt.substr(0, 5) == "damp=" && gptq) {
            const std::string value(opt.substr(5));
            char* end = nullptr;
            const float d = std::strtof(value.c_str(), &end);
            if (value.empty() || *end != '\0' || !(d >= 0.0f && d <= 1.0f)) return fail("damp must be a fraction in [0, 1]");
            s.options.damp = d;
        } else if (opt == "salient") {
            return fail("salient= needs the percentage of input channels kept in FP16, in (0, 50] (e.g. salient=1)");
        } else if (opt.substr(0, 8) == "salient=") {
            const std::string value(opt.substr(8));
            char* end = nullptr;
            const float p = std::strtof(value.c_str(), &end);
            if (value.empty() || *end != '\0' || !(p > 0.0f && p <= 50.0f))
                return fail("salient= is the percentage of input channels kept in FP16, in (0, 50]");
            s.options.salient = p;
        } else if (opt == "act" || opt == "static" || opt.substr(0, 5) == "damp=") {
            return fail("option '" + std::string(opt) + "' is for methods with GPTQ's options (gptq, awq+gptq) only");
        } else {
            return fail("unknown option '" + std::string(opt) + "'");
        }
        options = next == std::string_view::npos ? "" : options.substr(next + 1);
    }
    if (s.options.salient > 0.0f && (s.pq || s.options.hadamard || !s.spec.block.empty() || s.spec.codebook))
        return fail("option 'salient=' keeps original input channels of a scalar grid: not with a PQ grid, ',had' (which mixes the channels), a GGUF block "
                    "type or a codebook grid (their blocks would need the remaining columns to fill whole blocks)");
    if (s.pq && (s.options.clip || s.options.act_order || s.options.static_groups || s.spec.scale_type != ScaleType::f16))
        return fail("a PQ grid takes the options had and damp= only (its codebooks are fitted by k-means, its columns stay in their blocks' order)");
    if (!s.spec.block.empty() && s.options.act_order && !s.options.static_groups)
        return fail("a GGUF block grid fixes its groups, so act-order must keep them: add ',static' (" + s.method + ":" +
                    std::string(s.spec.block) + ",act,static)");
    try {
        s.spec.validate();
    } catch (const InvalidArgument& e) {
        return fail(e.what());
    }
    return s;
}

/// A scheme fixed at compile time. The primary template checks each parameter and says in words
/// which one is wrong.
template <class Method, class Bits, class Grouping = PerChannel, class Zero = Asym, class... Options>
struct Scheme {
    static_assert(detail::MethodTag<Method>,
                  "qforge::Scheme: the first parameter must be a method tag such as qforge::Rtn (a type with a static MethodInfo info)");
    static_assert(detail::BitsTag<Bits>,
                  "qforge::Scheme: the second parameter must be qforge::Int<bits> or a codebook grid (qforge::Iq4Nl, ...)");
    static_assert(!detail::is_codebook_grid<Bits> || (Grouping::size > 0 && !std::is_same_v<Zero, AsymMin>),
                  "qforge::Scheme: a codebook grid is per group (give qforge::Group<G>) and has no zero point");
    static_assert(detail::GroupingTag<Grouping>,
                  "qforge::Scheme: the third parameter must be qforge::Group<G> or qforge::PerChannel");
    static_assert(detail::ZeroTag<Zero>,
                  "qforge::Scheme: the fourth parameter must be qforge::Sym, qforge::Asym or qforge::AsymMin");
    static_assert((detail::OptionTag<Options> && ...),
                  "qforge::Scheme: options must be qforge::Clip, qforge::ActOrder, qforge::StaticGroups, qforge::DoubleQuant or qforge::Hadamard");
    static_assert(Method::info.pipeline != Pipeline::activation_scaled || !(std::is_same_v<Options, Hadamard> || ...),
                  "qforge::Scheme: Hadamard (incoherence processing) is an option of rtn and gptq only");
    static_assert(!(std::is_same_v<Options, DoubleQuant> || ...) || detail::supports_double_quant<Bits>(),
                  "qforge::Scheme: DoubleQuant (QLoRA's double quantization of the scales) is for the NF4 grid only");
    static_assert(Method::info.gptq_options ||
                      !((std::is_same_v<Options, ActOrder> || std::is_same_v<Options, StaticGroups>) || ...),
                  "qforge::Scheme: ActOrder and StaticGroups are options of methods with GPTQ's options (qforge::Gptq, qforge::AwqGptq) only");

    using method = Method;
    static_assert(!detail::is_pq_grid<Bits> || (Method::info.pq_grid && Grouping::size == 0 && std::is_same_v<Zero, Asym> &&
                                                !((std::is_same_v<Options, Clip> || std::is_same_v<Options, ActOrder> ||
                                                   std::is_same_v<Options, StaticGroups> || std::is_same_v<Options, DoubleQuant>) || ...)),
                  "qforge::Scheme: a Pq grid is for qforge::Rtn and qforge::Gptq, has no group or zero point of its own, and takes "
                  "only the Hadamard option");
    static constexpr QuantSpec spec{detail::bits_of<Bits>(), Grouping::size, detail::is_codebook_grid<Bits> ? ZeroPoint::symmetric : Zero::zero,
                                    (std::is_same_v<Options, DoubleQuant> || ...) ? ScaleType::dq8 : ScaleType::f16,
                                    detail::codebook_of<Bits>()};
    static constexpr SchemeOptions options{(std::is_same_v<Options, Clip> || ...), (std::is_same_v<Options, ActOrder> || ...),
                                           (std::is_same_v<Options, StaticGroups> || ...), 0.01f, (std::is_same_v<Options, Hadamard> || ...)};

    static RuntimeScheme runtime() { return {std::string(Method::info.name), spec, options, detail::pq_of<Bits>()}; }
    static std::string text() { return to_string(runtime()); }
};

}  // namespace qforge
