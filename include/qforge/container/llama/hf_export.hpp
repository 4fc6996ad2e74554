#pragma once
/// @file
/// A Llama model as a Hugging Face checkpoint directory in the GPTQ or AWQ layout
/// (formats/gptq_awq.hpp) that transformers, vLLM, GPTQModel and AutoAWQ load:
/// - `model.safetensors`: each decoder linear as `model.layers.N.self_attn.q_proj.qweight`,
///   `.qzeros`, `.scales` (and GPTQ's `.g_idx`), q/k rows in Hugging Face's rotate-half order;
///   the embedding, the head and the norms as F16 (the dtype those kernels run in; `torch_dtype`
///   float16). Metadata `format: pt` (transformers requires it) and `qforge.scheme`.
/// - `config.json`: the Llama hyper-parameters and `quantization_config`; `quantize_config.json`
///   (GPTQ: the same object, AutoGPTQ's file) or `quant_config.json` (AWQ: AutoAWQ's keys).
/// - the tokenizer files of a Hugging Face source directory (tokenizer.json,
///   tokenizer_config.json, special_tokens_map.json, generation_config.json, tokenizer.model),
///   copied; other sources have none to copy (the report says so).
///
/// Every decoder linear must come out on one integer grid (same bits, group size and zero-point
/// kind in every layer; the config has one `quantization_config`), its groups dividing every
/// layer's input width (vLLM and AutoAWQ refuse other checkpoints): a scheme such as
/// `gptq:w4g128s,act` or `awq:w4g128a`, or weights already stored on such a grid (a qforge
/// container, a GPTQ checkpoint). AWQ's layout is 4-bit without act-order; GPTQ's v1 form
/// (`gptq`, what every loader reads) cannot store a zero point of 0 (use `gptq_v2` or a
/// symmetric grid). All of this is checked before anything is written; the directory is built
/// under `DIR.tmp` and renamed to DIR when complete.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qforge/container/llama/container.hpp"
#include "qforge/core/half.hpp"
#include "qforge/sources/llama/hf_source.hpp"

namespace qforge::llama {

struct HfExportOptions {
    std::string format = "gptq";  ///< "gptq" (v1 zeros), "gptq_v2" or "awq"
    std::vector<std::pair<std::string, std::string>> rules;  ///< glob -> "keep" | "f32" | "f16" | scheme (as write_gguf)
    Backend backend;
    std::function<Linear(const std::string& name, const Linear& fp32, const RuntimeScheme&)> quantize;
    std::function<void(std::size_t done, std::size_t total, const std::string& name)> progress;
    std::string tokenizer_dir;    ///< a Hugging Face directory whose tokenizer files are copied ("" for none)
    int bos_token_id = -1, eos_token_id = -1;  ///< written to config.json when >= 0
};

struct HfExportReport {
    HfQuantConfig quantization;
    std::uint64_t block_bytes = 0, block_weights = 0;  ///< the decoder linears' qweight+qzeros+scales+g_idx bytes
    std::vector<std::string> copied;  ///< tokenizer files copied
    double block_bits_per_weight() const { return block_weights ? 8.0 * double(block_bytes) / double(block_weights) : 0.0; }
};

namespace detail {
/// Why a checkpoint directory cannot be written at `dir` ("" when it can): it must not exist (or
/// be an empty directory), and its parent must be a writable directory.
inline std::string output_dir_problem(const std::string& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (dir.empty()) return "no output directory given";
    if (fs::exists(dir, ec) && !(fs::is_directory(dir, ec) && fs::is_empty(dir, ec)))
        return fs::is_directory(dir, ec) ? "the directory exists and is not empty (a checkpoint is written into a new directory)" : "a file of that name exists";
    fs::path p(dir);
    if (!p.has_filename()) p = p.parent_path();  // "out/"
    const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
    if (!fs::exists(parent, ec)) return "directory '" + parent.string() + "' does not exist";
    if (!fs::is_directory(parent, ec)) return "'" + parent.string() + "' is not a directory";
    if (::access(parent.c_str(), W_OK) != 0) return "directory '" + parent.string() + "' is not writable";
    return "";
}
}  // namespace detail

/// Writes `src` as a GPTQ or AWQ checkpoint directory `dir`. InvalidArgument (naming the tensor)
/// when a weight cannot be stored in the layout, FileError for the directory; both before any
/// work.
inline HfExportReport write_hf_checkpoint(const ModelSource& src, const std::string& dir, const HfExportOptions& o) {
    namespace fs = std::filesystem;
    if (o.format != "gptq" && o.format != "gptq_v2" && o.format != "awq")
        throw InvalidArgument("checkpoint format '" + o.format + "': gptq, gptq_v2 or awq");
    if (const auto why = detail::output_dir_problem(dir); !why.empty()) throw FileError(dir, "cannot write the checkpoint: " + why);
    const Config& c = src.config();
    const bool awq = o.format == "awq";
    struct Entry {
        std::string name, hf, action;
        bool vector, quantized;
        int rows, cols;
    };
    std::vector<Entry> entries;
    std::optional<TensorLayout> grid;  // the layers' common grid
    std::string grid_from;
    bool any_ordered = false;
    const auto matrix = [&](const std::string& name, const std::string& from, int rows, int cols) {
        std::string action = action_for(o.rules, name);
        const std::string hf = HfSource::hf_name(name);
        if (name.rfind("blk.", 0) != 0) {  // embedding and head: F16
            if (action != "keep" && action != "f32" && action != "f16")
                throw InvalidArgument(src.label() + ": tensor " + name + ": " + o.format +
                                      " checkpoints keep the embedding and the head unquantized (F16); '" + action + "' asks otherwise");
            entries.push_back({name, hf, "f16", false, false, rows, cols});
            (void)from;
            return;
        }
        TensorLayout l;
        if (action == "keep") {
            l = src.layout(from);
            l.rows = rows, l.cols = cols;
        } else if (action == "f32" || action == "f16") {
            throw InvalidArgument(src.label() + ": tensor " + name + ": " + o.format + " checkpoints hold every decoder linear quantized; '" + action +
                                  "' asks for it unquantized");
        } else {
            const auto scheme = parse_scheme(action);
            if (needs_calibration(scheme) && !o.quantize)
                throw InvalidArgument(src.label() + ": tensor " + name + ": scheme '" + action + "' needs a quantizer for method '" + scheme.method + "'");
            action = to_string(scheme);
            l = with_tensor_context(src.label(), name, [&] { return scheme_layout(scheme, rows, cols); });
        }
        const auto what = [&] {
            return l.format == "f32" ? std::string("stored as FP32 (give a scheme, e.g. --scheme gptq:w4g128s)")
                                     : "stored as " + l.format + (l.format == "dense" ? " " + std::to_string(l.spec.bits) + "-bit" : std::string());
        };
        if (l.salient > 0)
            throw InvalidArgument(src.label() + ": tensor " + name + " keeps " + std::to_string(l.salient) + " input channels in FP16 (',salient='), which " +
                                  o.format + " checkpoints have no field for; write it as a qforge container (--format qforge)");
        if (l.format != "dense" || l.spec.zero == ZeroPoint::float_min)
            throw InvalidArgument(src.label() + ": tensor " + name + " is " + what() +
                                  (l.format == "dense" ? " with float minimums ('m')" : "") + "; " + o.format +
                                  " checkpoints hold integer grids with fp16 scales and integer zero points (dense 'a' or 's', e.g. w4g128a)");
        if (awq && (l.spec.bits != 4 || l.ordered))
            throw InvalidArgument(src.label() + ": tensor " + name + ": AWQ's GEMM layout is 4-bit with contiguous groups; this weight is " +
                                  std::to_string(l.spec.bits) + "-bit" + (l.ordered ? " with an act-order column order (use --format gptq)" : ""));
        const int g = l.spec.group_size > 0 ? l.spec.group_size : -1;  // -1: one group per output (quantization_config's spelling)
        if (!grid) {
            grid = l;
            grid->spec.group_size = g;
            grid_from = name;
        } else if (grid->spec.bits != l.spec.bits || grid->spec.group_size != g || (!awq && grid->spec.zero != l.spec.zero)) {
            throw InvalidArgument(src.label() + ": tensor " + name + " is " + std::to_string(l.spec.bits) + "-bit, group " + std::to_string(g) +
                                  ", but " + grid_from + " is " + std::to_string(grid->spec.bits) + "-bit, group " + std::to_string(grid->spec.group_size) +
                                  ": the " + o.format + " checkpoint format has one quantization_config for every layer");
        }
        if (g > 0 && cols % g != 0)
            throw InvalidArgument(src.label() + ": tensor " + name + ": " + std::to_string(cols) + " inputs are not whole groups of " + std::to_string(g) +
                                  ": vLLM, AutoAWQ and the exllama kernels need in_features divisible by group_size (pick a group that divides "
                                  "every layer's width)");
        any_ordered = any_ordered || l.ordered;
        IntGridLayer probe(l.spec.bits, rows, cols, g < 0 ? cols : g);
        if (const auto why = awq ? awq_unsupported(probe) : gptq_unsupported(probe); !why.empty())
            throw InvalidArgument(src.label() + ": tensor " + name + " (" + std::to_string(rows) + " x " + std::to_string(cols) + "): " + why);
        entries.push_back({name, hf.substr(0, hf.size() - 7), action, false, true, rows, cols});
    };
    const auto vector = [&](const std::string& name, int n) { entries.push_back({name, HfSource::hf_name(name), "f16", true, false, 1, n}); };
    detail::for_each_model_tensor(src, o.rules, matrix, vector);
    if (!grid) throw InvalidArgument(src.label() + ": the model has no decoder linear layers to write");

    HfExportReport report;
    HfQuantConfig& q = report.quantization;
    q.method = awq ? "awq" : "gptq";
    q.bits = grid->spec.bits;
    q.group_size = grid->spec.group_size;
    q.sym = !awq && grid->spec.zero == ZeroPoint::symmetric;
    q.desc_act = any_ordered;
    q.v1 = o.format == "gptq";

    // the safetensors plan: each quantized layer's parts in order
    io::SafetensorsWriter w;
    struct Slot {
        std::size_t entry;
        std::string part;
    };
    std::vector<Slot> slots;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& e = entries[i];
        const auto R = std::uint64_t(e.rows), C = std::uint64_t(e.cols), b = std::uint64_t(q.bits);
        const std::uint64_t G = q.group_size < 0 ? 1 : (C + std::uint64_t(q.group_size) - 1) / std::uint64_t(q.group_size);
        if (!e.quantized) {
            w.add(e.hf, "F16", e.vector ? std::vector<std::uint64_t>{C} : std::vector<std::uint64_t>{R, C});
            slots.push_back({i, ""});
            continue;
        }
        w.add(e.hf + ".qweight", "I32", awq ? std::vector<std::uint64_t>{C, R / 8} : std::vector<std::uint64_t>{C * b / 32, R});
        w.add(e.hf + ".qzeros", "I32", awq ? std::vector<std::uint64_t>{G, R / 8} : std::vector<std::uint64_t>{G, R * b / 32});
        w.add(e.hf + ".scales", "F16", {G, R});
        slots.push_back({i, ".qweight"});
        slots.push_back({i, ".qzeros"});
        slots.push_back({i, ".scales"});
        if (!awq) {
            w.add(e.hf + ".g_idx", "I32", {C});
            slots.push_back({i, ".g_idx"});
        }
    }
    w.metadata("format", "pt");
    {  // the schemes that made the layers (a kept layer: what its source recorded), for qforge's own import
        std::string schemes;
        std::map<std::string, bool> seen;
        for (const auto& e : entries) {
            if (!e.quantized) continue;
            std::string made_by = e.action == "keep" ? src.scheme_of(e.name) : e.action;
            if (made_by.empty()) made_by = "keep";
            if (!seen[made_by]) schemes += (schemes.empty() ? "" : ", ") + made_by;
            seen[made_by] = true;
        }
        w.metadata("qforge.scheme", schemes);
    }

    const std::string tmp = (fs::path(dir).has_filename() ? fs::path(dir) : fs::path(dir).parent_path()).string() + ".tmp";
    const std::string marker = tmp + "/.qforge-partial";
    std::error_code ec;
    if (fs::exists(tmp, ec)) {
        if (!fs::exists(marker, ec)) throw FileError(tmp, "exists and is not a partial checkpoint of qforge's: move it away first");
        fs::remove_all(tmp, ec);
    }
    if (!fs::create_directory(tmp, ec)) throw FileError(tmp, "cannot create the directory: " + ec.message());
    try {
        io::write_file_atomically(marker, "a checkpoint qforge is writing; removed when complete\n");
        const auto quantize = o.quantize ? o.quantize : [&](const std::string& name, const Linear& fp32, const RuntimeScheme& s) {
            return quantize_named_linear(src.label(), name, fp32, s, o.backend);
        };
        std::size_t current = entries.size();
        PackedCheckpointLayer packed;
        std::vector<std::uint16_t> halves;
        const auto release = [&](std::size_t i) {
            if (i < entries.size() && !entries[i].vector) src.release(entries[i].name == "output.weight" ? src.output_name() : entries[i].name);
        };
        w.write(tmp + "/model.safetensors", [&](std::size_t i, std::span<std::uint8_t> out) {
            const Slot& slot = slots[i];
            const Entry& e = entries[slot.entry];
            if (slot.entry != current) {
                release(current);
                current = slot.entry;
                if (o.progress) o.progress(current, entries.size(), e.name);
                halves.clear();
                packed = {};
                if (e.vector) {
                    for (const float v : src.values(e.name, std::size_t(e.cols))) halves.push_back(float_to_half(v));
                } else {
                    const std::string from = e.name == "output.weight" ? src.output_name() : e.name;
                    Linear stored = src.linear(from, e.rows, e.cols);
                    if (!e.quantized) {
                        const auto fp32 = dequantized_linear(stored, o.backend);
                        for (const float v : std::get<Fp32Matrix>(fp32.weights()).data) halves.push_back(float_to_half(v));
                    } else {
                        Linear weight = e.action == "keep" ? std::move(stored) : quantize(e.name, dequantized_linear(stored, o.backend), parse_scheme(e.action));
                        packed = with_tensor_context(src.label(), e.name, [&] {
                            IntGridLayer l = int_grid_of(weight);
                            const int hs = c.head_size();
                            if (e.name.find(".attn_q.") != std::string::npos) l = l.permute_outputs(hf_rotary_rows(c.n_heads, hs));
                            if (e.name.find(".attn_k.") != std::string::npos) l = l.permute_outputs(hf_rotary_rows(c.n_kv_heads, hs));
                            return awq ? pack_awq(l) : pack_gptq(l, q.v1);
                        });
                        report.block_weights += std::uint64_t(e.rows) * std::uint64_t(e.cols);
                    }
                }
            }
            std::span<const std::uint8_t> bytes;
            if (slot.part.empty()) bytes = detail::bytes_of(halves.data(), halves.size() * 2);
            else if (slot.part == ".qweight") bytes = detail::bytes_of(packed.qweight.data(), packed.qweight.size() * 4);
            else if (slot.part == ".qzeros") bytes = detail::bytes_of(packed.qzeros.data(), packed.qzeros.size() * 4);
            else if (slot.part == ".scales") bytes = detail::bytes_of(packed.scales.data(), packed.scales.size() * 2);
            else bytes = detail::bytes_of(packed.g_idx.data(), packed.g_idx.size() * 4);
            if (bytes.size() != out.size())
                throw InvalidArgument(e.name + slot.part + ": " + std::to_string(bytes.size()) + " bytes, the header promised " + std::to_string(out.size()));
            if (e.quantized) report.block_bytes += bytes.size();
            std::memcpy(out.data(), bytes.data(), bytes.size());
        });
        release(current);

        io::Json::Object cfg{{"architectures", io::Json(io::Json::Array{io::Json(std::string("LlamaForCausalLM"))})},
                             {"model_type", io::Json(std::string("llama"))},
                             {"hidden_size", io::Json(c.dim)},
                             {"intermediate_size", io::Json(c.hidden_dim)},
                             {"num_hidden_layers", io::Json(c.n_layers)},
                             {"num_attention_heads", io::Json(c.n_heads)},
                             {"num_key_value_heads", io::Json(c.n_kv_heads)},
                             {"vocab_size", io::Json(c.vocab_size)},
                             {"max_position_embeddings", io::Json(c.seq_len)},
                             {"rope_theta", io::Json(double(c.rope_theta))},
                             {"rms_norm_eps", io::Json(double(c.norm_eps))},
                             {"hidden_act", io::Json(std::string("silu"))},
                             {"tie_word_embeddings", io::Json(src.tied_output())},
                             {"torch_dtype", io::Json(std::string("float16"))}};
        if (o.bos_token_id >= 0) cfg.emplace_back("bos_token_id", io::Json(o.bos_token_id));
        if (o.eos_token_id >= 0) cfg.emplace_back("eos_token_id", io::Json(o.eos_token_id));
        cfg.emplace_back("quantization_config", q.to_json());
        io::write_file_atomically(tmp + "/config.json", io::Json(std::move(cfg)).dump() + "\n");
        if (awq)
            io::write_file_atomically(tmp + "/quant_config.json", io::Json(io::Json::Object{{"zero_point", io::Json(true)},
                                                                                             {"q_group_size", io::Json(q.group_size)},
                                                                                             {"w_bit", io::Json(q.bits)},
                                                                                             {"version", io::Json(std::string("GEMM"))}})
                                                                          .dump() + "\n");
        else
            io::write_file_atomically(tmp + "/quantize_config.json", q.to_json().dump() + "\n");
        if (!o.tokenizer_dir.empty())
            for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "tokenizer.model"})
                if (fs::is_regular_file(fs::path(o.tokenizer_dir) / f)) {
                    fs::copy_file(fs::path(o.tokenizer_dir) / f, fs::path(tmp) / f, fs::copy_options::overwrite_existing, ec);
                    if (ec) throw FileError((fs::path(tmp) / f).string(), "cannot copy the tokenizer file: " + ec.message());
                    report.copied.push_back(f);
                }
        fs::remove(marker, ec);
        if (fs::exists(dir, ec)) fs::remove(dir, ec);  // the empty directory checked above
        fs::rename(tmp, dir, ec);
        if (ec) throw FileError(dir, "cannot move the finished checkpoint into place: " + ec.message());
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
    if (o.progress) o.progress(entries.size(), entries.size(), "");
    return report;
}

}  // namespace qforge::llama
