// The decoder against a straightforward implementation written here, on a tiny random
// checkpoint this test writes (grouped-query attention, unshared classifier); batched prompt
// processing against one-token decode; the FP32 vector kernels against the scalar oracle.
#include <cmath>
#include <cstring>
#include <complex>
#include <map>
#include <filesystem>
#include <fstream>
#include <random>

#include "common.hpp"
#include "qforge/models/llama/model.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_forward)

namespace {

struct Tiny {
    int dim = 16, hidden = 40, layers = 2, heads = 4, kv_heads = 2, vocab = 23, seq_len = 12;
    int hs() const { return dim / heads; }
    int kv_dim() const { return hs() * kv_heads; }
    std::vector<float> emb, att_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3, norm, cls;

    explicit Tiny(unsigned seed) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> n(0.0f, 0.3f);
        const auto fill = [&](std::vector<float>& v, std::size_t count, float offset = 0.0f) {
            v.resize(count);
            for (auto& x : v) x = offset + n(rng);
        };
        const std::size_t D = std::size_t(dim), L = std::size_t(layers), KV = std::size_t(kv_dim()), H = std::size_t(hidden);
        fill(emb, std::size_t(vocab) * D);
        fill(att_norm, L * D, 1.0f);
        fill(wq, L * D * D);
        fill(wk, L * KV * D);
        fill(wv, L * KV * D);
        fill(wo, L * D * D);
        fill(ffn_norm, L * D, 1.0f);
        fill(w1, L * H * D);
        fill(w2, L * D * H);
        fill(w3, L * H * D);
        fill(norm, D, 1.0f);
        fill(cls, std::size_t(vocab) * D);
    }

    std::string write(const std::string& name) const {
        const auto path = (std::filesystem::temp_directory_path() / name).string();
        std::ofstream out(path, std::ios::binary);
        const std::int32_t header[7] = {dim, hidden, layers, heads, kv_heads, -vocab, seq_len};  // < 0: unshared
        out.write(reinterpret_cast<const char*>(header), sizeof header);
        const auto put = [&](const std::vector<float>& v) {
            out.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * 4));
        };
        for (const auto* v : {&emb, &att_norm, &wq, &wk, &wv, &wo, &ffn_norm, &w1, &w2, &w3, &norm}) put(*v);
        put(std::vector<float>(std::size_t(seq_len) * std::size_t(hs()), 0.0f));  // legacy freq_cis, unused
        put(cls);
        return path;
    }

    /// Logits at every position of `tokens`, in double, recomputing attention over the whole
    /// prefix each time (no cache), with RoPE written as complex multiplication.
    std::vector<std::vector<double>> logits(const std::vector<int>& tokens) const {
        const int D = dim, KV = kv_dim(), H = hidden, S = hs();
        const auto matvec = [](const float* w, const std::vector<double>& x, int rows, int cols) {
            std::vector<double> y(std::size_t(rows), 0.0);
            for (int r = 0; r < rows; ++r)
                for (int c = 0; c < cols; ++c) y[std::size_t(r)] += double(w[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) * x[std::size_t(c)];
            return y;
        };
        const auto rms = [&](const std::vector<double>& x, const float* g) {
            double ss = 0;
            for (double v : x) ss += v * v;
            const double inv = 1.0 / std::sqrt(ss / double(x.size()) + 1e-5);
            std::vector<double> y(x.size());
            for (std::size_t i = 0; i < x.size(); ++i) y[i] = double(g[i]) * x[i] * inv;
            return y;
        };
        const auto rope = [&](std::vector<double>& v, int pos) {
            for (std::size_t i = 0; i < v.size(); i += 2) {
                const double theta = double(pos) * std::pow(10000.0, -double(i % std::size_t(S)) / double(S));
                const std::complex<double> z(v[i], v[i + 1]), r = z * std::polar(1.0, theta);
                v[i] = r.real();
                v[i + 1] = r.imag();
            }
        };
        std::vector<std::vector<double>> out;
        std::vector<std::vector<std::vector<double>>> keys(static_cast<std::size_t>(layers)), values(static_cast<std::size_t>(layers));
                for (std::size_t p = 0; p < tokens.size(); ++p) {
            std::vector<double> x(static_cast<std::size_t>(D));
            for (int i = 0; i < D; ++i) x[std::size_t(i)] = emb[std::size_t(tokens[p]) * std::size_t(D) + std::size_t(i)];
            for (int l = 0; l < layers; ++l) {
                const std::size_t lo = std::size_t(l);
                auto xb = rms(x, &att_norm[lo * std::size_t(D)]);
                auto q = matvec(&wq[lo * std::size_t(D * D)], xb, D, D);
                auto k = matvec(&wk[lo * std::size_t(KV * D)], xb, KV, D);
                auto v = matvec(&wv[lo * std::size_t(KV * D)], xb, KV, D);
                rope(q, int(p));
                rope(k, int(p));
                keys[lo].push_back(k);
                values[lo].push_back(v);
                std::vector<double> att(static_cast<std::size_t>(D), 0.0);
                for (int h = 0; h < heads; ++h) {
                    const int kvh = h / (heads / kv_heads);
                    std::vector<double> s(p + 1);
                    double m = -1e300, z = 0;
                    for (std::size_t t = 0; t <= p; ++t) {
                        for (int i = 0; i < S; ++i) s[t] += q[std::size_t(h * S + i)] * keys[lo][t][std::size_t(kvh * S + i)];
                        s[t] /= std::sqrt(double(S));
                        m = std::max(m, s[t]);
                    }
                    for (auto& e : s) z += (e = std::exp(e - m));
                    for (std::size_t t = 0; t <= p; ++t)
                        for (int i = 0; i < S; ++i) att[std::size_t(h * S + i)] += s[t] / z * values[lo][t][std::size_t(kvh * S + i)];
                }
                const auto o = matvec(&wo[lo * std::size_t(D * D)], att, D, D);
                for (int i = 0; i < D; ++i) x[std::size_t(i)] += o[std::size_t(i)];
                xb = rms(x, &ffn_norm[lo * std::size_t(D)]);
                auto g = matvec(&w1[lo * std::size_t(H * D)], xb, H, D);
                const auto u = matvec(&w3[lo * std::size_t(H * D)], xb, H, D);
                for (int i = 0; i < H; ++i) g[std::size_t(i)] = g[std::size_t(i)] / (1 + std::exp(-g[std::size_t(i)])) * u[std::size_t(i)];
                const auto d = matvec(&w2[lo * std::size_t(D * H)], g, D, H);
                for (int i = 0; i < D; ++i) x[std::size_t(i)] += d[std::size_t(i)];
            }
            out.push_back(matvec(cls.data(), rms(x, norm.data()), vocab, D));
        }
        return out;
    }
};

const std::vector<int> tokens = {1, 7, 3, 22, 9, 9, 0, 14, 5, 18, 2};

double max_abs_diff(std::span<const float> a, const std::vector<double>& b) {
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
    return worst;
}

}  // namespace

// Tolerance: FP32 against double over two layers of a 16-wide model with O(1) activations;
// 1e-4 absolute on logits of magnitude ~1 is a few hundred float ulps.
BOOST_AUTO_TEST_CASE(decode_matches_a_straightforward_implementation) {
    const Tiny tiny(7);
    const auto ck = io::Llama2cCheckpoint::load(tiny.write("qf_forward_tiny.bin"));
    const auto w = llama::from_llama2c(ck);
    const auto expected = tiny.logits(tokens);
    for (const Isa isa : {Isa::scalar, best_isa()}) {
        llama::Session s(w, Backend::cpu(isa, 2));
        for (std::size_t p = 0; p < tokens.size(); ++p)
            BOOST_TEST(max_abs_diff(s.forward(tokens[p], int(p)), expected[p]) < 1e-4, isa_name(isa) << " pos " << p);
    }
}

// Activations beyond float's range (hidden states of ~1e20: squares overflow) are an error naming
// the norm, the layer and the row, not a silently zeroed state with uniform logits.
BOOST_AUTO_TEST_CASE(activations_out_of_float_range_are_an_error) {
    const auto c = qtest::tiny_config(2);
    auto w = qtest::random_llama(c, 9);
    for (std::size_t i = 0; i < std::size_t(c.dim); ++i) w.token_embedding[std::size_t(3 * c.dim) + i] = 1e20f;
    for (const std::size_t n : {std::size_t(1), std::size_t(16)}) {
        llama::Session s(w, Backend::cpu(best_isa(), 2));
        std::vector<int> toks(n, 1);
        toks[n - 1] = 3;
        try {
            s.forward_batch(toks, 0);
            BOOST_ERROR("no error for activations of 1e20");
        } catch (const InvalidData& e) {
            const std::string m = e.what();
            BOOST_TEST(m.find("the attention norm of layer 0, row " + std::to_string(n - 1)) != std::string::npos, m);
        }
    }
    llama::Session ok(w, Backend::cpu(best_isa(), 2));
    const std::vector<int> fine{1, 2};
    BOOST_CHECK_NO_THROW(ok.forward_batch(fine, 0));
}

BOOST_AUTO_TEST_CASE(batched_prompt_matches_one_token_decode) {
    const Tiny tiny(11);
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(tiny.write("qf_forward_batch.bin")));
    const auto expected = tiny.logits(tokens);
    for (const Isa isa : {Isa::scalar, best_isa()}) {
        llama::Session one(w, Backend::cpu(isa, 1)), batched(w, Backend::cpu(isa, 2));
        // a prompt of 5, then a batch of 4 continuing the cache, then single tokens
        const auto a = batched.forward_batch(std::span(tokens).first(5), 0);
        std::vector<std::vector<float>> rows;
        for (std::size_t t = 0; t < a.rows; ++t) rows.emplace_back(a.row(t).begin(), a.row(t).end());
        const auto b = batched.forward_batch(std::span(tokens).subspan(5, 4), 5);
        for (std::size_t t = 0; t < b.rows; ++t) rows.emplace_back(b.row(t).begin(), b.row(t).end());
        for (std::size_t p = 9; p < tokens.size(); ++p) {
            const auto l = batched.forward(tokens[p], int(p));
            rows.emplace_back(l.begin(), l.end());
        }
        for (std::size_t p = 0; p < tokens.size(); ++p) {
            const auto l = one.forward(tokens[p], int(p));
            BOOST_TEST(max_abs_diff(rows[p], expected[p]) < 1e-4, isa_name(isa) << " pos " << p);
            if (isa == Isa::scalar)  // same sums in the same order: bit for bit
                BOOST_TEST(std::equal(l.begin(), l.end(), rows[p].begin()), "pos " << p);
        }
        llama::Session last(w, Backend::cpu(isa, 2));
        const auto only_last = last.forward_batch(tokens, 0, false);
        BOOST_TEST(only_last.rows == 1u);
        BOOST_TEST(max_abs_diff(only_last.row(0), expected.back()) < 1e-4);
    }
    llama::Session s(w, Backend::cpu(Isa::scalar, 1), 4);
    BOOST_CHECK_THROW(s.forward_batch(tokens, 0), InvalidArgument);  // beyond the session's context
    BOOST_CHECK_THROW(s.forward_batch(std::vector<int>{1, 99}, 0), InvalidArgument);  // token id out of range
}

BOOST_AUTO_TEST_CASE(packed_batch_equals_packed_decode) {
    const Tiny tiny(5);
    const auto fp32 = llama::from_llama2c(io::Llama2cCheckpoint::load(tiny.write("qf_forward_packed.bin")));
    const auto packed = llama::map_block_linears(
        fp32, [](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme("rtn:w4g8a")); });
    llama::Session one(packed, Backend::cpu(best_isa(), 1)), batched(packed, Backend::cpu(best_isa(), 2));
    const auto all = batched.forward_batch(tokens, 0);
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        const auto l = one.forward(tokens[p], int(p));
        double worst = 0;
        for (std::size_t i = 0; i < l.size(); ++i) worst = std::max(worst, double(std::fabs(l[i] - all(p, i))));
        BOOST_TEST(worst < 1e-4, "pos " << p);  // same integer dots; only the FP32 head's sum order differs
    }
}

BOOST_AUTO_TEST_CASE(observer_sees_every_site) {
    const Tiny tiny(3);
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(tiny.write("qf_forward_observe.bin")));
    llama::Session s(w, Backend::cpu(Isa::scalar, 1));
    std::map<std::pair<int, int>, std::size_t> widths;
    std::vector<float> gate_seen;
    s.observe([&](int layer, llama::Site site, MatrixView<const float> x) {
        BOOST_TEST(x.rows == 5u);
        widths[{layer, int(site)}] = x.cols;
        if (layer == 1 && site == llama::Site::mlp_gate) gate_seen.assign(x.data, x.data + x.rows * x.cols);
    });
    s.forward_batch(std::span(tokens).first(5), 0);
    BOOST_TEST(widths.size() == std::size_t(2 * llama::site_count));
    BOOST_TEST(widths[std::pair(0, int(llama::Site::attention_input))] == 16u);
    BOOST_TEST(widths[std::pair(1, int(llama::Site::mlp_hidden))] == 40u);
    BOOST_TEST(widths[std::pair(1, int(llama::Site::mlp_gate))] == 40u);
    BOOST_TEST(gate_seen.size() == 5u * 40u);
}

BOOST_AUTO_TEST_CASE(fp32_vector_kernels_match_the_scalar_oracle) {
    std::mt19937 rng(1);
    std::normal_distribution<float> n(0.0f, 1.0f);
    const auto simd = fp32_functions(best_isa()), scalar = fp32_functions(Isa::scalar);
    for (const int cols : {1, 7, 16, 33, 100, 577}) {
        const int rows = 13, tokens_n = 6;
        std::vector<float> w(std::size_t(rows * cols)), x(std::size_t(tokens_n * cols));
        for (auto& v : w) v = n(rng);
        for (auto& v : x) v = n(rng);
        std::vector<float> ys(std::size_t(rows * tokens_n)), yv(ys.size());
        scalar.gemm_rows(w.data(), std::size_t(cols), x.data(), std::size_t(cols), tokens_n, cols, 0, rows, ys.data(),
                         std::size_t(rows));
        simd.gemm_rows(w.data(), std::size_t(cols), x.data(), std::size_t(cols), tokens_n, cols, 0, rows, yv.data(),
                       std::size_t(rows));
        for (int t = 0; t < tokens_n; ++t)
            for (int r = 0; r < rows; ++r) {
                double mag = 0;  // reassociation error is bounded relative to sum |w x|
                for (int c = 0; c < cols; ++c) mag += std::fabs(double(w[std::size_t(r * cols + c)]) * x[std::size_t(t * cols + c)]);
                const std::size_t i = std::size_t(t * rows + r);
                BOOST_TEST(std::fabs(ys[i] - yv[i]) <= 1e-6 * mag + 1e-30, "cols " << cols << " t " << t << " r " << r);
                BOOST_TEST(std::fabs(simd.dot(&w[std::size_t(r * cols)], &x[std::size_t(t * cols)], cols) - ys[i]) <=
                           1e-6 * mag + 1e-30);
            }
        std::vector<float> a(x.begin(), x.begin() + cols), b = a;
        scalar.axpy(0.5f, w.data(), a.data(), cols);
        simd.axpy(0.5f, w.data(), b.data(), cols);
        for (int c = 0; c < cols; ++c) BOOST_TEST(std::fabs(a[std::size_t(c)] - b[std::size_t(c)]) <= 1e-6f * (1 + std::fabs(a[std::size_t(c)])));
    }
    if (best_isa() != Isa::scalar) BOOST_TEST(simd.isa != scalar.isa);  // the vector kernels really ran
}

// GPTQ's in-block error feedback for a tile of rows: axpy_columns must round every element as
// its backend's axpy does on that row (GPTQ's codes stay those of the row-at-a-time loop), on
// every backend this machine runs, at every length around the vector width and every tile width
// up to 2 vectors; CI runs it optimised and at -O0 (the sanitizer stage), which fuse differently.
BOOST_AUTO_TEST_CASE(axpy_columns_rounds_as_axpy_on_each_row) {
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<Isa> isas;  // every instruction set this machine runs (AVX2's fma is a true FMA, AVX-512's not: xsimd 8)
    for (const Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni})
        if (isa_usable(isa)) isas.push_back(isa);
    for (const Isa isa : isas) {
        const auto f = fp32_functions(isa);
        int checked = 0, mismatched = 0;
        for (const int width : {1, 5, 8, 16, 17, 32}) {
            const std::size_t ld = 32;
            for (int len = 0; len <= 40; ++len) {
                std::vector<float> x(std::size_t(len) + 1), panel(std::size_t(len + 1) * ld);
                std::vector<float> alpha(static_cast<std::size_t>(width));
                for (auto& v : x) v = n(rng);
                for (auto& v : alpha) v = n(rng);
                for (auto& v : panel) v = n(rng);
                std::vector<float> rows(std::size_t(width) * std::size_t(len + 1));  // the same values row-major
                for (int t = 0; t < width; ++t)
                    for (int j = 0; j < len; ++j) rows[std::size_t(t * len + j)] = panel[std::size_t(j) * ld + std::size_t(t)];
                const auto before = panel;
                f.axpy_columns(alpha.data(), width, x.data(), panel.data(), ld, len);
                for (int t = 0; t < width; ++t) f.axpy(alpha[std::size_t(t)], x.data(), rows.data() + std::size_t(t * len), len);
                for (int j = 0; j < len; ++j)
                    for (std::size_t t = 0; t < ld; ++t) {
                        const float want = int(t) < width ? rows[t * std::size_t(len) + std::size_t(j)] : before[std::size_t(j) * ld + t];
                        ++checked;
                        if (std::memcmp(&want, &panel[std::size_t(j) * ld + t], sizeof(float)) != 0) ++mismatched;
                    }
            }
        }
        BOOST_TEST(mismatched == 0, f.isa << ": " << mismatched << " of " << checked << " elements differ from axpy's bits");
    }
}

// Activation statistics per channel (AWQ's mean |x|, the activation probability): the vector
// build of the kernel must give the loop's bits, on channel ranges that start and end off the
// vector width, with zeros, negatives and huge values among the activations.
BOOST_AUTO_TEST_CASE(channel_stats_kernel_is_exact_on_every_backend) {
    std::mt19937 rng(4);
    std::normal_distribution<float> n(0.0f, 3.0f);
    const std::size_t rows = 37, stride = 71;
    std::vector<float> x(rows * stride);
    for (auto& v : x) v = n(rng);
    for (std::size_t i = 0; i < x.size(); i += 13) x[i] = 0.0f;
    x[5] = 3e38f, x[stride + 5] = 3e38f;  // their sum overflows float, not double
    std::vector<Isa> isas;  // every instruction set this machine runs (AVX2's fma is a true FMA, AVX-512's not: xsimd 8)
    for (const Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni})
        if (isa_usable(isa)) isas.push_back(isa);
    for (const auto& [j0, j1] : {std::pair<std::size_t, std::size_t>{0, 71}, {3, 50}, {17, 18}, {0, 16}, {5, 5}}) {
        // the truth, written out: |x| summed in double in row order, the max, the count of x > 0
        std::vector<double> want_sum(stride, 0.5);
        std::vector<float> want_max(stride, 0.25f);
        std::vector<std::int64_t> want_pos(stride, 2);
        for (std::size_t t = 0; t < rows; ++t)
            for (std::size_t j = j0; j < j1; ++j) {
                const float v = x[t * stride + j];
                want_sum[j] += double(std::fabs(v));
                want_max[j] = std::max(want_max[j], std::fabs(v));
                if (v > 0.0f) ++want_pos[j];
            }
        for (const Isa isa : isas) {
            std::vector<double> sum(stride, 0.5);  // accumulates onto what is there
            std::vector<float> mx(stride, 0.25f);
            std::vector<std::int64_t> pos(stride, 2);
            const auto f = fp32_functions(isa);
            f.channel_stats(x.data(), rows, stride, j0, j1, sum.data(), mx.data(), pos.data());
            BOOST_TEST(std::memcmp(sum.data(), want_sum.data(), stride * sizeof(double)) == 0, f.isa << " [" << j0 << ", " << j1 << ")");
            BOOST_TEST(std::memcmp(mx.data(), want_max.data(), stride * sizeof(float)) == 0, f.isa << " [" << j0 << ", " << j1 << ")");
            BOOST_TEST(pos == want_pos, f.isa << " [" << j0 << ", " << j1 << ")");
        }
    }
}

// Attention's softmax and the MLP's SwiGLU: the oracle against the formulas in double, the vector
// kernels (xsimd's exp, a reassociated sum) against the oracle within a few ulp; every length
// around the vector width, so the padded tail runs.
BOOST_AUTO_TEST_CASE(softmax_and_swiglu_kernels_match_the_formulas) {
    std::mt19937 rng(2);
    std::normal_distribution<float> n(0.0f, 4.0f);
    const auto simd = fp32_functions(best_isa()), scalar = fp32_functions(Isa::scalar);
    for (int len = 1; len <= 70; ++len) {
        std::vector<float> x(static_cast<std::size_t>(len)), up(x.size());
        for (auto& v : x) v = n(rng);
        for (auto& v : up) v = n(rng);
        const float scale = 0.125f;
        double top = -INFINITY, total = 0.0;
        for (const float v : x) top = std::max(top, double(v) * scale);
        for (const float v : x) total += std::exp(double(v) * scale - top);
        auto a = x, b = x;
        scalar.softmax(a.data(), len, scale);
        simd.softmax(b.data(), len, scale);
        double sum_b = 0.0;
        for (int i = 0; i < len; ++i) {
            const double want = std::exp(double(x[std::size_t(i)]) * scale - top) / total;
            BOOST_TEST(std::fabs(a[std::size_t(i)] - want) <= 1e-6 * want + 1e-30, "softmax len " << len << " i " << i);
            BOOST_TEST(std::fabs(b[std::size_t(i)] - a[std::size_t(i)]) <= 1e-6f * a[std::size_t(i)] + 1e-30f,
                       "vector softmax len " << len << " i " << i);
            sum_b += b[std::size_t(i)];
        }
        BOOST_TEST(std::fabs(sum_b - 1.0) < 1e-5);
        a = x;
        b = x;
        scalar.swiglu(a.data(), up.data(), x.size());
        simd.swiglu(b.data(), up.data(), x.size());
        for (int i = 0; i < len; ++i) {
            const double g = x[std::size_t(i)], want = g / (1.0 + std::exp(-g)) * up[std::size_t(i)];
            BOOST_TEST(std::fabs(a[std::size_t(i)] - want) <= 1e-6 * std::fabs(want) + 1e-30, "swiglu len " << len << " i " << i);
            BOOST_TEST(std::fabs(b[std::size_t(i)] - a[std::size_t(i)]) <= 1e-6f * std::fabs(a[std::size_t(i)]) + 1e-30f,
                       "vector swiglu len " << len << " i " << i);
        }
    }
    std::vector<float> masked = {1.0f, -INFINITY, 3.0f};  // a -inf score gets weight 0
    simd.softmax(masked.data(), 3, 1.0f);
    BOOST_TEST(masked[1] == 0.0f);
    BOOST_TEST(std::fabs(masked[2] - 1.0f / (1.0f + std::exp(-2.0f))) < 1e-6f);
}

// Prompts of 16 tokens or more run attention as matrix products (llama::attend_gemm), in
// chunks of 128 queries; one-token decoding runs the per-token loop. On the scalar backend both
// are the same sums in the same order: bit for bit; vectorised within rounding.
BOOST_AUTO_TEST_CASE(attention_as_products_matches_one_token_decode) {
    auto c = qtest::tiny_config(2);
    c.seq_len = 320;
    const auto w = qtest::random_llama(c, 17);
    const auto prompt = qtest::random_tokens(300, c.vocab_size, 18);
    for (const Isa isa : {Isa::scalar, best_isa()}) {
        llama::Session one(w, Backend::cpu(isa, 1)), batched(w, Backend::cpu(isa, 2));
        std::vector<std::vector<float>> rows;
        // 140 from position 0 (two chunks), then 150 continuing the cache (pos0 > 0), then 10 (the loop)
        for (const auto& [from, count] : {std::pair(0, 140), std::pair(140, 150), std::pair(290, 10)}) {
            const auto l = batched.forward_batch(std::span(prompt).subspan(std::size_t(from), std::size_t(count)), from);
            for (std::size_t t = 0; t < l.rows; ++t) rows.emplace_back(l.row(t).begin(), l.row(t).end());
        }
        double worst = 0.0;
        for (std::size_t p = 0; p < prompt.size(); ++p) {
            const auto l = one.forward(prompt[p], int(p));
            if (isa == Isa::scalar && !std::equal(l.begin(), l.end(), rows[p].begin())) BOOST_ERROR("scalar: position " << p << " differs");
            for (std::size_t i = 0; i < l.size(); ++i) worst = std::max(worst, double(std::fabs(l[i] - rows[p][i])));
        }
        BOOST_TEST(worst < 1e-4, isa_name(isa) << ": largest difference " << worst);
    }
}

BOOST_AUTO_TEST_SUITE_END()
