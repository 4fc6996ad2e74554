// Byte-level BPE encoding time of one long pre-token: N bytes of "a", which the pre-tokenizer
// leaves whole, so the merge loop alone decides how the time grows with N. Counters: ns/byte
// (flat when encoding is linear) and, where the baseline ran in the same process, speedup over it.
//
// Baseline ("rescan"): the merge loop the encoder had before it kept a queue of pairs, rescanning
// every adjacent pair after each merge (quadratic: about 4x the time per doubling of N). It runs
// up to QFORGE_BENCH_RESCAN_MAX bytes (default 8192; 262144 takes about half an hour), on the
// piece alone, without the pre-tokenizer's linear pass, which only flatters it.
//
// Tokenizers: a small synthetic vocabulary (merges building runs of "a" up to 64 long), always;
// and SmolLM2-135M-Instruct's, from the GGUF that QFORGE_SMOLLM2 names, else the one in
// QFORGE_CACHE (default ~/.cache/qforge), skipped with a message when absent.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <qforge/io/bpe_tokenizer.hpp>

#include "bench_models.hpp"

namespace {

const std::vector<long> g_sizes = {4096, 8192, 16384, 65536, 262144};

/// The old merge loop, kept verbatim but for the byte spelling: "a" is "a" in GPT-2's alphabet.
class Rescan {
public:
    Rescan(const std::vector<std::string>& vocab, const std::vector<std::string>& merges) {
        for (std::size_t i = 0; i < vocab.size(); ++i) ids_.emplace(vocab[i], int(i));
        for (std::size_t i = 0; i < merges.size(); ++i) ranks_.emplace(merges[i], int(i));
    }
    std::vector<int> encode(const std::string& piece) const {
        std::vector<std::string> symbols;
        for (const char c : piece) symbols.emplace_back(1, c);
        for (;;) {  // merge the lowest-ranked adjacent pair, leftmost first
            int best = INT_MAX;
            std::size_t best_at = 0;
            for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
                const auto it = ranks_.find(symbols[i] + " " + symbols[i + 1]);
                if (it != ranks_.end() && it->second < best) {
                    best = it->second;
                    best_at = i;
                }
            }
            if (best == INT_MAX) break;
            symbols[best_at] += symbols[best_at + 1];
            symbols.erase(symbols.begin() + std::ptrdiff_t(best_at) + 1);
        }
        std::vector<int> out;
        for (const auto& s : symbols) out.push_back(ids_.at(s));
        return out;
    }

private:
    std::unordered_map<std::string, int> ids_, ranks_;
};

struct Tokenizer {
    std::string name;
    std::unique_ptr<qforge::io::BpeTokenizer> queue;
    std::unique_ptr<Rescan> rescan;
};
std::vector<Tokenizer> g_tokenizers;
std::map<std::pair<std::string, long>, double> g_rescan_ns, g_queue_ns;  // (tokenizer, N) -> ns/byte

void add(std::string name, std::vector<std::string> vocab, const std::vector<std::string>& merges,
         const std::vector<std::string>& regexes, std::vector<int> specials) {
    auto rescan = std::make_unique<Rescan>(vocab, merges);
    auto queue = std::make_unique<qforge::io::BpeTokenizer>(
        qforge::io::BpeTokenizer::from_vocabulary(std::move(vocab), merges, std::move(specials), regexes, name));
    g_tokenizers.push_back({std::move(name), std::move(queue), std::move(rescan)});
}

/// Times `encode` per iteration itself so the ratio to the baseline can be a counter.
template <class Encode>
double ns_per_byte(benchmark::State& state, long n, Encode encode) {
    double seconds = 0.0;
    std::size_t ids = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto out = encode();
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ids = out.size();
        benchmark::DoNotOptimize(out.data());
    }
    const double ns = seconds * 1e9 / double(state.iterations()) / double(n);
    state.counters["ns/byte"] = ns;
    state.counters["ids"] = double(ids);
    return ns;
}

void rescan(benchmark::State& state, const Tokenizer* t) {
    const long n = state.range(0);
    const std::string text(std::size_t(n), 'a');
    g_rescan_ns[{t->name, n}] = ns_per_byte(state, n, [&] { return t->rescan->encode(text); });
}

void queue(benchmark::State& state, const Tokenizer* t) {
    const long n = state.range(0);
    const std::string text(std::size_t(n), 'a');
    const double ns = ns_per_byte(state, n, [&] { return t->queue->encode(text); });
    g_queue_ns[{t->name, n}] = ns;
    if (const auto it = g_rescan_ns.find({t->name, n}); it != g_rescan_ns.end()) state.counters["speedup"] = it->second / ns;
}

std::string smollm2_path() {
    if (const char* p = std::getenv("QFORGE_SMOLLM2"); p && *p) return bench::existing_or_skip(p, "SmolLM2", "");
    return bench::smollm2_path();
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    const char* max_env = std::getenv("QFORGE_BENCH_RESCAN_MAX");
    const long rescan_max = max_env ? std::atol(max_env) : 8192;

    {  // runs of "a" up to 64, with a few merges that compete with the doubling ones
        std::vector<std::string> vocab = {"a"}, merges;
        for (std::string run = "a"; run.size() < 64; run += run) {
            merges.push_back(run + " " + run);
            vocab.push_back(run + run);
        }
        for (const char* extra : {"aa a", "aaaa aa", "aaa aaa"}) {
            merges.push_back(extra);
            std::string joined = extra;
            joined.erase(joined.find(' '), 1);
            if (std::find(vocab.begin(), vocab.end(), joined) == vocab.end()) vocab.push_back(joined);
        }
        add("synthetic", std::move(vocab), merges, {}, {});
    }
    if (const std::string path = smollm2_path(); !path.empty()) {
        const auto f = qforge::io::GgufFile::open(path);
        auto tok = qforge::io::BpeTokenizer::from_gguf(f);  // the real pre-tokenizer and special tokens
        std::vector<std::string> vocab, merges;
        for (const auto& t : f.get("tokenizer.ggml.tokens").as_array()) vocab.push_back(t.as_string());
        for (const auto& m : f.get("tokenizer.ggml.merges").as_array()) merges.push_back(m.as_string());
        g_tokenizers.push_back({"SmolLM2", std::make_unique<qforge::io::BpeTokenizer>(std::move(tok)),
                                std::make_unique<Rescan>(vocab, merges)});
    }

    for (const auto& t : g_tokenizers) {  // the baseline first: each queue run divides by it
        auto* b = benchmark::RegisterBenchmark((t.name + "/rescan").c_str(), rescan, &t);
        for (const long n : g_sizes)
            if (n <= rescan_max) b->Arg(n);
        b->Unit(benchmark::kMillisecond)->UseRealTime();
        b = benchmark::RegisterBenchmark((t.name + "/queue").c_str(), queue, &t);
        for (const long n : g_sizes) b->Arg(n);
        b->Unit(benchmark::kMillisecond)->UseRealTime();
    }
    benchmark::RunSpecifiedBenchmarks();
    std::printf("\n%-10s %8s %16s %16s %16s %16s %10s\n", "tokenizer", "bytes", "rescan ms", "queue ms", "rescan ns/byte",
                "queue ns/byte", "speedup");
    for (const auto& [key, ns] : g_queue_ns) {
        const auto it = g_rescan_ns.find(key);
        const double n = double(key.second);
        if (it == g_rescan_ns.end())
            std::printf("%-10s %8ld %16s %16.3f %16s %16.2f %10s\n", key.first.c_str(), key.second, "-", ns * n / 1e6, "-", ns, "-");
        else
            std::printf("%-10s %8ld %16.1f %16.3f %16.1f %16.2f %9.0fx\n", key.first.c_str(), key.second, it->second * n / 1e6,
                        ns * n / 1e6, it->second, ns, it->second / ns);
    }
    benchmark::Shutdown();
    return 0;
}
