// Hugging Face checkpoints: a tiny sharded checkpoint this test writes (config.json, two
// safetensors shards, an index; F16/BF16/F32 tensors; q/k in Hugging Face's rotate-half order)
// loads into a model whose logits equal a straightforward double-precision forward that applies
// rotate-half RoPE to the weights as stored; bad files give errors naming the file.
// GPTQ and AWQ checkpoints: words pinned by hand and against AutoGPTQ's pack loop, round trips,
// and exported checkpoints decoded the way the reference kernels read them and run by that
// reference forward.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>

#include "common.hpp"
#include "qforge/container/llama/hf_export.hpp"
#include "qforge/sources/llama/hf_source.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
namespace fs = std::filesystem;
BOOST_AUTO_TEST_SUITE(test_hf)

namespace {

const std::vector<float>& data(const llama::Linear& l) { return std::get<llama::Fp32Matrix>(l.weights()).data; }

float to_bf16(float v) {
    std::uint32_t b;
    std::memcpy(&b, &v, 4);
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000u;
    std::memcpy(&v, &b, 4);
    return v;
}

/// Logits at every position, in double, Hugging Face style: weights as stored (q/k rows in
/// rotate-half order), RoPE rotating (j, j + hs/2).
std::vector<std::vector<double>> hf_reference(const llama::Weights& w, const std::vector<int>& tokens) {
    const auto& c = w.config;
    const int D = c.dim, H = c.hidden_dim, S = c.head_size(), half = S / 2;
    const auto mv = [](const llama::Linear& l, const std::vector<double>& x) {
        const auto& m = data(l);
        std::vector<double> y(std::size_t(l.rows()), 0.0);
        for (int r = 0; r < l.rows(); ++r)
            for (int k = 0; k < l.cols(); ++k) y[std::size_t(r)] += double(m[std::size_t(r) * std::size_t(l.cols()) + std::size_t(k)]) * x[std::size_t(k)];
        return y;
    };
    const auto rms = [&](const std::vector<double>& x, const std::vector<float>& g) {
        double ss = 0;
        for (double v : x) ss += v * v;
        const double inv = 1.0 / std::sqrt(ss / double(x.size()) + double(c.norm_eps));
        std::vector<double> y(x.size());
        for (std::size_t i = 0; i < x.size(); ++i) y[i] = double(g[i]) * x[i] * inv;
        return y;
    };
    const auto rope = [&](std::vector<double>& v, int pos) {
        for (std::size_t h = 0; h < v.size() / std::size_t(S); ++h)
            for (int j = 0; j < half; ++j) {
                const double th = double(pos) * std::pow(double(c.rope_theta), -2.0 * j / S);
                double& a = v[h * std::size_t(S) + std::size_t(j)];
                double& b = v[h * std::size_t(S) + std::size_t(j + half)];
                const double a0 = a, b0 = b;
                a = a0 * std::cos(th) - b0 * std::sin(th);
                b = b0 * std::cos(th) + a0 * std::sin(th);
            }
    };
    std::vector<std::vector<std::vector<double>>> K(std::size_t(c.n_layers)), V(std::size_t(c.n_layers));
    std::vector<std::vector<double>> out;
    for (std::size_t p = 0; p < tokens.size(); ++p) {
        std::vector<double> x(w.token_embedding.begin() + std::ptrdiff_t(std::size_t(tokens[p]) * std::size_t(D)),
                              w.token_embedding.begin() + std::ptrdiff_t(std::size_t(tokens[p] + 1) * std::size_t(D)));
        for (int l = 0; l < c.n_layers; ++l) {
            const auto& L = w.layers[std::size_t(l)];
            auto xb = rms(x, L.attention_norm);
            auto q = mv(L.wq, xb), k = mv(L.wk, xb), v = mv(L.wv, xb);
            rope(q, int(p));
            rope(k, int(p));
            K[std::size_t(l)].push_back(k);
            V[std::size_t(l)].push_back(v);
            std::vector<double> att(static_cast<std::size_t>(D), 0.0);
            for (int h = 0; h < c.n_heads; ++h) {
                const int kh = h / (c.n_heads / c.n_kv_heads);
                std::vector<double> s(p + 1, 0.0);
                double m = -1e300, z = 0;
                for (std::size_t t = 0; t <= p; ++t) {
                    for (int i = 0; i < S; ++i) s[t] += q[std::size_t(h * S + i)] * K[std::size_t(l)][t][std::size_t(kh * S + i)];
                    s[t] /= std::sqrt(double(S));
                    m = std::max(m, s[t]);
                }
                for (auto& e : s) z += (e = std::exp(e - m));
                for (std::size_t t = 0; t <= p; ++t)
                    for (int i = 0; i < S; ++i) att[std::size_t(h * S + i)] += s[t] / z * V[std::size_t(l)][t][std::size_t(kh * S + i)];
            }
            const auto o = mv(L.wo, att);
            for (int i = 0; i < D; ++i) x[std::size_t(i)] += o[std::size_t(i)];
            xb = rms(x, L.ffn_norm);
            auto g = mv(L.w1, xb);
            const auto u = mv(L.w3, xb);
            for (int i = 0; i < H; ++i) g[std::size_t(i)] = g[std::size_t(i)] / (1 + std::exp(-g[std::size_t(i)])) * u[std::size_t(i)];
            const auto d = mv(L.w2, g);
            for (int i = 0; i < D; ++i) x[std::size_t(i)] += d[std::size_t(i)];
        }
        out.push_back(mv(w.output, rms(x, w.norm)));
    }
    return out;
}

/// Rows of q/k in adjacent-pair order -> Hugging Face's rotate-half order (what HF stores).
llama::Linear to_hf_order(const llama::Linear& l, int heads, int hs) {
    const auto& m = data(l);
    std::vector<float> out(m.size());
    const std::size_t cols = std::size_t(l.cols());
    for (int h = 0; h < heads; ++h)
        for (int j = 0; j < hs / 2; ++j)
            for (int t = 0; t < 2; ++t)
                std::copy_n(m.begin() + std::ptrdiff_t(std::size_t(h * hs + 2 * j + t) * cols), cols,
                            out.begin() + std::ptrdiff_t(std::size_t(h * hs + t * hs / 2 + j) * cols));
    return llama::Linear(llama::Fp32Matrix{l.rows(), l.cols(), out});
}

struct Written {
    std::string dir;
    llama::Weights hf;  ///< the weights as stored (HF order, values rounded to their dtype)
};

/// A stored tensor of a checkpoint being written.
struct StoredTensor {
    std::string name, dtype;
    std::vector<std::uint64_t> shape;
    std::vector<float> values;
};

/// `edit`, when given, changes the tensors (names, dtypes, values) before they are written.
Written write_checkpoint(const std::string& name, bool tied,
                         const std::function<void(std::vector<StoredTensor>&)>& edit = {}) {
    auto c = qtest::tiny_config(2);
    c.rope_theta = 50000.0f;
    c.norm_eps = 1e-6f;
    auto w = qtest::random_llama(c, 41);
    for (auto& L : w.layers) {
        L.wq = to_hf_order(L.wq, c.n_heads, c.head_size());
        L.wk = to_hf_order(L.wk, c.n_kv_heads, c.head_size());
        for (const auto& b : llama::block_linears) {  // stored as F16
            auto& m = std::get<llama::Fp32Matrix>((L.*b.member).weights());
            auto copy = m.data;
            for (auto& v : copy) v = round_to_half(v);
            L.*b.member = llama::Linear(llama::Fp32Matrix{m.rows, m.cols, copy});
        }
    }
    for (auto& v : w.token_embedding) v = to_bf16(v);  // stored as BF16
    if (tied) w.output = llama::Linear(llama::Fp32Matrix{c.vocab_size, c.dim, w.token_embedding});

    const auto dir = (fs::temp_directory_path() / name).string();
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": )" << c.dim
                                        << R"(, "intermediate_size": )" << c.hidden_dim << R"(, "num_hidden_layers": )" << c.n_layers
                                        << R"(, "num_attention_heads": )" << c.n_heads << R"(, "num_key_value_heads": )" << c.n_kv_heads
                                        << R"(, "vocab_size": )" << c.vocab_size << R"(, "max_position_embeddings": )" << c.seq_len
                                        << R"(, "rope_theta": 50000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": )"
                                        << (tied ? "true" : "false") << R"(, "torch_dtype": "float16"})";
    // shard 1: embeddings and layer 0; shard 2: the rest
    using T = StoredTensor;
    std::vector<T> s1, s2;
    s1.push_back({"model.embed_tokens.weight", "BF16", {std::uint64_t(c.vocab_size), std::uint64_t(c.dim)}, w.token_embedding});
    for (int l = 0; l < c.n_layers; ++l) {
        auto& shard = l == 0 ? s1 : s2;
        const auto& L = w.layers[std::size_t(l)];
        const std::string p = "model.layers." + std::to_string(l) + ".";
        shard.push_back({p + "input_layernorm.weight", "F32", {std::uint64_t(c.dim)}, L.attention_norm});
        shard.push_back({p + "post_attention_layernorm.weight", "F32", {std::uint64_t(c.dim)}, L.ffn_norm});
        for (const auto& b : llama::block_linears) {
            const auto& m = L.*b.member;
            shard.push_back({p + llama::HfSource::hf_name(llama::block_tensor_name(l, b.gguf)).substr(p.size()), "F16",
                             {std::uint64_t(m.rows()), std::uint64_t(m.cols())}, data(m)});
        }
    }
    s2.push_back({"model.norm.weight", "F32", {std::uint64_t(c.dim)}, w.norm});
    if (!tied) s2.push_back({"lm_head.weight", "F32", {std::uint64_t(c.vocab_size), std::uint64_t(c.dim)}, data(w.output)});
    if (edit) {
        edit(s1);
        edit(s2);
    }
    std::string index = R"({"metadata": {}, "weight_map": {)";
    bool first = true;
    for (const auto& [shard, file] : {std::pair{&s1, "model-00001-of-00002.safetensors"}, std::pair{&s2, "model-00002-of-00002.safetensors"}}) {
        io::SafetensorsWriter writer;
        for (const auto& t : *shard) {
            writer.add(t.name, t.dtype, t.shape);
            index += std::string(first ? "" : ", ") + "\"" + t.name + "\": \"" + file + "\"";
            first = false;
        }
        writer.metadata("format", "pt");
        writer.write(dir + "/" + file, [&](std::size_t i, std::span<std::uint8_t> out) {
            const auto& t = (*shard)[i];
            for (std::size_t k = 0; k < t.values.size(); ++k) {
                if (t.dtype == "F32") std::memcpy(out.data() + 4 * k, &t.values[k], 4);
                else if (t.dtype == "F16") {
                    const std::uint16_t h = float_to_half(t.values[k]);
                    std::memcpy(out.data() + 2 * k, &h, 2);
                } else {
                    std::uint32_t bits;
                    std::memcpy(&bits, &t.values[k], 4);
                    const std::uint16_t h = std::uint16_t(bits >> 16);
                    std::memcpy(out.data() + 2 * k, &h, 2);
                }
            }
        });
    }
    std::ofstream(dir + "/model.safetensors.index.json") << index << "}}";
    return {dir, w};
}

}  // namespace

BOOST_AUTO_TEST_CASE(sharded_checkpoint_matches_a_rotate_half_reference) {
    for (const bool tied : {false, true}) {
        const auto ck = write_checkpoint(tied ? "qf_hf_tied" : "qf_hf", tied);
        const llama::HfSource src(ck.dir);
        BOOST_TEST(src.config().n_kv_heads == 2);
        BOOST_TEST(src.config().rope_theta == 50000.0f);
        BOOST_TEST(src.tied_output() == tied);
        const auto w = llama::load_weights(src);
        const std::vector<int> tokens = {1, 17, 4, 33, 8, 8, 49, 2, 20};
        const auto expected = hf_reference(ck.hf, tokens);
        llama::Session s(w, Backend::cpu(best_isa(), 2));
        const auto got = s.forward_batch(tokens, 0);
        for (std::size_t p = 0; p < tokens.size(); ++p) {
            double worst = 0;
            for (std::size_t i = 0; i < got.cols; ++i) worst = std::max(worst, std::fabs(double(got(p, i)) - expected[p][i]));
            BOOST_TEST(worst < 1e-4, "tied " << tied << " pos " << p << ": " << worst);
        }
    }
}

BOOST_AUTO_TEST_CASE(bad_checkpoints_name_the_file) {
    const auto ck = write_checkpoint("qf_hf_bad", false);
    const auto what = [](const std::string& dir) {
        try {
            llama::HfSource s(dir);
            (void)llama::load_weights(s);
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    // a shard cut short
    const auto shard = ck.dir + "/model-00002-of-00002.safetensors";
    fs::resize_file(shard, fs::file_size(shard) - 100);
    BOOST_TEST(what(ck.dir).find("truncated") != std::string::npos);
    BOOST_TEST(what(ck.dir).find("model-00002-of-00002.safetensors") != std::string::npos);
    // a config that contradicts the tensors
    const auto ck2 = write_checkpoint("qf_hf_bad2", false);
    std::ofstream(ck2.dir + "/config.json") << R"({"model_type": "llama", "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50, "max_position_embeddings": 16})";
    BOOST_TEST(what(ck2.dir).find("expected") != std::string::npos);
    std::ofstream(ck2.dir + "/config.json") << R"({"model_type": "mistral"})";
    BOOST_TEST(what(ck2.dir).find("config.json") != std::string::npos);
    BOOST_TEST(what((fs::temp_directory_path() / "qf_hf_missing" / "model.safetensors").string()).find("cannot open") != std::string::npos);
}

namespace {
std::string load_error(const std::string& dir) {
    try {
        const llama::HfSource s(dir);
        (void)llama::load_weights(s);
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

// A NaN or Inf in an F16, BF16 or F32 tensor is refused when the tensor is read, naming the
// shard, the tensor (both names) and where.
BOOST_AUTO_TEST_CASE(non_finite_values_are_refused_at_load) {
    struct Case {
        std::string hf, llama, dtype, shard;
        std::size_t at;
        float value;
        std::string where;
    };
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    const std::vector<Case> cases = {
        {"model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight", "F16", "model-00001-of-00002.safetensors", 2 * 32 + 5, nan,
         "row 2, column 5 has a non-finite value (nan)"},
        {"model.embed_tokens.weight", "token_embd.weight", "BF16", "model-00001-of-00002.safetensors", 7, inf,
         "row 0, column 7 has a non-finite value (inf)"},
        {"model.layers.1.input_layernorm.weight", "blk.1.attn_norm.weight", "F32", "model-00002-of-00002.safetensors", 3, -inf,
         "element 3 has a non-finite value (-inf)"},
        {"lm_head.weight", "output.weight", "F32", "model-00002-of-00002.safetensors", 32 * 4 + 1, nan,
         "row 4, column 1 has a non-finite value (nan)"},
    };
    for (const auto& c : cases) {
        const auto ck = write_checkpoint("qf_hf_nonfinite", false, [&](std::vector<StoredTensor>& ts) {
            for (auto& t : ts)
                if (t.name == c.hf) {
                    BOOST_TEST_REQUIRE(t.dtype == c.dtype);
                    t.values[c.at] = c.value;
                }
        });
        const auto m = load_error(ck.dir);
        BOOST_TEST(qtest::has_all(m, {ck.dir + "/" + c.shard, "tensor " + c.hf + " (" + c.llama + ", " + c.dtype + ")", c.where}), m);
    }
}

// Bug report row 8: a weight row of 1e30 is a valid checkpoint, but no fp16 scale can hold its
// groups. Quantizing through the model-level path names the model, the tensor, the row and the
// group.
BOOST_AUTO_TEST_CASE(quantization_errors_name_model_tensor_row_and_group) {
    const auto ck = write_checkpoint("qf_hf_huge", false, [](std::vector<StoredTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "model.layers.0.mlp.up_proj.weight") {
                t.dtype = "F32";  // 1e30 does not fit F16
                for (std::size_t c = 16; c < 24; ++c) t.values[5 * 32 + c] = 1e30f;
            }
    });
    const llama::HfSource src(ck.dir);
    const auto w = llama::load_weights(src);  // loads: the values are finite
    std::string m;
    try {
        (void)llama::quantize_block_linears(w, parse_scheme("rtn:w4g8a"), Backend{}, src.label());
    } catch (const InvalidData& e) {  // the type survives the added context
        m = e.what();
    }
    BOOST_TEST_MESSAGE(m);
    BOOST_TEST(qtest::has_all(m, {ck.dir + ": tensor blk.0.ffn_up.weight: row 5, group 2 (columns 16-23): the group's scale 6.67e+28 does not fit fp16"}), m);
    // the other helpers name the tensor the same way
    try {
        (void)llama::map_named_block_linears(
            w, [](const std::string&, const llama::Linear& l) { return llama::quantize_linear(l, parse_scheme("rtn:w8g8s")); }, src.label());
        m = "(no error)";
    } catch (const InvalidData& e) {
        m = e.what();
    }
    BOOST_TEST(qtest::has_all(m, {ck.dir, "tensor blk.0.ffn_up.weight", "row 5, group 2 (columns 16-23)", "does not fit fp16"}), m);
    try {
        (void)llama::quantize_named_linear(src.label(), "blk.0.ffn_up.weight", w.layers[0].w3, parse_scheme("rtn:w4a"));
        m = "(no error)";
    } catch (const InvalidData& e) {
        m = e.what();
    }
    BOOST_TEST(qtest::has_all(m, {ck.dir, "tensor blk.0.ffn_up.weight", "row 5, group 0 (columns 0-31)", "does not fit fp16"}), m);
}

// The bug report's own input: hf_huge/, where one row of blk.0.ffn_up is 1e30.
BOOST_AUTO_TEST_CASE(case_hf_huge_names_tensor_row_and_group) {
    const auto dir = qtest::case_path("hf_huge");
    if (!fs::exists(dir)) {
        if (qtest::data_required()) BOOST_ERROR("case directory missing: " << dir << " (QFORGE_REQUIRE_DATA=1)");
        else BOOST_TEST_MESSAGE("skipped: case directory missing: " << dir << " (set QFORGE_CASES or QFORGE_DATA)");
        return;
    }
    const llama::HfSource src(dir);
    const auto w = llama::load_weights(src);
    std::string m = "(no error)";
    try {
        (void)llama::quantize_block_linears(llama::dequantized_weights(w), parse_scheme("rtn:w4g32a"), Backend{}, src.label());
    } catch (const InvalidData& e) {
        m = e.what();
    }
    BOOST_TEST_MESSAGE(m);
    BOOST_TEST(qtest::has_all(m, {dir, "tensor blk.0.ffn_up.weight", "row ", ", group ", "(columns ", "does not fit fp16"}), m);
}

// ---------------------------------------------------------------------------------------------
// GPTQ and AWQ checkpoint layouts (formats/gptq_awq.hpp, container/llama/hf_export.hpp, the
// quantized part of HfSource).

namespace {

/// AutoGPTQ's QuantLinear.pack loop over one output column, transcribed (qweight rows, int32
/// words as uint32): the independent statement of the 2/3/4/8-bit layout, 3-bit's straddling
/// words written out as AutoGPTQ does.
std::vector<std::uint32_t> autogptq_pack_column(const std::vector<std::uint32_t>& w, int bits) {
    std::vector<std::uint32_t> q(w.size() * std::size_t(bits) / 32, 0);
    std::size_t i = 0, row = 0;
    while (row < q.size()) {
        if (bits != 3) {
            for (std::size_t j = i; j < i + std::size_t(32 / bits); ++j) q[row] |= w[j] << (std::size_t(bits) * (j - i));
            i += std::size_t(32 / bits);
            row += 1;
        } else {
            for (std::size_t j = i; j < i + 10; ++j) q[row] |= w[j] << (3 * (j - i));
            i += 10;
            q[row] |= w[i] << 30;
            row += 1;
            q[row] |= (w[i] >> 2) & 1;
            i += 1;
            for (std::size_t j = i; j < i + 10; ++j) q[row] |= w[j] << (3 * (j - i) + 1);
            i += 10;
            q[row] |= w[i] << 31;
            row += 1;
            q[row] |= (w[i] >> 1) & 0x3;
            i += 1;
            for (std::size_t j = i; j < i + 10; ++j) q[row] |= w[j] << (3 * (j - i) + 2);
            i += 10;
            row += 1;
        }
    }
    return q;
}

IntGridLayer random_int_grid(int bits, int n, int k, int g, unsigned seed, bool zero_free = true) {
    std::mt19937 rng(seed);
    IntGridLayer l(bits, n, k, g);
    std::uniform_int_distribution<int> code(0, (1 << bits) - 1), z(zero_free ? 1 : 0, (1 << bits) - 1);
    std::uniform_real_distribution<float> s(0.001f, 0.1f);
    for (auto& c : l.codes) c = std::uint8_t(code(rng));
    for (auto& v : l.zeros) v = std::uint8_t(z(rng));
    for (auto& v : l.scales) v = float_to_half(s(rng));
    return l;
}

template <class T>
std::string error_of(T&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

BOOST_AUTO_TEST_CASE(gptq_awq_words_pinned_by_hand) {
    // 8 outputs x 8 inputs, one group; code(n, i) = (n + i) mod 16, zero points 8 (GPTQ's symmetric 4-bit)
    IntGridLayer l(4, 8, 8, 8);
    for (int n = 0; n < 8; ++n)
        for (int i = 0; i < 8; ++i) l.codes[std::size_t(n * 8 + i)] = std::uint8_t((n + i) % 16);
    std::fill(l.zeros.begin(), l.zeros.end(), std::uint8_t(8));
    const auto v1 = pack_gptq(l, true);
    BOOST_TEST((v1.qweight_shape == std::array<std::size_t, 2>{1, 8}));
    BOOST_TEST(v1.qweight[0] == 0x76543210u);  // output 0: codes 0..7, code i at bits 4i
    BOOST_TEST(v1.qweight[1] == 0x87654321u);
    BOOST_TEST(v1.qweight[7] == 0xEDCBA987u);
    BOOST_TEST(v1.qzeros.size() == 1u);
    BOOST_TEST(v1.qzeros[0] == 0x77777777u);  // v1: zero - 1, the famous 0x77777777 of symmetric 4-bit
    BOOST_TEST(pack_gptq(l, false).qzeros[0] == 0x88888888u);
    BOOST_TEST((v1.g_idx == std::vector<std::int32_t>(8, 0)));
    // AWQ: packed along outputs in the order 0 2 4 6 1 3 5 7
    for (int n = 0; n < 8; ++n) l.zeros[std::size_t(n)] = std::uint8_t(n);
    const auto a = pack_awq(l);
    BOOST_TEST((a.qweight_shape == std::array<std::size_t, 2>{8, 1}));
    BOOST_TEST(a.qweight[0] == 0x75316420u);  // input 0: outputs 0,2,4,6,1,3,5,7 -> codes 0,2,4,6,1,3,5,7
    BOOST_TEST(a.qweight[1] == 0x86427531u);  // input 1: codes 1,3,5,7,2,4,6,8
    BOOST_TEST(a.qzeros[0] == 0x75316420u);
    // 2-bit: 16 codes per word
    IntGridLayer t(2, 16, 16, 16);
    for (int i = 0; i < 16; ++i) t.codes[std::size_t(i)] = std::uint8_t(i % 4);  // output 0: 0 1 2 3 0 1 2 3 ...
    std::fill(t.zeros.begin(), t.zeros.end(), std::uint8_t(2));
    const auto p2 = pack_gptq(t, true);
    BOOST_TEST(p2.qweight[0] == 0xE4E4E4E4u);  // 0b11100100 per byte
    BOOST_TEST(p2.qzeros[0] == 0x55555555u);   // zero 2 stored as 1
}

BOOST_AUTO_TEST_CASE(gptq_packing_equals_autogptq_loop) {
    for (const int bits : {2, 3, 4, 8}) {
        const auto l = random_int_grid(bits, 32, 96, 32, unsigned(bits));
        const auto p = pack_gptq(l, true);
        const std::size_t N = 32, K = 96, W = K * std::size_t(bits) / 32;
        std::size_t bad = 0;
        for (std::size_t n = 0; n < N; ++n) {
            std::vector<std::uint32_t> col(K);
            for (std::size_t i = 0; i < K; ++i) col[i] = l.codes[n * K + i];
            const auto want = autogptq_pack_column(col, bits);
            for (std::size_t w = 0; w < W; ++w) bad += p.qweight[w * N + n] != want[w];
        }
        BOOST_TEST(bad == 0u, bits << "-bit: " << bad << " qweight words differ from AutoGPTQ's loop");
        // qzeros: the same stream along outputs, zero - 1
        for (std::size_t g = 0; g < 3; ++g) {
            std::vector<std::uint32_t> row(N);
            for (std::size_t n = 0; n < N; ++n) row[n] = std::uint32_t(l.zeros[g * N + n] - 1);
            const auto want = autogptq_pack_column(row, bits);
            for (std::size_t w = 0; w < want.size(); ++w) BOOST_TEST(p.qzeros[g * want.size() + w] == want[w], bits << "-bit zeros word " << w);
        }
        const auto back = unpack_gptq(p, bits, 32, 96, 32, true);
        BOOST_TEST((back.codes == l.codes && back.zeros == l.zeros && back.scales == l.scales && back.g_idx == l.g_idx));
    }
}

BOOST_AUTO_TEST_CASE(dense_layers_round_trip_through_both_layouts) {
    std::mt19937 rng(5);
    for (const int bits : {2, 3, 4, 8})
        for (const auto zero : {ZeroPoint::integer, ZeroPoint::symmetric})
            for (const bool ordered : {false, true}) {
                const int N = 32, K = 128, g = 32;
                QuantSpec spec;
                spec.bits = bits;
                spec.group_size = g;
                spec.zero = zero;
                QuantizedMatrix q(spec, N, K);
                std::uniform_int_distribution<int> code(0, spec.max_code()), z(1, spec.max_code());
                for (auto& c : q.codes) c = std::uint8_t(code(rng));
                for (auto& s : q.scales) s = round_to_half(0.01f + 0.001f * float(code(rng)));
                for (auto& v : q.zeros) v = std::uint8_t(z(rng));
                std::vector<int> order;
                if (ordered) {
                    order.resize(K);
                    std::iota(order.begin(), order.end(), 0);
                    std::shuffle(order.begin(), order.end(), rng);
                }
                const llama::Linear lin = llama::packed_linear(q, order);
                const IntGridLayer l = llama::int_grid_of(lin);
                // every weight as the QuantizedMatrix defines it, at its original input
                double worst = 0;
                for (int n = 0; n < N; ++n)
                    for (int k = 0; k < K; ++k) worst = std::max(worst, double(std::fabs(l.weight(n, ordered ? order[std::size_t(k)] : k) - q.dequantize(n, k))));
                BOOST_TEST(worst == 0.0, bits << "-bit zero " << int(zero) << " ordered " << ordered);
                BOOST_TEST(l.trivial_g_idx() == !ordered);
                for (const bool v1 : {true, false}) {
                    const auto back = unpack_gptq(pack_gptq(l, v1), bits, N, K, g, v1);
                    BOOST_TEST((back.codes == l.codes && back.zeros == l.zeros && back.scales == l.scales && back.g_idx == l.g_idx));
                    const auto again = llama::linear_of(back, zero == ZeroPoint::symmetric);
                    BOOST_TEST((llama::layout_of(again).spec == llama::layout_of(lin).spec));
                    const auto a = std::get<Fp32Matrix>(llama::dequantized_linear(again).weights()).data;
                    const auto b = std::get<Fp32Matrix>(llama::dequantized_linear(lin).weights()).data;
                    BOOST_TEST((a == b), bits << "-bit zero " << int(zero) << " ordered " << ordered << " v1 " << v1);
                }
                if (bits == 4 && !ordered) {
                    const auto back = unpack_awq(pack_awq(l), N, K, g);
                    BOOST_TEST((back.codes == l.codes && back.zeros == l.zeros && back.scales == l.scales));
                }
            }
}

BOOST_AUTO_TEST_CASE(gptq_awq_layout_errors) {
    auto l = random_int_grid(4, 16, 64, 32, 3, false);
    l.zeros[5] = 0;
    BOOST_TEST(qtest::has_all(error_of([&] { (void)pack_gptq(l, true); }), {"output 5, group 0", "zero point 0", "gptq_v2"}));
    BOOST_TEST(error_of([&] { (void)pack_gptq(l, false); }) == "(no error)");
    BOOST_TEST(qtest::has_all(error_of([&] { (void)pack_awq(random_int_grid(8, 16, 64, 32, 1)); }), {"4-bit codes, not 8"}));
    BOOST_TEST(qtest::has_all(error_of([&] { (void)pack_gptq(random_int_grid(3, 16, 64, 32, 1), true); }), {"16 outputs of 3 bits"}));
    auto p = pack_gptq(random_int_grid(4, 16, 64, 32, 1), true);
    BOOST_TEST(qtest::has_all(error_of([&] { (void)unpack_gptq(p, 4, 16, 64, 16, true); }), {"qzeros is [2, 2]", "groups of 16 need [4, 2]"}));
    BOOST_TEST(qtest::has_all(error_of([&] { (void)unpack_gptq(p, 4, 16, 128, 32, true); }), {"qweight is [8, 16]", "needs [16, 16]"}));
    p.g_idx[7] = 9;
    BOOST_TEST(qtest::has_all(error_of([&] { (void)unpack_gptq(p, 4, 16, 64, 32, true); }), {"g_idx[7] = 9 is not a group (0..1)"}));
    p.g_idx[7] = 1;  // group 0 now has 31 columns, group 1 33
    const auto l2 = unpack_gptq(p, 4, 16, 64, 32, true);
    BOOST_TEST(qtest::has_all(error_of([&] { (void)llama::linear_of(l2, false); }), {"g_idx puts 31 input columns in group 0", "group_size = 32"}));
    BOOST_TEST(qtest::has_all(error_of([&] { (void)llama::linear_of(random_int_grid(4, 16, 64, 32, 2), true); }), {"said to be symmetric"}));
}

namespace {

/// A checkpoint's weights as Hugging Face stores them (q/k rows in rotate-half order), decoded
/// straight from the tensors the way AutoGPTQ's and AutoAWQ's reference dequantization reads them
/// (shift and mask per code; v1 zeros + 1; AWQ's reverse order 0 4 1 5 2 6 3 7), not through
/// qforge's unpacking.
llama::Weights decode_like_the_reference(const std::string& dir, const llama::Config& c, const std::string& method, int bits, int group, bool v1) {
    const auto f = io::SafetensorsFile::open(dir + "/model.safetensors");
    const auto halves = [&](const std::string& name) { return f.to_float(f.tensor(name)); };
    const auto words = [&](const std::string& name) {
        const auto& t = f.tensor(name);
        std::vector<std::uint32_t> v(std::size_t(t.elements()));
        std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
        return v;
    };
    const auto linear = [&](const std::string& base, int N, int K) {
        const auto qw = words(base + ".qweight"), qz = words(base + ".qzeros");
        const auto sc = halves(base + ".scales");
        std::vector<float> m(std::size_t(N) * std::size_t(K));
        const std::uint32_t mask = (1u << bits) - 1u;
        const int per = 32 / bits;
        std::vector<std::int32_t> g_idx(static_cast<std::size_t>(K));
        if (method == "gptq") {
            const auto& gt = f.tensor(base + ".g_idx");
            std::memcpy(g_idx.data(), gt.bytes.data(), gt.bytes.size());
        } else {
            for (int i = 0; i < K; ++i) g_idx[std::size_t(i)] = i / group;
        }
        constexpr int reverse[8] = {0, 4, 1, 5, 2, 6, 3, 7};
        for (int n = 0; n < N; ++n)
            for (int i = 0; i < K; ++i) {
                const int g = g_idx[std::size_t(i)];
                std::uint32_t q, z;
                if (method == "gptq") {
                    q = (qw[std::size_t(i / per) * std::size_t(N) + std::size_t(n)] >> (bits * (i % per))) & mask;
                    z = (qz[std::size_t(g) * std::size_t(N / per) + std::size_t(n / per)] >> (bits * (n % per))) & mask;
                    if (v1) z = (z + 1) & mask;
                } else {
                    q = (qw[std::size_t(i) * std::size_t(N / 8) + std::size_t(n / 8)] >> (4 * reverse[n % 8])) & 15u;
                    z = (qz[std::size_t(g) * std::size_t(N / 8) + std::size_t(n / 8)] >> (4 * reverse[n % 8])) & 15u;
                }
                m[std::size_t(n) * std::size_t(K) + std::size_t(i)] = sc[std::size_t(g) * std::size_t(N) + std::size_t(n)] * (float(q) - float(z));
            }
        return llama::Linear(llama::Fp32Matrix{N, K, m});
    };
    llama::Weights w;
    w.config = c;
    w.token_embedding = halves("model.embed_tokens.weight");
    for (int l = 0; l < c.n_layers; ++l) {
        llama::Layer L;
        L.attention_norm = halves("model.layers." + std::to_string(l) + ".input_layernorm.weight");
        L.ffn_norm = halves("model.layers." + std::to_string(l) + ".post_attention_layernorm.weight");
        for (const auto& b : llama::block_linears) {
            const auto [rows, cols] = llama::block_linear_shape(c, b);
            const auto hf = llama::HfSource::hf_name(llama::block_tensor_name(l, b.gguf));
            L.*b.member = linear(hf.substr(0, hf.size() - 7), rows, cols);
        }
        w.layers.push_back(std::move(L));
    }
    w.norm = halves("model.norm.weight");
    w.output = llama::Linear(llama::Fp32Matrix{c.vocab_size, c.dim, f.find("lm_head.weight") ? halves("lm_head.weight") : w.token_embedding});
    return w;
}

}  // namespace

BOOST_AUTO_TEST_CASE(gptq_awq_checkpoints_export_and_import) {
    auto c = qtest::tiny_config(2);
    const auto fp32 = qtest::random_llama(c, 77);
    const std::vector<int> tokens = {1, 17, 4, 33, 8, 8, 49, 2, 20};
    std::mt19937 rng(8);
    struct Case {
        std::string format, scheme;
        int bits, group;
        bool ordered;
    };
    for (const Case& k : {Case{"gptq", "rtn:w4g16s", 4, 16, false}, Case{"gptq_v2", "rtn:w4g16a", 4, 16, false}, Case{"gptq", "rtn:w8s", 8, -1, false},
                          Case{"gptq_v2", "rtn:w2g16a", 2, 16, true}, Case{"awq", "rtn:w4g16a", 4, 16, false}}) {
        // the model quantized in memory (act-order: the same codes with a random column order)
        auto q = llama::quantize_block_linears(fp32, parse_scheme(k.scheme));
        if (k.ordered)
            for (auto& L : q.layers)
                for (const auto& b : llama::block_linears) {
                    std::vector<int> order(std::size_t((L.*b.member).cols()));
                    std::iota(order.begin(), order.end(), 0);
                    std::shuffle(order.begin(), order.end(), rng);
                    L.*b.member = llama::Linear((L.*b.member).weights(), order);
                }
        const llama::WeightsSource src(q, "in-memory");
        const auto dir = (fs::temp_directory_path() / ("qf_hfq_" + k.format + std::to_string(k.bits))).string();
        fs::remove_all(dir);
        llama::HfExportOptions o;
        o.format = k.format;
        const auto report = llama::write_hf_checkpoint(src, dir, o);
        BOOST_TEST(!fs::exists(dir + ".tmp"));
        BOOST_TEST(report.quantization.desc_act == k.ordered);
        // bits per weight from the bytes: codes + fp16 scales + packed zeros (+ g_idx)
        BOOST_TEST(report.block_bits_per_weight() > double(k.bits));
        // read back: the same layers exactly
        const llama::HfSource back(dir);
        BOOST_REQUIRE(back.quantization().has_value());
        BOOST_TEST(back.quantization()->method == (k.format == "awq" ? "awq" : "gptq"));
        const auto w = llama::load_weights(back);
        for (int l = 0; l < c.n_layers; ++l)
            for (const auto& b : llama::block_linears) {
                const auto& a = q.layers[std::size_t(l)].*b.member;
                const auto& r = w.layers[std::size_t(l)].*b.member;
                const auto ia = llama::int_grid_of(a), ir = llama::int_grid_of(r);
                BOOST_TEST((ia.codes == ir.codes && ia.scales == ir.scales && ia.zeros == ir.zeros && ia.g_idx == ir.g_idx),
                           k.format << " " << k.scheme << " " << llama::block_tensor_name(l, b.gguf));
                BOOST_TEST(llama::layout_of(r).ordered == k.ordered);
                if (k.format != "awq") BOOST_TEST((llama::layout_of(r).spec.zero == llama::layout_of(a).spec.zero));
            }
        // the file as the reference kernels read it, run by the rotate-half reference forward,
        // against qforge's forward of what it imported
        const auto decoded = decode_like_the_reference(dir, c, k.format == "awq" ? "awq" : "gptq", k.bits, k.group < 0 ? c.dim : k.group, k.format == "gptq");
        const auto ref = hf_reference(decoded, tokens);
        // FP32 weights (dequantized): the packed kernels also quantize activations to 8 bits
        const auto wf = llama::dequantized_weights(w);
        llama::Session s(wf, Backend::cpu(best_isa(), 2));
        const auto got = s.forward_batch(tokens, 0);
        double worst = 0;
        for (std::size_t p = 0; p < tokens.size(); ++p)
            for (std::size_t i = 0; i < got.cols; ++i) worst = std::max(worst, std::fabs(double(got(p, i)) - ref[p][i]));
        BOOST_TEST(worst < 1e-4, k.format << " " << k.scheme << ": " << worst);
        // config.json says what transformers and vLLM need
        const auto cfg = llama::detail::read_json(dir + "/config.json");
        const auto& qc = cfg.at("quantization_config");
        BOOST_TEST(qc.at("quant_method").as_string() == (k.format == "awq" ? "awq" : "gptq"));
        BOOST_TEST(qc.at("bits").as_int() == k.bits);
        BOOST_TEST(qc.at("group_size").as_int() == k.group);
        if (k.format != "awq") BOOST_TEST(qc.at("checkpoint_format").as_string() == k.format);
        BOOST_TEST(fs::exists(dir + (k.format == "awq" ? "/quant_config.json" : "/quantize_config.json")));
        BOOST_TEST(io::SafetensorsFile::open(dir + "/model.safetensors").metadata().at("format") == "pt");
        fs::remove_all(dir);
    }
}

BOOST_AUTO_TEST_CASE(gptq_awq_export_refusals) {
    auto c = qtest::tiny_config(1);
    const auto fp32 = qtest::random_llama(c, 78);
    const auto dir = (fs::temp_directory_path() / "qf_hfq_bad").string();
    fs::remove_all(dir);
    const auto attempt = [&](const llama::Weights& w, const std::string& format, std::vector<std::pair<std::string, std::string>> rules = {}) {
        const llama::WeightsSource src(w, "model.bin");
        llama::HfExportOptions o;
        o.format = format;
        o.rules = std::move(rules);
        return error_of([&] { (void)llama::write_hf_checkpoint(src, dir, o); });
    };
    const auto q4m = llama::quantize_block_linears(fp32, parse_scheme("rtn:w4g16m"));
    const auto q8 = llama::quantize_block_linears(fp32, parse_scheme("rtn:w8g16a"));
    BOOST_TEST(qtest::has_all(attempt(fp32, "gptq"), {"model.bin: tensor blk.0.attn_q.weight is stored as FP32", "gptq:w4g128s"}));
    BOOST_TEST(qtest::has_all(attempt(q4m, "gptq"), {"blk.0.attn_q.weight", "float minimums ('m')", "integer zero points"}));
    BOOST_TEST(qtest::has_all(attempt(q8, "awq"), {"blk.0.attn_q.weight", "AWQ's GEMM layout is 4-bit", "8-bit"}));
    BOOST_TEST(qtest::has_all(attempt(q8, "gptq", {{"blk.0.ffn_down.weight", "rtn:w4g16a"}}), {"blk.0.ffn_down.weight is 4-bit, group 16", "8-bit, group 16",
                                                                                                "one quantization_config"}));
    BOOST_TEST(qtest::has_all(attempt(q8, "gptq", {{"output.weight", "rtn:w8g16a"}}), {"output.weight", "unquantized (F16)"}));
    BOOST_TEST(qtest::has_all(attempt(q8, "safetensors"), {"'safetensors': gptq, gptq_v2 or awq"}));
    BOOST_TEST(qtest::has_all(attempt(llama::quantize_block_linears(fp32, parse_scheme("rtn:w4g32a")), "gptq"),
                              {"tensor blk.0.ffn_down.weight: 48 inputs are not whole groups of 32", "in_features divisible by group_size"}));
    BOOST_TEST(!fs::exists(dir));
    // output directories: a new one (with or without the trailing slash), not under a missing parent
    BOOST_TEST(llama::detail::output_dir_problem(dir + "/") == "");
    BOOST_TEST(llama::detail::output_dir_problem("/nonexistent_qf/out/") == "directory '/nonexistent_qf' does not exist");
    // an output that is not a new (or empty) directory, before any work
    fs::create_directories(dir + "/old");
    BOOST_TEST(qtest::has_all(attempt(q8, "gptq"), {dir, "exists and is not empty"}));
    fs::remove_all(dir);
    // a failure midway leaves neither the directory nor its temporary
    const llama::WeightsSource src(fp32, "model.bin");
    llama::HfExportOptions o;
    o.rules = {{"blk.*", "rtn:w4g16a"}};
    int calls = 0;
    o.quantize = [&](const std::string& name, const llama::Linear& l, const RuntimeScheme& s) {
        if (++calls == 4) throw InvalidData(name + ": stopped on purpose");
        return llama::quantize_linear(l, s);
    };
    BOOST_TEST(qtest::has_all(error_of([&] { (void)llama::write_hf_checkpoint(src, dir, o); }), {"stopped on purpose"}));
    BOOST_TEST(!fs::exists(dir));
    BOOST_TEST(!fs::exists(dir + ".tmp"));
}

BOOST_AUTO_TEST_CASE(bad_gptq_checkpoints_name_file_and_layer) {
    auto c = qtest::tiny_config(1);
    const auto dir = (fs::temp_directory_path() / "qf_hfq_read").string();
    fs::remove_all(dir);
    llama::HfExportOptions o;
    o.rules = {{"blk.*", "rtn:w4g16s"}};  // quantized while written; the scheme is recorded for qforge's import
    o.tokenizer_dir = dir + "_tok";     // a Hugging Face source's tokenizer files are copied
    fs::create_directories(o.tokenizer_dir);
    std::ofstream(o.tokenizer_dir + "/tokenizer.json") << "{\"model\": {}}";
    std::ofstream(o.tokenizer_dir + "/tokenizer_config.json") << "{}";
    const auto report = llama::write_hf_checkpoint(llama::WeightsSource(qtest::random_llama(c, 79), "m"), dir, o);
    fs::remove_all(o.tokenizer_dir);
    BOOST_TEST((report.copied == std::vector<std::string>{"tokenizer.json", "tokenizer_config.json"}));
    BOOST_TEST(fs::file_size(dir + "/tokenizer.json") == 13u);
    BOOST_TEST(llama::HfSource(dir).scheme_of("blk.0.ffn_up.weight") == "rtn:w4g16s");
    BOOST_TEST(llama::HfSource(dir).scheme_of("token_embd.weight") == "");
    const auto load = [&] { return error_of([&] { (void)llama::load_weights(llama::HfSource(dir)); }); };
    BOOST_TEST(load() == "(no error)");
    // a quantization_config qforge does not read
    const auto cfg_text = [&] {
        std::ifstream in(dir + "/config.json");
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }();
    const auto with_config = [&](const std::string& from, const std::string& to) {
        auto t = cfg_text;
        t.replace(t.find(from), from.size(), to);
        std::ofstream(dir + "/config.json") << t;
    };
    with_config("\"bits\":4", "\"bits\":5");
    BOOST_TEST(qtest::has_all(load(), {dir + "/config.json", "bits 5"}));
    with_config("\"quant_method\":\"gptq\"", "\"quant_method\":\"exl2\"");
    BOOST_TEST(qtest::has_all(load(), {dir + "/config.json", "quant_method 'exl2'"}));
    with_config("\"group_size\":16", "\"group_size\":8");
    BOOST_TEST(qtest::has_all(load(), {dir + "/model.safetensors", "layer model.layers.0.self_attn.q_proj (blk.0.attn_q.weight)",
                                      "tensor model.layers.0.self_attn.q_proj.scales is [2, 32]", "needs [4, 32]"}));
    with_config("\"bits\":4", "\"bits\":8");
    BOOST_TEST(qtest::has_all(load(), {dir + "/model.safetensors", "layer model.layers.0.self_attn.q_proj (blk.0.attn_q.weight)", "8-bit", "qweight is [4, 32]"}));
    // packed tensors, but no quantization_config anywhere: said so, not "no tensor q_proj.weight"
    std::ofstream(dir + "/config.json") << cfg_text.substr(0, cfg_text.find(",\"quantization_config\"")) << "}";
    fs::rename(dir + "/quantize_config.json", dir + "/saved.json");
    BOOST_TEST(qtest::has_all(load(), {dir, "model.layers.0.self_attn.q_proj.qweight (blk.0.attn_q.weight) is GPTQ/AWQ-packed",
                                      "config.json has no quantization_config"}));
    fs::rename(dir + "/saved.json", dir + "/quantize_config.json");
    BOOST_TEST(load() == "(no error)");  // AutoGPTQ's file beside it is enough
    std::ofstream(dir + "/config.json") << cfg_text;
    BOOST_TEST(load() == "(no error)");
    fs::remove_all(dir);
    // a checkpoint that says "sym" but holds other zero points: refused, naming the layer (not
    // loaded on another grid than the one its layout was planned with)
    o.format = "gptq_v2";
    o.rules = {{"blk.*", "rtn:w4g16a"}};
    o.tokenizer_dir.clear();
    (void)llama::write_hf_checkpoint(llama::WeightsSource(qtest::random_llama(c, 80), "m"), dir, o);
    {
        std::ifstream in(dir + "/config.json");
        std::stringstream ss;
        ss << in.rdbuf();
        auto t = ss.str();
        t.replace(t.find("\"sym\":false"), 11, "\"sym\":true");
        std::ofstream(dir + "/config.json") << t;
    }
    BOOST_TEST(qtest::has_all(load(), {dir + "/model.safetensors", "layer model.layers.0.self_attn.q_proj (blk.0.attn_q.weight)",
                                      "said to be symmetric"}));
    fs::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
