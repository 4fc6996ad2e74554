#pragma once
/// @file
/// Finding language-specific MLP neurons by LAPE (Tang et al., 2024: language activation
/// probability entropy), and the neuron-set file TWQ reads.
///
/// For each corpus (language) k, p_k(l, i) = the fraction of its tokens on which neuron i of
/// block l fires, i.e. act_fn(gate) > 0 (SiLU is positive exactly when its input is). The
/// probabilities are normalised across corpora, p'_k = p_k / sum_j p_j, and LAPE is the entropy
/// -sum_k p'_k log p'_k: low for neurons that fire for few languages. Selection as in Tang et al.'s
/// reference code: a neuron is a candidate when some language's p_k exceeds the
/// `probability_quantile` (95th percentile) of all p_k(l, i); of the candidates, the
/// `entropy_quantile` (1%) x L x H with the lowest LAPE are kept (a count fixed as a share of all
/// neurons, not an entropy quantile intersected with the filter, which can leave almost none);
/// each kept neuron belongs to every language whose p_k exceeds the probability threshold.
///
/// File (JSON): {"format": "qforge-neurons", "version": 1, "layers": L, "hidden": H,
///               "method": "lape" | "random", "sets": {"<name>": [[ids of block 0], ..., [ids of block L-1]]}}
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "qforge/io/json.hpp"
#include "qforge/io/output_path.hpp"
#include "qforge/io/text_file.hpp"
#include "qforge/pipelines/llama/awq.hpp"
#include "qforge/models/llama/model.hpp"

namespace qforge::llama {

/// Per block and neuron, the fraction of tokens on which act_fn(gate) > 0.
inline std::vector<std::vector<float>> activation_probability(const Weights& w, std::span<const std::span<const int>> sequences,
                                                             const Backend& backend = {}) {
    const Config& c = w.config;
    std::vector<std::vector<double>> fired(std::size_t(c.n_layers), std::vector<double>(std::size_t(c.hidden_dim), 0.0));
    long tokens = 0;
    int context = 0;
    for (const auto s : sequences) context = std::max(context, int(s.size()));
    // a longer sequence would have to be cut, i.e. not be what was asked for
    if (context > c.seq_len)
        throw InvalidArgument("activation probability: a sequence of " + std::to_string(context) + " tokens exceeds the model's context of " +
                              std::to_string(c.seq_len));
    Session session(w, backend, context);
    session.observe([&](int layer, Site site, MatrixView<const float> x) {
        if (site != Site::mlp_gate) return;
        auto& f = fired[std::size_t(layer)];
        for (std::size_t t = 0; t < x.rows; ++t)
            for (std::size_t i = 0; i < x.cols; ++i) f[i] += x(t, i) > 0.0f;
    });
    for (const auto s : sequences) {
        if (s.empty()) continue;
        session.forward_batch(s, 0, false);
        tokens += long(s.size());
    }
    if (tokens == 0) throw InvalidArgument("activation probability: no tokens");
    std::vector<std::vector<float>> p(fired.size());
    for (std::size_t l = 0; l < fired.size(); ++l)
        for (const double f : fired[l]) p[l].push_back(float(f / double(tokens)));
    return p;
}

struct LapeOptions {
    double entropy_quantile = 0.01;
    double probability_quantile = 0.95;
};

struct LapeResult {
    std::map<std::string, NeuronSet> per_language;
    double probability_threshold = 0;
    double entropy_threshold = 0;  ///< the highest LAPE kept
    std::size_t selected = 0;      ///< neurons kept
    std::size_t candidates = 0;    ///< neurons passing the probability filter
};

/// `probability[k]` = activation_probability of corpus k, named `names[k]`.
inline LapeResult lape_select(const std::vector<std::string>& names, const std::vector<std::vector<std::vector<float>>>& probability,
                              const LapeOptions& o = {}) {
    if (names.size() != probability.size() || names.size() < 2) throw InvalidArgument("LAPE needs at least two corpora, one name each");
    const std::size_t K = names.size(), L = probability[0].size(), H = probability[0][0].size();
    std::vector<float> all_p, entropy(L * H);
    for (const auto& pk : probability)
        for (const auto& layer : pk) all_p.insert(all_p.end(), layer.begin(), layer.end());
    const auto quantile = [](std::vector<float> v, double q) {
        const std::size_t i = std::min(v.size() - 1, std::size_t(q * double(v.size())));
        std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(i), v.end());
        return double(v[i]);
    };
    LapeResult r;
    r.probability_threshold = quantile(all_p, o.probability_quantile);
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t i = 0; i < H; ++i) {
            double sum = 0;
            for (std::size_t k = 0; k < K; ++k) sum += probability[k][l][i];
            double e = 0;
            for (std::size_t k = 0; k < K; ++k) {
                const double pn = sum > 0 ? probability[k][l][i] / sum : 1.0 / double(K);
                if (pn > 0) e -= pn * std::log(pn);
            }
            entropy[l * H + i] = float(e);
        }
    std::vector<std::size_t> candidates;
    for (std::size_t n = 0; n < L * H; ++n) {
        float top = 0;
        for (std::size_t k = 0; k < K; ++k) top = std::max(top, probability[k][n / H][n % H]);
        if (double(top) > r.probability_threshold) candidates.push_back(n);
    }
    const std::size_t keep = std::min(candidates.size(), std::size_t(std::llround(o.entropy_quantile * double(L * H))));
    // ties broken by position so the selection does not depend on the sort's whims
    std::partial_sort(candidates.begin(), candidates.begin() + std::ptrdiff_t(keep), candidates.end(), [&](std::size_t a, std::size_t b) {
        return entropy[a] != entropy[b] ? entropy[a] < entropy[b] : a < b;
    });
    r.candidates = candidates.size();
    r.selected = keep;
    candidates.resize(keep);
    std::sort(candidates.begin(), candidates.end());
    for (const auto& n : names) r.per_language[n].per_layer.assign(L, {});
    for (const std::size_t n : candidates) {
        r.entropy_threshold = std::max(r.entropy_threshold, double(entropy[n]));
        for (std::size_t k = 0; k < K; ++k)
            if (double(probability[k][n / H][n % H]) > r.probability_threshold) r.per_language[names[k]].per_layer[n / H].push_back(int(n % H));
    }
    return r;
}

/// A control set: per block, as many neurons as `like` has there, drawn uniformly (fixed seed).
inline NeuronSet random_like(const NeuronSet& like, int hidden, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    NeuronSet out;
    for (const auto& layer : like.per_layer) {
        std::vector<int> all(static_cast<std::size_t>(hidden));
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        std::vector<int> pick(all.begin(), all.begin() + std::ptrdiff_t(std::min(layer.size(), all.size())));
        std::sort(pick.begin(), pick.end());
        out.per_layer.push_back(std::move(pick));
    }
    return out;
}

inline void write_neuron_sets(const std::string& path, const std::map<std::string, NeuronSet>& sets, int layers, int hidden,
                              const std::string& method) {
    io::Json::Object all;
    for (const auto& [name, set] : sets) {
        io::Json::Array per_layer;
        for (const auto& l : set.per_layer) {
            io::Json::Array ids;
            for (const int i : l) ids.emplace_back(i);
            per_layer.emplace_back(std::move(ids));
        }
        all.emplace_back(name, io::Json(std::move(per_layer)));
    }
    const io::Json j(io::Json::Object{{"format", io::Json("qforge-neurons")}, {"version", io::Json(1)}, {"layers", io::Json(layers)},
                                      {"hidden", io::Json(hidden)}, {"method", io::Json(method)}, {"sets", io::Json(std::move(all))}});
    io::write_file_atomically(path, j.dump() + "\n");
}

inline std::map<std::string, NeuronSet> read_neuron_sets(const std::string& path, int layers, int hidden) {
    const std::string text = io::read_text_file(path, "a neuron file (JSON)");
    std::map<std::string, NeuronSet> out;
    try {
        const auto j = io::Json::parse(text);
        if (j.at("format").as_string() != "qforge-neurons") throw FileError(path, "not a qforge neuron file");
        if (j.at("version").as_int() != 1) throw FileError(path, "neuron file version " + std::to_string(j.at("version").as_int()) + " is not supported");
        if (j.at("layers").as_int() != layers || j.at("hidden").as_int() != hidden)
            throw FileError(path, "neuron sets are for " + std::to_string(j.at("layers").as_int()) + " layers x " + std::to_string(j.at("hidden").as_int()) +
                                      " neurons, the model has " + std::to_string(layers) + " x " + std::to_string(hidden));
        for (const auto& [name, set] : j.at("sets").as_object()) {
            NeuronSet s;
            for (const auto& l : set.as_array()) {
                std::vector<int> ids;
                for (const auto& i : l.as_array()) {
                    const auto v = i.as_int();
                    if (v < 0 || v >= hidden) throw FileError(path, "set " + name + ": neuron " + std::to_string(v) + " out of range");
                    ids.push_back(int(v));
                }
                s.per_layer.push_back(std::move(ids));
            }
            if (int(s.per_layer.size()) != layers) throw FileError(path, "set " + name + " lists " + std::to_string(s.per_layer.size()) + " layers");
            out[name] = std::move(s);
        }
    } catch (const InvalidData& e) {
        throw FileError(path, e.what());
    }
    return out;
}

}  // namespace qforge::llama
