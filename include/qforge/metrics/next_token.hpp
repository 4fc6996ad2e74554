#pragma once
/// @file
/// Scores of next-token distributions, accumulated in double: negative log-likelihood of the
/// actual token, KL divergence of a model's distribution from a reference's, and top-1 agreement.
#include <algorithm>
#include <cmath>
#include <span>

namespace qforge {

/// log(sum exp(logits)).
inline double log_sum_exp(std::span<const float> logits) {
    const float m = *std::max_element(logits.begin(), logits.end());
    double z = 0.0;
    for (const float l : logits) z += std::exp(double(l) - double(m));
    return double(m) + std::log(z);
}

/// -log p(token).
inline double negative_log_likelihood(std::span<const float> logits, int token) {
    return log_sum_exp(logits) - double(logits[std::size_t(token)]);
}

/// KL(P_ref || P) in nats, for the softmax distributions of two logit vectors.
inline double kl_divergence(std::span<const float> reference, std::span<const float> logits) {
    const double zr = log_sum_exp(reference), zq = log_sum_exp(logits);
    double kl = 0.0;
    for (std::size_t i = 0; i < reference.size(); ++i) {
        const double lr = double(reference[i]) - zr, lq = double(logits[i]) - zq;
        kl += std::exp(lr) * (lr - lq);
    }
    return std::max(kl, 0.0);
}

/// Running totals for perplexity and agreement with a reference.
struct NextTokenStats {
    long tokens = 0;
    double nll = 0.0, reference_nll = 0.0, kl = 0.0;
    long top1_agree = 0;

    double perplexity() const { return tokens ? std::exp(nll / double(tokens)) : 0.0; }
    double reference_perplexity() const { return tokens ? std::exp(reference_nll / double(tokens)) : 0.0; }
    double mean_nll() const { return tokens ? nll / double(tokens) : 0.0; }
    double mean_kl() const { return tokens ? kl / double(tokens) : 0.0; }
    double top1() const { return tokens ? double(top1_agree) / double(tokens) : 0.0; }
};

}  // namespace qforge
