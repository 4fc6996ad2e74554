// `qforge lens`: the logit lens of a model and of its quantized version over a text, as a table
// and as an SVG plot of p(next token) per layer.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <qforge/models/llama/lens.hpp>

#include "args.hpp"
#include "model.hpp"

namespace {
const char* help = R"(usage: qforge lens [options]

Logit lens: each layer's residual stream through the final norm and the output head. Prints, per
layer, the mean probability of the actual next token and how often the lens' top token is the
next token, for the reference (decoder layers in FP32) and, with --scheme, the quantized model;
and the lens' most frequent top tokens. --svg writes a plot of p(next) per layer.

  --model PATH      model (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --tokenizer PATH  tokenizer (default: the model's own)
  --text PATH       text (default: $QFORGE_DATA/eval/wikitext-2-raw/wiki.test.raw)
  --max-tokens N    the first N tokens (default 2048)
  --context N       window length (default 512)
  --scheme S        also the model quantized with S (rtn, gptq, awq; calibrated as in 'eval')
  --calib-tokens N  calibration tokens for calibrated schemes (default 8192)
  --svg FILE        write the plot there
  --threads N       threads (default: all)
  --json            one JSON object on stdout
  --help            this text
)";

void write_svg(const std::string& path, const std::vector<std::pair<std::string, std::vector<qforge::llama::LensLayer>>>& series) {
    const double W = 640, H = 360, left = 60, right = 20, top = 30, bottom = 50;
    const std::size_t layers = series.front().second.size();
    double ymax = 0;
    for (const auto& s : series)
        for (const auto& l : s.second) ymax = std::max(ymax, l.mean_p_next);
    ymax = ymax > 0 ? ymax * 1.1 : 1.0;
    const auto X = [&](std::size_t i) { return left + (W - left - right) * (layers > 1 ? double(i) / double(layers - 1) : 0.0); };
    const auto Y = [&](double v) { return H - bottom - (H - top - bottom) * v / ymax; };
    std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"360\" font-family=\"sans-serif\" font-size=\"12\">\n";
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    char buf[256];
    std::snprintf(buf, sizeof buf, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", left, H - bottom, W - right, H - bottom);
    svg += buf;
    std::snprintf(buf, sizeof buf, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", left, top, left, H - bottom);
    svg += buf;
    for (int k = 0; k <= 4; ++k) {
        const double v = ymax * k / 4;
        std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.3f</text>\n", left - 5, Y(v) + 4, v);
        svg += buf;
    }
    for (std::size_t i = 0; i < layers; i += std::max<std::size_t>(1, layers / 10)) {
        std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%zu</text>\n", X(i), H - bottom + 18, i);
        svg += buf;
    }
    std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">layer</text>\n", (left + W - right) / 2, H - 10);
    svg += buf;
    std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"18\">mean p(next token) through the logit lens</text>\n", left);
    svg += buf;
    const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
    for (std::size_t s = 0; s < series.size(); ++s) {
        std::string points;
        for (std::size_t i = 0; i < layers; ++i) {
            std::snprintf(buf, sizeof buf, "%g,%g ", X(i), Y(series[s].second[i].mean_p_next));
            points += buf;
        }
        svg += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" + std::string(colours[s % 4]) + "\" points=\"" + points + "\"/>\n";
        std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", left + 10, top + 16 + 16 * double(s), colours[s % 4],
                      series[s].first.c_str());
        svg += buf;
    }
    svg += "</svg>\n";
    const std::string tmp = path + ".tmp";
    std::ofstream(tmp) << svg;
    std::filesystem::rename(tmp, path);
}
}  // namespace

int cmd_lens(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2, {"model", "tokenizer", "text", "max-tokens", "context", "scheme", "calib-tokens", "svg", "threads"},
                                 {"json", "help"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    auto model = cli::Model::open(args);
    const std::string text_path = args.get("text", cli::data_dir() + "/eval/wikitext-2-raw/wiki.test.raw");
    const int max_tokens = args.get_int("max-tokens", 2048), threads = args.get_int("threads", 0), context = args.get_int("context", 512);
    const auto tokens = cli::text_tokens(model, text_path, std::size_t(max_tokens));
    const auto reference = qforge::llama::dequantized_weights(model.weights());
    std::vector<std::pair<std::string, std::vector<qforge::llama::LensLayer>>> series;
    series.emplace_back("reference", qforge::llama::logit_lens(reference, tokens, context, qforge::best_isa(), threads));
    if (args.has("scheme")) {
        const auto scheme = qforge::parse_scheme(args.get("scheme", ""));
        std::vector<int> calib;
        if (scheme.method != "rtn") calib = cli::calibration_tokens(args, model, text_path, tokens.size());
        cli::Progress bar("quantize " + qforge::to_string(scheme));
        const auto q = cli::quantize_model(reference, scheme, calib, threads, bar);
        bar.finish();
        const auto fp = qforge::llama::dequantized_weights(q);
        series.emplace_back(qforge::to_string(scheme), qforge::llama::logit_lens(fp, tokens, context, qforge::best_isa(), threads));
    }
    if (args.has("svg")) write_svg(args.get("svg", ""), series);
    const auto& tok = model.tokenizer();
    if (args.has("json")) {
        std::printf("{\"tokens\":%zu,\"series\":[", tokens.size());
        for (std::size_t s = 0; s < series.size(); ++s) {
            std::printf("%s{\"label\":%s,\"layers\":[", s ? "," : "", cli::json_string(series[s].first).c_str());
            for (std::size_t l = 0; l < series[s].second.size(); ++l) {
                const auto& L = series[s].second[l];
                std::printf("%s{\"p_next\":%.6f,\"top1_next\":%.6f,\"frequent\":[", l ? "," : "", L.mean_p_next, L.top1_next);
                for (std::size_t k = 0; k < L.frequent.size(); ++k)
                    std::printf("%s%s", k ? "," : "", cli::json_string(tok.decode(-1, L.frequent[k].first)).c_str());
                std::printf("]}");
            }
            std::printf("]}");
        }
        std::printf("]}\n");
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
    if (args.has("svg")) std::printf("\nplot: %s\n", args.get("svg", "").c_str());
    return 0;
}
