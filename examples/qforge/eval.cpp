// `qforge eval`: the quality table. Every scheme's model runs in lockstep with the reference
// over the same windows of the text, so the reference runs once and no logits are stored.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <qforge/models/llama/awq.hpp>
#include <qforge/models/llama/evaluate.hpp>
#include <qforge/models/llama/neurons.hpp>
#include <qforge/models/llama/source.hpp>

#include "args.hpp"
#include "model.hpp"

namespace {
const char* help = R"(usage: qforge eval [options]

Quantizes the model's decoder linear layers with each scheme and prints one table: perplexity,
its change against the reference in percent, mean KL divergence of the next-token distributions
from the reference's, top-1 agreement, bits per weight of the decoder's linear layers, model
size and quantization time. The reference is the model with its decoder layers in FP32 (a GGUF
model's packed layers dequantized: "Q4_1-ref" for SmolLM2). Embeddings and the output head stay
as stored in every row.

Kernels: "fp32" (default) runs each quantized model with its weights dequantized and FP32
activations, i.e. weight-only quantization as the GPTQ/AWQ papers measure it; "packed" runs the
packed weights through qforge's integer kernels, whose 8-bit activations add their own error
(about 0.004 KLD on SmolLM2), and adds a row for the model as stored.

  --model PATH      model (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH  tokenizer (default: the model's own)
  --text PATH       evaluation text (default: $QFORGE_DATA/eval/wikitext-2-raw/wiki.test.raw)
  --max-tokens N    the first N tokens of the text (default 16384)
  --context N       window length (default 512, at most the model's context)
  --scheme S        a scheme to evaluate (repeatable; default: rtn:w8g128s rtn:w4g128a rtn:w3g32a rtn:w2g32a);
                    rtn:... or gptq:... (options ,act ,static ,damp=F ,clip; see docs/conventions.md)
  --calib PATH      calibration text for GPTQ (default: the evaluation text, the slice after the
                    evaluated tokens, so the two never overlap)
  --calib-tokens N  calibration tokens (default 8192, in sequences of 512)
  --kernels K       fp32 (weight-only, default) or packed (integer kernels, 8-bit activations)
  --flores DIR      also evaluate every FLORES language (lines --flores-lines of DIR/*.devtest,
                    default 507-1012 capped by --flores-max-lines, default 100) and print each
                    scheme's PPL normalised by the reference's, per language and on average,
                    and the NLL it adds per sentence (nats): the sentences are translations of
                    each other, so this compares languages whatever their tokens per sentence
  --neurons FILE    neuron sets (qforge neurons) for twq:... schemes
  --twq-target L    target language of twq:... schemes (repeatable): calibration on its FLORES
                    lines 1-400 (at most --calib-tokens), λ in {1,2,4,8} chosen by NLL on lines
                    401-506; each target adds a row with its LAPE set and one with its random
                    control at the same λ; with --flores, TWQ is compared sentence by sentence on
                    the target's evaluation lines with its control and with the awq: row of the
                    same scheme if there is one (mean NLL difference, 95% bootstrap CI)
  --threads N       threads (default: all)
  --json            one JSON object on stdout (progress stays on stderr)
  --help            this text
)";

struct Row {
    std::string label;
    qforge::llama::Weights weights;
    double bits_per_weight = 0, size_mb = 0, quantize_seconds = 0;
};

std::size_t block_params(const qforge::llama::Weights& w) {
    std::size_t n = 0;
    for (const auto& L : w.layers)
        for (const auto& b : qforge::llama::block_linears) n += std::size_t((L.*b.member).rows()) * std::size_t((L.*b.member).cols());
    return n;
}

void measure(Row& r, bool tied) {
    std::size_t block = 0, other = r.weights.output.bytes() + r.weights.norm.size() * 4;
    for (const auto& L : r.weights.layers) {
        for (const auto& b : qforge::llama::block_linears) block += (L.*b.member).bytes();
        other += (L.attention_norm.size() + L.ffn_norm.size()) * 4;
    }
    if (!tied) other += r.weights.token_embedding.size() * 4;
    r.bits_per_weight = 8.0 * double(block) / double(block_params(r.weights));
    r.size_mb = double(block + other) / 1e6;
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
}  // namespace

int cmd_eval(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2, {"model", "tokenizer", "text", "max-tokens", "context", "scheme", "kernels", "calib", "calib-tokens", "threads", "flores",
                                  "flores-lines", "flores-max-lines", "neurons", "twq-target"},
                                 {"json", "help"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    auto model = cli::Model::open(args);
    const std::string text_path = args.get("text", cli::data_dir() + "/eval/wikitext-2-raw/wiki.test.raw");
    const int max_tokens = args.get_int("max-tokens", 16384);
    const int threads = args.get_int("threads", 0);
    auto schemes = args.all("scheme");
    if (schemes.empty()) schemes = {"rtn:w8g128s", "rtn:w4g128a", "rtn:w3g32a", "rtn:w2g32a"};
    std::vector<qforge::RuntimeScheme> parsed;
    for (const auto& s : schemes) parsed.push_back(qforge::parse_scheme(s));  // fail before any work

    const std::string kernels = args.get("kernels", "fp32");
    if (kernels != "fp32" && kernels != "packed") throw qforge::InvalidArgument("--kernels must be fp32 or packed, got '" + kernels + "'");
    const bool packed = kernels == "packed";
    const auto tokens = cli::text_tokens(model, text_path, std::size_t(max_tokens));
    const bool tied = model.source().tied_output();
    const auto& stored = model.weights();
    const std::string format = stored_format(stored);

    std::vector<int> calib;  // tokenized when a scheme first needs it
    struct TwqPair {
        std::string target, awq_label;  // awq_label: the plain AWQ row of the same scheme, if evaluated
        std::size_t lape, control;      // row indices
    };
    std::vector<TwqPair> twq_pairs;
    std::vector<Row> rows;
    Row reference{format == "FP32" ? "FP32" : format + "-ref",
                  qforge::llama::dequantized_weights(stored)};
    measure(reference, tied);
    if (format != "FP32" && packed) {
        rows.push_back({format + " (as stored)", stored});
        measure(rows.back(), tied);
    }
    const std::string flores_dir = args.get("flores", cli::data_dir() + "/eval/flores200/devtest");
    struct Lines {
        std::vector<int> tokens;
        std::vector<std::size_t> starts;  // where each line's tokens (BOS first) begin
    };
    const auto flores_lines = [&](const std::string& lang, int first, int last) {
        Lines out;
        for (const auto& line : cli::file_lines(flores_dir + "/" + lang + ".devtest", first, last)) {
            const auto ids = model.tokenizer().encode(line);
            out.starts.push_back(out.tokens.size());
            out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
        }
        return out;
    };
    const auto flores_tokens = [&](const std::string& lang, int first, int last) { return flores_lines(lang, first, last).tokens; };
    for (const auto& scheme : parsed) {
        if (scheme.method == "twq") {  // one row per target language with its LAPE set, one with the random control
            if (!args.has("neurons") || !args.has("twq-target")) throw qforge::InvalidArgument("twq schemes need --neurons FILE and --twq-target LANG");
            const auto sets = qforge::llama::read_neuron_sets(args.get("neurons", ""), stored.config.n_layers, stored.config.hidden_dim);
            for (const auto& target : args.all("twq-target")) {
                const auto find = [&](const std::string& name) -> const qforge::llama::NeuronSet& {
                    const auto it = sets.find(name);
                    if (it == sets.end()) throw qforge::InvalidArgument(args.get("neurons", "") + ": no neuron set '" + name + "'");
                    return it->second;
                };
                const auto& lape = find(target);
                const auto& control = find("random:" + target);
                auto twq_calib = flores_tokens(target, 1, 400), heldout = flores_tokens(target, 401, 506);
                const std::size_t cap = std::size_t(args.get_int("calib-tokens", 8192));  // same budget as the other methods
                if (twq_calib.size() > cap) twq_calib.resize(cap);
                if (heldout.size() > cap / 2) heldout.resize(cap / 2);
                qforge::llama::ModelAwqOptions ao;
                ao.calibration.sequence_length = std::min(512, stored.config.seq_len);
                ao.calibration.isa = qforge::best_isa();
                ao.calibration.threads = threads;
                ao.targets = &lape;
                float best_lambda = 1.0f;
                double best_nll = INFINITY;
                qforge::llama::Weights best;
                const auto start = std::chrono::steady_clock::now();
                for (const float lambda : {1.0f, 2.0f, 4.0f, 8.0f}) {
                    cli::Progress bar("twq " + target + " lambda " + std::to_string(int(lambda)));
                    ao.lambda = lambda;
                    ao.progress = [&](int b, int n, const std::string& what) { bar.update(double(b), double(n), what); };
                    auto q = qforge::llama::awq_quantize_model(reference.weights, twq_calib, scheme, ao);
                    bar.finish();
                    qforge::llama::EvalOptions eo;
                    eo.context = std::min(512, stored.config.seq_len);
                    eo.isa = qforge::best_isa();
                    eo.threads = threads;
                    const double nll = qforge::llama::evaluate(q, nullptr, heldout, eo).mean_nll();
                    std::fprintf(stderr, "twq %s: lambda %g -> held-out NLL %.5f\n", target.c_str(), double(lambda), nll);
                    if (nll < best_nll) best_nll = nll, best_lambda = lambda, best = std::move(q);
                }
                const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                char label[128];
                std::snprintf(label, sizeof label, "%s@%s l=%g%s", qforge::to_string(scheme).c_str(), target.c_str(), double(best_lambda),
                              best_lambda == 1.0f ? " (=AWQ)" : "");
                Row r{label, std::move(best)};
                r.quantize_seconds = seconds;
                measure(r, tied);
                ao.targets = &control;
                ao.lambda = best_lambda;
                cli::Progress bar("twq control " + target);
                ao.progress = [&](int b, int n, const std::string& what) { bar.update(double(b), double(n), what); };
                const auto cstart = std::chrono::steady_clock::now();
                Row c{qforge::to_string(scheme) + "@" + target + "/random", qforge::llama::awq_quantize_model(reference.weights, twq_calib, scheme, ao)};
                bar.finish();
                c.quantize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - cstart).count();
                measure(c, tied);
                auto awq = scheme;
                awq.method = "awq";
                twq_pairs.push_back({target, qforge::to_string(awq), rows.size(), rows.size() + 1});
                for (Row* x : {&r, &c}) {
                    if (!packed)
                        x->weights = qforge::llama::dequantized_weights(x->weights);
                    rows.push_back(std::move(*x));
                }
            }
            continue;
        }
        cli::Progress bar("quantize " + qforge::to_string(scheme));
        const auto start = std::chrono::steady_clock::now();
        if (scheme.method != "rtn" && calib.empty()) calib = cli::calibration_tokens(args, model, text_path, tokens.size());
        Row r{qforge::to_string(scheme), cli::quantize_model(reference.weights, scheme, calib, threads, bar)};
        bar.finish();
        r.quantize_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        measure(r, tied);
        if (!packed)
            r.weights = qforge::llama::dequantized_weights(r.weights);
        rows.push_back(std::move(r));
    }

    qforge::llama::EvalOptions o;
    o.context = args.get_int("context", 512);
    o.threads = threads;
    o.isa = qforge::best_isa();
    cli::Progress bar("evaluate " + std::to_string(rows.size() + 1) + " models");
    o.progress = [&](long done, long total) { bar.update(double(done), double(total)); };
    std::vector<const qforge::llama::Weights*> models;
    for (const auto& r : rows) models.push_back(&r.weights);
    const auto start = std::chrono::steady_clock::now();
    const auto stats = qforge::llama::evaluate_all(models, &reference.weights, tokens, o);
    bar.finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // per-language FLORES perplexity, normalised by the reference's
    std::vector<std::string> languages;
    std::vector<std::vector<double>> normalised;  // [model][language]
    std::vector<double> ref_language_ppl;
    // Per-token ratios favour languages split into many easy tokens; the same content per
    // sentence makes the added NLL per sentence comparable across languages.
    std::vector<std::vector<double>> added_nll;  // [model][language], nats per sentence
    std::vector<long> language_tokens;           // scored tokens per language
    std::vector<std::size_t> language_sentences;
    // TWQ against its random control (and against plain AWQ of the same scheme, when evaluated)
    // on the target's evaluation lines: per-sentence mean NLL differences from the same
    // evaluation as the table, 95% bootstrap interval over sentences (2000 resamples, fixed seed)
    struct Interval {
        std::string target, against;
        double mean = 0, lo = 0, hi = 0;
        std::size_t sentences = 0;
    };
    std::vector<Interval> intervals;
    const auto sentence_nll = [](const std::vector<double>& token_nll, const Lines& lines) {
        std::vector<double> out;
        for (std::size_t i = 0; i < lines.starts.size(); ++i) {
            const std::size_t end = i + 1 < lines.starts.size() ? lines.starts[i + 1] : lines.tokens.size();
            double sum = 0;
            int n = 0;
            for (std::size_t t = lines.starts[i] + 1; t < end; ++t)  // the line's own tokens, not its BOS
                if (!std::isnan(token_nll[t])) sum += token_nll[t], ++n;
            out.push_back(n ? sum / n : std::nan(""));
        }
        return out;
    };
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
    if (args.has("flores")) {
        languages = cli::flores_languages(flores_dir);
        const auto [first, last_all] = cli::parse_lines(args.get("flores-lines", "507-1012"));
        const int last = std::min(last_all, first + args.get_int("flores-max-lines", 100) - 1);
        normalised.assign(rows.size(), {});
        added_nll.assign(rows.size(), {});
        cli::Progress fbar("FLORES per language");
        for (std::size_t k = 0; k < languages.size(); ++k) {
            const auto lines = flores_lines(languages[k], first, last);
            auto fo = o;
            fo.progress = nullptr;
            std::vector<std::vector<double>> token_nll;
            fo.token_nll = &token_nll;
            const auto ls = qforge::llama::evaluate_all(models, &reference.weights, lines.tokens, fo);
            ref_language_ppl.push_back(ls.front().reference_perplexity());
            language_tokens.push_back(ls.front().tokens);
            language_sentences.push_back(lines.starts.size());
            for (std::size_t m = 0; m < rows.size(); ++m) {
                normalised[m].push_back(ls[m].perplexity() / ls[m].reference_perplexity());
                added_nll[m].push_back(std::log(normalised[m].back()) * double(ls[m].tokens) / double(lines.starts.size()));
            }
            for (const auto& pair : twq_pairs) {
                if (pair.target != languages[k]) continue;
                const auto twq = sentence_nll(token_nll[pair.lape], lines);
                auto iv = bootstrap(twq, sentence_nll(token_nll[pair.control], lines));
                iv.target = pair.target, iv.against = "random control";
                intervals.push_back(iv);
                for (std::size_t m = 0; m < rows.size(); ++m)
                    if (rows[m].label == pair.awq_label) {
                        iv = bootstrap(twq, sentence_nll(token_nll[m], lines));
                        iv.target = pair.target, iv.against = pair.awq_label;
                        intervals.push_back(iv);
                    }
            }
            fbar.update(double(k + 1), double(languages.size()), languages[k]);
        }
        fbar.finish();
    }
    const auto mean_of = [](const std::vector<double>& v) {
        double s = 0;
        for (const double x : v) s += x;
        return v.empty() ? 0.0 : s / double(v.size());
    };
    const double ref_ppl = stats.front().reference_perplexity();
    const long scored = stats.front().tokens;
    const double rate = double(scored) * double(rows.size() + 1) / seconds;

    if (args.has("json")) {
        std::printf("{\"model\":%s,\"text\":%s,\"tokens\":%ld,\"context\":%d,\"kernels\":%s,\"reference\":{\"label\":%s,\"ppl\":%.6f,\"bits_per_weight\":%.4f,"
                    "\"size_mb\":%.3f},\"rows\":[",
                    cli::json_string(model.path()).c_str(), cli::json_string(text_path).c_str(), scored, std::min(o.context, stored.config.seq_len),
                    cli::json_string(kernels).c_str(), cli::json_string(reference.label).c_str(), ref_ppl, reference.bits_per_weight, reference.size_mb);
        for (std::size_t i = 0; i < rows.size(); ++i)
            std::printf("%s{\"label\":%s,\"ppl\":%.6f,\"dppl_percent\":%.4f,\"kld\":%.6g,\"top1\":%.6f,\"bits_per_weight\":%.4f,\"size_mb\":%.3f,"
                        "\"quantize_seconds\":%.3f}",
                        i ? "," : "", cli::json_string(rows[i].label).c_str(), stats[i].perplexity(),
                        100.0 * (stats[i].perplexity() / ref_ppl - 1.0), stats[i].mean_kl(), stats[i].top1(), rows[i].bits_per_weight,
                        rows[i].size_mb, rows[i].quantize_seconds);
        std::printf("],\"eval_seconds\":%.3f,\"model_tokens_per_second\":%.1f", seconds, rate);
        if (!languages.empty()) {
            std::printf(",\"flores\":{\"languages\":[");
            for (std::size_t k = 0; k < languages.size(); ++k) std::printf("%s%s", k ? "," : "", cli::json_string(languages[k]).c_str());
            std::printf("],\"reference_ppl\":[");
            for (std::size_t k = 0; k < languages.size(); ++k) std::printf("%s%.6f", k ? "," : "", ref_language_ppl[k]);
            const auto by_scheme = [&](const std::vector<std::vector<double>>& values) {  // {"label":[per language], ...}
                std::printf("{");
                for (std::size_t m = 0; m < rows.size(); ++m) {
                    std::printf("%s%s:[", m ? "," : "", cli::json_string(rows[m].label).c_str());
                    for (std::size_t k = 0; k < languages.size(); ++k) std::printf("%s%.6f", k ? "," : "", values[m][k]);
                    std::printf("]");
                }
                std::printf("}");
            };
            std::printf("],\"normalised_ppl\":");
            by_scheme(normalised);
            std::printf(",\"scored_tokens\":[");
            for (std::size_t k = 0; k < languages.size(); ++k) std::printf("%s%ld", k ? "," : "", language_tokens[k]);
            std::printf("],\"sentences\":[");
            for (std::size_t k = 0; k < languages.size(); ++k) std::printf("%s%zu", k ? "," : "", language_sentences[k]);
            std::printf("],\"added_nll_per_sentence\":");
            by_scheme(added_nll);
            std::printf("}");
        }
        if (!intervals.empty()) {
            std::printf(",\"twq_intervals\":[");
            for (std::size_t i = 0; i < intervals.size(); ++i)
                std::printf("%s{\"target\":%s,\"against\":%s,\"sentences\":%zu,\"mean_nll_difference\":%.6f,\"ci95\":[%.6f,%.6f]}", i ? "," : "",
                            cli::json_string(intervals[i].target).c_str(), cli::json_string(intervals[i].against).c_str(), intervals[i].sentences,
                            intervals[i].mean, intervals[i].lo, intervals[i].hi);
            std::printf("]");
        }
        std::printf("}\n");
        return 0;
    }
    std::printf("model %s | text %s | %ld tokens scored, context %d | %s\n\n", model.path().c_str(), text_path.c_str(), scored,
                std::min(o.context, stored.config.seq_len),
                packed ? "packed integer kernels, 8-bit activations" : "weight-only (dequantized weights, FP32 activations)");
    std::printf("| %-28s | %9s | %8s | %9s | %7s | %6s | %9s | %8s |\n", "scheme", "PPL", "dPPL %", "KLD", "top-1", "bpw", "size MB", "quant s");
    std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(30, '-').c_str(), std::string(11, '-').c_str(), std::string(10, '-').c_str(),
                std::string(11, '-').c_str(), std::string(9, '-').c_str(), std::string(8, '-').c_str(), std::string(11, '-').c_str(),
                std::string(10, '-').c_str());
    std::printf("| %-28s | %9.4f | %8s | %9s | %7s | %6.2f | %9.2f | %8s |\n", reference.label.c_str(), ref_ppl, "-", "-", "-",
                reference.bits_per_weight, reference.size_mb, "-");
    for (std::size_t i = 0; i < rows.size(); ++i)
        std::printf("| %-28s | %9.4f | %+8.2f | %9.5f | %6.2f%% | %6.2f | %9.2f | %8.2f |\n", rows[i].label.c_str(), stats[i].perplexity(),
                    100.0 * (stats[i].perplexity() / ref_ppl - 1.0), stats[i].mean_kl(), 100.0 * stats[i].top1(), rows[i].bits_per_weight,
                    rows[i].size_mb, rows[i].quantize_seconds);
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
    std::printf("\nevaluation: %.1f s for %zu models in lockstep (%.0f model-tokens/s, %s, %d threads)\n", seconds, rows.size() + 1, rate,
                std::string(qforge::isa_name(o.isa)).c_str(), threads ? threads : qforge::default_threads());
    return 0;
}
