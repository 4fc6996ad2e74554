// GPTQ on a whole model: stories260K quantized block by block on text sampled from the model
// itself, evaluated on other samples: GPTQ's KL divergence from FP32 below RTN's at 3 and 2 bits;
// act-order layers (columns in their own order) give the same logits packed as dequantized, and
// survive the container.
#include <filesystem>

#include "common.hpp"
#include "qforge/container/llama/container.hpp"
#include "qforge/models/llama/evaluate.hpp"
#include "qforge/pipelines/llama/awq.hpp"
#include "qforge/pipelines/llama/gptq.hpp"
#include "qforge/pipelines/llama/quantize_model.hpp"
#include "qforge/models/llama/sampler.hpp"
#include "qforge/models/llama/size.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_llama_gptq)

namespace {
const char* model_file = "models/stories260K/stories260K.bin";

/// Text sampled from the model (temperature 1), BOS-separated stories: in-distribution tokens.
std::vector<int> sampled(const llama::Weights& w, int n, std::uint64_t seed) {
    std::vector<int> out;
    llama::Sampler sampler(1.0f, 1.0f, seed);
    while (int(out.size()) < n) {
        llama::Session s(w, Backend::cpu(best_isa(), 0));
        int token = 1;
        for (int pos = 0; pos < w.config.seq_len && int(out.size()) < n; ++pos) {
            out.push_back(token);
            token = sampler.next(s.forward(token, pos));
            if (token == 1) break;
        }
    }
    return out;
}

double kl_against(const llama::Weights& q, const llama::Weights& ref, std::span<const int> tokens) {
    llama::EvalOptions o;
    o.context = 256;
    o.backend = Backend::cpu(best_isa());
    return llama::evaluate(q, &ref, tokens, o).mean_kl();
}
}  // namespace

BOOST_AUTO_TEST_CASE(gptq_beats_rtn_on_stories260k, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    const auto calib = sampled(w, 4096, 1), eval = sampled(w, 2048, 2);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 256;
    o.calibration.backend = Backend::cpu(best_isa());
    for (const char* grid : {"w3g32a", "w2g32a", "w3a"}) {
        const auto rtn = llama::map_block_linears(w, [&](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme(std::string("rtn:") + grid)); });
        const double kl_rtn = kl_against(rtn, w, eval);
        for (const char* options : {"", ",act"}) {
            const auto scheme = parse_scheme(std::string("gptq:") + grid + options);
            const auto g = llama::gptq_quantize_model(w, calib, scheme, o);
            const double kl_gptq = kl_against(g, w, eval);
            BOOST_TEST_MESSAGE(grid << options << ": KL RTN " << kl_rtn << ", GPTQ " << kl_gptq);
            BOOST_TEST(kl_gptq < kl_rtn, grid << options << ": GPTQ " << kl_gptq << " vs RTN " << kl_rtn);
        }
    }
    // without true-sequential it still quantizes every layer
    o.true_sequential = false;
    const auto g = llama::gptq_quantize_model(w, calib, parse_scheme("gptq:w4g32a"), o);
    for (const auto& L : g.layers) BOOST_TEST(std::holds_alternative<Dense<4>::Packed>(L.w2.weights()));
}

BOOST_AUTO_TEST_CASE(act_order_layers_packed_equal_dequantized, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    const auto calib = sampled(w, 1024, 3);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 256;
    const auto g = llama::gptq_quantize_model(w, calib, parse_scheme("gptq:w8g32a,act"), o);
    std::size_t ordered = 0;
    for (const auto& L : g.layers)
        for (const auto& b : llama::block_linears) ordered += !(L.*b.member).input_order().empty();
    BOOST_TEST(ordered == 7u * g.layers.size());
    const auto fp = llama::dequantized_weights(g);
    const std::vector<int> tokens(calib.begin(), calib.begin() + 48);
    llama::Session a(g, Backend::cpu(best_isa(), 0)), b(fp, Backend::cpu(Isa::scalar, 0));
    const auto la = a.forward_batch(tokens, 0);
    std::vector<float> first(la.data, la.data + la.rows * la.cols);
    const auto lb = b.forward_batch(tokens, 0);
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        float lo = 1e30f, hi = -1e30f, worst = 0;
        for (std::size_t i = 0; i < lb.cols; ++i) {
            lo = std::min(lo, lb(p, i));
            hi = std::max(hi, lb(p, i));
            worst = std::max(worst, std::fabs(first[p * lb.cols + i] - lb(p, i)));
        }
        BOOST_TEST_REQUIRE(worst <= 0.02f * (hi - lo), "pos " << p);  // 8-bit activations only (as packed_forward test)
    }
    // through the container: the order is stored and read back
    const auto path = (std::filesystem::temp_directory_path() / "qf_gptq_act.safetensors").string();
    llama::write_container(llama::WeightsSource(g, "memory"), path, {});
    const auto back = llama::load_weights(llama::ContainerSource(path));
    BOOST_TEST(back.layers[0].wq.input_order() == g.layers[0].wq.input_order());
    llama::Session c(back, Backend::cpu(best_isa(), 0));
    const auto lc = c.forward_batch(tokens, 0);
    BOOST_TEST(std::equal(lc.data, lc.data + lc.rows * lc.cols, first.begin()));
}

// An error while quantizing a layer names the tensor: a row of blk.0.ffn_up of 1e30 has groups
// no fp16 scale can hold.
BOOST_AUTO_TEST_CASE(errors_name_the_tensor) {
    auto w = qtest::random_llama(qtest::tiny_config(1), 61);
    auto up = std::get<llama::Fp32Matrix>(w.layers[0].w3.weights());
    for (int c = 8; c < 16; ++c) up.data[std::size_t(5 * up.cols + c)] = 1e30f;
    w.layers[0].w3 = llama::Linear(up);
    const auto tokens = qtest::random_tokens(64, w.config.vocab_size, 62);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 16;
    for (const char* scheme : {"gptq:w4g8a", "gptq:w4g8a,act"}) {
        std::string m = "(no error)";
        try {
            (void)llama::gptq_quantize_model(w, tokens, parse_scheme(scheme), o);
        } catch (const InvalidData& e) {
            m = e.what();
        }
        BOOST_TEST_MESSAGE(scheme << ": " << m);
        BOOST_TEST(m.find("tensor blk.0.ffn_up.weight: ") == 0u, scheme << ": " << m);
        BOOST_TEST(m.find("does not fit fp16") != std::string::npos, scheme << ": " << m);
    }
}

// A step's layers quantized as one stacked matrix (H factorised once) get exactly the codes and
// grids each gets alone: GPTQ's rows are independent given H. With and without act-order.
BOOST_AUTO_TEST_CASE(stacked_step_equals_layers_one_by_one) {
    const auto w = qtest::random_llama(qtest::tiny_config(1), 63);
    const auto& L = w.layers[0];
    const int cols = w.config.dim;
    const auto x = qtest::random_weights(std::size_t(96) * std::size_t(cols), 64);
    const auto h = qtest::hessian_of(x, 96, cols);
    const std::vector<llama::Linear llama::Layer::*> members{&llama::Layer::wq, &llama::Layer::wk, &llama::Layer::wv};
    const QuantizeSettings settings;
    const auto fp32 = [&](const llama::Linear& l) { return std::get<llama::Fp32Matrix>(llama::dequantized_linear(l, settings.backend).weights()).data; };
    for (const char* text : {"gptq:w4g8a", "gptq:w3g8a,act"}) {
        const auto scheme = parse_scheme(text);
        llama::Layer q;
        std::string note;
        BOOST_TEST_REQUIRE(llama::quantize_stacked(L, q, members, h, scheme, settings, note));
        for (const auto m : members) {
            const auto alone = llama::hessian_linear(L.*m, h, scheme, settings);
            BOOST_TEST((q.*m).input_order() == alone.input_order(), text);
            BOOST_TEST(fp32(q.*m) == fp32(alone), text);
        }
    }
    llama::Layer q;
    std::string note;
    BOOST_TEST(!llama::quantize_stacked(L, q, {&llama::Layer::wo}, h, parse_scheme("gptq:w4g8a"), settings, note));  // one layer: nothing to stack
}

// Per-tensor schemes (ModelQuantizeOptions::tensor_schemes, what a type mix such as Q4_K_M sets):
// in block 0, whose q/k/v Hessian no quantization has touched yet, the layer set apart gets
// exactly what a run with its scheme everywhere gives it, and its step's other layers what the
// run's scheme alone gives them. AWQ: each layer's bytes are its own grid's. Bad maps are refused
// before any work, naming the tensor.
BOOST_AUTO_TEST_CASE(tensor_schemes_set_layers_apart) {
    const auto w = qtest::random_llama(qtest::tiny_config(2), 65);
    const auto tokens = qtest::random_tokens(64, w.config.vocab_size, 66);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 16;
    const auto fp32 = [&](const llama::Linear& l) { return std::get<llama::Fp32Matrix>(llama::dequantized_linear(l, Backend::cpu(Isa::scalar)).weights()).data; };
    const auto s4 = parse_scheme("gptq:w4g8a"), s8 = parse_scheme("gptq:w8g8a");
    const auto all4 = llama::gptq_quantize_model(w, tokens, s4, o), all8 = llama::gptq_quantize_model(w, tokens, s8, o);
    auto mixed_o = o;
    mixed_o.tensor_schemes["blk.0.attn_v.weight"] = s8;
    mixed_o.tensor_schemes["blk.1.ffn_down.weight"] = s8;
    const auto mixed = llama::gptq_quantize_model(w, tokens, s4, mixed_o);
    BOOST_TEST(fp32(mixed.layers[0].wv) == fp32(all8.layers[0].wv));
    BOOST_TEST(fp32(mixed.layers[0].wq) == fp32(all4.layers[0].wq));
    BOOST_TEST(fp32(mixed.layers[0].wk) == fp32(all4.layers[0].wk));
    BOOST_TEST(mixed.layers[1].w2.bytes() == all8.layers[1].w2.bytes());
    BOOST_TEST(mixed.layers[1].w1.bytes() == all4.layers[1].w1.bytes());
    BOOST_TEST(fp32(mixed.layers[0].wv) != fp32(all4.layers[0].wv));

    const auto a4 = parse_scheme("awq:w4g8a"), a8 = parse_scheme("awq:w8g8a");
    auto awq_o = o;
    awq_o.tensor_schemes["blk.0.attn_v.weight"] = a8;
    const auto awq_all4 = llama::awq_quantize_model(w, tokens, a4, o), awq_mixed = llama::awq_quantize_model(w, tokens, a4, awq_o);
    BOOST_TEST(awq_mixed.layers[0].wv.bytes() > awq_all4.layers[0].wv.bytes());
    BOOST_TEST(awq_mixed.layers[0].wq.bytes() == awq_all4.layers[0].wq.bytes());

    const auto refused = [&](const std::map<std::string, RuntimeScheme>& map, const char* says) {
        auto bad = o;
        bad.tensor_schemes = map;
        std::string m = "(no error)";
        try {
            llama::BlockQuantizer(w.config, w.token_embedding, tokens, s4, bad);
        } catch (const InvalidArgument& e) {
            m = e.what();
        }
        BOOST_TEST(m.find(says) != std::string::npos, m);
    };
    refused({{"blk.2.attn_v.weight", s8}}, "'blk.2.attn_v.weight': not a block linear of this model");
    refused({{"blk.0.attn_norm.weight", s8}}, "'blk.0.attn_norm.weight': not a block linear");
    refused({{"blk.0.attn_v.weight", parse_scheme("rtn:w8g8a")}}, "has another method than the run's gptq:w4g8a");
}

// PQ grids on a whole model: every decoder linear holds PQ codes (k and v, 32 rows, quantized
// one by one: stacking needs whole 64-row codebook blocks), the bits per weight are the stored
// bytes', GPTQ-PQ's KL below plain PQ's at the same grid, and the packed model (single tokens
// through the codebook GEMV) gives the dequantized model's logits.
BOOST_AUTO_TEST_CASE(pq_grids_on_stories260k, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    const auto calib = sampled(w, 2048, 1), eval = sampled(w, 1024, 2);
    llama::ModelQuantizeOptions o;
    o.calibration.sequence_length = 256;
    o.calibration.backend = Backend::cpu(best_isa());
    const auto scheme = parse_scheme("gptq:pq2n16g256");
    const auto g = llama::gptq_quantize_model(w, calib, scheme, o);
    std::size_t bytes = 0, params = 0;
    for (const auto& L : g.layers)
        for (const auto* l : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) {
            const auto* p = std::get_if<PqMatrix>(&l->weights());
            BOOST_TEST_REQUIRE(p != nullptr);
            BOOST_TEST((p->spec == *scheme.pq));
            bytes += p->stored_bytes(), params += std::size_t(p->rows) * std::size_t(p->cols);
        }
    BOOST_TEST(llama::block_bits_per_weight(g) == 8.0 * double(bytes) / double(params));
    const auto plain = llama::map_block_linears(w, [&](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme("rtn:pq2n16g256")); });
    const double kl_g = kl_against(g, w, eval), kl_p = kl_against(plain, w, eval);
    BOOST_TEST_MESSAGE("pq2n16g256 (" << llama::block_bits_per_weight(g) << " bpw): KL plain PQ " << kl_p << ", GPTQ-PQ " << kl_g);
    BOOST_TEST(kl_g < kl_p);
    // decode through the codebooks against the dequantized weights
    const auto deq = llama::dequantized_weights(g);
    llama::Session a(g, Backend::cpu(best_isa(), 2)), b(deq, Backend::cpu(best_isa(), 2));
    for (int pos = 0; pos < 8; ++pos) {
        const auto la = a.forward(eval[std::size_t(pos)], pos);
        const std::vector<float> copy(la.begin(), la.end());
        const auto lb = b.forward(eval[std::size_t(pos)], pos);
        for (std::size_t i = 0; i < copy.size(); ++i) BOOST_TEST_REQUIRE(std::fabs(copy[i] - lb[i]) <= 1e-3f * (1.0f + std::fabs(lb[i])), "pos " << pos << " logit " << i);
    }
    // a PQ layer has no stored layout yet: refused by name, not written wrongly
    BOOST_CHECK_THROW(llama::layout_of(g.layers[0].wq), InvalidArgument);
}

BOOST_AUTO_TEST_SUITE_END()
