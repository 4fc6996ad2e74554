#pragma once
// Opening a model for any subcommand: the format is detected from the file (llama2.c .bin,
// GGUF, qforge container, Hugging Face directory/safetensors), with its tokenizer.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <qforge/models/llama/model.hpp>
#include <qforge/pipelines/llama/quantize_options.hpp>
#include <qforge/sources/llama/source.hpp>

#include "options.hpp"

namespace cli {

/// A tokenizer and its rule for BOS/EOS: the tokenizer's own setting (GGUF
/// `tokenizer.ggml.add_bos_token`/`add_eos_token`; `tokenizer_config.json` `add_bos_token`/
/// `add_eos_token`; llama.cpp's defaults when absent: on for SentencePiece, off for byte-level
/// BPE; llama.2c: BOS always), unless --add-bos/--add-eos say otherwise. Perplexity, calibration,
/// FLORES lines and generation all tokenize through encode(), so they follow the same rule.
struct Tokenizer {
    std::function<std::vector<int>(const std::string& text)> pieces;  ///< the text's own tokens
    int bos = -1, eos = -1;
    bool add_bos = false, add_eos = false;
    std::string kind;  ///< "llama2c", "bpe" (byte-level), "spm" (SentencePiece), "tokenizer.json"
    std::function<std::string(int previous, int token)> decode;
    std::function<bool(int token)> is_end;  ///< EOS, or a chat turn's end

    /// The text's tokens with BOS first and EOS last when the rule says so.
    std::vector<int> encode(const std::string& text) const {
        std::vector<int> ids;
        if (add_bos && bos >= 0) ids.push_back(bos);
        const auto p = pieces(text);
        ids.insert(ids.end(), p.begin(), p.end());
        if (add_eos && eos >= 0) ids.push_back(eos);
        return ids;
    }
};

/// What a model file or directory is, from its content (magic bytes, header), never its name:
/// "hf" (a directory, or safetensors without qforge metadata), "qforge" (safetensors with
/// `qforge.format`), "gguf", "llama2c" (anything else: its loader checks the header).
std::string detect_model_kind(const std::string& path);

class Model {
public:
    /// --model (default: the stories260K checkpoint), --tokenizer, --add-bos, --add-eos.
    static Model open(const ModelOptions& options);

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

/// The first `max_tokens` tokens of a text file (exactly that many whenever the text holds them;
/// BOS first when the model's rule says so). Tokenizes a prefix cut after a line break, doubling
/// it until it holds more tokens than asked, so a long file is not tokenized whole.
std::vector<int> text_tokens(const Model& model, const std::string& path, std::size_t max_tokens);
/// text_tokens for scoring: an error (naming the file) when they are fewer than 2, i.e. nothing
/// to score.
std::vector<int> tokens_to_score(const Model& model, const std::string& path, std::size_t max_tokens);
/// The same as text_tokens for a text in memory.
std::vector<int> first_tokens(const Model& model, const std::string& text, std::size_t max_tokens);

class Progress;

/// Lines first..last (1-based, inclusive) of a text file; an error if it has fewer.
std::vector<std::string> file_lines(const std::string& path, int first, int last);
/// "A-B" -> (A, B).
std::pair<int, int> parse_lines(const std::string& text);
/// The FLORES languages of a devtest directory (file stems), sorted.
std::vector<std::string> flores_languages(const std::string& dir);

/// Calibration tokens from --calib PATH (default `default_text`) and --calib-tokens N (default
/// 8192): taken after the first `skip` tokens of that text (or --calib-skip), so that a slice
/// evaluated from the start of the same text and the calibration slice never overlap.
std::vector<int> calibration_tokens(const CalibOptions& options, const Model& model, const std::string& default_text, std::size_t skip);

/// The options of a model-level quantization run from the command line: --awq-search-rows,
/// calibration sequences of min(512, seq_len) tokens, progress on `bar` (which must outlive the
/// run) and the quantizer's notes on stderr.
qforge::llama::ModelQuantizeOptions model_quantize_options(const qforge::llama::Config& config, const qforge::RuntimeScheme& scheme,
                                                          const CalibOptions& calib_options, const qforge::Backend& backend, Progress& bar);

/// The decoder's linear layers of `fp32` (FP32 block linears) quantized with `scheme`: RTN
/// directly, GPTQ block by block on `calib` (empty calib with a GPTQ scheme is an error). Errors
/// name `label` (the model file) and the tensor.
qforge::llama::Weights quantize_model(const qforge::llama::Weights& fp32, const qforge::RuntimeScheme& scheme,
                                      const std::vector<int>& calib, const CalibOptions& calib_options, const qforge::Backend& backend,
                                      Progress& bar, const std::string& label);

/// A one-line progress bar on stderr, drawn only when a task runs longer than a second; when
/// stderr is not a terminal, a plain line every 10 s and one when done.
class Progress {
public:
    explicit Progress(std::string label);
    void update(double done, double total, const std::string& note = "");
    /// The run entered phase `what` (e.g. "capture"): the time since the previous phase began is
    /// added to that phase's total, which `finish` prints (where a quantization spends its time).
    void phase(const std::string& what);
    void finish();

private:
    std::string label_;
    double start_;
    std::vector<std::pair<std::string, double>> phases_;  // per phase name, seconds, in order of first entry
    std::string current_;
    double phase_start_ = 0.0;
    double last_line_ = 0.0;
    bool drawn_ = false;
};

}  // namespace cli
