// Whole-model quantization time: RTN, GPTQ, AWQ and AWQ+GPTQ at w4g128a on stories260K and
// SmolLM2-135M-Instruct (the Q4_1 GGUF in QFORGE_CACHE, default ~/.cache/qforge; skipped with a
// message when absent), calibrated on 2048 tokens in sequences of 512. Each calibrated method
// also runs as it did before the tuned BLAS and the row-sampled AWQ search ("own": qforge's own
// FP32 kernels, AWQ measuring every row), the baseline of the same run: the table prints each
// method's seconds, its ratio to that baseline, and seconds per decoder block.
// QFORGE_THREADS sets the thread count.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <qforge/io/llama2c.hpp>
#include <qforge/pipelines/llama/quantize_model.hpp>
#include <qforge/sources/llama/gguf_loader.hpp>

#include "bench_models.hpp"

namespace {

using qforge::llama::Weights;

int g_threads = 0;
std::map<std::string, std::map<std::string, double>> g_seconds;  // model -> method -> s

struct Model {
    std::string name;
    std::shared_ptr<Weights> weights;
};
std::vector<Model> g_models;

std::vector<int> calibration_tokens(int vocab) {
    std::vector<int> t(2048);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = 1 + int((i * 7919u) % std::size_t(vocab - 1));
    return t;
}

struct Method {
    std::string label, scheme;
    bool blas = true;      // the tuned BLAS under FP32 GEMM (when linked)
    int search_rows = 512; // AWQ's α search rows per layer (0: all)
};

void quantize(benchmark::State& state, const Model* m, Method method) {
    const auto scheme = qforge::parse_scheme(method.scheme);
    const auto tokens = calibration_tokens(m->weights->config.vocab_size);
    qforge::llama::CalibrationOptions cal;
    cal.sequence_length = std::min(512, m->weights->config.seq_len);
    cal.backend = qforge::Backend::cpu(qforge::best_isa(), g_threads, method.blas);
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        qforge::llama::ModelQuantizeOptions o;
        o.calibration = cal;
        o.settings.awq_search_rows = method.search_rows;
        const Weights q = qforge::llama::quantize_model(*m->weights, tokens, scheme, o);
        benchmark::DoNotOptimize(q.layers.data());
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    g_seconds[m->name][method.label] = seconds / double(state.iterations());
    state.counters["s/block"] = seconds / double(state.iterations()) / double(m->weights->layers.size());
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (const char* t = std::getenv("QFORGE_THREADS")) g_threads = std::atoi(t);
    if (const std::string stories = bench::stories260k_path(); !stories.empty())
        g_models.push_back({"stories260K", std::make_shared<Weights>(qforge::llama::from_llama2c(qforge::io::Llama2cCheckpoint::load(stories)))});
    if (const std::string smol = bench::smollm2_path(); !smol.empty()) {
        const auto file = qforge::io::GgufFile::open(smol);
        g_models.push_back({"SmolLM2", std::make_shared<Weights>(qforge::llama::dequantized_weights(qforge::llama::from_gguf(file)))});
    }
    const std::vector<Method> methods = {
        {"rtn:w4g128a", "rtn:w4g128a"},
        {"gptq:w4g128a/own", "gptq:w4g128a", false, 0},
        {"gptq:w4g128a", "gptq:w4g128a"},
        {"awq:w4g128a/own,all-rows", "awq:w4g128a", false, 0},
        {"awq:w4g128a/all-rows", "awq:w4g128a", true, 0},
        {"awq:w4g128a", "awq:w4g128a"},
        {"awq+gptq:w4g128a/own,all-rows", "awq+gptq:w4g128a", false, 0},
        {"awq+gptq:w4g128a", "awq+gptq:w4g128a"},
    };
    std::printf("FP32 GEMM: %s\n", qforge::blas::enabled() ? qforge::blas::name().c_str() : "qforge's own kernels");
    for (const auto& m : g_models)
        for (const auto& s : methods)
            benchmark::RegisterBenchmark((m.name + "/" + s.label).c_str(), quantize, &m, s)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    benchmark::RunSpecifiedBenchmarks();
    std::printf("\n%-40s %10s %12s %12s\n", "model/method", "seconds", "vs own", "s per block");
    for (const auto& m : g_models)
        for (const auto& s : methods) {
            const auto& per = g_seconds[m.name];
            const auto it = per.find(s.label);
            if (it == per.end()) continue;
            const std::string base_label = s.label.substr(0, s.label.find('/')) + (s.label.rfind("awq", 0) == 0 ? "/own,all-rows" : "/own");
            const auto base = per.find(base_label);
            char ratio[32] = "-";
            if (base != per.end()) std::snprintf(ratio, sizeof ratio, "%.2fx", base->second / it->second);
            std::printf("%-40s %10.2f %12s %12.3f\n", (m.name + "/" + s.label).c_str(), it->second, ratio,
                        it->second / double(m.weights->layers.size()));
        }
    benchmark::Shutdown();
    return 0;
}
