#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>

#include "common.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/io/gguf.hpp"
#include "qforge/sources/llama/gguf_loader.hpp"
#include "qforge/quantizers/rtn.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_gguf)
using io::GgufFile;

namespace {

/// A GGUF writer for tests: every metadata type, arrays, and tensors of each supported type.
struct Writer {
    std::vector<std::uint8_t> bytes;
    template <class T>
    void put(T v) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
        bytes.insert(bytes.end(), p, p + sizeof(T));
    }
    void str(const std::string& s) {
        put<std::uint64_t>(s.size());
        bytes.insert(bytes.end(), s.begin(), s.end());
    }
};

struct Tensor {
    std::string name;
    std::vector<std::uint64_t> ne;
    std::uint32_t type;
    std::vector<std::uint8_t> data;
    std::vector<float> expected;
};

std::vector<std::uint8_t> build(const std::vector<Tensor>& tensors, std::uint32_t alignment) {
    Writer w;
    w.bytes.insert(w.bytes.end(), {'G', 'G', 'U', 'F'});
    w.put<std::uint32_t>(3);
    w.put<std::uint64_t>(tensors.size());
    w.put<std::uint64_t>(8);
    w.str("general.architecture"); w.put<std::uint32_t>(8); w.str("llama");
    w.str("general.alignment"); w.put<std::uint32_t>(4); w.put<std::uint32_t>(alignment);
    w.str("test.i8"); w.put<std::uint32_t>(1); w.put<std::int8_t>(-5);
    w.str("test.u64"); w.put<std::uint32_t>(10); w.put<std::uint64_t>(1ull << 40);
    w.str("test.f32"); w.put<std::uint32_t>(6); w.put<float>(0.25f);
    w.str("test.f64"); w.put<std::uint32_t>(12); w.put<double>(-1.5);
    w.str("test.bool"); w.put<std::uint32_t>(7); w.put<std::uint8_t>(1);
    w.str("test.strings"); w.put<std::uint32_t>(9); w.put<std::uint32_t>(8); w.put<std::uint64_t>(3);
    w.str("a"); w.str(""); w.str("ü");
    std::uint64_t offset = 0;
    for (const auto& t : tensors) {
        w.str(t.name);
        w.put<std::uint32_t>(std::uint32_t(t.ne.size()));
        for (auto d : t.ne) w.put<std::uint64_t>(d);
        w.put<std::uint32_t>(t.type);
        w.put<std::uint64_t>(offset);
        offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    while (w.bytes.size() % alignment) w.bytes.push_back(0);
    for (const auto& t : tensors) {
        w.bytes.insert(w.bytes.end(), t.data.begin(), t.data.end());
        while (w.bytes.size() % alignment) w.bytes.push_back(0);
    }
    return w.bytes;
}

template <class F>
Tensor packed_tensor(const std::string& name, std::uint32_t type, int rows, int cols, unsigned seed) {
    const auto w = qtest::random_weights(std::size_t(rows) * std::size_t(cols), seed);
    const auto q = RtnQuantizer(typename F::Packed{}.spec).quantize(MatrixView<const float>(w.data(), std::size_t(rows), std::size_t(cols)));
    const auto p = F::pack(q);
    const auto* b = reinterpret_cast<const std::uint8_t*>(p.blocks.data());
    return {name, {std::uint64_t(cols), std::uint64_t(rows)}, type, {b, b + p.bytes()}, q.dequantize()};
}

std::vector<Tensor> sample_tensors() {
    std::vector<Tensor> ts;
    Tensor f32{"norm.weight", {5}, 0, {}, {1.0f, -2.0f, 0.5f, 3.25f, 0.0f}};
    f32.data.resize(20);
    std::memcpy(f32.data.data(), f32.expected.data(), 20);
    ts.push_back(f32);
    Tensor f16{"f16.weight", {3}, 1, {0x00, 0x3C, 0x00, 0xB8, 0x01, 0x00}, {1.0f, -0.5f, 5.9604645e-8f}};
    ts.push_back(f16);
    Tensor bf16{"bf16.weight", {2}, 30, {0x80, 0x3F, 0x40, 0xC0}, {1.0f, -3.0f}};
    ts.push_back(bf16);
    ts.push_back(packed_tensor<Q4_0>("blk.0.attn_q.weight", 2, 3, 64, 1));
    ts.push_back(packed_tensor<Q4_1>("blk.0.ffn_up.weight", 3, 4, 96, 2));
    ts.push_back(packed_tensor<Q8_0>("token_embd.weight", 8, 2, 32, 3));
    return ts;
}

std::string write_file(const std::string& name, const std::vector<std::uint8_t>& bytes) {
    const auto path = (std::filesystem::temp_directory_path() / name).string();
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return path;
}


}  // namespace

BOOST_AUTO_TEST_CASE(reads_what_it_was_written) {
    for (std::uint32_t alignment : {32u, 64u}) {
        const auto tensors = sample_tensors();
        const auto path = write_file("qf_sample.gguf", build(tensors, alignment));
        const auto f = GgufFile::open(path);
        BOOST_TEST(f.version() == 3u);
        BOOST_TEST(f.alignment() == alignment);
        BOOST_TEST(f.get("general.architecture").as_string() == "llama");
        BOOST_TEST(f.get("test.i8").as_int() == -5);
        BOOST_TEST(f.get("test.u64").as_int() == (1ll << 40));
        BOOST_TEST(f.get("test.f32").as_double() == 0.25);
        BOOST_TEST(f.get("test.f64").as_double() == -1.5);
        BOOST_TEST(std::get<bool>(f.get("test.bool").value));
        const auto& arr = f.get("test.strings").as_array();
        BOOST_TEST(arr.size() == 3u);
        BOOST_TEST(arr[2].as_string() == "ü");
        BOOST_TEST(f.tensors().size() == tensors.size());
        for (const auto& t : tensors) {
            const auto& info = f.tensor(t.name);
            BOOST_TEST(info.cols() == t.ne[0]);
            const auto values = f.dequantize(info);
            BOOST_TEST((values == t.expected), t.name);
        }
    }
}

BOOST_AUTO_TEST_CASE(bad_files_name_the_file_and_problem) {
    const auto good = build(sample_tensors(), 32);
    const auto expect = [](const std::string& path, const std::string& fragment) {
        BOOST_CHECK_EXCEPTION(GgufFile::open(path), FileError, [&](const FileError& e) {
            const std::string m = e.what();
            if (m.find(path) == std::string::npos || m.find(fragment) == std::string::npos) BOOST_TEST_MESSAGE("got: " << m);
            return m.find(path) != std::string::npos && m.find(fragment) != std::string::npos;
        });
    };
    auto bad = good;
    bad[0] = 'X';
    expect(write_file("qf_magic.gguf", bad), "wrong magic");
    bad = good;
    bad[4] = 9;
    expect(write_file("qf_version.gguf", bad), "version 9");
    for (std::size_t cut : {std::size_t(10), std::size_t(60), std::size_t(300), good.size() - 40})
        expect(write_file("qf_trunc.gguf", std::vector<std::uint8_t>(good.begin(), good.begin() + std::ptrdiff_t(cut))), "truncated");
    expect("/nonexistent/model.gguf", "cannot open");
    Writer odd;  // general.alignment stored as a string (found by fuzz_gguf)
    odd.bytes = {'G', 'G', 'U', 'F'};
    odd.put<std::uint32_t>(3);
    odd.put<std::uint64_t>(0);
    odd.put<std::uint64_t>(1);
    odd.str("general.alignment");
    odd.put<std::uint32_t>(8);
    odd.str("32");
    expect(write_file("qf_align.gguf", odd.bytes), "not an integer");
    // a NaN inside a tensor is found when it is read
    auto tensors = sample_tensors();
    const float nan = std::nanf("");
    std::memcpy(tensors[0].data.data() + 4, &nan, 4);
    const auto f = GgufFile::open(write_file("qf_nan.gguf", build(tensors, 32)));
    BOOST_CHECK_THROW(f.dequantize(f.tensor("norm.weight")), FileError);
}

BOOST_AUTO_TEST_CASE(smollm2_metadata, *boost::unit_test::precondition(qtest::needs_smollm2{})) {
    const auto f = GgufFile::open(qtest::smollm2_path());
    BOOST_TEST(f.get("general.architecture").as_string() == "llama");
    BOOST_TEST(f.get("llama.block_count").as_int() == 30);
    BOOST_TEST(f.get("llama.embedding_length").as_int() == 576);
    BOOST_TEST(f.get("llama.attention.head_count").as_int() == 9);
    BOOST_TEST(f.get("llama.attention.head_count_kv").as_int() == 3);
    BOOST_TEST(f.get("tokenizer.ggml.tokens").as_array().size() == 49152u);
    BOOST_TEST(f.tensor("blk.0.ffn_down.weight").cols() == 1536u);
    BOOST_TEST(f.tensor("blk.0.ffn_down.weight").rows() == 576u);
    BOOST_TEST(std::string(io::ggml_type_name(f.tensor("blk.0.attn_q.weight").type)) == "Q4_1");
}

// Peer check: every tensor of a GGUF file as qforge dequantizes it equals what llama.cpp's `gguf`
// Python package dequantizes. tests/peer/run_gguf_peer.sh writes those dumps into
// QFORGE_GGUF_PEER_DIR, for SmolLM2 and for a file of random K-quant blocks it writes itself.
namespace {
struct needs_peer_dumps {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result r(std::getenv("QFORGE_GGUF_PEER_DIR") && std::getenv("QFORGE_GGUF_PEER_FILE"));
        if (!r) r.message() << "QFORGE_GGUF_PEER_DIR/FILE not set: this comparison runs from the 'peer' ctest label";
        return r;
    }
};
}  // namespace

BOOST_AUTO_TEST_CASE(gguf_matches_gguf_py, *boost::unit_test::precondition(needs_peer_dumps{})) {
    const std::string dir = std::getenv("QFORGE_GGUF_PEER_DIR");
    const auto f = GgufFile::open(std::getenv("QFORGE_GGUF_PEER_FILE"));
    std::size_t checked = 0;
    for (const auto& t : f.tensors()) {
        const auto ours = f.dequantize(t);
        std::ifstream in(dir + "/" + t.name + ".f32", std::ios::binary | std::ios::ate);
        BOOST_TEST_REQUIRE(bool(in), "no peer dump for " << t.name);
        BOOST_TEST_REQUIRE(std::size_t(in.tellg()) == ours.size() * 4, t.name);
        std::vector<float> theirs(ours.size());
        in.seekg(0);
        in.read(reinterpret_cast<char*>(theirs.data()), std::streamsize(theirs.size() * 4));
        BOOST_TEST_REQUIRE(std::memcmp(ours.data(), theirs.data(), ours.size() * 4) == 0,
                           t.name << " (" << io::ggml_type_name(t.type) << ") differs");
        ++checked;
    }
    std::size_t dumps = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) dumps += e.path().extension() == ".f32";
    BOOST_TEST(checked == dumps);
    BOOST_TEST(checked > 0u);
    BOOST_TEST_MESSAGE(checked << " tensors of " << f.path() << " equal gguf-py's dequantization bit for bit");
}

// Packed values are checked when a tensor is read: a NaN or Inf stored scale, minimum or
// super-block d/dmin in any block format, or a NaN/Inf plain value, is an error naming the file,
// the tensor and where — for dequantized tensors and for blocks kept packed (gguf_linear) alike.
namespace {
constexpr std::uint16_t half_nan = 0x7E00, half_inf = 0x7C00;

template <class Block>
std::vector<std::uint8_t> k_blocks(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<std::uint8_t> bytes(n * sizeof(Block));
    for (auto& b : bytes) b = std::uint8_t(rng());
    for (std::size_t i = 0; i < n; ++i) {  // finite fp16 fields: d = 0.01, dmin = 0.005
        Block blk;
        std::memcpy(&blk, bytes.data() + i * sizeof(Block), sizeof(Block));
        blk.d = float_to_half(0.01f);
        if constexpr (requires { blk.dmin; }) blk.dmin = float_to_half(0.005f);
        std::memcpy(bytes.data() + i * sizeof(Block), &blk, sizeof(Block));
    }
    return bytes;
}

/// Writes `bytes` into the fp16 field at `offset` of block `b`.
void set_half(std::vector<std::uint8_t>& data, std::size_t block_bytes, std::size_t b, std::size_t offset, std::uint16_t h) {
    std::memcpy(data.data() + b * block_bytes + offset, &h, 2);
}


}  // namespace

BOOST_AUTO_TEST_CASE(non_finite_stored_scales_are_refused_at_load) {
    struct Case {
        std::string label;
        Tensor tensor;
        std::size_t block_bytes, block, offset;
        std::uint16_t value;
        std::string where;  ///< expected in the message
        bool packed;        ///< kept as stored by gguf_linear
    };
    std::vector<Case> cases;
    // 32-weight blocks: 2 rows x 64 columns = 4 blocks; block 3 is row 1, columns 32-63
    const auto q4_0 = packed_tensor<Q4_0>("blk.0.attn_q.weight", 2, 2, 64, 11);
    const auto q4_1 = packed_tensor<Q4_1>("blk.0.ffn_up.weight", 3, 2, 64, 12);
    const auto q8_0 = packed_tensor<Q8_0>("blk.1.attn_k.weight", 8, 2, 64, 13);
    cases.push_back({"Q4_0 d nan", q4_0, 18, 3, 0, half_nan, "block 3 (row 1, columns 32-63) has a non-finite scale (nan)", true});
    cases.push_back({"Q4_0 d inf", q4_0, 18, 0, 0, half_inf, "block 0 (row 0, columns 0-31) has a non-finite scale (inf)", true});
    cases.push_back({"Q4_1 d inf", q4_1, 20, 3, 0, half_inf, "block 3 (row 1, columns 32-63) has a non-finite scale (inf)", true});
    cases.push_back({"Q4_1 m nan", q4_1, 20, 1, 2, half_nan, "block 1 (row 0, columns 32-63) has a non-finite minimum (nan)", true});
    cases.push_back({"Q8_0 d nan", q8_0, 34, 2, 0, half_nan, "block 2 (row 1, columns 0-31) has a non-finite scale (nan)", true});
    cases.push_back({"Q8_0 d -inf", q8_0, 34, 3, 0, 0xFC00, "block 3 (row 1, columns 32-63) has a non-finite scale (-inf)", true});
    // K-quant super-blocks: 2 rows x 256 columns; super-block 1 is row 1
    Tensor q4k{"blk.0.ffn_gate.weight", {256, 2}, 12, k_blocks<block_q4_K>(2, 14), {}};
    Tensor q5k{"blk.0.ffn_down.weight", {256, 2}, 13, k_blocks<block_q5_K>(2, 15), {}};
    Tensor q6k{"output.weight", {256, 2}, 14, k_blocks<block_q6_K>(2, 16), {}};
    cases.push_back({"Q4_K d nan", q4k, 144, 1, 0, half_nan, "super-block 1 (row 1, columns 0-255) has a non-finite scale d (nan)", false});
    cases.push_back({"Q4_K dmin inf", q4k, 144, 0, 2, half_inf, "super-block 0 (row 0, columns 0-255) has a non-finite minimum scale dmin (inf)", false});
    cases.push_back({"Q5_K dmin nan", q5k, 176, 1, 2, half_nan, "super-block 1 (row 1, columns 0-255) has a non-finite minimum scale dmin (nan)", false});
    cases.push_back({"Q6_K d inf", q6k, 210, 1, 208, half_inf, "super-block 1 (row 1, columns 0-255) has a non-finite scale d (inf)", false});
    // the types read for evaluation only (5-bit, low K-quants, i-quants, ternary)
    Tensor q5_0{"blk.3.attn_q.weight", {64, 2}, 6, k_blocks<block_q5_0>(4, 17), {}};
    Tensor q5_1{"blk.3.attn_k.weight", {64, 2}, 7, k_blocks<block_q5_1>(4, 18), {}};
    for (std::size_t b = 0; b < 4; ++b) set_half(q5_1.data, 24, b, 2, float_to_half(-0.1f));
    Tensor q2k{"blk.3.ffn_up.weight", {256, 2}, 10, k_blocks<block_q2_K>(2, 19), {}};
    Tensor q3k{"blk.3.ffn_gate.weight", {256, 2}, 11, k_blocks<block_q3_K>(2, 20), {}};
    Tensor iq2{"blk.3.attn_v.weight", {256, 2}, 16, k_blocks<block_iq2_xxs>(2, 21), {}};
    Tensor iq4xs{"blk.3.attn_output.weight", {256, 2}, 23, k_blocks<block_iq4_xs>(2, 22), {}};
    Tensor tq1{"blk.3.ffn_down.weight", {256, 2}, 34, k_blocks<block_tq1_0>(2, 23), {}};
    cases.push_back({"Q5_0 d nan", q5_0, 22, 2, 0, half_nan, "block 2 (row 1, columns 0-31) has a non-finite scale (nan)", false});
    cases.push_back({"Q5_1 m inf", q5_1, 24, 1, 2, half_inf, "block 1 (row 0, columns 32-63) has a non-finite minimum (inf)", false});
    cases.push_back({"Q2_K dmin nan", q2k, 84, 1, 82, half_nan, "super-block 1 (row 1, columns 0-255) has a non-finite minimum scale dmin (nan)", false});
    cases.push_back({"Q3_K d inf", q3k, 110, 0, 108, half_inf, "super-block 0 (row 0, columns 0-255) has a non-finite scale d (inf)", false});
    cases.push_back({"IQ2_XXS d nan", iq2, 66, 1, 0, half_nan, "super-block 1 (row 1, columns 0-255) has a non-finite scale d (nan)", false});
    cases.push_back({"IQ4_XS d inf", iq4xs, 136, 1, 0, half_inf, "super-block 1 (row 1, columns 0-255) has a non-finite scale d (inf)", false});
    cases.push_back({"TQ1_0 d nan", tq1, 54, 0, 52, half_nan, "super-block 0 (row 0, columns 0-255) has a non-finite scale d (nan)", false});
    // IQ1_M spreads its fp16 d over the top 4 bits of four words: the values are checked instead.
    // An infinite d (0x7C00) puts 0xC in the third word's top nibble, 0x7 in the fourth's; grid
    // point 0 is all -1, so the first weight is inf * (-1 + 1/8).
    Tensor iq1m{"blk.3.ffn_norm_like.weight", {256, 1}, 29, std::vector<std::uint8_t>(56, 0), {}};
        cases.push_back({"IQ1_M d inf", iq1m, 56, 0, 48 + 2 * 3, 0x7000, "row 0, column 0 has a non-finite value (-inf)", false});
    // plain values: F16, BF16 (2 x 4 matrices) and F32 (a vector)
    Tensor f16{"blk.2.attn_v.weight", {4, 2}, 1, std::vector<std::uint8_t>(16, 0), {}};
    Tensor bf16{"blk.2.attn_output.weight", {4, 2}, 30, std::vector<std::uint8_t>(16, 0), {}};
    cases.push_back({"F16 nan", f16, 2, 6, 0, half_nan, "row 1, column 2 has a non-finite value (nan)", false});
    cases.push_back({"BF16 inf", bf16, 2, 5, 0, 0x7F80, "row 1, column 1 has a non-finite value (inf)", false});
    Tensor f32{"blk.2.ffn_norm.weight", {4}, 0, std::vector<std::uint8_t>(16, 0), {}};
    const float f32_nan = std::nanf("");
    std::memcpy(f32.data.data() + 8, &f32_nan, 4);
    cases.push_back({"F32 nan", f32, 4, 0, 0, 0, "element 2 has a non-finite value (nan)", false});
    Tensor f32m{"blk.2.ffn_up.weight", {2, 2}, 0, std::vector<std::uint8_t>(16, 0), {}};
    const float f32_inf = std::numeric_limits<float>::infinity();
    std::memcpy(f32m.data.data() + 12, &f32_inf, 4);
    cases.push_back({"F32 matrix inf", f32m, 4, 0, 0, 0, "row 1, column 1 has a non-finite value (inf)", false});

    for (auto& c : cases) {
        BOOST_TEST_CONTEXT(c.label) {
            // the clean tensor reads
            const auto clean_path = write_file("qf_clean.gguf", build({c.tensor}, 32));
            const auto clean = GgufFile::open(clean_path);
            if (c.tensor.type != 0) {
                BOOST_CHECK_NO_THROW(clean.dequantize(clean.tensor(c.tensor.name)));
                if (c.packed) BOOST_CHECK_NO_THROW(llama::gguf_linear(clean, clean.tensor(c.tensor.name)));
            }
            if (c.value) set_half(c.tensor.data, c.block_bytes, c.block, c.offset, c.value);
            if (c.tensor.type == 29) set_half(c.tensor.data, 56, 0, 48 + 2 * 2, 0xC000);
            const auto path = write_file("qf_bad_" + std::to_string(&c - cases.data()) + ".gguf", build({c.tensor}, 32));
            const auto f = GgufFile::open(path);
            const auto& t = f.tensor(c.tensor.name);
            BOOST_TEST(qtest::has_all(qtest::error_of<FileError>([&] { (void)f.dequantize(t); }), {path, "tensor " + c.tensor.name, "non-finite", c.where}));
            if (t.ne.size() == 2)  // the model-side read: packed blocks are kept as stored, and checked
                BOOST_TEST(qtest::has_all(qtest::error_of<FileError>([&] { (void)llama::gguf_linear(f, t); }), {path, "tensor " + c.tensor.name, "non-finite", c.where}));
            if (c.packed) BOOST_TEST(!f.block_fault(t).empty());
        }
    }
}

// The blocks read for evaluation, by hand (the peer test compares every code with gguf-py's
// dequantization; these pin the conventions a reader most easily gets wrong).
BOOST_AUTO_TEST_CASE(low_bit_blocks_by_hand) {
    {  // Q5_0: the 5th bit of weight i is bit i of qh (little-endian); value d * (q - 16)
        block_q5_0 b{};
        b.d = float_to_half(0.5f);
        b.qs[0] = 0x3F;          // weight 0: low nibble 15; weight 16: 3
        b.qh[0] = 0x01;          // weight 0 gets the 5th bit: 31
        b.qh[2] = 0x01;          // bit 16: weight 16 becomes 19
        float out[32];
        dequantize_block(b, out);
        BOOST_TEST(out[0] == 0.5f * (31 - 16));
        BOOST_TEST(out[16] == 0.5f * (19 - 16));
        BOOST_TEST(out[1] == 0.5f * -16);
    }
    {  // Q5_1: d * q + m
        block_q5_1 b{};
        b.d = float_to_half(0.25f);
        b.m = float_to_half(-2.0f);
        b.qs[5] = 0x0A;
        b.qh[0] = 0x20;  // bit 5
        float out[32];
        dequantize_block(b, out);
        BOOST_TEST(out[5] == 0.25f * 26 - 2.0f);
        BOOST_TEST(out[21] == -2.0f);
    }
    {  // Q3_K: a cleared hmask bit subtracts 4; 6-bit scales minus 32
        block_q3_K b{};
        b.d = float_to_half(1.0f);
        for (auto& sc : b.scales) sc = 0;  // every scale: 0 - 32
        b.scales[0] = 0x01;                // scale 0: low nibble 1 -> 1 - 32 = -31 (weights 0-15)
        b.qs[0] = 0x02;                    // weight 0: low bits 2
        b.hmask[0] = 0x01;                 // weight 0 keeps its offset: q = 2
        b.qs[1] = 0x01;                    // weight 1: low bits 1, hmask bit clear: 1 - 4
        float out[256];
        dequantize_k_block(b, out);
        BOOST_TEST(out[0] == -31.0f * 2);
        BOOST_TEST(out[1] == -31.0f * (1 - 4));
        BOOST_TEST(out[32] == -32.0f * -4);  // weight 32: bits 2-3 of qs[0] = 0, bit 1 of hmask[0] clear
    }
    {  // IQ2_XXS: sign index 0 is all plus; index 1 has one minus, so ggml adds an eighth (even count)
        block_iq2_xxs b{};
        b.d = float_to_half(4.0f);
        const std::uint32_t aux = (2u << 28) | 1u;  // scale 2: db = 4 * 2.5 * 0.25; group 0 signs index 1
        std::memcpy(&b.qs[2], &aux, 4);
        float out[256];
        dequantize_block(b, out);
        const float db = 4.0f * 2.5f * 0.25f;
        BOOST_TEST(out[0] == -db * 8);  // grid point 0 is eight 8s
        BOOST_TEST(out[1] == db * 8);
        BOOST_TEST(out[7] == -db * 8);  // the parity bit
        BOOST_TEST(out[8] == db * 8);   // group 1: sign index 0
    }
    {  // TQ2_0: codes q - 1 in Q2_K's order
        block_tq2_0 b{};
        b.d = float_to_half(3.0f);
        for (auto& q : b.qs) q = 0x55;  // every code 1: zero
        b.qs[0] = 0x56;                 // weight 0: code 2 -> +d
        b.qs[32] = 0x15;                // weight 128 + 96: code 0 -> -d
        float out[256];
        dequantize_block(b, out);
        BOOST_TEST(out[0] == 3.0f);
        BOOST_TEST(out[224] == -3.0f);
        BOOST_TEST(out[1] == 0.0f);
    }
    {  // TQ1_0: byte 243 * v / 256 rounded up; digit p of 5 read as (byte * 3^p mod 256) * 3 >> 8
        block_tq1_0 b{};
        b.d = float_to_half(1.0f);
        // digits (2, 0, 1, 1, 0) in base 3, most significant first: 2*81 + 0*27 + 1*9 + 1*3 + 0 = 174
        b.qs[0] = std::uint8_t((174 * 256 + 242) / 243);
        float out[256];
        dequantize_block(b, out);
        BOOST_TEST(out[0] == 1.0f);    // digit 2 -> +1
        BOOST_TEST(out[32] == -1.0f);  // digit 0 -> -1
        BOOST_TEST(out[64] == 0.0f);
        BOOST_TEST(out[96] == 0.0f);
        BOOST_TEST(out[128] == -1.0f);
    }
}

BOOST_AUTO_TEST_SUITE_END()
