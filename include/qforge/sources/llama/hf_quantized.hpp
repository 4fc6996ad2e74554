#pragma once
/// @file
/// What a GPTQ or AWQ Hugging Face checkpoint says about its quantization (`quantization_config`
/// in config.json, as transformers and vLLM read it; `quantize_config.json` of AutoGPTQ and
/// GPTQModel; `quant_config.json` of AutoAWQ), and the conversions between qforge's layers and
/// the checkpoint layouts of formats/gptq_awq.hpp, q/k rows included (Hugging Face keeps them
/// in rotate-half order; qforge in adjacent pairs).
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "qforge/formats/gptq_awq.hpp"
#include "qforge/io/json.hpp"
#include "qforge/io/safetensors.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

struct HfQuantConfig {
    std::string method;  ///< "gptq" or "awq"
    int bits = 4;
    int group_size = 128;  ///< -1: one group per output row
    bool sym = true;       ///< GPTQ: the symmetric grid (zero point 2^(bits-1))
    bool desc_act = false; ///< GPTQ: act-order (a g_idx that permutes the groups)
    bool v1 = true;        ///< GPTQ: checkpoint_format "gptq" (zeros stored minus one), not "gptq_v2"

    /// `quantization_config` as written to config.json (and, for GPTQ, quantize_config.json).
    io::Json to_json() const {
        io::Json::Object o;
        o.emplace_back("quant_method", io::Json(method));
        o.emplace_back("bits", io::Json(std::int64_t(bits)));
        o.emplace_back("group_size", io::Json(std::int64_t(group_size)));
        if (method == "gptq") {
            o.emplace_back("desc_act", io::Json(desc_act));
            o.emplace_back("sym", io::Json(sym));
            o.emplace_back("static_groups", io::Json(false));
            o.emplace_back("true_sequential", io::Json(true));
            o.emplace_back("checkpoint_format", io::Json(std::string(v1 ? "gptq" : "gptq_v2")));
        } else {
            o.emplace_back("zero_point", io::Json(true));
            o.emplace_back("version", io::Json(std::string("gemm")));
        }
        return io::Json(std::move(o));
    }

    /// Reads a quantization_config object (either tool's spelling); InvalidData naming the key
    /// for what qforge does not load.
    static HfQuantConfig from_json(const io::Json& j) {
        HfQuantConfig c;
        const auto* m = j.find("quant_method");
        c.method = m ? m->as_string() : (j.find("w_bit") ? "awq" : "gptq");
        const auto integer = [&](const char* a, const char* b, int fallback) {
            if (const auto* v = j.find(a)) return int(v->as_int());
            if (const auto* v = j.find(b)) return int(v->as_int());
            return fallback;
        };
        c.bits = integer("bits", "w_bit", 4);
        c.group_size = integer("group_size", "q_group_size", 128);
        if (c.method == "gptq") {
            if (const auto* s = j.find("sym")) c.sym = s->as_bool();
            if (const auto* d = j.find("desc_act")) c.desc_act = d->as_bool();
            if (const auto* f = j.find("checkpoint_format")) {
                const auto fmt = f->as_string();
                if (fmt != "gptq" && fmt != "gptq_v2") throw InvalidData("checkpoint_format '" + fmt + "' is not gptq or gptq_v2");
                c.v1 = fmt == "gptq";
            }
        } else if (c.method == "awq") {
            c.sym = false;
            if (const auto* v = j.find("version"); v && v->as_string() != "gemm" && v->as_string() != "GEMM")
                throw InvalidData("AWQ version '" + v->as_string() + "': qforge reads the GEMM layout only");
            if (const auto* z = j.find("zero_point"); z && !z->as_bool()) throw InvalidData("AWQ zero_point false is not a layout qforge reads");
            if (c.bits != 4) throw InvalidData("AWQ bits " + std::to_string(c.bits) + ": the GEMM layout is 4-bit");
        } else {
            throw InvalidData("quant_method '" + c.method + "': qforge reads gptq and awq checkpoints");
        }
        if (c.bits != 2 && c.bits != 3 && c.bits != 4 && c.bits != 8) throw InvalidData("bits " + std::to_string(c.bits) + " (2, 3, 4 or 8)");
        if (c.group_size == 0 || c.group_size < -1) throw InvalidData("group_size " + std::to_string(c.group_size) + " (-1 or a positive size)");
        return c;
    }
};

/// Hugging Face's row r of a q or k projection is qforge's row hf_rotary_rows(...)[r]
/// (rotate-half order vs adjacent pairs; see hf_source.hpp).
inline std::vector<int> hf_rotary_rows(int heads, int head_size) {
    std::vector<int> from(std::size_t(heads) * std::size_t(head_size));
    const int half = head_size / 2;
    for (int h = 0; h < heads; ++h)
        for (int j = 0; j < half; ++j)
            for (int t = 0; t < 2; ++t) from[std::size_t(h * head_size + t * half + j)] = h * head_size + 2 * j + t;
    return from;
}

/// The inverse: qforge's row r is Hugging Face's row rotary_rows_from_hf(...)[r].
inline std::vector<int> rotary_rows_from_hf(int heads, int head_size) {
    const auto to = hf_rotary_rows(heads, head_size);
    std::vector<int> from(to.size());
    for (std::size_t r = 0; r < to.size(); ++r) from[std::size_t(to[r])] = int(r);
    return from;
}

/// A qforge linear on a Dense integer or symmetric grid as an IntGridLayer (inputs in their
/// original order, act-order as g_idx). InvalidArgument for FP32, GGUF block and codebook layouts.
inline IntGridLayer int_grid_of(const Linear& l) {
    IntGridLayer out;
    bool done = false;
    std::visit(
        [&](const auto& w) {
            using T = std::decay_t<decltype(w)>;
            if constexpr (!std::is_same_v<T, Fp32Matrix> && !std::is_same_v<T, PqMatrix>) {
                using F = format_of_packed<T>;
                if constexpr (F::info.storage == Storage::dense_rows && F::info.codebook == nullptr && F::info.bits != 0) {
                    out = int_grid_of<F::info.bits>(w, l.input_order());
                    done = true;
                }
            }
        },
        l.weights());
    if (!done)
        throw InvalidArgument("GPTQ and AWQ checkpoints hold integer grids with fp16 scales (qforge's dense 'a' and 's' layouts, e.g. "
                              "w4g128a); this weight is " + layout_of(l).format + ": quantize it onto such a grid");
    return out;
}

/// The qforge linear an IntGridLayer holds (`Dense<bits>`, with an input order for act-order).
inline Linear linear_of(const IntGridLayer& l, bool symmetric) {
    const auto make = [&]<int B>() {
        auto [packed, order] = dense_of<B>(l, symmetric);
        return Linear(LinearWeights(std::move(packed)), std::move(order));
    };
    switch (l.bits) {
        case 2: return make.template operator()<2>();
        case 3: return make.template operator()<3>();
        case 4: return make.template operator()<4>();
        case 8: return make.template operator()<8>();
    }
    throw InvalidData("bits " + std::to_string(l.bits) + " (2, 3, 4 or 8)");
}

/// One GPTQ/AWQ layer of `rows` outputs and `cols` inputs from its stored tensors: `part(".qweight")`
/// (".qzeros", ".scales", ".g_idx") returns the tensor, or null when the checkpoint has none.
/// InvalidData naming the tensor for a missing part, a wrong dtype or shape, or values off the
/// layout (formats/gptq_awq.hpp).
inline IntGridLayer read_checkpoint_layer(const HfQuantConfig& q, const std::function<const io::SafetensorsTensor*(const char*)>& part, int rows,
                                          int cols) {
    if (rows <= 0 || cols <= 0) throw InvalidData("empty layer (" + std::to_string(rows) + " x " + std::to_string(cols) + ")");
    PackedCheckpointLayer p;
    const auto read = [&](const char* suffix, const char* dtype, std::size_t dims, auto& out) -> std::array<std::size_t, 2> {
        const io::SafetensorsTensor* t = part(suffix);
        if (!t) throw InvalidData(std::string("no ") + suffix + " tensor (a " + q.method + " layer stores qweight, qzeros and scales)");
        if (t->dtype != dtype || t->shape.size() != dims)
            throw InvalidData("tensor " + t->name + ": dtype " + t->dtype + " with " + std::to_string(t->shape.size()) + " dimensions; " + q.method +
                              " checkpoints store it as " + dtype + " with " + std::to_string(dims));
        out.resize(std::size_t(t->elements()));
        std::memcpy(out.data(), t->bytes.data(), t->bytes.size());
        return {std::size_t(t->shape[0]), dims == 2 ? std::size_t(t->shape[1]) : 1};
    };
    p.qweight_shape = read(".qweight", "I32", 2, p.qweight);
    p.qzeros_shape = read(".qzeros", "I32", 2, p.qzeros);
    const auto scales_shape = read(".scales", "F16", 2, p.scales);
    const int g = q.group_size < 0 ? cols : q.group_size;
    const std::size_t groups = (std::size_t(cols) + std::size_t(g) - 1) / std::size_t(g);
    if (scales_shape != std::array<std::size_t, 2>{groups, std::size_t(rows)})
        throw InvalidData("tensor " + part(".scales")->name + " is [" + std::to_string(scales_shape[0]) + ", " + std::to_string(scales_shape[1]) + "]; a layer of " +
                          std::to_string(rows) + " outputs, " + std::to_string(cols) + " inputs and group_size " + std::to_string(q.group_size) +
                          " needs [" + std::to_string(groups) + ", " + std::to_string(rows) + "]");
    if (q.method == "gptq" && part(".g_idx")) read(".g_idx", "I32", 1, p.g_idx);
    return q.method == "awq" ? unpack_awq(p, rows, cols, g) : unpack_gptq(p, q.bits, rows, cols, g, q.v1);
}

}  // namespace qforge::llama
