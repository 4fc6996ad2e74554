// SentencePiece-style BPE (GGUF "llama" tokenizers): a hand-built vocabulary, agreement with the
// llama2.c tokenizer on the 32000-token Llama 2 vocabulary over FLORES text in ten languages,
// and (peer label) with llama.cpp's own tokenizer on a GGUF written from that vocabulary.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common.hpp"
#include "qforge/io/llama2c_tokenizer.hpp"
#include "qforge/io/spm_tokenizer.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_spm)

namespace {
const char* llama_tokenizer = "models/llama2-tokenizer/tokenizer.bin";
const char* flores = "eval/flores200/devtest";
const std::string sp = "\xE2\x96\x81";

/// The llama2.c vocabulary as a SentencePiece one (spaces back to U+2581, token types restored).
io::SpmTokenizer from_llama2c(const io::Llama2cTokenizer& t) {
    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<int> types;
    for (int i = 0; i < t.vocab_size(); ++i) {
        std::string p;
        for (const char c : t.piece(i)) p += c == ' ' ? sp : std::string(1, c);
        const bool byte = p.size() == 6 && p.rfind("<0x", 0) == 0 && p.back() == '>';
        types.push_back(i == 0 ? 2 : i <= 2 ? 3 : byte ? 6 : 1);
        pieces.push_back(p);
        scores.push_back(t.score(i));
    }
    return io::SpmTokenizer(pieces, scores, types, true, 1, 2);
}

std::vector<std::pair<std::string, std::string>> flores_lines(std::size_t per_language) {
    std::vector<std::pair<std::string, std::string>> out;
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(qtest::data_path(flores))) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
        std::ifstream in(f);
        std::string line;
        for (std::size_t i = 0; i < per_language && std::getline(in, line); ++i) out.emplace_back(f.filename().string(), line);
    }
    return out;
}
}  // namespace

BOOST_AUTO_TEST_CASE(hand_built_vocabulary) {
    // ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 bytes, then pieces
    std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
    std::vector<int> types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        pieces.push_back(name);
        types.push_back(6);
    }
    const int base = int(pieces.size());
    for (const std::string& p : std::vector<std::string>{sp, "a", "b", "ab", sp + "ab", "ba", sp + "b"}) {
        pieces.push_back(p);
        types.push_back(1);
    }
    std::vector<float> scores(pieces.size(), 0.0f);
    scores[std::size_t(base + 3)] = -1.0f;  // ab
    scores[std::size_t(base + 4)] = -2.0f;  // ▁ab
    scores[std::size_t(base + 5)] = -0.5f;  // ba: beats ab
    scores[std::size_t(base + 6)] = -3.0f;  // ▁b
    const io::SpmTokenizer t(pieces, scores, types, true, 1, 2);
    BOOST_TEST(t.encode("ab", true) == (std::vector<int>{1, base + 4}));  // ▁ a b -> ▁ ab -> ▁ab
    // ▁ b a b: ba (-0.5) beats ab (-1) and ▁b (-3); then nothing merges
    BOOST_TEST(t.encode("bab", false) == (std::vector<int>{base, base + 5, base + 2}));
    BOOST_TEST(t.encode("é", false) == (std::vector<int>{base, 3 + 0xC3, 3 + 0xA9}));  // byte fallback
    BOOST_TEST(t.decode(base + 4) == " ab");
    BOOST_TEST(t.decode(3 + 'x') == "x");
    BOOST_TEST(t.decode(1).empty());
}

BOOST_AUTO_TEST_CASE(agrees_with_the_llama2c_tokenizer, *boost::unit_test::precondition(qtest::needs_data{llama_tokenizer}) *
                                                             boost::unit_test::precondition(qtest::needs_data{flores})) {
    const auto l2c = io::Llama2cTokenizer::load(qtest::data_path(llama_tokenizer), 32000);
    const auto spm = from_llama2c(l2c);
    std::size_t lines = 0, tokens = 0;
    for (const auto& [language, line] : flores_lines(30)) {
        const auto a = spm.encode(line, true), b = l2c.encode(line, true, false);
        BOOST_TEST_REQUIRE(a == b, language << ": " << line);
        std::string text;
        for (std::size_t i = 1; i < a.size(); ++i) text += spm.decode(a[i]);
        BOOST_TEST_REQUIRE(text == " " + line, language);
        ++lines;
        tokens += a.size();
    }
    BOOST_TEST(lines == 300u);
    BOOST_TEST_MESSAGE(lines << " lines, " << tokens << " tokens identical");
}

namespace {
struct needs_peer_ids {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result r(std::getenv("QFORGE_SPM_PEER_IDS") && std::getenv("QFORGE_SPM_GGUF"));
        if (!r) r.message() << "QFORGE_SPM_PEER_IDS/QFORGE_SPM_GGUF not set: this comparison runs from the 'peer' ctest label";
        return r;
    }
};
}  // namespace

// Peer: ids llama.cpp gave for lines of each FLORES file (tests/peer/run_llamacpp_peer.sh).
BOOST_AUTO_TEST_CASE(spm_matches_peer_ids, *boost::unit_test::precondition(needs_peer_ids{}) *
                                               boost::unit_test::precondition(qtest::needs_data{flores})) {
    const auto t = io::SpmTokenizer::from_gguf(io::GgufFile::open(std::getenv("QFORGE_SPM_GGUF")));
    std::ifstream peer(std::getenv("QFORGE_SPM_PEER_IDS"));
    std::map<std::string, std::ifstream> texts;
    std::string row;
    std::size_t lines = 0;
    while (std::getline(peer, row)) {
        const auto tab = row.find('\t');
        const std::string language = row.substr(0, tab);
        auto& text = texts[language];
        if (!text.is_open()) text.open(qtest::data_path(flores) + "/" + language);
        std::string line;
        BOOST_TEST_REQUIRE(bool(std::getline(text, line)), language);
        std::vector<int> expected;
        std::istringstream ids(row.substr(tab + 1));
        for (int id; ids >> id;) expected.push_back(id);
        BOOST_TEST_REQUIRE(t.encode(line, false) == expected, language << ": " << line);
        ++lines;
    }
    BOOST_TEST(lines >= 1000u);
    BOOST_TEST_MESSAGE(lines << " FLORES lines: qforge's ids equal llama.cpp's");
}

BOOST_AUTO_TEST_SUITE_END()
