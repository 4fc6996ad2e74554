#pragma once
/// @file
/// Sensitivity of a Llama decoder to quantization, one unit at a time (issue #17): for each block
/// and each of its seven linear layers, and each candidate scheme, the loss that quantizing that
/// unit alone causes — measured as the model's mean KL divergence from the reference on
/// calibration sequences — and three cheap proxies of it, computed per linear layer from its
/// weights W, its quantized weights Ŵ (ΔW = W − Ŵ, rows x cols) and the Hessian
/// H = (2/n) Σ_t x_t x_tᵀ of its inputs on the same calibration tokens (cols x cols):
///
/// - `weight`:       Σ ΔW²                         (no data: plain weight error)
/// - `hessian_diag`: Σ_ij H_jj ΔW_ij²              (the imatrix's weighting: llama.cpp, AWQ)
/// - `output`:       Σ_ij ΔW_ij (ΔW H)_ij = (2/n) Σ_t ‖ΔW x_t‖²  (the layer's output error on
///                   the calibration data; GPTQ's objective)
///
/// A block's proxies are its seven layers' sums, and one more per block, defined for every method
/// (AWQ's scaled blocks too):
///
/// - `block_output`: (1/n) Σ_t ‖f̂_l(h_t) − f_l(h_t)‖²  (the block's output error on the residual
///                   stream, f_l the reference block, f̂_l the quantized one, h_t its reference
///                   inputs; one block pass per candidate)
///
/// and an estimate of the KL from one measured candidate (the anchor a) per block:
///
/// - `anchored`:     KL(l, a) · block_output(l, c) / block_output(l, a)  (the anchor's measured KL
///                   scaled by how much larger the block's own output error is: the rest of the
///                   network's amplification is measured once per block, not once per candidate)
///
/// The measured loss reuses the reference's hidden
/// states entering every block (`ReferenceTrace`): a model that differs from the reference only
/// in block l runs from block l on, never through blocks 0..l-1 again, so a block at depth l
/// costs (L − l) blocks plus the head.
///
/// Units are quantized on the reference's inputs (each alone, so no earlier unit's error reaches
/// them): GPTQ's Hessians are the unquantized block's (GPTQ without true-sequential), the same
/// Hessians the proxies use; AWQ's scales are searched on the block's reference statistics, as
/// its pipeline does (it advances through the FP32 block, so its blocks equal these). A model
/// quantized from an allocation runs the real pipeline (true-sequential GPTQ) and its loss is
/// measured, not predicted.
#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qforge/core/parallel.hpp"
#include "qforge/metrics/next_token.hpp"
#include "qforge/pipelines/llama/awq.hpp"
#include "qforge/pipelines/llama/calibration.hpp"
#include "qforge/pipelines/llama/gptq.hpp"
#include "qforge/quantizers/registry.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

/// The reference model's pass over calibration sequences, kept: the hidden states entering each
/// block and leaving the last one ((blocks + 1) x tokens x dim floats) and each position's
/// next-token distribution p (kl tokens x vocab floats, with Σ p·l and Σ p in double) on the
/// first `kl_tokens` positions, the only ones a KL is measured on. Every sequence starts at
/// position 0. Memory: 4 · (tokens · (blocks + 1) · dim + kl tokens · vocab) bytes (SmolLM2-135M
/// on 2048 tokens, all of them for the KL: 0.55 GB; 256 for the KL: 0.19 GB).
///
/// The construction runs the whole model over the sequences that hold the KL positions only; the
/// hidden states of later sequences are filled a block at a time when first read, and
/// `block_stats(l)` fills block l + 1's from the pass it makes anyway, so a table built in block
/// order (measure_sensitivity) runs the reference once over those tokens, not twice (SmolLM2,
/// 2048 tokens, 256 for the KL: `qforge allocate`'s trace phase, the model's loading included,
/// 5.0 -> 2.3 s). The same blocks run on the same sequences either way, so every value is the same.
class ReferenceTrace {
public:
    /// Runs `reference` (which must outlive the trace) over `tokens` cut into sequences of
    /// o.sequence_length (calibration_sequences); the KL is measurable on the first `kl_tokens`
    /// positions (0 or more than there are: all). Throws InvalidArgument for a token out of
    /// range, no tokens or negative kl_tokens; InvalidData when the reference's activations
    /// leave float's range.
    ReferenceTrace(const Weights& reference, std::span<const int> tokens, CalibrationOptions o, long kl_tokens = 0)
        : ref_(reference), options_(std::move(o)) {
        const Config& c = ref_.config;
        if (kl_tokens < 0) throw InvalidArgument("reference trace: a negative number of KL tokens");
        options_.sequence_length = std::min(options_.sequence_length, c.seq_len);
        const auto sequences = calibration_sequences(tokens, options_.sequence_length);
        for (const auto s : sequences) lengths_.push_back(int(s.size()));
        tokens_ = long(tokens.size());
        kl_tokens_ = kl_tokens > 0 ? std::min(kl_tokens, tokens_) : tokens_;
        const std::size_t T = std::size_t(tokens_), D = std::size_t(c.dim), V = std::size_t(c.vocab_size), K = std::size_t(kl_tokens_);
        hidden_.resize(std::size_t(c.n_layers + 1) * T * D);
        p_.resize(K * V);
        p_dot_l_.resize(K);
        p_sum_.resize(K);
        log_z_.resize(K);
        // the embedding rows are block 0's input, for every sequence
        for (std::size_t t = 0; t < T; ++t) {
            const int tok = tokens[t];
            if (tok < 0 || tok >= c.vocab_size) throw InvalidArgument("calibration token id " + std::to_string(tok) + " out of range");
            std::copy_n(ref_.token_embedding.begin() + std::ptrdiff_t(std::size_t(tok) * D), D, hidden_.begin() + std::ptrdiff_t(t * D));
        }
        std::size_t offset = 0;
        for (std::size_t i = 0; i < sequences.size() && offset < K; ++i) {
            const auto seq = sequences[i];
            const std::size_t n = seq.size();
            // every later block's input is the residual stream after the previous block, taken by
            // running the blocks one at a time
            std::vector<float> x(hidden_.begin() + std::ptrdiff_t(offset * D), hidden_.begin() + std::ptrdiff_t((offset + n) * D));
            run_from(0, ref_, nullptr, x.data(), int(n), offset, hidden_.data());
            // the head only where a KL is measured (on SmolLM2 it costs about eight blocks)
            const std::size_t kept = std::min(n, K - std::min(K, offset));
            const auto logits = kept ? head_of(ref_, x.data(), int(kept)) : MatrixView<const float>();
            if (kept) parallel_for(kept, options_.backend.threads(), [&](std::size_t t0, std::size_t t1) {
                for (std::size_t t = t0; t < t1; ++t) {
                    const auto l = logits.row(t);
                    const double z = log_sum_exp(l);
                    float* p = p_.data() + (offset + t) * V;
                    double pl = 0.0, ps = 0.0;
                    for (std::size_t v = 0; v < V; ++v) {
                        p[v] = float(std::exp(double(l[v]) - z));
                        pl += double(p[v]) * double(l[v]);
                        ps += double(p[v]);
                    }
                    log_z_[offset + t] = z, p_dot_l_[offset + t] = pl, p_sum_[offset + t] = ps;
                }
            }, grain_for(V * 32));
            offset += n;
            if (options_.progress) options_.progress(long(i + 1), long(sequences.size()));
        }
        // [0, covered_): every block's states; later positions: block 0's until filled
        covered_ = offset;
        filled_ = covered_ == T ? c.n_layers : 0;
        if (options_.progress) options_.progress(long(sequences.size()), long(sequences.size()));
    }

    const Weights& reference() const noexcept { return ref_; }
    int layers() const noexcept { return ref_.config.n_layers; }
    long tokens() const noexcept { return tokens_; }
    /// The positions a KL is measured on (the first ones).
    long kl_tokens() const noexcept { return kl_tokens_; }
    std::size_t bytes() const noexcept { return (hidden_.size() + p_.size()) * sizeof(float) + 3 * p_dot_l_.size() * sizeof(double); }

    /// The reference's hidden states entering block l, tokens x dim (filled first if they are not).
    MatrixView<const float> hidden(int l) const {
        check_layer(l);
        fill_to(l);
        const std::size_t T = std::size_t(tokens_), D = std::size_t(ref_.config.dim);
        return {hidden_.data() + std::size_t(l) * T * D, T, D};
    }

    /// The reference block l's outputs on hidden(l): the residual stream leaving it, tokens x dim
    /// (filled first if they are not).
    MatrixView<const float> block_output(int l) const {
        check_layer(l);
        fill_to(l + 1);
        const std::size_t T = std::size_t(tokens_), D = std::size_t(ref_.config.dim);
        return {hidden_.data() + std::size_t(l + 1) * T * D, T, D};
    }

    /// Mean over the calibration positions of ‖block(h_t) − f_l(h_t)‖², the squared error of the
    /// residual stream leaving block l when `block` replaces it (on the reference's inputs); with
    /// `max_tokens` > 0 over the first max_tokens positions (as kl_with_block).
    double block_output_error(int l, const Layer& block, long max_tokens = 0) const {
        check_layer(l);
        const Config& c = ref_.config;
        const std::size_t D = std::size_t(c.dim);
        const long counted = max_tokens > 0 ? std::min(max_tokens, tokens_) : tokens_;
        double sum = 0.0;  // in position order: the same at any thread count
        for_each_sequence(l, counted, [&](std::size_t offset, int n, float* x) {
            fit_cache();
            run_block(c, block, l, x, n, 0, kc_.data(), vc_.data(), rope(), scratch_, options_.backend, nullptr);
            const float* ref = output_rows(l, counted) + offset * D;
            for (std::size_t i = 0; i < std::size_t(n) * D; ++i) {
                const double d = double(x[i]) - double(ref[i]);
                sum += d * d;
            }
        });
        return sum / double(counted);
    }

    /// Statistics (with Hessians) of block l's four linear-input sites when the reference's block
    /// l runs on the reference's hidden states.
    BlockStats block_stats(int l) const {
        check_layer(l);
        const Config& c = ref_.config;
        BlockStats stats(c, true, (1u << unsigned(Site::attention_input)) | (1u << unsigned(Site::attention_output)) |
                                      (1u << unsigned(Site::mlp_input)) | (1u << unsigned(Site::mlp_hidden)));
        const Observer observer = [&](int, Site site, MatrixView<const float> x) {
            if (site != Site::mlp_gate) stats.at(site).add(x, options_.backend);
        };
        // the pass is block l's reference pass: where block l + 1's inputs are not filled yet, it fills them
        if (std::size_t(tokens_) > covered_) fill_to(l);
        const bool fills = filled_ == l;
        const std::size_t T = std::size_t(tokens_), D = std::size_t(c.dim);
        for_each_sequence(l, tokens_, [&](std::size_t offset, int n, float* x) {
            fit_cache();
            run_block(c, ref_.layers[std::size_t(l)], l, x, n, 0, kc_.data(), vc_.data(), rope(), scratch_, options_.backend, &observer);
            if (fills && offset >= covered_) std::copy_n(x, std::size_t(n) * D, hidden_.data() + std::size_t(l + 1) * T * D + offset * D);
        });
        if (fills) filled_ = l + 1;
        return stats;
    }

    /// Mean KL(P_ref ‖ P) in nats over every position of the calibration sequences, of the
    /// reference with block l replaced by `block` (same shapes; its linears FP32 or packed).
    /// With `max_tokens` > 0, over the first max_tokens positions only (the sequences in order,
    /// the last one cut: a causal model's prefix is exact), at that fraction of the cost; 0 or
    /// more than kl_tokens(): all kl_tokens() of them.
    double kl_with_block(int l, const Layer& block, long max_tokens = 0) const {
        check_layer(l);
        return kl_from(l, ref_, &block, max_tokens);
    }

    /// The same for a whole model of the reference's configuration (an allocated, quantized
    /// model), on the kl_tokens() positions.
    double kl_of(const Weights& model) const {
        const Config& a = model.config, &b = ref_.config;
        if (a.dim != b.dim || a.hidden_dim != b.hidden_dim || a.n_layers != b.n_layers || a.n_heads != b.n_heads ||
            a.n_kv_heads != b.n_kv_heads || a.vocab_size != b.vocab_size)
            throw InvalidArgument("reference trace: the model's configuration differs from the reference's");
        return kl_from(0, model, nullptr);
    }

private:
    void check_layer(int l) const {
        if (l < 0 || l >= layers()) throw InvalidArgument("reference trace: block " + std::to_string(l) + " of " + std::to_string(layers()));
    }
    const Rope& rope() const {
        if (rope_.half == 0) rope_ = Rope(ref_.config, options_.sequence_length);
        return rope_;
    }
    void fit_cache() const {
        const std::size_t n = std::size_t(options_.sequence_length) * std::size_t(ref_.config.kv_dim());
        if (kc_.size() != n) kc_.assign(n, 0.0f), vc_.assign(n, 0.0f);
    }

    /// Block l's input rows, valid for the first `counted` positions (filled first where needed).
    const float* input_rows(int l, long counted) const {
        if (std::size_t(counted) > covered_) fill_to(l);
        return hidden_.data() + std::size_t(l) * std::size_t(tokens_) * std::size_t(ref_.config.dim);
    }
    /// Block l's output rows, valid for the first `counted` positions.
    const float* output_rows(int l, long counted) const {
        if (std::size_t(counted) > covered_) fill_to(l + 1);
        return hidden_.data() + std::size_t(l + 1) * std::size_t(tokens_) * std::size_t(ref_.config.dim);
    }
    /// Makes the inputs of blocks 0..b complete at every position: runs block filled_, then the
    /// next, on the positions from covered_ on, sequence by sequence as the construction does.
    void fill_to(int b) const {
        const Config& c = ref_.config;
        const std::size_t T = std::size_t(tokens_), D = std::size_t(c.dim);
        for (; filled_ < b; ++filled_) {
            const int l = filled_;
            std::size_t offset = 0;
            for (const int n : lengths_) {
                if (offset >= covered_) {
                    float* x = hidden_.data() + std::size_t(l + 1) * T * D + offset * D;
                    std::copy_n(hidden_.data() + std::size_t(l) * T * D + offset * D, std::size_t(n) * D, x);
                    fit_cache();
                    run_block(c, ref_.layers[std::size_t(l)], l, x, n, 0, kc_.data(), vc_.data(), rope(), scratch_, options_.backend, nullptr);
                }
                offset += std::size_t(n);
            }
        }
    }

    /// Runs blocks l.. of `model` (block l replaced by `replace` when given) on x (n x dim,
    /// in place); with `record` ((blocks + 1) x tokens x dim), stores each block's input, and the
    /// last block's output, at rows [offset, offset + n) of its slice.
    void run_from(int l, const Weights& model, const Layer* replace, float* x, int n, std::size_t offset, float* record) const {
        const Config& c = model.config;
        const std::size_t T = std::size_t(tokens_), D = std::size_t(c.dim), N = std::size_t(n);
        fit_cache();
        for (int b = l; b < c.n_layers; ++b) {
            if (record) std::copy_n(x, N * D, record + std::size_t(b) * T * D + offset * D);
            const Layer& block = (replace && b == l) ? *replace : model.layers[std::size_t(b)];
            run_block(c, block, b, x, n, 0, kc_.data(), vc_.data(), rope(), scratch_, options_.backend, nullptr);
        }
        if (record) std::copy_n(x, N * D, record + std::size_t(c.n_layers) * T * D + offset * D);
    }

    /// Final norm and head of `model` on x (n x dim): the logits, n x vocab (valid until the next call).
    MatrixView<const float> head_of(const Weights& model, const float* x, int n) const {
        const Config& c = model.config;
        const std::size_t D = std::size_t(c.dim), V = std::size_t(c.vocab_size), N = std::size_t(n);
        normed_.resize(N * D);
        rmsnorm_rows(normed_.data(), x, n, D, model.norm, c.norm_eps);
        logits_.resize(N * V);
        model.output.forward(MatrixView<const float>(normed_.data(), N, D), MatrixView<float>(logits_.data(), N, V), options_.backend);
        return {logits_.data(), N, V};
    }

    /// Calls f(offset, n, x) for each calibration sequence in order, cut so that `counted`
    /// positions are visited in all (a causal model's prefix is exact): x is a copy of block l's
    /// reference inputs at positions [offset, offset + n), n x dim, to run in place.
    template <class F>
    void for_each_sequence(int l, long counted, F&& f) const {
        const std::size_t D = std::size_t(ref_.config.dim);
        const float* in = input_rows(l, counted);
        std::vector<float> x;
        std::size_t offset = 0;
        for (const int whole : lengths_) {
            if (long(offset) >= counted) break;
            const int n = int(std::min<long>(whole, counted - long(offset)));
            x.assign(in + offset * D, in + (offset + std::size_t(n)) * D);
            f(offset, n, x.data());
            offset += std::size_t(n);
        }
    }

    double kl_from(int l, const Weights& model, const Layer* replace, long max_tokens = 0) const {
        const std::size_t V = std::size_t(model.config.vocab_size);
        const long counted = max_tokens > 0 ? std::min(max_tokens, kl_tokens_) : kl_tokens_;
        std::vector<double> kl(std::size_t(counted), 0.0);
        for_each_sequence(l, counted, [&](std::size_t offset, int n, float* x) {
            run_from(l, model, replace, x, n, offset, nullptr);
            const auto logits = head_of(model, x, n);
            // KL = Σ p (l − q) + (z_q − z_l) Σ p, with p the stored (float) reference probabilities
            parallel_for(std::size_t(n), options_.backend.threads(), [&](std::size_t t0, std::size_t t1) {
                for (std::size_t t = t0; t < t1; ++t) {
                    const auto q = logits.row(t);
                    const float* p = p_.data() + (offset + t) * V;
                    double pq = 0.0;
                    for (std::size_t v = 0; v < V; ++v) pq += double(p[v]) * double(q[v]);
                    const double zq = log_sum_exp(q);
                    kl[offset + t] = std::max(0.0, p_dot_l_[offset + t] - pq + (zq - log_z_[offset + t]) * p_sum_[offset + t]);
                }
            }, grain_for(V * 32));
        });
        double sum = 0.0;  // in position order: the same at any thread count
        for (const double v : kl) sum += v;
        return sum / double(counted);
    }

    const Weights& ref_;
    CalibrationOptions options_;
    std::vector<int> lengths_;
    long tokens_ = 0, kl_tokens_ = 0;
    mutable std::vector<float> hidden_;  // later sequences' rows filled when first read (fill_to)
    std::vector<float> p_;
    std::size_t covered_ = 0;  // positions whose states are all filled by the construction
    mutable int filled_ = 0;   // blocks 0..filled_'s inputs are filled at every position
    std::vector<double> p_dot_l_, p_sum_, log_z_;
    // work buffers of the runs (the trace is used from one thread at a time)
    mutable std::vector<float> kc_, vc_, normed_, logits_;
    mutable Rope rope_;
    mutable BlockScratch scratch_;
};

/// What quantizing one unit with one candidate costs and causes.
struct UnitLoss {
    double kl = std::numeric_limits<double>::quiet_NaN();  ///< measured mean KL (nats); NaN: not measured
    double weight = 0.0, hessian_diag = 0.0, output = 0.0; ///< the proxies (file comment)
    /// blocks only (NaN for a linear): the block's output error, and the KL estimated from the
    /// anchor's (file comment; NaN without an anchor)
    double block_output = std::numeric_limits<double>::quiet_NaN(), anchored = std::numeric_limits<double>::quiet_NaN();
    std::uint64_t bytes = 0;                               ///< stored bytes (Linear::bytes)
    std::uint64_t params = 0;                              ///< weights
    UnitLoss& operator+=(const UnitLoss& o) {
        weight += o.weight, hessian_diag += o.hessian_diag, output += o.output, bytes += o.bytes, params += o.params;
        return *this;
    }
};

/// The names of the loss measures, in the order `loss_value` takes them.
inline constexpr std::array<const char*, 6> loss_measures{"kl", "output", "hessian_diag", "weight", "block_output", "anchored"};

/// The measure `name` (one of loss_measures) of `u`; InvalidArgument for another name.
inline double loss_value(const UnitLoss& u, std::string_view name) {
    if (name == "kl") return u.kl;
    if (name == "output") return u.output;
    if (name == "hessian_diag") return u.hessian_diag;
    if (name == "weight") return u.weight;
    if (name == "block_output") return u.block_output;
    if (name == "anchored") return u.anchored;
    throw InvalidArgument("unknown loss measure '" + std::string(name) + "' (kl, output, hessian_diag, weight, block_output, anchored)");
}

/// The sensitivity table: per candidate, per block, the block's loss and each linear's
/// (index as block_linears: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_down, ffn_up).
struct SensitivityTable {
    std::vector<RuntimeScheme> candidates;
    std::vector<std::vector<UnitLoss>> block;                   ///< [candidate][block]
    std::vector<std::vector<std::array<UnitLoss, 7>>> linear;   ///< [candidate][block][linear]
};

struct SensitivityOptions {
    bool measure_blocks = true;    ///< measured KL per (block, candidate): (L − l) blocks + head each
    bool measure_linears = false;  ///< measured KL per (linear, candidate) too: 7x the blocks' cost
    /// the candidate (index) whose measured KL per block anchors the `anchored` estimate of the
    /// others; its KL is measured even without measure_blocks (-1: no anchor, `anchored` NaN)
    int anchor = -1;
    /// the KL and the block output error measured on the first kl_tokens calibration positions
    /// (0: all; at most the trace's kl_tokens(): the anchor's ratio compares the two on the same
    /// positions); the statistics and Hessians, and so the quantized blocks, use every token
    long kl_tokens = 0;
    /// the three per-linear proxies (output, hessian_diag, weight: a ΔW·H product per linear, on
    /// SmolLM2 about a fifth of a GPTQ candidate's cost); off, they are NaN (the anchored loss
    /// and the block output error do not read them)
    bool proxies = true;
    QuantizeSettings settings{};   ///< the quantizers' settings (GPTQ block, damping; backend)
    /// (units done, units in all, what) as the work goes
    std::function<void(long, long, const std::string&)> progress;
    std::function<void(const std::string&)> note;  ///< the quantizers' notes
};

/// One block's input Hessians, indexed by Site (mlp_gate's left empty: no linear reads it).
using BlockHessians = std::array<std::vector<float>, site_count>;

/// The Hessians of `stats`' sites (each cols x cols, FP32).
inline BlockHessians block_hessians(const BlockStats& stats) {
    BlockHessians h;
    for (int s = 0; s < site_count; ++s)
        if (Site(s) != Site::mlp_gate) h[std::size_t(s)] = stats.at(Site(s)).hessian();
    return h;
}

/// How many independent parts quantize_block_part cuts a block into for `scheme`: GPTQ's steps
/// (each reads the reference's Hessian of its site only), RTN's linears, one for an
/// activation-scaled method (its scales fold across the block's linears).
inline std::size_t block_parts(const RuntimeScheme& scheme) {
    switch (pipeline_of(scheme)) {
        case Pipeline::independent: return block_linears.size();
        case Pipeline::sequential_hessian: return gptq_block_steps.size();
        default: return 1;
    }
}

/// Part `part` (< block_parts(scheme)) of quantize_block_alone: it sets only that part's linears of
/// `q` (all of `q` for an activation-scaled method, whose one part is the whole block), so the parts
/// of one block can run side by side into the same `q`, and appends its notes to `notes`.
inline void quantize_block_part(const Layer& block, int l, const Config& c, const BlockStats& stats, const BlockHessians& h, const RuntimeScheme& scheme,
                                const QuantizeSettings& settings, std::size_t part, Layer& q, std::string& notes) {
    const MethodEntry& method = find_method(scheme.method);
    const Pipeline pipeline = pipeline_of(scheme);
    if (pipeline == Pipeline::independent) {
        const auto m = block_linears.at(part).member;
        q.*m = with_tensor_context({}, block_linear_name(l, m), [&] { return quantize_linear(block.*m, scheme, settings.backend, nullptr, &notes); });
    } else if (pipeline == Pipeline::sequential_hessian) {
        const auto& step = gptq_block_steps.at(part);
        const auto& hs = h[std::size_t(step.site)];
        if (!quantize_stacked(block, q, step.members, hs, scheme, settings, notes))
            for (const auto m : step.members)
                q.*m = with_tensor_context({}, block_linear_name(l, m), [&] { return hessian_linear(block.*m, hs, scheme, settings, &notes); });
    } else if (pipeline == Pipeline::activation_scaled && !method.info.needs_targets) {
        Layer scaled = block;
        ModelQuantizeOptions o;  // one scheme for every layer
        BlockScales bs;
        q = awq_block_from_stats(stats, scaled, l, c, scheme, o, settings, bs);
    } else {
        throw InvalidArgument("sensitivity: scheme '" + to_string(scheme) + "': " + std::string(method.info.name) +
                              " needs neuron targets; candidates are quantized one block at a time by rtn, gptq, awq or awq+gptq");
    }
}

/// Block l of the reference quantized with `scheme` alone, from the reference's inputs to it:
/// `stats` (the four linear-input sites) and `h` (block_hessians of them). A method of the
/// sequential-Hessian pipeline (GPTQ) runs in gptq_block_steps' order, stacked as the model
/// pipeline stacks q/k/v and gate/up; one of the activation-scaled pipeline (AWQ, AWQ+GPTQ)
/// searches its scales on `stats` and folds them into the block's own norms and linears
/// (awq_block_from_stats), so the block still maps the same inputs to outputs; one needing no
/// calibration (RTN) runs directly. InvalidArgument for TWQ (it needs neuron targets).
inline Layer quantize_block_alone(const Layer& block, int l, const Config& c, const BlockStats& stats, const BlockHessians& h, const RuntimeScheme& scheme,
                                  const QuantizeSettings& settings, std::string* note = nullptr) {
    Layer q;
    q.attention_norm = block.attention_norm;
    q.ffn_norm = block.ffn_norm;
    std::string notes;
    for (std::size_t part = 0; part < block_parts(scheme); ++part) quantize_block_part(block, l, c, stats, h, scheme, settings, part, q, notes);
    if (note && !notes.empty()) *note += notes;
    return q;
}

/// The three proxies of one linear layer: `w` FP32 (rows x cols), `q` its quantized form, `h`
/// its inputs' Hessian (cols x cols). ΔW H runs on the backend's FP32 GEMM.
inline UnitLoss linear_proxies(const Linear& w, const Linear& q, const std::vector<float>& h, const Backend& backend) {
    const auto& fp = std::get<Fp32Matrix>(w.weights());
    const std::size_t R = std::size_t(fp.rows), C = std::size_t(fp.cols);
    if (h.size() != C * C) throw InvalidArgument("linear_proxies: a Hessian of " + std::to_string(h.size()) + " values for " + std::to_string(C) + " inputs");
    const auto deq = dequantized_linear(q, backend);
    const auto& wh = std::get<Fp32Matrix>(deq.weights()).data;
    std::vector<float> dw(R * C), dwh(R * C);
    for (std::size_t i = 0; i < R * C; ++i) dw[i] = fp.data[i] - wh[i];
    // Y = X Wᵀ with W = H (symmetric) and X = ΔW: ΔW H
    backend.gemm_fp32(MatrixView<const float>(h.data(), C, C), MatrixView<const float>(dw.data(), R, C), MatrixView<float>(dwh.data(), R, C));
    UnitLoss u;
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t c = 0; c < C; ++c) {
            const double d = dw[r * C + c];
            u.weight += d * d;
            u.hessian_diag += double(h[c * C + c]) * d * d;
            u.output += d * double(dwh[r * C + c]);
        }
    u.bytes = q.bytes();
    u.params = R * C;
    return u;
}

/// `b` on one thread when it is the CPU backend (its instruction set and BLAS choice kept);
/// nullopt for another backend (a device runs its own parallel work) or one already on one thread.
inline std::optional<Backend> one_thread_cpu(const Backend& b) {
    const auto* cpu = dynamic_cast<const CpuBackend*>(&b.implementation());
    if (!cpu || b.threads() == 1) return std::nullopt;
    return Backend::cpu(cpu->isa(), 1, cpu->uses_blas());
}

/// The table for `candidates` (each rtn, gptq, awq or awq+gptq; InvalidArgument for TWQ, before any work).
/// The reference's block linears must be FP32. Blocks run one at a time: one block's Hessians
/// are held, and each candidate's quantized block only while it is measured.
inline SensitivityTable measure_sensitivity(const ReferenceTrace& trace, std::span<const RuntimeScheme> candidates, const SensitivityOptions& o) {
    if (candidates.empty()) throw InvalidArgument("sensitivity: no candidate schemes");
    if (o.anchor >= int(candidates.size()))
        throw InvalidArgument("sensitivity: anchor candidate " + std::to_string(o.anchor) + " of " + std::to_string(candidates.size()));
    if (o.kl_tokens < 0) throw InvalidArgument("sensitivity: a negative number of KL tokens");
    // the positions of both the KL and the block output error: the anchor's ratio compares them
    // on the same ones, also when the trace keeps fewer distributions than asked
    const long measured = o.kl_tokens > 0 ? std::min(o.kl_tokens, trace.kl_tokens()) : trace.kl_tokens();
    for (const auto& s : candidates) {
        const auto& info = find_method(s.method).info;
        if (info.needs_targets)
            throw InvalidArgument("sensitivity: scheme '" + to_string(s) + "': " + std::string(info.name) +
                                  " needs neuron targets; candidates are rtn, gptq, awq or awq+gptq schemes");
        if (info.pipeline == Pipeline::activation_scaled && o.measure_linears)
            throw InvalidArgument("sensitivity: scheme '" + to_string(s) + "': no linear of an " + std::string(info.name) +
                                  " block is quantized alone (its scales are shared with its group and folded into the norms): measure blocks");
    }
    const Weights& ref = trace.reference();
    for (int l = 0; l < ref.config.n_layers; ++l)
        for (const auto& b : block_linears)
            if (!std::holds_alternative<Fp32Matrix>((ref.layers[std::size_t(l)].*b.member).weights()))
                throw InvalidArgument("sensitivity: tensor " + block_linear_name(l, b.member) + " of the reference is not FP32 (dequantize it first)");
    const int L = ref.config.n_layers;
    const std::size_t K = candidates.size();
    const bool all_scaled = std::all_of(candidates.begin(), candidates.end(),
                                        [](const RuntimeScheme& c) { return find_method(c.method).info.pipeline == Pipeline::activation_scaled; });
    const bool any_hessian = std::any_of(candidates.begin(), candidates.end(),
                                         [](const RuntimeScheme& c) { return pipeline_of(c) == Pipeline::sequential_hessian; });
    SensitivityTable t;
    t.candidates.assign(candidates.begin(), candidates.end());
    t.block.assign(K, std::vector<UnitLoss>(std::size_t(L)));
    t.linear.assign(K, std::vector<std::array<UnitLoss, 7>>(std::size_t(L)));
    const long total = long(L) * long(K);
    long done = 0;
    // A block's work is cut into (candidate, part) tasks (block_parts: GPTQ's four steps, RTN's
    // seven linears, an AWQ block whole), which the pool hands out one at a time, the slowest
    // first, so that no thread is left with a long one while the others idle: a PQ grid's
    // k-means and nearest-centroid search cost about n per weight (n its centroids), GPTQ's
    // column loop about the layer's columns per weight. Only the order of the work changes,
    // not what any task computes.
    const auto task_cost = [&](std::size_t k, std::size_t part) {
        const RuntimeScheme& s = candidates[k];
        const Layer& b = ref.layers[0];
        const auto linear_cost = [&](Linear Layer::*m) {
            const double rows = double((b.*m).rows()), cols = double((b.*m).cols());
            return rows * cols * (cols + (s.pq ? 64.0 * double(s.pq->n) : 0.0));
        };
        double c = 0.0;
        switch (pipeline_of(s)) {
            case Pipeline::independent: c = linear_cost(block_linears[part].member); break;
            case Pipeline::sequential_hessian:
                for (const auto m : gptq_block_steps[part].members) c += linear_cost(m);
                break;
            default:
                for (const auto& bl : block_linears) c += linear_cost(bl.member);
        }
        return c;
    };
    std::vector<std::pair<std::size_t, std::size_t>> tasks;  // (candidate, part), the slowest first
    for (std::size_t k = 0; k < K; ++k)
        for (std::size_t part = 0; part < block_parts(candidates[k]); ++part) tasks.emplace_back(k, part);
    std::stable_sort(tasks.begin(), tasks.end(), [&](const auto& a, const auto& b) { return task_cost(a.first, a.second) > task_cost(b.first, b.second); });
    for (int l = 0; l < L; ++l) {
        const Layer& block = ref.layers[std::size_t(l)];
        if (o.progress) o.progress(done, total, "block " + std::to_string(l) + ": Hessians");
        const BlockStats stats = trace.block_stats(l);
        // GPTQ and the proxies read the Hessians; an AWQ-only table would not (AWQ forms its own)
        const BlockHessians h = all_scaled || (!o.proxies && !any_hessian) ? BlockHessians{} : block_hessians(stats);
        // the candidates share the block's Hessians: each is checked and factorised once, and
        // transformed once for the `,had` candidates (with their weights)
        QuantizeSettings settings = o.settings;
        settings.gptq_factor_cache = std::make_shared<qforge::detail::GptqFactorCache>();
        settings.hadamard_cache = std::make_shared<qforge::detail::HadamardCache>();
        // Quantizing a block is partly serial (GPTQ's column loop, AWQ's per-group searches), so
        // on a CPU the tasks run side by side, each on one thread (a copy of the backend on one
        // thread: no pool inside the pool's tasks; every product and factorisation gives the
        // same bits on any thread count, so the table does too). The passes through the trace
        // after them stay in order on every thread.
        const std::optional<Backend> one = tasks.size() > 1 ? one_thread_cpu(o.settings.backend) : std::nullopt;
        if (one) settings.backend = *one;
        std::vector<Layer> quantized(K);
        for (auto& q : quantized) {
            q.attention_norm = block.attention_norm;
            q.ffn_norm = block.ffn_norm;
        }
        std::vector<std::vector<std::string>> part_notes(K);
        for (std::size_t k = 0; k < K; ++k) part_notes[k].resize(block_parts(candidates[k]));
        const auto quantize_part = [&](std::size_t k, std::size_t part) {
            quantize_block_part(block, l, ref.config, stats, h, candidates[k], settings, part, quantized[k], part_notes[k][part]);
        };
        // the proxies of candidate k's linear i, once its block is quantized
        const auto measure_proxies = [&](std::size_t k, std::size_t i) {
            // an activation-scaled block stores W diag(s) (and rows scaled by the next group's s):
            // W − Ŵ is no error of it, so its proxies are not defined (NaN); its bytes are. Proxies
            // not asked for are NaN too
            const bool scaled = find_method(candidates[k].method).info.pipeline == Pipeline::activation_scaled;
            const auto m = block_linears[i].member;
            UnitLoss& u = t.linear[k][std::size_t(l)][i];
            if (scaled || !o.proxies) {
                u.weight = u.hessian_diag = u.output = std::numeric_limits<double>::quiet_NaN();
                u.bytes = (quantized[k].*m).bytes();
                u.params = std::uint64_t((block.*m).rows()) * std::uint64_t((block.*m).cols());
            } else {
                u = linear_proxies(block.*m, quantized[k].*m, h[std::size_t(input_site(block_linears[i].short_name))], settings.backend);
            }
        };
        const std::size_t n_linears = block_linears.size();
        if (one) {
            if (o.progress) o.progress(done, total, "block " + std::to_string(l) + ": " + std::to_string(K) + " candidates");
            parallel_for(tasks.size(), o.settings.backend.threads(), [&](std::size_t t0, std::size_t t1) {
                for (std::size_t i = t0; i < t1; ++i) quantize_part(tasks[i].first, tasks[i].second);
            });
            parallel_for(K * n_linears, o.settings.backend.threads(), [&](std::size_t t0, std::size_t t1) {
                for (std::size_t i = t0; i < t1; ++i) measure_proxies(i / n_linears, i % n_linears);
            });
        }
        std::vector<std::string> notes(K);
        for (std::size_t k = 0; k < K; ++k) {
            if (!one) {
                if (o.progress) o.progress(done, total, "block " + std::to_string(l) + ": " + to_string(candidates[k]));
                for (std::size_t part = 0; part < block_parts(candidates[k]); ++part) quantize_part(k, part);
                for (std::size_t i = 0; i < n_linears; ++i) measure_proxies(k, i);
            }
            for (const auto& n : part_notes[k]) notes[k] += n;
            const Layer& q = quantized[k];
            if (o.note && !notes[k].empty()) o.note(to_string(candidates[k]) + ": block " + std::to_string(l) + ": " + notes[k]);
            UnitLoss sum;
            for (std::size_t i = 0; i < block_linears.size(); ++i) {
                UnitLoss& u = t.linear[k][std::size_t(l)][i];
                if (o.measure_linears) {
                    Layer one_linear = block;
                    one_linear.*block_linears[i].member = q.*block_linears[i].member;
                    u.kl = trace.kl_with_block(l, one_linear, measured);
                }
                sum += u;
            }
            sum.block_output = trace.block_output_error(l, q, measured);
            if (o.measure_blocks || int(k) == o.anchor) sum.kl = trace.kl_with_block(l, q, measured);
            t.block[k][std::size_t(l)] = sum;
            ++done;
        }
        if (o.anchor >= 0) {
            const UnitLoss& a = t.block[std::size_t(o.anchor)][std::size_t(l)];
            if (!(a.block_output > 0.0))
                throw InvalidArgument("sensitivity: the anchor " + to_string(candidates[std::size_t(o.anchor)]) + " leaves block " + std::to_string(l) +
                                      "'s output unchanged, so it measures nothing to scale by: anchor a narrower candidate");
            for (std::size_t k = 0; k < K; ++k) {
                UnitLoss& u = t.block[k][std::size_t(l)];
                u.anchored = int(k) == o.anchor ? a.kl : a.kl * u.block_output / a.block_output;
            }
        }
    }
    if (o.progress) o.progress(done, total, "done");
    return t;
}

}  // namespace qforge::llama
