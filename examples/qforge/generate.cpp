// `qforge generate`: text from any model qforge reads, FP32, packed as stored, or quantized on
// the fly; greedy or sampled (temperature, top-p, seed). The prompt runs as one batch.
#include <chrono>
#include <cstdio>
#include <string>

#include <qforge/models/llama/model.hpp>
#include <qforge/models/llama/sampler.hpp>

#include "args.hpp"
#include "model.hpp"

namespace {
const char* help = R"(usage: qforge generate [options]

Generates text from a model: llama2.c .bin, GGUF, or a qforge container (.safetensors written by
'qforge quantize'); the format is detected from the file.

  --model PATH        model (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH    tokenizer: a llama2.c tokenizer.bin or a GGUF whose vocabulary to use
                      (default: tok512.bin for the default model; GGUF models carry their own;
                      containers name the one they were made with)
  --chat              wrap the prompt in the ChatML template (<|im_start|>user ... assistant)
  --prompt TEXT       text to continue (default: empty, start from BOS)
  --max-tokens N      tokens to generate (default 128, at most the model's context)
  --temperature T     0 = greedy (default 0)
  --top-p P           nucleus sampling mass (default 0.9; only with T > 0)
  --seed N            sampler seed (default 1)
  --scheme S          quantize the decoder's linear layers first (RTN), e.g. rtn:w4g32a
  --threads N         threads (default: all)
  --json              one JSON object on stdout
  --help              this text
)";
}  // namespace

int cmd_generate(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2,
                                 {"model", "tokenizer", "prompt", "max-tokens", "temperature", "top-p", "seed", "scheme", "threads"},
                                 {"json", "help", "chat"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    auto model = cli::Model::open(args);
    const int threads = args.get_int("threads", 0);
    qforge::llama::Weights quantized;
    const qforge::llama::Weights* weights = &model.weights();
    if (args.has("scheme")) {
        const auto scheme = qforge::parse_scheme(args.get("scheme", ""));
        quantized = qforge::llama::map_block_linears(*weights, [&](const qforge::llama::Linear& l) {
            return qforge::llama::quantize_linear(qforge::llama::dequantized_linear(l), scheme, threads);
        });
        weights = &quantized;
    }
    std::string prompt = args.get("prompt", "");
    if (args.has("chat")) prompt = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n";
    const auto& tok = model.tokenizer();
    const auto ids = tok.encode(prompt);
    const int max_tokens = args.get_int("max-tokens", 128);
    const int context = std::min(weights->config.seq_len, int(ids.size()) + max_tokens);
    if (int(ids.size()) >= context) throw qforge::InvalidArgument("the prompt fills the model's context");
    qforge::llama::Session session(*weights, qforge::best_isa(), threads, context);
    qforge::llama::Sampler sampler(std::stof(args.get("temperature", "0")), std::stof(args.get("top-p", "0.9")),
                                   std::uint64_t(args.get_int("seed", 1)));
    const bool json = args.has("json");
    std::string text;
    int generated = 0;
    const auto start = std::chrono::steady_clock::now();
    auto logits = session.forward_batch(ids, 0, false).row(0);
    const double prompt_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    int previous = ids.back();
    for (int pos = int(ids.size()); pos < context; ++pos) {
        const int next = sampler.next(logits);
        if (tok.is_end(next)) break;
        ++generated;
        const std::string piece = tok.decode(previous, next);
        text += piece;
        if (!json) {
            std::fputs(piece.c_str(), stdout);
            std::fflush(stdout);
        }
        previous = next;
        if (pos + 1 < context) logits = session.forward(next, pos);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double decode_rate = generated / std::max(seconds - prompt_seconds, 1e-9);
    if (json)
        std::printf("{\"text\":%s,\"prompt_tokens\":%zu,\"tokens\":%d,\"prompt_seconds\":%.4f,\"seconds\":%.4f,\"decode_tokens_per_second\":%.2f}\n",
                    cli::json_string(text).c_str(), ids.size(), generated, prompt_seconds, seconds, decode_rate);
    else
        std::printf("\n");
    std::fprintf(stderr, "%zu prompt tokens in %.3f s, %d generated in %.3f s (%.1f tokens/s)\n", ids.size(), prompt_seconds, generated,
                 seconds - prompt_seconds, decode_rate);
    return 0;
}
