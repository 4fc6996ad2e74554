// libFuzzer: any byte string is either a valid llama2.c checkpoint or refused with FileError.
#include <qforge/io/llama2c.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto ck = qforge::io::Llama2cCheckpoint::parse("fuzz-input", reinterpret_cast<const char*>(data), size);
        volatile float sink = 0;
        for (const auto& t : ck.tensors()) sink = sink + t.data[t.data.size() - 1];
    } catch (const qforge::FileError&) {
    }
    return 0;
}
