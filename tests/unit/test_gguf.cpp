#define BOOST_TEST_MODULE gguf
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/io/gguf.hpp"
#include "qforge/quantizers/rtn.hpp"

using namespace qforge;
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
