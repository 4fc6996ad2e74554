// The randomized Hadamard transform: every built-in H_m is a Hadamard matrix (H Hᵀ = m I); T is
// orthogonal (T then Tᵀ gives x back to 1e-6; T's columns against a dense T built by hand);
// a linear layer's outputs are unchanged when its rows are transformed and its inputs too; every
// instruction set's copy equals the oracle bit for bit; widths without a built-in order refused.
#include <bit>
#include <cmath>
#include <random>

#include "common.hpp"
#include "qforge/linalg/hadamard.hpp"
#include "qforge/models/llama/model.hpp"
#include "qforge/quantizers/registry.hpp"
#include "qforge/runtime/dispatch.hpp"
#include "qforge/sources/llama/source.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_hadamard)

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

// ---- ',had' on schemes and layers ----

BOOST_AUTO_TEST_CASE(scheme_option_round_trips_and_is_refused_where_it_cannot_apply) {
    for (const char* text : {"rtn:w4g128a,had", "gptq:w4g128a,act,had", "rtn:nf4,had"}) {
        const auto s = parse_scheme(text);
        BOOST_TEST(s.options.hadamard, text);
        BOOST_TEST((parse_scheme(to_string(s)) == s), text);
    }
    BOOST_TEST(!parse_scheme("rtn:w4g128a").options.hadamard);
    for (const char* text : {"awq:w4g128a,had", "awq+gptq:w4g128a,had", "rtn:w4g128a,had,had"})
        BOOST_CHECK_THROW(parse_scheme(text), InvalidArgument);
    using S = Scheme<Rtn, Int<4>, Group<128>, Asym, Hadamard>;
    BOOST_TEST(S::text() == "rtn:w4g128a,had");
}

namespace {
/// rows x cols weights whose columns 3, 40 and 300 are 20 times larger: the outliers a grid's
/// range is wasted on without incoherence processing.
std::vector<float> outlier_weights(int rows, int cols, unsigned seed) {
    auto w = normal(std::size_t(rows) * std::size_t(cols), seed);
    for (int r = 0; r < rows; ++r)
        for (const int c : {3, 40, 300})
            if (c < cols) w[std::size_t(r) * std::size_t(cols) + std::size_t(c)] *= 20.0f;
    return w;
}
double sq_error(const std::vector<float>& a, const std::vector<float>& b) {
    double e = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) e += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    return e;
}
}  // namespace

BOOST_AUTO_TEST_CASE(rtn_with_had_quantizes_the_transformed_weights) {
    const int rows = 64, cols = 576;
    const auto w = outlier_weights(rows, cols, 21);
    const MatrixView<const float> wv(w.data(), std::size_t(rows), std::size_t(cols));
    QuantizeSettings o;
    o.backend = Backend::cpu(best_isa(), 2);
    const auto plain = quantize(wv, parse_scheme("rtn:w4g32a"), {}, o);
    const auto had = quantize(wv, parse_scheme("rtn:w4g32a,had"), {}, o);
    BOOST_TEST_REQUIRE(had.input_transform != nullptr);
    BOOST_TEST(had.input_transform->n == cols);
    BOOST_TEST(!plain.input_transform);
    // the codes are of W Tᵀ: RTN of the transformed rows, bit for bit
    std::vector<float> wt = w, tmp(static_cast<std::size_t>(cols));
    for (int r = 0; r < rows; ++r) had.input_transform->apply(wt.data() + std::size_t(r) * std::size_t(cols), tmp.data());
    const auto direct = quantize(MatrixView<const float>(wt.data(), std::size_t(rows), std::size_t(cols)), parse_scheme("rtn:w4g32a"), {}, o);
    BOOST_TEST(direct.q.codes == had.q.codes);
    // the compile-time scheme takes the same path
    const auto ct = quantize<Scheme<Rtn, Int<4>, Group<32>, Asym, Hadamard>>(wv, {}, o);
    BOOST_TEST(ct.q.codes == had.q.codes);
    // dequantized in the original space; the outliers no longer spoil their groups
    const double e_plain = sq_error(plain.dequantize(), w), e_had = sq_error(had.dequantize(), w);
    BOOST_TEST_MESSAGE("rtn:w4g32a weight error " << e_plain << ", with ',had' " << e_had);
    BOOST_TEST(e_had < 0.8 * e_plain);
    // a width without a built-in order is quantized untransformed, and the note says so
    const auto odd = outlier_weights(8, 172, 22);
    const auto r = quantize(MatrixView<const float>(odd.data(), 8, 172), parse_scheme("rtn:w4g4a,had"), {}, o);
    BOOST_TEST(!r.input_transform);
    BOOST_TEST(r.note.find("without the transform") != std::string::npos, r.note);
}

BOOST_AUTO_TEST_CASE(a_transformed_layer_multiplies_and_dequantizes_like_the_original) {
    const int rows = 40, cols = 1536;
    const auto w = outlier_weights(rows, cols, 23);
    const auto x = normal(std::size_t(cols) * 3, 24);
    const Backend backend = Backend::cpu(best_isa(), 2);
    // FP32: W Tᵀ with T on the input gives W x
    const auto t = std::make_shared<const HadamardTransform>(cols, 5);
    std::vector<float> wt = w, tmp(static_cast<std::size_t>(cols));
    for (int r = 0; r < rows; ++r) t->apply(wt.data() + std::size_t(r) * std::size_t(cols), tmp.data());
    const llama::Linear fp32(Fp32Matrix{rows, cols, wt}, {}, t);
    std::vector<float> y(std::size_t(rows) * 3);
    fp32.forward(MatrixView<const float>(x.data(), 3, std::size_t(cols)), MatrixView<float>(y.data(), 3, std::size_t(rows)), backend);
    for (int n = 0; n < 3; ++n)
        for (int r = 0; r < rows; ++r) {
            double want = 0.0, mag = 0.0;
            for (int c = 0; c < cols; ++c) {
                want += double(w[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) * x[std::size_t(n) * std::size_t(cols) + std::size_t(c)];
                mag += std::fabs(double(w[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) * x[std::size_t(n) * std::size_t(cols) + std::size_t(c)]);
            }
            BOOST_TEST_REQUIRE(std::fabs(y[std::size_t(n) * std::size_t(rows) + std::size_t(r)] - want) <= 1e-5 * mag, "token " << n << " row " << r);
        }
    BOOST_TEST(fp32.bytes() == std::size_t(rows) * std::size_t(cols) * 4 + 8);
    // packed: dequantized_linear undoes the transform, equal to QuantizedLayer::dequantize
    const auto q = quantize(MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols)), parse_scheme("rtn:w8g32a,had"), {},
                            QuantizeSettings{.backend = backend});
    const llama::Linear packed = llama::packed_linear(q.q, q.column_order, q.input_transform);
    const auto back = llama::dequantized_linear(packed, backend);
    BOOST_TEST(std::get<Fp32Matrix>(back.weights()).data == q.dequantize());
    BOOST_TEST(sq_error(q.dequantize(), w) < 1e-3 * sq_error(std::vector<float>(w.size(), 0.0f), w));
    BOOST_CHECK_THROW(llama::layout_of(packed), InvalidArgument);  // no stored layout holds it yet
    BOOST_CHECK_THROW(llama::Linear(Fp32Matrix{rows, 576, std::vector<float>(std::size_t(rows) * 576)}, {}, t), InvalidArgument);
}

// The tiled in-place transpose that builds T H Tᵀ for ',had' GPTQ: the plain transpose, element for
// element, on sizes around the 64-wide tiles and on 1 and 3 threads.
BOOST_AUTO_TEST_CASE(tiled_transpose_is_the_transpose) {
    for (const std::size_t n : {1u, 2u, 63u, 64u, 65u, 130u, 576u}) {
        std::vector<float> a(n * n);
        for (std::size_t i = 0; i < a.size(); ++i) a[i] = float(i);
        for (const int threads : {1, 3}) {
            auto t = a;
            detail::transpose_square(t.data(), n, threads);
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < n; ++j) BOOST_TEST_REQUIRE(t[i * n + j] == a[j * n + i], "n " << n << " (" << i << ", " << j << ")");
        }
    }
}

// A transform cache (QuantizeSettings::hadamard_cache, one per block in the sensitivity table)
// changes no bit: `,had` schemes quantize the same codes with and without it, it transforms a
// layer's weights and Hessian once for all of them, and other weights of the same shape are not
// taken for the first.
BOOST_AUTO_TEST_CASE(transform_cache_changes_no_bit) {
    const int rows = 32, cols = 576, tokens = 700;
    const auto w = outlier_weights(rows, cols, 31);
    const auto x = normal(std::size_t(tokens) * std::size_t(cols), 32);
    const auto h = qtest::hessian_of(x, tokens, cols);
    const MatrixView<const float> wv(w.data(), std::size_t(rows), std::size_t(cols));
    QuantizeSettings plain, cached;
    cached.hadamard_cache = std::make_shared<detail::HadamardCache>();
    for (const char* text : {"gptq:w4g64a,had", "gptq:w3g128a,had", "rtn:w4g32a,had"}) {
        const auto s = parse_scheme(text);
        const auto a = quantize(wv, s, {&h}, plain), b = quantize(wv, s, {&h}, cached);
        BOOST_TEST(a.q.codes == b.q.codes, text);
        BOOST_TEST(a.dequantize() == b.dequantize(), text);
    }
    BOOST_TEST(cached.hadamard_cache->weights.size() == 1u);
    BOOST_TEST(cached.hadamard_cache->hessians.size() == 1u);  // RTN reads no Hessian
    auto w2 = w;
    w2[7] += 1.0f;
    const auto s = parse_scheme("gptq:w4g64a,had");
    const MatrixView<const float> w2v(w2.data(), std::size_t(rows), std::size_t(cols));
    BOOST_TEST(quantize(w2v, s, {&h}, plain).q.codes == quantize(w2v, s, {&h}, cached).q.codes);
    BOOST_TEST(cached.hadamard_cache->weights.size() == 2u);
    // a Hessian of the wrong size is refused before the transform reads it, cache or not
    const std::vector<float> small(std::size_t(cols) * 3);
    BOOST_CHECK_THROW(quantize(wv, s, {&small}, plain), InvalidArgument);
    BOOST_CHECK_THROW(quantize(wv, s, {&small}, cached), InvalidArgument);
}

BOOST_AUTO_TEST_SUITE_END()
