// `qforge quantize`: streams a model into a qforge container, quantizing the decoder's linear
// layers with a scheme and any weight matching an --override pattern with its own action.
#include <fnmatch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <qforge/io/output_path.hpp>
#include <qforge/container/llama/container.hpp>
#include <qforge/pipelines/llama/quantizing_source.hpp>
#include <qforge/models/llama/size.hpp>

#include "commands.hpp"
#include "model.hpp"

namespace cli {
namespace {

struct QuantizeOptions {
    ModelOptions model;
    CalibOptions calib;
    std::string scheme, out;
    std::vector<std::string> overrides;
    int threads = 0;
    bool json = false;
};

int run(QuantizeOptions opt) {
    if (opt.scheme.empty() && opt.overrides.empty()) throw CLI::RequiredError("--scheme (or --override)");
    // every action is checked before any work
    std::vector<std::pair<std::string, std::string>> overrides;
    for (const auto& rule : opt.overrides) {
        const auto eq = rule.rfind('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == rule.size())
            throw CLI::ValidationError("--override", "needs PATTERN=ACTION, got '" + rule + "'");
        const std::string action = rule.substr(eq + 1);
        if (action != "f32" && action != "keep") {
            const auto s = qforge::parse_scheme(action);
            if (qforge::method_of(s).needs_calibration())
                throw CLI::ValidationError("--override", "'" + rule + "': only rtn schemes, f32 or keep (calibrated methods apply through --scheme)");
        }
        overrides.emplace_back(rule.substr(0, eq), action);
    }
    std::optional<qforge::RuntimeScheme> scheme;
    if (!opt.scheme.empty()) scheme = qforge::parse_scheme(opt.scheme);
    qforge::io::check_output_path(opt.out);

    auto model = Model::open(opt.model);
    // a pattern that names no matrix of the model (a typo) would silently do nothing
    {
        std::vector<std::string> names = {"token_embd.weight", "output.weight"};
        for (int l = 0; l < model.source().config().n_layers; ++l)
            for (const auto& b : qforge::llama::block_linears) names.push_back(qforge::llama::block_tensor_name(l, b.gguf));
        for (const auto& [pattern, action] : overrides) {
            bool hit = false;
            for (const auto& name : names) hit = hit || ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;  // the writer's glob
            if (!hit)
                throw CLI::ValidationError("--override", "'" + pattern + "=" + action + "' matches no weight of " + model.path() +
                                                             " (names: token_embd.weight, output.weight, blk.N.attn_q.weight ... blk.N.ffn_down.weight)");
        }
    }
    qforge::llama::ContainerOptions o;
    o.backend = qforge::Backend::best_cpu(opt.threads);
    o.tokenizer = model.tokenizer_path();
    o.source = std::filesystem::absolute(model.path()).string();
    // a weight kept from a container keeps the record of the scheme that made it (the source's scheme_of)
    const auto start = std::chrono::steady_clock::now();
    // GPTQ/AWQ quantize block by block as the container asks for each block's tensors
    // (QuantizingSource): one block's FP32 weights and statistics in memory, whatever the depth,
    // each block written as it finishes. RTN streams weight by weight from the source.
    std::unique_ptr<qforge::llama::QuantizingSource> calibrated;
    std::unique_ptr<Progress> calibrated_bar;
    if (scheme) {
        if (qforge::method_of(*scheme).needs_calibration()) {
            // an override on a block linear would act on the calibrated method's output (f32 = its
            // dequantized weights, rtn = quantized twice): refused, naming the tensor
            for (int l = 0; l < model.source().config().n_layers; ++l)
                for (const auto& b : qforge::llama::block_linears) {
                    const auto name = qforge::llama::block_tensor_name(l, b.gguf);
                    if (const auto action = qforge::llama::action_for(overrides, name); action != "keep")
                        throw CLI::ValidationError("--override", "'" + name + "=" + action + "': the decoder's linear layers are quantized by " +
                                                                     qforge::to_string(*scheme) + "; overrides apply to the other weights");
                }
            const auto calib = calibration_tokens(opt.calib, model, data_dir() + "/eval/wikitext-2-raw/wiki.test.raw", 16384);
            calibrated_bar = std::make_unique<Progress>(qforge::to_string(*scheme));
            calibrated = std::make_unique<qforge::llama::QuantizingSource>(
                model.source(), calib, *scheme, model_quantize_options(model.source().config(), *scheme, opt.calib, o.backend, *calibrated_bar));
        } else {
            for (const auto& b : qforge::llama::block_linears)
                o.rules.emplace_back("blk.*." + std::string(b.gguf) + ".weight", qforge::to_string(*scheme));
        }
    }
    for (const auto& rule : overrides) o.rules.push_back(rule);
    Progress bar("write");
    // a calibrated run shows its own bar (block and step); the writer's would draw over it
    if (!calibrated)
        o.progress = [&](std::size_t done, std::size_t total, const std::string& name) { bar.update(double(done), double(total), name); };
    qforge::llama::write_container(calibrated ? static_cast<const qforge::llama::ModelSource&>(*calibrated) : model.source(), opt.out, o);
    bar.finish();
    if (calibrated_bar) calibrated_bar->finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    // bits per weight as every command counts them: Linear::bytes() of the decoder's layers
    qforge::llama::ContainerSource written(opt.out);
    const auto w = qforge::llama::load_weights(written);
    const double bpw = qforge::llama::block_bits_per_weight(w);
    const auto file_bytes = std::filesystem::file_size(opt.out);
    if (opt.json) {
        JsonObject j;
        j.add("model", model.path()).add("out", opt.out).add("file_bytes", std::int64_t(file_bytes)).add("block_bits_per_weight", bpw);
        j.add("seconds", seconds);
        print_json(j);
    } else {
        std::printf("wrote %s: %.2f MB, decoder linear layers at %.3f bits/weight (%.1f s)\n", opt.out.c_str(), double(file_bytes) / 1e6, bpw,
                    seconds);
    }
    return 0;
}

}  // namespace

void add_quantize(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("quantize", "write a quantized model (qforge container) with per-weight overrides");
    sub->footer(
        "Writes qforge's container (safetensors; codes, scales, zeros as tensors, each weight's scheme and the format\n"
        "version in the metadata), which 'ppl', 'generate' and 'eval' read back whatever the file's name. The output path\n"
        "is checked before any work; the file is written under a temporary name and renamed when complete.\n"
        "Weights are named the llama.cpp way: token_embd.weight, blk.N.attn_q.weight (attn_k, attn_v, attn_output,\n"
        "ffn_gate, ffn_up, ffn_down), output.weight. The decoder's linear layers get --scheme; embeddings and the output\n"
        "head are kept as stored unless an override names them.");
    auto o = std::make_shared<QuantizeOptions>();
    add_model_options(*sub, o->model);
    sub->add_option("--scheme", o->scheme,
                    "scheme for the decoder's linear layers, e.g. rtn:w4g128a or gptq:w4g128a,act (GPTQ/AWQ quantize block by "
                    "block, each block written as it finishes: memory of one block, whatever the depth)");
    add_calib_options(*sub, o->calib);
    // quantize evaluates nothing: say which slice the defaults take
    sub->get_option("--calib")->description(
        "calibration text for gptq/awq schemes (default: WikiText-2 test after its first 16384 tokens, the slice ppl and eval "
        "score by default; results depend on the slice: use 2048 or more tokens)");
    sub->get_option("--calib-skip")->description("tokens of the calibration text to skip first (default: 16384 for the default text, 0 for --calib FILE)");
    sub->add_option("--override", o->overrides,
                    "PATTERN=ACTION for weights matching the glob: an rtn scheme, f32 or keep (repeatable, later ones win), e.g. "
                    "'output.weight=rtn:w8g32s'; with a gptq/awq --scheme, only weights outside the decoder blocks; a pattern that names no "
                    "weight is an error");
    sub->add_option("--out", o->out, "output file (a qforge container, safetensors)")->required()->check(writable_output());
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
