// Packed GEMM (prompt processing: a block of activations times packed weights, 8-bit
// activations on the integer kernels) next to the FP32 GEMM of the same shape on the same
// backend (the tuned BLAS where it is loaded), measured in the same run. The goal of issue #14:
// packed >= FP32 from 8 activations on.
//
// Shapes: SmolLM2-135M's MLP (1536 x 576 and 576 x 1536) and a 7B-sized 4096 x 4096; weights
// stay in cache as they do while a prompt runs through one layer. Counters: GMAC/s (multiply-adds
// per second), vs_fp32 = the packed rate / the FP32 rate of the same shape and activation count.
// QFORGE_THREADS sets the thread count (default: every hardware thread). The `,rows` variants
// force the row kernels (GemmPath::rows) where `linear` takes the row panels from 8 activations
// on an instruction set with a panel kernel.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <qforge/qforge.hpp>
#include <qforge/runtime/backend.hpp>
#include <qforge/runtime/dispatch.hpp>

namespace {

int g_threads = 0;
std::map<std::tuple<long, long, long>, double> g_fp32_rate;  // (rows, cols, n) -> MAC/s

std::vector<float> normal(std::size_t n, unsigned seed, float sigma) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, sigma);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

qforge::Backend backend() { return qforge::Backend::cpu(qforge::best_isa(), g_threads); }

/// Times Backend::linear on `lw` with n random activations; reports GMAC/s.
void run_linear(benchmark::State& state, const qforge::LinearWeights& lw, long rows, long cols, long n) {
    const auto x = normal(std::size_t(n * cols), 2, 1.0f);
    std::vector<float> y(std::size_t(n * rows));
    const auto b = backend();
    for (auto _ : state) {
        b.linear(lw, qforge::MatrixView<const float>(x.data(), std::size_t(n), std::size_t(cols)),
                 qforge::MatrixView<float>(y.data(), std::size_t(n), std::size_t(rows)));
        benchmark::DoNotOptimize(y.data());
    }
    const double macs = double(state.iterations()) * double(rows * cols * n);
    state.counters["GMAC/s"] = benchmark::Counter(macs / 1e9, benchmark::Counter::kIsRate);
    state.SetLabel(b.name());
}

void BM_GemmFp32(benchmark::State& state) {
    const long rows = state.range(0), cols = state.range(1);
    run_linear(state, qforge::Fp32Matrix{int(rows), int(cols), normal(std::size_t(rows * cols), 1, 0.02f)}, rows, cols, state.range(2));
}

template <class F>
void BM_GemmPacked(benchmark::State& state) {
    const long rows = state.range(0), cols = state.range(1), group = state.range(3);
    const auto w = normal(std::size_t(rows * cols), 1, 0.02f);
    qforge::QuantSpec spec;
    if constexpr (requires { typename F::block_type; }) spec = typename F::Packed{}.spec;
    else spec = {F::bits, int(group), qforge::ZeroPoint::integer};
    const auto q = qforge::RtnQuantizer(spec).quantize(qforge::MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols)));
    run_linear(state, F::pack(q), rows, cols, state.range(2));
}

/// The same product forced onto the row kernels (GemmPath::rows: each weight decoded once per
/// few activations), the path `linear` took before the row panels: before and after in one run.
template <class F>
void BM_GemmPackedRows(benchmark::State& state) {
    const long rows = state.range(0), cols = state.range(1), group = state.range(3), n = state.range(2);
    const auto w = normal(std::size_t(rows * cols), 1, 0.02f);
    qforge::QuantSpec spec;
    if constexpr (requires { typename F::block_type; }) spec = typename F::Packed{}.spec;
    else spec = {F::bits, int(group), qforge::ZeroPoint::integer};
    const auto p = F::pack(qforge::RtnQuantizer(spec).quantize(qforge::MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols))));
    const auto x = normal(std::size_t(n * cols), 2, 1.0f);
    std::vector<float> y(std::size_t(n * rows));
    const qforge::Isa isa = qforge::best_isa();
    for (auto _ : state) {
        qforge::gemm<F>(p, qforge::MatrixView<const float>(x.data(), std::size_t(n), std::size_t(cols)),
                        qforge::MatrixView<float>(y.data(), std::size_t(n), std::size_t(rows)), isa, g_threads, qforge::GemmPath::rows);
        benchmark::DoNotOptimize(y.data());
    }
    state.counters["GMAC/s"] = benchmark::Counter(double(state.iterations()) * double(rows * cols * n) / 1e9, benchmark::Counter::kIsRate);
    state.SetLabel(std::string(qforge::isa_name(isa)) + " rows");
}

/// Records every rate so main() can print each packed one against FP32 of the same shape.
class RatioReporter : public benchmark::ConsoleReporter {
public:
    std::vector<std::tuple<std::string, long, long, long, double>> packed;
    void ReportRuns(const std::vector<Run>& runs) override {
        for (const auto& r : runs) {
            const auto it = r.counters.find("GMAC/s");
            if (it == r.counters.end() || r.error_occurred) continue;
            const std::string name = r.benchmark_name();
            long rows = 0, cols = 0, n = 0;
            const auto slash = name.find('/');
            std::sscanf(name.c_str() + slash + 1, "%ld/%ld/%ld", &rows, &cols, &n);
            if (name.rfind("BM_GemmFp32", 0) == 0) g_fp32_rate[{rows, cols, n}] = it->second.value;
            else packed.emplace_back(name.substr(0, slash), rows, cols, n, it->second.value);
        }
        ConsoleReporter::ReportRuns(runs);
    }
};

void shapes(benchmark::internal::Benchmark* b, long group) {
    for (const auto& [rows, cols] : std::vector<std::pair<long, long>>{{1536, 576}, {576, 1536}, {4096, 4096}})
        for (long n : {8L, 16L, 32L, 64L, 128L}) b->Args({rows, cols, n, group});
    b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_GemmFp32)->Apply([](benchmark::internal::Benchmark* b) { shapes(b, 0); });
BENCHMARK(BM_GemmPacked<qforge::Dense<4>>)->Name("BM_GemmPacked<Dense<4>,g128>")->Apply([](benchmark::internal::Benchmark* b) { shapes(b, 128); });
BENCHMARK(BM_GemmPacked<qforge::Q4_0>)->Name("BM_GemmPacked<Q4_0>")->Apply([](benchmark::internal::Benchmark* b) { shapes(b, 32); });
BENCHMARK(BM_GemmPacked<qforge::Q4_1>)->Name("BM_GemmPacked<Q4_1>")->Apply([](benchmark::internal::Benchmark* b) { shapes(b, 32); });
BENCHMARK(BM_GemmPackedRows<qforge::Dense<4>>)->Name("BM_GemmPacked<Dense<4>,g128,rows>")->Apply([](benchmark::internal::Benchmark* b) { shapes(b, 128); });
BENCHMARK(BM_GemmPackedRows<qforge::Q4_0>)->Name("BM_GemmPacked<Q4_0,rows>")->Apply([](benchmark::internal::Benchmark* b) { shapes(b, 32); });
BENCHMARK(BM_GemmPackedRows<qforge::Q4_1>)->Name("BM_GemmPacked<Q4_1,rows>")->Apply([](benchmark::internal::Benchmark* b) { shapes(b, 32); });

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (const char* t = std::getenv("QFORGE_THREADS")) g_threads = std::atoi(t);
    RatioReporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    std::printf("\n%-30s %6s %6s %5s %10s %10s %8s\n", "packed", "rows", "cols", "n", "GMAC/s", "fp32", "vs_fp32");
    for (const auto& [name, rows, cols, n, rate] : reporter.packed) {
        const auto it = g_fp32_rate.find({rows, cols, n});
        const double base = it == g_fp32_rate.end() ? 0.0 : it->second;
        std::printf("%-30s %6ld %6ld %5ld %10.2f %10.2f %8s\n", name.c_str(), rows, cols, n, rate, base,
                    base > 0 ? (std::to_string(rate / base).substr(0, 5) + "x").c_str() : "-");
    }
    benchmark::Shutdown();
    return 0;
}
