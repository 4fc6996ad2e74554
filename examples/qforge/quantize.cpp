// `qforge quantize`: streams a model into a qforge container, quantizing the decoder's linear
// layers with a scheme and any weight matching an --override pattern with its own action.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <qforge/models/llama/container.hpp>

#include "args.hpp"
#include "model.hpp"

namespace {
const char* help = R"(usage: qforge quantize --scheme S --out PATH [options]

Writes a quantized model in qforge's container (safetensors; codes, scales, zeros as tensors,
each weight's scheme and the format version in the metadata), which 'ppl', 'generate' and
'eval' read back. Weights are converted one at a time (the model is never held whole), and the
file is written under a temporary name and renamed when complete.

Weights are named the llama.cpp way: token_embd.weight, blk.N.attn_q.weight (attn_k, attn_v,
attn_output, ffn_gate, ffn_up, ffn_down), output.weight. The decoder's linear layers get
--scheme; embeddings and the output head are kept as stored unless an override names them.

  --model PATH            model to quantize (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH        tokenizer to record in the container (default: the model's)
  --scheme S              scheme for the decoder's linear layers, e.g. rtn:w4g128a or gptq:w4g128a,act
                          (GPTQ quantizes in memory block by block first, then writes)
  --calib PATH            calibration text for GPTQ (default: WikiText-2 test from QFORGE_DATA)
  --calib-tokens N        calibration tokens (default 8192)
  --calib-skip N          tokens of the calibration text to skip first (default 16384: the slice
                          'ppl' and 'eval' evaluate by default, so the two never overlap)
  --override PAT=ACTION   for weights matching the glob PAT: a scheme, "f32" or "keep"
                          (repeatable, later ones win), e.g. --override 'output.weight=rtn:w8g32s'
  --out PATH              output file (.safetensors)
  --threads N             threads (default: all)
  --json                  one JSON object on stdout
  --help                  this text
)";
}  // namespace

int cmd_quantize(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2, {"model", "tokenizer", "scheme", "override", "out", "calib", "calib-tokens", "calib-skip", "threads"},
                                 {"json", "help"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    if (!args.has("scheme") && !args.has("override")) throw qforge::InvalidArgument("--scheme is required (see --help)");
    if (!args.has("out")) throw qforge::InvalidArgument("--out is required (see --help)");
    auto model = cli::Model::open(args);
    const std::string out = args.get("out", "");
    qforge::llama::ContainerOptions o;
    o.threads = args.get_int("threads", 0);
    o.tokenizer = model.tokenizer_path();
    o.source = std::filesystem::absolute(model.path()).string();
    const auto start = std::chrono::steady_clock::now();
    // GPTQ needs every block's calibration inputs: it quantizes the model in memory first and the
    // container then keeps those layers; RTN streams weight by weight from the source.
    std::unique_ptr<qforge::llama::Weights> gptq_model;
    std::unique_ptr<qforge::llama::WeightsSource> gptq_source;
    if (args.has("scheme")) {
        const auto scheme = qforge::parse_scheme(args.get("scheme", ""));
        if (scheme.method != "rtn") {
            const auto calib = cli::calibration_tokens(args, model, cli::data_dir() + "/eval/wikitext-2-raw/wiki.test.raw",
                                                       std::size_t(args.get_int("calib-skip", 16384)));
            const auto fp32 = qforge::llama::dequantized_weights(model.weights());
            cli::Progress bar("gptq " + qforge::to_string(scheme));
            gptq_model = std::make_unique<qforge::llama::Weights>(cli::quantize_model(fp32, scheme, calib, o.threads, bar));
            bar.finish();
            gptq_source = std::make_unique<qforge::llama::WeightsSource>(*gptq_model, model.path(), model.source().tied_output());
        } else {
            for (const auto& b : qforge::llama::block_linears) o.rules.emplace_back("blk.*." + std::string(b.gguf) + ".weight", qforge::to_string(scheme));
        }
    }
    for (const auto& rule : args.all("override")) {
        const auto eq = rule.rfind('=');
        if (eq == std::string::npos || eq == 0) throw qforge::InvalidArgument("--override needs PATTERN=ACTION, got '" + rule + "'");
        const std::string action = rule.substr(eq + 1);
        if (action.rfind("rtn:", 0) != 0 && action != "f32" && action != "keep")
            throw qforge::InvalidArgument("--override: only rtn schemes, f32 or keep (calibrated methods apply through --scheme)");
        o.rules.emplace_back(rule.substr(0, eq), action);
    }
    cli::Progress bar("write");
    o.progress = [&](std::size_t done, std::size_t total, const std::string& name) { bar.update(double(done), double(total), name); };
    qforge::llama::write_container(gptq_source ? static_cast<const qforge::llama::ModelSource&>(*gptq_source) : model.source(), out, o);
    bar.finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const qforge::llama::ContainerSource written(out);
    const auto& c = written.config();
    std::size_t block_bytes = 0, block_params = 0;
    for (int l = 0; l < c.n_layers; ++l)
        for (const auto& b : qforge::llama::block_linears) {
            const auto name = qforge::llama::block_tensor_name(l, b.gguf);
            const auto layout = written.layout(name);
            block_bytes += written.stored_bytes(name);
            block_params += std::size_t(layout.rows) * std::size_t(layout.cols);
        }
    const double bpw = 8.0 * double(block_bytes) / double(block_params);
    const auto file_bytes = std::filesystem::file_size(out);
    if (args.has("json"))
        std::printf("{\"model\":%s,\"out\":%s,\"file_bytes\":%ju,\"block_bits_per_weight\":%.4f,\"seconds\":%.3f}\n",
                    cli::json_string(model.path()).c_str(), cli::json_string(out).c_str(), std::uintmax_t(file_bytes), bpw, seconds);
    else
        std::printf("wrote %s: %.2f MB, decoder linear layers at %.3f bits/weight (%.1f s)\n", out.c_str(), double(file_bytes) / 1e6, bpw,
                    seconds);
    return 0;
}
