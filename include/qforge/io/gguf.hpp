#pragma once
/// @file
/// GGUF (version 3) reader: header, typed metadata, tensor infos, alignment, and dequantization
/// of the tensor types qforge's models use. The file is memory-mapped; tensors are read where
/// they lie, so a model larger than RAM can still be walked one tensor at a time.
///
/// Layout (little-endian): "GGUF" magic, uint32 version, uint64 tensor_count, uint64 kv_count;
/// kv_count pairs of (string key, int32 value type, value); tensor_count infos of (string name,
/// uint32 n_dims, uint64 ne[n_dims], int32 ggml type, uint64 offset); padding to the alignment
/// (`general.alignment`, default 32); the tensor data. Strings are a uint64 length and bytes.
/// ne[0] is the fastest-varying dimension: a weight matrix (out, in) has ne = {in, out}.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/core/half.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/formats/gguf_k.hpp"
#include "qforge/formats/ggml_types.hpp"
#include "qforge/io/mapped_file.hpp"

namespace qforge::io {

/// ggml's name of a stored type id (formats/ggml_types.hpp holds the table).
inline std::string ggml_type_name(std::uint32_t t) { return std::string(qforge::ggml_type_name(t)); }

/// Bytes per block and weights per block of a type qforge reads ({0, 0} otherwise).
inline std::pair<std::size_t, std::size_t> ggml_block(std::uint32_t t) {
    const auto* info = find_ggml_type(t);
    if (!info || !info->readable()) return {0, 0};
    return {info->block_bytes, info->block_weights};
}

/// GGUF's metadata value types (the spec's `gguf_metadata_value_type`).
enum class GgufValueType : std::uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
    UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

/// A metadata value: scalars widened to 64 bits, strings, and arrays of either.
struct GgufValue {
    using Array = std::vector<GgufValue>;
    std::uint32_t type = 0;       ///< gguf_type of the stored value
    std::uint32_t elem_type = 0;  ///< for an ARRAY: the type of its elements (kept for empty arrays too)
    std::variant<std::uint64_t, std::int64_t, double, bool, std::string, std::shared_ptr<Array>> value;

    std::int64_t as_int() const {
        if (auto* u = std::get_if<std::uint64_t>(&value)) return std::int64_t(*u);
        if (auto* i = std::get_if<std::int64_t>(&value)) return *i;
        throw InvalidArgument("GGUF value is not an integer");
    }
    bool as_bool() const {
        if (auto* b = std::get_if<bool>(&value)) return *b;
        return as_int() != 0;
    }
    double as_double() const {
        if (auto* d = std::get_if<double>(&value)) return *d;
        return double(as_int());
    }
    const std::string& as_string() const {
        if (auto* s = std::get_if<std::string>(&value)) return *s;
        throw InvalidArgument("GGUF value is not a string");
    }
    const Array& as_array() const {
        if (auto* a = std::get_if<std::shared_ptr<Array>>(&value)) return **a;
        throw InvalidArgument("GGUF value is not an array");
    }
};

struct GgufTensorInfo {
    std::string name;
    std::vector<std::uint64_t> ne;  ///< ne[0] fastest
    std::uint32_t type = 0;
    std::uint64_t offset = 0;       ///< from the start of the data section
    std::uint64_t bytes = 0;
    std::uint64_t elements() const {
        std::uint64_t n = 1;
        for (auto d : ne) n *= d;
        return n;
    }
    std::uint64_t rows() const { return ne.size() < 2 ? 1 : elements() / ne[0]; }
    std::uint64_t cols() const { return ne.empty() ? 1 : ne[0]; }
};

class GgufFile {
public:
    static GgufFile open(const std::string& path) {
        auto m = map_file(path);
        GgufFile f;
        f.path_ = path;
        f.size_ = m.size;
        f.map_ = std::move(m.map);
        f.parse();
        return f;
    }

    /// Parses a GGUF image held in memory (the caller keeps it alive); `label` names it in errors.
    static GgufFile from_memory(const std::string& label, const std::uint8_t* data, std::size_t size) {
        GgufFile f;
        f.path_ = label;
        f.size_ = size;
        f.map_ = std::shared_ptr<void>(const_cast<std::uint8_t*>(data), [](void*) {});
        f.parse();
        return f;
    }

    const std::string& path() const noexcept { return path_; }
    std::uint32_t version() const noexcept { return version_; }
    std::uint64_t alignment() const noexcept { return alignment_; }
    const std::map<std::string, GgufValue>& metadata() const noexcept { return metadata_; }
    const std::vector<GgufTensorInfo>& tensors() const noexcept { return tensors_; }

    bool has(const std::string& key) const { return metadata_.count(key) != 0; }
    const GgufValue& get(const std::string& key) const {
        const auto it = metadata_.find(key);
        if (it == metadata_.end()) throw FileError(path_, "metadata key '" + key + "' is missing");
        return it->second;
    }
    const GgufTensorInfo& tensor(const std::string& name) const {
        for (const auto& t : tensors_)
            if (t.name == name) return t;
        throw FileError(path_, "no tensor named '" + name + "'");
    }
    const GgufTensorInfo* find(const std::string& name) const {
        for (const auto& t : tensors_)
            if (t.name == name) return &t;
        return nullptr;
    }

    /// The tensor's bytes, in place.
    std::span<const std::uint8_t> data(const GgufTensorInfo& t) const {
        return {base() + data_offset_ + t.offset, std::size_t(t.bytes)};
    }

    /// Lets the kernel drop the mapped pages of a tensor already consumed (streaming use).
    void release(const GgufTensorInfo& t) const { release_pages(map_.get(), data(t)); }

    /// Why the tensor's stored blocks cannot be used: the first block whose fp16 scale, minimum
    /// or super-block d/dmin is NaN or Inf (see nonfinite_block); empty when all are finite, and
    /// for the plain float types, whose values dequantize() checks. A scan of the scales only.
    std::string block_fault(const GgufTensorInfo& t) const {
        const auto* info = find_ggml_type(t.type);
        if (!info || !info->fault) return {};
        return info->fault(data(t).data(), std::size_t(t.bytes) / info->block_bytes, std::size_t(t.cols()));
    }

    /// Throws a FileError naming the file, the tensor and the block when block_fault() finds one.
    void check_blocks(const GgufTensorInfo& t) const {
        if (auto why = block_fault(t); !why.empty()) throw FileError(path_, "tensor " + t.name + ": " + why);
    }

    /// The tensor as FP32 (row-major, ne[0] fastest). A non-finite stored scale or value is an
    /// error naming the file, the tensor and where in it.
    std::vector<float> dequantize(const GgufTensorInfo& t) const {
        const auto* info = find_ggml_type(t.type);
        if (!info || !info->readable())
            throw FileError(path_, "tensor " + t.name + " has unsupported type " + ggml_type_name(t.type) +
                                       (info ? "" : " (id " + std::to_string(t.type) + ")"));
        check_blocks(t);
        std::vector<float> out(std::size_t(t.elements()));
        const std::size_t n = out.size();
        info->dequantize(data(t).data(), n, out.data());
        for (std::size_t i = 0; i < n; ++i)
            if (!std::isfinite(out[i])) {
                const std::size_t cols = std::size_t(t.cols());
                const std::string at = t.ne.size() < 2 ? "element " + std::to_string(i)
                                                        : "row " + std::to_string(i / cols) + ", column " + std::to_string(i % cols);
                throw FileError(path_, "tensor " + t.name + " (" + ggml_type_name(t.type) + "): " + at + " has a non-finite value (" +
                                           qforge::detail::value_text(out[i]) + ")");
            }
        return out;
    }

private:
    const std::uint8_t* base() const noexcept { return static_cast<const std::uint8_t*>(map_.get()); }

    struct Cursor {
        const GgufFile& f;
        std::size_t at = 0;
        void need(std::size_t n, const char* what) {
            if (n > f.size_ || at > f.size_ - n)
                throw FileError(f.path_, std::string("truncated: ") + what + " runs past the end of the file (" +
                                             std::to_string(f.size_) + " bytes)");
        }
        template <class T>
        T read(const char* what) {
            need(sizeof(T), what);
            T v;
            std::memcpy(&v, f.base() + at, sizeof(T));
            at += sizeof(T);
            return v;
        }
        std::string string(const char* what) {
            const auto len = read<std::uint64_t>(what);
            if (len > (std::uint64_t(1) << 30)) throw FileError(f.path_, std::string("implausible string length in ") + what);
            need(std::size_t(len), what);
            std::string s(reinterpret_cast<const char*>(f.base() + at), std::size_t(len));
            at += std::size_t(len);
            return s;
        }
    };

    GgufValue read_value(Cursor& c, std::uint32_t type, int depth) {
        GgufValue v;
        v.type = type;
        using T = GgufValueType;
        switch (T(type)) {
            case T::UINT8: v.value = std::uint64_t(c.read<std::uint8_t>("a value")); break;
            case T::INT8: v.value = std::int64_t(c.read<std::int8_t>("a value")); break;
            case T::UINT16: v.value = std::uint64_t(c.read<std::uint16_t>("a value")); break;
            case T::INT16: v.value = std::int64_t(c.read<std::int16_t>("a value")); break;
            case T::UINT32: v.value = std::uint64_t(c.read<std::uint32_t>("a value")); break;
            case T::INT32: v.value = std::int64_t(c.read<std::int32_t>("a value")); break;
            case T::FLOAT32: v.value = double(c.read<float>("a value")); break;
            case T::BOOL: v.value = c.read<std::uint8_t>("a value") != 0; break;
            case T::STRING: v.value = c.string("a string value"); break;
            case T::ARRAY: {
                if (depth > 2) throw FileError(path_, "arrays nested too deep");
                const auto elem = c.read<std::uint32_t>("an array type");
                v.elem_type = elem;
                const auto n = c.read<std::uint64_t>("an array length");
                if (n > size_) throw FileError(path_, "implausible array length " + std::to_string(n));
                auto arr = std::make_shared<GgufValue::Array>();
                arr->reserve(std::size_t(n));
                for (std::uint64_t i = 0; i < n; ++i) arr->push_back(read_value(c, elem, depth + 1));
                v.value = arr;
                break;
            }
            case T::UINT64: v.value = c.read<std::uint64_t>("a value"); break;
            case T::INT64: v.value = c.read<std::int64_t>("a value"); break;
            case T::FLOAT64: v.value = c.read<double>("a value"); break;
            default: throw FileError(path_, "unknown metadata value type " + std::to_string(type));
        }
        return v;
    }

    void parse() {
        Cursor c{*this};
        if (size_ < 4 || std::memcmp(base(), "GGUF", 4) != 0) throw FileError(path_, "wrong magic: not a GGUF file");
        c.at = 4;
        version_ = c.read<std::uint32_t>("the version");
        if (version_ != 3 && version_ != 2)
            throw FileError(path_, "unsupported GGUF version " + std::to_string(version_) + " (2 and 3 are read)");
        const auto n_tensors = c.read<std::uint64_t>("the tensor count");
        const auto n_kv = c.read<std::uint64_t>("the metadata count");
        if (n_tensors > size_ || n_kv > size_) throw FileError(path_, "implausible tensor or metadata count");
        for (std::uint64_t i = 0; i < n_kv; ++i) {
            std::string key = c.string("a metadata key");
            const auto type = c.read<std::uint32_t>("a metadata type");
            metadata_[key] = read_value(c, type, 0);
        }
        if (has("general.alignment")) {
            const auto& v = get("general.alignment").value;
            if (!std::holds_alternative<std::uint64_t>(v) && !std::holds_alternative<std::int64_t>(v))
                throw FileError(path_, "general.alignment is not an integer");
            const auto a = get("general.alignment").as_int();
            if (a <= 0 || (a & (a - 1)) != 0 || a > 1 << 20) throw FileError(path_, "alignment " + std::to_string(a) + " is not a power of two");
            alignment_ = std::uint64_t(a);
        }
        for (std::uint64_t i = 0; i < n_tensors; ++i) {
            GgufTensorInfo t;
            t.name = c.string("a tensor name");
            const auto dims = c.read<std::uint32_t>("tensor dimensions");
            if (dims == 0 || dims > 4) throw FileError(path_, "tensor " + t.name + " has " + std::to_string(dims) + " dimensions");
            for (std::uint32_t d = 0; d < dims; ++d) {
                t.ne.push_back(c.read<std::uint64_t>("a tensor shape"));
                if (t.ne.back() == 0 || t.ne.back() > (std::uint64_t(1) << 40))
                    throw FileError(path_, "tensor " + t.name + " has dimension " + std::to_string(t.ne.back()));
            }
            std::uint64_t elements = 1;
            for (auto d : t.ne) {
                if (elements > (std::uint64_t(1) << 48) / d) throw FileError(path_, "tensor " + t.name + " is implausibly large");
                elements *= d;
            }
            t.type = c.read<std::uint32_t>("a tensor type");
            t.offset = c.read<std::uint64_t>("a tensor offset");
            const auto* type = find_ggml_type(t.type);
            if (!type) {
                t.bytes = 0;  // an id ggml does not define: reading its data is refused by dequantize()
            } else {
                const std::size_t block_bytes = type->block_bytes, block_elems = type->block_weights;
                if (t.ne[0] % block_elems != 0)
                    throw FileError(path_, "tensor " + t.name + ": row of " + std::to_string(t.ne[0]) + " is not whole " +
                                               ggml_type_name(t.type) + " blocks");
                t.bytes = t.elements() / block_elems * block_bytes;
            }
            if (t.offset % alignment_ != 0) throw FileError(path_, "tensor " + t.name + " is not aligned");
            tensors_.push_back(std::move(t));
        }
        data_offset_ = (c.at + alignment_ - 1) / alignment_ * alignment_;
        for (const auto& t : tensors_) {
            if (t.offset > size_ || t.bytes > size_ || data_offset_ + t.offset + t.bytes > size_)
                throw FileError(path_, "truncated: tensor " + t.name + " ends past the end of the file");
        }
    }

    std::string path_;
    std::size_t size_ = 0;
    std::shared_ptr<void> map_;
    std::uint32_t version_ = 0;
    std::uint64_t alignment_ = 32;
    std::uint64_t data_offset_ = 0;
    std::map<std::string, GgufValue> metadata_;
    std::vector<GgufTensorInfo> tensors_;
};

}  // namespace qforge::io
