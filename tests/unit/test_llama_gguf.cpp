#include <cmath>
#include <filesystem>

#include "common.hpp"
#include "qforge/io/gguf_vocab.hpp"
#include "qforge/container/llama/container.hpp"
#include "qforge/sources/llama/gguf_loader.hpp"

using namespace qforge;
namespace fs = std::filesystem;
BOOST_AUTO_TEST_SUITE(test_llama_gguf)

namespace {
/// Whether the case file is there; when it is not, says so, and fails under QFORGE_REQUIRE_DATA=1.
bool have_case(const std::string& path) {
    if (fs::exists(path)) return true;
    if (qtest::data_required()) BOOST_ERROR("case file missing: " << path << " (QFORGE_REQUIRE_DATA=1)");
    else BOOST_TEST_MESSAGE("skipped: case file missing: " << path << " (set QFORGE_CASES or QFORGE_DATA)");
    return false;
}
}  // namespace

// Bug report row 7: stories260K as Q8_0 whose first block scale of blk.0.attn_q.weight is NaN
// (or +Inf). Loading refuses it at once, naming the file, the tensor and the block; re-exporting
// the stored blocks ('keep') refuses too and writes nothing.
BOOST_AUTO_TEST_CASE(case_q8_0_non_finite_scale_is_refused_at_load) {
    for (const auto& [file, value] : {std::pair{"s260k_q8_nan.gguf", "nan"}, std::pair{"s260k_q8_inf.gguf", "inf"}}) {
        const auto path = qtest::case_path(file);
        if (!have_case(path)) continue;
        const auto f = io::GgufFile::open(path);
        const llama::GgufSource src(f);
        const std::initializer_list<std::string> expected = {path, "tensor blk.0.attn_q.weight",
                                                              std::string("block 0 (row 0, columns 0-31) has a non-finite scale (") + value + ")"};
        const auto loading = qtest::error_of<FileError>([&] { (void)llama::load_weights(src); });
        BOOST_TEST(qtest::has_all(loading, expected), loading);
        BOOST_TEST_MESSAGE(loading);
        const auto out = (fs::temp_directory_path() / "qf_case_keep.safetensors").string();
        fs::remove(out);
        llama::ContainerOptions keep;
        keep.rules = {{"*", "keep"}};
        const auto exporting = qtest::error_of<FileError>([&] { llama::write_container(src, out, keep); });
        BOOST_TEST(qtest::has_all(exporting, expected), exporting);
        BOOST_TEST(!fs::exists(out));
        BOOST_TEST(!fs::exists(out + ".tmp"));
    }
}

// SmolLM2's Q4_1 / Q8_0 blocks used in place by the integer-dot kernels, against the same blocks
// dequantized by the GGUF reader and run in FP32: only the 8-bit activation rounding (blocks of 32,
// as llama.cpp's Q8_0 activations) differs. Stated tolerance over 24 greedy positions: mean KL
// of the next-token distributions < 0.01 nats and top-1 agreement >= 90%.
BOOST_AUTO_TEST_CASE(smollm2_packed_matches_dequantized, *boost::unit_test::precondition(qtest::needs_smollm2{})) {
    const auto f = io::GgufFile::open(qtest::smollm2_path());
    const auto packed = llama::from_gguf(f);
    BOOST_TEST(packed.config.n_layers == 30);
    BOOST_TEST(packed.config.kv_dim() == 192);
    BOOST_TEST(packed.config.rope_theta == 100000.0f);
    BOOST_TEST(std::holds_alternative<Q4_1::Packed>(packed.layers[0].wq.weights()));
    BOOST_TEST(std::holds_alternative<Q8_0::Packed>(packed.output.weights()));
    auto reference = llama::dequantized_weights(packed);
    reference.output = llama::dequantized_linear(packed.output);

    const io::GgufVocab vocab(f);
    llama::Session a(packed, Backend::cpu(best_isa(), 0), 64), b(reference, Backend::cpu(Isa::scalar, 0), 64);
    int token = vocab.bos();
    std::string text;
    double kl_sum = 0;
    int agree = 0;
    const int steps = 24;
    for (int pos = 0; pos < steps; ++pos) {
        const auto la = a.forward(token, pos);
        const auto lb = b.forward(token, pos);
        // KL(reference || packed) of the next-token distributions
        const float ma = *std::max_element(la.begin(), la.end()), mb = *std::max_element(lb.begin(), lb.end());
        double za = 0, zb = 0;
        for (std::size_t i = 0; i < la.size(); ++i) {
            za += std::exp(double(la[i] - ma));
            zb += std::exp(double(lb[i] - mb));
        }
        double kl = 0;
        for (std::size_t i = 0; i < la.size(); ++i) {
            const double lpa = double(la[i] - ma) - std::log(za), lpb = double(lb[i] - mb) - std::log(zb);
            kl += std::exp(lpb) * (lpb - lpa);
        }
        BOOST_TEST_MESSAGE("pos " << pos << ": KL " << kl << ", top-1 " << (llama::argmax(la) == llama::argmax(lb)));
        kl_sum += kl;
        agree += llama::argmax(la) == llama::argmax(lb);
        token = llama::argmax(lb);  // follow the reference
        text += vocab.decode(token);
    }
    BOOST_TEST_MESSAGE("greedy from BOS: " << text << " | mean KL " << kl_sum / steps << ", top-1 " << agree << "/" << steps);
    BOOST_TEST(kl_sum / steps < 0.01);
    BOOST_TEST(agree >= steps * 9 / 10);
}

BOOST_AUTO_TEST_CASE(smollm2_vocab_decodes_bytes, *boost::unit_test::precondition(qtest::needs_smollm2{})) {
    const io::GgufVocab vocab(io::GgufFile::open(qtest::smollm2_path()));
    BOOST_TEST(vocab.size() == 49152);
    BOOST_TEST(vocab.decode(vocab.bos()).empty());  // control token
    int space_the = -1;
    for (int i = 0; i < vocab.size(); ++i)
        if (vocab.piece(i) == "\xC4\xA0the") space_the = i;  // "Ġthe"
    BOOST_TEST_REQUIRE(space_the >= 0);
    BOOST_TEST(vocab.decode(space_the) == " the");
}

BOOST_AUTO_TEST_SUITE_END()
