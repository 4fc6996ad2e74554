// libFuzzer: the JSON files a person may hand to qforge allocate/quantize/eval (a scheme map, a
// saved sensitivity table): any bytes are either refused with FileError or read into a value
// whose written form reads back to itself. Nothing else may happen.
#include <qforge/io/scheme_map.hpp>
#include <qforge/pipelines/llama/sensitivity_file.hpp>

#include <cstdlib>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const auto once = qforge::io::scheme_map_json(qforge::io::parse_scheme_map(text, "fuzz.json"));
        if (qforge::io::scheme_map_json(qforge::io::parse_scheme_map(once, "fuzz.json")) != once) std::abort();
    } catch (const qforge::FileError&) {
    }
    try {
        const auto once = qforge::llama::sensitivity_file_json(qforge::llama::parse_sensitivity_file(text, "fuzz.json"));
        if (qforge::llama::sensitivity_file_json(qforge::llama::parse_sensitivity_file(once, "fuzz.json")) != once) std::abort();
    } catch (const qforge::FileError&) {
    }
    return 0;
}
