#define BOOST_TEST_MODULE bpe
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common.hpp"
#include "qforge/io/bpe_tokenizer.hpp"
#include "qforge/io/gguf_vocab.hpp"
#include "qforge/io/hf_tokenizer.hpp"

using namespace qforge;

namespace {
const char* flores = "eval/flores200/devtest";
}  // namespace

// Invariant: decoding the ids gives the text back, in every FLORES language.
BOOST_AUTO_TEST_CASE(round_trip_in_ten_languages, *boost::unit_test::precondition(qtest::needs_smollm2{}) *
                                                      boost::unit_test::precondition(qtest::needs_data{flores})) {
    const auto f = io::GgufFile::open(qtest::smollm2_path());
    const auto tok = io::BpeTokenizer::from_gguf(f);
    const io::GgufVocab vocab(f);
    int files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(qtest::data_path(flores))) {
        std::ifstream in(entry.path());
        std::string line;
        for (int i = 0; i < 20 && std::getline(in, line); ++i) {
            const auto ids = tok.encode(line);
            std::string back;
            for (int id : ids) back += vocab.decode(id);
            BOOST_TEST_REQUIRE(back == line, entry.path().filename() << " line " << i + 1);
            BOOST_TEST(ids.size() < line.size() + 1);
        }
        ++files;
    }
    BOOST_TEST(files == 10);
}

BOOST_AUTO_TEST_CASE(special_tokens_and_digits, *boost::unit_test::precondition(qtest::needs_smollm2{})) {
    const auto f = io::GgufFile::open(qtest::smollm2_path());
    const auto tok = io::BpeTokenizer::from_gguf(f);
    const io::GgufVocab vocab(f);
    const auto ids = tok.encode("<|im_start|>user\nIn 2024<|im_end|>");
    BOOST_TEST(ids.front() == 1);                     // <|im_start|> taken whole
    BOOST_TEST(vocab.piece(ids.back()) == "<|im_end|>");
    int digits = 0;
    for (int id : ids) digits += vocab.decode(id).size() == 1 && std::isdigit(static_cast<unsigned char>(vocab.decode(id)[0]));
    BOOST_TEST(digits == 4);                          // smollm splits numbers digit by digit
    BOOST_TEST(tok.encode("<|im_start|>", false).size() > 1u);  // not parsed as special on request
}

// Peer check against Hugging Face `tokenizers` (tests/peer/run_bpe_peer.sh writes the ids).
namespace {
// The ids come from a peer (HF tokenizers or llama.cpp) run by the 'peer' ctest label's scripts.
struct needs_peer_ids {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result r(std::getenv("QFORGE_BPE_PEER_IDS") != nullptr);
        if (!r) r.message() << "QFORGE_BPE_PEER_IDS not set: this comparison runs from the 'peer' ctest label";
        return r;
    }
};
}  // namespace

namespace {
/// Every line of the peer's ids file against `tok` on the same FLORES line.
void check_peer_ids(const io::BpeTokenizer& tok) {
    std::ifstream peer(std::getenv("QFORGE_BPE_PEER_IDS"));
    std::string row, current;
    std::ifstream text;
    int lines = 0;
    while (std::getline(peer, row)) {
        const auto tab = row.find('\t');
        const std::string name = row.substr(0, tab);
        if (name != current) {
            current = name;
            text = std::ifstream(qtest::data_path(flores) + "/" + name);
        }
        std::string line;
        std::getline(text, line);
        std::vector<int> theirs;
        std::istringstream ss(row.substr(tab + 1));
        for (int id; ss >> id;) theirs.push_back(id);
        BOOST_TEST_REQUIRE((tok.encode(line) == theirs), name << ": " << line);
        ++lines;
    }
    BOOST_TEST(lines == 1000);
    BOOST_TEST_MESSAGE(lines << " FLORES lines in ten languages: qforge's ids equal the peer's");
}

struct needs_tokenizer_json {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result r(std::getenv("QFORGE_TOKENIZER_JSON") != nullptr);
        if (!r) r.message() << "QFORGE_TOKENIZER_JSON not set: this comparison runs from the 'peer' ctest label";
        return r;
    }
};
}  // namespace

BOOST_AUTO_TEST_CASE(bpe_matches_peer_ids, *boost::unit_test::precondition(needs_peer_ids{}) *
                                               boost::unit_test::precondition(qtest::needs_smollm2{}) *
                                               boost::unit_test::precondition(qtest::needs_data{flores})) {
    check_peer_ids(io::BpeTokenizer::from_gguf(io::GgufFile::open(qtest::smollm2_path())));
}

// The same vocabulary read from a tokenizer.json that Hugging Face tokenizers wrote.
BOOST_AUTO_TEST_CASE(tokenizer_json_matches_peer_ids, *boost::unit_test::precondition(needs_peer_ids{}) *
                                                          boost::unit_test::precondition(needs_tokenizer_json{}) *
                                                          boost::unit_test::precondition(qtest::needs_data{flores})) {
    check_peer_ids(io::bpe_from_tokenizer_json(std::getenv("QFORGE_TOKENIZER_JSON")));
}

// A tokenizer.json small enough to follow by hand: GPT-2 bytes ("Ġ" is the space), three
// merges, digits split one by one, one added token.
BOOST_AUTO_TEST_CASE(tokenizer_json_by_hand) {
    const auto path = (std::filesystem::temp_directory_path() / "qf_tokenizer.json").string();
    std::ofstream(path) << R"({"version": "1.0", "added_tokens": [{"id": 9, "content": "<|end|>", "special": true}],
      "normalizer": null,
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},
                        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "1": 3, "2": 4, "ab": 5, "Ġab": 6, "Ġa": 7, "c": 8},
                "merges": ["a b", ["Ġ", "ab"], "Ġ a"]}})";
    const auto t = io::bpe_from_tokenizer_json(path);
    // "ab ab12<|end|>c": pre-tokens "ab", " ab", "1", "2"; then the added token; then "c"
    BOOST_TEST(t.encode("ab ab12<|end|>c") == (std::vector<int>{5, 6, 3, 4, 9, 8}));
    BOOST_TEST(t.decode(6) == " ab");
    BOOST_TEST(t.decode(9).empty());
    std::ofstream(path) << R"({"model": {"type": "Unigram", "vocab": []}})";
    BOOST_CHECK_THROW(io::bpe_from_tokenizer_json(path), FileError);
    std::ofstream(path) << R"({"normalizer": null, "pre_tokenizer": {"type": "Metaspace"}, "model": {"type": "BPE", "vocab": {}, "merges": []}})";
    try {
        io::bpe_from_tokenizer_json(path);
        BOOST_FAIL("Metaspace accepted");
    } catch (const FileError& e) {
        BOOST_TEST(std::string(e.what()).find("Metaspace") != std::string::npos);
    }
}
