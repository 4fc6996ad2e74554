#include <bit>
// AWQ: folding scales leaves the FP32 model unchanged; α = 0 without clipping is RTN exactly; on a
// layer with planted salient input channels AWQ's output error is at most 0.8x RTN's; the clip
// search never does worse than no clipping and picks each group's least error (against a plain
// reference); the α search on a row sample sums what it says it does; on stories260K, AWQ (and AWQ+GPTQ) beat RTN; TWQ's
// weighting moves error away from the targeted neurons.
#include <cmath>
#include <cstring>
#include <random>

#include "common.hpp"
#include "qforge/pipelines/llama/awq.hpp"
#include "qforge/models/llama/evaluate.hpp"
#include "qforge/models/llama/sampler.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_awq)

namespace {
const char* model_file = "models/stories260K/stories260K.bin";

struct Layer {
    int rows, cols, n;
    std::vector<float> w, x, h, mean_abs;
};

/// Random weights and inputs whose `salient` channels are 10x larger than the rest.
Layer planted(int salient, unsigned seed) {
    Layer l{48, 128, 1024, {}, {}, {}, {}};
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    l.w.resize(std::size_t(l.rows * l.cols));
    for (auto& v : l.w) v = 0.05f * nd(rng);
    l.x.resize(std::size_t(l.n * l.cols));
    for (int t = 0; t < l.n; ++t)
        for (int c = 0; c < l.cols; ++c) l.x[std::size_t(t * l.cols + c)] = nd(rng) * (c % (l.cols / salient) == 3 ? 10.0f : 1.0f);
    ActivationStats s(std::size_t(l.cols), true);
    s.add(MatrixView<const float>(l.x.data(), std::size_t(l.n), std::size_t(l.cols)), Backend::cpu(Isa::scalar));
    l.h = s.hessian();
    l.mean_abs = s.mean_abs();
    return l;
}

double output_error(const Layer& l, const std::vector<float>& w_hat) {
    double e = 0;
    for (int t = 0; t < l.n; ++t)
        for (int r = 0; r < l.rows; ++r) {
            double d = 0;
            for (int c = 0; c < l.cols; ++c) d += double(l.w[std::size_t(r * l.cols + c)] - w_hat[std::size_t(r * l.cols + c)]) * l.x[std::size_t(t * l.cols + c)];
            e += d * d;
        }
    return e;
}

std::vector<float> dequantized(const QuantizedMatrix& q) {
    std::vector<float> w(std::size_t(q.rows * q.cols));
    for (int r = 0; r < q.rows; ++r)
        for (int c = 0; c < q.cols; ++c) w[std::size_t(r * q.cols + c)] = q.dequantize(r, c);
    return w;
}
}  // namespace

BOOST_AUTO_TEST_CASE(folding_keeps_the_fp32_model) {
    const auto w = qtest::random_llama(qtest::tiny_config(2), 51);  // 4 heads, 2 KV heads
    const auto& c = w.config;
    std::mt19937 rng(52);
    std::uniform_real_distribution<float> u(0.3f, 3.0f);
    auto scaled = w;
    for (auto& L : scaled.layers) {
        llama::BlockScales s;
        for (auto* v : {&s.qkv, &s.gate_up}) {
            v->resize(std::size_t(c.dim));
            for (auto& x : *v) x = u(rng);
        }
        s.down.resize(std::size_t(c.hidden_dim));
        for (auto& x : s.down) x = u(rng);
        std::vector<float> per_v(std::size_t(c.kv_dim()));  // o scales tied within KV groups
        for (auto& x : per_v) x = u(rng);
        const auto tie = llama::gqa_tie(c);
        s.o.resize(std::size_t(c.dim));
        const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
        for (int ch = 0; ch < c.dim; ++ch) s.o[std::size_t(ch)] = per_v[std::size_t((ch / hs / group) * hs + ch % hs)];
        for (int ch = 0; ch < c.dim; ++ch) BOOST_TEST_REQUIRE(s.o[std::size_t(ch)] == s.o[std::size_t(tie[std::size_t(ch)])]);
        llama::fold_block_scales(c, L, s);
    }
    const std::vector<int> tokens = {1, 4, 9, 16, 25, 36, 49, 2};
    llama::Session a(w, Backend::cpu(Isa::scalar, 1)), b(scaled, Backend::cpu(Isa::scalar, 1));
    const auto la = a.forward_batch(tokens, 0);
    std::vector<float> first(la.data, la.data + la.rows * la.cols);
    const auto lb = b.forward_batch(tokens, 0);
    double worst = 0, mag = 0;
    for (std::size_t i = 0; i < first.size(); ++i) {
        worst = std::max(worst, double(std::fabs(first[i] - lb.data[i])));
        mag = std::max(mag, double(std::fabs(first[i])));
    }
    BOOST_TEST(worst <= 1e-5 * mag, "max |dlogit| " << worst << " of " << mag);
}

BOOST_AUTO_TEST_CASE(alpha_zero_without_clip_is_rtn) {
    const auto l = planted(8, 53);
    AwqOptions o;
    o.grid = 1;  // α = 0 only
    o.clip = false;
    const auto spec = parse_scheme("rtn:w4g32a").spec;
    const auto s = awq_search_scales({{MatrixView<const float>(l.w.data(), std::size_t(l.rows), std::size_t(l.cols))}}, l.mean_abs, l.h, spec, o);
    BOOST_TEST(s.alpha == 0.0f);
    for (const float v : s.scales) BOOST_TEST_REQUIRE(v == 1.0f);
    const auto awq = scaled_rtn(MatrixView<const float>(l.w.data(), std::size_t(l.rows), std::size_t(l.cols)), s.scales, spec, 0);
    const auto rtn = dequantized(RtnQuantizer(spec).quantize(MatrixView<const float>(l.w.data(), std::size_t(l.rows), std::size_t(l.cols))));
    BOOST_TEST(awq == rtn, boost::test_tools::per_element());
}

// The α search's weight error on the backend's rounding kernel equals W - scaled_rtn(W, s)
// (RtnQuantizer, then dequantize and unscale) bit for bit, on every zero-point kind and a group
// length that cuts the rows unevenly, for the scalar and the best instruction set.
BOOST_AUTO_TEST_CASE(scaled_rtn_error_equals_the_plain_path) {
    const auto l = planted(8, 59);
    const MatrixView<const float> w(l.w.data(), std::size_t(l.rows), std::size_t(l.cols));
    std::vector<float> s(std::size_t(l.cols));
    for (std::size_t c = 0; c < s.size(); ++c) s[c] = std::pow(std::max(l.mean_abs[c], 1e-8f), 0.45f);
    for (const char* scheme : {"rtn:w4g36a", "rtn:w3g32s", "rtn:w4g128m", "rtn:w8g36a"}) {
        const auto spec = parse_scheme(scheme).spec;
        const auto plain = scaled_rtn(w, s, spec, 1);
        std::vector<float> want(plain.size());
        for (std::size_t i = 0; i < want.size(); ++i) want[i] = l.w[i] - plain[i];
        for (const Isa isa : {Isa::scalar, best_isa()}) {
            const auto got = scaled_rtn_error(w, s, spec, Backend::cpu(isa, 2));
            BOOST_TEST_REQUIRE(got.size() == want.size());
            BOOST_TEST(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0, scheme << " on " << isa_name(isa));
        }
    }
    auto bad = l.w;
    bad[77] = std::nanf("");
    BOOST_CHECK_THROW(scaled_rtn_error(MatrixView<const float>(bad.data(), std::size_t(l.rows), std::size_t(l.cols)), s,
                                       parse_scheme("rtn:w4g32a").spec, Backend::cpu(Isa::scalar)),
                      InvalidData);
    BOOST_CHECK_THROW(awq_clip_quantize(MatrixView<const float>(bad.data(), std::size_t(l.rows), std::size_t(l.cols)), l.h,
                                        parse_scheme("rtn:w4g32a").spec, AwqOptions{}),
                      InvalidData);
}

// The α search's error on a row sample: every TWQ-weighted row (λ = 8) plus a stride sample of the
// others scaled by (others / sampled), recomputed here row by row in double from H; with
// search_rows = 0 the sum over every row.
BOOST_AUTO_TEST_CASE(search_on_a_row_sample) {
    const auto l = planted(16, 71);
    const auto spec = parse_scheme("rtn:w4g32a").spec;
    const MatrixView<const float> w(l.w.data(), std::size_t(l.rows), std::size_t(l.cols));
    std::vector<float> lambda(std::size_t(l.rows), 1.0f);
    lambda[1] = lambda[2] = 8.0f;
    const auto row_error = [&](const std::vector<float>& s, int r) {  // d_r H d_r^T, d = w - RTN(w s) / s
        const auto q = scaled_rtn(MatrixView<const float>(l.w.data() + std::size_t(r * l.cols), 1, std::size_t(l.cols)), s, spec, 1);
        std::vector<double> d(std::size_t(l.cols));
        for (int c = 0; c < l.cols; ++c) d[std::size_t(c)] = double(l.w[std::size_t(r * l.cols + c)]) - double(q[std::size_t(c)]);
        double e = 0;
        for (int i = 0; i < l.cols; ++i)
            for (int j = 0; j < l.cols; ++j) e += d[std::size_t(i)] * double(l.h[std::size_t(i * l.cols + j)]) * d[std::size_t(j)];
        return e;
    };
    const auto scales = [&](float alpha) {
        std::vector<float> s(std::size_t(l.cols));
        float lo = INFINITY, hi = 0;
        for (int c = 0; c < l.cols; ++c) {
            s[std::size_t(c)] = std::pow(std::max(l.mean_abs[std::size_t(c)], 1e-8f), alpha);
            lo = std::min(lo, s[std::size_t(c)]);
            hi = std::max(hi, s[std::size_t(c)]);
        }
        for (auto& v : s) v /= std::sqrt(lo * hi);
        return s;
    };
    for (const int rows : {12, 0}) {
        AwqOptions o;
        o.grid = 4;
        o.coarse_step = 1;  // every grid point measured
        o.search_rows = rows;
        o.backend = Backend::cpu(best_isa());
        const auto found = awq_search_scales({{w, &lambda}}, l.mean_abs, l.h, spec, o);
        BOOST_TEST_REQUIRE(found.error.size() == 4u);
        std::vector<int> plain;
        for (int r = 0; r < l.rows; ++r)
            if (lambda[std::size_t(r)] == 1.0f) plain.push_back(r);
        for (int i = 0; i < o.grid; ++i) {
            const auto s = scales(float(i) / float(o.grid));
            double want = 8.0 * (row_error(s, 1) + row_error(s, 2));
            if (rows == 0) {
                for (const int r : plain) want += row_error(s, r);
            } else {
                for (int k = 0; k < rows; ++k) want += double(plain.size()) / rows * row_error(s, plain[std::size_t(k) * plain.size() / std::size_t(rows)]);
            }
            BOOST_TEST(found.error[std::size_t(i)] == want, boost::test_tools::tolerance(1e-4));
        }
    }
}

// The coarse-to-fine α search (AwqOptions::coarse_step): it measures every coarse_step-th grid
// point, then every point within coarse_step - 1 of the best of those; each measured error is the
// full search's value at that point, the rest NaN, and the winner is the least measured error.
BOOST_AUTO_TEST_CASE(coarse_to_fine_alpha_search) {
    for (const char* grid : {"rtn:w4g32a", "rtn:w3g32a", "rtn:w4s"}) {
        const auto l = planted(16, 91);
        const auto spec = parse_scheme(grid).spec;
        const MatrixView<const float> w(l.w.data(), std::size_t(l.rows), std::size_t(l.cols));
        AwqOptions full;
        full.backend = Backend::cpu(best_isa());
        full.coarse_step = 1;
        const auto all = awq_search_scales({{w}}, l.mean_abs, l.h, spec, full);
        for (const int step : {3, 5, 7}) {
            AwqOptions o = full;
            o.coarse_step = step;
            const auto found = awq_search_scales({{w}}, l.mean_abs, l.h, spec, o);
            BOOST_TEST_REQUIRE(found.error.size() == 20u);
            int best_coarse = 0;
            for (int i = 0; i < 20; i += step)
                if (all.error[std::size_t(i)] < all.error[std::size_t(best_coarse)]) best_coarse = i;
            int k = -1, measured = 0;
            for (int i = 0; i < 20; ++i) {
                const bool want = i % step == 0 || std::abs(i - best_coarse) < step;
                BOOST_TEST(!std::isnan(found.error[std::size_t(i)]) == want, grid << " step " << step << " point " << i);
                if (!want) continue;
                ++measured;
                BOOST_TEST(found.error[std::size_t(i)] == all.error[std::size_t(i)]);
                if (k < 0 || all.error[std::size_t(i)] < all.error[std::size_t(k)]) k = i;
            }
            BOOST_TEST(measured <= (19 / step + 1) + 2 * (step - 1));
            BOOST_TEST(found.alpha == float(k) / 20.0f, grid << " step " << step);
            if (found.alpha == all.alpha) BOOST_TEST(found.scales == all.scales);
        }
        // on this planted layer, as on SmolLM2, the default step finds the full grid's α
        AwqOptions d = full;
        d.coarse_step = AwqOptions{}.coarse_step;
        BOOST_TEST(awq_search_scales({{w}}, l.mean_abs, l.h, spec, d).alpha == all.alpha, grid);
    }
}

// Grid points are measured on threads of their own: every point's error, and so the choice,
// must not depend on how many threads share them (nor on which thread took which point).
BOOST_AUTO_TEST_CASE(alpha_search_does_not_depend_on_threads) {
    const auto l = planted(16, 93);
    const auto spec = parse_scheme("rtn:w4g32a").spec;
    const MatrixView<const float> w(l.w.data(), std::size_t(l.rows), std::size_t(l.cols));
    for (const int step : {1, 5}) {
        AwqOptions one;
        one.backend = Backend::cpu(best_isa(), 1);
        one.coarse_step = step;
        const auto base = awq_search_scales({{w}, {w}}, l.mean_abs, l.h, spec, one);
        for (const int threads : {2, 3, 7}) {
            AwqOptions o = one;
            o.backend = Backend::cpu(best_isa(), threads);
            const auto got = awq_search_scales({{w}, {w}}, l.mean_abs, l.h, spec, o);
            for (std::size_t i = 0; i < base.error.size(); ++i)
                BOOST_TEST((std::bit_cast<std::uint64_t>(got.error[i]) == std::bit_cast<std::uint64_t>(base.error[i])),
                           "step " << step << " threads " << threads << " point " << i);
            BOOST_TEST(got.alpha == base.alpha);
        }
    }
}

BOOST_AUTO_TEST_CASE(planted_salient_channels) {
    for (const char* grid : {"rtn:w4g128a", "rtn:w3g32a", "rtn:w4s"}) {
        const auto l = planted(16, 54);
        const auto spec = parse_scheme(grid).spec;
        const MatrixView<const float> w(l.w.data(), std::size_t(l.rows), std::size_t(l.cols));
        AwqOptions o;
        o.backend = Backend::cpu(best_isa());
        const auto s = awq_search_scales({{w}}, l.mean_abs, l.h, spec, o);
        const double e_awq = output_error(l, scaled_rtn(w, s.scales, spec, 0));
        const double e_rtn = output_error(l, dequantized(RtnQuantizer(spec).quantize(w)));
        BOOST_TEST_MESSAGE(grid << ": alpha " << s.alpha << ", output error AWQ / RTN = " << e_awq / e_rtn);
        BOOST_TEST(e_awq <= 0.8 * e_rtn, grid << ": " << e_awq << " vs " << e_rtn);
        BOOST_TEST(s.alpha > 0.0f);
        // the clip search chooses per group by output error: never worse than plain ranges
        const auto clipped = dequantized(awq_clip_quantize(w, l.h, spec, o));
        BOOST_TEST(output_error(l, clipped) <= e_rtn * (1 + 1e-9));
    }
}

// The clip search against a plain reference: for every row and group, every shrink's error
// d H_gg d^T summed in double, one loop per element. The chosen group's error equals the
// reference's minimum to float rounding, on the BLAS-backed backend and on the scalar one, for a
// group length that cuts the rows unevenly (the last group of 20) and a row count that is not a
// multiple of the 32-row blocks.
BOOST_AUTO_TEST_CASE(clip_search_chooses_each_groups_least_error) {
    Layer l = planted(16, 57);
    l.rows = 45;
    l.w.resize(std::size_t(l.rows * l.cols));
    const QuantSpec spec = parse_scheme("rtn:w3g36a").spec;  // 128 = 3 x 36 + 20
    const MatrixView<const float> w(l.w.data(), std::size_t(l.rows), std::size_t(l.cols));
    const auto group_error = [&](int r, int c0, int n, const std::vector<float>& w_hat) {
        double e = 0;
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j)
                e += double(l.w[std::size_t(r * l.cols + c0 + i)] - w_hat[std::size_t(i)]) * l.h[std::size_t((c0 + i) * l.cols + c0 + j)] *
                     double(l.w[std::size_t(r * l.cols + c0 + j)] - w_hat[std::size_t(j)]);
        return e;
    };
    for (const Backend& backend : {Backend::cpu(best_isa(), 2), Backend::cpu(Isa::scalar, 1)}) {
        AwqOptions o;
        o.backend = backend;
        const auto chosen = dequantized(awq_clip_quantize(w, l.h, spec, o));
        int checked = 0, clipped = 0;
        for (int r = 0; r < l.rows; ++r)
            for (int c0 = 0; c0 < l.cols; c0 += 36) {
                const int n = std::min(36, l.cols - c0);
                const std::span<const float> values(l.w.data() + r * l.cols + c0, std::size_t(n));
                double least = INFINITY;
                for (int k = 0; k <= o.clip_search.grid; ++k) {
                    const auto p = find_group_params(values, spec, 1.0f - o.clip_search.max_shrink * float(k) / float(o.clip_search.grid));
                    std::vector<float> w_hat(static_cast<std::size_t>(n));
                    for (int j = 0; j < n; ++j) w_hat[std::size_t(j)] = dequantize_value(quantize_value(values[std::size_t(j)], p, spec), p, spec);
                    least = std::min(least, group_error(r, c0, n, w_hat));
                }
                const std::vector<float> got(chosen.begin() + r * l.cols + c0, chosen.begin() + r * l.cols + c0 + n);
                const double e = group_error(r, c0, n, got);
                BOOST_TEST(e <= least * (1 + 1e-4) + 1e-12, backend.name() << " row " << r << " group at " << c0 << ": " << e << " vs " << least);
                ++checked;
                std::vector<float> plain(static_cast<std::size_t>(n));
                const auto p0 = find_group_params(values, spec);
                for (int j = 0; j < n; ++j) plain[std::size_t(j)] = dequantize_value(quantize_value(values[std::size_t(j)], p0, spec), p0, spec);
                clipped += got != plain;
            }
        BOOST_TEST(checked == l.rows * 4);
        BOOST_TEST_MESSAGE(backend.name() << ": " << clipped << " of " << checked << " groups clipped");
        BOOST_TEST(clipped > 0);  // the search did choose something other than the plain range
    }
}

BOOST_AUTO_TEST_CASE(awq_beats_rtn_on_stories260k, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    std::vector<int> calib, eval;
    for (auto* out : {&calib, &eval}) {  // text sampled from the model itself
        llama::Sampler sampler(1.0f, 1.0f, out == &calib ? 7 : 8);
        while (out->size() < 2048) {
            llama::Session s(w, Backend::cpu(best_isa(), 0));
            int token = 1;
            for (int pos = 0; pos < w.config.seq_len && out->size() < 2048; ++pos) {
                out->push_back(token);
                token = sampler.next(s.forward(token, pos));
                if (token == 1) break;
            }
        }
    }
    llama::EvalOptions eo;
    eo.context = 256;
    eo.backend = Backend::cpu(best_isa());
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 256;
    o.calibration.backend = Backend::cpu(best_isa());
    for (const char* grid : {"w3g32a", "w4g32a"}) {
        const auto rtn = llama::map_block_linears(w, [&](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme(std::string("rtn:") + grid)); });
        const double kl_rtn = llama::evaluate(rtn, &w, eval, eo).mean_kl();
        for (const char* method : {"awq:", "awq+gptq:"}) {
            std::vector<llama::BlockScales> report;
            const auto q = llama::awq_quantize_model(w, calib, parse_scheme(std::string(method) + grid), o, &report);
            const double kl = llama::evaluate(q, &w, eval, eo).mean_kl();
            BOOST_TEST_MESSAGE(method << grid << ": KL " << kl << " (RTN " << kl_rtn << "), alpha of block 0 q/k/v " << report[0].alpha_qkv);
            BOOST_TEST(kl < kl_rtn, method << grid);
            BOOST_TEST(report.size() == w.layers.size());
        }
    }
}

// TWQ: weighting the targeted neurons' error by λ lowers their share of the down_proj error.
BOOST_AUTO_TEST_CASE(twq_protects_the_targets) {
    const auto w = qtest::random_llama(qtest::tiny_config(1), 55);
    const auto tokens = qtest::random_tokens(256, w.config.vocab_size, 56);
    llama::NeuronSet targets{{{0, 5, 9, 17, 30}}};
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 16;
    o.settings.awq_clip = false;
    // every α measured: on this random one-block model the error curves are rough, and the
    // coarse-to-fine search chose the same α with and without the targets' weights
    o.settings.awq_coarse_step = 1;
    const auto scheme = parse_scheme("awq:w3g16a");
    std::vector<llama::BlockScales> plain_scales, twq_scales;
    const auto plain = llama::awq_quantize_model(w, tokens, scheme, o, &plain_scales);
    o.targets = &targets;
    o.lambda = 50.0f;
    const auto twq = llama::awq_quantize_model(w, tokens, scheme, o, &twq_scales);
    // error of the effective down projection (quantized scaled weights, scales divided back out)
    // on the targeted input columns
    const auto target_error = [&](const llama::Weights& q, const llama::BlockScales& s) {
        const auto orig = std::get<llama::Fp32Matrix>(w.layers[0].w2.weights());
        const auto deq = std::get<llama::Fp32Matrix>(llama::dequantized_linear(q.layers[0].w2).weights());
        double e = 0;
        for (int r = 0; r < orig.rows; ++r)
            for (const int c : targets.per_layer[0]) {
                const std::size_t i = std::size_t(r * orig.cols + c);
                const double d = double(orig.data[i]) - double(deq.data[i]) / s.down[std::size_t(c)];
                e += d * d;
            }
        return e;
    };
    BOOST_TEST_MESSAGE("targeted down_proj error: AWQ " << target_error(plain, plain_scales[0]) << ", TWQ " << target_error(twq, twq_scales[0]));
    BOOST_TEST(target_error(twq, twq_scales[0]) < target_error(plain, plain_scales[0]));
    llama::NeuronSet wrong{{{1000}}};
    o.targets = &wrong;
    BOOST_CHECK_THROW(llama::awq_quantize_model(w, tokens, scheme, o), InvalidArgument);
}

// An error while quantizing a block names the tensors: here a row of blk.0.ffn_up of 1e30,
// which no fp16 scale can hold, stops the scale search of gate/up, or the final quantization.
BOOST_AUTO_TEST_CASE(errors_name_the_tensor) {
    auto w = qtest::random_llama(qtest::tiny_config(1), 57);
    auto up = std::get<llama::Fp32Matrix>(w.layers[0].w3.weights());
    for (int c = 8; c < 16; ++c) up.data[std::size_t(5 * up.cols + c)] = 1e30f;
    w.layers[0].w3 = llama::Linear(up);
    const auto tokens = qtest::random_tokens(64, w.config.vocab_size, 58);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 16;
    for (const char* scheme : {"awq:w4g8a", "awq+gptq:w4g8a"}) {
        std::string m = "(no error)";
        try {
            (void)llama::awq_quantize_model(w, tokens, parse_scheme(scheme), o);
        } catch (const Error& e) {
            m = e.what();
        }
        BOOST_TEST_MESSAGE(scheme << ": " << m);
        BOOST_TEST(m.find("blk.0.ffn_up.weight") != std::string::npos, scheme << ": " << m);
        BOOST_TEST(m.find("does not fit fp16") != std::string::npos, scheme << ": " << m);
    }
}

// After a block, plain AWQ hands the next block the original FP32 block's outputs (AutoAWQ's
// choice), finished from the capture's state at the down projection: bit for bit what a full run
// of the original block gives. AWQ+GPTQ advances through its quantized block instead.
BOOST_AUTO_TEST_CASE(awq_advances_to_the_original_blocks_outputs) {
    const auto w = qtest::random_llama(qtest::tiny_config(2), 61);
    const auto tokens = qtest::random_tokens(96, w.config.vocab_size, 62);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 32;
    for (const char* scheme : {"awq:w4g8a", "awq+gptq:w4g8a"}) {
        llama::LayerwiseCalibration cal(w, tokens, o.calibration), fp32(w, tokens, o.calibration);
        (void)llama::awq_quantize_block(cal, w.layers[0], 0, parse_scheme(scheme), o, o.run_settings());
        fp32.advance(w.layers[0]);
        BOOST_TEST_REQUIRE(cal.layer() == 1);
        const auto a = cal.hidden(), b = fp32.hidden();
        BOOST_TEST_REQUIRE(a.rows * a.cols == b.rows * b.cols);
        std::size_t differ = 0;
        for (std::size_t i = 0; i < a.rows * a.cols; ++i) differ += a.data[i] != b.data[i];
        if (std::string(scheme).starts_with("awq:"))
            BOOST_TEST(differ == 0u, scheme << ": " << differ << " hidden values differ from the FP32 block's outputs");
        else
            BOOST_TEST(differ > a.rows * a.cols / 2, scheme << ": only " << differ << " values differ: not the quantized block");
    }
}

// Layers sharing an input but not a grid (a type mix: attn_v on Q6_K beside attn_q on Q4_K): each
// layer's error in the α search is measured on its own AwqLayer::spec, so the search's error at
// every grid point is the sum of each layer searched alone on its grid.
BOOST_AUTO_TEST_CASE(search_measures_each_layer_on_its_grid) {
    const auto l = planted(16, 73);
    const auto s4 = parse_scheme("rtn:w4g32a").spec, s8 = parse_scheme("rtn:w8g32a").spec, s2 = parse_scheme("rtn:w2g32a").spec;
    const std::size_t half = std::size_t(l.rows / 2);
    const MatrixView<const float> a(l.w.data(), half, std::size_t(l.cols)), b(l.w.data() + half * std::size_t(l.cols), half, std::size_t(l.cols));
    AwqOptions o;
    o.grid = 5;
    o.coarse_step = 1;
    o.search_rows = 0;
    o.backend = Backend::cpu(best_isa());
    const auto mixed = awq_search_scales({{a, nullptr, &s4}, {b, nullptr, &s8}}, l.mean_abs, l.h, s2, o);
    const auto alone_a = awq_search_scales({{a}}, l.mean_abs, l.h, s4, o), alone_b = awq_search_scales({{b}}, l.mean_abs, l.h, s8, o);
    const auto shared = awq_search_scales({{a}, {b}}, l.mean_abs, l.h, s4, o);
    for (int i = 0; i < o.grid; ++i) {
        const auto k = std::size_t(i);
        BOOST_TEST(mixed.error[k] == alone_a.error[k] + alone_b.error[k], boost::test_tools::tolerance(1e-9));
        BOOST_TEST(std::abs(shared.error[k] - mixed.error[k]) > 1e-3 * mixed.error[k]);  // b on 4 bits is another search
    }
}

BOOST_AUTO_TEST_SUITE_END()
