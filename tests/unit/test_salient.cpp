// `,salient=P` (quantizers/salient.hpp): the kept channels are the top P% by H's diagonal and
// hold fp16(W) exactly; the other columns are exactly GPTQ's result on (W_r, H_rr), act-order
// composed; the layer's product equals X Ŵᵀ (double reference); bytes as documented; the
// scheme text round-trips and its bad combinations are refused; RTN and AWQ keep the same
// channels; on stories260K the kept channels lower GPTQ's, RTN's and AWQ's 3-bit KL divergence.
#include <algorithm>
#include <numeric>
#include <random>

#include "common.hpp"
#include "qforge/io/llama2c.hpp"
#include "qforge/models/llama/evaluate.hpp"
#include "qforge/models/llama/size.hpp"
#include "qforge/pipelines/llama/gptq.hpp"
#include "qforge/pipelines/llama/quantize_model.hpp"
#include "qforge/sources/llama/source.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_salient)

namespace {
struct Problem {
    std::size_t rows, cols;
    std::vector<float> w, x, h;  // w: rows x cols, x: n x cols, h = 2/n XᵀX
};

/// Random weights and inputs whose channels 3, 50, 51, 200 (and more) are large: the outliers
/// that salient channels are for.
Problem problem(std::size_t rows, std::size_t cols, std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd;
    Problem p{rows, cols, std::vector<float>(rows * cols), std::vector<float>(n * cols), std::vector<float>(cols * cols, 0.0f)};
    for (auto& v : p.w) v = nd(rng) * 0.05f;
    for (std::size_t t = 0; t < n; ++t)
        for (std::size_t j = 0; j < cols; ++j) p.x[t * cols + j] = nd(rng) * ((j % 61 == 3 || j == 50 || j == 51) ? 12.0f : 1.0f);
    for (std::size_t i = 0; i < cols; ++i)
        for (std::size_t k = 0; k < cols; ++k) {
            double s = 0;
            for (std::size_t t = 0; t < n; ++t) s += double(p.x[t * cols + i]) * double(p.x[t * cols + k]);
            p.h[i * cols + k] = float(2.0 * s / double(n));
        }
    return p;
}

double output_error(const Problem& p, const std::vector<float>& w_hat) {
    double e = 0;
    const std::size_t n = p.x.size() / p.cols;
    for (std::size_t t = 0; t < n; ++t)
        for (std::size_t r = 0; r < p.rows; ++r) {
            double d = 0;
            for (std::size_t j = 0; j < p.cols; ++j) d += (double(p.w[r * p.cols + j]) - double(w_hat[r * p.cols + j])) * double(p.x[t * p.cols + j]);
            e += d * d;
        }
    return e;
}
}  // namespace

BOOST_AUTO_TEST_CASE(scheme_text) {
    for (const char* text : {"gptq:w3g128a,salient=1", "gptq:w4g64a,act,salient=0.5", "gptq:w2g64a,damp=0.05,salient=2"}) {
        const auto s = parse_scheme(text);
        BOOST_TEST(s.options.salient > 0.0f);
        BOOST_TEST((parse_scheme(to_string(s)) == s));
    }
    BOOST_TEST(to_string(parse_scheme("gptq:w3g128a,salient=1")) == "gptq:w3g128a,salient=1");
    // any method: RTN then calibrates (the kept channels are picked by H's diagonal); the others
    // keep their pipelines
    for (const char* text : {"rtn:w4g32a,salient=1", "awq:w4g128a,salient=1", "awq+gptq:w3g128a,salient=2"})
        BOOST_TEST((parse_scheme(to_string(parse_scheme(text))) == parse_scheme(text)), text);
    BOOST_TEST((pipeline_of(parse_scheme("rtn:w4g32a,salient=1")) == Pipeline::sequential_hessian));
    BOOST_TEST((pipeline_of(parse_scheme("rtn:w4g32a")) == Pipeline::independent));
    BOOST_TEST((pipeline_of(parse_scheme("awq:w4g128a,salient=1")) == Pipeline::activation_scaled));
    BOOST_TEST(needs_calibration(parse_scheme("rtn:w4g32a,salient=1")));
    BOOST_TEST(!needs_calibration(parse_scheme("rtn:w4g32a")));
    BOOST_TEST((llama::run_pipeline(parse_scheme("rtn:w4g32a"), {{"blk.0.attn_q.weight", parse_scheme("rtn:w3g32a,salient=2")}}) ==
                Pipeline::sequential_hessian));
    BOOST_TEST((llama::run_pipeline(parse_scheme("rtn:w4g32a"), {{"blk.0.attn_q.weight", parse_scheme("rtn:w3g32a")}}) == Pipeline::independent));
    for (const char* bad : {"rtn:w4g32a,salient=1,had", "awq:q4_0,salient=1", "rtn:pq2n64g1024,salient=1", "gptq:w3g128a,salient=0", "gptq:w3g128a,salient=60",
                            "gptq:w3g128a,salient=x", "gptq:w3g128a,salient=", "rtn:w3g128a,salient", "gptq:w3g128a,had,salient=1", "gptq:pq2n64g1024,salient=1",
                            "gptq:q4_k,salient=1", "gptq:w3g128a,salient=1,salient=2", "rtn:iq4nlg32,salient=3", "awq:nf4g64,salient=1"})
        BOOST_CHECK_THROW(parse_scheme(bad), InvalidArgument);
    // a codebook grid's blocks would need the remaining columns to fill whole blocks: refused by
    // the parser, saying so (it failed later, in the packing, naming neither tensor nor cause)
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:iq4nlg32,salient=3"); }), {"codebook grid", "whole blocks"}));
    // the option without its value says what the value is
    BOOST_CHECK_EXCEPTION(parse_scheme("rtn:w3g128a,salient"), InvalidArgument,
                          [](const InvalidArgument& e) { return std::string(e.what()).find("salient= needs the percentage") != std::string::npos; });
}

BOOST_AUTO_TEST_CASE(kept_channels_and_the_rest) {
    const auto p = problem(64, 256, 512, 1);
    for (const char* text : {"gptq:w3g64a,salient=2", "gptq:w3g64a,act,salient=2"}) {
        const auto s = parse_scheme(text);
        LayerCalibration c;
        c.hessian = &p.h;
        const auto r = quantize(MatrixView<const float>(p.w.data(), p.rows, p.cols), s, c);
        // the kept channels: the 5 largest diagonal entries (2% of 256), ascending
        std::vector<int> idx(p.cols);
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return p.h[std::size_t(a) * p.cols + std::size_t(a)] > p.h[std::size_t(b) * p.cols + std::size_t(b)]; });
        std::vector<int> top(idx.begin(), idx.begin() + 5);
        std::sort(top.begin(), top.end());
        BOOST_TEST(r.wide_columns == top, boost::test_tools::per_element());
        BOOST_TEST(r.q.cols == 251);
        BOOST_TEST(r.cols() == 256);
        // the rest: GPTQ on (W_r, H_rr), its codes and its order mapped back to the columns
        std::vector<int> rest;
        for (int j = 0; j < int(p.cols); ++j)
            if (!std::binary_search(top.begin(), top.end(), j)) rest.push_back(j);
        std::vector<float> wr(p.rows * rest.size()), hr(rest.size() * rest.size());
        for (std::size_t i = 0; i < p.rows; ++i)
            for (std::size_t k = 0; k < rest.size(); ++k) wr[i * rest.size() + k] = p.w[i * p.cols + std::size_t(rest[k])];
        for (std::size_t i = 0; i < rest.size(); ++i)
            for (std::size_t k = 0; k < rest.size(); ++k) hr[i * rest.size() + k] = p.h[std::size_t(rest[i]) * p.cols + std::size_t(rest[k])];
        auto plain = s;
        plain.options.salient = 0.0f;
        LayerCalibration cr;
        cr.hessian = &hr;
        const auto alone = quantize(MatrixView<const float>(wr.data(), p.rows, rest.size()), plain, cr);
        BOOST_TEST((alone.q.codes == r.q.codes));
        BOOST_TEST((alone.q.scales == r.q.scales));
        const auto w_hat = r.dequantize(), w_alone = alone.dequantize();
        for (std::size_t i = 0; i < p.rows; ++i) {
            for (std::size_t k = 0; k < rest.size(); ++k) BOOST_TEST(w_hat[i * p.cols + std::size_t(rest[k])] == w_alone[i * rest.size() + k]);
            for (const int j : top) BOOST_TEST(w_hat[i * p.cols + std::size_t(j)] == round_to_half(p.w[i * p.cols + std::size_t(j)]));
        }
        // keeping the outlier channels lowers the output error on the data they came from
        const double with = output_error(p, w_hat), without = output_error(p, quantize(MatrixView<const float>(p.w.data(), p.rows, p.cols), plain, c).dequantize());
        BOOST_TEST_MESSAGE(text << ": output error " << with << " with the kept channels, " << without << " without");
        BOOST_TEST(with < 0.8 * without);

        // the layer: its product equals X Ŵᵀ, its dequantized form Ŵ, its bytes as documented
        const auto layer = llama::packed_linear(r);
        BOOST_TEST(layer.cols() == 256);
        BOOST_TEST(layer.stored_cols() == 251);
        const auto deq = std::get<Fp32Matrix>(llama::dequantized_linear(layer).weights()).data;
        BOOST_TEST((deq == w_hat));
        const std::size_t stored = llama::packed_linear(r.q).bytes();
        BOOST_TEST(layer.bytes() == stored + 5 * (4 + 2 * p.rows) + (s.options.act_order ? 251 * 4 : 0));
        // the product: the stored columns' own product on the gathered inputs (whatever its
        // kernels) plus the kept channels' X Vᵀ, and within the integer kernels' error of X Ŵᵀ
        const auto stored_layer = llama::packed_linear(r.q);
        const Backend be = Backend::cpu(best_isa(), 2);
        for (const std::size_t n : {std::size_t(1), std::size_t(7)}) {
            std::vector<float> y(n * p.rows), xg(n * 251), ys(n * p.rows);
            layer.forward(MatrixView<const float>(p.x.data(), n, p.cols), MatrixView<float>(y.data(), n, p.rows), be);
            for (std::size_t t = 0; t < n; ++t)
                for (std::size_t k = 0; k < 251; ++k) xg[t * 251 + k] = p.x[t * p.cols + std::size_t(r.column_order[k])];
            stored_layer.forward(MatrixView<const float>(xg.data(), n, 251), MatrixView<float>(ys.data(), n, p.rows), be);
            for (std::size_t t = 0; t < n; ++t)
                for (std::size_t i = 0; i < p.rows; ++i) {
                    double kept = 0, ref = 0, mag = 0;
                    for (std::size_t j = 0; j < 5; ++j) kept += double(r.wide_values[i * 5 + j]) * double(p.x[t * p.cols + std::size_t(top[j])]);
                    for (std::size_t j = 0; j < p.cols; ++j) {
                        ref += double(w_hat[i * p.cols + j]) * double(p.x[t * p.cols + j]);
                        mag += std::fabs(double(w_hat[i * p.cols + j]) * double(p.x[t * p.cols + j]));
                    }
                    BOOST_TEST(double(y[t * p.rows + i]) == double(ys[t * p.rows + i]) + kept, boost::test_tools::tolerance(1e-5));
                    BOOST_TEST(std::fabs(double(y[t * p.rows + i]) - ref) <= 2e-2 * mag);
                }
        }
        // GPTQ's stacked layers cut their rows: the kept channels' weights are cut with them
        const auto half = llama::packed_linear(r, 32, 64);
        const auto deq_half = std::get<Fp32Matrix>(llama::dequantized_linear(half).weights()).data;
        BOOST_TEST((deq_half == std::vector<float>(w_hat.begin() + 32 * 256, w_hat.end())));
        // the container's layout: the layer's whole width, the kept channels, the packed columns
        // (an order stored only when act-order left the others out of ascending order)
        const auto lay = llama::layout_of(layer);
        BOOST_TEST(lay.cols == layer.cols());
        BOOST_TEST(lay.salient == int(layer.wide()->columns.size()));
        BOOST_TEST(lay.packed_cols() == layer.stored_cols());
        BOOST_TEST(lay.ordered == !std::is_sorted(layer.input_order().begin(), layer.input_order().end()));
    }
    LayerCalibration none;
    BOOST_CHECK_THROW(quantize(MatrixView<const float>(p.w.data(), p.rows, p.cols), parse_scheme("gptq:w3g64a,salient=2"), none), InvalidArgument);
}

// RTN keeping salient channels: the same channels as GPTQ would keep (H's diagonal), the rest
// exactly RTN's codes on W_r (its groups counted along the remaining columns); without a Hessian
// refused, and quantize_linear (no calibration) refuses the scheme.
BOOST_AUTO_TEST_CASE(rtn_and_awq_keep_the_same_channels) {
    const auto p = problem(32, 192, 256, 4);
    LayerCalibration c;
    c.hessian = &p.h;
    const MatrixView<const float> wv(p.w.data(), p.rows, p.cols);
    const auto by_gptq = quantize(wv, parse_scheme("gptq:w3g32a,salient=3"), c);
    for (const char* text : {"rtn:w3g32a,salient=3", "rtn:w4g64s,salient=3"}) {
        const auto s = parse_scheme(text);
        const auto r = quantize(wv, s, c);
        BOOST_TEST(r.wide_columns == by_gptq.wide_columns, boost::test_tools::per_element());
        BOOST_TEST(r.wide_columns.size() == 6u);  // 3% of 192
        std::vector<int> rest;
        for (int j = 0; j < int(p.cols); ++j)
            if (!std::binary_search(r.wide_columns.begin(), r.wide_columns.end(), j)) rest.push_back(j);
        std::vector<float> wr(p.rows * rest.size());
        for (std::size_t i = 0; i < p.rows; ++i)
            for (std::size_t k = 0; k < rest.size(); ++k) wr[i * rest.size() + k] = p.w[i * p.cols + std::size_t(rest[k])];
        auto plain = s;
        plain.options.salient = 0.0f;
        const auto alone = quantize(MatrixView<const float>(wr.data(), p.rows, rest.size()), plain);
        BOOST_TEST((alone.q.codes == r.q.codes), text);
        BOOST_TEST((alone.q.scales == r.q.scales), text);
        const auto w_hat = r.dequantize();
        for (std::size_t i = 0; i < p.rows; ++i)
            for (const int j : r.wide_columns) BOOST_TEST(w_hat[i * p.cols + std::size_t(j)] == round_to_half(p.w[i * p.cols + std::size_t(j)]));
        BOOST_CHECK_THROW(quantize(wv, s, LayerCalibration{}), InvalidArgument);
        const llama::Linear fp(llama::Fp32Matrix{int(p.rows), int(p.cols), p.w});
        BOOST_CHECK_THROW(llama::quantize_linear(fp, s), InvalidArgument);
    }
    // AWQ's final rounding (the activation-scaled pipeline's, on the scaled weights and the scaled
    // inputs' Hessian): the same channels by that Hessian, the rest AWQ's rounding of W_r on H_rr
    const auto s = parse_scheme("awq:w3g32a,salient=3");
    const auto r = find_method("awq").round(wv, s, c, QuantizeSettings{});
    BOOST_TEST(r.wide_columns == by_gptq.wide_columns, boost::test_tools::per_element());
    std::vector<int> rest;
    for (int j = 0; j < int(p.cols); ++j)
        if (!std::binary_search(r.wide_columns.begin(), r.wide_columns.end(), j)) rest.push_back(j);
    std::vector<float> wr(p.rows * rest.size()), hr(rest.size() * rest.size());
    for (std::size_t i = 0; i < p.rows; ++i)
        for (std::size_t k = 0; k < rest.size(); ++k) wr[i * rest.size() + k] = p.w[i * p.cols + std::size_t(rest[k])];
    for (std::size_t i = 0; i < rest.size(); ++i)
        for (std::size_t k = 0; k < rest.size(); ++k) hr[i * rest.size() + k] = p.h[std::size_t(rest[i]) * p.cols + std::size_t(rest[k])];
    auto plain = s;
    plain.options.salient = 0.0f;
    LayerCalibration cr;
    cr.hessian = &hr;
    const auto alone = find_method("awq").round(MatrixView<const float>(wr.data(), p.rows, rest.size()), plain, cr, QuantizeSettings{});
    BOOST_TEST((alone.q.codes == r.q.codes));
    BOOST_TEST((alone.q.scales == r.q.scales));
}

BOOST_AUTO_TEST_CASE(stories260k_kl, *boost::unit_test::precondition(qtest::needs_data{"models/stories260K/stories260K.bin"})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path("models/stories260K/stories260K.bin")));
    std::mt19937_64 rng(3);
    std::vector<int> calib(2048), eval(1024);
    for (auto& t : calib) t = int(rng() % 512);
    for (auto& t : eval) t = int(rng() % 512);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 256;
    o.calibration.backend = Backend::cpu(best_isa(), 2);
    llama::EvalOptions e;
    e.context = 256;
    e.backend = Backend::cpu(best_isa(), 2);
    const auto plain = llama::gptq_quantize_model(w, calib, parse_scheme("gptq:w3g32a"), o);
    const auto kept = llama::gptq_quantize_model(w, calib, parse_scheme("gptq:w3g32a,salient=3"), o);
    const double kl_plain = llama::evaluate(plain, &w, eval, e).mean_kl(), kl_kept = llama::evaluate(kept, &w, eval, e).mean_kl();
    const double bpw_plain = llama::block_bits_per_weight(plain), bpw_kept = llama::block_bits_per_weight(kept);
    BOOST_TEST_MESSAGE("gptq:w3g32a KL " << kl_plain << " at " << bpw_plain << " bpw; salient=3 KL " << kl_kept << " at " << bpw_kept << " bpw");
    BOOST_TEST(kl_kept < kl_plain);
    BOOST_TEST(bpw_kept > bpw_plain);
    // every block linear carries its kept channels, and the bytes count them
    std::size_t extra = 0;
    for (const auto& L : kept.layers)
        for (const auto& b : llama::block_linears) {
            const auto& l = L.*b.member;
            BOOST_REQUIRE(l.wide());
            BOOST_TEST(l.wide()->columns.size() == std::size_t(salient_count(3.0f, l.cols())));
            extra += l.wide()->columns.size() * (4 + 2 * std::size_t(l.rows()));
        }
    BOOST_TEST(extra > 0u);

    // RTN (calibrated for its channels, the GPTQ pipeline's block order) and AWQ (kept channels in
    // its final rounding): lower KL than without, every block linear with its channels
    for (const auto& [without, with] : {std::pair{"rtn:w3g32a", "rtn:w3g32a,salient=3"}, std::pair{"awq:w3g32a", "awq:w3g32a,salient=3"}}) {
        const auto a = llama::quantize_model(w, calib, parse_scheme(without), o), b = llama::quantize_model(w, calib, parse_scheme(with), o);
        const double kl_a = llama::evaluate(a, &w, eval, e).mean_kl(), kl_b = llama::evaluate(b, &w, eval, e).mean_kl();
        BOOST_TEST_MESSAGE(without << " KL " << kl_a << " at " << llama::block_bits_per_weight(a) << " bpw; " << with << " KL " << kl_b << " at "
                                   << llama::block_bits_per_weight(b) << " bpw");
        BOOST_TEST(kl_b < kl_a, with);
        BOOST_TEST(llama::block_bits_per_weight(b) > llama::block_bits_per_weight(a));
        for (const auto& L : b.layers)
            for (const auto& bl : llama::block_linears) {
                const auto& l = L.*bl.member;
                BOOST_REQUIRE(l.wide());
                BOOST_TEST(l.wide()->columns.size() == std::size_t(salient_count(3.0f, l.cols())));
            }
    }
    // without calibration tokens RTN with salient channels is refused before any work
    BOOST_CHECK_THROW(llama::quantize_model(w, {}, parse_scheme("rtn:w3g32a,salient=3"), o), InvalidArgument);
}

BOOST_AUTO_TEST_SUITE_END()
