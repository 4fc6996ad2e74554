#pragma once
/// @file
/// A per-tensor scheme map: the run's scheme and, for the tensors that differ from it, their own
/// (issue #17: what a bit allocation produces, and what a person can read and edit). JSON:
///
///     {"format": "qforge.scheme_map", "version": 1,
///      "scheme": "gptq:w3g128a",
///      "tensors": {"blk.0.attn_v.weight": "gptq:w4g128a", "blk.5.ffn_down.weight": "gptq:w2g64a"},
///      ... any other keys: kept as they are (an allocation's budget, predicted and measured loss)}
///
/// Tensor names are GGUF's (`blk.N.attn_q.weight`); whether they name block linears of a model,
/// and whether every scheme has the run's method, is checked where the map is applied
/// (llama::check_tensor_schemes). Written whole or not at all (io::write_file_atomically).
#include <map>
#include <string>

#include "qforge/core/error.hpp"
#include "qforge/io/json.hpp"
#include "qforge/io/output_path.hpp"
#include "qforge/io/text_file.hpp"
#include "qforge/quantizers/registry.hpp"

namespace qforge::io {

struct SchemeMap {
    RuntimeScheme scheme;                          ///< every tensor the map does not list
    std::map<std::string, RuntimeScheme> tensors;  ///< tensor name -> its scheme
    Json::Object extra;                            ///< the file's other top-level keys, in file order
};

/// The map as JSON text (keys in the order above, then `extra`'s).
inline std::string scheme_map_json(const SchemeMap& m) {
    Json::Object tensors;
    for (const auto& [name, s] : m.tensors) tensors.emplace_back(name, Json(to_string(s)));
    Json::Object top{{"format", Json("qforge.scheme_map")}, {"version", Json(1)}, {"scheme", Json(to_string(m.scheme))}, {"tensors", Json(std::move(tensors))}};
    for (const auto& kv : m.extra) top.push_back(kv);
    return Json(std::move(top)).dump() + "\n";
}

/// Parses a scheme map; `label` (the file's path) names it in errors. Throws FileError naming
/// the key or tensor: not JSON, another format or version, a missing or non-string scheme, a
/// scheme text the grammar refuses (the parser's reason), a tensor listed twice.
inline SchemeMap parse_scheme_map(std::string_view text, const std::string& label) {
    Json j;
    try {
        j = Json::parse(text);
    } catch (const Error& e) {
        throw FileError(label, std::string("not a scheme map: ") + e.what());
    }
    if (!j.is_object()) throw FileError(label, "not a scheme map: the top level is not a JSON object");
    const Json* format = j.find("format");
    if (!format || !format->is_string() || format->as_string() != "qforge.scheme_map")
        throw FileError(label, "not a scheme map: \"format\" must be \"qforge.scheme_map\"");
    const Json* version = j.find("version");
    if (!version || !version->is_number() || version->as_double() != 1.0) throw FileError(label, "scheme map \"version\" must be 1");
    const auto scheme_of = [&](const Json* v, const std::string& what) {
        if (!v || !v->is_string()) throw FileError(label, what + ": expected a scheme string such as \"gptq:w4g128a\"");
        try {
            return parse_scheme(v->as_string());
        } catch (const InvalidArgument& e) {
            throw FileError(label, what + ": " + e.what());
        }
    };
    SchemeMap m;
    m.scheme = scheme_of(j.find("scheme"), "\"scheme\"");
    if (const Json* t = j.find("tensors")) {
        if (!t->is_object()) throw FileError(label, "\"tensors\" must be an object of tensor name -> scheme");
        for (const auto& [name, v] : t->as_object())
            if (!m.tensors.emplace(name, scheme_of(&v, "tensor '" + name + "'")).second) throw FileError(label, "tensor '" + name + "' is listed twice");
    }
    for (const auto& [k, v] : j.as_object())
        if (k != "format" && k != "version" && k != "scheme" && k != "tensors") m.extra.emplace_back(k, v);
    return m;
}

/// Reads a scheme map file (FileError when it cannot be opened or is a directory; parse_scheme_map's errors).
inline SchemeMap read_scheme_map(const std::string& path) { return parse_scheme_map(read_text_file(path, "a scheme map (JSON)"), path); }

/// Writes the map to `path` atomically.
inline void write_scheme_map(const std::string& path, const SchemeMap& m) { write_file_atomically(path, scheme_map_json(m)); }

}  // namespace qforge::io
