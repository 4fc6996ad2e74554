#pragma once
/// @file
/// A sensitivity table saved to a file and read back (`qforge allocate --save-table FILE`, then
/// `--table FILE`): measuring the table costs minutes of quantization and model passes, an
/// allocation from it milliseconds, so more budgets, another loss or the other solver reuse it.
/// JSON, one object:
///
///     {"format": "qforge.sensitivity_table", "version": 1,
///      "model": "path as measured (for a person; the blocks' weights are what is checked)",
///      "calibration": {"tokens": 2048, "kl_tokens": 256, "fnv1a64": "16 hex digits"},
///      "anchor": 0 (the candidate whose KL anchors the `anchored` estimate, or null),
///      "candidates": ["gptq:w2g64a", ...],                                     K schemes
///      "blocks":  [[unit x K] x L],                                           per block
///      "linears": [[[unit x 7] x K] x L]}      per block, candidate and linear (block_linears' order)
///
/// with unit = {"kl", "output", "hessian_diag", "weight", "block_output", "anchored": numbers or
/// null (not measured), "bytes", "params": whole numbers}. Numbers are written with 17
/// significant digits, so they read back as the same doubles and an allocation from the file
/// equals the one from the measured table bit for bit; NaN (and a non-finite value, which the
/// table does not hold) is written as null and read as NaN. `fnv1a64` is token_hash of the
/// calibration tokens: a run that verifies an allocation from the file checks that it measures
/// on the same tokens.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <span>
#include <string>

#include "qforge/io/json.hpp"
#include "qforge/io/output_path.hpp"
#include "qforge/io/text_file.hpp"
#include "qforge/models/llama/size.hpp"
#include "qforge/pipelines/llama/sensitivity.hpp"

namespace qforge::llama {

/// A sensitivity table and what it was measured on.
struct SensitivityFile {
    SensitivityTable table;
    std::string model;               ///< the model's path when measured
    long calibration_tokens = 0;     ///< the calibration tokens (statistics, Hessians)
    long kl_tokens = 0;              ///< the first positions the KL and block output errors were measured on
    std::uint64_t calibration_hash = 0;  ///< token_hash of the calibration tokens
    int anchor = -1;                 ///< the candidate anchoring `anchored`, or -1
};

/// FNV-1a (64-bit) over the token ids, each as 4 little-endian bytes: which calibration tokens a
/// table was measured on, without storing them.
inline std::uint64_t token_hash(std::span<const int> tokens) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (const int t : tokens) {
        const auto u = static_cast<std::uint32_t>(t);
        for (int b = 0; b < 4; ++b) {
            h ^= (u >> (8 * b)) & 0xffu;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

namespace detail {
inline io::Json unit_json(const UnitLoss& u) {
    return io::Json(io::Json::Object{{"kl", io::Json(u.kl)},
                                     {"output", io::Json(u.output)},
                                     {"hessian_diag", io::Json(u.hessian_diag)},
                                     {"weight", io::Json(u.weight)},
                                     {"block_output", io::Json(u.block_output)},
                                     {"anchored", io::Json(u.anchored)},
                                     {"bytes", io::Json(std::int64_t(u.bytes))},
                                     {"params", io::Json(std::int64_t(u.params))}});
}
}  // namespace detail

/// The file's JSON text. InvalidArgument when the table's shape is not [K][L] (blocks) and
/// [K][L][7] (linears) for its K candidates.
inline std::string sensitivity_file_json(const SensitivityFile& f) {
    const auto& t = f.table;
    const std::size_t K = t.candidates.size();
    if (K == 0 || t.block.size() != K || t.linear.size() != K) throw InvalidArgument("sensitivity table: one row of units per candidate is needed");
    const std::size_t L = t.block.front().size();
    for (std::size_t k = 0; k < K; ++k)
        if (t.block[k].size() != L || t.linear[k].size() != L) throw InvalidArgument("sensitivity table: every candidate needs every block");
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(f.calibration_hash));
    io::Json::Array candidates, blocks, linears;
    for (const auto& c : t.candidates) candidates.emplace_back(to_string(c));
    for (std::size_t l = 0; l < L; ++l) {
        io::Json::Array per_block, per_linear;
        for (std::size_t k = 0; k < K; ++k) {
            per_block.push_back(detail::unit_json(t.block[k][l]));
            io::Json::Array seven;
            for (const auto& u : t.linear[k][l]) seven.push_back(detail::unit_json(u));
            per_linear.emplace_back(std::move(seven));
        }
        blocks.emplace_back(std::move(per_block));
        linears.emplace_back(std::move(per_linear));
    }
    io::Json::Object top{{"format", io::Json("qforge.sensitivity_table")},
                         {"version", io::Json(1)},
                         {"model", io::Json(f.model)},
                         {"calibration", io::Json(io::Json::Object{{"tokens", io::Json(std::int64_t(f.calibration_tokens))},
                                                                   {"kl_tokens", io::Json(std::int64_t(f.kl_tokens))},
                                                                   {"fnv1a64", io::Json(std::string(hash))}})},
                         {"anchor", f.anchor < 0 ? io::Json() : io::Json(f.anchor)},
                         {"candidates", io::Json(std::move(candidates))},
                         {"blocks", io::Json(std::move(blocks))},
                         {"linears", io::Json(std::move(linears))}};
    return io::Json(std::move(top)).dump() + "\n";
}

/// Parses a saved table; `label` (the file's path) names it in errors. FileError naming the key
/// (`blocks[3][1].bytes`): not JSON, another format or version, a scheme the grammar refuses,
/// candidates of different methods, a candidate listed twice, arrays whose lengths do not match
/// the candidates and each other, a loss that is neither a number nor null, bytes or params
/// that are not whole numbers ≥ 1, blocks whose candidates count different weights.
inline SensitivityFile parse_sensitivity_file(std::string_view text, const std::string& label) {
    using io::Json;
    Json j;
    try {
        j = Json::parse(text);
    } catch (const Error& e) {
        throw FileError(label, std::string("not a sensitivity table: ") + e.what());
    }
    if (!j.is_object()) throw FileError(label, "not a sensitivity table: the top level is not a JSON object");
    const Json* format = j.find("format");
    if (!format || !format->is_string() || format->as_string() != "qforge.sensitivity_table")
        throw FileError(label, "not a sensitivity table: \"format\" must be \"qforge.sensitivity_table\" (written by qforge allocate --save-table)");
    const Json* version = j.find("version");
    if (!version || !version->is_number() || version->as_double() != 1.0) throw FileError(label, "sensitivity table \"version\" must be 1");
    const auto member = [&](const Json& parent, const char* key, const std::string& where) -> const Json& {
        const Json* v = parent.find(key);
        if (!v) throw FileError(label, where + (where.empty() ? "" : ".") + key + ": missing");
        return *v;
    };
    const auto whole = [&](const Json& v, const std::string& where, std::int64_t least) {
        if (!v.is_number() || v.as_double() != double(std::int64_t(v.as_double())) || v.as_double() < double(least) || v.as_double() > 9.0e15)
            throw FileError(label, where + ": expected a whole number >= " + std::to_string(least));
        return std::int64_t(v.as_double());
    };
    const auto array_of = [&](const Json& v, std::size_t n, const std::string& where) -> const Json::Array& {
        if (!v.is_array()) throw FileError(label, where + ": expected an array");
        if (n != 0 && v.as_array().size() != n)
            throw FileError(label, where + ": " + std::to_string(v.as_array().size()) + " entries, " + std::to_string(n) + " expected");
        return v.as_array();
    };
    SensitivityFile f;
    if (const Json* m = j.find("model")) {
        if (!m->is_string()) throw FileError(label, "model: expected a string");
        f.model = m->as_string();
    }
    const Json& cal = member(j, "calibration", "");
    if (!cal.is_object()) throw FileError(label, "calibration: expected an object");
    f.calibration_tokens = long(whole(member(cal, "tokens", "calibration"), "calibration.tokens", 1));
    f.kl_tokens = long(whole(member(cal, "kl_tokens", "calibration"), "calibration.kl_tokens", 1));
    if (f.kl_tokens > f.calibration_tokens) throw FileError(label, "calibration.kl_tokens: more than calibration.tokens");
    const Json& hash = member(cal, "fnv1a64", "calibration");
    if (!hash.is_string() || hash.as_string().size() != 16 || hash.as_string().find_first_not_of("0123456789abcdef") != std::string::npos)
        throw FileError(label, "calibration.fnv1a64: expected 16 lowercase hex digits");
    f.calibration_hash = std::stoull(hash.as_string(), nullptr, 16);

    const auto& cands = array_of(member(j, "candidates", ""), 0, "candidates");
    if (cands.empty()) throw FileError(label, "candidates: none");
    for (std::size_t k = 0; k < cands.size(); ++k) {
        const std::string where = "candidates[" + std::to_string(k) + "]";
        if (!cands[k].is_string()) throw FileError(label, where + ": expected a scheme string such as \"gptq:w4g128a\"");
        try {
            f.table.candidates.push_back(parse_scheme(cands[k].as_string()));
        } catch (const InvalidArgument& e) {
            throw FileError(label, where + ": " + e.what());
        }
        if (f.table.candidates.back().method != f.table.candidates.front().method)
            throw FileError(label, where + ": " + cands[k].as_string() + " has another method than " + cands[0].as_string() + " (a table has one)");
        for (std::size_t i = 0; i < k; ++i)
            if (f.table.candidates[i] == f.table.candidates[k]) throw FileError(label, where + ": " + cands[k].as_string() + " is listed twice");
    }
    const std::size_t K = cands.size();
    if (const Json* a = j.find("anchor"); a && !a->is_null()) {
        const auto v = whole(*a, "anchor", 0);
        if (v >= std::int64_t(K)) throw FileError(label, "anchor: candidate " + std::to_string(v) + " of " + std::to_string(K));
        f.anchor = int(v);
    }
    const auto unit = [&](const Json& v, const std::string& where) {
        if (!v.is_object()) throw FileError(label, where + ": expected an object");
        UnitLoss u;
        const auto loss = [&](const char* key) {
            const Json& x = member(v, key, where);
            if (x.is_null()) return std::numeric_limits<double>::quiet_NaN();
            if (!x.is_number()) throw FileError(label, where + "." + key + ": expected a number or null");
            return x.as_double();
        };
        u.kl = loss("kl");
        u.output = loss("output");
        u.hessian_diag = loss("hessian_diag");
        u.weight = loss("weight");
        u.block_output = loss("block_output");
        u.anchored = loss("anchored");
        u.bytes = std::uint64_t(whole(member(v, "bytes", where), where + ".bytes", 1));
        u.params = std::uint64_t(whole(member(v, "params", where), where + ".params", 1));
        return u;
    };
    const auto& blocks = array_of(member(j, "blocks", ""), 0, "blocks");
    if (blocks.empty()) throw FileError(label, "blocks: none");
    const std::size_t L = blocks.size();
    const auto& linears = array_of(member(j, "linears", ""), L, "linears");
    f.table.block.assign(K, std::vector<UnitLoss>(L));
    f.table.linear.assign(K, std::vector<std::array<UnitLoss, 7>>(L));
    for (std::size_t l = 0; l < L; ++l) {
        const std::string bw = "blocks[" + std::to_string(l) + "]", lw = "linears[" + std::to_string(l) + "]";
        const auto& per_block = array_of(blocks[l], K, bw);
        const auto& per_linear = array_of(linears[l], K, lw);
        for (std::size_t k = 0; k < K; ++k) {
            const std::string where = bw + "[" + std::to_string(k) + "]";
            f.table.block[k][l] = unit(per_block[k], where);
            if (f.table.block[k][l].params != f.table.block[0][l].params)
                throw FileError(label, where + ".params: " + std::to_string(f.table.block[k][l].params) + " weights, candidate 0 of the block " +
                                           std::to_string(f.table.block[0][l].params));
            const auto& seven = array_of(per_linear[k], 7, lw + "[" + std::to_string(k) + "]");
            for (std::size_t i = 0; i < 7; ++i) f.table.linear[k][l][i] = unit(seven[i], lw + "[" + std::to_string(k) + "][" + std::to_string(i) + "]");
        }
    }
    return f;
}

/// FileError(label, ...) unless `f` is a table of `model`'s blocks: as many, each of the same
/// weights in its seven linears (`model_name` names the model in the message).
inline void check_table_fits(const SensitivityFile& f, const Weights& model, const std::string& label, const std::string& model_name) {
    const std::size_t L = model.layers.size();
    if (f.table.block.empty() || f.table.block.front().size() != L)
        throw FileError(label, "a table of " + std::to_string(f.table.block.empty() ? 0 : f.table.block.front().size()) + " blocks; the model " +
                                   model_name + " has " + std::to_string(L));
    for (std::size_t l = 0; l < L; ++l) {
        const std::uint64_t params = layer_params(model.layers[l]);
        if (f.table.block.front()[l].params != params)
            throw FileError(label, "block " + std::to_string(l) + " has " + std::to_string(f.table.block.front()[l].params) + " weights in the table, " +
                                       std::to_string(params) + " in the model " + model_name);
    }
}

/// Reads a saved table (FileError when it cannot be opened or is a directory; parse_sensitivity_file's errors).
inline SensitivityFile read_sensitivity_file(const std::string& path) {
    return parse_sensitivity_file(io::read_text_file(path, "a sensitivity table (JSON)"), path);
}

/// Writes the table to `path` atomically.
inline void write_sensitivity_file(const std::string& path, const SensitivityFile& f) { io::write_file_atomically(path, sensitivity_file_json(f)); }

}  // namespace qforge::llama
