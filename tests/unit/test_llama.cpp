#include <cmath>

#include "common.hpp"
#include "qforge/io/llama2c_tokenizer.hpp"
#include "qforge/models/llama/model.hpp"
#include "qforge/models/llama/sampler.hpp"
#include "qforge/models/llama/evaluate.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_llama)

namespace {
const char* model_file = "models/stories260K/stories260K.bin";
const char* tokenizer_file = "models/stories260K/tok512.bin";

/// Greedy decoding from BOS until the text reaches `chars` characters.
std::string greedy(const llama::Weights& w, const io::Llama2cTokenizer& tok, std::size_t chars, Isa isa) {
    llama::Session s(w, Backend::cpu(isa, 1));
    std::string text;
    int token = io::Llama2cTokenizer::bos;
    for (int pos = 0; pos < w.config.seq_len && text.size() < chars; ++pos) {
        const int next = llama::argmax(s.forward(token, pos));
        if (next == io::Llama2cTokenizer::bos) break;
        text += tok.decode(token, next);
        token = next;
    }
    return text;
}
}  // namespace

// Independent truth: the story llama2.c documents for this model (../shared/data/SOURCES.md).
BOOST_AUTO_TEST_CASE(greedy_story_matches_llama2c, *boost::unit_test::precondition(qtest::needs_data{model_file}) *
                                                       boost::unit_test::precondition(qtest::needs_data{tokenizer_file})) {
    const std::string expected =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
        "big, red ball. She wanted to play with it, but it was too high.";
    const auto ck = io::Llama2cCheckpoint::load(qtest::data_path(model_file));
    const auto tok = io::Llama2cTokenizer::load(qtest::data_path(tokenizer_file), ck.config().vocab_size);
    const auto w = llama::from_llama2c(ck);
    const std::string text = greedy(w, tok, expected.size(), Isa::scalar);
    BOOST_TEST(text.substr(0, expected.size()) == expected);
}

BOOST_AUTO_TEST_CASE(tokenizer_round_trip, *boost::unit_test::precondition(qtest::needs_data{tokenizer_file})) {
    const auto tok = io::Llama2cTokenizer::load(qtest::data_path(tokenizer_file), 512);
    for (const std::string text : {"Once upon a time, there was a little girl.", "Zürich café 42!"}) {
        const auto ids = tok.encode(text, true, false);
        BOOST_TEST(ids.front() == io::Llama2cTokenizer::bos);
        std::string back;
        for (std::size_t i = 1; i < ids.size(); ++i) back += tok.decode(ids[i - 1], ids[i]);
        BOOST_TEST(back == text);
    }
    // merges happen: a common phrase takes fewer tokens than it has bytes
    BOOST_TEST(tok.encode("Once upon a time", false, false).size() < 8u);
}

// Packed weights through the integer-dot kernels against the same weights dequantized and run in
// FP32: the only difference is 8-bit activation rounding. Stated tolerance: logits within 2% of
// the logit range, and the same greedy text.
BOOST_AUTO_TEST_CASE(packed_forward_matches_dequantized_forward,
                     *boost::unit_test::precondition(qtest::needs_data{model_file}) *
                         boost::unit_test::precondition(qtest::needs_data{tokenizer_file})) {
    const auto ck = io::Llama2cCheckpoint::load(qtest::data_path(model_file));
    const auto tok = io::Llama2cTokenizer::load(qtest::data_path(tokenizer_file), ck.config().vocab_size);
    const auto fp32 = llama::from_llama2c(ck);
    const auto scheme = parse_scheme("rtn:w8g32s");
    const auto packed = llama::map_block_linears(fp32, [&](const llama::Linear& l) { return llama::quantize_linear(l, scheme); });
    const auto reference = llama::dequantized_weights(packed);
    llama::Session a(packed, Backend::cpu(best_isa(), 1)), b(reference, Backend::cpu(Isa::scalar, 1));
    int token = io::Llama2cTokenizer::bos;
    for (int pos = 0; pos < 24; ++pos) {
        const auto la = a.forward(token, pos);
        const auto lb = b.forward(token, pos);
        const auto [lo, hi] = std::minmax_element(lb.begin(), lb.end());
        float worst = 0;
        for (std::size_t i = 0; i < la.size(); ++i) worst = std::max(worst, std::fabs(la[i] - lb[i]));
        BOOST_TEST_REQUIRE(worst <= 0.02f * (*hi - *lo), "pos " << pos << ": max |dlogit| " << worst);
        BOOST_TEST_REQUIRE(llama::argmax(la) == llama::argmax(lb));
        token = llama::argmax(lb);
    }
    BOOST_TEST(greedy(packed, tok, 60, best_isa()) == greedy(reference, tok, 60, Isa::scalar));
}

BOOST_AUTO_TEST_CASE(temperature_zero_is_greedy) {
    const std::vector<float> logits{0.1f, 2.0f, -1.0f, 1.9f};
    llama::Sampler s(0.0f, 1.0f, 1);
    for (int i = 0; i < 10; ++i) BOOST_TEST(s.next(logits) == 1);
    BOOST_CHECK_THROW(llama::Sampler(-1.0f, 1.0f, 1), InvalidArgument);
    BOOST_CHECK_THROW(llama::Sampler(1.0f, 0.0f, 1), InvalidArgument);
}

// Sampled frequencies against softmax(logits / T): chi-square with 4 degrees of freedom; the
// 0.1% critical value is 18.47, so a correct sampler fails this one time in a thousand seeds
// (the seed is fixed, so the test is deterministic).
BOOST_AUTO_TEST_CASE(sampled_frequencies_follow_the_softmax) {
    const std::vector<float> logits{1.0f, 0.0f, 2.0f, -0.5f, 0.5f};
    const float t = 0.8f;
    llama::Sampler s(t, 1.0f, 12345);
    const int n = 50000;
    std::vector<int> counts(logits.size());
    for (int i = 0; i < n; ++i) ++counts[std::size_t(s.next(logits))];
    double z = 0;
    for (float l : logits) z += std::exp(l / t);
    double chi2 = 0;
    for (std::size_t i = 0; i < logits.size(); ++i) {
        const double expected = n * std::exp(logits[i] / t) / z;
        chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    BOOST_TEST(chi2 < 18.47, "chi-square " << chi2);

    // top-p keeps the smallest head of the distribution with mass >= p: here only the top token
    llama::Sampler nucleus(1.0f, 0.3f, 7);
    for (int i = 0; i < 100; ++i) BOOST_TEST(nucleus.next(logits) == 2);
}

namespace {
const char* story =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, "
    "red ball. She wanted to play with it, but it was too high. Lily asked her mom for help. Her mom smiled and got the "
    "ball down. Lily was very happy. She played with the ball all day long. At night, she went to bed and dreamed of "
    "the big red ball.";
}

BOOST_AUTO_TEST_CASE(perplexity_windows_and_lockstep, *boost::unit_test::precondition(qtest::needs_data{model_file}) *
                                                          boost::unit_test::precondition(qtest::needs_data{tokenizer_file})) {
    const auto ck = io::Llama2cCheckpoint::load(qtest::data_path(model_file));
    const auto tok = io::Llama2cTokenizer::load(qtest::data_path(tokenizer_file), ck.config().vocab_size);
    const auto w = llama::from_llama2c(ck);
    const auto tokens = tok.encode(story, true, false);
    const int context = 32;

    // independent: windows of `context`, every prediction after a window's first token, by hand
    double nll = 0;
    long count = 0;
    std::vector<double> by_hand(tokens.size(), std::nan(""));
    for (std::size_t start = 0; start + 1 < tokens.size(); start += context) {
        llama::Session s(w, Backend::cpu(Isa::scalar, 1), context);
        for (std::size_t i = start; i + 1 < std::min(tokens.size(), start + context); ++i) {
            const auto logits = s.forward(tokens[i], int(i - start));
            double z = 0;
            for (float l : logits) z += std::exp(double(l));
            by_hand[i + 1] = std::log(z) - logits[std::size_t(tokens[i + 1])];
            nll += by_hand[i + 1];
            ++count;
        }
    }
    llama::EvalOptions o;
    o.context = context;
    std::vector<std::vector<double>> token_nll;
    o.token_nll = &token_nll;
    const auto alone = llama::evaluate(w, nullptr, tokens, o);
    o.token_nll = nullptr;
    BOOST_TEST(alone.tokens == count);
    // per-token NLLs: the same numbers, NaN exactly where nothing was predicted (window starts)
    BOOST_TEST_REQUIRE(token_nll.size() == 1u);
    BOOST_TEST_REQUIRE(token_nll[0].size() == tokens.size());
    for (std::size_t t = 0; t < tokens.size(); ++t) {
        BOOST_TEST(std::isnan(token_nll[0][t]) == std::isnan(by_hand[t]), "token " << t);
        if (!std::isnan(by_hand[t])) BOOST_TEST(token_nll[0][t] == by_hand[t], boost::test_tools::tolerance(1e-4));
    }
    BOOST_TEST(alone.perplexity() == std::exp(nll / double(count)), boost::test_tools::tolerance(1e-9));
    BOOST_TEST(alone.perplexity() < 20.0);  // in-domain text for this model

    // a model against itself: no divergence, full agreement
    const auto self = llama::evaluate(w, &w, tokens, o);
    BOOST_TEST(self.mean_kl() < 1e-9);
    BOOST_TEST(self.top1() == 1.0);

    // sliding windows score every token once, with more history: no worse than disjoint windows
    o.stride = 8;
    o.token_nll = &token_nll;
    const auto sliding = llama::evaluate(w, nullptr, tokens, o);
    o.token_nll = nullptr;
    BOOST_TEST(sliding.tokens == long(tokens.size()) - 1);
    BOOST_TEST(std::isnan(token_nll[0][0]));
    double sum = 0;
    for (std::size_t t = 1; t < tokens.size(); ++t) sum += token_nll[0][t];
    BOOST_TEST(sum == sliding.nll, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(sliding.perplexity() <= alone.perplexity() * 1.05);

    // quantized against FP32: KL grows as bits shrink
    o.stride = 0;
    double previous_kl = 0;
    for (const char* scheme : {"rtn:w8g32a", "rtn:w4g32a", "rtn:w2g32a"}) {
        const auto q = llama::map_block_linears(
            w, [&](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme(scheme)); });
        o.backend = Backend::cpu(best_isa());
        const auto stats = llama::evaluate(q, &w, tokens, o);
        BOOST_TEST_MESSAGE(scheme << ": PPL " << stats.perplexity() << " (FP32 " << stats.reference_perplexity() << "), KL "
                                  << stats.mean_kl() << ", top-1 " << stats.top1());
        BOOST_TEST(stats.reference_perplexity() == alone.perplexity(), boost::test_tools::tolerance(1e-5));
        BOOST_TEST(stats.mean_kl() > previous_kl, scheme);
        previous_kl = stats.mean_kl();
    }
}

BOOST_AUTO_TEST_SUITE_END()
