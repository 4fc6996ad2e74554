#pragma once
/// @file
/// A Llama decoder: RMSNorm, rotary embeddings (llama2.c's adjacent-pair rotation), grouped-query
/// attention with a KV cache, SwiGLU MLP. Every linear layer is a `Linear` (FP32 or packed).
#include <algorithm>
#include <cmath>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/io/llama2c.hpp"
#include "qforge/models/llama/linear.hpp"
#include "qforge/quantizers/registry.hpp"

namespace qforge::llama {

struct Config {
    int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
    float rope_theta = 10000.0f;
    float norm_eps = 1e-5f;
    int head_size() const noexcept { return dim / n_heads; }
    int kv_dim() const noexcept { return head_size() * n_kv_heads; }
};

struct Layer {
    std::vector<float> attention_norm, ffn_norm;
    Linear wq, wk, wv, wo, w1, w2, w3;  ///< w1 = gate, w3 = up, w2 = down
};

struct Weights {
    Config config;
    std::vector<float> token_embedding;  ///< vocab x dim
    std::vector<Layer> layers;
    std::vector<float> norm;
    Linear output;                       ///< vocab x dim
};

/// FP32 weights of a llama2.c checkpoint (copied, so the checkpoint may go).
inline Weights from_llama2c(const io::Llama2cCheckpoint& ck) {
    const auto& c = ck.config();
    Weights w;
    w.config = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len};
    const auto vec = [&](const std::string& name) {
        const auto& t = ck.tensor(name);
        return std::vector<float>(t.data.begin(), t.data.end());
    };
    const auto mat = [&](const std::string& name) {
        const auto& t = ck.tensor(name);
        return Linear(Fp32Matrix{t.rows, t.cols, std::vector<float>(t.data.begin(), t.data.end())});
    };
    w.token_embedding = vec("tok_embeddings");
    for (int l = 0; l < c.n_layers; ++l) {
        const std::string p = "layers." + std::to_string(l) + ".";
        w.layers.push_back({vec(p + "attention_norm"), vec(p + "ffn_norm"), mat(p + "attention.wq"), mat(p + "attention.wk"),
                            mat(p + "attention.wv"), mat(p + "attention.wo"), mat(p + "feed_forward.w1"),
                            mat(p + "feed_forward.w2"), mat(p + "feed_forward.w3")});
    }
    w.norm = vec("norm");
    w.output = mat(c.shared_classifier ? "tok_embeddings" : "output");
    return w;
}

/// Where in a decoder block an observer sees activations. The first four are the inputs of
/// linear layers (wq/wk/wv share one, w1/w3 share one); `mlp_gate` is w1's output before SiLU,
/// whose sign says whether an MLP neuron fires.
enum class Site { attention_input, attention_output, mlp_input, mlp_hidden, mlp_gate };
inline constexpr int site_count = 5;

/// Called with (layer, site, activations: n tokens x width) as a block runs.
using Observer = std::function<void(int, Site, MatrixView<const float>)>;

/// The site whose activations a block linear layer multiplies.
inline Site input_site(std::string_view linear) {
    if (linear == "wq" || linear == "wk" || linear == "wv") return Site::attention_input;
    if (linear == "wo") return Site::attention_output;
    if (linear == "w1" || linear == "w3") return Site::mlp_input;
    if (linear == "w2") return Site::mlp_hidden;
    throw InvalidArgument("unknown block linear layer '" + std::string(linear) + "'");
}

/// Rotary angles for positions [0, context): cos/sin per position and pair within a head,
/// computed exactly as the one-token path always did so batched and single-token runs agree.
struct Rope {
    int half = 0;
    std::vector<float> cos, sin;
    Rope() = default;
    Rope(const Config& c, int context) : half(c.head_size() / 2) {
        const int hs = c.head_size();
        cos.resize(std::size_t(context) * std::size_t(half));
        sin.resize(cos.size());
        for (int p = 0; p < context; ++p)
            for (int j = 0; j < half; ++j) {
                const float freq = 1.0f / std::pow(c.rope_theta, float(2 * j) / float(hs));
                const float angle = float(p) * freq;
                cos[std::size_t(p) * std::size_t(half) + std::size_t(j)] = std::cos(angle);
                sin[std::size_t(p) * std::size_t(half) + std::size_t(j)] = std::sin(angle);
            }
    }
    /// Rotates adjacent pairs of every head in v (width a multiple of the head size) at position p.
    void apply(float* v, std::size_t width, int p) const noexcept {
        const float* c = cos.data() + std::size_t(p) * std::size_t(half);
        const float* s = sin.data() + std::size_t(p) * std::size_t(half);
        for (std::size_t i = 0; i < width; i += 2) {
            const std::size_t j = (i / 2) % std::size_t(half);
            const float a = v[i], b = v[i + 1];
            v[i] = a * c[j] - b * s[j];
            v[i + 1] = a * s[j] + b * c[j];
        }
    }
};

/// Buffers one decoder block needs for n tokens.
struct BlockScratch {
    std::vector<float> xb, xb2, q, k, v, hb, hb2;
    std::vector<float> vt;  ///< attend_gemm's transposed values (its tasks' buffers live for the call)
    /// Where a block's activations at one of the four linear-input sites are (`run_block`):
    /// the MLP's hidden layer in hb, the others in xb.
    std::vector<float>& site(int site_index) noexcept { return site_index == 3 ? hb : xb; }
    void fit(const Config& c, int n) {
        const std::size_t N = std::size_t(n);
        xb.resize(N * std::size_t(c.dim));
        xb2.resize(xb.size());
        q.resize(xb.size());
        k.resize(N * std::size_t(c.kv_dim()));
        v.resize(k.size());
        hb.resize(N * std::size_t(c.hidden_dim));
        hb2.resize(hb.size());
    }
};

/// Throws InvalidData naming `where` and the row when a row's sum of squares is not finite (the
/// residual stream left float's range: the output would be silently all zeros, the logits uniform).
/// Rows run on up to `threads` threads (0: all; each row alone, so the bits do not depend on it);
/// where several rows fail, the first is named.
inline void rmsnorm_rows(float* out, const float* x, int n, std::size_t width, const std::vector<float>& weight, float eps,
                         const char* where = "the final norm", int layer = -1, int threads = 1) {
    parallel_for(std::size_t(n), threads, [&](std::size_t r0, std::size_t r1) {
        for (int t = int(r0); t < int(r1); ++t) {
            const float* xr = x + std::size_t(t) * width;
            float* o = out + std::size_t(t) * width;
            float ss = 0.0f;
            for (std::size_t i = 0; i < width; ++i) ss += xr[i] * xr[i];
            if (!std::isfinite(ss))
                throw InvalidData(std::string(where) + (layer >= 0 ? " of layer " + std::to_string(layer) : std::string()) + ", row " +
                                  std::to_string(t) + " of the batch: the residual stream's sum of squares is " +
                                  (std::isnan(ss) ? "NaN" : "beyond float's range") +
                                  " (activations out of range: check the weights' magnitudes)");
            const float scale = 1.0f / std::sqrt(ss / float(width) + eps);
            for (std::size_t i = 0; i < width; ++i) o[i] = weight[i] * (scale * xr[i]);
        }
    }, grain_for(width * 4));
}

/// Tokens from which `attend` runs as matrix products on the backend (prompts, calibration
/// sequences, evaluation windows); fewer (a decode step) take the per-token loop.
inline constexpr int attend_gemm_min_tokens = 16;

/// `attend` for a block of tokens as two products per KV head on the backend's FP32 GEMM, in
/// chunks of 64 queries (each chunk's keys end at its last position, so the causal triangle
/// above the chunk is not computed): scores S = Q K_h^T for the queries of every head that reads
/// KV head h stacked (grouped-query attention: SmolLM2's 3 heads per KV head make one product of
/// 384 rows instead of three of 128 with the chunks of 128 of 2026-12-06: 130-214 GFLOP/s against
/// 91-141 on OpenBLAS),
/// the masked softmax row by row, then S V_h with V_h transposed once per KV head. Each output is
/// a sum over positions in ascending order of P[t, p] * V[p, i] with P[t, p] = exp(s - max) /
/// sum: on the scalar backend the same operations in the same order as the per-token loop
/// (masked positions add 0 * v), so a prompt run this way equals one-token decoding bit for bit
/// there.
///
/// Each (KV head, chunk) is one task on one thread: its scores (at most 192 x 512 floats for
/// SmolLM2's 512-token windows) go from the product through the softmax into S V_h while they
/// are in that core's L2. Before, each product was cut over the threads and every head's scores
/// written before any softmax (9 x 128 x 512 floats a chunk): qkv + RoPE + attention took
/// 191-199 ms of a 570 ms SmolLM2 512-token forward (2026-12-07, Zen 4). Chunks of 64 rather
/// than 128 compute less of the masked triangle (1.125x the causal products' work at 512 tokens
/// against 1.25x): the whole forward's best of 6 runs 317-322 ms against 328-354 ms with 128 and
/// 335-382 ms before in three interleaved rounds (2026-12-07, Zen 5); in two later rounds before
/// and after were within noise (best 317 and 322 ms before, 313 and 316 after): a gain of 0-5%,
/// and no 9 x 128 x L score buffer. Tasks run largest chunk
/// first; which thread runs one does not change its bits (blas.hpp: tiles follow the thread
/// count only where the kernels round alike in any tile).
inline void attend_gemm(const Config& c, BlockScratch& s, const float* kc, const float* vc, int n, int pos0, const Backend& backend) {
    const std::size_t D = std::size_t(c.dim), KV = std::size_t(c.kv_dim()), hs = std::size_t(c.head_size());
    const std::size_t kv_heads = std::size_t(c.n_kv_heads), group = std::size_t(c.n_heads) / kv_heads, L = std::size_t(pos0 + n);
    constexpr std::size_t chunk = 64;
    const float inv_sqrt = 1.0f / std::sqrt(float(hs));
    const Fp32Functions& fns = backend.host_fp32();
    s.vt.resize(kv_heads * hs * L);  // V_h^T: hs x L per KV head
    for (std::size_t kh = 0; kh < kv_heads; ++kh)
        for (std::size_t p = 0; p < L; ++p)
            for (std::size_t i = 0; i < hs; ++i) s.vt[(kh * hs + i) * L + p] = vc[p * KV + kh * hs + i];
    const std::size_t chunks = (std::size_t(n) + chunk - 1) / chunk;
    parallel_for(kv_heads * chunks, backend.threads(), [&](std::size_t j0, std::size_t j1) {
        // a task's buffers, per call of this loop (not thread_local: the pool's threads outlive
        // the leak check, which reported them): a KV head's stacked queries (head-major, then
        // token), their scores and outputs; after the first calls glibc serves them from its heap
        struct {
            std::vector<float> qg, scores, og;
        } buf;
        for (std::size_t j = j0; j < j1; ++j) {
            const std::size_t kh = j % kv_heads, t0 = (chunks - 1 - j / kv_heads) * chunk;
            const std::size_t rows = std::min(chunk, std::size_t(n) - t0), keys = std::size_t(pos0) + t0 + rows, g_rows = group * rows;
            buf.qg.resize(g_rows * hs);
            buf.og.resize(g_rows * hs);
            buf.scores.resize(g_rows * keys);
            for (std::size_t g = 0; g < group; ++g)
                for (std::size_t r = 0; r < rows; ++r) {
                    const float* src = s.q.data() + (t0 + r) * D + (kh * group + g) * hs;
                    std::copy(src, src + hs, buf.qg.data() + (g * rows + r) * hs);
                }
            backend.gemm_fp32(MatrixView<const float>(kc + kh * hs, keys, hs, KV), MatrixView<const float>(buf.qg.data(), g_rows, hs),
                              MatrixView<float>(buf.scores.data(), g_rows, keys));
            for (std::size_t i = 0; i < g_rows; ++i) {
                float* row = buf.scores.data() + i * keys;
                const std::size_t visible = std::size_t(pos0) + t0 + i % rows + 1;
                fns.softmax(row, int(visible), inv_sqrt);
                std::fill(row + visible, row + keys, 0.0f);
            }
            backend.gemm_fp32(MatrixView<const float>(s.vt.data() + kh * hs * L, hs, keys, L),
                              MatrixView<const float>(buf.scores.data(), g_rows, keys), MatrixView<float>(buf.og.data(), g_rows, hs));
            for (std::size_t g = 0; g < group; ++g)
                for (std::size_t r = 0; r < rows; ++r) {
                    const float* src = buf.og.data() + (g * rows + r) * hs;
                    std::copy(src, src + hs, s.xb.data() + (t0 + r) * D + (kh * group + g) * hs);
                }
        }
    });
}

/// Causal attention of the n new tokens (queries in s.q, rotated) over the cache positions
/// [0, pos0 + n) of kc/vc (context x kv_dim, the new positions already written); the heads'
/// outputs go to s.xb (n x dim). Grouped-query: head h reads KV head h / (n_heads / n_kv_heads).
/// From `attend_gemm_min_tokens` tokens on, `attend_gemm`.
inline void attend(const Config& c, BlockScratch& s, const float* kc, const float* vc, int n, int pos0, const Backend& backend) {
    if (n >= attend_gemm_min_tokens) return attend_gemm(c, s, kc, vc, n, pos0, backend);
    const std::size_t D = std::size_t(c.dim), KV = std::size_t(c.kv_dim()), N = std::size_t(n);
    const int hs = c.head_size();
    const Fp32Functions& fns = backend.host_fp32();
    const int group = c.n_heads / c.n_kv_heads;
    const float inv_sqrt = 1.0f / std::sqrt(float(hs));
    // one (token, head): a dot, an exp and an axpy per position of history, each FP32 multiply-add
    // counted as 4 packed ones (grain_for's unit; a 64-wide integer dot instruction does 4 times
    // the work of a 16-wide FMA). Counted as 1, a decode step's 9-15 heads ran on one thread
    // until position 400 or so: SmolLM2 Q4_0 decode 225 -> 254 tokens/s on 2 threads with it.
    const std::size_t head_ops = std::size_t(pos0 + n) * std::size_t(2 * hs + 32) * 4;
    parallel_for(N * std::size_t(c.n_heads), backend.threads(), [&](std::size_t j0, std::size_t j1) {
        std::vector<float> att(std::size_t(pos0 + n));
        for (std::size_t j = j0; j < j1; ++j) {
            const int t = int(j / std::size_t(c.n_heads)), h = int(j % std::size_t(c.n_heads));
            const int pos = pos0 + t;
            const float* qh = s.q.data() + std::size_t(t) * D + std::size_t(h * hs);
            const std::size_t kv_off = std::size_t((h / group) * hs);
            for (int p = 0; p <= pos; ++p) att[std::size_t(p)] = fns.dot(qh, kc + std::size_t(p) * KV + kv_off, hs);
            fns.softmax(att.data(), pos + 1, inv_sqrt);
            float* out = s.xb.data() + std::size_t(t) * D + std::size_t(h * hs);
            std::fill(out, out + hs, 0.0f);
            for (int p = 0; p <= pos; ++p) fns.axpy(att[std::size_t(p)], vc + std::size_t(p) * KV + kv_off, out, hs);
        }
    }, grain_for(head_ops));
}

/// One decoder block on n consecutive tokens at positions pos0 .. pos0 + n - 1 (causal). `x`
/// (n x dim) is updated in place. `kc`/`vc` are this layer's caches (context x kv_dim) holding
/// positions before pos0; the new positions are written into them. With `stop_after` >= 0 the
/// block returns right after the observer has seen that site (x is then not the block's
/// output): what capturing one site's statistics needs. With `resume_after` >= 0 (one of the
/// four linear-input sites; their enum order is the order the block runs them) the block
/// starts right after that site: x holds the residual stream there and `s` the site's
/// activations (`BlockScratch::site`), as a run that stopped at it left them; the layers before
/// it do not run again (GPTQ's true-sequential steps change only layers after the last capture).
inline void run_block(const Config& c, const Layer& L, int layer, float* x, int n, int pos0, float* kc, float* vc,
                      const Rope& rope, BlockScratch& s, const Backend& backend, const Observer* observer, int stop_after = -1,
                      int resume_after = -1) {
    const std::size_t D = std::size_t(c.dim), KV = std::size_t(c.kv_dim()), H = std::size_t(c.hidden_dim);
    const std::size_t N = std::size_t(n);
    s.fit(c, n);
    const auto mat = [&](std::vector<float>& v, std::size_t width) { return MatrixView<float>(v.data(), N, width); };
    const auto see = [&](Site site, std::vector<float>& v, std::size_t width) {
        if (observer && *observer) (*observer)(layer, site, MatrixView<const float>(v.data(), N, width));
        return stop_after == int(site);
    };

    if (resume_after > int(Site::mlp_hidden))
        throw InvalidArgument("run_block: a block resumes only after one of its four linear-input sites");
    const auto runs = [&](Site stage) { return resume_after < int(stage); };  // the stage that ends at this site
    // per-token work (RoPE, residual adds) on the pool: each token alone, the same bits
    const auto by_token = [&](auto&& fn) {
        parallel_for(N, backend.threads(), [&](std::size_t t0, std::size_t t1) {
            for (std::size_t t = t0; t < t1; ++t) fn(t);
        }, grain_for(D * 4));
    };

    if (runs(Site::attention_input)) {
        rmsnorm_rows(s.xb.data(), x, n, D, L.attention_norm, c.norm_eps, "the attention norm", layer, backend.threads());
        if (see(Site::attention_input, s.xb, D)) return;
    }
    if (runs(Site::attention_output)) {
        const Linear* qkv[] = {&L.wq, &L.wk, &L.wv};
        const MatrixView<float> qkv_out[] = {mat(s.q, D), mat(s.k, KV), mat(s.v, KV)};
        Linear::forward_together(qkv, mat(s.xb, D), qkv_out, backend);
        by_token([&](std::size_t t) {
            rope.apply(s.q.data() + t * D, D, pos0 + int(t));
            rope.apply(s.k.data() + t * KV, KV, pos0 + int(t));
        });
        std::copy(s.k.begin(), s.k.end(), kc + std::size_t(pos0) * KV);
        std::copy(s.v.begin(), s.v.end(), vc + std::size_t(pos0) * KV);
        attend(c, s, kc, vc, n, pos0, backend);
        if (see(Site::attention_output, s.xb, D)) return;
    }
    if (runs(Site::mlp_input)) {
        L.wo.forward(mat(s.xb, D), mat(s.xb2, D), backend);
        by_token([&](std::size_t t) {
            for (std::size_t i = t * D; i < (t + 1) * D; ++i) x[i] += s.xb2[i];
        });
        rmsnorm_rows(s.xb.data(), x, n, D, L.ffn_norm, c.norm_eps, "the MLP norm", layer, backend.threads());
        if (see(Site::mlp_input, s.xb, D)) return;
    }
    if (runs(Site::mlp_hidden)) {
        const Linear* gate_up[] = {&L.w1, &L.w3};
        const MatrixView<float> gate_up_out[] = {mat(s.hb, H), mat(s.hb2, H)};
        Linear::forward_together(gate_up, mat(s.xb, D), gate_up_out, backend);
        if (see(Site::mlp_gate, s.hb, H)) return;
        const auto swiglu = backend.host_fp32().swiglu;
        parallel_for(N, backend.threads(), [&](std::size_t t0, std::size_t t1) {
            swiglu(s.hb.data() + t0 * H, s.hb2.data() + t0 * H, (t1 - t0) * H);
        }, grain_for(H * 4));
        if (see(Site::mlp_hidden, s.hb, H)) return;
    }
    L.w2.forward(mat(s.hb, H), mat(s.xb, D), backend);
    by_token([&](std::size_t t) {
        for (std::size_t i = t * D; i < (t + 1) * D; ++i) x[i] += s.xb[i];
    });
}

/// One sequence being decoded: its KV cache and scratch buffers. Tokens go in one at a time
/// (decode) or as a batch (prompt processing: each linear layer becomes one GEMM).
class Session {
public:
    /// `context` caps the positions this session holds (0: the model's whole context); the KV
    /// cache is sized by it. Every product runs on `backend`.
    explicit Session(const Weights& w, Backend backend = {}, int context = 0)
        : w_(w), backend_(std::move(backend)),
          context_(context > 0 ? std::min(context, w.config.seq_len) : w.config.seq_len), rope_(w.config, context_),
          key_cache_(std::size_t(w.config.n_layers) * std::size_t(context_) * kv_dim()), value_cache_(key_cache_.size()) {}

    int context() const noexcept { return context_; }

    /// Sees the activations of every block from now on (calibration, statistics).
    void observe(Observer observer) { observer_ = std::move(observer); }

    /// Logits for the next token after `token` at position `pos` (positions in order from 0).
    std::span<const float> forward(int token, int pos) { return forward_batch(std::span<const int>(&token, 1), pos).row(0); }

    /// Runs `tokens` at positions pos0, pos0 + 1, ... (continuing the cache, which holds the
    /// positions before pos0) and returns logits: one row per token, or only the last token's
    /// row when `all_logits` is false.
    MatrixView<const float> forward_batch(std::span<const int> tokens, int pos0, bool all_logits = true) {
        const Config& c = w_.config;
        const int n = int(tokens.size());
        if (n == 0) throw InvalidArgument("forward_batch: no tokens");
        for (const int token : tokens)
            if (token < 0 || token >= c.vocab_size) throw InvalidArgument("token id " + std::to_string(token) + " out of range");
        if (pos0 < 0 || pos0 + n > context_)
            throw InvalidArgument("positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + n - 1) +
                                  " go beyond the context of " + std::to_string(context_));
        const std::size_t D = dim(), V = std::size_t(c.vocab_size);
        x_.resize(std::size_t(n) * D);
        for (int t = 0; t < n; ++t)
            std::copy_n(w_.token_embedding.begin() + std::ptrdiff_t(std::size_t(tokens[std::size_t(t)]) * D), D,
                        x_.begin() + std::ptrdiff_t(std::size_t(t) * D));
        const std::size_t layer_cache = std::size_t(context_) * kv_dim();
        for (int l = 0; l < c.n_layers; ++l)
            run_block(c, w_.layers[std::size_t(l)], l, x_.data(), n, pos0, key_cache_.data() + std::size_t(l) * layer_cache,
                      value_cache_.data() + std::size_t(l) * layer_cache, rope_, scratch_, backend_, &observer_);
        const int first = all_logits ? 0 : n - 1, rows = n - first;
        normed_.resize(std::size_t(rows) * D);
        rmsnorm_rows(normed_.data(), x_.data() + std::size_t(first) * D, rows, D, w_.norm, c.norm_eps, "the final norm", -1, backend_.threads());
        logits_.resize(std::size_t(rows) * V);
        const MatrixView<float> out(logits_.data(), std::size_t(rows), V);
        w_.output.forward(MatrixView<const float>(normed_.data(), std::size_t(rows), D), out, backend_);
        return out;
    }

private:
    std::size_t dim() const noexcept { return std::size_t(w_.config.dim); }
    std::size_t kv_dim() const noexcept { return std::size_t(w_.config.kv_dim()); }

    const Weights& w_;
    Backend backend_;
    int context_;
    Rope rope_;
    Observer observer_;
    BlockScratch scratch_;
    std::vector<float> x_, normed_, logits_, key_cache_, value_cache_;
};

/// Index of the largest logit (the first on ties).
inline int argmax(std::span<const float> logits) {
    return int(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace qforge::llama

namespace qforge::llama {

/// A quantized matrix packed densely, with its column order (empty: the original order).
inline Linear packed_linear(const QuantizedMatrix& q, std::vector<int> input_order = {}, std::shared_ptr<const HadamardTransform> input_transform = nullptr) {
    Linear out;
    const bool found = visit_packing_format(q.spec, q.rows, q.cols, [&](auto f) {
        out = Linear(decltype(f)::type::pack(q), std::move(input_order), input_transform);
    });
    if (!found) throw InvalidArgument(std::to_string(q.spec.bits) + "-bit codes: no packed format stores this grid (formats/registry.hpp)");
    return out;
}

/// A quantized layer as a Linear: scalar codes packed into their format (as above), PQ codes and
/// codebooks as they are (formats/pq.hpp); its column order and input transform kept. Rows
/// [r0, r1) only when r1 > 0 (the layers of GPTQ's stacked steps; a PQ layer cuts along its
/// 64-row codebook blocks, PqMatrix::row_range). Throws InvalidArgument as packed_linear does.
inline Linear packed_linear(const QuantizedLayer& r, int r0 = 0, int r1 = 0) {
    const bool cut = r1 > 0 && (r0 != 0 || r1 != r.rows());
    if (r.is_pq()) return Linear(LinearWeights(cut ? r.pq.row_range(r0, r1) : r.pq), r.column_order, r.input_transform);
    if (!r.wide_columns.empty()) {  // the kept FP16 channels' weights, cut to the same rows
        const Linear stored = packed_linear(cut ? r.q.row_range(r0, r1) : r.q);
        const std::size_t K = r.wide_columns.size(), first = cut ? std::size_t(r0) : 0, last = cut ? std::size_t(r1) : std::size_t(r.rows());
        auto wide = std::make_shared<WideColumns>();
        wide->columns = r.wide_columns;
        wide->values.assign(r.wide_values.begin() + std::ptrdiff_t(first * K), r.wide_values.begin() + std::ptrdiff_t(last * K));
        return Linear(stored.weights(), r.column_order, nullptr, std::move(wide));
    }
    return packed_linear(cut ? r.q.row_range(r0, r1) : r.q, r.column_order, r.input_transform);
}

/// An FP32 linear layer quantized with a scheme whose method needs no calibration (RTN) and
/// packed; a calibrated method is an InvalidArgument saying so (use the model drivers).
/// `importance`: an imatrix's mean x² per input column (io/imatrix.hpp), for RTN's llama-quantize
/// rounding (quantizers/rtn.hpp), or null. `note`, if given, gets what the quantizer adjusted
/// (a `,had` width without a Hadamard order quantized untransformed, ...).
inline Linear quantize_linear(const Linear& layer, const RuntimeScheme& scheme, const Backend& backend = {},
                              const std::vector<float>* importance = nullptr, std::string* note = nullptr) {
    const auto* fp32 = std::get_if<Fp32Matrix>(&layer.weights());
    if (!fp32) throw InvalidArgument("quantize_linear: the layer is already quantized");
    if (!layer.input_order().empty()) throw InvalidArgument("quantize_linear: the layer has a column order; dequantize it first");
    const MethodEntry& method = find_method(scheme.method);
    if (needs_calibration(scheme))
        throw InvalidArgument("quantize_linear: scheme '" + to_string(scheme) + "' needs calibration (llama::quantize_model)");
    QuantizeSettings o;
    o.backend = backend;
    LayerCalibration calib;
    calib.importance = importance;
    auto r = method.quantize(MatrixView<const float>(fp32->data.data(), std::size_t(fp32->rows), std::size_t(fp32->cols)), scheme, calib, o);
    if (note) *note += r.note;
    return packed_linear(r);
}

/// The same layer with its packed weights dequantized back to FP32 on `backend`, columns in the
/// original order and untransformed (an input transform's Tᵀ applied to each row).
inline Linear dequantized_linear(const Linear& layer, const Backend& backend = {}) {
    const std::size_t R = std::size_t(layer.rows()), S = std::size_t(layer.stored_cols()), C = std::size_t(layer.cols());
    Fp32Matrix m{layer.rows(), layer.stored_cols(), std::vector<float>(R * S)};
    backend.dequantize(layer.weights(), MatrixView<float>(m.data.data(), R, S));
    const auto& order = layer.input_order();
    if (!order.empty()) {  // stored column k is input column order[k]; kept FP16 channels fill the others
        std::vector<float> out(R * C);
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t k = 0; k < S; ++k) out[r * C + std::size_t(order[k])] = m.data[r * S + k];
        if (const auto& wide = layer.wide()) {
            const std::size_t K = wide->columns.size();
            for (std::size_t r = 0; r < R; ++r)
                for (std::size_t j = 0; j < K; ++j) out[r * C + std::size_t(wide->columns[j])] = wide->values[r * K + j];
        }
        m.cols = int(C);
        m.data = std::move(out);
    }
    if (const auto& t = layer.input_transform()) {
        // the backend's transform kernel (bit for bit the oracle rht_apply, tests/unit/test_hadamard.cpp),
        // rows on its threads: the scalar transform was 14% of a whole-model gptq:w3g128a,had run
        const auto hadamard = backend.host_fp32().hadamard;
        parallel_for(std::size_t(m.rows), backend.threads(), [&](std::size_t r0, std::size_t r1) {
            std::vector<float> tmp(C);
            for (std::size_t r = r0; r < r1; ++r) hadamard(*t, m.data.data() + r * C, tmp.data(), true);
        }, grain_for(C * 8));
    }
    return Linear(std::move(m));
}


/// Applies `fn` to every linear layer inside the decoder blocks (not the embedding or the head).
template <class Fn>
Weights map_block_linears(const Weights& w, Fn&& fn) {
    Weights out = w;
    for (auto& L : out.layers)
        for (Linear* p : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) *p = fn(*p);
    return out;
}

/// The model with every decoder linear layer in FP32: how a packed checkpoint (a GGUF model's
/// Q4_1 blocks) serves as the weight-only reference, computed without 8-bit activations.
inline Weights dequantized_weights(const Weights& w, const Backend& backend = {}) {
    return map_block_linears(w, [&](const Linear& l) { return dequantized_linear(l, backend); });
}

}  // namespace qforge::llama
