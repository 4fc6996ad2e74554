// Codebook grids (grids/) and their packed formats: the tables equal the published ones, the
// scheme text names them, RTN rounds to the nearest level with the documented scale, GPTQ and
// AWQ run on them, and packing is exact.
#include <algorithm>
#include <random>

#include "common.hpp"
#include "qforge/formats/ggml_types.hpp"
#include "qforge/formats/registry.hpp"
#include "qforge/quantizers/registry.hpp"
#include "qforge/runtime/backend.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_codebook)

namespace {
std::vector<float> hessian_of_random_inputs(int cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    const int n = 4 * cols;
    std::vector<float> x(std::size_t(n) * std::size_t(cols));
    for (int t = 0; t < n; ++t) {
        float carry = 0;
        for (int c = 0; c < cols; ++c) x[std::size_t(t * cols + c)] = carry = 0.7f * carry + nd(rng);
    }
    return qtest::hessian_of(x, n, cols);
}
double output_error(const std::vector<float>& w, const std::vector<float>& w_hat, const std::vector<float>& h, int rows, int cols) {
    double e = 0;
    for (int r = 0; r < rows; ++r)
        for (int i = 0; i < cols; ++i)
            for (int j = 0; j < cols; ++j)
                e += double(w[std::size_t(r * cols + i)] - w_hat[std::size_t(r * cols + i)]) * h[std::size_t(i * cols + j)] *
                     double(w[std::size_t(r * cols + j)] - w_hat[std::size_t(r * cols + j)]);
    return e;
}
}  // namespace

BOOST_AUTO_TEST_CASE(iq4_nl_is_llamacpps_table) {
    // kvalues_iq4nl of ggml-common.h, copied from llama.cpp
    const int published[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    for (int i = 0; i < 16; ++i) {
        BOOST_TEST(iq4nl_codebook.levels[std::size_t(i)] == float(published[i]));
        BOOST_TEST(int(iq4nl_codebook.kernel_levels[std::size_t(i)]) == published[i]);
    }
    BOOST_TEST(iq4nl_codebook.kernel_unit == 1.0f);
    // its format is ggml's IQ4_NL: type 20, 32 weights in 18 bytes
    BOOST_TEST(IQ4_NL::info.gguf.has_value());
    BOOST_TEST(std::uint32_t(*IQ4_NL::info.gguf) == 20u);
    BOOST_TEST(ggml_type_info(GgmlType::IQ4_NL).block_bytes == sizeof(IQ4_NL::block_type));
    BOOST_TEST(ggml_type_info(GgmlType::IQ4_NL).block_weights == std::size_t(IQ4_NL::N));
}

namespace {
// the standard normal quantile, by bisection on the CDF 0.5 * erfc(-x / sqrt 2)
double normal_quantile(double p) {
    double lo = -10, hi = 10;
    for (int i = 0; i < 200; ++i) {
        const double mid = 0.5 * (lo + hi);
        (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
}
}  // namespace

// NF4 as QLoRA defines it: quantiles of N(0, 1) at 8 equally spaced probabilities from
// delta = (1/32 + 1/30) / 2 to 1/2 for the positive half and 7 for the negative half, plus 0,
// normalised by the largest; equal to the published table, and its kernel levels round(127 L).
BOOST_AUTO_TEST_CASE(nf4_is_qloras_normal_float) {
    const double offset = 1.0 - 0.5 * (1.0 / 32 + 1.0 / 30);  // 0.9677083
    std::vector<double> levels;
    for (int i = 0; i < 8; ++i) levels.push_back(normal_quantile(offset + (0.5 - offset) * i / 8));
    for (int i = 0; i < 7; ++i) levels.push_back(-normal_quantile(offset + (0.5 - offset) * i / 7));
    levels.push_back(0.0);
    const double top = normal_quantile(offset);
    for (auto& l : levels) l /= top;
    std::sort(levels.begin(), levels.end());
    for (std::size_t i = 0; i < 16; ++i) {
        BOOST_TEST(std::fabs(double(nf4_codebook.levels[i]) - levels[i]) < 2e-6, "level " << i << ": " << nf4_codebook.levels[i] << " vs " << levels[i]);
        BOOST_TEST(int(nf4_codebook.kernel_levels[i]) == int(std::lround(127.0 * nf4_codebook.levels[i])));
    }
    BOOST_TEST(nf4_codebook.levels[7] == 0.0f);  // an exact zero
    // blocks of 64, 34 bytes: 4.25 bits per weight
    BOOST_TEST(sizeof(NF4::block_type) == 34u);
    BOOST_TEST(NF4::grid_spec.group_size == 64);
    BOOST_TEST(!NF4::info.gguf.has_value());
}

BOOST_AUTO_TEST_CASE(nf4_absmax_scale_and_nearest_level) {
    const int rows = 4, cols = 128;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 15);
    const auto q = quantize<Scheme<Rtn, Nf4, Group<64>>>(MatrixView<const float>(w.data(), rows, cols)).q;
    BOOST_TEST(to_string(Scheme<Rtn, Nf4, Group<64>>::runtime()) == "rtn:nf4g64");
    for (int r = 0; r < rows; ++r)
        for (int g = 0; g < 2; ++g) {
            float absmax = 0;
            for (int c = 64 * g; c < 64 * g + 64; ++c) absmax = std::max(absmax, std::fabs(w[std::size_t(r * cols + c)]));
            const float s = q.scales[q.group_index(r, g)];
            BOOST_TEST(s == half_to_float(float_to_half(absmax)));  // QLoRA's absmax, stored as fp16
            for (int c = 64 * g; c < 64 * g + 64; ++c)
                for (const float level : nf4_codebook.levels)
                    BOOST_TEST_REQUIRE(std::fabs(w[std::size_t(r * cols + c)] - q.dequantize(r, c)) <=
                                       std::fabs(w[std::size_t(r * cols + c)] - s * level) * (1 + 1e-6f) + 1e-12f);
        }
    const auto p = NF4::pack(q);
    BOOST_TEST(8.0 * double(p.bytes()) / (rows * cols) == 4.25);
    const auto back = NF4::unpack(p);
    BOOST_TEST((back.codes == q.codes && back.scales == q.scales));
    // GPTQ onto NF4 from the text form
    std::vector<float> eye(std::size_t(cols * cols), 0.0f);
    for (int i = 0; i < cols; ++i) eye[std::size_t(i * cols + i)] = 1.0f;
    BOOST_TEST((quantize(MatrixView<const float>(w.data(), rows, cols), parse_scheme("gptq:nf4"), {&eye, nullptr, nullptr}).q.codes == q.codes));
}

BOOST_AUTO_TEST_CASE(scheme_text_names_codebooks) {
    BOOST_TEST((parse_scheme("rtn:iq4nlg32") == Scheme<Rtn, Iq4Nl, Group<32>>::runtime()));
    BOOST_TEST((parse_scheme("gptq:iq4nl,act") == Scheme<Gptq, Iq4Nl, Group<32>, Sym, ActOrder>::runtime()));  // default: the block
    BOOST_TEST(to_string(parse_scheme("rtn:iq4nl")) == "rtn:iq4nlg32");
    BOOST_TEST(parse_scheme("awq:iq4nlg64").spec.group_size == 64);
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:iq4nlg32a"); }), {"no zero point"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:fp4g32"); }), {"'w<bits>'", "iq4nl, nf4"}));
}

BOOST_AUTO_TEST_CASE(rtn_rounds_to_the_nearest_level) {
    const int rows = 6, cols = 96;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 5);
    const auto spec = parse_scheme("rtn:iq4nlg32").spec;
    const auto q = quantize(MatrixView<const float>(w.data(), rows, cols), parse_scheme("rtn:iq4nlg32")).q;
    for (int r = 0; r < rows; ++r)
        for (int g = 0; g < 3; ++g) {
            const float s = q.scales[q.group_index(r, g)];
            // the scale maps the group's weight of largest magnitude onto the level -127 (fp16-rounded)
            float extreme = 0;
            for (int c = 32 * g; c < 32 * g + 32; ++c)
                if (std::fabs(w[std::size_t(r * cols + c)]) > std::fabs(extreme)) extreme = w[std::size_t(r * cols + c)];
            BOOST_TEST(s == half_to_float(float_to_half(extreme / -127.0f)));
            for (int c = 32 * g; c < 32 * g + 32; ++c) {
                const float v = w[std::size_t(r * cols + c)];
                const float got = q.dequantize(r, c);
                for (const float level : spec.codebook->levels) BOOST_TEST_REQUIRE(std::fabs(v - got) <= std::fabs(v - s * level) * (1 + 1e-6f) + 1e-12f);
            }
        }
}

BOOST_AUTO_TEST_CASE(gptq_and_awq_run_on_codebooks) {
    const int rows = 16, cols = 64;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 6);
    const MatrixView<const float> v(w.data(), rows, cols);
    // identity Hessian: GPTQ has nothing to feed back and equals RTN
    std::vector<float> eye(std::size_t(cols * cols), 0.0f);
    for (int i = 0; i < cols; ++i) eye[std::size_t(i * cols + i)] = 1.0f;
    const auto rtn = quantize<Scheme<Rtn, Iq4Nl, Group<32>>>(v);
    const auto g_eye = quantize<Scheme<Gptq, Iq4Nl, Group<32>>>(v, {&eye, nullptr, nullptr});
    BOOST_TEST((g_eye.q.codes == rtn.q.codes && g_eye.q.scales == rtn.q.scales));
    // correlated inputs: GPTQ's output error is well below RTN's on the same grid
    const auto h = hessian_of_random_inputs(cols, 7);
    const auto gptq = quantize<Scheme<Gptq, Iq4Nl, Group<32>>>(v, {&h, nullptr, nullptr});
    const double e_rtn = output_error(w, rtn.dequantize(), h, rows, cols), e_gptq = output_error(w, gptq.dequantize(), h, rows, cols);
    BOOST_TEST_MESSAGE("iq4nl output error GPTQ / RTN = " << e_gptq / e_rtn);
    BOOST_TEST(e_gptq < 0.8 * e_rtn);
    std::vector<float> mean_abs(std::size_t(cols), 1.0f);
    const auto awq = quantize(v, parse_scheme("awq:iq4nlg32"), {&h, &mean_abs, nullptr});
    BOOST_TEST(awq.q.spec.codebook == &iq4nl_codebook);
}

BOOST_AUTO_TEST_CASE(packing_is_exact_and_checked) {
    const int rows = 5, cols = 128;
    const auto w = qtest::random_weights(std::size_t(rows * cols), 8);
    const auto q = quantize(MatrixView<const float>(w.data(), rows, cols), parse_scheme("rtn:iq4nlg32,clip")).q;
    const auto p = IQ4_NL::pack(q);
    BOOST_TEST(p.bytes() == std::size_t(rows) * 4 * 18);
    const auto back = IQ4_NL::unpack(p);
    BOOST_TEST((back.codes == q.codes && back.scales == q.scales));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { (void)IQ4_NL::pack(quantize(MatrixView<const float>(w.data(), rows, cols), parse_scheme("rtn:iq4nlg64")).q); }),
                              {"iq4_nl", "group size 32"}));
    const auto w100 = qtest::random_weights(100, 9);
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { (void)IQ4_NL::pack(quantize(MatrixView<const float>(w100.data(), 1, 100), parse_scheme("rtn:iq4nlg32")).q); }),
                              {"whole 32-weight blocks", "100 columns"}));
    // a spec packs into its codebook's format by default
    bool is_iq4 = false;
    visit_packing_format(q.spec, rows, cols, [&](auto f) { is_iq4 = std::is_same_v<typename decltype(f)::type, IQ4_NL>; });
    BOOST_TEST(is_iq4);
}

// QLoRA's double quantization: the dynamic map by hand, the second quantization against a
// straightforward restatement, the format's bytes and bits per weight, and the scheme text.
BOOST_AUTO_TEST_CASE(dynamic_map_by_hand) {
    BOOST_TEST(std::is_sorted(dynamic_map.begin(), dynamic_map.end()));
    BOOST_TEST(std::adjacent_find(dynamic_map.begin(), dynamic_map.end()) == dynamic_map.end());  // 256 distinct values
    BOOST_TEST(dynamic_map.back() == 1.0f);
    BOOST_TEST(std::count(dynamic_map.begin(), dynamic_map.end(), 0.0f) == 1);
    // exponent 10^-6, one step of [0.1, 1]: its midpoint 0.55
    BOOST_TEST(*std::upper_bound(dynamic_map.begin(), dynamic_map.end(), 0.0f) == float(0.55e-6));
    // exponent 10^0, 64 steps of 0.9/64: the largest midpoint is 1 - 0.45/64; the smallest 0.1 + 0.45/64
    BOOST_TEST(dynamic_map[254] == float(1.0 - 0.45 / 64));
    BOOST_TEST(dynamic_map[0] == -float(1.0 - 0.45 / 64));  // no -1: the map is asymmetric at the ends
    BOOST_TEST(std::count(dynamic_map.begin(), dynamic_map.end(), float(0.1 + 0.45 / 64)) == 1);
    // exponent 10^-3, 8 steps of 0.9/8: midpoints 0.15625e-3 ... 0.94375e-3
    BOOST_TEST(std::count(dynamic_map.begin(), dynamic_map.end(), float(0.15625e-3)) == 1);
    BOOST_TEST(std::count(dynamic_map.begin(), dynamic_map.end(), float(-0.94375e-3)) == 1);
    for (std::size_t i = 0; i < 127; ++i) BOOST_TEST_REQUIRE(dynamic_map[i] == -dynamic_map[254 - i]);
    BOOST_TEST(int(dynamic_map_code(0.0f)) == 127);
    BOOST_TEST(int(dynamic_map_code(2.0f)) == 255);
    BOOST_TEST(int(dynamic_map_code(-1.0f)) == 0);
}

BOOST_AUTO_TEST_CASE(second_quantization_of_the_scales) {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(0.01f, 0.2f);
    std::vector<float> s(600);  // two full runs of 256 and a short one
    for (auto& x : s) x = u(rng);
    const auto dq = double_quantize(s);
    double mean = 0;
    for (const float x : s) mean += x;
    BOOST_TEST(dq.offset == float(mean / 600.0));
    BOOST_TEST(dq.absmax2.size() == 3u);
    for (std::size_t b = 0; b < 3; ++b) {
        float a = 0;
        for (std::size_t i = b * 256; i < std::min<std::size_t>(600, b * 256 + 256); ++i) a = std::max(a, std::fabs(s[i] - dq.offset));
        BOOST_TEST(dq.absmax2[b] == a);
        for (std::size_t i = b * 256; i < std::min<std::size_t>(600, b * 256 + 256); ++i) {
            // the code is the nearest value of the map, found here by sorting distances
            const float x = (s[i] - dq.offset) * (1.0f / a);
            std::vector<std::pair<float, int>> d;
            for (int k = 0; k < 256; ++k) d.push_back({std::fabs(x - dynamic_map[std::size_t(k)]), k});
            BOOST_TEST_REQUIRE(int(dq.codes[i]) == std::min_element(d.begin(), d.end())->second);
            // within the map's gap near 1 (0.9/64) of the run's absmax
            BOOST_TEST_REQUIRE(std::fabs(dq.scale(i) - s[i]) <= a * 0.9f / 64 / 2 * 1.001f);
        }
    }
    const std::vector<float> equal(10, 0.25f);  // nothing to spread: every scale is the offset
    const auto flat = double_quantize(equal);
    for (std::size_t i = 0; i < equal.size(); ++i) BOOST_TEST(flat.scale(i) == 0.25f);
}

BOOST_AUTO_TEST_CASE(nf4_double_quant_format) {
    BOOST_TEST(to_string(parse_scheme("rtn:nf4g64,dq")) == "rtn:nf4g64,dq");
    BOOST_TEST((parse_scheme("gptq:nf4,dq,act") == Scheme<Gptq, Nf4, Group<64>, Sym, DoubleQuant, ActOrder>::runtime()));
    BOOST_TEST((parse_scheme("rtn:nf4g64,dq").spec.scale_type == ScaleType::dq8));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:iq4nlg32,dq"); }), {"nf4 grid only"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:w4g64a,dq"); }), {"nf4 grid only"}));

    const int rows = 12, cols = 576;  // 108 blocks: one short second-level run
    const auto w = qtest::random_weights(std::size_t(rows * cols), 10);
    const MatrixView<const float> v(w.data(), rows, cols);
    const auto q = quantize(v, parse_scheme("rtn:nf4g64,dq")).q;
    const auto plain = quantize(v, parse_scheme("rtn:nf4g64")).q;
    BOOST_TEST((q.codes == plain.codes));  // the codes come from the fp32 absmax, as in QLoRA
    for (int r = 0; r < rows; ++r)
        for (int b = 0; b < cols / 64; ++b) {  // fp32 absmax (not rounded to fp16)
            float a = 0;
            for (int c = 64 * b; c < 64 * b + 64; ++c) a = std::max(a, std::fabs(w[std::size_t(r * cols + c)]));
            BOOST_TEST_REQUIRE(q.scales[q.group_index(r, b)] == a);
        }
    bool is_dq = false;
    visit_packing_format(q.spec, rows, cols, [&](auto f) { is_dq = std::is_same_v<typename decltype(f)::type, NF4_DQ>; });
    BOOST_TEST(is_dq);
    const auto p = NF4_DQ::pack(q);
    BOOST_TEST(p.bytes() == std::size_t(rows * cols / 64) * 33 + 1 * 4 + 4);
    BOOST_TEST(std::fabs(8.0 * double(p.bytes()) / double(rows * cols) - (4.0 + 8.0 / 64 + 64.0 / (rows * cols))) < 1e-12);
    // stored scales are the second quantization of the fp32 ones; codes unchanged
    std::vector<float> first(q.scales.begin(), q.scales.end());
    const auto dq = double_quantize(first);
    const auto back = NF4_DQ::unpack(p);
    BOOST_TEST((back.codes == q.codes));
    for (std::size_t i = 0; i < first.size(); ++i) BOOST_TEST_REQUIRE(back.scales[i] == dq.scale(i));
    // the same through the kernels' view
    std::vector<float> deq(std::size_t(rows * cols));
    Backend{}.dequantize(LinearWeights(p), MatrixView<float>(deq.data(), rows, cols));
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c)
            BOOST_TEST_REQUIRE(deq[std::size_t(r * cols + c)] == back.dequantize(r, c));
    // the tables are checked
    auto bad = p;
    bad.absmax2[0] = std::numeric_limits<float>::quiet_NaN();
    BOOST_TEST(qtest::has_all(NF4_DQ::fault(bad), {"second-level block 0", "bad absmax"}));
    bad = p;
    bad.offset = std::numeric_limits<float>::infinity();
    BOOST_TEST(qtest::has_all(NF4_DQ::fault(bad), {"offset"}));
    BOOST_TEST(NF4_DQ::fault(p).empty());
}

BOOST_AUTO_TEST_SUITE_END()
