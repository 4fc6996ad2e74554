#pragma once
/// @file
/// A Llama model as a GGUF v3 file that llama.cpp runs: `general.*`, the `llama.*`
/// hyper-parameters, the tokenizer's `tokenizer.ggml.*` keys (given by the caller, e.g. from
/// io/gguf_tokenizer.hpp), and every tensor under llama.cpp's name in llama.cpp's layout (q/k
/// rows already in the adjacent-pair RoPE order qforge keeps). Streams like the container writer:
/// each weight is materialised, converted, written and released before the next; the file
/// appears under its name only when complete.
///
/// What each weight matrix becomes follows rules as for the container (glob -> action, the last
/// match wins): "keep" (as the source holds it), "f32", "f16", or a scheme whose grid a GGUF type
/// stores (`rtn:q4_0`, `rtn:q4_1`, `rtn:q8_0`, `rtn:iq4nl`; any method). A weight kept as stored
/// must already be FP32 or in a GGUF block format: qforge's dense layouts (e.g. `w4g128a`) and
/// act-order column orders have no GGUF type, and are refused by name before anything is written.
/// A matrix whose rows are not whole blocks of its type falls back to F16, as llama-quantize
/// does when no block type fits, and each fallback is reported (`GgufExportReport::fallbacks`).
/// Norm vectors are F32.
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "qforge/container/llama/container.hpp"
#include "qforge/core/half.hpp"
#include "qforge/io/gguf_writer.hpp"

namespace qforge::llama {

struct GgufExportOptions {
    std::vector<std::pair<std::string, std::string>> rules;  ///< glob -> "keep" | "f32" | "f16" | scheme
    /// Metadata written as given after the model's own keys (tokenizer.ggml.*, general.name ...);
    /// a key given here replaces the writer's.
    std::vector<std::pair<std::string, io::GgufValue>> metadata;
    Backend backend;  ///< runs the default quantizer
    /// Turns an FP32 weight into its quantized form for a scheme (default: the method's quantizer,
    /// packed into the scheme's format).
    std::function<Linear(const std::string& name, const Linear& fp32, const RuntimeScheme&)> quantize;
    std::function<void(std::size_t done, std::size_t total, const std::string& name)> progress;
};

struct GgufExportReport {
    struct Entry {
        std::string name, action;  ///< the action as applied ("keep", "f16", a scheme's canonical text)
        GgmlType type;
        std::uint64_t bytes = 0, elements = 0;
        bool matrix = true;  ///< false for the norm vectors
    };
    std::vector<Entry> tensors;
    std::vector<std::string> fallbacks;  ///< one line per weight written in another type than asked
    /// Bits per weight of the decoder's linear layers, from the bytes written.
    double block_bits_per_weight() const {
        std::uint64_t bytes = 0, n = 0;
        for (const auto& t : tensors)
            if (t.matrix && t.name.rfind("blk.", 0) == 0) {
                bytes += t.bytes;
                n += t.elements;
            }
        return n ? 8.0 * double(bytes) / double(n) : 0.0;
    }
};

namespace detail {
/// The ggml type of a stored layout, or nullopt when GGUF has none for it.
inline std::optional<GgmlType> gguf_type_of(const TensorLayout& l) {
    if (l.ordered || l.salient > 0) return std::nullopt;
    if (l.format == "f32") return GgmlType::F32;
    std::optional<GgmlType> out;
    visit_stored_format(l, [&](auto f) { out = decltype(f)::type::info.gguf; });
    return out;
}

/// The GGUF type of the format a scheme's grid packs into (packs_into), or nullopt when that
/// format is no GGUF type (qforge's dense layouts, NF4).
inline std::optional<GgmlType> want_of(const QuantSpec& spec) {
    std::optional<GgmlType> out;
    visit_format([&](const FormatInfo& i) { return packs_into(i, spec); }, [&](auto f) { out = decltype(f)::type::info.gguf; });
    return out;
}

/// The GGUF types qforge writes from a scheme, for messages.
inline std::string gguf_scheme_names() {
    std::string s;
    for (const auto& b : block_grids) s += std::string(s.empty() ? "" : ", ") + std::string(b.block);
    return s + ", iq4nl";
}
}  // namespace detail

/// Writes `src` as a GGUF file at `path`. InvalidArgument (naming the tensor) for a weight no GGUF
/// type can hold, before the file is created; FileError when it cannot be written.
inline GgufExportReport write_gguf(const ModelSource& src, const std::string& path, const GgufExportOptions& o) {
    io::check_output_path(path);
    const Config& c = src.config();
    struct Entry {
        std::string name, from, action;
        bool vector;
        int rows, cols;
        GgmlType type;
    };
    std::vector<Entry> entries;
    GgufExportReport report;
    const auto matrix = [&](const std::string& name, const std::string& from, int rows, int cols) {
        std::string action = action_for(o.rules, name);
        GgmlType type = GgmlType::F32;
        if (action == "f32") {
            type = GgmlType::F32;
        } else if (action == "f16") {
            type = GgmlType::F16;
        } else if (action == "keep") {
            TensorLayout stored = src.layout(from);
            stored.rows = rows;
            stored.cols = cols;
            const auto t = detail::gguf_type_of(stored);
            if (!t)
                throw InvalidArgument(src.label() + ": tensor " + name + " is stored as " + stored.format +
                                      (stored.format == "dense" ? " (" + std::to_string(stored.spec.bits) + "-bit, group " + std::to_string(stored.spec.group_size) + ")" : "") +
                                      (stored.ordered ? " with an act-order column order" : "") +
                                      (stored.salient ? " keeping " + std::to_string(stored.salient) + " input channels in FP16 (',salient=')" : std::string()) +
                                      ", which no GGUF type holds: quantize it onto a GGUF grid (" + detail::gguf_scheme_names() +
                                      "; act-order with ',static'), or write it as f16/f32");
            type = *t;
        } else {
            const auto scheme = parse_scheme(action);
            if (needs_calibration(scheme) && !o.quantize)
                throw InvalidArgument(src.label() + ": tensor " + name + ": scheme '" + action + "' needs a quantizer for method '" +
                                      scheme.method + "'");
            action = to_string(scheme);
            // the scheme's block type; where its blocks do not divide the rows, llama-quantize's
            // fallback type (the quantizers apply the same rule, fitting_block_grid), else F16;
            // either is reported
            const auto asked = detail::want_of(scheme.spec);
            if (!asked)
                throw InvalidArgument(src.label() + ": tensor " + name + ": scheme '" + action + "' packs into a layout no GGUF type holds; GGUF grids: " +
                                      detail::gguf_scheme_names());
            if (scheme.options.act_order && !scheme.options.static_groups)
                throw InvalidArgument(src.label() + ": tensor " + name + ": '" + action + "' keeps a column order GGUF cannot store; add ',static'");
            if (scheme.options.salient > 0.0f)
                throw InvalidArgument(src.label() + ": tensor " + name + ": '" + action +
                                      "' keeps input channels in FP16, which no GGUF type holds; write it as a qforge container (--format qforge)");
            const auto fit = fitting_block_grid(scheme.spec, cols);
            const GgmlType asked_type = *asked;
            GgmlType got = GgmlType::F16;  // F16 when no block type holds the rows
            if (fit)
                if (const auto t = detail::want_of(*fit); t && std::size_t(cols) % ggml_type_info(*t).block_weights == 0) got = *t;
            if (got != asked_type)
                report.fallbacks.push_back(name + ": " + std::to_string(cols) + " columns are not whole " + std::string(ggml_type_info(asked_type).name) +
                                           " blocks: written as " + std::string(ggml_type_info(got).name) +
                                           (got == GgmlType::F16 ? "" : ", as llama-quantize falls back"));
            if (got == GgmlType::F16) action = "f16";
            type = got;
        }
        entries.push_back({name, from, action, false, rows, cols, type});
    };
    const auto vector = [&](const std::string& name, int n) { entries.push_back({name, name, "f32", true, 1, n, GgmlType::F32}); };

    detail::for_each_model_tensor(src, o.rules, matrix, vector);

    io::GgufWriter w;
    using namespace io::gguf_value;
    w.set("general.architecture", string("llama"));
    w.set("general.quantization_version", u32(2));
    w.set("llama.vocab_size", u32(std::uint32_t(c.vocab_size)));
    w.set("llama.context_length", u32(std::uint32_t(c.seq_len)));
    w.set("llama.embedding_length", u32(std::uint32_t(c.dim)));
    w.set("llama.block_count", u32(std::uint32_t(c.n_layers)));
    w.set("llama.feed_forward_length", u32(std::uint32_t(c.hidden_dim)));
    w.set("llama.attention.head_count", u32(std::uint32_t(c.n_heads)));
    w.set("llama.attention.head_count_kv", u32(std::uint32_t(c.n_kv_heads)));
    w.set("llama.rope.dimension_count", u32(std::uint32_t(c.dim / c.n_heads)));
    w.set("llama.rope.freq_base", f32(c.rope_theta));
    w.set("llama.attention.layer_norm_rms_epsilon", f32(c.norm_eps));
    for (const auto& [k, v] : o.metadata) w.set(k, v);
    for (const auto& e : entries)
        w.add_tensor(e.name, e.vector ? std::vector<std::uint64_t>{std::uint64_t(e.cols)} : std::vector<std::uint64_t>{std::uint64_t(e.cols), std::uint64_t(e.rows)},
                     e.type);

    const auto quantize = o.quantize ? o.quantize : [&](const std::string& name, const Linear& fp32, const RuntimeScheme& s) {
        return quantize_named_linear(src.label(), name, fp32, s, o.backend);
    };
    w.write(path, [&](std::size_t i, std::span<std::uint8_t> out) {
        const Entry& e = entries[i];
        if (o.progress) o.progress(i, entries.size(), e.name);
        if (e.vector) {
            const auto v = src.values(e.name, std::size_t(e.cols));
            std::memcpy(out.data(), v.data(), out.size());
        } else {
            Linear stored = src.linear(e.from, e.rows, e.cols);
            Linear weight;
            if (e.action == "keep") weight = std::move(stored);
            else if (e.action == "f32" || e.action == "f16") weight = dequantized_linear(stored, o.backend);
            else weight = quantize(e.name, dequantized_linear(stored, o.backend), parse_scheme(e.action));
            const auto* fp32 = std::get_if<Fp32Matrix>(&weight.weights());
            if (e.type == GgmlType::F16) {
                if (!fp32) throw InvalidArgument(e.name + ": expected FP32 weights to write as F16");
                for (std::size_t k = 0; k < fp32->data.size(); ++k) {
                    const std::uint16_t h = float_to_half(fp32->data[k]);
                    std::memcpy(out.data() + 2 * k, &h, 2);
                }
            } else {
                const auto got = detail::gguf_type_of(layout_of(weight));
                if (!got || *got != e.type)
                    throw InvalidArgument(e.name + ": the quantizer produced a " + layout_of(weight).format + " weight, the plan says " +
                                          std::string(ggml_type_info(e.type).name));
                std::vector<std::uint8_t> unused;  // blocks are stored as they are
                const auto bytes = detail::part_bytes(weight, ".blocks", unused);
                if (bytes.size() != out.size())
                    throw InvalidArgument(e.name + ": " + std::to_string(bytes.size()) + " bytes, the header promised " + std::to_string(out.size()));
                std::memcpy(out.data(), bytes.data(), bytes.size());
            }
            src.release(e.from);
        }
        report.tensors.push_back({e.name, e.action, e.type, std::uint64_t(out.size()), std::uint64_t(e.rows) * std::uint64_t(e.cols), !e.vector});
    });
    if (o.progress) o.progress(entries.size(), entries.size(), "");
    return report;
}

}  // namespace qforge::llama
