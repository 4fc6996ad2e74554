#pragma once
/// @file
/// Perplexity of a token stream, alone or in lockstep with a reference model (KL divergence,
/// top-1 agreement and PPL ratio computed as the tokens go, without storing logits).
///
/// Windows: the stream is cut into windows of `context` tokens. With stride == context they do
/// not overlap and every prediction after a window's first token is scored. With a smaller
/// stride, windows start every `stride` tokens and only predictions of tokens not scored by an
/// earlier window count (the first window scores all), so each token is scored once with up to
/// context - stride tokens of history.
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "qforge/metrics/next_token.hpp"
#include "qforge/models/llama/model.hpp"

namespace qforge::llama {

struct EvalOptions {
    int context = 512;
    int stride = 0;  ///< 0: equal to context (non-overlapping)
    int threads = 0;
    Isa isa = Isa::scalar;
    std::function<void(long done, long total)> progress;
};

/// `reference` may be null: then only the model's perplexity is computed.
inline NextTokenStats evaluate(const Weights& model, const Weights* reference, std::span<const int> tokens,
                               const EvalOptions& o) {
    const int context = std::min(o.context, model.config.seq_len);
    const int stride = o.stride > 0 ? std::min(o.stride, context) : context;
    if (context < 2) throw InvalidArgument("evaluation context must be at least 2 tokens");
    NextTokenStats s;
    long scored_until = 0;  // tokens[0 .. scored_until] have had their predictions scored
    const long total = long(tokens.size());
    for (long start = 0; start + 1 < total; start += stride) {
        const long end = std::min(total, start + context);
        Session m(model, o.isa, o.threads, context);
        std::unique_ptr<Session> r;
        if (reference) r = std::make_unique<Session>(*reference, o.isa, o.threads, context);
        for (long i = start; i + 1 < end; ++i) {
            const auto lm = m.forward(tokens[std::size_t(i)], int(i - start));
            if (i + 1 <= scored_until) {
                if (r) r->forward(tokens[std::size_t(i)], int(i - start));
                continue;
            }
            const int next = tokens[std::size_t(i) + 1];
            s.nll += negative_log_likelihood(lm, next);
            if (r) {
                const auto lr = r->forward(tokens[std::size_t(i)], int(i - start));
                s.reference_nll += negative_log_likelihood(lr, next);
                s.kl += kl_divergence(lr, lm);
                s.top1_agree += argmax(lr) == argmax(lm);
            }
            ++s.tokens;
            scored_until = i + 1;
        }
        if (o.progress) o.progress(scored_until, total - 1);
        if (end == total) break;
    }
    return s;
}

}  // namespace qforge::llama
