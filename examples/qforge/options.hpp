#pragma once
// The options the subcommands share, declared once with CLI11 (Debian libcli11-dev): one spelling,
// one type, one range check and one help line per option for every subcommand. Every bad value
// is refused by CLI11 with the option's name and the value, before any work starts.
#include <CLI/CLI.hpp>

#include <string>

#include <qforge/core/scheme.hpp>
#include <qforge/io/json.hpp>

namespace cli {

/// QFORGE_DATA, or the build's default (../shared/data beside the project).
std::string data_dir();

/// --model, --tokenizer, --add-bos, --add-eos: what Model::open reads.
struct ModelOptions {
    std::string model;      ///< empty: the stories260K checkpoint under data_dir()
    std::string tokenizer;  ///< empty: the model's own
    std::string add_bos = "auto", add_eos = "auto";  ///< auto (the tokenizer's own setting), on, off
};
void add_model_options(CLI::App& app, ModelOptions& o);

/// --threads N (0 = all hardware threads). A count above the machine's is capped to it, with one
/// note on stderr: more threads than cores only add waiting.
void add_threads_option(CLI::App& app, int& threads);

/// --calib, --calib-tokens, --calib-skip: calibration text for GPTQ/AWQ; --awq-search-rows.
struct CalibOptions {
    std::string calib;  ///< empty: the evaluation text (the slice after the evaluated tokens)
    long calib_tokens = 8192;
    long calib_skip = -1;  ///< -1: not given
    long awq_search_rows = 512;  ///< AWQ's α search: output rows measured per layer (0: all)
    long awq_coarse_step = 5;    ///< AWQ's α search: coarse step over its grid (1: every point)
};
void add_calib_options(CLI::App& app, CalibOptions& o);

/// Why `text` is not a line range "A-B" with 1 <= A <= B ("" when it is one).
std::string line_range_problem(const std::string& text);
/// The same as a CLI11 check.
CLI::Validator line_range();

/// A whole number >= 0 (for seeds: CLI11 would wrap "-3" to 2^64 - 3).
CLI::Validator whole_number();

/// A number that is finite and within [lo, hi] (CLI11's Range lets NaN through).
CLI::Validator finite_in(double lo, double hi);

/// An output path that can be written: its directory exists and it is not a directory itself.
/// Checked when the option is parsed, i.e. before any work starts.
CLI::Validator writable_output();

/// The model's context when --context was not given, else the value asked for (the library
/// refuses one larger than the model's).
int context_or_default(int asked, int model_seq_len);

/// One JSON value on stdout, through the one writer (NaN/Inf as null, invalid UTF-8 replaced).
void print_json(const qforge::io::Json& value);

/// An ordered JSON object built member by member.
class JsonObject {
public:
    JsonObject& add(std::string key, qforge::io::Json value) {
        members_.emplace_back(std::move(key), std::move(value));
        return *this;
    }
    qforge::io::Json json() const { return qforge::io::Json(members_); }
    operator qforge::io::Json() const { return json(); }

private:
    qforge::io::Json::Object members_;
};

/// qforge::parse_scheme for the value of `option`: a bad scheme is a usage error naming the
/// option and the value (CLI::ValidationError, exit 2), as CLI11 reports its own checks.
qforge::RuntimeScheme parse_scheme_option(const std::string& text, const std::string& option = "--scheme");

}  // namespace cli
