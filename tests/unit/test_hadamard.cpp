#define BOOST_TEST_MODULE hadamard
// The randomized Hadamard transform: every built-in H_m is a Hadamard matrix (H Hᵀ = m I); T is
// orthogonal (T then Tᵀ gives x back to 1e-6; T's columns against a dense T built by hand);
// a linear layer's outputs are unchanged when its rows are transformed and its inputs too; every
// instruction set's copy equals the oracle bit for bit; widths without a built-in order refused.
#include <bit>
#include <cmath>
#include <random>

#include "common.hpp"
#include "qforge/linalg/hadamard.hpp"
#include "qforge/runtime/dispatch.hpp"

using namespace qforge;

namespace {
std::vector<float> normal(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}
}  // namespace

BOOST_AUTO_TEST_CASE(built_in_orders_are_hadamard_matrices) {
    for (const int m : {1, 2, 12, 20, 36}) {
        const auto h = small_hadamard(m);
        BOOST_TEST_REQUIRE(h.size() == std::size_t(m * m));
        for (const int v : h) BOOST_TEST_REQUIRE((v == 1 || v == -1), "order " << m);
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < m; ++j) {
                int dot = 0;
                for (int k = 0; k < m; ++k) dot += h[std::size_t(i * m + k)] * h[std::size_t(j * m + k)];
                BOOST_TEST_REQUIRE(dot == (i == j ? m : 0), "order " << m << " rows " << i << ", " << j);
            }
    }
    BOOST_CHECK_THROW(small_hadamard(28), InvalidArgument);
}

BOOST_AUTO_TEST_CASE(transform_is_orthogonal_and_matches_its_definition) {
    for (const int n : {1, 2, 16, 12, 24, 20, 36, 192, 576, 1536}) {
        const HadamardTransform t(n, 7);
        // T built column by column from the definition: T e_j = H_n s_j e_j / √n with H_n = H_m ⊗ H_{2^k}
        const auto hm = small_hadamard(t.m);
        std::vector<float> tmp(static_cast<std::size_t>(n));
        for (int j = 0; j < n; j += std::max(1, n / 24)) {
            std::vector<float> e(std::size_t(n), 0.0f);
            e[std::size_t(j)] = 1.0f;
            t.apply(e.data(), tmp.data());
            for (int i = 0; i < n; ++i) {
                const int a = i / t.pow2, b = i % t.pow2, c = j / t.pow2, d = j % t.pow2;
                const int sylvester = (std::popcount(unsigned(b & d)) % 2) ? -1 : 1;
                const double want = double(hm[std::size_t(a * t.m + c)] * sylvester) * t.signs[std::size_t(j)] / std::sqrt(double(n));
                BOOST_TEST_REQUIRE(std::fabs(e[std::size_t(i)] - want) < 1e-6, "n " << n << " T[" << i << "][" << j << "]");
            }
        }
        // round trip and norm
        auto x = normal(std::size_t(n), 8);
        const auto x0 = x;
        double n0 = 0.0, n1 = 0.0;
        for (const float v : x) n0 += double(v) * v;
        t.apply(x.data(), tmp.data());
        for (const float v : x) n1 += double(v) * v;
        BOOST_TEST(std::fabs(n1 - n0) <= 1e-5 * n0, "n " << n);
        t.apply_transpose(x.data(), tmp.data());
        for (int i = 0; i < n; ++i) BOOST_TEST_REQUIRE(std::fabs(x[std::size_t(i)] - x0[std::size_t(i)]) < 1e-6, "n " << n << " i " << i);
    }
    // another seed, other signs; the same seed, the same
    BOOST_TEST(HadamardTransform(576, 1).signs != HadamardTransform(576, 2).signs);
    BOOST_TEST(HadamardTransform(576, 1).signs == HadamardTransform(576, 1).signs);
    BOOST_CHECK_THROW(HadamardTransform(11008, 1), InvalidArgument);
    BOOST_CHECK_THROW(HadamardTransform(100, 1), InvalidArgument);
}

// y = W x equals (W Tᵀ)(T x): each row of W transformed as a vector, the input too.
BOOST_AUTO_TEST_CASE(a_layer_keeps_its_outputs) {
    const int rows = 48, cols = 576;
    const HadamardTransform t(cols, 3);
    auto w = normal(std::size_t(rows) * std::size_t(cols), 4);
    auto x = normal(std::size_t(cols), 5);
    std::vector<double> y(static_cast<std::size_t>(rows));
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) y[std::size_t(r)] += double(w[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) * x[std::size_t(c)];
    std::vector<float> tmp(static_cast<std::size_t>(cols));
    for (int r = 0; r < rows; ++r) t.apply(w.data() + std::size_t(r) * std::size_t(cols), tmp.data());
    t.apply(x.data(), tmp.data());
    for (int r = 0; r < rows; ++r) {
        double v = 0.0;
        for (int c = 0; c < cols; ++c) v += double(w[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) * x[std::size_t(c)];
        BOOST_TEST(std::fabs(v - y[std::size_t(r)]) <= 1e-5 * (1.0 + std::fabs(y[std::size_t(r)])), "row " << r);
    }
}

BOOST_AUTO_TEST_CASE(every_instruction_set_equals_the_oracle) {
    for (const int n : {16, 12, 36, 576, 1536, 4096}) {
        const HadamardTransform t(n, 9);
        const auto x0 = normal(std::size_t(n), 10);
        for (const bool transpose : {false, true}) {
            auto want = x0;
            std::vector<float> tmp(static_cast<std::size_t>(n));
            rht_apply(t, want.data(), tmp.data(), transpose);
            for (const Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni}) {
                if (!isa_usable(isa)) {
                    BOOST_TEST_MESSAGE("Hadamard: " << isa_name(isa) << " not usable here, not checked");
                    continue;
                }
                auto got = x0;
                fp32_functions(isa).hadamard(t, got.data(), tmp.data(), transpose);
                for (int i = 0; i < n; ++i)
                    BOOST_TEST_REQUIRE(std::bit_cast<std::uint32_t>(got[std::size_t(i)]) == std::bit_cast<std::uint32_t>(want[std::size_t(i)]),
                                       isa_name(isa) << " n " << n << " i " << i);
            }
        }
    }
}
