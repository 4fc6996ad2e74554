// parallel_for: every index exactly once in contiguous chunks of at least a grain, small loops on
// the calling thread, the first failing chunk's exception, nested loops serial, many back-to-back
// calls and calls while busy threads compete; and the callers' results bit for bit the same
// whatever the thread count, on sizes large enough that their loops really split.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common.hpp"
#include "qforge/calibration/activation_stats.hpp"
#include "qforge/core/once_cache.hpp"
#include "qforge/core/parallel.hpp"
#include "qforge/models/llama/evaluate.hpp"
#include "qforge/quantizers/awq.hpp"
#include "qforge/quantizers/gptq.hpp"
#include "qforge/quantizers/rtn.hpp"
#include "qforge/runtime/dispatch.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_parallel)

namespace {

struct Chunk {
    std::size_t begin, end;
    std::thread::id thread;
};

/// Runs parallel_for recording every call; checks the calls tile [0, n) exactly once.
std::vector<Chunk> run_and_check(std::size_t n, int threads, std::size_t grain) {
    std::vector<std::atomic<int>> hits(n);
    std::mutex m;
    std::vector<Chunk> chunks;
    parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(m);
        chunks.push_back({b, e, std::this_thread::get_id()});
    }, grain);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) wrong += hits[i].load() != 1;
    BOOST_TEST(wrong == 0u, "n " << n << ", threads " << threads << ", grain " << grain << ": " << wrong << " indices not run exactly once");
    std::sort(chunks.begin(), chunks.end(), [](const Chunk& a, const Chunk& b) { return a.begin < b.begin; });
    std::size_t at = 0;
    for (const Chunk& c : chunks) {
        BOOST_TEST(c.begin == at);
        BOOST_TEST(c.end > c.begin);
        at = c.end;
    }
    BOOST_TEST(at == n);
    return chunks;
}

/// Keeps `count` threads spinning until destroyed: other work competing for the cores.
class Spinners {
public:
    explicit Spinners(int count) {
        for (int i = 0; i < count; ++i)
            threads_.emplace_back([this] {
                unsigned long spins = 0;
                while (!stop_.load(std::memory_order_relaxed)) ++spins;
                sink_.fetch_add(spins, std::memory_order_relaxed);
            });
    }
    ~Spinners() {
        stop_ = true;
        for (auto& t : threads_) t.join();
    }
    Spinners(const Spinners&) = delete;
    Spinners& operator=(const Spinners&) = delete;

private:
    std::atomic<bool> stop_{false};
    std::atomic<unsigned long> sink_{0};
    std::vector<std::thread> threads_;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_index_once_in_chunks_of_at_least_a_grain) {
    const std::size_t huge = std::numeric_limits<std::size_t>::max();
    for (const std::size_t n : {0, 1, 2, 3, 7, 16, 63, 100, 1000, 4097})
        for (const int threads : {0, 1, 2, 3, 8, 64})
            for (const std::size_t grain : {std::size_t(0), std::size_t(1), std::size_t(2), std::size_t(5), std::size_t(64), std::size_t(1000), huge}) {
                const auto chunks = run_and_check(n, threads, grain);
                BOOST_TEST(chunks.size() == (n == 0 ? 0u : chunks.size()));
                if (n == 0) continue;
                const int t = threads == 0 ? default_threads() : threads;
                const std::size_t g = std::max<std::size_t>(grain, 1);
                if (t == 1 || n / g < 2) {
                    // below two grains (or one thread): one call, on this thread, no pool
                    BOOST_TEST(chunks.size() == 1u);
                    BOOST_TEST((chunks.front().thread == std::this_thread::get_id()));
                    continue;
                }
                BOOST_TEST(chunks.size() <= std::size_t(t) * chunks_per_thread);
                for (const Chunk& c : chunks) BOOST_TEST(c.end - c.begin >= g, "n " << n << ", threads " << t << ", grain " << g);
            }
}

BOOST_AUTO_TEST_CASE(threads_beyond_n_and_beyond_the_cores) {
    for (const std::size_t n : {2, 3, 5})
        for (const int threads : {4, 16, 200}) BOOST_TEST(run_and_check(n, threads, 1).size() <= n);
    run_and_check(100000, 200, 1);
}

BOOST_AUTO_TEST_CASE(grain_for_makes_chunks_of_enough_work) {
    BOOST_TEST(grain_for(0) == parallel_chunk_work);
    BOOST_TEST(grain_for(1) == parallel_chunk_work);
    BOOST_TEST(grain_for(parallel_chunk_work) == 1u);
    BOOST_TEST(grain_for(parallel_chunk_work * 10) == 1u);
    BOOST_TEST(grain_for(parallel_chunk_work / 4 + 1) == 4u);
    // stories260K-sized GEMV rows (64 columns) stay on one thread; SmolLM2's (576 x 576) split
    BOOST_TEST(std::size_t(64) / grain_for(64) < 2u);
    BOOST_TEST(std::size_t(576) / grain_for(576) >= 2u);
}

BOOST_AUTO_TEST_CASE(the_first_failing_chunk_is_rethrown_after_the_others) {
    for (const int threads : {1, 2, 3, 8})
        for (int round = 0; round < 20; ++round) {
            std::vector<std::atomic<int>> hits(1000);
            std::atomic<int> running{0}, running_at_throw_end{0};
            try {
                parallel_for(1000, threads, [&](std::size_t b, std::size_t e) {
                    running.fetch_add(1);
                    for (std::size_t i = b; i < e; ++i) {
                        if (i >= 300 && i % 7 == 0) {
                            running.fetch_sub(1);
                            throw std::runtime_error(std::to_string(i));
                        }
                        hits[i].fetch_add(1);
                    }
                    running.fetch_sub(1);
                }, 10);
                BOOST_FAIL("no exception");
            } catch (const std::runtime_error& e) {
                // what a serial loop reports: the first failing index, whatever the split
                BOOST_TEST(std::string(e.what()) == "301", "threads " << threads);
                running_at_throw_end = running.load();
            }
            BOOST_TEST(running_at_throw_end.load() == 0);  // nothing still running once it is rethrown
            for (std::size_t i = 0; i < 301; ++i) BOOST_TEST_REQUIRE(hits[i].load() == 1);
        }
    // the pool works as before afterwards
    run_and_check(5000, 2, 1);
}

// A loop inside a chunk that runs in the pool stays on that chunk's thread, in one piece. (When
// the outer loop itself ran inline — the pool busy, or backing off on a loaded machine, as under
// ctest -j2 during a build — its inner loops may use the pool; only the coverage is checked then.)
BOOST_AUTO_TEST_CASE(nested_loops_run_serially_on_the_chunk_thread) {
    std::vector<std::atomic<int>> hits(400 * 50);
    std::atomic<int> pooled_inner_calls{0}, pooled_outer{0}, foreign{0};
    parallel_for(400, 4, [&](std::size_t b, std::size_t e) {
        const bool pooled = detail::ThreadPool::in_pool();
        for (std::size_t i = b; i < e; ++i) {
            const auto outer = std::this_thread::get_id();
            if (pooled) pooled_outer.fetch_add(1);
            parallel_for(50, 4, [&](std::size_t ib, std::size_t ie) {
                if (pooled) {
                    pooled_inner_calls.fetch_add(1);
                    if (ib != 0 || ie != 50 || std::this_thread::get_id() != outer) foreign.fetch_add(1);
                }
                for (std::size_t j = ib; j < ie; ++j) hits[i * 50 + j].fetch_add(1);
            });
        }
    });
    BOOST_TEST_MESSAGE(pooled_outer.load() << " of 400 outer items ran inside the pool");
    BOOST_TEST(pooled_inner_calls.load() == pooled_outer.load());
    BOOST_TEST(foreign.load() == 0);
    std::size_t wrong = 0;
    for (auto& h : hits) wrong += h.load() != 1;
    BOOST_TEST(wrong == 0u);
}

BOOST_AUTO_TEST_CASE(many_back_to_back_small_calls) {
    // through the pool every time: two one-item chunks, so late workers meet the next call
    std::vector<int> v(4, 0);
    long total = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int call = 0; call < 100000; ++call) {
        parallel_for(v.size(), 2, [&](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) v[i] = call + int(i);
        });
        total += v[0] + v[3] - 2 * call;
    }
    BOOST_TEST(total == 3L * 100000);
    BOOST_TEST_MESSAGE("100000 pooled calls: " << seconds_since(t0) << " s");
    // and below the grain: inline, no pool at all
    for (int call = 0; call < 100000; ++call)
        parallel_for(v.size(), 2, [&](std::size_t b, std::size_t e) { v[b] += int(e - b); }, 1000);
    BOOST_TEST(v[0] == 99999 + 100000 * 4);
}

BOOST_AUTO_TEST_CASE(calls_from_several_threads_at_once) {
    std::vector<std::thread> callers;
    std::atomic<int> bad{0};
    for (int c = 0; c < 4; ++c)
        callers.emplace_back([&, c] {
            for (int round = 0; round < 300; ++round) {
                const std::size_t n = 100 + std::size_t(c * 37 + round);
                std::vector<std::atomic<int>> hits(n);
                parallel_for(n, 3, [&](std::size_t b, std::size_t e) {
                    for (std::size_t i = b; i < e; ++i) hits[i].fetch_add(1);
                });
                for (auto& h : hits) bad += h.load() != 1;
            }
        });
    for (auto& t : callers) t.join();
    BOOST_TEST(bad.load() == 0);
}

BOOST_AUTO_TEST_CASE(busy_threads_competing_for_the_cores) {
    // each item about a microsecond: the loop is worth splitting on an idle machine
    const std::size_t n = 2000;
    std::vector<double> out(n);
    const auto loop = [&](int threads) {
        parallel_for(n, threads, [&](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) {
                double s = 0;
                for (int k = 1; k < 300; ++k) s += std::sqrt(double(i * 300 + std::size_t(k)));
                out[i] = s;
            }
        }, 16);
    };
    loop(1);
    const std::vector<double> serial = out;
    const Spinners busy(2);
    double t1 = 0, t2 = 0;
    for (int round = 0; round < 5; ++round) {
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 40; ++i) loop(1);
        t1 += seconds_since(t0);
        t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 40; ++i) {
            std::fill(out.begin(), out.end(), 0.0);
            loop(2);
            BOOST_TEST_REQUIRE((out == serial));
        }
        t2 += seconds_since(t0);
        for (int i = 0; i < 200; ++i) run_and_check(1 + std::size_t(i) * 13, 2, 1);
    }
    // times are reported, not asserted: speed lives in bench/bench_threads.cpp
    BOOST_TEST_MESSAGE("under load: 1 thread " << t1 << " s, 2 threads " << t2 << " s");

    // tiny loops through the pool (grain 1, four items of a microsecond), under load: every result
    // right and no hang (the caller never waits for a worker the scheduler has not run)
    const auto tiny = [&](int threads) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int call = 0; call < 2000; ++call) {
            parallel_for(4, threads, [&](std::size_t b, std::size_t e) {
                for (std::size_t i = b; i < e; ++i) {
                    double s = 0;
                    for (int k = 1; k < 300; ++k) s += std::sqrt(double(i * 300 + std::size_t(k)));
                    out[i] = s;
                }
            });
            BOOST_TEST_REQUIRE(out[3] == serial[3]);
        }
        return seconds_since(t0);
    };
    const double tiny1 = tiny(1), tiny2 = tiny(2);
    BOOST_TEST_MESSAGE("2000 tiny loops under load: 1 thread " << tiny1 << " s, 2 threads " << tiny2 << " s");
}

// ---- callers: results do not depend on the thread count, with loops large enough to split ----

BOOST_AUTO_TEST_CASE(kernels_match_across_thread_counts) {
    const int rows = 1500, cols = 1024, n = 5;
    const auto w = qtest::random_weights(std::size_t(rows) * cols, 11);
    const auto x = qtest::random_weights(std::size_t(n) * cols, 12);
    const MatrixView<const float> wv(w.data(), rows, cols), xv(x.data(), n, cols);
    BOOST_TEST_REQUIRE(std::size_t(rows) / grain_for(cols) >= 2u);  // gemv really splits
    const auto p = Dense<4>::pack(RtnQuantizer(QuantSpec{4, 128}).quantize(wv));
    std::vector<float> y1(static_cast<std::size_t>(rows)), gm1(std::size_t(n) * rows), f1(std::size_t(n) * rows), d1(w.size());
    gemv<Dense<4>>(p, std::span(x).first(cols), y1, best_isa(), 1);
    gemm<Dense<4>>(p, xv, MatrixView<float>(gm1.data(), n, rows), best_isa(), 1);
    gemm_fp32(wv, xv, MatrixView<float>(f1.data(), n, rows), best_isa(), 1);
    dequantize<Dense<4>>(p, MatrixView<float>(d1.data(), rows, cols), best_isa(), 1);
    for (const int threads : {2, 3, 7, 0}) {
        std::vector<float> y(y1.size()), gm(gm1.size()), f(f1.size()), d(d1.size());
        gemv<Dense<4>>(p, std::span(x).first(cols), y, best_isa(), threads);
        gemm<Dense<4>>(p, xv, MatrixView<float>(gm.data(), n, rows), best_isa(), threads);
        gemm_fp32(wv, xv, MatrixView<float>(f.data(), n, rows), best_isa(), threads);
        dequantize<Dense<4>>(p, MatrixView<float>(d.data(), rows, cols), best_isa(), threads);
        BOOST_TEST((y == y1), "gemv, threads " << threads);
        BOOST_TEST((gm == gm1), "gemm, threads " << threads);
        BOOST_TEST((f == f1), "gemm_fp32, threads " << threads);
        BOOST_TEST((d == d1), "dequantize, threads " << threads);
    }
}

BOOST_AUTO_TEST_CASE(quantizers_match_across_thread_counts) {
    const int rows = 96, cols = 256;
    const auto w = qtest::random_weights(std::size_t(rows) * cols, 21);
    const MatrixView<const float> wv(w.data(), rows, cols);
    const auto x = qtest::random_weights(std::size_t(512) * cols, 22);
    ActivationStats stats(cols, true);
    stats.add(MatrixView<const float>(x.data(), 512, cols), Backend::cpu(best_isa(), 1));
    const auto h = stats.hessian();
    const QuantSpec spec{4, 32};
    const auto rtn = [&](int threads) { return RtnQuantizer(spec, true, {}, threads).quantize(wv); };
    const auto gptq = [&](int threads) {
        GptqOptions o;
        o.backend = Backend::cpu(best_isa(), threads);
        o.act_order = true;
        return gptq_quantize(wv, h, spec, o);
    };
    const auto awq = [&](int threads) {
        AwqOptions o;
        o.backend = Backend::cpu(best_isa(), threads);
        return awq_clip_quantize(wv, h, spec, o);
    };
    const auto r1 = rtn(1);
    const auto g1 = gptq(1);
    const auto a1 = awq(1);
    for (const int threads : {2, 3, 5}) {
        const auto r = rtn(threads);
        const auto g = gptq(threads);
        const auto a = awq(threads);
        BOOST_TEST((r.codes == r1.codes && r.scales == r1.scales), "rtn, threads " << threads);
        BOOST_TEST((g.q.codes == g1.q.codes && g.q.scales == g1.q.scales && g.q.zeros == g1.q.zeros), "gptq, threads " << threads);
        BOOST_TEST((a.codes == a1.codes && a.scales == a1.scales), "awq clip, threads " << threads);
    }
}

BOOST_AUTO_TEST_CASE(model_forward_and_perplexity_match_across_thread_counts) {
    auto c = qtest::tiny_config(2);
    c.dim = 256;
    c.hidden_dim = 512;
    c.n_heads = 8;
    c.n_kv_heads = 4;
    c.vocab_size = 1000;
    c.seq_len = 96;
    const auto w = qtest::random_llama(c, 31);
    const auto tokens = qtest::random_tokens(96, c.vocab_size, 32);
    const auto run = [&](int threads) {
        llama::Session s(w, Backend::cpu(best_isa(), threads), 96);
        const auto logits = s.forward_batch(std::span(tokens).first(64), 0);
        std::vector<float> out(logits.data, logits.data + logits.rows * logits.cols);
        for (int pos = 64; pos < 70; ++pos) {
            const auto l = s.forward(tokens[std::size_t(pos)], pos);
            out.insert(out.end(), l.begin(), l.end());
        }
        llama::EvalOptions o;
        o.context = 48;
        o.batch = 16;
        o.backend = Backend::cpu(best_isa(), threads);
        const auto st = llama::evaluate(w, &w, tokens, o);
        return std::make_pair(out, std::vector<double>{st.nll, st.kl, st.reference_nll, double(st.top1_agree)});
    };
    const auto [l1, s1] = run(1);
    for (const int threads : {2, 3}) {
        const auto [l, s] = run(threads);
        BOOST_TEST((l == l1), "logits, threads " << threads);
        BOOST_TEST((s == s1), "evaluate, threads " << threads);
    }
}

// OnceCache (core/once_cache.hpp, the sensitivity table's memo of factors and transforms): one
// computation per key however many threads ask; different keys compute side by side (key 1's
// computation waits until key 2's has started, which a cache computing one key at a time never
// lets happen: it would report the timeout below rather than hang); an exception reaches every
// caller of its key.
BOOST_AUTO_TEST_CASE(once_cache_computes_each_key_once_and_keys_side_by_side) {
    detail::OnceCache<int, int> cache;
    std::atomic<int> made{0};
    std::atomic<bool> first_started{false}, second_started{false};
    std::vector<int> got(8, -1);
    const auto ask = [&](int i) {
        const int key = i % 2 == 0 ? 1 : 2;
        got[std::size_t(i)] = cache.get(key, [&] {
            ++made;
            if (key == 2) {
                second_started = true;
                return 20;
            }
            first_started = true;
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (!second_started && std::chrono::steady_clock::now() < until) std::this_thread::yield();
            return second_started ? 10 : -10;  // -10: key 2 never ran beside key 1
        });
    };
    std::vector<std::thread> threads;
    threads.emplace_back(ask, 0);
    while (!first_started) std::this_thread::yield();  // key 1 is being computed
    for (int i = 1; i < 8; ++i) threads.emplace_back(ask, i);
    for (auto& t : threads) t.join();
    BOOST_TEST(made.load() == 2);
    BOOST_TEST(cache.size() == 2u);
    for (int i = 0; i < 8; ++i) BOOST_TEST(got[std::size_t(i)] == (i % 2 == 0 ? 10 : 20), "thread " << i);

    int calls = 0;
    const auto fail = [&]() -> int {
        ++calls;
        throw std::runtime_error("no value");
    };
    BOOST_CHECK_THROW(cache.get(3, fail), std::runtime_error);
    BOOST_CHECK_THROW(cache.get(3, fail), std::runtime_error);  // the same error, not a second try
    BOOST_TEST(calls == 1);
}

BOOST_AUTO_TEST_SUITE_END()
