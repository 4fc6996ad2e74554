// The backend handle: the CPU backend's products equal the kernels it wraps (every registry
// format, bit for bit with the scalar oracle), and the model, calibration, GPTQ and evaluation
// run every product through the backend they are given: a backend that records its calls and
// forwards them sees them all, and the results do not change.
#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "common.hpp"
#include "tiny_llama.hpp"
#include "qforge/models/llama/evaluate.hpp"
#include "qforge/pipelines/llama/quantize_model.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_backend)

namespace {

/// A backend of its own (as a device backend would be written): forwards to the CPU backend
/// and counts what it is asked to do.
class Recording final : public BackendInterface {
public:
    explicit Recording(Isa isa) : cpu_(isa, 1) {}
    std::string name() const override { return "recording " + cpu_.name(); }
    int threads() const noexcept override { return cpu_.threads(); }
    const Fp32Functions& host_fp32() const noexcept override { return cpu_.host_fp32(); }
    void gemm_fp32(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) const override {
        ++gemms;
        cpu_.gemm_fp32(w, x, y);
    }
    void gemm_fp32_add(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y, float alpha) const override {
        ++gemms;
        cpu_.gemm_fp32_add(w, x, y, alpha);
    }
    bool cholesky_lower(float* a, int n) const override {
        ++factorisations;
        return cpu_.cholesky_lower(a, n);
    }
    void invert_lower(float* l, int n) const override { cpu_.invert_lower(l, n); }
    void gram_fp32(MatrixView<const float> x, MatrixView<float> g) const override {
        ++grams;
        cpu_.gram_fp32(x, g);
    }
    void linear(const LinearWeights& w, MatrixView<const float> x, MatrixView<float> y) const override {
        ++linears;
        rows += long(x.rows);
        cpu_.linear(w, x, y);
    }
    void dequantize(const LinearWeights& w, MatrixView<float> out) const override { cpu_.dequantize(w, out); }

    mutable std::atomic<long> gemms{0}, grams{0}, factorisations{0}, linears{0}, rows{0};

private:
    CpuBackend cpu_;
};

std::vector<float> gaussian(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd;
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

template <class F>
typename F::Packed packed_random(int rows, int cols, unsigned seed) {
    const auto w = gaussian(std::size_t(rows) * std::size_t(cols), seed);
    QuantSpec spec = typename F::Packed{}.spec;
    if constexpr (F::info.storage == Storage::dense_rows) spec = QuantSpec{F::info.bits, 32, F::info.bits == 8 ? ZeroPoint::symmetric : ZeroPoint::integer};
    return F::pack(RtnQuantizer(spec).quantize(MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols))));
}

template <class... F>
void check_formats(format_list<F...>) {
    (
        [] {
            constexpr int rows = 12, cols = 256, n = 3;
            const auto p = packed_random<F>(rows, cols, 7);
            const LinearWeights lw = p;
            const auto x = gaussian(std::size_t(n) * cols, 8);
            const MatrixView<const float> xv(x.data(), n, cols);
            std::vector<float> oracle(std::size_t(n) * rows), oracle_one(rows), deq_oracle(std::size_t(rows) * cols);
            gemm<F>(p, xv, MatrixView<float>(oracle.data(), n, rows), Isa::scalar, 1);
            gemv<F>(p, xv.row(0), oracle_one, Isa::scalar, 1);
            dequantize<F>(p, MatrixView<float>(deq_oracle.data(), rows, cols), Isa::scalar, 1);
            for (const Backend& b : {Backend{}, Backend::cpu(), Backend::cpu(best_isa(), 3)}) {
                std::vector<float> y(oracle.size()), one(rows), deq(deq_oracle.size()), prepared(oracle.size());
                b.linear(lw, xv, MatrixView<float>(y.data(), n, rows));
                b.linear(lw, MatrixView<const float>(x.data(), 1, cols), MatrixView<float>(one.data(), 1, rows));
                b.dequantize(lw, MatrixView<float>(deq.data(), rows, cols));
                b.prepare(lw)->forward(xv, MatrixView<float>(prepared.data(), n, rows));
                BOOST_TEST((y == oracle), F::info.name << " gemm on " << b.name());
                BOOST_TEST((one == oracle_one), F::info.name << " gemv on " << b.name());
                BOOST_TEST((deq == deq_oracle), F::info.name << " dequantize on " << b.name());
                BOOST_TEST((prepared == oracle), F::info.name << " prepared on " << b.name());
                // single activations through prepared weights: on AVX-512 the kept row panels,
                // built by the first product and reused by the second
                const auto kept = b.prepare(lw);
                for (int round = 0; round < 2; ++round) {
                    std::vector<float> kept_one(rows, std::numeric_limits<float>::quiet_NaN());
                    kept->forward(MatrixView<const float>(x.data(), 1, cols), MatrixView<float>(kept_one.data(), 1, rows));
                    BOOST_TEST((kept_one == oracle_one), F::info.name << " prepared gemv (product " << round << ") on " << b.name());
                }
            }
        }(),
        ...);
}

/// The Hessian's running sum (gram_fp32_accumulate), in FP32: the first batch's lower triangle
/// is gram_fp32's values bit for bit, written (the accumulator's earlier contents never read);
/// a short second batch (within one of OpenBLAS's k chunks) adds gram_fp32's values in float,
/// bit for bit (the BLAS path through sgemm's beta = 1, the default through a temporary); a long
/// third batch adds to rounding. The default path leaves the upper triangle alone.
void check_gram_accumulate(const Backend& b, const std::vector<float>& x, int n, int cols, bool blas_path) {
    const std::size_t c = std::size_t(cols);
    const MatrixView<const float> xv(x.data(), std::size_t(n), c), x20(x.data() + 5 * c, 20, c);
    std::vector<float> ga(c * c), gb(c * c);
    b.gram_fp32(xv, MatrixView<float>(ga.data(), c, c));
    b.gram_fp32(x20, MatrixView<float>(gb.data(), c, c));
    // NaN before the first batch: were it read (0 x NaN), the lower triangle would come out NaN
    std::vector<float> acc(c * c, std::numeric_limits<float>::quiet_NaN());
    b.gram_fp32_accumulate(xv, MatrixView<float>(acc.data(), c, c), true);
    std::size_t wrong = 0, touched = 0;
    for (std::size_t i = 0; i < c; ++i)
        for (std::size_t j = 0; j <= i; ++j) wrong += acc[i * c + j] != ga[i * c + j];
    BOOST_TEST(wrong == 0u, b.name() << ", " << cols << " channels, first batch: " << wrong << " elements differ from gram_fp32");
    b.gram_fp32_accumulate(x20, MatrixView<float>(acc.data(), c, c), false);
    wrong = 0;
    for (std::size_t i = 0; i < c; ++i)
        for (std::size_t j = 0; j < c; ++j) {
            if (j <= i)
                wrong += acc[i * c + j] != ga[i * c + j] + gb[i * c + j];
            else
                touched += !std::isnan(acc[i * c + j]);
        }
    BOOST_TEST(wrong == 0u, b.name() << ", " << cols << " channels, second batch: " << wrong << " accumulator elements differ");
    if (!blas_path) BOOST_TEST(touched == 0u, b.name() << ": " << touched << " elements above the diagonal written");
    // a batch of 1500 rows (OpenBLAS's k chunks are a few hundred): to rounding, against double
    // sums; |sum_t x_ti x_tj| <= |x_i| |x_j| bounds each sum's terms
    const int long_rows = 1500;
    const auto xl = gaussian(std::size_t(long_rows) * c, 77);
    const MatrixView<const float> xlv(xl.data(), std::size_t(long_rows), c);
    const std::vector<float> before = acc;
    b.gram_fp32_accumulate(xlv, MatrixView<float>(acc.data(), c, c), false);
    std::vector<double> norm(c, 0.0);
    for (int t = 0; t < long_rows; ++t)
        for (std::size_t j = 0; j < c; ++j) norm[j] += double(xl[std::size_t(t) * c + j]) * xl[std::size_t(t) * c + j];
    for (auto& v : norm) v = std::sqrt(v);
    std::size_t far = 0;
    for (std::size_t i = 0; i < c; i += 7)  // a sample of rows: the exact sums cost long_rows c^2 / 7
        for (std::size_t j = 0; j <= i; ++j) {
            double sum = before[i * c + j];
            for (int t = 0; t < long_rows; ++t) sum += double(xl[std::size_t(t) * c + i]) * xl[std::size_t(t) * c + j];
            far += std::fabs(acc[i * c + j] - sum) > 1.2e-7 * (long_rows * norm[i] * norm[j] + 2 * std::fabs(before[i * c + j]));
        }
    BOOST_TEST(far == 0u, b.name() << ", " << cols << " channels, a long batch: " << far << " sampled elements beyond rounding");
    std::vector<float> small(4);
    BOOST_CHECK_THROW(b.gram_fp32_accumulate(xv, MatrixView<float>(small.data(), 2, 2), true), InvalidArgument);
}

}  // namespace

BOOST_AUTO_TEST_CASE(handles_name_their_instruction_set) {
    BOOST_TEST(Backend{}.name() == "scalar");  // the default: the oracle
    BOOST_TEST(Backend::cpu().name() == std::string(isa_name(best_isa())) + (blas::enabled() && best_isa() != Isa::scalar ? "+openblas" : ""));
    BOOST_TEST(Backend::cpu(best_isa(), 0, false).name() == std::string(isa_name(best_isa())));
    BOOST_TEST(Backend::cpu(Isa::scalar, 2).threads() == 2);
    BOOST_CHECK_THROW(Backend::cpu(Isa::scalar, -1), InvalidArgument);
    BOOST_CHECK_THROW(Backend(std::shared_ptr<const BackendInterface>{}), InvalidArgument);
    for (const Isa isa : {Isa::avx2, Isa::avx512_vnni})
        if (!isa_usable(isa)) BOOST_CHECK_THROW(Backend::cpu(isa), InvalidArgument);  // not silently another set
}

BOOST_AUTO_TEST_CASE(cpu_backend_products_equal_the_scalar_kernels_for_every_format) {
    check_formats(Formats{});
    // FP32 weights: the FP32 GEMM of the same instruction set
    const auto w = gaussian(12 * 64, 3), x = gaussian(3 * 64, 4);
    const LinearWeights lw = Fp32Matrix{12, 64, w};
    std::vector<float> a(36), b(36);
    gemm_fp32(MatrixView<const float>(w.data(), 12, 64), MatrixView<const float>(x.data(), 3, 64), MatrixView<float>(a.data(), 3, 12), best_isa());
    Backend::cpu().linear(lw, MatrixView<const float>(x.data(), 3, 64), MatrixView<float>(b.data(), 3, 12));
    BOOST_TEST((a == b));
    std::vector<float> bad(3 * 63);
    BOOST_CHECK_THROW(Backend{}.linear(lw, MatrixView<const float>(bad.data(), 3, 63), MatrixView<float>(b.data(), 3, 12)), InvalidArgument);
}

// A model's layer keeps its weights as the last backend prepared them (the CPU's row panels for
// single activations): switching backends, copying and moving the layer never give other bits,
// and on AVX-512 VNNI the panels are really what a GEMV then runs on.
BOOST_AUTO_TEST_CASE(a_layer_keeps_its_prepared_weights_per_backend) {
    constexpr int rows = 37, cols = 576;
    const auto p = packed_random<Q4_0>(rows, cols, 11);
    const auto x = gaussian(cols, 12);
    std::vector<float> oracle(rows);
    gemv<Q4_0>(p, x, oracle, Isa::scalar, 1);
    llama::Linear layer{LinearWeights(p)};
    const Backend fast = Backend::cpu(best_isa(), 2), scalar;
    const auto check = [&](const llama::Linear& l, const Backend& b, const char* what) {
        std::vector<float> y(rows, std::numeric_limits<float>::quiet_NaN());
        l.forward(x, y, b);
        BOOST_TEST((y == oracle), what << " on " << b.name());
    };
    for (int round = 0; round < 2; ++round) {
        check(layer, fast, "layer");
        check(layer, scalar, "layer");
    }
    llama::Linear copy = layer;
    check(copy, fast, "copy");
    llama::Linear moved = std::move(copy);
    check(moved, fast, "moved");
    check(layer, fast, "original after the copy");
    {  // a copy outlives its original: what it keeps must be its own (ASan sees a use after free)
        std::optional<llama::Linear> original(std::in_place, LinearWeights(p));
        check(*original, fast, "original");
        const auto xs = gaussian(3 * cols, 13);
        std::vector<float> batch(3 * rows), batch_oracle(3 * rows);
        gemm<Q4_0>(p, MatrixView<const float>(xs.data(), 3, cols), MatrixView<float>(batch_oracle.data(), 3, rows), Isa::scalar, 1);
        original->forward(MatrixView<const float>(xs.data(), 3, cols), MatrixView<float>(batch.data(), 3, rows), fast);
        llama::Linear survivor = *original;
        original.reset();
        check(survivor, fast, "a copy after its original is gone");
        std::fill(batch.begin(), batch.end(), 0.0f);
        survivor.forward(MatrixView<const float>(xs.data(), 3, cols), MatrixView<float>(batch.data(), 3, rows), fast);
        BOOST_TEST((batch == batch_oracle), "a batch through a copy after its original is gone");
    }

    const bool kernel = row_functions<Q4_0>(best_isa()).panel_gemv_kernel;
    BOOST_TEST(kernel == (best_isa() == Isa::avx512_vnni), "a panel GEMV kernel exactly where AVX-512 VNNI runs");
    const LinearWeights lw = p;  // outlives what is prepared from it
    const auto kept = fast.prepare(lw);
    const auto* panels = dynamic_cast<const detail::CpuPanelPrepared<Q4_0>*>(kept.get());
    if (!kernel) {
        BOOST_TEST(panels == nullptr);
        BOOST_TEST_MESSAGE("no AVX-512 VNNI here: single activations run on the row kernels");
        return;
    }
    BOOST_TEST_REQUIRE(panels != nullptr);
    BOOST_TEST(panels->panels() == nullptr, "no panels before the first single-activation product");
    std::vector<float> y(rows);
    kept->forward(MatrixView<const float>(x.data(), 1, cols), MatrixView<float>(y.data(), 1, rows));
    BOOST_TEST_REQUIRE(panels->panels() != nullptr);
    BOOST_TEST(panels->panels()->half, "Q4_0's fp16 scales are kept as halfs");
    BOOST_TEST(panels->panels()->code_bits == 4, "Q4_0 kept as nibbles");
    BOOST_TEST((y == oracle));
}

// Layers that read one input, run together (a block's q/k/v, gate/up): the bits of separate
// products for a single activation (one quantization, one parallel section on AVX-512) and for a
// batch, whatever the mix of formats and group lengths; shapes checked.
BOOST_AUTO_TEST_CASE(layers_run_together_equal_separate_products) {
    constexpr int cols = 576;
    const llama::Linear q{LinearWeights(packed_random<Q4_0>(64, cols, 21))}, k{LinearWeights(packed_random<Q4_1>(40, cols, 22))},
        v{LinearWeights(packed_random<Dense<4>>(24, cols, 23))}, odd{LinearWeights(packed_random<Q8_0>(5, cols, 24))};
    const auto x = gaussian(3 * cols, 25);
    const auto ww = gaussian(20 * cols, 26);  // groups of 128: its activation is cut otherwise
    const llama::Linear wide{LinearWeights(Dense<4>::pack(RtnQuantizer(QuantSpec{4, 128, ZeroPoint::integer}).quantize(MatrixView<const float>(ww.data(), 20, cols))))};
    for (const Backend& b : {Backend{}, Backend::cpu(best_isa(), 2)})
        for (std::size_t n : {std::size_t(1), std::size_t(3)})
            for (const std::vector<const llama::Linear*>& layers :
                 {std::vector<const llama::Linear*>{&q, &k, &v}, std::vector<const llama::Linear*>{&q, &odd, &k, &v, &odd},
                  std::vector<const llama::Linear*>{&q, &wide}}) {
                std::vector<std::vector<float>> together, apart;
                std::vector<MatrixView<float>> views;
                for (const auto* l : layers) {
                    together.emplace_back(n * std::size_t(l->rows()), std::numeric_limits<float>::quiet_NaN());
                    apart.emplace_back(n * std::size_t(l->rows()));
                }
                for (std::size_t i = 0; i < layers.size(); ++i) {
                    views.emplace_back(together[i].data(), n, std::size_t(layers[i]->rows()));
                    Backend{}.linear(layers[i]->weights(), MatrixView<const float>(x.data(), n, cols),
                                     MatrixView<float>(apart[i].data(), n, std::size_t(layers[i]->rows())));
                }
                llama::Linear::forward_together(layers, MatrixView<const float>(x.data(), n, cols), views, b);
                for (std::size_t i = 0; i < layers.size(); ++i)
                    BOOST_TEST((together[i] == apart[i]), "layer " << i << " of " << layers.size() << ", " << n << " activations on " << b.name());
            }
    std::vector<float> y1(64), y2(39);
    const llama::Linear* two[] = {&q, &k};
    const MatrixView<float> bad[] = {MatrixView<float>(y1.data(), 1, 64), MatrixView<float>(y2.data(), 1, 39)};
    BOOST_CHECK_THROW(llama::Linear::forward_together(two, MatrixView<const float>(x.data(), 1, cols), bad, Backend::cpu(best_isa(), 2)),
                      InvalidArgument);
    BOOST_CHECK_THROW(llama::Linear::forward_together(two, MatrixView<const float>(x.data(), 1, cols), std::span(bad).first(1), Backend{}),
                      InvalidArgument);
}

// The BLAS under the CPU backend (runtime/blas.hpp): GEMM, GEMM-add and the Gram matrix agree with
// the scalar oracle to rounding (bounded by float epsilon times sum |w x|), the Gram matrix is
// exactly symmetric, results do not depend on the thread count, the scalar backend never uses it.
BOOST_AUTO_TEST_CASE(blas_products_agree_with_the_oracle) {
    if (!blas::enabled() || best_isa() == Isa::scalar) {
        BOOST_TEST_MESSAGE("SKIPPED: no BLAS linked (or QFORGE_BLAS=off, or no vector instruction set): qforge's own kernels only");
        BOOST_TEST(!Backend::cpu(best_isa()).name().ends_with("+openblas"));
        return;
    }
    BOOST_TEST(!Backend::cpu(Isa::scalar).name().ends_with("+openblas"));
    BOOST_TEST(!Backend::cpu(best_isa(), 0, false).name().ends_with("+openblas"));
    // rows (C's wider side here) and cols span several of the BLAS path's tiles (64 and 128 wide)
    const int n = 37, rows = 600, cols = 301;
    const auto w = gaussian(std::size_t(rows) * cols, 11), x = gaussian(std::size_t(n) * cols, 12), y0 = gaussian(std::size_t(n) * rows, 13);
    const MatrixView<const float> wv(w.data(), rows, cols), xv(x.data(), n, cols);
    std::vector<float> oracle(std::size_t(n) * rows), one(oracle.size()), two(oracle.size());
    Backend{}.gemm_fp32(wv, xv, MatrixView<float>(oracle.data(), n, rows));
    const Backend b1 = Backend::cpu(best_isa(), 1), b2 = Backend::cpu(best_isa(), 2);
    BOOST_TEST(b2.name().ends_with("+openblas"));
    b1.gemm_fp32(wv, xv, MatrixView<float>(one.data(), n, rows));
    b2.gemm_fp32(wv, xv, MatrixView<float>(two.data(), n, rows));
    BOOST_TEST(one == two);
    {  // one tile per thread: 600 rows in tiles of 600, 304, 208 and 128
        std::vector<float> three(oracle.size()), sixteen(oracle.size());
        Backend::cpu(best_isa(), 3).gemm_fp32(wv, xv, MatrixView<float>(three.data(), n, rows));
        Backend::cpu(best_isa(), 16).gemm_fp32(wv, xv, MatrixView<float>(sixteen.data(), n, rows));
        BOOST_TEST(one == three);
        BOOST_TEST(one == sixteen);
    }
    {  // cut along the tokens instead (more tokens than weight rows): the same bits at 1 and 3 threads
        const int tokens = 700, out = 40;
        const auto xt = gaussian(std::size_t(tokens) * cols, 14);
        std::vector<float> t1(std::size_t(tokens) * out), t3(t1.size());
        const MatrixView<const float> w40(w.data(), out, cols), xtv(xt.data(), tokens, cols);
        b1.gemm_fp32(w40, xtv, MatrixView<float>(t1.data(), tokens, out));
        Backend::cpu(best_isa(), 3).gemm_fp32(w40, xtv, MatrixView<float>(t3.data(), tokens, out));
        BOOST_TEST(t1 == t3);
    }
    const auto bound = [&](int t, int r) {  // |error| <= cols * eps * sum |w x|
        double s = 0;
        for (int c = 0; c < cols; ++c) s += std::fabs(double(w[std::size_t(r) * cols + c]) * x[std::size_t(t) * cols + c]);
        return double(cols) * 1.2e-7 * s;
    };
    for (int t = 0; t < n; ++t)
        for (int r = 0; r < rows; ++r) BOOST_TEST(std::fabs(double(two[std::size_t(t) * rows + r]) - oracle[std::size_t(t) * rows + r]) <= bound(t, r));
    // Y += -0.5 X W^T
    std::vector<float> acc = y0;
    b2.gemm_fp32_add(wv, xv, MatrixView<float>(acc.data(), n, rows), -0.5f);
    for (std::size_t i = 0; i < acc.size(); ++i) BOOST_TEST(std::fabs(double(acc[i]) - (y0[i] - 0.5 * oracle[i])) <= 1e-5 * (1 + std::fabs(y0[i])) + bound(int(i) / rows, int(i) % rows));
    // X^T X: both triangles, symmetric, equal to the oracle's to rounding
    std::vector<float> g_oracle(std::size_t(cols) * cols), g(g_oracle.size());
    Backend{}.gram_fp32(xv, MatrixView<float>(g_oracle.data(), cols, cols));
    b2.gram_fp32(xv, MatrixView<float>(g.data(), cols, cols));
    {
        std::vector<float> g1(g.size());
        b1.gram_fp32(xv, MatrixView<float>(g1.data(), cols, cols));
        BOOST_TEST(g1 == g);
    }
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < cols; ++j) {
            BOOST_TEST(g[std::size_t(i) * cols + j] == g[std::size_t(j) * cols + i]);
            double s = 0;
            for (int t = 0; t < n; ++t) s += std::fabs(double(x[std::size_t(t) * cols + i]) * x[std::size_t(t) * cols + j]);
            BOOST_TEST(std::fabs(double(g[std::size_t(i) * cols + j]) - g_oracle[std::size_t(i) * cols + j]) <= n * 1.2e-7 * s);
        }
    check_gram_accumulate(b2, x, n, cols, true);
    check_gram_accumulate(Backend::cpu(best_isa(), 2, false), x, n, cols, false);
    std::vector<float> bad(5);
    BOOST_CHECK_THROW(b2.gram_fp32(xv, MatrixView<float>(bad.data(), 1, 5)), InvalidArgument);
    BOOST_CHECK_THROW(b2.gemm_fp32(wv, MatrixView<const float>(x.data(), n, cols - 1), MatrixView<float>(one.data(), n, rows)), InvalidArgument);
}

// Wide layers: the BLAS path's tiles of 512 (n/8 from 4096 columns), off-diagonal blocks two
// tiles wide, diagonal tiles split recursively down to squares under 256, and a last tile of a
// few rows; the Gram matrix still agrees with qforge's own kernels to rounding and is exactly
// symmetric, and the running sum holds (check_gram_accumulate).
BOOST_AUTO_TEST_CASE(blas_gram_of_a_wide_layer) {
    if (!blas::enabled() || best_isa() == Isa::scalar) {
        BOOST_TEST_MESSAGE("SKIPPED: no BLAS linked (or QFORGE_BLAS=off, or no vector instruction set)");
        return;
    }
    // 1601: three whole tiles and one of 65 rows (its second half empty); 513: one and one of 1
    for (const int cols : {1601, 513}) {
        const int n = 37;
        const auto x = gaussian(std::size_t(n) * cols, 21);
        const std::size_t c = std::size_t(cols);
        const MatrixView<const float> xv(x.data(), std::size_t(n), c);
        std::vector<float> g(c * c), own(c * c);
        const Backend b2 = Backend::cpu(best_isa(), 2), mine = Backend::cpu(best_isa(), 2, false);
        b2.gram_fp32(xv, MatrixView<float>(g.data(), c, c));
        mine.gram_fp32(xv, MatrixView<float>(own.data(), c, c));
        std::size_t asymmetric = 0, far = 0;
        for (std::size_t i = 0; i < c; ++i)
            for (std::size_t j = 0; j < c; ++j) {
                asymmetric += g[i * c + j] != g[j * c + i];
                double s = 0;
                for (int t = 0; t < n; ++t) s += std::fabs(double(x[std::size_t(t) * c + i]) * x[std::size_t(t) * c + j]);
                far += std::fabs(double(g[i * c + j]) - own[i * c + j]) > 2.0 * n * 1.2e-7 * s;
            }
        BOOST_TEST(asymmetric == 0u, cols << " columns");
        BOOST_TEST(far == 0u, cols << " columns: " << far << " elements differ from qforge's own Gram matrix by more than rounding");
        check_gram_accumulate(b2, x, n, cols, true);
    }
}

BOOST_AUTO_TEST_CASE(the_model_runs_every_product_on_its_backend) {
    const auto c = qtest::tiny_config(2);
    const auto w = qtest::random_llama(c, 5);
    const auto tokens = qtest::random_tokens(10, c.vocab_size, 6);
    const auto rec = std::make_shared<Recording>(best_isa());
    llama::Session mine(w, Backend(rec), 16), cpu(w, Backend::cpu(best_isa(), 1), 16);
    const auto a = mine.forward_batch(tokens, 0), b = cpu.forward_batch(tokens, 0);
    BOOST_TEST(std::equal(a.data, a.data + a.rows * a.cols, b.data));
    BOOST_TEST(rec->linears == 7L * c.n_layers + 1);  // seven per block and the head, one batch each
    BOOST_TEST(rec->rows == 10L * (7 * c.n_layers + 1));
    BOOST_TEST(rec->gemms == 0L);  // FP32 layers go through linear, not around it
    BOOST_TEST(rec->grams == 0L);
}

BOOST_AUTO_TEST_CASE(calibration_gptq_and_evaluation_run_on_the_given_backend) {
    const auto c = qtest::tiny_config(2);
    const auto w = qtest::random_llama(c, 9);
    const auto tokens = qtest::random_tokens(48, c.vocab_size, 10);
    const auto rec = std::make_shared<Recording>(best_isa());
    llama::ModelQuantizeOptions mine, cpu;
    mine.calibration.sequence_length = cpu.calibration.sequence_length = 16;
    mine.calibration.backend = Backend(rec);
    cpu.calibration.backend = Backend::cpu(best_isa(), 1);
    const auto scheme = parse_scheme("gptq:w4g16a,act");
    const auto qa = llama::quantize_model(w, tokens, scheme, mine), qb = llama::quantize_model(w, tokens, scheme, cpu);
    BOOST_TEST(rec->linears > 0L);  // the calibration forward passes
    BOOST_TEST(rec->grams > 0L);           // X^T X
    BOOST_TEST(rec->factorisations > 0L);  // GPTQ's Cholesky factorisations
    llama::EvalOptions ea, eb;
    ea.context = eb.context = 16;
    ea.backend = Backend(rec);
    eb.backend = Backend::cpu(best_isa(), 1);
    const long before = rec->linears;
    const auto sa = llama::evaluate(qa, &w, tokens, ea), sb = llama::evaluate(qb, &w, tokens, eb);
    BOOST_TEST(rec->linears > before);
    BOOST_TEST(sa.mean_nll() == sb.mean_nll());  // same kernels, same order: bit for bit
    BOOST_TEST(sa.mean_kl() == sb.mean_kl());
}

BOOST_AUTO_TEST_SUITE_END()
