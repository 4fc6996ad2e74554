#define BOOST_TEST_MODULE hf
// Hugging Face checkpoints: a tiny sharded checkpoint this test writes (config.json, two
// safetensors shards, an index; F16/BF16/F32 tensors; q/k in Hugging Face's rotate-half order)
// loads into a model whose logits equal a straightforward double-precision forward that applies
// rotate-half RoPE to the weights as stored; bad files give errors naming the file.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "common.hpp"
#include "qforge/sources/llama/hf_source.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
namespace fs = std::filesystem;

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
