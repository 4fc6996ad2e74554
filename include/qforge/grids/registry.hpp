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

}  // namespace qforge
