#include "model.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>  // isatty: a bar for a terminal, lines for a log

#include <qforge/io/gguf.hpp>
#include <qforge/io/gguf_vocab.hpp>
#include <qforge/io/llama2c.hpp>
#include <qforge/io/llama2c_tokenizer.hpp>
#include <qforge/io/spm_tokenizer.hpp>
#include <qforge/container/llama/container.hpp>
#include <qforge/sources/llama/gguf_loader.hpp>
#include <qforge/pipelines/llama/quantize_model.hpp>
#include <qforge/sources/llama/hf_source.hpp>
#include <qforge/sources/llama/llama2c_source.hpp>
#ifdef QFORGE_HAVE_TEXT
#include <qforge/io/bpe_tokenizer.hpp>
#include <qforge/io/hf_tokenizer.hpp>
#endif

namespace cli {
namespace {

/// on/off from --add-bos/--add-eos, else the tokenizer's own setting.
bool rule(const std::string& option, bool own) { return option == "auto" ? own : option == "on"; }

/// The tokenizer of a GGUF file: byte-level BPE ("gpt2") or SentencePiece ("llama").
Tokenizer gguf_tokenizer(const std::string& path) {
    const auto file = std::make_shared<qforge::io::GgufFile>(qforge::io::GgufFile::open(path));
    if (!file->has("tokenizer.ggml.model")) throw qforge::FileError(path, "has no tokenizer (tokenizer.ggml.model); pass --tokenizer");
    const std::string model = file->get("tokenizer.ggml.model").as_string();
    const auto flag = [&](const std::string& key, bool fallback) { return file->has(key) ? file->get(key).as_bool() : fallback; };
    Tokenizer t;
    const auto vocab = std::make_shared<qforge::io::GgufVocab>(*file);
    if (model == "llama") {
        const auto spm = std::make_shared<qforge::io::SpmTokenizer>(qforge::io::SpmTokenizer::from_gguf(*file));
        t.kind = "spm";
        t.pieces = [spm](const std::string& text) { return spm->encode(text, false); };
        t.bos = spm->bos(), t.eos = spm->eos();
        t.add_bos = flag("tokenizer.ggml.add_bos_token", true);
        t.add_eos = flag("tokenizer.ggml.add_eos_token", false);
        // SentencePiece's space prefix is not part of the text: the first piece after BOS loses its
        // leading space, as llama.cpp's detokenizer and llama2.c's decoder drop it
        const bool strip = flag("tokenizer.ggml.add_space_prefix", true);
        const int bos = spm->bos();
        t.decode = [spm, strip, bos](int previous, int token) {
            std::string piece = spm->decode(token);
            if (strip && previous == bos && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
            return piece;
        };
        const int eos = spm->eos();
        t.is_end = [eos](int token) { return token == eos; };
        return t;
    }
#ifndef QFORGE_HAVE_TEXT
    throw qforge::InvalidArgument(path + ": byte-level BPE tokenizers need PCRE2 (libpcre2-dev); rebuild with it");
#else
    const auto bpe = std::make_shared<qforge::io::BpeTokenizer>(qforge::io::BpeTokenizer::from_gguf(*file));
    t.kind = "bpe";
    t.pieces = [bpe](const std::string& text) { return bpe->encode(text); };
    t.bos = vocab->bos(), t.eos = vocab->eos();
    t.add_bos = flag("tokenizer.ggml.add_bos_token", false);
    t.add_eos = flag("tokenizer.ggml.add_eos_token", false);
    t.decode = [vocab](int, int token) { return vocab->decode(token); };
    t.is_end = [vocab](int token) { return token == vocab->eos() || vocab->piece(token) == "<|im_end|>"; };
    return t;
#endif
}

/// A Hugging Face tokenizer.json (byte-level BPE), with BOS/EOS ids from the checkpoint's
/// config.json and the add-BOS/EOS setting from tokenizer_config.json beside it.
Tokenizer hf_tokenizer(const std::string& path, int bos, int eos) {
#ifndef QFORGE_HAVE_TEXT
    (void)bos;
    (void)eos;
    throw qforge::InvalidArgument(path + ": tokenizer.json needs PCRE2 (libpcre2-dev); rebuild with it");
#else
    const auto bpe = std::make_shared<qforge::io::BpeTokenizer>(qforge::io::bpe_from_tokenizer_json(path));
    Tokenizer t;
    t.kind = "tokenizer.json";
    t.pieces = [bpe](const std::string& text) { return bpe->encode(text); };
    t.bos = bos, t.eos = eos;
    const auto config = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
    if (std::filesystem::exists(config)) {
        const auto cfg = qforge::llama::detail::read_json(config.string());
        if (const auto* b = cfg.find("add_bos_token"); b && b->kind() == qforge::io::Json::Kind::boolean) t.add_bos = b->as_bool();
        if (const auto* e = cfg.find("add_eos_token"); e && e->kind() == qforge::io::Json::Kind::boolean) t.add_eos = e->as_bool();
    }
    t.decode = [bpe](int, int token) { return bpe->decode(token); };
    t.is_end = [bpe, eos](int token) { return token == eos || bpe->piece(token) == "<|im_end|>"; };
    return t;
#endif
}

Tokenizer llama2c_tokenizer(const std::string& path, int vocab_size) {
    const auto tok = std::make_shared<qforge::io::Llama2cTokenizer>(qforge::io::Llama2cTokenizer::load(path, vocab_size));
    Tokenizer t;
    t.kind = "llama2c";
    t.pieces = [tok](const std::string& text) { return tok->encode(text, false, false); };
    t.bos = qforge::io::Llama2cTokenizer::bos, t.eos = qforge::io::Llama2cTokenizer::eos;
    t.add_bos = true;  // llama2.c's run.c encodes every prompt with BOS
    t.decode = [tok](int previous, int token) { return tok->decode(previous, token); };
    t.is_end = [](int token) { return token == qforge::io::Llama2cTokenizer::bos || token == qforge::io::Llama2cTokenizer::eos; };
    return t;
}

/// The first bytes of a file (fewer if it is shorter).
std::string head_bytes(const std::string& path, std::size_t n) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw qforge::FileError(path, "cannot open file");
    std::string b(n, '\0');
    in.read(b.data(), std::streamsize(n));
    b.resize(std::size_t(in.gcount()));
    return b;
}

/// A safetensors file starts with a little-endian u64 header length and then '{'.
/// (A header longer than the file is still safetensors: its reader then says "truncated".)
bool is_safetensors(const std::string& head) {
    if (head.size() < 9 || head[8] != '{') return false;
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(head[std::size_t(i)]);
    return n >= 2 && n < (std::uint64_t(1) << 32);
}

}  // namespace

std::string detect_model_kind(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) return "hf";
    const std::string head = head_bytes(path, 16);
    if (head.compare(0, 4, "GGUF") == 0) return "gguf";
    if (is_safetensors(head))
        return qforge::io::SafetensorsFile::open(path).metadata().count("qforge.format") ? "qforge" : "hf";
    return "llama2c";
}

Model Model::open(const ModelOptions& options) {
    const std::string dir = data_dir() + "/models/stories260K/";
    Model m;
    m.path_ = options.model.empty() ? dir + "stories260K.bin" : options.model;
    std::string tokenizer = options.tokenizer;
    namespace fs = std::filesystem;
    m.kind_ = detect_model_kind(m.path_);
    int hf_bos = -1, hf_eos = -1;
    if (m.kind_ == "hf") {
        m.source_ = std::make_shared<qforge::llama::HfSource>(m.path_);
        const fs::path d = fs::is_directory(m.path_) ? fs::path(m.path_) : fs::path(m.path_).parent_path();
        const auto cfg = qforge::llama::detail::read_json((d / "config.json").string());
        if (const auto* b = cfg.find("bos_token_id"); b && b->is_number()) hf_bos = int(b->as_int());
        if (const auto* e = cfg.find("eos_token_id"); e && e->is_number()) hf_eos = int(e->as_int());
        if (tokenizer.empty()) {
            tokenizer = (d / "tokenizer.json").string();
            if (!fs::exists(tokenizer))
                throw qforge::FileError(d.string(), "has no tokenizer.json (a checkpoint qforge exported from a GGUF or llama2.c model carries "
                                                    "none): pass --tokenizer with the original model's (its GGUF, tokenizer.json or tokenizer.bin)");
        }
    } else if (m.kind_ == "gguf") {
        auto file = std::make_shared<qforge::io::GgufFile>(qforge::io::GgufFile::open(m.path_));
        m.source_ = std::make_shared<qforge::llama::GgufSource>(*file);
        m.keep_ = file;
        if (tokenizer.empty()) tokenizer = m.path_;
    } else if (m.kind_ == "qforge") {
        auto src = std::make_shared<qforge::llama::ContainerSource>(m.path_);
        if (tokenizer.empty()) tokenizer = src->tokenizer();
        if (tokenizer.empty()) throw qforge::InvalidArgument(m.path_ + ": the container names no tokenizer; pass --tokenizer");
        m.source_ = src;
    } else {
        std::shared_ptr<qforge::io::Llama2cCheckpoint> ck;
        try {
            ck = std::make_shared<qforge::io::Llama2cCheckpoint>(qforge::io::Llama2cCheckpoint::load(m.path_));
        } catch (const qforge::Error& e) {
            std::string why = e.what();
            if (why.find("not a llama2.c checkpoint") == std::string::npos) throw;  // its header was plausible: the reader's own word
            if (why.rfind(m.path_ + ": ", 0) == 0) why = why.substr(m.path_.size() + 2);
            throw qforge::FileError(m.path_, "not a model qforge reads (no GGUF magic, no safetensors header, and as a llama2.c checkpoint: " +
                                                 why + ")");
        }
        m.source_ = std::make_shared<qforge::llama::Llama2cSource>(*ck, m.path_);
        m.keep_ = ck;
        if (tokenizer.empty()) tokenizer = dir + "tok512.bin";
    }
    m.tokenizer_path_ = std::filesystem::absolute(tokenizer).string();
    if (fs::is_directory(tokenizer)) throw qforge::FileError(tokenizer, "is a directory; --tokenizer needs a file");
    const std::string thead = head_bytes(tokenizer, 16);
    const auto first = thead.find_first_not_of(" \t\r\n");
    if (thead.compare(0, 4, "GGUF") == 0) m.tokenizer_ = gguf_tokenizer(tokenizer);
    else if (first != std::string::npos && thead[first] == '{') m.tokenizer_ = hf_tokenizer(tokenizer, hf_bos, hf_eos);
    else m.tokenizer_ = llama2c_tokenizer(tokenizer, m.source_->config().vocab_size);
    m.tokenizer_.add_bos = rule(options.add_bos, m.tokenizer_.add_bos);
    m.tokenizer_.add_eos = rule(options.add_eos, m.tokenizer_.add_eos);
    if ((m.tokenizer_.add_bos && m.tokenizer_.bos < 0) || (m.tokenizer_.add_eos && m.tokenizer_.eos < 0))
        throw qforge::InvalidArgument(tokenizer + ": --add-bos/--add-eos on, but the tokenizer names no BOS/EOS token");
    return m;
}

const qforge::llama::Weights& Model::weights() {
    if (!weights_) weights_ = std::make_shared<qforge::llama::Weights>(qforge::llama::load_weights(*source_));
    return *weights_;
}

std::string read_text(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) throw qforge::FileError(path, "is a directory; a text file is needed");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw qforge::FileError(path, "cannot open file");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str(), out;
    out.reserve(text.size());
    for (const char c : text)
        if (c != '\r') out += c;
    return out;
}

std::vector<int> first_tokens(const Model& model, const std::string& text, std::size_t max_tokens) {
    // Cut only after a line break followed by a non-space: no pre-tokenizer joins across one, so
    // the prefix's tokens are the text's. Grow until the prefix holds more than asked.
    const auto& tok = model.tokenizer();
    std::size_t budget = max_tokens * 8 + 256;
    for (;;) {
        std::size_t cut = budget < text.size() ? text.find('\n', budget) : std::string::npos;
        while (cut != std::string::npos && cut + 1 < text.size() && std::isspace(static_cast<unsigned char>(text[cut + 1])))
            cut = text.find('\n', cut + 1);
        if (cut == std::string::npos || cut + 1 >= text.size()) {
            auto tokens = tok.encode(text);
            if (tokens.size() > max_tokens) tokens.resize(max_tokens);
            return tokens;
        }
        auto tokens = tok.encode(text.substr(0, cut + 1));
        const std::size_t own = tokens.size() - (tok.add_eos && tok.eos >= 0 ? 1 : 0);  // an EOS here ends the prefix, not the text
        if (own > max_tokens) {
            tokens.resize(max_tokens);
            return tokens;
        }
        budget = (cut + 1) * 2;
    }
}

std::vector<int> text_tokens(const Model& model, const std::string& path, std::size_t max_tokens) {
    return first_tokens(model, read_text(path), max_tokens);
}

std::vector<int> tokens_to_score(const Model& model, const std::string& path, std::size_t max_tokens) {
    auto tokens = text_tokens(model, path, max_tokens);
    if (tokens.size() < max_tokens && tokens.size() >= 2)
        std::fprintf(stderr, "qforge: %s holds %zu tokens, fewer than the %zu asked for: all of them are scored\n", path.c_str(), tokens.size(),
                     max_tokens);
    if (tokens.size() < 2)
        throw qforge::InvalidArgument(path + ": nothing to score: the text gives " + std::to_string(tokens.size()) +
                                      " token(s), at least 2 are needed");
    return tokens;
}

std::vector<int> calibration_tokens(const CalibOptions& options, const Model& model, const std::string& default_text, std::size_t skip) {
    const std::string path = options.calib.empty() ? default_text : options.calib;
    const bool same = path == default_text;
    const std::size_t want = std::size_t(options.calib_tokens);
    const std::size_t offset = options.calib_skip >= 0 ? std::size_t(options.calib_skip) : same ? skip : 0;
    const auto tokens = first_tokens(model, read_text(path), offset + want);
    if (tokens.size() < offset + want)
        throw qforge::InvalidArgument(path + ": " + std::to_string(tokens.size()) + " tokens, the calibration slice needs " +
                                      std::to_string(offset + want) + " (" + std::to_string(offset) + " skipped" +
                                      (options.calib_skip >= 0 ? ": --calib-skip" : same ? ": the evaluation slice" : "") + ", then --calib-tokens " + std::to_string(want) + ")");
    return std::vector<int>(tokens.begin() + std::ptrdiff_t(offset), tokens.begin() + std::ptrdiff_t(offset + want));
}

qforge::llama::ModelQuantizeOptions model_quantize_options(const qforge::llama::Config& config, const qforge::RuntimeScheme& scheme,
                                                          const CalibOptions& calib_options, const qforge::Backend& backend, Progress& bar) {
    qforge::llama::ModelQuantizeOptions o;
    o.settings.awq_search_rows = int(calib_options.awq_search_rows);
    o.settings.awq_coarse_step = int(calib_options.awq_coarse_step);
    o.calibration.sequence_length = std::min(512, config.seq_len);
    o.calibration.backend = backend;
    o.progress = [&](int block, int blocks, const std::string& what) {
        bar.phase(what);
        bar.update(double(block), double(blocks), "block " + std::to_string(block) + " " + what);
    };
    o.note = [&](const std::string& line) {
        bar.finish();
        std::fprintf(stderr, "%s: %s\n", qforge::to_string(scheme).c_str(), line.c_str());
    };
    return o;
}

qforge::llama::Weights quantize_model(const qforge::llama::Weights& fp32, const qforge::RuntimeScheme& scheme, const std::vector<int>& calib,
                                      const CalibOptions& calib_options, const qforge::Backend& backend, Progress& bar, const std::string& label) {
    return qforge::llama::quantize_model(fp32, calib, scheme, model_quantize_options(fp32.config, scheme, calib_options, backend, bar), label);
}

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

Progress::Progress(std::string label) : label_(std::move(label)), start_(now()) {}

void Progress::update(double done, double total, const std::string& note) {
    const double elapsed = now() - start_;
    if (elapsed < 1.0 && !drawn_) return;
    // a log file gets a plain line every 10 s, not a redrawn bar (whose \r frames pile up there)
    static const bool terminal = isatty(fileno(stderr)) != 0;
    if (!terminal && drawn_ && elapsed - last_line_ < 10.0) return;
    drawn_ = true;
    last_line_ = elapsed;
    const double f = total > 0 ? std::min(1.0, done / total) : 0.0;
    const int width = 28, filled = int(f * width + 0.5);
    const double eta = f > 0 ? elapsed * (1 - f) / f : 0.0;
    // the whole label: cut to a column, "gptq:w4g128a,act,damp=0.1" read as damp=0
    std::fprintf(stderr, "%s%-32s [%s%s] %5.1f%% %6.1fs eta %5.1fs %-28.28s%s", terminal ? "\r" : "", label_.c_str(),
                 std::string(std::size_t(filled), '#').c_str(), std::string(std::size_t(width - filled), '.').c_str(), 100 * f, elapsed, eta,
                 note.c_str(), terminal ? "" : "\n");
    std::fflush(stderr);
}

void Progress::phase(const std::string& what) {
    const double t = now();
    if (!current_.empty()) {
        auto it = std::find_if(phases_.begin(), phases_.end(), [&](const auto& p) { return p.first == current_; });
        if (it == phases_.end()) it = phases_.insert(phases_.end(), {current_, 0.0});
        it->second += t - phase_start_;
    }
    current_ = what;
    phase_start_ = t;
}

void Progress::finish() {
    static const bool terminal = isatty(fileno(stderr)) != 0;
    if (!current_.empty()) phase("");  // closes the last phase
    if (drawn_ && terminal) std::fprintf(stderr, "\n");
    if (drawn_ && !terminal) std::fprintf(stderr, "%-32s done in %.1f s\n", label_.c_str(), now() - start_);
    if (drawn_ && phases_.size() > 1) {
        std::string line;
        for (const auto& [name, seconds] : phases_)
            if (!name.empty() && name != "done") {
                char part[96];
                std::snprintf(part, sizeof part, "%s%s %.1f s", line.empty() ? "" : ", ", name.c_str(), seconds);
                line += part;
            }
        std::fprintf(stderr, "%-32s time by phase: %s\n", label_.c_str(), line.c_str());  // the whole label (cut, damp=0.1 read as damp=0)
    }
    drawn_ = false;
    phases_.clear();
}

}  // namespace cli
