#pragma once
/// @file
/// Spearman's rank correlation: how well one measure orders items like another (issue #17: does
/// a cheap proxy rank units' sensitivity as the measured KL divergence does?).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"

namespace qforge {

/// Ranks 1..n of `x`, ties sharing the mean of the ranks they span (the "fractional" ranking
/// Spearman's coefficient is defined on). Throws InvalidArgument for a NaN.
inline std::vector<double> fractional_ranks(std::span<const double> x) {
    for (const double v : x)
        if (std::isnan(v)) throw InvalidArgument("ranks: a value is NaN");
    std::vector<std::size_t> order(x.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
    std::vector<double> rank(x.size());
    for (std::size_t i = 0; i < order.size();) {
        std::size_t j = i;
        while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
        const double mean = 0.5 * double(i + j) + 1.0;  // ranks i+1 .. j+1
        for (std::size_t k = i; k <= j; ++k) rank[order[k]] = mean;
        i = j + 1;
    }
    return rank;
}

/// Spearman's ρ of paired samples: Pearson's correlation of their fractional ranks, in [-1, 1];
/// NaN when either side has a single distinct value (no order to compare). Throws
/// InvalidArgument for different lengths, fewer than 2 pairs, or a NaN.
inline double spearman(std::span<const double> a, std::span<const double> b) {
    if (a.size() != b.size()) throw InvalidArgument("spearman: " + std::to_string(a.size()) + " and " + std::to_string(b.size()) + " values");
    if (a.size() < 2) throw InvalidArgument("spearman: needs at least 2 pairs");
    const auto ra = fractional_ranks(a), rb = fractional_ranks(b);
    const double n = double(a.size()), mean = (n + 1.0) / 2.0;
    double sab = 0, saa = 0, sbb = 0;
    for (std::size_t i = 0; i < ra.size(); ++i) {
        const double da = ra[i] - mean, db = rb[i] - mean;
        sab += da * db, saa += da * da, sbb += db * db;
    }
    if (saa == 0.0 || sbb == 0.0) return std::numeric_limits<double>::quiet_NaN();
    return sab / std::sqrt(saa * sbb);
}

}  // namespace qforge
