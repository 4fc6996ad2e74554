// Prompt processing and decode speed of whole models, tokens per second, for FP32 weights and
// packed ones. Each packed variant also prints its ratio to the FP32 model of the same run (the
// baseline), so the numbers read as speedups on whatever machine runs them.
//
// Models: stories260K (llama2.c, ../shared/data) and SmolLM2-135M-Instruct (the Q4_1 GGUF in
// QFORGE_CACHE, default ~/.cache/qforge; skipped with a message when absent). Variants: FP32
// (SmolLM2's Q4_1 layers dequantized: Q4_1-ref), rtn:w4g128a packed, and for SmolLM2 the Q4_1
// blocks as stored. Prompt: 128 tokens in one batch from position 0. Decode: 64 tokens one at a
// time after a 64-token prompt. QFORGE_THREADS sets the thread count (default: all);
// QFORGE_BENCH_PROMPT and QFORGE_BENCH_DECODE change the two lengths (llama-bench's -p 512 and
// -n 128: bench/llamacpp_side_by_side.sh).
//
// Prompt rows also print x_sgemm: the forward's matrix-product FLOPs (every block linear, 2 per
// weight and token, attention's QK^T and PV over the causal prefix, the head on the last token) per second, over
// the same run's sgemm rate (OpenBLAS 4096^3 on its own threads, best of 3) — how close the FP32
// forward (the reference of `qforge eval`, calibration's block passes) runs to the tuned GEMM.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <qforge/io/llama2c.hpp>
#include <qforge/sources/llama/gguf_loader.hpp>
#include <qforge/models/llama/model.hpp>
#include <qforge/runtime/blas.hpp>

#include "bench_models.hpp"

namespace {

using qforge::llama::Weights;

int g_threads = 0;
int g_prompt = 128, g_decode = 64;
constexpr int decode_after = 64;  // tokens in the cache before the timed decode steps
std::map<std::string, double> g_rate;  // "model/variant/phase" -> tokens/s

struct Variant {
    std::string model, name;
    std::shared_ptr<Weights> weights;
};
std::vector<Variant> g_variants;

std::vector<int> tokens(int n, int vocab) {
    std::vector<int> t(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) t[std::size_t(i)] = 1 + (i * 7919) % (vocab - 1);
    return t;
}

void prompt(benchmark::State& state, const Variant* v) {
    const auto t = tokens(g_prompt, v->weights->config.vocab_size);
    qforge::llama::Session s(*v->weights, qforge::Backend::cpu(qforge::best_isa(), g_threads), g_prompt);
    for (auto _ : state) benchmark::DoNotOptimize(s.forward_batch(t, 0, false).data);
    state.counters["tokens/s"] = benchmark::Counter(double(state.iterations()) * double(g_prompt), benchmark::Counter::kIsRate);
}

void decode(benchmark::State& state, const Variant* v) {
    const int end = decode_after + g_decode;
    const auto t = tokens(end, v->weights->config.vocab_size);
    qforge::llama::Session s(*v->weights, qforge::Backend::cpu(qforge::best_isa(), g_threads), end);
    s.forward_batch(std::span(t).first(decode_after), 0, false);
    // one untimed step first, as llama-bench's warm-up run: the first single-token forward
    // builds the kept row panels (a one-time cost per model and backend, docs/kernels.md), which
    // would otherwise sit in the first repetition's only iteration
    benchmark::DoNotOptimize(s.forward(t[std::size_t(decode_after)], decode_after).data());
    for (auto _ : state)
        for (int pos = decode_after; pos < end; ++pos) benchmark::DoNotOptimize(s.forward(t[std::size_t(pos)], pos).data());
    state.counters["tokens/s"] = benchmark::Counter(double(state.iterations()) * double(g_decode), benchmark::Counter::kIsRate);
}

/// Records tokens/s of every run so main() can print ratios against the FP32 baseline.
class RatioReporter : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override {
        for (const auto& r : runs) {
            // with --benchmark_repetitions the table takes the median (not the mean, stddev or cv)
            if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
            if (const auto it = r.counters.find("tokens/s"); it != r.counters.end()) {
                std::string name = r.benchmark_name();
                if (const auto suffix = name.find("/real_time"); suffix != std::string::npos) name.erase(suffix);
                g_rate[name] = it->second.value;
            }
        }
        ConsoleReporter::ReportRuns(runs);
    }
};

void add(const std::string& model, const std::string& name, Weights w) {
    g_variants.push_back({model, name, std::make_shared<Weights>(std::move(w))});
}

/// The forward's product FLOPs per token of a `prompt`-token batch from position 0 as `prompt()`
/// runs it: 2 per weight of every block linear, attention's QK^T and PV (2 x dim multiply-adds
/// per earlier position and layer, (prompt + 1) / 2 positions on average), and the head for the
/// last token only (all_logits false), spread over the prompt.
double prompt_flops_per_token(const qforge::llama::Config& c, int prompt) {
    const double D = c.dim, H = c.hidden_dim, KV = c.kv_dim();
    const double linears = D * D * 2 + D * KV * 2 + 3 * D * H;
    const double attention = 2.0 * D * (double(prompt) + 1.0) / 2.0;
    return 2.0 * (double(c.n_layers) * (linears + attention) + D * double(c.vocab_size) / double(prompt));
}

/// OpenBLAS's sgemm rate, 4096^3 on its own threads, best of 3 (GFLOP/s); 0 without the BLAS.
double sgemm_gflops() {
    if (!qforge::blas::enabled()) return 0.0;
    const int n = 4096;
    std::vector<float> a(std::size_t(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
    double best = 0.0;
    for (int i = 0; i < 3; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        qforge::blas::sgemm_nt_native(g_threads > 0 ? g_threads : 0, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, 2.0 * double(n) * n * n / s / 1e9);
    }
    return best;
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (const char* t = std::getenv("QFORGE_THREADS")) g_threads = std::atoi(t);
    if (const char* p = std::getenv("QFORGE_BENCH_PROMPT")) g_prompt = std::atoi(p);
    if (const char* d = std::getenv("QFORGE_BENCH_DECODE")) g_decode = std::atoi(d);
    if (g_prompt < 1 || g_decode < 1) {
        std::fprintf(stderr, "bench_model: QFORGE_BENCH_PROMPT and QFORGE_BENCH_DECODE must be positive token counts\n");
        return 2;
    }
    const auto w4 = qforge::parse_scheme("rtn:w4g128a");
    const auto packed_of = [&](const Weights& fp32) {
        return qforge::llama::map_block_linears(fp32, [&](const qforge::llama::Linear& l) { return qforge::llama::quantize_linear(l, w4); });
    };

    if (const std::string stories = bench::stories260k_path(); !stories.empty()) {
        const auto w = qforge::llama::from_llama2c(qforge::io::Llama2cCheckpoint::load(stories));
        add("stories260K", "fp32", w);
        add("stories260K", "rtn:w4g128a", packed_of(w));
    }
    const std::string smol = bench::smollm2_path();
    std::unique_ptr<qforge::io::GgufFile> file;
    if (!smol.empty()) {
        file = std::make_unique<qforge::io::GgufFile>(qforge::io::GgufFile::open(smol));
        const auto stored = qforge::llama::from_gguf(*file);
        const auto ref = qforge::llama::dequantized_weights(stored);
        add("SmolLM2", "fp32", ref);
        add("SmolLM2", "rtn:w4g128a", packed_of(ref));
        add("SmolLM2", "q4_1", stored);
    }
    // Other GGUF files of SmolLM2, run as stored (llama-quantize's Q4_0 and F32 of the same
    // model, for bench/llamacpp_side_by_side.sh): QFORGE_BENCH_GGUF=path[:path...]; each is the
    // variant "file:<its name>".
    std::vector<std::unique_ptr<qforge::io::GgufFile>> extra;
    if (const char* list = std::getenv("QFORGE_BENCH_GGUF")) {
        std::string rest = list;
        while (!rest.empty()) {
            const auto colon = rest.find(':');
            const std::string path = rest.substr(0, colon);
            rest = colon == std::string::npos ? std::string() : rest.substr(colon + 1);
            if (path.empty()) continue;
            try {
                extra.push_back(std::make_unique<qforge::io::GgufFile>(qforge::io::GgufFile::open(path)));
                add("SmolLM2", "file:" + std::filesystem::path(path).filename().string(), qforge::llama::from_gguf(*extra.back()));
            } catch (const std::exception& e) {
                std::fprintf(stderr, "bench_model: QFORGE_BENCH_GGUF: %s\n", e.what());
                return 1;
            }
        }
    }
    for (const auto& v : g_variants) {
        benchmark::RegisterBenchmark((v.model + "/" + v.name + "/prompt").c_str(), prompt, &v)->Unit(benchmark::kMillisecond)->UseRealTime();
        benchmark::RegisterBenchmark((v.model + "/" + v.name + "/decode").c_str(), decode, &v)->Unit(benchmark::kMillisecond)->UseRealTime();
    }
    RatioReporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    const double sgemm = sgemm_gflops();
    if (sgemm > 0) std::printf("\nsgemm 4096^3 on OpenBLAS's threads, best of 3: %.1f GFLOP/s\n", sgemm);
    std::printf("\n%-34s %12s %12s %10s %8s\n", "model/variant/phase", "tokens/s", "vs fp32", "GFLOP/s", "x_sgemm");
    for (const auto& [name, rate] : g_rate) {
        const auto first = name.find('/'), last = name.rfind('/');
        const std::string base = name.substr(0, first) + "/fp32" + name.substr(last);
        const auto it = g_rate.find(base);
        const bool prompt_row = name.substr(last) == "/prompt";
        const auto v = std::find_if(g_variants.begin(), g_variants.end(),
                                    [&](const Variant& x) { return x.model + "/" + x.name + "/prompt" == name; });
        const double gflops = prompt_row && v != g_variants.end() ? prompt_flops_per_token(v->weights->config, g_prompt) * rate / 1e9 : 0.0;
        std::printf("%-34s %12.1f %12s", name.c_str(), rate, it == g_rate.end() ? "-" : (std::to_string(rate / it->second).substr(0, 5) + "x").c_str());
        if (gflops > 0) std::printf(" %10.1f %8.3f\n", gflops, sgemm > 0 ? gflops / sgemm : 0.0);
        else std::printf(" %10s %8s\n", "-", "-");
    }
    benchmark::Shutdown();
    return 0;
}
