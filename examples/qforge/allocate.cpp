// `qforge allocate`: the sensitivity table of a model (each block, optionally each linear, quantized
// alone with each candidate scheme: measured KL and the cheap proxies, with how well each proxy
// ranks units like the measured KL; or a table saved by --save-table, read with --table), then a
// bit allocation per --target-bpw, written as a per-tensor scheme map and checked by quantizing
// the model from that map and measuring it.
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <qforge/io/scheme_map.hpp>
#include <qforge/metrics/rank_correlation.hpp>
#include <qforge/models/llama/size.hpp>
#include <qforge/pipelines/llama/allocate.hpp>
#include <qforge/pipelines/llama/quantize_model.hpp>
#include <qforge/pipelines/llama/sensitivity_file.hpp>

#include "commands.hpp"
#include "model.hpp"
#include "plot.hpp"

namespace cli {
namespace {

struct AllocateCliOptions {
    ModelOptions model;
    CalibOptions calib;
    std::string text, unit = "block", loss = "auto", solver = "exact", out, svg, anchor, table, save_table;
    long kl_tokens = 256;
    bool kl_tokens_given = false;  ///< asked for: more than the calibration holds is refused, not capped
    std::vector<std::string> candidates;
    std::vector<double> budgets;
    bool measure_linears = false, proxy_only = false, no_verify = false, json = false;
    int threads = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

/// A budget as text: the shortest form that reads back as the same double ("3.203125", not
/// "%g"'s "3.20312", which named another budget's file; "3.50" is "3.5", "4.0" is "4").
// a loss as the table prints it
std::string fixed5(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.5f", v);
    return b;
}

std::string budget_text(double bpw) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, bpw);
    return std::string(buf, r.ptr);
}

/// `--out` for budget b: the path, with "{bpw}" replaced by the budget ("3.5") when it holds one.
std::string map_path(const std::string& out, double bpw) {
    const auto at = out.find("{bpw}");
    if (at == std::string::npos) return out;
    return out.substr(0, at) + budget_text(bpw) + out.substr(at + 5);
}

/// The candidate schemes of --candidates: comma-separated, where a piece without a method
/// (`act`, `salient=1`) is an option of the scheme before it (`gptq:w4g128a,salient=1`).
std::vector<std::string> candidate_texts(const std::vector<std::string>& args) {
    std::vector<std::string> out;
    for (const auto& arg : args) {
        std::size_t at = 0;
        bool first = true;
        while (at <= arg.size()) {
            const std::size_t comma = std::min(arg.find(',', at), arg.size());
            const std::string piece = arg.substr(at, comma - at);
            if (first || piece.find(':') != std::string::npos || out.empty()) out.push_back(piece);
            else out.back() += "," + piece;
            first = false;
            at = comma + 1;
        }
    }
    return out;
}

/// ρ of `proxy` against the measured KL over the (unit, candidate) pairs of `units`.
double rho(const std::vector<const qforge::llama::UnitLoss*>& units, const char* proxy) {
    std::vector<double> a, b;
    for (const auto* u : units)
        if (!std::isnan(u->kl) && !std::isnan(qforge::llama::loss_value(*u, proxy))) a.push_back(qforge::llama::loss_value(*u, proxy)), b.push_back(u->kl);
    return a.size() < 2 ? std::numeric_limits<double>::quiet_NaN() : qforge::spearman(a, b);
}

int run_allocate(const AllocateCliOptions& opt) {
    using namespace qforge::llama;
    const auto start = std::chrono::steady_clock::now();
    std::vector<qforge::RuntimeScheme> candidates;
    for (const auto& text : candidate_texts(opt.candidates)) {  // fail before any work, naming the option
        try {
            candidates.push_back(qforge::parse_scheme(text));
        } catch (const qforge::InvalidArgument& e) {
            throw CLI::ValidationError("--candidates", e.what());
        }
        for (std::size_t i = 0; i + 1 < candidates.size(); ++i)
            if (candidates[i] == candidates.back())
                throw CLI::ValidationError("--candidates", qforge::to_string(candidates.back()) + " is given twice");
    }
    for (std::size_t i = 0; i < opt.budgets.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
            if (opt.budgets[i] == opt.budgets[j]) throw CLI::ValidationError("--target-bpw", budget_text(opt.budgets[i]) + " is given twice");
    // --table: the saved table instead of measuring one (its candidates; --candidates, if given, must be them)
    std::optional<SensitivityFile> saved;
    if (!opt.table.empty()) {
        const char* measuring = opt.measure_linears ? "--measure-linears" : opt.proxy_only ? "--proxy-only" : !opt.anchor.empty() ? "--anchor"
                                : !opt.save_table.empty() ? "--save-table" : nullptr;
        if (measuring) throw CLI::ValidationError("--table", std::string(measuring) + " says how to measure a table; --table reads one (" + opt.table + ")");
        saved = read_sensitivity_file(opt.table);
        if (!candidates.empty() && candidates != saved->table.candidates) {
            std::string have;
            for (const auto& c : saved->table.candidates) have += (have.empty() ? "" : ",") + qforge::to_string(c);
            throw CLI::ValidationError("--candidates", "the table " + opt.table + " was measured for the candidates " + have + "; leave --candidates out or give those");
        }
        candidates = saved->table.candidates;
    }
    if (candidates.empty())
        for (const char* s : {"gptq:w2g64a", "gptq:w3g128a", "gptq:w4g128a", "gptq:w8g128s"}) candidates.push_back(qforge::parse_scheme(s));
    for (const auto& c : candidates) {
        if (c.method != candidates.front().method)
            throw CLI::ValidationError("--candidates", qforge::to_string(candidates.front()) + " and " + qforge::to_string(c) +
                                                           " have different methods: a scheme map has one method (its tensors change the grid)");
        const auto& info = qforge::method_of(c);
        if (info.needs_targets)
            throw CLI::ValidationError("--candidates", qforge::to_string(c) + ": " + std::string(info.name) +
                                                           " needs neuron targets; candidates are rtn:, gptq:, awq: or awq+gptq: schemes");
    }
    // AWQ stores W diag(s), its scales shared within a group and folded into the norms: no linear
    // is quantized alone and W − Ŵ is no error of it, so only whole blocks and their measured KL
    const bool scaled = qforge::method_of(candidates.front()).pipeline == qforge::Pipeline::activation_scaled;
    if (scaled) {
        const std::string given = opt.unit != "block"                       ? "--unit " + opt.unit
                                  : opt.measure_linears                     ? std::string("--measure-linears")
                                  : opt.loss != "auto" && opt.loss != "kl" && opt.loss != "anchored" && opt.loss != "block_output" ? "--loss " + opt.loss
                                  : opt.proxy_only && opt.loss != "block_output" ? std::string("--proxy-only without --loss block_output")
                                                                            : std::string();
        if (!given.empty())
            throw CLI::ValidationError("--candidates", qforge::to_string(candidates.front()) + " with " + given +
                                                           ": an activation-scaled method's blocks are measured whole (--unit block; --loss kl, "
                                                           "anchored or block_output; no --measure-linears)");
    }
    const AllocationUnitKind unit = opt.unit == "block" ? AllocationUnitKind::block : AllocationUnitKind::linear;
    const std::string loss = opt.loss != "auto"                                                             ? opt.loss
                             : opt.proxy_only                                                                  ? "output"
                             : opt.measure_linears                                                           ? "kl"
                             : unit == AllocationUnitKind::block                                             ? "anchored"
                                                                                                             : "kl_split";
    if (loss == "kl" && unit == AllocationUnitKind::linear && !opt.measure_linears)
        throw CLI::ValidationError("--loss", "kl per linear needs --measure-linears (7x the blocks' cost), or use a proxy (--loss output)");
    if (loss == "kl_split" && unit != AllocationUnitKind::linear) throw CLI::ValidationError("--loss", "kl_split is for --unit linear");
    if (opt.proxy_only && (loss == "kl" || loss == "kl_split" || loss == "anchored" || opt.measure_linears))
        throw CLI::ValidationError("--proxy-only", "measures no KL: give a proxy as --loss (output, hessian_diag, weight, block_output) and no --measure-linears");
    if ((loss == "anchored" || loss == "block_output") && unit != AllocationUnitKind::block)
        throw CLI::ValidationError("--loss", loss + " is a block's measure: use it with --unit block");
    int anchor = -1;
    if (!opt.anchor.empty()) {
        qforge::RuntimeScheme a;
        try {
            a = qforge::parse_scheme(opt.anchor);
        } catch (const qforge::InvalidArgument& e) {
            throw CLI::ValidationError("--anchor", e.what());
        }
        for (std::size_t k = 0; k < candidates.size(); ++k)
            if (candidates[k] == a) anchor = int(k);
        if (anchor < 0) throw CLI::ValidationError("--anchor", qforge::to_string(a) + " is not one of the candidates");
        if (opt.proxy_only) throw CLI::ValidationError("--anchor", "--proxy-only measures no KL, the anchor's neither");
    }

    if (opt.budgets.size() > 1 && !opt.out.empty() && opt.out.find("{bpw}") == std::string::npos)
        throw CLI::ValidationError("--out", "several --target-bpw: the path must hold {bpw} (one map per budget)");

    auto model = Model::open(opt.model);
    const qforge::Backend backend = qforge::Backend::best_cpu(opt.threads);
    const std::string text_path = opt.text.empty() ? data_dir() + "/eval/wikitext-2-raw/wiki.test.raw" : opt.text;
    // after eval's default slice (16384 tokens), so a default `qforge eval` never scores calibration text
    const auto calib = calibration_tokens(opt.calib, model, text_path, 16384);
    const Weights reference = dequantized_weights(model.weights(), backend);

    CalibrationOptions co;
    co.sequence_length = std::min(512, reference.config.seq_len);
    co.backend = backend;
    Progress trace_bar("reference trace");
    co.progress = [&](long done, long total) { trace_bar.update(double(done), double(total)); };
    if (opt.kl_tokens_given && opt.kl_tokens > long(calib.size()))
        throw CLI::ValidationError("--kl-tokens", std::to_string(opt.kl_tokens) + " is more than the " + std::to_string(calib.size()) +
                                                      " calibration tokens (0 measures on all of them)");
    const int L = reference.config.n_layers;
    if (saved) {  // the table must be of this model's blocks, and a verified KL on the table's tokens
        check_table_fits(*saved, reference, opt.table, model.path());
        if (opt.kl_tokens_given && opt.kl_tokens != saved->kl_tokens)
            throw CLI::ValidationError("--kl-tokens", "the table " + opt.table + " was measured on the first " + std::to_string(saved->kl_tokens) +
                                                          " calibration tokens; leave --kl-tokens out or give that");
        if (!opt.no_verify && (long(calib.size()) != saved->calibration_tokens || qforge::llama::token_hash(calib) != saved->calibration_hash))
            throw CLI::ValidationError("--table", "the table " + opt.table + " was measured on other calibration tokens (" + std::to_string(saved->calibration_tokens) +
                                                      ") than this run's (" + std::to_string(calib.size()) +
                                                      "): the measured KL of a map would not compare with its prediction. Give the same --calib, "
                                                      "--calib-tokens and --calib-skip, or --no-verify");
    }
    // the reference's distributions only where a KL is measured: the head and 4 · vocab bytes per
    // position; a read table needs the trace only to verify its allocations
    std::optional<ReferenceTrace> trace;
    if (!saved || !opt.no_verify) trace.emplace(reference, calib, co, saved ? saved->kl_tokens : opt.kl_tokens);
    trace_bar.finish();
    const double trace_s = seconds_since(start);

    // every budget checked against the smallest choice before the table (minutes on a real model):
    // the blocks share their shapes, so block 0 quantized with each candidate gives every block's bytes
    if (saved) {
        anchor = saved->anchor;
    } else {
        const BlockStats stats0 = trace->block_stats(0);
        const BlockHessians h0 = block_hessians(stats0);
        // the candidates side by side, each on one thread, sharing the block's factors and
        // transforms, as the table quantizes them (the same bits on any thread count)
        qforge::QuantizeSettings qs;
        qs.backend = backend;
        qs.gptq_factor_cache = std::make_shared<qforge::detail::GptqFactorCache>();
        qs.hadamard_cache = std::make_shared<qforge::detail::HadamardCache>();
        const auto one = candidates.size() > 1 ? qforge::llama::one_thread_cpu(backend) : std::nullopt;
        if (one) qs.backend = *one;
        std::vector<Layer> block0(candidates.size());
        qforge::parallel_for(candidates.size(), one ? backend.threads() : 1, [&](std::size_t k0, std::size_t k1) {
            for (std::size_t k = k0; k < k1; ++k) block0[k] = quantize_block_alone(reference.layers[0], 0, reference.config, stats0, h0, candidates[k], qs);
        });
        std::array<std::uint64_t, 7> least_linear;
        least_linear.fill(std::numeric_limits<std::uint64_t>::max());
        std::uint64_t least_block = std::numeric_limits<std::uint64_t>::max(), params = 0;
        std::vector<std::uint64_t> block0_bytes;
        for (const Layer& q : block0) {
            std::uint64_t block = 0;
            for (std::size_t i = 0; i < block_linears.size(); ++i) {
                const std::uint64_t b = (q.*block_linears[i].member).bytes();
                block += b;
                least_linear[i] = std::min(least_linear[i], b);
            }
            least_block = std::min(least_block, block);
            block0_bytes.push_back(block);
        }
        params = layer_params(reference.layers[0]);
        std::uint64_t least = 0;
        for (const auto v : least_linear) least += v;
        least = std::uint64_t(reference.config.n_layers) * (unit == AllocationUnitKind::block ? least_block : least);
        params *= std::uint64_t(reference.config.n_layers);
        // the default anchor: the narrowest candidate, whose larger errors its KL measures best
        // (docs/mixed.md: it allocated within 6% of the fully measured table on SmolLM2)
        if (anchor < 0 && !opt.proxy_only) anchor = int(std::min_element(block0_bytes.begin(), block0_bytes.end()) - block0_bytes.begin());
        for (const double target : opt.budgets)
            if (std::uint64_t(std::floor(target * double(params) / 8.0)) < least) {
                char buf[160];
                std::snprintf(buf, sizeof buf, " bits per weight is below the smallest choice (%.4f bpw, every %s at its smallest candidate)",
                              8.0 * double(least) / double(params), opt.unit.c_str());
                throw CLI::ValidationError("--target-bpw", budget_text(target) + buf);
            }
    }

    const long kl_tokens = trace ? trace->kl_tokens() : saved->kl_tokens;
    SensitivityOptions so;
    so.measure_linears = opt.measure_linears;
    // the anchored loss measures the anchor's KL only: that is its saving
    so.measure_blocks = !opt.proxy_only && loss != "anchored";
    so.anchor = anchor;
    so.kl_tokens = opt.kl_tokens;
    // the per-linear proxies when a loss or a rank correlation reads them (not for the anchored loss)
    so.proxies = loss != "anchored" && loss != "block_output";
    so.settings.backend = backend;
    Progress bar("sensitivity");
    so.progress = [&](long done, long total, const std::string& what) { bar.update(double(done), double(total), what); };
    so.note = [&](const std::string& line) {
        bar.finish();
        std::fprintf(stderr, "%s\n", line.c_str());
    };
    const auto table_start = std::chrono::steady_clock::now();
    const SensitivityTable table = saved ? saved->table : measure_sensitivity(*trace, candidates, so);
    bar.finish();
    const double table_s = seconds_since(table_start);
    const std::size_t K = candidates.size();
    if (!opt.save_table.empty())
        write_sensitivity_file(opt.save_table, {table, model.path(), long(calib.size()), kl_tokens, token_hash(calib), anchor});
    // every block's KL measured for every candidate (ρ is defined): --loss kl, or a table saved from one
    bool all_kl = true;
    for (const auto& per : table.block)
        for (const auto& u : per) all_kl = all_kl && !std::isnan(u.kl);
    const bool rho_defined = saved ? all_kl : so.measure_blocks;
    const long calib_count = saved ? saved->calibration_tokens : long(calib.size());  // the table's

    // how well each proxy ranks like the measured KL
    std::vector<const UnitLoss*> blocks_all, linears_all;
    for (std::size_t k = 0; k < K; ++k)
        for (int l = 0; l < L; ++l) {
            blocks_all.push_back(&table.block[k][std::size_t(l)]);
            for (const auto& u : table.linear[k][std::size_t(l)]) linears_all.push_back(&u);
        }
    const char* proxies[] = {"output", "hessian_diag", "weight", "block_output", "anchored"};

    qforge::io::Json::Array allocations_json;
    struct Done {
        double target, bpw, predicted, measured, gap;
        bool exact;
        std::string path;
        BitAllocation a;
    };
    std::vector<Done> done;
    for (const double target : opt.budgets) {
        AllocationRequest r;
        r.target_bpw = target;
        r.unit = unit;
        r.loss = loss;
        r.lagrangian = opt.solver == "lagrangian";
        BitAllocation a;
        try {
            a = allocate_bits(table, r);
        } catch (const qforge::InvalidArgument& e) {
            throw qforge::InvalidArgument("--target-bpw " + budget_text(target) + ": " + e.what());
        }
        double measured = std::numeric_limits<double>::quiet_NaN();
        if (!opt.no_verify) {
            Progress qbar("quantize map");
            auto mo = model_quantize_options(reference.config, a.map.scheme, opt.calib, backend, qbar);
            mo.tensor_schemes = a.map.tensors;
            const Weights q = qforge::llama::quantize_model(reference, calib, a.map.scheme, mo, model.path());
            qbar.finish();
            if (block_bytes(q) != a.allocation.bytes)
                throw qforge::InvalidData("allocation: the quantized model holds " + std::to_string(block_bytes(q)) + " bytes, the allocation counted " +
                                          std::to_string(a.allocation.bytes));
            measured = trace->kl_of(q);
        }
        qforge::io::Json::Array units;
        for (std::size_t u = 0; u < a.units.size(); ++u) {
            const int k = a.allocation.choice[u];
            units.push_back(JsonObject()
                                .add("unit", a.units[u].name)
                                .add("scheme", qforge::to_string(candidates[std::size_t(k)]))
                                .add("loss", a.units[u].candidates[std::size_t(k)].loss)
                                .add("bytes", std::int64_t(a.units[u].candidates[std::size_t(k)].bytes))
                                .json());
        }
        const auto summary = JsonObject()
                                 .add("target_bpw", target)
                                 .add("bpw", a.bpw())
                                 .add("budget_bytes", std::int64_t(a.budget_bytes))
                                 .add("bytes", std::int64_t(a.allocation.bytes))
                                 .add("unit", opt.unit)
                                 .add("loss", loss)
                                 .add("solver", a.allocation.exact ? "exact" : "lagrangian")
                                 .add("predicted_loss", a.allocation.loss)
                                 .add("lower_bound", a.allocation.lower_bound)
                                 .add("measured_kl", measured)
                                 .add("calibration_tokens", std::int64_t(calib_count))
                                 .add("kl_tokens", std::int64_t(kl_tokens))
                                 .add("anchor", anchor < 0 ? qforge::io::Json() : qforge::io::Json(qforge::to_string(candidates[std::size_t(anchor)])))
                                 .add("units", qforge::io::Json(std::move(units)))
                                 .json();
        a.map.extra.emplace_back("allocation", summary);
        const std::string path = opt.out.empty() ? std::string() : map_path(opt.out, target);
        allocations_json.push_back(summary);
        done.push_back({target, a.bpw(), a.allocation.loss, measured, a.allocation.gap(), a.allocation.exact, path, std::move(a)});
    }
    for (const auto& d : done)  // every allocation succeeded: now the files
        if (!d.path.empty()) qforge::io::write_scheme_map(d.path, d.a.map);
    const double total_s = seconds_since(start);

    if (!opt.svg.empty()) {
        HeatMap m;
        m.title = "Sensitivity per block: " + std::filesystem::path(model.path()).filename().string();
        const std::string what = loss == "kl" || loss == "kl_split" ? "mean KL (nats) with only that block quantized"
                                 : loss == "anchored" ? "mean KL (nats) with only that block quantized (measured for " +
                                                            qforge::to_string(candidates[std::size_t(anchor)]) + ", estimated for the others)"
                                                      : "proxy '" + loss + "' of the block";
        m.value_label = what + (unit == AllocationUnitKind::block && !done.empty() ? "; outlined: the allocation at " + budget_text(done.front().target) + " bpw" : "");
        for (int l = 0; l < L; ++l) m.row_labels.push_back("blk." + std::to_string(l));
        for (const auto& c : candidates) m.column_labels.push_back(qforge::to_string(c));
        for (int l = 0; l < L; ++l)
            for (std::size_t k = 0; k < K; ++k) {
                m.values.push_back(loss_value(table.block[k][std::size_t(l)], loss == "kl_split" ? "kl" : loss));
                if (unit == AllocationUnitKind::block && !done.empty()) m.marked.push_back(done.front().a.allocation.choice[std::size_t(l)] == int(k));
            }
        write_heat_map(opt.svg, m);
    }

    if (opt.json) {
        qforge::io::Json::Array blocks;
        for (int l = 0; l < L; ++l) {
            qforge::io::Json::Array per;
            for (std::size_t k = 0; k < K; ++k) {
                const auto& u = table.block[k][std::size_t(l)];
                per.push_back(JsonObject()
                                  .add("scheme", qforge::to_string(candidates[k]))
                                  .add("kl", u.kl)
                                  .add("output", u.output)
                                  .add("hessian_diag", u.hessian_diag)
                                  .add("weight", u.weight)
                                  .add("block_output", u.block_output)
                                  .add("anchored", u.anchored)
                                  .add("bytes", std::int64_t(u.bytes))
                                  .json());
            }
            blocks.push_back(JsonObject().add("block", l).add("candidates", qforge::io::Json(std::move(per))).json());
        }
        // ρ only where every candidate's KL was measured (the anchored loss measures the anchor's alone)
        JsonObject spearman_json;
        if (rho_defined) {
            for (const char* p : proxies) spearman_json.add(std::string("blocks_") + p, rho(blocks_all, p));
            if (opt.measure_linears)
                for (const char* p : proxies) spearman_json.add(std::string("linears_") + p, rho(linears_all, p));
        }
        print_json(JsonObject()
                       .add("model", model.path())
                       .add("table", saved ? qforge::io::Json(opt.table) : qforge::io::Json())
                       .add("calibration_tokens", std::int64_t(calib_count))
                       .add("kl_tokens", std::int64_t(kl_tokens))
                       .add("anchor", anchor < 0 ? qforge::io::Json() : qforge::io::Json(qforge::to_string(candidates[std::size_t(anchor)])))
                       .add("blocks", qforge::io::Json(std::move(blocks)))
                       .add("spearman", rho_defined ? spearman_json.json() : qforge::io::Json())
                       .add("allocations", qforge::io::Json(std::move(allocations_json)))
                       .add("seconds", JsonObject().add("trace", trace_s).add("sensitivity", table_s).add("total", total_s).json()));
        return 0;
    }

    // --proxy-only measured no KL: its table shows the proxy minimised, and there is no rho
    const std::string shown = loss == "anchored" ? loss : rho_defined ? "kl" : loss;
    if (saved) std::printf("The sensitivity table read from %s (measured on %s)\n", opt.table.c_str(), saved->model.c_str());
    if (shown != "kl" && shown != "anchored")
        std::printf("Sensitivity of %s: proxy '%s' of each block quantized alone on %ld calibration tokens (block_output on the first %ld; "
                    "no KL measured)\n",
                    model.path().c_str(), loss.c_str(), calib_count, kl_tokens);
    else if (shown == "anchored")
        std::printf("Sensitivity of %s: mean KL (nats) from the reference with only that block quantized, on the first %ld of %ld calibration tokens: "
                    "measured for the anchor %s, estimated for the others (its KL times their block output error over its)\n",
                    model.path().c_str(), kl_tokens, calib_count, qforge::to_string(candidates[std::size_t(anchor)]).c_str());
    else
        std::printf("Sensitivity of %s: mean KL (nats) from the reference with only that block quantized, on the first %ld of %ld calibration tokens\n",
                    model.path().c_str(), kl_tokens, calib_count);
    std::printf("| block |");
    for (const auto& c : candidates) std::printf(" %14s |", qforge::to_string(c).c_str());
    std::printf("\n|---|");
    for (std::size_t k = 0; k < K; ++k) std::printf("---|");
    std::printf("\n");
    for (int l = 0; l < L; ++l) {
        std::printf("| %5d |", l);
        for (std::size_t k = 0; k < K; ++k) std::printf(" %14.6g |", loss_value(table.block[k][std::size_t(l)], shown));
        std::printf("\n");
    }
    if (rho_defined) {
        std::printf("\nHow each proxy ranks units like the measured KL (Spearman's rho over every unit and candidate; per candidate: across blocks)\n");
        std::printf("| proxy | blocks |");
        if (opt.measure_linears) std::printf(" linears |");
        for (const auto& c : candidates) std::printf(" %s |", qforge::to_string(c).c_str());
        std::printf("\n");
        for (const char* p : proxies) {
            std::printf("| %s | %.3f |", p, rho(blocks_all, p));
            if (opt.measure_linears) std::printf(" %.3f |", rho(linears_all, p));
            for (std::size_t k = 0; k < K; ++k) {
                std::vector<const UnitLoss*> one;
                for (int l = 0; l < L; ++l) one.push_back(&table.block[k][std::size_t(l)]);
                std::printf(" %.3f |", rho(one, p));
            }
            std::printf("\n");
        }
    }
    std::printf("\nAllocations (unit %s, loss %s): predicted = sum of the chosen units' losses; measured = KL of the model quantized from the map "
                "(both on the first %ld calibration tokens)\n",
                opt.unit.c_str(), loss.c_str(), kl_tokens);
    std::printf("| target bpw | bpw | predicted | measured KL | solver | map |\n|---|---|---|---|---|---|\n");
    for (const auto& d : done)
        std::printf("| %s | %.4f | %.5f | %s | %s%s | %s |\n", budget_text(d.target).c_str(), d.bpw, d.predicted,
                    std::isnan(d.measured) ? "- (not verified)" : fixed5(d.measured).c_str(), d.exact ? "exact" : "lagrangian",
                    d.exact ? "" : (" gap " + std::to_string(d.gap)).c_str(), d.path.empty() ? "-" : d.path.c_str());
    if (unit == AllocationUnitKind::block)
        for (const auto& d : done) {
            std::printf("%s bpw:", budget_text(d.target).c_str());
            for (int l = 0; l < L; ++l) std::printf(" %d:%s", l, qforge::to_string(candidates[std::size_t(d.a.allocation.choice[std::size_t(l)])]).c_str());
            std::printf("\n");
        }
    std::printf("\ntime: loading and reference trace %.1f s, sensitivity table %.1f s%s, total %.1f s (%d threads)\n", trace_s, table_s, saved ? " (read)" : "", total_s,
                opt.threads ? opt.threads : qforge::default_threads());
    return 0;
}

}  // namespace

void add_allocate(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("allocate", "sensitivity table and bit allocation under a bits-per-weight budget (per-tensor scheme map)");
    sub->footer(
        "Each block of the decoder (and with --measure-linears each of its linear layers) is quantized alone with each candidate\n"
        "scheme on the reference's calibration inputs; the loss it causes is the model's mean KL divergence from the reference\n"
        "(blocks before it are not run again) on the first --kl-tokens calibration tokens. By default (--loss anchored) that KL\n"
        "is measured for one candidate, the --anchor, and estimated for the others as the anchor's KL times their block output\n"
        "error over the anchor's: the rest of the network's amplification measured once per block (--loss kl measures every\n"
        "candidate: that many times the cost). Next to it four proxies: the layer output error on the calibration data\n"
        "(output), the Hessian-diagonal-weighted weight error (hessian_diag), the plain weight error (weight) and the block's\n"
        "output error (block_output); with measured KL, Spearman's rho says how well each ranks units like it. Then, per\n"
        "--target-bpw, the scheme of each unit minimising the summed loss within that average bits per weight of the decoder's\n"
        "linear layers (exact: dynamic programming over the Pareto frontier), written as a scheme map (--out) for qforge\n"
        "quantize/eval --scheme-map, and checked by quantizing the model from the map (the real pipeline) and measuring its KL.\n"
        "Candidates share one method: rtn:, gptq:, awq: or awq+gptq: (the AWQ methods' blocks are measured whole: their stored\n"
        "weights are scaled, so only the KL and block_output are defined for them). docs/mixed.md.");
    auto o = std::make_shared<AllocateCliOptions>();
    o->calib.calib_tokens = 2048;
    add_model_options(*sub, o->model);
    sub->add_option("--text", o->text, "calibration text when --calib is not given (default: $QFORGE_DATA/eval/wikitext-2-raw/wiki.test.raw, "
                                       "after its first 16384 tokens, the slice qforge eval scores by default)");
    add_calib_options(*sub, o->calib);
    sub->add_option("--candidates", o->candidates,
                    "candidate schemes, one method, comma-separated or repeated; a piece without 'method:' is an option of the scheme "
                    "before it (gptq:w3g128a,gptq:w3g128a,salient=1) (default: gptq:w2g64a gptq:w3g128a gptq:w4g128a gptq:w8g128s)");
    sub->add_option("--target-bpw", o->budgets, "average bits per weight of the decoder's linear layers (repeatable, or comma-separated)")
        ->required()
        ->delimiter(',')
        ->check(finite_in(0.01, 64.0));
    sub->add_option("--unit", o->unit, "what gets one scheme: block (its seven linears) or linear")->check(CLI::IsMember({"block", "linear"}))->capture_default_str();
    sub->add_option("--loss", o->loss, "the loss to minimise: kl (measured), output, hessian_diag, weight, block_output (proxies), anchored (blocks: the --anchor's "
                    "measured KL scaled by each candidate's block output error), kl_split (linear units: each block's measured KL "
                    "shared among its linears by their output errors); auto: anchored for blocks, kl_split for linears (output with --proxy-only)")
        ->check(CLI::IsMember({"auto", "kl", "kl_split", "output", "hessian_diag", "weight", "block_output", "anchored"}))
        ->capture_default_str();
    sub->add_option("--anchor", o->anchor,
                    "the candidate whose KL is measured on every block; the others' KL estimated as the anchor's times their block "
                    "output error over the anchor's (--loss anchored: only the anchor's KL measured, 1/candidates of the cost; default: the "
                    "narrowest candidate)");
    sub->add_option("--kl-tokens", o->kl_tokens,
                    "measure the KL and the block output errors on the first N calibration tokens only (0: all; the cost of the KL is "
                    "linear in N; more than the calibration tokens is refused); the statistics and Hessians, and so the quantized blocks, use all "
                    "of them")
        ->check(whole_number())
        ->capture_default_str();
    sub->add_flag("--measure-linears", o->measure_linears, "also measure the KL of each linear layer alone (7x the blocks' cost)");
    sub->add_flag("--proxy-only", o->proxy_only, "measure no KL per unit (no Spearman rho): the allocation minimises the --loss proxy");
    sub->add_option("--solver", o->solver, "exact (Pareto-frontier dynamic programming) or lagrangian (its bound and gap reported)")
        ->check(CLI::IsMember({"exact", "lagrangian"}))
        ->capture_default_str();
    sub->add_option("--out", o->out,
                    "write the scheme map (JSON) there; with several budgets the path must hold {bpw} (the budget's shortest exact "
                    "form: 3.203125, 3.5 for 3.50, 4 for 4.0)");
    sub->add_option("--svg", o->svg, "a heat map of the per-block sensitivity (SVG; checked before any work)")->check(writable_output());
    sub->add_flag("--no-verify", o->no_verify, "do not quantize and measure the model of each allocation");
    sub->add_option("--save-table", o->save_table,
                    "write the sensitivity table there (JSON) once measured, for --table: more budgets, another --loss, --unit or --solver "
                    "without measuring again (checked before any work)")
        ->check(writable_output());
    sub->add_option("--table", o->table,
                    "allocate from a table written by --save-table instead of measuring one: its candidates (--candidates, if given, "
                    "must be them), checked against the model's blocks; verifying a map needs the table's calibration tokens, else "
                    "--no-verify (no reference pass at all)")
        ->check(CLI::ExistingFile);
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout (progress stays on stderr)");
    sub->callback([o, sub, &status] {
        if (sub->count("--anchor") && o->anchor.empty()) throw CLI::ValidationError("--anchor", "an empty scheme: give one of the candidates");
        o->kl_tokens_given = sub->count("--kl-tokens") > 0;
        if (!o->out.empty()) {  // every path an --out template gives, before any work
            const auto check = writable_output();
            for (const double b : o->budgets)
            {
                std::string path = map_path(o->out, b);
                if (const auto why = check(path); !why.empty()) throw CLI::ValidationError("--out", why);
            }
        }
        status = run_allocate(*o);
    });
}

}  // namespace cli
