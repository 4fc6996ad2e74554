#include "model.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <qforge/io/gguf.hpp>
#include <qforge/io/gguf_vocab.hpp>
#include <qforge/io/llama2c.hpp>
#include <qforge/io/llama2c_tokenizer.hpp>
#include <qforge/models/llama/container.hpp>
#include <qforge/models/llama/gguf_loader.hpp>
#include <qforge/models/llama/awq.hpp>
#include <qforge/models/llama/gptq.hpp>
#include <qforge/models/llama/hf_source.hpp>
#include <qforge/models/llama/llama2c_source.hpp>
#ifdef QFORGE_HAVE_TEXT
#include <qforge/io/bpe_tokenizer.hpp>
#include <qforge/io/hf_tokenizer.hpp>
#endif

namespace cli {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The byte-level BPE tokenizer and vocabulary of a GGUF file.
Tokenizer gguf_tokenizer(const std::string& path) {
#ifndef QFORGE_HAVE_TEXT
    throw qforge::InvalidArgument(path + ": GGUF tokenizers need PCRE2 (libpcre2-dev); rebuild with it");
#else
    const auto file = std::make_shared<qforge::io::GgufFile>(qforge::io::GgufFile::open(path));
    const auto bpe = std::make_shared<qforge::io::BpeTokenizer>(qforge::io::BpeTokenizer::from_gguf(*file));
    const auto vocab = std::make_shared<qforge::io::GgufVocab>(*file);
    Tokenizer t;
    t.encode = [bpe, vocab](const std::string& text) {
        auto ids = bpe->encode(text);
        if (vocab->bos() >= 0 && (ids.empty() || ids.front() != vocab->bos())) ids.insert(ids.begin(), vocab->bos());
        return ids;
    };
    t.decode = [vocab](int, int token) { return vocab->decode(token); };
    t.is_end = [vocab](int token) { return token == vocab->eos() || vocab->piece(token) == "<|im_end|>"; };
    return t;
#endif
}

/// A Hugging Face tokenizer.json (byte-level BPE), with BOS/EOS from the checkpoint's config.json.
Tokenizer hf_tokenizer(const std::string& path, int bos, int eos) {
#ifndef QFORGE_HAVE_TEXT
    (void)bos;
    (void)eos;
    throw qforge::InvalidArgument(path + ": tokenizer.json needs PCRE2 (libpcre2-dev); rebuild with it");
#else
    const auto bpe = std::make_shared<qforge::io::BpeTokenizer>(qforge::io::bpe_from_tokenizer_json(path));
    Tokenizer t;
    t.encode = [bpe, bos](const std::string& text) {
        auto ids = bpe->encode(text);
        if (bos >= 0 && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
        return ids;
    };
    t.decode = [bpe](int, int token) { return bpe->decode(token); };
    t.is_end = [bpe, eos](int token) { return token == eos || bpe->piece(token) == "<|im_end|>"; };
    return t;
#endif
}

Tokenizer llama2c_tokenizer(const std::string& path, int vocab_size) {
    const auto tok = std::make_shared<qforge::io::Llama2cTokenizer>(qforge::io::Llama2cTokenizer::load(path, vocab_size));
    Tokenizer t;
    t.encode = [tok](const std::string& text) { return tok->encode(text, true, false); };
    t.decode = [tok](int previous, int token) { return tok->decode(previous, token); };
    t.is_end = [](int token) { return token == qforge::io::Llama2cTokenizer::bos || token == qforge::io::Llama2cTokenizer::eos; };
    return t;
}

}  // namespace

Model Model::open(const Args& args) {
    const std::string dir = data_dir() + "/models/stories260K/";
    Model m;
    m.path_ = args.get("model", dir + "stories260K.bin");
    std::string tokenizer = args.get("tokenizer", "");
    namespace fs = std::filesystem;
    const bool is_safetensors = ends_with(m.path_, ".safetensors");
    const bool qforge_container =
        is_safetensors && qforge::io::SafetensorsFile::open(m.path_).metadata().count("qforge.format") != 0;
    char magic[4] = {};
    if (!fs::is_directory(m.path_)) {
        std::ifstream probe(m.path_, std::ios::binary);
        if (!probe) throw qforge::FileError(m.path_, "cannot open file");
        probe.read(magic, 4);
    }
    int hf_bos = -1, hf_eos = -1;
    if (fs::is_directory(m.path_) || (is_safetensors && !qforge_container)) {
        m.kind_ = "hf";
        m.source_ = std::make_shared<qforge::llama::HfSource>(m.path_);
        const fs::path dir = fs::is_directory(m.path_) ? fs::path(m.path_) : fs::path(m.path_).parent_path();
        const auto cfg = qforge::llama::detail::read_json((dir / "config.json").string());
        if (const auto* b = cfg.find("bos_token_id"); b && b->is_number()) hf_bos = int(b->as_int());
        if (const auto* e = cfg.find("eos_token_id"); e && e->is_number()) hf_eos = int(e->as_int());
        if (tokenizer.empty()) tokenizer = (dir / "tokenizer.json").string();
    } else if (std::string(magic, 4) == "GGUF") {
        auto file = std::make_shared<qforge::io::GgufFile>(qforge::io::GgufFile::open(m.path_));
        m.kind_ = "gguf";
        m.source_ = std::make_shared<qforge::llama::GgufSource>(*file);
        m.keep_ = file;
        if (tokenizer.empty()) tokenizer = m.path_;
    } else if (ends_with(m.path_, ".safetensors")) {
        auto src = std::make_shared<qforge::llama::ContainerSource>(m.path_);
        m.kind_ = "qforge";
        if (tokenizer.empty()) tokenizer = src->tokenizer();
        if (tokenizer.empty()) throw qforge::InvalidArgument(m.path_ + ": the container names no tokenizer; pass --tokenizer");
        m.source_ = src;
    } else {
        auto ck = std::make_shared<qforge::io::Llama2cCheckpoint>(qforge::io::Llama2cCheckpoint::load(m.path_));
        m.kind_ = "llama2c";
        m.source_ = std::make_shared<qforge::llama::Llama2cSource>(*ck, m.path_);
        m.keep_ = ck;
        if (tokenizer.empty()) tokenizer = dir + "tok512.bin";
    }
    m.tokenizer_path_ = std::filesystem::absolute(tokenizer).string();
    std::ifstream tprobe(tokenizer, std::ios::binary);
    char tmagic[4] = {};
    tprobe.read(tmagic, 4);
    if (ends_with(tokenizer, ".json")) m.tokenizer_ = hf_tokenizer(tokenizer, hf_bos, hf_eos);
    else if (std::string(tmagic, 4) == "GGUF") m.tokenizer_ = gguf_tokenizer(tokenizer);
    else m.tokenizer_ = llama2c_tokenizer(tokenizer, m.source_->config().vocab_size);
    return m;
}

const qforge::llama::Weights& Model::weights() {
    if (!weights_) weights_ = std::make_shared<qforge::llama::Weights>(qforge::llama::load_weights(*source_));
    return *weights_;
}

std::string read_text(const std::string& path) {
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

std::vector<int> text_tokens(const Model& model, const std::string& path, std::size_t max_tokens) {
    auto tokens = model.tokenizer().encode(read_text(path).substr(0, max_tokens * 16));  // 16 bytes/token is ample
    if (tokens.size() > max_tokens) tokens.resize(max_tokens);
    return tokens;
}

std::vector<int> calibration_tokens(const Args& args, const Model& model, const std::string& default_text, std::size_t skip) {
    const std::string path = args.get("calib", default_text);
    const bool same = path == default_text;
    const std::size_t want = std::size_t(args.get_int("calib-tokens", 8192));
    if (want < 2) throw qforge::InvalidArgument("--calib-tokens must be at least 2");
    const std::size_t offset = same || args.has("calib-skip") ? skip : 0;
    const std::string text = read_text(path);
    auto tokens = model.tokenizer().encode(text.substr(0, (offset + want) * 16));
    if (tokens.size() < offset + want)
        throw qforge::InvalidArgument(path + ": " + std::to_string(tokens.size()) + " tokens, the calibration slice needs " +
                                      std::to_string(offset + want) + (same ? " (after the evaluation slice)" : ""));
    return std::vector<int>(tokens.begin() + std::ptrdiff_t(offset), tokens.begin() + std::ptrdiff_t(offset + want));
}

qforge::llama::Weights quantize_model(const qforge::llama::Weights& fp32, const qforge::RuntimeScheme& scheme, const std::vector<int>& calib,
                                      int threads, Progress& bar) {
    if (scheme.method == "awq" || scheme.method == "awq+gptq") {
        if (calib.empty()) throw qforge::InvalidArgument(qforge::to_string(scheme) + " needs calibration tokens");
        qforge::llama::ModelAwqOptions o;
        o.calibration.sequence_length = std::min(512, fp32.config.seq_len);
        o.calibration.isa = qforge::best_isa();
        o.calibration.threads = threads;
        o.progress = [&](int block, int blocks, const std::string& what) {
            bar.update(double(block), double(blocks), "block " + std::to_string(block) + " " + what);
        };
        return qforge::llama::awq_quantize_model(fp32, calib, scheme, o);
    }
    if (scheme.method == "gptq") {
        if (calib.empty()) throw qforge::InvalidArgument(qforge::to_string(scheme) + " needs calibration tokens");
        qforge::llama::ModelGptqOptions o;
        o.calibration.sequence_length = std::min(512, fp32.config.seq_len);
        o.calibration.isa = qforge::best_isa();
        o.calibration.threads = threads;
        o.progress = [&](int block, int blocks, const std::string& what) {
            bar.update(double(block), double(blocks), "block " + std::to_string(block) + " " + what);
        };
        o.note = [&](const std::string& line) {
            bar.finish();
            std::fprintf(stderr, "gptq: %s\n", line.c_str());
        };
        return qforge::llama::gptq_quantize_model(fp32, calib, scheme, o);
    }
    std::size_t done = 0;
    const double total = double(fp32.config.n_layers) * double(qforge::llama::block_linears.size());
    return qforge::llama::map_block_linears(fp32, [&](const qforge::llama::Linear& l) {
        bar.update(double(done++), total);
        return qforge::llama::quantize_linear(l, scheme, threads);
    });
}

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

Progress::Progress(std::string label) : label_(std::move(label)), start_(now()) {}

void Progress::update(double done, double total, const std::string& note) {
    const double elapsed = now() - start_;
    if (elapsed < 1.0 && !drawn_) return;
    drawn_ = true;
    const double f = total > 0 ? std::min(1.0, done / total) : 0.0;
    const int width = 28, filled = int(f * width + 0.5);
    const double eta = f > 0 ? elapsed * (1 - f) / f : 0.0;
    std::fprintf(stderr, "\r%-24.24s [%s%s] %5.1f%% %6.1fs eta %5.1fs %-28.28s", label_.c_str(), std::string(std::size_t(filled), '#').c_str(),
                 std::string(std::size_t(width - filled), '.').c_str(), 100 * f, elapsed, eta, note.c_str());
    std::fflush(stderr);
}

void Progress::finish() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
}

}  // namespace cli
