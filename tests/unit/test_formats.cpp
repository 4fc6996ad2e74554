#include <random>

#include "common.hpp"
#include "qforge/core/concepts.hpp"
#include "qforge/formats/dense.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/formats/gguf_kq.hpp"
#include "qforge/formats/ggml_types.hpp"
#include "qforge/quantizers/rtn.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_formats)

static_assert(Format<Dense<2>> && Format<Dense<3>> && Format<Dense<4>> && Format<Dense<8>>);
static_assert(Format<Q4_0> && Format<Q4_1> && Format<Q8_0>);
static_assert(Quantizer<RtnQuantizer>);

namespace {
/// A QuantizedMatrix with random codes and fp16-exact scales, zeros and mins.
QuantizedMatrix random_quantized(const QuantSpec& spec, int rows, int cols, unsigned seed) {
    std::mt19937 rng(seed);
    QuantizedMatrix q(spec, rows, cols);
    for (auto& c : q.codes) c = std::uint8_t(rng() % unsigned(spec.max_code() + 1));
    for (auto& s : q.scales) s = round_to_half(float(int(rng() % 2000) - 1000) * 1e-4f);
    for (auto& z : q.zeros) z = std::uint8_t(rng() % unsigned(spec.max_code() + 1));
    for (auto& m : q.mins) m = round_to_half(float(int(rng() % 2000) - 1000) * 1e-3f);
    return q;
}
bool same(const QuantizedMatrix& a, const QuantizedMatrix& b) {
    return a.spec == b.spec && a.rows == b.rows && a.cols == b.cols && a.codes == b.codes && a.scales == b.scales &&
           a.zeros == b.zeros && a.mins == b.mins;
}
template <class F>
void check_round_trip(const QuantSpec& spec, int rows, int cols, unsigned seed) {
    const auto q = random_quantized(spec, rows, cols, seed);
    const auto p = F::pack(q);
    BOOST_TEST(same(F::unpack(p), q), F::name() << " " << rows << "x" << cols << " g" << spec.group_size);
}
}  // namespace

BOOST_AUTO_TEST_CASE(dense_round_trip_every_width_and_shape) {
    unsigned seed = 1;
    for (int cols : {1, 3, 7, 8, 31, 32, 33, 63, 64, 100, 127, 128, 129, 172, 300, 576}) {
        for (int group : {0, 8, 32, 64, 128}) {
            for (ZeroPoint z : {ZeroPoint::symmetric, ZeroPoint::integer, ZeroPoint::float_min}) {
                check_round_trip<Dense<2>>({2, group, z}, 3, cols, ++seed);
                check_round_trip<Dense<3>>({3, group, z}, 3, cols, ++seed);
                check_round_trip<Dense<4>>({4, group, z}, 3, cols, ++seed);
                check_round_trip<Dense<8>>({8, group, z}, 3, cols, ++seed);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(gguf_round_trip) {
    for (int cols : {32, 64, 96, 576}) {
        check_round_trip<Q4_0>({4, 32, ZeroPoint::symmetric}, 5, cols, 11);
        check_round_trip<Q4_1>({4, 32, ZeroPoint::float_min}, 5, cols, 12);
        check_round_trip<Q8_0>({8, 32, ZeroPoint::symmetric}, 5, cols, 13);
    }
}

BOOST_AUTO_TEST_CASE(dense_sizes_are_really_dense) {
    // 3 bits really take 3 bits: 64 codes = 24 bytes, 5 codes = 15 bits -> 2 bytes
    const auto p3 = Dense<3>::pack(random_quantized({3, 0, ZeroPoint::symmetric}, 2, 64, 1));
    BOOST_TEST(p3.row_bytes == 24u);
    BOOST_TEST(p3.bytes() == 2 * 24 + 2 * 2u);  // codes + one fp16 scale per row
    BOOST_TEST(Dense<3>::pack(random_quantized({3, 0, ZeroPoint::symmetric}, 1, 5, 2)).row_bytes == 2u);
    BOOST_TEST(Dense<2>::pack(random_quantized({2, 0, ZeroPoint::symmetric}, 1, 5, 2)).row_bytes == 2u);
    // bits per weight: w4 g128 with integer zeros = 4 + (16 + 8) / 128
    const auto p4 = Dense<4>::pack(random_quantized({4, 128, ZeroPoint::integer}, 8, 256, 3));
    BOOST_TEST(bits_per_weight<Dense<4>>(p4) == 4.0 + 24.0 / 128.0);
    const auto p4m = Dense<4>::pack(random_quantized({4, 64, ZeroPoint::float_min}, 8, 256, 3));
    BOOST_TEST(bits_per_weight<Dense<4>>(p4m) == 4.0 + 32.0 / 64.0);
    const auto p3s = Dense<3>::pack(random_quantized({3, 128, ZeroPoint::symmetric}, 4, 4096, 4));
    BOOST_TEST(bits_per_weight<Dense<3>>(p3s) == 3.0 + 16.0 / 128.0);
    BOOST_TEST(bits_per_weight<Q4_0>(Q4_0::pack(random_quantized({4, 32, ZeroPoint::symmetric}, 2, 64, 5))) == 4.5);
    BOOST_TEST(bits_per_weight<Q4_1>(Q4_1::pack(random_quantized({4, 32, ZeroPoint::float_min}, 2, 64, 5))) == 5.0);
    BOOST_TEST(bits_per_weight<Q8_0>(Q8_0::pack(random_quantized({8, 32, ZeroPoint::symmetric}, 2, 64, 5))) == 8.5);
}

// Byte strings built by hand from the documented layouts.
BOOST_AUTO_TEST_CASE(dense_bytes_by_hand) {
    QuantizedMatrix q({3, 0, ZeroPoint::symmetric}, 1, 8);
    q.codes = {1, 2, 3, 4, 5, 6, 7, 0};  // sum c_i << 3i = 0x1F58D1
    q.scales = {0.5f};
    const auto p = Dense<3>::pack(q);
    BOOST_TEST(p.codes[0] == 0xD1);
    BOOST_TEST(p.codes[1] == 0x58);
    BOOST_TEST(p.codes[2] == 0x1F);
    BOOST_TEST(p.scales[0] == 0x3800);

    QuantizedMatrix q4({4, 0, ZeroPoint::integer}, 1, 3);
    q4.codes = {0x1, 0xA, 0x7};
    q4.scales = {1.0f};
    q4.zeros = {9};
    const auto p4 = Dense<4>::pack(q4);
    BOOST_TEST(p4.codes[0] == 0xA1);  // code 0 low nibble, code 1 high nibble
    BOOST_TEST(p4.codes[1] == 0x07);  // unused high nibble is 0
    BOOST_TEST(p4.zeros[0] == 9);

    QuantizedMatrix q2({2, 0, ZeroPoint::symmetric}, 1, 5);
    q2.codes = {3, 0, 1, 2, 3};
    q2.scales = {1.0f};
    const auto p2 = Dense<2>::pack(q2);
    BOOST_TEST(p2.codes[0] == 0b10010011);
    BOOST_TEST(p2.codes[1] == 0b00000011);
}

BOOST_AUTO_TEST_CASE(gguf_bytes_by_hand) {
    QuantizedMatrix q({4, 32, ZeroPoint::symmetric}, 1, 32);
    for (int i = 0; i < 32; ++i) q.codes[std::size_t(i)] = std::uint8_t(i % 16);
    q.scales = {0.5f};
    const auto p = Q4_0::pack(q);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(p.blocks.data());
    BOOST_TEST(bytes[0] == 0x00);  // d = 0x3800, little-endian
    BOOST_TEST(bytes[1] == 0x38);
    for (int j = 0; j < 16; ++j) BOOST_TEST(bytes[2 + j] == std::uint8_t((j % 16) | ((j + 16) % 16) << 4));

    QuantizedMatrix q1({4, 32, ZeroPoint::float_min}, 1, 32);
    for (int i = 0; i < 32; ++i) q1.codes[std::size_t(i)] = std::uint8_t(15 - i / 2);
    q1.scales = {1.5f};
    q1.mins = {-0.125f};
    const auto p1 = Q4_1::pack(q1);
    const auto* b1 = reinterpret_cast<const std::uint8_t*>(p1.blocks.data());
    BOOST_TEST((b1[0] == 0x00 && b1[1] == 0x3E && b1[2] == 0x00 && b1[3] == 0xB0));
    BOOST_TEST(b1[4] == std::uint8_t(15 | (7 << 4)));  // weight 0 = 15, weight 16 = 7

    QuantizedMatrix q8({8, 32, ZeroPoint::symmetric}, 1, 32);
    for (int i = 0; i < 32; ++i) q8.codes[std::size_t(i)] = std::uint8_t(i * 8);
    q8.scales = {2.0f};
    const auto p8 = Q8_0::pack(q8);
    const auto* b8 = reinterpret_cast<const std::uint8_t*>(p8.blocks.data());
    BOOST_TEST((b8[0] == 0x00 && b8[1] == 0x40));
    BOOST_TEST(std::int8_t(b8[2]) == -128);  // code 0 is q = -128
    BOOST_TEST(std::int8_t(b8[2 + 31]) == 31 * 8 - 128);
}

BOOST_AUTO_TEST_CASE(unsupported_layouts_are_clear_errors) {
    // 3-bit groups of 12 do not start on a byte
    BOOST_CHECK_THROW(Dense<3>::pack(random_quantized({3, 12, ZeroPoint::symmetric}, 1, 48, 1)), InvalidArgument);
    BOOST_CHECK_THROW(Dense<4>::pack(random_quantized({3, 32, ZeroPoint::symmetric}, 1, 64, 1)), InvalidArgument);
    BOOST_CHECK_THROW(Q4_0::pack(random_quantized({4, 32, ZeroPoint::symmetric}, 1, 48, 1)), InvalidArgument);
    BOOST_CHECK_THROW(Q4_0::pack(random_quantized({4, 64, ZeroPoint::symmetric}, 1, 64, 1)), InvalidArgument);
    BOOST_CHECK_THROW(Q4_1::pack(random_quantized({4, 32, ZeroPoint::integer}, 1, 64, 1)), InvalidArgument);
    auto q = random_quantized({4, 32, ZeroPoint::symmetric}, 1, 64, 1);
    q.scales[0] = 0.1f;  // not an fp16 value: packing would silently change the weights
    BOOST_CHECK_THROW(Dense<4>::pack(q), InvalidData);
    BOOST_CHECK_THROW(Dense<4>::pack(random_quantized({4, 32, ZeroPoint::symmetric, ScaleType::f32}, 1, 64, 1)), InvalidArgument);
}

// K-quants and 5-bit blocks: what a quantizer puts on their grids packs into ggml's blocks and
// back unchanged (codes, group scales and minimums, super-block d and dmin); off-grid matrices are
// refused, naming where; and a block written by hand means what ggml's dequantization says.
namespace {
template <class F>
void check_k_round_trip(int rows, int cols, unsigned seed) {
    const auto w = qtest::random_weights(std::size_t(rows) * std::size_t(cols), seed);
    const auto q = RtnQuantizer(F::grid_spec).quantize(MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols)));
    const auto p = F::pack(q);
    const auto back = F::unpack(p);
    BOOST_TEST((same(back, q) && back.super == q.super), F::name() << " " << rows << "x" << cols);
    BOOST_TEST(p.bytes() * 8 == std::size_t(rows) * std::size_t(cols) * std::size_t(ggml_type_info(*F::info.gguf).block_bytes) * 8 /
                                    ggml_type_info(*F::info.gguf).block_weights);
    // the blocks, read as ggml reads them, are the matrix's values
    std::vector<float> ggml(std::size_t(rows) * std::size_t(cols));
    ggml_type_info(*F::info.gguf).dequantize(reinterpret_cast<const std::uint8_t*>(p.blocks.data()), ggml.size(), ggml.data());
    BOOST_TEST((ggml == q.dequantize()), F::name());
}
}  // namespace

BOOST_AUTO_TEST_CASE(k_quants_round_trip_and_errors) {
    unsigned seed = 70;
    for (int cols : {256, 768}) {
        check_k_round_trip<Q2_K>(3, cols, ++seed);
        check_k_round_trip<Q3_K>(3, cols, ++seed);
        check_k_round_trip<Q4_K>(3, cols, ++seed);
        check_k_round_trip<Q5_K>(3, cols, ++seed);
        check_k_round_trip<Q6_K>(3, cols, ++seed);
        check_k_round_trip<Q5_0>(3, cols, ++seed);
        check_k_round_trip<Q5_1>(3, cols, ++seed);
    }
    const auto w = qtest::random_weights(2 * 512, 5);
    auto q = RtnQuantizer(Q4_K::grid_spec).quantize(MatrixView<const float>(w.data(), 2, 512));
    q.scales[q.group_index(1, 10)] *= 1.0001f;  // row 1, super-block 1, its group 2: no longer d * sc
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { Q4_K::pack(q); }), {"q4_k", "row 1", "block 1", "group 2", "not on the grid"}));
    q = RtnQuantizer(Q4_K::grid_spec).quantize(MatrixView<const float>(w.data(), 2, 512));
    q.codes[5] = 16;
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { Q4_K::pack(q); }), {"row 0", "block 0", "out of range"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] {
                   Q4_K::pack(RtnQuantizer(Q4_K::grid_spec).quantize(MatrixView<const float>(w.data(), 4, 96)));
               }), {"q4_k", "256", "96 columns"}));
    // by hand: Q4_K with d = 1, dmin = 0.5, group 0's sc = 2 and m = 3, weight 0's code 5:
    // 1 * 2 * 5 - 0.5 * 3 = 8.5; group 5 (sc 40, m 17: the high 2 bits of both are used)
    KSuperBlock k{};
    k.d = float_to_half(1.0f);
    k.dmin = float_to_half(0.5f);
    k.sc[0] = 2, k.m[0] = 3, k.codes[0] = 5;
    k.sc[5] = 40, k.m[5] = 17, k.codes[32 * 5 + 1] = 15;
    block_q4_K b{};
    KQuantType<block_q4_K>::encode(k, b);
    float out[256];
    dequantize_k_block(b, out);
    BOOST_TEST(out[0] == 8.5f);
    BOOST_TEST(out[32 * 5 + 1] == 40.0f * 15 - 0.5f * 17);
    BOOST_TEST(out[1] == -1.5f);  // code 0 of group 0: -dmin * m
    KSuperBlock back{};
    KQuantType<block_q4_K>::decode(b, back);
    BOOST_TEST(back.sc[5] == 40);
    BOOST_TEST(back.m[5] == 17);
}

BOOST_AUTO_TEST_SUITE_END()
