// Dequantize and GEMV throughput on packed weights, next to a streaming-read baseline measured
// in the same process (the best of three read kernels), so each result also prints its fraction
// of the memory bandwidth.
//
// The last-level cache holds tens of MB, so every benchmark cycles through enough copies of
// its matrix that the working set is at least QFORGE_BENCH_WORKING_SET bytes (default 512 MiB):
// the figures measure memory, not cache.
//
// Counters: GB/s = bytes moved per second (GEMV: packed bytes read; dequantize: packed bytes
// read + FP32 bytes written); frac_of_stream = GB/s / the streaming-read baseline.
// QFORGE_THREADS sets the thread count (default: every hardware thread).
#include <benchmark/benchmark.h>

#include <chrono>

#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <qforge/qforge.hpp>
#include <qforge/runtime/dispatch.hpp>

namespace {

double g_stream_bytes_per_second = 0.0;
int g_threads = 0;

std::size_t working_set() {
    const char* env = std::getenv("QFORGE_BENCH_WORKING_SET");
    return env ? std::size_t(std::strtoull(env, nullptr, 10)) : (std::size_t(512) << 20);
}

std::vector<float> weights(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> w(n);
    for (auto& v : w) v = normal(rng);
    return w;
}

/// Sum of n 64-bit words with four independent AVX2 accumulators (only this function needs AVX2;
/// the kernels go through qforge::dispatch).
[[gnu::target("avx2")]] std::uint64_t sum_words(const std::uint64_t* p, std::size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const auto* v = reinterpret_cast<const __m256i*>(p);
    for (std::size_t i = 0; i + 4 <= n / 4; i += 4) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(v + i));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(v + i + 1));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(v + i + 2));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(v + i + 3));
    }
    alignas(32) std::uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

/// OR of n 64-bit words into eight accumulators (OR issues on more ports than a 64-bit add);
/// with `Prefetch`, a software prefetch 1 KiB ahead of the loads.
template <bool Prefetch>
[[gnu::target("avx2")]] std::uint64_t or_words(const std::uint64_t* p, std::size_t n) {
    __m256i a[8];
    for (auto& x : a) x = _mm256_setzero_si256();
    const auto* v = reinterpret_cast<const __m256i*>(p);
    const std::size_t vectors = n / 4;
    for (std::size_t i = 0; i + 8 <= vectors; i += 8) {
        if constexpr (Prefetch) {  // a prefetch never faults, so running past the end is harmless
            _mm_prefetch(reinterpret_cast<const char*>(v + i + 32), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(v + i + 34), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(v + i + 36), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(v + i + 38), _MM_HINT_T0);
        }
        for (int k = 0; k < 8; ++k) a[k] = _mm256_or_si256(a[k], _mm256_loadu_si256(v + i + std::size_t(k)));
    }
    for (int k = 1; k < 8; ++k) a[0] = _mm256_or_si256(a[0], a[k]);
    alignas(32) std::uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a[0]);
    return lanes[0] | lanes[1] | lanes[2] | lanes[3];
}

/// The read kernels whose best rate is the baseline: one kernel's rate can sit below what the
/// memory gives (a session once measured ggml's F32 matvec reading faster than a lone add loop).
using ReadKernel = std::uint64_t (*)(const std::uint64_t*, std::size_t);
struct NamedReadKernel {
    const char* name;
    ReadKernel fn;
};
const NamedReadKernel read_kernels[] = {{"add, 4 accumulators", sum_words},
                                        {"or, 8 accumulators", or_words<false>},
                                        {"or, 8 accumulators, prefetch 1 KiB ahead", or_words<true>}};

/// Reads a buffer far larger than the caches with `kernel`, split over the kernels' threads.
double stream_read_once(const std::vector<std::uint64_t>& buffer, ReadKernel kernel = sum_words) {
    std::vector<std::uint64_t> partial(static_cast<std::size_t>(g_threads));
    qforge::parallel_for(std::size_t(g_threads), g_threads, [&](std::size_t t0, std::size_t t1) {
        for (std::size_t t = t0; t < t1; ++t) {
            const std::size_t n = buffer.size() / 16, begin = n * t / std::size_t(g_threads) * 16,
                              end = n * (t + 1) / std::size_t(g_threads) * 16;
            partial[t] = kernel(buffer.data() + begin, end - begin);
        }
    });
    return double(std::accumulate(partial.begin(), partial.end(), std::uint64_t(0)));
}

void BM_StreamRead(benchmark::State& state) {
    std::vector<std::uint64_t> buffer(working_set() / 8, 1);
    for (auto _ : state) benchmark::DoNotOptimize(stream_read_once(buffer));
    state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * double(buffer.size() * 8) / 1e9,
                                                benchmark::Counter::kIsRate);
    state.counters["frac_of_stream"] = benchmark::Counter(
        double(state.iterations()) * double(buffer.size() * 8) / g_stream_bytes_per_second, benchmark::Counter::kIsRate);
}

template <class F>
struct Copies {
    std::vector<typename F::Packed> packed;
    std::size_t bytes_each = 0;
    Copies(int rows, int cols, const qforge::QuantSpec& spec, std::size_t extra_per_copy = 0) {
        const auto w = weights(std::size_t(rows) * std::size_t(cols), 1);
        const auto q = qforge::RtnQuantizer(spec).quantize(qforge::MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols)));
        packed.push_back(F::pack(q));
        bytes_each = packed[0].bytes();
        const std::size_t copies = std::max<std::size_t>(2, working_set() / (bytes_each + extra_per_copy) + 1);
        while (packed.size() < copies) packed.push_back(packed[0]);
    }
};

/// GGUF formats fix their own grid; dense ones get the common GPTQ/AWQ asymmetric grid.
template <class F>
qforge::QuantSpec bench_spec(int group) {
    if constexpr (requires { typename F::block_type; }) return typename F::Packed{}.spec;
    else return {F::bits, group, qforge::ZeroPoint::integer};
}

void report(benchmark::State& state, double bytes_per_iteration) {
    const double total = double(state.iterations()) * bytes_per_iteration;
    state.counters["GB/s"] = benchmark::Counter(total / 1e9, benchmark::Counter::kIsRate);
    state.counters["frac_of_stream"] = benchmark::Counter(total / g_stream_bytes_per_second, benchmark::Counter::kIsRate);
}

template <class F>
void BM_Gemv(benchmark::State& state) {
    const int rows = int(state.range(0)), cols = int(state.range(1)), group = int(state.range(2));
    const auto isa = qforge::Isa(state.range(3));
    if (!qforge::isa_usable(isa)) {
        state.SkipWithError("instruction set not usable on this machine");
        return;
    }
    const Copies<F> set(rows, cols, bench_spec<F>(group));
    const auto x = weights(std::size_t(cols), 2);
    std::vector<float> y(static_cast<std::size_t>(rows));
    std::size_t i = 0;
    for (auto _ : state) {
        qforge::gemv<F>(set.packed[i], x, y, isa, g_threads);
        benchmark::DoNotOptimize(y.data());
        i = (i + 1) % set.packed.size();
    }
    state.SetLabel(std::string(qforge::isa_name(isa)) + ", " + std::to_string(set.packed.size()) + " copies");
    report(state, double(set.bytes_each));
}

/// A decode step's GEMV: over the row panels kept beside the weights (build_panel_set, what the
/// CPU backend prepares), next to the row kernels on the same copies measured just before
/// (`vs_rows`: the row kernels' time / this one's). GB/s counts the kept panels' bytes (codes
/// and terms); `kept_bits` is those bytes per weight (K-quants keep 4-6 bits, not the kernel
/// form's 8).
template <class F>
void BM_GemvKept(benchmark::State& state) {
    const int rows = int(state.range(0)), cols = int(state.range(1)), group = int(state.range(2));
    const auto isa = qforge::Isa(state.range(3));
    if (!qforge::isa_usable(isa) || !qforge::row_functions<F>(isa).panel_gemv_kernel) {
        state.SkipWithError("no vector GEMV over kept panels for this format on this machine");
        return;
    }
    const Copies<F> set(rows, cols, bench_spec<F>(group));
    std::vector<std::shared_ptr<const qforge::PanelSet>> kept;  // one set per stored copy: about the stored bytes each
    for (const auto& p : set.packed) kept.push_back(qforge::build_panel_set<F>(p, isa, g_threads));
    const auto& first = kept[0];
    const auto x = weights(std::size_t(cols), 2);
    std::vector<float> y(static_cast<std::size_t>(rows));
    // the row kernels over the stored copies, best of 3 passes over them
    double rows_seconds = 1e30;
    for (int pass = 0; pass < 3; ++pass) {
        const auto t0 = std::chrono::steady_clock::now();
        for (const auto& p : set.packed) qforge::gemv<F>(p, x, y, isa, g_threads);
        rows_seconds = std::min(rows_seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(set.packed.size()));
    }
    std::size_t i = 0;
    for (auto _ : state) {
        qforge::gemv_panels<F>(*kept[i], x, y, isa, g_threads);
        benchmark::DoNotOptimize(y.data());
        i = (i + 1) % kept.size();
    }
    state.SetLabel(std::string(qforge::isa_name(isa)) + ", " + std::to_string(kept.size()) + " copies");
    report(state, double(first->bytes()));
    state.counters["kept_bits"] = double(first->bytes()) * 8.0 / (double(rows) * double(cols));
    state.counters["vs_rows"] = benchmark::Counter(rows_seconds, benchmark::Counter::kIsIterationInvariantRate);
}

/// Product-quantized GEMV through the codebooks (backends/pq.hpp): args rows, cols, d, n,
/// centroid bits, isa. Random codes and codebooks (the kernel's work does not depend on them).
/// GB/s counts the bytes the kernel reads (codes as bytes, centroids as floats: `read_bits` per
/// weight); `stored_bits` is the packed format's bits per weight (formats/pq.hpp).
void BM_GemvPq(benchmark::State& state) {
    const int rows = int(state.range(0)), cols = int(state.range(1));
    const qforge::PqSpec spec{int(state.range(2)), int(state.range(3)), 1024, int(state.range(4))};
    const auto isa = qforge::Isa(state.range(5));
    if (!qforge::isa_usable(isa)) {
        state.SkipWithError("instruction set not usable on this machine");
        return;
    }
    qforge::PqMatrix m(spec, rows, cols);
    const auto vals = weights(std::size_t(m.codebooks()) * std::size_t(spec.n) * std::size_t(spec.d), 3);
    for (int b = 0; b < m.codebooks(); ++b) m.set_codebook(b, vals.data() + std::size_t(b) * std::size_t(spec.n) * std::size_t(spec.d));
    std::uint64_t z = 1;
    for (auto& c : m.codes) c = std::uint16_t((z = z * 6364136223846793005ull + 1442695040888963407ull) >> 58) % std::uint16_t(spec.n);
    std::vector<qforge::PqKernel> copies{qforge::PqKernel::from(m)};
    const std::size_t bytes = copies[0].bytes();
    while (copies.size() < std::max<std::size_t>(2, working_set() / bytes + 1)) copies.push_back(copies[0]);
    const auto x = weights(std::size_t(cols), 2);
    std::vector<float> y(static_cast<std::size_t>(rows));
    std::size_t i = 0;
    for (auto _ : state) {
        qforge::pq_gemv(copies[i], x.data(), y.data(), isa, g_threads);
        benchmark::DoNotOptimize(y.data());
        i = (i + 1) % copies.size();
    }
    state.SetLabel(std::string(qforge::isa_name(isa)) + ", " + std::to_string(copies.size()) + " copies");
    report(state, double(bytes));
    state.counters["read_bits"] = double(bytes) * 8.0 / (double(rows) * double(cols));
    state.counters["stored_bits"] = m.bits_per_weight();
}
void shapes_pq(benchmark::internal::Benchmark* b) {
    const long best = long(qforge::best_isa());
    for (long isa : {1L, best})
        for (const auto& a : std::vector<std::vector<long>>{{4096, 4096, 2, 64, 16}, {4096, 4096, 2, 64, 8}, {4096, 4096, 4, 256, 16}}) {
            auto args = a;
            args.push_back(isa);
            b->Args(args);
        }
    b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

/// The randomized Hadamard transform of one activation vector (linalg/hadamard.hpp), the run-time
/// cost of `,had` per token and layer input: args width, isa (0 scalar oracle). `vs_gemv`: this
/// transform's time as a fraction of a 4-bit (Dense<4>, g128) GEMV of a width x width layer on
/// the same instruction set and threads, measured just before (best of 5 passes).
void BM_Hadamard(benchmark::State& state) {
    const int n = int(state.range(0));
    const auto isa = qforge::Isa(state.range(1));
    if (!qforge::isa_usable(isa)) {
        state.SkipWithError("instruction set not usable on this machine");
        return;
    }
    const qforge::HadamardTransform t(n, 1);
    const auto fn = qforge::fp32_functions(isa).hadamard;
    auto x = weights(std::size_t(n), 2);
    std::vector<float> tmp(static_cast<std::size_t>(n));
    double gemv_seconds = 1e30;
    {
        const auto w = weights(std::size_t(n) * std::size_t(n), 1);
        const auto q = qforge::RtnQuantizer(bench_spec<qforge::Dense<4>>(128)).quantize(qforge::MatrixView<const float>(w.data(), std::size_t(n), std::size_t(n)));
        const auto packed = qforge::Dense<4>::pack(q);
        std::vector<float> y(static_cast<std::size_t>(n));
        for (int pass = 0; pass < 5; ++pass) {
            const auto t0 = std::chrono::steady_clock::now();
            qforge::gemv<qforge::Dense<4>>(packed, x, y, isa, g_threads);
            gemv_seconds = std::min(gemv_seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : state) {
        fn(t, x.data(), tmp.data(), false);
        benchmark::DoNotOptimize(x.data());
    }
    const double each = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(state.iterations());
    state.SetLabel(std::string(qforge::isa_name(isa)) + ", " + std::to_string(t.m) + " x " + std::to_string(t.pow2));
    state.counters["vs_gemv"] = each / gemv_seconds;
    state.counters["gemv_us"] = gemv_seconds * 1e6;
}
void shapes_hadamard(benchmark::internal::Benchmark* b) {
    for (long isa : {0L, long(qforge::best_isa())})
        for (long n : {576L, 1536L, 4096L}) b->Args({n, isa});
    b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

template <class F>
void BM_Dequantize(benchmark::State& state) {
    const int rows = int(state.range(0)), cols = int(state.range(1)), group = int(state.range(2));
    const auto isa = qforge::Isa(state.range(3));
    const std::size_t out_bytes = std::size_t(rows) * std::size_t(cols) * 4;
    // the FP32 output alone is larger than the cache, so a few input copies suffice
    const Copies<F> set(rows, cols, bench_spec<F>(group), out_bytes);
    std::vector<float> out(std::size_t(rows) * std::size_t(cols));
    const qforge::MatrixView<float> view(out.data(), std::size_t(rows), std::size_t(cols));
    std::size_t i = 0;
    for (auto _ : state) {
        qforge::dequantize<F>(set.packed[i], view, isa, g_threads);
        benchmark::DoNotOptimize(out.data());
        i = (i + 1) % set.packed.size();
    }
    state.SetLabel(std::string(qforge::isa_name(isa)));
    report(state, double(set.bytes_each + out_bytes));
}

void shapes(benchmark::internal::Benchmark* b) {
    const long best = long(qforge::best_isa());
    for (long rows : {4096L, 11008L}) b->Args({rows, 4096, 128, best});
    b->UseRealTime()->Unit(benchmark::kMicrosecond);
}
void shapes_q4_0(benchmark::internal::Benchmark* b) {
    const long best = long(qforge::best_isa());
    for (long rows : {4096L, 11008L}) b->Args({rows, 4096, 32, best});
    b->UseRealTime()->Unit(benchmark::kMicrosecond);
}
void every_isa(benchmark::internal::Benchmark* b) {
    for (long isa : {0L, 1L, 2L}) b->Args({4096, 4096, 128, isa});
    b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_StreamRead)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gemv<qforge::Dense<4>>)->Apply(shapes);
BENCHMARK(BM_Gemv<qforge::Dense<3>>)->Apply(shapes);
BENCHMARK(BM_Gemv<qforge::Dense<8>>)->Apply(shapes);
BENCHMARK(BM_Gemv<qforge::Q4_0>)->Apply(shapes_q4_0);
BENCHMARK(BM_Gemv<qforge::Dense<4>>)->Name("BM_Gemv<Dense<4>>/isa")->Apply(every_isa);
BENCHMARK(BM_GemvPq)->Apply(shapes_pq);
BENCHMARK(BM_Hadamard)->Apply(shapes_hadamard);
BENCHMARK(BM_GemvKept<qforge::Q4_0>)->Apply(shapes_q4_0);
BENCHMARK(BM_GemvKept<qforge::Q8_0>)->Apply(shapes_q4_0);
BENCHMARK(BM_GemvKept<qforge::Q5_0>)->Apply(shapes_q4_0);
BENCHMARK(BM_GemvKept<qforge::Q4_K>)->Apply(shapes_q4_0);
BENCHMARK(BM_GemvKept<qforge::Q6_K>)->Apply(shapes_q4_0);
BENCHMARK(BM_Dequantize<qforge::Dense<4>>)->Apply(shapes);
BENCHMARK(BM_Dequantize<qforge::Dense<3>>)->Apply(shapes);
BENCHMARK(BM_Dequantize<qforge::Dense<8>>)->Apply(shapes);

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    g_threads = std::getenv("QFORGE_THREADS") ? std::atoi(std::getenv("QFORGE_THREADS")) : qforge::default_threads();
    {  // the baseline every fraction is relative to, measured here and now
        std::vector<std::uint64_t> buffer(working_set() / 8, 1);
        stream_read_once(buffer);  // fault the pages in
        // the best of several kernels and passes: the figure the kernels are held to is what
        // memory can give
        for (const auto& k : read_kernels) {
            double best = 0.0;
            for (int r = 0; r < 10; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                benchmark::DoNotOptimize(stream_read_once(buffer, k.fn));
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                best = std::max(best, double(buffer.size() * 8) / s);
            }
            std::printf("streaming read, %s: %.1f GB/s (best of 10 passes)\n", k.name, best / 1e9);
            g_stream_bytes_per_second = std::max(g_stream_bytes_per_second, best);
        }
    }
    std::printf("threads: %d, best instruction set: %s, working set per benchmark: %zu MiB, streaming-read baseline (the best of those): %.1f GB/s\n",
                g_threads, std::string(qforge::isa_name(qforge::best_isa())).c_str(), working_set() >> 20,
                g_stream_bytes_per_second / 1e9);
    std::fflush(stdout);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
