#include <immintrin.h>

#include <bit>
#include <cmath>
#include <random>

#include "common.hpp"
#include "qforge/core/half.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_half)

BOOST_AUTO_TEST_CASE(known_values) {
    BOOST_TEST(float_to_half(0.5f) == 0x3800);
    BOOST_TEST(float_to_half(-0.125f) == 0xB000);
    BOOST_TEST(float_to_half(65504.0f) == 0x7BFF);
    BOOST_TEST(float_to_half(65520.0f) == 0x7C00);  // rounds up past the largest half
    BOOST_TEST(float_to_half(5.9604645e-8f) == 0x0001);  // smallest subnormal
    BOOST_TEST(half_to_float(0x3C00) == 1.0f);
    BOOST_TEST(half_to_float(0x0001) == 5.9604645e-8f);
    BOOST_TEST(std::isnan(half_to_float(0x7E00)));
}

BOOST_AUTO_TEST_CASE(every_half_round_trips) {
    for (unsigned h = 0; h < 65536; ++h) {
        const float f = half_to_float(std::uint16_t(h));
        if (std::isnan(f)) continue;
        BOOST_TEST_REQUIRE(float_to_half(f) == h);
    }
}

// F16C is an independent implementation of the same IEEE rounding.
BOOST_AUTO_TEST_CASE(matches_f16c) {
    if (!__builtin_cpu_supports("f16c")) {
        BOOST_TEST_MESSAGE("CPU has no F16C; cross-check skipped");
        return;
    }
    std::mt19937 rng(7);
    std::uniform_int_distribution<std::uint32_t> bits;
    for (int i = 0; i < 2000000; ++i) {
        float f = std::bit_cast<float>(bits(rng));
        if (i % 2) f = std::ldexp(f - std::trunc(f), int(rng() % 40) - 28);  // also dense around half's range
        if (std::isnan(f)) continue;
        const auto hw = std::uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
        BOOST_TEST_REQUIRE(float_to_half(f) == hw, "f = " << f);
        BOOST_TEST_REQUIRE(std::bit_cast<std::uint32_t>(half_to_float(hw)) == std::bit_cast<std::uint32_t>(_cvtsh_ss(hw)));
    }
}

BOOST_AUTO_TEST_SUITE_END()
