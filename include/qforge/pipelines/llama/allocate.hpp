#pragma once
/// @file
/// A bit allocation for a Llama decoder from its sensitivity table (issue #17): one scheme per
/// unit — a block (its seven linears share the scheme) or a single linear — minimising the
/// predicted loss (the sum of the chosen units' losses, one measure of the table) within an
/// average bits-per-weight budget over the decoder's linear layers, counted as every qforge
/// command counts bpw (models/llama/size.hpp: 8 · stored bytes / weights). The result is a
/// per-tensor scheme map (io/scheme_map.hpp) that `qforge quantize` and `qforge eval` accept.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "qforge/io/scheme_map.hpp"
#include "qforge/mixed/allocation.hpp"
#include "qforge/pipelines/llama/sensitivity.hpp"

namespace qforge::llama {

enum class AllocationUnitKind { block, linear };

struct AllocationRequest {
    double target_bpw = 4.0;
    AllocationUnitKind unit = AllocationUnitKind::block;
    /// one of loss_measures (block_output and anchored: blocks only), or (linear units)
    /// "kl_split": each block's measured KL shared among its linears in proportion to their
    /// output errors (one measurement per block, not seven)
    std::string loss = "kl";
    bool lagrangian = false;      ///< the Lagrangian solver (bound and gap) instead of the exact one
};

struct BitAllocation {
    io::SchemeMap map;               ///< the run's scheme = the most chosen candidate; the others per tensor
    Allocation allocation;           ///< the solver's choice (per unit, the candidate index)
    std::vector<AllocationUnit> units;
    std::uint64_t budget_bytes = 0;  ///< floor(target_bpw · weights / 8)
    std::uint64_t params = 0;        ///< weights of the decoder's linear layers
    double bpw() const noexcept { return 8.0 * double(allocation.bytes) / double(params); }
    /// Per tensor (GGUF name), the candidate index chosen for it.
    std::map<std::string, int> tensor_choice;
};

/// Solves the allocation. InvalidArgument: an unknown loss measure, a measure the table did not
/// measure (NaN: `kl` per linear needs SensitivityOptions::measure_linears), a budget below the
/// smallest choice (the solver's message), candidates of different methods (a map has one).
inline BitAllocation allocate_bits(const SensitivityTable& t, const AllocationRequest& r) {
    if (t.candidates.empty() || t.block.empty()) throw InvalidArgument("allocation: an empty sensitivity table");
    for (const auto& c : t.candidates)
        if (c.method != t.candidates.front().method)
            throw InvalidArgument("allocation: candidates " + to_string(t.candidates.front()) + " and " + to_string(c) +
                                  " have different methods; a scheme map has one method (its tensors change the grid)");
    if (!(r.target_bpw > 0.0) || !std::isfinite(r.target_bpw)) throw InvalidArgument("allocation: the target bits per weight must be positive");
    const std::size_t K = t.candidates.size(), L = t.block.front().size();
    BitAllocation out;
    if (r.loss == "kl_split" && r.unit != AllocationUnitKind::linear)
        throw InvalidArgument("allocation: the kl_split loss shares a block's KL among its linears: it is for linear units");
    const auto loss_of_measure = [&](const UnitLoss& u, const std::string& measure, const std::string& name) {
        const double v = loss_value(u, measure);
        if (std::isnan(v))
            throw InvalidArgument("allocation: unit " + name + " has no '" + measure + "' loss in the table" +
                                  (r.loss == "kl" ? " (measured KL per linear needs measure_linears)" : ""));
        return std::max(v, 0.0);
    };
    const auto loss_of = [&](const UnitLoss& u, const std::string& name) {
        const double v = loss_value(u, r.loss);
        if (std::isnan(v))
            throw InvalidArgument("allocation: unit " + name + " has no '" + r.loss + "' loss in the table" +
                                  (r.loss == "kl" ? " (measured KL per linear needs measure_linears)" : ""));
        return std::max(v, 0.0);
    };
    std::vector<std::vector<std::string>> unit_tensors;
    for (std::size_t l = 0; l < L; ++l) {
        if (r.unit == AllocationUnitKind::block) {
            AllocationUnit u{"blk." + std::to_string(l), {}};
            for (std::size_t k = 0; k < K; ++k) u.candidates.push_back({t.block[k][l].bytes, loss_of(t.block[k][l], u.name)});
            out.units.push_back(std::move(u));
            std::vector<std::string> names;
            for (const auto& b : block_linears) names.push_back(block_linear_name(int(l), b.member));
            unit_tensors.push_back(std::move(names));
        } else {
            for (std::size_t i = 0; i < block_linears.size(); ++i) {
                AllocationUnit u{block_linear_name(int(l), block_linears[i].member), {}};
                for (std::size_t k = 0; k < K; ++k) {
                    double v;
                    if (r.loss == "kl_split") {  // the block's measured KL, shared by its linears' output errors
                        const double block_kl = loss_of_measure(t.block[k][l], "kl", u.name), share = t.block[k][l].output;
                        v = share > 0.0 ? block_kl * t.linear[k][l][i].output / share : block_kl / double(block_linears.size());
                    } else {
                        v = loss_of(t.linear[k][l][i], u.name);
                    }
                    u.candidates.push_back({t.linear[k][l][i].bytes, v});
                }
                unit_tensors.push_back({u.name});
                out.units.push_back(std::move(u));
            }
        }
        out.params += t.block.front()[l].params;
    }
    out.budget_bytes = std::uint64_t(std::floor(r.target_bpw * double(out.params) / 8.0));
    std::uint64_t least = 0;
    for (const auto& u : out.units) {
        std::uint64_t b = u.candidates.front().bytes;
        for (const auto& c : u.candidates) b = std::min(b, c.bytes);
        least += b;
    }
    if (least > out.budget_bytes)
        throw InvalidArgument("allocation: " + std::to_string(r.target_bpw) + " bits per weight is below the smallest choice (" +
                              std::to_string(8.0 * double(least) / double(out.params)) + " bpw, every unit at its smallest candidate)");
    out.allocation = r.lagrangian ? allocate_lagrangian(out.units, out.budget_bytes) : allocate_exact(out.units, out.budget_bytes);
    // the map: the most chosen candidate as its scheme (the shortest file), the others listed
    std::vector<std::size_t> count(K, 0);
    for (std::size_t u = 0; u < out.units.size(); ++u) count[std::size_t(out.allocation.choice[u])] += unit_tensors[u].size();
    const std::size_t base = std::size_t(std::max_element(count.begin(), count.end()) - count.begin());
    out.map.scheme = t.candidates[base];
    for (std::size_t u = 0; u < out.units.size(); ++u) {
        const int k = out.allocation.choice[u];
        for (const auto& name : unit_tensors[u]) {
            out.tensor_choice[name] = k;
            if (std::size_t(k) != base) out.map.tensors[name] = t.candidates[std::size_t(k)];
        }
    }
    return out;
}

}  // namespace qforge::llama
