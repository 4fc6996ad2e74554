#define BOOST_TEST_MODULE hf
// Hugging Face checkpoints: a tiny sharded checkpoint this test writes (config.json, two
// safetensors shards, an index; F16/BF16/F32 tensors; q/k in Hugging Face's rotate-half order)
// loads into a model whose logits equal a straightforward double-precision forward that applies
// rotate-half RoPE to the weights as stored; bad files give errors naming the file.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "common.hpp"
#include "qforge/models/llama/hf_source.hpp"
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

Written write_checkpoint(const std::string& name, bool tied) {
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
    struct T {
        std::string name, dtype;
        std::vector<std::uint64_t> shape;
        std::vector<float> values;
    };
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
        llama::Session s(w, best_isa(), 2);
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
