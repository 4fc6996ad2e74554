// `qforge generate`: text from a llama2.c checkpoint, FP32 or quantized on the fly, greedy or
// sampled (temperature, top-p, seed).
#include <chrono>
#include <cstdio>
#include <string>

#ifdef QFORGE_HAVE_TEXT
#include <qforge/io/bpe_tokenizer.hpp>
#endif
#include <qforge/io/gguf_vocab.hpp>
#include <qforge/io/llama2c_tokenizer.hpp>
#include <qforge/models/llama/gguf_loader.hpp>
#include <qforge/models/llama/model.hpp>
#include <qforge/models/llama/sampler.hpp>

#include "args.hpp"

namespace {
const char* help = R"(usage: qforge generate [options]

Generates text from a llama2.c checkpoint or a GGUF Llama model (format from the file name).

  --model PATH        .bin (llama2.c) or .gguf (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH    llama2.c tokenizer.bin (default: tok512.bin beside the default model; GGUF
                      models carry their own)
  --chat              wrap the prompt in the ChatML template (<|im_start|>user ... assistant)
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

namespace {
/// GGUF models: packed layers used in place, byte-level BPE from the file's metadata.
int generate_gguf(const cli::Args& args, const std::string& path) {
#ifndef QFORGE_HAVE_TEXT
    (void)args;
    throw qforge::InvalidArgument(path + ": GGUF models need the byte-level BPE tokenizer; rebuild with PCRE2 (libpcre2-dev)");
#else
    const auto file = qforge::io::GgufFile::open(path);
    auto weights = qforge::llama::from_gguf(file);
    const auto tokenizer = qforge::io::BpeTokenizer::from_gguf(file);
    const qforge::io::GgufVocab vocab(file);
    const int threads = args.get_int("threads", 0);
    std::string prompt = args.get("prompt", "");
    if (args.has("chat")) prompt = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n";
    auto ids = tokenizer.encode(prompt);
    if (ids.empty() || ids.front() != vocab.bos()) ids.insert(ids.begin(), vocab.bos());
    const int context = std::min(weights.config.seq_len, int(ids.size()) + args.get_int("max-tokens", 128));
    qforge::llama::Session session(weights, qforge::best_isa(), threads, context);
    qforge::llama::Sampler sampler(std::stof(args.get("temperature", "0")), std::stof(args.get("top-p", "0.9")),
                                   std::uint64_t(args.get_int("seed", 1)));
    const bool json = args.has("json");
    std::string text;
    int generated = 0;
    const auto start = std::chrono::steady_clock::now();
    int next = 0;
    for (int pos = 0; pos < context; ++pos) {
        const auto logits = session.forward(pos < int(ids.size()) ? ids[std::size_t(pos)] : next, pos);
        if (pos + 1 < int(ids.size())) continue;
        next = sampler.next(logits);
        if (next == vocab.eos() || vocab.piece(next) == "<|im_end|>") break;
        ++generated;
        const std::string piece = vocab.decode(next);
        text += piece;
        if (!json) {
            std::fputs(piece.c_str(), stdout);
            std::fflush(stdout);
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (json) std::printf("{\"text\":%s,\"tokens\":%d,\"seconds\":%.4f}\n", cli::json_string(text).c_str(), generated, seconds);
    else std::printf("\n");
    std::fprintf(stderr, "%zu prompt + %d generated tokens in %.3f s\n", ids.size(), generated, seconds);
    return 0;
#endif
}
}  // namespace

int cmd_generate(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2,
                                 {"model", "tokenizer", "prompt", "max-tokens", "temperature", "top-p", "seed", "scheme", "threads"},
                                 {"json", "help", "chat"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    const std::string model_path = args.get("model", "");
    if (model_path.size() > 5 && model_path.substr(model_path.size() - 5) == ".gguf") return generate_gguf(args, model_path);
    const std::string dir = cli::data_dir() + "/models/stories260K/";
    const auto ck = qforge::io::Llama2cCheckpoint::load(model_path.empty() ? dir + "stories260K.bin" : model_path);
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
