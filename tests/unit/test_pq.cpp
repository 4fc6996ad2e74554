// Product quantization: k-means recovers separable clusters and is deterministic for a seed;
// PQ codes pack and unpack exactly and the bits per weight follow from the stored bytes; with
// d = 1 and a fixed codebook holding a scalar grid's levels GPTQ-PQ is scalar GPTQ bit for bit;
// on correlated inputs GPTQ-PQ's layer output error is below plain PQ's.
#include <bit>
#include <cmath>
#include <random>

#include "common.hpp"
#include "qforge/formats/pq.hpp"
#include "qforge/quantizers/gptq.hpp"
#include "qforge/quantizers/gptq_pq.hpp"
#include "qforge/quantizers/registry.hpp"
#include "qforge/runtime/dispatch.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_pq)

namespace {
std::vector<float> normal(std::size_t n, unsigned seed, float sd = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

/// X (n x cols) with correlated columns: Z (n x cols) times a random mixing matrix, plus a few
/// columns ten times larger; H = 2 XᵀX / n.
struct Inputs {
    std::vector<float> x, h;
};
Inputs correlated_inputs(int n, int cols, unsigned seed) {
    const auto z = normal(std::size_t(n) * std::size_t(cols), seed);
    const auto a = normal(std::size_t(cols) * std::size_t(cols), seed + 1, 0.3f);
    Inputs in;
    in.x.assign(std::size_t(n) * std::size_t(cols), 0.0f);
    for (int t = 0; t < n; ++t)
        for (int j = 0; j < cols; ++j) {
            double s = z[std::size_t(t) * std::size_t(cols) + std::size_t(j)];
            for (int i = 0; i < cols; ++i) s += double(z[std::size_t(t) * std::size_t(cols) + std::size_t(i)]) * a[std::size_t(i) * std::size_t(cols) + std::size_t(j)];
            in.x[std::size_t(t) * std::size_t(cols) + std::size_t(j)] = float(s) * (j % 17 == 3 ? 10.0f : 1.0f);
        }
    in.h.assign(std::size_t(cols) * std::size_t(cols), 0.0f);
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < cols; ++j) {
            double s = 0.0;
            for (int t = 0; t < n; ++t) s += double(in.x[std::size_t(t) * std::size_t(cols) + std::size_t(i)]) * in.x[std::size_t(t) * std::size_t(cols) + std::size_t(j)];
            in.h[std::size_t(i) * std::size_t(cols) + std::size_t(j)] = float(2.0 * s / n);
        }
    return in;
}

/// ‖(W − Ŵ) Xᵀ‖² over the calibration inputs.
double output_error(const std::vector<float>& w, const std::vector<float>& wq, const std::vector<float>& x, int rows, int cols, int n) {
    double e = 0.0;
    for (int r = 0; r < rows; ++r)
        for (int t = 0; t < n; ++t) {
            double s = 0.0;
            for (int c = 0; c < cols; ++c)
                s += (double(w[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) - wq[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) *
                     x[std::size_t(t) * std::size_t(cols) + std::size_t(c)];
            e += s * s;
        }
    return e;
}
}  // namespace

BOOST_AUTO_TEST_CASE(kmeans_recovers_separable_clusters) {
    // 6 well-separated centres in 3-D, 40 points each within ±0.05 of their centre
    const std::vector<float> centres{0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 5, 5, 5, 5, -5, 5, -5};
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> jitter(-0.05f, 0.05f);
    std::vector<float> pts;
    std::vector<int> truth;
    for (int p = 0; p < 240; ++p) {
        const int c = (p * 7) % 6;  // interleaved, so the order does not give them away
        truth.push_back(c);
        for (int j = 0; j < 3; ++j) pts.push_back(centres[std::size_t(c * 3 + j)] + jitter(rng));
    }
    const std::vector<float> h{1.0f, 1.0f, 1.0f};
    for (const std::uint64_t seed : {0ull, 1ull, 12345ull}) {
        const auto r = kmeans(pts, 3, 6, h, {.iterations = 50, .seed = seed});
        // every true cluster maps to one centroid, and no two clusters share one
        std::vector<int> map(6, -1), used(6, 0);
        for (std::size_t p = 0; p < truth.size(); ++p) {
            int& m = map[std::size_t(truth[p])];
            if (m < 0) m = r.assignment[p], ++used[r.assignment[p]];
            BOOST_TEST_REQUIRE(m == int(r.assignment[p]), "seed " << seed << " point " << p);
        }
        for (const int u : used) BOOST_TEST(u == 1);
        for (int c = 0; c < 6; ++c)
            for (int j = 0; j < 3; ++j)
                BOOST_TEST(std::fabs(r.centroids[std::size_t(map[std::size_t(c)] * 3 + j)] - centres[std::size_t(c * 3 + j)]) < 0.02f);
        BOOST_TEST(r.inertia < 240 * 3 * 0.05 * 0.05);
        // deterministic for a seed
        const auto again = kmeans(pts, 3, 6, h, {.iterations = 50, .seed = seed});
        BOOST_TEST(again.centroids == r.centroids);
        BOOST_TEST(again.assignment == r.assignment);
    }
}

// The nearest-centroid search (backends/centroids.hpp): the oracle against a plain loop over
// every (point, centroid) pair, then every usable vector kernel against the oracle bit for bit
// (codes and distances): d 1 to 17 (17: past the vector lanes' 16), k 1 to 300 (the oracle's
// chunks of 256), point counts around the lanes' passes, shared and per-point weights, zero
// weights, strided points, and repeated centroids (the lowest index wins a tie).
BOOST_AUTO_TEST_CASE(nearest_centroids_equal_the_oracle) {
    std::mt19937 rng(51);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f), w(0.0f, 3.0f);
    int cases = 0, ties = 0;
    for (const int d : {1, 2, 3, 4, 8, 16, 17})
        for (const int k : {1, 2, 5, 16, 64, 300})
            for (const std::size_t n : {std::size_t(1), std::size_t(7), std::size_t(16), std::size_t(17), std::size_t(64), std::size_t(75)})
                for (const bool shared : {true, false}) {
                    const std::size_t D = std::size_t(d), stride = D + 3;
                    std::vector<float> x(n * stride), h(shared ? D : n * D), c(std::size_t(k) * D), ct(c.size());
                    for (auto& v : x) v = u(rng);
                    for (auto& v : h) v = w(rng) < 0.4f ? 0.0f : w(rng);
                    for (auto& v : c) v = u(rng);
                    if (k > 3)  // centroid k-1 repeats centroid 1, and point 0 sits on it
                        for (std::size_t j = 0; j < D; ++j) c[std::size_t(k - 1) * D + j] = c[D + j], x[j] = c[D + j];
                    qforge::detail::transpose_centroids(c.data(), k, d, ct.data());
                    const std::size_t h_stride = shared ? 0 : D;
                    std::vector<std::uint16_t> want(n);
                    std::vector<double> want_dist(n);
                    for (std::size_t i = 0; i < n; ++i) {
                        int best = -1;
                        for (int cc = 0; cc < k; ++cc) {
                            double s = 0.0;
                            for (std::size_t j = 0; j < D; ++j) {
                                const double e = double(x[i * stride + j]) - double(c[std::size_t(cc) * D + j]);
                                s += double(h[i * h_stride + j]) * e * e;
                            }
                            if (best < 0 || s < want_dist[i]) best = cc, want_dist[i] = s;
                        }
                        want[i] = std::uint16_t(best);
                    }
                    if (k > 3 && want[0] == 1) ++ties;  // 1 and k-1 both at distance 0: 1 must win
                    std::vector<Isa> isas = {Isa::scalar, Isa::avx2, Isa::avx512_vnni};
                    for (const Isa isa : isas) {
                        if (!isa_usable(isa)) continue;
                        std::vector<std::uint16_t> got(n, 9999);
                        std::vector<double> dist(n, -1.0);
                        fp32_functions(isa).nearest_centroids(x.data(), stride, h.data(), h_stride, n, d, ct.data(), k, got.data(), dist.data());
                        const std::string what = std::string(isa_name(isa)) + " d " + std::to_string(d) + " k " + std::to_string(k) + " n " +
                                                 std::to_string(n) + (shared ? " shared" : " per point");
                        BOOST_TEST_REQUIRE(got == want, what);
                        for (std::size_t i = 0; i < n; ++i)
                            BOOST_TEST_REQUIRE(std::bit_cast<std::uint64_t>(dist[i]) == std::bit_cast<std::uint64_t>(want_dist[i]), what << " point " << i);
                    }
                    ++cases;
                }
    for (const Isa isa : {Isa::avx2, Isa::avx512_vnni})
        if (!isa_usable(isa)) BOOST_TEST_MESSAGE("nearest centroids: " << isa_name(isa) << " not usable here, not checked");
    BOOST_TEST_MESSAGE(cases << " cases, " << ties << " with a tie at distance 0");
    BOOST_TEST(ties > 0);
}

// k-means gives the same centroids, assignment and inertia whichever search runs it.
BOOST_AUTO_TEST_CASE(kmeans_the_same_on_every_kernel) {
    for (const int d : {2, 4})
        for (const bool shared : {true, false}) {
            const auto pts = normal(std::size_t(1024 * d), 61 + unsigned(d));
            std::vector<float> h = normal(shared ? std::size_t(d) : pts.size(), 62);
            for (auto& v : h) v = std::fabs(v);
            const auto oracle = kmeans(pts, d, 64, h, {.iterations = 25, .seed = 7});
            BOOST_TEST(oracle.iterations > 2);
            for (const Isa isa : {Isa::avx2, Isa::avx512_vnni}) {
                if (!isa_usable(isa)) continue;
                const auto r = kmeans(pts, d, 64, h, {.iterations = 25, .seed = 7, .nearest = fp32_functions(isa).nearest_centroids});
                BOOST_TEST(r.centroids == oracle.centroids, isa_name(isa));
                BOOST_TEST(r.assignment == oracle.assignment, isa_name(isa));
                BOOST_TEST(std::bit_cast<std::uint64_t>(r.inertia) == std::bit_cast<std::uint64_t>(oracle.inertia), isa_name(isa));
                BOOST_TEST(r.iterations == oracle.iterations, isa_name(isa));
            }
        }
}

BOOST_AUTO_TEST_CASE(kmeans_weights_and_errors) {
    // two points per dimension pattern: with weight only on dimension 0, one centroid must split
    // the points by their first coordinate (the second does not count)
    const std::vector<float> pts{0, 0, 0, 9, 1, 0, 1, 9};
    const auto r = kmeans(pts, 2, 2, std::vector<float>{1.0f, 0.0f}, {.iterations = 10, .seed = 1});
    BOOST_TEST(r.assignment[0] == r.assignment[1]);
    BOOST_TEST(r.assignment[2] == r.assignment[3]);
    BOOST_TEST(r.assignment[0] != r.assignment[2]);
    // per-point weights: the centroid is the weighted mean per dimension
    const std::vector<float> one{1, 3};
    const auto m = kmeans(std::vector<float>{0.0f, 4.0f}, 1, 1, one);
    BOOST_TEST(m.centroids[0] == 3.0f);
    BOOST_CHECK_THROW(kmeans(pts, 3, 2, std::vector<float>{1, 1, 1}), InvalidArgument);
    BOOST_CHECK_THROW(kmeans(pts, 2, 0, std::vector<float>{1, 1}), InvalidArgument);
    BOOST_CHECK_THROW(kmeans(pts, 2, 2, std::vector<float>{1, -1}), InvalidArgument);
    BOOST_CHECK_THROW(kmeans(std::vector<float>{0.0f, NAN}, 2, 1, std::vector<float>{1, 1}), InvalidData);
}

BOOST_AUTO_TEST_CASE(pq_codes_pack_exactly_and_bpw_counts_bytes) {
    std::mt19937 rng(5);
    for (const int bits : {1, 3, 6, 8, 11, 16}) {
        std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
        for (const std::size_t count : {std::size_t(1), std::size_t(7), std::size_t(1000)}) {
            std::vector<std::uint16_t> c(count);
            for (auto& v : c) v = std::uint16_t(code(rng));
            const auto packed = pack_pq_codes(c, bits);
            BOOST_TEST(packed.size() == (count * std::size_t(bits) + 7) / 8);
            BOOST_TEST(unpack_pq_codes(packed, count, bits) == c, "bits " << bits << " count " << count);
        }
    }
    // hand-packed: codes 5, 2, 7 of 3 bits = 101 010 111 -> bits LSB first: byte 0 = 0b11010101 (0xD5), byte 1 = 0b1
    BOOST_TEST((pack_pq_codes({5, 2, 7}, 3) == std::vector<std::uint8_t>{0xD5, 0x01}));
    BOOST_CHECK_THROW(unpack_pq_codes({0xD5}, 3, 3), InvalidData);

    // the seed's (d, n, g) = (2, 64, 1024) at fp16 is 4.0 bits per weight on whole blocks, 3.5 +
    // the scales with int8 centroids
    const PqMatrix f16({2, 64, 1024, 16}, 128, 64);
    BOOST_TEST(f16.codebooks() == 2 * 2);
    BOOST_TEST(f16.stored_bytes() == 128u * 32u * 6u / 8u + 4u * 64u * 2u * 2u);
    BOOST_TEST(f16.bits_per_weight() == 4.0);
    const PqMatrix i8({2, 64, 1024, 8}, 128, 64);
    BOOST_TEST(i8.bits_per_weight() == 3.5 + 16.0 * 4 / (128.0 * 64));
    // edge blocks hold a whole codebook each: 576 x 576 has 9 x 18 blocks of 64 x 32
    const PqMatrix smol({2, 64, 1024, 16}, 576, 576);
    BOOST_TEST(smol.codebooks() == 9 * 18);
    const PqMatrix edge({2, 64, 1024, 16}, 100, 40);  // 2 x 2 blocks, partly empty
    BOOST_TEST(edge.codebooks() == 4);
    BOOST_TEST(edge.bits_per_weight() == 8.0 * double((100 * 20 * 6 + 7) / 8 + 4 * 64 * 2 * 2) / (100.0 * 40.0));
    BOOST_CHECK_THROW(PqMatrix({2, 64, 1000, 16}, 64, 64), InvalidArgument);  // g not a multiple of 64
    BOOST_CHECK_THROW(PqMatrix({2, 64, 1024, 16}, 64, 63), InvalidArgument);  // odd columns for d = 2
    BOOST_CHECK_THROW(PqMatrix({2, 64, 1024, 12}, 64, 64), InvalidArgument);
}

BOOST_AUTO_TEST_CASE(int8_centroids_are_scale_times_code) {
    PqMatrix m({2, 4, 64, 8}, 64, 2);
    const std::vector<float> v{1.0f, -0.5f, 0.25f, 0.0f, -1.27f, 0.3f, 0.9f, -0.1f};
    m.set_codebook(0, v.data());
    const float s = m.centroid_scales[0];
    BOOST_TEST(s == round_to_half(1.27f / 127.0f));
    for (std::size_t i = 0; i < v.size(); ++i) {
        BOOST_TEST(m.centroids[i] == s * float(m.centroid_codes[i]));
        BOOST_TEST(std::fabs(m.centroids[i] - v[i]) <= 0.5f * s + 1e-6f);
    }
}

BOOST_AUTO_TEST_CASE(d1_fixed_uniform_codebook_is_scalar_gptq) {
    // every row spans [-1, 0.875], so GPTQ's per-channel 4-bit grid (fitted at column 0 from the
    // row as it is) has scale 0.125 and zero 8 in every row: levels 0.125 (q - 8), fp16-exact
    const int rows = 128, cols = 96, n = 256;
    const auto in = correlated_inputs(n, cols, 11);
    std::mt19937 rng(12);
    std::uniform_real_distribution<float> u(-0.95f, 0.85f);
    std::vector<float> w(std::size_t(rows) * std::size_t(cols));
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) w[std::size_t(r) * std::size_t(cols) + std::size_t(c)] = c == 0 ? -1.0f : c == 1 ? 0.875f : u(rng);
    const MatrixView<const float> wv(w.data(), std::size_t(rows), std::size_t(cols));
    const QuantSpec spec{4, 0, ZeroPoint::integer, ScaleType::f32};
    GptqOptions go;
    go.backend = Backend::cpu(best_isa(), 2);
    const auto g = gptq_quantize(wv, in.h, spec, go);
    for (int r = 0; r < rows; ++r) {
        BOOST_TEST_REQUIRE(g.q.scales[std::size_t(r)] == 0.125f);
        BOOST_TEST_REQUIRE(int(g.q.zeros[std::size_t(r)]) == 8);
    }
    std::vector<float> levels(16);
    for (int v = 0; v < 16; ++v) levels[std::size_t(v)] = 0.125f * float(v - 8);
    GptqPqOptions po;
    po.backend = go.backend;
    po.fixed_codebook = &levels;
    const auto p = gptq_pq_quantize(wv, in.h, {1, 16, 1024, 16}, po);
    BOOST_TEST(p.damp == g.damp);
    const auto gw = g.dequantize(), pw = p.q.dequantize();
    std::size_t same = 0;
    for (std::size_t i = 0; i < gw.size(); ++i) same += gw[i] == pw[i];
    BOOST_TEST(same == gw.size());
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c)
            BOOST_TEST_REQUIRE(int(p.q.codes[std::size_t(r) * std::size_t(cols) + std::size_t(c)]) == int(g.q.codes[std::size_t(r) * std::size_t(cols) + std::size_t(c)]));
}

BOOST_AUTO_TEST_CASE(gptq_pq_beats_plain_pq_on_correlated_inputs) {
    const int rows = 128, cols = 128, n = 512;
    const auto in = correlated_inputs(n, cols, 21);
    const auto w = normal(std::size_t(rows) * std::size_t(cols), 22, 0.05f);
    const MatrixView<const float> wv(w.data(), std::size_t(rows), std::size_t(cols));
    for (const PqSpec spec : {PqSpec{2, 16, 256, 16}, PqSpec{2, 64, 1024, 16}, PqSpec{4, 256, 1024, 16}, PqSpec{2, 64, 1024, 8}}) {
        GptqPqOptions o;
        o.backend = Backend::cpu(best_isa(), 2);
        const auto gp = gptq_pq_quantize(wv, in.h, spec, o);
        o.error_feedback = false;
        const auto plain = gptq_pq_quantize(wv, in.h, spec, o);
        const double eg = output_error(w, gp.q.dequantize(), in.x, rows, cols, n), ep = output_error(w, plain.q.dequantize(), in.x, rows, cols, n);
        BOOST_TEST_MESSAGE("d " << spec.d << " n " << spec.n << " g " << spec.g << " c" << spec.centroid_bits << ": GPTQ-PQ " << eg << ", plain PQ " << ep
                                << " (" << gp.q.bits_per_weight() << " bpw)");
        BOOST_TEST(eg < 0.8 * ep, "d " << spec.d << " n " << spec.n << " g " << spec.g);
        // the same result on another thread count (row blocks are the units of work)
        GptqPqOptions one;
        one.backend = Backend::cpu(best_isa(), 1);
        BOOST_TEST(gptq_pq_quantize(wv, in.h, spec, one).q.codes == gp.q.codes);
    }
}

BOOST_AUTO_TEST_CASE(gptq_pq_refuses_bad_input) {
    const std::vector<float> w(64 * 64, 0.1f), h(64 * 64, 0.0f);
    const MatrixView<const float> wv(w.data(), 64, 64);
    BOOST_CHECK_THROW(gptq_pq_quantize(wv, std::vector<float>(10), {2, 64, 1024, 16}), InvalidArgument);
    const std::vector<float> wrong(7);
    GptqPqOptions o;
    o.fixed_codebook = &wrong;
    BOOST_CHECK_THROW(gptq_pq_quantize(wv, h, {2, 64, 1024, 16}, o), InvalidArgument);
    std::vector<float> bad = w;
    bad[5] = NAN;
    BOOST_CHECK_THROW(gptq_pq_quantize(MatrixView<const float>(bad.data(), 64, 64), h, {2, 64, 1024, 16}), InvalidData);
}

// The GEMV through the codebooks: the oracle against W x in double (it computes the product),
// then every usable vector kernel against the oracle bit for bit, on shapes with edge blocks,
// codebooks of 4 to 256 centroids (AVX-512: the permute path up to 64, gathers above), fp16 and
// int8 centroids, and 1 to 3 threads.
BOOST_AUTO_TEST_CASE(pq_gemv_equals_the_oracle) {
    std::mt19937 rng(31);
    struct Shape {
        PqSpec spec;
        int rows, cols;
    };
    for (const Shape& sh : {Shape{{2, 64, 1024, 16}, 192, 576}, Shape{{2, 64, 1024, 8}, 100, 70}, Shape{{4, 256, 1024, 16}, 64, 128},
                            Shape{{1, 16, 1024, 16}, 130, 48}, Shape{{2, 4, 64, 16}, 65, 6}, Shape{{3, 128, 256, 16}, 64, 36}}) {
        PqMatrix m(sh.spec, sh.rows, sh.cols);
        const auto vals = normal(std::size_t(m.codebooks()) * std::size_t(sh.spec.n) * std::size_t(sh.spec.d), 32);
        for (int b = 0; b < m.codebooks(); ++b) m.set_codebook(b, vals.data() + std::size_t(b) * std::size_t(sh.spec.n) * std::size_t(sh.spec.d));
        std::uniform_int_distribution<int> code(0, sh.spec.n - 1);
        for (auto& c : m.codes) c = std::uint16_t(code(rng));
        const auto x = normal(std::size_t(sh.cols), 33);
        const auto w = m.dequantize();
        const PqKernel k = PqKernel::from(m);
        std::vector<float> oracle(std::size_t(sh.rows));
        pq_gemv(k, x.data(), oracle.data(), Isa::scalar, 1);
        for (int r = 0; r < sh.rows; ++r) {
            double ref = 0.0, mag = 0.0;
            for (int c = 0; c < sh.cols; ++c) {
                ref += double(w[std::size_t(r) * std::size_t(sh.cols) + std::size_t(c)]) * x[std::size_t(c)];
                mag += std::fabs(double(w[std::size_t(r) * std::size_t(sh.cols) + std::size_t(c)]) * x[std::size_t(c)]);
            }
            BOOST_TEST_REQUIRE(std::fabs(double(oracle[std::size_t(r)]) - ref) <= 1e-5 * mag + 1e-6, "d " << sh.spec.d << " row " << r);
        }
        for (const Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni}) {
            if (!isa_usable(isa)) {
                BOOST_TEST_MESSAGE("PQ GEMV: " << isa_name(isa) << " not usable here, not checked");
                continue;
            }
            for (const int threads : {1, 3}) {
                std::vector<float> y(std::size_t(sh.rows), -1.0f);
                pq_gemv(k, x.data(), y.data(), isa, threads);
                for (int r = 0; r < sh.rows; ++r)
                    BOOST_TEST_REQUIRE(std::bit_cast<std::uint32_t>(y[std::size_t(r)]) == std::bit_cast<std::uint32_t>(oracle[std::size_t(r)]),
                                       isa_name(isa) << " d " << sh.spec.d << " n " << sh.spec.n << " row " << r);
            }
        }
    }
    PqMatrix big({2, 512, 1024, 16}, 64, 64);
    BOOST_CHECK_THROW(PqKernel::from(big), InvalidArgument);
}

// PQ as a scheme: `gptq:pq...` and `rtn:pq...` through the registry are gptq_pq_quantize and
// pq_quantize (plain PQ, unit weights) exactly; `,had` quantizes W Tᵀ and dequantizes back to W's
// basis; a row range keeps its codebooks whole.
BOOST_AUTO_TEST_CASE(pq_schemes_reach_gptq_pq_and_plain_pq) {
    const int rows = 192, cols = 128, n = 256;
    const auto in = correlated_inputs(n, cols, 41);
    const auto w = normal(std::size_t(rows) * std::size_t(cols), 42, 0.05f);
    const MatrixView<const float> wv(w.data(), std::size_t(rows), std::size_t(cols));
    QuantizeSettings settings;
    settings.backend = Backend::cpu(best_isa(), 2);
    LayerCalibration calib;
    calib.hessian = &in.h;
    GptqPqOptions o;
    o.backend = settings.backend;
    const auto g = quantize(wv, parse_scheme("gptq:pq2n64g1024c8,damp=0.05"), calib, settings);
    BOOST_TEST_REQUIRE(g.is_pq());
    o.damp = 0.05f;
    const auto direct = gptq_pq_quantize(wv, in.h, {2, 64, 1024, 8}, o);
    BOOST_TEST(g.pq.codes == direct.q.codes);
    BOOST_TEST(g.pq.centroids == direct.q.centroids);
    BOOST_TEST(g.dequantize() == direct.q.dequantize());
    // rtn: plain PQ, k-means weighted 1 per dimension: equal to GPTQ-PQ without feedback on an identity Hessian
    const auto r = quantize(wv, parse_scheme("rtn:pq2n64g1024"), {}, settings);
    std::vector<float> eye(std::size_t(cols) * std::size_t(cols), 0.0f);
    for (int i = 0; i < cols; ++i) eye[std::size_t(i) * std::size_t(cols + 1)] = 1.0f;
    o = GptqPqOptions{};
    o.error_feedback = false;
    o.damp = 0.0f;
    BOOST_TEST(r.pq.codes == gptq_pq_quantize(wv, eye, {2, 64, 1024, 16}, o).q.codes);
    BOOST_TEST(output_error(w, g.dequantize(), in.x, rows, cols, n) < output_error(w, r.dequantize(), in.x, rows, cols, n));
    // ',had': the codes are of W Tᵀ, dequantized back to W's basis (near W, not near W Tᵀ)
    const auto h = quantize(wv, parse_scheme("gptq:pq2n64g1024,had"), calib, settings);
    BOOST_TEST_REQUIRE(h.input_transform != nullptr);
    double err = 0.0, norm = 0.0;
    const auto hd = h.dequantize();
    for (std::size_t i = 0; i < w.size(); ++i) err += double(hd[i] - w[i]) * double(hd[i] - w[i]), norm += double(w[i]) * double(w[i]);
    BOOST_TEST(err < 0.1 * norm);
    // rows [64, 192): the same codes and codebooks as those rows of the whole
    const PqMatrix part = g.pq.row_range(64, 192);
    const auto whole = g.pq.dequantize(), cut = part.dequantize();
    BOOST_TEST(std::equal(cut.begin(), cut.end(), whole.begin() + 64 * cols));
    BOOST_TEST(part.centroid_scales.size() == std::size_t(part.codebooks()));
    BOOST_CHECK_THROW(g.pq.row_range(32, 192), InvalidArgument);
    BOOST_CHECK_THROW(g.pq.row_range(0, 100), InvalidArgument);
}

// PQ weights behind the backend: one activation through the codebooks (the GEMV oracle's bits,
// kept kernel or not), a batch through the dequantized weights, dequantize = the reference values.
BOOST_AUTO_TEST_CASE(pq_weights_on_the_cpu_backend) {
    std::mt19937 rng(51);
    PqMatrix m({2, 64, 1024, 16}, 130, 96);
    const auto vals = normal(std::size_t(m.codebooks()) * 64 * 2, 52);
    for (int b = 0; b < m.codebooks(); ++b) m.set_codebook(b, vals.data() + std::size_t(b) * 128);
    std::uniform_int_distribution<int> code(0, 63);
    for (auto& c : m.codes) c = std::uint16_t(code(rng));
    const LinearWeights lw(m);
    const auto x = normal(3 * 96, 53);
    const auto ref = m.dequantize();
    std::vector<float> oracle(130);
    pq_gemv(PqKernel::from(m), x.data(), oracle.data(), Isa::scalar, 1);
    for (const Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512_vnni}) {
        if (!isa_usable(isa)) continue;
        const Backend b = Backend::cpu(isa, 2);
        std::vector<float> y(130), y2(130);
        b.linear(lw, MatrixView<const float>(x.data(), 1, 96), MatrixView<float>(y.data(), 1, 130));
        const auto prepared = b.prepare(lw);
        prepared->forward(MatrixView<const float>(x.data(), 1, 96), MatrixView<float>(y2.data(), 1, 130));
        prepared->forward(MatrixView<const float>(x.data(), 1, 96), MatrixView<float>(y2.data(), 1, 130));  // the kept kernel
        for (int r = 0; r < 130; ++r) {
            BOOST_TEST_REQUIRE(std::bit_cast<std::uint32_t>(y[std::size_t(r)]) == std::bit_cast<std::uint32_t>(oracle[std::size_t(r)]), isa_name(isa) << " row " << r);
            BOOST_TEST_REQUIRE(std::bit_cast<std::uint32_t>(y2[std::size_t(r)]) == std::bit_cast<std::uint32_t>(oracle[std::size_t(r)]), isa_name(isa) << " row " << r);
        }
        std::vector<float> yb(3 * 130);
        prepared->forward(MatrixView<const float>(x.data(), 3, 96), MatrixView<float>(yb.data(), 3, 130));
        for (int t = 0; t < 3; ++t)
            for (int r = 0; r < 130; ++r) {
                double s = 0.0, mag = 0.0;
                for (int c = 0; c < 96; ++c) {
                    const double p = double(ref[std::size_t(r) * 96 + std::size_t(c)]) * x[std::size_t(t) * 96 + std::size_t(c)];
                    s += p, mag += std::fabs(p);
                }
                BOOST_TEST_REQUIRE(std::fabs(yb[std::size_t(t) * 130 + std::size_t(r)] - s) <= 1e-5 * mag + 1e-6, isa_name(isa) << " token " << t << " row " << r);
            }
        std::vector<float> d(130 * 96);
        b.dequantize(lw, MatrixView<float>(d.data(), 130, 96));
        BOOST_TEST(d == ref);
        BOOST_CHECK_THROW(b.linear(lw, MatrixView<const float>(x.data(), 1, 95), MatrixView<float>(y.data(), 1, 130)), InvalidArgument);
    }
}

BOOST_AUTO_TEST_SUITE_END()
