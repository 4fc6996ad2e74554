#pragma once
/// @file
/// The tuned BLAS under the CPU backend's FP32 products. FP32 GEMM is not what qforge exists
/// for: the reference forward, prompt processing on FP32 weights, the calibration Hessians
/// (SYRK) and GPTQ's factorisations and lazy-batch updates all run on it, and a tuned library
/// (OpenBLAS: Debian's libopenblas-dev; docs/dependencies.md says why) runs them at several
/// times the rate of qforge's own register-tiled loop. qforge's own FP32 kernels stay: the
/// scalar oracle, small products (a decode step's single token), and builds without a BLAS.
///
/// The functions are defined in one translation unit of qforge::dispatch (runtime/
/// blas_openblas.ipp), which loads OpenBLAS on first use; including this header needs nothing
/// of the BLAS, and a machine without it runs on qforge's own kernels. If the environment does
/// not set OPENBLAS_CORETYPE, qforge sets it from the instruction set it uses itself (SkylakeX
/// for avx512_vnni, Haswell for avx2) before loading: OpenBLAS 0.3.21 takes CPUs newer than
/// itself for SSE3 ones. Products are cut into tiles on qforge's pool; at load a probe checks
/// whether the kernel set gives an element the same bits in any tile (SkylakeX's do, Haswell's
/// do not): only then do tiles follow the thread count, else they are fixed by the shape, so
/// results never depend on the thread count (`name()` says which). `QFORGE_BLAS=off` in the environment turns the BLAS off at run time (to
/// measure qforge's own kernels, or to rule it out).
#include <cstddef>
#include <cstdlib>
#include <string>
#include <string_view>

namespace qforge::blas {

/// True when qforge::dispatch was built with the BLAS glue (CMake QFORGE_BLAS, the default).
constexpr bool compiled() noexcept {
#ifdef QFORGE_BLAS
    return true;
#else
    return false;
#endif
}

#ifdef QFORGE_BLAS
/// Whether OpenBLAS (libopenblas.so.0) loaded; the first call loads it.
bool loaded();
/// Why it did not load ("" when it did).
std::string problem();
/// Whether the loaded kernel set gives an element of a product the same bits whichever tile of
/// it, and whichever count of rows, it is computed in (probed once at load on a 37 x 600 x 301
/// and a 700 x 40 x 301 product cut into tiles of 128-240; SkylakeX's kernels do, Haswell's do
/// not). Where it does not, tiles are fixed by the shape (results still do not depend on the
/// thread count), but a product over a prefix of the rows may round otherwise than the same
/// rows of the whole product (ReferenceTrace's prefixes, docs/performance.md).
bool cut_invariant();
#else
inline bool cut_invariant() { return true; }
inline bool loaded() { return false; }
inline std::string problem() { return "qforge::dispatch was built without the BLAS glue (QFORGE_BLAS=OFF)"; }
#endif

/// Compiled in, loaded, and not turned off by QFORGE_BLAS=off|0 (decided once per process).
inline bool enabled() {
    static const bool on = [] {
        if (!compiled()) return false;
        if (const char* env = std::getenv("QFORGE_BLAS")) {
            const std::string_view v(env);
            if (v == "off" || v == "0" || v == "OFF" || v == "no") return false;
        }
        return loaded();
    }();
    return on;
}

#ifdef QFORGE_BLAS
/// The library, its build and the kernel set it runs, e.g. "OpenBLAS 0.3.21 ... , kernels SkylakeX".
std::string name();

/// C = alpha A B^T + beta C, row-major: A is m x k (row stride lda), B is n x k (ldb), C is
/// m x n (ldc). The larger side of C is cut into one tile per thread (at least 128 wide), each one
/// single-threaded OpenBLAS product, spread over `threads` threads of qforge's own pool (0: all
/// hardware threads; inline inside a pool chunk): one pool on the cores, and the same bits at
/// any thread count.
void sgemm_nt(int threads, int m, int n, int k, float alpha, const float* a, std::size_t lda, const float* b,
              std::size_t ldb, float beta, float* c, std::size_t ldc);

/// The same product on OpenBLAS's own threads (serialised, then set back to one): the
/// benchmarks' baseline for "the same run's sgemm rate".
void sgemm_nt_native(int threads, int m, int n, int k, float alpha, const float* a, std::size_t lda, const float* b,
                     std::size_t ldb, float beta, float* c, std::size_t ldc);

/// C = A^T A (n x n, both triangles written), row-major A of k rows x n columns (row stride lda):
/// the lower triangle's blocks (fixed by n) spread over qforge's pool.
void gram(int threads, int n, int k, const float* a, std::size_t lda, float* c, std::size_t ldc);

/// Row-major floats `acc` (n x n, row stride ldacc): its lower triangle (diagonal included)
/// becomes A^T A when `overwrite` (`gram`'s blocks, bit for bit), else acc + A^T A through
/// sgemm's beta = 1 on the same blocks (OpenBLAS adds the partial sums of each chunk of the k
/// rows to acc in turn: for k within one chunk, gram's values added in float). Elements of the
/// strict upper triangle inside the diagonal blocks may be written; the rest are not touched.
void gram_accumulate(int threads, int n, int k, const float* a, std::size_t lda, float* acc, std::size_t ldacc, bool overwrite);

/// The Cholesky factor of row-major n x n `a`: its lower triangle becomes L (L L^T = A), the
/// strict upper triangle zeroed; false when A is not positive definite. LAPACK's spotrf, in tiles
/// of a size fixed by n (single-threaded spotrf/strsm/sgemm calls on up to `threads` of qforge's
/// threads), so the result is the same bits on any thread count (OpenBLAS's own threaded spotrf
/// rounds otherwise than its single-threaded one).
bool cholesky_lower(int threads, int n, float* a);
/// LAPACK's strtri on row-major lower-triangular `l` (n x n): L becomes L^{-1}; in fixed tiles as
/// cholesky_lower, the same bits on any thread count.
void invert_lower(int threads, int n, float* l);
#else
// Without a BLAS nothing calls these (enabled() is false); defined so that callers compile.
inline std::string name() { return {}; }
inline void sgemm_nt(int, int, int, int, float, const float*, std::size_t, const float*, std::size_t, float, float*, std::size_t) {
    std::abort();
}
inline void sgemm_nt_native(int, int, int, int, float, const float*, std::size_t, const float*, std::size_t, float, float*,
                            std::size_t) {
    std::abort();
}
inline void gram(int, int, int, const float*, std::size_t, float*, std::size_t) { std::abort(); }
inline void gram_accumulate(int, int, int, const float*, std::size_t, float*, std::size_t, bool) { std::abort(); }
inline bool cholesky_lower(int, int, float*) { std::abort(); }
inline void invert_lower(int, int, float*) { std::abort(); }
#endif

}  // namespace qforge::blas
