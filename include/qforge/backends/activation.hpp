#pragma once
/// @file
/// 8-bit activation quantization for integer dot products, and the one float recipe that turns
/// integer dots into an output. Every backend follows this arithmetic exactly, so a SIMD or GPU
/// GEMV equals the scalar oracle bit for bit; its distance from the FP32 product is a property of
/// this recipe alone (see docs/kernels.md for the stated tolerance).
///
/// The activation vector x (length cols) is cut like a weight row: into the weight grid's groups,
/// and each group into sub-blocks of up to 128 entries (the last one of a group may be shorter).
/// Sub-block k gets dx_k = max|x| / 127 and xq_i = round_half_even(x_i / dx_k) in [-127, 127],
/// and its sum sx_k = sum xq_i. For a weight row with codes q, group g, sub-block k:
///     d_k = sum_i q_i * xq_i                          (exact, int32)
///     integer / symmetric zero z:  acc_g = fma(dx_k, float(d_k - z * sx_k), acc_g)   over k in order
///                                  y     = fma(s_g, acc_g, y)                        over g in order
///     float minimum m:             acc_g = fma(dx_k, float(d_k), acc_g)
///                                  y     = fma(m_g, xsum_g, fma(s_g, acc_g, y))
/// with xsum_g = sum_k dx_k * sx_k accumulated by fma in order, and acc_g, y starting at 0.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "qforge/core/spec.hpp"

namespace qforge {

inline constexpr int act_sub_block = 128;

/// Where entry i of a sub-block sits among its 128 slots. Packed formats whose bytes hold
/// codes far apart (nibbles, 2-bit crumbs) ask for the order that lines activations up with the
/// bit planes, so a vector kernel never shuffles weights; integer sums do not depend on order.
enum class LaneOrder : std::uint8_t {
    natural,  ///< slot i
    pairs,    ///< even i at slot i/2, odd i at 64 + i/2 (4-bit LSB-first bitstreams)
    quads,    ///< i at slot 32*(i%4) + i/4 (2-bit LSB-first bitstreams)
};

constexpr int lane_slot(LaneOrder order, int i) noexcept {
    switch (order) {
        case LaneOrder::natural: return i;
        case LaneOrder::pairs: return (i & 1) * 64 + i / 2;
        case LaneOrder::quads: return (i & 3) * 32 + i / 4;
    }
    return i;
}

/// One activation vector, quantized for a given weight grid (columns and group length).
struct QuantizedActivation {
    int cols = 0;
    int group_length = 0;
    int groups = 0;
    int subs_per_group = 0;  ///< sub-blocks in every group but maybe the last
    LaneOrder order = LaneOrder::natural;
    std::vector<std::int8_t> q;    ///< sub-blocks x 128 slots, zero-padded
    std::vector<float> scale;      ///< dx per sub-block
    std::vector<std::int32_t> sum; ///< sx per sub-block
    std::vector<float> group_sum;  ///< xsum per group

    [[gnu::always_inline]] int sub_blocks_in_group(int g) const noexcept {
        const int len = std::min(group_length, cols - g * group_length);
        return (len + act_sub_block - 1) / act_sub_block;
    }
    [[gnu::always_inline]] int sub_index(int g, int k) const noexcept { return g * subs_per_group + k; }
    [[gnu::always_inline]] const std::int8_t* slots(int sub) const noexcept { return q.data() + std::size_t(sub) * act_sub_block; }
};

/// One sub-block of n <= 128 entries: returns dx = max|x| / 127; when dx > 0 writes
/// q[i] = clamp(round_half_even(x[i] / dx), -127, 127) for i < n (natural order) and their sum
/// to *total, else leaves q alone and sets *total = 0. The scalar definition; each backend's
/// Fp32Kernels::quantize_sub computes the same bits with one lane per entry.
inline float quantize_sub_scalar(const float* x, int n, std::int8_t* q, std::int32_t* total) noexcept {
    float amax = 0.0f;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float dx = amax / 127.0f;
    std::int32_t sum = 0;
    if (dx > 0.0f)
        for (int i = 0; i < n; ++i) {
            const float v = std::clamp(std::nearbyint(x[i] / dx), -127.0f, 127.0f);
            q[i] = std::int8_t(v);
            sum += std::int32_t(v);
        }
    *total = sum;
    return dx;
}
using QuantizeSubFn = float (*)(const float*, int, std::int8_t*, std::int32_t*) noexcept;

/// Quantizes x for weights of `cols` columns grouped by `group_length`. x must be finite
/// (checked by the public entry points). `sub` quantizes each sub-block (a backend's vector
/// version of quantize_sub_scalar; the same bits).
inline QuantizedActivation quantize_activation(std::span<const float> x, int group_length,
                                               LaneOrder order, QuantizeSubFn sub = &quantize_sub_scalar) {
    QuantizedActivation a;
    a.cols = int(x.size());
    a.group_length = group_length;
    a.groups = (a.cols + group_length - 1) / group_length;
    a.subs_per_group = (group_length + act_sub_block - 1) / act_sub_block;
    a.order = order;
    const int subs = (a.groups - 1) * a.subs_per_group + a.sub_blocks_in_group(a.groups - 1);
    a.q.assign(std::size_t(subs) * act_sub_block, 0);
    a.scale.assign(std::size_t(subs), 0.0f);
    a.sum.assign(std::size_t(subs), 0);
    a.group_sum.assign(std::size_t(a.groups), 0.0f);
    for (int g = 0; g < a.groups; ++g) {
        const int g0 = g * group_length, g1 = std::min(a.cols, g0 + group_length);
        for (int k = 0; k < a.sub_blocks_in_group(g); ++k) {
            const int s = a.sub_index(g, k);
            const int c0 = g0 + k * act_sub_block, c1 = std::min(g1, c0 + act_sub_block);
            std::int8_t* slots = a.q.data() + std::size_t(s) * act_sub_block;
            std::int32_t total = 0;
            float dx;
            if (order == LaneOrder::natural) {
                dx = sub(x.data() + c0, c1 - c0, slots, &total);
            } else {
                std::int8_t natural[act_sub_block];
                dx = sub(x.data() + c0, c1 - c0, natural, &total);
                if (dx > 0.0f)
                    for (int c = c0; c < c1; ++c) slots[lane_slot(order, c - c0)] = natural[c - c0];
            }
            a.scale[std::size_t(s)] = dx;
            a.sum[std::size_t(s)] = total;
            a.group_sum[std::size_t(g)] = std::fma(dx, float(total), a.group_sum[std::size_t(g)]);
        }
    }
    return a;
}

/// The float half of the recipe, split in two steps so kernels need no per-group buffer.
/// Shared by every CPU backend: there is one definition of the arithmetic.
/// Step 1, for each sub-block `sub` of a group in order, with its integer dot `dot`.
[[gnu::always_inline]] inline float accumulate_sub(float acc, std::int32_t dot, const QuantizedActivation& a,
                                                   int sub, bool float_min, int zero_code) noexcept {
    const std::int32_t centred = float_min ? dot : dot - zero_code * a.sum[std::size_t(sub)];
    return std::fma(a.scale[std::size_t(sub)], float(centred), acc);
}
/// Step 2, once per group in order.
[[gnu::always_inline]] inline float finish_group(float y, float acc, const QuantizedActivation& a, int g,
                                                 bool float_min, float scale, float min) noexcept {
    y = std::fma(scale, acc, y);
    return float_min ? std::fma(min, a.group_sum[std::size_t(g)], y) : y;
}

}  // namespace qforge
