// Issue #17's sensitivity table and allocation on stories260K: Spearman's ρ against a
// by-definition reference; the reference trace's KL against Session runs and kl_divergence
// (an independent route); the proxies against their definitions on the site's activations;
// an allocation's bytes equal to the quantized model's, within the budget, and its map, saved
// and read back, quantizing the same model bit for bit.
#include <algorithm>
#include <bit>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "common.hpp"
#include "tiny_llama.hpp"
#include "qforge/io/llama2c.hpp"
#include "qforge/runtime/blas.hpp"
#include "qforge/metrics/rank_correlation.hpp"
#include "qforge/models/llama/size.hpp"
#include "qforge/pipelines/llama/allocate.hpp"
#include "qforge/pipelines/llama/awq.hpp"
#include "qforge/pipelines/llama/quantize_model.hpp"
#include "qforge/pipelines/llama/sensitivity_file.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_sensitivity)

namespace {
const char* model_file = "models/stories260K/stories260K.bin";

/// ρ by its textbook formula for distinct values: 1 − 6 Σ d² / (n (n² − 1)), ranks by counting.
double spearman_distinct(const std::vector<double>& a, const std::vector<double>& b) {
    const std::size_t n = a.size();
    double d2 = 0;
    for (std::size_t i = 0; i < n; ++i) {
        double ra = 1, rb = 1;
        for (std::size_t j = 0; j < n; ++j) ra += a[j] < a[i], rb += b[j] < b[i];
        d2 += (ra - rb) * (ra - rb);
    }
    return 1.0 - 6.0 * d2 / (double(n) * (double(n) * double(n) - 1.0));
}

std::vector<int> tokens_of(const llama::Weights& w, int n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int> t(static_cast<std::size_t>(n));
    for (auto& v : t) v = int(rng() % std::uint64_t(w.config.vocab_size));
    return t;
}

llama::CalibrationOptions calibration(int length) {
    llama::CalibrationOptions o;
    o.sequence_length = length;
    o.backend = Backend::cpu(best_isa(), 2);
    return o;
}

/// Whether the BLAS's kernels may round a product's rows otherwise when it holds fewer of them
/// (blas::cut_invariant false; Haswell's kernels: relative 3e-9 seen): the callers then compare
/// `what` to 1e-7 instead of bit for bit or 1e-9, and the log says so.
bool routes_round_apart(const char* what) {
    const bool apart = blas::enabled() && !blas::cut_invariant();
    if (apart) BOOST_TEST_MESSAGE("the BLAS's kernels are not cut-invariant (" << blas::name() << "): " << what << " compared to 1e-7");
    return apart;
}

}  // namespace

BOOST_AUTO_TEST_CASE(spearman_matches_its_definition) {
    const std::vector<double> a{1, 2, 3, 4, 5}, up{10, 20, 30, 40, 50}, down{5, 4, 3, 2, 1};
    BOOST_TEST(spearman(a, up) == 1.0);
    BOOST_TEST(spearman(a, down) == -1.0);
    // hand-computed: ranks (1,2,3,4) vs (2,1,4,3): Σd² = 4, ρ = 1 − 24/60 = 0.6
    BOOST_TEST(spearman(std::vector<double>{1, 2, 3, 4}, std::vector<double>{2, 1, 4, 3}) == 0.6, boost::test_tools::tolerance(1e-12));
    // ties share their mean rank: (1, 2.5, 2.5, 4) vs (1,2,3,4) → Pearson of the ranks
    BOOST_TEST(spearman(std::vector<double>{0, 1, 1, 2}, std::vector<double>{0, 1, 2, 3}) == std::sqrt(0.9), boost::test_tools::tolerance(1e-12));
    std::mt19937_64 rng(7);
    std::normal_distribution<double> nd;
    for (int trial = 0; trial < 200; ++trial) {
        const std::size_t n = 2 + std::size_t(rng() % 30);
        std::vector<double> x(n), y(n);
        for (std::size_t i = 0; i < n; ++i) x[i] = nd(rng), y[i] = x[i] * double(trial % 3) + nd(rng);
        BOOST_TEST(spearman(x, y) == spearman_distinct(x, y), boost::test_tools::tolerance(1e-9));
    }
    BOOST_TEST(std::isnan(spearman(std::vector<double>{1, 1, 1}, std::vector<double>{1, 2, 3})));
    BOOST_CHECK_THROW(spearman(std::vector<double>{1}, std::vector<double>{1}), InvalidArgument);
    BOOST_CHECK_THROW(spearman(std::vector<double>{1, NAN}, std::vector<double>{1, 2}), InvalidArgument);
}

BOOST_AUTO_TEST_CASE(trace_kl_equals_session_runs, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    const auto tokens = tokens_of(w, 300, 1);  // sequences of 128, 128 and a tail of 44
    const llama::ReferenceTrace trace(w, tokens, calibration(128));
    // the same quantity by two routes (a whole model's run, a block's; a prefix, the whole): equal
    // to rounding of the sums
    const double routes = routes_round_apart("the two routes") ? 1e-7 : 1e-9;
    BOOST_TEST(trace.tokens() == 300);
    BOOST_TEST(trace.kl_of(w) == 0.0);  // the same model: the same logits, bit for bit
    const auto rtn = llama::map_block_linears(w, [](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme("rtn:w2g32a")); });
    for (int l : {0, 2, 4}) {
        llama::Weights one = w;
        one.layers[std::size_t(l)] = rtn.layers[std::size_t(l)];
        // independently: Session runs of both models per sequence, KL per position from the logits
        std::vector<double> per_position;
        for (const auto seq : llama::calibration_sequences(tokens, 128)) {
            llama::Session a(w, Backend::cpu(Isa::scalar, 1), 128), b(one, Backend::cpu(Isa::scalar, 1), 128);
            const auto la = a.forward_batch(seq, 0), lb = b.forward_batch(seq, 0);
            for (std::size_t t = 0; t < seq.size(); ++t) per_position.push_back(kl_divergence(la.row(t), lb.row(t)));
        }
        const double expected = std::accumulate(per_position.begin(), per_position.end(), 0.0) / 300.0, got = trace.kl_with_block(l, rtn.layers[std::size_t(l)]);
        BOOST_TEST_MESSAGE("block " << l << ": KL " << got << " (Session runs " << expected << ")");
        BOOST_TEST(expected > 1e-4);
        BOOST_TEST(got == expected, boost::test_tools::tolerance(1e-4));
        BOOST_TEST(trace.kl_of(one) == got, boost::test_tools::tolerance(routes));
        // on a prefix: the first sequence whole and 72 positions of the second (cut, not re-run whole)
        const double prefix = std::accumulate(per_position.begin(), per_position.begin() + 200, 0.0) / 200.0;
        BOOST_TEST(trace.kl_with_block(l, rtn.layers[std::size_t(l)], 200) == prefix, boost::test_tools::tolerance(1e-4));
        BOOST_TEST(std::abs(prefix - expected) > 1e-6);  // the prefix is another mean: the check can tell them apart
        BOOST_TEST(trace.kl_with_block(l, rtn.layers[std::size_t(l)], 5000) == got);  // more than there are: all of them
        // a trace keeping the distributions of the first 200 positions only: the same prefix KL
        const llama::ReferenceTrace short_trace(w, tokens, calibration(128), 200);
        BOOST_TEST(short_trace.kl_tokens() == 200);
        BOOST_TEST(short_trace.bytes() < trace.bytes());
        BOOST_TEST(short_trace.kl_with_block(l, rtn.layers[std::size_t(l)]) == trace.kl_with_block(l, rtn.layers[std::size_t(l)], 200));
        BOOST_TEST(short_trace.kl_of(one) == short_trace.kl_with_block(l, rtn.layers[std::size_t(l)]), boost::test_tools::tolerance(routes));

        // the block's output error, independently: the residual stream leaving block l in a trace
        // of the model with block l replaced (its blocks before l are the reference's)
        const llama::ReferenceTrace replaced(one, tokens, calibration(128));
        const auto a = trace.block_output(l), b = replaced.block_output(l);
        double sq = 0, sq200 = 0;
        for (std::size_t i = 0; i < a.rows * a.cols; ++i) {
            const double d2 = (double(a.data[i]) - double(b.data[i])) * (double(a.data[i]) - double(b.data[i]));
            sq += d2;
            if (i < 200 * a.cols) sq200 += d2;
        }
        BOOST_TEST(sq > 0.0);
        BOOST_TEST(trace.block_output_error(l, rtn.layers[std::size_t(l)]) == sq / 300.0, boost::test_tools::tolerance(routes));
        BOOST_TEST(trace.block_output_error(l, rtn.layers[std::size_t(l)], 200) == sq200 / 200.0, boost::test_tools::tolerance(routes));
        BOOST_TEST(trace.block_output_error(l, w.layers[std::size_t(l)]) == 0.0);  // the reference's own block
    }
    BOOST_CHECK_THROW(trace.kl_with_block(5, w.layers[0]), InvalidArgument);
}

// A trace keeping the KL on the first positions runs the model over the sequences holding them
// only; the other sequences' hidden states are filled a block at a time when read, or by
// block_stats' pass in block order. Either way every state equals an eager trace's, bit for bit.
BOOST_AUTO_TEST_CASE(lazily_filled_states_equal_the_eager_trace, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    const auto tokens = tokens_of(w, 300, 5);  // sequences of 128, 128 and a tail of 44
    const llama::ReferenceTrace eager(w, tokens, calibration(128));
    const llama::ReferenceTrace by_stats(w, tokens, calibration(128), 100), by_reads(w, tokens, calibration(128), 100);
    const auto same = [](MatrixView<const float> a, MatrixView<const float> b) {
        return a.rows == b.rows && a.cols == b.cols && std::equal(a.data, a.data + a.rows * a.cols, b.data);
    };
    const int L = w.config.n_layers;
    for (int l = 0; l < L; ++l) {
        // in block order, as measure_sensitivity reads it: the statistics' pass fills block l + 1's inputs
        const auto s = by_stats.block_stats(l), e = eager.block_stats(l);
        for (const auto site : {llama::Site::attention_input, llama::Site::attention_output, llama::Site::mlp_input, llama::Site::mlp_hidden})
            BOOST_TEST((s.at(site).hessian() == e.at(site).hessian()), "block " << l << " site " << int(site));
        BOOST_TEST(same(by_stats.block_output(l), eager.block_output(l)), "block " << l << " (filled by block_stats)");
    }
    // read last block first: every block before it is run on the later sequences
    BOOST_TEST(same(by_reads.block_output(L - 1), eager.block_output(L - 1)));
    for (int l = 0; l < L; ++l) BOOST_TEST(same(by_reads.hidden(l), eager.hidden(l)), "block " << l << " (filled when read)");
    // the prefix's losses are the eager trace's; over every position, the states read are filled first
    const auto rtn = llama::map_block_linears(w, [](const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme("rtn:w2g32a")); });
    const llama::ReferenceTrace fresh(w, tokens, calibration(128), 100);
    BOOST_TEST(fresh.block_output_error(2, rtn.layers[2], 100) == eager.block_output_error(2, rtn.layers[2], 100));
    BOOST_TEST(fresh.block_output_error(2, rtn.layers[2]) == eager.block_output_error(2, rtn.layers[2]));
    if (routes_round_apart("a prefix of 100 rows and the whole's first 100")) {
        BOOST_TEST(fresh.kl_with_block(2, rtn.layers[2]) == eager.kl_with_block(2, rtn.layers[2], 100), boost::test_tools::tolerance(1e-7));
    } else {
        BOOST_TEST(fresh.kl_with_block(2, rtn.layers[2]) == eager.kl_with_block(2, rtn.layers[2], 100));
    }
}

// The candidates of a block are quantized side by side, each on one thread, the slowest (PQ)
// handed out first: the table is the same bits on 1 and 2 threads. Layers of 256 and 384 columns: OpenBLAS factorises matrices that
// size on its threads when asked to, with other roundings than on one (what the candidates ran
// on before, and what this checks against).
BOOST_AUTO_TEST_CASE(the_table_is_the_same_on_one_and_two_threads) {
    auto c = qtest::tiny_config(2);
    c.dim = 256, c.hidden_dim = 384, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 64, c.seq_len = 64;
    const auto w = qtest::random_llama(c, 7);
    const auto tokens = qtest::random_tokens(192, c.vocab_size, 3);
    const std::vector<RuntimeScheme> candidates{parse_scheme("gptq:w3g64a"), parse_scheme("gptq:w4g64a"), parse_scheme("gptq:w4g64a,act"),
                                                parse_scheme("rtn:w4g64a"), parse_scheme("gptq:pq2n16g64"), parse_scheme("awq:w3g64a")};
    std::vector<llama::SensitivityTable> tables;
    for (const int threads : {1, 2}) {
        llama::CalibrationOptions co;
        co.sequence_length = 64;
        co.backend = Backend::cpu(best_isa(), threads);
        const llama::ReferenceTrace trace(w, tokens, co);
        llama::SensitivityOptions so;
        so.settings.backend = co.backend;
        so.anchor = 0;
        tables.push_back(llama::measure_sensitivity(trace, candidates, so));
    }
    const auto bits = [](double v) { return std::bit_cast<std::uint64_t>(v); };  // NaN equal to itself
    const auto same = [&](const llama::UnitLoss& a, const llama::UnitLoss& b) {
        return bits(a.kl) == bits(b.kl) && bits(a.weight) == bits(b.weight) && bits(a.hessian_diag) == bits(b.hessian_diag) &&
               bits(a.output) == bits(b.output) && bits(a.block_output) == bits(b.block_output) && bits(a.anchored) == bits(b.anchored) &&
               a.bytes == b.bytes && a.params == b.params;
    };
    for (std::size_t k = 0; k < candidates.size(); ++k)
        for (int l = 0; l < c.n_layers; ++l) {
            BOOST_TEST(same(tables[0].block[k][std::size_t(l)], tables[1].block[k][std::size_t(l)]), to_string(candidates[k]) << " block " << l);
            for (std::size_t i = 0; i < 7; ++i)
                BOOST_TEST(same(tables[0].linear[k][std::size_t(l)][i], tables[1].linear[k][std::size_t(l)][i]),
                           to_string(candidates[k]) << " block " << l << " linear " << i);
        }
    BOOST_TEST(tables[0].block[0][0].kl > 0.0);
}

// AWQ advances through the FP32 block (AutoAWQ's convention), so every block of the pipeline sees
// the reference's inputs: each block quantized alone on the trace's statistics is the pipeline's
// block, bit for bit. AWQ's proxies are not defined (the stored weights are scaled) and a linear
// alone is refused.
BOOST_AUTO_TEST_CASE(awq_blocks_alone_are_the_pipelines_blocks, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    const auto tokens = tokens_of(w, 512, 3);
    const llama::ReferenceTrace trace(w, tokens, calibration(256));
    const auto scheme = parse_scheme("awq:w3g32a");
    llama::ModelQuantizeOptions mo;
    mo.calibration = calibration(256);
    const auto model = llama::awq_quantize_model(w, tokens, scheme, mo);
    const QuantizeSettings qs = mo.run_settings();
    for (int l = 0; l < w.config.n_layers; ++l) {
        const auto stats = trace.block_stats(l);
        const auto alone = llama::quantize_block_alone(w.layers[std::size_t(l)], l, w.config, stats, llama::block_hessians(stats), scheme, qs);
        const auto& piped = model.layers[std::size_t(l)];
        BOOST_TEST(alone.attention_norm == piped.attention_norm);
        BOOST_TEST(alone.ffn_norm == piped.ffn_norm);
        for (const auto& b : llama::block_linears) {
            const auto x = llama::dequantized_linear(alone.*b.member), y = llama::dequantized_linear(piped.*b.member);
            BOOST_TEST((std::get<Fp32Matrix>(x.weights()).data == std::get<Fp32Matrix>(y.weights()).data), "block " << l << " " << b.gguf);
        }
    }
    llama::SensitivityOptions so;
    so.settings = qs;
    const std::vector<RuntimeScheme> candidates{scheme, parse_scheme("awq:w4g32a")};
    const auto table = llama::measure_sensitivity(trace, candidates, so);
    for (int l = 0; l < w.config.n_layers; ++l) {
        BOOST_TEST(table.block[1][std::size_t(l)].kl < table.block[0][std::size_t(l)].kl);
        BOOST_TEST(std::isnan(table.block[0][std::size_t(l)].output));
        // the block output error is defined for AWQ's blocks: they map the same inputs to outputs
        BOOST_TEST(table.block[1][std::size_t(l)].block_output < table.block[0][std::size_t(l)].block_output);
        std::uint64_t bytes = 0;
        for (const auto& b : llama::block_linears) bytes += (model.layers[std::size_t(l)].*b.member).bytes();
        BOOST_TEST(table.block[0][std::size_t(l)].bytes == bytes);
    }
    so.measure_linears = true;
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { llama::measure_sensitivity(trace, candidates, so); }), {"awq:w3g32a", "measure blocks"}));
}

BOOST_AUTO_TEST_CASE(proxies_and_allocation, *boost::unit_test::precondition(qtest::needs_data{model_file})) {
    const auto w = llama::from_llama2c(io::Llama2cCheckpoint::load(qtest::data_path(model_file)));
    const auto tokens = tokens_of(w, 512, 2);
    const llama::ReferenceTrace trace(w, tokens, calibration(256));
    const std::vector<RuntimeScheme> candidates{parse_scheme("rtn:w2g32a"), parse_scheme("rtn:w3g32a"), parse_scheme("rtn:w4g32a"), parse_scheme("rtn:w8g32s")};
    llama::SensitivityOptions so;
    so.settings.backend = Backend::cpu(best_isa(), 2);
    so.measure_linears = true;
    const auto table = llama::measure_sensitivity(trace, candidates, so);

    // the proxies by their definitions, on block 1's MLP-down inputs captured by a Session
    const int layer = 1;
    std::vector<float> hidden;  // tokens x hidden_dim at mlp_hidden of block 1
    for (const auto seq : llama::calibration_sequences(tokens, 256)) {
        llama::Session s(w, Backend::cpu(best_isa(), 2), 256);
        s.observe([&](int l, llama::Site site, MatrixView<const float> x) {
            if (l == layer && site == llama::Site::mlp_hidden) hidden.insert(hidden.end(), x.data, x.data + x.rows * x.cols);
        });
        s.forward_batch(seq, 0, false);
    }
    const std::size_t H = std::size_t(w.config.hidden_dim), D = std::size_t(w.config.dim), T = hidden.size() / H;
    BOOST_TEST(T == 512u);
    const auto& fp = std::get<Fp32Matrix>(w.layers[layer].w2.weights()).data;
    for (std::size_t k = 0; k < candidates.size(); ++k) {
        const auto q = llama::quantize_linear(w.layers[layer].w2, candidates[k]);
        const auto deq = std::get<Fp32Matrix>(llama::dequantized_linear(q).weights()).data;
        double weight = 0, diag = 0, out = 0;
        std::vector<double> h_jj(H, 0.0);
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t j = 0; j < H; ++j) h_jj[j] += 2.0 / double(T) * double(hidden[t * H + j]) * double(hidden[t * H + j]);
        for (std::size_t r = 0; r < D; ++r)
            for (std::size_t j = 0; j < H; ++j) {
                const double d = double(fp[r * H + j]) - double(deq[r * H + j]);
                weight += d * d, diag += h_jj[j] * d * d;
            }
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t r = 0; r < D; ++r) {
                double e = 0;
                for (std::size_t j = 0; j < H; ++j) e += (double(fp[r * H + j]) - double(deq[r * H + j])) * double(hidden[t * H + j]);
                out += 2.0 / double(T) * e * e;
            }
        const auto& u = table.linear[k][layer][5];  // ffn_down
        BOOST_TEST(u.weight == weight, boost::test_tools::tolerance(1e-9));
        BOOST_TEST(u.hessian_diag == diag, boost::test_tools::tolerance(1e-4));
        BOOST_TEST(u.output == out, boost::test_tools::tolerance(1e-4));
        BOOST_TEST(u.bytes == q.bytes());
    }
    // more bits, less loss: every block, every measure (the grids nest in their resolution)
    for (int l = 0; l < w.config.n_layers; ++l)
        for (std::size_t k = 1; k < candidates.size(); ++k) {
            BOOST_TEST(table.block[k][std::size_t(l)].kl < table.block[k - 1][std::size_t(l)].kl);
            BOOST_TEST(table.block[k][std::size_t(l)].output < table.block[k - 1][std::size_t(l)].output);
            BOOST_TEST(table.block[k][std::size_t(l)].bytes > table.block[k - 1][std::size_t(l)].bytes);
        }

    // allocations at several budgets, by block and by linear: the model quantized from the map
    // holds exactly the predicted bytes, within the budget and within one unit of it
    for (const auto unit : {llama::AllocationUnitKind::block, llama::AllocationUnitKind::linear})
        for (const double bpw : {2.8, 3.6, 4.5, 6.0}) {
            llama::AllocationRequest r;
            r.target_bpw = bpw;
            r.unit = unit;
            const auto a = llama::allocate_bits(table, r);
            std::uint64_t widest = 0;
            for (const auto& u : a.units)
                for (const auto& c1 : u.candidates)
                    for (const auto& c2 : u.candidates) widest = std::max(widest, c1.bytes > c2.bytes ? c1.bytes - c2.bytes : 0);
            BOOST_TEST(a.allocation.bytes <= a.budget_bytes);
            BOOST_TEST(a.allocation.bytes + widest >= a.budget_bytes);
            const std::string path = (std::filesystem::temp_directory_path() / "qforge_test_allocation.json").string();
            io::write_scheme_map(path, a.map);
            const auto back = io::read_scheme_map(path);
            std::filesystem::remove(path);
            llama::ModelQuantizeOptions mo, mo_back;
            mo.tensor_schemes = a.map.tensors;
            mo_back.tensor_schemes = back.tensors;
            const auto m1 = llama::quantize_model(w, {}, a.map.scheme, mo), m2 = llama::quantize_model(w, {}, back.scheme, mo_back);
            BOOST_TEST(llama::block_bytes(m1) == a.allocation.bytes);
            for (int l = 0; l < w.config.n_layers; ++l)
                for (const auto& b : llama::block_linears) {
                    const auto x = llama::dequantized_linear(m1.layers[std::size_t(l)].*b.member), y = llama::dequantized_linear(m2.layers[std::size_t(l)].*b.member);
                    BOOST_TEST((std::get<Fp32Matrix>(x.weights()).data == std::get<Fp32Matrix>(y.weights()).data));
                }
            // the measured loss of the allocated model next to the predicted sum
            const double measured = trace.kl_of(m1);
            BOOST_TEST_MESSAGE("bpw " << bpw << (unit == llama::AllocationUnitKind::block ? " blocks" : " linears") << ": " << a.bpw()
                                      << " bpw, predicted KL " << a.allocation.loss << ", measured " << measured);
            BOOST_TEST(measured > 0.0);
        }
    // kl_split: a block's measured KL shared among its linears, summing back to it per candidate
    {
        llama::AllocationRequest r;
        r.unit = llama::AllocationUnitKind::linear;
        r.loss = "kl_split";
        r.target_bpw = 3.6;
        const auto a = llama::allocate_bits(table, r);
        BOOST_TEST(a.allocation.bytes <= a.budget_bytes);
        r.target_bpw = 100;  // every unit at its least loss: the widest candidate, whose shares sum to each block's KL
        const auto all = llama::allocate_bits(table, r);
        double sum = 0, blocks = 0;
        for (const auto& u : all.units) sum += u.candidates.back().loss;
        for (int l = 0; l < w.config.n_layers; ++l) blocks += table.block.back()[std::size_t(l)].kl;
        BOOST_TEST(sum == blocks, boost::test_tools::tolerance(1e-12));
        r.unit = llama::AllocationUnitKind::block;
        BOOST_CHECK_THROW(llama::allocate_bits(table, r), InvalidArgument);
    }
    // kl per linear without measure_linears is refused, by name
    so.measure_linears = false;
    const auto blocks_only = llama::measure_sensitivity(trace, candidates, so);
    llama::AllocationRequest r;
    r.unit = llama::AllocationUnitKind::linear;
    BOOST_CHECK_THROW(llama::allocate_bits(blocks_only, r), InvalidArgument);
    r.loss = "output";
    BOOST_CHECK_NO_THROW(llama::allocate_bits(blocks_only, r));
    r.loss = "nonsense";
    BOOST_CHECK_THROW(llama::allocate_bits(blocks_only, r), InvalidArgument);
    // the anchored estimate: the anchor's measured KL scaled by the block output errors, by its
    // definition; without measure_blocks only the anchor's KL is measured, the same values
    so.anchor = 1;
    const auto anchored_all = llama::measure_sensitivity(trace, candidates, so);
    so.measure_blocks = false;
    const auto anchored = llama::measure_sensitivity(trace, candidates, so);
    for (int l = 0; l < w.config.n_layers; ++l) {
        const auto& a = anchored.block[1][std::size_t(l)];
        BOOST_TEST(a.kl == blocks_only.block[1][std::size_t(l)].kl);
        BOOST_TEST(a.block_output > 0.0);
        for (std::size_t k = 0; k < candidates.size(); ++k) {
            const auto& u = anchored.block[k][std::size_t(l)];
            BOOST_TEST(u.block_output == blocks_only.block[k][std::size_t(l)].block_output);
            BOOST_TEST(u.anchored == a.kl * u.block_output / a.block_output, boost::test_tools::tolerance(1e-12));
            BOOST_TEST(u.anchored == anchored_all.block[k][std::size_t(l)].anchored);
            BOOST_TEST(std::isnan(u.kl) == (k != 1));
            if (k > 0) BOOST_TEST(u.block_output < anchored.block[k - 1][std::size_t(l)].block_output);
        }
    }
    // without the per-linear proxies (what the anchored loss skips): the same estimates, NaN proxies
    so.proxies = false;
    const auto lean = llama::measure_sensitivity(trace, candidates, so);
    so.proxies = true;
    for (int l = 0; l < w.config.n_layers; ++l)
        for (std::size_t k = 0; k < candidates.size(); ++k) {
            BOOST_TEST(lean.block[k][std::size_t(l)].anchored == anchored.block[k][std::size_t(l)].anchored);
            BOOST_TEST(lean.block[k][std::size_t(l)].bytes == anchored.block[k][std::size_t(l)].bytes);
            BOOST_TEST(std::isnan(lean.block[k][std::size_t(l)].output));
            BOOST_TEST(std::isnan(lean.linear[k][std::size_t(l)][0].weight));
        }
    // a trace keeping fewer distributions than the options ask: both measures on its positions
    {
        const llama::ReferenceTrace short_trace(w, tokens, calibration(256), 300);
        llama::SensitivityOptions all = so;
        all.kl_tokens = 0;
        const auto t300 = llama::measure_sensitivity(short_trace, candidates, all);
        for (int l = 0; l < w.config.n_layers; ++l) {
            const auto q = llama::quantize_block_alone(w.layers[std::size_t(l)], l, w.config, trace.block_stats(l), {}, candidates[0], so.settings);
            BOOST_TEST(t300.block[0][std::size_t(l)].block_output == trace.block_output_error(l, q, 300));
        }
    }
    r = llama::AllocationRequest{};
    r.loss = "anchored";
    r.target_bpw = 3.6;
    BOOST_TEST(llama::allocate_bits(anchored, r).allocation.bytes <= llama::allocate_bits(anchored, r).budget_bytes);
    r.loss = "kl";
    BOOST_CHECK_THROW(llama::allocate_bits(anchored, r), InvalidArgument);  // the others' KL was not measured
    so.anchor = 4;
    BOOST_CHECK_THROW(llama::measure_sensitivity(trace, candidates, so), InvalidArgument);
    so.anchor = -1;
    so.measure_blocks = true;
    const auto t2 = llama::measure_sensitivity(trace, std::vector<RuntimeScheme>{parse_scheme("gptq:w3g32a")}, so);
    BOOST_TEST(t2.block[0][0].kl > 0.0);
    BOOST_CHECK_THROW(llama::measure_sensitivity(trace, std::vector<RuntimeScheme>{parse_scheme("twq:w3g32a")}, so), InvalidArgument);
    llama::SensitivityTable bad = table;
    bad.candidates[1] = parse_scheme("gptq:w3g32a");
    BOOST_CHECK_THROW(llama::allocate_bits(bad, llama::AllocationRequest{}), InvalidArgument);
}

// A table written by --save-table reads back to the same doubles (NaN where nothing was
// measured), so an allocation from the file equals the one from the table, map and all; each
// kind of bad file is refused naming the key.
BOOST_AUTO_TEST_CASE(a_saved_table_reads_back_bit_for_bit) {
    std::mt19937 rng(5);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    llama::SensitivityFile f;
    f.table.candidates = {parse_scheme("gptq:w2g64a"), parse_scheme("gptq:w3g128a,had"), parse_scheme("gptq:pq2n16g64")};
    const std::size_t K = 3, L = 6;
    const auto unit = [&](bool block, std::uint64_t params) {
        llama::UnitLoss x;
        x.kl = u(rng) < 0.3 ? std::numeric_limits<double>::quiet_NaN() : u(rng) * 1e-3 / 3.0;  // not representable in few digits
        x.output = std::exp(40.0 * (u(rng) - 0.5)), x.hessian_diag = u(rng), x.weight = u(rng) / 7.0;
        x.block_output = block ? u(rng) : std::numeric_limits<double>::quiet_NaN();
        x.anchored = block ? u(rng) : std::numeric_limits<double>::quiet_NaN();
        x.bytes = 1000 + rng() % 100000, x.params = params;
        return x;
    };
    f.table.block.assign(K, std::vector<llama::UnitLoss>(L));
    f.table.linear.assign(K, std::vector<std::array<llama::UnitLoss, 7>>(L));
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t k = 0; k < K; ++k) {
            f.table.block[k][l] = unit(true, 70000 + l);
            for (auto& x : f.table.linear[k][l]) x = unit(false, 10000);
        }
    f.model = "m.gguf", f.calibration_tokens = 2048, f.kl_tokens = 256, f.anchor = 1;
    const std::vector<int> tokens{1, 2, 3, 70000, -1};
    f.calibration_hash = llama::token_hash(tokens);
    const auto text = llama::sensitivity_file_json(f);
    const auto g = llama::parse_sensitivity_file(text, "t.json");
    BOOST_TEST(g.model == f.model);
    BOOST_TEST(g.calibration_tokens == 2048);
    BOOST_TEST(g.kl_tokens == 256);
    BOOST_TEST(g.anchor == 1);
    BOOST_TEST(g.calibration_hash == f.calibration_hash);
    BOOST_TEST((g.table.candidates == f.table.candidates));
    const auto same = [](const llama::UnitLoss& a, const llama::UnitLoss& b) {
        const auto eq = [](double x, double y) { return std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y) || (std::isnan(x) && std::isnan(y)); };
        return eq(a.kl, b.kl) && eq(a.output, b.output) && eq(a.hessian_diag, b.hessian_diag) && eq(a.weight, b.weight) && eq(a.block_output, b.block_output) &&
               eq(a.anchored, b.anchored) && a.bytes == b.bytes && a.params == b.params;
    };
    for (std::size_t k = 0; k < K; ++k)
        for (std::size_t l = 0; l < L; ++l) {
            BOOST_TEST(same(g.table.block[k][l], f.table.block[k][l]), "block " << l << " candidate " << k);
            for (std::size_t i = 0; i < 7; ++i) BOOST_TEST(same(g.table.linear[k][l][i], f.table.linear[k][l][i]));
        }
    for (const char* loss : {"anchored", "output", "weight"}) {
        llama::AllocationRequest r;
        r.loss = loss;
        r.target_bpw = 8.0 * double(f.table.block[1][0].bytes + f.table.block[2][0].bytes) / 2.0 / 70000.0;
        const auto a = llama::allocate_bits(f.table, r), b = llama::allocate_bits(g.table, r);
        BOOST_TEST(a.allocation.choice == b.allocation.choice, loss);
        BOOST_TEST(std::bit_cast<std::uint64_t>(a.allocation.loss) == std::bit_cast<std::uint64_t>(b.allocation.loss));
        BOOST_TEST(io::scheme_map_json(a.map) == io::scheme_map_json(b.map));
    }
    // the hash is of the ids in order: a change, or a swap, is another hash
    BOOST_TEST(llama::token_hash(std::vector<int>{1, 2, 3, 70000, -2}) != f.calibration_hash);
    BOOST_TEST(llama::token_hash(std::vector<int>{2, 1, 3, 70000, -1}) != f.calibration_hash);
    BOOST_TEST(llama::token_hash(std::vector<int>{}) == 0xcbf29ce484222325ull);  // FNV-1a's offset basis

    const auto refused = [&](const std::string& from, const std::string& to, const std::string& says) {
        std::string bad = text;
        const auto at = bad.find(from);
        BOOST_REQUIRE_MESSAGE(at != std::string::npos, from);
        bad.replace(at, from.size(), to);
        try {
            llama::parse_sensitivity_file(bad, "t.json");
            BOOST_ERROR("accepted: " << to);
        } catch (const FileError& e) {
            BOOST_TEST(std::string(e.what()).find("t.json") != std::string::npos);
            BOOST_TEST(std::string(e.what()).find(says) != std::string::npos, e.what() << " (expected '" << says << "')");
        }
    };
    refused("qforge.sensitivity_table", "qforge.scheme_map", "not a sensitivity table");
    refused("\"version\":1", "\"version\":2", "\"version\" must be 1");
    refused("\"gptq:w2g64a\"", "\"rtn:w2g64a\"", "candidates[1]: gptq:w3g128a,had has another method than rtn:w2g64a");
    refused("\"gptq:pq2n16g64\"", "\"gptq:w2g64a\"", "listed twice");
    refused("\"gptq:w2g64a\"", "\"gptq:w2g64q\"", "candidates[0]");        // the grammar refuses it
    refused("\"anchor\":1", "\"anchor\":3", "anchor: candidate 3 of 3");
    refused("\"kl_tokens\":256", "\"kl_tokens\":4096", "more than calibration.tokens");
    refused("\"fnv1a64\":\"", "\"fnv1a64\":\"x", "16 lowercase hex digits");
    refused("\"params\":70000}", "\"params\":70001}", "blocks[0][1].params");  // another candidate of block 0 counts other weights
    refused("\"bytes\":", "\"bytes\":-", ".bytes: expected a whole number >= 1");
    refused("\"output\":", "\"output\":\"x\",\"o\":", ".output: expected a number or null");
    refused("]],\"linears\":[[[", "],[]],\"linears\":[[[", "linears: 6 entries, 7 expected");  // a seventh block
    refused("\"blocks\":[[{", "\"blocks\":[[{\"kl\":1},{", "blocks[0]: 4 entries, 3 expected");
    refused("\"linears\":[[[", "\"linears\":[[[],[", "linears[0]: 4 entries, 3 expected");
    refused("\"linears\":[[[{", "\"linears\":[[[{},{", "linears[0][0]: 8 entries, 7 expected");
    refused("{\"format\"", "[{\"format\"", "not a sensitivity table");

    // a table fits a model of as many blocks with the same weights each, and no other
    const auto w = qtest::random_llama(qtest::tiny_config(2), 3);
    std::uint64_t params = 0;  // counted here, not by size.hpp's layer_params that check_table_fits calls
    for (const auto& b : llama::block_linears) params += std::uint64_t((w.layers[0].*b.member).rows()) * std::uint64_t((w.layers[0].*b.member).cols());
    llama::SensitivityFile fit;
    fit.table.block.assign(2, std::vector<llama::UnitLoss>(2));
    for (auto& per : fit.table.block)
        for (auto& x : per) x.params = params;
    BOOST_CHECK_NO_THROW(llama::check_table_fits(fit, w, "t.json", "tiny"));
    fit.table.block[0][1].params = params + 1;
    BOOST_CHECK_EXCEPTION(llama::check_table_fits(fit, w, "t.json", "tiny"), FileError,
                          [](const FileError& e) { return std::string(e.what()).find("block 1 has") != std::string::npos; });
    for (auto& per : fit.table.block) per.resize(3, per.front());
    BOOST_CHECK_EXCEPTION(llama::check_table_fits(fit, w, "t.json", "tiny"), FileError,
                          [](const FileError& e) { return std::string(e.what()).find("a table of 3 blocks; the model tiny has 2") != std::string::npos; });
}

BOOST_AUTO_TEST_SUITE_END()
