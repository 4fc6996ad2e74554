// `qforge eval`: the quality table. Every scheme's model runs in lockstep with the reference
// over the same windows of the text, so the reference runs once and no logits are stored.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <qforge/pipelines/llama/awq.hpp>
#include <qforge/models/llama/evaluate.hpp>
#include <qforge/pipelines/llama/neurons.hpp>
#include <qforge/sources/llama/source.hpp>

#include <qforge/io/gguf.hpp>
#include <qforge/io/scheme_map.hpp>
#include <qforge/models/llama/size.hpp>

#include "commands.hpp"
#include "model.hpp"
#include "plot.hpp"

namespace cli {
namespace {

struct EvalCliOptions {
    ModelOptions model;
    CalibOptions calib;
    std::string text, kernels = "fp32", flores, flores_lines = "507-1012", neurons, svg;
    std::vector<std::string> schemes, twq_targets, scheme_maps, compare;
    long max_tokens = 16384;
    int context = 0, threads = 0, flores_max_lines = 100;
    long models_in_memory = 0;  ///< rows evaluated together at most (0: as many as a quarter of the available memory holds)
    bool json = false;
};

/// The memory the system could give this process now (Linux: MemAvailable), or 0 when unknown.
std::uint64_t available_memory() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    std::uint64_t kib = 0;
    std::string unit;
    while (in >> key >> kib >> unit)
        if (key == "MemAvailable:") return kib * 1024;
    return 0;
}

/// Bytes a model's weights hold in memory: every tensor as it is stored there.
std::uint64_t held_bytes(const qforge::llama::Weights& w) {
    std::uint64_t n = (w.token_embedding.size() + w.norm.size()) * 4 + w.output.bytes();
    for (const auto& L : w.layers) {
        n += (L.attention_norm.size() + L.ffn_norm.size()) * 4;
        for (const auto& b : qforge::llama::block_linears) n += (L.*b.member).bytes();
    }
    return n;
}

struct Row {
    std::string label;
    std::string family;  ///< the plot's series: method, kind of grid, ',had' (family_of)
    qforge::llama::Weights weights;
    double bits_per_weight = 0, size_mb = 0, quantize_seconds = 0;
    std::string path = {};  ///< the file a --scheme-map or --compare row came from (empty for --scheme)
};

/// The option's value given twice (the same scheme, or paths naming the same file): refused, as a
/// repeated row would be measured twice and shown as two results.
template <class T, class Same>
void refuse_repeats(const std::vector<T>& values, const char* option, Same same, const std::vector<std::string>& shown) {
    for (std::size_t i = 0; i < values.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
            if (same(values[i], values[j])) throw CLI::ValidationError(option, shown[i] + " is given twice");
}

/// Whether two paths name the same file (lexically when one does not exist: its own error comes later).
bool same_file(const std::string& a, const std::string& b) {
    std::error_code ea, eb;
    const bool equivalent = std::filesystem::equivalent(a, b, ea);
    if (!ea) return equivalent;
    return std::filesystem::weakly_canonical(a, ea) == std::filesystem::weakly_canonical(b, eb);
}

/// A scheme's series in `--svg`: its method, its kind of grid (integer, PQ, a codebook, a GGUF
/// block type) and ',had', so that one line joins the bit widths of one method.
std::string family_of(const qforge::RuntimeScheme& s) {
    std::string kind = s.pq ? "PQ" : !s.spec.block.empty() ? "GGUF blocks" : s.spec.codebook ? std::string(s.spec.codebook->name) : "int";
    return s.method + " " + kind + (s.options.hadamard ? " + had" : "");
}

void measure(Row& r, bool tied) {
    std::size_t other = r.weights.output.bytes() + r.weights.norm.size() * 4;
    for (const auto& L : r.weights.layers) other += (L.attention_norm.size() + L.ffn_norm.size()) * 4;
    if (!tied) other += r.weights.token_embedding.size() * 4;
    r.bits_per_weight = qforge::llama::block_bits_per_weight(r.weights);
    r.size_mb = double(qforge::llama::block_bytes(r.weights) + other) / 1e6;
}

/// "Q4_1" when most of the decoder's weights are stored that way, "FP32" for float sources.
std::string stored_format(const qforge::llama::Weights& w) {
    std::map<std::string, std::size_t> count;
    for (const auto& L : w.layers)
        for (const auto& b : qforge::llama::block_linears) count[qforge::llama::layout_of(L.*b.member).format] += 1;
    std::string best = "f32";
    for (const auto& [f, n] : count)
        if (n > count[best]) best = f;
    if (best == "f32") return "FP32";
    for (auto& ch : best) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    return best;
}
/// `--kernels fp32` runs the output head as its FP32 values too: a GGUF's Q8_0 head would
/// otherwise run on the integer kernels, 8-bit activations and all, and be a third of the
/// evaluation's time (its 49152 rows are re-read for every token).
void head_as_fp32(qforge::llama::Weights& w, const qforge::Backend& backend) {
    if (!std::holds_alternative<qforge::Fp32Matrix>(w.output.weights())) w.output = qforge::llama::dequantized_linear(w.output, backend);
}

int run(const EvalCliOptions& opt) {
    auto schemes = opt.schemes;
    if (schemes.empty() && opt.scheme_maps.empty()) schemes = {"rtn:w8g128s", "rtn:w4g128a", "rtn:w3g32a", "rtn:w2g32a"};
    std::vector<qforge::RuntimeScheme> parsed;
    for (const auto& s : schemes) parsed.push_back(parse_scheme_option(s));  // fail before any work
    {
        std::vector<std::string> shown;
        for (const auto& s : parsed) shown.push_back(qforge::to_string(s));
        refuse_repeats(parsed, "--scheme", [](const auto& a, const auto& b) { return a == b; }, shown);
    }
    refuse_repeats(opt.scheme_maps, "--scheme-map", same_file, opt.scheme_maps);
    refuse_repeats(opt.compare, "--compare", same_file, opt.compare);
    std::vector<std::pair<std::string, qforge::io::SchemeMap>> maps;
    for (const auto& path : opt.scheme_maps) {
        maps.emplace_back(path, qforge::io::read_scheme_map(path));
        if (qforge::method_of(maps.back().second.scheme).needs_targets)
            throw CLI::ValidationError("--scheme-map", path + ": " + qforge::to_string(maps.back().second.scheme) + " needs neuron targets (use --scheme)");
    }
    bool any_twq = false;
    for (const auto& s : parsed) any_twq |= qforge::method_of(s).needs_targets;
    if (any_twq && (opt.neurons.empty() || opt.twq_targets.empty()))
        throw CLI::ValidationError("--scheme twq:...", "needs --neurons FILE and --twq-target LANG");
    auto model = Model::open(opt.model);
    const std::string text_path = opt.text.empty() ? data_dir() + "/eval/wikitext-2-raw/wiki.test.raw" : opt.text;
    const int threads = opt.threads;
    const qforge::Backend backend = qforge::Backend::best_cpu(threads);
    const std::string kernels = opt.kernels;
    const bool packed = kernels == "packed";
    const auto tokens = tokens_to_score(model, text_path, std::size_t(opt.max_tokens));
    const bool tied = model.source().tied_output();
    const auto& stored = model.weights();
    for (const auto& [path, map] : maps) {  // the maps' tensors and methods, before any work
        qforge::llama::ModelQuantizeOptions mo;
        mo.tensor_schemes = map.tensors;
        try {
            qforge::llama::check_tensor_schemes(stored.config, map.scheme, mo);
        } catch (const qforge::Error& e) {
            throw qforge::FileError(path, e.what());
        }
    }
    const std::string format = stored_format(stored);

    std::vector<int> calib;  // tokenized when a scheme first needs it
    struct TwqPair {
        std::string target, awq_label;  // awq_label: the plain AWQ row of the same scheme, if evaluated
        std::size_t lape, control;      // row indices
    };
    std::vector<TwqPair> twq_pairs;
    std::vector<Row> rows;
    std::size_t total_rows = maps.size() + opt.compare.size() + (format != "FP32" && packed ? 1 : 0);  // every row this run makes
    for (const auto& scheme : parsed) total_rows += qforge::method_of(scheme).needs_targets ? 2 * opt.twq_targets.size() : 1;
    Row reference{format == "FP32" ? "FP32" : format + "-ref", "reference",
                  qforge::llama::dequantized_weights(stored, backend)};
    measure(reference, tied);  // the head as stored (the reference is defined by its values)
    if (format != "FP32" && packed) {
        rows.push_back({format + " (as stored)", "as stored", stored});
        measure(rows.back(), tied);
    }
    const std::string flores_dir = opt.flores.empty() ? data_dir() + "/eval/flores200/devtest" : opt.flores;
    struct Lines {
        std::vector<int> tokens;
        std::vector<std::size_t> starts;  // where each line's own tokens begin (after its BOS, if the tokenizer adds one)
    };
    const auto flores_lines = [&](const std::string& lang, int first, int last) {
        Lines out;
        const auto& tok = model.tokenizer();
        for (const auto& line : file_lines(flores_dir + "/" + lang + ".devtest", first, last)) {
            const auto ids = tok.encode(line);
            const std::size_t bos = tok.add_bos && tok.bos >= 0 ? 1 : 0;
            out.starts.push_back(out.tokens.size() + bos);
            out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
        }
        return out;
    };
    const auto flores_tokens = [&](const std::string& lang, int first, int last) { return flores_lines(lang, first, last).tokens; };

    // Rows are evaluated in groups, each against the reference in lockstep, and their weights
    // released: memory holds one group, not every row (35 SmolLM2 rows in FP32 outgrew 24 GB).
    // A row's figures do not depend on the rows beside it, so the grouping changes only the time
    // (the reference runs once per group).
    qforge::llama::EvalOptions o;
    o.context = context_or_default(opt.context, stored.config.seq_len);
    o.backend = backend;
    std::vector<qforge::NextTokenStats> stats;  // per row, as its group is evaluated
    std::size_t evaluated = 0, groups = 0;             // rows [0, evaluated) are done
    double seconds = 0;                                // evaluation time, every group
    // per-language FLORES perplexity, normalised by the reference's
    std::vector<std::string> languages;
    int flores_first = 0, flores_last = 0;
    if (!opt.flores.empty()) {
        languages = flores_languages(flores_dir);
        const auto [first, last_all] = parse_lines(opt.flores_lines);
        flores_first = first, flores_last = std::min(last_all, first + opt.flores_max_lines - 1);
    }
    std::vector<std::vector<double>> normalised;  // [row][language]
    std::vector<double> ref_language_ppl;
    // Per-token ratios favour languages split into many easy tokens; the same content per
    // sentence makes the added NLL per sentence comparable across languages.
    std::vector<std::vector<double>> added_nll;  // [row][language], nats per sentence
    std::vector<long> language_tokens;           // scored tokens per language
    std::vector<std::size_t> language_sentences;
    std::vector<std::vector<std::vector<double>>> sentence_nlls;  // [row][language]: each sentence's mean NLL
    const std::size_t bos = model.tokenizer().add_bos && model.tokenizer().bos >= 0 ? 1 : 0;
    const auto sentence_nll = [bos](const std::vector<double>& token_nll, const Lines& lines) {
        std::vector<double> out;
        for (std::size_t i = 0; i < lines.starts.size(); ++i) {
            const std::size_t end = i + 1 < lines.starts.size() ? lines.starts[i + 1] - bos : lines.tokens.size();
            double sum = 0;
            int n = 0;
            for (std::size_t t = lines.starts[i]; t < end; ++t)  // the line's own tokens, not its BOS
                if (!std::isnan(token_nll[t])) sum += token_nll[t], ++n;
            out.push_back(n ? sum / n : std::nan(""));
        }
        return out;
    };
    std::uint64_t group_budget = 0;  // bytes of rows held before their group is evaluated (0: not yet known)
    const auto evaluate_group = [&] {
        if (evaluated == rows.size()) return;
        ++groups;
        // the reference's head in FP32 for the evaluation only: rows still to be quantized copy it as stored
        std::optional<qforge::llama::Linear> stored_head;
        if (!packed && !std::holds_alternative<qforge::Fp32Matrix>(reference.weights.output.weights())) {
            stored_head = reference.weights.output;
            head_as_fp32(reference.weights, backend);
        }
        std::vector<const qforge::llama::Weights*> models;
        for (std::size_t i = evaluated; i < rows.size(); ++i) models.push_back(&rows[i].weights);
        Progress bar("evaluate " + std::to_string(models.size() + 1) + " models" + (groups > 1 || rows.size() < total_rows ? " (group " + std::to_string(groups) + ")" : ""));
        auto eo = o;
        eo.progress = [&](long done, long total) { bar.update(double(done), double(total)); };
        const auto start = std::chrono::steady_clock::now();
        const auto group_stats = qforge::llama::evaluate_all(models, &reference.weights, tokens, eo);
        bar.finish();
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        stats.insert(stats.end(), group_stats.begin(), group_stats.end());
        normalised.resize(rows.size()), added_nll.resize(rows.size()), sentence_nlls.resize(rows.size());
        if (!languages.empty()) {
            Progress fbar("FLORES per language");
            const bool first_group = ref_language_ppl.empty();
            for (std::size_t k = 0; k < languages.size(); ++k) {
                const auto lines = flores_lines(languages[k], flores_first, flores_last);
                auto fo = o;
                fo.progress = nullptr;
                std::vector<std::vector<double>> token_nll;
                fo.token_nll = &token_nll;
                const auto ls = qforge::llama::evaluate_all(models, &reference.weights, lines.tokens, fo);
                if (first_group) {
                    ref_language_ppl.push_back(ls.front().reference_perplexity());
                    language_tokens.push_back(ls.front().tokens);
                    language_sentences.push_back(lines.starts.size());
                }
                for (std::size_t m = 0; m < models.size(); ++m) {
                    const std::size_t row = evaluated + m;
                    normalised[row].push_back(ls[m].perplexity() / ls[m].reference_perplexity());
                    added_nll[row].push_back(std::log(normalised[row].back()) * double(ls[m].tokens) / double(lines.starts.size()));
                    sentence_nlls[row].push_back(sentence_nll(token_nll[m], lines));
                }
                fbar.update(double(k + 1), double(languages.size()), languages[k]);
            }
            fbar.finish();
        }
        if (stored_head) reference.weights.output = std::move(*stored_head);
        for (std::size_t i = evaluated; i < rows.size(); ++i) rows[i].weights = qforge::llama::Weights{};  // evaluated: its figures are kept
        evaluated = rows.size();
    };
    // after each new row: its group is evaluated once the rows held reach the budget. A quarter of
    // the memory available at the first row: the rest is for the reference, the sessions and the
    // quantizers' own work (a 35-row SmolLM2 eval with half peaked at 21.9 of 24 GB)
    const auto maybe_evaluate = [&] {
        if (opt.models_in_memory > 0) {  // asked for: a count of rows, whatever their size
            if (rows.size() - evaluated >= std::size_t(opt.models_in_memory)) evaluate_group();
            return;
        }
        if (group_budget == 0) {
            const std::uint64_t row = std::max<std::uint64_t>(1, held_bytes(rows.back().weights));
            const std::uint64_t free = available_memory();
            const std::uint64_t per_group = free > 0 ? std::max<std::uint64_t>(1, free / 4 / row) : std::uint64_t(total_rows);
            group_budget = per_group * row;
        }
        std::uint64_t held = 0;
        for (std::size_t i = evaluated; i < rows.size(); ++i) held += std::max<std::uint64_t>(1, held_bytes(rows[i].weights));
        if (held >= group_budget) evaluate_group();
    };
    // a quantized model's row: timed, measured (bits per weight as stored), dequantized for the
    // FP32 kernels unless --kernels packed
    const auto add_row = [&](Row r, Progress& bar, std::chrono::steady_clock::time_point start) {
        bar.finish();
        r.quantize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        measure(r, tied);
        if (!packed) {
            r.weights = qforge::llama::dequantized_weights(r.weights, backend);
            head_as_fp32(r.weights, backend);
        }
        rows.push_back(std::move(r));
        maybe_evaluate();
    };
    for (const auto& scheme : parsed) {
        if (qforge::method_of(scheme).needs_targets) {  // one row per target language with its LAPE set, one with the random control
            const auto sets = qforge::llama::read_neuron_sets(opt.neurons, stored.config.n_layers, stored.config.hidden_dim);
            for (const auto& target : opt.twq_targets) {
                const auto find = [&](const std::string& name) -> const qforge::llama::NeuronSet& {
                    const auto it = sets.find(name);
                    if (it == sets.end()) throw qforge::InvalidArgument(opt.neurons + ": no neuron set '" + name + "'");
                    return it->second;
                };
                const auto& lape = find(target);
                const auto& control = find("random:" + target);
                auto twq_calib = flores_tokens(target, 1, 400), heldout = flores_tokens(target, 401, 506);
                const std::size_t cap = std::size_t(opt.calib.calib_tokens);  // same budget as the other methods
                if (twq_calib.size() > cap) twq_calib.resize(cap);
                if (heldout.size() > cap / 2) heldout.resize(cap / 2);
                qforge::llama::ModelQuantizeOptions ao;
                ao.calibration.sequence_length = std::min(512, stored.config.seq_len);
                ao.calibration.backend = backend;
                ao.settings.awq_search_rows = int(opt.calib.awq_search_rows);
                ao.settings.awq_coarse_step = int(opt.calib.awq_coarse_step);
                ao.targets = &lape;
                float best_lambda = 1.0f;
                double best_nll = INFINITY;
                qforge::llama::Weights best;
                const auto start = std::chrono::steady_clock::now();
                for (const float lambda : {1.0f, 2.0f, 4.0f, 8.0f}) {
                    Progress bar("twq " + target + " lambda " + std::to_string(int(lambda)));
                    ao.lambda = lambda;
                    ao.progress = [&](int b, int n, const std::string& what) { bar.update(double(b), double(n), what); };
                    auto q = qforge::llama::awq_quantize_model(reference.weights, twq_calib, scheme, ao);
                    bar.finish();
                    qforge::llama::EvalOptions eo;
                    eo.context = std::min(512, stored.config.seq_len);
                    eo.backend = backend;
                    const double nll = qforge::llama::evaluate(q, nullptr, heldout, eo).mean_nll();
                    std::fprintf(stderr, "twq %s: lambda %g -> held-out NLL %.5f\n", target.c_str(), double(lambda), nll);
                    if (nll < best_nll) best_nll = nll, best_lambda = lambda, best = std::move(q);
                }
                const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                char label[128];
                std::snprintf(label, sizeof label, "%s@%s l=%g%s", qforge::to_string(scheme).c_str(), target.c_str(), double(best_lambda),
                              best_lambda == 1.0f ? " (=AWQ)" : "");
                Row r{label, "twq", std::move(best)};
                r.quantize_seconds = seconds;
                measure(r, tied);
                ao.targets = &control;
                ao.lambda = best_lambda;
                Progress bar("twq control " + target);
                ao.progress = [&](int b, int n, const std::string& what) { bar.update(double(b), double(n), what); };
                const auto cstart = std::chrono::steady_clock::now();
                Row c{qforge::to_string(scheme) + "@" + target + "/random", "twq random control", qforge::llama::awq_quantize_model(reference.weights, twq_calib, scheme, ao)};
                bar.finish();
                c.quantize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - cstart).count();
                measure(c, tied);
                auto awq = scheme;
                awq.method = std::string(qforge::method_of(scheme).untargeted);
                twq_pairs.push_back({target, qforge::to_string(awq), rows.size(), rows.size() + 1});
                for (Row* x : {&r, &c}) {
                    if (!packed) {
                        x->weights = qforge::llama::dequantized_weights(x->weights, backend);
                        head_as_fp32(x->weights, backend);
                    }
                    rows.push_back(std::move(*x));
                    maybe_evaluate();
                }
            }
            continue;
        }
        Progress bar("quantize " + qforge::to_string(scheme));
        const auto start = std::chrono::steady_clock::now();
        if (qforge::needs_calibration(scheme) && calib.empty()) calib = calibration_tokens(opt.calib, model, text_path, tokens.size());
        add_row({qforge::to_string(scheme), family_of(scheme), quantize_model(reference.weights, scheme, calib, opt.calib, backend, bar, model.path())}, bar, start);
    }
    // per-tensor scheme maps (written by hand, or by a bit allocation): one row each
    for (const auto& [path, map] : maps) {
        const std::string label = "map:" + std::filesystem::path(path).filename().string();
        // an allocation's map records the calibration tokens its model was measured with: another
        // count builds another model from the same map (said, not refused: both are legitimate)
        for (const auto& [key, value] : map.extra)
            if (key == "allocation" && qforge::llama::run_pipeline(map.scheme, map.tensors) != qforge::Pipeline::independent)
                if (const auto* n = value.find("calibration_tokens"); n && n->is_number() && long(n->as_double()) != opt.calib.calib_tokens)
                    std::fprintf(stderr, "note: %s was allocated with %ld calibration tokens; this run quantizes it with %ld "
                                         "(--calib-tokens %ld builds the model the allocation measured)\n",
                                 path.c_str(), long(n->as_double()), long(opt.calib.calib_tokens), long(n->as_double()));
        Progress bar("quantize " + label);
        const auto start = std::chrono::steady_clock::now();
        if (qforge::llama::run_pipeline(map.scheme, map.tensors) != qforge::Pipeline::independent && calib.empty()) calib = calibration_tokens(opt.calib, model, text_path, tokens.size());
        auto mo = model_quantize_options(reference.weights.config, map.scheme, opt.calib, backend, bar);
        mo.tensor_schemes = map.tensors;
        qforge::llama::Weights q;
        try {  // the map's errors (a tensor the model lacks, another method, a grid a tensor cannot take) name the file
            q = qforge::llama::quantize_model(reference.weights, calib, map.scheme, mo, model.path());
        } catch (const qforge::Error& e) {
            throw qforge::FileError(path, e.what());
        }
        add_row({label, "map " + map.scheme.method, std::move(q), 0, 0, 0, path}, bar, start);
    }
    // other files of the same model (llama.cpp's quantizations of it, qforge's own files): their
    // block linears as stored and their block norms, the embeddings, final norm and head the
    // reference's, as in every scheme's row
    for (const auto& path : opt.compare) {
        ModelOptions mo;
        mo.model = path;
        // only its block linears are used: its own tokenizer when it has one, else the reference's
        auto other = [&] {
            try {
                return Model::open(mo);
            } catch (const qforge::Error&) {
                mo.tokenizer = model.tokenizer_path();
                return Model::open(mo);
            }
        }();
        const auto& w = other.weights();
        if (w.config.n_layers != stored.config.n_layers)
            throw qforge::FileError(path, "has " + std::to_string(w.config.n_layers) + " blocks; the reference " + model.path() + " has " +
                                              std::to_string(stored.config.n_layers) + " (--compare takes files of the same model)");
        Row r{std::filesystem::path(path).filename().string() + " (" + stored_format(w) + ")", "compared files", stored, 0, 0, 0, path};
        for (int l = 0; l < stored.config.n_layers; ++l)
            for (const auto& b : qforge::llama::block_linears) {
                const auto& mine = stored.layers[std::size_t(l)].*b.member;
                const auto& theirs = w.layers[std::size_t(l)].*b.member;
                if (mine.rows() != theirs.rows() || mine.cols() != theirs.cols())
                    throw qforge::FileError(path, "tensor " + qforge::llama::block_linear_name(l, b.member) + " is " + std::to_string(theirs.rows()) + "x" +
                                                      std::to_string(theirs.cols()) + "; the reference's is " + std::to_string(mine.rows()) + "x" +
                                                      std::to_string(mine.cols()) + " (--compare takes files of the same model)");
                r.weights.layers[std::size_t(l)].*b.member = theirs;
            }
        // and its block norms: AWQ folds its input scales into them (a qforge container of an
        // awq: model), and llama.cpp's files store the reference's own
        for (int l = 0; l < stored.config.n_layers; ++l) {
            auto& mine = r.weights.layers[std::size_t(l)];
            const auto& theirs = w.layers[std::size_t(l)];
            if (theirs.attention_norm.size() != mine.attention_norm.size() || theirs.ffn_norm.size() != mine.ffn_norm.size())
                throw qforge::FileError(path, "block " + std::to_string(l) + "'s norms have another width than the reference's (--compare takes files of the same model)");
            mine.attention_norm = theirs.attention_norm;
            mine.ffn_norm = theirs.ffn_norm;
        }
        Progress bar("load " + r.label);
        add_row(std::move(r), bar, std::chrono::steady_clock::now());
        rows.back().quantize_seconds = std::nan("");  // made elsewhere: no time of ours
        if (other.kind() == "gguf") {  // bits as the file stores them: an F16 tensor is FP32 once read
            const auto file = qforge::io::GgufFile::open(path);
            double bits = 0, params = 0;
            for (int l = 0; l < stored.config.n_layers; ++l)
                for (const auto& b : qforge::llama::block_linears) {
                    const auto& t = file.tensor(qforge::llama::block_linear_name(l, b.member));
                    bits += 8.0 * double(t.bytes), params += double(t.elements());
                }
            rows.back().bits_per_weight = bits / params;
        }
    }
    evaluate_group();  // the rows since the last group
    // TWQ against its random control (and against plain AWQ of the same scheme, when evaluated)
    // on the target's evaluation lines: per-sentence mean NLL differences from the same
    // evaluation as the table, 95% bootstrap interval over sentences (2000 resamples, fixed seed)
    struct Interval {
        std::string target, against;
        double mean = 0, lo = 0, hi = 0;
        std::size_t sentences = 0;
    };
    std::vector<Interval> intervals;
    const auto bootstrap = [](const std::vector<double>& a, const std::vector<double>& b) {
        std::vector<double> diff;
        for (std::size_t i = 0; i < a.size(); ++i)
            if (!std::isnan(a[i]) && !std::isnan(b[i])) diff.push_back(a[i] - b[i]);
        Interval iv;
        iv.sentences = diff.size();
        if (diff.empty()) return iv;
        std::mt19937_64 rng(12345);
        std::uniform_int_distribution<std::size_t> pick(0, diff.size() - 1);
        std::vector<double> means;
        for (int r = 0; r < 2000; ++r) {
            double sum = 0;
            for (std::size_t i = 0; i < diff.size(); ++i) sum += diff[pick(rng)];
            means.push_back(sum / double(diff.size()));
        }
        std::sort(means.begin(), means.end());
        for (const double d : diff) iv.mean += d / double(diff.size());
        iv.lo = means[50], iv.hi = means[1949];
        return iv;
    };
    for (std::size_t k = 0; k < languages.size(); ++k)
        for (const auto& pair : twq_pairs) {
            if (pair.target != languages[k]) continue;
            const auto& twq = sentence_nlls[pair.lape][k];
            auto iv = bootstrap(twq, sentence_nlls[pair.control][k]);
            iv.target = pair.target, iv.against = "random control";
            intervals.push_back(iv);
            for (std::size_t m = 0; m < rows.size(); ++m)
                if (rows[m].label == pair.awq_label) {
                    iv = bootstrap(twq, sentence_nlls[m][k]);
                    iv.target = pair.target, iv.against = pair.awq_label;
                    intervals.push_back(iv);
                }
        }
    const auto mean_of = [](const std::vector<double>& v) {
        double s = 0;
        for (const double x : v) s += x;
        return v.empty() ? 0.0 : s / double(v.size());
    };
    const double ref_ppl = stats.front().reference_perplexity();
    const long scored = stats.front().tokens;
    const double rate = double(scored) * double(rows.size() + groups) / seconds;  // model passes: each group's rows and its reference
    if (!opt.svg.empty()) {
        Plot p;
        p.title = "perplexity against bits per weight: " + std::filesystem::path(model.path()).filename().string() + ", " + std::to_string(scored) + " tokens";
        p.x_label = "bits per weight (stored bytes of the decoder's linear layers)";
        p.y_label = "perplexity";
        p.log_y = true;
        p.reference_y = ref_ppl;
        p.reference_label = reference.label + " " + std::to_string(ref_ppl).substr(0, 6);
        for (std::size_t i = 0; i < rows.size(); ++i) {
            auto it = std::find_if(p.series.begin(), p.series.end(), [&](const PlotSeries& x) { return x.label == rows[i].family; });
            if (it == p.series.end()) it = p.series.insert(p.series.end(), PlotSeries{rows[i].family, {}});
            it->points.emplace_back(rows[i].bits_per_weight, stats[i].perplexity());
        }
        for (auto& x : p.series) std::sort(x.points.begin(), x.points.end());
        write_plot(opt.svg, p);
    }

    if (opt.json) {
        using qforge::io::Json;
        JsonObject j;
        j.add("model", model.path()).add("text", text_path).add("tokens", std::int64_t(scored)).add("context", o.context);
        j.add("add_bos", model.tokenizer().add_bos).add("kernels", kernels);
        j.add("reference", JsonObject()
                               .add("label", reference.label)
                               .add("ppl", ref_ppl)
                               .add("bits_per_weight", reference.bits_per_weight)
                               .add("size_mb", reference.size_mb));
        Json::Array out_rows;
        for (std::size_t i = 0; i < rows.size(); ++i)
            out_rows.push_back(JsonObject()
                                   .add("label", rows[i].label)
                                   .add("ppl", stats[i].perplexity())
                                   .add("dppl_percent", 100.0 * (stats[i].perplexity() / ref_ppl - 1.0))
                                   .add("kld", stats[i].mean_kl())
                                   .add("top1", stats[i].top1())
                                   .add("bits_per_weight", rows[i].bits_per_weight)
                                   .add("size_mb", rows[i].size_mb)
                                   .add("quantize_seconds", rows[i].quantize_seconds)
                                   .add("path", rows[i].path.empty() ? Json() : Json(rows[i].path)));
        j.add("rows", std::move(out_rows)).add("eval_seconds", seconds).add("model_tokens_per_second", rate);
        if (!languages.empty()) {
            const auto numbers = [](const auto& v) {
                Json::Array a;
                for (const auto x : v) {
                    if constexpr (std::is_floating_point_v<std::decay_t<decltype(x)>>) a.emplace_back(double(x));
                    else a.emplace_back(std::int64_t(x));
                }
                return a;
            };
            const auto by_scheme = [&](const std::vector<std::vector<double>>& values) {  // {"label":[per language], ...}
                JsonObject b;
                for (std::size_t m = 0; m < rows.size(); ++m) b.add(rows[m].label, numbers(values[m]));
                return b.json();
            };
            Json::Array names;
            for (const auto& l : languages) names.emplace_back(l);
            j.add("flores", JsonObject()
                                .add("languages", std::move(names))
                                .add("reference_ppl", numbers(ref_language_ppl))
                                .add("normalised_ppl", by_scheme(normalised))
                                .add("scored_tokens", numbers(language_tokens))
                                .add("sentences", numbers(language_sentences))
                                .add("added_nll_per_sentence", by_scheme(added_nll)));
        }
        if (!intervals.empty()) {
            Json::Array ivs;
            for (const auto& iv : intervals)
                ivs.push_back(JsonObject()
                                  .add("target", iv.target)
                                  .add("against", iv.against)
                                  .add("sentences", std::int64_t(iv.sentences))
                                  .add("mean_nll_difference", iv.mean)
                                  .add("ci95", Json::Array{Json(iv.lo), Json(iv.hi)}));
            j.add("twq_intervals", std::move(ivs));
        }
        print_json(j);
        return 0;
    }
    std::printf("model %s | text %s | %ld tokens scored, context %d | %s\n\n", model.path().c_str(), text_path.c_str(), scored,
                o.context,
                packed ? "packed integer kernels, 8-bit activations" : "weight-only (dequantized weights, FP32 activations)");
    std::printf("| %-28s | %9s | %8s | %9s | %7s | %6s | %9s | %8s |\n", "scheme", "PPL", "dPPL %", "KLD", "top-1", "bpw", "size MB", "quant s");
    std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(30, '-').c_str(), std::string(11, '-').c_str(), std::string(10, '-').c_str(),
                std::string(11, '-').c_str(), std::string(9, '-').c_str(), std::string(8, '-').c_str(), std::string(11, '-').c_str(),
                std::string(10, '-').c_str());
    std::printf("| %-28s | %9.4f | %8s | %9s | %7s | %6.2f | %9.2f | %8s |\n", reference.label.c_str(), ref_ppl, "-", "-", "-",
                reference.bits_per_weight, reference.size_mb, "-");
    for (std::size_t i = 0; i < rows.size(); ++i) {
        char qs[32] = "-";  // a compared file was made elsewhere
        if (!std::isnan(rows[i].quantize_seconds)) std::snprintf(qs, sizeof qs, "%.2f", rows[i].quantize_seconds);
        std::printf("| %-28s | %9.4f | %+8.2f | %9.5f | %6.2f%% | %6.2f | %9.2f | %8s |\n", rows[i].label.c_str(), stats[i].perplexity(),
                    100.0 * (stats[i].perplexity() / ref_ppl - 1.0), stats[i].mean_kl(), 100.0 * stats[i].top1(), rows[i].bits_per_weight,
                    rows[i].size_mb, qs);
    }
    if (!languages.empty()) {
        std::printf("\nFLORES per language: PPL / reference PPL (reference PPL in the first row)\n\n| %-28s |", "scheme");
        for (const auto& l : languages) std::printf(" %8.8s |", l.c_str());
        std::printf("     mean |\n| %-28s |", "reference PPL");
        for (const double p : ref_language_ppl) std::printf(" %8.2f |", p);
        std::printf(" %8s |\n", "");
        for (std::size_t m = 0; m < rows.size(); ++m) {
            std::printf("| %-28.28s |", rows[m].label.c_str());
            for (const double v : normalised[m]) std::printf(" %8.3f |", v);
            std::printf(" %8.3f |\n", mean_of(normalised[m]));
        }
        std::printf("\nFLORES per language: NLL added per sentence, nats (scored tokens per sentence in the first row)\n\n| %-28s |", "scheme");
        for (const auto& l : languages) std::printf(" %8.8s |", l.c_str());
        std::printf("     mean |\n| %-28s |", "tokens per sentence");
        for (std::size_t k = 0; k < languages.size(); ++k) std::printf(" %8.1f |", double(language_tokens[k]) / double(language_sentences[k]));
        std::printf(" %8s |\n", "");
        for (std::size_t m = 0; m < rows.size(); ++m) {
            std::printf("| %-28.28s |", rows[m].label.c_str());
            for (const double v : added_nll[m]) std::printf(" %8.2f |", v);
            std::printf(" %8.2f |\n", mean_of(added_nll[m]));
        }
    }
    if (!intervals.empty()) std::printf("\nTWQ on its target's held-out sentences: mean per-sentence NLL difference (TWQ minus the other), 95%% bootstrap CI\n\n");
    for (const auto& iv : intervals)
        std::printf("  %s vs %s (%zu sentences): %+.4f [%+.4f, %+.4f]%s\n", iv.target.c_str(), iv.against.c_str(), iv.sentences, iv.mean, iv.lo,
                    iv.hi, iv.hi < 0 ? " TWQ better" : iv.lo > 0 ? " TWQ worse" : " no clear difference");
    std::printf("\nevaluation: %.1f s for %zu models in lockstep with the reference, in %zu group%s (%.0f model-tokens/s, %s, %d threads)\n", seconds,
                rows.size(), groups, groups == 1 ? "" : "s", rate, backend.name().c_str(), threads ? threads : qforge::default_threads());
    return 0;
}

}  // namespace

void add_eval(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("eval", "one table of schemes x (PPL, dPPL, KLD, top-1, bits/weight, size, time) on a text");
    sub->footer(
        "Quantizes the model's decoder linear layers with each scheme and prints one table: perplexity, its change against the\n"
        "reference in percent, mean KL divergence of the next-token distributions from the reference's, top-1 agreement, bits\n"
        "per weight of the decoder's linear layers (docs/conventions.md), model size and quantization time. The reference is\n"
        "the model with its decoder layers in FP32 (a GGUF model's packed layers dequantized: \"Q4_1-ref\" for SmolLM2).\n"
        "Embeddings and the output head stay as stored in every row.\n\n"
        "Kernels: fp32 (default) runs each quantized model with its weights dequantized and FP32 activations (weight-only\n"
        "quantization, as the GPTQ/AWQ papers measure it); packed runs the packed weights through qforge's integer kernels,\n"
        "whose 8-bit activations add their own error, and adds a row for the model as stored.\n\n"
        "TWQ (--scheme twq:...): per --twq-target, calibration on its FLORES lines 1-400 (at most --calib-tokens), lambda in\n"
        "{1,2,4,8} chosen by NLL on lines 401-506; each target adds a row with its LAPE set and one with its random control at\n"
        "the same lambda; with --flores, TWQ is compared sentence by sentence with its control and with the awq: row of the same\n"
        "scheme (mean NLL difference, 95% bootstrap CI). JSON: values that are not defined (NaN/Inf) are written as null.");
    auto o = std::make_shared<EvalCliOptions>();
    add_model_options(*sub, o->model);
    sub->add_option("--text", o->text, "evaluation text (default: $QFORGE_DATA/eval/wikitext-2-raw/wiki.test.raw)");
    sub->add_option("--max-tokens", o->max_tokens, "the first N tokens of the text")->check(CLI::Range(2L, long(1) << 30))->capture_default_str();
    sub->add_option("--context", o->context, "window length (default: 512, or the model's context if smaller; at most the model's)")
        ->check(CLI::Range(2, 1 << 20));
    sub->add_option("--scheme", o->schemes,
                    "a scheme to evaluate (repeatable; default: rtn:w8g128s rtn:w4g128a rtn:w3g32a rtn:w2g32a): rtn:, gptq:, awq:, "
                    "awq+gptq:, twq: (grammar in docs/conventions.md)");
    add_calib_options(*sub, o->calib);
    sub->add_option("--kernels", o->kernels, "fp32 (weight-only) or packed (integer kernels, 8-bit activations)")
        ->check(CLI::IsMember({"fp32", "packed"}))
        ->capture_default_str();
    sub->add_option("--flores", o->flores,
                    "also evaluate every FLORES language of DIR (*.devtest): each scheme's PPL normalised by the reference's, and the "
                    "NLL it adds per sentence");
    sub->add_option("--flores-lines", o->flores_lines, "lines A-B of each FLORES file (1-based)")->check(line_range())->capture_default_str();
    sub->add_option("--flores-max-lines", o->flores_max_lines, "at most this many of those lines")->check(CLI::Range(1, 1 << 20))->capture_default_str();
    sub->add_option("--svg", o->svg, "also plot perplexity against bits per weight there, one line per method and kind of grid (checked before any work)")
        ->check(writable_output());
    sub->add_option("--scheme-map", o->scheme_maps,
                    "a per-tensor scheme map to evaluate (JSON: the run's scheme and each listed tensor's own; docs/conventions.md; "
                    "repeatable, one row each)")
        ->check(CLI::ExistingFile);
    sub->add_option("--compare", o->compare,
                    "another file of the same model (e.g. llama.cpp's quantization of it; GGUF, safetensors, llama2.c): one row with "
                    "its block linears and block norms as stored (AWQ folds its scales into the norms) and the reference's embeddings, final norm "
                    "and head (repeatable)")
        ->check(CLI::ExistingPath);
    sub->add_option("--neurons", o->neurons, "neuron sets (qforge neurons) for twq:... schemes");
    sub->add_option("--twq-target", o->twq_targets, "target language of twq:... schemes (repeatable)");
    sub->add_option("--models-in-memory", o->models_in_memory,
                    "evaluate the rows in groups of at most N models held in memory, each group beside the reference and then released "
                    "(0: as many as a quarter of the available memory holds; the figures do not depend on it, the time a little: the reference "
                    "runs once per group)")
        ->check(CLI::Range(0L, long(1) << 20))
        ->capture_default_str();
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout (progress stays on stderr)");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
