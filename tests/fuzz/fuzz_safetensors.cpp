// libFuzzer: any byte string is either a safetensors file whose every float tensor converts (and
// whose JSON header re-serialises and re-parses identically), or refused with FileError. Nothing
// may read outside the buffer.
#include <qforge/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto f = qforge::io::SafetensorsFile::from_memory("fuzz-input", data, size);
        for (const auto& t : f.tensors())
            if ((t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16") && t.elements() < (1u << 20)) (void)f.to_float(t);
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
