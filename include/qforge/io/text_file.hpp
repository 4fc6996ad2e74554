#pragma once
/// @file
/// Reading a whole (small) text file: JSON metadata, scheme maps, saved tables.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "qforge/core/error.hpp"

namespace qforge::io {

/// The bytes of the file at `path`. FileError naming it: a directory (`what` says what file is
/// needed there), a file that cannot be opened or read.
inline std::string read_text_file(const std::string& path, const std::string& what) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) throw FileError(path, "is a directory; " + what + " is needed");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FileError(path, "cannot open file");
    std::stringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw FileError(path, "read failed");
    return ss.str();
}

}  // namespace qforge::io
