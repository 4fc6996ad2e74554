#pragma once
/// @file
/// Checking where an output file will go before any work is done for it: every writer of
/// qforge (containers, neuron sets, plots) writes to a temporary name beside the destination and
/// renames it when complete, so the destination's directory must exist and be writable and the
/// destination must not be a directory. Checked up front, a bad path costs nothing instead of a
/// finished quantization.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <system_error>

#include "qforge/core/error.hpp"

namespace qforge::io {

/// Why `path` cannot be written ("" when it can).
inline std::string output_path_problem(const std::string& path) {
    namespace fs = std::filesystem;
    if (path.empty()) return "no output file name given";
    const fs::path p(path);
    std::error_code ec;
    if (fs::is_directory(p, ec)) return "is a directory; give a file name";
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    if (!fs::exists(dir, ec)) return "directory '" + dir.string() + "' does not exist";
    if (!fs::is_directory(dir, ec)) return "'" + dir.string() + "' is not a directory";
    if (::access(dir.c_str(), W_OK) != 0) return "directory '" + dir.string() + "' is not writable";
    return "";
}

/// Throws FileError(path, why) when `path` cannot be written.
inline void check_output_path(const std::string& path) {
    if (const auto why = output_path_problem(path); !why.empty()) throw FileError(path, "cannot write the output: " + why);
}

/// Writes the bytes `body` produces, through `put(pointer, count)`, to `path` by way of a
/// temporary file beside it that is synced and renamed into place when `body` returns: the file
/// streams (nothing is held but what body holds), and a reader never sees a partial one. When
/// body or a write throws, the temporary is removed and the error passes on; write failures are
/// FileErrors naming the file. The one mechanism under every streaming writer (safetensors, GGUF).
inline void write_file_streamed(const std::string& path, const std::function<void(const std::function<void(const void*, std::size_t)>&)>& body) {
    check_output_path(path);
    const std::string tmp = path + ".tmp";
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(tmp.c_str(), "wb"), &std::fclose);
    if (!out) throw FileError(tmp, "cannot create file");
    try {
        body([&](const void* p, std::size_t n) {
            if (n && std::fwrite(p, 1, n, out.get()) != n) throw FileError(tmp, "write failed (disk full?)");
        });
        if (std::fflush(out.get()) != 0 || ::fsync(::fileno(out.get())) != 0) throw FileError(tmp, "write failed");
        out.reset();
        std::error_code ec;
        std::filesystem::rename(tmp, path, ec);
        if (ec) throw FileError(path, "cannot move the finished file into place: " + ec.message());
    } catch (...) {
        out.reset();
        std::remove(tmp.c_str());
        throw;
    }
}

/// Writes `content` to `path` through a temporary file beside it, renamed when complete, so a
/// reader never sees a partial file. Errors name the file and the problem.
inline void write_file_atomically(const std::string& path, const std::string& content) {
    write_file_streamed(path, [&](const auto& put) { put(content.data(), content.size()); });
}

}  // namespace qforge::io
