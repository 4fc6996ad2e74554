#include "options.hpp"

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <qforge/core/parallel.hpp>
#include <qforge/quantizers/registry.hpp>
#include <qforge/io/output_path.hpp>

namespace cli {

std::string data_dir() {
    const char* env = std::getenv("QFORGE_DATA");
    return env && *env ? env : QFORGE_DEFAULT_DATA;
}

void add_model_options(CLI::App& app, ModelOptions& o) {
    app.add_option("--model", o.model,
                   "model file or directory, recognised by its content: llama2.c checkpoint, GGUF, Hugging Face "
                   "directory or safetensors, qforge container (default: $QFORGE_DATA/models/stories260K/stories260K.bin)");
    app.add_option("--tokenizer", o.tokenizer,
                   "tokenizer, recognised by its content: llama2.c tokenizer.bin, a GGUF's vocabulary (byte-level BPE or "
                   "SentencePiece), or tokenizer.json (default: the model's own; tok512.bin for stories260K)");
    app.add_option("--add-bos", o.add_bos,
                   "prepend BOS to every text: auto follows the tokenizer's own setting (GGUF tokenizer.ggml.add_bos_token, "
                   "tokenizer_config.json add_bos_token; llama2.c always)")
        ->check(CLI::IsMember({"auto", "on", "off"}))
        ->capture_default_str();
    app.add_option("--add-eos", o.add_eos, "append EOS to every text: auto follows the tokenizer's own setting")
        ->check(CLI::IsMember({"auto", "on", "off"}))
        ->capture_default_str();
}

void add_threads_option(CLI::App& app, int& threads) {
    app.add_option("--threads", threads, "threads (0 = all; more than the machine has are capped to its count)")
        ->transform(CLI::Validator(
            [](std::string& value) -> std::string {
                char* end = nullptr;
                errno = 0;
                const long long n = std::strtoll(value.c_str(), &end, 10);
                if (value.empty() || *end != '\0' || errno == ERANGE || n < 0)
                    return "needs a whole number >= 0 (0 = all hardware threads), got '" + value + "'";
                const int have = qforge::default_threads();
                if (n > have) {
                    static bool said = false;
                    if (!said) std::fprintf(stderr, "qforge: --threads %s capped to the %d hardware threads this machine has\n", value.c_str(), have);
                    said = true;
                    value = std::to_string(have);
                }
                return "";
            },
            "INT>=0"))
        ->capture_default_str();
}

void add_calib_options(CLI::App& app, CalibOptions& o) {
    app.add_option("--calib", o.calib,
                   "calibration text for gptq/awq schemes (default: the evaluation text, the slice after the evaluated tokens)");
    app.add_option("--calib-tokens", o.calib_tokens, "calibration tokens, in sequences of 512")
        ->check(CLI::Range(2L, long(INT_MAX)))
        ->capture_default_str();
    app.add_option("--calib-skip", o.calib_skip,
                   "tokens of the calibration text to skip first (default: the evaluated slice when --calib is the evaluation text)")
        ->check(CLI::Range(0L, long(INT_MAX)));
    app.add_option("--awq-search-rows", o.awq_search_rows,
                   "awq schemes: output rows of each layer the scale search measures, a stride sample (0: every row; docs/awq.md)")
        ->check(CLI::Range(0L, long(INT_MAX)))
        ->capture_default_str();
    app.add_option("--awq-coarse-step", o.awq_coarse_step,
                   "awq schemes: the scale search measures every Nth alpha of its grid, then the points near the best (1: every point; docs/awq.md)")
        ->check(CLI::Range(1L, 20L))
        ->capture_default_str();
}

CLI::Validator whole_number() {
    return CLI::Validator(
        [](std::string& value) -> std::string {
            if (value.empty() || value.size() > 19 || value.find_first_not_of("0123456789") != std::string::npos)
                return "needs a whole number >= 0, got '" + value + "'";
            return "";
        },
        "UINT");
}

CLI::Validator finite_in(double lo, double hi) {
    return CLI::Validator(
        [lo, hi](std::string& value) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(value.c_str(), &end);
            if (value.empty() || *end != '\0') return "needs a number, got '" + value + "'";
            if (!std::isfinite(v) || v < lo || v > hi)
                return "needs a finite number in [" + CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) + "], got '" + value + "'";
            return "";
        },
        "FLOAT in [" + CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) + "]");
}

CLI::Validator writable_output() {
    return CLI::Validator(
        [](std::string& value) -> std::string {
            const auto why = qforge::io::output_path_problem(value);
            return why.empty() ? "" : "'" + value + "': " + why;
        },
        "FILE");
}

std::string line_range_problem(const std::string& text) {
    const auto dash = text.find('-');
    const auto whole = [](const std::string& t) {
        return !t.empty() && t.size() <= 9 && t.find_first_not_of("0123456789") == std::string::npos;
    };
    if (dash == std::string::npos || !whole(text.substr(0, dash)) || !whole(text.substr(dash + 1)))
        return "needs a line range A-B (1-based, e.g. 1-506), got '" + text + "'";
    const long a = std::atol(text.substr(0, dash).c_str()), b = std::atol(text.substr(dash + 1).c_str());
    if (a < 1 || b < a) return "needs 1 <= A <= B in the line range A-B, got '" + text + "'";
    return "";
}

CLI::Validator line_range() {
    return CLI::Validator([](std::string& value) { return line_range_problem(value); }, "A-B");
}

int context_or_default(int asked, int model_seq_len) { return asked > 0 ? asked : std::min(512, model_seq_len); }

void print_json(const qforge::io::Json& value) {
    const std::string text = value.dump();
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
}

qforge::RuntimeScheme parse_scheme_option(const std::string& text, const std::string& option) {
    try {
        return qforge::parse_scheme(text);
    } catch (const qforge::InvalidArgument& e) {
        throw CLI::ValidationError(option, e.what());
    }
}

}  // namespace cli
