#pragma once
/// @file
/// Next-token choice: greedy (temperature 0) or sampling with temperature and nucleus (top-p)
/// from a seeded generator, so a run is reproducible.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"

namespace qforge::llama {

class Sampler {
public:
    Sampler(float temperature, float top_p, std::uint64_t seed) : temperature_(temperature), top_p_(top_p), rng_(seed) {
        if (!(temperature >= 0.0f) || !std::isfinite(temperature))
            throw InvalidArgument("temperature must be a finite number >= 0, got " + std::to_string(temperature));
        // top-p is unused by greedy decoding (temperature 0), so any value is accepted there
        if (temperature > 0.0f && !(top_p > 0.0f && top_p <= 1.0f))
            throw InvalidArgument("top-p must be in (0, 1] when sampling, got " + std::to_string(top_p));
    }

    int next(std::span<const float> logits) {
        if (temperature_ == 0.0f) return int(std::max_element(logits.begin(), logits.end()) - logits.begin());
        probs_.resize(logits.size());
        const float max_logit = *std::max_element(logits.begin(), logits.end());
        double total = 0.0;
        for (std::size_t i = 0; i < logits.size(); ++i) total += (probs_[i] = std::exp(double(logits[i] - max_logit) / temperature_));
        for (auto& p : probs_) p /= total;
        order_.resize(logits.size());
        std::iota(order_.begin(), order_.end(), 0);
        std::size_t keep = order_.size();
        if (top_p_ < 1.0f) {  // smallest set of most likely tokens whose mass reaches top_p
            std::sort(order_.begin(), order_.end(), [&](int a, int b) { return probs_[std::size_t(a)] > probs_[std::size_t(b)]; });
            double mass = 0.0;
            for (keep = 0; keep < order_.size();) {
                mass += probs_[std::size_t(order_[keep++])];
                if (mass >= top_p_) break;
            }
        }
        double kept = 0.0;
        for (std::size_t i = 0; i < keep; ++i) kept += probs_[std::size_t(order_[i])];
        const double u = std::uniform_real_distribution<double>(0.0, kept)(rng_);
        double acc = 0.0;
        for (std::size_t i = 0; i < keep; ++i) {
            acc += probs_[std::size_t(order_[i])];
            if (u < acc) return order_[i];
        }
        return order_[keep - 1];
    }

private:
    float temperature_, top_p_;
    std::mt19937_64 rng_;
    std::vector<double> probs_;
    std::vector<int> order_;
};

}  // namespace qforge::llama
