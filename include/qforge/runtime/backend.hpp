#pragma once
/// @file
/// A backend is a handle: the one value that says where and how qforge's numeric work runs.
/// Models, calibration, quantizers and evaluation take a `Backend`; they never see an
/// instruction set, a thread count or a device. The CPU backend owns the ISA choice inside it
/// (`Backend::cpu(isa, threads)`); another device implements `BackendInterface` (one file, see
/// docs/backends.md) and is wrapped the same way.
///
/// Operations are whole products (a linear layer, an FP32 GEMM, a dequantization) so that a
/// device backend can run them where its buffers live: the weights a product reads are the
/// backend's to keep (`prepare`), and host views go in and out.
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>
#include <string>
#include <utility>

#include "qforge/core/error.hpp"
#include "qforge/core/view.hpp"
#include "qforge/formats/linear_weights.hpp"
#include "qforge/linalg/blocked.hpp"
#include "qforge/runtime/blas.hpp"
#include "qforge/runtime/dispatch.hpp"

namespace qforge {

/// A linear layer's weights as a backend holds them for repeated products: for the CPU a view of
/// the host weights, for a device its copy in device memory (uploaded once by `prepare`).
class PreparedLinear {
public:
    virtual ~PreparedLinear() = default;
    /// Y = X W^T: X is n x cols, Y is n x rows (host memory). Throws InvalidArgument on shapes.
    virtual void forward(MatrixView<const float> x, MatrixView<float> y) const = 0;
};

/// What a backend implements. Every operation throws InvalidArgument on mismatched shapes and
/// InvalidData on non-finite activations, as the CPU kernels do.
class BackendInterface {
public:
    virtual ~BackendInterface() = default;
    /// What runs, for logs and reports, e.g. "avx2" (the CPU backend names its instruction set).
    virtual std::string name() const = 0;
    /// Host threads the caller's own loops may use alongside (0: all hardware threads).
    virtual int threads() const noexcept = 0;
    /// FP32 vector kernels on host memory, for loops that stay on the host (attention over the
    /// KV cache, GPTQ's column updates, Hessian-weighted errors).
    virtual const Fp32Functions& host_fp32() const noexcept = 0;
    /// Y = X W^T in FP32: W is rows x cols, X is n x cols, Y is n x rows (Hessian accumulation
    /// X^T X, the Cholesky factorisation's blocks, FP32 layers).
    virtual void gemm_fp32(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) const = 0;
    /// Y += alpha X W^T in FP32, shapes as for `gemm_fp32` (GPTQ's lazy-batch updates). The
    /// default computes X W^T with `gemm_fp32` into a temporary and adds it.
    virtual void gemm_fp32_add(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y, float alpha) const;
    /// G = X^T X in FP32 (both triangles): X is n x cols, G is cols x cols (the calibration
    /// Hessian's products, a SYRK). The default transposes X and calls `gemm_fp32`.
    virtual void gram_fp32(MatrixView<const float> x, MatrixView<float> g) const;
    /// The running sum of the calibration Hessians, in FP32 as GPTQ's reference accumulates H:
    /// the lower triangle of `acc` (cols x cols floats, diagonal included) becomes X^T X when
    /// `overwrite` (acc's earlier contents are then never read, so it need not be initialised;
    /// the values are `gram_fp32`'s, bit for bit), else acc + X^T X. Elements above the diagonal
    /// may be written (a backend's diagonal blocks); hold on to the lower triangle only. Throws
    /// InvalidArgument on a shape mismatch. The default adds `gram_fp32`'s values from a cols x
    /// cols temporary; the CPU backend on the BLAS runs sgemm with beta = 1 straight into `acc`
    /// (for a batch longer than one of OpenBLAS's k chunks, the chunks' partial sums are added in
    /// turn: the same to rounding, not bit for bit).
    virtual void gram_fp32_accumulate(MatrixView<const float> x, MatrixView<float> acc, bool overwrite) const;
    /// In place: the lower triangle of SPD `a` (n x n, row-major) becomes L with L L^T = A, the
    /// strict upper triangle zeroed. False (a partly overwritten) when A is not positive
    /// definite. The default is qforge's blocked factorisation on `gemm_fp32`.
    virtual bool cholesky_lower(float* a, int n) const;
    /// In place: lower-triangular L (n x n, non-zero diagonal) becomes L^{-1}. The default is
    /// qforge's blocked inverse on `gemm_fp32`.
    virtual void invert_lower(float* l, int n) const;
    /// Y = X W^T on any weights (packed formats never materialised as FP32).
    virtual void linear(const LinearWeights& w, MatrixView<const float> x, MatrixView<float> y) const = 0;
    /// The weights as FP32, rows x cols, into `out` (contiguous rows).
    virtual void dequantize(const LinearWeights& w, MatrixView<float> out) const = 0;
    /// The weights kept for repeated products; `w` must outlive the result. The default keeps a
    /// pointer and calls `linear` (right for host memory); a device backend uploads here.
    virtual std::unique_ptr<PreparedLinear> prepare(const LinearWeights& w) const;
    /// Y_i = X W_i^T for several prepared layers that read the same input X (a decoder block's
    /// q/k/v projections, its gate and up projections): ys[i] is n x rows of layer i. A backend
    /// may share X's preparation and one parallel section among them; the default runs each
    /// layer's forward in turn. Results are those of the separate forwards, bit for bit.
    virtual void linear_together(std::span<const PreparedLinear* const> layers, MatrixView<const float> x,
                                 std::span<const MatrixView<float>> ys) const;
};

namespace detail {
class PointerPrepared final : public PreparedLinear {
public:
    PointerPrepared(const BackendInterface& b, const LinearWeights& w) : b_(b), w_(w) {}
    void forward(MatrixView<const float> x, MatrixView<float> y) const override { b_.linear(w_, x, y); }

private:
    const BackendInterface& b_;
    const LinearWeights& w_;
};
}  // namespace detail

inline std::unique_ptr<PreparedLinear> BackendInterface::prepare(const LinearWeights& w) const {
    return std::make_unique<detail::PointerPrepared>(*this, w);
}

inline void BackendInterface::linear_together(std::span<const PreparedLinear* const> layers, MatrixView<const float> x,
                                              std::span<const MatrixView<float>> ys) const {
    if (layers.size() != ys.size())
        throw InvalidArgument("linear_together: " + std::to_string(layers.size()) + " layers, " + std::to_string(ys.size()) + " outputs");
    for (std::size_t i = 0; i < layers.size(); ++i) layers[i]->forward(x, ys[i]);
}

namespace detail {
inline void require_gram_shape(MatrixView<const float> x, MatrixView<float> g) {
    if (g.rows != x.cols || g.cols != x.cols)
        throw InvalidArgument("gram_fp32: X is " + std::to_string(x.rows) + " x " + std::to_string(x.cols) + ", G must be " +
                              std::to_string(x.cols) + " x " + std::to_string(x.cols) + ", is " + std::to_string(g.rows) + " x " +
                              std::to_string(g.cols));
}
}  // namespace detail

inline bool BackendInterface::cholesky_lower(float* a, int n) const {
    return linalg::blocked::cholesky_lower(a, n, host_fp32(), threads(),
                                           [this](MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) { gemm_fp32(w, x, y); });
}
inline void BackendInterface::invert_lower(float* l, int n) const {
    linalg::blocked::invert_lower(l, n, [this](MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) { gemm_fp32(w, x, y); });
}

inline void BackendInterface::gemm_fp32_add(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y, float alpha) const {
    detail::require_gemm_shape(w, x, y);
    std::vector<float> t(y.rows * y.cols);
    gemm_fp32(w, x, MatrixView<float>(t.data(), y.rows, y.cols));
    for (std::size_t i = 0; i < y.rows; ++i) {
        float* yi = y.data + i * y.row_stride;
        const float* ti = t.data() + i * y.cols;
        for (std::size_t j = 0; j < y.cols; ++j) yi[j] += alpha * ti[j];
    }
}

inline void BackendInterface::gram_fp32(MatrixView<const float> x, MatrixView<float> g) const {
    detail::require_gram_shape(x, g);
    if (x.rows == 0) {
        for (std::size_t i = 0; i < g.rows; ++i)
            for (std::size_t j = 0; j < g.cols; ++j) g(i, j) = 0.0f;
        return;
    }
    // rows of X^T are channels over the batch's tokens: G = X^T (X^T)^T
    std::vector<float> xt(x.cols * x.rows);
    for (std::size_t t = 0; t < x.rows; ++t)
        for (std::size_t j = 0; j < x.cols; ++j) xt[j * x.rows + t] = x(t, j);
    const MatrixView<const float> xtv(xt.data(), x.cols, x.rows);
    gemm_fp32(xtv, xtv, g);
}

inline void BackendInterface::gram_fp32_accumulate(MatrixView<const float> x, MatrixView<float> acc, bool overwrite) const {
    if (acc.rows != x.cols || acc.cols != x.cols)
        throw InvalidArgument("gram_fp32_accumulate: X is " + std::to_string(x.rows) + " x " + std::to_string(x.cols) +
                              ", the accumulator must be " + std::to_string(x.cols) + " x " + std::to_string(x.cols) + ", is " +
                              std::to_string(acc.rows) + " x " + std::to_string(acc.cols));
    std::vector<float> g(x.cols * x.cols);
    gram_fp32(x, MatrixView<float>(g.data(), x.cols, x.cols));
    parallel_for(x.cols, threads(), [&](std::size_t i0, std::size_t i1) {
        for (std::size_t i = i0; i < i1; ++i) {
            float* a = acc.data + i * acc.row_stride;
            const float* gi = g.data() + i * x.cols;
            for (std::size_t j = 0; j <= i; ++j) a[j] = overwrite ? gi[j] : a[j] + gi[j];
        }
    }, grain_for(x.cols));
}

namespace detail {
/// Whether the CPU backend keeps row panels for single-activation products: yes unless
/// QFORGE_KEEP_PANELS=0 (to measure the row kernels against them in one process's run).
inline bool keep_panels_default() noexcept {
    const char* env = std::getenv("QFORGE_KEEP_PANELS");
    return !(env && env[0] == '0' && env[1] == '\0');
}

/// What the CPU backend's linear_together needs of a layer with kept row panels, whatever its
/// format: the panels (built on first use) and the GEMV over a range of them.
class CpuPanelLayer {
public:
    virtual ~CpuPanelLayer() = default;
    /// The kept panels, built by the first call.
    virtual const PanelSet& kept() const = 0;
    /// y[r] = row r . a for the rows of panels [p0, p1) (`a` cut for the matrix, natural order).
    virtual void gemv_panel_range(const PanelSet& s, const QuantizedActivation& a, int p0, int p1, float* y) const noexcept = 0;
};

/// A packed layer on the CPU: single activations (a decode step) run over row panels kept with
/// the weights (backends/panel.hpp), built on the first such product, so a model only ever run on
/// prompts (evaluation) never builds them; larger products go to `linear` as before.
template <class F>
class CpuPanelPrepared final : public PreparedLinear, public CpuPanelLayer {
public:
    /// `w` holds an F::Packed.
    CpuPanelPrepared(const BackendInterface& b, const LinearWeights& w, Isa isa, int threads)
        : b_(b), w_(w), isa_(isa), threads_(threads), fns_(row_functions<F>(isa)) {}
    void forward(MatrixView<const float> x, MatrixView<float> y) const override {
        if (x.rows != 1) return b_.linear(w_, x, y);
        if (y.rows != 1) throw InvalidArgument("linear: X has 1 row, Y " + std::to_string(y.rows));
        gemv_panels<F>(kept(), x.row(0), y.row(0), isa_, threads_);
    }
    const PanelSet& kept() const override {
        std::call_once(built_, [&] { panels_ = build_panel_set<F>(std::get<typename F::Packed>(w_), isa_, threads_); });
        return *panels_;
    }
    void gemv_panel_range(const PanelSet& s, const QuantizedActivation& a, int p0, int p1, float* y) const noexcept override {
        fns_.panel_gemv_rows(s, a, p0, p1, y);
    }
    /// The kept panels, null until the first single-activation product.
    const PanelSet* panels() const noexcept { return panels_.get(); }

private:
    const BackendInterface& b_;
    const LinearWeights& w_;
    Isa isa_;
    int threads_;
    RowFunctions<F> fns_;
    mutable std::once_flag built_;
    mutable std::shared_ptr<const PanelSet> panels_;
};
}  // namespace detail

class CpuBackend;
namespace detail {
/// PQ weights on the CPU: the GEMV's form of the codes (PqKernel) built on the first single
/// activation and kept; batches go to CpuBackend::pq_linear.
class CpuPqPrepared final : public PreparedLinear {
public:
    CpuPqPrepared(const CpuBackend& b, const PqMatrix& w) : b_(b), w_(w) {}
    void forward(MatrixView<const float> x, MatrixView<float> y) const override;

private:
    const CpuBackend& b_;
    const PqMatrix& w_;
    mutable std::once_flag built_;
    mutable std::optional<PqKernel> kernel_;
};
}  // namespace detail

/// The CPU backend: one instruction set of qforge::dispatch (scalar, avx2, avx512_vnni) and a
/// thread count; packed products go through that set's row kernels, rows split over threads.
/// FP32 GEMMs of at least `blas_min_rows` activations and Gram matrices go to the tuned BLAS
/// (runtime/blas.hpp) when it is loaded, enabled and asked for; the scalar backend never uses
/// it, so that it stays the oracle.
class CpuBackend final : public BackendInterface {
public:
    /// Fewer activations than this go to qforge's own FP32 kernels (a decode step's GEMV reads
    /// the weights once either way, and the BLAS's packing would cost more than it saves).
    static constexpr std::size_t blas_min_rows = 4;

    /// Throws InvalidArgument when `isa` is not usable here (not compiled in, or not supported
    /// by this CPU) or `threads` is negative.
    explicit CpuBackend(Isa isa, int threads = 0, bool use_blas = blas::enabled())
        : isa_(isa), threads_(threads), blas_(use_blas && blas::enabled() && isa != Isa::scalar), fp32_(fp32_functions(isa)) {
        if (threads < 0) throw InvalidArgument("CPU backend: threads must be >= 0 (0 = all hardware threads), got " + std::to_string(threads));
    }
    Isa isa() const noexcept { return isa_; }
    /// Whether FP32 GEMM/SYRK run on the BLAS.
    bool uses_blas() const noexcept { return blas_; }
    std::string name() const override { return std::string(isa_name(isa_)) + (blas_ ? "+openblas" : ""); }
    int threads() const noexcept override { return threads_; }
    const Fp32Functions& host_fp32() const noexcept override { return fp32_; }
    void gemm_fp32(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) const override {
        if (blas_ && x.rows >= blas_min_rows) {
            detail::require_gemm_shape(w, x, y);
            blas::sgemm_nt(threads_, int(x.rows), int(w.rows), int(w.cols), 1.0f, x.data, x.row_stride, w.data, w.row_stride, 0.0f,
                           y.data, y.row_stride);
            return;
        }
        qforge::gemm_fp32(w, x, y, isa_, threads_);
    }
    void gemm_fp32_add(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y, float alpha) const override {
        if (!blas_ || x.rows < blas_min_rows) return BackendInterface::gemm_fp32_add(w, x, y, alpha);
        detail::require_gemm_shape(w, x, y);
        blas::sgemm_nt(threads_, int(x.rows), int(w.rows), int(w.cols), alpha, x.data, x.row_stride, w.data, w.row_stride, 1.0f,
                       y.data, y.row_stride);
    }
    bool cholesky_lower(float* a, int n) const override {
        if (!blas_) return BackendInterface::cholesky_lower(a, n);
        return blas::cholesky_lower(threads_, n, a);
    }
    void invert_lower(float* l, int n) const override {
        if (!blas_) return BackendInterface::invert_lower(l, n);
        blas::invert_lower(threads_, n, l);
    }
    void gram_fp32(MatrixView<const float> x, MatrixView<float> g) const override {
        if (!blas_) return BackendInterface::gram_fp32(x, g);
        detail::require_gram_shape(x, g);
        blas::gram(threads_, int(x.cols), int(x.rows), x.data, x.row_stride, g.data, g.row_stride);
    }
    void gram_fp32_accumulate(MatrixView<const float> x, MatrixView<float> acc, bool overwrite) const override {
        if (!blas_ || x.rows == 0) return BackendInterface::gram_fp32_accumulate(x, acc, overwrite);
        if (acc.rows != x.cols || acc.cols != x.cols) return BackendInterface::gram_fp32_accumulate(x, acc, overwrite);  // throws
        blas::gram_accumulate(threads_, int(x.cols), int(x.rows), x.data, x.row_stride, acc.data, acc.row_stride, overwrite);
    }
    void linear(const LinearWeights& weights, MatrixView<const float> x, MatrixView<float> y) const override {
        std::visit(
            [&](const auto& w) {
                using T = std::decay_t<decltype(w)>;
                if constexpr (std::is_same_v<T, Fp32Matrix>) {
                    gemm_fp32(MatrixView<const float>(w.data.data(), std::size_t(w.rows), std::size_t(w.cols)), x, y);
                } else if constexpr (std::is_same_v<T, PqMatrix>) {
                    pq_linear(w, nullptr, x, y);
                } else if (x.rows == 1) {
                    gemv<format_of_packed<T>>(w, x.row(0), y.row(0), isa_, threads_);
                } else {
                    gemm<format_of_packed<T>>(w, x, y, isa_, threads_);
                }
            },
            weights);
    }
    /// Packed formats whose single-activation product has a vector kernel over kept row panels
    /// on this instruction set (4-bit and 8-bit grids on AVX-512 VNNI) get a PreparedLinear that
    /// builds them on its first GEMV (detail::CpuPanelPrepared; QFORGE_KEEP_PANELS=0 turns this
    /// off); the rest keep a pointer and call `linear`. Outputs are the same bits either way.
    std::unique_ptr<PreparedLinear> prepare(const LinearWeights& weights) const override {
        return std::visit(
            [&](const auto& w) -> std::unique_ptr<PreparedLinear> {
                using T = std::decay_t<decltype(w)>;
                if constexpr (std::is_same_v<T, PqMatrix>) {
                    if (w.spec.n <= 256) return std::make_unique<detail::CpuPqPrepared>(*this, w);
                } else if constexpr (!std::is_same_v<T, Fp32Matrix>) {
                    using F = format_of_packed<T>;
                    if (keep_panels_ && row_functions<F>(isa_).panel_gemv_kernel)
                        return std::make_unique<detail::CpuPanelPrepared<F>>(*this, weights, isa_, threads_);
                }
                return BackendInterface::prepare(weights);
            },
            weights);
    }
    /// A single activation through layers that all keep row panels with groups of one length:
    /// the activation quantized once, every layer's panels in one parallel section. Otherwise
    /// (batches, other layers) each layer's forward in turn.
    void linear_together(std::span<const PreparedLinear* const> layers, MatrixView<const float> x,
                         std::span<const MatrixView<float>> ys) const override {
        std::vector<const detail::CpuPanelLayer*> panel_layers;
        for (const PreparedLinear* l : layers)
            if (const auto* p = dynamic_cast<const detail::CpuPanelLayer*>(l)) panel_layers.push_back(p);
        if (x.rows != 1 || panel_layers.size() != layers.size() || layers.size() != ys.size() || layers.empty())
            return BackendInterface::linear_together(layers, x, ys);
        std::vector<const PanelSet*> sets;
        for (const auto* p : panel_layers) sets.push_back(&p->kept());
        for (std::size_t i = 0; i < sets.size(); ++i) {
            if (sets[i]->group_length != sets[0]->group_length) return BackendInterface::linear_together(layers, x, ys);
            if (x.cols != std::size_t(sets[i]->cols) || ys[i].rows != 1 || ys[i].cols != std::size_t(sets[i]->rows))
                throw InvalidArgument("linear_together: layer " + std::to_string(i) + " is " + std::to_string(sets[i]->rows) + " x " +
                                      std::to_string(sets[i]->cols) + ", X is " + std::to_string(x.rows) + " x " + std::to_string(x.cols) +
                                      ", its Y " + std::to_string(ys[i].rows) + " x " + std::to_string(ys[i].cols));
        }
        detail::require_finite(x.row(0), "linear input vector");
        const QuantizedActivation a = quantize_activation(x.row(0), sets[0]->group_length, LaneOrder::natural, fp32_.quantize_sub);
        std::vector<std::size_t> first(sets.size() + 1, 0);  // panels of layers before i
        for (std::size_t i = 0; i < sets.size(); ++i) first[i + 1] = first[i] + std::size_t(sets[i]->panels());
        parallel_for(first.back(), threads_, [&](std::size_t p0, std::size_t p1) {
            for (std::size_t i = 0; i < sets.size(); ++i) {
                const std::size_t b = std::max(p0, first[i]), e = std::min(p1, first[i + 1]);
                if (b < e) panel_layers[i]->gemv_panel_range(*sets[i], a, int(b - first[i]), int(e - first[i]), ys[i].data);
            }
        }, grain_for(x.cols * panel_rows));
    }
    void dequantize(const LinearWeights& weights, MatrixView<float> out) const override {
        std::visit(
            [&](const auto& w) {
                using T = std::decay_t<decltype(w)>;
                if constexpr (std::is_same_v<T, Fp32Matrix>) {
                    if (out.rows != std::size_t(w.rows) || out.cols != std::size_t(w.cols) || out.row_stride != out.cols)
                        throw InvalidArgument("dequantize: output is " + std::to_string(out.rows) + " x " + std::to_string(out.cols) +
                                              " (contiguous rows needed), the matrix is " + std::to_string(w.rows) + " x " + std::to_string(w.cols));
                    std::copy(w.data.begin(), w.data.end(), out.data);
                } else if constexpr (std::is_same_v<T, PqMatrix>) {
                    if (out.rows != std::size_t(w.rows) || out.cols != std::size_t(w.cols) || out.row_stride != out.cols)
                        throw InvalidArgument("dequantize: output is " + std::to_string(out.rows) + " x " + std::to_string(out.cols) +
                                              " (contiguous rows needed), the matrix is " + std::to_string(w.rows) + " x " + std::to_string(w.cols));
                    w.dequantize_into(out.data);
                } else {
                    qforge::dequantize<format_of_packed<T>>(w, out, isa_, threads_);
                }
            },
            weights);
    }

    /// Y = X Wᵀ for PQ weights: one activation through the codebooks (`kernel`, or one built for
    /// this call; backends/pq.hpp), more through the dequantized weights and the FP32 GEMM (the
    /// decode of a few hundred thousand codes costs less than a table per token and block).
    void pq_linear(const PqMatrix& w, const PqKernel* kernel, MatrixView<const float> x, MatrixView<float> y) const {
        if (x.cols != std::size_t(w.cols) || y.cols != std::size_t(w.rows) || x.rows != y.rows)
            throw InvalidArgument("linear: X is " + std::to_string(x.rows) + " x " + std::to_string(x.cols) + ", Y " + std::to_string(y.rows) + " x " +
                                  std::to_string(y.cols) + ", the PQ weights " + std::to_string(w.rows) + " x " + std::to_string(w.cols));
        if (x.rows == 1 && w.spec.n <= 256) {
            detail::require_finite(x.row(0), "linear input vector");
            if (kernel) return qforge::pq_gemv(*kernel, x.data, y.data, isa_, threads_);
            const PqKernel k = PqKernel::from(w);
            return qforge::pq_gemv(k, x.data, y.data, isa_, threads_);
        }
        const auto v = w.dequantize();
        gemm_fp32(MatrixView<const float>(v.data(), std::size_t(w.rows), std::size_t(w.cols)), x, y);
    }

private:
    Isa isa_;
    int threads_;
    bool blas_;
    Fp32Functions fp32_;
    bool keep_panels_ = detail::keep_panels_default();
};

inline void detail::CpuPqPrepared::forward(MatrixView<const float> x, MatrixView<float> y) const {
    if (x.rows != 1) return b_.pq_linear(w_, nullptr, x, y);
    std::call_once(built_, [&] { kernel_ = PqKernel::from(w_); });
    b_.pq_linear(w_, &*kernel_, x, y);
}

/// The handle: cheap to copy, shares one immutable implementation. The default is the scalar
/// CPU backend on all hardware threads, the oracle every other backend is tested against.
class Backend {
public:
    Backend() : impl_(scalar_impl()) {}
    explicit Backend(std::shared_ptr<const BackendInterface> impl) : impl_(std::move(impl)) {
        if (!impl_) throw InvalidArgument("Backend: no implementation");
    }
    /// The CPU with instruction set `isa` (default: the best usable one, capped by QFORGE_ISA)
    /// and `threads` threads (0: all hardware threads); FP32 GEMM on the BLAS when there is one
    /// (not for Isa::scalar, the oracle) unless `use_blas` is false.
    static Backend cpu(Isa isa, int threads = 0, bool use_blas = true) {
        return Backend(std::make_shared<const CpuBackend>(isa, threads, use_blas && blas::enabled()));
    }
    static Backend cpu() { return cpu(best_isa(), 0); }
    /// The best CPU backend with `threads` threads.
    static Backend best_cpu(int threads) { return cpu(best_isa(), threads); }

    std::string name() const { return impl_->name(); }
    int threads() const noexcept { return impl_->threads(); }
    const Fp32Functions& host_fp32() const noexcept { return impl_->host_fp32(); }
    void gemm_fp32(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y) const { impl_->gemm_fp32(w, x, y); }
    void gemm_fp32_add(MatrixView<const float> w, MatrixView<const float> x, MatrixView<float> y, float alpha) const {
        impl_->gemm_fp32_add(w, x, y, alpha);
    }
    void gram_fp32(MatrixView<const float> x, MatrixView<float> g) const { impl_->gram_fp32(x, g); }
    void gram_fp32_accumulate(MatrixView<const float> x, MatrixView<float> acc, bool overwrite) const {
        impl_->gram_fp32_accumulate(x, acc, overwrite);
    }
    void linear(const LinearWeights& w, MatrixView<const float> x, MatrixView<float> y) const { impl_->linear(w, x, y); }
    void dequantize(const LinearWeights& w, MatrixView<float> out) const { impl_->dequantize(w, out); }
    std::unique_ptr<PreparedLinear> prepare(const LinearWeights& w) const { return impl_->prepare(w); }
    void linear_together(std::span<const PreparedLinear* const> layers, MatrixView<const float> x, std::span<const MatrixView<float>> ys) const {
        impl_->linear_together(layers, x, ys);
    }
    const BackendInterface& implementation() const noexcept { return *impl_; }
    /// The implementation, shared (what a cache of prepared weights keeps alive).
    const std::shared_ptr<const BackendInterface>& shared_implementation() const noexcept { return impl_; }

private:
    static std::shared_ptr<const BackendInterface> scalar_impl() {
        static const std::shared_ptr<const BackendInterface> s = std::make_shared<const CpuBackend>(Isa::scalar, 0);
        return s;
    }
    std::shared_ptr<const BackendInterface> impl_;
};

}  // namespace qforge
