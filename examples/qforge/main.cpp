// The qforge command-line tool. One subcommand per file; each takes --help and --json.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <qforge/core/error.hpp>

int cmd_weights(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_ppl(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_neurons(int argc, char** argv);
int cmd_lens(int argc, char** argv);

namespace {
const char* usage = R"(usage: qforge <command> [options]

commands:
  eval      one table of schemes x (PPL, dPPL, KLD, top-1, bits/weight, size, time) on a text
  quantize  write a quantized model (qforge container) with per-weight overrides
  ppl       perplexity on a text; with --scheme, KL divergence / top-1 / PPL ratio vs the reference
  generate  text from a model, FP32, as stored, or quantized on the fly (greedy or sampled)
  lens      logit lens per layer (reference vs quantized), table and SVG plot
  neurons   language-specific MLP neurons by LAPE over FLORES (for TWQ)
  weights   quantize a checkpoint's weights with RTN schemes; table of weight error and bits/weight

Run 'qforge <command> --help' for the options of a command. Data files are found through
QFORGE_DATA (default: ../shared/data beside the source tree).
)";
}

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
        std::fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string command = argv[1];
    try {
        if (command == "weights") return cmd_weights(argc, argv);
        if (command == "generate") return cmd_generate(argc, argv);
        if (command == "ppl") return cmd_ppl(argc, argv);
        if (command == "quantize") return cmd_quantize(argc, argv);
        if (command == "eval") return cmd_eval(argc, argv);
        if (command == "neurons") return cmd_neurons(argc, argv);
        if (command == "lens") return cmd_lens(argc, argv);
        std::fprintf(stderr, "qforge: unknown command '%s'\n%s", command.c_str(), usage);
        return 2;
    } catch (const qforge::Error& e) {
        std::fprintf(stderr, "qforge %s: %s\n", command.c_str(), e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qforge %s: %s\n", command.c_str(), e.what());
        return 2;
    }
}
