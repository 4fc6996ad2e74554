#pragma once
// A random Llama model built in memory, for tests that need a model but not a file.
#include <random>

#include "qforge/models/llama/model.hpp"

namespace qtest {

inline qforge::llama::Weights random_llama(qforge::llama::Config c, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 0.3f);
    const auto vec = [&](std::size_t count, float offset) {
        std::vector<float> v(count);
        for (auto& x : v) x = offset + n(rng);
        return v;
    };
    const auto mat = [&](int rows, int cols) {
        return qforge::llama::Linear(qforge::llama::Fp32Matrix{rows, cols, vec(std::size_t(rows) * std::size_t(cols), 0.0f)});
    };
    qforge::llama::Weights w;
    w.config = c;
    const auto D = std::size_t(c.dim);
    w.token_embedding = vec(std::size_t(c.vocab_size) * D, 0.0f);
    for (int l = 0; l < c.n_layers; ++l)
        w.layers.push_back({vec(D, 1.0f), vec(D, 1.0f), mat(c.dim, c.dim), mat(c.kv_dim(), c.dim), mat(c.kv_dim(), c.dim),
                            mat(c.dim, c.dim), mat(c.hidden_dim, c.dim), mat(c.dim, c.hidden_dim), mat(c.hidden_dim, c.dim)});
    w.norm = vec(D, 1.0f);
    w.output = mat(c.vocab_size, c.dim);
    return w;
}

inline qforge::llama::Config tiny_config(int layers = 3) {
    qforge::llama::Config c;
    c.dim = 32;
    c.hidden_dim = 48;
    c.n_layers = layers;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.vocab_size = 50;
    c.seq_len = 16;
    return c;
}

inline std::vector<int> random_tokens(std::size_t n, int vocab, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> pick(0, vocab - 1);
    std::vector<int> t(n);
    for (auto& v : t) v = pick(rng);
    return t;
}

}  // namespace qtest
