#pragma once
/// @file
/// qforge's native model container: a safetensors file whose tensors are the packed parts of
/// each weight and whose metadata says how to read them back.
///
/// Metadata (all values are strings, as safetensors requires):
/// - `qforge.format` = "qforge-llama", `qforge.format_version` = "1" (readers reject others);
/// - `qforge.config`: JSON of the Llama hyperparameters;
/// - `qforge.tensors`: JSON object, for each weight: `format` ("f32", or a registry format's
///   `info.stored_as`: "dense", "q4_0", "q4_1", "q8_0", "iq4_nl", "nf4"), `rows`, `cols`; for
///   formats stored as dense rows (`Storage::dense_rows`: per-group scales in their own arrays)
///   `bits`, `group_size`, `zero` ("s", "a", "m"); for every quantized weight `scheme` (the
///   scheme that produced it with its options, e.g. "rtn:w4g128a" or "gptq:w4g32a,act"; "keep"
///   only when a weight was copied and its origin is unknown);
/// - optional `qforge.tokenizer` (the file the tokenizer was taken from) and `qforge.source`.
///
/// Tensors of weight W: "f32" -> `W` (F32, rows x cols, or n for vectors); "dense" ->
/// `W.codes` (U8, rows x ceil(cols*bits/8), LSB-first), `W.scales` (F16, rows x groups), and
/// `W.zeros` (U8) or `W.mins` (F16) for asymmetric grids; GGUF block formats -> `W.blocks` (U8,
/// rows x bytes per row, llama.cpp's block structs). A weight whose columns are in their own
/// order (GPTQ act-order with dynamic groups; `"ordered": true`) also has `W.order` (I32, cols):
/// column k multiplies input x[order[k]]. A weight with K input channels kept in FP16
/// (`,salient=P`; `"salient": K`, `cols` the layer's whole input width) has its packed parts
/// over the cols - K other columns, `W.salient_columns` (I32, K: the kept channels, ascending)
/// and `W.salient_values` (F16, rows x K); its packed columns are the other channels in
/// ascending order, or `W.order` (I32, cols - K) when `"ordered"`. No `output.weight` means the head is tied to
/// `token_embd.weight`. Layer q/k rows are in the adjacent-pair RoPE order (as llama.cpp).
#include <fnmatch.h>

#include <cstring>
#include <functional>
#include <map>
#include <optional>

#include "qforge/io/output_path.hpp"
#include "qforge/io/safetensors.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

inline constexpr const char* container_format = "qforge-llama";
inline constexpr int container_version = 1;

namespace detail {
struct Part {
    std::string suffix, dtype;
    std::vector<std::uint64_t> shape;
};

/// Calls fn(std::type_identity<F>) for the registry's format stored as `l.format` (a dense one:
/// of the layout's bit width); false when there is none.
template <class Fn>
bool visit_stored_format(const TensorLayout& l, Fn&& fn) {
    return visit_format([&](const FormatInfo& i) { return i.stored_as == l.format && (i.storage == Storage::blocks || i.bits == l.spec.bits); },
                        std::forward<Fn>(fn));
}

/// How the registry's format stored as `stored_as` lays out its bytes; empty for "f32" and for
/// names no format has.
inline std::optional<Storage> storage_of(const std::string& stored_as) {
    std::optional<Storage> out;
    visit_format([&](const FormatInfo& i) { return i.stored_as == stored_as; }, [&](auto f) { out = decltype(f)::type::info.storage; });
    return out;
}

/// The tensors a weight of this layout is stored as.
inline std::vector<Part> parts_of_values(const TensorLayout& l, bool vector);
inline std::vector<Part> parts_of(const TensorLayout& l, bool vector) {
    auto p = parts_of_values(l, vector);
    if (l.ordered) p.push_back({".order", "I32", {std::uint64_t(l.packed_cols())}});
    if (l.salient > 0) {
        p.push_back({".salient_columns", "I32", {std::uint64_t(l.salient)}});
        p.push_back({".salient_values", "F16", {std::uint64_t(l.rows), std::uint64_t(l.salient)}});
    }
    return p;
}
inline std::vector<Part> parts_of_values(const TensorLayout& l, bool vector) {
    // the packed weights' own width: a layer keeping FP16 channels packs the other columns only
    const int packed = l.packed_cols();
    const auto R = std::uint64_t(l.rows), C = std::uint64_t(packed);
    if (l.format == "f32") return {{"", "F32", vector ? std::vector<std::uint64_t>{R * C} : std::vector<std::uint64_t>{R, C}}};
    std::vector<Part> p;
    if (!visit_stored_format(l, [&](auto f) {
            using F = typename decltype(f)::type;
            if constexpr (F::info.storage == Storage::blocks) {
                using B = typename F::block_type;
                p = {{".blocks", "U8", {R, C / block_fields<B>::weights * sizeof(B)}}};
                if constexpr (requires { F::table_parts(0, 0); })  // float tables beside the blocks (double-quantized scales)
                    for (const auto& [suffix, n] : F::table_parts(l.rows, packed)) p.push_back({suffix, "F32", {std::uint64_t(n)}});
            } else {
                const auto G = std::uint64_t(l.spec.groups_per_row(packed));
                p = {{".codes", "U8", {R, (C * std::uint64_t(l.spec.bits) + 7) / 8}}, {".scales", "F16", {R, G}}};
                if (l.spec.zero == ZeroPoint::integer) p.push_back({".zeros", "U8", {R, G}});
                if (l.spec.zero == ZeroPoint::float_min) p.push_back({".mins", "F16", {R, G}});
            }
        }))
        throw InvalidArgument("container: unknown tensor format '" + l.format + "'");
    return p;
}

inline std::span<const std::uint8_t> bytes_of(const void* p, std::size_t n) { return {static_cast<const std::uint8_t*>(p), n}; }

/// The bytes of part `suffix` of a weight; `scratch` holds those converted for storage (the kept
/// FP16 channels).
inline std::span<const std::uint8_t> part_bytes(const Linear& l, const std::string& suffix, std::vector<std::uint8_t>& scratch) {
    if (suffix == ".order") return bytes_of(l.input_order().data(), l.input_order().size() * sizeof(int));
    if (suffix == ".salient_columns" || suffix == ".salient_values") {
        const auto& wide = l.wide();
        if (!wide) throw InvalidArgument("container: part " + suffix + " of a layer without kept FP16 channels");
        if (suffix == ".salient_columns") return bytes_of(wide->columns.data(), wide->columns.size() * sizeof(int));
        scratch.resize(wide->values.size() * 2);
        for (std::size_t i = 0; i < wide->values.size(); ++i) {
            const std::uint16_t h = float_to_half(wide->values[i]);
            std::memcpy(scratch.data() + 2 * i, &h, 2);
        }
        return scratch;
    }
    return std::visit(
        [&](const auto& w) -> std::span<const std::uint8_t> {
            using T = std::decay_t<decltype(w)>;
            if constexpr (std::is_same_v<T, Fp32Matrix>) return bytes_of(w.data.data(), w.data.size() * 4);
            else if constexpr (std::is_same_v<T, PqMatrix>) throw InvalidArgument("container: PQ weights have no stored layout yet");
            else if constexpr (requires { w.blocks; }) {
                if constexpr (requires { format_of_packed<T>::table(w, suffix); })
                    if (suffix != ".blocks") {
                        const auto t = format_of_packed<T>::table(w, suffix);
                        return bytes_of(t.data(), t.size() * sizeof(float));
                    }
                return bytes_of(w.blocks.data(), w.blocks.size() * sizeof(w.blocks[0]));
            }
            else {
                if (suffix == ".codes") return bytes_of(w.codes.data(), w.codes.size());
                if (suffix == ".scales") return bytes_of(w.scales.data(), w.scales.size() * 2);
                if (suffix == ".zeros") return bytes_of(w.zeros.data(), w.zeros.size());
                return bytes_of(w.mins.data(), w.mins.size() * 2);
            }
        },
        l.weights());
}

inline char zero_letter(ZeroPoint z) { return z == ZeroPoint::symmetric ? 's' : z == ZeroPoint::integer ? 'a' : 'm'; }
inline ZeroPoint zero_of(const std::string& s, const std::string& label) {
    if (s == "s") return ZeroPoint::symmetric;
    if (s == "a") return ZeroPoint::integer;
    if (s == "m") return ZeroPoint::float_min;
    throw FileError(label, "unknown zero-point kind '" + s + "'");
}

template <class F>
Linear dense_from(const io::SafetensorsFile& f, const std::string& name, const TensorLayout& l) {
    typename F::Packed p;
    p.spec = l.spec;
    p.rows = l.rows;
    p.cols = l.cols;
    p.row_bytes = (std::size_t(l.cols) * std::size_t(l.spec.bits) + 7) / 8;
    const auto copy = [&](const std::string& suffix, auto& vec) {
        const auto& t = f.tensor(name + suffix);
        vec.resize(t.bytes.size() / sizeof(vec[0]));
        std::memcpy(vec.data(), t.bytes.data(), t.bytes.size());
    };
    copy(".codes", p.codes);
    copy(".scales", p.scales);
    if (l.spec.zero == ZeroPoint::integer) copy(".zeros", p.zeros);
    if (l.spec.zero == ZeroPoint::float_min) copy(".mins", p.mins);
    if (auto why = F::unsupported(l.spec, l.rows, l.cols); !why.empty()) throw FileError(f.path(), "tensor " + name + ": " + why);
    // every scale and minimum finite, every zero point on the grid
    if (auto why = F::fault(p); !why.empty()) throw FileError(f.path(), "tensor " + name + ": " + why);
    return Linear(std::move(p));
}

template <class F>
Linear blocks_from(const io::SafetensorsFile& f, const std::string& name, const TensorLayout& l) {
    typename F::Packed p;
    p.rows = l.rows;
    p.cols = l.cols;
    const auto& t = f.tensor(name + ".blocks");
    p.blocks.resize(t.bytes.size() / sizeof(typename F::block_type));
    std::memcpy(p.blocks.data(), t.bytes.data(), t.bytes.size());
    if constexpr (requires { F::table_parts(0, 0); })
        for (const auto& [suffix, n] : F::table_parts(l.rows, l.cols)) {
            const auto& part = f.tensor(name + suffix);
            const auto dst = F::table(p, suffix);
            std::memcpy(dst.data(), part.bytes.data(), std::min(part.bytes.size(), dst.size() * sizeof(float)));
        }
    // every block's scale (and minimum) finite, as for a GGUF file's blocks
    if (auto why = F::fault(p); !why.empty()) throw FileError(f.path(), "tensor " + name + ": " + why);
    if constexpr (requires { F::complete(p); }) F::complete(p);  // a K-quant's kernel form
    return Linear(std::move(p));
}
}  // namespace detail

/// Reads a qforge container.
class ContainerSource : public ModelSource {
public:
    explicit ContainerSource(const std::string& path) : f_(io::SafetensorsFile::open(path)), label_(path) {
        const auto& meta = f_.metadata();
        const auto get = [&](const std::string& key) -> const std::string& {
            const auto it = meta.find(key);
            if (it == meta.end()) throw FileError(path, "not a qforge container: no '" + key + "' metadata");
            return it->second;
        };
        if (get("qforge.format") != container_format) throw FileError(path, "not a qforge container: format '" + get("qforge.format") + "'");
        if (get("qforge.format_version") != std::to_string(container_version))
            throw FileError(path, "qforge container version " + get("qforge.format_version") + " is not supported (this build reads " +
                                      std::to_string(container_version) + ")");
        try {
            const auto c = io::Json::parse(get("qforge.config"));
            const auto i = [&](const char* k) { return int(c.at(k).as_int()); };
            config_ = {i("dim"), i("hidden_dim"), i("n_layers"), i("n_heads"), i("n_kv_heads"), i("vocab_size"), i("seq_len"),
                       float(c.at("rope_theta").as_double()), float(c.at("norm_eps").as_double())};
            const auto all = io::Json::parse(get("qforge.tensors"));
            for (const auto& [name, t] : all.as_object()) {
                TensorLayout l;
                l.format = t.at("format").as_string();
                l.rows = int(t.at("rows").as_int());
                l.cols = int(t.at("cols").as_int());
                const auto storage = detail::storage_of(l.format);
                if (!storage && l.format != "f32") throw FileError(path, "tensor " + name + ": unknown format '" + l.format + "'");
                if (storage == Storage::dense_rows) {
                    l.spec.bits = int(t.at("bits").as_int());
                    l.spec.group_size = int(t.at("group_size").as_int());
                    l.spec.zero = detail::zero_of(t.at("zero").as_string(), path);
                    l.spec.scale_type = ScaleType::f16;
                    try {
                        l.spec.validate();
                    } catch (const InvalidArgument& e) {
                        throw FileError(path, "tensor " + name + ": " + e.what());
                    }
                } else if (l.format != "f32") {
                    l.spec = TensorLayout{}.spec;
                }
                if (const auto* ord = t.find("ordered")) l.ordered = ord->as_bool();
                if (const auto* sal = t.find("salient")) l.salient = int(sal->as_int());
                if (l.rows <= 0 || l.cols <= 0) throw FileError(path, "tensor " + name + " has a bad shape");
                if (l.salient < 0 || l.salient >= l.cols || (l.salient > 0 && l.format == "f32"))
                    throw FileError(path, "tensor " + name + ": " + std::to_string(l.salient) + " kept FP16 channels of " + std::to_string(l.cols) +
                                              " inputs" + (l.format == "f32" ? " on an FP32 weight" : "") + " (0 <= salient < cols, packed weights only)");
                // every part must be there with the size the layout implies
                for (const auto& part : detail::parts_of(l, false)) {
                    const auto* st = f_.find(name + part.suffix);
                    if (!st) throw FileError(path, "tensor " + name + ": part '" + name + part.suffix + "' is missing");
                    std::uint64_t want = io::safetensors_dtype_size(part.dtype);
                    for (const auto d : part.shape) want *= d;
                    if (st->dtype != part.dtype || st->bytes.size() != want)
                        throw FileError(path, "tensor " + name + part.suffix + ": " + st->dtype + ", " + std::to_string(st->bytes.size()) +
                                                  " bytes; the layout needs " + part.dtype + ", " + std::to_string(want));
                }
                layouts_[name] = l;
                if (const auto* s = t.find("scheme")) schemes_[name] = s->as_string();
            }
        } catch (const InvalidData& e) {
            throw FileError(path, std::string("bad qforge metadata: ") + e.what());
        }
        validate_config(config_, path);
        if (const auto it = meta.find("qforge.tokenizer"); it != meta.end()) tokenizer_ = it->second;
    }

    const Config& config() const override { return config_; }
    const std::string& label() const override { return label_; }
    bool has(const std::string& name) const override { return layouts_.count(name) != 0; }
    TensorLayout layout(const std::string& name) const override { return find(name); }
    std::vector<float> values(const std::string& name, std::size_t n) const override {
        const auto& l = find(name);
        if (std::size_t(l.rows) * std::size_t(l.cols) != n)
            throw FileError(label_, "tensor " + name + " has " + std::to_string(std::size_t(l.rows) * std::size_t(l.cols)) +
                                        " elements, expected " + std::to_string(n));
        if (l.format == "f32") return f_.to_float(f_.tensor(name));
        auto fp32 = dequantized_linear(read(name, l));
        return std::move(std::get<Fp32Matrix>(fp32.weights()).data);
    }
    Linear linear(const std::string& name, int rows, int cols) const override {
        const auto& l = find(name);
        // containers written before 2026-12-02 stored an untied model's embedding table as a vector
        if (l.format == "f32" && l.rows == 1 && rows > 1 && std::size_t(l.cols) == std::size_t(rows) * std::size_t(cols))
            return Linear(Fp32Matrix{rows, cols, f_.to_float(f_.tensor(name))});
        check_shape(name, std::uint64_t(l.rows), std::uint64_t(l.cols), rows, cols);
        return read(name, l);
    }
    void release(const std::string& name) const override {
        for (const auto& part : detail::parts_of(find(name), false))
            if (const auto* t = f_.find(name + part.suffix)) f_.release(*t);
    }
    /// The scheme text recorded for a weight ("" when it was kept as it was).
    std::string scheme(const std::string& name) const {
        const auto it = schemes_.find(name);
        return it == schemes_.end() ? std::string() : it->second;
    }
    std::string scheme_of(const std::string& name) const override { return scheme(name); }
    const std::string& tokenizer() const noexcept { return tokenizer_; }
    /// Bytes stored for a weight, all its parts together.
    std::size_t stored_bytes(const std::string& name) const {
        std::size_t n = 0;
        for (const auto& part : detail::parts_of(find(name), false)) n += f_.tensor(name + part.suffix).bytes.size();
        return n;
    }

private:
    const TensorLayout& find(const std::string& name) const {
        const auto it = layouts_.find(name);
        if (it == layouts_.end()) throw FileError(label_, "no tensor named '" + name + "'");
        return it->second;
    }
    Linear read(const std::string& name, const TensorLayout& l) const {
        TensorLayout packed = l;
        packed.cols = l.packed_cols();
        packed.salient = 0;
        Linear lin = read_values(name, packed);
        if (!l.ordered && l.salient == 0) return lin;
        std::vector<int> order;
        if (l.ordered) {
            const auto& t = f_.tensor(name + ".order");
            order.resize(std::size_t(l.packed_cols()));
            std::memcpy(order.data(), t.bytes.data(), t.bytes.size());
        }
        if (l.salient == 0) {
            try {
                return Linear(lin.weights(), std::move(order));
            } catch (const InvalidArgument& e) {
                throw FileError(label_, "tensor " + name + ".order: " + e.what());
            }
        }
        auto wide = std::make_shared<WideColumns>();
        wide->columns.resize(std::size_t(l.salient));
        const auto& cols = f_.tensor(name + ".salient_columns");
        std::memcpy(wide->columns.data(), cols.bytes.data(), cols.bytes.size());
        wide->values = f_.to_float(f_.tensor(name + ".salient_values"));  // refuses a non-finite value, naming it
        for (std::size_t j = 0; j < wide->columns.size(); ++j)
            if (wide->columns[j] < 0 || wide->columns[j] >= l.cols || (j > 0 && wide->columns[j] <= wide->columns[j - 1]))
                throw FileError(label_, "tensor " + name + ".salient_columns: entry " + std::to_string(j) + " is " + std::to_string(wide->columns[j]) +
                                            " (the kept channels ascend, each below " + std::to_string(l.cols) + ")");
        if (!l.ordered) {  // the other channels, ascending
            order.reserve(std::size_t(l.packed_cols()));
            for (int c = 0, at = 0; c < l.cols; ++c) {
                if (at < l.salient && wide->columns[std::size_t(at)] == c) ++at;
                else order.push_back(c);
            }
        }
        try {
            return Linear(lin.weights(), std::move(order), nullptr, std::move(wide));
        } catch (const InvalidArgument& e) {
            throw FileError(label_, "tensor " + name + " (kept FP16 channels and column order): " + e.what());
        }
    }
    Linear read_values(const std::string& name, const TensorLayout& l) const {
        if (l.format == "f32") return Linear(Fp32Matrix{l.rows, l.cols, f_.to_float(f_.tensor(name))});
        Linear out;
        if (detail::visit_stored_format(l, [&](auto fmt) {
                using F = typename decltype(fmt)::type;
                if constexpr (F::info.storage == Storage::blocks) out = detail::blocks_from<F>(f_, name, l);
                else out = detail::dense_from<F>(f_, name, l);
            }))
            return out;
        throw FileError(label_, "tensor " + name + ": no packed format stores '" + l.format + "' with " + std::to_string(l.spec.bits) +
                                    "-bit codes (formats/registry.hpp)");
    }

    io::SafetensorsFile f_;
    std::string label_, tokenizer_;
    Config config_;
    std::map<std::string, TensorLayout> layouts_;
    std::map<std::string, std::string> schemes_;
};

namespace detail {
/// Every tensor a written Llama model holds, in file order: matrix(name, source name, rows, cols)
/// for token_embd, each block's seven linears and output.weight, vector(name, n) for the norms.
/// A tied head stays tied (no output.weight) unless the rules give output.weight an action of
/// its own (not "keep", and not the one token_embd.weight gets: `--outtype q8_0`'s "*" keeps the
/// tie, as the two would be written alike); the embedding table is a matrix either way.
template <class Matrix, class Vector>
void for_each_model_tensor(const ModelSource& src, const std::vector<std::pair<std::string, std::string>>& rules, Matrix&& matrix, Vector&& vector);
}  // namespace detail

/// What happens to each weight matrix: rules (glob pattern -> action) are tried in order and
/// the last match wins. Actions: "keep" (as stored in the source), "f32" (dequantized), or a
/// scheme such as "rtn:w4g128a". Matrices no rule matches are kept.
struct ContainerOptions {
    std::vector<std::pair<std::string, std::string>> rules;
    std::string tokenizer, source;
    Backend backend;  ///< runs the default quantizer
    /// Turns an FP32 weight into its quantized form for a scheme (default: RTN, dense packing).
    std::function<Linear(const std::string& name, const Linear& fp32, const RuntimeScheme&)> quantize;
    std::function<void(std::size_t done, std::size_t total, const std::string& name)> progress;
    /// The scheme (with its options) that produced a weight the container keeps as the source
    /// holds it (e.g. a model quantized in memory by GPTQ or AWQ). Its answer is recorded as the
    /// weight's `scheme`; without it the source's own `scheme_of` is asked (a container's record,
    /// a QuantizingSource's scheme); empty records "keep".
    std::function<std::string(const std::string& name)> provenance;
};

/// The action for weight `name` under the rules ("keep" when none matches).
inline std::string action_for(const std::vector<std::pair<std::string, std::string>>& rules, const std::string& name) {
    std::string action = "keep";
    for (const auto& [pattern, what] : rules)
        if (::fnmatch(pattern.c_str(), name.c_str(), 0) == 0) action = what;
    return action;
}

template <class Matrix, class Vector>
void detail::for_each_model_tensor(const ModelSource& src, const std::vector<std::pair<std::string, std::string>>& rules, Matrix&& matrix,
                                   Vector&& vector) {
    const Config& c = src.config();
    const std::string head = action_for(rules, "output.weight");
    const bool tied = src.tied_output() && (head == "keep" || head == action_for(rules, "token_embd.weight"));
    matrix("token_embd.weight", "token_embd.weight", c.vocab_size, c.dim);
    for (int l = 0; l < c.n_layers; ++l) {
        vector(block_tensor_name(l, "attn_norm"), c.dim);
        vector(block_tensor_name(l, "ffn_norm"), c.dim);
        for (const auto& b : block_linears) {
            const auto [rows, cols] = block_linear_shape(c, b);
            const auto name = block_tensor_name(l, b.gguf);
            matrix(name, name, rows, cols);
        }
    }
    vector("output_norm.weight", c.dim);
    if (!tied) matrix("output.weight", src.output_name(), c.vocab_size, c.dim);
}

/// Streams `src` into a container at `path`: each weight is materialised, converted, written and
/// released before the next, so resident memory stays about one weight (plus the output). The
/// file appears under `path` only when complete.
inline void write_container(const ModelSource& src, const std::string& path, const ContainerOptions& o) {
    io::check_output_path(path);
    const Config& c = src.config();
    struct Entry {
        std::string name, action;
        bool vector;
        TensorLayout layout;  // as written
    };
    std::vector<Entry> entries;
    const auto matrix = [&](const std::string& name, const std::string& from, int rows, int cols) {
        std::string action = action_for(o.rules, name);
        TensorLayout stored = src.layout(from);
        stored.rows = rows;
        stored.cols = cols;
        TensorLayout out = stored;
        if (action == "f32") out = {"f32", {}, rows, cols};
        else if (action != "keep") {
            const auto scheme = parse_scheme(action);
            if (needs_calibration(scheme) && !o.quantize)
                throw InvalidArgument(src.label() + ": tensor " + name + ": scheme '" + action + "' needs a quantizer for method '" +
                                      scheme.method + "'");
            out = with_tensor_context(src.label(), name, [&] { return scheme_layout(scheme, rows, cols); });
            action = to_string(scheme);
        }
        entries.push_back({name, action, false, out});
    };
    const auto vector = [&](const std::string& name, int n) { entries.push_back({name, "f32", true, {"f32", {}, 1, n}}); };

    detail::for_each_model_tensor(src, o.rules, matrix, vector);

    io::SafetensorsWriter w;
    struct Slot {
        std::size_t entry;
        std::string suffix;
    };
    std::vector<Slot> slots;
    io::Json::Object tensors;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& e = entries[i];
        for (auto& part : detail::parts_of(e.layout, e.vector)) {
            w.add(e.name + part.suffix, part.dtype, part.shape);
            slots.push_back({i, part.suffix});
        }
        io::Json::Object t{{"format", io::Json(e.layout.format)}, {"rows", io::Json(e.layout.rows)}, {"cols", io::Json(e.layout.cols)}};
        if (detail::storage_of(e.layout.format) == Storage::dense_rows) {
            t.emplace_back("bits", io::Json(e.layout.spec.bits));
            t.emplace_back("group_size", io::Json(e.layout.spec.group_size));
            t.emplace_back("zero", io::Json(std::string(1, detail::zero_letter(e.layout.spec.zero))));
        }
        if (e.layout.format != "f32" && !e.vector) {
            std::string produced_by = e.action;
            if (e.action == "keep") produced_by = o.provenance ? o.provenance(e.name) : src.scheme_of(e.name == "output.weight" ? src.output_name() : e.name);
            t.emplace_back("scheme", io::Json(produced_by.empty() ? std::string("keep") : produced_by));
        }
        if (e.layout.ordered) t.emplace_back("ordered", io::Json(true));
        if (e.layout.salient > 0) t.emplace_back("salient", io::Json(e.layout.salient));
        tensors.emplace_back(e.name, io::Json(std::move(t)));
    }
    w.metadata("qforge.format", container_format);
    w.metadata("qforge.format_version", std::to_string(container_version));
    w.metadata("qforge.config", io::Json(io::Json::Object{{"dim", io::Json(c.dim)},
                                                          {"hidden_dim", io::Json(c.hidden_dim)},
                                                          {"n_layers", io::Json(c.n_layers)},
                                                          {"n_heads", io::Json(c.n_heads)},
                                                          {"n_kv_heads", io::Json(c.n_kv_heads)},
                                                          {"vocab_size", io::Json(c.vocab_size)},
                                                          {"seq_len", io::Json(c.seq_len)},
                                                          {"rope_theta", io::Json(double(c.rope_theta))},
                                                          {"norm_eps", io::Json(double(c.norm_eps))}})
                                    .dump());
    w.metadata("qforge.tensors", io::Json(std::move(tensors)).dump());
    if (!o.tokenizer.empty()) w.metadata("qforge.tokenizer", o.tokenizer);
    if (!o.source.empty()) w.metadata("qforge.source", o.source);

    const auto quantize = o.quantize ? o.quantize : [&](const std::string& name, const Linear& fp32, const RuntimeScheme& s) {
        return quantize_named_linear(src.label(), name, fp32, s, o.backend);
    };
    std::size_t current = entries.size();
    Linear weight;
    std::vector<float> values;
    std::vector<std::uint8_t> scratch;
    w.write(path, [&](std::size_t i, std::span<std::uint8_t> out) {
        const Slot& slot = slots[i];
        const Entry& e = entries[slot.entry];
        if (slot.entry != current) {  // materialise the next weight, release the previous
            if (current < entries.size()) src.release(entries[current].name == "output.weight" ? src.output_name() : entries[current].name);
            current = slot.entry;
            weight = Linear();
            values.clear();
            if (o.progress) o.progress(current, entries.size(), e.name);
            if (e.vector) {
                values = src.values(e.name, std::size_t(e.layout.cols));
            } else {
                const std::string from = e.name == "output.weight" ? src.output_name() : e.name;
                Linear stored = src.linear(from, e.layout.rows, e.layout.cols);
                if (e.action == "keep") weight = std::move(stored);
                else if (e.action == "f32") weight = dequantized_linear(stored);
                else weight = quantize(e.name, dequantized_linear(stored), parse_scheme(e.action));
                const TensorLayout got = layout_of(weight);
                // a kept-channel layer's act-order that left the others ascending is still stored
                const bool order_ok = got.ordered == e.layout.ordered || (e.layout.salient > 0 && e.layout.ordered);
                if (got.format != e.layout.format || !order_ok || got.salient != e.layout.salient)
                    throw InvalidArgument(e.name + ": the quantizer produced a " + got.format + " weight" + (got.ordered ? " with a column order" : "") +
                                          (got.salient ? " keeping " + std::to_string(got.salient) + " FP16 channels" : std::string()) + ", the plan says " +
                                          e.layout.format + (e.layout.salient ? " keeping " + std::to_string(e.layout.salient) : std::string()));
            }
        }
        const auto bytes = e.vector ? detail::bytes_of(values.data(), values.size() * 4) : detail::part_bytes(weight, slot.suffix, scratch);
        if (bytes.size() != out.size())
            throw InvalidArgument(e.name + slot.suffix + ": " + std::to_string(bytes.size()) + " bytes, the header promised " +
                                  std::to_string(out.size()));
        std::memcpy(out.data(), bytes.data(), bytes.size());
    });
    if (current < entries.size()) src.release(entries[current].name == "output.weight" ? src.output_name() : entries[current].name);
    if (o.progress) o.progress(entries.size(), entries.size(), "");
}

}  // namespace qforge::llama
