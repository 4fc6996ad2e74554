#pragma once
/// @file
/// A tokenizer as GGUF's `tokenizer.ggml.*` metadata, for the GGUF writer
/// (container/llama/gguf_export.hpp): copied from a GGUF file, built from a llama2.c
/// `tokenizer.bin` (SentencePiece: model "llama"), or from a Hugging Face `tokenizer.json` of a
/// byte-level BPE model (model "gpt2", as llama.cpp's convert_hf_to_gguf.py writes it). Keys and
/// token types as llama.cpp reads them (ggml's docs/gguf.md, `llama_vocab::load`): token types
/// 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte; SentencePiece pieces spell spaces as
/// U+2581.
#include <string>
#include <utility>
#include <vector>

#include "qforge/io/gguf.hpp"
#include "qforge/io/gguf_writer.hpp"
#include "qforge/io/json.hpp"
#include "qforge/io/tokenizer_json.hpp"
#include "qforge/io/llama2c_tokenizer.hpp"

namespace qforge::io {

using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

/// Every `tokenizer.*` key of a GGUF file, as stored.
inline GgufMetadata tokenizer_metadata(const GgufFile& f) {
    GgufMetadata out;
    for (const auto& [key, value] : f.metadata())
        if (key.rfind("tokenizer.", 0) == 0) out.emplace_back(key, value);
    if (out.empty()) throw FileError(f.path(), "no tokenizer.* metadata to copy");
    return out;
}

/// A llama2.c tokenizer.bin of `vocab_size` pieces as llama.cpp's SentencePiece vocabulary:
/// id 0 unknown, 1 BOS and 2 EOS (control), `<0xNN>` pieces byte tokens; BOS added to every
/// text (llama2.c's run.c does) and a space prefix (its encoder prepends " ").
inline GgufMetadata tokenizer_metadata(const Llama2cTokenizer& t) {
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<std::int32_t> types;
    for (int i = 0; i < t.vocab_size(); ++i) {
        std::string piece;
        for (const char ch : t.piece(i)) piece += ch == ' ' ? std::string("\xE2\x96\x81") : std::string(1, ch);
        const std::string& p = t.piece(i);
        const bool byte = p.size() == 6 && p.rfind("<0x", 0) == 0 && p.back() == '>';
        tokens.push_back(std::move(piece));
        scores.push_back(t.score(i));
        types.push_back(i == 0 ? 2 : i == Llama2cTokenizer::bos || i == Llama2cTokenizer::eos ? 3 : byte ? 6 : 1);
    }
    using namespace gguf_value;
    return {{"tokenizer.ggml.model", string("llama")},
            {"tokenizer.ggml.tokens", strings(tokens)},
            {"tokenizer.ggml.scores", f32s(scores)},
            {"tokenizer.ggml.token_type", i32s(types)},
            {"tokenizer.ggml.unknown_token_id", u32(0)},
            {"tokenizer.ggml.bos_token_id", u32(std::uint32_t(Llama2cTokenizer::bos))},
            {"tokenizer.ggml.eos_token_id", u32(std::uint32_t(Llama2cTokenizer::eos))},
            {"tokenizer.ggml.add_bos_token", boolean(true)},
            {"tokenizer.ggml.add_eos_token", boolean(false)},
            {"tokenizer.ggml.add_space_prefix", boolean(true)}};
}

/// What a tokenizer.json does not say but GGUF needs: the model's vocabulary size (the embedding's
/// rows; ids the file does not name become `[PAD<id>]` user-defined tokens, as
/// convert_hf_to_gguf.py pads), BOS/EOS ids (config.json's; -1 for none) and whether texts start
/// with BOS or end with EOS (tokenizer_config.json's add_bos_token/add_eos_token).
struct HfTokenizerFacts {
    int vocab_size = 0, bos = -1, eos = -1;
    bool add_bos = false, add_eos = false;
};

/// A Hugging Face tokenizer.json of a byte-level BPE model as GGUF metadata: tokens by id
/// (added tokens included: special ones control, others user-defined), merges as "a b",
/// `tokenizer.ggml.pre` from the pre-tokenizer ("gpt2": ByteLevel with its regex; "smollm":
/// Digits one by one, then ByteLevel). FileError naming the file for anything else (another
/// model type, ignore_merges, a normalizer: io/tokenizer_json.hpp; another pre-tokenizer, ids
/// beyond the vocabulary).
inline GgufMetadata tokenizer_metadata_from_json(const std::string& path, const HfTokenizerFacts& facts) {
    const TokenizerJson t = read_tokenizer_json(path);
    try {
        // the pre-tokenizer as llama.cpp names it
        std::string pre;
        const auto byte_level = [](const Json& p) {
            if (p.at("type").as_string() != "ByteLevel") return false;
            const auto* a = p.find("add_prefix_space");
            const auto* r = p.find("use_regex");
            return !(a && a->as_bool()) && !(r && !r->as_bool());
        };
        if (const Json& p = t.pre_tokenizer; !p.is_null()) {
            if (byte_level(p)) pre = "gpt2";
            else if (p.at("type").as_string() == "Sequence") {
                const auto& seq = p.at("pretokenizers").as_array();
                if (seq.size() == 2 && seq[0].at("type").as_string() == "Digits" && seq[0].find("individual_digits") &&
                    seq[0].at("individual_digits").as_bool() && byte_level(seq[1]))
                    pre = "smollm";
            }
        }
        if (pre.empty())
            throw FileError(path, "its pre-tokenizer has no GGUF name qforge knows (gpt2: ByteLevel with its regex; smollm: Digits one by one, then ByteLevel)");
        const int n = facts.vocab_size;
        std::vector<std::string> tokens(static_cast<std::size_t>(n));
        std::vector<std::int32_t> types(std::size_t(n), 4);  // ids the file leaves out: "[PAD<id>]", user-defined
        for (int i = 0; i < n; ++i) tokens[std::size_t(i)] = "[PAD" + std::to_string(i) + "]";
        for (const auto& tok : t.tokens) {
            if (tok.id < 0 || tok.id >= n)
                throw FileError(path, "token id " + std::to_string(tok.id) + " is outside the model's vocabulary of " + std::to_string(n));
            tokens[std::size_t(tok.id)] = tok.content;
            types[std::size_t(tok.id)] = !tok.added ? 1 : tok.special ? 3 : 4;
        }
        const auto& merges = t.merges;
        using namespace gguf_value;
        GgufMetadata out{{"tokenizer.ggml.model", string("gpt2")},
                         {"tokenizer.ggml.pre", string(pre)},
                         {"tokenizer.ggml.tokens", strings(tokens)},
                         {"tokenizer.ggml.token_type", i32s(types)},
                         {"tokenizer.ggml.merges", strings(merges)}};
        if (facts.bos >= 0) out.emplace_back("tokenizer.ggml.bos_token_id", u32(std::uint32_t(facts.bos)));
        if (facts.eos >= 0) out.emplace_back("tokenizer.ggml.eos_token_id", u32(std::uint32_t(facts.eos)));
        out.emplace_back("tokenizer.ggml.add_bos_token", boolean(facts.add_bos));
        out.emplace_back("tokenizer.ggml.add_eos_token", boolean(facts.add_eos));
        return out;
    } catch (const InvalidData& e) {
        throw FileError(path, std::string("bad tokenizer.json: ") + e.what());
    }
}

}  // namespace qforge::io
