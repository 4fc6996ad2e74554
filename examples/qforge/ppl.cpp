// `qforge ppl`: perplexity of a model on a text; with --scheme, of the model's decoder layers
// quantized by that scheme, in lockstep with the unquantized reference (KL divergence, top-1
// agreement, PPL ratio), without storing logits.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <qforge/models/llama/evaluate.hpp>

#include "commands.hpp"
#include "model.hpp"

namespace cli {
namespace {

struct PplOptions {
    ModelOptions model;
    std::string text, scheme;
    long max_tokens = 16384;
    int context = 0, stride = 0, threads = 0;
    bool json = false;
};

int run(const PplOptions& opt) {
    auto model = Model::open(opt.model);
    const std::string text_path = opt.text.empty() ? data_dir() + "/eval/wikitext-2-raw/wiki.test.raw" : opt.text;
    const auto tokens = tokens_to_score(model, text_path, std::size_t(opt.max_tokens));
    const auto& reference = model.weights();

    qforge::llama::EvalOptions o;
    o.context = context_or_default(opt.context, reference.config.seq_len);
    o.stride = opt.stride;
    o.backend = qforge::Backend::best_cpu(opt.threads);
    Progress bar("perplexity");
    o.progress = [&](long done, long total) { bar.update(double(done), double(total)); };
    const auto start = std::chrono::steady_clock::now();
    qforge::NextTokenStats stats;
    std::string scheme_text = "none";
    const bool compare = !opt.scheme.empty();
    if (compare) {
        const auto scheme = parse_scheme_option(opt.scheme);
        if (qforge::needs_calibration(scheme))
            throw qforge::InvalidArgument("ppl --scheme quantizes without calibration; " + qforge::to_string(scheme) +
                                          " needs calibration tokens (" +
                                          (qforge::method_of(scheme).needs_calibration() ? scheme.method + " calibrates"
                                                                                         : std::string("its ',salient=' channels are picked by their activations")) +
                                          "): use 'qforge eval', which calibrates");
        scheme_text = qforge::to_string(scheme);
        auto fp32 = qforge::llama::dequantized_weights(reference);
        const auto quantized = qforge::llama::quantize_block_linears(fp32, scheme, o.backend, model.path());
        stats = qforge::llama::evaluate(quantized, &fp32, tokens, o);
    } else {
        stats = qforge::llama::evaluate(reference, nullptr, tokens, o);
    }
    bar.finish();
    // what ran, so a number is not read as the weight-only one of `qforge eval`: packed layers go
    // through the integer kernels with 8-bit activations (eval's --kernels packed)
    bool packed = compare;
    for (const auto& L : reference.layers)
        for (const auto* l : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3})
            packed = packed || !std::holds_alternative<qforge::llama::Fp32Matrix>(l->weights());
    const char* kernels = packed ? "packed" : "fp32";
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int stride = o.stride > 0 ? o.stride : o.context;
    if (opt.json) {
        JsonObject j;
        j.add("model", model.path()).add("text", text_path).add("scheme", scheme_text);
        j.add("text_tokens", std::int64_t(tokens.size())).add("tokens", std::int64_t(stats.tokens));
        j.add("context", o.context).add("stride", stride).add("kernels", kernels);
        j.add("add_bos", model.tokenizer().add_bos).add("mean_nll", stats.mean_nll()).add("ppl", stats.perplexity());
        if (compare)
            j.add("reference_ppl", stats.reference_perplexity())
                .add("ppl_ratio", stats.perplexity() / stats.reference_perplexity())
                .add("kld", stats.mean_kl())
                .add("top1", stats.top1());
        j.add("seconds", seconds);
        print_json(j);
    } else {
        std::printf("tokens %ld  mean NLL %.4f  PPL %.4f", stats.tokens, stats.mean_nll(), stats.perplexity());
        if (compare)
            std::printf("  | %s vs reference: PPL %.4f, ratio %.4f, KLD %.5f, top-1 %.2f%%", scheme_text.c_str(),
                        stats.reference_perplexity(), stats.perplexity() / stats.reference_perplexity(), stats.mean_kl(),
                        100.0 * stats.top1());
        std::printf("  (context %d, stride %d, %s, %.1f s)\n", o.context, stride,
                    packed ? "packed layers on the integer kernels, 8-bit activations; PQ layers on FP32 activations through their codebooks" : "FP32 layers", seconds);
    }
    return 0;
}

}  // namespace

void add_ppl(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("ppl", "perplexity on a text; with --scheme, KL divergence / top-1 / PPL ratio vs the reference");
    sub->footer(
        "With --scheme, the decoder's linear layers are quantized by RTN first (GGUF weights are dequantized to FP32 to form\n"
        "the reference, \"Q4_1-ref\" for SmolLM2) and KL divergence, top-1 agreement and the PPL ratio against the reference\n"
        "are reported. Fewer than 2 tokens of text is an error (nothing to score). JSON: NaN/Inf are written as null.");
    auto o = std::make_shared<PplOptions>();
    add_model_options(*sub, o->model);
    sub->add_option("--text", o->text, "UTF-8 text, CR stripped (default: $QFORGE_DATA/eval/wikitext-2-raw/wiki.test.raw)");
    sub->add_option("--max-tokens", o->max_tokens, "evaluate the first N tokens (BOS included when the tokenizer adds one)")
        ->check(CLI::Range(2L, long(1) << 30))
        ->capture_default_str();
    sub->add_option("--context", o->context, "window length (default: 512, or the model's context if smaller; at most the model's)")
        ->check(CLI::Range(2, 1 << 20));
    sub->add_option("--stride", o->stride, "sliding windows every N tokens, 1..context (default: the context, i.e. disjoint windows)")
        ->check(CLI::Range(1, 1 << 20));
    sub->add_option("--scheme", o->scheme, "quantize with this RTN scheme (e.g. rtn:w4g32a) and compare with the reference");
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
