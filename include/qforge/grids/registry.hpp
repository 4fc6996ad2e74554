#pragma once
/// @file
/// The codebook grids a scheme's text may name (`rtn:iq4nlg32`): one entry per grid file.
#include <array>

#include "qforge/grids/iq4_nl.hpp"
#include "qforge/grids/nf4.hpp"

namespace qforge {

template <class... Grids>
struct grid_list {};

/// Every codebook grid, as compile-time tags.
using Grids = grid_list<Iq4Nl, Nf4>;

namespace detail {
template <class... G>
constexpr auto codebook_table(grid_list<G...>) {
    return std::array<const Codebook*, sizeof...(G)>{G::codebook...};
}
}  // namespace detail

inline constexpr auto codebooks = detail::codebook_table(Grids{});

namespace detail {
constexpr bool codebooks_ascend() {
    for (const Codebook* c : codebooks)
        for (std::size_t i = 1; i < c->levels.size(); ++i)
            if (!(c->levels[i - 1] < c->levels[i])) return false;
    return true;
}
}  // namespace detail
static_assert(detail::codebooks_ascend(),
              "qforge: a codebook's levels must ascend (Codebook::anchor looks at the two ends; the rounding's 'lower level on ties' is the first index)");

}  // namespace qforge
