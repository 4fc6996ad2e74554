#pragma once
/// @file
/// Splitting independent items over threads. Each item is computed by exactly the same code
/// whatever the split, so results never depend on the thread count or on how [0, n) was cut.
///
/// Small loops run inline: the caller says how much work an item is (the `grain`: the fewest
/// items worth handing to another thread, see grain_for), and a loop of less than two grains
/// never touches the pool. Larger loops are cut into chunks of at least a grain (up to
/// chunks_per_thread per thread) that the calling thread and the woken workers claim from one
/// atomic counter until none is left. The caller never waits for a worker that has not started:
/// a worker the scheduler runs late finds nothing left and goes back to sleep, so a busy machine
/// costs at most the chunks a worker has claimed and is running. Each loop is a job of its own,
/// kept alive by whoever still holds it, so a late worker can neither run a chunk of the next loop
/// with a stale task nor count into the wrong loop's counters.
///
/// Threads come from one process-wide pool started on first use: a GEMV on a 4096 x 4096 4-bit
/// matrix takes about 200 us, and starting threads for each call would cost a fifth of that.
/// A loop on t threads is posted to workers 0 .. t - 2 only, each through a mailbox of its own.
/// Workers spin briefly (pause instructions, no system call) for the next loop before sleeping, so back-to-back calls (one
/// per layer) pay no wake-up latency; the caller, once no chunk is left to claim, spins briefly
/// and then sleeps until the running chunks finish. A parallel_for called from inside a chunk (or
/// while another thread's loop holds the pool) runs serially on its caller. When a caller had to
/// wait on a worker stopped mid-chunk (a busy machine), loops run inline for a while that doubles
/// while it keeps happening (ThreadPool::learn): a wait on a descheduled worker is paid once per
/// back-off period, not once per loop.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace qforge {

/// Threads to use when the caller says 0: every hardware thread.
inline int default_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : int(n);
}

/// The least work worth a chunk of its own, in operations (about one multiply-add of a packed
/// weight dot product, some 0.1-0.3 ns with AVX2): a few tens of microseconds, well above the
/// cost of waking a thread. A loop of less than twice this runs on the calling thread.
inline constexpr std::size_t parallel_chunk_work = std::size_t(1) << 17;

/// Chunks per participating thread when a loop is split: enough that a thread the scheduler
/// holds back leaves little for the others to wait on, few enough that claiming costs nothing.
inline constexpr std::size_t chunks_per_thread = 8;

/// The grain (fewest items per chunk) for items of about `ops_per_item` operations each.
constexpr std::size_t grain_for(std::size_t ops_per_item) noexcept {
    return ops_per_item == 0 ? parallel_chunk_work : std::max<std::size_t>(1, (parallel_chunk_work + ops_per_item - 1) / ops_per_item);
}

namespace detail {

/// One step of a short busy wait: a few pause instructions (no system call: a yield costs about
/// a microsecond, as much as the hand-off it waits for), the core left to a sibling hyperthread.
inline void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    for (int i = 0; i < 16; ++i) __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
}

/// One parallel_for, split into `chunks` chunks that run_chunk(c) runs.
struct ParallelJob {
    const std::function<void(std::size_t)>* run_chunk = nullptr;  // valid while done < chunks
    std::size_t chunks = 0;
    std::atomic<std::size_t> next{0};  // the next chunk to claim (may run past chunks)
    std::atomic<std::size_t> done{0};  // chunks finished or skipped
    static constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
    std::atomic<std::size_t> failed{none};  // the lowest chunk that threw
    std::exception_ptr error;               // its exception (under mutex)
    std::mutex mutex;
    std::condition_variable finished;

    /// Claims and runs chunks until none is left; false when there was none to claim. Chunks
    /// after one that threw are skipped.
    bool work() {
        for (bool claimed = false;; claimed = true) {
            const std::size_t c = next.fetch_add(1, std::memory_order_relaxed);
            if (c >= chunks) return claimed;
            if (c < failed.load(std::memory_order_relaxed)) {
                try {
                    (*run_chunk)(c);
                } catch (...) {
                    std::lock_guard<std::mutex> lock(mutex);
                    if (c < failed.load(std::memory_order_relaxed)) {
                        error = std::current_exception();
                        failed.store(c, std::memory_order_relaxed);
                    }
                }
            }
            if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
                std::lock_guard<std::mutex> lock(mutex);  // the caller checks `done` under it
                finished.notify_all();
            }
        }
    }

    /// The caller, after work(): returns once every claimed chunk has finished.
    void wait() {
        const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
        while (done.load(std::memory_order_acquire) != chunks) {
            if (std::chrono::steady_clock::now() >= spin_until) {
                std::unique_lock<std::mutex> lock(mutex);
                finished.wait(lock, [&] { return done.load(std::memory_order_acquire) == chunks; });
                return;
            }
            relax();
        }
    }
};

class ThreadPool {
public:
    static ThreadPool& instance() {
        static ThreadPool pool;
        return pool;
    }

    /// True on pool workers and on a caller while it runs chunks: parallel_for runs inline there.
    static bool& in_pool() {
        thread_local bool flag = false;
        return flag;
    }

    /// Runs `job` on the calling thread and workers 0 .. helpers - 1; returns once it is done.
    /// False (nothing run) when another thread's job holds the pool.
    bool try_run(const std::shared_ptr<ParallelJob>& job, std::size_t helpers) {
        std::unique_lock<std::mutex> submit(submit_mutex_, std::try_to_lock);
        if (!submit.owns_lock()) return false;
        while (workers_.size() < helpers) workers_.push_back(std::make_unique<Worker>());
        const auto start = Clock::now();
        for (std::size_t i = 0; i < helpers; ++i) workers_[i]->post(job);
        {
            const InPool guard;
            job->work();
        }
        const auto own_done = Clock::now();
        job->wait();
        learn(own_done - start, Clock::now() - own_done);
        return true;
    }

    /// True while loops should run on their caller alone: a recent loop waited on a worker that
    /// the scheduler had stopped in the middle of a chunk (other processes hold the cores).
    bool backing_off() const { return Clock::now().time_since_epoch().count() < inline_until_.load(std::memory_order_relaxed); }

    ~ThreadPool() {
        for (auto& w : workers_) w->stop();
    }

    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

private:
    struct InPool {
        bool saved = in_pool();
        InPool() { in_pool() = true; }
        ~InPool() { in_pool() = saved; }
        InPool(const InPool&) = delete;
        InPool& operator=(const InPool&) = delete;
    };

    /// A thread with a mailbox of its own: only the workers a job needs are woken, and one that
    /// wakes late takes the newest job posted to it (or one already done, where it finds nothing).
    class Worker {
    public:
        Worker() : thread_([this] { loop(); }) {}

        void post(const std::shared_ptr<ParallelJob>& job) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                job_ = job;
                posted_.fetch_add(1, std::memory_order_release);
            }
            wake_.notify_one();  // no system call while the worker spins
        }

        void stop() {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                stop_ = true;
                posted_.fetch_add(1, std::memory_order_release);
            }
            wake_.notify_one();
            thread_.join();
        }

    private:
        void loop() {
            in_pool() = true;
            std::uint64_t seen = 0;
            for (bool useful = false;;) {
                // after a job it had a share of, spin a little: the next loop usually
                // follows within microseconds. One that came too late for any chunk (a busy
                // machine, or loops too short to share) sleeps at once, leaving the CPU to others.
                const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(useful ? 100 : 0);
                while (posted_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
                    relax();
                std::shared_ptr<ParallelJob> job;
                {
                    std::unique_lock<std::mutex> lock(mutex_);
                    wake_.wait(lock, [&] { return posted_.load(std::memory_order_acquire) != seen; });
                    seen = posted_.load(std::memory_order_acquire);
                    if (stop_) return;
                    job = std::move(job_);
                }
                useful = job && job->work();
            }
        }

        std::mutex mutex_;
        std::condition_variable wake_;
        std::shared_ptr<ParallelJob> job_;      // the newest job posted, until taken
        std::atomic<std::uint64_t> posted_{0};  // jobs (and the stop) posted so far
        bool stop_ = false;
        std::thread thread_;  // last: starts once the rest is built
    };

    ThreadPool() = default;

    using Clock = std::chrono::steady_clock;

    /// After each loop: a caller that waited for the others longer than it worked itself and
    /// longer than `stall` met a worker descheduled mid-chunk, so the next loops run inline for a
    /// while, doubling from 1 ms up to 100 ms while it keeps happening; a loop that goes well
    /// resets it. On a busy machine N threads then cost about what one does instead of a time
    /// slice per loop. `stall` is above a sleeping worker's wake-up (tens to a few hundred us on
    /// a VM): at 50 us a wake-up alone set it off, the loops then ran inline, the worker slept
    /// again and the next loop's wake-up set it off again — SmolLM2 prompts on 2 threads ran
    /// at 750 tokens/s in that state and 1080 out of it, flipping between the two from run to run.
    static constexpr auto stall = std::chrono::microseconds(400);
    void learn(Clock::duration own, Clock::duration waited) {
        using std::chrono::microseconds;
        if (waited > std::max<Clock::duration>(own, stall)) {
            const auto next = std::min<Clock::duration>(backoff_ * 2, std::chrono::milliseconds(100));
            backoff_ = next;
            inline_until_.store((Clock::now() + next).time_since_epoch().count(), std::memory_order_relaxed);
        } else {
            backoff_ = std::chrono::microseconds(500);
        }
    }

    std::mutex submit_mutex_;
    std::vector<std::unique_ptr<Worker>> workers_;
    Clock::duration backoff_ = std::chrono::microseconds(500);  // under submit_mutex_
    std::atomic<Clock::rep> inline_until_{0};
};

}  // namespace detail

/// Calls fn(begin, end) on contiguous chunks that together cover [0, n) exactly once, from up to
/// `threads` threads (0 = default_threads()), the calling thread among them. `grain` is the
/// fewest items a chunk holds (grain_for(ops per item) computes it from the work of one item):
/// with fewer than 2 grains, fn(0, n) runs on the calling thread alone. How [0, n) is cut depends
/// on n, threads and grain, and which thread runs a chunk on timing, so fn must compute each item
/// the same whatever chunk it is in and must not rely on one call per thread.
///
/// When chunks throw, the exception of the first of them (lowest begin) is rethrown after every
/// running chunk has finished; chunks after it that had not started are skipped.
template <class Fn>
void parallel_for(std::size_t n, int threads, Fn&& fn, std::size_t grain = 1) {
    if (threads <= 0) threads = default_threads();
    grain = std::max<std::size_t>(grain, 1);
    const std::size_t most = n / grain;  // chunks of at least a grain
    if (threads <= 1 || most < 2 || detail::ThreadPool::in_pool() || detail::ThreadPool::instance().backing_off()) {
        if (n) fn(std::size_t(0), n);
        return;
    }
    const std::size_t chunks = std::min(most, std::size_t(threads) * chunks_per_thread);
    const std::size_t helpers = std::min(std::size_t(threads), chunks) - 1;
    // chunk c: [c q + min(c, r), (c + 1) q + min(c + 1, r)), the first r chunks one item longer
    const std::size_t q = n / chunks, r = n % chunks;
    const std::function<void(std::size_t)> run_chunk = [&](std::size_t c) {
        fn(c * q + std::min(c, r), (c + 1) * q + std::min(c + 1, r));
    };
    const auto job = std::make_shared<detail::ParallelJob>();
    job->run_chunk = &run_chunk;
    job->chunks = chunks;
    if (!detail::ThreadPool::instance().try_run(job, helpers)) {  // the pool is busy with another thread's loop
        fn(std::size_t(0), n);
        return;
    }
    if (job->error) std::rethrow_exception(job->error);
}

}  // namespace qforge
