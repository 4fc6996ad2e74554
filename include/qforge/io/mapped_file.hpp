#pragma once
/// @file
/// Read-only memory maps of whole files, shared by the readers (GGUF, safetensors): the open
/// with its errors, and giving back the pages of a range already consumed.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "qforge/core/error.hpp"

namespace qforge::io {

struct MappedFile {
    std::shared_ptr<void> map;  ///< null for an empty file
    std::size_t size = 0;
};

/// Maps `path` read-only; FileError naming the file when it cannot be opened, stat'ed or mapped.
inline MappedFile map_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw FileError(path, "cannot open file");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        ::close(fd);
        throw FileError(path, "cannot stat file");
    }
    MappedFile m;
    m.size = std::size_t(st.st_size);
    if (m.size > 0) {
        void* p = ::mmap(nullptr, m.size, PROT_READ, MAP_PRIVATE, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw FileError(path, "cannot map file");
        m.map = std::shared_ptr<void>(p, [size = m.size](void* q) { ::munmap(q, size); });
    } else {
        ::close(fd);
    }
    return m;
}

/// Lets the kernel drop the mapped pages of `range` (inside the mapping starting at `base`):
/// streaming readers call it once a tensor is consumed, so resident memory stays near one tensor.
inline void release_pages(const void* base, std::span<const std::uint8_t> range) {
    if (!base || range.empty()) return;
    const auto page = std::uintptr_t(::sysconf(_SC_PAGESIZE));
    const auto begin = std::max(std::uintptr_t(range.data()) / page * page, std::uintptr_t(base));
    ::madvise(reinterpret_cast<void*>(begin), std::uintptr_t(range.data() + range.size()) - begin, MADV_DONTNEED);
}

}  // namespace qforge::io
