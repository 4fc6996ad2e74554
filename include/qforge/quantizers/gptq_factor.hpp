#pragma once
/// @file
/// What GPTQ and GPTQ-PQ (quantizers/gptq.hpp, gptq_pq.hpp) share before their column loops: the
/// Hessian's checks and dead inputs, and U, the upper Cholesky factor of the damped H⁻¹.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/core/once_cache.hpp"
#include "qforge/core/parallel.hpp"
#include "qforge/linalg/cholesky.hpp"

namespace qforge {

namespace detail {
/// H's diagonal with dead inputs (H_ii = 0) set to 1, which inputs are dead, and how many.
struct HessianDiagonal {
    std::vector<float> diag;
    std::vector<bool> dead;
    int dead_count = 0;
};
/// Checks a cols x cols Hessian (size, finite entries; InvalidArgument / InvalidData naming `who`)
/// and returns its diagonal as GPTQ uses it (step 1 of quantizers/gptq.hpp).
inline HessianDiagonal hessian_diagonal(const std::vector<float>& hessian, std::size_t C, const char* who) {
    if (hessian.size() != C * C)
        throw InvalidArgument(std::string(who) + ": the Hessian has " + std::to_string(hessian.size()) + " entries, a " + std::to_string(C) +
                              "-column layer needs " + std::to_string(C * C));
    for (std::size_t i = 0; i < hessian.size(); ++i)
        if (!std::isfinite(hessian[i])) throw InvalidData(std::string(who) + ": the Hessian has a non-finite entry at " + std::to_string(i));
    HessianDiagonal h{std::vector<float>(C), std::vector<bool>(C, false), 0};
    for (std::size_t i = 0; i < C; ++i) {
        h.diag[i] = hessian[i * C + i];
        if (h.diag[i] == 0.0f) {
            h.dead[i] = true;
            h.diag[i] = 1.0f;
            ++h.dead_count;
        }
    }
    return h;
}
}  // namespace detail

namespace detail {
/// U, the upper Cholesky factor of H^{-1}, for H permuted into processing order (`order`), its
/// diagonal replaced by `diag` (dead inputs at 1) plus damping `damp` * mean(diag); the damping
/// doubles (up to 10 times) until H is positive definite, and `note` says so. Throws InvalidData
/// when it never is.
struct GptqFactor {
    std::vector<float> u;  ///< cols x cols, row-major
    float damp = 0.0f;     ///< the damping fraction finally used
    std::string note;
};
inline GptqFactor gptq_inverse_factor(const std::vector<float>& hessian, const std::vector<int>& order, const std::vector<float>& diag, float damp,
                                      const Backend& backend) {
    const std::size_t C = order.size();
    const int threads = backend.threads();
    GptqFactor f;
    // No copy of H is kept: the permuted, damped H is built straight into the buffer that the
    // factorisation turns into U (rebuilt on a retry), so GPTQ holds H (the caller's), U and U^T.
    double mean_diag = 0.0;
    for (std::size_t i = 0; i < C; ++i) mean_diag += double(diag[std::size_t(order[i])]);
    mean_diag /= double(C);
    f.u.resize(C * C);
    std::vector<float>& u = f.u;
    for (int attempt = 0;; ++attempt) {
        const float add = float(double(damp) * mean_diag);
        parallel_for(C, threads, [&](std::size_t i0, std::size_t i1) {
            for (std::size_t i = i0; i < i1; ++i) {
                const std::size_t oi = std::size_t(order[i]);
                for (std::size_t j = 0; j < C; ++j) u[i * C + j] = hessian[oi * C + std::size_t(order[j])];
                u[i * C + i] = diag[oi] + add;
            }
        }, grain_for(C));
        if (linalg::inverse_cholesky_upper_in_place(u, int(C), backend)) break;
        if (attempt == 10) throw InvalidData("GPTQ: the Hessian is not positive definite even with damping " + std::to_string(damp));
        const float next = damp > 0.0f ? damp * 2.0f : 0.01f;
        f.note += "Hessian not positive definite with damping " + std::to_string(damp) + ", raised to " + std::to_string(next) + "; ";
        damp = next;
    }
    f.damp = damp;
    return f;
}

/// What GPTQ derives from H alone — the checked diagonal and U — kept for a caller that quantizes
/// the same inputs with several schemes (the sensitivity table's candidates: four GPTQ grids on
/// one block's Hessians factorised it four times, about 7% of `qforge allocate`'s samples on
/// SmolLM2). An entry is found by H's whole contents, the processing order and the damping asked
/// for, which are all the factorisation reads, so a hit is the value it would compute. Entries
/// live as long as the cache (one block's, in measure_sensitivity); calls may come from several
/// threads: one asking for a factor that another is computing waits for it rather than computing
/// it again, and different factors are computed side by side (core/once_cache.hpp).
class GptqFactorCache {
public:
    /// hessian_diagonal(hessian, C, who), computed once per H.
    HessianDiagonal diagonal(const std::vector<float>& hessian, std::size_t C, const char* who) {
        return diagonals_.get(hessian, [&] { return hessian_diagonal(hessian, C, who); });
    }
    /// gptq_inverse_factor(hessian, order, diag, damp, backend), computed once per (H, order, damp).
    GptqFactor factor(const std::vector<float>& hessian, const std::vector<int>& order, const std::vector<float>& diag, float damp, const Backend& backend) {
        return factors_.get(FactorProbe{hessian, order, damp}, [&] { return gptq_inverse_factor(hessian, order, diag, damp, backend); });
    }
    std::size_t factors() const { return factors_.size(); }

private:
    struct FactorProbe {  // what a lookup compares, by reference: H is copied only into a new entry
        const std::vector<float>& hessian;
        const std::vector<int>& order;
        float damp;
    };
    struct FactorKey {
        std::vector<float> hessian;
        std::vector<int> order;
        float damp;
        explicit FactorKey(const FactorProbe& p) : hessian(p.hessian), order(p.order), damp(p.damp) {}
        // damping first: the cheapest comparison that tells keys apart
        bool operator==(const FactorProbe& o) const { return damp == o.damp && order == o.order && hessian == o.hessian; }
    };
    OnceCache<std::vector<float>, HessianDiagonal> diagonals_;
    OnceCache<FactorKey, GptqFactor> factors_;
};
/// hessian_diagonal through `cache` when there is one.
inline HessianDiagonal hessian_diagonal(GptqFactorCache* cache, const std::vector<float>& hessian, std::size_t C, const char* who) {
    return cache ? cache->diagonal(hessian, C, who) : hessian_diagonal(hessian, C, who);
}
/// gptq_inverse_factor through `cache` when there is one.
inline GptqFactor gptq_inverse_factor(GptqFactorCache* cache, const std::vector<float>& hessian, const std::vector<int>& order, const std::vector<float>& diag,
                                      float damp, const Backend& backend) {
    return cache ? cache->factor(hessian, order, diag, damp, backend) : gptq_inverse_factor(hessian, order, diag, damp, backend);
}
}  // namespace detail

}  // namespace qforge
