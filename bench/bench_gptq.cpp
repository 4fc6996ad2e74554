// The FP32-bound parts of calibrated quantization on CPU, each printed as a fraction of the same
// run's sgemm rate (the tuned BLAS's C = A B^T, 4096 x 4096 x 4096; qforge's own FP32 GEMM when no
// BLAS is linked) and, where it applies, next to qforge's own kernels (QFORGE_BLAS-free path):
// the Hessian accumulation X^T X over 2048 tokens of 4096 channels (in one batch, and in four of
// 512 as calibration adds its windows; SmolLM2's widths too), GPTQ on a 4096x4096 and an
// 11008x4096 layer (w4g128a, with and without act-order) against its FLOP count, and AWQ's scale
// + clip search on a 4096x4096 layer (the α search on a 512-row sample and on every row), and
// GPTQ-PQ and plain PQ on a 4096x4096 layer as multiples of the same run's scalar GPTQ time.
// QFORGE_THREADS sets the thread count (default: all).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <cstdlib>
#include <random>
#include <vector>

#include <qforge/calibration/activation_stats.hpp>
#include <qforge/quantizers/registry.hpp>

namespace {

int g_threads = 0;
double g_sgemm_gflops = 0.0;  // the baseline: this run's sgemm rate
double g_gptq_seconds = 0.0;  // this run's scalar GPTQ on 4096 x 4096 (w4g128a, the default FP32 path): GPTQ-PQ's baseline

qforge::Backend backend(bool blas) { return qforge::Backend::cpu(qforge::best_isa(), g_threads, blas); }

/// Seconds per iteration into GFLOP/s and the fraction of the sgemm rate.
void report(benchmark::State& state, double flops, double seconds) {
    const double gflops = flops * double(state.iterations()) / 1e9 / seconds;
    state.counters["GFLOP/s"] = gflops;
    state.counters["x_sgemm"] = g_sgemm_gflops > 0 ? gflops / g_sgemm_gflops : 0.0;
}
double since(std::chrono::steady_clock::time_point t0) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }

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

/// GPTQ's FLOPs on a rows x cols layer: the Cholesky factorisation and the triangular inverse
/// (cols^3 / 3 multiply-adds each) and the error feedback (cols^2 / 2 per row).
double gptq_flops(int rows, int cols) {
    const double c = cols;
    return 2.0 * (2.0 * c * c * c / 3.0 + double(rows) * c * c / 2.0);
}

void quantize_layer(benchmark::State& state, int rows, bool act, bool blas) {
    const int cols = 4096;
    const auto w = gaussian(std::size_t(rows) * cols, 4, 0.02f);
    const auto& h = hessian_4096();
    qforge::GptqOptions o;
    o.act_order = act;
    o.backend = backend(blas);
    const auto spec = qforge::parse_scheme("gptq:w4g128a").spec;
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        benchmark::DoNotOptimize(qforge::gptq_quantize(qforge::MatrixView<const float>(w.data(), rows, cols), h, spec, o).q.codes.data());
        seconds += since(t0);
    }
    report(state, gptq_flops(rows, cols), seconds);
    if (rows == 4096 && !act && blas == qforge::blas::enabled()) g_gptq_seconds = seconds / double(state.iterations());
    // the time the FLOPs take at the sgemm rate: the target is within 2x of it
    state.counters["x_flop_bound"] = g_sgemm_gflops > 0 ? seconds / double(state.iterations()) / (gptq_flops(rows, cols) / 1e9 / g_sgemm_gflops) : 0.0;
}

/// GPTQ-PQ (or plain PQ without feedback) on a 4096 x 4096 layer, next to scalar GPTQ's time
/// in the same run (x_gptq: GPTQ-PQ's seconds over GPTQ's).
void gptq_pq_layer(benchmark::State& state, qforge::PqSpec spec, bool feedback) {
    const int rows = 4096, cols = 4096;
    const auto w = gaussian(std::size_t(rows) * cols, 4, 0.02f);
    const auto& h = hessian_4096();
    qforge::GptqPqOptions o;
    o.error_feedback = feedback;
    o.backend = backend(qforge::blas::enabled());
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        benchmark::DoNotOptimize(qforge::gptq_pq_quantize(qforge::MatrixView<const float>(w.data(), rows, cols), h, spec, o).q.codes.data());
        seconds += since(t0);
    }
    state.counters["x_gptq"] = g_gptq_seconds > 0 ? seconds / double(state.iterations()) / g_gptq_seconds : 0.0;
}

/// AWQ on one layer from given statistics: the 20-point scale search, then the clip search.
void awq_layer(benchmark::State& state, int rows, int search_rows) {
    const int cols = 4096;
    const auto w = gaussian(std::size_t(rows) * cols, 7, 0.02f);
    const auto& h = hessian_4096();
    std::vector<float> mean_abs(cols);
    for (int c = 0; c < cols; ++c) mean_abs[std::size_t(c)] = std::sqrt(std::max(h[std::size_t(c) * cols + std::size_t(c)], 1e-12f) / 2.0f);
    qforge::AwqOptions o;
    o.backend = backend(true);
    o.search_rows = search_rows;
    const auto spec = qforge::parse_scheme("awq:w4g128a").spec;
    const qforge::MatrixView<const float> view(w.data(), std::size_t(rows), std::size_t(cols));
    for (auto _ : state) {
        const auto s = qforge::awq_search_scales({{view}}, mean_abs, h, spec, o);
        std::vector<float> scaled(w.size());
        for (std::size_t r = 0; r < std::size_t(rows); ++r)
            for (std::size_t c = 0; c < std::size_t(cols); ++c) scaled[r * cols + c] = w[r * cols + c] * s.scales[c];
        benchmark::DoNotOptimize(qforge::awq_clip_quantize(qforge::MatrixView<const float>(scaled.data(), std::size_t(rows), std::size_t(cols)), h, spec, o).codes.data());
        state.counters["alpha"] = s.alpha;
    }
}

/// n rows of X into a fresh accumulator, in `batches` equal batches (calibration adds one window
/// of tokens at a time: the first batch writes, later ones add).
void hessian_accumulation(benchmark::State& state, bool blas, int n, int cols, int batches) {
    const auto x = gaussian(std::size_t(n) * cols, 5, 1.0f);
    double seconds = 0, best = 1e300;
    const int rows = n / batches;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        qforge::ActivationStats s(cols, true);
        for (int b = 0; b < batches; ++b)
            s.add(qforge::MatrixView<const float>(x.data() + std::size_t(b) * rows * cols, rows, cols), backend(blas));
        benchmark::DoNotOptimize(&s);
        const double t = since(t0);
        seconds += t;
        best = std::min(best, t);
    }
    const double flops = double(n) * double(cols) * double(cols + 1);  // the symmetric product's own FLOPs
    report(state, flops, seconds);
    // the best iteration against the baseline's best: the same statistic on both sides
    if (g_sgemm_gflops > 0) state.counters["best_x_sgemm"] = flops / 1e9 / best / g_sgemm_gflops;
}

/// C = A B^T, 4096^3: `native` on OpenBLAS's own threads (the baseline every x_sgemm divides
/// by), else through the backend (the BLAS's tiles on qforge's pool, or qforge's own kernels).
void sgemm(benchmark::State& state, bool blas, bool native) {
    const int n = 4096;
    const auto a = gaussian(std::size_t(n) * n, 6, 1.0f), b = gaussian(std::size_t(n) * n, 8, 1.0f);
    std::vector<float> c(std::size_t(n) * n);
    const auto be = backend(blas);
    double seconds = 0, best = 1e300;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        if (native)
            qforge::blas::sgemm_nt_native(g_threads, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
        else
            be.gemm_fp32(qforge::MatrixView<const float>(b.data(), n, n), qforge::MatrixView<const float>(a.data(), n, n), qforge::MatrixView<float>(c.data(), n, n));
        benchmark::DoNotOptimize(c.data());
        const double s = since(t0);
        seconds += s;
        best = std::min(best, s);
    }
    // the best iteration's rate: on this VM one run of the baseline varied by up to 30%, and a slow
    // baseline would flatter every ratio
    const double gflops = 2.0 * n * double(n) * n / 1e9 / best;
    state.counters["best_GFLOP/s"] = gflops;
    if (native || !qforge::blas::enabled()) g_sgemm_gflops = gflops;  // the tuned library's own rate, else qforge's
    report(state, 2.0 * n * double(n) * n, seconds);
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (const char* t = std::getenv("QFORGE_THREADS")) g_threads = std::atoi(t);
    const bool blas = qforge::blas::enabled();
    std::printf("FP32 GEMM: %s\n", blas ? qforge::blas::name().c_str() : "qforge's own kernels (no BLAS linked, or QFORGE_BLAS=off)");
    const auto add = [](const std::string& name, auto fn, auto... args) {
        return benchmark::RegisterBenchmark(name.c_str(), fn, args...)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    };
    // the baseline first: every later line's x_sgemm divides by it
    if (blas) add("sgemm/4096^3/openblas_threads", sgemm, true, true)->Iterations(3);
    if (blas) add("sgemm/4096^3/blas", sgemm, true, false);
    add("sgemm/4096^3/qforge_own", sgemm, false, false);
    for (const bool b : blas ? std::vector<bool>{true, false} : std::vector<bool>{false}) {
        const std::string tag = b ? "/blas" : "/qforge_own";
        add("hessian/2048x4096" + tag, hessian_accumulation, b, 2048, 4096, 1)->Iterations(3);
        add("hessian/4x512x4096" + tag, hessian_accumulation, b, 2048, 4096, 4)->Iterations(3);
        // SmolLM2's sites, one 512-token calibration sequence at a time (as LayerwiseCalibration adds them)
        add("hessian/512x576" + tag, hessian_accumulation, b, 512, 576, 1)->Iterations(50);
        add("hessian/512x1536" + tag, hessian_accumulation, b, 512, 1536, 1)->Iterations(20);
        add("hessian/2048x576" + tag, hessian_accumulation, b, 2048, 576, 1)->Iterations(20);
        add("hessian/2048x1536" + tag, hessian_accumulation, b, 2048, 1536, 1)->Iterations(10);
        add("gptq/4096x4096/w4g128a" + tag, quantize_layer, 4096, false, b);
        add("gptq/4096x4096/w4g128a,act" + tag, quantize_layer, 4096, true, b);
        if (b == blas) add("gptq/11008x4096/w4g128a" + tag, quantize_layer, 11008, false, b);
    }
    add("gptq_pq/4096x4096/pq2n64g1024", gptq_pq_layer, qforge::PqSpec{2, 64, 1024, 16}, true);
    add("gptq_pq/4096x4096/pq2n64g1024c8", gptq_pq_layer, qforge::PqSpec{2, 64, 1024, 8}, true);
    add("plain_pq/4096x4096/pq2n64g1024", gptq_pq_layer, qforge::PqSpec{2, 64, 1024, 16}, false);
    add("awq/4096x4096/w4g128a/search_rows:512", awq_layer, 4096, 512);
    add("awq/4096x4096/w4g128a/search_rows:all", awq_layer, 4096, 0);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
