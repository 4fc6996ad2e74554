#pragma once
/// @file
/// Bit allocation under a budget (issue #17): each unit (a tensor, or a block's tensors together)
/// has candidate schemes, each with the bytes it stores and the loss it is predicted to cause;
/// choose one candidate per unit so that the total loss is smallest and the total bytes stay
/// within the budget. This is the multiple-choice knapsack problem (Sinha & Zoltners, Operations
/// Research 27(3), 1979); the predicted loss of a choice is the sum of its units' losses.
///
/// Two solvers:
/// - `allocate_exact`: dynamic programming over the Pareto frontier of (bytes, loss) of the units
///   seen so far: a partial choice survives only if no other uses at most its bytes for at most
///   its loss. Exact; its cost is the frontier's size, capped by `max_states` (then InvalidArgument).
/// - `allocate_lagrangian`: the Lagrangian relaxation min Σ (loss + λ bytes) − λ budget, solved on
///   each unit's lower convex hull, walked from the fewest bytes upwards by the steepest loss
///   decrease per byte until the next step does not fit; then the leftover budget is spent
///   greedily. It returns the relaxation's best lower bound with the choice, so the duality gap
///   (loss − bound) says how far from optimal the choice can be.
/// Bytes are exact integers (what every format counts, docs/conventions.md), so a budget in bits
/// per weight is converted once by the caller.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"

namespace qforge {

/// One candidate of a unit: its stored bytes and the loss it is predicted to cause.
struct AllocationCandidate {
    std::uint64_t bytes = 0;
    double loss = 0.0;
};

/// A unit and its candidates (at least one).
struct AllocationUnit {
    std::string name;
    std::vector<AllocationCandidate> candidates;
};

/// The chosen candidate of each unit and what the choice costs.
struct Allocation {
    std::vector<int> choice;      ///< per unit, the index of its candidate
    std::uint64_t bytes = 0;      ///< Σ bytes of the choice (<= the budget)
    double loss = 0.0;            ///< Σ loss of the choice, summed in unit order
    double lower_bound = 0.0;     ///< no choice within the budget has a smaller loss (exact: = loss)
    bool exact = false;           ///< solved exactly (allocate_exact)
    /// How far the choice can be from the optimum: loss − lower_bound (0 when exact).
    double gap() const noexcept { return loss - lower_bound; }
};

namespace detail {
inline void check_units(std::span<const AllocationUnit> units) {
    if (units.empty()) throw InvalidArgument("allocation: no units");
    for (const auto& u : units) {
        if (u.candidates.empty()) throw InvalidArgument("allocation: unit '" + u.name + "' has no candidates");
        for (const auto& c : u.candidates)
            if (!(c.loss >= 0.0) || c.loss == std::numeric_limits<double>::infinity())
                throw InvalidArgument("allocation: unit '" + u.name + "' has a candidate whose loss is negative or not finite");
    }
}
/// The smallest total bytes any choice has (each unit's smallest candidate); InvalidArgument when
/// it exceeds the budget.
inline std::uint64_t require_feasible(std::span<const AllocationUnit> units, std::uint64_t budget) {
    std::uint64_t least = 0;
    for (const auto& u : units) {
        std::uint64_t b = std::numeric_limits<std::uint64_t>::max();
        for (const auto& c : u.candidates) b = std::min(b, c.bytes);
        least += b;
    }
    if (least > budget)
        throw InvalidArgument("allocation: the budget (" + std::to_string(budget) + " bytes) is below the smallest choice (" + std::to_string(least) +
                              " bytes, every unit at its smallest candidate)");
    return least;
}
inline void total(std::span<const AllocationUnit> units, Allocation& a) {
    a.bytes = 0;
    a.loss = 0.0;
    for (std::size_t i = 0; i < units.size(); ++i) {
        a.bytes += units[i].candidates[std::size_t(a.choice[i])].bytes;
        a.loss += units[i].candidates[std::size_t(a.choice[i])].loss;
    }
}
}  // namespace detail

/// The optimum: minimum Σ loss with Σ bytes <= `budget` (ties: the fewer bytes). Throws
/// InvalidArgument for no units, a unit without candidates, a negative or non-finite loss, a
/// budget below the smallest choice, or a frontier of more than `max_states` partial choices in all.
inline Allocation allocate_exact(std::span<const AllocationUnit> units, std::uint64_t budget, std::size_t max_states = std::size_t(1) << 24) {
    detail::check_units(units);
    detail::require_feasible(units, budget);
    struct State {
        std::uint64_t bytes;
        double loss;
        std::uint32_t parent;  // index in the previous unit's frontier
        std::uint32_t pick;    // this unit's candidate
    };
    std::vector<std::vector<State>> frontiers;
    std::vector<State> prev{{0, 0.0, 0, 0}}, next;
    std::size_t held = 1;
    for (const auto& u : units) {
        next.clear();
        for (std::size_t s = 0; s < prev.size(); ++s)
            for (std::size_t j = 0; j < u.candidates.size(); ++j) {
                const auto& c = u.candidates[j];
                if (prev[s].bytes + c.bytes <= budget) next.push_back({prev[s].bytes + c.bytes, prev[s].loss + c.loss, std::uint32_t(s), std::uint32_t(j)});
            }
        std::sort(next.begin(), next.end(), [](const State& a, const State& b) { return a.bytes != b.bytes ? a.bytes < b.bytes : a.loss < b.loss; });
        std::size_t kept = 0;  // keep a state only when its loss is below every state with fewer or equal bytes
        for (const State& s : next)
            if (kept == 0 || s.loss < next[kept - 1].loss) next[kept++] = s;
        next.resize(kept);
        held += kept;
        if (held > max_states)
            throw InvalidArgument("allocation: the exact solver's frontier passed " + std::to_string(max_states) + " partial choices at unit '" + u.name +
                                  "' (use allocate_lagrangian)");
        frontiers.push_back(prev);
        std::swap(prev, next);
    }
    // the frontier's last state has the smallest loss (losses fall as bytes grow)
    Allocation a;
    a.choice.assign(units.size(), 0);
    std::uint32_t at = std::uint32_t(prev.size() - 1);
    const State* s = &prev[at];
    for (std::size_t i = units.size(); i-- > 0;) {
        a.choice[i] = int(s->pick);
        at = s->parent;
        if (i > 0) s = &frontiers[i][at];
    }
    detail::total(units, a);
    a.lower_bound = a.loss;
    a.exact = true;
    return a;
}

/// A choice within `budget` by Lagrangian relaxation, with the relaxation's lower bound (see the
/// file comment). Throws as allocate_exact (without the frontier limit).
inline Allocation allocate_lagrangian(std::span<const AllocationUnit> units, std::uint64_t budget) {
    detail::check_units(units);
    detail::require_feasible(units, budget);
    // each unit's lower convex hull in (bytes, loss), from its fewest bytes to its least loss
    std::vector<std::vector<int>> hull(units.size());
    for (std::size_t i = 0; i < units.size(); ++i) {
        const auto& c = units[i].candidates;
        std::vector<int> order(c.size());
        for (std::size_t j = 0; j < c.size(); ++j) order[j] = int(j);
        std::sort(order.begin(), order.end(), [&](int a, int b) {
            return c[std::size_t(a)].bytes != c[std::size_t(b)].bytes ? c[std::size_t(a)].bytes < c[std::size_t(b)].bytes : c[std::size_t(a)].loss < c[std::size_t(b)].loss;
        });
        auto& h = hull[i];
        for (const int j : order) {
            const auto& p = c[std::size_t(j)];
            if (!h.empty() && (c[std::size_t(h.back())].bytes == p.bytes || p.loss >= c[std::size_t(h.back())].loss)) continue;  // not lower
            while (h.size() >= 2) {  // drop the last point if it lies on or above the segment to p
                const auto& a = c[std::size_t(h[h.size() - 2])];
                const auto& b = c[std::size_t(h.back())];
                const double cross = (double(b.bytes) - double(a.bytes)) * (p.loss - a.loss) - (b.loss - a.loss) * (double(p.bytes) - double(a.bytes));
                if (cross <= 0.0) h.pop_back();
                else break;
            }
            h.push_back(j);
        }
    }
    // the steps along the hulls, steepest loss decrease per byte first (convexity keeps each
    // unit's steps in order)
    struct Step {
        std::size_t unit;
        std::size_t to;  // hull position reached
        double slope;    // loss decrease per byte
    };
    std::vector<Step> steps;
    for (std::size_t i = 0; i < units.size(); ++i)
        for (std::size_t k = 1; k < hull[i].size(); ++k) {
            const auto& a = units[i].candidates[std::size_t(hull[i][k - 1])];
            const auto& b = units[i].candidates[std::size_t(hull[i][k])];
            steps.push_back({i, k, (a.loss - b.loss) / (double(b.bytes) - double(a.bytes))});
        }
    std::stable_sort(steps.begin(), steps.end(), [](const Step& a, const Step& b) { return a.slope > b.slope; });
    std::vector<std::size_t> at(units.size(), 0);
    const auto cand = [&](std::size_t i, std::size_t k) -> const AllocationCandidate& { return units[i].candidates[std::size_t(hull[i][k])]; };
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < units.size(); ++i) bytes += cand(i, 0).bytes;
    double lambda = 0.0;  // the multiplier where the walk stopped (0: every unit at its least loss)
    for (const Step& s : steps) {
        const std::uint64_t add = cand(s.unit, s.to).bytes - cand(s.unit, s.to - 1).bytes;
        if (bytes + add > budget) {
            lambda = s.slope;
            break;
        }
        bytes += add;
        at[s.unit] = s.to;
    }
    Allocation a;
    a.choice.resize(units.size());
    for (std::size_t i = 0; i < units.size(); ++i) a.choice[i] = hull[i][at[i]];
    // the dual bound at λ: the current choice minimises loss + λ bytes per unit (ties on the hull)
    double dual = -lambda * double(budget);
    for (std::size_t i = 0; i < units.size(); ++i) dual += cand(i, at[i]).loss + lambda * double(cand(i, at[i]).bytes);
    // spend what is left: the single change with the largest loss decrease that fits, repeatedly
    detail::total(units, a);
    for (;;) {
        double best = 0.0;
        std::size_t bu = 0, bj = 0;
        for (std::size_t i = 0; i < units.size(); ++i) {
            const auto& cur = units[i].candidates[std::size_t(a.choice[i])];
            for (std::size_t j = 0; j < units[i].candidates.size(); ++j) {
                const auto& c = units[i].candidates[j];
                if (a.bytes - cur.bytes + c.bytes <= budget && cur.loss - c.loss > best) best = cur.loss - c.loss, bu = i, bj = j;
            }
        }
        if (best <= 0.0) break;
        a.choice[bu] = int(bj);
        detail::total(units, a);
    }
    a.lower_bound = std::min(dual, a.loss);
    return a;
}

}  // namespace qforge
