// `qforge lens`: the logit lens of a model and of its quantized version over a text, as a table
// and as an SVG plot of p(next token) per layer.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <qforge/models/llama/lens.hpp>

#include <qforge/io/output_path.hpp>

#include "commands.hpp"
#include "model.hpp"
#include "plot.hpp"

namespace cli {
namespace {

void write_svg(const std::string& path, const std::vector<std::pair<std::string, std::vector<qforge::llama::LensLayer>>>& series) {
    Plot p;
    p.title = "mean p(next token) through the logit lens";
    p.x_label = "layer";
    p.y_label = "mean p(next token)";
    p.y_from_zero = true;
    for (const auto& [label, layers] : series) {
        PlotSeries s{label, {}};
        for (std::size_t i = 0; i < layers.size(); ++i) s.points.emplace_back(double(i), layers[i].mean_p_next);
        p.series.push_back(std::move(s));
    }
    write_plot(path, p);
}

struct LensOptions {
    ModelOptions model;
    CalibOptions calib;
    std::string text, scheme, svg;
    long max_tokens = 2048;
    int context = 0, threads = 0;
    bool json = false;
};

int run(const LensOptions& opt) {
    std::optional<qforge::RuntimeScheme> scheme;
    if (!opt.scheme.empty()) scheme = parse_scheme_option(opt.scheme);
    auto model = Model::open(opt.model);
    const std::string text_path = opt.text.empty() ? data_dir() + "/eval/wikitext-2-raw/wiki.test.raw" : opt.text;
    const qforge::Backend backend = qforge::Backend::best_cpu(opt.threads);
    const auto tokens = tokens_to_score(model, text_path, std::size_t(opt.max_tokens));
    const auto reference = qforge::llama::dequantized_weights(model.weights(), backend);
    const int context = context_or_default(opt.context, reference.config.seq_len);
    std::vector<std::pair<std::string, std::vector<qforge::llama::LensLayer>>> series;
    series.emplace_back("reference", qforge::llama::logit_lens(reference, tokens, context, backend));
    if (scheme) {
        std::vector<int> calib;
        if (qforge::needs_calibration(*scheme)) calib = calibration_tokens(opt.calib, model, text_path, tokens.size());
        Progress bar("quantize " + qforge::to_string(*scheme));
        const auto q = quantize_model(reference, *scheme, calib, opt.calib, backend, bar, model.path());
        bar.finish();
        const auto fp = qforge::llama::dequantized_weights(q, backend);
        series.emplace_back(qforge::to_string(*scheme), qforge::llama::logit_lens(fp, tokens, context, backend));
    }
    if (!opt.svg.empty()) write_svg(opt.svg, series);
    const auto& tok = model.tokenizer();
    if (opt.json) {
        using qforge::io::Json;
        Json::Array out;
        for (const auto& [label, layers] : series) {
            Json::Array ls;
            for (const auto& L : layers) {
                Json::Array frequent;
                for (const auto& f : L.frequent) frequent.emplace_back(tok.decode(-1, f.first));
                ls.push_back(JsonObject().add("p_next", L.mean_p_next).add("top1_next", L.top1_next).add("frequent", std::move(frequent)));
            }
            out.push_back(JsonObject().add("label", label).add("layers", std::move(ls)));
        }
        print_json(JsonObject().add("tokens", std::int64_t(tokens.size())).add("context", context).add("series", std::move(out)));
        return 0;
    }
    std::printf("logit lens over %zu tokens of %s\n\n| layer |", tokens.size(), text_path.c_str());
    for (const auto& s : series) std::printf(" p(next) %-12.12s | top-1 %-12.12s |", s.first.c_str(), s.first.c_str());
    std::printf(" most frequent lens tokens (reference)\n");
    for (std::size_t l = 0; l < series.front().second.size(); ++l) {
        std::printf("| %5zu |", l);
        for (const auto& s : series) std::printf(" %20.4f | %18.2f%% |", s.second[l].mean_p_next, 100 * s.second[l].top1_next);
        std::string words;
        for (const auto& [token, count] : series.front().second[l].frequent) words += " '" + tok.decode(-1, token) + "'";
        std::printf("%s\n", words.c_str());
    }
    if (!opt.svg.empty()) std::printf("\nplot: %s\n", opt.svg.c_str());
    return 0;
}

}  // namespace

void add_lens(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("lens", "logit lens per layer (reference vs quantized), table and SVG plot");
    sub->footer(
        "Logit lens: each layer's residual stream through the final norm and the output head. Prints, per layer, the mean\n"
        "probability of the actual next token and how often the lens' top token is the next token, for the reference\n"
        "(decoder layers in FP32) and, with --scheme, the quantized model; and the lens' most frequent top tokens.");
    auto o = std::make_shared<LensOptions>();
    add_model_options(*sub, o->model);
    sub->add_option("--text", o->text, "text (default: $QFORGE_DATA/eval/wikitext-2-raw/wiki.test.raw)");
    sub->add_option("--max-tokens", o->max_tokens, "the first N tokens")->check(CLI::Range(2L, long(1) << 30))->capture_default_str();
    sub->add_option("--context", o->context, "window length (default: 512, or the model's context if smaller; at most the model's)")
        ->check(CLI::Range(2, 1 << 20));
    sub->add_option("--scheme", o->scheme, "also the model quantized with this scheme (rtn, gptq, awq; calibrated as in 'eval')");
    add_calib_options(*sub, o->calib);
    sub->add_option("--svg", o->svg, "write the plot there (checked before any work)")->check(writable_output());
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
