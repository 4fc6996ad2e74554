// `qforge quantize`: streams a model into a qforge container or a GGUF file, quantizing the
// decoder's linear layers with a scheme and any weight matching an --override pattern with its own
// action. `qforge convert`: the same writers with no scheme (every weight kept, or --outtype).
#include <fnmatch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <qforge/io/output_path.hpp>
#include <qforge/container/llama/container.hpp>
#include <qforge/container/llama/gguf_export.hpp>
#include <qforge/container/llama/hf_export.hpp>
#include <qforge/container/llama/type_mix.hpp>
#include <qforge/io/gguf_tokenizer.hpp>
#include <qforge/io/imatrix.hpp>
#include <qforge/io/scheme_map.hpp>
#include <qforge/sources/llama/gguf_loader.hpp>
#include <qforge/pipelines/llama/quantizing_source.hpp>
#include <qforge/models/llama/size.hpp>

#include "commands.hpp"
#include "model.hpp"

namespace cli {
namespace {

struct QuantizeOptions {
    ModelOptions model;
    CalibOptions calib;
    std::string scheme, out, format = "qforge", outtype = "keep", mix, imatrix, scheme_map;
    std::vector<std::string> overrides;
    int threads = 0;
    bool json = false;
    bool convert = false;  ///< `qforge convert`: no scheme needed
};

/// The GGUF writer's fallbacks ("TENSOR: why: written as TYPE") on stderr: each line when there
/// are a few; else one line per reason with its count and first tensors (a type mix on a model
/// whose rows are not whole super-blocks falls back for most tensors, SmolLM2's Q4_K_M for 180).
void print_fallbacks(const std::vector<std::string>& fallbacks) {
    constexpr std::size_t each_up_to = 8, names_shown = 3;
    if (fallbacks.size() <= each_up_to) {
        for (const auto& f : fallbacks) std::fprintf(stderr, "qforge: fallback: %s\n", f.c_str());
        return;
    }
    std::vector<std::pair<std::string, std::vector<std::string>>> reasons;  // in first-seen order
    for (const auto& f : fallbacks) {
        const auto cut = f.find(": ");
        const std::string name = cut == std::string::npos ? f : f.substr(0, cut), why = cut == std::string::npos ? "" : f.substr(cut + 2);
        auto it = std::find_if(reasons.begin(), reasons.end(), [&](const auto& r) { return r.first == why; });
        if (it == reasons.end()) it = reasons.insert(reasons.end(), {why, {}});
        it->second.push_back(name);
    }
    std::fprintf(stderr, "qforge: %zu tensors fell back to another type:\n", fallbacks.size());
    for (const auto& [why, names] : reasons) {
        std::string list;
        for (std::size_t i = 0; i < std::min(names.size(), names_shown); ++i) list += (i ? ", " : "") + names[i];
        if (names.size() > names_shown) list += ", ...";
        std::fprintf(stderr, "qforge: fallback: %s: %zu tensor%s (%s)\n", why.c_str(), names.size(), names.size() == 1 ? "" : "s", list.c_str());
    }
}

/// The model's tokenizer as GGUF metadata, from the file it was read from (by content, as
/// Model::open recognises it): a GGUF file's tokenizer.* keys, a llama2.c tokenizer.bin, or a
/// Hugging Face tokenizer.json (byte-level BPE; BOS/EOS and their flags as the model applies them).
qforge::io::GgufMetadata gguf_tokenizer_of(const Model& model) {
    const std::string& path = model.tokenizer_path();
    const auto& kind = model.tokenizer().kind;
    if (kind == "bpe" || kind == "spm") return qforge::io::tokenizer_metadata(qforge::io::GgufFile::open(path));
    if (kind == "llama2c")
        return qforge::io::tokenizer_metadata(qforge::io::Llama2cTokenizer::load(path, model.source().config().vocab_size));
    if (kind == "tokenizer.json") {
        const auto& t = model.tokenizer();
        return qforge::io::tokenizer_metadata_from_json(path, {model.source().config().vocab_size, t.bos, t.eos, t.add_bos, t.add_eos});
    }
    throw qforge::InvalidArgument(path + ": writing a " + kind + " tokenizer into GGUF is not supported (GGUF, llama2.c and tokenizer.json ones are); "
                                         "pass --tokenizer with a GGUF file of the same vocabulary");
}

/// general.name: the source GGUF's, else the model file's stem.
std::string model_name(const Model& model) {
    if (model.kind() == "gguf") {
        const auto f = qforge::io::GgufFile::open(model.path());
        if (f.has("general.name")) return f.get("general.name").as_string();
    }
    return std::filesystem::path(model.path()).stem().string();
}

std::string fixed3(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3f", v);
    return b;
}

/// Why layers of `s` cannot be written in `format` (empty: they can): the stored layouts have no
/// field for an input transform (`,had`) nor for PQ codes and codebooks; kept FP16 channels
/// (`,salient=`) only the qforge container holds.
std::string unwritable(const qforge::RuntimeScheme& s, const std::string& format) {
    if (s.options.hadamard)
        return "',had' layers cannot be written yet (no container, GGUF or checkpoint field holds the transform); evaluate them with qforge eval";
    if (s.pq)
        return "PQ layers cannot be written yet (no container, GGUF or checkpoint layout holds PQ codes and codebooks); evaluate them with qforge eval";
    if (s.options.salient > 0.0f && format != "qforge")
        return "',salient=' layers keep input channels in FP16, which " + format + " files have no field for; write them with --format qforge";
    return {};
}

int run(QuantizeOptions opt) {
    if (opt.scheme.empty() && opt.scheme_map.empty() && opt.overrides.empty() && opt.mix.empty() && !opt.convert)
        throw CLI::RequiredError("--scheme (or --scheme-map, --mix, --override)");
    const bool gguf = opt.format == "gguf";
    const bool hf = opt.format == "gptq" || opt.format == "gptq_v2" || opt.format == "awq";  // a Hugging Face checkpoint directory
    // the output first: a file, or for a checkpoint a new (or empty) directory, which an --out
    // named like one of the files (x.safetensors) is not meant to be
    if (hf) {
        const std::string ext = std::filesystem::path(opt.out).extension().string();
        for (const char* file_ext : {".safetensors", ".gguf", ".bin", ".json"})
            if (ext == file_ext)
                throw CLI::ValidationError("--out", "'" + opt.out + "': --format " + opt.format + " writes a directory (model.safetensors, config.json, ...), and this names a file; give a directory, e.g. '" +
                                                        std::filesystem::path(opt.out).replace_extension().string() + "/'");
    }
    if (const auto why = hf ? qforge::llama::detail::output_dir_problem(opt.out) : qforge::io::output_path_problem(opt.out); !why.empty())
        throw CLI::ValidationError("--out", "'" + opt.out + "': " + why);
    // every action is checked before any work
    std::vector<std::pair<std::string, std::string>> overrides;
    for (const auto& rule : opt.overrides) {
        // at the first '=': tensor names have none, a scheme may (damp=0.1, salient=1)
        const auto eq = rule.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == rule.size())
            throw CLI::ValidationError("--override", "needs PATTERN=ACTION, got '" + rule + "'");
        const std::string action = rule.substr(eq + 1);
        if (action == "f16" && !gguf) throw CLI::ValidationError("--override", "'" + rule + "': f16 is a GGUF type (--format gguf)");
        if (action != "f32" && action != "keep" && action != "f16") {
            qforge::RuntimeScheme s;
            try {
                s = qforge::parse_scheme(action);
            } catch (const qforge::InvalidArgument& e) {
                throw CLI::ValidationError("--override", "'" + rule + "': " + e.what());
            }
            if (const auto why = unwritable(s, opt.format); !why.empty()) throw CLI::ValidationError("--override", "'" + rule + "': " + why);
            if (s.options.salient > 0.0f)
                throw CLI::ValidationError("--override", "'" + rule + "': ',salient=' picks channels by calibration activations: give it through --scheme or --scheme-map");
            if (qforge::needs_calibration(s))
                throw CLI::ValidationError("--override", "'" + rule + "': only rtn schemes, f32 or keep (calibrated methods apply through --scheme)");
        }
        overrides.emplace_back(rule.substr(0, eq), action);
    }
    std::optional<qforge::RuntimeScheme> scheme;
    if (!opt.scheme.empty()) scheme = parse_scheme_option(opt.scheme);
    // --scheme-map: the run's scheme and each listed tensor's own (written by hand, or by a bit allocation)
    std::optional<qforge::io::SchemeMap> scheme_map;
    if (!opt.scheme_map.empty()) {
        if (scheme || !opt.mix.empty()) throw CLI::ValidationError("--scheme-map", "the map gives every decoder weight its scheme; give it without --scheme and --mix");
        if (hf) throw CLI::ValidationError("--scheme-map", "the " + opt.format + " checkpoint format has one grid for every layer (one quantization_config)");
        scheme_map = qforge::io::read_scheme_map(opt.scheme_map);
        scheme = scheme_map->scheme;
        if (const auto why = unwritable(*scheme, opt.format); !why.empty()) throw CLI::ValidationError("--scheme-map", opt.scheme_map + ": \"scheme\": " + why);
        for (const auto& [name, s] : scheme_map->tensors) {
            if (const auto why = unwritable(s, opt.format); !why.empty()) throw CLI::ValidationError("--scheme-map", opt.scheme_map + ": tensor '" + name + "': " + why);
            if (s.method != scheme->method)
                throw CLI::ValidationError("--scheme-map", opt.scheme_map + ": tensor '" + name + "': " + qforge::to_string(s) + " has another method than the map's " +
                                                               qforge::to_string(*scheme) + " (a per-tensor scheme changes the grid and options, not the method)");
        }
    }
    if (scheme)
        if (const auto why = unwritable(*scheme, opt.format); !why.empty()) throw CLI::ValidationError("--scheme", "'" + opt.scheme + "': " + why);
    // --mix: llama.cpp's per-tensor types, on the scheme's method (RTN without --scheme)
    const qforge::llama::TypeMix* mix = nullptr;
    if (!opt.mix.empty()) {
        mix = &qforge::llama::find_type_mix(opt.mix);
        if (opt.outtype != "keep") throw CLI::ValidationError("--mix", "--mix and --outtype both say what every weight becomes; give one");
        if (hf) throw CLI::ValidationError("--mix", "the " + opt.format + " checkpoint format has one grid for every layer (one quantization_config); --mix gives each tensor its own type (--format gguf)");
        if (!scheme) scheme = qforge::parse_scheme("rtn:" + std::string(mix->base));
        if (scheme->spec.block != mix->base)
            throw CLI::ValidationError("--mix", std::string(mix->name) + " quantizes most weights as " + std::string(mix->base) + " and raises some; --scheme " +
                                                    opt.scheme + " must be on that grid (e.g. gptq:" + std::string(mix->base) + ")");
    }
    // --outtype (convert): one action for every weight matrix, before the overrides
    if (opt.outtype == "f16" && !gguf) throw CLI::ValidationError("--outtype", "f16 is a GGUF type (--format gguf)");
    if (opt.outtype != "keep") {
        std::string action = opt.outtype;
        if (opt.outtype != "f32" && opt.outtype != "f16") {
            if (opt.outtype.find(':') != std::string::npos)
                throw CLI::ValidationError("--outtype", "'" + opt.outtype + "': a grid without a method (e.g. w4g32a, q4_0): --outtype rounds with RTN");
            const auto s = qforge::parse_scheme("rtn:" + opt.outtype);
            if (const auto why = unwritable(s, opt.format); !why.empty()) throw CLI::ValidationError("--outtype", "'" + opt.outtype + "': " + why);
            action = qforge::to_string(s);
        }
        overrides.insert(overrides.begin(), {hf ? "blk.*" : "*", action});  // a checkpoint keeps the embedding and head F16
    }

    auto model = Model::open(opt.model);
    // a pattern that names no matrix of the model (a typo) would silently do nothing
    {
        std::vector<std::string> names = {"token_embd.weight", "output.weight"};
        for (int l = 0; l < model.source().config().n_layers; ++l)
            for (const auto& b : qforge::llama::block_linears) names.push_back(qforge::llama::block_tensor_name(l, b.gguf));
        if (scheme_map)
            for (const auto& [name, s] : scheme_map->tensors)
                if (name.rfind("blk.", 0) != 0 || std::find(names.begin(), names.end(), name) == names.end())
                    throw CLI::ValidationError("--scheme-map", opt.scheme_map + ": tensor '" + name + "' is not a decoder weight of " + model.path() +
                                                                   " (blk.0.attn_q.weight ... blk." + std::to_string(model.source().config().n_layers - 1) +
                                                                   ".ffn_down.weight)");
        for (const auto& [pattern, action] : overrides) {
            bool hit = false;
            for (const auto& name : names) hit = hit || ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;  // the writer's glob
            if (!hit)
                throw CLI::ValidationError("--override", "'" + pattern + "=" + action + "' matches no weight of " + model.path() +
                                                             " (names: token_embd.weight, output.weight, blk.N.attn_q.weight ... blk.N.ffn_down.weight)");
        }
    }
    // each weight matrix's scheme under the mix: the run's method and options on the mix's type
    // for the block linears; RTN for the embedding and the head (llama-quantize rounds all)
    std::map<std::string, qforge::RuntimeScheme> mix_schemes;
    if (mix)
        for (const auto& [name, grid] : qforge::llama::type_mix_grids(*mix, model.source().config(), model.source().tied_output())) {
            const bool block = name.rfind("blk.", 0) == 0;
            qforge::RuntimeScheme s = block ? *scheme : qforge::parse_scheme("rtn:" + grid);
            s.spec = qforge::parse_scheme("rtn:" + grid).spec;
            mix_schemes[name] = s;
        }
    if (scheme_map) mix_schemes = scheme_map->tensors;  // block linears only (checked above)
    qforge::llama::ContainerOptions o;
    o.backend = qforge::Backend::best_cpu(opt.threads);
    // --imatrix: RTN rounds as llama-quantize does with it (the 32-weight GGUF grids)
    std::optional<qforge::io::Imatrix> imatrix;
    if (!opt.imatrix.empty()) {
        if (scheme && qforge::llama::run_pipeline(*scheme, mix_schemes) != qforge::Pipeline::independent)
            throw CLI::ValidationError("--imatrix", "weights RTN's rounding (as llama-quantize); " + qforge::to_string(*scheme) +
                                                        " calibrates on its own statistics (--calib)");
        imatrix = qforge::io::Imatrix::load(opt.imatrix);
        int found = 0;
        for (int l = 0; l < model.source().config().n_layers; ++l)
            for (const auto& b : qforge::llama::block_linears) found += imatrix->entries.count(qforge::llama::block_tensor_name(l, b.gguf)) != 0;
        if (found == 0)
            throw CLI::ValidationError("--imatrix", opt.imatrix + " has no entry for any weight of " + model.path() +
                                                        " (entries are named as the weights: blk.N.attn_q.weight ...)");
        o.quantize = [&imatrix, &model, &o](const std::string& name, const qforge::llama::Linear& fp32, const qforge::RuntimeScheme& s) {
            const auto mean = imatrix->mean(name);  // empty: no entry, rounded without (as llama-quantize)
            return qforge::with_tensor_context(model.source().label(), name,
                                                      [&] { return qforge::llama::quantize_linear(fp32, s, o.backend, mean.empty() ? nullptr : &mean); });
        };
    }
    o.tokenizer = model.tokenizer_path();
    o.source = std::filesystem::absolute(model.path()).string();
    // a weight kept from a container keeps the record of the scheme that made it (the source's scheme_of)
    const auto start = std::chrono::steady_clock::now();
    // GPTQ/AWQ quantize block by block as the container asks for each block's tensors
    // (QuantizingSource): one block's FP32 weights and statistics in memory, whatever the depth,
    // each block written as it finishes. RTN streams weight by weight from the source.
    std::unique_ptr<qforge::llama::QuantizingSource> calibrated;
    std::unique_ptr<Progress> calibrated_bar;
    if (scheme) {
        // calibrated: the scheme's method, or a map's tensor keeping salient channels under RTN
        if (qforge::llama::run_pipeline(*scheme, mix_schemes) != qforge::Pipeline::independent) {
            // an override on a block linear would act on the calibrated method's output (f32 = its
            // dequantized weights, rtn = quantized twice): refused, naming the tensor
            for (int l = 0; l < model.source().config().n_layers; ++l)
                for (const auto& b : qforge::llama::block_linears) {
                    const auto name = qforge::llama::block_tensor_name(l, b.gguf);
                    if (const auto action = qforge::llama::action_for(overrides, name); action != "keep")
                        throw CLI::ValidationError("--override", "'" + name + "=" + action + "': the decoder's linear layers are quantized by " +
                                                                     qforge::to_string(*scheme) + "; overrides apply to the other weights");
                }
            const auto calib = calibration_tokens(opt.calib, model, data_dir() + "/eval/wikitext-2-raw/wiki.test.raw", 16384);
            calibrated_bar = std::make_unique<Progress>(qforge::to_string(*scheme) + (mix ? " " + std::string(mix->name) : ""));
            auto mo = model_quantize_options(model.source().config(), *scheme, opt.calib, o.backend, *calibrated_bar);
            for (const auto& [name, s] : mix_schemes)
                if (name.rfind("blk.", 0) == 0 && !(s == *scheme)) mo.tensor_schemes[name] = s;
                else if (name.rfind("blk.", 0) != 0) o.rules.emplace_back(name, qforge::to_string(s));
            calibrated = std::make_unique<qforge::llama::QuantizingSource>(model.source(), calib, *scheme, mo);
        } else if (mix) {
            for (const auto& [name, s] : mix_schemes) o.rules.emplace_back(name, qforge::to_string(s));
        } else {
            for (const auto& b : qforge::llama::block_linears)
                o.rules.emplace_back("blk.*." + std::string(b.gguf) + ".weight", qforge::to_string(*scheme));
            for (const auto& [name, s] : mix_schemes) o.rules.emplace_back(name, qforge::to_string(s));  // a scheme map's tensors (the last rule wins)
        }
    }
    for (const auto& rule : overrides) o.rules.push_back(rule);
    Progress bar("write");
    // a calibrated run shows its own bar (block and step); the writer's would draw over it
    if (!calibrated)
        o.progress = [&](std::size_t done, std::size_t total, const std::string& name) { bar.update(double(done), double(total), name); };
    const auto& source = calibrated ? static_cast<const qforge::llama::ModelSource&>(*calibrated) : model.source();
    double bpw = 0.0, file_bpw = 0.0;
    std::vector<std::string> fallbacks;
    std::map<std::string, std::int64_t> types;  // GGUF: weight matrices per type written
    qforge::llama::HfQuantConfig hf_quant;       // gptq/awq: the quantization_config written
    std::size_t hf_tokenizer_files = 0;
    if (gguf) {
        qforge::llama::GgufExportOptions g;
        g.rules = o.rules;
        g.backend = o.backend;
        g.progress = o.progress;
        g.quantize = o.quantize;
        g.metadata = gguf_tokenizer_of(model);
        g.metadata.emplace_back("general.name", qforge::io::gguf_value::string(model_name(model)));
        const auto report = qforge::llama::write_gguf(source, opt.out, g);
        file_bpw = report.block_bits_per_weight();  // from the bytes written (an F16 fallback counts 16)
        fallbacks = report.fallbacks;
        for (const auto& t : report.tensors)
            if (t.matrix) ++types[std::string(qforge::ggml_type_name(std::uint32_t(t.type)))];
    } else if (hf) {
        qforge::llama::HfExportOptions h;
        h.format = opt.format;
        h.rules = o.rules;
        h.backend = o.backend;
        h.progress = o.progress;
        h.quantize = o.quantize;
        if (model.kind() == "hf") h.tokenizer_dir = std::filesystem::is_directory(model.path()) ? model.path() : std::filesystem::path(model.path()).parent_path().string();
        h.bos_token_id = model.tokenizer().bos;
        h.eos_token_id = model.tokenizer().eos;
        const auto report = qforge::llama::write_hf_checkpoint(source, opt.out, h);
        file_bpw = report.block_bits_per_weight();  // from the bytes written: qweight, qzeros, scales, g_idx
        hf_quant = report.quantization;
        hf_tokenizer_files = report.copied.size();
    } else {
        qforge::llama::write_container(source, opt.out, o);
    }
    bar.finish();
    if (calibrated_bar) calibrated_bar->finish();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    print_fallbacks(fallbacks);

    // bits per weight as every command counts them (docs/conventions.md): Linear::bytes() of the
    // decoder's layers as qforge holds them once it reads the file back (as eval counts models);
    // the file's own layout may store more or less (file_bpw: an F16 fallback is FP32 once read,
    // a GPTQ directory stores packed zeros and g_idx for every layer)
    if (gguf) {
        const auto file = qforge::io::GgufFile::open(opt.out);
        bpw = qforge::llama::block_bits_per_weight(qforge::llama::GgufSource(file));
    } else if (hf) {
        bpw = qforge::llama::block_bits_per_weight(qforge::llama::HfSource(opt.out));
    } else {
        bpw = qforge::llama::block_bits_per_weight(qforge::llama::ContainerSource(opt.out));
        file_bpw = bpw;
    }
    std::uintmax_t file_bytes = 0;
    if (hf)
        for (const auto& f : std::filesystem::directory_iterator(opt.out)) file_bytes += f.is_regular_file() ? f.file_size() : 0;
    else
        file_bytes = std::filesystem::file_size(opt.out);
    if (opt.json) {
        JsonObject j;
        j.add("model", model.path()).add("out", opt.out).add("format", opt.format).add("file_bytes", std::int64_t(file_bytes));
        j.add("block_bits_per_weight", bpw).add("file_bits_per_weight", file_bpw).add("fallbacks", std::int64_t(fallbacks.size()));
        if (gguf) {
            JsonObject t;
            for (const auto& [type, n] : types) t.add(type, n);
            j.add("matrix_types", t);
        }
        if (hf) j.add("quantization_config", hf_quant.to_json()).add("tokenizer_files", std::int64_t(hf_tokenizer_files));
        j.add("seconds", seconds);
        print_json(j);
    } else {
        const std::string stored =
            std::fabs(file_bpw - bpw) > 1e-9 ? ", " + fixed3(file_bpw) + " as the " + opt.format + " file stores them" : std::string();
        std::printf("wrote %s (%s): %.2f MB, decoder linear layers at %.3f bits/weight%s (%.1f s)\n", opt.out.c_str(), opt.format.c_str(),
                    double(file_bytes) / 1e6, bpw, stored.c_str(), seconds);
        if (gguf) {
            std::string line;
            for (const auto& [type, n] : types) line += (line.empty() ? "" : ", ") + type + " " + std::to_string(n);
            std::printf("weight matrices by type: %s\n", line.c_str());
        }
        if (hf) {
            std::printf("quantization_config: %s\n", hf_quant.to_json().dump().c_str());
            if (hf_tokenizer_files == 0)
                std::printf("no tokenizer files written (the model was not read from a Hugging Face directory): give engines the original "
                            "model's tokenizer (qforge: --tokenizer)\n");
        }
    }
    return 0;
}

}  // namespace

namespace {
void add_mix_option(CLI::App& sub, QuantizeOptions& o) {
    std::string names;
    for (const auto& m : qforge::llama::type_mixes) names += std::string(names.empty() ? "" : ", ") + std::string(m.name);
    sub.add_option("--mix", o.mix,
                   "llama.cpp's type mix: each weight matrix gets the type llama-quantize gives it (" + names +
                       "; docs/export.md). Without --scheme, RTN as llama-quantize; with one, its method and options on the mix's types "
                       "(e.g. --mix q4_k_m --scheme gptq:q4_k)");
}

void add_imatrix_option(CLI::App& sub, QuantizeOptions& o) {
    sub.add_option("--imatrix", o.imatrix,
                   "llama.cpp importance matrix (GGUF or legacy .dat; 'qforge imatrix' writes one): RTN then rounds as llama-quantize "
                   "does with it, byte for byte, on q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k (q8_0 ignores it; q2_k, q3_k refuse it for now)")
        ->check(CLI::ExistingFile);
}

void add_format_option(CLI::App& sub, QuantizeOptions& o) {
    sub.add_option("--format", o.format,
                   "qforge (the container: any scheme), gguf (llama.cpp's file: F32/F16 and the GGUF grids q4_0, q4_1, q5_0, q5_1, "
                   "q8_0, q2_k ... q6_k, iq4nl, with the tokenizer and hyper-parameters llama.cpp needs), or a Hugging Face checkpoint "
                   "directory that transformers and vLLM load: gptq (AutoGPTQ's layout; 2/3/4/8-bit 'a' or 's' grids, act-order as g_idx), "
                   "gptq_v2 (GPTQModel's: zero points stored as they are) or awq (AutoAWQ's GEMM layout; 4-bit, no act-order)")
        ->check(CLI::IsMember({"qforge", "gguf", "gptq", "gptq_v2", "awq"}));
}
}  // namespace

void add_quantize(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("quantize", "write a quantized model (qforge container, GGUF, or a GPTQ/AWQ checkpoint) with per-weight overrides");
    sub->footer(
        "Writes qforge's container (safetensors; codes, scales, zeros as tensors, each weight's scheme and the format\n"
        "version in the metadata), which 'ppl', 'generate' and 'eval' read back whatever the file's name, or with\n"
        "--format gguf a GGUF file llama.cpp runs (schemes on a GGUF grid: rtn:q4_0, gptq:q4_k, gptq:q4_1,act,static ...;\n"
        "rows that are not whole blocks take llama-quantize's fallback type, or F16, each fallback reported), or with\n"
        "--format gptq|gptq_v2|awq a Hugging Face checkpoint directory in that layout (config.json with quantization_config,\n"
        "model.safetensors with qweight/qzeros/scales/g_idx; e.g. --scheme gptq:w4g128s,act --format gptq). The output path\n"
        "is checked before any work; the file is written under a temporary name and renamed when complete.\n"
        "Weights are named the llama.cpp way: token_embd.weight, blk.N.attn_q.weight (attn_k, attn_v, attn_output,\n"
        "ffn_gate, ffn_up, ffn_down), output.weight. The decoder's linear layers get --scheme; embeddings and the output\n"
        "head are kept as stored unless an override names them.");
    auto o = std::make_shared<QuantizeOptions>();
    add_model_options(*sub, o->model);
    sub->add_option("--scheme", o->scheme,
                    "scheme for the decoder's linear layers, e.g. rtn:w4g128a or gptq:w4g128a,act (GPTQ/AWQ quantize block by "
                    "block, each block written as it finishes: memory of one block, whatever the depth)");
    add_mix_option(*sub, *o);
    sub->add_option("--scheme-map", o->scheme_map,
                    "a per-tensor scheme map instead of --scheme (JSON: the run's scheme and each listed tensor's own; "
                    "docs/conventions.md)")
        ->check(CLI::ExistingFile);
    add_imatrix_option(*sub, *o);
    add_calib_options(*sub, o->calib);
    // quantize evaluates nothing: say which slice the defaults take
    sub->get_option("--calib")->description(
        "calibration text for gptq/awq schemes (default: WikiText-2 test after its first 16384 tokens, the slice ppl and eval "
        "score by default; results depend on the slice: use 2048 or more tokens)");
    sub->get_option("--calib-skip")->description("tokens of the calibration text to skip first (default: 16384 for the default text, 0 for --calib FILE)");
    sub->add_option("--override", o->overrides,
                    "PATTERN=ACTION for weights matching the glob: an rtn scheme, f32 or keep (repeatable, later ones win), e.g. "
                    "'output.weight=rtn:w8g32s'; with a gptq/awq --scheme, only weights outside the decoder blocks; a pattern that names no "
                    "weight is an error");
    sub->add_option("--out", o->out, "output file (a qforge container, safetensors; or GGUF with --format gguf), or a new directory "
                                     "(--format gptq|gptq_v2|awq)")->required();
    add_format_option(*sub, *o);
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout");
    sub->callback([o, &status] { status = run(*o); });
}

void add_convert(CLI::App& app, int& status) {
    auto* sub = app.add_subcommand("convert", "rewrite a model in another format (qforge container, GGUF, GPTQ/AWQ checkpoint), optionally as another type");
    sub->footer(
        "Reads any model qforge reads (llama2.c, GGUF, Hugging Face safetensors including GPTQ/AWQ checkpoints, qforge\ncontainer) and writes it as "
        "--format qforge, gguf, or gptq|gptq_v2|awq (a Hugging Face checkpoint directory; its decoder linears on one integer\n"
        "grid, e.g. --outtype w4g128s). Weights are kept as stored unless --outtype (every weight matrix) or --override says\n"
        "otherwise; norms stay F32. A weight no GGUF type holds (a dense qforge layout such as w4g128a) is an error\n"
        "naming it, before anything is written.");
    auto o = std::make_shared<QuantizeOptions>();
    o->convert = true;
    add_model_options(*sub, o->model);
    sub->add_option("--outtype", o->outtype,
                    "keep (default), f32, f16 (GGUF), or a grid quantized by RTN: q8_0, q6_k, q5_k, q4_k, q4_0, q4_1, q5_0, q3_k, q2_k, "
                    "iq4nl (GGUF or qforge), w4g128a ... (qforge)");
    add_mix_option(*sub, *o);
    add_imatrix_option(*sub, *o);
    sub->add_option("--override", o->overrides, "PATTERN=ACTION for weights matching the glob (as for quantize; later ones win)");
    sub->add_option("--out", o->out, "output file, or a new directory for --format gptq|gptq_v2|awq")->required();
    add_format_option(*sub, *o);
    add_threads_option(*sub, o->threads);
    sub->add_flag("--json", o->json, "one JSON object on stdout");
    sub->callback([o, &status] { status = run(*o); });
}

}  // namespace cli
