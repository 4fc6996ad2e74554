#pragma once
/// @file
/// The vocabulary stored in GGUF metadata (`tokenizer.ggml.*`), for decoding token ids to text.
/// Byte-level BPE vocabularies (`tokenizer.ggml.model` = "gpt2") spell bytes with GPT-2's
/// printable stand-ins (a space is U+0120); decoding maps them back. Encoding text is not here yet.
#include <array>
#include <string>
#include <vector>

#include "qforge/io/gguf.hpp"

namespace qforge::io {

class GgufVocab {
public:
    explicit GgufVocab(const GgufFile& f) {
        model_ = f.get("tokenizer.ggml.model").as_string();
        for (const auto& t : f.get("tokenizer.ggml.tokens").as_array()) tokens_.push_back(t.as_string());
        if (f.has("tokenizer.ggml.token_type"))
            for (const auto& t : f.get("tokenizer.ggml.token_type").as_array()) types_.push_back(int(t.as_int()));
        bos_ = f.has("tokenizer.ggml.bos_token_id") ? int(f.get("tokenizer.ggml.bos_token_id").as_int()) : -1;
        eos_ = f.has("tokenizer.ggml.eos_token_id") ? int(f.get("tokenizer.ggml.eos_token_id").as_int()) : -1;
        // GPT-2's byte -> code point table, inverted
        std::array<bool, 256> printable{};
        for (int b = '!'; b <= '~'; ++b) printable[std::size_t(b)] = true;
        for (int b = 0xA1; b <= 0xAC; ++b) printable[std::size_t(b)] = true;
        for (int b = 0xAE; b <= 0xFF; ++b) printable[std::size_t(b)] = true;
        byte_of_.assign(512, -1);
        int next = 256;
        for (int b = 0; b < 256; ++b) byte_of_[std::size_t(printable[std::size_t(b)] ? b : next++)] = b;
    }

    int size() const noexcept { return int(tokens_.size()); }
    int bos() const noexcept { return bos_; }
    int eos() const noexcept { return eos_; }
    const std::string& piece(int id) const { return tokens_.at(std::size_t(id)); }
    bool is_control(int id) const { return std::size_t(id) < types_.size() && types_[std::size_t(id)] == 3; }

    /// The bytes a token stands for (control tokens such as BOS decode to nothing).
    std::string decode(int id) const {
        if (is_control(id)) return {};
        const std::string& p = piece(id);
        if (model_ != "gpt2") return p;
        std::string out;
        for (std::size_t i = 0; i < p.size();) {  // UTF-8 code points -> bytes
            const unsigned char c = static_cast<unsigned char>(p[i]);
            unsigned cp;
            std::size_t len;
            if (c < 0x80) { cp = c; len = 1; }
            else if ((c >> 5) == 6 && i + 1 < p.size()) { cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(p[i + 1]) & 0x3Fu); len = 2; }
            else { out += p.substr(i); break; }  // outside GPT-2's table: keep as is
            const int b = cp < byte_of_.size() ? byte_of_[cp] : -1;
            if (b < 0) out += p.substr(i, len);
            else out += char(b);
            i += len;
        }
        return out;
    }

private:
    std::string model_;
    std::vector<std::string> tokens_;
    std::vector<int> types_;
    std::vector<int> byte_of_;
    int bos_ = -1, eos_ = -1;
};

}  // namespace qforge::io
