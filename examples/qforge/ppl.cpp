// `qforge ppl`: perplexity of a model on a text; with --scheme, of the model's decoder layers
// quantized by that scheme, in lockstep with the unquantized reference (KL divergence, top-1
// agreement, PPL ratio), without storing logits.
#include <chrono>
#include <cstdio>
#include <string>

#include <qforge/models/llama/evaluate.hpp>

#include "args.hpp"
#include "model.hpp"

namespace {
const char* help = R"(usage: qforge ppl [options]

Perplexity of a model (llama2.c .bin, GGUF, or a qforge container) on a text. With --scheme, the decoder's
linear layers are quantized by RTN first (GGUF weights are dequantized to FP32 to form the
reference, "Q4_1-ref" for SmolLM2) and KL divergence, top-1 agreement and the PPL ratio against
the reference are reported.

  --model PATH      model (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH  tokenizer.bin or a GGUF to take the vocabulary from (default: the model's own;
                    tok512.bin for the default model)
  --text PATH       UTF-8 text, CR stripped (default: $QFORGE_DATA/eval/wikitext-2-raw/wiki.test.raw)
  --max-tokens N    evaluate the first N tokens (default 16384)
  --context N       window length (default 512, at most the model's context)
  --stride N        sliding windows every N tokens (default: the context, i.e. disjoint windows)
  --scheme S        quantize with this RTN scheme and compare with the reference
  --threads N       threads (default: all)
  --json            one JSON object on stdout
  --help            this text
)";

}  // namespace

int cmd_ppl(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2,
                                 {"model", "tokenizer", "text", "max-tokens", "context", "stride", "scheme", "threads"},
                                 {"json", "help"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    auto model = cli::Model::open(args);
    const std::string text_path = args.get("text", cli::data_dir() + "/eval/wikitext-2-raw/wiki.test.raw");
    const int max_tokens = args.get_int("max-tokens", 16384);
    const int threads = args.get_int("threads", 0);
    const auto tokens = cli::text_tokens(model, text_path, std::size_t(max_tokens));
    const auto& reference = model.weights();

    qforge::llama::EvalOptions o;
    o.context = args.get_int("context", 512);
    o.stride = args.get_int("stride", 0);
    o.threads = threads;
    o.isa = qforge::best_isa();
    const bool json = args.has("json");
    cli::Progress bar("perplexity");
    o.progress = [&](long done, long total) { bar.update(double(done), double(total)); };
    const auto start = std::chrono::steady_clock::now();
    qforge::NextTokenStats stats;
    std::string scheme_text = "none";
    if (args.has("scheme")) {
        const auto scheme = qforge::parse_scheme(args.get("scheme", ""));
        scheme_text = qforge::to_string(scheme);
        auto fp32 = qforge::llama::dequantized_weights(reference);
        const auto quantized = qforge::llama::map_block_linears(
            fp32, [&](const qforge::llama::Linear& l) { return qforge::llama::quantize_linear(l, scheme, threads); });
        stats = qforge::llama::evaluate(quantized, &fp32, tokens, o);
    } else {
        stats = qforge::llama::evaluate(reference, nullptr, tokens, o);
    }
    bar.finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (json) {
        std::printf("{\"model\":%s,\"text\":%s,\"scheme\":%s,\"tokens\":%ld,\"mean_nll\":%.6f,\"ppl\":%.6f", cli::json_string(model.path()).c_str(),
                    cli::json_string(text_path).c_str(), cli::json_string(scheme_text).c_str(), stats.tokens, stats.mean_nll(),
                    stats.perplexity());
        if (args.has("scheme"))
            std::printf(",\"reference_ppl\":%.6f,\"ppl_ratio\":%.6f,\"kld\":%.6g,\"top1\":%.6f", stats.reference_perplexity(),
                        stats.perplexity() / stats.reference_perplexity(), stats.mean_kl(), stats.top1());
        std::printf(",\"seconds\":%.3f}\n", seconds);
    } else {
        std::printf("tokens %ld  mean NLL %.4f  PPL %.4f", stats.tokens, stats.mean_nll(), stats.perplexity());
        if (args.has("scheme"))
            std::printf("  | %s vs reference: PPL %.4f, ratio %.4f, KLD %.5f, top-1 %.2f%%", scheme_text.c_str(),
                        stats.reference_perplexity(), stats.perplexity() / stats.reference_perplexity(), stats.mean_kl(),
                        100.0 * stats.top1());
        std::printf("  (%.1f s)\n", seconds);
    }
    return 0;
}
