#pragma once
// Opening a model for any subcommand: the format is detected from the file (llama2.c .bin,
// GGUF, qforge container, Hugging Face directory/safetensors), with its tokenizer.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <qforge/models/llama/model.hpp>
#include <qforge/models/llama/source.hpp>

#include "args.hpp"

namespace cli {

struct Tokenizer {
    std::function<std::vector<int>(const std::string& text)> encode;  ///< with BOS first
    std::function<std::string(int previous, int token)> decode;
    std::function<bool(int token)> is_end;  ///< EOS, or a chat turn's end
};

class Model {
public:
    /// --model (default: the stories260K checkpoint) and --tokenizer.
    static Model open(const Args& args);

    const std::string& path() const { return path_; }
    const std::string& kind() const { return kind_; }  ///< "llama2c", "gguf", "qforge", "hf"
    const qforge::llama::ModelSource& source() const { return *source_; }
    /// The whole model in memory (loaded on first use).
    const qforge::llama::Weights& weights();
    const Tokenizer& tokenizer() const { return tokenizer_; }
    /// The file the tokenizer comes from (recorded in containers written from this model).
    const std::string& tokenizer_path() const { return tokenizer_path_; }

private:
    std::string path_, kind_, tokenizer_path_;
    std::shared_ptr<void> keep_;  // the open file the source reads from
    std::shared_ptr<qforge::llama::ModelSource> source_;
    std::shared_ptr<qforge::llama::Weights> weights_;
    Tokenizer tokenizer_;
};

/// Reads a UTF-8 text file with carriage returns dropped.
std::string read_text(const std::string& path);

/// The first `max_tokens` tokens of a text file (BOS first), tokenizing only the prefix needed.
std::vector<int> text_tokens(const Model& model, const std::string& path, std::size_t max_tokens);

class Progress;

/// Lines first..last (1-based, inclusive) of a text file; an error if it has fewer.
std::vector<std::string> file_lines(const std::string& path, int first, int last);
/// "A-B" -> (A, B).
std::pair<int, int> parse_lines(const std::string& text);
/// The FLORES languages of a devtest directory (file stems), sorted.
std::vector<std::string> flores_languages(const std::string& dir);

/// Calibration tokens from --calib PATH (default `default_text`) and --calib-tokens N (default
/// 8192): taken after the first `skip` tokens of that text, so that a slice evaluated from the
/// start of the same text and the calibration slice never overlap.
std::vector<int> calibration_tokens(const Args& args, const Model& model, const std::string& default_text, std::size_t skip);

/// The decoder's linear layers of `fp32` (FP32 block linears) quantized with `scheme`: RTN
/// directly, GPTQ block by block on `calib` (empty calib with a GPTQ scheme is an error).
qforge::llama::Weights quantize_model(const qforge::llama::Weights& fp32, const qforge::RuntimeScheme& scheme,
                                      const std::vector<int>& calib, int threads, Progress& bar);

/// A one-line progress bar on stderr, drawn only when a task runs longer than a second.
class Progress {
public:
    explicit Progress(std::string label);
    void update(double done, double total, const std::string& note = "");
    void finish();

private:
    std::string label_;
    double start_;
    bool drawn_ = false;
};

}  // namespace cli
