// GPTQ against independent truths: the blocked linear algebra against its definitions; H = I
// gives RTN exactly; a straightforward double-precision OBS implementation (explicit inverse,
// one column at a time, as the paper derives it) gives the same codes; a one-row case by hand;
// correlated inputs make GPTQ's output error well below RTN's; act-order's g_idx and static groups.
#include <algorithm>
#include <cmath>
#include <random>

#include "common.hpp"
#include "qforge/linalg/cholesky.hpp"
#include "qforge/quantizers/registry.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_gptq)

namespace {

std::vector<float> random_spd(int n, unsigned seed, int samples = 0) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int m = samples ? samples : 2 * n;
    std::vector<float> x(std::size_t(m) * std::size_t(n)), h(std::size_t(n) * std::size_t(n), 0.0f);
    for (auto& v : x) v = nd(rng);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
            double s = 0;
            for (int t = 0; t < m; ++t) s += double(x[std::size_t(t * n + i)]) * x[std::size_t(t * n + j)];
            h[std::size_t(i * n + j)] = float(2 * s / m);
        }
    return h;
}

/// Inputs with strong correlation between channels: x = z A + 0.05 noise, z of lower rank.
std::vector<float> correlated_inputs(int n_tokens, int cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int rank = cols / 4;
    std::vector<float> a(std::size_t(rank) * std::size_t(cols)), x(std::size_t(n_tokens) * std::size_t(cols));
    for (auto& v : a) v = nd(rng);
    for (int t = 0; t < n_tokens; ++t) {
        std::vector<float> z(static_cast<std::size_t>(rank));
        for (auto& v : z) v = nd(rng);
        for (int c = 0; c < cols; ++c) {
            float s = 0.05f * nd(rng);
            for (int k = 0; k < rank; ++k) s += z[std::size_t(k)] * a[std::size_t(k * cols + c)];
            x[std::size_t(t * cols + c)] = s;
        }
    }
    return x;
}

using qtest::hessian_of;

double output_error(const std::vector<float>& w, const std::vector<float>& w_hat, const std::vector<float>& x, int rows, int cols,
                    int n_tokens) {
    double e = 0;
    for (int t = 0; t < n_tokens; ++t)
        for (int r = 0; r < rows; ++r) {
            double d = 0;
            for (int c = 0; c < cols; ++c) d += double(w[std::size_t(r * cols + c)] - w_hat[std::size_t(r * cols + c)]) * x[std::size_t(t * cols + c)];
            e += d * d;
        }
    return e;
}

/// The paper's derivation run literally in double: explicit H^{-1}, quantize one column, spread
/// its error by the OBS formula, remove the column from H^{-1}; no Cholesky, no blocks.
/// Groups are runs of `g` columns; a group's grid comes from the error-fed weights when its
/// first column comes up.
std::vector<float> obs_reference(const std::vector<float>& w, std::vector<float> h, int rows, int cols, const QuantSpec& spec,
                                 float damp) {
    const std::size_t C = std::size_t(cols);
    double mean = 0;
    for (std::size_t i = 0; i < C; ++i) mean += h[i * C + i];
    mean /= double(C);
    std::vector<double> a(C * C), inv(C * C, 0.0);
    for (std::size_t i = 0; i < C * C; ++i) a[i] = h[i];
    for (std::size_t i = 0; i < C; ++i) a[i * C + i] += damp * mean, inv[i * C + i] = 1.0;
    for (std::size_t c = 0; c < C; ++c) {  // Gauss-Jordan
        const double p = a[c * C + c];
        for (std::size_t j = 0; j < C; ++j) a[c * C + j] /= p, inv[c * C + j] /= p;
        for (std::size_t r = 0; r < C; ++r)
            if (r != c) {
                const double f = a[r * C + c];
                for (std::size_t j = 0; j < C; ++j) a[r * C + j] -= f * a[c * C + j], inv[r * C + j] -= f * inv[c * C + j];
            }
    }
    const int g = spec.group_length(cols);
    std::vector<float> out(w.size());
    for (int r = 0; r < rows; ++r) {
        std::vector<double> row(w.begin() + r * cols, w.begin() + (r + 1) * cols), hi = inv;
        GroupParams p;
        for (std::size_t i = 0; i < C; ++i) {
            if (int(i) % g == 0) {
                std::vector<float> vals;
                for (std::size_t j = i; j < std::min(C, i + std::size_t(g)); ++j) vals.push_back(float(row[j]));
                p = find_group_params(vals, spec);
            }
            const float qv = dequantize_value(quantize_value(float(row[i]), p, spec), p, spec);
            out[std::size_t(r) * C + i] = qv;
            const double e = (row[i] - qv) / hi[i * C + i];
            for (std::size_t j = i + 1; j < C; ++j) row[j] -= e * hi[i * C + j];
            const double d = hi[i * C + i];
            std::vector<double> col(C), row_i(hi.begin() + std::ptrdiff_t(i * C), hi.begin() + std::ptrdiff_t(i * C + C));
            for (std::size_t k = 0; k < C; ++k) col[k] = hi[k * C + i];
            for (std::size_t k = 0; k < C; ++k)
                for (std::size_t j = 0; j < C; ++j) hi[k * C + j] -= col[k] * row_i[j] / d;
        }
    }
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(blocked_linear_algebra) {
    for (const int n : {1, 5, 64, 150}) {
        const auto h = random_spd(n, unsigned(n));
        const std::size_t N = std::size_t(n);
        for (const Isa isa : {Isa::scalar, best_isa()}) {
            auto l = h;
            BOOST_TEST_REQUIRE(linalg::cholesky_lower(l.data(), n, Backend::cpu(isa, 2)));
            double worst = 0;
            for (std::size_t i = 0; i < N; ++i)
                for (std::size_t j = 0; j < N; ++j) {
                    double s = 0;
                    for (std::size_t k = 0; k < N; ++k) s += double(l[i * N + k]) * l[j * N + k];
                    worst = std::max(worst, std::fabs(s - h[i * N + j]));
                    if (j > i) BOOST_TEST_REQUIRE(l[i * N + j] == 0.0f);
                }
            BOOST_TEST(worst < 1e-4, "n " << n << ": |L L^T - H| " << worst);
            auto x = l;
            linalg::invert_lower(x.data(), n, Backend::cpu(isa, 2));
            worst = 0;
            for (std::size_t i = 0; i < N; ++i)
                for (std::size_t j = 0; j < N; ++j) {
                    double s = 0;
                    for (std::size_t k = 0; k < N; ++k) s += double(l[i * N + k]) * x[k * N + j];
                    worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
                }
            BOOST_TEST(worst < 1e-4, "n " << n << ": |L L^-1 - I| " << worst);
            std::vector<float> u;
            BOOST_TEST_REQUIRE(linalg::inverse_cholesky_upper(h, n, u, Backend::cpu(isa, 2)));
            worst = 0;  // (U^T U) H = I
            std::vector<double> utu(N * N, 0.0);
            for (std::size_t i = 0; i < N; ++i)
                for (std::size_t j = 0; j < N; ++j) {
                    if (j < i) BOOST_TEST_REQUIRE(u[i * N + j] == 0.0f);
                    for (std::size_t k = 0; k < N; ++k) utu[i * N + j] += double(u[k * N + i]) * u[k * N + j];
                }
            for (std::size_t i = 0; i < N; ++i)
                for (std::size_t j = 0; j < N; ++j) {
                    double s = 0;
                    for (std::size_t k = 0; k < N; ++k) s += utu[i * N + k] * h[k * N + j];
                    worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
                }
            BOOST_TEST(worst < 1e-3, "n " << n << ": |U^T U H - I| " << worst);
        }
    }
    std::vector<float> not_pd = {1, 2, 2, 1};
    BOOST_TEST(!linalg::cholesky_lower(not_pd.data(), 2, Backend::cpu(Isa::scalar)));
}

BOOST_AUTO_TEST_CASE(identity_hessian_is_rtn) {
    const int rows = 13, cols = 96;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 3);
    std::vector<float> h(std::size_t(cols * cols), 0.0f);
    for (int i = 0; i < cols; ++i) h[std::size_t(i * cols + i)] = 1.0f;
    for (const char* text : {"rtn:w4g32a", "rtn:w3s", "rtn:w2g16m", "rtn:w8g64s", "rtn:w3g32a,clip"}) {
        const auto s = parse_scheme(text);
        const auto rtn = quantize(MatrixView<const float>(w.data(), rows, cols), s).q;
        for (const bool act : {false, true}) {
            GptqOptions o;
            o.act_order = act;
            o.clip_search = s.options.clip;
            o.backend = Backend::cpu(best_isa());
            const auto g = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), h, s.spec, o);
            BOOST_TEST(g.q.codes == rtn.codes, text << " act " << act);
            BOOST_TEST(g.q.scales == rtn.scales, text);
            BOOST_TEST(g.q.zeros == rtn.zeros, text);
            BOOST_TEST(g.q.mins == rtn.mins, text);
            BOOST_TEST(g.column_order.empty() != act);  // act-order keeps its (here identity) order
        }
    }
}

// One row, two inputs with H = [[1, .5], [.5, 1]] and no damping: H^{-1} = [[4/3, -2/3], [-2/3, 4/3]],
// so column 0's error e moves into column 1 as w1 - e * (-2/3)/(4/3) = w1 + e/2.
BOOST_AUTO_TEST_CASE(one_row_by_hand) {
    // 2-bit grid of the row: scale 0.1, zero 2, levels -0.2 -0.1 0 0.1. Column 0 rounds 0.14 to
    // 0.1 (error 0.04); column 1 becomes -0.16 + 0.02 = -0.14 and rounds to -0.1, where RTN gives -0.2.
    const std::vector<float> w = {0.14f, -0.16f};
    const std::vector<float> h = {1.0f, 0.5f, 0.5f, 1.0f};
    const auto spec = parse_scheme("rtn:w2g2a").spec;
    GptqOptions o;
    o.damp = 0.0f;
    const auto g = gptq_quantize(MatrixView<const float>(w.data(), 1, 2), h, spec, o);
    const GroupParams p = find_group_params(w, spec);  // the group's grid, from the row as it is
    const float q0 = dequantize_value(quantize_value(w[0], p, spec), p, spec);
    const float w1 = w[1] + 0.5f * (w[0] - q0);
    const float q1 = dequantize_value(quantize_value(w1, p, spec), p, spec);
    const auto what = g.dequantize();
    BOOST_TEST(what[0] == q0);
    BOOST_TEST(what[1] == q1);
    BOOST_TEST(q1 != dequantize_value(quantize_value(w[1], p, spec), p, spec));  // the feedback changed the rounding
}

// Two rows, four inputs, H = two independent pairs [[1, .5], [.5, 1]] (columns 0-1 and 2-3), no
// damping, one per-channel 2-bit grid per row: by the formula above, column 1 receives half of
// column 0's error and column 3 half of column 2's; columns 0 and 2 are rounded as they are.
BOOST_AUTO_TEST_CASE(two_by_four_by_hand) {
    const std::vector<float> w = {0.14f, -0.16f, 0.02f, 0.11f,   //
                                  -0.30f, 0.05f, 0.21f, -0.02f};
    const std::vector<float> h = {1.0f, 0.5f, 0.0f, 0.0f,  //
                                  0.5f, 1.0f, 0.0f, 0.0f,  //
                                  0.0f, 0.0f, 1.0f, 0.5f,  //
                                  0.0f, 0.0f, 0.5f, 1.0f};
    const auto spec = parse_scheme("rtn:w2a").spec;
    GptqOptions o;
    o.damp = 0.0f;
    const auto what = gptq_quantize(MatrixView<const float>(w.data(), 2, 4), h, spec, o).dequantize();
    for (int r = 0; r < 2; ++r) {
        const float* row = w.data() + 4 * r;
        const GroupParams p = find_group_params(std::span<const float>(row, 4), spec);
        const auto rq = [&](float v) { return dequantize_value(quantize_value(v, p, spec), p, spec); };
        const float q0 = rq(row[0]), q1 = rq(row[1] + 0.5f * (row[0] - q0));
        const float q2 = rq(row[2]), q3 = rq(row[3] + 0.5f * (row[2] - q2));
        BOOST_TEST(what[std::size_t(4 * r + 0)] == q0);
        BOOST_TEST(what[std::size_t(4 * r + 1)] == q1);
        BOOST_TEST(what[std::size_t(4 * r + 2)] == q2);
        BOOST_TEST(what[std::size_t(4 * r + 3)] == q3);
    }
}

BOOST_AUTO_TEST_CASE(matches_the_obs_derivation) {
    struct Case {
        int rows, cols;
        const char* scheme;
    };
    for (const auto& c : {Case{2, 4, "rtn:w2g4a"}, Case{5, 40, "rtn:w3g8a"}, Case{7, 200, "rtn:w4g64s"}, Case{3, 150, "rtn:w3m"}}) {
        const auto w = qtest::random_weights(std::size_t(c.rows * c.cols), unsigned(c.cols), 0.0f);
        const auto x = correlated_inputs(3 * c.cols, c.cols, 5);
        const auto h = hessian_of(x, 3 * c.cols, c.cols);
        const auto spec = parse_scheme(c.scheme).spec;
        const auto expected = obs_reference(w, h, c.rows, c.cols, spec, 0.01f);
        GptqOptions o;
        o.block_size = 16;  // several lazy blocks even at 40 columns
        o.backend = Backend::cpu(best_isa());
        const auto got = gptq_quantize(MatrixView<const float>(w.data(), c.rows, c.cols), h, spec, o).dequantize();
        // float vs double arithmetic may flip a rounding tie now and then, never more than rarely
        std::size_t differ = 0;
        for (std::size_t i = 0; i < got.size(); ++i) differ += std::fabs(got[i] - expected[i]) > 1e-6f;
        BOOST_TEST(differ <= got.size() / 50, c.scheme << ": " << differ << " of " << got.size() << " weights differ");
    }
}

BOOST_AUTO_TEST_CASE(correlated_inputs_beat_rtn) {
    const int rows = 32, cols = 128, n = 512;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 9);
    const auto x = correlated_inputs(n, cols, 10);
    const auto h = hessian_of(x, n, cols);
    for (const char* text : {"rtn:w3g32a", "rtn:w2g64a", "rtn:w4s"}) {
        const auto s = parse_scheme(text);
        const auto rtn = quantize(MatrixView<const float>(w.data(), rows, cols), s).q;
        std::vector<float> rtn_hat(w.size());
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c) rtn_hat[std::size_t(r * cols + c)] = rtn.dequantize(r, c);
        for (const bool act : {false, true}) {
            GptqOptions o;
            o.act_order = act;
            o.backend = Backend::cpu(best_isa());
            const auto g = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), h, s.spec, o);
            const double eg = output_error(w, g.dequantize(), x, rows, cols, n), er = output_error(w, rtn_hat, x, rows, cols, n);
            BOOST_TEST_MESSAGE(text << (act ? " act-order" : "") << ": output error GPTQ / RTN = " << eg / er);
            BOOST_TEST(eg < 0.5 * er, text << " act " << act << ": " << eg << " vs RTN " << er);
        }
    }
}

BOOST_AUTO_TEST_CASE(act_order_groups) {
    const int rows = 6, cols = 64;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 12);
    auto h = hessian_of(correlated_inputs(256, cols, 13), 256, cols);
    for (int i = 0; i < cols; ++i) h[std::size_t(i * cols + i)] *= 1.0f + 0.05f * float((i * 37) % 11);  // distinct diagonal
    const auto spec = parse_scheme("rtn:w4g16a").spec;
    GptqOptions o;
    o.act_order = true;
    const auto dyn = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), h, spec, o);
    BOOST_TEST(!dyn.column_order.empty());
    BOOST_TEST(!std::is_sorted(dyn.column_order.begin(), dyn.column_order.end()));
    // GPTQModel's layout: codes in the original column order, scales per group, g_idx per column
    const auto what = dyn.dequantize();
    for (int r = 0; r < rows; ++r)
        for (int k = 0; k < cols; ++k) {
            const int c = dyn.column_order[std::size_t(k)], grp = dyn.g_idx[std::size_t(c)];
            const std::size_t gi = dyn.q.group_index(r, grp);
            const int code = dyn.q.codes[std::size_t(r * cols + k)];
            const float via_g_idx = dyn.q.scales[gi] * float(code - int(dyn.q.zeros[gi]));
            BOOST_TEST_REQUIRE(what[std::size_t(r * cols + c)] == via_g_idx);
        }
    for (int c = 0; c < cols; ++c) BOOST_TEST_REQUIRE(dyn.g_idx[std::size_t(c)] == int(std::find(dyn.column_order.begin(), dyn.column_order.end(), c) - dyn.column_order.begin()) / 16);
    // static groups: original order, contiguous groups, no reordering needed
    o.static_groups = true;
    const auto st = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), h, spec, o);
    BOOST_TEST(st.column_order.empty());
    for (int c = 0; c < cols; ++c) BOOST_TEST_REQUIRE(st.g_idx[std::size_t(c)] == c / 16);
    // without act-order, static groups are plain groups
    o.act_order = false;
    const auto plain_static = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), h, spec, o);
    o.static_groups = false;
    const auto plain = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), h, spec, o);
    BOOST_TEST(plain_static.q.codes == plain.q.codes);
    BOOST_TEST(plain_static.q.scales == plain.q.scales);
}

BOOST_AUTO_TEST_CASE(damping_dead_inputs_and_bad_input) {
    const int rows = 4, cols = 8;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 14);
    // rank one and no damping: not positive definite, so damping is raised and the result says so
    std::vector<float> h(std::size_t(cols * cols));
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < cols; ++j) h[std::size_t(i * cols + j)] = float((i + 1) * (j + 1));
    GptqOptions o;
    o.damp = 0.0f;
    const auto spec = parse_scheme("rtn:w4g8a").spec;
    const auto r = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), h, spec, o);
    BOOST_TEST(r.damp > 0.0f);
    BOOST_TEST(r.note.find("not positive definite") != std::string::npos);
    // a dead input: its weights are zeroed
    auto hd = random_spd(cols, 15);
    for (int j = 0; j < cols; ++j) hd[std::size_t(3 * cols + j)] = hd[std::size_t(j * cols + 3)] = 0.0f;
    const auto d = gptq_quantize(MatrixView<const float>(w.data(), rows, cols), hd, spec, {});
    BOOST_TEST(d.dead_columns == 1);
    const auto what = d.dequantize();
    for (int rr = 0; rr < rows; ++rr) BOOST_TEST(std::fabs(what[std::size_t(rr * cols + 3)]) <= d.q.scales[d.q.group_index(rr, 0)] / 2);
    BOOST_CHECK_THROW(gptq_quantize(MatrixView<const float>(w.data(), rows, cols), std::vector<float>(10), spec, {}), InvalidArgument);
    auto nan_h = hd;
    nan_h[5] = NAN;
    BOOST_CHECK_THROW(gptq_quantize(MatrixView<const float>(w.data(), rows, cols), nan_h, spec, {}), InvalidData);
}

// A factor cache (QuantizeSettings::gptq_factor_cache, as the sensitivity table uses one per
// block) changes no bit: the same schemes quantize the same codes with and without it; it holds
// one factor per (H, order, damping), and another H of the same size is not taken for the first.
BOOST_AUTO_TEST_CASE(factor_cache_changes_no_bit) {
    const int rows = 24, cols = 96;
    const auto x = correlated_inputs(300, cols, 11);
    const auto h = hessian_of(x, 300, cols);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(std::size_t(rows) * std::size_t(cols));
    for (auto& v : w) v = nd(rng);
    const MatrixView<const float> wv(w.data(), rows, cols);
    QuantizeSettings plain, cached;
    cached.gptq_factor_cache = std::make_shared<detail::GptqFactorCache>();
    const auto equal = [&](const QuantizedLayer& a, const QuantizedLayer& b) {
        if (a.column_order != b.column_order) return false;
        for (int r = 0; r < rows; ++r)
            for (int k = 0; k < cols; ++k)
                if (a.q.dequantize(r, k) != b.q.dequantize(r, k)) return false;
        return true;
    };
    std::size_t expected_factors = 0;
    for (const char* text : {"gptq:w4g32a", "gptq:w3g32a", "gptq:w2g16a", "gptq:w4g32a,act", "gptq:w3g32s,act"}) {
        const auto s = parse_scheme(text);
        const auto a = quantize(wv, s, {&h}, plain), b = quantize(wv, s, {&h}, cached);
        BOOST_TEST(equal(a, b), text);
        if (std::string(text) == "gptq:w4g32a" || std::string(text) == "gptq:w4g32a,act") ++expected_factors;  // a new order each
        BOOST_TEST(cached.gptq_factor_cache->factors() == expected_factors, text);
    }
    auto h2 = h;
    h2[5] *= 1.5f, h2[std::size_t(5) * std::size_t(cols)] *= 1.5f;  // still symmetric
    const auto s = parse_scheme("gptq:w4g32a");
    BOOST_TEST(equal(quantize(wv, s, {&h2}, plain), quantize(wv, s, {&h2}, cached)));
    BOOST_TEST(cached.gptq_factor_cache->factors() == expected_factors + 1);
}

// The factorisation's rounding does not depend on the thread count: on OpenBLAS, spotrf and
// strtri run on one thread (their threaded versions round otherwise, from about 150 columns),
// so GPTQ gives the same codes on 1, 2 and 3 threads. 320 columns, over that size.
BOOST_AUTO_TEST_CASE(the_same_codes_on_any_thread_count) {
    const int rows = 64, cols = 320;
    const auto x = correlated_inputs(700, cols, 21);
    const auto h = hessian_of(x, 700, cols);
    std::mt19937 rng(6);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(std::size_t(rows) * std::size_t(cols));
    for (auto& v : w) v = nd(rng);
    const MatrixView<const float> wv(w.data(), rows, cols);
    for (const char* text : {"gptq:w4g64a", "gptq:w3g64a,act"}) {
        std::vector<std::vector<float>> deq;
        for (const int threads : {1, 2, 3}) {
            QuantizeSettings o;
            o.backend = Backend::cpu(best_isa(), threads);
            const auto q = quantize(wv, parse_scheme(text), {&h}, o);
            auto& d = deq.emplace_back();
            for (int r = 0; r < rows; ++r)
                for (int k = 0; k < cols; ++k) d.push_back(q.q.dequantize(r, k));
        }
        BOOST_TEST((deq[0] == deq[1]), text << ": 1 and 2 threads");
        BOOST_TEST((deq[0] == deq[2]), text << ": 1 and 3 threads");
    }
}

// The factorisations behind GPTQ's U, past the size where the BLAS path cuts them into tiles
// (512): the same bits on 1, 2 and 3 threads, L L^T = A and L L^{-1} = I to float rounding.
BOOST_AUTO_TEST_CASE(factorisations_the_same_on_any_thread_count) {
    for (const int n : {700, 1100}) {
        const auto x = correlated_inputs(2 * n, n, 31);
        auto a = hessian_of(x, 2 * n, n);
        for (int i = 0; i < n; ++i) a[std::size_t(i) * std::size_t(n) + std::size_t(i)] += 0.01f;
        std::vector<std::vector<float>> factors, inverses;
        for (const int threads : {1, 2, 3}) {
            const Backend b = Backend::cpu(best_isa(), threads);
            auto l = a;
            BOOST_REQUIRE(linalg::cholesky_lower(l.data(), n, b));
            factors.push_back(l);
            linalg::invert_lower(l.data(), n, b);
            inverses.push_back(l);
        }
        BOOST_TEST((factors[0] == factors[1]), n << ": Cholesky, 1 and 2 threads");
        BOOST_TEST((factors[0] == factors[2]), n << ": Cholesky, 1 and 3 threads");
        BOOST_TEST((inverses[0] == inverses[1]), n << ": inverse, 1 and 2 threads");
        BOOST_TEST((inverses[0] == inverses[2]), n << ": inverse, 1 and 3 threads");
        const auto& L = factors[0];
        const auto& Li = inverses[0];
        const std::size_t N = std::size_t(n);
        double worst_a = 0, worst_i = 0, scale = 0;
        for (std::size_t i = 0; i < N; ++i) scale = std::max(scale, double(a[i * N + i]));
        for (std::size_t i = 0; i < N; ++i)
            for (std::size_t j = 0; j < N; ++j) {
                if (j > i) {
                    BOOST_TEST(L[i * N + j] == 0.0f);
                    BOOST_TEST(Li[i * N + j] == 0.0f);
                }
                double llt = 0, lli = 0;
                for (std::size_t k = 0; k <= std::min(i, j); ++k) llt += double(L[i * N + k]) * double(L[j * N + k]);
                for (std::size_t k = j; k <= i; ++k) lli += double(L[i * N + k]) * double(Li[k * N + j]);
                worst_a = std::max(worst_a, std::fabs(llt - double(a[i * N + j])));
                worst_i = std::max(worst_i, std::fabs(lli - (i == j ? 1.0 : 0.0)));
            }
        BOOST_TEST_MESSAGE(n << ": |L L^T - A| <= " << worst_a << " (diagonal up to " << scale << "), |L L^-1 - I| <= " << worst_i);
        BOOST_TEST(worst_a <= 1e-5 * scale);
        BOOST_TEST(worst_i <= 1e-4);
    }
}

BOOST_AUTO_TEST_SUITE_END()
