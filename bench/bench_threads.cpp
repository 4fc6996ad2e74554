// Does a second thread pay off when the CPUs are shared? Each workload runs with 1 thread and
// with N (QFORGE_THREADS, default 2), once on a quiet machine and once while two busy
// processes (forked children spinning for the whole measurement) compete for the cores. The
// table at the end prints time(1 thread) / time(N threads) for each: above 1 means N threads
// helped, below 1 means the fork-joins cost more than the second thread gave.
//
// Workloads: stories260K perplexity (qforge::llama::evaluate, 2048 tokens, context 256, batch 64:
// what `qforge ppl` runs), GPTQ on a stories260K-sized layer (172 x 64: many tiny parallel
// loops, as `qforge eval` with GPTQ runs per layer), and, when the GGUF is present, SmolLM2
// perplexity on 256 tokens (its stored Q4_1 weights). "Quiet" is whatever else the machine runs.
#include <benchmark/benchmark.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <qforge/calibration/activation_stats.hpp>
#include <qforge/io/llama2c.hpp>
#include <qforge/models/llama/evaluate.hpp>
#include <qforge/sources/llama/gguf_loader.hpp>
#include <qforge/quantizers/registry.hpp>

#include "bench_models.hpp"

namespace {

int g_threads = 2;  // N
int g_busy = 2;     // competing processes in the loaded runs
std::map<std::string, double> g_ms;  // "workload/load/threads:k" -> ms per iteration

/// `count` child processes spinning until destroyed.
class BusyProcesses {
public:
    explicit BusyProcesses(int count) {
        for (int i = 0; i < count; ++i) {
            const pid_t pid = fork();
            if (pid == 0) {
                volatile unsigned long spin = 0;
                for (;;) spin = spin + 1;
            }
            if (pid > 0) pids_.push_back(pid);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let them get going
    }
    ~BusyProcesses() {
        for (const pid_t pid : pids_) kill(pid, SIGKILL);
        for (const pid_t pid : pids_) waitpid(pid, nullptr, 0);
    }
    BusyProcesses(const BusyProcesses&) = delete;
    BusyProcesses& operator=(const BusyProcesses&) = delete;

private:
    std::vector<pid_t> pids_;
};

std::vector<int> tokens(int n, int vocab) {
    std::vector<int> t(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) t[std::size_t(i)] = 1 + (i * 7919) % (vocab - 1);
    return t;
}

struct Perplexity {
    std::shared_ptr<const qforge::llama::Weights> weights;
    int tokens, context;
};

void perplexity(benchmark::State& state, const Perplexity* w, int threads, bool loaded) {
    const auto t = tokens(w->tokens, w->weights->config.vocab_size);
    qforge::llama::EvalOptions o;
    o.context = w->context;
    o.batch = 64;
    o.backend = qforge::Backend::cpu(qforge::best_isa(), threads);
    const BusyProcesses busy(loaded ? g_busy : 0);
    double ppl = 0;
    for (auto _ : state) ppl = qforge::llama::evaluate(*w->weights, nullptr, t, o).perplexity();
    state.counters["ppl"] = ppl;
}

/// GPTQ of a layer of stories260K's w2 shape (64 x 172) with a Hessian from 256 random tokens.
void gptq_small(benchmark::State& state, int threads, bool loaded) {
    const int rows = 64, cols = 172, n = 256;
    std::vector<float> w(std::size_t(rows) * cols), x(std::size_t(n) * cols);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(int(i * 2654435761u % 1000) - 500) * 1e-4f;
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 40503u % 997) - 498) * 1e-3f;
    qforge::ActivationStats stats(cols, true);
    stats.add(qforge::MatrixView<const float>(x.data(), n, cols), qforge::Backend::cpu(qforge::best_isa(), 1));
    const auto& h = stats.hessian();
    qforge::GptqOptions o;
    o.backend = qforge::Backend::cpu(qforge::best_isa(), threads);
    const auto spec = qforge::parse_scheme("gptq:w4g32a").spec;
    const BusyProcesses busy(loaded ? g_busy : 0);
    for (auto _ : state)
        benchmark::DoNotOptimize(qforge::gptq_quantize(qforge::MatrixView<const float>(w.data(), rows, cols), h, spec, o).q.codes.data());
}

class TimeReporter : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override {
        for (const auto& r : runs) {
            if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
            std::string name = r.benchmark_name();
            if (const auto suffix = name.find("/real_time"); suffix != std::string::npos) name.erase(suffix);
            g_ms[name] = r.GetAdjustedRealTime();
        }
        ConsoleReporter::ReportRuns(runs);
    }
};

template <class Fn>
void add_pair(const std::string& workload, Fn fn) {
    for (const bool loaded : {false, true})
        for (const int threads : {1, g_threads}) {
            const std::string name = workload + (loaded ? "/loaded" : "/quiet") + "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { fn(s, threads, loaded); })
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
        }
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (const char* t = std::getenv("QFORGE_THREADS"); t && std::atoi(t) > 1) g_threads = std::atoi(t);
    if (const char* b = std::getenv("QFORGE_BUSY"); b && *b) g_busy = std::atoi(b);

    std::vector<std::unique_ptr<Perplexity>> models;
    std::vector<std::string> workloads;
    if (const std::string stories = bench::stories260k_path(); !stories.empty()) {
        models.push_back(std::make_unique<Perplexity>(Perplexity{
            std::make_shared<qforge::llama::Weights>(qforge::llama::from_llama2c(qforge::io::Llama2cCheckpoint::load(stories))), 2048, 256}));
        const Perplexity* m = models.back().get();
        add_pair("stories260K/ppl", [m](benchmark::State& s, int th, bool l) { perplexity(s, m, th, l); });
        add_pair("stories260K/gptq-layer", gptq_small);
        workloads.insert(workloads.end(), {"stories260K/ppl", "stories260K/gptq-layer"});
    }
    std::unique_ptr<qforge::io::GgufFile> file;
    if (const std::string smol = bench::smollm2_path(); !smol.empty()) {
        file = std::make_unique<qforge::io::GgufFile>(qforge::io::GgufFile::open(smol));
        models.push_back(std::make_unique<Perplexity>(
            Perplexity{std::make_shared<qforge::llama::Weights>(qforge::llama::from_gguf(*file)), 256, 128}));
        const Perplexity* m = models.back().get();
        add_pair("SmolLM2/ppl", [m](benchmark::State& s, int th, bool l) { perplexity(s, m, th, l); });
        workloads.push_back("SmolLM2/ppl");
    }

    TimeReporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    const auto ms = [](const std::string& name) {
        const auto it = g_ms.find(name);
        return it == g_ms.end() ? 0.0 : it->second;
    };
    std::printf("\n%-24s %8s %12s %12s %14s\n", "workload", "load", "1 thread ms", "N threads ms",
                ("t(1)/t(" + std::to_string(g_threads) + ")").c_str());
    for (const auto& wl : workloads)
        for (const char* load : {"quiet", "loaded"}) {
            const double one = ms(wl + "/" + load + "/threads:1"), n = ms(wl + "/" + load + "/threads:" + std::to_string(g_threads));
            if (one <= 0 || n <= 0) continue;
            std::printf("%-24s %8s %12.2f %12.2f %13.2fx\n", wl.c_str(), load, one, n, one / n);
        }
    benchmark::Shutdown();
    return 0;
}
