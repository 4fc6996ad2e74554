#pragma once
/// @file
/// GGUF (version 3) writer: typed metadata, tensor infos, alignment padding, tensor data; the
/// layout io/gguf.hpp reads (see there). Tensors are declared first (name, shape, ggml type),
/// so every offset is known before a byte is written; `write` then asks for each tensor's bytes
/// in declaration order, one at a time, so resident memory stays about one tensor. The file
/// goes to a temporary name beside the destination and is renamed when complete: a reader never
/// sees a partial file. Spec: ggml's docs/gguf.md.
#include <algorithm>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/formats/ggml_types.hpp"
#include "qforge/io/gguf.hpp"
#include "qforge/io/output_path.hpp"

namespace qforge::io {

/// Typed metadata values for the writer (GgufValue is what the reader returns; these make them).
namespace gguf_value {
inline GgufValue u32(std::uint32_t v) { return {std::uint32_t(GgufValueType::UINT32), 0, std::uint64_t(v)}; }
inline GgufValue i32(std::int32_t v) { return {std::uint32_t(GgufValueType::INT32), 0, std::int64_t(v)}; }
inline GgufValue u64(std::uint64_t v) { return {std::uint32_t(GgufValueType::UINT64), 0, v}; }
inline GgufValue f32(float v) { return {std::uint32_t(GgufValueType::FLOAT32), 0, double(v)}; }
inline GgufValue boolean(bool v) { return {std::uint32_t(GgufValueType::BOOL), 0, v}; }
inline GgufValue string(std::string v) { return {std::uint32_t(GgufValueType::STRING), 0, std::move(v)}; }
/// An array of `elem`-typed values.
inline GgufValue array(GgufValueType elem, GgufValue::Array values) {
    return {std::uint32_t(GgufValueType::ARRAY), std::uint32_t(elem), std::make_shared<GgufValue::Array>(std::move(values))};
}
inline GgufValue strings(const std::vector<std::string>& v) {
    GgufValue::Array a;
    a.reserve(v.size());
    for (const auto& s : v) a.push_back(string(s));
    return array(GgufValueType::STRING, std::move(a));
}
inline GgufValue f32s(const std::vector<float>& v) {
    GgufValue::Array a;
    a.reserve(v.size());
    for (float x : v) a.push_back(f32(x));
    return array(GgufValueType::FLOAT32, std::move(a));
}
inline GgufValue i32s(const std::vector<std::int32_t>& v) {
    GgufValue::Array a;
    a.reserve(v.size());
    for (auto x : v) a.push_back(i32(x));
    return array(GgufValueType::INT32, std::move(a));
}
}  // namespace gguf_value

class GgufWriter {
public:
    /// `alignment`: a power of two; written as `general.alignment` when it is not GGUF's default 32.
    explicit GgufWriter(std::uint64_t alignment = 32) : alignment_(alignment) {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0) throw InvalidArgument("GGUF alignment must be a power of two");
        if (alignment != 32) set("general.alignment", gguf_value::u32(std::uint32_t(alignment)));
    }

    /// Sets a metadata key (a later set of the same key replaces the value, keeping its place).
    void set(const std::string& key, GgufValue v) {
        for (auto& [k, old] : kv_)
            if (k == key) {
                old = std::move(v);
                return;
            }
        kv_.emplace_back(key, std::move(v));
    }
    /// Declares a tensor: `ne` with ne[0] fastest (a matrix of `rows` x `cols` is {cols, rows}).
    /// InvalidArgument when ne[0] is not whole blocks of the type, or the name is taken.
    void add_tensor(const std::string& name, std::vector<std::uint64_t> ne, GgmlType type) {
        const auto& info = ggml_type_info(type);
        if (ne.empty() || ne.size() > 4) throw InvalidArgument("GGUF tensor " + name + ": 1 to 4 dimensions");
        if (ne[0] % info.block_weights != 0)
            throw InvalidArgument("GGUF tensor " + name + ": a row of " + std::to_string(ne[0]) + " is not whole " + std::string(info.name) +
                                  " blocks of " + std::to_string(info.block_weights));
        for (const auto& t : tensors_)
            if (t.name == name) throw InvalidArgument("GGUF tensor " + name + " declared twice");
        std::uint64_t n = 1;
        for (auto d : ne) n *= d;
        const std::uint64_t bytes = n / info.block_weights * info.block_bytes;
        tensors_.push_back({name, std::move(ne), type, offset_, bytes});
        offset_ += (bytes + alignment_ - 1) / alignment_ * alignment_;
    }

    struct Tensor {
        std::string name;
        std::vector<std::uint64_t> ne;
        GgmlType type;
        std::uint64_t offset, bytes;
    };
    const std::vector<Tensor>& tensors() const noexcept { return tensors_; }

    /// Writes the file: `produce(i, out)` fills tensor i's bytes (out has exactly its size).
    /// FileError naming the file when it cannot be written; nothing is left under `path` then.
    void write(const std::string& path, const std::function<void(std::size_t, std::span<std::uint8_t>)>& produce) const {
        std::string head;
        append(head, "GGUF", 4);
        append_pod(head, std::uint32_t(3));
        append_pod(head, std::uint64_t(tensors_.size()));
        append_pod(head, std::uint64_t(kv_.size()));
        for (const auto& [key, v] : kv_) {
            append_string(head, key);
            append_pod(head, v.type);
            append_value(head, v, key);
        }
        for (const auto& t : tensors_) {
            append_string(head, t.name);
            append_pod(head, std::uint32_t(t.ne.size()));
            for (auto d : t.ne) append_pod(head, d);
            append_pod(head, std::uint32_t(t.type));
            append_pod(head, t.offset);
        }
        write_file_streamed(path, [&](const auto& put) {
            std::uint64_t at = 0;
            const auto pad = [&] {
                static const std::uint8_t zeros[64] = {};
                while (at % alignment_) {
                    const auto n = std::size_t(std::min<std::uint64_t>(64, alignment_ - at % alignment_));
                    put(zeros, n);
                    at += n;
                }
            };
            put(head.data(), head.size());
            at += head.size();
            pad();
            const std::uint64_t data_start = at;
            for (std::size_t i = 0; i < tensors_.size(); ++i) {
                std::vector<std::uint8_t> buffer(std::size_t(tensors_[i].bytes), 0);
                produce(i, buffer);
                if (at - data_start != tensors_[i].offset) throw InvalidArgument("GGUF writer: tensor " + tensors_[i].name + " is misplaced");
                put(buffer.data(), buffer.size());
                at += buffer.size();
                pad();
            }
        });
    }

private:
    static void append(std::string& s, const void* p, std::size_t n) { s.append(static_cast<const char*>(p), n); }
    template <class T>
    static void append_pod(std::string& s, T v) {
        append(s, &v, sizeof(T));
    }
    static void append_string(std::string& s, const std::string& v) {
        append_pod(s, std::uint64_t(v.size()));
        s += v;
    }
    static void append_scalar(std::string& s, std::uint32_t type, const GgufValue& v, const std::string& key) {
        using T = GgufValueType;
        switch (T(type)) {
            case T::UINT8: append_pod(s, std::uint8_t(v.as_int())); break;
            case T::INT8: append_pod(s, std::int8_t(v.as_int())); break;
            case T::UINT16: append_pod(s, std::uint16_t(v.as_int())); break;
            case T::INT16: append_pod(s, std::int16_t(v.as_int())); break;
            case T::UINT32: append_pod(s, std::uint32_t(v.as_int())); break;
            case T::INT32: append_pod(s, std::int32_t(v.as_int())); break;
            case T::UINT64: append_pod(s, std::uint64_t(v.as_int())); break;
            case T::INT64: append_pod(s, std::int64_t(v.as_int())); break;
            case T::FLOAT32: append_pod(s, float(v.as_double())); break;
            case T::FLOAT64: append_pod(s, v.as_double()); break;
            case T::BOOL: append_pod(s, std::uint8_t(v.as_bool() ? 1 : 0)); break;
            case T::STRING: append_string(s, v.as_string()); break;
            default: throw InvalidArgument("GGUF metadata " + key + ": value type " + std::to_string(type) + " cannot be written here");
        }
    }
    static void append_value(std::string& s, const GgufValue& v, const std::string& key) {
        if (v.type != std::uint32_t(GgufValueType::ARRAY)) return append_scalar(s, v.type, v, key);
        if (v.elem_type == std::uint32_t(GgufValueType::ARRAY)) throw InvalidArgument("GGUF metadata " + key + ": nested arrays are not written");
        const auto& a = v.as_array();
        append_pod(s, v.elem_type);
        append_pod(s, std::uint64_t(a.size()));
        for (const auto& e : a) append_scalar(s, v.elem_type, e, key);
    }

    std::uint64_t alignment_;
    std::uint64_t offset_ = 0;
    std::vector<std::pair<std::string, GgufValue>> kv_;
    std::vector<Tensor> tensors_;
};

}  // namespace qforge::io
