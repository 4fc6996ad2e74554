#pragma once
/// @file
/// ggml's tensor types as one table (ggml's `type_traits[]`): the type id as GGUF stores it, its
/// name, the weights and bytes of one block, and — for the types qforge reads — how a run of
/// blocks dequantizes and how a block's stored scales are checked. The GGUF reader, the model
/// loader and the packed-format registry all read this table; no other code spells a type id.
/// Ids and block sizes: ggml/include/ggml.h (`enum ggml_type`) and ggml-common.h.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "qforge/core/half.hpp"
#include "qforge/formats/gguf.hpp"
#include "qforge/formats/codebook.hpp"
#include "qforge/formats/gguf_k.hpp"
#include "qforge/formats/ggml_type.hpp"

namespace qforge {

namespace detail {
/// Blocks read through a `dequantize_block(const Block&, float*)` overload.
template <class Block, std::size_t weights = k_block>
void dequantize_block_run(const std::uint8_t* p, std::size_t n, float* out) {
    for (std::size_t b = 0; b < n / weights; ++b) {
        Block blk;
        std::memcpy(&blk, p + b * sizeof(Block), sizeof(Block));
        if constexpr (requires { dequantize_block(blk, out); })
            dequantize_block(blk, out + b * weights);  // 5-bit, i-quant and ternary blocks
        else
            dequantize_k_block(blk, out + b * weights);  // K-quants
    }
}
inline void dequantize_iq4_nl_run(const std::uint8_t* p, std::size_t n, float* out) {
    for (std::size_t b = 0; b < n / 32; ++b) {
        std::uint16_t d;
        std::memcpy(&d, p + b * 18, 2);
        dequantize_iq4_nl_block(d, p + b * 18 + 2, out + b * 32);
    }
}
/// Q4_0 / Q4_1 / Q8_0 blocks of 32, with ggml's arithmetic (Q4_1: one fused multiply-add).
template <class Block>
void dequantize_32_run(const std::uint8_t* p, std::size_t n, float* out) {
    for (std::size_t b = 0; b < n / 32; ++b) {
        Block blk;
        std::memcpy(&blk, p + b * sizeof(Block), sizeof(Block));
        const float d = half_to_float(blk.d);
        float* o = out + b * 32;
        if constexpr (std::is_same_v<Block, block_q8_0>) {
            for (int i = 0; i < 32; ++i) o[i] = d * float(blk.qs[i]);
        } else {
            float m = 0.0f;
            if constexpr (std::is_same_v<Block, block_q4_1>) m = half_to_float(blk.m);
            for (int j = 0; j < 16; ++j) {
                const int lo = blk.qs[j] & 0x0f, hi = blk.qs[j] >> 4;
                if constexpr (std::is_same_v<Block, block_q4_1>) {
                    o[j] = std::fma(d, float(lo), m);
                    o[j + 16] = std::fma(d, float(hi), m);
                } else {
                    o[j] = d * float(lo - 8);
                    o[j + 16] = d * float(hi - 8);
                }
            }
        }
    }
}
inline void dequantize_f32_run(const std::uint8_t* p, std::size_t n, float* out) { std::memcpy(out, p, n * 4); }
inline void dequantize_f16_run(const std::uint8_t* p, std::size_t n, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = half_to_float(h);
    }
}
inline void dequantize_bf16_run(const std::uint8_t* p, std::size_t n, float* out) {
    for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        const std::uint32_t bits = std::uint32_t(h) << 16;
        std::memcpy(&out[i], &bits, 4);
    }
}
template <class Block>
std::string block_fault_run(const std::uint8_t* p, std::size_t n_blocks, std::size_t cols) {
    return nonfinite_block<Block>(p, n_blocks, cols);
}
}  // namespace detail

/// One row of the table.
struct GgmlTypeInfo {
    GgmlType type;
    std::string_view name;        ///< ggml's name ("Q4_K")
    std::size_t block_weights;    ///< weights per block (1 for plain numbers)
    std::size_t block_bytes;      ///< bytes per block
    /// n weights (a whole number of blocks) from `p` into `out`; null: qforge does not read the type
    void (*dequantize)(const std::uint8_t* p, std::size_t n, float* out) = nullptr;
    /// the first block of `n_blocks` whose stored scale is NaN/Inf, in words; null: nothing to check
    std::string (*fault)(const std::uint8_t* p, std::size_t n_blocks, std::size_t cols) = nullptr;
    constexpr bool readable() const noexcept { return dequantize != nullptr; }
};

/// The table. Block sizes of the types qforge does not read are listed too, so that a GGUF file
/// carrying them can still be walked (tensor sizes, offsets) and named in errors.
inline constexpr std::array<GgmlTypeInfo, 31> ggml_types{{
    {GgmlType::F32, "F32", 1, 4, &detail::dequantize_f32_run},
    {GgmlType::F16, "F16", 1, 2, &detail::dequantize_f16_run},
    {GgmlType::Q4_0, "Q4_0", 32, sizeof(block_q4_0), &detail::dequantize_32_run<block_q4_0>, &detail::block_fault_run<block_q4_0>},
    {GgmlType::Q4_1, "Q4_1", 32, sizeof(block_q4_1), &detail::dequantize_32_run<block_q4_1>, &detail::block_fault_run<block_q4_1>},
    {GgmlType::Q5_0, "Q5_0", 32, sizeof(block_q5_0), &detail::dequantize_block_run<block_q5_0, 32>, &detail::block_fault_run<block_q5_0>},
    {GgmlType::Q5_1, "Q5_1", 32, sizeof(block_q5_1), &detail::dequantize_block_run<block_q5_1, 32>, &detail::block_fault_run<block_q5_1>},
    {GgmlType::Q8_0, "Q8_0", 32, sizeof(block_q8_0), &detail::dequantize_32_run<block_q8_0>, &detail::block_fault_run<block_q8_0>},
    {GgmlType::Q8_1, "Q8_1", 32, 36},
    {GgmlType::Q2_K, "Q2_K", k_block, sizeof(block_q2_K), &detail::dequantize_block_run<block_q2_K>, &detail::block_fault_run<block_q2_K>},
    {GgmlType::Q3_K, "Q3_K", k_block, sizeof(block_q3_K), &detail::dequantize_block_run<block_q3_K>, &detail::block_fault_run<block_q3_K>},
    {GgmlType::Q4_K, "Q4_K", k_block, sizeof(block_q4_K), &detail::dequantize_block_run<block_q4_K>, &detail::block_fault_run<block_q4_K>},
    {GgmlType::Q5_K, "Q5_K", k_block, sizeof(block_q5_K), &detail::dequantize_block_run<block_q5_K>, &detail::block_fault_run<block_q5_K>},
    {GgmlType::Q6_K, "Q6_K", k_block, sizeof(block_q6_K), &detail::dequantize_block_run<block_q6_K>, &detail::block_fault_run<block_q6_K>},
    {GgmlType::Q8_K, "Q8_K", 256, 292},
    {GgmlType::IQ2_XXS, "IQ2_XXS", k_block, sizeof(block_iq2_xxs), &detail::dequantize_block_run<block_iq2_xxs>, &detail::block_fault_run<block_iq2_xxs>},
    {GgmlType::IQ2_XS, "IQ2_XS", k_block, sizeof(block_iq2_xs), &detail::dequantize_block_run<block_iq2_xs>, &detail::block_fault_run<block_iq2_xs>},
    {GgmlType::IQ3_XXS, "IQ3_XXS", k_block, sizeof(block_iq3_xxs), &detail::dequantize_block_run<block_iq3_xxs>, &detail::block_fault_run<block_iq3_xxs>},
    {GgmlType::IQ1_S, "IQ1_S", k_block, sizeof(block_iq1_s), &detail::dequantize_block_run<block_iq1_s>, &detail::block_fault_run<block_iq1_s>},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18, &detail::dequantize_iq4_nl_run, &detail::block_fault_run<block_codebook<32>>},
    {GgmlType::IQ3_S, "IQ3_S", k_block, sizeof(block_iq3_s), &detail::dequantize_block_run<block_iq3_s>, &detail::block_fault_run<block_iq3_s>},
    {GgmlType::IQ2_S, "IQ2_S", k_block, sizeof(block_iq2_s), &detail::dequantize_block_run<block_iq2_s>, &detail::block_fault_run<block_iq2_s>},
    {GgmlType::IQ4_XS, "IQ4_XS", k_block, sizeof(block_iq4_xs), &detail::dequantize_block_run<block_iq4_xs>, &detail::block_fault_run<block_iq4_xs>},
    {GgmlType::I8, "I8", 1, 1},
    {GgmlType::I16, "I16", 1, 2},
    {GgmlType::I32, "I32", 1, 4},
    {GgmlType::I64, "I64", 1, 8},
    {GgmlType::F64, "F64", 1, 8},
    {GgmlType::IQ1_M, "IQ1_M", k_block, sizeof(block_iq1_m), &detail::dequantize_block_run<block_iq1_m>},  // d is spread over 4 words: values are checked after
    {GgmlType::BF16, "BF16", 1, 2, &detail::dequantize_bf16_run},
    {GgmlType::TQ1_0, "TQ1_0", k_block, sizeof(block_tq1_0), &detail::dequantize_block_run<block_tq1_0>, &detail::block_fault_run<block_tq1_0>},
    {GgmlType::TQ2_0, "TQ2_0", k_block, sizeof(block_tq2_0), &detail::dequantize_block_run<block_tq2_0>, &detail::block_fault_run<block_tq2_0>},
}};

/// The row of a stored type id, or null for an id ggml does not define.
constexpr const GgmlTypeInfo* find_ggml_type(std::uint32_t id) noexcept {
    for (const auto& t : ggml_types)
        if (std::uint32_t(t.type) == id) return &t;
    return nullptr;
}
constexpr const GgmlTypeInfo& ggml_type_info(GgmlType t) noexcept { return *find_ggml_type(std::uint32_t(t)); }

/// ggml's name of a stored type id ("unknown" for an id ggml does not define).
constexpr std::string_view ggml_type_name(std::uint32_t id) noexcept {
    const auto* t = find_ggml_type(id);
    return t ? t->name : std::string_view("unknown");
}

}  // namespace qforge
