// `qforge generate`: text from a llama2.c checkpoint, FP32 or quantized on the fly, greedy or
// sampled (temperature, top-p, seed).
#include <chrono>
#include <cstdio>
#include <string>

#include <qforge/io/llama2c_tokenizer.hpp>
#include <qforge/models/llama/model.hpp>
#include <qforge/models/llama/sampler.hpp>

#include "args.hpp"

namespace {
const char* help = R"(usage: qforge generate [options]

Generates text from a llama2.c checkpoint.

  --model PATH        llama2.c checkpoint (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH    llama2.c tokenizer.bin (default: tok512.bin beside the default model)
  --prompt TEXT       text to continue (default: empty, start from BOS)
  --max-tokens N      tokens to generate (default 128, at most the model's context)
  --temperature T     0 = greedy (default 0)
  --top-p P           nucleus sampling mass (default 0.9; only with T > 0)
  --seed N            sampler seed (default 1)
  --scheme S          quantize the decoder's linear layers first, e.g. rtn:w4g32a
  --threads N         threads (default: all)
  --json              one JSON object on stdout
  --help              this text
)";
}

int cmd_generate(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2,
                                 {"model", "tokenizer", "prompt", "max-tokens", "temperature", "top-p", "seed", "scheme", "threads"},
                                 {"json", "help"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    const std::string dir = cli::data_dir() + "/models/stories260K/";
    const auto ck = qforge::io::Llama2cCheckpoint::load(args.get("model", dir + "stories260K.bin"));
    const auto tok = qforge::io::Llama2cTokenizer::load(args.get("tokenizer", dir + "tok512.bin"), ck.config().vocab_size);
    const int threads = args.get_int("threads", 0);
    auto weights = qforge::llama::from_llama2c(ck);
    if (args.has("scheme")) {
        const auto scheme = qforge::parse_scheme(args.get("scheme", ""));
        weights = qforge::llama::map_block_linears(
            weights, [&](const qforge::llama::Linear& l) { return qforge::llama::quantize_linear(l, scheme, threads); });
    }
    const float temperature = std::stof(args.get("temperature", "0"));
    qforge::llama::Sampler sampler(temperature, std::stof(args.get("top-p", "0.9")), std::uint64_t(args.get_int("seed", 1)));
    const int max_tokens = std::min(args.get_int("max-tokens", 128), weights.config.seq_len);

    qforge::llama::Session session(weights, qforge::best_isa(), threads);
    const auto prompt = tok.encode(args.get("prompt", ""), true, false);
    std::string text;
    int token = prompt[0], pos = 0, generated = 0;
    const auto start = std::chrono::steady_clock::now();
    const bool json = args.has("json");
    while (pos < weights.config.seq_len && generated < max_tokens) {
        const auto logits = session.forward(token, pos);
        int next;
        if (pos + 1 < int(prompt.size())) {
            next = prompt[std::size_t(pos) + 1];
        } else {
            next = sampler.next(logits);
            ++generated;
        }
        if (next == qforge::io::Llama2cTokenizer::bos) break;
        const std::string piece = tok.decode(token, next);
        text += piece;
        if (!json) {
            std::fputs(piece.c_str(), stdout);
            std::fflush(stdout);
        }
        token = next;
        ++pos;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (json)
        std::printf("{\"text\":%s,\"tokens\":%d,\"seconds\":%.4f}\n", cli::json_string(text).c_str(), generated, seconds);
    else
        std::printf("\n");
    std::fprintf(stderr, "%d tokens in %.3f s (%.1f tokens/s)\n", generated, seconds, generated / std::max(seconds, 1e-9));
    return 0;
}
