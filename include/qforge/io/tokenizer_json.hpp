#pragma once
/// @file
/// A Hugging Face `tokenizer.json` of a byte-level BPE model, read once for both of its readers:
/// the encoder (io/hf_tokenizer.hpp, needs PCRE2) and the GGUF writer's tokenizer keys
/// (io/gguf_tokenizer.hpp, does not). Refused by name, as FileError naming the file: a model
/// type other than BPE, `ignore_merges`, a normalizer, and JSON that is not a tokenizer.json.
#include <cstdint>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/io/json.hpp"
#include "qforge/io/text_file.hpp"

namespace qforge::io {

struct TokenizerJson {
    struct Token {
        std::int64_t id = 0;
        std::string content;
        bool added = false;    ///< from added_tokens
        bool special = false;  ///< an added token marked special
    };
    std::vector<Token> tokens;        ///< model.vocab, then added_tokens, in file order
    std::vector<std::string> merges;  ///< "a b" (either of the file's spellings)
    Json pre_tokenizer;               ///< null when the file has none
};

inline TokenizerJson read_tokenizer_json(const std::string& path) {
    const std::string text = read_text_file(path, "a tokenizer.json");
    try {
        const Json j = Json::parse(text);
        const Json& model = j.at("model");
        if (model.at("type").as_string() != "BPE") throw FileError(path, "model type '" + model.at("type").as_string() + "' is not BPE");
        if (const auto* im = model.find("ignore_merges"); im && im->as_bool()) throw FileError(path, "BPE with ignore_merges is not supported");
        if (const auto* n = j.find("normalizer"); n && !n->is_null())
            throw FileError(path, "normalizer '" + n->at("type").as_string() + "' is not supported");
        TokenizerJson t;
        for (const auto& [piece, id] : model.at("vocab").as_object()) t.tokens.push_back({id.as_int(), piece, false, false});
        if (const auto* added = j.find("added_tokens"))
            for (const auto& a : added->as_array()) {
                const auto* special = a.find("special");
                t.tokens.push_back({a.at("id").as_int(), a.at("content").as_string(), true, special && special->as_bool()});
            }
        for (const auto& m : model.at("merges").as_array())
            t.merges.push_back(m.is_string() ? m.as_string() : m.as_array().at(0).as_string() + " " + m.as_array().at(1).as_string());
        if (const auto* p = j.find("pre_tokenizer")) t.pre_tokenizer = *p;
        return t;
    } catch (const InvalidData& e) {
        throw FileError(path, std::string("bad tokenizer.json: ") + e.what());
    }
}

}  // namespace qforge::io
