// libFuzzer: any text either parses to a scheme whose canonical text parses back to it, or is
// refused with InvalidArgument. Nothing else may happen.
#include <qforge/quantizers/registry.hpp>

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const auto scheme = qforge::parse_scheme(text);
        if (!(qforge::parse_scheme(qforge::to_string(scheme)) == scheme)) std::abort();
    } catch (const qforge::InvalidArgument&) {
    }
    return 0;
}
