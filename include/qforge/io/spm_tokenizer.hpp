#pragma once
/// @file
/// SentencePiece-style BPE as llama.cpp runs it for `tokenizer.ggml.model` = "llama": spaces
/// become U+2581 ("▁"), a space is prefixed unless `tokenizer.ggml.add_space_prefix` is false,
/// the text starts as single code points, and adjacent pairs whose concatenation is a token
/// merge, highest score first (leftmost on ties), until none does. Code points left outside the
/// vocabulary fall back to byte tokens `<0xXX>`. Needs no regex, so it is in the core target.
#include <cstdio>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qforge/io/gguf.hpp"
#include "qforge/io/merge.hpp"

namespace qforge::io {

class SpmTokenizer {
public:
    SpmTokenizer(std::vector<std::string> pieces, std::vector<float> scores, std::vector<int> types, bool add_space_prefix,
                 int bos, int eos)
        : pieces_(std::move(pieces)), scores_(std::move(scores)), types_(std::move(types)), add_space_prefix_(add_space_prefix),
          bos_(bos), eos_(eos) {
        if (scores_.size() != pieces_.size()) throw InvalidArgument("SentencePiece vocabulary: one score per token needed");
        for (std::size_t i = 0; i < pieces_.size(); ++i) ids_.emplace(pieces_[i], int(i));
        for (int b = 0; b < 256; ++b) {
            char name[8];
            std::snprintf(name, sizeof name, "<0x%02X>", b);
            const auto it = ids_.find(name);
            byte_ids_[std::size_t(b)] = it == ids_.end() ? -1 : it->second;
        }
    }

    static SpmTokenizer from_gguf(const GgufFile& f) {
        const std::string model = f.get("tokenizer.ggml.model").as_string();
        if (model != "llama") throw FileError(f.path(), "tokenizer model '" + model + "' is not SentencePiece (llama)");
        std::vector<std::string> pieces;
        std::vector<float> scores;
        std::vector<int> types;
        for (const auto& t : f.get("tokenizer.ggml.tokens").as_array()) pieces.push_back(t.as_string());
        if (f.has("tokenizer.ggml.scores"))
            for (const auto& s : f.get("tokenizer.ggml.scores").as_array()) scores.push_back(float(s.as_double()));
        else
            scores.assign(pieces.size(), 0.0f);
        if (f.has("tokenizer.ggml.token_type"))
            for (const auto& t : f.get("tokenizer.ggml.token_type").as_array()) types.push_back(int(t.as_int()));
        if (scores.size() != pieces.size()) throw FileError(f.path(), "tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length");
        const bool prefix = !f.has("tokenizer.ggml.add_space_prefix") || f.get("tokenizer.ggml.add_space_prefix").as_bool();
        const int bos = f.has("tokenizer.ggml.bos_token_id") ? int(f.get("tokenizer.ggml.bos_token_id").as_int()) : 1;
        const int eos = f.has("tokenizer.ggml.eos_token_id") ? int(f.get("tokenizer.ggml.eos_token_id").as_int()) : 2;
        return SpmTokenizer(std::move(pieces), std::move(scores), std::move(types), prefix, bos, eos);
    }

    int size() const noexcept { return int(pieces_.size()); }
    int bos() const noexcept { return bos_; }
    int eos() const noexcept { return eos_; }

    std::vector<int> encode(std::string_view text, bool add_bos) const {
        std::vector<int> out;
        if (add_bos) out.push_back(bos_);
        if (text.empty()) return out;
        std::string s;
        if (add_space_prefix_) s += "\xE2\x96\x81";
        for (const char c : text) {
            if (c == ' ') s += "\xE2\x96\x81";
            else s += c;
        }
        std::vector<std::string> sym;
        for (std::size_t i = 0; i < s.size();) {
            std::size_t len = 1;
            while (i + len < s.size() && len < 4 && (static_cast<unsigned char>(s[i + len]) & 0xC0) == 0x80) ++len;
            sym.push_back(s.substr(i, len));
            i += len;
        }
        detail::merge_best_first(sym, [&](const std::string& a, const std::string& b, std::string& out, float& score) {
            out = a + b;
            const auto it = ids_.find(out);
            if (it == ids_.end()) return false;
            score = scores_[std::size_t(it->second)];
            return true;
        });
        for (const auto& p : sym) {
            if (const auto it = ids_.find(p); it != ids_.end()) {
                out.push_back(it->second);
                continue;
            }
            for (const char c : p) {
                const int id = byte_ids_[static_cast<unsigned char>(c)];
                if (id < 0) throw InvalidArgument("SentencePiece vocabulary has no byte token for a character of the text");
                out.push_back(id);
            }
        }
        return out;
    }

    /// The text of a token: "▁" as space, byte tokens as their byte, control tokens as nothing.
    std::string decode(int id) const {
        const std::size_t i = std::size_t(id);
        if (i >= pieces_.size()) throw InvalidArgument("token id " + std::to_string(id) + " out of range");
        if (i < types_.size() && types_[i] == 3) return {};
        if (is_byte(id)) return std::string(1, char(std::stoi(pieces_[i].substr(3, 2), nullptr, 16)));
        std::string out;
        const std::string& p = pieces_[i];
        for (std::size_t k = 0; k < p.size(); ++k) {
            if (p.compare(k, 3, "\xE2\x96\x81") == 0) {
                out += ' ';
                k += 2;
            } else {
                out += p[k];
            }
        }
        return out;
    }

private:
    bool is_byte(int id) const {
        const std::size_t i = std::size_t(id);
        if (i < types_.size()) return types_[i] == 6;
        const std::string& p = pieces_[i];
        return p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>';
    }

    std::vector<std::string> pieces_;
    std::vector<float> scores_;
    std::vector<int> types_;
    std::unordered_map<std::string, int> ids_;
    int byte_ids_[256];
    bool add_space_prefix_;
    int bos_, eos_;
};

}  // namespace qforge::io
