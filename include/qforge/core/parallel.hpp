#pragma once
/// @file
/// Splitting independent rows over threads. Each row is computed by exactly the same code
/// whatever the split, so results never depend on the thread count.
///
/// Threads come from one process-wide pool started on first use: a GEMV on a 4096 x 4096 4-bit
/// matrix takes about 200 us, and starting threads for each call would cost a fifth of that.
/// Workers spin briefly for the next task before sleeping, so back-to-back calls (one per layer)
/// pay no wake-up latency. A parallel_for called from inside a pool task runs serially.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qforge {

/// Threads to use when the caller says 0: every hardware thread.
inline int default_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : int(n);
}

namespace detail {

class ThreadPool {
public:
    static ThreadPool& instance() {
        static ThreadPool pool;
        return pool;
    }

    /// Runs task(0) .. task(n - 1), task(0) on the calling thread; returns when all are done.
    void run(std::size_t n, const std::function<void(std::size_t)>& task) {
        std::unique_lock<std::mutex> submit(submit_mutex_);  // one parallel_for at a time
        grow(n - 1);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            task_ = &task;
            slices_ = n;
            remaining_.store(n - 1, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        in_pool() = true;
        task(0);
        in_pool() = false;
        while (remaining_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    }

    static bool& in_pool() {
        thread_local bool flag = false;
        return flag;
    }

    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }

private:
    ThreadPool() = default;

    void grow(std::size_t workers) {
        while (workers_.size() < workers) {
            const std::size_t index = workers_.size() + 1;  // slice this worker runs
            // the generation before this run's: a worker that starts late still sees the run
            const std::size_t seen = generation_.load(std::memory_order_acquire);
            workers_.emplace_back([this, index, seen] { loop(index, seen); });
        }
    }

    void loop(std::size_t index, std::size_t seen) {
        in_pool() = true;
        for (;;) {
            // spin a little: the next GEMV usually follows within microseconds
            const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
            while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
                std::this_thread::yield();
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            seen = generation_.load(std::memory_order_acquire);
            if (stop_) return;
            const auto* task = task_;
            const bool mine = index < slices_;
            lock.unlock();
            if (mine) {
                (*task)(index);
                remaining_.fetch_sub(1, std::memory_order_acq_rel);
            }
        }
    }

    std::mutex submit_mutex_, mutex_;
    std::condition_variable wake_;
    std::vector<std::thread> workers_;
    const std::function<void(std::size_t)>* task_ = nullptr;
    std::size_t slices_ = 0;
    std::atomic<std::size_t> remaining_{0};
    std::atomic<std::size_t> generation_{0};
    bool stop_ = false;
};

}  // namespace detail

/// Calls fn(begin, end) on contiguous slices of [0, n) from up to `threads` threads
/// (0 = default_threads()). The first exception thrown by any slice is rethrown after all finish.
template <class Fn>
void parallel_for(std::size_t n, int threads, Fn&& fn) {
    if (threads <= 0) threads = default_threads();
    const std::size_t workers = std::min<std::size_t>(std::size_t(threads), n);
    if (workers <= 1 || detail::ThreadPool::in_pool()) {
        if (n) fn(std::size_t(0), n);
        return;
    }
    std::vector<std::exception_ptr> errors(workers);
    const std::function<void(std::size_t)> slice = [&](std::size_t w) {
        try {
            fn(n * w / workers, n * (w + 1) / workers);
        } catch (...) {
            errors[w] = std::current_exception();
        }
    };
    detail::ThreadPool::instance().run(workers, slice);
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace qforge
