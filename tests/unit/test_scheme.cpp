#include "common.hpp"
#include "qforge/io/scheme_map.hpp"
#include "qforge/quantizers/registry.hpp"

using namespace qforge;
BOOST_AUTO_TEST_SUITE(test_scheme)

BOOST_AUTO_TEST_CASE(compile_time_scheme_text_and_spec) {
    using S = Scheme<Rtn, Int<4>, Group<128>, Asym>;
    static_assert(S::spec == QuantSpec{4, 128, ZeroPoint::integer, ScaleType::f16});
    BOOST_TEST(S::text() == "rtn:w4g128a");
    BOOST_TEST((Scheme<Rtn, Int<3>, PerChannel, Sym>::text() == "rtn:w3s"));
    BOOST_TEST((Scheme<Rtn, Int<2>, Group<64>, AsymMin, Clip>::text() == "rtn:w2g64m,clip"));
}

BOOST_AUTO_TEST_CASE(text_round_trips) {
    for (const char* t : {"rtn:w4g128a", "rtn:w3s", "rtn:w2g64m,clip", "rtn:w8g32s", "rtn:w4g32s,clip"}) {
        const RuntimeScheme s = parse_scheme(t);
        BOOST_TEST(to_string(s) == t);
        BOOST_TEST((parse_scheme(to_string(s)) == s));
    }
    // the compile-time and run-time routes give the same scheme
    BOOST_TEST((parse_scheme("rtn:w2g64m,clip") == Scheme<Rtn, Int<2>, Group<64>, AsymMin, Clip>::runtime()));
}

BOOST_AUTO_TEST_CASE(defaults) {
    const RuntimeScheme s = parse_scheme("rtn:w4g128");
    BOOST_TEST((s.spec.zero == ZeroPoint::integer));
    BOOST_TEST((s.spec.scale_type == ScaleType::f16));
    BOOST_TEST(!s.options.clip);
    BOOST_TEST(to_string(s) == "rtn:w4g128a");
    BOOST_TEST(parse_scheme("rtn:w3").spec.per_channel());
}

BOOST_AUTO_TEST_CASE(bad_text_is_a_clear_error) {
    for (const char* t : {"", "w4g128", ":w4", "gptx:w4", "rtn:", "rtn:4", "rtn:w5g128", "rtn:w4g0", "rtn:w4g-3",
                          "rtn:w4g", "rtn:wg128", "rtn:w4g128x", "rtn:w4g128a,bogus", "rtn:w4g128aa", "rtn:w4g99999999999",
                          "rtn:w4g128a,"}) {
        BOOST_CHECK_EXCEPTION(parse_scheme(t), InvalidArgument, [&](const InvalidArgument& e) {
            const std::string msg = e.what();
            return msg.find("bad scheme '" + std::string(t) + "'") != std::string::npos;
        });
    }
    // a repeated option is refused, not silently dropped (a new user's rtn:nf4g64,dq,dq ran as rtn:nf4g64,dq)
    for (const char* t : {"rtn:nf4g64,dq,dq", "rtn:w4g32m,clip,clip", "gptq:w4g128a,act,act", "gptq:w4g128a,damp=0.1,damp=0.2"})
        BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([&] { parse_scheme(t); }), {"given twice"}), t);
    try {
        parse_scheme("rtn:w5g128");
    } catch (const InvalidArgument& e) {
        BOOST_TEST(std::string(e.what()).find("unsupported bit width 5") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(spec_groups) {
    const QuantSpec g128{4, 128};
    BOOST_TEST(g128.groups_per_row(576) == 5);   // SmolLM2's dim: 4 full groups + one of 64
    BOOST_TEST(g128.group_length(576) == 128);
    BOOST_TEST(g128.group_length(64) == 64);     // group >= row: one group per row
    BOOST_TEST(g128.groups_per_row(64) == 1);
    const QuantSpec g64{4, 64};
    BOOST_TEST(g64.groups_per_row(172) == 3);    // stories260K's hidden dim: 64, 64, 44
    BOOST_CHECK_THROW((QuantSpec{5, 32}.validate()), InvalidArgument);
    BOOST_CHECK_THROW((QuantSpec{4, -1}.validate()), InvalidArgument);
    BOOST_CHECK_THROW((QuantSpec{4, QuantSpec::max_group_size + 1}.validate()), InvalidArgument);
}

BOOST_AUTO_TEST_CASE(gptq_scheme_text) {
    using G = Scheme<Gptq, Int<4>, Group<128>, Asym, ActOrder>;
    BOOST_TEST(G::text() == "gptq:w4g128a,act");
    BOOST_TEST(G::options.act_order);
    BOOST_TEST(!G::options.static_groups);
    using GS = Scheme<Gptq, Int<3>, PerChannel, Sym, ActOrder, StaticGroups>;
    BOOST_TEST(GS::text() == "gptq:w3s,act,static");
    const auto d = parse_scheme("gptq:w2g64a,damp=0.05,act");
    BOOST_TEST(d.options.damp == 0.05f);
    BOOST_TEST(to_string(d) == "gptq:w2g64a,act,damp=0.05");
    BOOST_TEST((parse_scheme(to_string(d)) == d));
    BOOST_TEST(to_string(parse_scheme("gptq:w4g128a,damp=0.01")) == "gptq:w4g128a");  // the default is not written
    for (const char* bad : {"rtn:w4g128a,act", "rtn:w4,static", "rtn:w4,damp=0.1", "gptq:w4,damp=2", "gptq:w4,damp=", "gptq:w4,damp=x",
                            "gptq:w4,damp=nan"}) {
        BOOST_CHECK_THROW(parse_scheme(bad), InvalidArgument);
    }
}

// Regression (cases 2026-11-30 row 12): the grammar offered ",f32" (fp32 scales), which no packed
// format can store, so every command then failed with "dense4 stores fp16 scales". An option no
// format can store is not in the grammar: it is refused when parsed, saying why.
BOOST_AUTO_TEST_CASE(no_option_that_no_format_can_store) {
    BOOST_CHECK_EXCEPTION(parse_scheme("rtn:w4g32a,f32"), InvalidArgument, [](const InvalidArgument& e) {
        return std::string(e.what()).find("'f32' is not offered") != std::string::npos;
    });
    // every scheme the grammar accepts has fp16 scales, which every packed format stores
    for (const char* t : {"rtn:w4g32a", "rtn:w2g64m,clip", "gptq:w3g128a,act,static,damp=0.1", "awq:w4g128s"})
        BOOST_TEST((parse_scheme(t).spec.scale_type == ScaleType::f16));
}

// A GGUF block type names its own grid (Q4_0: 4-bit symmetric, Q4_1: 4-bit float minimum, Q8_0:
// 8-bit symmetric; groups of 32, fp16 scales) and the one format it packs into.
BOOST_AUTO_TEST_CASE(gguf_block_grids) {
    const struct {
        const char* text;
        int bits;
        ZeroPoint zero;
    } cases[] = {{"rtn:q4_0", 4, ZeroPoint::symmetric}, {"rtn:q4_1", 4, ZeroPoint::float_min}, {"gptq:q8_0,act,static", 8, ZeroPoint::symmetric}};
    for (const auto& c : cases) {
        const RuntimeScheme s = parse_scheme(c.text);
        BOOST_TEST(to_string(s) == c.text);
        BOOST_TEST((parse_scheme(to_string(s)) == s));
        BOOST_TEST(s.spec.bits == c.bits);
        BOOST_TEST(s.spec.group_size == 32);
        BOOST_TEST((s.spec.zero == c.zero));
        BOOST_TEST(s.spec.block == std::string_view(c.text).substr(std::string_view(c.text).find(':') + 1, 4));
    }
    // the same numbers without the name are qforge's grid, packed densely
    BOOST_TEST(parse_scheme("rtn:w4g32s").spec.block.empty());
    BOOST_TEST(!(parse_scheme("rtn:w4g32s") == parse_scheme("rtn:q4_0")));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:q4_0g64"); }), {"GGUF block type", "group 32", "'g64'"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:q4_0s"); }), {"GGUF block type", "'s'"}));
    // act-order's dynamic groups cannot be stored in a block type: ',static' is asked for, not assumed
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("gptq:q4_0,act"); }), {"gptq:q4_0,act,static"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:q7_0"); }), {"q4_0, q4_1, q8_0", "q4_k", "q5_0"}));
    // the K-quants' two-level grids and the 5-bit blocks
    for (const char* t : {"rtn:q2_k", "rtn:q3_k", "gptq:q4_k,act,static", "rtn:q5_k,clip", "gptq:q6_k", "rtn:q5_0", "awq:q5_1"}) {
        const RuntimeScheme s = parse_scheme(t);
        BOOST_TEST(to_string(s) == t);
        BOOST_TEST((parse_scheme(to_string(s)) == s));
    }
    const auto k4 = parse_scheme("rtn:q4_k").spec;
    BOOST_TEST_REQUIRE(k4.super != nullptr);
    BOOST_TEST(k4.super->weights == 256);
    BOOST_TEST(k4.group_size == 32);
    BOOST_TEST((k4.zero == ZeroPoint::float_min));
    const auto k6 = parse_scheme("rtn:q6_k").spec;
    BOOST_TEST(k6.bits == 6);
    BOOST_TEST(k6.group_size == 16);
    BOOST_TEST((k6.zero == ZeroPoint::symmetric));
    BOOST_TEST(parse_scheme("rtn:q5_0").spec.super == nullptr);
    BOOST_TEST(qtest::has_all(qtest::error_of<InvalidArgument>([] { parse_scheme("rtn:w5g32s"); }), {"unsupported bit width 5"}));
}

// Product-quantization grids (`pq<d>n<n>g<g>[c8]`): text and compile-time routes agree, the text
// round-trips, and what PQ cannot honour is refused with the reason.
BOOST_AUTO_TEST_CASE(pq_grids) {
    const RuntimeScheme s = parse_scheme("gptq:pq2n64g1024");
    BOOST_TEST_REQUIRE(s.pq.has_value());
    BOOST_TEST((*s.pq == PqSpec{2, 64, 1024, 16}));
    BOOST_TEST((s.spec == QuantSpec{}));  // the scalar grid is unused
    BOOST_TEST((parse_scheme("rtn:pq4n256g2048c8").pq == PqSpec{4, 256, 2048, 8}));
    for (const char* t : {"gptq:pq2n64g1024", "gptq:pq2n64g1024c8", "rtn:pq4n256g2048", "gptq:pq2n64g1024,had", "gptq:pq1n16g64,damp=0.1"}) {
        BOOST_TEST(to_string(parse_scheme(t)) == t);
        BOOST_TEST((parse_scheme(to_string(parse_scheme(t))) == parse_scheme(t)));
    }
    BOOST_TEST((Scheme<Gptq, Pq<2, 64, 1024>>::runtime() == parse_scheme("gptq:pq2n64g1024")));
    BOOST_TEST((Scheme<Rtn, Pq<4, 256, 2048, 8>, PerChannel, Asym, Hadamard>::text() == "rtn:pq4n256g2048c8,had"));
    BOOST_TEST(!parse_scheme("gptq:w4g128a").pq.has_value());
    const std::vector<std::pair<const char*, const char*>> bad{
        {"awq:pq2n64g1024", "for rtn (plain PQ) and gptq"},
        {"gptq:pq2n64g1000", "multiple of 64"},
        {"gptq:pq2n1g1024", "codebook size n"},
        {"gptq:pq0n64g1024", "sub-vector length d"},
        {"gptq:pq2n64", "pq<d>n<n>g<g>"},
        {"gptq:pq2g1024", "pq<d>n<n>g<g>"},
        {"gptq:pq2n64g1024x", "only 'c8'"},
        {"gptq:pq2n64g1024c16", "only 'c8'"},
        {"gptq:pq2n64g1024,act", "options had and damp= only"},
        {"rtn:pq2n64g1024,clip", "options had and damp= only"},
    };
    for (const auto& [t, why] : bad) {
        const std::string e = qtest::error_of<InvalidArgument>([&] { parse_scheme(t); });
        BOOST_TEST(qtest::has_all(e, {"bad scheme", why, "e.g. gptq:pq2n64g1024"}), t);  // a PQ example, not the scalar grids'
        BOOST_TEST(e.find("rtn:w4g128a") == std::string::npos, t);
    }
}

// Per-tensor scheme maps (io/scheme_map.hpp): written and read back equal, other keys kept, and
// every malformed file refused naming the file and the key or tensor.
BOOST_AUTO_TEST_CASE(scheme_maps_round_trip_and_refuse_bad_files) {
    io::SchemeMap m;
    m.scheme = parse_scheme("gptq:w3g128a");
    m.tensors["blk.0.attn_v.weight"] = parse_scheme("gptq:w4g128a");
    m.tensors["blk.1.ffn_down.weight"] = parse_scheme("gptq:pq2n64g1024c8");
    m.extra.emplace_back("budget_bpw", io::Json(3.5));
    const std::string text = io::scheme_map_json(m);
    const auto back = io::parse_scheme_map(text, "m.json");
    BOOST_TEST((back.scheme == m.scheme));
    BOOST_TEST((back.tensors == m.tensors));
    BOOST_TEST(back.extra.size() == 1u);
    BOOST_TEST(back.extra[0].second.as_double() == 3.5);
    BOOST_TEST(io::scheme_map_json(back) == text);
    const std::string head = R"({"format": "qforge.scheme_map", "version": 1, )";
    const std::vector<std::pair<std::string, std::vector<std::string>>> bad{
        {"not json", {"m.json", "not a scheme map"}},
        {"[1]", {"m.json", "not a JSON object"}},
        {R"({"format": "gguf", "version": 1, "scheme": "rtn:w4g32a"})", {"\"format\""}},
        {R"({"format": "qforge.scheme_map", "version": 2, "scheme": "rtn:w4g32a"})", {"\"version\" must be 1"}},
        {head + "\"tensors\": {}}", {"\"scheme\"", "expected a scheme string"}},
        {head + "\"scheme\": 4}", {"\"scheme\"", "expected a scheme string"}},
        {head + "\"scheme\": \"rtn:w5g32a\"}", {"\"scheme\"", "unsupported bit width 5"}},
        {head + "\"scheme\": \"rtn:w4g32a\", \"tensors\": [1]}", {"\"tensors\" must be an object"}},
        {head + "\"scheme\": \"rtn:w4g32a\", \"tensors\": {\"blk.0.attn_q.weight\": \"awq:pq2n64g1024\"}}", {"tensor 'blk.0.attn_q.weight'", "for rtn (plain PQ) and gptq"}},
        {head + "\"scheme\": \"rtn:w4g32a\", \"tensors\": {\"blk.0.attn_q.weight\": \"rtn:w8g32a\", \"blk.0.attn_q.weight\": \"rtn:w2g32a\"}}", {"listed twice"}},
    };
    for (const auto& [t, parts] : bad) {
        const std::string msg = qtest::error_of<FileError>([&] { io::parse_scheme_map(t, "m.json"); });
        BOOST_TEST(msg.find("m.json") != std::string::npos, t << ": " << msg);
        for (const auto& p : parts) BOOST_TEST(msg.find(p) != std::string::npos, t << ": lacks '" << p << "': " << msg);
    }
    BOOST_TEST(qtest::has_all(qtest::error_of<FileError>([&] { io::read_scheme_map("/nonexistent/map.json"); }), {"/nonexistent/map.json", "cannot open"}));
    BOOST_TEST(qtest::has_all(qtest::error_of<FileError>([&] { io::read_scheme_map("/tmp"); }), {"/tmp", "is a directory"}));
}

BOOST_AUTO_TEST_SUITE_END()
