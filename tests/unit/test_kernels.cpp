#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "common.hpp"
#include "qforge/formats/registry.hpp"
#include "qforge/quantizers/rtn.hpp"
#include "qforge/runtime/dispatch.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_kernels)

namespace {

struct Case {
    int rows, cols;
    QuantSpec spec;
};

/// The integer a code contributes to the kernels' dot products, and the scale its group's dot is
/// multiplied by: code - zero on affine grids, the kernel level on codebook grids (whose scale
/// is then d * kernel_unit).
int kernel_weight(const QuantizedMatrix& q, int code, int zero) {
    return q.spec.codebook ? q.spec.codebook->kernel_levels[std::size_t(code)] : code - zero;
}
float kernel_scale(const QuantizedMatrix& q, std::size_t idx) {
    return q.spec.codebook ? q.scales[idx] * q.spec.codebook->kernel_unit : q.scales[idx];
}

/// The recipe of activation.hpp written out directly from the unpacked matrix, natural order:
/// an implementation independent of formats, codecs and backends.
std::vector<float> recipe_gemv(const QuantizedMatrix& q, const std::vector<float>& x) {
    const int g = q.spec.group_length(q.cols);
    const QuantizedActivation a = quantize_activation(x, g, LaneOrder::natural);
    std::vector<float> y(std::size_t(q.rows));
    for (int r = 0; r < q.rows; ++r) {
        float acc_y = 0.0f;
        for (int gi = 0; gi < q.groups_per_row(); ++gi) {
            const std::size_t idx = q.group_index(r, gi);
            const int zero = q.spec.zero == ZeroPoint::integer ? q.zeros[idx] : q.spec.symmetric_zero();
            const bool fm = q.spec.zero == ZeroPoint::float_min;
            float acc = 0.0f;
            for (int k = 0; k < a.sub_blocks_in_group(gi); ++k) {
                const int sub = a.sub_index(gi, k);
                std::int32_t d = 0;
                for (int i = 0; i < act_sub_block && gi * g + k * act_sub_block + i < std::min(q.cols, (gi + 1) * g); ++i) {
                    const int code = q.codes[std::size_t(r) * std::size_t(q.cols) + std::size_t(gi * g + k * act_sub_block + i)];
                    d += (fm ? code : kernel_weight(q, code, zero)) * a.slots(sub)[i];
                }
                acc = std::fma(a.scale[std::size_t(sub)], float(d), acc);
            }
            acc_y = std::fma(kernel_scale(q, idx), acc, acc_y);
            if (fm) acc_y = std::fma(q.mins[idx], a.group_sum[std::size_t(gi)], acc_y);
        }
        y[std::size_t(r)] = acc_y;
    }
    return y;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<Isa> vector_isas() {
    std::vector<Isa> out;
    for (Isa i : {Isa::avx2, Isa::avx512_vnni})
        if (isa_usable(i)) out.push_back(i);
    return out;
}

/// Every check for one format and case: scalar against independent truth, every vector ISA
/// against the scalar oracle bit for bit.
template <class F>
void check_format(const Case& c, unsigned seed) {
    const auto w = qtest::random_weights(std::size_t(c.rows) * std::size_t(c.cols), seed);
    const auto quantized = RtnQuantizer(c.spec).quantize(MatrixView<const float>(w.data(), std::size_t(c.rows), std::size_t(c.cols)));
    const auto p = F::pack(quantized);
    // what the format stores: the quantizer's matrix, or with double-quantized scales the second quantization's
    const auto q = [&] {
        if constexpr (requires { typename F::dq_grid; }) return F::unpack(p);
        else return quantized;
    }();
    const std::string what = F::name() + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols) + " g" +
                             std::to_string(c.spec.group_size) + " " + to_string(c.spec.zero);

    // dequantize: scalar equals the definition exactly
    const auto reference = q.dequantize();
    const auto scalar_dq = dequantize<F>(p, Isa::scalar, 1);
    BOOST_TEST(bitwise_equal(scalar_dq, reference), what);

    // gemv: scalar equals the written-out recipe exactly ...
    auto x = qtest::random_weights(std::size_t(c.cols), seed + 1, 0.05f);
    for (auto& v : x) v *= 20.0f;
    std::vector<float> y_scalar(std::size_t(c.rows));
    gemv<F>(p, x, y_scalar, Isa::scalar, 1);
    BOOST_TEST(bitwise_equal(y_scalar, recipe_gemv(q, x)), what);

    // ... and is within the stated tolerance of the exact product W_hat x: the only error is the
    // activation rounding, |x_i - dx*xq_i| <= dx/2, plus float accumulation.
    const QuantizedActivation a = quantize_activation(x, c.spec.group_length(c.cols), LaneOrder::natural);
    for (int r = 0; r < c.rows; ++r) {
        double exact = 0, bound = 0, magnitude = 0;
        for (int col = 0; col < c.cols; ++col) {
            const double wv = reference[std::size_t(r) * std::size_t(c.cols) + std::size_t(col)];
            const int gi = col / c.spec.group_length(c.cols);
            const int sub = a.sub_index(gi, (col - gi * c.spec.group_length(c.cols)) / act_sub_block);
            exact += wv * x[std::size_t(col)];
            bound += std::fabs(wv) * a.scale[std::size_t(sub)] * 0.5;
            if (q.spec.codebook) {  // the kernel's level may differ from the float level (NF4: 1/127 steps)
                const std::size_t idx = q.group_index(r, gi);
                const int code = q.codes[std::size_t(r) * std::size_t(c.cols) + std::size_t(col)];
                const double wk = double(kernel_scale(q, idx)) * kernel_weight(q, code, 0);
                bound += std::fabs(wk - wv) * std::fabs(x[std::size_t(col)]) + std::fabs(wk - wv) * a.scale[std::size_t(sub)] * 0.5;
            }
            magnitude += std::fabs(wv * x[std::size_t(col)]);
        }
        BOOST_TEST_REQUIRE(std::fabs(y_scalar[std::size_t(r)] - exact) <= bound * 1.0001 + 1e-5 * magnitude + 1e-30,
                           what << " row " << r);
    }

    // GEMM of several activations equals one GEMV per activation: 19 = a full block of
    // Kernels::token_block activations and a part of one
    const int n = 19;
    std::vector<float> xs(std::size_t(n) * std::size_t(c.cols)), ys(std::size_t(n) * std::size_t(c.rows));
    for (int t = 0; t < n; ++t)
        for (int col = 0; col < c.cols; ++col) xs[std::size_t(t * c.cols + col)] = x[std::size_t(col)] * float(t + 1) - 0.01f * float(t);

    for (Isa isa : [] { auto v = vector_isas(); v.insert(v.begin(), Isa::scalar); return v; }()) {
        const auto fns = row_functions<F>(isa);
        BOOST_TEST(fns.isa == isa_name(isa), "the kernels that ran were compiled for " << fns.isa);
        BOOST_TEST(bitwise_equal(dequantize<F>(p, isa, 2), reference), what << " dequantize on " << isa_name(isa));
        std::vector<float> y(std::size_t(c.rows));
        gemv<F>(p, x, y, isa, 2);
        BOOST_TEST(bitwise_equal(y, y_scalar), what << " gemv on " << isa_name(isa));
        // row panels kept with the weights, a single activation over them: the vector kernel
        // where the instruction set has one, else plain loops (built here anyway, `force`)
        {
            const auto kept = build_panel_set<F>(p, isa, 2, true);
            std::vector<float> yk(std::size_t(c.rows), std::numeric_limits<float>::quiet_NaN());
            gemv_panels<F>(*kept, x, yk, isa, 2);
            BOOST_TEST(bitwise_equal(yk, y_scalar), what << " gemv over kept panels on " << isa_name(isa)
                                                       << (fns.panel_gemv_kernel ? " (vector kernel)" : " (plain loops)")
                                                       << (kept->span > 0 ? ", factored terms" : kept->half ? ", half terms" : ", float terms"));
        }
        // every path of the GEMM: the row kernels, the row panels (plain loops on the scalar
        // backend, the vector panel kernel where there is one), and the automatic choice
        for (GemmPath path : {GemmPath::automatic, GemmPath::rows, GemmPath::panels}) {
            std::fill(ys.begin(), ys.end(), std::numeric_limits<float>::quiet_NaN());
            gemm<F>(p, MatrixView<const float>(xs.data(), std::size_t(n), std::size_t(c.cols)),
                    MatrixView<float>(ys.data(), std::size_t(n), std::size_t(c.rows)), isa, 2, path);
            for (int t = 0; t < n; ++t) {
                std::vector<float> xt(xs.begin() + t * c.cols, xs.begin() + (t + 1) * c.cols), yt(std::size_t(c.rows));
                gemv<F>(p, xt, yt, Isa::scalar, 1);
                BOOST_TEST(bitwise_equal(std::vector<float>(ys.begin() + t * c.rows, ys.begin() + (t + 1) * c.rows), yt),
                           what << " gemm column " << t << " on " << isa_name(isa) << " path " << int(path));
            }
        }
    }
}

const std::vector<int> dense_cols{1, 5, 31, 32, 33, 64, 100, 127, 128, 129, 172, 255, 300, 576, 1000};

template <int B>
void check_dense() {
    unsigned seed = 100 * B;
    for (int cols : dense_cols)
        for (int group : {0, 8, 32, 64, 128, 256})
            for (ZeroPoint z : {ZeroPoint::symmetric, ZeroPoint::integer, ZeroPoint::float_min})
                check_format<Dense<B>>({7, cols, {B, group, z}}, ++seed);
}

}  // namespace

// A silent scalar fallback must not pass: where the CPU has an instruction set, its kernels must
// be compiled in, usable, and be the ones the function table points to.
BOOST_AUTO_TEST_CASE(vector_paths_are_really_there) {
    BOOST_TEST_MESSAGE("best instruction set here: " << isa_name(best_isa()));
    if (simd::avx2::available()) {
        BOOST_TEST_REQUIRE(isa_usable(Isa::avx2));
        const auto f = row_functions<Dense<4>>(Isa::avx2);
        BOOST_TEST(f.isa == "avx2");
        BOOST_TEST(f.gemv_rows != row_functions<Dense<4>>(Isa::scalar).gemv_rows);
        // prompts over row panels: Dense 2-4 bit from gemm_panel_min_tokens, Q4_0/Q4_1's blocks
        // from their own count; 8-bit codes keep the row kernels
        BOOST_TEST(f.panel_kernel);
        BOOST_TEST(f.panel_min_tokens == gemm_panel_min_tokens);
        BOOST_TEST(row_functions<Q4_0>(Isa::avx2).panel_kernel);
        BOOST_TEST(row_functions<Q4_1>(Isa::avx2).panel_kernel);
        BOOST_TEST(row_functions<Q4_0>(Isa::avx2).panel_min_tokens > gemm_panel_min_tokens);
        BOOST_TEST(row_functions<Q4_1>(Isa::avx2).panel_min_tokens > gemm_panel_min_tokens);
        BOOST_TEST(!row_functions<Q8_0>(Isa::avx2).panel_kernel);
    }
    if (simd::avx512_vnni::available()) {
        BOOST_TEST_REQUIRE(isa_usable(Isa::avx512_vnni));
        const auto f = row_functions<Dense<4>>(Isa::avx512_vnni);
        BOOST_TEST(f.isa == "avx512_vnni");
        BOOST_TEST(f.gemv_rows != row_functions<Dense<4>>(Isa::avx2).gemv_rows);
        // single activations over kept row panels: 4-bit and 8-bit grids
        BOOST_TEST(f.panel_gemv_kernel);
        BOOST_TEST(row_functions<Q4_0>(Isa::avx512_vnni).panel_gemv_kernel);
        BOOST_TEST(row_functions<Q4_1>(Isa::avx512_vnni).panel_gemv_kernel);
        BOOST_TEST(row_functions<Q8_0>(Isa::avx512_vnni).panel_gemv_kernel);
        BOOST_TEST(!row_functions<Dense<3>>(Isa::avx512_vnni).panel_gemv_kernel);
    }
    if (!simd::avx2::available()) BOOST_TEST_MESSAGE("CPU without AVX2: only the scalar backend runs");
}

BOOST_AUTO_TEST_CASE(dense2) { check_dense<2>(); }
BOOST_AUTO_TEST_CASE(dense3) { check_dense<3>(); }
BOOST_AUTO_TEST_CASE(dense4) { check_dense<4>(); }
BOOST_AUTO_TEST_CASE(dense8) { check_dense<8>(); }

BOOST_AUTO_TEST_CASE(gguf_blocks) {
    unsigned seed = 7;
    for (int cols : {32, 64, 96, 576}) {
        check_format<Q4_0>({9, cols, {4, 32, ZeroPoint::symmetric}}, ++seed);
        check_format<Q4_1>({9, cols, {4, 32, ZeroPoint::float_min}}, ++seed);
        check_format<Q8_0>({9, cols, {8, 32, ZeroPoint::symmetric}}, ++seed);
    }
}

// more rows than one panel of 16 (whole panels, a part of one, a split between threads) and
// groups of several sub-blocks
BOOST_AUTO_TEST_CASE(row_panels_of_many_rows) {
    unsigned seed = 900;
    for (int rows : {16, 37}) {
        check_format<Dense<4>>({rows, 576, {4, 128, ZeroPoint::integer}}, ++seed);
        check_format<Dense<4>>({rows, 300, {4, 0, ZeroPoint::float_min}}, ++seed);
        check_format<Dense<3>>({rows, 1000, {3, 256, ZeroPoint::symmetric}}, ++seed);
        check_format<Dense<8>>({rows, 129, {8, 64, ZeroPoint::integer}}, ++seed);
        check_format<Q4_0>({rows, 576, {4, 32, ZeroPoint::symmetric}}, ++seed);
        check_format<Q4_1>({rows, 96, {4, 32, ZeroPoint::float_min}}, ++seed);
        check_format<Q8_0>({rows, 64, {8, 32, ZeroPoint::symmetric}}, ++seed);
        check_format<IQ4_NL>({rows, 576, IQ4_NL::grid_spec}, ++seed);
    }
}

// K-quants and 5-bit blocks run through their kernel form (one signed byte per weight, float
// group scales and minimums derived from ggml's blocks): scalar against the recipe, every ISA
// against the scalar oracle, for groups of 16 (Q2_K, Q3_K, Q6_K) and 32, symmetric and float-minimum
BOOST_AUTO_TEST_CASE(k_quants_and_5bit_blocks) {
    unsigned seed = 1200;
    for (int rows : {1, 9, 37})
        for (int cols : {256, 512, 1536}) {
            check_format<Q2_K>({rows, cols, Q2_K::grid_spec}, ++seed);
            check_format<Q3_K>({rows, cols, Q3_K::grid_spec}, ++seed);
            check_format<Q4_K>({rows, cols, Q4_K::grid_spec}, ++seed);
            check_format<Q5_K>({rows, cols, Q5_K::grid_spec}, ++seed);
            check_format<Q6_K>({rows, cols, Q6_K::grid_spec}, ++seed);
        }
    for (int cols : {32, 96, 576}) {
        check_format<Q5_0>({9, cols, Q5_0::grid_spec}, ++seed);
        check_format<Q5_1>({9, cols, Q5_1::grid_spec}, ++seed);
    }
}

// kept panels of K-quants and 5-bit blocks hold the type's own codes in 4, 5 or 6 bits (not the
// kernel form's byte): a decode step reads that many bits per weight; the symmetric grids' zero
// code moves with the codes (Q5_0: kernel codes 112..143 kept as 0..31, zero 16)
template <class F>
void check_kept_width(int bits, int zero_code) {
    const int rows = 37, cols = 512;
    const auto w = qtest::random_weights(std::size_t(rows) * std::size_t(cols), 77u + unsigned(bits));
    const auto p = F::pack(RtnQuantizer(F::grid_spec).quantize(MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols))));
    const auto kept = build_panel_set<F>(p, Isa::scalar, 1, true);
    BOOST_TEST(kept->code_bits == bits, F::name());
    if (F::grid_spec.zero == ZeroPoint::symmetric) BOOST_TEST(kept->zero_code == zero_code, F::name());
    // codes: 3 panels of 16 rows x 512 positions at `bits` bits each
    BOOST_TEST(std::size_t(kept->panels()) * kept->code_bytes == std::size_t(3 * 16 * 512 * bits / 8), F::name());
    if (simd::avx512_vnni::available()) BOOST_TEST(row_functions<F>(Isa::avx512_vnni).panel_gemv_kernel, F::name());
    // the group terms: a two-level type's d·sc (and -(dmin·m)) factored back into a half per
    // 256 weights and an int8 per group, exactly (check_format runs such sets against the
    // oracle); Q5_0/Q5_1's d and m are halfs themselves
    if constexpr (F::T::two_level) {
        BOOST_TEST(kept->span == 256 / F::T::group, F::name());
        BOOST_TEST(kept->scale.size() == std::size_t(3 * 16 * (cols / F::T::group)), F::name());
    } else {
        BOOST_TEST(kept->half, F::name());
    }
}
BOOST_AUTO_TEST_CASE(k_quant_kept_panels_are_narrow) {
    check_kept_width<Q2_K>(4, 0);
    check_kept_width<Q3_K>(4, 4);
    check_kept_width<Q4_K>(4, 0);
    check_kept_width<Q5_K>(5, 0);
    check_kept_width<Q6_K>(6, 32);
    check_kept_width<Q5_0>(5, 16);
    check_kept_width<Q5_1>(5, 0);
}

// codebook blocks: every code of the table, every shape whole blocks allow, each ISA against the
// scalar oracle and the written-out recipe
template <class F>
void check_codebook(unsigned seed) {
    for (int cols : {F::N, 2 * F::N, 3 * F::N, 576, 1536 / F::N * F::N})
        for (int rows : {1, 5, 9}) check_format<F>({rows, cols, F::grid_spec}, ++seed);
}
BOOST_AUTO_TEST_CASE(codebook_iq4_nl) { check_codebook<IQ4_NL>(40); }
BOOST_AUTO_TEST_CASE(codebook_nf4) { check_codebook<NF4>(60); }
BOOST_AUTO_TEST_CASE(codebook_nf4_double_quant) { check_codebook<NF4_DQ>(80); }

BOOST_AUTO_TEST_CASE(extreme_codes_and_activations) {
    // all codes at the top of the grid and activations at +-max: the integer paths must not
    // saturate (vpmaddubsw) or overflow
    for (int bits : {2, 3, 4, 8}) {
        QuantizedMatrix q({bits, 128, ZeroPoint::integer}, 4, 384);
        std::fill(q.codes.begin(), q.codes.end(), std::uint8_t(q.spec.max_code()));
        std::fill(q.scales.begin(), q.scales.end(), 1.0f);
        std::fill(q.zeros.begin(), q.zeros.end(), std::uint8_t(0));
        std::vector<float> x(384, 3.0f);
        for (std::size_t i = 0; i < x.size(); i += 3) x[i] = -3.0f;
        const auto ref = recipe_gemv(q, x);
        const auto run = [&](auto format, Isa isa) {
            using F = decltype(format);
            std::vector<float> y(4);
            gemv<F>(F::pack(q), x, y, isa, 1);
            return y;
        };
        for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni}) {
            if (!isa_usable(isa)) continue;
            std::vector<float> y;
            if (bits == 2) y = run(Dense<2>{}, isa);
            if (bits == 3) y = run(Dense<3>{}, isa);
            if (bits == 4) y = run(Dense<4>{}, isa);
            if (bits == 8) y = run(Dense<8>{}, isa);
            BOOST_TEST(bitwise_equal(y, ref), "w" << bits << " on " << isa_name(isa));
        }
    }
}

template <class F>
void check_codebook_extremes() {
    // every code the level of largest magnitude, activations at +-max: no saturation anywhere
    for (int anchor : {F::codebook->anchor(), 15}) {
        QuantizedMatrix q(F::grid_spec, 4, 384);
        std::fill(q.codes.begin(), q.codes.end(), std::uint8_t(anchor));
        std::fill(q.scales.begin(), q.scales.end(), 1.0f);
        std::vector<float> x(384, 3.0f);
        for (std::size_t i = 0; i < x.size(); i += 3) x[i] = -3.0f;
        const auto ref = recipe_gemv(q, x);
        for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni}) {
            if (!isa_usable(isa)) continue;
            std::vector<float> y(4);
            gemv<F>(F::pack(q), x, y, isa, 1);
            BOOST_TEST(bitwise_equal(y, ref), F::name() << " code " << anchor << " on " << isa_name(isa));
        }
    }
}
BOOST_AUTO_TEST_CASE(codebook_extremes) {
    check_codebook_extremes<IQ4_NL>();
    check_codebook_extremes<NF4>();
    check_codebook_extremes<NF4_DQ>();
}

BOOST_AUTO_TEST_CASE(thread_count_does_not_change_results) {
    const auto w = qtest::random_weights(301 * 256, 3);
    const auto p = Dense<4>::pack(RtnQuantizer(QuantSpec{4, 128}).quantize(MatrixView<const float>(w.data(), 301, 256)));
    const auto x = qtest::random_weights(256, 4);
    std::vector<float> y1(301), y2(301), y7(301);
    gemv<Dense<4>>(p, x, y1, best_isa(), 1);
    gemv<Dense<4>>(p, x, y2, best_isa(), 2);
    gemv<Dense<4>>(p, x, y7, best_isa(), 7);
    BOOST_TEST(bitwise_equal(y1, y2));
    BOOST_TEST(bitwise_equal(y1, y7));
}

BOOST_AUTO_TEST_CASE(bad_input_is_a_clear_error) {
    const auto w = qtest::random_weights(4 * 64, 3);
    const auto p = Dense<4>::pack(RtnQuantizer(QuantSpec{4, 32}).quantize(MatrixView<const float>(w.data(), 4, 64)));
    std::vector<float> x(64, 1.0f), y(4), short_x(63, 1.0f), short_y(3);
    BOOST_CHECK_THROW(gemv<Dense<4>>(p, short_x, y, Isa::scalar), InvalidArgument);
    BOOST_CHECK_THROW(gemv<Dense<4>>(p, x, short_y, Isa::scalar), InvalidArgument);
    x[17] = std::numeric_limits<float>::quiet_NaN();
    BOOST_CHECK_EXCEPTION(gemv<Dense<4>>(p, x, y, Isa::scalar), InvalidData, [](const InvalidData& e) {
        return std::string(e.what()).find("index 17") != std::string::npos;
    });
    x[17] = 1.0f;
    // a batch: the first bad row and its column, on the row kernels and the panels, NaN or Inf
    std::vector<float> xs(20 * 64, 0.5f), ys(20 * 4);
    xs[7 * 64 + 40] = std::numeric_limits<float>::infinity();
    xs[12 * 64 + 3] = std::numeric_limits<float>::quiet_NaN();
    for (const Isa isa : {Isa::scalar, best_isa()})
        for (const GemmPath path : {GemmPath::rows, GemmPath::panels})
            BOOST_CHECK_EXCEPTION(gemm<Dense<4>>(p, MatrixView<const float>(xs.data(), 20, 64), MatrixView<float>(ys.data(), 20, 4), isa, 2, path),
                                  InvalidData, [](const InvalidData& e) {
                                      return std::string(e.what()).find("row 7, column 40") != std::string::npos;
                                  });
    BOOST_CHECK_THROW(parse_isa("sse9"), InvalidArgument);
}

// The vector rounding kernel (grid_round) against quantize_value/dequantize_value, bit for bit,
// on the scalar table and every vector instruction set: every affine zero-point kind, 2 to 8
// bits, fp16 and fp32 scales, shrunk ranges (so codes clamp), values placed exactly halfway
// between two levels (round-half-to-even), 37 values (a vector tail), codes, values and
// residuals alike.
BOOST_AUTO_TEST_CASE(grid_round_equals_quantize_value) {
    std::vector<Isa> isas = vector_isas();
    isas.insert(isas.begin(), Isa::scalar);
    int checked = 0;
    for (const ZeroPoint zero : {ZeroPoint::symmetric, ZeroPoint::integer, ZeroPoint::float_min})
        for (const int bits : {2, 3, 4, 8})
            for (const ScaleType st : {ScaleType::f16, ScaleType::f32})
                for (const float shrink : {1.0f, 0.7f})
                    for (unsigned seed = 0; seed < 4; ++seed) {
                        QuantSpec spec{bits, 37};
                        spec.zero = zero;
                        spec.scale_type = st;
                        auto values = qtest::random_weights(37, 100 + seed);
                        if (seed % 2) for (auto& v : values) v = v * 0.5f + 0.3f;  // all positive: the zero point moves
                        const GroupParams p = find_group_params(values, spec, shrink);
                        const auto g = affine_grid(p, spec);
                        BOOST_TEST_REQUIRE(bool(g));
                        if (seed == 3)  // exact ties: halfway between levels k and k+1 of this grid
                            for (std::size_t j = 0; j < values.size(); j += 3)
                                values[j] = g->scale * (float(int(j % 7) - 3) + 0.5f) + g->min;
                        std::vector<std::uint8_t> want_codes(values.size());
                        std::vector<float> want_values(values.size()), want_residuals(values.size());
                        for (std::size_t j = 0; j < values.size(); ++j) {
                            want_codes[j] = quantize_value(values[j], p, spec);
                            want_values[j] = dequantize_value(want_codes[j], p, spec);
                            want_residuals[j] = values[j] - want_values[j];
                        }
                        for (const Isa isa : isas) {
                            const auto fns = fp32_functions(isa);
                            std::vector<std::uint8_t> codes(values.size());
                            std::vector<float> got(values.size()), residuals(values.size());
                            fns.grid_round(values.data(), int(values.size()), *g, codes.data(), got.data(), false);
                            fns.grid_round(values.data(), int(values.size()), *g, nullptr, residuals.data(), true);
                            const std::string what = std::string(isa_name(isa)) + " bits " + std::to_string(bits) + " seed " + std::to_string(seed);
                            BOOST_TEST(codes == want_codes, what);
                            BOOST_TEST(bitwise_equal(got, want_values), what);
                            BOOST_TEST(bitwise_equal(residuals, want_residuals), what);
                            ++checked;
                        }
                    }
    BOOST_TEST(checked >= 3 * 4 * 2 * 2 * 4);
    // codebook grids and zero scales are not affine kernels' work: round_group keeps quantize_value's rules
    QuantSpec spec{4, 32};
    BOOST_TEST(!affine_grid(GroupParams{}, spec));
}

// The codebook rounding kernel (codebook_round) against quantize_value/dequantize_value, bit for
// bit, on the scalar table and every vector instruction set: NF4 and IQ4_NL, fp16 scales from
// the groups' own ranges and shrunk ones (values past the end levels), lengths 1 to 40 (vector
// tails), values exactly halfway between two neighbouring levels (the lower level wins: a power-
// of-two scale keeps w / scale exact), a NaN (code 0, as the scalar scan gives), codes, values
// and residuals alike.
BOOST_AUTO_TEST_CASE(codebook_round_equals_quantize_value) {
    std::vector<Isa> isas = vector_isas();
    isas.insert(isas.begin(), Isa::scalar);
    int checked = 0, ties = 0;
    for (const Codebook* cb : {&nf4_codebook, &iq4nl_codebook})
        for (const float shrink : {1.0f, 0.6f})
            for (int n = 1; n <= 40; ++n)
                for (unsigned seed = 0; seed < 3; ++seed) {
                    QuantSpec spec{4, 64, ZeroPoint::symmetric, ScaleType::f16, cb};
                    auto values = qtest::random_weights(std::size_t(n), 300 + unsigned(n) * 7 + seed);
                    GroupParams p = find_group_params(values, spec, shrink);
                    if (seed == 2) {  // a power-of-two scale, every third value halfway between levels k and k+1
                        p.scale = 0.25f;
                        for (std::size_t j = 0; j < values.size(); j += 3) {
                            const std::size_t k = j % (cb->levels.size() - 1);
                            values[j] = p.scale * (0.5f * (cb->levels[k] + cb->levels[k + 1]));
                            ties += (values[j] / p.scale == 0.5f * (cb->levels[k] + cb->levels[k + 1])) ? 1 : 0;
                        }
                        if (n > 5) values[4] = std::numeric_limits<float>::quiet_NaN();
                    }
                    BOOST_TEST_REQUIRE(p.scale != 0.0f);
                    std::vector<std::uint8_t> want_codes(values.size());
                    std::vector<float> want_values(values.size()), want_residuals(values.size());
                    for (std::size_t j = 0; j < values.size(); ++j) {
                        want_codes[j] = quantize_value(values[j], p, spec);
                        want_values[j] = dequantize_value(want_codes[j], p, spec);
                        want_residuals[j] = values[j] - want_values[j];
                    }
                    for (const Isa isa : isas) {
                        const auto fns = fp32_functions(isa);
                        const RoundingKernels k{fns.grid_round, fns.codebook_round};
                        std::vector<std::uint8_t> codes(values.size());
                        std::vector<float> got(values.size()), residuals(values.size());
                        round_group(values, p, spec, k, codes.data(), got.data(), false);
                        round_group(values, p, spec, k, nullptr, residuals.data(), true);
                        const std::string what = std::string(isa_name(isa)) + " " + std::string(cb->name) + " n " + std::to_string(n) +
                                                 " seed " + std::to_string(seed);
                        BOOST_TEST(codes == want_codes, what);
                        BOOST_TEST(bitwise_equal(got, want_values), what);
                        BOOST_TEST(bitwise_equal(residuals, want_residuals), what);
                        ++checked;
                    }
                }
    BOOST_TEST(checked >= 2 * 2 * 40 * 3 * 2);
    BOOST_TEST(ties > 100);  // the halfway values are exact halfway points
}

// Codebook::anchor looks only at the two ends (the levels ascend): it equals a scan of every
// level for each registered codebook, and the ascending order holds (grids/registry.hpp asserts
// it at compile time).
BOOST_AUTO_TEST_CASE(codebook_anchor_is_the_largest_magnitude) {
    for (const Codebook* cb : codebooks) {
        int scan = 0;
        for (int i = 1; i < int(cb->levels.size()); ++i)
            if (std::fabs(cb->levels[std::size_t(i)]) > std::fabs(cb->levels[std::size_t(scan)])) scan = i;
        BOOST_TEST(cb->anchor() == scan, cb->name);
        BOOST_TEST(std::is_sorted(cb->levels.begin(), cb->levels.end()), cb->name);
    }
}

// The vector activation quantizer (Fp32Functions::quantize_sub) against the scalar definition,
// bit for bit: every length 1..128 (vector tails), values exactly halfway between two levels
// (round-half-to-even), the maximum at the first and the last entry, an all-zero block (q left
// alone, dx 0), negative zeros.
BOOST_AUTO_TEST_CASE(quantize_sub_equals_the_scalar_definition) {
    std::vector<Isa> isas = vector_isas();
    isas.insert(isas.begin(), Isa::scalar);
    int checked = 0;
    for (int n = 1; n <= act_sub_block; ++n)
        for (unsigned seed = 0; seed < 6; ++seed) {
            auto x = qtest::random_weights(std::size_t(n), 300 + unsigned(n) * 7 + seed);
            if (seed >= 4) {  // near-ties on a step that is not a power of two: x / dx sits within
                              // an ulp of k + 0.5, where any other way of dividing rounds apart
                const float amax = 127.0f * (0.013f * float(n % 9 + 1) + 0.001f * float(seed));
                const float dx = amax / 127.0f;
                for (int i = 0; i < n; ++i) x[std::size_t(i)] = (float(i % 23) - 11.5f) * dx;
                x[std::size_t(n - 1)] = amax;
            }
            if (seed == 1)  // max |x| = 127: dx = 1, and every third value a tie k + 0.5
                for (int i = 0; i < n; ++i) x[std::size_t(i)] = i == n - 1 ? -127.0f : i % 3 == 0 ? float(i % 11) - 5.5f : x[std::size_t(i)];
            if (seed == 2) {
                std::fill(x.begin(), x.end(), -0.0f);
                if (n > 3) x[0] = 2.5f;
            }
            if (seed == 3) std::fill(x.begin(), x.end(), 0.0f);
            std::vector<std::int8_t> want(std::size_t(n), 99);
            std::int32_t want_total = -1;
            const float want_dx = quantize_sub_scalar(x.data(), n, want.data(), &want_total);
            for (const Isa isa : isas) {
                std::vector<std::int8_t> got(std::size_t(n), 99);
                std::int32_t total = -1;
                const float dx = fp32_functions(isa).quantize_sub(x.data(), n, got.data(), &total);
                BOOST_TEST_REQUIRE(std::bit_cast<std::uint32_t>(dx) == std::bit_cast<std::uint32_t>(want_dx), isa_name(isa) << " n " << n << " seed " << seed);
                BOOST_TEST_REQUIRE(total == want_total, isa_name(isa) << " n " << n << " seed " << seed);
                BOOST_TEST_REQUIRE((got == want), isa_name(isa) << " n " << n << " seed " << seed);
                ++checked;
            }
        }
    BOOST_TEST(checked >= 6 * act_sub_block);
}

BOOST_AUTO_TEST_SUITE_END()
