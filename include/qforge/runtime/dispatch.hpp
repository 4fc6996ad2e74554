#pragma once
/// @file
/// Run-time choice of instruction set, and the convenience entry points built on it:
/// dequantize, GEMV and GEMM on any packed format, rows split over threads.
///
/// Needs the compiled target `qforge::dispatch` (one translation unit per instruction set, each
/// built with its own flags). The scalar backend is always there; vector backends are used when
/// both compiled in and supported by the running CPU. `QFORGE_ISA=scalar|avx2|avx512_vnni` caps
/// the choice (to test a narrower path on a wider CPU, or to rule a path out).
#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qforge/backends/centroids.hpp"
#include "qforge/backends/fp32.hpp"
#include "qforge/backends/kernels.hpp"
#include "qforge/backends/pq.hpp"
#include "qforge/linalg/hadamard.hpp"
#include "qforge/backends/scalar/primitives.hpp"
#include "qforge/backends/simd/arch.hpp"
#include "qforge/core/parallel.hpp"
#include "qforge/core/validate.hpp"
#include "qforge/core/view.hpp"

namespace qforge {

/// Instruction sets in increasing order of preference.
enum class Isa { scalar = 0, avx2 = 1, avx512_vnni = 2 };

inline std::string_view isa_name(Isa isa) noexcept {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::avx2: return simd::avx2::name();
        case Isa::avx512_vnni: return simd::avx512_vnni::name();
    }
    return "?";
}

inline Isa parse_isa(std::string_view s) {
    for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512_vnni})
        if (isa_name(i) == s) return i;
    throw InvalidArgument("unknown instruction set '" + std::string(s) + "' (scalar, avx2, avx512_vnni)");
}

/// Compiled into qforge::dispatch (its CMake target defines these macros for consumers).
inline bool isa_compiled(Isa isa) noexcept {
    switch (isa) {
        case Isa::scalar: return true;
#ifdef QFORGE_DISPATCH_AVX2
        case Isa::avx2: return true;
#endif
#ifdef QFORGE_DISPATCH_AVX512_VNNI
        case Isa::avx512_vnni: return true;
#endif
        default: return false;
    }
}

/// Compiled in and supported by this CPU.
inline bool isa_usable(Isa isa) noexcept {
    if (!isa_compiled(isa)) return false;
    switch (isa) {
        case Isa::scalar: return true;
        case Isa::avx2: return simd::avx2::available();
        case Isa::avx512_vnni: return simd::avx512_vnni::available();
    }
    return false;
}

/// The best usable instruction set, capped by QFORGE_ISA when set.
inline Isa best_isa() {
    Isa cap = Isa::avx512_vnni;
    if (const char* env = std::getenv("QFORGE_ISA"); env && *env) cap = parse_isa(env);
    for (int i = int(cap); i > 0; --i)
        if (isa_usable(Isa(i))) return Isa(i);
    return Isa::scalar;
}

/// The row kernels of one format on one backend, as plain function pointers.
template <class F>
struct RowFunctions {
    using View = typename FormatTraits<F>::View;
    std::string_view isa;  ///< the backend these pointers were compiled for
    void (*dequantize_rows)(const View&, int, int, float*) noexcept = nullptr;
    void (*gemv_rows)(const View&, const QuantizedActivation&, int, int, float*) noexcept = nullptr;
    void (*gemm_rows)(const View&, const QuantizedActivation*, int, int, int, float*, std::size_t) noexcept = nullptr;
    /// The tiled GEMM over row panels (backends/panel.hpp); activations in LaneOrder::natural.
    void (*gemm_tiled_rows)(const View&, const QuantizedActivation*, int, int, int, float*, std::size_t, const PanelTerms&) noexcept = nullptr;
    /// The activations' terms gemm_tiled_rows reads, made once per product.
    PanelTerms (*panel_terms)(const View&, const QuantizedActivation*, int) = nullptr;
    /// Whether gemm_tiled_rows runs a vector panel kernel (else plain loops, kept for tests).
    bool panel_kernel = false;
    /// From how many activations gemm() takes gemm_tiled_rows (with a vector panel kernel).
    std::size_t panel_min_tokens = gemm_panel_min_tokens;
    /// Row panels kept with the weights (PanelSet) and the GEMV over them.
    PanelSet (*panel_set_for)(const View&) = nullptr;
    void (*build_panels)(const View&, int, int, PanelSet&) noexcept = nullptr;
    void (*panel_gemv_rows)(const PanelSet&, const QuantizedActivation&, int, int, float*) noexcept = nullptr;
    /// Whether panel_gemv_rows runs a vector kernel; only then are kept panels worth building.
    bool panel_gemv_kernel = false;
};

template <class B, class F>
constexpr RowFunctions<F> row_functions_of() noexcept {
    return {B::name(),
            &Kernels<B, F>::dequantize_rows,
            &Kernels<B, F>::gemv_rows,
            &Kernels<B, F>::gemm_rows,
            &Kernels<B, F>::gemm_tiled_rows,
            &Kernels<B, F>::panel_terms,
            Kernels<B, F>::has_panel_kernel,
            std::size_t(Kernels<B, F>::panel_min_tokens),
            &Kernels<B, F>::panel_set_for,
            &Kernels<B, F>::build_panels,
            &Kernels<B, F>::panel_gemv_rows,
            Kernels<B, F>::has_panel_gemv_kernel};
}

/// Defined, for each tag in QFORGE_DISPATCH_ARCHS and each packed format, by qforge::dispatch.
template <class Arch, class F>
RowFunctions<F> simd_row_functions() noexcept;

template <class F>
RowFunctions<F> row_functions(Isa isa) {
    if (!isa_usable(isa))
        throw InvalidArgument("instruction set " + std::string(isa_name(isa)) +
                              " is not usable here (not compiled into qforge::dispatch or not supported by this CPU)");
    switch (isa) {
#ifdef QFORGE_DISPATCH_AVX2
        case Isa::avx2: return simd_row_functions<simd::avx2, F>();
#endif
#ifdef QFORGE_DISPATCH_AVX512_VNNI
        case Isa::avx512_vnni: return simd_row_functions<simd::avx512_vnni, F>();
#endif
        default: return row_functions_of<Scalar, F>();
    }
}

/// The FP32 kernels of one backend, as plain function pointers.
struct Fp32Functions {
    std::string_view isa;
    float (*dot)(const float*, const float*, int) noexcept = nullptr;
    void (*axpy)(float, const float*, float*, int) noexcept = nullptr;
    void (*axpy_columns)(const float*, int, const float*, float*, std::size_t, int) noexcept = nullptr;
    void (*channel_stats)(const float*, std::size_t, std::size_t, std::size_t, std::size_t, double*, float*, std::int64_t*) noexcept = nullptr;
    void (*gemm_rows)(const float*, std::size_t, const float*, std::size_t, int, int, int, int, float*,
                      std::size_t) noexcept = nullptr;
    void (*grid_round)(const float*, int, const AffineGrid&, std::uint8_t*, float*, bool) noexcept = nullptr;
    void (*codebook_round)(const float*, int, const float*, int, float, std::uint8_t*, float*, bool) noexcept = nullptr;
    QuantizeSubFn quantize_sub = nullptr;
    void (*softmax)(float*, int, float) noexcept = nullptr;
    void (*swiglu)(float*, const float*, std::size_t) noexcept = nullptr;
    PqGemvFn pq_gemv = nullptr;  ///< row blocks of a product-quantized GEMV (backends/pq.hpp)
    /// the randomized Hadamard transform in place (linalg/hadamard.hpp): x, n floats of scratch, transpose
    void (*hadamard)(const HadamardTransform&, float*, float*, bool) noexcept = nullptr;
    NearestCentroidsFn nearest_centroids = nullptr;  ///< k-means' and GPTQ-PQ's nearest-centroid search (backends/centroids.hpp)
};

template <class B>
constexpr Fp32Functions fp32_functions_of() noexcept {
    return {B::name(), &Fp32Kernels<B>::dot, &Fp32Kernels<B>::axpy, &Fp32Kernels<B>::axpy_columns, &Fp32Kernels<B>::channel_stats, &Fp32Kernels<B>::gemm_rows, &Fp32Kernels<B>::grid_round,
            &Fp32Kernels<B>::codebook_round, &Fp32Kernels<B>::quantize_sub, &Fp32Kernels<B>::softmax, &Fp32Kernels<B>::swiglu, &PqKernels<B>::gemv, &Fp32Kernels<B>::hadamard,
            &CentroidKernels<B>::nearest};
}

/// Defined, for each tag in QFORGE_DISPATCH_ARCHS, by qforge::dispatch.
template <class Arch>
Fp32Functions simd_fp32_functions() noexcept;
// Declared extern so that a TU compiled for one instruction set never instantiates another's.
#ifdef QFORGE_DISPATCH_AVX2
extern template Fp32Functions simd_fp32_functions<simd::avx2>() noexcept;
#endif
#ifdef QFORGE_DISPATCH_AVX512_VNNI
extern template Fp32Functions simd_fp32_functions<simd::avx512_vnni>() noexcept;
#endif

inline Fp32Functions fp32_functions(Isa isa) {
    if (!isa_usable(isa))
        throw InvalidArgument("instruction set " + std::string(isa_name(isa)) +
                              " is not usable here (not compiled into qforge::dispatch or not supported by this CPU)");
    switch (isa) {
#ifdef QFORGE_DISPATCH_AVX2
        case Isa::avx2: return simd_fp32_functions<simd::avx2>();
#endif
#ifdef QFORGE_DISPATCH_AVX512_VNNI
        case Isa::avx512_vnni: return simd_fp32_functions<simd::avx512_vnni>();
#endif
        default: return fp32_functions_of<Scalar>();
    }
}

/// y = W x for product-quantized W (backends/pq.hpp's kernel form): `x` has k.cols entries, `y`
/// k.rows; row blocks of 64 split over `threads` (0: all). Bit-identical on every instruction set
/// and thread count (the oracle's arithmetic). Throws InvalidArgument for an unusable `isa`.
inline void pq_gemv(const PqKernel& k, const float* x, float* y, Isa isa, int threads = 0) {
    const PqGemvFn fn = fp32_functions(isa).pq_gemv;
    const std::size_t work = std::size_t(k.positions) * std::size_t(k.col_blocks) * (64 + std::size_t(k.n_pad * k.d));
    parallel_for(std::size_t(k.row_blocks), threads, [&](std::size_t b0, std::size_t b1) { fn(k, x, y, b0, b1); }, grain_for(work));
}

namespace detail {
inline void require_gemm_shape(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) {
    if (x.cols != w.cols || y.cols != w.rows || x.rows != y.rows)
        throw InvalidArgument("gemm_fp32: shape mismatch: W is " + std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                              ", X is " + std::to_string(x.rows) + " x " + std::to_string(x.cols) + ", Y is " +
                              std::to_string(y.rows) + " x " + std::to_string(y.cols));
}
}  // namespace detail

/// Y = X W^T on FP32 weights with qforge's own kernels: W is rows x cols, X is n x cols, Y is
/// n x rows; rows split over threads. (Backend::gemm_fp32 may use a tuned BLAS instead.)
inline void gemm_fp32(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y, Isa isa,
                      int threads = 0) {
    detail::require_gemm_shape(w, x, y);
    const auto fns = fp32_functions(isa);
    // A vectorised FP32 multiply-add costs about a quarter of a packed one while the weights are
    // reused across activations; with fewer than 4 (decode's GEMV) each row streams 4 bytes per
    // weight from memory, eight times a 4-bit code: counted as 8. (Counted as 1/4, every block
    // linear of SmolLM2 ran on one thread and its FP32 decode read 15 GB/s of the two cores' 28.)
    const std::size_t row_ops = isa == Isa::scalar ? w.cols * x.rows : x.rows < 4 ? w.cols * 8 : w.cols * x.rows / 4;
    parallel_for(w.rows, threads, [&](std::size_t r0, std::size_t r1) {
        fns.gemm_rows(w.data, w.row_stride, x.data, x.row_stride, int(x.rows), int(w.cols), int(r0), int(r1), y.data,
                      y.row_stride);
    }, grain_for(row_ops));
}

namespace detail {
/// The index of x's first non-finite entry, or x.size(). The scan ORs the exponent bits'
/// all-ones test over the span without a branch (vectorised by the compiler: it runs on every
/// packed product's activations).
inline std::size_t first_nonfinite(std::span<const float> x) noexcept {
    std::uint32_t bad = 0;
    for (const float v : x) bad |= std::uint32_t((std::bit_cast<std::uint32_t>(v) & 0x7f800000u) == 0x7f800000u);
    if (!bad) return x.size();
    std::size_t i = 0;
    while (std::isfinite(x[i])) ++i;
    return i;
}
/// Throws InvalidData naming `what` and the first non-finite entry's index.
inline void require_finite(std::span<const float> x, const char* what) {
    if (const std::size_t i = first_nonfinite(x); i < x.size())
        throw InvalidData(std::string(what) + " has a non-finite value at index " + std::to_string(i));
}
}  // namespace detail

/// y = W x for a packed W (rows x cols); x has cols entries, y rows entries.
template <class F>
void gemv(const typename F::Packed& w, std::span<const float> x, std::span<float> y, Isa isa, int threads = 0) {
    if (x.size() != std::size_t(w.cols) || y.size() != std::size_t(w.rows))
        throw InvalidArgument("gemv: shape mismatch: W is " + std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                              ", x has " + std::to_string(x.size()) + ", y has " + std::to_string(y.size()));
    detail::require_finite(x, "gemv input vector");
    const auto fns = row_functions<F>(isa);
    const auto view = w.view();
    const QuantizedActivation a =
        quantize_activation(x, FormatTraits<F>::group_length(view), FormatTraits<F>::order, fp32_functions(isa).quantize_sub);
    parallel_for(std::size_t(w.rows), threads, [&](std::size_t r0, std::size_t r1) {
        fns.gemv_rows(view, a, int(r0), int(r1), y.data());
    }, grain_for(std::size_t(w.cols)));
}
template <class F>
void gemv(const typename F::Packed& w, std::span<const float> x, std::span<float> y) {
    gemv<F>(w, x, y, best_isa());
}

/// The row panels of `w` kept for single-activation products (backends/panel.hpp), or null
/// where `isa` has no vector GEMV over them for this format (the row kernels are then as good).
/// `force` builds them anyway (tests run the plain loops on the scalar backend). Memory: as
/// many bytes as the stored rows plus the per-group terms (PanelSet::bytes).
template <class F>
std::shared_ptr<const PanelSet> build_panel_set(const typename F::Packed& w, Isa isa, int threads = 0, bool force = false) {
    const auto fns = row_functions<F>(isa);
    if (!fns.panel_gemv_kernel && !force) return nullptr;
    const auto view = w.view();
    auto s = std::make_shared<PanelSet>(fns.panel_set_for(view));
    parallel_for(std::size_t(s->panels()), threads, [&](std::size_t p0, std::size_t p1) {
        fns.build_panels(view, int(p0), int(p1), *s);
    }, grain_for(std::size_t(w.cols) * panel_rows * 4));
    if constexpr (requires { FormatTraits<F>::panel_term_span; }) compact_panel_terms(*s, FormatTraits<F>::panel_term_span);
    else compact_panel_terms(*s);
    return s;
}

/// y = W x over W's kept panels `s` (made by build_panel_set from W): the same bits as gemv.
template <class F>
void gemv_panels(const PanelSet& s, std::span<const float> x, std::span<float> y, Isa isa, int threads = 0) {
    if (x.size() != std::size_t(s.cols) || y.size() != std::size_t(s.rows))
        throw InvalidArgument("gemv: shape mismatch: W is " + std::to_string(s.rows) + " x " + std::to_string(s.cols) +
                              ", x has " + std::to_string(x.size()) + ", y has " + std::to_string(y.size()));
    detail::require_finite(x, "gemv input vector");
    const auto fns = row_functions<F>(isa);
    const QuantizedActivation a = quantize_activation(x, s.group_length, LaneOrder::natural, fp32_functions(isa).quantize_sub);
    // each panel stores its valid rows only (the last may have fewer than 16)
    parallel_for(std::size_t(s.panels()), threads, [&](std::size_t p0, std::size_t p1) {
        fns.panel_gemv_rows(s, a, int(p0), int(p1), y.data());
    }, grain_for(std::size_t(s.cols) * panel_rows));
}

/// How a packed GEMM runs: `automatic` takes the tiled panel kernel where the instruction set
/// has one and there are at least its `panel_min_tokens` activations (RowFunctions), else the
/// row kernels.
/// `rows` and `panels` force one (tests and benchmarks compare them; both equal the oracle).
enum class GemmPath { automatic, rows, panels };

/// Y = X W^T: X is n x cols (one activation per row), Y is n x rows.
template <class F>
void gemm(const typename F::Packed& w, MatrixView<const float> x, MatrixView<float> y, Isa isa, int threads = 0,
          GemmPath path = GemmPath::automatic) {
    if (x.cols != std::size_t(w.cols) || y.cols != std::size_t(w.rows) || x.rows != y.rows)
        throw InvalidArgument("gemm: shape mismatch: W is " + std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                              ", X is " + std::to_string(x.rows) + " x " + std::to_string(x.cols) + ", Y is " +
                              std::to_string(y.rows) + " x " + std::to_string(y.cols));
    const auto fns = row_functions<F>(isa);
    const auto view = w.view();
    const bool panels = path == GemmPath::panels ||
                        (path == GemmPath::automatic && fns.panel_kernel && x.rows >= fns.panel_min_tokens);
    const LaneOrder order = panels ? LaneOrder::natural : FormatTraits<F>::order;
    std::vector<QuantizedActivation> xs(x.rows);
    const QuantizeSubFn sub = fp32_functions(isa).quantize_sub;
    parallel_for(x.rows, threads, [&](std::size_t t0, std::size_t t1) {  // an error names the first bad row
        for (std::size_t t = t0; t < t1; ++t) {
            if (const std::size_t i = detail::first_nonfinite(x.row(t)); i < x.cols)
                throw InvalidData("gemm input matrix has a non-finite value at row " + std::to_string(t) + ", column " + std::to_string(i));
            xs[t] = quantize_activation(x.row(t), FormatTraits<F>::group_length(view), order, sub);
        }
    }, grain_for(std::size_t(w.cols) * 4));
    if (panels) {
        const std::size_t count = (std::size_t(w.rows) + panel_rows - 1) / panel_rows;
        const PanelTerms terms = fns.panel_terms(view, xs.data(), int(xs.size()));
        parallel_for(count, threads, [&](std::size_t p0, std::size_t p1) {
            fns.gemm_tiled_rows(view, xs.data(), int(xs.size()), int(p0) * panel_rows,
                                std::min(int(p1) * panel_rows, w.rows), y.data, y.row_stride, terms);
        }, grain_for(std::size_t(w.cols) * xs.size() * panel_rows));
        return;
    }
    parallel_for(std::size_t(w.rows), threads, [&](std::size_t r0, std::size_t r1) {
        fns.gemm_rows(view, xs.data(), int(xs.size()), int(r0), int(r1), y.data, y.row_stride);
    }, grain_for(std::size_t(w.cols) * xs.size()));
}

/// The whole packed matrix as FP32 into the caller's rows x cols buffer.
template <class F>
void dequantize(const typename F::Packed& w, MatrixView<float> out, Isa isa, int threads = 0) {
    if (out.rows != std::size_t(w.rows) || out.cols != std::size_t(w.cols))
        throw InvalidArgument("dequantize: output is " + std::to_string(out.rows) + " x " + std::to_string(out.cols) +
                              ", the matrix is " + std::to_string(w.rows) + " x " + std::to_string(w.cols));
    if (out.row_stride != out.cols) throw InvalidArgument("dequantize: the output must be contiguous rows");
    const auto fns = row_functions<F>(isa);
    const auto view = w.view();
    parallel_for(std::size_t(w.rows), threads, [&](std::size_t r0, std::size_t r1) {
        fns.dequantize_rows(view, int(r0), int(r1), out.data + r0 * std::size_t(w.cols));
    }, grain_for(std::size_t(w.cols)));
}

/// The whole packed matrix as FP32, row-major rows x cols.
template <class F>
std::vector<float> dequantize(const typename F::Packed& w, Isa isa, int threads = 0) {
    std::vector<float> out(std::size_t(w.rows) * std::size_t(w.cols));
    dequantize<F>(w, MatrixView<float>(out.data(), std::size_t(w.rows), std::size_t(w.cols)), isa, threads);
    return out;
}

}  // namespace qforge
