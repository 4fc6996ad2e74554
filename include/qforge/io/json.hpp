#pragma once
/// @file
/// A small JSON reader and writer for the files qforge meets: safetensors headers, Hugging Face
/// `config.json` / `tokenizer.json`, and the metadata of qforge's own container. Integers are
/// kept exactly (int64) beside their double value; nesting is bounded so hostile input cannot
/// exhaust the stack. Errors say what was expected and at which byte.
///
/// The writer (`dump`) cannot emit invalid JSON: a non-finite number (NaN, ±Inf) is written as
/// `null` (JSON has no literal for it; qforge's outputs use `null` for "not defined", e.g. a
/// perplexity over zero scored tokens), and bytes that are not valid UTF-8 in a string (a
/// token's partial character) are written as U+FFFD. Every `--json` of the qforge CLI goes
/// through it.
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qforge/core/error.hpp"

namespace qforge::io {

class Json {
public:
    enum class Kind { null, boolean, number, string, array, object };
    using Array = std::vector<Json>;
    using Object = std::vector<std::pair<std::string, Json>>;  ///< in file order

    Json() = default;
    Json(bool b) : kind_(Kind::boolean), bool_(b) {}
    Json(double d) : kind_(Kind::number), number_(d), integer_(0), is_integer_(false) {}
    Json(std::int64_t i) : kind_(Kind::number), number_(double(i)), integer_(i), is_integer_(true) {}
    Json(int i) : Json(std::int64_t(i)) {}
    Json(std::string s) : kind_(Kind::string), string_(std::make_shared<std::string>(std::move(s))) {}
    Json(const char* s) : Json(std::string(s)) {}
    Json(Array a) : kind_(Kind::array), array_(std::make_shared<Array>(std::move(a))) {}
    Json(Object o) : kind_(Kind::object), object_(std::make_shared<Object>(std::move(o))) {}

    Kind kind() const noexcept { return kind_; }
    bool is_null() const noexcept { return kind_ == Kind::null; }
    bool is_object() const noexcept { return kind_ == Kind::object; }
    bool is_array() const noexcept { return kind_ == Kind::array; }
    bool is_string() const noexcept { return kind_ == Kind::string; }
    bool is_number() const noexcept { return kind_ == Kind::number; }

    bool as_bool() const { return expect(Kind::boolean), bool_; }
    double as_double() const { return expect(Kind::number), number_; }
    std::int64_t as_int() const {
        expect(Kind::number);
        if (!is_integer_) throw InvalidData("JSON: expected an integer, got " + std::to_string(number_));
        return integer_;
    }
    const std::string& as_string() const { return expect(Kind::string), *string_; }
    const Array& as_array() const { return expect(Kind::array), *array_; }
    const Object& as_object() const { return expect(Kind::object), *object_; }

    /// The member `key` of an object, or nullptr.
    const Json* find(std::string_view key) const {
        if (kind_ != Kind::object) return nullptr;
        for (const auto& [k, v] : *object_)
            if (k == key) return &v;
        return nullptr;
    }
    const Json& at(std::string_view key) const {
        if (const Json* v = find(key)) return *v;
        throw InvalidData("JSON: missing key '" + std::string(key) + "'");
    }

    std::string dump() const {
        std::string out;
        dump_to(out);
        return out;
    }

    static Json parse(std::string_view text) {
        Parser p{text};
        p.skip();
        Json v = p.value(0);
        p.skip();
        if (p.i != text.size()) p.fail("trailing characters after the JSON value");
        return v;
    }

private:
    static const char* kind_name(Kind k) {
        switch (k) {
            case Kind::null: return "null";
            case Kind::boolean: return "boolean";
            case Kind::number: return "number";
            case Kind::string: return "string";
            case Kind::array: return "array";
            case Kind::object: return "object";
        }
        return "?";
    }
    void expect(Kind k) const {
        if (kind_ != k) throw InvalidData(std::string("JSON: expected ") + kind_name(k) + ", got " + kind_name(kind_));
    }

    /// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not one (overlong
    /// forms, surrogates and code points above U+10FFFF are invalid, as RFC 3629 says).
    static std::size_t utf8_length(const std::string& s, std::size_t i) {
        const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
        const unsigned char c = b(i);
        std::size_t n = 0;
        unsigned cp = 0;
        if (c < 0x80) return 1;
        if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1Fu;
        else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0Fu;
        else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07u;
        else return 0;
        if (i + n > s.size()) return 0;
        for (std::size_t k = 1; k < n; ++k) {
            if ((b(i + k) & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (b(i + k) & 0x3Fu);
        }
        static constexpr unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        return n;
    }
    static void dump_string(std::string& out, const std::string& s) {
        out += '"';
        for (std::size_t i = 0; i < s.size();) {
            const char c = s[i];
            const std::size_t n = utf8_length(s, i);
            if (n == 0) {  // not UTF-8: the replacement character, as decoders do
                out += "\ufffd";
                ++i;
                continue;
            }
            if (n > 1) {
                out.append(s, i, n);
                i += n;
                continue;
            }
            ++i;
            switch (c) {
                case '"': out += "\\\""; break;
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                default:
                    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
                        char buf[8];
                        std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(static_cast<unsigned char>(c)));
                        out += buf;
                    } else {
                        out += c;
                    }
            }
        }
        out += '"';
    }
    void dump_to(std::string& out) const {
        switch (kind_) {
            case Kind::null: out += "null"; break;
            case Kind::boolean: out += bool_ ? "true" : "false"; break;
            case Kind::number:
                if (is_integer_) out += std::to_string(integer_);
                else if (!std::isfinite(number_)) out += "null";
                else {  // a double must read back as a double: "5" would come back as an integer
                    char buf[40];
                    std::snprintf(buf, sizeof buf, "%.17g", number_);
                    out += buf;
                    if (std::string_view(buf).find_first_of(".eEni") == std::string_view::npos) out += ".0";
                }
                break;
            case Kind::string: dump_string(out, *string_); break;
            case Kind::array:
                out += '[';
                for (std::size_t i = 0; i < array_->size(); ++i) {
                    if (i) out += ',';
                    (*array_)[i].dump_to(out);
                }
                out += ']';
                break;
            case Kind::object:
                out += '{';
                for (std::size_t i = 0; i < object_->size(); ++i) {
                    if (i) out += ',';
                    dump_string(out, (*object_)[i].first);
                    out += ':';
                    (*object_)[i].second.dump_to(out);
                }
                out += '}';
                break;
        }
    }

    struct Parser {
        std::string_view s;
        std::size_t i = 0;
        static constexpr int max_depth = 256;

        [[noreturn]] void fail(const std::string& what) const {
            throw InvalidData("JSON: " + what + " at byte " + std::to_string(i));
        }
        void skip() {
            while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
        }
        bool literal(std::string_view word) {
            if (s.substr(i, word.size()) != word) return false;
            i += word.size();
            return true;
        }
        Json value(int depth) {
            if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
            if (i >= s.size()) fail("unexpected end of input");
            const char c = s[i];
            if (c == '{') return object(depth);
            if (c == '[') return array(depth);
            if (c == '"') return Json(string());
            if (literal("true")) return Json(true);
            if (literal("false")) return Json(false);
            if (literal("null")) return Json();
            if (c == '-' || (c >= '0' && c <= '9')) return number();
            fail(std::string("unexpected character '") + c + "'");
        }
        Json object(int depth) {
            ++i;
            Object o;
            skip();
            if (i < s.size() && s[i] == '}') {
                ++i;
                return Json(std::move(o));
            }
            for (;;) {
                skip();
                if (i >= s.size() || s[i] != '"') fail("expected a string key");
                std::string key = string();
                skip();
                if (i >= s.size() || s[i] != ':') fail("expected ':'");
                ++i;
                skip();
                o.emplace_back(std::move(key), value(depth + 1));
                skip();
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == '}') {
                    ++i;
                    return Json(std::move(o));
                }
                fail("expected ',' or '}'");
            }
        }
        Json array(int depth) {
            ++i;
            Array a;
            skip();
            if (i < s.size() && s[i] == ']') {
                ++i;
                return Json(std::move(a));
            }
            for (;;) {
                skip();
                a.push_back(value(depth + 1));
                skip();
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == ']') {
                    ++i;
                    return Json(std::move(a));
                }
                fail("expected ',' or ']'");
            }
        }
        static void put_utf8(std::string& out, unsigned cp) {
            if (cp < 0x80) out += char(cp);
            else if (cp < 0x800) {
                out += char(0xC0 | (cp >> 6));
                out += char(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out += char(0xE0 | (cp >> 12));
                out += char(0x80 | ((cp >> 6) & 0x3F));
                out += char(0x80 | (cp & 0x3F));
            } else {
                out += char(0xF0 | (cp >> 18));
                out += char(0x80 | ((cp >> 12) & 0x3F));
                out += char(0x80 | ((cp >> 6) & 0x3F));
                out += char(0x80 | (cp & 0x3F));
            }
        }
        unsigned hex4() {
            if (i + 4 > s.size()) fail("truncated \\u escape");
            unsigned v = 0;
            for (int k = 0; k < 4; ++k) {
                const char c = s[i++];
                v <<= 4;
                if (c >= '0' && c <= '9') v |= unsigned(c - '0');
                else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
                else fail("bad hex digit in \\u escape");
            }
            return v;
        }
        std::string string() {
            ++i;  // opening quote
            std::string out;
            for (;;) {
                if (i >= s.size()) fail("unterminated string");
                const char c = s[i++];
                if (c == '"') return out;
                if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
                if (c != '\\') {
                    out += c;
                    continue;
                }
                if (i >= s.size()) fail("unterminated escape");
                switch (const char e = s[i++]) {
                    case '"': out += '"'; break;
                    case '\\': out += '\\'; break;
                    case '/': out += '/'; break;
                    case 'b': out += '\b'; break;
                    case 'f': out += '\f'; break;
                    case 'n': out += '\n'; break;
                    case 'r': out += '\r'; break;
                    case 't': out += '\t'; break;
                    case 'u': {
                        unsigned cp = hex4();
                        if (cp >= 0xD800 && cp < 0xDC00) {  // surrogate pair
                            if (i + 2 > s.size() || s[i] != '\\' || s[i + 1] != 'u') fail("unpaired surrogate");
                            i += 2;
                            const unsigned lo = hex4();
                            if (lo < 0xDC00 || lo >= 0xE000) fail("bad low surrogate");
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        }
                        put_utf8(out, cp);
                        break;
                    }
                    default: fail(std::string("bad escape '\\") + e + "'");
                }
            }
        }
        Json number() {
            const std::size_t start = i;
            if (s[i] == '-') ++i;
            bool integral = true;
            while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+' ||
                                    s[i] == '-')) {
                if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') integral = false;
                ++i;
            }
            const std::string text(s.substr(start, i - start));
            char* end = nullptr;
            if (integral) {
                errno = 0;
                const long long v = std::strtoll(text.c_str(), &end, 10);
                if (*end == '\0' && errno == 0) return Json(std::int64_t(v));
            }
            const double d = std::strtod(text.c_str(), &end);
            if (text.empty() || *end != '\0' || !std::isfinite(d)) fail("bad number '" + text + "'");
            return Json(d);
        }
    };

    Kind kind_ = Kind::null;
    bool bool_ = false;
    double number_ = 0.0;
    std::int64_t integer_ = 0;
    bool is_integer_ = false;
    std::shared_ptr<std::string> string_;
    std::shared_ptr<Array> array_;
    std::shared_ptr<Object> object_;
};

}  // namespace qforge::io
