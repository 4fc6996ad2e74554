// The logit lens' last layer is the model's own output: its mean p(next) and top-1 rate equal
// those computed from Session logits; the lens agrees across instruction sets; bad input.
#include <cmath>

#include "common.hpp"
#include "qforge/models/llama/lens.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_lens)

BOOST_AUTO_TEST_CASE(last_layer_is_the_model_output) {
    const auto w = qtest::random_llama(qtest::tiny_config(3), 71);
    const auto tokens = qtest::random_tokens(40, w.config.vocab_size, 72);
    const int context = 16;
    const auto lens = llama::logit_lens(w, tokens, context, Backend::cpu(Isa::scalar, 1));
    BOOST_TEST(lens.size() == 3u);
    double p = 0, hits = 0;
    long n = 0;
    for (std::size_t start = 0; start + 1 < tokens.size(); start += context) {
        const std::size_t len = std::min<std::size_t>(context, tokens.size() - start);
        llama::Session s(w, Backend::cpu(Isa::scalar, 1), context);
        const auto logits = s.forward_batch(std::span(tokens).subspan(start, len), 0);
        for (std::size_t t = 0; t + 1 < len; ++t) {
            const auto row = logits.row(t);
            double z = 0;
            const float m = *std::max_element(row.begin(), row.end());
            for (const float v : row) z += std::exp(double(v - m));
            const int next = tokens[start + t + 1];
            p += std::exp(double(row[std::size_t(next)] - m)) / z;
            hits += llama::argmax(row) == next;
            ++n;
        }
    }
    BOOST_TEST(lens.back().mean_p_next == p / double(n), boost::test_tools::tolerance(1e-9));
    BOOST_TEST(lens.back().top1_next == hits / double(n), boost::test_tools::tolerance(1e-12));
    long counted = 0;
    for (const auto& [token, count] : lens.front().frequent) counted += count;
    BOOST_TEST(counted <= n);
    BOOST_TEST(std::is_sorted(lens.front().frequent.begin(), lens.front().frequent.end(),
                              [](const auto& a, const auto& b) { return a.second > b.second; }));
    const auto vec = llama::logit_lens(w, tokens, context, Backend::cpu(best_isa(), 2));
    for (std::size_t l = 0; l < lens.size(); ++l) BOOST_TEST(vec[l].mean_p_next == lens[l].mean_p_next, boost::test_tools::tolerance(1e-4));
    BOOST_CHECK_THROW(llama::logit_lens(w, std::vector<int>{1}, context, Backend::cpu(Isa::scalar)), InvalidArgument);
    BOOST_CHECK_THROW(llama::logit_lens(w, std::vector<int>{1, 999}, context, Backend::cpu(Isa::scalar)), InvalidArgument);
}

BOOST_AUTO_TEST_SUITE_END()
