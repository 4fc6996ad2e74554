#pragma once
/// @file
/// Byte-level BPE tokenizer (GPT-2 style) from GGUF metadata: `tokenizer.ggml.tokens`, `.merges`,
/// `.token_type` and the pre-tokenizer named by `tokenizer.ggml.pre`. Needs PCRE2 for the
/// pre-tokenizer's Unicode categories (CMake target `qforge::text`).
///
/// Encoding, as llama.cpp does it: (1) control and user-defined tokens found in the text are taken
/// whole; (2) the rest is split by the pre-tokenizer's regexes in sequence, each regex splitting
/// every piece of the previous one into matches and the text between them; (3) each piece's bytes
/// are spelled with GPT-2's printable stand-ins and merged pairwise, lowest merge rank first and
/// the leftmost pair on equal ranks.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qforge/io/gguf.hpp"

namespace qforge::io {

class BpeTokenizer {
public:
    /// A byte-level BPE vocabulary: token strings (in GPT-2's byte alphabet), merges in rank
    /// order ("a b"), the ids matched as special tokens, and the pre-tokenizer's regexes applied
    /// in sequence. `label` names the source in errors.
    static BpeTokenizer from_vocabulary(std::vector<std::string> pieces, const std::vector<std::string>& merges,
                                        std::vector<int> specials, const std::vector<std::string>& regexes,
                                        const std::string& label) {
        BpeTokenizer t;
        t.compile(regexes, label);
        t.pieces_ = std::move(pieces);
        for (std::size_t i = 0; i < t.pieces_.size(); ++i) t.ids_.emplace(t.pieces_[i], int(i));
        for (const int id : specials)
            if (id < 0 || std::size_t(id) >= t.pieces_.size()) throw FileError(label, "special token id " + std::to_string(id) + " out of range");
        t.specials_ = std::move(specials);
        for (std::size_t i = 0; i < merges.size(); ++i) t.ranks_.emplace(merges[i], int(i));
        std::array<bool, 256> printable{};  // GPT-2's byte -> code point table
        for (int b = '!'; b <= '~'; ++b) printable[std::size_t(b)] = true;
        for (int b = 0xA1; b <= 0xAC; ++b) printable[std::size_t(b)] = true;
        for (int b = 0xAE; b <= 0xFF; ++b) printable[std::size_t(b)] = true;
        int next = 256;
        for (int b = 0; b < 256; ++b) {
            const unsigned cp = printable[std::size_t(b)] ? unsigned(b) : unsigned(next++);
            std::string c;
            if (cp < 0x80) c += char(cp);
            else {
                c += char(0xC0 | (cp >> 6));
                c += char(0x80 | (cp & 0x3F));
            }
            t.byte_chars_[std::size_t(b)] = c;
            t.byte_of_.emplace(c, b);
        }
        return t;
    }

    /// GPT-2's pre-tokenizer regex (also what ByteLevel with use_regex applies).
    static const char* gpt2_regex() noexcept {
        return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    }

    static BpeTokenizer from_gguf(const GgufFile& f) {
        const std::string model = f.get("tokenizer.ggml.model").as_string();
        if (model != "gpt2") throw FileError(f.path(), "tokenizer model '" + model + "' is not byte-level BPE (gpt2)");
        const std::string pre = f.has("tokenizer.ggml.pre") ? f.get("tokenizer.ggml.pre").as_string() : "default";
        std::vector<std::string> regexes;
        if (pre == "smollm") regexes = {"\\p{N}", gpt2_regex()};
        else if (pre == "gpt2" || pre == "default") regexes = {gpt2_regex()};
        else throw FileError(f.path(), "pre-tokenizer '" + pre + "' is not supported (gpt2, smollm)");
        std::vector<std::string> pieces, merges;
        for (const auto& tok : f.get("tokenizer.ggml.tokens").as_array()) pieces.push_back(tok.as_string());
        std::vector<int> specials;
        if (f.has("tokenizer.ggml.token_type")) {
            const auto& types = f.get("tokenizer.ggml.token_type").as_array();
            for (std::size_t i = 0; i < types.size() && i < pieces.size(); ++i)
                if (const auto type = types[i].as_int(); type == 3 || type == 4) specials.push_back(int(i));
        }
        for (const auto& m : f.get("tokenizer.ggml.merges").as_array()) merges.push_back(m.as_string());
        return from_vocabulary(std::move(pieces), merges, std::move(specials), regexes, f.path());
    }

    std::vector<int> encode(std::string_view text, bool parse_special = true) const {
        std::vector<int> out;
        std::size_t at = 0;
        while (at < text.size()) {
            std::size_t next_special = text.size();
            int special = -1;
            if (parse_special)
                for (const int id : specials_) {  // earliest, then longest, special token
                    const std::string& s = pieces_[std::size_t(id)];
                    if (s.empty()) continue;
                    const auto pos = text.find(s, at);
                    if (pos < next_special || (pos == next_special && pos != text.size() && special >= 0 &&
                                               s.size() > pieces_[std::size_t(special)].size())) {
                        next_special = pos;
                        special = id;
                    }
                }
            encode_plain(text.substr(at, next_special - at), out);
            if (special < 0) break;
            out.push_back(special);
            at = next_special + pieces_[std::size_t(special)].size();
        }
        return out;
    }

    int size() const noexcept { return int(pieces_.size()); }
    const std::string& piece(int id) const { return pieces_.at(std::size_t(id)); }

    /// The bytes a token stands for; special tokens decode to nothing.
    std::string decode(int id) const {
        for (const int s : specials_)
            if (s == id) return {};
        const std::string& p = piece(id);
        std::string out;
        for (std::size_t i = 0; i < p.size();) {
            const std::size_t len = (static_cast<unsigned char>(p[i]) & 0xE0) == 0xC0 ? 2 : 1;
            const std::string ch = p.substr(i, len);
            const auto it = byte_of_.find(ch);
            out += it != byte_of_.end() ? std::string(1, char(it->second)) : ch;
            i += len;
        }
        return out;
    }

private:
    struct Code {
        std::shared_ptr<pcre2_code> code;
        std::shared_ptr<pcre2_match_data> match;
    };

    void compile(const std::vector<std::string>& patterns, const std::string& path) {
        for (const auto& p : patterns) {
            int err = 0;
            PCRE2_SIZE offset = 0;
            pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.c_str()), p.size(), PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
            if (!code) throw FileError(path, "cannot compile pre-tokenizer regex " + p);
            regexes_.push_back({std::shared_ptr<pcre2_code>(code, pcre2_code_free),
                                std::shared_ptr<pcre2_match_data>(pcre2_match_data_create_from_pattern(code, nullptr),
                                                                  pcre2_match_data_free)});
        }
    }

    /// Splits every piece by one regex into matches and the text between them.
    std::vector<std::string_view> split(const std::vector<std::string_view>& pieces, const Code& re) const {
        std::vector<std::string_view> out;
        for (const auto piece : pieces) {
            std::size_t start = 0, gap = 0;
            while (start < piece.size()) {
                const int rc = pcre2_match(re.code.get(), reinterpret_cast<PCRE2_SPTR>(piece.data()), piece.size(), start,
                                           PCRE2_NO_UTF_CHECK, re.match.get(), nullptr);
                if (rc < 0) break;
                const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(re.match.get());
                if (ov[1] == ov[0]) {  // empty match: step one byte
                    ++start;
                    continue;
                }
                if (ov[0] > gap) out.push_back(piece.substr(gap, ov[0] - gap));
                out.push_back(piece.substr(ov[0], ov[1] - ov[0]));
                start = gap = ov[1];
            }
            if (gap < piece.size()) out.push_back(piece.substr(gap));
        }
        return out;
    }

    void encode_plain(std::string_view text, std::vector<int>& out) const {
        if (text.empty()) return;
        std::vector<std::string_view> pieces{text};
        for (const auto& re : regexes_) pieces = split(pieces, re);
        for (const auto piece : pieces) encode_piece(piece, out);
    }

    /// Merges one pre-token's symbols, lowest merge rank first and the leftmost pair on equal
    /// ranks, until no adjacent pair has a merge; appends their ids. A queue of candidate pairs
    /// over a linked list keeps this O(n log n): rescanning every pair after each merge took
    /// minutes on one long run of a repeated byte, which the pre-tokenizer leaves whole.
    void encode_piece(std::string_view piece, std::vector<int>& out) const {
        constexpr std::size_t none = std::size_t(-1);
        struct Symbol {
            std::size_t at, len;  ///< a run of `spelled`; len 0 once merged into the left neighbour
            std::size_t prev, next;
        };
        // A symbol changes only by absorbing its right neighbour, so any change to either side of a
        // queued pair makes their summed length larger: an equal sum with the left side alive is
        // the same pair, unchanged.
        struct Candidate {
            std::size_t left, len;
            int rank;
            // std::priority_queue puts the greatest on top: order by rank, then position, reversed
            bool operator<(const Candidate& o) const { return rank > o.rank || (rank == o.rank && left > o.left); }
        };
        std::string spelled;  // the piece in GPT-2's printable alphabet; symbols are runs of it
        std::vector<Symbol> symbols(piece.size());
        for (std::size_t i = 0; i < piece.size(); ++i) {
            const std::string& c = byte_chars_[static_cast<unsigned char>(piece[i])];
            symbols[i] = {spelled.size(), c.size(), i == 0 ? none : i - 1, i + 1 < piece.size() ? i + 1 : none};
            spelled += c;
        }
        std::string key;  // one buffer for every lookup rather than a string per pair
        const auto candidate = [&](std::size_t left) -> std::optional<Candidate> {
            if (left == none || symbols[left].next == none) return std::nullopt;
            const Symbol &l = symbols[left], &r = symbols[l.next];
            key.assign(spelled, l.at, l.len).append(1, ' ').append(spelled, r.at, r.len);
            const auto it = ranks_.find(key);
            if (it == ranks_.end()) return std::nullopt;
            return Candidate{left, l.len + r.len, it->second};
        };
        std::vector<Candidate> initial;
        for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
            if (const auto c = candidate(i)) initial.push_back(*c);
        std::priority_queue<Candidate> queue(std::less<Candidate>{}, std::move(initial));  // one O(n) heapify
        while (!queue.empty()) {
            const Candidate c = queue.top();
            queue.pop();
            Symbol& l = symbols[c.left];
            if (l.len == 0 || l.next == none || l.len + symbols[l.next].len != c.len) continue;  // stale
            Symbol& r = symbols[l.next];
            l.len += r.len;
            r.len = 0;
            l.next = r.next;
            if (l.next != none) symbols[l.next].prev = c.left;
            for (const std::size_t left : {l.prev, c.left})
                if (const auto next = candidate(left)) queue.push(*next);
        }
        for (std::size_t i = symbols.empty() ? none : 0; i != none; i = symbols[i].next) {  // the first never merges away
            key.assign(spelled, symbols[i].at, symbols[i].len);
            const auto it = ids_.find(key);
            if (it == ids_.end()) throw InvalidArgument("byte-level BPE: no token for a merged symbol");
            out.push_back(it->second);
        }
    }

    std::vector<Code> regexes_;
    std::vector<std::string> pieces_;
    std::unordered_map<std::string, int> ids_;
    std::unordered_map<std::string, int> ranks_;
    std::vector<int> specials_;
    std::array<std::string, 256> byte_chars_;
    std::unordered_map<std::string, int> byte_of_;  ///< inverse of byte_chars_
};

}  // namespace qforge::io
