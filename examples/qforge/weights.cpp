// `qforge weights`: quantize every linear weight of a checkpoint with each scheme, pack it, and
// report the weight error (read back through the packed format's kernels) and bits per weight.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <qforge/qforge.hpp>
#include <qforge/runtime/dispatch.hpp>

#include "args.hpp"

namespace {

const char* help = R"(usage: qforge weights [options]

Quantizes the linear weights of a checkpoint with RTN schemes and prints, per scheme, the
weight error over all quantized tensors and the stored bits per weight of the packed format.

  --model PATH     llama2.c checkpoint (default: $QFORGE_DATA/models/stories260K/stories260K.bin)
  --scheme S       a scheme such as rtn:w4g128a (repeatable; default: a spread of RTN schemes)
  --threads N      threads (default: all)
  --isa NAME       kernels to read weights back with: scalar, avx2, avx512_vnni (default: best)
  --json           print one JSON object on stdout instead of the table
  --help           this text
)";

struct Totals {
    double signal = 0, noise = 0, max_abs = 0, weights = 0, bytes = 0;
};

template <int B>
void measure(const qforge::QuantizedMatrix& q, std::span<const float> w, qforge::Isa isa, int threads, Totals& t) {
    using F = qforge::Dense<B>;
    const auto packed = F::pack(q);
    const auto back = qforge::dequantize<F>(packed, isa, threads);
    for (std::size_t i = 0; i < w.size(); ++i) {
        const double d = double(w[i]) - double(back[i]);
        t.signal += double(w[i]) * double(w[i]);
        t.noise += d * d;
        t.max_abs = std::max(t.max_abs, std::fabs(d));
    }
    t.weights += double(w.size());
    t.bytes += double(packed.bytes());
}

}  // namespace

int cmd_weights(int argc, char** argv) {
    const auto args = cli::parse(argc, argv, 2, {"model", "scheme", "threads", "isa"}, {"json", "help"});
    if (args.has("help")) {
        std::fputs(help, stdout);
        return 0;
    }
    const std::string model = args.get("model", cli::data_dir() + "/models/stories260K/stories260K.bin");
    std::vector<std::string> schemes = args.all("scheme");
    if (schemes.empty())
        schemes = {"rtn:w8g128a", "rtn:w4g32s", "rtn:w4g128a", "rtn:w4g128a,clip", "rtn:w3g128a",
                   "rtn:w3g128a,clip", "rtn:w3g64s,clip", "rtn:w2g64a", "rtn:w2g64a,clip"};
    const int threads = args.get_int("threads", 0);
    const qforge::Isa isa = args.has("isa") ? qforge::parse_isa(args.get("isa", "")) : qforge::best_isa();
    const bool json = args.has("json");

    std::vector<qforge::RuntimeScheme> parsed;
    for (const auto& s : schemes) parsed.push_back(qforge::parse_scheme(s));

    const auto ck = qforge::io::Llama2cCheckpoint::load(model);
    std::vector<const qforge::io::NamedTensor*> linear;
    for (const auto& t : ck.tensors())
        if (t.is_linear && t.name.rfind("layers.", 0) == 0) linear.push_back(&t);

    const auto& c = ck.config();
    std::fprintf(stderr, "%s: dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d; %zu linear tensors, kernels: %s\n",
                 model.c_str(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, linear.size(),
                 std::string(qforge::isa_name(isa)).c_str());
    if (!json)
        std::printf("%-20s %7s %12s %9s %10s %9s %8s\n", "scheme", "bits/w", "MSE", "SQNR dB", "max |err|", "rel Fro", "time s");

    std::string rows;
    for (const auto& scheme : parsed) {
        const auto start = std::chrono::steady_clock::now();
        Totals t;
        const qforge::RtnQuantizer quantizer(scheme, threads);
        for (const auto* tensor : linear) {
            const auto q = quantizer.quantize(
                qforge::MatrixView<const float>(tensor->data.data(), std::size_t(tensor->rows), std::size_t(tensor->cols)));
            switch (scheme.spec.bits) {
                case 2: measure<2>(q, tensor->data, isa, threads, t); break;
                case 3: measure<3>(q, tensor->data, isa, threads, t); break;
                case 4: measure<4>(q, tensor->data, isa, threads, t); break;
                default: measure<8>(q, tensor->data, isa, threads, t); break;
            }
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double bpw = 8.0 * t.bytes / t.weights, mse = t.noise / t.weights;
        const double sqnr = t.noise == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(t.signal / t.noise);
        const double rel = std::sqrt(t.noise / t.signal);
        const std::string text = qforge::to_string(scheme);
        if (json) {
            char buf[512];
            std::snprintf(buf, sizeof buf,
                          "%s{\"scheme\":%s,\"bits_per_weight\":%.6f,\"mse\":%.6e,\"sqnr_db\":%.4f,\"max_abs_error\":%.6e,"
                          "\"relative_frobenius\":%.6e,\"seconds\":%.4f}",
                          rows.empty() ? "" : ",", cli::json_string(text).c_str(), bpw, mse, sqnr, t.max_abs, rel, seconds);
            rows += buf;
        } else {
            std::printf("%-20s %7.3f %12.4e %9.2f %10.4e %9.4f %8.3f\n", text.c_str(), bpw, mse, sqnr, t.max_abs, rel, seconds);
        }
    }
    if (json)
        std::printf("{\"model\":%s,\"isa\":%s,\"tensors\":%zu,\"results\":[%s]}\n", cli::json_string(model).c_str(),
                    cli::json_string(std::string(qforge::isa_name(isa))).c_str(), linear.size(), rows.c_str());
    return 0;
}
