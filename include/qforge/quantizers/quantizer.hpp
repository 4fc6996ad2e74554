#pragma once
/// @file
/// The extension point for methods: a method is a tag (its name and grammar facts, `Tag::info`)
/// plus one specialisation of `quantizer<Tag>` in its own file in quantizers/, the CUTLASS
/// "collective" pattern. A specialisation provides
///
///     static QuantizedLayer quantize(MatrixView<const float> w, const RuntimeScheme& s,
///                                    const LayerCalibration& calib, const QuantizeSettings& o);
///
/// and, for methods whose pipeline is `Pipeline::activation_scaled`, `round(...)` with the same
/// signature: the final quantizer applied to weights (and Hessian) already scaled by the model
/// driver. `quantize<Scheme<...>>(w, calib)` calls the specialisation at compile time; the text
/// form goes through quantizers/registry.hpp, which lists the tags once. docs/extending.md walks
/// through adding a method.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qforge/core/once_cache.hpp"
#include "qforge/core/parallel.hpp"
#include "qforge/core/quantized.hpp"
#include "qforge/core/scheme.hpp"
#include "qforge/core/view.hpp"
#include "qforge/formats/pq.hpp"
#include "qforge/linalg/hadamard.hpp"
#include "qforge/runtime/backend.hpp"

namespace qforge {

namespace detail {
class GptqFactorCache;  // quantizers/gptq_factor.hpp
struct HadamardCache;    // below
}

/// Settings of the MSE clip search: shrink factors 1 - max_shrink * i / grid, i = 0..grid.
struct ClipSearch {
    int grid = 20;
    float max_shrink = 0.5f;
};

/// What calibration knows of one linear layer's inputs: the one interface every quantizer reads.
/// Pointers, so a model driver can share one Hessian between the layers of a block; a method
/// that needs an entry the caller left null throws InvalidArgument saying which.
struct LayerCalibration {
    const std::vector<float>* hessian = nullptr;       ///< cols x cols, H = 2 X^T X / n (GPTQ, AWQ)
    const std::vector<float>* mean_abs = nullptr;      ///< cols: mean |x_c| of each input channel (AWQ)
    const std::vector<float>* row_weight = nullptr;    ///< rows: weight λ_r of each output row's error (TWQ), or null
    const std::vector<float>* importance = nullptr;    ///< cols: an imatrix's mean x² per input (RTN rounds as llama-quantize; io/imatrix.hpp), or null
};

/// How a quantizer runs (not what it computes: results do not depend on the backend's threads).
struct QuantizeSettings {
    Backend backend;            ///< where FP32 products run and how many threads the row loops use
    int gptq_block = 128;       ///< GPTQ's lazy-batch block (columns)
    ClipSearch clip_search{};   ///< shrink factors tried by `,clip` and AWQ's clip search
    int awq_grid = 20;          ///< AWQ: α in {0, 1/grid, ..., (grid-1)/grid}
    bool awq_clip = true;       ///< AWQ: search each group's clipping range after scaling
    int awq_search_rows = 512;  ///< AWQ: output rows per layer the α search measures (0: all)
    int awq_coarse_step = 5;    ///< AWQ: the α search's coarse step (1: every grid point; AwqOptions::coarse_step)
    /// GPTQ, GPTQ-PQ: a memo of H's checked diagonal and inverse factor, for a caller quantizing
    /// the same inputs with several schemes (measure_sensitivity); null: computed every time
    std::shared_ptr<detail::GptqFactorCache> gptq_factor_cache = nullptr;
    /// `,had`: a memo of the transformed weights and Hessians, for the same callers; null: transformed every time
    std::shared_ptr<detail::HadamardCache> hadamard_cache = nullptr;
};

/// One quantized layer. Ŵ = the dequantized codes (`q`, or `pq` for a product-quantization grid), column k holding original column
/// column_order[k] when column_order is not empty (GPTQ act-order with dynamic groups), divided
/// by input_scales[c] per original column c when input_scales is not empty (AWQ applied to a
/// single layer: the scales fold into whatever produces the layer's input), and with
/// `input_transform` (`,had`) the codes are of W Tᵀ: each row of Ŵ is Tᵀ applied to that row.
struct QuantizedLayer {
    QuantizedLayer() = default;
    explicit QuantizedLayer(QuantizedMatrix m, std::vector<int> order = {}) : q(std::move(m)), column_order(std::move(order)) {}
    explicit QuantizedLayer(PqMatrix m) : pq(std::move(m)) {}

    QuantizedMatrix q;      ///< the codes on a scalar grid (empty for a PQ grid)
    PqMatrix pq;            ///< the codes and codebooks of a PQ grid (RuntimeScheme::pq), else empty
    std::vector<int> column_order;
    std::vector<float> input_scales;
    std::shared_ptr<const HadamardTransform> input_transform;  ///< `,had`: T on the inputs, or null
    /// `,salient=P` (quantizers/salient.hpp): the input channels kept in FP16, ascending, and
    /// their weights (rows x wide_columns.size(), row-major, fp16-exact). Then `q` holds the other
    /// columns only and `column_order` (never empty) names the original column of each of them.
    std::vector<int> wide_columns;
    std::vector<float> wide_values;
    std::string note;       ///< what was adjusted (GPTQ damping raised, dead inputs), empty if nothing
    float alpha = 0.0f;     ///< AWQ: the exponent chosen

    bool is_pq() const noexcept { return pq.rows > 0; }
    int rows() const noexcept { return is_pq() ? pq.rows : q.rows; }
    int cols() const noexcept { return is_pq() ? pq.cols : q.cols + int(wide_columns.size()); }

    /// Ŵ, rows x cols row-major in the original column order and units.
    std::vector<float> dequantize() const {
        const std::size_t C = std::size_t(cols()), K = wide_columns.size();
        std::vector<float> w = is_pq() ? pq.dequantize() : std::vector<float>(std::size_t(q.rows) * C);
        for (int r = 0; r < q.rows; ++r) {  // a PQ layer has no rows here
            for (int k = 0; k < q.cols; ++k) {
                const std::size_t c = std::size_t(column_order.empty() ? k : column_order[std::size_t(k)]);
                float v = q.dequantize(r, k);
                if (!input_scales.empty()) v /= input_scales[c];
                w[std::size_t(r) * C + c] = v;
            }
            for (std::size_t j = 0; j < K; ++j) w[std::size_t(r) * C + std::size_t(wide_columns[j])] = wide_values[std::size_t(r) * K + j];
        }
        if (input_transform) {
            std::vector<float> tmp(static_cast<std::size_t>(cols()));
            for (int r = 0; r < rows(); ++r) input_transform->apply_transpose(w.data() + std::size_t(r) * std::size_t(cols()), tmp.data());
        }
        return w;
    }
};

template <class Method>
inline constexpr bool no_quantizer_for = false;

/// Primary template: a method tag without a quantizer is a compile error that says so.
template <class Method>
struct quantizer {
    static_assert(no_quantizer_for<Method>,
                  "qforge::quantizer<Method>: no quantizer exists for this method; write one specialisation of "
                  "qforge::quantizer in its own file in include/qforge/quantizers/ and list its tag in "
                  "quantizers/registry.hpp (docs/extending.md)");
};

namespace detail {
inline const std::vector<float>& need(const std::vector<float>* p, std::string_view method, const char* what) {
    if (!p) throw InvalidArgument(std::string(method) + ": needs calibration: " + what + " (LayerCalibration)");
    return *p;
}
}  // namespace detail

namespace detail {
/// In place: the n x n row-major matrix `a` becomes its transpose, in 64 x 64 tiles (pairs of
/// tiles swapped on one thread each): a column-order swap of a 1536-wide Hessian missed the
/// cache on every element and was most of what `,had` added to GPTQ.
inline void transpose_square(float* a, std::size_t n, int threads) {
    constexpr std::size_t T = 64;
    const std::size_t tiles = (n + T - 1) / T;
    parallel_for(tiles, threads, [&](std::size_t b0, std::size_t b1) {
        for (std::size_t bi = b0; bi < b1; ++bi)
            for (std::size_t bj = bi; bj < tiles; ++bj) {
                const std::size_t i1 = std::min(n, (bi + 1) * T), j1 = std::min(n, (bj + 1) * T);
                for (std::size_t i = bi * T; i < i1; ++i)
                    for (std::size_t j = (bi == bj ? i + 1 : bj * T); j < j1; ++j) std::swap(a[i * n + j], a[j * n + i]);
            }
    }, 1);
}
}  // namespace detail

namespace detail {
/// `,had`'s transformed inputs (W Tᵀ, T H Tᵀ) kept for a caller that quantizes the same layer
/// with several `,had` schemes (measure_sensitivity's candidates; about half of what `,had`
/// added to each candidate there). Found by the width and the whole input, which fix T (one
/// seed per width) and so the output: a hit is what the transform would compute.
struct HadamardCache {
    struct Key {
        std::size_t width;
        std::vector<float> values;  ///< W (rows x width) or H (width x width), row-major
        /// a new entry's copy of the probed matrix (a lookup compares the caller's, copying nothing)
        explicit Key(MatrixView<const float> m) : width(m.cols), values(m.rows * m.cols) {
            for (std::size_t r = 0; r < m.rows; ++r) std::copy_n(m.row(r).data(), m.cols, values.data() + r * m.cols);
        }
        bool operator==(MatrixView<const float> m) const {
            if (m.cols != width || m.rows * m.cols != values.size()) return false;
            for (std::size_t r = 0; r < m.rows; ++r)
                if (!std::equal(m.row(r).begin(), m.row(r).end(), values.begin() + std::ptrdiff_t(r * width))) return false;
            return true;
        }
    };
    OnceCache<Key, std::shared_ptr<const std::vector<float>>> weights, hessians;
};
}  // namespace detail

/// The seed of a width's `,had` transform: fixed per width, so layers that read the same input
/// (a block's q/k/v, its gate and up) share one transform.
constexpr std::uint64_t hadamard_seed(int width) noexcept { return 0x9A11C0DEull + std::uint64_t(width); }

/// `fn` (a method's quantize) with `,had` first: the weights' rows and the Hessian go through the
/// randomized Hadamard transform of the inputs (W Tᵀ, T H Tᵀ), the method quantizes those, and the
/// layer records T (its input is transformed at run time). A width without a built-in Hadamard
/// order is quantized untransformed and its note says so. InvalidArgument when the calibration
/// has per-input statistics that the transform would mix (mean |x|, an imatrix).
template <class Fn>
QuantizedLayer quantize_with_hadamard(Fn&& fn, MatrixView<const float> w, const RuntimeScheme& s, const LayerCalibration& c, const QuantizeSettings& o) {
    if (!s.options.hadamard) return fn(w, s, c, o);
    if (c.mean_abs || c.importance)
        throw InvalidArgument("',had': per-input statistics (mean |x|, an importance matrix) are of the untransformed inputs");
    std::shared_ptr<const HadamardTransform> t;
    try {
        t = std::make_shared<const HadamardTransform>(int(w.cols), hadamard_seed(int(w.cols)));
    } catch (const InvalidArgument& e) {
        QuantizedLayer out = fn(w, s, c, o);
        out.note += std::string(e.what()) + ": quantized without the transform; ";
        return out;
    }
    const std::size_t R = w.rows, C = w.cols;
    if (c.hessian && c.hessian->size() != C * C)  // the transform reads it as C x C before the method checks it
        throw InvalidArgument("',had': the Hessian has " + std::to_string(c.hessian->size()) + " entries, a " + std::to_string(C) + "-column layer needs " +
                              std::to_string(C * C));
    const Fp32Functions& fns = o.backend.host_fp32();
    const auto transform_rows = [&] {
        auto wt = std::make_shared<std::vector<float>>(R * C);
        parallel_for(R, o.backend.threads(), [&](std::size_t r0, std::size_t r1) {
            std::vector<float> tmp(C);
            for (std::size_t r = r0; r < r1; ++r) {
                std::copy_n(w.row(r).data(), C, wt->data() + r * C);
                fns.hadamard(*t, wt->data() + r * C, tmp.data(), false);
            }
        }, grain_for(C * 16));
        return std::shared_ptr<const std::vector<float>>(std::move(wt));
    };
    // T H Tᵀ: the rows of H transformed (H Tᵀ), then the rows of its transpose (H symmetric)
    const auto transform_hessian = [&] {
        auto ht = std::make_shared<std::vector<float>>(*c.hessian);
        for (int pass = 0; pass < 2; ++pass) {
            parallel_for(C, o.backend.threads(), [&](std::size_t r0, std::size_t r1) {
                std::vector<float> tmp(C);
                for (std::size_t r = r0; r < r1; ++r) fns.hadamard(*t, ht->data() + r * C, tmp.data(), false);
            }, grain_for(C * 16));
            detail::transpose_square(ht->data(), C, o.backend.threads());
        }
        return std::shared_ptr<const std::vector<float>>(std::move(ht));
    };
    std::shared_ptr<const std::vector<float>> wt, ht;
    if (o.hadamard_cache) {
        wt = o.hadamard_cache->weights.get(w, transform_rows);
        if (c.hessian) ht = o.hadamard_cache->hessians.get(MatrixView<const float>(c.hessian->data(), C, C), transform_hessian);
    } else {
        wt = transform_rows();
        if (c.hessian) ht = transform_hessian();
    }
    LayerCalibration ct = c;
    if (ht) ct.hessian = ht.get();
    QuantizedLayer out = fn(MatrixView<const float>(wt->data(), R, C), s, ct, o);
    out.input_transform = std::move(t);
    return out;
}

/// Quantizes with a compile-time scheme, e.g.
/// `quantize<Scheme<Gptq, Int<4>, Group<128>, Asym, ActOrder>>(w, {.hessian = &h})`.
/// `w` is rows x cols (out x in features). Equal, bit for bit, to the registry's runtime path for
/// `S::text()`. Throws InvalidArgument (bad shapes, missing calibration) or InvalidData (NaN/Inf).
template <class S>
QuantizedLayer quantize(MatrixView<const float> w, const LayerCalibration& calib = {}, const QuantizeSettings& o = {}) {
    return quantize_with_hadamard(&quantizer<typename S::method>::quantize, w, S::runtime(), calib, o);
}

}  // namespace qforge
