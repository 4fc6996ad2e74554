#pragma once
/// @file
/// Hugging Face `tokenizer.json` for byte-level BPE models (Llama-architecture checkpoints such
/// as SmolLM2): vocabulary, merges, added tokens, and the pre-tokenizer, turned into the same
/// `BpeTokenizer` GGUF vocabularies use. Pre-tokenizers understood: ByteLevel (GPT-2's regex),
/// Digits, Split with a regex (isolated matches), and Sequence of these. Anything else (a
/// normalizer, prefix spaces, `ignore_merges`) is refused by name rather than approximated.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "qforge/io/bpe_tokenizer.hpp"
#include "qforge/io/json.hpp"

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
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FileError(path, "cannot open file");
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        const Json j = Json::parse(ss.str());
        const Json& model = j.at("model");
        if (model.at("type").as_string() != "BPE") throw FileError(path, "model type '" + model.at("type").as_string() + "' is not BPE");
        if (const auto* im = model.find("ignore_merges"); im && im->as_bool())
            throw FileError(path, "BPE with ignore_merges is not supported");
        if (const auto* n = j.find("normalizer"); n && !n->is_null())
            throw FileError(path, "normalizer '" + n->at("type").as_string() + "' is not supported");
        std::vector<std::string> pieces;
        const auto put = [&](const std::string& piece, std::int64_t id) {
            if (id < 0 || id > (1 << 24)) throw FileError(path, "token id " + std::to_string(id) + " out of range");
            if (std::size_t(id) >= pieces.size()) pieces.resize(std::size_t(id) + 1);
            pieces[std::size_t(id)] = piece;
        };
        for (const auto& [piece, id] : model.at("vocab").as_object()) put(piece, id.as_int());
        std::vector<int> specials;
        if (const auto* added = j.find("added_tokens"))
            for (const auto& a : added->as_array()) {
                put(a.at("content").as_string(), a.at("id").as_int());
                specials.push_back(int(a.at("id").as_int()));
            }
        std::vector<std::string> merges;
        for (const auto& m : model.at("merges").as_array()) {
            if (m.is_string()) merges.push_back(m.as_string());
            else merges.push_back(m.as_array().at(0).as_string() + " " + m.as_array().at(1).as_string());
        }
        std::vector<std::string> regexes;
        if (const auto* p = j.find("pre_tokenizer")) detail::hf_pre_tokenizer(*p, regexes, path);
        return BpeTokenizer::from_vocabulary(std::move(pieces), merges, std::move(specials), regexes, path);
    } catch (const InvalidData& e) {
        throw FileError(path, std::string("bad tokenizer.json: ") + e.what());
    }
}

}  // namespace qforge::io
