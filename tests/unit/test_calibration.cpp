#include <cmath>

#include "common.hpp"
#include "qforge/pipelines/llama/calibration.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
namespace tt = boost::test_tools;
BOOST_AUTO_TEST_SUITE(test_calibration)

BOOST_AUTO_TEST_CASE(statistics_by_hand) {
    // X (3 tokens x 2 channels); X^T X = [[11, -4.5], [-4.5, 20.25]]
    const std::vector<float> x = {1, -2, 3, 0.5f, -1, 4};
    for (const Isa isa : {Isa::scalar, best_isa()}) {
        ActivationStats s(2, true);
        s.add(MatrixView<const float>(x.data(), 1, 2), Backend::cpu(isa));  // in two batches
        s.add(MatrixView<const float>(x.data() + 2, 2, 2), Backend::cpu(isa));
        BOOST_TEST(s.count() == 3);
        const auto h = s.hessian();
        BOOST_TEST(h[0] == 22.0f / 3.0f, tt::tolerance(1e-6f));
        BOOST_TEST(h[1] == -3.0f, tt::tolerance(1e-6f));
        BOOST_TEST(h[2] == -3.0f, tt::tolerance(1e-6f));
        BOOST_TEST(h[3] == 13.5f, tt::tolerance(1e-6f));
        BOOST_TEST(s.mean_abs()[0] == 5.0f / 3.0f, tt::tolerance(1e-6f));
        BOOST_TEST(s.mean_abs()[1] == 6.5f / 3.0f, tt::tolerance(1e-6f));
        BOOST_TEST(s.max_abs()[0] == 3.0f);
        BOOST_TEST(s.max_abs()[1] == 4.0f);
        BOOST_TEST(s.activation_probability()[0] == 2.0f / 3.0f, tt::tolerance(1e-6f));
        BOOST_TEST(s.activation_probability()[1] == 2.0f / 3.0f, tt::tolerance(1e-6f));
    }
    ActivationStats s(2, false);
    BOOST_CHECK_THROW(s.add(MatrixView<const float>(x.data(), 2, 3), Backend::cpu(Isa::scalar)), InvalidArgument);
    BOOST_CHECK_THROW(s.hessian(), InvalidArgument);
    const std::vector<float> bad = {1, NAN};
    BOOST_CHECK_THROW(s.add(MatrixView<const float>(bad.data(), 1, 2), Backend::cpu(Isa::scalar)), InvalidData);
    // the error names the token and channel (found after the branch-free sums), also for -inf
    for (const float v : {-INFINITY, NAN}) {
        std::vector<float> batch(5 * 3, 0.5f);
        batch[3 * 3 + 2] = v;
        ActivationStats w(3, true);
        try {
            w.add(MatrixView<const float>(batch.data(), 5, 3), Backend::cpu(best_isa()));
            BOOST_ERROR("a non-finite activation was accepted");
        } catch (const InvalidData& e) {
            BOOST_TEST(std::string(e.what()).find("non-finite activation at token 3, channel 2") != std::string::npos, e.what());
        }
    }
}

BOOST_AUTO_TEST_CASE(hessian_of_a_wide_batch_matches_double_sums) {
    const std::size_t n = 300, width = 70;
    const auto x = qtest::random_weights(n * width, 4);
    ActivationStats s(width, true);
    s.add(MatrixView<const float>(x.data(), n, width), Backend::cpu(best_isa()));
    const auto h = s.hessian();
    for (std::size_t i = 0; i < width; i += 7)
        for (std::size_t j = 0; j < width; j += 5) {
            double sum = 0, mag = 0;
            for (std::size_t t = 0; t < n; ++t) {
                sum += double(x[t * width + i]) * x[t * width + j];
                mag += std::fabs(double(x[t * width + i]) * x[t * width + j]);
            }
            BOOST_TEST(std::fabs(h[i * width + j] - 2 * sum / n) <= 1e-6 * 2 * mag / n);
        }
}

// The model's own observations, summed by hand, against capture_all.
BOOST_AUTO_TEST_CASE(capture_matches_the_observed_activations) {
    const auto w = qtest::random_llama(qtest::tiny_config(), 1);
    const auto tokens = qtest::random_tokens(40, w.config.vocab_size, 2);
    llama::CalibrationOptions o;
    o.sequence_length = 16;
    const auto stats = llama::capture_all(w, tokens, o);
    BOOST_TEST(stats.size() == 3u);

    std::vector<std::vector<float>> seen;  // layer 1's mlp_hidden rows
    llama::Session s(w, Backend::cpu(Isa::scalar, 1), 16);
    s.observe([&](int layer, llama::Site site, MatrixView<const float> x) {
        if (layer == 1 && site == llama::Site::mlp_hidden)
            for (std::size_t t = 0; t < x.rows; ++t) seen.emplace_back(x.row(t).begin(), x.row(t).end());
    });
    for (const auto seq : llama::calibration_sequences(tokens, 16)) s.forward_batch(seq, 0);
    BOOST_TEST(seen.size() == 40u);  // 16 + 16 + 8
    const auto& st = stats[1].input_of("w2");
    BOOST_TEST(st.count() == 40);
    const auto h = st.hessian();
    const auto mean = st.mean_abs();
    const auto prob = st.activation_probability();
    const std::size_t H = std::size_t(w.config.hidden_dim);
    for (std::size_t i = 0; i < H; ++i) {
        double abs_sum = 0, mx = 0, pos = 0;
        for (const auto& r : seen) {
            abs_sum += std::fabs(r[i]);
            mx = std::max(mx, double(std::fabs(r[i])));
            pos += r[i] > 0;
        }
        BOOST_TEST(mean[i] == abs_sum / 40, tt::tolerance(1e-5));
        BOOST_TEST(st.max_abs()[i] == mx);
        BOOST_TEST(prob[i] == pos / 40, tt::tolerance(1e-6));
        for (std::size_t j = 0; j < H; j += 11) {
            double sum = 0, mag = 0;
            for (const auto& r : seen) {
                sum += double(r[i]) * r[j];
                mag += std::fabs(double(r[i]) * r[j]);
            }
            BOOST_TEST(std::fabs(h[i * H + j] - 2 * sum / 40) <= 1e-5 * 2 * mag / 40 + 1e-12);
        }
    }
    BOOST_TEST(!stats[0].at(llama::Site::mlp_gate).has_hessian());
    BOOST_TEST(stats[0].at(llama::Site::mlp_gate).width() == H);
}

BOOST_AUTO_TEST_CASE(layerwise_equals_whole_model_capture) {
    const auto w = qtest::random_llama(qtest::tiny_config(), 3);
    const auto tokens = qtest::random_tokens(37, w.config.vocab_size, 4);
    llama::CalibrationOptions o;
    o.sequence_length = 12;
    o.backend = Backend::cpu(best_isa());
    const auto all = llama::capture_all(w, tokens, o);
    llama::LayerwiseCalibration lw(w, tokens, o);
    for (int l = 0; l < lw.layers(); ++l) {
        const auto st = lw.capture(w.layers[std::size_t(l)]);
        for (int site = 0; site < llama::site_count; ++site) {
            const auto& a = all[std::size_t(l)].sites[std::size_t(site)];
            const auto& b = st.sites[std::size_t(site)];
            BOOST_TEST(a.count() == b.count());
            BOOST_TEST(a.mean_abs() == b.mean_abs(), tt::per_element());
            BOOST_TEST(a.activation_probability() == b.activation_probability(), tt::per_element());
            if (a.has_hessian()) BOOST_TEST(a.hessian() == b.hessian(), tt::per_element());
        }
        lw.advance(w.layers[std::size_t(l)]);
    }
    BOOST_CHECK_THROW(lw.advance(w.layers[0]), InvalidArgument);
}

// Later blocks see the earlier blocks' quantization error: the same statistics as a whole-model
// capture of the model whose earlier blocks are quantized.
BOOST_AUTO_TEST_CASE(layerwise_runs_through_quantized_blocks) {
    const auto w = qtest::random_llama(qtest::tiny_config(), 5);
    const auto tokens = qtest::random_tokens(32, w.config.vocab_size, 6);
    const auto q = llama::map_block_linears(w, [](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme("rtn:w2g16a")); });
    llama::CalibrationOptions o;
    o.sequence_length = 16;
    o.backend = Backend::cpu(best_isa());
    auto mixed = w;  // block 0 quantized, later blocks FP32
    mixed.layers[0] = q.layers[0];
    const auto expected = llama::capture_all(mixed, tokens, o);
    const auto unquantized = llama::capture_all(w, tokens, o);
    llama::LayerwiseCalibration lw(w, tokens, o);
    lw.advance(q.layers[0]);
    const auto st = lw.capture(w.layers[1]);
    BOOST_TEST(st.at(llama::Site::mlp_input).hessian() == expected[1].at(llama::Site::mlp_input).hessian(), tt::per_element());
    BOOST_TEST(st.at(llama::Site::mlp_input).hessian() != unquantized[1].at(llama::Site::mlp_input).hessian());
}

BOOST_AUTO_TEST_CASE(layerwise_memory_does_not_grow_with_depth) {
    const auto tokens = qtest::random_tokens(48, 50, 8);
    llama::CalibrationOptions o;
    o.sequence_length = 16;
    std::vector<std::size_t> held;
    for (const int layers : {2, 8}) {
        const auto w = qtest::random_llama(qtest::tiny_config(layers), 9);
        llama::LayerwiseCalibration lw(w, tokens, o);
        std::size_t peak = 0;
        for (int l = 0; l < layers; ++l) {
            const auto st = lw.capture(w.layers[std::size_t(l)]);
            peak = std::max(peak, lw.bytes() + st.bytes());
            lw.advance(w.layers[std::size_t(l)]);
        }
        held.push_back(peak);
    }
    BOOST_TEST(held[0] == held[1]);
    BOOST_TEST(held[0] > 48u * 32u * sizeof(float));  // at least the hidden states
}

// GPTQ's true-sequential steps: each capture resumes where the previous one stopped while the
// layers after that site change (here: replaced by quantized ones step by step). Statistics and
// the hidden states after `advance` equal, bit for bit, those of runs from each block's input.
BOOST_AUTO_TEST_CASE(resuming_a_capture_equals_running_from_the_input) {
    const auto w = qtest::random_llama(qtest::tiny_config(3), 11);
    const auto tokens = qtest::random_tokens(45, w.config.vocab_size, 12);
    const auto q = llama::map_block_linears(w, [](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme("rtn:w3g16a")); });
    llama::CalibrationOptions o;
    o.sequence_length = 16;  // 16 + 16 + 13: the last sequence shorter
    o.backend = Backend::cpu(best_isa());
    llama::LayerwiseCalibration resumed(w, tokens, o), fresh(w, tokens, o);
    using Member = llama::Linear llama::Layer::*;
    const std::vector<std::pair<llama::Site, std::vector<Member>>> steps = {
        {llama::Site::attention_input, {&llama::Layer::wq, &llama::Layer::wk, &llama::Layer::wv}},
        {llama::Site::attention_output, {&llama::Layer::wo}},
        {llama::Site::mlp_input, {&llama::Layer::w1, &llama::Layer::w3}},
        {llama::Site::mlp_hidden, {&llama::Layer::w2}}};
    for (int l = 0; l < resumed.layers(); ++l) {
        auto block = w.layers[std::size_t(l)];
        for (std::size_t i = 0; i < steps.size(); ++i) {
            const unsigned mask = 1u << unsigned(steps[i].first);
            const auto a = resumed.capture(block, mask, i > 0);
            const auto b = fresh.capture(block, mask);
            const auto& sa = a.at(steps[i].first);
            const auto& sb = b.at(steps[i].first);
            BOOST_TEST(sa.count() == sb.count());
            BOOST_TEST(sa.mean_abs() == sb.mean_abs(), tt::per_element());
            BOOST_TEST(sa.hessian() == sb.hessian(), tt::per_element());
            for (const Member m : steps[i].second) block.*m = q.layers[std::size_t(l)].*m;
        }
        resumed.advance(block, true);
        fresh.advance(block);
        const auto ha = resumed.hidden(), hb = fresh.hidden();
        BOOST_TEST(std::equal(ha.data, ha.data + ha.rows * ha.cols, hb.data));
    }
}

BOOST_AUTO_TEST_CASE(resuming_without_a_stopped_capture_is_refused) {
    const auto w = qtest::random_llama(qtest::tiny_config(2), 13);
    const auto tokens = qtest::random_tokens(20, w.config.vocab_size, 14);
    llama::CalibrationOptions o;
    o.sequence_length = 10;
    llama::LayerwiseCalibration lw(w, tokens, o);
    const auto& b0 = w.layers[0];
    const auto site = [](llama::Site s) { return 1u << unsigned(s); };
    BOOST_CHECK_THROW(lw.capture(b0, site(llama::Site::mlp_input), true), InvalidArgument);  // nothing captured yet
    BOOST_CHECK_THROW(lw.advance(b0, true), InvalidArgument);
    lw.capture(b0, site(llama::Site::mlp_input));
    BOOST_CHECK_THROW(lw.capture(b0, site(llama::Site::attention_output), true), InvalidArgument);  // before the stop
    BOOST_CHECK_THROW(lw.capture(b0, site(llama::Site::mlp_input), true), InvalidArgument);         // the stop itself
    lw.capture(b0, site(llama::Site::mlp_hidden), true);
    lw.capture(b0);  // a whole run leaves nothing to resume from
    BOOST_CHECK_THROW(lw.capture(b0, site(llama::Site::mlp_hidden), true), InvalidArgument);
    lw.capture(b0, site(llama::Site::attention_output));
    lw.advance(b0, true);
    BOOST_CHECK_THROW(lw.capture(w.layers[1], site(llama::Site::mlp_hidden), true), InvalidArgument);  // a new block
}

BOOST_AUTO_TEST_SUITE_END()
