// `qforge neurons`: language-specific MLP neurons by LAPE over the FLORES languages, written as a
// neuron-set file (one set per language, and a random control of the same per-layer sizes).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <qforge/pipelines/llama/neurons.hpp>

#include "commands.hpp"
#include "model.hpp"

namespace cli {
std::vector<std::string> file_lines(const std::string& path, int first, int last) {
    std::ifstream in(path);
    if (!in) throw qforge::FileError(path, "cannot open file");
    std::vector<std::string> out;
    std::string line;
    for (int n = 1; std::getline(in, line) && n <= last; ++n)
        if (n >= first) out.push_back(line);
    if (int(out.size()) != last - first + 1)
        throw qforge::FileError(path, "has " + std::to_string(first - 1 + int(out.size())) + " lines, lines " + std::to_string(first) + "-" +
                                          std::to_string(last) + " were asked for");
    return out;
}

std::pair<int, int> parse_lines(const std::string& text) {
    if (const auto why = line_range_problem(text); !why.empty()) throw qforge::InvalidArgument(why);
    const auto dash = text.find('-');
    return {std::atoi(text.substr(0, dash).c_str()), std::atoi(text.substr(dash + 1).c_str())};
}

std::vector<std::string> flores_languages(const std::string& dir) {
    std::vector<std::string> names;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) throw qforge::FileError(dir, "is not a directory (FLORES-200 devtest files *.devtest expected)");
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.path().extension() == ".devtest") names.push_back(e.path().stem().string());
    std::sort(names.begin(), names.end());
    if (names.empty()) throw qforge::FileError(dir, "no *.devtest files");
    return names;
}

}  // namespace cli

namespace cli {
namespace {

struct NeuronsOptions {
    ModelOptions model;
    std::string flores, lines = "1-506", out;
    double entropy_quantile = 0.01, prob_quantile = 0.95;
    std::uint64_t seed = 1;
    int threads = 0;
    bool json = false;
};

int run(const NeuronsOptions& opt) {
    auto model = Model::open(opt.model);
    const std::string dir = opt.flores.empty() ? data_dir() + "/eval/flores200/devtest" : opt.flores;
    const auto [first, last] = parse_lines(opt.lines);
    const auto w = qforge::llama::dequantized_weights(model.weights());
    const auto languages = flores_languages(dir);
    std::vector<std::vector<std::vector<float>>> probability;
    Progress bar("activation probability");
    for (std::size_t k = 0; k < languages.size(); ++k) {
        std::vector<std::vector<int>> encoded;
        for (const auto& line : file_lines(dir + "/" + languages[k] + ".devtest", first, last)) encoded.push_back(model.tokenizer().encode(line));
        std::vector<std::span<const int>> seqs(encoded.begin(), encoded.end());
        probability.push_back(qforge::llama::activation_probability(w, seqs, qforge::Backend::best_cpu(opt.threads)));
        bar.update(double(k + 1), double(languages.size()), languages[k]);
    }
    bar.finish();
    qforge::llama::LapeOptions o;
    o.entropy_quantile = opt.entropy_quantile;
    o.probability_quantile = opt.prob_quantile;
    const auto r = qforge::llama::lape_select(languages, probability, o);
    std::map<std::string, qforge::llama::NeuronSet> sets = r.per_language;
    const std::uint64_t seed = opt.seed;
    for (const auto& lang : languages)
        sets["random:" + lang] = qforge::llama::random_like(r.per_language.at(lang), w.config.hidden_dim, seed * 1000003u + std::hash<std::string>{}(lang));
    qforge::llama::write_neuron_sets(opt.out, sets, w.config.n_layers, w.config.hidden_dim, "lape");
    if (opt.json) {
        JsonObject per_language;
        for (const auto& lang : languages) {
            qforge::io::Json::Array counts;
            for (const auto& l : r.per_language.at(lang).per_layer) counts.emplace_back(std::int64_t(l.size()));
            per_language.add(lang, std::move(counts));
        }
        print_json(JsonObject()
                       .add("selected", std::int64_t(r.selected))
                       .add("candidates", std::int64_t(r.candidates))
                       .add("probability_threshold", r.probability_threshold)
                       .add("entropy_threshold", r.entropy_threshold)
                       .add("languages", per_language)
                       .add("out", opt.out));
        return 0;
    }
    std::printf("LAPE over FLORES lines %d-%d: %zu of %zu candidates (top probability > %.4f) kept, entropy <= %.4f\n\n", first, last,
                r.selected, r.candidates, r.probability_threshold, r.entropy_threshold);
    std::printf("%-10s %6s  per layer\n", "language", "total");
    for (const auto& lang : languages) {
        const auto& per = r.per_language.at(lang).per_layer;
        std::printf("%-10s %6zu ", lang.c_str(), r.per_language.at(lang).size());
        for (const auto& l : per) std::printf(" %zu", l.size());
        std::printf("\n");
    }
    std::printf("\nwrote %s (sets <lang> and random:<lang>)\n", opt.out.c_str());
    return 0;
}

}  // namespace

void add_neurons(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("neurons", "language-specific MLP neurons by LAPE over FLORES (for TWQ)");
    sub->footer(
        "Finds language-specific MLP neurons by LAPE (language activation probability entropy): for each FLORES language, the\n"
        "probability that each neuron's act_fn(gate) output is > 0 over the given lines; of the neurons whose top probability\n"
        "exceeds the --prob-quantile of all probabilities, the --entropy-quantile share of all neurons with the lowest entropy\n"
        "across languages (Tang et al.'s selection), each assigned to the languages above that probability threshold. The\n"
        "model's decoder layers run in FP32 (a packed checkpoint dequantized), as the reference of 'qforge eval'. Writes sets\n"
        "\"<lang>\" and controls \"random:<lang>\" (same sizes per layer, --seed) to --out (JSON, format in docs/awq.md).");
    auto o = std::make_shared<NeuronsOptions>();
    add_model_options(*sub, o->model);
    sub->add_option("--flores", o->flores, "FLORES-200 devtest directory (default: $QFORGE_DATA/eval/flores200/devtest)");
    sub->add_option("--lines", o->lines, "the lines A-B of each file to use (the selection half)")->check(line_range())->capture_default_str();
    sub->add_option("--entropy-quantile", o->entropy_quantile, "the share of all neurons kept")->check(finite_in(0.0, 1.0))->capture_default_str();
    sub->add_option("--prob-quantile", o->prob_quantile, "quantile of all activation probabilities a candidate must exceed")
        ->check(finite_in(0.0, 1.0))
        ->capture_default_str();
    sub->add_option("--seed", o->seed, "seed of the random controls")->check(whole_number())->capture_default_str();
    sub->add_option("--out", o->out, "output file (checked before any work)")->required()->check(writable_output());
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "print the counts as one JSON object");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
