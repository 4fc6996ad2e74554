#pragma once
/// @file
/// llama.cpp's named type mixes (Q2_K, Q3_K_M, Q4_K_M, ...): which GGUF type each weight matrix
/// of a Llama model gets, as llama-quantize decides it.
///
/// Source: `llama_tensor_get_type_impl` and `llama_ftype_get_default_type` in llama.cpp's
/// src/llama-quant.cpp (commit 0c1e570, the llama.cpp of llama-cpp-python 0.3.36), for the llama
/// architecture with one expert and no importance matrix (none of these mixes reads it). Per
/// mix, a base type for every matrix, then:
/// - the output head, or the token embedding when the head is tied to it: Q6_K, or Q8_0 when a
///   row (dim) is not whole 256-blocks;
/// - attn_v of block i (use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2):
///   Q2_K: Q4_K if n_head/n_head_kv >= 4 else Q3_K; Q2_K_S: Q4_K if that ratio >= 4;
///   Q3_K_M: Q5_K for i < 2 else Q4_K; Q3_K_L: Q5_K; Q4_K_M, Q5_K_M: Q6_K where use_more_bits;
///   Q4_K_S: Q5_K for i < 4;
/// - ffn_down of block i: Q2_K: Q3_K; Q2_K_S: Q4_K for i < n/8; Q3_K_M: Q5_K for i < n/16 else
///   Q4_K; Q3_K_L: Q5_K; Q4_K_M, Q5_K_M: Q6_K where use_more_bits; Q4_K_S: Q5_K for i < n/8;
/// - attn_output: Q2_K: Q3_K; Q3_K_M: Q4_K; Q3_K_L: Q5_K.
/// Rows that are not whole blocks of the chosen type then take llama-quantize's fallback
/// (formats/registry.hpp `block_fallbacks`), applied where the matrix is quantized, not here.
/// (llama.cpp also raises attn_v of 70B models to Q5_K; no such model is read here.)
#include <algorithm>
#include <cctype>
#include <array>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/sources/llama/source.hpp"

namespace qforge::llama {

/// A named mix: its name as llama-quantize spells it (lower case here) and the type of the
/// matrices no rule raises.
struct TypeMix {
    std::string_view name, base;
};

inline constexpr std::array<TypeMix, 10> type_mixes{{{"q2_k", "q2_k"},
                                                     {"q2_k_s", "q2_k"},
                                                     {"q3_k_s", "q3_k"},
                                                     {"q3_k_m", "q3_k"},
                                                     {"q3_k_l", "q3_k"},
                                                     {"q4_k_s", "q4_k"},
                                                     {"q4_k_m", "q4_k"},
                                                     {"q5_k_s", "q5_k"},
                                                     {"q5_k_m", "q5_k"},
                                                     {"q6_k", "q6_k"}}};

/// The mix named `name` (case-insensitive: Q4_K_M or q4_k_m). Throws InvalidArgument listing the
/// mixes when there is none.
inline const TypeMix& find_type_mix(std::string_view name) {
    std::string lower(name);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    for (const auto& m : type_mixes)
        if (m.name == lower) return m;
    std::string known;
    for (const auto& m : type_mixes) known += std::string(known.empty() ? "" : ", ") + std::string(m.name);
    throw InvalidArgument("unknown type mix '" + std::string(name) + "' (known: " + known + ")");
}

/// Each weight matrix of a model of `c` and the grid (scheme text's GGUF type name, e.g. "q6_k")
/// `mix` gives it, in file order: token_embd.weight, each block's seven linears, and
/// output.weight unless `tied` (the head shares the embedding table, which then takes the head's
/// type, as llama.cpp does). Before any fallback.
inline std::vector<std::pair<std::string, std::string>> type_mix_grids(const TypeMix& mix, const Config& c, bool tied) {
    const std::string_view m = mix.name;
    const int n = c.n_layers;
    const int gqa = c.n_heads / std::max(1, c.n_kv_heads);
    const auto use_more_bits = [n](int i) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; };
    const std::string base(mix.base);
    const std::string head = c.dim % 256 != 0 ? "q8_0" : "q6_k";
    std::vector<std::pair<std::string, std::string>> out;
    out.emplace_back("token_embd.weight", tied ? head : base);
    for (int i = 0; i < n; ++i)
        for (const auto& b : block_linears) {
            std::string t = base;
            if (b.gguf == "attn_v") {
                if (m == "q2_k") t = gqa >= 4 ? "q4_k" : "q3_k";
                else if (m == "q2_k_s" && gqa >= 4) t = "q4_k";
                else if (m == "q3_k_m") t = i < 2 ? "q5_k" : "q4_k";
                else if (m == "q3_k_l") t = "q5_k";
                else if ((m == "q4_k_m" || m == "q5_k_m") && use_more_bits(i)) t = "q6_k";
                else if (m == "q4_k_s" && i < 4) t = "q5_k";
            } else if (b.gguf == "ffn_down") {
                if (m == "q2_k") t = "q3_k";
                else if (m == "q2_k_s") t = i < n / 8 ? "q4_k" : base;
                else if (m == "q3_k_m") t = i < n / 16 ? "q5_k" : "q4_k";
                else if (m == "q3_k_l") t = "q5_k";
                else if ((m == "q4_k_m" || m == "q5_k_m") && use_more_bits(i)) t = "q6_k";
                else if (m == "q4_k_s" && i < n / 8) t = "q5_k";
            } else if (b.gguf == "attn_output") {
                if (m == "q2_k") t = "q3_k";
                else if (m == "q3_k_m") t = "q4_k";
                else if (m == "q3_k_l") t = "q5_k";
            }
            out.emplace_back(block_tensor_name(i, b.gguf), t);
        }
    if (!tied) out.emplace_back("output.weight", head);
    return out;
}

}  // namespace qforge::llama
