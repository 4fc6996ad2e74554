// libFuzzer: any byte string is either a safetensors file whose every float tensor converts (and
// whose JSON header re-serialises and re-parses identically), or refused with FileError. Every
// tensor named W.qweight is also read as a GPTQ layer (the bit width from the input's first
// byte) and as an AWQ layer, with the shapes its tensors imply: it loads into qforge's Dense
// layout or is refused with qforge's own errors. Nothing may read outside the buffer.
#include <qforge/io/safetensors.hpp>
#include <qforge/sources/llama/hf_quantized.hpp>

namespace {
void read_as_checkpoint_layers(const qforge::io::SafetensorsFile& f, int bits) {
    for (const auto& t : f.tensors()) {
        if (t.name.size() < 8 || t.name.compare(t.name.size() - 8, 8, ".qweight") != 0 || t.shape.size() != 2) continue;
        const std::string base = t.name.substr(0, t.name.size() - 8);
        const auto part = [&](const char* suffix) { return f.find(base + suffix); };
        const auto* scales = part(".scales");
        for (const char* method : {"gptq", "awq"}) {
            qforge::llama::HfQuantConfig q;
            q.method = method;
            q.bits = q.method == "awq" ? 4 : bits;
            const std::uint64_t rows = q.method == "awq" ? t.shape[1] * 8 : t.shape[1];
            const std::uint64_t cols = q.method == "awq" ? t.shape[0] : t.shape[0] * 32 / std::uint64_t(q.bits);
            if (rows == 0 || cols == 0 || rows * cols > (1u << 20)) continue;
            const std::uint64_t groups = scales && scales->shape.size() == 2 && scales->shape[0] ? scales->shape[0] : 1;
            q.group_size = groups <= 1 ? -1 : int((cols + groups - 1) / groups);
            try {
                const auto l = qforge::llama::read_checkpoint_layer(q, part, int(rows), int(cols));
                for (const bool sym : {false, true}) try {
                        (void)qforge::llama::linear_of(l, sym);
                    } catch (const qforge::Error&) {
                    }
            } catch (const qforge::Error&) {
            }
        }
    }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto f = qforge::io::SafetensorsFile::from_memory("fuzz-input", data, size);
        for (const auto& t : f.tensors())
            if ((t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16") && t.elements() < (1u << 20)) (void)f.to_float(t);
        static constexpr int widths[] = {2, 3, 4, 8};
        read_as_checkpoint_layers(f, size ? widths[data[0] % 4] : 4);
    } catch (const qforge::FileError&) {
    }
    try {  // the JSON reader alone: parse, dump, parse again, same text
        const auto j = qforge::io::Json::parse(std::string_view(reinterpret_cast<const char*>(data), size));
        const auto text = j.dump();
        if (qforge::io::Json::parse(text).dump() != text) __builtin_trap();
    } catch (const qforge::InvalidData&) {
    }
    return 0;
}
