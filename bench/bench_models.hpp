#pragma once
// Where the benchmarks find their models: stories260K under QFORGE_DATA (default: the build's
// data directory) and the SmolLM2 GGUF under QFORGE_CACHE (default ~/.cache/qforge). An empty
// string when the file is absent, after saying so on stderr.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace bench {

inline std::string existing_or_skip(const std::string& path, const char* model, const char* hint) {
    if (std::filesystem::exists(path)) return path;
    std::fprintf(stderr, "skipping %s: %s not found%s\n", model, path.c_str(), hint);
    return {};
}

inline std::string stories260k_path() {
    const char* env = std::getenv("QFORGE_DATA");
    const std::string data = env && *env ? env : QFORGE_DEFAULT_DATA;
    return existing_or_skip(data + "/models/stories260K/stories260K.bin", "stories260K", "");
}

inline std::string smollm2_path() {
    const char* env = std::getenv("QFORGE_CACHE");
    const char* home = std::getenv("HOME");
    const std::string cache = env && *env ? env : std::string(home ? home : ".") + "/.cache/qforge";
    return existing_or_skip(cache + "/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2", " (scripts/fetch-models.sh)");
}

}  // namespace bench
