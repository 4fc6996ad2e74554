#pragma once
/// @file
/// Reader for llama2.c legacy (version 0) checkpoints: a header of seven little-endian int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
/// means the classifier is stored separately) followed by fp32 tensors in the order
/// token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real,
/// freq_cis_imag[, wcls]. Matrices are row-major (out_features, in_features).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"

namespace qforge::io {

struct Llama2cConfig {
    int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
    bool shared_classifier = true;
    int head_size() const noexcept { return dim / n_heads; }
    int kv_dim() const noexcept { return head_size() * n_kv_heads; }
};

/// A named matrix inside a loaded checkpoint (rows = out_features; vectors have rows = 1).
struct NamedTensor {
    std::string name;
    int rows = 0, cols = 0;
    std::span<const float> data;
    bool is_linear = false;  ///< a weight matrix a quantizer should act on
};

class Llama2cCheckpoint {
public:
    Llama2cCheckpoint(const Llama2cCheckpoint&) = delete;  // tensors point into storage_
    Llama2cCheckpoint& operator=(const Llama2cCheckpoint&) = delete;
    Llama2cCheckpoint(Llama2cCheckpoint&&) noexcept = default;
    Llama2cCheckpoint& operator=(Llama2cCheckpoint&&) noexcept = default;

    /// Reads and validates a checkpoint file; errors name the file and the problem.
    static Llama2cCheckpoint load(const std::string& path) {
        std::ifstream in(path, std::ios::binary | std::ios::ate);
        if (!in) throw FileError(path, "cannot open file");
        const auto file_size = std::size_t(in.tellg());
        in.seekg(0);
        std::vector<char> bytes(file_size);
        in.read(bytes.data(), std::streamsize(file_size));
        if (!in) throw FileError(path, "read failed");
        return parse(path, bytes.data(), bytes.size());
    }

    /// Validates and copies a checkpoint held in memory; `label` names it in errors.
    static Llama2cCheckpoint parse(const std::string& label, const char* data, std::size_t size) {
        const std::string& path = label;
        const std::uint64_t file_size = size;
        if (file_size < 28) throw FileError(path, "truncated: " + std::to_string(file_size) + " bytes, the header alone is 28");
        std::int32_t h[7];
        std::memcpy(h, data, sizeof h);
        Llama2cCheckpoint ck;
        auto& c = ck.config_;
        c.dim = h[0];
        c.hidden_dim = h[1];
        c.n_layers = h[2];
        c.n_heads = h[3];
        c.n_kv_heads = h[4];
        c.shared_classifier = h[5] > 0;
        c.vocab_size = h[5] > 0 ? h[5] : -std::int64_t(h[5]) > INT32_MAX ? 0 : -h[5];
        c.seq_len = h[6];
        const auto bad = [&](const std::string& why) { throw FileError(path, "not a llama2.c checkpoint: " + why); };
        constexpr int limit = 1 << 20;
        for (int i = 0; i < 7; ++i)
            if (i != 5 && (h[i] <= 0 || h[i] > limit)) bad("header field " + std::to_string(i) + " is " + std::to_string(h[i]));
        if (c.vocab_size <= 0 || c.vocab_size > limit) bad("vocab_size is " + std::to_string(h[5]));
        if (c.dim % c.n_heads != 0) bad("dim " + std::to_string(c.dim) + " is not a multiple of n_heads " + std::to_string(c.n_heads));
        if (c.n_kv_heads > c.n_heads || c.n_heads % c.n_kv_heads != 0)
            bad("n_kv_heads " + std::to_string(c.n_kv_heads) + " does not divide n_heads " + std::to_string(c.n_heads));
        if (c.head_size() % 2 != 0) bad("odd head size");

        const std::uint64_t D = std::uint64_t(c.dim), H = std::uint64_t(c.hidden_dim), L = std::uint64_t(c.n_layers),
                            V = std::uint64_t(c.vocab_size), KV = std::uint64_t(c.kv_dim()),
                            F = std::uint64_t(c.seq_len) * std::uint64_t(c.head_size()) / 2;
        const std::uint64_t floats = V * D + L * D + L * D * D + 2 * L * KV * D + L * D * D + L * D + 3 * L * H * D + D +
                                     2 * F + (c.shared_classifier ? 0 : V * D);
        const std::uint64_t expected = 28 + 4 * floats;
        if (file_size < expected)
            throw FileError(path, "truncated: " + std::to_string(file_size) + " bytes, the header promises " + std::to_string(expected));
        if (file_size > expected)
            throw FileError(path, "size mismatch: " + std::to_string(file_size) + " bytes, the header promises " + std::to_string(expected));
        ck.storage_.resize(floats);
        std::memcpy(ck.storage_.data(), data + 28, floats * 4);

        std::size_t offset = 0;
        const auto take = [&](const std::string& name, std::uint64_t layers, std::uint64_t rows, std::uint64_t cols, bool linear) {
            for (std::uint64_t l = 0; l < layers; ++l) {
                const std::string full = layers > 1 || name.rfind("layers.", 0) == 0
                                             ? "layers." + std::to_string(l) + "." + name.substr(name.find('.') + 1)
                                             : name;
                ck.tensors_.push_back({full, int(rows), int(cols), {ck.storage_.data() + offset, rows * cols}, linear});
                offset += rows * cols;
            }
        };
        take("tok_embeddings", 1, V, D, true);
        take("layers.attention_norm", L, 1, D, false);
        take("layers.attention.wq", L, D, D, true);
        take("layers.attention.wk", L, KV, D, true);
        take("layers.attention.wv", L, KV, D, true);
        take("layers.attention.wo", L, D, D, true);
        take("layers.ffn_norm", L, 1, D, false);
        take("layers.feed_forward.w1", L, H, D, true);
        take("layers.feed_forward.w2", L, D, H, true);
        take("layers.feed_forward.w3", L, H, D, true);
        take("norm", 1, 1, D, false);
        take("freq_cis_real", 1, 1, F, false);
        take("freq_cis_imag", 1, 1, F, false);
        if (!c.shared_classifier) take("output", 1, V, D, true);

        for (const auto& t : ck.tensors_)
            for (std::size_t i = 0; i < t.data.size(); ++i)
                if (!std::isfinite(t.data[i]))
                    throw FileError(path, "tensor " + t.name + " has a non-finite value at element " + std::to_string(i));
        return ck;
    }

    const Llama2cConfig& config() const noexcept { return config_; }
    const std::vector<NamedTensor>& tensors() const noexcept { return tensors_; }
    const NamedTensor& tensor(const std::string& name) const {
        for (const auto& t : tensors_)
            if (t.name == name) return t;
        throw InvalidArgument("no tensor named '" + name + "'");
    }

private:
    Llama2cCheckpoint() = default;
    Llama2cConfig config_;
    std::vector<float> storage_;
    std::vector<NamedTensor> tensors_;
};

}  // namespace qforge::io
