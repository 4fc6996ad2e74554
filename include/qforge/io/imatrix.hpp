#pragma once
/// @file
/// llama.cpp's importance matrices ("imatrix"): for each weight matrix, by its GGUF tensor name
/// (blk.0.attn_q.weight), the sum over calibration tokens of x_j² for every input column j, and
/// how many tokens were summed. The mean, in_sum2 / count, is the diagonal of the inputs' second
/// moment — GPTQ's H = X Xᵀ / n on its diagonal — which llama-quantize uses to weight each
/// weight's rounding error.
///
/// Two files, as llama.cpp's tools/imatrix/imatrix.cpp writes them and common/imatrix-loader.cpp
/// reads them (llama.cpp 0c1e570):
/// - GGUF (the default since 2025): `general.type` = "imatrix", `imatrix.datasets` (string array),
///   `imatrix.chunk_count` and `imatrix.chunk_size` (u32); per matrix two F32 tensors,
///   `<name>.in_sum2` (ne = {columns, experts}) and `<name>.counts` (ne = {1, experts}).
/// - legacy `.dat` (little-endian): i32 n_entries, then per entry i32 name length, the name's
///   bytes, i32 ncall, i32 nval, nval f32 holding mean · ncall; then, optionally, i32 chunk count,
///   i32 dataset-name length and its bytes. ncall is the number of chunks (of chunk_size tokens).
/// llama-quantize's weights for a matrix are in_sum2 / count (GGUF; 1 where count is 0) or
/// value / ncall (legacy; the value itself when ncall is 0): `Imatrix::mean`.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/io/gguf.hpp"
#include "qforge/io/gguf_writer.hpp"
#include "qforge/io/mapped_file.hpp"
#include "qforge/io/output_path.hpp"

namespace qforge::io {

struct ImatrixEntry {
    std::vector<float> in_sum2;  ///< experts x columns: Σ x_j² over the tokens counted
    std::vector<float> counts;   ///< per expert: tokens counted (legacy files: one entry, ncall = chunks)
};

struct Imatrix {
    std::map<std::string, ImatrixEntry> entries;  ///< by weight tensor name
    std::vector<std::string> datasets;            ///< calibration text(s) it was computed on
    std::uint32_t chunk_count = 0;                ///< chunks of calibration text processed
    std::uint32_t chunk_size = 0;                 ///< tokens per chunk (0 in legacy files)
    bool legacy = false;                          ///< read from a legacy .dat file (in_sum2 holds mean · ncall)

    /// The per-column weights llama-quantize uses for tensor `name`: in_sum2 / count per expert
    /// (1 where the count is 0), or for a legacy file value / ncall. Empty when there is no entry.
    std::vector<float> mean(const std::string& name) const {
        const auto it = entries.find(name);
        if (it == entries.end()) return {};
        const auto& e = it->second;
        std::vector<float> out(e.in_sum2.size());
        if (legacy) {
            const float ncall = e.counts.empty() ? 0.0f : e.counts[0];
            for (std::size_t i = 0; i < out.size(); ++i) out[i] = ncall > 0 ? e.in_sum2[i] / ncall : e.in_sum2[i];
            return out;
        }
        const std::size_t n = e.counts.empty() ? 0 : e.in_sum2.size() / e.counts.size();
        for (std::size_t j = 0; j < e.counts.size(); ++j)
            for (std::size_t i = 0; i < n; ++i) out[j * n + i] = e.counts[j] > 0 ? e.in_sum2[j * n + i] / e.counts[j] : 1.0f;
        return out;
    }

    /// Reads either form (GGUF by its magic, else legacy). FileError naming the file and the
    /// entry for a truncated or inconsistent file (lengths past the end, sums and counts that do
    /// not pair up or divide, a non-F32 tensor, non-finite or negative values).
    static Imatrix load(const std::string& path) {
        const auto m = map_file(path);
        return from_memory(path, static_cast<const std::uint8_t*>(m.map.get()), m.size);
    }

    /// The same from bytes in memory (the caller keeps them alive); `label` names them in errors.
    /// Every fault is a FileError.
    static Imatrix from_memory(const std::string& label, const std::uint8_t* p, std::size_t size) {
        try {
            if (size >= 4 && std::memcmp(p, "GGUF", 4) == 0) return load_gguf(GgufFile::from_memory(label, p, size));
            return load_legacy(label, p, size);
        } catch (const InvalidArgument& e) {  // a metadata value of another type than the key's
            throw FileError(label, std::string("imatrix: ") + e.what());
        }
    }

    /// Writes the GGUF form (what llama-quantize --imatrix reads today), entries in name order.
    /// Written to a temporary name and renamed when complete.
    void save_gguf(const std::string& path) const {
        check();
        GgufWriter w;
        using namespace gguf_value;
        w.set("general.type", string("imatrix"));
        w.set("imatrix.datasets", strings(datasets));
        w.set("imatrix.chunk_count", u32(chunk_count));
        w.set("imatrix.chunk_size", u32(chunk_size));
        std::vector<const std::vector<float>*> data;
        for (const auto& [name, e] : entries) {
            const std::uint64_t experts = e.counts.size();
            w.add_tensor(name + ".in_sum2", {e.in_sum2.size() / experts, experts}, GgmlType::F32);
            w.add_tensor(name + ".counts", {1, experts}, GgmlType::F32);
            data.push_back(&e.in_sum2);
            data.push_back(&e.counts);
        }
        w.write(path, [&](std::size_t i, std::span<std::uint8_t> out) { std::memcpy(out.data(), data[i]->data(), out.size()); });
    }

    /// Writes the legacy .dat form: each entry's mean times ncall, ncall = ceil(tokens /
    /// chunk_size) as llama-imatrix writes it (chunk_size must be set). Dense entries only.
    void save_legacy(const std::string& path) const {
        check();
        if (chunk_size == 0) throw InvalidArgument(path + ": a legacy imatrix needs chunk_size (its ncall counts chunks)");
        std::string out;
        const auto put = [&](const void* v, std::size_t n) { out.append(static_cast<const char*>(v), n); };
        const auto i32 = [&](std::int64_t v) {
            const auto x = std::int32_t(v);
            put(&x, 4);
        };
        i32(std::int64_t(entries.size()));
        for (const auto& [name, e] : entries) {
            if (e.counts.size() != 1) throw InvalidArgument(path + ": entry " + name + " has " + std::to_string(e.counts.size()) + " experts; the legacy form holds one");
            i32(std::int64_t(name.size()));
            put(name.data(), name.size());
            const auto ncall = std::int32_t((std::uint64_t(e.counts[0]) + chunk_size - 1) / chunk_size);
            i32(ncall);
            i32(std::int64_t(e.in_sum2.size()));
            for (const float s : e.in_sum2) {
                const float v = e.counts[0] > 0 ? s / e.counts[0] * float(ncall) : float(ncall);  // as llama-imatrix: 1 · ncall without data
                put(&v, 4);
            }
        }
        i32(chunk_count);
        const std::string dataset = datasets.empty() ? std::string() : datasets.back();
        i32(std::int64_t(dataset.size()));
        put(dataset.data(), dataset.size());
        write_file_atomically(path, out);
    }

private:
    void check() const {
        for (const auto& [name, e] : entries)
            if (e.counts.empty() || e.in_sum2.empty() || e.in_sum2.size() % e.counts.size() != 0)
                throw InvalidArgument("imatrix entry " + name + ": " + std::to_string(e.in_sum2.size()) + " sums do not divide among " +
                                      std::to_string(e.counts.size()) + " counts");
    }

    static void check_values(const std::string& path, const std::string& name, const std::vector<float>& v, const char* what) {
        for (std::size_t i = 0; i < v.size(); ++i)
            if (!std::isfinite(v[i]) || v[i] < 0)
                throw FileError(path, "imatrix entry " + name + ": " + what + "[" + std::to_string(i) + "] is " + std::to_string(v[i]) +
                                          " (sums of squares and counts are finite and not negative)");
    }

    static Imatrix load_gguf(const GgufFile& f) {
        Imatrix im;
        if (f.has("imatrix.datasets"))
            for (const auto& v : f.get("imatrix.datasets").as_array()) im.datasets.push_back(v.as_string());
        if (f.has("imatrix.chunk_count")) im.chunk_count = std::uint32_t(f.get("imatrix.chunk_count").as_int());
        if (f.has("imatrix.chunk_size")) im.chunk_size = std::uint32_t(f.get("imatrix.chunk_size").as_int());
        std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> pairs;
        const auto strip = [](const std::string& s, const std::string& suffix, std::string& base) {
            if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
            base = s.substr(0, s.size() - suffix.size());
            return true;
        };
        for (const auto& t : f.tensors()) {
            std::string base;
            if (strip(t.name, ".in_sum2", base)) pairs[base].first = &t;
            else if (strip(t.name, ".counts", base)) pairs[base].second = &t;
        }
        if (pairs.empty()) throw FileError(f.path(), "no imatrix entries (no <name>.in_sum2 / <name>.counts tensors)");
        for (const auto& [name, st] : pairs) {
            const auto [sums, counts] = st;
            if (!sums || !counts) throw FileError(f.path(), "imatrix entry " + name + ": " + (sums ? "counts" : "in_sum2") + " tensor is missing");
            for (const auto* t : {sums, counts})
                if (t->type != std::uint32_t(GgmlType::F32))
                    throw FileError(f.path(), "imatrix tensor " + t->name + " is " + std::string(ggml_type_name(t->type)) + "; imatrix tensors are F32");
            ImatrixEntry e;
            e.in_sum2 = f.dequantize(*sums);
            e.counts = f.dequantize(*counts);
            if (e.counts.empty() || e.in_sum2.empty() || e.in_sum2.size() % e.counts.size() != 0)
                throw FileError(f.path(), "imatrix entry " + name + ": " + std::to_string(e.in_sum2.size()) + " sums do not divide among " +
                                              std::to_string(e.counts.size()) + " counts");
            check_values(f.path(), name, e.in_sum2, "in_sum2");
            check_values(f.path(), name, e.counts, "counts");
            im.entries[name] = std::move(e);
        }
        return im;
    }

    static Imatrix load_legacy(const std::string& path, const std::uint8_t* p, std::size_t size) {
        std::size_t at = 0;
        const auto need = [&](std::size_t n, const std::string& what) {
            if (n > size || at > size - n)
                throw FileError(path, "not an imatrix (neither GGUF nor llama.cpp's legacy .dat), or truncated: " + what + " runs past the end (" +
                                          std::to_string(size) + " bytes)");
        };
        const auto i32 = [&](const std::string& what) {
            need(4, what);
            std::int32_t v;
            std::memcpy(&v, p + at, 4);
            at += 4;
            return v;
        };
        Imatrix im;
        im.legacy = true;
        const std::int32_t n = i32("the entry count");
        if (n < 1) throw FileError(path, "not an imatrix: " + std::to_string(n) + " entries");
        for (std::int32_t i = 0; i < n; ++i) {
            const std::string entry = "entry " + std::to_string(i + 1) + " of " + std::to_string(n);
            const std::int32_t len = i32(entry + "'s name length");
            if (len < 1 || len > 4096) throw FileError(path, "imatrix " + entry + ": name length " + std::to_string(len));
            need(std::size_t(len), entry + "'s name");
            std::string name(reinterpret_cast<const char*>(p + at), std::size_t(len));
            at += std::size_t(len);
            const std::int32_t ncall = i32(name + "'s ncall");
            const std::int32_t nval = i32(name + "'s value count");
            if (ncall < 0 || nval < 1)
                throw FileError(path, "imatrix entry " + name + ": ncall " + std::to_string(ncall) + ", " + std::to_string(nval) + " values");
            need(std::size_t(nval) * 4, name + "'s values");
            ImatrixEntry e;
            e.in_sum2.resize(std::size_t(nval));
            std::memcpy(e.in_sum2.data(), p + at, std::size_t(nval) * 4);
            at += std::size_t(nval) * 4;
            e.counts = {float(ncall)};
            check_values(path, name, e.in_sum2, "values");
            if (im.entries.count(name)) throw FileError(path, "imatrix entry " + name + " appears twice");
            im.entries[name] = std::move(e);
        }
        if (at + 4 <= size) {
            im.chunk_count = std::uint32_t(std::max(0, i32("the chunk count")));
            if (at + 4 <= size) {
                const std::int32_t len = i32("the dataset name length");
                if (len > 0) {
                    need(std::size_t(len), "the dataset name");
                    im.datasets.emplace_back(reinterpret_cast<const char*>(p + at), std::size_t(len));
                    at += std::size_t(len);
                }
            }
        }
        if (at != size) throw FileError(path, "imatrix: " + std::to_string(size - at) + " bytes after the last field");
        return im;
    }
};

}  // namespace qforge::io
