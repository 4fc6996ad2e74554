#pragma once
/// @file
/// Scores of next-token distributions, accumulated in double: negative log-likelihood of the
/// actual token, KL divergence of a model's distribution from a reference's, and top-1 agreement.
#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

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

/// A reference distribution prepared once so that the KL divergence of several models from it
/// costs one pass each: KL = sum p_i (l_i - zr) - sum p_i (q_i - zq). `set` reuses the storage,
/// so one object per thread serves every position.
struct ReferenceDistribution {
    double log_z = 0.0, p_dot_l = 0.0;  ///< log sum exp, and sum p_i l_i
    std::vector<double> p;
    int argmax = 0;
    void set(std::span<const float> l) {
        log_z = log_sum_exp(l);
        p.resize(l.size());
        p_dot_l = 0.0;
        argmax = int(std::max_element(l.begin(), l.end()) - l.begin());
        for (std::size_t i = 0; i < l.size(); ++i) {
            p[i] = std::exp(double(l[i]) - log_z);
            p_dot_l += p[i] * double(l[i]);
        }
    }
    /// KL(P_ref || Q) for Q = softmax(q) with log_sum_exp(q) = zq.
    double kl_to(std::span<const float> q, double zq) const {
        double p_dot_q = 0.0;
        for (std::size_t i = 0; i < q.size(); ++i) p_dot_q += p[i] * double(q[i]);
        return std::max((p_dot_l - log_z) - (p_dot_q - zq), 0.0);
    }
};

/// Running totals for perplexity and agreement with a reference. Over zero scored tokens every
/// mean is undefined and returns NaN (written as `null` in JSON), never a number that looks real.
struct NextTokenStats {
    long tokens = 0;
    double nll = 0.0, reference_nll = 0.0, kl = 0.0;
    long top1_agree = 0;

    double perplexity() const { return tokens ? std::exp(nll / double(tokens)) : undefined(); }
    double reference_perplexity() const { return tokens ? std::exp(reference_nll / double(tokens)) : undefined(); }
    double mean_nll() const { return tokens ? nll / double(tokens) : undefined(); }
    double mean_kl() const { return tokens ? kl / double(tokens) : undefined(); }
    double top1() const { return tokens ? double(top1_agree) / double(tokens) : undefined(); }

private:
    static double undefined() { return std::numeric_limits<double>::quiet_NaN(); }
};

}  // namespace qforge
