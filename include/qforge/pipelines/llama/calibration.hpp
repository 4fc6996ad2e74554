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
    /// Accumulators for the sites in `sites` (a mask of 1 << Site); the others stay empty (width 0).
    BlockStats(const Config& c, bool hessian, unsigned sites = ~0u) {
        const auto D = std::size_t(c.dim), H = std::size_t(c.hidden_dim);
        const auto make = [&](Site s, std::size_t width, bool with_hessian) {
            if (sites & (1u << unsigned(s))) at(s) = ActivationStats(width, with_hessian);
        };
        make(Site::attention_input, D, hessian);
        make(Site::attention_output, D, hessian);
        make(Site::mlp_input, D, hessian);
        make(Site::mlp_hidden, H, hessian);
        make(Site::mlp_gate, H, false);
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
    std::vector<BlockStats> stats;  // built one by one: the statistics are move-only
    for (int l = 0; l < c.n_layers; ++l) stats.emplace_back(c, o.hessian);
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
    /// `sites`: a mask of (1 << Site) to gather (default all); the others stay empty. A capture
    /// that stops before the block's end at one of the four linear-input sites keeps the block's
    /// state there (the residual stream and that site's activations, tokens x dim or x hidden_dim)
    /// so that the next capture or `advance` can resume from it.
    ///
    /// `resume`: start where the previous capture of this block stopped instead of at the block's
    /// input. The caller promises that the layers before that site are the ones that capture ran
    /// (GPTQ's true-sequential steps quantize only later layers); the result is then the same,
    /// bit for bit, as running the block from its input. InvalidArgument when there is no such
    /// state, or when a site asked for lies before it.
    BlockStats capture(const Layer& block, unsigned sites = ~0u, bool resume = false) {
        BlockStats stats(config_, options_.hessian, sites);
        const Observer observer = [&](int, Site site, MatrixView<const float> x) {
            if (sites & (1u << unsigned(site))) stats.at(site).add(x, options_.backend);
        };
        int last = -1;  // the block may stop after the last site asked for
        for (int site = 0; site < site_count; ++site)
            if (sites & (1u << unsigned(site))) last = site;
        if (resume)
            for (int site = 0; site <= resumed_site(); ++site)
                if (sites & (1u << unsigned(site)))
                    throw InvalidArgument("layer-wise calibration: cannot capture site " + std::to_string(site) +
                                          " when resuming after site " + std::to_string(resume_site_));
        run(block, &observer, false, sites == ~0u ? -1 : last, resume);
        return stats;
    }

    /// Moves the hidden states through `block` (typically the quantized block) to the next block.
    /// `resume`: as for `capture`, from where the last capture of this block stopped.
    void advance(const Layer& block, bool resume = false) {
        if (layer_ >= config_.n_layers) throw InvalidArgument("layer-wise calibration: already past the last block");
        run(block, nullptr, true, -1, resume);
        ++layer_;
    }

    /// The hidden states entering the current block, tokens x dim.
    MatrixView<const float> hidden() const { return {hidden_.data(), std::size_t(tokens()), std::size_t(config_.dim)}; }

    /// Bytes held between calls: hidden states, one block's KV cache and scratch. Independent
    /// of the number of blocks. Not counted: attention's task buffers, alive during the call only
    /// (`attend_gemm`: a KV head's stacked queries, scores and outputs for 64 tokens, per thread).
    std::size_t bytes() const noexcept {
        return (hidden_.size() + work_.size() + key_cache_.size() + value_cache_.size() + rope_.cos.size() + rope_.sin.size() +
                scratch_.xb.size() * 3 + scratch_.k.size() * 2 + scratch_.hb.size() * 2 + scratch_.vt.size() + resume_x_.size() + resume_act_.size() +
                next_x_.size() + next_act_.size()) *
               sizeof(float);
    }

private:
    int resumed_site() const {
        if (resume_site_ < 0 || resume_layer_ != layer_)
            throw InvalidArgument("layer-wise calibration: nothing to resume from (no capture of block " + std::to_string(layer_) +
                                  " stopped at a linear-input site)");
        return resume_site_;
    }

    /// Width of the activations at linear-input site `site` (the MLP's hidden layer, or dim).
    std::size_t site_width(int site) const noexcept {
        return std::size_t(site == int(Site::mlp_hidden) ? config_.hidden_dim : config_.dim);
    }

    void run(const Layer& block, const Observer* observer, bool update, int stop_after, bool resume) {
        if (layer_ >= config_.n_layers) throw InvalidArgument("layer-wise calibration: no block left to run");
        const int from = resume ? resumed_site() : -1;
        // a stop at a linear-input site leaves a state to resume from; mlp_gate's is two buffers
        const bool keep = !update && stop_after >= 0 && stop_after <= int(Site::mlp_hidden);
        const auto D = std::size_t(config_.dim);
        const std::size_t from_width = from >= 0 ? site_width(from) : 0, keep_width = keep ? site_width(stop_after) : 0;
        if (keep) {
            next_x_.resize(hidden_.size());
            next_act_.resize(std::size_t(tokens()) * keep_width);
        }
        std::size_t offset = 0;
        for (std::size_t i = 0; i < lengths_.size(); ++i) {
            const int n = lengths_[i];
            const std::size_t rows = std::size_t(n);
            float* x = hidden_.data() + offset * D;
            const float* entering = resume ? resume_x_.data() + offset * D : x;
            if (!update) {  // run a copy so the states entering this block stay as they are
                work_.assign(entering, entering + rows * D);
                x = work_.data();
            } else if (resume) {
                std::copy_n(entering, rows * D, x);
            }
            if (resume) {
                scratch_.fit(config_, n);
                std::copy_n(resume_act_.data() + offset * from_width, rows * from_width, scratch_.site(from).data());
            }
            run_block(config_, block, layer_, x, n, 0, key_cache_.data(), value_cache_.data(), rope_, scratch_, options_.backend,
                      observer, stop_after, from);
            if (keep) {
                std::copy_n(x, rows * D, next_x_.data() + offset * D);
                std::copy_n(scratch_.site(stop_after).data(), rows * keep_width, next_act_.data() + offset * keep_width);
            }
            offset += rows;
            if (options_.progress) options_.progress(long(i + 1), long(lengths_.size()));
        }
        if (keep) {
            resume_x_.swap(next_x_);
            resume_act_.swap(next_act_);
            resume_site_ = stop_after;
            resume_layer_ = layer_;
        } else {
            resume_site_ = -1;
        }
        if (!keep) {  // nothing more to resume from: give the memory back
            std::vector<float>().swap(resume_x_);
            std::vector<float>().swap(resume_act_);
        }
        std::vector<float>().swap(next_x_);
        std::vector<float>().swap(next_act_);
    }

    Config config_;
    CalibrationOptions options_;
    int layer_ = 0;
    std::vector<int> lengths_;
    std::vector<float> hidden_, work_, key_cache_, value_cache_;
    // the state where the last capture of block resume_layer_ stopped (site resume_site_, -1: none)
    int resume_site_ = -1, resume_layer_ = -1;
    std::vector<float> resume_x_, resume_act_, next_x_, next_act_;
    Rope rope_;
    BlockScratch scratch_;
};

}  // namespace qforge::llama
