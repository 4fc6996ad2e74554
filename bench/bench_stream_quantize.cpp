// Calibrated quantization in bounded memory (issue #14): GPTQ (w4g128a) of a synthetic
// 7B-shaped Llama (dim 4096, FFN 11008, 32 heads, vocab 32000, random F16 weights in a Hugging
// Face safetensors file the benchmark writes first) into a qforge container, through
// QuantizingSource, on 256 calibration tokens. Each depth (default 4, 8 and 32 blocks;
// QFORGE_STREAM_LAYERS="4,8" to choose) runs in a child process: its peak RSS (wait4's
// ru_maxrss) and wall time are printed, with seconds per block against the shallowest run of
// the same invocation (the baseline: 1.00 means time linear in depth).
//
// The file (about 13 GB for 32 blocks) goes to QFORGE_BENCH_DIR (default: the temp directory)
// and is removed at the end. QFORGE_THREADS sets the thread count.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <qforge/container/llama/container.hpp>
#include <qforge/core/half.hpp>
#include <qforge/io/safetensors.hpp>
#include <qforge/pipelines/llama/quantizing_source.hpp>
#include <qforge/sources/llama/hf_source.hpp>

namespace {

namespace fs = std::filesystem;

constexpr int dim = 4096, ffn = 11008, heads = 32, vocab = 32000;
int g_threads = 2;
fs::path g_dir;

struct Result {
    double seconds = 0, peak_gb = 0;
};
std::map<int, Result> g_results;

/// model.safetensors with `layers` blocks of random F16 weights (N(0, 0.02)-like: uniform of the
/// same variance), norms 1, embedding random; tied head.
void write_model(const fs::path& file, int layers) {
    qforge::io::SafetensorsWriter w;
    std::vector<std::pair<std::string, std::pair<int, int>>> tensors;  // name, (rows, cols); cols 0: vector
    tensors.push_back({"model.embed_tokens.weight", {vocab, dim}});
    for (int l = 0; l < layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        tensors.push_back({p + "input_layernorm.weight", {dim, 0}});
        tensors.push_back({p + "post_attention_layernorm.weight", {dim, 0}});
        for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}) tensors.push_back({p + n + ".weight", {dim, dim}});
        tensors.push_back({p + "mlp.gate_proj.weight", {ffn, dim}});
        tensors.push_back({p + "mlp.up_proj.weight", {ffn, dim}});
        tensors.push_back({p + "mlp.down_proj.weight", {dim, ffn}});
    }
    tensors.push_back({"model.norm.weight", {dim, 0}});
    for (const auto& [name, shape] : tensors)
        w.add(name, "F16", shape.second ? std::vector<std::uint64_t>{std::uint64_t(shape.first), std::uint64_t(shape.second)}
                                        : std::vector<std::uint64_t>{std::uint64_t(shape.first)});
    std::uint64_t state = 0x9E3779B97F4A7C15ull;
    // a table of 4096 halves of uniform(-a, a), a = 0.02·√3, indexed by a xorshift: fast enough to
    // write 13 GB, random enough for GPTQ (every row different)
    std::vector<std::uint16_t> table(4096);
    for (std::size_t i = 0; i < table.size(); ++i) table[i] = qforge::float_to_half(0.0346f * (2.0f * float(i) / 4095.0f - 1.0f));
    const std::uint16_t one = qforge::float_to_half(1.0f);
    w.write(file.string(), [&](std::size_t i, std::span<std::uint8_t> out) {
        auto* h = reinterpret_cast<std::uint16_t*>(out.data());
        const std::size_t n = out.size() / 2;
        if (tensors[i].second.second == 0) {
            std::fill(h, h + n, one);
            return;
        }
        for (std::size_t k = 0; k < n; ++k) {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            h[k] = table[state & 4095];
        }
    });
}

void write_config(const fs::path& dir, int layers) {
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << "{\"model_type\": \"llama\", \"hidden_size\": " << dim << ", \"intermediate_size\": " << ffn
                                       << ", \"num_hidden_layers\": " << layers << ", \"num_attention_heads\": " << heads
                                       << ", \"num_key_value_heads\": " << heads << ", \"vocab_size\": " << vocab
                                       << ", \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true}\n";
}

void quantize(benchmark::State& state, int layers, fs::path model_file) {
    const fs::path dir = g_dir / ("layers-" + std::to_string(layers));
    write_config(dir, layers);
    fs::remove(dir / "model.safetensors");
    fs::create_symlink(model_file, dir / "model.safetensors");  // the 32-block file: the source reads the blocks config.json names
    const fs::path out = g_dir / ("out-" + std::to_string(layers) + ".safetensors");
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        const pid_t pid = fork();
        if (pid == 0) {
            int code = 0;
            try {
                const qforge::llama::HfSource src(dir.string());
                std::vector<int> tokens(256);
                for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = int((i * 7919u + 13u) % std::size_t(vocab));
                qforge::llama::ModelQuantizeOptions o;
                o.calibration.sequence_length = 256;
                o.calibration.backend = qforge::Backend::best_cpu(g_threads);
                const qforge::llama::QuantizingSource q(src, tokens, qforge::parse_scheme("gptq:w4g128a"), o);
                qforge::llama::ContainerOptions co;
                co.backend = o.calibration.backend;
                qforge::llama::write_container(q, out.string(), co);
            } catch (const std::exception& e) {
                std::fprintf(stderr, "%s\n", e.what());
                code = 1;
            }
            _exit(code);
        }
        int status = 0;
        rusage usage{};
        if (wait4(pid, &status, 0, &usage) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            state.SkipWithError("the quantizing child failed");
            return;
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        state.SetIterationTime(s);
        g_results[layers] = {s, double(usage.ru_maxrss) / (1024.0 * 1024.0)};
    }
    fs::remove(out);
    state.counters["peak_RSS_GB"] = g_results[layers].peak_gb;
    state.counters["s_per_block"] = g_results[layers].seconds / layers;
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (const char* t = std::getenv("QFORGE_THREADS")) g_threads = std::atoi(t);
    std::vector<int> depths = {4, 8, 32};
    if (const char* l = std::getenv("QFORGE_STREAM_LAYERS")) {
        depths.clear();
        std::stringstream ss(l);
        for (std::string item; std::getline(ss, item, ',');) depths.push_back(std::atoi(item.c_str()));
    }
    int deepest = 0;
    for (const int d : depths) deepest = std::max(deepest, d);
    if (deepest < 1) {
        std::fprintf(stderr, "QFORGE_STREAM_LAYERS: no depth\n");
        return 2;
    }
    const char* base = std::getenv("QFORGE_BENCH_DIR");
    g_dir = fs::path(base ? base : fs::temp_directory_path().string()) / ("qforge-stream-" + std::to_string(::getpid()));
    fs::create_directories(g_dir);
    const fs::path model_file = g_dir / "model.safetensors";
    const auto t0 = std::chrono::steady_clock::now();
    write_model(model_file, deepest);
    std::printf("synthetic 7B-shaped model, %d blocks, F16: %.2f GB written in %.1f s (%s)\n", deepest, double(fs::file_size(model_file)) / 1e9,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), model_file.c_str());
    for (const int d : depths)
        benchmark::RegisterBenchmark(("gptq:w4g128a/7B-shaped/blocks:" + std::to_string(d)).c_str(), quantize, d, model_file)
            ->Unit(benchmark::kSecond)
            ->UseManualTime()
            ->Iterations(1);
    benchmark::RunSpecifiedBenchmarks();
    if (!g_results.empty()) {
        const auto& [first_depth, first] = *g_results.begin();
        std::printf("\n%8s %10s %12s %18s %14s\n", "blocks", "seconds", "s per block", "vs shallowest", "peak RSS GB");
        for (const auto& [d, r] : g_results)
            std::printf("%8d %10.1f %12.2f %17.2fx %14.2f\n", d, r.seconds, r.seconds / d, (r.seconds / d) / (first.seconds / first_depth),
                        r.peak_gb);
    }
    fs::remove_all(g_dir);
    benchmark::Shutdown();
    return 0;
}
