// qforge's native container: round trip bit for bit, per-tensor rules, tied heads, errors on
// bad files, no partial output, and streaming quantization whose peak memory stays near one
// weight (the source is larger than what the process ever holds).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "common.hpp"
#include "qforge/io/json.hpp"
#include "qforge/container/llama/container.hpp"
#include "qforge/pipelines/llama/quantizing_source.hpp"
#include "tiny_llama.hpp"

using namespace qforge;
namespace fs = std::filesystem;
BOOST_AUTO_TEST_SUITE(test_container)

namespace {
std::string tmp(const std::string& name) { return (fs::temp_directory_path() / name).string(); }


llama::ContainerOptions with_rules(std::vector<std::pair<std::string, std::string>> rules, int threads = 0) {
    llama::ContainerOptions o;
    o.rules = std::move(rules);
    o.backend = Backend::cpu(Isa::scalar, threads);
    return o;
}

/// Runs `fn` in a child process (so it inherits little of this one's memory) and returns the
/// child's peak RSS in MB; -1 when it failed (its error on stderr).
[[maybe_unused]] double peak_rss_mb_of(const std::function<void()>& fn) {
    const pid_t pid = fork();
    if (pid == 0) {
        int code = 0;
        try {
            fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s\n", e.what());
            code = 1;
        }
        _exit(code);
    }
    int status = 0;
    rusage usage{};
    if (wait4(pid, &status, 0, &usage) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
    return double(usage.ru_maxrss) / 1024;
}

std::vector<float> logits_of(const llama::Weights& w, const std::vector<int>& tokens) {
    llama::Session s(w, Backend::cpu(Isa::scalar, 1));
    const auto l = s.forward_batch(tokens, 0);
    return {l.data, l.data + l.rows * l.cols};
}
}  // namespace

BOOST_AUTO_TEST_CASE(json_round_trip_and_errors) {
    const auto j = io::Json::parse(R"({"a": [1, -2.5e3, "x\u00e9\ud83d\ude00\n"], "b": {"c": null, "d": true}, "n": 9007199254740993})");
    BOOST_TEST(j.at("a").as_array()[0].as_int() == 1);
    BOOST_TEST(j.at("a").as_array()[1].as_double() == -2500.0);
    BOOST_TEST(j.at("a").as_array()[2].as_string() == "x\xc3\xa9\xf0\x9f\x98\x80\n");
    BOOST_TEST(j.at("n").as_int() == 9007199254740993LL);  // exact beyond double precision
    BOOST_TEST(io::Json::parse(j.dump()).dump() == j.dump());
    BOOST_TEST(qtest::error_of([] { io::Json::parse("{\"a\": }"); }).find("byte 6") != std::string::npos);
    BOOST_TEST(qtest::error_of([] { io::Json::parse(std::string(1000, '[')); }).find("nesting") != std::string::npos);
    BOOST_TEST(qtest::error_of([] { io::Json::parse("[1] x"); }).find("trailing") != std::string::npos);
    // found by fuzz_safetensors: a number too large for int64 must stay a double (no UB)
    const auto huge = io::Json::parse("[666666666666666666666666666666]");
    BOOST_TEST(huge.as_array()[0].as_double() == 6.66666666666666666e29);
    BOOST_CHECK_THROW(huge.as_array()[0].as_int(), InvalidData);
    // found by fuzz_safetensors: -0e-2 is a double and must dump as one ("-0" reads back as int 0)
    const auto neg_zero = io::Json::parse("[-0e-2, 5e0]");
    BOOST_TEST(neg_zero.dump() == "[-0.0,5.0]");
    BOOST_TEST(io::Json::parse(neg_zero.dump()).dump() == neg_zero.dump());
}

BOOST_AUTO_TEST_CASE(round_trip_with_rules) {
    const auto w = qtest::random_llama(qtest::tiny_config(2), 21);
    const llama::WeightsSource src(w, "memory");
    llama::ContainerOptions o;
    o.rules = {{"blk.*", "rtn:w4g8a"}, {"blk.0.ffn_down.weight", "f32"}, {"blk.1.attn_v.weight", "rtn:w3g16m"},
               {"output.weight", "rtn:w8g16s"}};
    const auto path = tmp("qf_container.safetensors");
    llama::write_container(src, path, o);
    BOOST_TEST(!fs::exists(path + ".tmp"));

    const llama::ContainerSource back(path);
    BOOST_TEST(back.scheme("blk.1.attn_q.weight") == "rtn:w4g8a");
    BOOST_TEST(back.scheme("blk.1.attn_v.weight") == "rtn:w3g16m");
    BOOST_TEST(back.layout("blk.0.ffn_down.weight").format == "f32");
    BOOST_TEST(back.layout("output.weight").spec.bits == 8);
    const auto loaded = llama::load_weights(back);

    // the same model quantized in memory: identical bytes, identical logits
    auto expected = w;
    for (int l = 0; l < 2; ++l)
        for (const auto& b : llama::block_linears) {
            const auto name = llama::block_tensor_name(l, b.gguf);
            const auto action = llama::action_for(o.rules, name);
            auto& slot = expected.layers[std::size_t(l)].*b.member;
            if (action != "f32") slot = llama::quantize_linear(slot, parse_scheme(action));
            const auto& got = loaded.layers[std::size_t(l)].*b.member;
            BOOST_TEST(got.bytes() == slot.bytes(), name);
        }
    expected.output = llama::quantize_linear(w.output, parse_scheme("rtn:w8g16s"));
    const std::vector<int> tokens = {1, 5, 9, 44, 2};
    BOOST_TEST(logits_of(loaded, tokens) == logits_of(expected, tokens), boost::test_tools::per_element());
    BOOST_TEST(fs::file_size(path) < 4 * 32 * 48 * 3 * 2 + 2 * 4 * 50 * 32 + 4096 * 8);  // well below FP32 blocks
}

// codebook formats are rows of the format registry: the container writes and reads them with no
// code of its own, and a grid whose blocks do not fit a tensor is an error naming it
BOOST_AUTO_TEST_CASE(codebook_formats_round_trip) {
    auto c = qtest::tiny_config(1);
    c.dim = 64;
    c.hidden_dim = 128;
    const auto w = qtest::random_llama(c, 24);
    const llama::WeightsSource src(w, "memory");
    llama::ContainerOptions o;
    o.rules = {{"blk.*", "rtn:nf4g64"}, {"blk.0.attn_k.weight", "rtn:iq4nlg32"}, {"blk.0.ffn_up.weight", "rtn:nf4g64,dq"}};
    const auto path = tmp("qf_codebook.safetensors");
    llama::write_container(src, path, o);
    const llama::ContainerSource back(path);
    BOOST_TEST(back.layout("blk.0.attn_q.weight").format == "nf4");
    BOOST_TEST(back.layout("blk.0.attn_k.weight").format == "iq4_nl");
    // every quantized weight records its scheme; the dense-only fields appear for dense rows only
    BOOST_TEST(back.scheme("blk.0.attn_q.weight") == "rtn:nf4g64");
    BOOST_TEST(back.scheme("blk.0.attn_k.weight") == "rtn:iq4nlg32");
    BOOST_TEST(back.layout("blk.0.ffn_up.weight").format == "nf4_dq");  // blocks + .absmax2 + .offset
    BOOST_TEST(back.scheme("blk.0.ffn_up.weight") == "rtn:nf4g64,dq");
    const auto fields = io::Json::parse(io::SafetensorsFile::open(path).metadata().at("qforge.tensors"));
    BOOST_TEST(fields.at("blk.0.attn_q.weight").find("bits") == nullptr);
    BOOST_TEST(fields.at("blk.0.attn_q.weight").find("group_size") == nullptr);
    BOOST_TEST(fields.at("blk.0.attn_norm.weight").find("scheme") == nullptr);
    const auto loaded = llama::load_weights(back);
    auto expected = w;
    for (const auto& b : llama::block_linears) {
        const auto name = llama::block_tensor_name(0, b.gguf);
        auto& slot = expected.layers[0].*b.member;
        slot = llama::quantize_linear(slot, parse_scheme(llama::action_for(o.rules, name)));
        BOOST_TEST(std::holds_alternative<NF4::Packed>(slot.weights()) == (name != "blk.0.attn_k.weight" && name != "blk.0.ffn_up.weight"), name);
        BOOST_TEST(std::holds_alternative<NF4_DQ::Packed>(slot.weights()) == (name == "blk.0.ffn_up.weight"), name);
        BOOST_TEST((loaded.layers[0].*b.member).bytes() == slot.bytes(), name);
    }
    const std::vector<int> tokens = {1, 5, 9, 44, 2};
    BOOST_TEST(logits_of(loaded, tokens) == logits_of(expected, tokens), boost::test_tools::per_element());

    o.rules = {{"blk.*", "rtn:iq4nlg32"}, {"blk.0.ffn_down.weight", "rtn:nf4g64"}, {"blk.0.attn_q.weight", "rtn:nf4g128"}};
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { llama::write_container(src, tmp("qf_codebook_bad.safetensors"), o); }),
                              {"blk.0.attn_q.weight", "nf4", "group size 64"}));
}

BOOST_AUTO_TEST_CASE(tied_head_stays_tied) {
    auto w = qtest::random_llama(qtest::tiny_config(1), 22);
    w.output = llama::quantize_linear(w.output, parse_scheme("rtn:w8g32s"));  // the tied table, stored packed
    w.token_embedding = std::get<llama::Fp32Matrix>(llama::dequantized_linear(w.output).weights()).data;
    const llama::WeightsSource src(w, "memory", true);
    const auto path = tmp("qf_tied.safetensors");
    llama::write_container(src, path, {});
    const llama::ContainerSource back(path);
    BOOST_TEST(!back.has("output.weight"));
    BOOST_TEST(back.layout("token_embd.weight").format == "dense");
    const auto loaded = llama::load_weights(back);
    BOOST_TEST(loaded.token_embedding == w.token_embedding, boost::test_tools::per_element());
    BOOST_TEST(logits_of(loaded, {3, 4}) == logits_of(w, {3, 4}), boost::test_tools::per_element());
    // one action for every weight ("*", as `convert --outtype` writes it) keeps the tie too
    llama::write_container(src, path, with_rules({{"*", "rtn:w4g32s"}}));
    const llama::ContainerSource all(path);
    BOOST_TEST(!all.has("output.weight"));
    BOOST_TEST(all.scheme("token_embd.weight") == "rtn:w4g32s");
}

// Untying the head by a rule on output.weight leaves the embedding as stored (it was written as
// an F32 vector whatever the source held: SmolLM2's Q8_0 table grew 2.3x), and a rule naming
// token_embd.weight applies to it.
BOOST_AUTO_TEST_CASE(untied_head_keeps_the_embedding_as_stored) {
    auto w = qtest::random_llama(qtest::tiny_config(1), 23);
    w.output = llama::quantize_linear(w.output, parse_scheme("rtn:w8g32s"));
    w.token_embedding = std::get<llama::Fp32Matrix>(llama::dequantized_linear(w.output).weights()).data;
    const auto tied = tmp("qf_tied_src.safetensors"), path = tmp("qf_untied.safetensors");
    llama::write_container(llama::WeightsSource(w, "memory", true), tied, {});
    const llama::ContainerSource src(tied);
    llama::write_container(src, path, with_rules({{"output.weight", "rtn:w4g32a"}}));
    {
        const llama::ContainerSource back(path);
        BOOST_TEST(back.has("output.weight"));
        BOOST_TEST(back.layout("token_embd.weight").format == "dense");
        BOOST_TEST(back.layout("token_embd.weight").spec.bits == 8);
        BOOST_TEST(back.layout("output.weight").spec.bits == 4);
        BOOST_TEST(back.stored_bytes("token_embd.weight") == src.stored_bytes("token_embd.weight"));
        BOOST_TEST(llama::load_weights(back).token_embedding == w.token_embedding, boost::test_tools::per_element());
    }
    llama::write_container(src, path, with_rules({{"output.weight", "rtn:w4g32a"}, {"token_embd.weight", "rtn:w4g32s"}}));
    const llama::ContainerSource back(path);
    BOOST_TEST(back.layout("token_embd.weight").spec.bits == 4);
    BOOST_TEST(back.scheme("token_embd.weight") == "rtn:w4g32s");
    // an untied model in memory: its FP32 table is written as a matrix and reads back the same
    auto u = qtest::random_llama(qtest::tiny_config(1), 24);
    llama::write_container(llama::WeightsSource(u, "memory"), path, {});
    BOOST_TEST(llama::load_weights(llama::ContainerSource(path)).token_embedding == u.token_embedding, boost::test_tools::per_element());
    // a container written before (the table as a 1-D F32 vector) still reads, and re-writes
    std::string bytes;
    {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const std::string data = bytes.substr(8 + n);
    std::string header = bytes.substr(8, n);
    const auto replace = [&](const std::string& from, const std::string& to) {
        const auto at = header.find(from);
        BOOST_TEST_REQUIRE(at != std::string::npos, from);
        header.replace(at, from.size(), to);
    };
    replace(R"("token_embd.weight":{"dtype":"F32","shape":[50,32])", R"("token_embd.weight":{"dtype":"F32","shape":[1600])");
    replace(R"(\"token_embd.weight\":{\"format\":\"f32\",\"rows\":50,\"cols\":32)",
            R"(\"token_embd.weight\":{\"format\":\"f32\",\"rows\":1,\"cols\":1600)");
    while ((header.size() + 8) % 8) header += ' ';
    n = header.size();
    const auto old_style = tmp("qf_old_untied.safetensors");
    {
        std::ofstream out(old_style, std::ios::binary);
        out.write(reinterpret_cast<const char*>(&n), 8);
        out << header << data;
    }
    const llama::ContainerSource old(old_style);
    BOOST_TEST(old.layout("token_embd.weight").rows == 1);
    llama::write_container(old, path, {});
    BOOST_TEST(llama::load_weights(llama::ContainerSource(path)).token_embedding == u.token_embedding, boost::test_tools::per_element());
    fs::remove(old_style);
    fs::remove(tied);
    fs::remove(path);
}

BOOST_AUTO_TEST_CASE(bad_files_and_failed_writes) {
    const auto w = qtest::random_llama(qtest::tiny_config(1), 23);
    const llama::WeightsSource src(w, "memory");
    const auto path = tmp("qf_bad.safetensors");
    llama::write_container(src, path, with_rules({{"blk.*", "rtn:w4g8a"}}));
    std::string bytes;
    {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const auto write = [](const std::string& p, const std::string& b) {
        std::ofstream(p, std::ios::binary).write(b.data(), std::streamsize(b.size()));
        return p;
    };
    const auto truncated = write(tmp("qf_trunc.safetensors"), bytes.substr(0, bytes.size() - 10));
    BOOST_TEST(qtest::error_of([&] { llama::ContainerSource s(truncated); }).find("truncated") != std::string::npos);
    BOOST_TEST(qtest::error_of([&] { llama::ContainerSource s(truncated); }).find("qf_trunc.safetensors") != std::string::npos);
    BOOST_TEST(qtest::error_of([&] { llama::ContainerSource s(write(tmp("qf_tiny.safetensors"), "abc")); }).find("truncated") != std::string::npos);
    std::string v2 = bytes;
    const auto at = v2.find("\"qforge.format_version\":\"1\"");
    BOOST_TEST_REQUIRE(at != std::string::npos);
    v2[at + 25] = '7';
    BOOST_TEST(qtest::error_of([&] { llama::ContainerSource s(write(tmp("qf_v7.safetensors"), v2)); }).find("version 7") != std::string::npos);
    std::string unknown = bytes;  // same length, so the header stays well formed
    const auto dense_at = unknown.find(R"(\"format\":\"dense\")");  // JSON inside a JSON string: quotes escaped
    BOOST_TEST_REQUIRE(dense_at != std::string::npos);
    unknown[unknown.find("dense", dense_at) + 4] = 'x';
    BOOST_TEST(qtest::has_all(qtest::error_of([&] { llama::ContainerSource s(write(tmp("qf_densx.safetensors"), unknown)); }),
                              {"qf_densx.safetensors", "blk.0.", "unknown format 'densx'"}));
    const auto fields = io::Json::parse(io::SafetensorsFile::open(path).metadata().at("qforge.tensors"));
    BOOST_TEST(fields.at("blk.0.attn_q.weight").at("bits").as_int() == 4);
    BOOST_TEST(fields.at("blk.0.attn_q.weight").at("scheme").as_string() == "rtn:w4g8a");
    std::string garbage = bytes;
    garbage[12] = '!';
    BOOST_TEST(qtest::error_of([&] { llama::ContainerSource s(write(tmp("qf_garbage.safetensors"), garbage)); }).find("header") != std::string::npos);
    BOOST_TEST(qtest::error_of([&] { llama::ContainerSource s(tmp("qf_does_not_exist.safetensors")); }).find("cannot open") != std::string::npos);

    // a quantizer failing half-way leaves neither the file nor its temporary
    const auto failed = tmp("qf_failed.safetensors");
    fs::remove(failed);
    llama::ContainerOptions o;
    o.rules = {{"blk.*", "rtn:w4g8a"}};
    o.quantize = [](const std::string& name, const llama::Linear& l, const RuntimeScheme& s) {
        if (name == "blk.0.ffn_up.weight") throw InvalidData("injected failure");
        return llama::quantize_linear(l, s);
    };
    BOOST_CHECK_THROW(llama::write_container(src, failed, o), InvalidData);
    BOOST_TEST(!fs::exists(failed));
    BOOST_TEST(!fs::exists(failed + ".tmp"));
    BOOST_CHECK_THROW(llama::write_container(src, failed, with_rules({{"blk.*", "rtn:w5g8a"}})), InvalidArgument);
    BOOST_CHECK_THROW(llama::write_container(src, failed, with_rules({{"blk.*", "gptq:w4g8a"}})), InvalidArgument);
    // a grid no format stores at a tensor's shape: the error names the model and the tensor, before any work
    BOOST_TEST(qtest::has_all(qtest::error_of([&] { llama::write_container(src, failed, with_rules({{"blk.*", "rtn:iq4nlg32"}})); }),
                              {"memory: tensor blk.0.ffn_down.weight", "iq4_nl"}));
    BOOST_TEST(qtest::has_all(qtest::error_of([&] { llama::write_container(src, failed, with_rules({{"blk.*", "gptq:w4g8a"}})); }),
                              {"memory: tensor blk.0.attn_q.weight", "needs a quantizer"}));
    BOOST_TEST(!fs::exists(failed));
}

// A stored layer with kept FP16 channels (`,salient=`) is checked at load: kept channels that do
// not ascend, and a non-finite kept weight, are errors naming the file and the part.
BOOST_AUTO_TEST_CASE(salient_parts_checked_at_load) {
    const auto c = qtest::tiny_config(1);
    const auto w = qtest::random_llama(c, 51);
    const auto tokens = qtest::random_tokens(40, c.vocab_size, 52);
    llama::ModelQuantizeOptions mo;
    mo.calibration.backend = Backend::cpu(Isa::scalar, 1);
    const llama::WeightsSource src(w, "memory");
    const llama::QuantizingSource quantizing(src, tokens, parse_scheme("gptq:w4g16a,salient=10"), mo);
    const auto path = tmp("qf_salient.safetensors");
    llama::write_container(quantizing, path, with_rules({}, 1));
    const auto fields = io::Json::parse(io::SafetensorsFile::open(path).metadata().at("qforge.tensors"));
    BOOST_TEST(fields.at("blk.0.attn_q.weight").at("salient").as_int() == 3);  // round(10% of 32)
    BOOST_TEST(!fields.at("blk.0.attn_q.weight").find("ordered"));              // the others ascend: no order stored
    std::string bytes;
    {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    // where a tensor's data sits in the file: after the 8-byte length and the JSON header
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const auto header = io::Json::parse(std::string_view(bytes.data() + 8, std::size_t(n)));
    const auto data_at = [&](const std::string& name) { return std::size_t(8 + n + std::uint64_t(header.at(name).at("data_offsets").as_array()[0].as_int())); };
    const auto write = [](const std::string& p, const std::string& b) {
        std::ofstream(p, std::ios::binary).write(b.data(), std::streamsize(b.size()));
        return p;
    };
    const auto load = [&](const std::string& p) { return qtest::error_of([&] { (void)llama::load_weights(llama::ContainerSource(p)); }); };
    BOOST_TEST(load(path) == "(no error)");
    std::string repeated = bytes;  // the second kept channel made the first's
    std::memcpy(repeated.data() + data_at("blk.0.attn_q.weight.salient_columns") + 4, repeated.data() + data_at("blk.0.attn_q.weight.salient_columns"), 4);
    BOOST_TEST(qtest::has_all(load(write(tmp("qf_sal_cols.safetensors"), repeated)),
                              {"qf_sal_cols.safetensors", "blk.0.attn_q.weight.salient_columns", "entry 1", "ascend"}));
    std::string nan = bytes;  // an F16 NaN among the kept weights
    const std::uint16_t h = 0x7e00;
    std::memcpy(nan.data() + data_at("blk.0.ffn_down.weight.salient_values") + 2 * 5, &h, 2);
    BOOST_TEST(qtest::has_all(load(write(tmp("qf_sal_nan.safetensors"), nan)),
                              {"qf_sal_nan.safetensors", "blk.0.ffn_down.weight.salient_values", "non-finite value at element 5"}));
    for (const char* p : {"qf_salient.safetensors", "qf_sal_cols.safetensors", "qf_sal_nan.safetensors"}) fs::remove(tmp(p));
}

// The context helpers of core/error.hpp: the type survives, context is added once, and a tensor
// context adds only what the message lacks.
BOOST_AUTO_TEST_CASE(error_context_helpers) {
    BOOST_CHECK_EXCEPTION(with_context("ctx", []() -> int { throw InvalidData("x"); }), InvalidData,
                          [](const InvalidData& e) { return std::string(e.what()) == "ctx: x"; });
    BOOST_CHECK_EXCEPTION(with_context("ctx", [] { with_context("ctx", [] { throw InvalidArgument("x"); }); }), InvalidArgument,
                          [](const InvalidArgument& e) { return std::string(e.what()) == "ctx: x"; });
    BOOST_CHECK_EXCEPTION(with_context("outer", [] { throw FileError("f.bin", "truncated"); }), FileError,
                          [](const FileError& e) { return std::string(e.what()) == "outer: f.bin: truncated"; });
    BOOST_CHECK_EXCEPTION(with_context("ctx", [] { throw std::runtime_error("not ours"); }), std::runtime_error,
                          [](const std::runtime_error& e) { return std::string(e.what()) == "not ours"; });
    BOOST_TEST(with_context("ctx", [] { return 7; }) == 7);
    const auto for_tensor = [](const std::string& file, const std::function<void()>& fn) {
        try {
            with_tensor_context(file, "blk.0.attn_q.weight", fn);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    BOOST_TEST(for_tensor("m.gguf", [] { throw InvalidData("row 1, group 0 (columns 0-31): bad"); }) ==
               "m.gguf: tensor blk.0.attn_q.weight: row 1, group 0 (columns 0-31): bad");
    BOOST_TEST(for_tensor("m.gguf", [] { throw FileError("m.gguf", "truncated"); }) == "m.gguf: tensor blk.0.attn_q.weight: truncated");
    BOOST_TEST(for_tensor("m.gguf", [] { throw FileError("m.gguf", "tensor blk.0.attn_q.weight is odd"); }) ==
               "m.gguf: tensor blk.0.attn_q.weight is odd");
    BOOST_TEST(for_tensor("m.gguf", [] { throw InvalidData("blk.0.attn_q.weight: odd"); }) == "m.gguf: blk.0.attn_q.weight: odd");
    BOOST_TEST(for_tensor("", [] { throw InvalidData("odd"); }) == "tensor blk.0.attn_q.weight: odd");
    BOOST_CHECK_THROW(with_tensor_context("m.gguf", "t", [] { throw InvalidArgument("x"); }), InvalidArgument);
}

// Stored values are checked when a weight is read back: a NaN/Inf scale or minimum, a zero
// point off the grid, a NaN/Inf block scale or FP32 value is an error naming the container, the
// tensor and where (row and group, or block). The bad weights are written with 'keep', which
// copies what the in-memory source holds.
BOOST_AUTO_TEST_CASE(non_finite_stored_values_are_refused_at_load) {
    const auto base = qtest::random_llama(qtest::tiny_config(1), 24);
    const auto packed_as = [](const llama::Linear& l, const char* scheme) { return llama::quantize_linear(l, parse_scheme(scheme)); };
    const auto gguf_blocks = [](const llama::Linear& l, auto format) {
        using F = decltype(format);
        const auto& m = std::get<llama::Fp32Matrix>(l.weights());
        const auto q = RtnQuantizer(typename F::Packed{}.spec).quantize(MatrixView<const float>(m.data.data(), std::size_t(m.rows), std::size_t(m.cols)));
        return F::pack(q);
    };
    struct Case {
        std::string label, tensor, where;
        std::function<void(llama::Weights&)> poison;
    };
    const std::vector<Case> cases = {
        {"dense scale", "blk.0.attn_q.weight", "row 1, group 1 (columns 8-15) has a non-finite scale (nan)",
         [&](llama::Weights& w) {
             auto p = std::get<Dense<4>::Packed>(packed_as(w.layers[0].wq, "rtn:w4g8a").weights());
             p.scales[5] = 0x7E00;
             w.layers[0].wq = llama::Linear(p);
         }},
        {"dense minimum", "blk.0.ffn_gate.weight", "row 1, group 1 (columns 16-31) has a non-finite minimum (inf)",
         [&](llama::Weights& w) {
             auto p = std::get<Dense<3>::Packed>(packed_as(w.layers[0].w1, "rtn:w3g16m").weights());
             p.mins[3] = 0x7C00;
             w.layers[0].w1 = llama::Linear(p);
         }},
        {"dense zero point", "blk.0.attn_k.weight", "row 0, group 0 (columns 0-7) has zero point 200, above the 4-bit maximum 15",
         [&](llama::Weights& w) {
             auto p = std::get<Dense<4>::Packed>(packed_as(w.layers[0].wk, "rtn:w4g8a").weights());
             p.zeros[0] = 200;
             w.layers[0].wk = llama::Linear(p);
         }},
        {"q8_0 scale", "output.weight", "block 7 (row 7, columns 0-31) has a non-finite scale (nan)",
         [&](llama::Weights& w) {
             auto p = gguf_blocks(w.output, Q8_0{});
             p.blocks[7].d = 0x7E00;
             w.output = llama::Linear(p);
         }},
        {"q4_1 minimum", "blk.0.attn_output.weight", "block 2 (row 2, columns 0-31) has a non-finite minimum (inf)",
         [&](llama::Weights& w) {
             auto p = gguf_blocks(w.layers[0].wo, Q4_1{});
             p.blocks[2].m = 0x7C00;
             w.layers[0].wo = llama::Linear(p);
         }},
        {"q4_0 scale", "blk.0.attn_v.weight", "block 1 (row 1, columns 0-31) has a non-finite scale (inf)",
         [&](llama::Weights& w) {
             auto p = gguf_blocks(w.layers[0].wv, Q4_0{});
             p.blocks[1].d = 0x7C00;
             w.layers[0].wv = llama::Linear(p);
         }},
        {"f32 weight", "blk.0.ffn_down.weight", "non-finite",
         [&](llama::Weights& w) {
             auto m = std::get<llama::Fp32Matrix>(w.layers[0].w2.weights());
             m.data[3 * 48 + 4] = std::numeric_limits<float>::quiet_NaN();
             w.layers[0].w2 = llama::Linear(m);
         }},
        {"f32 vector", "blk.0.attn_norm.weight", "non-finite",
         [&](llama::Weights& w) { w.layers[0].attention_norm[5] = std::numeric_limits<float>::infinity(); }},
    };
    {  // the clean model, stored the same ways, reads back
        auto w = base;
        w.layers[0].wq = packed_as(w.layers[0].wq, "rtn:w4g8a");
        w.output = llama::Linear(gguf_blocks(base.output, Q8_0{}));
        const auto path = tmp("qf_clean.safetensors");
        llama::write_container(llama::WeightsSource(w, "memory"), path, {});
        BOOST_CHECK_NO_THROW((void)llama::load_weights(llama::ContainerSource(path)));
    }
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.label) {
            auto w = base;
            c.poison(w);
            const auto path = tmp("qf_poisoned.safetensors");
            llama::write_container(llama::WeightsSource(w, "memory"), path, {});  // 'keep': stored as held
            const auto m = qtest::error_of([&] { (void)llama::load_weights(llama::ContainerSource(path)); });
            BOOST_TEST_MESSAGE(m);
            BOOST_TEST(m.find(path) != std::string::npos, m);
            BOOST_TEST(m.find("tensor " + c.tensor) != std::string::npos, m);
            BOOST_TEST(m.find(c.where) != std::string::npos, m);
        }
    }
}

#if defined(__SANITIZE_ADDRESS__)
#define QF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QF_ASAN 1
#endif
#endif

// Peak resident memory of a child process that quantizes a ~200 MB FP32 container, against
// the file's size: streaming holds about one weight (16 MB FP32) and its copies, never the model.
BOOST_AUTO_TEST_CASE(streaming_quantization_peak_memory) {
#ifdef QF_ASAN
    BOOST_TEST_MESSAGE("skipped under AddressSanitizer: its quarantine and shadow memory make RSS meaningless");
    BOOST_TEST(true);
    return;
#else
    auto c = qtest::tiny_config(3);
    c.dim = 1024;
    c.hidden_dim = 4096;
    c.n_heads = 8;
    c.n_kv_heads = 8;
    c.vocab_size = 256;
    const auto source = tmp("qf_wide_fp32.safetensors"), out = tmp("qf_wide_w4.safetensors");
    {
        const auto w = qtest::random_llama(c, 31);
        llama::write_container(llama::WeightsSource(w, "memory"), source, {});
    }
    const auto file_mb = double(fs::file_size(source)) / (1 << 20);
    const double peak_mb = peak_rss_mb_of([&] { llama::write_container(llama::ContainerSource(source), out, with_rules({{"blk.*", "rtn:w4g128a"}}, 1)); });
    BOOST_TEST_REQUIRE(peak_mb > 0);
    BOOST_TEST_MESSAGE("source " << file_mb << " MB, peak RSS while quantizing " << peak_mb << " MB");
    BOOST_TEST(file_mb > 190.0);
    BOOST_TEST(peak_mb < 0.5 * file_mb);
    const llama::ContainerSource q(out);
    BOOST_TEST(q.layout("blk.2.ffn_down.weight").spec.bits == 4);
    fs::remove(source);
    fs::remove(out);
#endif
}

// ---- calibrated quantization streamed block by block (QuantizingSource) ----

namespace {
/// A source that records which tensors were read, in order (to see what the streaming source
/// reads from its own source, and when).
class LoggingSource : public llama::WeightsSource {
public:
    using WeightsSource::WeightsSource;
    std::vector<float> values(const std::string& name, std::size_t n) const override {
        log.push_back(name);
        return WeightsSource::values(name, n);
    }
    llama::Linear linear(const std::string& name, int rows, int cols) const override {
        log.push_back(name);
        return WeightsSource::linear(name, rows, cols);
    }
    mutable std::vector<std::string> log;
};
}  // namespace

// The container written from a QuantizingSource holds what the in-memory driver makes (every
// block linear's bytes, AWQ's folded norms); the QuantizingSource reads block l+1 from its source
// only after the writer has taken every tensor of block l.
BOOST_AUTO_TEST_CASE(quantizing_source_equals_in_memory_quantization) {
    const auto c = qtest::tiny_config(3);
    const auto w = qtest::random_llama(c, 41);
    const auto tokens = qtest::random_tokens(40, c.vocab_size, 42);
    // the last five keep input channels in FP16 (`,salient=`): the container's salient parts,
    // with the act-order column order stored beside them or implied (ascending); the last one
    // has fewer groups per row than the whole layer would (32 -> 19 columns in groups of 8: the
    // header once counted the scales over all 32)
    for (const char* text : {"gptq:w4g16a,act", "awq:w3g16a", "awq+gptq:w4g16s", "rtn:w4g16a", "gptq:w4g16a,salient=10", "gptq:w3g16a,act,salient=10",
                             "rtn:w4g16a,salient=10", "awq:w3g16a,salient=10", "rtn:w4g8a,salient=40"}) {
        BOOST_TEST_CONTEXT(text) {
            const auto scheme = parse_scheme(text);
            llama::ModelQuantizeOptions mo;
            mo.calibration.backend = Backend::cpu(Isa::scalar, 2);
            const auto expected = llama::quantize_model(w, tokens, scheme, mo);

            const LoggingSource src(w, "memory");
            const llama::QuantizingSource quantizing(src, tokens, scheme, mo);
            auto o = with_rules({}, 2);
            o.progress = [&](std::size_t, std::size_t, const std::string& name) { src.log.push_back("took " + name); };
            const auto path = tmp("qf_quantizing.safetensors");
            llama::write_container(quantizing, path, o);
            const auto back = llama::load_weights(llama::ContainerSource(path));
            for (int l = 0; l < c.n_layers; ++l) {
                const auto& e = expected.layers[std::size_t(l)];
                const auto& g = back.layers[std::size_t(l)];
                BOOST_TEST(g.attention_norm == e.attention_norm, boost::test_tools::per_element());
                BOOST_TEST(g.ffn_norm == e.ffn_norm, boost::test_tools::per_element());
                for (const auto& b : llama::block_linears) {
                    const auto name = llama::block_tensor_name(l, b.gguf);
                    const auto& gl = g.*b.member;
                    const auto& el = e.*b.member;
                    BOOST_TEST(llama::layout_of(gl).format == llama::layout_of(el).format, name);
                    BOOST_TEST(gl.input_order() == el.input_order(), name);
                    BOOST_TEST(bool(gl.wide()) == bool(el.wide()), name);
                    BOOST_TEST(bool(el.wide()) == (scheme.options.salient > 0.0f), name);
                    if (gl.wide() && el.wide()) {
                        BOOST_TEST(gl.wide()->columns == el.wide()->columns, name);
                        BOOST_TEST(gl.wide()->values == el.wide()->values, name);
                    }
                    BOOST_TEST(gl.bytes() == el.bytes(), name);
                    const auto gv = std::get<llama::Fp32Matrix>(llama::dequantized_linear(gl).weights()).data;
                    const auto ev = std::get<llama::Fp32Matrix>(llama::dequantized_linear(el).weights()).data;
                    BOOST_TEST(gv == ev, name << " " << boost::test_tools::per_element());
                }
            }
            const std::vector<int> window(tokens.begin(), tokens.begin() + c.seq_len);
            BOOST_TEST(logits_of(back, window) == logits_of(expected, window), boost::test_tools::per_element());
            // block l+1's first read from the source comes after the writer took block l's last
            // tensor, and after exactly the 9 tensors of each block before it
            const auto at = [&](const std::string& entry) { return std::find(src.log.begin(), src.log.end(), entry) - src.log.begin(); };
            for (int l = 0; l + 1 < c.n_layers; ++l) {
                const auto first_read = at(llama::block_tensor_name(l + 1, "attn_norm"));
                const auto last_taken = at("took " + llama::block_tensor_name(l, "ffn_up"));
                BOOST_TEST(last_taken < first_read);
                BOOST_TEST(first_read < std::ptrdiff_t(src.log.size()));
                const auto reads_before = std::count_if(src.log.begin(), src.log.begin() + first_read,
                                                        [](const std::string& n) { return n.rfind("blk.", 0) == 0; });
                BOOST_TEST(reads_before == 9 * (l + 1));
            }
            fs::remove(path);
        }
    }
}

BOOST_AUTO_TEST_CASE(quantizing_source_errors) {
    const auto c = qtest::tiny_config(3);
    const auto w = qtest::random_llama(c, 43);
    const auto tokens = qtest::random_tokens(20, c.vocab_size, 44);
    const llama::WeightsSource src(w, "memory");
    // blocks in order, once: going back is an error naming the blocks
    const llama::QuantizingSource q(src, tokens, parse_scheme("gptq:w4g16a"));
    q.linear("blk.0.attn_q.weight", c.dim, c.dim);
    q.linear("blk.1.attn_q.weight", c.dim, c.dim);
    q.linear("blk.1.ffn_down.weight", c.dim, c.hidden_dim);  // the current block: kept
    const auto why = qtest::error_of([&] { q.linear("blk.0.attn_k.weight", c.kv_dim(), c.dim); });
    BOOST_TEST(why.find("block 0 was asked for after block 1") != std::string::npos, why);
    BOOST_TEST(qtest::error_of([&] { q.linear("blk.2.attn_q.weight", c.dim, c.hidden_dim); }).find("expected") != std::string::npos);
    // a calibrated method with no tokens; a grid no format stores at this shape (before any block)
    BOOST_TEST(qtest::error_of([&] { llama::QuantizingSource(src, {}, parse_scheme("gptq:w4g16a")); }).find("needs calibration tokens") !=
               std::string::npos);
    const auto shape = qtest::error_of([&] { llama::QuantizingSource(src, tokens, parse_scheme("gptq:iq4nl")); });  // 32-wide blocks, 48 columns
    BOOST_TEST(shape.find("blk.0.ffn_down.weight") != std::string::npos, shape);
}

// Calibrated quantization in the memory of one block: GPTQ on a 2-block and an 8-block model of
// the same width (each block 64 MB in FP32), each in a child process writing a container; the
// deeper model's peak RSS may exceed the shallower one's by less than one block (the in-memory
// driver held the whole model: +6 blocks).
BOOST_AUTO_TEST_CASE(quantizing_source_memory_independent_of_depth) {
#ifdef QF_ASAN
    BOOST_TEST_MESSAGE("skipped under AddressSanitizer: its quarantine and shadow memory make RSS meaningless");
    BOOST_TEST(true);
    return;
#else
    const auto peak_mb = [](int layers) {
        auto c = qtest::tiny_config(layers);
        c.dim = 1024;
        c.hidden_dim = 4096;
        c.n_heads = 8;
        c.n_kv_heads = 8;
        c.vocab_size = 256;
        c.seq_len = 64;
        const auto source = tmp("qf_deep_fp32.safetensors"), out = tmp("qf_deep_gptq.safetensors");
        // the model is made in a child of its own, so the quantizing child inherits none of its memory
        BOOST_TEST_REQUIRE(peak_rss_mb_of([&] { llama::write_container(llama::WeightsSource(qtest::random_llama(c, 51), "memory"), source, {}); }) > 0);
        const double peak = peak_rss_mb_of([&] {
            const llama::ContainerSource src(source);
            llama::ModelQuantizeOptions mo;
            mo.calibration.backend = Backend::cpu(best_isa(), 2);
            const llama::QuantizingSource q(src, qtest::random_tokens(128, c.vocab_size, 52), parse_scheme("gptq:w4g128a"), mo);
            llama::write_container(q, out, with_rules({}, 2));
        });
        BOOST_TEST_REQUIRE(peak > 0);
        BOOST_TEST(llama::ContainerSource(out).scheme(llama::block_tensor_name(layers - 1, "ffn_down")) == "gptq:w4g128a");
        fs::remove(source);
        fs::remove(out);
        return peak;
    };
    const double two = peak_mb(2), eight = peak_mb(8);
    BOOST_TEST_MESSAGE("GPTQ, 64 MB FP32 blocks: peak RSS " << two << " MB for 2 blocks, " << eight << " MB for 8");
    BOOST_TEST(eight < two + 48.0);
    BOOST_TEST(two < 8 * 64.0);  // far below the 8-block model's FP32 weights
#endif
}

BOOST_AUTO_TEST_SUITE_END()
