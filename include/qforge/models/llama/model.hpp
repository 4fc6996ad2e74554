#pragma once
/// @file
/// A Llama decoder: RMSNorm, rotary embeddings (llama2.c's adjacent-pair rotation), grouped-query
/// attention with a KV cache, SwiGLU MLP. Every linear layer is a `Linear` (FP32 or packed).
#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "qforge/io/llama2c.hpp"
#include "qforge/models/llama/linear.hpp"
#include "qforge/quantizers/rtn.hpp"

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

/// One sequence being decoded: its KV cache and scratch buffers.
class Session {
public:
    /// `context` caps the positions this session holds (0: the model's whole context); the KV
    /// cache is sized by it.
    Session(const Weights& w, Isa isa, int threads = 0, int context = 0)
        : w_(w), isa_(isa), threads_(threads),
          context_(context > 0 ? std::min(context, w.config.seq_len) : w.config.seq_len), x_(dim()), xb_(dim()),
          xb2_(dim()), q_(dim()), k_(kv_dim()), v_(kv_dim()), hb_(std::size_t(w.config.hidden_dim)),
          hb2_(std::size_t(w.config.hidden_dim)), att_(std::size_t(context_)), logits_(std::size_t(w.config.vocab_size)),
          key_cache_(std::size_t(w.config.n_layers) * std::size_t(context_) * kv_dim()), value_cache_(key_cache_.size()) {}

    int context() const noexcept { return context_; }

    /// Logits for the next token after `token` at position `pos` (positions in order from 0).
    std::span<const float> forward(int token, int pos) {
        const Config& c = w_.config;
        if (token < 0 || token >= c.vocab_size) throw InvalidArgument("token id " + std::to_string(token) + " out of range");
        if (pos < 0 || pos >= context_) throw InvalidArgument("position " + std::to_string(pos) + " beyond the context");
        const std::size_t D = dim(), KV = kv_dim();
        const int hs = c.head_size();
        std::copy_n(w_.token_embedding.begin() + std::ptrdiff_t(std::size_t(token) * D), D, x_.begin());
        for (int l = 0; l < c.n_layers; ++l) {
            const Layer& L = w_.layers[std::size_t(l)];
            rmsnorm(xb_, x_, L.attention_norm);
            L.wq.forward(xb_, q_, isa_, threads_);
            L.wk.forward(xb_, k_, isa_, threads_);
            L.wv.forward(xb_, v_, isa_, threads_);
            for (std::size_t i = 0; i < D; i += 2) {  // rotate adjacent pairs
                const int within = int(i % std::size_t(hs));
                const float freq = 1.0f / std::pow(c.rope_theta, float(within) / float(hs));
                const float angle = float(pos) * freq, fc = std::cos(angle), fs = std::sin(angle);
                rotate(q_[i], q_[i + 1], fc, fs);
                if (i < KV) rotate(k_[i], k_[i + 1], fc, fs);
            }
            float* kc = key_cache_.data() + (std::size_t(l) * std::size_t(context_)) * KV;
            float* vc = value_cache_.data() + (std::size_t(l) * std::size_t(context_)) * KV;
            std::copy(k_.begin(), k_.end(), kc + std::size_t(pos) * KV);
            std::copy(v_.begin(), v_.end(), vc + std::size_t(pos) * KV);
            const int group = c.n_heads / c.n_kv_heads;
            for (int h = 0; h < c.n_heads; ++h) {
                const float* qh = q_.data() + std::size_t(h * hs);
                const std::size_t kv_off = std::size_t((h / group) * hs);
                float max_score = -INFINITY;
                for (int t = 0; t <= pos; ++t) {
                    const float* kt = kc + std::size_t(t) * KV + kv_off;
                    float s = 0.0f;
                    for (int i = 0; i < hs; ++i) s += qh[i] * kt[i];
                    att_[std::size_t(t)] = s / std::sqrt(float(hs));
                    max_score = std::max(max_score, att_[std::size_t(t)]);
                }
                float sum = 0.0f;
                for (int t = 0; t <= pos; ++t) sum += (att_[std::size_t(t)] = std::exp(att_[std::size_t(t)] - max_score));
                float* out = xb_.data() + std::size_t(h * hs);
                std::fill(out, out + hs, 0.0f);
                for (int t = 0; t <= pos; ++t) {
                    const float a = att_[std::size_t(t)] / sum;
                    const float* vt = vc + std::size_t(t) * KV + kv_off;
                    for (int i = 0; i < hs; ++i) out[i] += a * vt[i];
                }
            }
            L.wo.forward(xb_, xb2_, isa_, threads_);
            for (std::size_t i = 0; i < D; ++i) x_[i] += xb2_[i];
            rmsnorm(xb_, x_, L.ffn_norm);
            L.w1.forward(xb_, hb_, isa_, threads_);
            L.w3.forward(xb_, hb2_, isa_, threads_);
            for (std::size_t i = 0; i < hb_.size(); ++i) hb_[i] = hb_[i] / (1.0f + std::exp(-hb_[i])) * hb2_[i];
            L.w2.forward(hb_, xb_, isa_, threads_);
            for (std::size_t i = 0; i < D; ++i) x_[i] += xb_[i];
        }
        rmsnorm(x_, x_, w_.norm);
        w_.output.forward(x_, logits_, isa_, threads_);
        return logits_;
    }

private:
    std::size_t dim() const noexcept { return std::size_t(w_.config.dim); }
    std::size_t kv_dim() const noexcept { return std::size_t(w_.config.kv_dim()); }
    static void rotate(float& a, float& b, float c, float s) noexcept {
        const float a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = a0 * s + b0 * c;
    }
    void rmsnorm(std::vector<float>& out, const std::vector<float>& x, const std::vector<float>& weight) const {
        float ss = 0.0f;
        for (const float v : x) ss += v * v;
        const float scale = 1.0f / std::sqrt(ss / float(x.size()) + w_.config.norm_eps);
        for (std::size_t i = 0; i < x.size(); ++i) out[i] = weight[i] * (scale * x[i]);
    }

    const Weights& w_;
    Isa isa_;
    int threads_;
    int context_;
    std::vector<float> x_, xb_, xb2_, q_, k_, v_, hb_, hb2_, att_, logits_, key_cache_, value_cache_;
};

/// Index of the largest logit (the first on ties).
inline int argmax(std::span<const float> logits) {
    return int(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace qforge::llama

namespace qforge::llama {

/// An FP32 linear layer quantized with an RTN scheme and packed densely.
inline Linear quantize_linear(const Linear& layer, const RuntimeScheme& scheme, int threads = 0) {
    const auto* fp32 = std::get_if<Fp32Matrix>(&layer.weights());
    if (!fp32) throw InvalidArgument("quantize_linear: the layer is already quantized");
    const auto q = RtnQuantizer(scheme, threads)
                       .quantize(MatrixView<const float>(fp32->data.data(), std::size_t(fp32->rows), std::size_t(fp32->cols)));
    switch (scheme.spec.bits) {
        case 2: return Linear(Dense<2>::pack(q));
        case 3: return Linear(Dense<3>::pack(q));
        case 4: return Linear(Dense<4>::pack(q));
        default: return Linear(Dense<8>::pack(q));
    }
}

/// The same layer with its packed weights dequantized back to FP32.
inline Linear dequantized_linear(const Linear& layer) {
    return std::visit(
        [&](const auto& w) -> Linear {
            using T = std::decay_t<decltype(w)>;
            if constexpr (std::is_same_v<T, Fp32Matrix>) return Linear(w);
            else return Linear(Fp32Matrix{w.rows, w.cols, dequantize<typename format_of_packed<T>::type>(w, Isa::scalar)});
        },
        layer.weights());
}

/// Applies `fn` to every linear layer inside the decoder blocks (not the embedding or the head).
template <class Fn>
Weights map_block_linears(const Weights& w, Fn&& fn) {
    Weights out = w;
    for (auto& L : out.layers)
        for (Linear* p : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) *p = fn(*p);
    return out;
}

}  // namespace qforge::llama
