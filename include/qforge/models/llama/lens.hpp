#pragma once
/// @file
/// Logit lens: each block's residual stream read through the final RMSNorm and the output head,
/// as if the model stopped there. Per block: the mean probability of the actual next token, how
/// often the lens' top token is the actual next token, and which tokens it predicts most often.
#include <algorithm>
#include <cmath>
#include <map>
#include <span>
#include <vector>

#include "qforge/models/llama/model.hpp"

namespace qforge::llama {

struct LensLayer {
    double mean_p_next = 0.0;  ///< mean over positions of p(actual next token)
    double top1_next = 0.0;    ///< fraction of positions whose top token is the actual next token
    std::vector<std::pair<int, long>> frequent;  ///< the lens' most frequent top tokens, with counts
};

/// Lens over `tokens` cut into windows of `context`; layers[l] reads the stream after block l
/// (the last one equals the model's own output).
inline std::vector<LensLayer> logit_lens(const Weights& w, std::span<const int> tokens, int context, const Backend& backend = {},
                                         int top_k = 5) {
    const Config& c = w.config;
    if (context < 2 || tokens.size() < 2) throw InvalidArgument("logit lens: needs at least two tokens and a context of two");
    if (context > c.seq_len)
        throw InvalidArgument("logit lens: context " + std::to_string(context) + " exceeds the model's context of " + std::to_string(c.seq_len) +
                              " tokens");
    const std::size_t D = std::size_t(c.dim), V = std::size_t(c.vocab_size);
    std::vector<double> p_sum(std::size_t(c.n_layers), 0.0);
    std::vector<long> hits(std::size_t(c.n_layers), 0);
    std::vector<std::map<int, long>> top(std::size_t(c.n_layers));
    long positions = 0;
    const Rope rope(c, context);
    BlockScratch scratch;
    std::vector<float> x, normed, logits, kc(std::size_t(context) * std::size_t(c.kv_dim())), vc(kc.size());
    for (std::size_t start = 0; start + 1 < tokens.size(); start += std::size_t(context)) {
        const std::size_t n = std::min(std::size_t(context), tokens.size() - start);
        if (n < 2) break;
        const std::size_t scored = n - 1;  // positions with a next token inside the window
        x.resize(n * D);
        for (std::size_t t = 0; t < n; ++t) {
            const int tok = tokens[start + t];
            if (tok < 0 || tok >= c.vocab_size) throw InvalidArgument("token id " + std::to_string(tok) + " out of range");
            std::copy_n(w.token_embedding.begin() + std::ptrdiff_t(std::size_t(tok) * D), D, x.begin() + std::ptrdiff_t(t * D));
        }
        for (int l = 0; l < c.n_layers; ++l) {
            run_block(c, w.layers[std::size_t(l)], l, x.data(), int(n), 0, kc.data(), vc.data(), rope, scratch, backend, nullptr);
            normed.resize(scored * D);
            rmsnorm_rows(normed.data(), x.data(), int(scored), D, w.norm, c.norm_eps);
            logits.resize(scored * V);
            w.output.forward(MatrixView<const float>(normed.data(), scored, D), MatrixView<float>(logits.data(), scored, V), backend);
            for (std::size_t t = 0; t < scored; ++t) {
                const float* lg = logits.data() + t * V;
                const float m = *std::max_element(lg, lg + V);
                double z = 0.0;
                for (std::size_t v = 0; v < V; ++v) z += std::exp(double(lg[v] - m));
                const int next = tokens[start + t + 1];
                p_sum[std::size_t(l)] += std::exp(double(lg[next] - m)) / z;
                const int best = int(std::max_element(lg, lg + V) - lg);
                hits[std::size_t(l)] += best == next;
                ++top[std::size_t(l)][best];
            }
        }
        positions += long(scored);
    }
    std::vector<LensLayer> out(std::size_t(c.n_layers));
    for (std::size_t l = 0; l < out.size(); ++l) {
        out[l].mean_p_next = p_sum[l] / double(positions);
        out[l].top1_next = double(hits[l]) / double(positions);
        std::vector<std::pair<int, long>> f(top[l].begin(), top[l].end());
        std::sort(f.begin(), f.end(), [](const auto& a, const auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); });
        if (int(f.size()) > top_k) f.resize(std::size_t(top_k));
        out[l].frequent = std::move(f);
    }
    return out;
}

}  // namespace qforge::llama
