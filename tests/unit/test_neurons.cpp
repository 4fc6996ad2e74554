// LAPE neuron selection on planted probabilities, activation probability against a hand count,
// the random control, and the neuron-set file (round trip, errors).
#include <filesystem>
#include <fstream>

#include "common.hpp"
#include "qforge/pipelines/llama/neurons.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_neurons)

BOOST_AUTO_TEST_CASE(lape_on_planted_probabilities) {
    // 4 corpora, 3 layers x 50 neurons, probabilities ~0.3 everywhere except a few planted ones
    const int K = 4, L = 3, H = 50;
    std::vector<std::vector<std::vector<float>>> p(K, std::vector<std::vector<float>>(L, std::vector<float>(H)));
    for (int k = 0; k < K; ++k)
        for (int l = 0; l < L; ++l)
            for (int i = 0; i < H; ++i) p[std::size_t(k)][std::size_t(l)][std::size_t(i)] = 0.3f + 0.001f * float((k * 7 + l * 3 + i) % 11);
    p[1][0][7] = 0.95f;  // fires for corpus 1 only
    p[0][0][7] = p[2][0][7] = p[3][0][7] = 0.001f;
    p[2][2][13] = 0.9f;  // fires for corpora 2 and 3
    p[3][2][13] = 0.92f;
    p[0][2][13] = p[1][2][13] = 0.001f;
    const auto r = llama::lape_select({"a", "b", "c", "d"}, p, {0.01, 0.95});
    BOOST_TEST(r.selected == 2u);
    BOOST_TEST(r.per_language.at("b").per_layer[0] == std::vector<int>{7});
    BOOST_TEST(r.per_language.at("c").per_layer[2] == std::vector<int>{13});
    BOOST_TEST(r.per_language.at("d").per_layer[2] == std::vector<int>{13});
    BOOST_TEST(r.per_language.at("a").size() == 0u);
    BOOST_TEST(r.per_language.at("b").size() == 1u);
    const auto control = llama::random_like(r.per_language.at("c"), H, 42);
    BOOST_TEST(control.per_layer.size() == 3u);
    BOOST_TEST(control.per_layer[2].size() == 1u);
    BOOST_TEST(control.per_layer[0].empty());
    BOOST_TEST(llama::random_like(r.per_language.at("c"), H, 42).per_layer == control.per_layer);  // fixed seed
    BOOST_CHECK_THROW(llama::lape_select({"a"}, {p[0]}), InvalidArgument);
}

BOOST_AUTO_TEST_CASE(lape_keeps_a_share_of_all_neurons_among_the_candidates) {
    // 4 corpora, 1 layer x 100 neurons at p = 0.3 (the 95th percentile, so none of them is a
    // candidate) except neurons 0-3 (one corpus each) and 4-9 (corpus 0 and, increasingly,
    // corpus 1). Keeping 5% of all neurons = 5: the four one-language neurons, then neuron 4,
    // the two-language neuron with the lowest entropy. An entropy quantile intersected with the
    // probability filter would keep only the lowest 5% of all 100 entropies that pass it.
    const int K = 4, H = 100;
    std::vector<std::vector<std::vector<float>>> p(K, std::vector<std::vector<float>>(1, std::vector<float>(H, 0.3f)));
    for (int j = 0; j < 10; ++j)
        for (int k = 0; k < K; ++k) p[std::size_t(k)][0][std::size_t(j)] = 0.001f;
    for (int j = 0; j < 4; ++j) p[std::size_t(j)][0][std::size_t(j)] = 0.9f;
    for (int j = 4; j < 10; ++j) {
        p[0][0][std::size_t(j)] = 0.9f;
        p[1][0][std::size_t(j)] = 0.4f + 0.05f * float(j - 4);
    }
    const auto r = llama::lape_select({"a", "b", "c", "d"}, p, {0.05, 0.95});
    BOOST_TEST(r.probability_threshold == 0.3, boost::test_tools::tolerance(1e-6));
    BOOST_TEST(r.candidates == 10u);
    BOOST_TEST(r.selected == 5u);
    BOOST_TEST(r.per_language.at("a").per_layer[0] == (std::vector<int>{0, 4}));
    BOOST_TEST(r.per_language.at("b").per_layer[0] == (std::vector<int>{1, 4}));
    BOOST_TEST(r.per_language.at("c").per_layer[0] == std::vector<int>{2});
    BOOST_TEST(r.per_language.at("d").per_layer[0] == std::vector<int>{3});
    // a larger share keeps more of the candidates, never a non-candidate
    const auto wide = llama::lape_select({"a", "b", "c", "d"}, p, {0.5, 0.95});
    BOOST_TEST(wide.selected == 10u);
    BOOST_TEST(wide.per_language.at("a").size() == 7u);
}

BOOST_AUTO_TEST_CASE(activation_probability_counts_positive_gates) {
    const auto w = qtest::random_llama(qtest::tiny_config(2), 61);
    const auto t1 = qtest::random_tokens(12, w.config.vocab_size, 62), t2 = qtest::random_tokens(7, w.config.vocab_size, 63);
    const std::vector<std::span<const int>> seqs = {t1, t2};
    const auto p = llama::activation_probability(w, seqs, Backend::cpu(best_isa()));
    std::vector<std::vector<double>> count(2, std::vector<double>(std::size_t(w.config.hidden_dim), 0.0));
    for (const auto& t : {t1, t2}) {
        llama::Session s(w, Backend::cpu(best_isa(), 0));
        s.observe([&](int layer, llama::Site site, MatrixView<const float> x) {
            if (site == llama::Site::mlp_gate)
                for (std::size_t r = 0; r < x.rows; ++r)
                    for (std::size_t i = 0; i < x.cols; ++i) count[std::size_t(layer)][i] += x(r, i) > 0;
        });
        for (std::size_t i = 0; i < t.size(); ++i) s.forward(t[i], int(i));  // one token at a time: a different path
    }
    for (int l = 0; l < 2; ++l)
        for (int i = 0; i < w.config.hidden_dim; ++i)
            BOOST_TEST(p[std::size_t(l)][std::size_t(i)] == float(count[std::size_t(l)][std::size_t(i)] / 19.0), boost::test_tools::tolerance(1e-6f));
}

BOOST_AUTO_TEST_CASE(neuron_file_round_trip_and_errors) {
    const auto path = (std::filesystem::temp_directory_path() / "qf_neurons.json").string();
    std::map<std::string, llama::NeuronSet> sets;
    sets["fra_Latn"] = {{{1, 5}, {}, {40}}};
    sets["random"] = {{{2}, {3, 4}, {}}};
    llama::write_neuron_sets(path, sets, 3, 48, "lape");
    const auto back = llama::read_neuron_sets(path, 3, 48);
    BOOST_TEST(back.at("fra_Latn").per_layer == sets["fra_Latn"].per_layer);
    BOOST_TEST(back.at("random").per_layer == sets["random"].per_layer);
    BOOST_CHECK_THROW(llama::read_neuron_sets(path, 4, 48), FileError);
    BOOST_CHECK_THROW(llama::read_neuron_sets(path, 3, 30), FileError);  // neuron 40 out of range... and shape
    std::ofstream(path) << "{\"format\": \"qforge-neurons\", \"version\": 2}";
    BOOST_CHECK_THROW(llama::read_neuron_sets(path, 3, 48), FileError);
    std::ofstream(path) << "not json";
    try {
        llama::read_neuron_sets(path, 3, 48);
        BOOST_FAIL("accepted");
    } catch (const FileError& e) {
        BOOST_TEST(std::string(e.what()).find("qf_neurons.json") != std::string::npos);
    }
}

BOOST_AUTO_TEST_SUITE_END()
