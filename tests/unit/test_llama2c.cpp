#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include "common.hpp"
#include "qforge/io/llama2c.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_llama2c)
using qforge::io::Llama2cCheckpoint;

namespace {
const char* stories = "models/stories260K/stories260K.bin";

/// Writes a tiny checkpoint; `mutate` may damage it.
std::string write_tiny(const std::string& name, std::vector<std::int32_t> header, std::size_t floats, float fill = 0.01f,
                       long truncate_by = 0) {
    const auto path = (std::filesystem::temp_directory_path() / name).string();
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(header.data()), std::streamsize(header.size() * 4));
    std::vector<float> data(floats, fill);
    out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size() * 4 - std::size_t(truncate_by)));
    return path;
}
// dim 8, hidden 16, 1 layer, 2 heads, 1 kv head, vocab 10, seq 4: head 4, kv_dim 4
std::size_t tiny_floats(bool shared = true) {
    const std::size_t D = 8, H = 16, V = 10, KV = 4, F = 4 * 4 / 2;
    return V * D + D + D * D + 2 * KV * D + D * D + D + 3 * H * D + D + 2 * F + (shared ? 0 : V * D);
}
}  // namespace

BOOST_AUTO_TEST_CASE(reads_stories260k, *boost::unit_test::precondition(qtest::needs_data{stories})) {
    const auto ck = Llama2cCheckpoint::load(qtest::data_path(stories));
    const auto& c = ck.config();
    // SOURCES.md: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512 (shared), seq 512
    BOOST_TEST(c.dim == 64);
    BOOST_TEST(c.hidden_dim == 172);
    BOOST_TEST(c.n_layers == 5);
    BOOST_TEST(c.n_heads == 8);
    BOOST_TEST(c.n_kv_heads == 4);
    BOOST_TEST(c.vocab_size == 512);
    BOOST_TEST(c.shared_classifier);
    BOOST_TEST(ck.tensor("layers.4.attention.wk").rows == 32);  // kv_dim = 4 heads * 8
    BOOST_TEST(ck.tensor("layers.0.feed_forward.w2").cols == 172);
    std::size_t params = 0;
    for (const auto& t : ck.tensors())
        if (t.name.rfind("freq_cis", 0) != 0) params += t.data.size();
    BOOST_TEST(params == 260032u);  // SOURCES.md's parameter count
}

BOOST_AUTO_TEST_CASE(tiny_written_checkpoint) {
    const auto ck = Llama2cCheckpoint::load(write_tiny("qf_tiny.bin", {8, 16, 1, 2, 1, 10, 4}, tiny_floats()));
    BOOST_TEST(ck.tensor("layers.0.attention.wv").rows == 4);
    const auto unshared = Llama2cCheckpoint::load(write_tiny("qf_tiny_u.bin", {8, 16, 1, 2, 1, -10, 4}, tiny_floats(false)));
    BOOST_TEST(!unshared.config().shared_classifier);
    BOOST_TEST(unshared.tensor("output").rows == 10);
}

BOOST_AUTO_TEST_CASE(bad_files_name_the_file_and_problem) {
    const auto expect = [](const std::string& path, const std::string& fragment) {
        BOOST_CHECK_EXCEPTION(Llama2cCheckpoint::load(path), FileError, [&](const FileError& e) {
            const std::string m = e.what();
            const bool ok = m.find(path) != std::string::npos && m.find(fragment) != std::string::npos;
            if (!ok) BOOST_TEST_MESSAGE("message was: " << m);
            return ok;
        });
    };
    expect("/nonexistent/qforge.bin", "cannot open");
    expect(write_tiny("qf_short.bin", {8, 16}, 0), "truncated");
    expect(write_tiny("qf_trunc.bin", {8, 16, 1, 2, 1, 10, 4}, tiny_floats(), 0.01f, 3), "truncated");
    expect(write_tiny("qf_long.bin", {8, 16, 1, 2, 1, 10, 4}, tiny_floats() + 1), "size mismatch");
    expect(write_tiny("qf_heads.bin", {8, 16, 1, 3, 1, 10, 4}, tiny_floats()), "n_heads");
    expect(write_tiny("qf_kv.bin", {8, 16, 1, 2, 3, 10, 4}, tiny_floats()), "n_kv_heads");
    expect(write_tiny("qf_neg.bin", {-8, 16, 1, 2, 1, 10, 4}, tiny_floats()), "header field 0");
    expect(write_tiny("qf_nan.bin", {8, 16, 1, 2, 1, 10, 4}, tiny_floats(), std::numeric_limits<float>::quiet_NaN()),
           "non-finite");
}

// One NaN inside a weight matrix is refused at load, naming the file and that tensor.
BOOST_AUTO_TEST_CASE(a_non_finite_weight_names_its_tensor) {
    const auto path = write_tiny("qf_nan_wq.bin", {8, 16, 1, 2, 1, 10, 4}, tiny_floats());
    {
        std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
        const float inf = std::numeric_limits<float>::infinity();
        f.seekp(28 + 4 * (10 * 8 + 8 + 9));  // header, tok_embeddings, attention_norm; then wq element 9
        f.write(reinterpret_cast<const char*>(&inf), 4);
    }
    BOOST_CHECK_EXCEPTION(Llama2cCheckpoint::load(path), FileError, [&](const FileError& e) {
        const std::string m = e.what();
        BOOST_TEST_MESSAGE(m);
        return m.find(path) != std::string::npos && m.find("layers.0.attention.wq") != std::string::npos &&
               m.find("non-finite") != std::string::npos;
    });
}

BOOST_AUTO_TEST_SUITE_END()
