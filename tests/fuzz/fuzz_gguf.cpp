// libFuzzer: any byte string is either a GGUF file whose every supported tensor dequantizes, or
// refused with FileError; and either an importance matrix (GGUF or llama.cpp's legacy .dat) or
// refused with FileError. Nothing may read outside the buffer.
#include <qforge/io/gguf.hpp>
#include <qforge/io/imatrix.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto f = qforge::io::GgufFile::from_memory("fuzz-input", data, size);
        for (const auto& t : f.tensors())
            if (qforge::io::ggml_block(t.type).first != 0 && t.elements() < (1u << 20)) (void)f.dequantize(t);
    } catch (const qforge::FileError&) {
    }
    try {
        (void)qforge::io::Imatrix::from_memory("fuzz-input", data, size);
    } catch (const qforge::FileError&) {
    }
    return 0;
}
