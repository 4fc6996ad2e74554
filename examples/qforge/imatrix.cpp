// `qforge imatrix`: llama.cpp's importance matrix of a model on calibration text, in the GGUF form
// llama-quantize --imatrix reads (or the legacy .dat): what llama-imatrix computes, from any
// model qforge reads, in the memory of one block.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <qforge/io/output_path.hpp>
#include <qforge/pipelines/llama/imatrix.hpp>

#include "commands.hpp"
#include "model.hpp"

namespace cli {
namespace {

struct ImatrixOptions {
    ModelOptions model;
    CalibOptions calib;
    std::string out, format = "gguf";
    int chunk = 512, threads = 0;
    bool json = false;
};

int run(const ImatrixOptions& opt) {
    qforge::io::check_output_path(opt.out);
    auto model = Model::open(opt.model);
    const std::string default_text = data_dir() + "/eval/wikitext-2-raw/wiki.test.raw";
    const auto tokens = calibration_tokens(opt.calib, model, default_text, 16384);
    qforge::llama::CalibrationOptions o;
    o.sequence_length = std::min(opt.chunk, model.source().config().seq_len);
    o.backend = qforge::Backend::best_cpu(opt.threads);
    Progress bar("imatrix");
    const auto start = std::chrono::steady_clock::now();
    const std::string dataset = opt.calib.calib.empty() ? default_text : opt.calib.calib;
    const auto im = qforge::llama::compute_imatrix(model.source(), tokens, o, dataset,
                                                   [&](int block, int blocks) { bar.update(double(block), double(blocks)); });
    if (opt.format == "dat") im.save_legacy(opt.out);
    else im.save_gguf(opt.out);
    bar.finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (opt.json) {
        JsonObject j;
        j.add("model", model.path()).add("out", opt.out).add("format", opt.format).add("entries", std::int64_t(im.entries.size()));
        j.add("tokens", std::int64_t(tokens.size())).add("chunk_size", std::int64_t(im.chunk_size)).add("chunks", std::int64_t(im.chunk_count));
        j.add("seconds", seconds);
        print_json(j);
    } else {
        std::printf("wrote %s (%s): %zu entries from %zu tokens in %u chunks of %u (%.1f s)\n", opt.out.c_str(), opt.format.c_str(), im.entries.size(),
                    tokens.size(), im.chunk_count, im.chunk_size, seconds);
    }
    return 0;
}

}  // namespace

void add_imatrix(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("imatrix", "llama.cpp's importance matrix (imatrix) of a model on calibration text");
    sub->footer(
        "For each linear layer of the decoder blocks (blk.N.attn_q.weight ... blk.N.ffn_down.weight), the sum over the\n"
        "calibration tokens of each input's square, and the token count: what llama.cpp's llama-imatrix computes and\n"
        "llama-quantize --imatrix reads (GGUF form; --format dat for the legacy file). The model runs as given (FP32, or\n"
        "its packed weights dequantized), block by block. The output path is checked before any work.");
    auto o = std::make_shared<ImatrixOptions>();
    add_model_options(*sub, o->model);
    add_calib_options(*sub, o->calib);
    sub->remove_option(sub->get_option("--awq-search-rows"));
    sub->remove_option(sub->get_option("--awq-coarse-step"));
    sub->get_option("--calib")->description(
        "calibration text (default: WikiText-2 test after its first 16384 tokens, the slice ppl and eval score by default)");
    sub->get_option("--calib-skip")->description("tokens of the calibration text to skip first (default: 16384 for the default text, 0 for --calib FILE)");
    sub->get_option("--calib-tokens")->description("calibration tokens, in chunks of --chunk");
    sub->add_option("--chunk", o->chunk, "tokens per chunk (each runs from position 0, as llama-imatrix's context; at most the model's)")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    sub->add_option("--format", o->format, "gguf (llama.cpp's current form) or dat (the legacy file)")->check(CLI::IsMember({"gguf", "dat"}))->capture_default_str();
    sub->add_option("--out", o->out, "output file (checked before any work)")->required()->check(writable_output());
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
