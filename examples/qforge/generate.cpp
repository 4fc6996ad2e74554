// `qforge generate`: text from any model qforge reads, FP32, packed as stored, or quantized on
// the fly; greedy or sampled (temperature, top-p, seed). The prompt runs as one batch.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <qforge/models/llama/model.hpp>
#include <qforge/models/llama/sampler.hpp>

#include "commands.hpp"
#include "model.hpp"

namespace cli {
namespace {

struct GenerateOptions {
    ModelOptions model;
    std::string prompt, scheme;
    bool chat = false, json = false;
    long max_tokens = 128;
    double temperature = 0.0, top_p = 0.9;
    std::uint64_t seed = 1;
    int threads = 0;
};

int run(const GenerateOptions& opt) {
    auto model = Model::open(opt.model);
    qforge::llama::Weights quantized;
    const qforge::llama::Weights* weights = &model.weights();
    if (!opt.scheme.empty()) {
        const auto scheme = parse_scheme_option(opt.scheme);
        if (qforge::needs_calibration(scheme))
            throw CLI::ValidationError("--scheme", "generate quantizes with RTN only; " +
                                       std::string(scheme.pq || scheme.options.hadamard
                                                       ? "PQ and ',had' models cannot be written yet, so evaluate " + qforge::to_string(scheme) + " with 'qforge eval'"
                                                       : "write a " + scheme.method + " model with 'qforge quantize' and generate from it"));
        quantized = qforge::llama::quantize_block_linears(qforge::llama::dequantized_weights(*weights), scheme, qforge::Backend::best_cpu(opt.threads), model.path());
        weights = &quantized;
    }
    std::string prompt = opt.prompt;
    if (opt.chat) prompt = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n";
    const auto& tok = model.tokenizer();
    const auto ids = tok.encode(prompt);
    if (ids.empty())
        throw qforge::InvalidArgument("the prompt gives no tokens and the tokenizer adds no BOS: give --prompt or --add-bos on");
    const int seq_len = weights->config.seq_len;
    if (long(ids.size()) > seq_len)
        throw qforge::InvalidArgument("the prompt has " + std::to_string(ids.size()) + " tokens, more than the model's context of " +
                                      std::to_string(seq_len));
    long max_tokens = opt.max_tokens;
    if (long(ids.size()) + max_tokens > seq_len) {
        max_tokens = seq_len - long(ids.size());
        std::fprintf(stderr, "qforge generate: --max-tokens %ld capped to %ld: the prompt's %zu tokens and the new ones fill the model's context of %d\n",
                     opt.max_tokens, max_tokens, ids.size(), seq_len);
    }
    const bool json = opt.json;
    std::string text;
    int generated = 0;
    double prompt_seconds = 0;
    const auto start = std::chrono::steady_clock::now();
    if (max_tokens > 0) {
        const int context = int(ids.size() + std::size_t(max_tokens));
        qforge::llama::Session session(*weights, qforge::Backend::best_cpu(opt.threads), context);
        qforge::llama::Sampler sampler(float(opt.temperature), float(opt.top_p), opt.seed);
        auto logits = session.forward_batch(ids, 0, false).row(0);
        prompt_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double decode_seconds = seconds - prompt_seconds;
    const double decode_rate = generated > 0 ? generated / decode_seconds : 0.0;
    if (json) {
        JsonObject j;
        j.add("text", text).add("prompt_tokens", std::int64_t(ids.size())).add("add_bos", tok.add_bos).add("tokens", generated);
        j.add("prompt_seconds", prompt_seconds).add("seconds", seconds).add("decode_tokens_per_second", decode_rate);
        print_json(j);
    } else {
        std::printf("\n");
    }
    std::fflush(stdout);  // the text and its newline before the statistics, when both go to one file
    std::fprintf(stderr, "%zu prompt tokens in %.3f s, %d generated in %.3f s (%.1f tokens/s)\n", ids.size(), prompt_seconds, generated,
                 decode_seconds, decode_rate);
    return 0;
}

}  // namespace

void add_generate(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("generate", "text from a model, FP32, as stored, or quantized on the fly (greedy or sampled)");
    sub->footer("The model's format is recognised from its content (llama2.c, GGUF, Hugging Face, qforge container).");
    auto o = std::make_shared<GenerateOptions>();
    add_model_options(*sub, o->model);
    sub->add_flag("--chat", o->chat, "wrap the prompt in the ChatML template (<|im_start|>user ... assistant)");
    sub->add_option("--prompt", o->prompt, "text to continue (default: empty, start from BOS)");
    sub->add_option("--max-tokens", o->max_tokens, "tokens to generate (0: none; capped, with a note, where the model's context ends)")
        ->check(CLI::Range(0L, long(1) << 30))
        ->capture_default_str();
    sub->add_option("--temperature", o->temperature, "0 = greedy")->check(finite_in(0.0, 100.0))->capture_default_str();
    sub->add_option("--top-p", o->top_p, "nucleus sampling mass, in (0, 1]; unused when the temperature is 0")
        ->check(finite_in(0.0, 1.0))
        ->capture_default_str();
    sub->add_option("--seed", o->seed, "sampler seed")->check(whole_number())->capture_default_str();
    sub->add_option("--scheme", o->scheme, "quantize the decoder's linear layers first with this RTN scheme, e.g. rtn:w4g32a");
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout");
    sub->callback([o, &status] {
        if (o->temperature > 0 && o->top_p <= 0) throw CLI::ValidationError("--top-p", "must be > 0 when --temperature > 0, got 0");
        status = run(*o);
    });
}

}  // namespace cli
