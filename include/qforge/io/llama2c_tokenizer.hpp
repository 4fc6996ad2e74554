#pragma once
/// @file
/// llama2.c `tokenizer.bin`: int32 max_token_length, then per token a float32 merge score, an
/// int32 byte length and the bytes. Ids 0, 1, 2 are `<unk>`, BOS, EOS; ids 3..258 the byte-fallback
/// tokens `<0x00>`..`<0xFF>`. Encoding follows llama2.c: a dummy prefix space, UTF-8 code points
/// looked up as tokens (bytes + 3 when absent), then repeatedly merge the adjacent pair whose
/// merged string is a token with the highest score.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/io/merge.hpp"

namespace qforge::io {

class Llama2cTokenizer {
public:
    static constexpr int bos = 1, eos = 2;

    static Llama2cTokenizer load(const std::string& path, int vocab_size) {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw FileError(path, "cannot open file");
        Llama2cTokenizer t;
        std::int32_t max_len = 0;
        if (!in.read(reinterpret_cast<char*>(&max_len), 4)) throw FileError(path, "truncated: no header");
        if (max_len <= 0 || max_len > 1024) throw FileError(path, "bad max_token_length " + std::to_string(max_len));
        t.pieces_.resize(std::size_t(vocab_size));
        t.scores_.resize(std::size_t(vocab_size));
        for (int i = 0; i < vocab_size; ++i) {
            std::int32_t len = 0;
            if (!in.read(reinterpret_cast<char*>(&t.scores_[std::size_t(i)]), 4) || !in.read(reinterpret_cast<char*>(&len), 4))
                throw FileError(path, "truncated at token " + std::to_string(i) + " of " + std::to_string(vocab_size));
            if (len < 0 || len > max_len)
                throw FileError(path, "token " + std::to_string(i) + " has length " + std::to_string(len));
            t.pieces_[std::size_t(i)].resize(std::size_t(len));
            if (len && !in.read(t.pieces_[std::size_t(i)].data(), len))
                throw FileError(path, "truncated inside token " + std::to_string(i));
        }
        if (in.peek() != std::char_traits<char>::eof())
            throw FileError(path, "size mismatch: bytes left after " + std::to_string(vocab_size) + " tokens");
        for (int i = 0; i < vocab_size; ++i) t.ids_.emplace(t.pieces_[std::size_t(i)], i);
        return t;
    }

    int vocab_size() const noexcept { return int(pieces_.size()); }
    const std::string& piece(int id) const { return pieces_.at(std::size_t(id)); }
    float score(int id) const { return scores_.at(std::size_t(id)); }

    std::vector<int> encode(const std::string& text, bool add_bos, bool add_eos) const {
        std::vector<int> tokens;
        if (add_bos) tokens.push_back(bos);
        if (!text.empty()) tokens.push_back(lookup(" "));
        for (std::size_t i = 0; i < text.size();) {
            std::size_t len = 1;  // one UTF-8 code point (at most 4 bytes)
            while (len < 4 && i + len < text.size() && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80) ++len;
            const std::string cp = text.substr(i, len);
            if (const int id = lookup(cp); id >= 0) tokens.push_back(id);
            else
                for (const char c : cp) tokens.push_back(int(static_cast<unsigned char>(c)) + 3);
            i += len;
        }
        std::vector<int> merged_from(tokens.begin() + (add_bos ? 1 : 0), tokens.end());
        detail::merge_best_first(merged_from, [&](int a, int b, int& out, float& score) {
            const int id = lookup(pieces_[std::size_t(a)] + pieces_[std::size_t(b)]);
            if (id < 0) return false;
            out = id;
            score = scores_[std::size_t(id)];
            return true;
        });
        tokens.resize(add_bos ? 1 : 0);
        tokens.insert(tokens.end(), merged_from.begin(), merged_from.end());
        if (add_eos) tokens.push_back(eos);
        return tokens;
    }

    /// The text of `token` following `previous` (BOS strips the leading space; `<0xAB>` is a byte).
    std::string decode(int previous, int token) const {
        std::string p = piece(token);
        if (previous == bos && !p.empty() && p[0] == ' ') p.erase(0, 1);
        if (p.size() == 6 && p.rfind("<0x", 0) == 0 && p[5] == '>') {
            return std::string(1, char(std::stoi(p.substr(3, 2), nullptr, 16)));
        }
        return p;
    }

private:
    int lookup(const std::string& s) const {
        const auto it = ids_.find(s);
        return it == ids_.end() ? -1 : it->second;
    }
    std::vector<std::string> pieces_;
    std::vector<float> scores_;
    std::unordered_map<std::string, int> ids_;
};

}  // namespace qforge::io
