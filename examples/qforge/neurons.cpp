// `qforge neurons`: language-specific MLP neurons by LAPE over the FLORES languages, written as a
// neuron-set file (one set per language, and a random control of the same per-layer sizes).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <qforge/models/llama/neurons.hpp>

#include "args.hpp"
#include "model.hpp"

namespace {
const char* help = R"(usage: qforge neurons --out FILE [options]

Finds language-specific MLP neurons by LAPE (language activation probability entropy): for each
FLORES language, the probability that each neuron's act_fn(gate) output is > 0 over the given
lines; of the neurons whose top probability exceeds the --prob-quantile of all probabilities, the
--entropy-quantile share of all neurons with the lowest entropy across languages (Tang et al.'s
selection), each assigned to the languages above that probability threshold. The model's decoder
layers run in FP32 (a packed checkpoint dequantized), as the reference of `qforge eval`.
Writes sets "<lang>" and controls "random:<lang>" (same sizes per layer, --seed) to FILE (JSON,
format in docs/awq.md) and prints the counts per language and layer.

  --model PATH            model (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH        tokenizer (default: the model's own)
  --flores DIR            FLORES-200 devtest directory (default: $QFORGE_DATA/eval/flores200/devtest)
  --lines A-B             the lines of each file to use (default 1-506: the selection half)
  --entropy-quantile Q    the share of all neurons kept (default 0.01)
  --prob-quantile Q       default 0.95
  --seed N                seed of the random controls (default 1)
  --out FILE              output file
  --threads N             threads (default: all)
  --json                  print the counts as one JSON object
  --help                  this text
)";
}  // namespace

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
    const auto dash = text.find('-');
    if (dash == std::string::npos) throw qforge::InvalidArgument("--lines needs A-B, got '" + text + "'");
    const int a = std::stoi(text.substr(0, dash)), b = std::stoi(text.substr(dash + 1));
    if (a < 1 || b < a) throw qforge::InvalidArgument("--lines: bad range '" + text + "'");
    return {a, b};
}

std::vector<std::string> flores_languages(const std::string& dir) {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.path().extension() == ".devtest") names.push_back(e.path().stem().string());
    std::sort(names.begin(), names.end());
    if (names.empty()) throw qforge::FileError(dir, "no *.devtest files");
    return names;
}

}  // namespace cli

int cmd_neurons(int argc, char** argv) {
    using cli::file_lines;
    using cli::flores_languages;
    using cli::parse_lines;
    const auto args = cli::parse(argc, argv, 2,
                                 {"model", "tokenizer", "flores", "lines", "entropy-quantile", "prob-quantile", "seed", "out", "threads"},
                                 {"json", "help"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    if (!args.has("out")) throw qforge::InvalidArgument("--out is required (see --help)");
    auto model = cli::Model::open(args);
    const std::string dir = args.get("flores", cli::data_dir() + "/eval/flores200/devtest");
    const auto [first, last] = parse_lines(args.get("lines", "1-506"));
    const auto w = qforge::llama::dequantized_weights(model.weights());
    const auto languages = flores_languages(dir);
    std::vector<std::vector<std::vector<float>>> probability;
    cli::Progress bar("activation probability");
    for (std::size_t k = 0; k < languages.size(); ++k) {
        std::vector<std::vector<int>> encoded;
        for (const auto& line : file_lines(dir + "/" + languages[k] + ".devtest", first, last)) encoded.push_back(model.tokenizer().encode(line));
        std::vector<std::span<const int>> seqs(encoded.begin(), encoded.end());
        probability.push_back(qforge::llama::activation_probability(w, seqs, qforge::best_isa(), args.get_int("threads", 0)));
        bar.update(double(k + 1), double(languages.size()), languages[k]);
    }
    bar.finish();
    qforge::llama::LapeOptions o;
    o.entropy_quantile = std::stod(args.get("entropy-quantile", "0.01"));
    o.probability_quantile = std::stod(args.get("prob-quantile", "0.95"));
    const auto r = qforge::llama::lape_select(languages, probability, o);
    std::map<std::string, qforge::llama::NeuronSet> sets = r.per_language;
    const int seed = args.get_int("seed", 1);
    for (const auto& lang : languages)
        sets["random:" + lang] = qforge::llama::random_like(r.per_language.at(lang), w.config.hidden_dim, std::uint64_t(seed) * 1000003u + std::hash<std::string>{}(lang));
    qforge::llama::write_neuron_sets(args.get("out", ""), sets, w.config.n_layers, w.config.hidden_dim, "lape");
    if (args.has("json")) {
        std::printf("{\"selected\":%zu,\"candidates\":%zu,\"probability_threshold\":%.6f,\"entropy_threshold\":%.6f,\"languages\":{", r.selected, r.candidates, r.probability_threshold,
                    r.entropy_threshold);
        for (std::size_t k = 0; k < languages.size(); ++k) {
            std::printf("%s%s:[", k ? "," : "", cli::json_string(languages[k]).c_str());
            const auto& per = r.per_language.at(languages[k]).per_layer;
            for (std::size_t l = 0; l < per.size(); ++l) std::printf("%s%zu", l ? "," : "", per[l].size());
            std::printf("]");
        }
        std::printf("}}\n");
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
    std::printf("\nwrote %s (sets <lang> and random:<lang>)\n", args.get("out", "").c_str());
    return 0;
}
