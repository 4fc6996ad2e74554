#pragma once
/// @file
/// safetensors: an 8-byte little-endian header length N, N bytes of JSON
/// `{"name": {"dtype": "F32", "shape": [r, c], "data_offsets": [begin, end]}, ...,
/// "__metadata__": {"key": "string", ...}}`, then the tensor bytes (offsets relative to the
/// end of the header). The reader maps the file and checks every offset against the file
/// length, dtype x shape against the byte count, and that tensors do not overlap. The writer
/// streams tensors one at a time into `path.tmp` and renames it when complete, so a failed or
/// interrupted write never leaves a partial file under the real name.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qforge/core/half.hpp"
#include "qforge/io/json.hpp"
#include "qforge/io/output_path.hpp"
#include "qforge/io/mapped_file.hpp"

namespace qforge::io {

/// Bytes per element of a safetensors dtype, 0 when unknown.
inline std::size_t safetensors_dtype_size(const std::string& dtype) {
    if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
    if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
    if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
    if (dtype == "U8" || dtype == "I8" || dtype == "BOOL") return 1;
    return 0;
}

struct SafetensorsTensor {
    std::string name, dtype;
    std::vector<std::uint64_t> shape;
    std::span<const std::uint8_t> bytes;
    std::uint64_t elements() const {
        std::uint64_t n = 1;
        for (const auto d : shape) n *= d;
        return n;
    }
};

class SafetensorsFile {
public:
    static SafetensorsFile open(const std::string& path) {
        auto m = map_file(path);
        SafetensorsFile f;
        f.path_ = path;
        f.size_ = m.size;
        f.map_ = std::move(m.map);
        f.parse();
        return f;
    }

    /// Parses a safetensors image held in memory (the caller keeps it alive); `label` names it.
    static SafetensorsFile from_memory(const std::string& label, const std::uint8_t* data, std::size_t size) {
        SafetensorsFile f;
        f.path_ = label;
        f.size_ = size;
        f.map_ = std::shared_ptr<void>(const_cast<std::uint8_t*>(data), [](void*) {});
        f.external_ = true;
        f.parse();
        return f;
    }

    const std::string& path() const noexcept { return path_; }
    const std::vector<SafetensorsTensor>& tensors() const noexcept { return tensors_; }
    const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
    const SafetensorsTensor* find(const std::string& name) const {
        const auto it = index_.find(name);
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    const SafetensorsTensor& tensor(const std::string& name) const {
        if (const auto* t = find(name)) return *t;
        throw FileError(path_, "no tensor named '" + name + "'");
    }

    /// A tensor of any float dtype as FP32, checking for NaN/Inf.
    std::vector<float> to_float(const SafetensorsTensor& t) const {
        std::vector<float> out(std::size_t(t.elements()));
        const std::uint8_t* p = t.bytes.data();
        for (std::size_t i = 0; i < out.size(); ++i) {
            if (t.dtype == "F32") std::memcpy(&out[i], p + 4 * i, 4);
            else if (t.dtype == "F16") {
                std::uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                out[i] = half_to_float(h);
            } else if (t.dtype == "BF16") {
                std::uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                const std::uint32_t bits = std::uint32_t(h) << 16;
                std::memcpy(&out[i], &bits, 4);
            } else {
                throw FileError(path_, "tensor " + t.name + " has dtype " + t.dtype + ", not a float type (F32, F16, BF16)");
            }
            if (!std::isfinite(out[i]))
                throw FileError(path_, "tensor " + t.name + " has a non-finite value at element " + std::to_string(i));
        }
        return out;
    }

    /// Lets the kernel drop the pages of a tensor already consumed (streaming quantization keeps
    /// its resident memory to about one tensor this way).
    void release(const SafetensorsTensor& t) const {
        if (!external_) release_pages(map_.get(), t.bytes);
    }

private:
    void parse() {
        if (size_ < 8) throw FileError(path_, "truncated: " + std::to_string(size_) + " bytes, the header length alone is 8");
        const auto* base = static_cast<const std::uint8_t*>(map_.get());
        if (!base) throw FileError(path_, "empty file");
        std::uint64_t n = 0;
        std::memcpy(&n, base, 8);
        if (n > size_ - 8) throw FileError(path_, "truncated: header of " + std::to_string(n) + " bytes, the file has " + std::to_string(size_));
        Json header;
        try {
            header = Json::parse(std::string_view(reinterpret_cast<const char*>(base + 8), std::size_t(n)));
        } catch (const InvalidData& e) {
            throw FileError(path_, std::string("bad safetensors header: ") + e.what());
        }
        if (!header.is_object()) throw FileError(path_, "bad safetensors header: not a JSON object");
        const std::uint64_t data_start = 8 + n, data_size = size_ - data_start;
        std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
        for (const auto& [name, v] : header.as_object()) {
            try {
                if (name == "__metadata__") {
                    for (const auto& [k, value] : v.as_object()) metadata_[k] = value.as_string();
                    continue;
                }
                SafetensorsTensor t;
                t.name = name;
                t.dtype = v.at("dtype").as_string();
                const std::size_t es = safetensors_dtype_size(t.dtype);
                if (!es) throw FileError(path_, "tensor " + name + ": unsupported dtype " + t.dtype);
                for (const auto& d : v.at("shape").as_array()) {
                    const auto dim = d.as_int();
                    if (dim < 0 || dim > (std::int64_t(1) << 40)) throw FileError(path_, "tensor " + name + ": bad dimension");
                    t.shape.push_back(std::uint64_t(dim));
                }
                const auto& off = v.at("data_offsets").as_array();
                if (off.size() != 2) throw FileError(path_, "tensor " + name + ": data_offsets needs two numbers");
                const auto b = off[0].as_int(), e = off[1].as_int();
                if (b < 0 || e < b) throw FileError(path_, "tensor " + name + ": bad data_offsets");
                if (std::uint64_t(e) > data_size)
                    throw FileError(path_, "truncated: tensor " + name + " ends at byte " + std::to_string(e) + " of a " +
                                               std::to_string(data_size) + "-byte data section");
                std::uint64_t elements = 1;
                for (const auto d : t.shape) {
                    if (d && elements > (std::uint64_t(1) << 50) / d) throw FileError(path_, "tensor " + name + ": too large");
                    elements *= d;
                }
                if (elements * es != std::uint64_t(e - b))
                    throw FileError(path_, "tensor " + name + ": shape and dtype need " + std::to_string(elements * es) +
                                               " bytes, data_offsets give " + std::to_string(e - b));
                t.bytes = {base + data_start + std::uint64_t(b), std::size_t(e - b)};
                ranges.emplace_back(std::uint64_t(b), std::uint64_t(e));
                index_[name] = tensors_.size();
                tensors_.push_back(std::move(t));
            } catch (const InvalidData& err) {
                throw FileError(path_, "bad safetensors header entry '" + name + "': " + err.what());
            }
        }
        std::sort(ranges.begin(), ranges.end());
        for (std::size_t i = 1; i < ranges.size(); ++i)
            if (ranges[i].first < ranges[i - 1].second) throw FileError(path_, "tensors overlap in the data section");
    }

    std::string path_;
    std::size_t size_ = 0;
    std::shared_ptr<void> map_;
    bool external_ = false;  ///< memory the caller owns: never madvise it
    std::vector<SafetensorsTensor> tensors_;
    std::map<std::string, std::size_t> index_;
    std::map<std::string, std::string> metadata_;
};

/// Declare every tensor (name, dtype, shape) and the metadata first, then `write` asks for each
/// tensor's bytes in declaration order. The file appears under `path` only when complete.
class SafetensorsWriter {
public:
    void add(std::string name, std::string dtype, std::vector<std::uint64_t> shape) {
        const std::size_t es = safetensors_dtype_size(dtype);
        if (!es) throw InvalidArgument("safetensors writer: unknown dtype " + dtype);
        std::uint64_t bytes = es;
        for (const auto d : shape) bytes *= d;
        entries_.push_back({std::move(name), std::move(dtype), std::move(shape), bytes});
    }
    void metadata(std::string key, std::string value) { metadata_.emplace_back(std::move(key), std::move(value)); }

    /// `produce(i, out)` fills tensor i's bytes (out has exactly its size).
    void write(const std::string& path, const std::function<void(std::size_t, std::span<std::uint8_t>)>& produce) const {
        Json::Object header;
        if (!metadata_.empty()) {
            Json::Object meta;
            for (const auto& [k, v] : metadata_) meta.emplace_back(k, Json(v));
            header.emplace_back("__metadata__", Json(std::move(meta)));
        }
        std::uint64_t offset = 0;
        for (const auto& e : entries_) {
            Json::Array shape;
            for (const auto d : e.shape) shape.emplace_back(std::int64_t(d));
            header.emplace_back(e.name, Json(Json::Object{{"dtype", Json(e.dtype)},
                                                          {"shape", Json(std::move(shape))},
                                                          {"data_offsets", Json(Json::Array{Json(std::int64_t(offset)), Json(std::int64_t(offset + e.bytes))})}}));
            offset += e.bytes;
        }
        std::string text = Json(std::move(header)).dump();
        while ((text.size() + 8) % 8) text += ' ';  // tensor data starts 8-byte aligned
        write_file_streamed(path, [&](const auto& put) {
            const std::uint64_t n = text.size();
            put(&n, 8);
            put(text.data(), text.size());
            for (std::size_t i = 0; i < entries_.size(); ++i) {
                // one buffer per tensor: a reused one would stay as large as the largest tensor
                // (an embedding table) for the rest of the write
                std::vector<std::uint8_t> buffer(std::size_t(entries_[i].bytes), 0);
                produce(i, buffer);
                put(buffer.data(), buffer.size());
            }
        });
    }

private:
    struct Entry {
        std::string name, dtype;
        std::vector<std::uint64_t> shape;
        std::uint64_t bytes;
    };
    std::vector<Entry> entries_;
    std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace qforge::io
