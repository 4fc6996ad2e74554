// The method extension point: compile-time schemes for every method equal the registry's runtime
// path for the same text and the algorithm functions called directly with the same options, bit
// for bit; the registry's errors name what is wrong.
#include <random>

#include "common.hpp"
#include "qforge/quantizers/registry.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_quantizer)

namespace {
constexpr int rows = 24, cols = 96;

struct Calib {
    std::vector<float> h, mean_abs;
};
// inputs with a few loud channels, so AWQ's scales and GPTQ's act-order both matter
Calib calibration(unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    const int n = 256;
    std::vector<float> x(std::size_t(n) * cols);
    for (int t = 0; t < n; ++t)
        for (int c = 0; c < cols; ++c) x[std::size_t(t * cols + c)] = nd(rng) * (c % 17 == 3 ? 8.0f : 1.0f) + 0.3f * x[std::size_t(t * cols + (c + 1) % cols)];
    Calib out{qtest::hessian_of(x, n, cols), std::vector<float>(cols)};
    for (int i = 0; i < cols; ++i) {
        double a = 0;
        for (int t = 0; t < n; ++t) a += std::fabs(double(x[std::size_t(t * cols + i)]));
        out.mean_abs[std::size_t(i)] = float(a / n);
    }
    return out;
}

bool same(const QuantizedLayer& a, const QuantizedLayer& b) {
    return a.q.codes == b.q.codes && a.q.scales == b.q.scales && a.q.zeros == b.q.zeros && a.q.mins == b.q.mins &&
           a.column_order == b.column_order && a.input_scales == b.input_scales;
}
bool same(const QuantizedLayer& a, const QuantizedMatrix& q) {
    return a.q.codes == q.codes && a.q.scales == q.scales && a.q.zeros == q.zeros && a.q.mins == q.mins;
}

// compile time == runtime (registry, from the scheme's text)
template <class S>
QuantizedLayer both_paths(MatrixView<const float> w, const LayerCalibration& c, const QuantizeSettings& o = {}) {
    const auto a = quantize<S>(w, c, o);
    const auto b = quantize(w, parse_scheme(S::text()), c, o);
    BOOST_TEST(same(a, b), S::text() << ": compile-time and runtime results differ");
    return a;
}
}  // namespace

BOOST_AUTO_TEST_CASE(every_method_compiles_and_equals_its_runtime_path_and_the_algorithm) {
    const auto w = qtest::random_weights(std::size_t(rows) * cols, 71);
    const MatrixView<const float> v(w.data(), rows, cols);
    const auto cal = calibration(72);
    const LayerCalibration c{&cal.h, &cal.mean_abs, nullptr};

    // RTN: the plain quantizer
    const auto rtn = both_paths<Scheme<Rtn, Int<3>, Group<32>, Sym, Clip>>(v, {});
    BOOST_TEST(same(rtn, RtnQuantizer(QuantSpec{3, 32, ZeroPoint::symmetric}, true).quantize(v)));

    // GPTQ with act-order: the algorithm with the same options; dynamic groups keep the order
    using G = Scheme<Gptq, Int<4>, Group<32>, Asym, ActOrder>;
    static_assert(std::is_same_v<G::method, Gptq>);
    const auto gptq = both_paths<G>(v, c);
    GptqOptions go;
    go.act_order = true;
    const auto direct = gptq_quantize(v, cal.h, QuantSpec{4, 32}, go);
    BOOST_TEST(same(gptq, direct.q));
    BOOST_TEST(gptq.column_order == direct.column_order);
    BOOST_TEST(!gptq.column_order.empty());
    BOOST_TEST(G::text() == "gptq:w4g32a,act");

    // AWQ: the scale search for this layer, then the clip search on W diag(s)
    const auto awq = both_paths<Scheme<Awq, Int<4>, Group<32>, Asym>>(v, c);
    const auto found = awq_search_scales({{v}}, cal.mean_abs, cal.h, QuantSpec{4, 32}, AwqOptions{});
    BOOST_TEST(awq.input_scales == found.scales);
    BOOST_TEST(awq.alpha == found.alpha);
    std::vector<float> ws(w.size());
    for (int r = 0; r < rows; ++r)
        for (int k = 0; k < cols; ++k) ws[std::size_t(r * cols + k)] = w[std::size_t(r * cols + k)] * found.scales[std::size_t(k)];
    const auto hs = scale_hessian(cal.h, found.scales);
    BOOST_TEST(same(awq, awq_clip_quantize(MatrixView<const float>(ws.data(), rows, cols), hs, QuantSpec{4, 32}, AwqOptions{})));
    // Ŵ divides the scales back out: close to W, and not the codes' own values
    const auto w_hat = awq.dequantize();
    BOOST_TEST(w_hat[5] == awq.q.dequantize(0, 5) / found.scales[5]);

    // AWQ+GPTQ: the same scales, GPTQ (static groups) on the scaled weights and Hessian
    const auto ag = both_paths<Scheme<AwqGptq, Int<4>, Group<32>, Asym, ActOrder, StaticGroups>>(v, c);
    BOOST_TEST(ag.input_scales == found.scales);
    GptqOptions sg;
    sg.act_order = sg.static_groups = true;
    BOOST_TEST(same(ag, gptq_quantize(MatrixView<const float>(ws.data(), rows, cols), hs, QuantSpec{4, 32}, sg).q));
    BOOST_TEST(ag.column_order.empty());

    // TWQ: AWQ whose search weights chosen rows by λ; with every weight 1 it is AWQ
    std::vector<float> ones(rows, 1.0f), lambda(rows, 1.0f);
    for (int r = 0; r < rows; r += 5) lambda[std::size_t(r)] = 50.0f;
    const auto twq_plain = both_paths<Scheme<Twq, Int<4>, Group<32>, Asym>>(v, {&cal.h, &cal.mean_abs, &ones});
    BOOST_TEST(same(twq_plain, awq));
    const auto twq = both_paths<Scheme<Twq, Int<4>, Group<32>, Asym>>(v, {&cal.h, &cal.mean_abs, &lambda});
    BOOST_TEST(twq.input_scales == awq_search_scales({{v, &lambda}}, cal.mean_abs, cal.h, QuantSpec{4, 32}, AwqOptions{}).scales);
}

// the issue's own example: quantize<Scheme<Gptq, Int<4>, Group<128>, Asym, ActOrder>>(W, calib)
BOOST_AUTO_TEST_CASE(gptq_w4g128a_act_compile_time_equals_runtime) {
    const int r = 16, c = 256;
    const auto w = qtest::random_weights(std::size_t(r) * c, 76);
    std::mt19937 rng(77);
    std::normal_distribution<float> nd;
    std::vector<float> x(std::size_t(512) * c);
    for (auto& v : x) v = nd(rng);
    for (int t = 0; t < 512; ++t)
        for (int i = 0; i < c; i += 7) x[std::size_t(t * c + i)] *= 3.0f;  // loud channels: act-order matters
    const auto h = qtest::hessian_of(x, 512, c);
    using S = Scheme<Gptq, Int<4>, Group<128>, Asym, ActOrder>;
    const MatrixView<const float> v(w.data(), std::size_t(r), std::size_t(c));
    const auto a = quantize<S>(v, {&h, nullptr, nullptr});
    const auto b = quantize(v, parse_scheme("gptq:w4g128a,act"), {&h, nullptr, nullptr});
    BOOST_TEST(same(a, b));
    GptqOptions o;
    o.act_order = true;
    const auto direct = gptq_quantize(v, h, QuantSpec{4, 128}, o);
    BOOST_TEST(same(a, direct.q));
    BOOST_TEST(a.column_order == direct.column_order);
}

BOOST_AUTO_TEST_CASE(results_do_not_depend_on_threads) {
    const auto w = qtest::random_weights(std::size_t(rows) * cols, 73);
    const MatrixView<const float> v(w.data(), rows, cols);
    const auto cal = calibration(74);
    QuantizeSettings one, many;
    one.backend = Backend::cpu(Isa::scalar, 1);
    many.backend = Backend::cpu(Isa::scalar, 3);
    for (const char* text : {"gptq:w3g32m,act", "awq+gptq:w4g32a", "awq:w2g32a"}) {
        const auto s = parse_scheme(text);
        BOOST_TEST(same(quantize(v, s, {&cal.h, &cal.mean_abs, nullptr}, one), quantize(v, s, {&cal.h, &cal.mean_abs, nullptr}, many)), text);
    }
}

BOOST_AUTO_TEST_CASE(registry_lists_each_method_once_and_errors_name_the_problem) {
    for (std::size_t i = 0; i < method_table.size(); ++i)
        for (std::size_t j = i + 1; j < method_table.size(); ++j) BOOST_TEST(method_table[i].info.name != method_table[j].info.name);
    for (const auto& m : method_table) {
        BOOST_TEST(m.quantize != nullptr);
        BOOST_TEST((m.round != nullptr) == (m.info.pipeline == Pipeline::activation_scaled), m.info.name);
    }
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("spqr:w4g16a"); }),
                              {"unknown method 'spqr'", "rtn, gptq, awq, awq+gptq, twq"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("awq:w4g128a,act"); }), {"'act'", "gptq, awq+gptq"}));
    const auto w = qtest::random_weights(std::size_t(rows) * cols, 75);
    const MatrixView<const float> v(w.data(), rows, cols);
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { quantize(v, parse_scheme("gptq:w4g32a")); }),
                              {"gptq", "the input Hessian"}));
    std::vector<float> h(std::size_t(cols) * cols, 0.0f);
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { quantize<Scheme<Awq, Int<4>, Group<32>>>(v, {&h, nullptr, nullptr}); }),
                              {"awq", "mean |x|"}));
}

BOOST_AUTO_TEST_SUITE_END()
