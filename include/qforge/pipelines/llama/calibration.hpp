#pragma once
/// @file
/// Calibration capture for a Llama decoder: per block, the activation statistics of every site
/// (calibration/activation_stats.hpp) over calibration text cut into sequences.
///
/// Two modes. `capture_all` runs the whole model once and keeps every block's statistics
/// (memory grows with depth). `LayerwiseCalibration` keeps only the hidden states entering the
/// current block (tokens x dim) and one block's statistics: capture a block, quantize it,
/// advance the hidden states through the quantized block, go on. So later blocks see the
/// errors of earlier quantized ones (GPTQ's sequential mode), and memory does not grow with
/// depth.
#include <array>
#include <functional>
#include <span>
#include <vector>

#include "qforge/calibration/activation_stats.hpp"
#include "qforge/models/llama/model.hpp"

namespace qforge::llama {

struct CalibrationOptions {
    int sequence_length = 512;  ///< tokens per calibration sequence (each starts at position 0)
    bool hessian = true;        ///< accumulate X^T X (the costliest part)
    Backend backend;            ///< where the model runs and X^T X accumulates
    std::function<void(long done, long total)> progress;  ///< sequences done of total, per pass
};

/// Statistics of one decoder block, per site. mlp_gate carries no Hessian (no layer multiplies it).
struct BlockStats {
    std::array<ActivationStats, site_count> sites;

    BlockStats() = default;
    BlockStats(const Config& c, bool hessian) {
        const auto D = std::size_t(c.dim), H = std::size_t(c.hidden_dim);
        at(Site::attention_input) = ActivationStats(D, hessian);
        at(Site::attention_output) = ActivationStats(D, hessian);
        at(Site::mlp_input) = ActivationStats(D, hessian);
        at(Site::mlp_hidden) = ActivationStats(H, hessian);
        at(Site::mlp_gate) = ActivationStats(H, false);
    }
    ActivationStats& at(Site s) noexcept { return sites[std::size_t(s)]; }
    const ActivationStats& at(Site s) const noexcept { return sites[std::size_t(s)]; }
    /// The statistics of what block linear layer `name` (wq .. w3) multiplies.
    const ActivationStats& input_of(std::string_view name) const { return at(input_site(name)); }
    std::size_t bytes() const noexcept {
        std::size_t b = 0;
        for (const auto& s : sites) b += s.bytes();
        return b;
    }
};

/// The calibration stream cut into sequences of `length` tokens (a shorter tail is kept if it
/// has at least two tokens).
inline std::vector<std::span<const int>> calibration_sequences(std::span<const int> tokens, int length) {
    if (length < 1) throw InvalidArgument("calibration sequence length must be positive");
    std::vector<std::span<const int>> out;
    for (std::size_t i = 0; i < tokens.size(); i += std::size_t(length)) {
        const std::size_t n = std::min(std::size_t(length), tokens.size() - i);
        if (n >= 2 || out.empty()) out.push_back(tokens.subspan(i, n));
    }
    if (out.empty()) throw InvalidArgument("no calibration tokens");
    return out;
}

/// Every block's statistics from one pass of the whole model.
inline std::vector<BlockStats> capture_all(const Weights& w, std::span<const int> tokens, const CalibrationOptions& o) {
    const Config& c = w.config;
    const int length = std::min(o.sequence_length, c.seq_len);
    std::vector<BlockStats> stats(std::size_t(c.n_layers), BlockStats(c, o.hessian));
    const auto sequences = calibration_sequences(tokens, length);
    Session s(w, o.backend, length);
    s.observe([&](int layer, Site site, MatrixView<const float> x) { stats[std::size_t(layer)].at(site).add(x, o.backend); });
    for (std::size_t i = 0; i < sequences.size(); ++i) {
        s.forward_batch(sequences[i], 0, false);
        if (o.progress) o.progress(long(i + 1), long(sequences.size()));
    }
    return stats;
}

class LayerwiseCalibration {
public:
    /// Embeds the calibration tokens; the model's blocks are not touched until capture/advance.
    LayerwiseCalibration(const Weights& w, std::span<const int> tokens, CalibrationOptions o)
        : LayerwiseCalibration(w.config, w.token_embedding, tokens, std::move(o)) {}

    /// The same from a configuration and the embedding table (vocab_size x dim, row-major) alone,
    /// for a driver that reads the blocks one at a time (QuantizingSource). Only the rows of the
    /// calibration tokens are copied; the table may be dropped after.
    LayerwiseCalibration(const Config& config, std::span<const float> token_embedding, std::span<const int> tokens, CalibrationOptions o)
        : config_(config), options_(std::move(o)) {
        if (token_embedding.size() != std::size_t(config_.vocab_size) * std::size_t(config_.dim))
            throw InvalidArgument("layer-wise calibration: the embedding table has " + std::to_string(token_embedding.size()) +
                                  " values, the configuration needs vocab_size x dim");
        const int length = std::min(options_.sequence_length, config_.seq_len);
        options_.sequence_length = length;
        const auto D = std::size_t(config_.dim);
        for (const auto seq : calibration_sequences(tokens, length)) {
            lengths_.push_back(int(seq.size()));
            for (const int t : seq) {
                if (t < 0 || t >= config_.vocab_size) throw InvalidArgument("calibration token id " + std::to_string(t) + " out of range");
                hidden_.insert(hidden_.end(), token_embedding.begin() + std::ptrdiff_t(std::size_t(t) * D),
                               token_embedding.begin() + std::ptrdiff_t(std::size_t(t) * D + D));
            }
        }
        rope_ = Rope(config_, length);
        const std::size_t cache = std::size_t(length) * std::size_t(config_.kv_dim());
        key_cache_.resize(cache);
        value_cache_.resize(cache);
    }

    int layer() const noexcept { return layer_; }
    int layers() const noexcept { return config_.n_layers; }
    const Config& config() const noexcept { return config_; }
    long tokens() const noexcept { return long(hidden_.size() / std::size_t(config_.dim)); }

    /// Statistics of the current block's sites when it runs with weights `block` (the original
    /// block, or one partly quantized already). The hidden states stay as they are.
    /// `sites`: a mask of (1 << Site) to gather (default all); the others stay empty.
    BlockStats capture(const Layer& block, unsigned sites = ~0u) {
        BlockStats stats(config_, options_.hessian);
        const Observer observer = [&](int, Site site, MatrixView<const float> x) {
            if (sites & (1u << unsigned(site))) stats.at(site).add(x, options_.backend);
        };
        int last = -1;  // the block may stop after the last site asked for
        for (int site = 0; site < site_count; ++site)
            if (sites & (1u << unsigned(site))) last = site;
        run(block, &observer, false, sites == ~0u ? -1 : last);
        return stats;
    }

    /// Moves the hidden states through `block` (typically the quantized block) to the next block.
    void advance(const Layer& block) {
        if (layer_ >= config_.n_layers) throw InvalidArgument("layer-wise calibration: already past the last block");
        run(block, nullptr, true);
        ++layer_;
    }

    /// The hidden states entering the current block, tokens x dim.
    MatrixView<const float> hidden() const { return {hidden_.data(), std::size_t(tokens()), std::size_t(config_.dim)}; }

    /// Bytes held between calls: hidden states, one block's KV cache and scratch. Independent
    /// of the number of blocks.
    std::size_t bytes() const noexcept {
        return (hidden_.size() + work_.size() + key_cache_.size() + value_cache_.size() + rope_.cos.size() + rope_.sin.size() +
                scratch_.xb.size() * 3 + scratch_.k.size() * 2 + scratch_.hb.size() * 2) *
               sizeof(float);
    }

private:
    void run(const Layer& block, const Observer* observer, bool update, int stop_after = -1) {
        if (layer_ >= config_.n_layers) throw InvalidArgument("layer-wise calibration: no block left to run");
        const auto D = std::size_t(config_.dim);
        std::size_t offset = 0;
        for (std::size_t i = 0; i < lengths_.size(); ++i) {
            const int n = lengths_[i];
            float* x = hidden_.data() + offset * D;
            if (!update) {  // run a copy so the states entering this block stay as they are
                work_.assign(x, x + std::size_t(n) * D);
                x = work_.data();
            }
            run_block(config_, block, layer_, x, n, 0, key_cache_.data(), value_cache_.data(), rope_, scratch_, options_.backend,
                      observer, stop_after);
            offset += std::size_t(n);
            if (options_.progress) options_.progress(long(i + 1), long(lengths_.size()));
        }
    }

    Config config_;
    CalibrationOptions options_;
    int layer_ = 0;
    std::vector<int> lengths_;
    std::vector<float> hidden_, work_, key_cache_, value_cache_;
    Rope rope_;
    BlockScratch scratch_;
};

}  // namespace qforge::llama
