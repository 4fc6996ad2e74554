#pragma once
/// @file
/// The one table of packed formats (ggml's `type_traits[]` as a type list): each entry is a
/// format type with its facts in `F::info` (formats/format.hpp). From this list are generated
/// the linear-weight variant (models/llama/linear.hpp), the container's read/write
/// (container/llama/container.hpp), the GGUF loader's choice of format (sources/llama/gguf_loader.hpp),
/// which format a quantized matrix packs into, and the kernel instantiations of every dispatched
/// instruction set (runtime/instantiate.hpp). Adding a format: its file in formats/, its
/// FormatTraits in backends/codecs.hpp, and one entry here.
#include <array>
#include <optional>
#include <tuple>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "qforge/formats/codebook.hpp"
#include "qforge/formats/dense.hpp"
#include "qforge/formats/double_quant.hpp"
#include "qforge/formats/format.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/formats/gguf_kq.hpp"

namespace qforge {

template <class... F>
struct format_list {};

/// Every packed format, in the order a spec looks for the format it packs into.
using Formats = format_list<Dense<2>, Dense<3>, Dense<4>, Dense<8>, Q4_0, Q4_1, Q8_0, IQ4_NL, NF4, NF4_DQ, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q5_0, Q5_1>;

/// std::variant<Extra..., F::Packed...> over a format list.
template <class List, class... Extra>
struct packed_variant;
template <class... F, class... Extra>
struct packed_variant<format_list<F...>, Extra...> {
    using type = std::variant<Extra..., typename F::Packed...>;
};

namespace detail {
template <class P, class... F>
struct find_packed {
    static constexpr std::size_t index = [] {
        constexpr bool match[] = {std::is_same_v<P, typename F::Packed>...};
        for (std::size_t i = 0; i < sizeof...(F); ++i)
            if (match[i]) return i;
        return sizeof...(F);
    }();
    static_assert(index < sizeof...(F), "qforge: this packed type belongs to no format of qforge::Formats (formats/registry.hpp)");
    using type = std::tuple_element_t<index, std::tuple<F...>>;
};
template <class P, class List>
struct format_of_packed_in;
template <class P, class... F>
struct format_of_packed_in<P, format_list<F...>> {
    using type = typename find_packed<P, F...>::type;
};
}  // namespace detail

/// The format a packed matrix type belongs to.
template <class P>
using format_of_packed = typename detail::format_of_packed_in<P, Formats>::type;

/// Calls `fn(std::type_identity<F>{})` for the first format F of the list whose info satisfies
/// `pred(F::info)`, and returns true; false (fn not called) when none does.
template <class Pred, class Fn, class... F>
bool visit_format(format_list<F...>, Pred&& pred, Fn&& fn) {
    return ((pred(F::info) ? (fn(std::type_identity<F>{}), true) : false) || ...);
}
template <class Pred, class Fn>
bool visit_format(Pred&& pred, Fn&& fn) {
    return visit_format(Formats{}, std::forward<Pred>(pred), std::forward<Fn>(fn));
}

namespace detail {
template <class F>
concept HasBlockGrid = requires { F::grid_spec; } && !F::grid_spec.block.empty();
template <class... F>
constexpr auto block_grid_table(format_list<F...>) {
    constexpr std::size_t n = (std::size_t(HasBlockGrid<F>) + ... + 0);
    std::array<QuantSpec, n> out{};
    std::size_t i = 0;
    const auto add = [&](auto f) {
        using G = typename decltype(f)::type;
        if constexpr (HasBlockGrid<G>) out[i++] = G::grid_spec;
    };
    (add(std::type_identity<F>{}), ...);
    return out;
}
}  // namespace detail

/// The grids of the GGUF block types whose grid is fixed (Q4_0, Q4_1, Q8_0, the K-quants): each a QuantSpec
/// with `block` set to the format's `stored_as`, as scheme text names them (`rtn:q4_0`).
inline constexpr auto block_grids = detail::block_grid_table(Formats{});

/// llama-quantize's fallback where a row is not whole blocks of a type (llama.cpp's
/// `tensor_type_fallback`, src/llama-quant.cpp): Q2_K and Q3_K to Q4_0, Q4_K to Q5_0, Q5_K to
/// Q5_1, Q6_K to Q8_0; a 32-weight type (and a fallback that does not fit either) to F16.
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 5> block_fallbacks{{
    {"q2_k", "q4_0"}, {"q3_k", "q4_0"}, {"q4_k", "q5_0"}, {"q5_k", "q5_1"}, {"q6_k", "q8_0"}}};

/// Weights per block of the block format named `block` (0 when none is).
inline std::size_t block_weights_of(std::string_view block) {
    std::size_t n = 0;
    visit_format([&](const FormatInfo& i) { return i.stored_as == block && i.storage == Storage::blocks; },
                 [&](auto f) {
                     using F = typename decltype(f)::type;
                     if constexpr (requires { typename F::block_type; }) n = block_fields<typename F::block_type>::weights;
                 });
    return n;
}

/// The grid a row of `cols` weights gets under `spec`: the spec itself when it names no block
/// type or its blocks divide the row; else the grid of llama-quantize's fallback type
/// (block_fallbacks) when that divides it; nullopt when no block type does (llama-quantize then
/// writes F16).
inline std::optional<QuantSpec> fitting_block_grid(const QuantSpec& spec, int cols) {
    if (spec.block.empty()) return spec;
    const std::size_t n = block_weights_of(spec.block);
    if (n && cols > 0 && std::size_t(cols) % n == 0) return spec;
    for (const auto& [from, to] : block_fallbacks)
        if (from == spec.block)
            for (const QuantSpec& b : block_grids)
                if (b.block == to && cols > 0 && std::size_t(cols) % block_weights_of(to) == 0) return b;
    return std::nullopt;
}

/// Whether `i` is the format a matrix of `spec` packs into (see visit_packing_format).
inline bool packs_into(const FormatInfo& i, const QuantSpec& spec) noexcept {
    if (!spec.block.empty()) return i.stored_as == spec.block;
    return spec.codebook ? i.codebook == spec.codebook && (i.scales == ScaleType::dq8) == (spec.scale_type == ScaleType::dq8)
                         : i.storage == Storage::dense_rows && !i.codebook && i.bits == spec.bits;
}

/// The format a quantized matrix of this spec packs into by default: a codebook grid's format
/// (the first of the list storing that codebook with the spec's kind of scales), else the dense format of the spec's bit width.
/// Affine GGUF block formats are only chosen by name (`spec.block`: their grids are fixed), so a
/// spec that happens to match Q4_0's grid without naming it still packs densely. A format that cannot hold the matrix (its
/// `unsupported` says why) is an InvalidArgument.
template <class Fn>
bool visit_packing_format(const QuantSpec& spec, int rows, int cols, Fn&& fn) {
    return visit_format([&](const FormatInfo& i) { return packs_into(i, spec); },
                        [&](auto f) {
                            using F = typename decltype(f)::type;
                            if (auto why = F::unsupported(spec, rows, cols); !why.empty()) throw InvalidArgument(why);
                            fn(f);
                        });
}

}  // namespace qforge
