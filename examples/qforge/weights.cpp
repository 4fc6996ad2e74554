// `qforge weights`: quantize every linear weight of a checkpoint with each scheme, pack it, and
// report the weight error (read back through the packed format's kernels) and bits per weight.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <qforge/qforge.hpp>
#include <qforge/runtime/dispatch.hpp>

#include <qforge/models/llama/model.hpp>

#include "commands.hpp"
#include "model.hpp"

namespace cli {
namespace {

struct Totals {
    double signal = 0, noise = 0, max_abs = 0, weights = 0, bytes = 0;
};

/// The layer's stored form (a packed grid, PQ codes, a column order, an input transform: what
/// evaluation multiplies) dequantized back and compared with `w`; its bytes as Linear counts them.
void measure(const qforge::llama::Linear& layer, std::span<const float> w, const qforge::Backend& backend, Totals& t) {
    const auto back = std::get<qforge::Fp32Matrix>(qforge::llama::dequantized_linear(layer, backend).weights()).data;
    for (std::size_t i = 0; i < w.size(); ++i) {
        const double d = double(w[i]) - double(back[i]);
        t.signal += double(w[i]) * double(w[i]);
        t.noise += d * d;
        t.max_abs = std::max(t.max_abs, std::fabs(d));
    }
    t.weights += double(w.size());
    t.bytes += double(layer.bytes());
}

struct WeightsOptions {
    ModelOptions model;
    std::vector<std::string> schemes;
    std::string isa;
    int threads = 0;
    bool json = false;
};

int run(const WeightsOptions& opt) {
    std::vector<std::string> schemes = opt.schemes;
    if (schemes.empty())
        schemes = {"rtn:w8g128a", "rtn:w4g32s", "rtn:w4g128a", "rtn:w4g128a,clip", "rtn:w3g128a",
                   "rtn:w3g128a,clip", "rtn:w3g64s,clip", "rtn:w2g64a", "rtn:w2g64a,clip"};
    std::vector<qforge::RuntimeScheme> parsed;
    for (const auto& s : schemes) {
        parsed.push_back(parse_scheme_option(s));
        if (qforge::needs_calibration(parsed.back()))
            throw CLI::ValidationError("--scheme", "weights measures schemes that need no calibration (rtn) only, got '" + s + "'");
        for (std::size_t i = 0; i + 1 < parsed.size(); ++i)  // a repeated row would be measured and shown twice
            if (parsed[i] == parsed.back()) throw CLI::ValidationError("--scheme", qforge::to_string(parsed.back()) + " is given twice");
    }
    const qforge::Backend backend = qforge::Backend::cpu(opt.isa.empty() ? qforge::best_isa() : qforge::parse_isa(opt.isa), opt.threads);

    auto model = Model::open(opt.model);
    const auto fp32 = qforge::llama::dequantized_weights(model.weights());  // packed checkpoints as their FP32 values
    struct Tensor {
        std::string name;
        const qforge::llama::Fp32Matrix* w;
    };
    std::vector<Tensor> linear;
    for (std::size_t l = 0; l < fp32.layers.size(); ++l)
        for (const auto& b : qforge::llama::block_linears)
            linear.push_back({qforge::llama::block_tensor_name(int(l), b.gguf),
                              &std::get<qforge::llama::Fp32Matrix>((fp32.layers[l].*b.member).weights())});

    const auto& c = fp32.config;
    std::fprintf(stderr, "%s (%s): dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d; %zu linear tensors, kernels: %s\n",
                 model.path().c_str(), model.kind().c_str(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                 linear.size(), backend.name().c_str());
    if (!opt.json)
        std::printf("%-20s %7s %12s %9s %10s %9s %8s\n", "scheme", "bits/w", "MSE", "SQNR dB", "max |err|", "rel Fro", "time s");

    qforge::io::Json::Array rows;
    for (const auto& scheme : parsed) {
        const auto start = std::chrono::steady_clock::now();
        Totals t;
        qforge::QuantizeSettings settings;
        settings.backend = backend;
        for (const auto& tensor : linear) {
            const auto& m = *tensor.w;
            try {
                measure(qforge::llama::packed_linear(
                            qforge::quantize(qforge::MatrixView<const float>(m.data.data(), std::size_t(m.rows), std::size_t(m.cols)), scheme, {}, settings)),
                        m.data, backend, t);
            } catch (const qforge::Error& e) {
                throw qforge::InvalidArgument(model.path() + ": tensor " + tensor.name + ": " + e.what());
            }
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double bpw = 8.0 * t.bytes / t.weights, mse = t.noise / t.weights;
        const double sqnr = t.noise == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(t.signal / t.noise);
        const double rel = std::sqrt(t.noise / t.signal);
        const std::string text = qforge::to_string(scheme);
        if (opt.json)
            rows.push_back(JsonObject()
                               .add("scheme", text)
                               .add("bits_per_weight", bpw)
                               .add("mse", mse)
                               .add("sqnr_db", sqnr)  // null when the error is exactly zero (infinite SQNR)
                               .add("max_abs_error", t.max_abs)
                               .add("relative_frobenius", rel)
                               .add("seconds", seconds));
        else
            std::printf("%-20s %7.3f %12.4e %9.2f %10.4e %9.4f %8.3f\n", text.c_str(), bpw, mse, sqnr, t.max_abs, rel, seconds);
    }
    if (opt.json)
        print_json(JsonObject()
                       .add("model", model.path())
                       .add("isa", backend.name())
                       .add("tensors", std::int64_t(linear.size()))
                       .add("results", std::move(rows)));
    return 0;
}

}  // namespace

void add_weights(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("weights", "quantize a model's weights with RTN schemes; table of weight error and bits/weight");
    sub->footer(
        "Quantizes the decoder's linear weights (FP32, or a packed checkpoint's dequantized values) with RTN schemes and prints,\n"
        "per scheme, the weight error over all of them, read back through the packed format's kernels, and the stored bits\n"
        "per weight of the packed format. JSON: an infinite SQNR (no error at all) is written as null.");
    auto o = std::make_shared<WeightsOptions>();
    add_model_options(*sub, o->model);
    sub->add_option("--scheme", o->schemes, "a scheme such as rtn:w4g128a (repeatable; default: a spread of RTN schemes)");
    add_threads_option(*sub, o->threads);
    sub->add_option("--isa", o->isa, "kernels to read weights back with (default: the best this CPU runs)")
        ->check(CLI::IsMember({"scalar", "avx2", "avx512_vnni"}));
    sub->add_flag("--json", o->json, "one JSON object on stdout instead of the table");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
