// Whole-model quantization time: RTN (the baseline), GPTQ, AWQ and AWQ+GPTQ at w4g128a on
// stories260K and SmolLM2-135M-Instruct (the Q4_1 GGUF in QFORGE_CACHE, default ~/.cache/qforge;
// skipped with a message when absent), calibrated on 2048 tokens in sequences of 512. Prints
// each method's seconds, its ratio to RTN of the same model in the same run, and seconds per
// decoder block (AWQ's search time per block). QFORGE_THREADS sets the thread count.
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

void quantize(benchmark::State& state, const Model* m, std::string scheme_text) {
    const auto scheme = qforge::parse_scheme(scheme_text);
    const auto tokens = calibration_tokens(m->weights->config.vocab_size);
    qforge::llama::CalibrationOptions cal;
    cal.sequence_length = std::min(512, m->weights->config.seq_len);
    cal.backend = qforge::Backend::cpu(qforge::best_isa(), g_threads);
    double seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        qforge::llama::ModelQuantizeOptions o;
        o.calibration = cal;
        const Weights q = qforge::llama::quantize_model(*m->weights, tokens, scheme, o);
        benchmark::DoNotOptimize(q.layers.data());
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    g_seconds[m->name][scheme_text] = seconds / double(state.iterations());
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
    const std::vector<std::string> methods = {"rtn:w4g128a", "gptq:w4g128a", "awq:w4g128a", "awq+gptq:w4g128a"};
    for (const auto& m : g_models)
        for (const auto& s : methods)
            benchmark::RegisterBenchmark((m.name + "/" + s).c_str(), quantize, &m, s)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
    benchmark::RunSpecifiedBenchmarks();
    std::printf("\n%-30s %10s %10s %12s\n", "model/method", "seconds", "vs rtn", "s per block");
    for (const auto& m : g_models)
        for (const auto& s : methods) {
            const auto& per = g_seconds[m.name];
            const auto it = per.find(s), base = per.find(methods.front());
            if (it == per.end()) continue;
            std::printf("%-30s %10.2f %9.1fx %12.3f\n", (m.name + "/" + s).c_str(), it->second,
                        base == per.end() ? 0.0 : it->second / base->second, it->second / double(m.weights->layers.size()));
        }
    benchmark::Shutdown();
    return 0;
}
