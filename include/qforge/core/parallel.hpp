#pragma once
/// @file
/// Splitting independent rows over threads. Each row is computed by exactly the same code
/// whatever the split, so results never depend on the thread count.
#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace qforge {

/// Threads to use when the caller says 0: every hardware thread.
inline int default_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : int(n);
}

/// Calls fn(begin, end) on contiguous slices of [0, n) from up to `threads` threads.
/// The first exception thrown by any slice is rethrown after all threads finish.
template <class Fn>
void parallel_for(std::size_t n, int threads, Fn&& fn) {
    if (threads <= 0) threads = default_threads();
    const std::size_t workers = std::min<std::size_t>(std::size_t(threads), n);
    if (workers <= 1) {
        if (n) fn(std::size_t(0), n);
        return;
    }
    std::vector<std::exception_ptr> errors(workers);
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    const auto slice = [&](std::size_t w) {
        const std::size_t begin = n * w / workers, end = n * (w + 1) / workers;
        try {
            fn(begin, end);
        } catch (...) {
            errors[w] = std::current_exception();
        }
    };
    for (std::size_t w = 1; w < workers; ++w) pool.emplace_back(slice, w);
    slice(0);
    for (auto& t : pool) t.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace qforge
