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
#include <limits>
#include <memory>
#include <span>
#include <vector>

#include "qforge/metrics/next_token.hpp"
#include "qforge/models/llama/model.hpp"

namespace qforge::llama {

struct EvalOptions {
    int context = 512;
    int stride = 0;  ///< 0: equal to context (non-overlapping)
    int batch = 64;  ///< positions run through the model at once (prompt-processing batch)
    Backend backend;  ///< where the models run (default: scalar CPU, all threads)
    std::function<void(long done, long total)> progress;
    /// When set: (*token_nll)[m][t] = model m's NLL of token t, for every scored t (NaN for
    /// the others: token 0, and nothing else). For statistics over parts of the stream, such
    /// as per-sentence bootstrap intervals, computed from the same numbers as the totals.
    std::vector<std::vector<double>>* token_nll = nullptr;
};

/// Perplexity of each model and, when `reference` is given, each model's KL divergence from the
/// reference, top-1 agreement and the reference's own perplexity, all models run in lockstep
/// over the same windows so the reference runs once. Per-position scores are summed in
/// position order, so results do not depend on the thread count.
inline std::vector<NextTokenStats> evaluate_all(std::span<const Weights* const> models, const Weights* reference,
                                                std::span<const int> tokens, const EvalOptions& o) {
    if (models.empty()) throw InvalidArgument("evaluate: no models");
    // what was asked runs, or an error says why not: no silent cap of the context or the stride
    const int context = o.context;
    if (context < 2) throw InvalidArgument("evaluation context must be at least 2 tokens, got " + std::to_string(context));
    for (const Weights* m : models)
        if (context > m->config.seq_len)
            throw InvalidArgument("evaluation context " + std::to_string(context) + " exceeds the model's context of " +
                                  std::to_string(m->config.seq_len) + " tokens");
    if (o.stride < 0 || o.stride > context)
        throw InvalidArgument("stride " + std::to_string(o.stride) + " must be between 1 and the context (" + std::to_string(context) +
                              "): a larger stride would leave tokens between windows unscored");
    const int stride = o.stride > 0 ? o.stride : context;
    const int batch = std::max(1, o.batch);
    if (tokens.size() < 2)
        throw InvalidArgument("nothing to score: " + std::to_string(tokens.size()) + " token(s), at least 2 are needed");
    const std::size_t M = models.size();
    std::vector<NextTokenStats> stats(M);
    long scored_until = 0;  // tokens[0 .. scored_until] have had their predictions scored
    const long total = long(tokens.size());
    struct Scores {
        double nll = 0, kl = 0;
        bool agree = false;
    };
    std::vector<Scores> scores;
    std::vector<double> ref_nll;
    if (o.token_nll) o.token_nll->assign(M, std::vector<double>(tokens.size(), std::numeric_limits<double>::quiet_NaN()));
    for (long start = 0; start + 1 < total; start += stride) {
        const long end = std::min(total, start + context);
        std::vector<std::unique_ptr<Session>> sessions;
        for (const Weights* m : models) sessions.push_back(std::make_unique<Session>(*m, o.backend, context));
        std::unique_ptr<Session> ref;
        if (reference) ref = std::make_unique<Session>(*reference, o.backend, context);
        for (long i = start; i + 1 < end; i += batch) {
            const long chunk_end = std::min(end - 1, i + batch);  // positions [i, chunk_end) predict i+1..
            const std::span<const int> chunk = tokens.subspan(std::size_t(i), std::size_t(chunk_end - i));
            const int pos0 = int(i - start);
            std::vector<MatrixView<const float>> logits;
            for (auto& s : sessions) logits.push_back(s->forward_batch(chunk, pos0));
            MatrixView<const float> ref_logits;
            if (ref) ref_logits = ref->forward_batch(chunk, pos0);
            const long first = std::max(i, scored_until);  // earlier positions were scored by an earlier window
            if (first >= chunk_end) continue;
            const std::size_t P = std::size_t(chunk_end - first);
            scores.assign(P * M, {});
            ref_nll.assign(P, 0.0);
            // per position: a pass with an exp per logit for each model's log-sum-exp, and with a
            // reference two more per model (KL, argmax) and two of its own
            const std::size_t vocab = logits.front().cols;
            const std::size_t position_ops = vocab * 32 * (ref ? 3 * M + 2 : M);
            parallel_for(P, o.backend.threads(), [&](std::size_t p0, std::size_t p1) {
                ReferenceDistribution rd;
                for (std::size_t p = p0; p < p1; ++p) {
                    const std::size_t row = std::size_t(first - i) + p;
                    const int next = tokens[std::size_t(first) + p + 1];
                    if (!ref) {
                        for (std::size_t m = 0; m < M; ++m) scores[p * M + m].nll = negative_log_likelihood(logits[m].row(row), next);
                        continue;
                    }
                    rd.set(ref_logits.row(row));
                    ref_nll[p] = rd.log_z - double(ref_logits(row, std::size_t(next)));
                    for (std::size_t m = 0; m < M; ++m) {
                        const auto lm = logits[m].row(row);
                        const double zq = log_sum_exp(lm);
                        scores[p * M + m] = {zq - double(lm[std::size_t(next)]), rd.kl_to(lm, zq), rd.argmax == argmax(lm)};
                    }
                }
            }, grain_for(position_ops));
            for (std::size_t p = 0; p < P; ++p)
                for (std::size_t m = 0; m < M; ++m) {
                    NextTokenStats& st = stats[m];
                    st.nll += scores[p * M + m].nll;
                    if (ref) {
                        st.reference_nll += ref_nll[p];
                        st.kl += scores[p * M + m].kl;
                        st.top1_agree += scores[p * M + m].agree;
                    }
                    ++st.tokens;
                    if (o.token_nll) (*o.token_nll)[m][std::size_t(first) + p + 1] = scores[p * M + m].nll;
                }
            scored_until = chunk_end;
            if (o.progress) o.progress(scored_until, total - 1);
        }
        if (end == total) break;
    }
    return stats;
}

/// `reference` may be null: then only the model's perplexity is computed.
inline NextTokenStats evaluate(const Weights& model, const Weights* reference, std::span<const int> tokens,
                               const EvalOptions& o) {
    const Weights* models[] = {&model};
    return evaluate_all(models, reference, tokens, o).front();
}

}  // namespace qforge::llama
