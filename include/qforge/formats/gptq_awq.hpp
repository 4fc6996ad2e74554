#pragma once
/// @file
/// The GPTQ and AWQ checkpoint layouts that AutoGPTQ/GPTQModel, AutoAWQ, transformers and vLLM
/// load: how one linear layer's integer-grid codes, fp16 scales and integer zero points are packed
/// into int32 tensors. Pure layout code: no file I/O (container/llama/hf_export.hpp writes the
/// files, sources/llama/hf_source.hpp reads them).
///
/// A layer of `out_features` N x `in_features` K with groups of g input columns (G groups;
/// g = K is one group per output row, `group_size: -1` in the config), b-bit codes q, scale s and
/// zero z per (group, output): W[n][i] = s[g_idx[i]][n] * (q[n][i] - z[g_idx[i]][n]).
///
/// **GPTQ** (AutoGPTQ's `QuantLinear.pack`; b = 2, 3, 4, 8):
/// - `qweight` I32 [K*b/32, N]: packed along the *input* dimension. For each output n, the codes
///   q[n][0..K) form an LSB-first bitstream over the words qweight[0][n], qweight[1][n], ...:
///   code i sits at stream bits [i*b, i*b + b), stream bit k being bit (k mod 32) of word k/32.
///   For b = 4 that is 8 codes per word, code i at bits 4*(i mod 8); for b = 3, 32 codes in three
///   words, codes 10 and 21 straddling two (AutoGPTQ writes that case out by hand; it is the same
///   stream). Needs K*b divisible by 32.
/// - `qzeros` I32 [G, N*b/32]: packed along the *output* dimension, the same bitstream over n.
///   Checkpoint format "gptq" (v1, AutoGPTQ and every loader) stores z - 1, masked to b bits;
///   "gptq_v2" (GPTQModel) stores z. A zero point of 0 has no safe v1 form (kernels add 1 without
///   masking), so writing one in v1 is an error; reading v1 follows AutoGPTQ's reference
///   dequantization ((stored + 1) mod 2^b).
/// - `scales` F16 [G, N]; `g_idx` I32 [K]: the group of input column i (i / g without act-order).
///
/// **AWQ** (AutoAWQ's `WQLinear_GEMM`; b = 4): `qweight` I32 [K, N/8] packed along the *output*
/// dimension, word j of input row i holding outputs 8j .. 8j+7 in the order
/// [0, 2, 4, 6, 1, 3, 5, 7]: nibble p (bits 4p) is output 8j + awq_order[p]. `qzeros` I32
/// [G, N/8] the same way (z itself, no offset), `scales` F16 [G, N]; no g_idx (groups are
/// contiguous).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "qforge/core/error.hpp"
#include "qforge/core/half.hpp"
#include "qforge/formats/dense.hpp"

namespace qforge {

/// One linear layer on an integer grid, in the checkpoints' terms (inputs in their original
/// order, groups given by g_idx). The common form between qforge's Dense layouts and both
/// checkpoint layouts.
struct IntGridLayer {
    int bits = 4;
    int out_features = 0;  ///< N (qforge's rows)
    int in_features = 0;   ///< K (qforge's cols)
    int group_size = 0;    ///< g; in_features for one group per row
    int groups = 0;        ///< G = ceil(K / g)
    std::vector<std::uint8_t> codes;    ///< N x K, codes[n*K + i]
    std::vector<std::uint16_t> scales;  ///< G x N fp16 bits, scales[g*N + n]
    std::vector<std::uint8_t> zeros;    ///< G x N zero points (the grid's own, 0 .. 2^b-1)
    std::vector<std::int32_t> g_idx;    ///< K

    IntGridLayer() = default;
    IntGridLayer(int b, int n, int k, int g)
        : bits(b), out_features(n), in_features(k), group_size(g), groups(g > 0 ? (k + g - 1) / g : 0),
          codes(std::size_t(n) * std::size_t(k)), scales(std::size_t(groups) * std::size_t(n)), zeros(scales.size()), g_idx(std::size_t(k)) {
        for (int i = 0; i < k; ++i) g_idx[std::size_t(i)] = g > 0 ? i / g : 0;
    }
    /// The dequantized weight W[n][i].
    float weight(int n, int i) const {
        const std::size_t gi = std::size_t(g_idx[std::size_t(i)]) * std::size_t(out_features) + std::size_t(n);
        return half_to_float(scales[gi]) * float(int(codes[std::size_t(n) * std::size_t(in_features) + std::size_t(i)]) - int(zeros[gi]));
    }
    /// g_idx is i / g for every column (no act-order permutation).
    bool trivial_g_idx() const {
        for (int i = 0; i < in_features; ++i)
            if (g_idx[std::size_t(i)] != i / group_size) return false;
        return true;
    }
    /// Output rows in a new order: row n of the result is row from[n] of this layer.
    IntGridLayer permute_outputs(const std::vector<int>& from) const {
        IntGridLayer o = *this;
        const std::size_t K = std::size_t(in_features), N = std::size_t(out_features);
        for (std::size_t n = 0; n < N; ++n) {
            const std::size_t f = std::size_t(from[n]);
            std::copy_n(codes.begin() + std::ptrdiff_t(f * K), K, o.codes.begin() + std::ptrdiff_t(n * K));
            for (std::size_t g = 0; g < std::size_t(groups); ++g) {
                o.scales[g * N + n] = scales[g * N + f];
                o.zeros[g * N + n] = zeros[g * N + f];
            }
        }
        return o;
    }
};

/// The four tensors of a GPTQ layer (`awq` layers leave g_idx empty), int32 words as uint32.
struct PackedCheckpointLayer {
    std::vector<std::uint32_t> qweight, qzeros;
    std::vector<std::uint16_t> scales;
    std::vector<std::int32_t> g_idx;
    std::array<std::size_t, 2> qweight_shape{}, qzeros_shape{};
};

/// AutoAWQ's packing order: nibble p of a word holds output 8j + awq_order[p].
inline constexpr std::array<int, 8> awq_order{0, 2, 4, 6, 1, 3, 5, 7};

namespace detail {
inline void put_word_bits(std::uint32_t* words, std::size_t stride, std::size_t i, int bits, std::uint32_t q) noexcept {
    const std::size_t bit = i * std::size_t(bits), w = bit / 32, s = bit % 32;
    words[w * stride] |= q << s;
    if (s + std::size_t(bits) > 32) words[(w + 1) * stride] |= q >> (32 - s);
}
inline std::uint32_t get_word_bits(const std::uint32_t* words, std::size_t stride, std::size_t i, int bits) noexcept {
    const std::size_t bit = i * std::size_t(bits), w = bit / 32, s = bit % 32;
    std::uint64_t v = words[w * stride] >> s;
    if (s + std::size_t(bits) > 32) v |= std::uint64_t(words[(w + 1) * stride]) << (32 - s);
    return std::uint32_t(v) & ((1u << bits) - 1u);
}
}  // namespace detail

/// Why `l` has no GPTQ layout (empty when it has one).
inline std::string gptq_unsupported(const IntGridLayer& l) {
    if (l.bits != 2 && l.bits != 3 && l.bits != 4 && l.bits != 8) return "GPTQ packs 2, 3, 4 or 8-bit codes, not " + std::to_string(l.bits);
    if ((std::size_t(l.in_features) * std::size_t(l.bits)) % 32)
        return "GPTQ packs inputs into int32 words: " + std::to_string(l.in_features) + " inputs of " + std::to_string(l.bits) + " bits do not fill whole words";
    if ((std::size_t(l.out_features) * std::size_t(l.bits)) % 32)
        return "GPTQ packs zero points into int32 words: " + std::to_string(l.out_features) + " outputs of " + std::to_string(l.bits) +
               " bits do not fill whole words";
    return {};
}

/// Why `l` has no AWQ (GEMM) layout (empty when it has one).
inline std::string awq_unsupported(const IntGridLayer& l) {
    if (l.bits != 4) return "AWQ's GEMM layout packs 4-bit codes, not " + std::to_string(l.bits);
    if (l.out_features % 8) return "AWQ packs 8 outputs per int32 word: " + std::to_string(l.out_features) + " outputs";
    if (!l.trivial_g_idx()) return "AWQ has no g_idx: its groups are contiguous input columns (no act-order permutation)";
    return {};
}

/// GPTQ's tensors for `l`; `v1` stores zero points minus one (checkpoint_format "gptq").
/// InvalidArgument when the shape has no GPTQ layout or (v1) a zero point is 0.
inline PackedCheckpointLayer pack_gptq(const IntGridLayer& l, bool v1) {
    if (const auto why = gptq_unsupported(l); !why.empty()) throw InvalidArgument(why);
    const std::size_t N = std::size_t(l.out_features), K = std::size_t(l.in_features), G = std::size_t(l.groups), b = std::size_t(l.bits);
    PackedCheckpointLayer p;
    p.qweight_shape = {K * b / 32, N};
    p.qzeros_shape = {G, N * b / 32};
    p.qweight.assign(p.qweight_shape[0] * N, 0);
    p.qzeros.assign(G * p.qzeros_shape[1], 0);
    const std::uint32_t mask = (1u << l.bits) - 1u;
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t i = 0; i < K; ++i) detail::put_word_bits(p.qweight.data() + n, N, i, l.bits, l.codes[n * K + i] & mask);
    for (std::size_t g = 0; g < G; ++g)
        for (std::size_t n = 0; n < N; ++n) {
            const int z = l.zeros[g * N + n];
            if (v1 && z == 0)
                throw InvalidArgument("output " + std::to_string(n) + ", group " + std::to_string(g) +
                                      ": zero point 0 has no safe form in GPTQ's v1 checkpoints (they store zero - 1; kernels add 1 back without "
                                      "masking): write checkpoint format gptq_v2, or quantize on a symmetric grid");
            detail::put_word_bits(p.qzeros.data() + g * p.qzeros_shape[1], 1, n, l.bits, std::uint32_t(v1 ? z - 1 : z) & mask);
        }
    p.scales = l.scales;
    p.g_idx = l.g_idx;
    return p;
}

/// AWQ's (GEMM) tensors for `l`. InvalidArgument when the shape has no AWQ layout.
inline PackedCheckpointLayer pack_awq(const IntGridLayer& l) {
    if (const auto why = awq_unsupported(l); !why.empty()) throw InvalidArgument(why);
    const std::size_t N = std::size_t(l.out_features), K = std::size_t(l.in_features), G = std::size_t(l.groups), W = N / 8;
    PackedCheckpointLayer p;
    p.qweight_shape = {K, W};
    p.qzeros_shape = {G, W};
    p.qweight.assign(K * W, 0);
    p.qzeros.assign(G * W, 0);
    for (std::size_t j = 0; j < W; ++j)
        for (std::size_t k = 0; k < 8; ++k) {
            const std::size_t n = 8 * j + std::size_t(awq_order[k]);
            for (std::size_t i = 0; i < K; ++i) p.qweight[i * W + j] |= std::uint32_t(l.codes[n * K + i] & 15u) << (4 * k);
            for (std::size_t g = 0; g < G; ++g) p.qzeros[g * W + j] |= std::uint32_t(l.zeros[g * N + n] & 15u) << (4 * k);
        }
    p.scales = l.scales;
    return p;
}

/// The layer a GPTQ checkpoint's tensors hold. `p`'s shapes must be as pack_gptq makes them for
/// (bits, N, K) and g_idx must name groups below ceil(K / group_size): otherwise InvalidData
/// saying which tensor and what it should be (the caller adds file and layer).
inline IntGridLayer unpack_gptq(const PackedCheckpointLayer& p, int bits, int out_features, int in_features, int group_size, bool v1) {
    IntGridLayer l(bits, out_features, in_features, group_size);
    if (const auto why = gptq_unsupported(l); !why.empty()) throw InvalidData(why);
    const std::size_t N = std::size_t(out_features), K = std::size_t(in_features), G = std::size_t(l.groups), b = std::size_t(bits);
    const auto shape = [](std::size_t r, std::size_t c) { return "[" + std::to_string(r) + ", " + std::to_string(c) + "]"; };
    if (p.qweight_shape != std::array<std::size_t, 2>{K * b / 32, N} || p.qweight.size() != K * b / 32 * N)
        throw InvalidData("qweight is " + shape(p.qweight_shape[0], p.qweight_shape[1]) + ", a " + std::to_string(bits) + "-bit layer of " +
                          std::to_string(N) + " outputs and " + std::to_string(K) + " inputs needs " + shape(K * b / 32, N));
    if (p.qzeros_shape != std::array<std::size_t, 2>{G, N * b / 32} || p.qzeros.size() != G * N * b / 32)
        throw InvalidData("qzeros is " + shape(p.qzeros_shape[0], p.qzeros_shape[1]) + ", groups of " + std::to_string(group_size) + " need " +
                          shape(G, N * b / 32));
    if (p.scales.size() != G * N) throw InvalidData("scales has " + std::to_string(p.scales.size()) + " values, needs " + shape(G, N));
    if (!p.g_idx.empty()) {
        if (p.g_idx.size() != K) throw InvalidData("g_idx has " + std::to_string(p.g_idx.size()) + " entries, needs " + std::to_string(K));
        for (std::size_t i = 0; i < K; ++i)
            if (p.g_idx[i] < 0 || std::size_t(p.g_idx[i]) >= G)
                throw InvalidData("g_idx[" + std::to_string(i) + "] = " + std::to_string(p.g_idx[i]) + " is not a group (0.." + std::to_string(G - 1) + ")");
        l.g_idx = p.g_idx;
    }
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t i = 0; i < K; ++i) l.codes[n * K + i] = std::uint8_t(detail::get_word_bits(p.qweight.data() + n, N, i, bits));
    const std::uint32_t mask = (1u << bits) - 1u;
    for (std::size_t g = 0; g < G; ++g)
        for (std::size_t n = 0; n < N; ++n) {
            const std::uint32_t z = detail::get_word_bits(p.qzeros.data() + g * (N * b / 32), 1, n, bits);
            l.zeros[g * N + n] = std::uint8_t(v1 ? (z + 1) & mask : z);
        }
    l.scales = p.scales;
    return l;
}

/// The layer an AWQ (GEMM) checkpoint's tensors hold; shape errors as unpack_gptq.
inline IntGridLayer unpack_awq(const PackedCheckpointLayer& p, int out_features, int in_features, int group_size) {
    IntGridLayer l(4, out_features, in_features, group_size);
    if (out_features % 8) throw InvalidData("AWQ packs 8 outputs per int32 word: " + std::to_string(out_features) + " outputs");
    const std::size_t N = std::size_t(out_features), K = std::size_t(in_features), G = std::size_t(l.groups), W = N / 8;
    const auto shape = [](std::size_t r, std::size_t c) { return "[" + std::to_string(r) + ", " + std::to_string(c) + "]"; };
    if (p.qweight_shape != std::array<std::size_t, 2>{K, W} || p.qweight.size() != K * W)
        throw InvalidData("qweight is " + shape(p.qweight_shape[0], p.qweight_shape[1]) + ", a 4-bit AWQ layer of " + std::to_string(N) +
                          " outputs and " + std::to_string(K) + " inputs needs " + shape(K, W));
    if (p.qzeros_shape != std::array<std::size_t, 2>{G, W} || p.qzeros.size() != G * W)
        throw InvalidData("qzeros is " + shape(p.qzeros_shape[0], p.qzeros_shape[1]) + ", groups of " + std::to_string(group_size) + " need " + shape(G, W));
    if (p.scales.size() != G * N) throw InvalidData("scales has " + std::to_string(p.scales.size()) + " values, needs " + shape(G, N));
    for (std::size_t j = 0; j < W; ++j)
        for (std::size_t k = 0; k < 8; ++k) {
            const std::size_t n = 8 * j + std::size_t(awq_order[k]);
            for (std::size_t i = 0; i < K; ++i) l.codes[n * K + i] = std::uint8_t((p.qweight[i * W + j] >> (4 * k)) & 15u);
            for (std::size_t g = 0; g < G; ++g) l.zeros[g * N + n] = std::uint8_t((p.qzeros[g * W + j] >> (4 * k)) & 15u);
        }
    l.scales = p.scales;
    return l;
}

/// A qforge Dense layer (integer or symmetric zero points, any group size) with its input order
/// (Linear::input_order: column k multiplies x[order[k]]; empty for none) as an IntGridLayer.
/// InvalidArgument for a float-minimum grid (no integer zero point).
template <int B>
IntGridLayer int_grid_of(const typename Dense<B>::Packed& p, const std::vector<int>& order) {
    if (p.spec.zero == ZeroPoint::float_min)
        throw InvalidArgument("a float-minimum grid ('m') has no integer zero point: GPTQ and AWQ checkpoints store s * (q - z) with integer z "
                              "(quantize on an 'a' or 's' grid)");
    const QuantizedMatrix q = Dense<B>::unpack(p);
    const int K = p.cols, N = p.rows, g = p.spec.group_length(K);
    IntGridLayer l(B, N, K, g);
    for (int k = 0; k < K; ++k) {
        const int i = order.empty() ? k : order[std::size_t(k)];
        l.g_idx[std::size_t(i)] = k / g;
        for (int n = 0; n < N; ++n) l.codes[std::size_t(n) * std::size_t(K) + std::size_t(i)] = q.codes[std::size_t(n) * std::size_t(K) + std::size_t(k)];
    }
    for (int n = 0; n < N; ++n)
        for (int gi = 0; gi < l.groups; ++gi) {
            const std::size_t at = std::size_t(gi) * std::size_t(N) + std::size_t(n), from = q.group_index(n, gi);
            l.scales[at] = p.scales[from];
            l.zeros[at] = std::uint8_t(p.spec.zero == ZeroPoint::symmetric ? p.spec.symmetric_zero() : q.zeros[from]);
        }
    return l;
}

/// An IntGridLayer as qforge's `Dense<B>` layout and input order (empty when g_idx is trivial).
/// `symmetric`: store it on the symmetric grid, allowed when every zero point is 2^(b-1).
/// InvalidData when g_idx's groups are not all `group_size` columns (but the last).
template <int B>
std::pair<typename Dense<B>::Packed, std::vector<int>> dense_of(const IntGridLayer& l, bool symmetric) {
    const int K = l.in_features, N = l.out_features, g = l.group_size;
    std::vector<int> order;
    if (!l.trivial_g_idx()) {
        order.resize(std::size_t(K));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l.g_idx[std::size_t(a)] < l.g_idx[std::size_t(b)]; });
        for (int k = 0; k < K; ++k)
            if (l.g_idx[std::size_t(order[std::size_t(k)])] != k / g) {
                std::vector<int> count(std::size_t(l.groups), 0);
                for (const int x : l.g_idx) ++count[std::size_t(x)];
                const auto bad = std::find_if(count.begin(), count.end() - 1, [&](int c) { return c != g; }) - count.begin();
                throw InvalidData("g_idx puts " + std::to_string(count[std::size_t(bad)]) + " input columns in group " + std::to_string(bad) +
                                  "; every group but the last must have group_size = " + std::to_string(g));
            }
    }
    QuantSpec spec;
    spec.bits = B;
    spec.group_size = g >= K ? 0 : g;
    spec.zero = symmetric ? ZeroPoint::symmetric : ZeroPoint::integer;
    QuantizedMatrix q(spec, N, K);
    for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
            const int i = order.empty() ? k : order[std::size_t(k)];
            q.codes[std::size_t(n) * std::size_t(K) + std::size_t(k)] = l.codes[std::size_t(n) * std::size_t(K) + std::size_t(i)];
        }
    for (int n = 0; n < N; ++n)
        for (int gi = 0; gi < l.groups; ++gi) {
            const std::size_t at = std::size_t(gi) * std::size_t(N) + std::size_t(n), to = q.group_index(n, gi);
            q.scales[to] = half_to_float(l.scales[at]);
            if (symmetric && l.zeros[at] != spec.symmetric_zero())
                throw InvalidData("output " + std::to_string(n) + ", group " + std::to_string(gi) + " has zero point " + std::to_string(l.zeros[at]) +
                                  " on a grid said to be symmetric (2^(bits-1) = " + std::to_string(spec.symmetric_zero()) + ")");
            if (!symmetric) q.zeros[to] = l.zeros[at];
        }
    auto packed = Dense<B>::pack(q);
    if (const auto why = Dense<B>::fault(packed); !why.empty()) throw InvalidData(why);
    return {std::move(packed), std::move(order)};
}

}  // namespace qforge
