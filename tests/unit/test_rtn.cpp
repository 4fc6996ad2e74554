#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <limits>

#include "common.hpp"
#include "qforge/io/llama2c.hpp"
#include "qforge/metrics/weight_error.hpp"
#include "qforge/quantizers/registry.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_rtn)

namespace {
QuantizedMatrix rtn(const std::vector<float>& w, int rows, int cols, QuantSpec spec, bool clip = false, int threads = 1) {
    return RtnQuantizer(spec, clip, {}, threads).quantize(MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols)));
}
}  // namespace

// Worked by hand: extreme -1.0 gives s = -1 / -8 = 0.125; codes round(w / s) + 8.
BOOST_AUTO_TEST_CASE(symmetric_by_hand) {
    const std::vector<float> w{0.3f, -1.0f, 0.74f, 0.0f};
    const auto q = rtn(w, 1, 4, {4, 0, ZeroPoint::symmetric, ScaleType::f32});
    BOOST_TEST(q.scales[0] == 0.125f);
    BOOST_TEST((q.codes == std::vector<std::uint8_t>{10, 0, 14, 8}));
    BOOST_TEST((q.dequantize() == std::vector<float>{0.25f, -1.0f, 0.75f, 0.0f}));
    // positive extreme: s = 4 / -8 = -0.5 (negative scale), still exact at the extreme
    const auto p = rtn({1.0f, -2.0f, 0.5f, 4.0f}, 1, 4, {4, 0, ZeroPoint::symmetric, ScaleType::f32});
    BOOST_TEST(p.scales[0] == -0.5f);
    BOOST_TEST((p.codes == std::vector<std::uint8_t>{6, 12, 7, 0}));
    BOOST_TEST((p.dequantize() == std::vector<float>{1.0f, -2.0f, 0.5f, 4.0f}));
}

// Range [-1, 3]: s = 4/15, z = round(1 / s) = round(3.75) = 4; codes round(w / s) + 4.
BOOST_AUTO_TEST_CASE(asymmetric_integer_zero_by_hand) {
    const auto q = rtn({-1.0f, 2.1f, 0.5f, 3.0f}, 1, 4, {4, 0, ZeroPoint::integer, ScaleType::f32});
    BOOST_TEST(q.scales[0] == 4.0f / 15.0f);
    BOOST_TEST(q.zeros[0] == 4);
    BOOST_TEST((q.codes == std::vector<std::uint8_t>{0, 12, 6, 15}));  // -3.75->-4, 7.875->8, 1.875->2, 11.25->11
    const float s = 4.0f / 15.0f;
    BOOST_TEST((q.dequantize() == std::vector<float>{s * -4, s * 8, s * 2, s * 11}));
}

// Float minimum (Q4_1 style): m = -1, s = (3 - -1)/15; codes round((w - m) / s).
BOOST_AUTO_TEST_CASE(asymmetric_float_min_by_hand) {
    const auto q = rtn({-1.0f, 2.1f, 0.5f, 3.0f}, 1, 4, {4, 0, ZeroPoint::float_min, ScaleType::f32});
    BOOST_TEST(q.mins[0] == -1.0f);
    BOOST_TEST(q.scales[0] == 4.0f / 15.0f);
    BOOST_TEST((q.codes == std::vector<std::uint8_t>{0, 12, 6, 15}));  // 0, 11.625->12, 5.625->6, 15
}

// group_range's lane-wise scans against the plain ones they replace (std::minmax_element's
// first minimum and last maximum; the first value of largest magnitude), bit for bit: every
// length 1..80 (a partial last lane, none, several), ties between +a and -a in different lanes,
// signed zeros at either end, NaN and infinity.
BOOST_AUTO_TEST_CASE(group_range_equals_the_plain_scans) {
    const auto bits = [](float v) { return std::bit_cast<std::uint32_t>(v); };
    const QuantSpec asym{4, 0, ZeroPoint::integer, ScaleType::f32}, sym{4, 0, ZeroPoint::symmetric, ScaleType::f32};
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> pick(0, 9);
    const float specials[] = {0.0f, -0.0f, 1.5f, -1.5f, 3.0f, -3.0f, std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(), 0.25f, -0.25f};
    int checked = 0;
    for (int n = 1; n <= 80; ++n)
        for (int trial = 0; trial < 40; ++trial) {
            std::vector<float> v(static_cast<std::size_t>(n));
            for (auto& x : v) {
                const int k = pick(rng);
                // mostly small finite values, sometimes a special (NaN and infinity rarer)
                x = k < 6 ? specials[std::size_t(pick(rng) % 6)] * float(1 + pick(rng)) / 4.0f : specials[std::size_t(k)];
                if (trial < 20 && !std::isfinite(x)) x = 0.5f;
            }
            const auto [lo_it, hi_it] = std::minmax_element(v.begin(), v.end());
            const GroupRange a = group_range(v, asym);
            BOOST_TEST_REQUIRE((bits(a.lo) == bits(*lo_it) || (std::isnan(a.lo) && std::isnan(*lo_it))), "n " << n << " trial " << trial);
            BOOST_TEST_REQUIRE((bits(a.hi) == bits(*hi_it) || (std::isnan(a.hi) && std::isnan(*hi_it))), "n " << n << " trial " << trial);
            float extreme = 0.0f;
            for (const float x : v)
                if (std::fabs(x) > std::fabs(extreme)) extreme = x;
            BOOST_TEST_REQUIRE(bits(group_range(v, sym).extreme) == bits(extreme), "n " << n << " trial " << trial);
            ++checked;
        }
    BOOST_TEST(checked == 80 * 40);
}

BOOST_AUTO_TEST_CASE(all_equal_and_zero_groups) {
    // groups of 4: [5 5 5 5] [0 0 0 0] [-2 -2 -2 -2]
    const std::vector<float> w{5, 5, 5, 5, 0, 0, 0, 0, -2, -2, -2, -2};
    for (ZeroPoint z : {ZeroPoint::symmetric, ZeroPoint::integer, ZeroPoint::float_min}) {
        const auto q = rtn(w, 1, 12, {4, 4, z, ScaleType::f32});
        const auto d = q.dequantize();
        for (int i = 0; i < 12; ++i) BOOST_TEST(d[std::size_t(i)] == w[std::size_t(i)], boost::test_tools::tolerance(1e-6f));
        // the zero group is exactly zero whatever the grid
        BOOST_TEST(q.scales[1] == 0.0f);
        for (int i = 4; i < 8; ++i) BOOST_TEST(d[std::size_t(i)] == 0.0f);
    }
    // float_min with an all-equal group is exact: s = 0, m = value
    const auto m = rtn({3, 3, 3}, 1, 3, {2, 0, ZeroPoint::float_min, ScaleType::f32});
    BOOST_TEST(m.scales[0] == 0.0f);
    BOOST_TEST((m.dequantize() == std::vector<float>{3, 3, 3}));
}

BOOST_AUTO_TEST_CASE(fp16_scales_are_stored_values) {
    const auto w = qtest::random_weights(4 * 96, 1);
    const auto q16 = rtn(w, 4, 96, {4, 32, ZeroPoint::integer, ScaleType::f16});
    const auto q32 = rtn(w, 4, 96, {4, 32, ZeroPoint::integer, ScaleType::f32});
    for (std::size_t i = 0; i < q16.scales.size(); ++i) {
        BOOST_TEST(q16.scales[i] == round_to_half(q16.scales[i]));
        BOOST_TEST(q16.scales[i] == round_to_half(q32.scales[i]));
    }
}

BOOST_AUTO_TEST_CASE(shorter_last_group) {
    // 172 columns, g64: groups of 64, 64, 44; each group quantized on its own range
    const auto w = qtest::random_weights(3 * 172, 2);
    const auto q = rtn(w, 3, 172, {3, 64, ZeroPoint::symmetric, ScaleType::f32});
    BOOST_TEST(q.groups_per_row() == 3);
    for (int r = 0; r < 3; ++r) {
        float extreme = 0;
        for (int c = 128; c < 172; ++c)
            if (std::fabs(w[std::size_t(r * 172 + c)]) > std::fabs(extreme)) extreme = w[std::size_t(r * 172 + c)];
        BOOST_TEST(q.scales[q.group_index(r, 2)] == extreme / -4.0f);
    }
}

BOOST_AUTO_TEST_CASE(clip_search_never_worse_and_helps_on_outliers) {
    const auto w = qtest::random_weights(16 * 256, 3, 0.02f);
    for (ZeroPoint z : {ZeroPoint::symmetric, ZeroPoint::integer, ZeroPoint::float_min}) {
        const QuantSpec spec{3, 128, z, ScaleType::f16};
        const auto plain = rtn(w, 16, 256, spec, false), clipped = rtn(w, 16, 256, spec, true);
        const auto dp = plain.dequantize(), dc = clipped.dequantize();
        double total_plain = 0, total_clip = 0;
        for (int g = 0; g < 32; ++g) {
            double ep = 0, ec = 0;
            for (int i = 0; i < 128; ++i) {
                const std::size_t k = std::size_t(g * 128 + i);
                ep += std::pow(double(w[k]) - dp[k], 2);
                ec += std::pow(double(w[k]) - dc[k], 2);
            }
            BOOST_TEST(ec <= ep);
            total_plain += ep;
            total_clip += ec;
        }
        BOOST_TEST(total_clip < 0.95 * total_plain);
    }
}

BOOST_AUTO_TEST_CASE(thread_count_does_not_change_results) {
    const auto w = qtest::random_weights(37 * 200, 4);
    const QuantSpec spec{4, 64, ZeroPoint::integer, ScaleType::f16};
    const auto a = rtn(w, 37, 200, spec, true, 1), b = rtn(w, 37, 200, spec, true, 2), c = rtn(w, 37, 200, spec, true, 5);
    BOOST_TEST((a.codes == b.codes && a.scales == b.scales && a.zeros == b.zeros));
    BOOST_TEST((a.codes == c.codes && a.scales == c.scales && a.zeros == c.zeros));
}

BOOST_AUTO_TEST_CASE(compile_time_scheme_matches_runtime) {
    const auto w = qtest::random_weights(8 * 128, 5);
    const MatrixView<const float> v(w.data(), 8, 128);
    using S = Scheme<Rtn, Int<3>, Group<32>, Sym, Clip>;
    const auto a = quantize<S>(v).q;
    const auto b = RtnQuantizer(QuantSpec{3, 32, ZeroPoint::symmetric}, true).quantize(v);
    BOOST_TEST((a.codes == b.codes && a.scales == b.scales));
}

BOOST_AUTO_TEST_CASE(bad_input_is_a_clear_error) {
    std::vector<float> w(8, 0.5f);
    w[5] = std::numeric_limits<float>::quiet_NaN();
    BOOST_CHECK_EXCEPTION(rtn(w, 2, 4, {4, 0}), InvalidData, [](const InvalidData& e) {
        return std::string(e.what()).find("NaN at (row 1, col 1)") != std::string::npos;
    });
    w[5] = std::numeric_limits<float>::infinity();
    BOOST_CHECK_EXCEPTION(rtn(w, 2, 4, {4, 0}), InvalidData, [](const InvalidData& e) {
        return std::string(e.what()).find("Inf") != std::string::npos;
    });
    BOOST_CHECK_THROW(rtn({}, 0, 4, {4, 0}), InvalidData);
    BOOST_CHECK_THROW(rtn({1, 2}, 1, 2, {5, 0}), InvalidArgument);
    BOOST_CHECK_THROW(rtn({1, 2}, 1, 2, {4, -2}), InvalidArgument);
    BOOST_CHECK_THROW(RtnQuantizer(QuantSpec{4, 0}, true, ClipSearch{0, 0.5f}), InvalidArgument);
    // weights too large for an fp16 scale
    BOOST_CHECK_THROW(rtn({1e9f, 1.0f}, 1, 2, {4, 0, ZeroPoint::symmetric, ScaleType::f16}), InvalidData);
}

// A group whose scale (or minimum) the scale type cannot hold is an error naming the row, the
// group and its columns, with the value and the limit; the same with the clip search and with
// threads (the first failing row is reported).
BOOST_AUTO_TEST_CASE(scale_errors_name_row_and_group) {
    std::vector<float> w(4 * 32, 0.1f);
    for (int c = 8; c < 16; ++c) w[std::size_t(2 * 32 + c)] = 1e30f;  // row 2, group 1 of 4
    const auto message = [&](const std::string& scheme, int threads) {
        try {
            (void)rtn(w, 4, 32, parse_scheme(scheme).spec, parse_scheme(scheme).options.clip, threads);
        } catch (const InvalidData& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    for (const int threads : {1, 4}) {
        BOOST_TEST(message("rtn:w4g8a", threads) ==
                   "row 2, group 1 (columns 8-15): the group's scale 6.67e+28 does not fit fp16 (max 65504); the weights are too large for fp16 scales");
        BOOST_TEST(message("rtn:w4g8a,clip", threads).find("row 2, group 1 (columns 8-15): the group's scale") == 0u);
        BOOST_TEST(message("rtn:w4g8m", threads).find("row 2, group 1 (columns 8-15): the group's minimum 1e+30 does not fit fp16") == 0u);
        BOOST_TEST(message("rtn:w8g8s", threads).find("row 2, group 1 (columns 8-15): the group's scale -7.81e+27 does not fit fp16") == 0u);
    }
    // a range beyond float itself (f32 scales)
    std::vector<float> wide = {3e38f, -3e38f, 1.0f, 2.0f};
    try {
        (void)rtn(wide, 2, 2, {4, 0, ZeroPoint::integer, ScaleType::f32});
        BOOST_ERROR("no error");
    } catch (const InvalidData& e) {
        BOOST_TEST(std::string(e.what()).find("row 0, group 0 (columns 0-1): the group's scale inf is not a finite number") == 0u, e.what());
    }
}

// Independent truth on real weights: more bits, strictly less error.
BOOST_AUTO_TEST_CASE(error_decreases_with_bits_on_real_weights,
                     *boost::unit_test::precondition(qtest::needs_data{"models/stories260K/stories260K.bin"})) {
    const auto ck = io::Llama2cCheckpoint::load(qtest::data_path("models/stories260K/stories260K.bin"));
    for (const char* name : {"layers.0.feed_forward.w1", "layers.2.attention.wq", "layers.4.feed_forward.w2"}) {
        const auto& t = ck.tensor(name);
        const MatrixView<const float> v(t.data.data(), std::size_t(t.rows), std::size_t(t.cols));
        for (ZeroPoint z : {ZeroPoint::symmetric, ZeroPoint::integer, ZeroPoint::float_min}) {
            double previous = std::numeric_limits<double>::infinity();
            for (int bits : {2, 3, 4, 8}) {
                const auto q = RtnQuantizer(QuantSpec{bits, 32, z}).quantize(v);
                const auto d = q.dequantize();
                const double mse = weight_error(t.data, d).mse;
                BOOST_TEST(mse < previous, name << " " << to_string(z) << " w" << bits);
                previous = mse;
            }
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
