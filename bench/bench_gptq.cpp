// GPTQ speed on CPU: time to quantize a 4096x4096 and an 11008x4096 layer (w4g128a) from a given
// Hessian, with and without act-order; AWQ's scale and clip search on a 4096x4096 layer from the
// same statistics; and the Hessian accumulation (X^T X over 2048 tokens of
// 4096 channels) in GFLOP/s next to a plain matrix multiply of the same shape measured in the
// same run (the baseline: a straightforward triple loop, i-k-j order so the compiler vectorises
// the inner loop). QFORGE_THREADS sets the thread count (default: all).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <vector>

#include <qforge/calibration/activation_stats.hpp>
#include <qforge/quantizers/registry.hpp>
#include <qforge/quantizers/registry.hpp>

namespace {

int g_threads = 0;
double g_baseline_gflops = 0.0;

std::vector<float> gaussian(std::size_t n, unsigned seed, float sd) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

/// A Hessian with correlated channels, as calibration data gives: 2 X^T X / n with X = Z A + noise,
/// Z of rank 256.
const std::vector<float>& hessian_4096() {
    static const std::vector<float> h = [] {
        const int n = 2048, cols = 4096, rank = 256;
        const auto z = gaussian(std::size_t(n) * rank, 1, 1.0f), at = gaussian(std::size_t(cols) * rank, 2, 0.1f);
        std::vector<float> x(std::size_t(n) * cols);
        qforge::gemm_fp32(qforge::MatrixView<const float>(at.data(), cols, rank), qforge::MatrixView<const float>(z.data(), n, rank),
                          qforge::MatrixView<float>(x.data(), n, cols), qforge::best_isa(), g_threads);
        const auto noise = gaussian(x.size(), 3, 0.05f);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] += noise[i];
        qforge::ActivationStats s(cols, true);
        s.add(qforge::MatrixView<const float>(x.data(), n, cols), qforge::Backend::cpu(qforge::best_isa(), g_threads));
        return s.hessian();
    }();
    return h;
}

void quantize_layer(benchmark::State& state, int rows, bool act) {
    const int cols = 4096;
    const auto w = gaussian(std::size_t(rows) * cols, 4, 0.02f);
    const auto& h = hessian_4096();
    qforge::GptqOptions o;
    o.act_order = act;
    o.backend = qforge::Backend::cpu(qforge::best_isa(), g_threads);
    const auto spec = qforge::parse_scheme("gptq:w4g128a").spec;
    for (auto _ : state) benchmark::DoNotOptimize(qforge::gptq_quantize(qforge::MatrixView<const float>(w.data(), rows, cols), h, spec, o).q.codes.data());
}

/// AWQ on one layer from given statistics: the 20-point scale search, then the clip search.
void awq_layer(benchmark::State& state, int rows) {
    const int cols = 4096;
    const auto w = gaussian(std::size_t(rows) * cols, 7, 0.02f);
    const auto& h = hessian_4096();
    std::vector<float> mean_abs(cols);
    for (int c = 0; c < cols; ++c) mean_abs[std::size_t(c)] = std::sqrt(std::max(h[std::size_t(c) * cols + std::size_t(c)], 1e-12f) / 2.0f);
    qforge::AwqOptions o;
    o.backend = qforge::Backend::cpu(qforge::best_isa(), g_threads);
    const auto spec = qforge::parse_scheme("awq:w4g128a").spec;
    const qforge::MatrixView<const float> view(w.data(), std::size_t(rows), std::size_t(cols));
    for (auto _ : state) {
        const auto s = qforge::awq_search_scales({{view}}, mean_abs, h, spec, o);
        std::vector<float> scaled(w.size());
        for (std::size_t r = 0; r < std::size_t(rows); ++r)
            for (std::size_t c = 0; c < std::size_t(cols); ++c) scaled[r * cols + c] = w[r * cols + c] * s.scales[c];
        benchmark::DoNotOptimize(qforge::awq_clip_quantize(qforge::MatrixView<const float>(scaled.data(), std::size_t(rows), std::size_t(cols)), h, spec, o).codes.data());
    }
}

void hessian_accumulation(benchmark::State& state) {
    const int n = 2048, cols = 4096;
    const auto x = gaussian(std::size_t(n) * cols, 5, 1.0f);
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        qforge::ActivationStats s(cols, true);
        s.add(qforge::MatrixView<const float>(x.data(), n, cols), qforge::Backend::cpu(qforge::best_isa(), g_threads));
        benchmark::DoNotOptimize(&s);
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    const double gflops = 2.0 * n * double(cols) * cols * double(state.iterations()) / 1e9 / seconds;
    state.counters["GFLOP/s"] = gflops;
    state.counters["x_baseline"] = g_baseline_gflops > 0 ? gflops / g_baseline_gflops : 0.0;
}

/// The baseline: C = A^T A by a plain i-k-j triple loop (one thread), 512 tokens so it finishes.
void plain_matmul(benchmark::State& state) {
    const int n = 512, cols = 4096;
    const auto x = gaussian(std::size_t(n) * cols, 6, 1.0f);
    std::vector<float> c(std::size_t(cols) * cols);
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        std::fill(c.begin(), c.end(), 0.0f);
        for (int t = 0; t < n; ++t) {
            const float* xt = x.data() + std::size_t(t) * cols;
            for (int i = 0; i < cols; ++i) {
                const float a = xt[i];
                float* ci = c.data() + std::size_t(i) * cols;
                for (int j = 0; j < cols; ++j) ci[j] += a * xt[j];
            }
        }
        benchmark::DoNotOptimize(c.data());
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    g_baseline_gflops = 2.0 * n * double(cols) * cols * double(state.iterations()) / 1e9 / seconds;
    state.counters["GFLOP/s"] = g_baseline_gflops;
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (const char* t = std::getenv("QFORGE_THREADS")) g_threads = std::atoi(t);
    benchmark::RegisterBenchmark("gptq/4096x4096/w4g128a", quantize_layer, 4096, false)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    benchmark::RegisterBenchmark("gptq/4096x4096/w4g128a,act", quantize_layer, 4096, true)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    benchmark::RegisterBenchmark("gptq/11008x4096/w4g128a", quantize_layer, 11008, false)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    benchmark::RegisterBenchmark("awq/4096x4096/w4g128a", awq_layer, 4096)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    benchmark::RegisterBenchmark("hessian/plain_matmul_baseline/512x4096", plain_matmul)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    benchmark::RegisterBenchmark("hessian/qforge/2048x4096", hessian_accumulation)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(2);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
