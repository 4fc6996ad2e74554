#pragma once
/// @file
/// Hugging Face `tokenizer.json` for byte-level BPE models (Llama-architecture checkpoints such
/// as SmolLM2): vocabulary, merges, added tokens, and the pre-tokenizer, turned into the same
/// `BpeTokenizer` GGUF vocabularies use. Pre-tokenizers understood: ByteLevel (GPT-2's regex),
/// Digits, Split with a regex (isolated matches), and Sequence of these. Anything else (a
/// normalizer, prefix spaces, `ignore_merges`) is refused by name rather than approximated.
#include <string>
#include <vector>

#include "qforge/io/bpe_tokenizer.hpp"
#include "qforge/io/json.hpp"
#include "qforge/io/tokenizer_json.hpp"

namespace qforge::io {

namespace detail {
inline void hf_pre_tokenizer(const Json& p, std::vector<std::string>& regexes, const std::string& path) {
    if (p.is_null()) return;
    const std::string type = p.at("type").as_string();
    if (type == "Sequence") {
        for (const auto& q : p.at("pretokenizers").as_array()) hf_pre_tokenizer(q, regexes, path);
    } else if (type == "ByteLevel") {
        if (const auto* a = p.find("add_prefix_space"); a && a->as_bool())
            throw FileError(path, "ByteLevel pre-tokenizer with add_prefix_space is not supported");
        const auto* use = p.find("use_regex");
        if (!use || use->as_bool()) regexes.push_back(BpeTokenizer::gpt2_regex());
    } else if (type == "Digits") {
        const auto* single = p.find("individual_digits");
        regexes.push_back(single && single->as_bool() ? "\\p{N}" : "\\p{N}+");
    } else if (type == "Split") {
        const auto& pattern = p.at("pattern");
        const std::string behavior = p.find("behavior") ? p.at("behavior").as_string() : "Isolated";
        if (behavior != "Isolated") throw FileError(path, "Split pre-tokenizer behavior '" + behavior + "' is not supported (Isolated)");
        if (const auto* re = pattern.find("Regex")) regexes.push_back(re->as_string());
        else throw FileError(path, "Split pre-tokenizer without a Regex pattern is not supported");
    } else {
        throw FileError(path, "pre-tokenizer '" + type + "' is not supported (ByteLevel, Digits, Split, Sequence)");
    }
}
}  // namespace detail

inline BpeTokenizer bpe_from_tokenizer_json(const std::string& path) {
    const TokenizerJson t = read_tokenizer_json(path);
    std::vector<std::string> pieces;
    std::vector<int> specials;
    for (const auto& tok : t.tokens) {
        if (tok.id < 0 || tok.id > (1 << 24)) throw FileError(path, "token id " + std::to_string(tok.id) + " out of range");
        if (std::size_t(tok.id) >= pieces.size()) pieces.resize(std::size_t(tok.id) + 1);
        pieces[std::size_t(tok.id)] = tok.content;
        if (tok.added) specials.push_back(int(tok.id));
    }
    std::vector<std::string> regexes;
    try {
        detail::hf_pre_tokenizer(t.pre_tokenizer, regexes, path);
    } catch (const InvalidData& e) {
        throw FileError(path, std::string("bad tokenizer.json: ") + e.what());
    }
    return BpeTokenizer::from_vocabulary(std::move(pieces), t.merges, std::move(specials), regexes, path);
}

}  // namespace qforge::io
