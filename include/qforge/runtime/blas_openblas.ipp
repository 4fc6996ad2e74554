// Included once, by a translation unit of qforge::dispatch that CMake generates (QFORGE_BLAS):
// the definitions behind qforge/runtime/blas.hpp, on OpenBLAS loaded at run time.
//
// Why dlopen and not a link: OpenBLAS's DYNAMIC_ARCH build picks its kernels from the CPU model
// when it is loaded, and a model newer than the library (0.3.21, Debian 12, on an Emerald Rapids
// VM: model 207) falls back to its Prescott (SSE3) kernels, 7x slower than its SkylakeX ones
// (37 vs 267 GFLOP/s, bench_gptq). Loading it on first use lets qforge name the kernel set
// (OPENBLAS_CORETYPE) from the instruction set qforge itself uses, unless the user already set
// it; and a machine without the library runs on qforge's own kernels instead of failing to start.
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "qforge/core/parallel.hpp"
#include "qforge/runtime/blas.hpp"
#include "qforge/runtime/dispatch.hpp"

namespace qforge::blas {

namespace {
// CBLAS's enumerations (cblas.h) and the 32-bit-integer interface of Debian's libopenblas0.
enum : int { row_major = 101, no_trans = 111, trans = 112, lower = 122, left = 141, right = 142, non_unit = 131 };

struct Library {
    void (*sgemm)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int) = nullptr;
    void (*set_num_threads)(int) = nullptr;
    void (*strsm)(int, int, int, int, int, int, int, float, const float*, int, float*, int) = nullptr;
    void (*ssyrk)(int, int, int, int, int, float, const float*, int, float, float*, int) = nullptr;
    // Fortran LAPACK: arguments by pointer, then the hidden lengths of the character arguments
    void (*spotrf)(const char*, const int*, float*, const int*, int*, std::size_t) = nullptr;
    void (*strtri)(const char*, const char*, const int*, float*, const int*, int*, std::size_t, std::size_t) = nullptr;
    char* (*get_config)() = nullptr;
    char* (*get_corename)() = nullptr;
    bool loaded = false;
    /// Whether this kernel set gives an element the same bits whichever tile of a product it is
    /// computed in (probed at load: `cut_invariant`); only then may tiles follow the thread count.
    bool tiles_by_threads = false;
    std::string problem;  // why it is not loaded
};

const char* core_for(Isa isa) {
    switch (isa) {
        case Isa::avx512_vnni: return "SkylakeX";
        case Isa::avx2: return "Haswell";
        default: return nullptr;  // OpenBLAS's own choice
    }
}

Library load() {
    Library lib;
    if (!std::getenv("OPENBLAS_CORETYPE"))
        if (const char* core = core_for(best_isa())) setenv("OPENBLAS_CORETYPE", core, 0);
    // OpenBLAS's threads once worked inside LAPACK's factorisations (all its calls run on one thread
    // now, set below, but a caller's openblas_set_num_threads could start them); after each they spun on
    // sched_yield for 2^28 cycles by default, taking a core from qforge's pool: 13% of a
    // whole-SmolLM2 GPTQ profile. 2^4 cycles (OpenBLAS's least) puts them to sleep at once.
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
    void* h = nullptr;
    for (const char* name : {"libopenblas.so.0", "libopenblas.so"})
        if ((h = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    if (!h) {
        const char* e = dlerror();
        lib.problem = e ? e : "libopenblas.so.0 not found";
        return lib;
    }
    const auto sym = [&](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
        if (!fn && lib.problem.empty()) lib.problem = std::string("libopenblas has no ") + name;
    };
    sym(lib.sgemm, "cblas_sgemm");
    sym(lib.set_num_threads, "openblas_set_num_threads");
    sym(lib.strsm, "cblas_strsm");
    sym(lib.ssyrk, "cblas_ssyrk");
    sym(lib.spotrf, "spotrf_");
    sym(lib.strtri, "strtri_");
    sym(lib.get_config, "openblas_get_config");
    sym(lib.get_corename, "openblas_get_corename");
    lib.loaded = lib.problem.empty();
    if (lib.loaded) lib.set_num_threads(1);
    return lib;
}

// Whether products cut into tiles (of 128 or more along either side of C, as sgemm_nt cuts
// them) give the bits of the whole product. SkylakeX's kernels do; Haswell's do not (2026-12-07,
// Zen 5 VM with OPENBLAS_CORETYPE=Haswell in its environment: the last 8 columns of each tile
// are summed otherwise, 799-1319 of 22200 elements of a 37 x 600 x 301 product differ with tiles
// of 128-256). Tiles that follow the thread count would then make results depend on it.
bool cut_invariant(const Library& lib) {
    const int m = 37, n = 600, k = 301, tall = 700, narrow = 40;
    std::vector<float> a(std::size_t(tall) * k), b(std::size_t(n) * k);
    std::uint32_t state = 12345;  // any fixed, sign-mixed values will do
    const auto next = [&] {
        state = state * 1664525u + 1013904223u;
        return float(int(state >> 8) - (1 << 23)) / float(1 << 23);
    };
    for (auto& v : a) v = next();
    for (auto& v : b) v = next();
    const auto same = [&](int rows, int cols, bool cut_rows, int tile) {
        std::vector<float> whole(std::size_t(rows) * cols), cut(whole.size());
        lib.sgemm(row_major, no_trans, trans, rows, cols, k, 1.0f, a.data(), k, b.data(), k, 0.0f, whole.data(), cols);
        const int extent = cut_rows ? rows : cols;
        for (int i0 = 0; i0 < extent; i0 += tile) {
            const int len = std::min(tile, extent - i0);
            if (cut_rows)
                lib.sgemm(row_major, no_trans, trans, len, cols, k, 1.0f, a.data() + std::size_t(i0) * k, k, b.data(), k, 0.0f,
                          cut.data() + std::size_t(i0) * cols, cols);
            else
                lib.sgemm(row_major, no_trans, trans, rows, len, k, 1.0f, a.data(), k, b.data() + std::size_t(i0) * k, k, 0.0f,
                          cut.data() + i0, cols);
        }
        return whole == cut;
    };
    return same(m, n, false, 128) && same(m, n, false, 208) && same(tall, narrow, true, 128) && same(tall, narrow, true, 240);
}

const Library& library() {
    static const Library lib = [] {
        Library l = load();
        if (l.loaded) l.tiles_by_threads = cut_invariant(l);
        return l;
    }();
    return lib;
}

// OpenBLAS runs single-threaded (set once, at load) and qforge's own pool hands out the tiles:
// two thread pools on the same cores (OpenBLAS's spin-waiting between calls, qforge's between
// chunks) cost 17% of a whole-model GPTQ run here in scheduler time. Each tile is one
// single-threaded product, and results do not depend on the thread count: OpenBLAS's sums run
// over k in the same order whichever M/N tile an element falls in (unit.backend compares 1, 2,
// 3 and 16 threads bit for bit).
// The threads a call gets: one inside a qforge chunk (the chunk is already a thread's share).
int threads_here(int threads) { return qforge::detail::ThreadPool::in_pool() ? 1 : (threads > 0 ? threads : default_threads()); }

// One tile per thread (of at least 128): every tile repacks the whole other operand, so with
// eighths on 2 threads SmolLM2's prompt products (512 tokens x 576-1536) ran at 184-216 GFLOP/s,
// with halves at 235-250 (2026-12-06; sgemm 4096^3 290). With a kernel set whose bits depend on
// the cut (`cut_invariant`), eighths fixed by the extent alone, whatever the thread count.
int tile_for(int extent, int threads) {
    const int t = library().tiles_by_threads ? threads_here(threads) : 8;
    return std::max(128, ((extent + t - 1) / t + 15) / 16 * 16);
}

// The serialised, OpenBLAS-threaded product: only the benchmark's baseline uses it.
std::mutex& native_mutex() {
    static std::mutex m;
    return m;
}

// LAPACK's factorisations are recursive and not cut into independent tiles: they run on
// OpenBLAS's threads (under a lock, set back to one thread after) unless inside a qforge chunk.
template <class Fn>
void with_native_threads(const Library& lib, int threads, Fn&& fn) {
    const int t = threads_here(threads);
    if (t == 1) {
        fn();
        return;
    }
    const std::lock_guard<std::mutex> lock(native_mutex());
    lib.set_num_threads(t);
    fn();
    lib.set_num_threads(1);
}

// The upper triangle from the lower, in tiles so both sides stay in cache.
void mirror_lower(int n, float* c, std::size_t ldc) {
    constexpr int tile = 64;
    for (int i0 = 0; i0 < n; i0 += tile)
        for (int j0 = i0; j0 < n; j0 += tile)
            for (int i = i0; i < std::min(n, i0 + tile); ++i)
                for (int j = std::max(j0, i + 1); j < std::min(n, j0 + tile); ++j)
                    c[std::size_t(i) * ldc + std::size_t(j)] = c[std::size_t(j) * ldc + std::size_t(i)];
}
}  // namespace

bool loaded() { return library().loaded; }

bool cut_invariant() { return !library().loaded || library().tiles_by_threads; }

std::string name() {
    const Library& lib = library();
    if (!lib.loaded) return {};
    const char* config = lib.get_config();
    const char* core = lib.get_corename();
    return std::string(config ? config : "OpenBLAS") + ", kernels " + (core ? core : "?") +
           (lib.tiles_by_threads ? "" : " (its bits depend on how a product is cut: tiles fixed by shape, not by thread count)");
}

std::string problem() { return library().problem; }

void sgemm_nt(int threads, int m, int n, int k, float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
              float beta, float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    const Library& lib = library();
    // cut the larger of C's two sides into tiles; each tile reads all of the other operand
    const bool by_rows = m >= n;
    const int extent = by_rows ? m : n, tile = tile_for(extent, threads);
    const std::size_t tiles = std::size_t((extent + tile - 1) / tile);
    const std::size_t work = std::size_t(tile) * std::size_t(by_rows ? n : m) * std::size_t(std::max(k, 1));
    parallel_for(
        tiles, threads,
        [&](std::size_t t0, std::size_t t1) {
            for (std::size_t t = t0; t < t1; ++t) {
                const int i0 = int(t) * tile, len = std::min(tile, extent - i0);
                if (by_rows)
                    lib.sgemm(row_major, no_trans, trans, len, n, k, alpha, a + std::size_t(i0) * lda, int(lda), b, int(ldb), beta,
                              c + std::size_t(i0) * ldc, int(ldc));
                else
                    lib.sgemm(row_major, no_trans, trans, m, len, k, alpha, a, int(lda), b + std::size_t(i0) * ldb, int(ldb), beta,
                              c + std::size_t(i0), int(ldc));
            }
        },
        grain_for(work));
}

void sgemm_nt_native(int threads, int m, int n, int k, float alpha, const float* a, std::size_t lda, const float* b,
                     std::size_t ldb, float beta, float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    const Library& lib = library();
    with_native_threads(lib, threads, [&] { lib.sgemm(row_major, no_trans, trans, m, n, k, alpha, a, int(lda), b, int(ldb), beta, c, int(ldc)); });
}

namespace {
/// The lower triangle of A^T A as blocks, each one single-threaded call on qforge's pool.
/// Square tiles of n/8 and at least 512; off the diagonal a block is one tile of rows by up to
/// two tiles of columns (the row tile's operand packed once for both), one sgemm. A diagonal tile
/// is its lower-left quarter (one sgemm) and its two diagonal halves, recursively; a half below
/// the leaf size is one call: where the kernel set is cut-invariant (SkylakeX's) an ssyrk on
/// halves under 512, which gives the bits of the sgemm squares (checked on widths 576-4096 and
/// k of 37-2048; not a last square of one column, as in 513 columns, which the small-matrix
/// path sums otherwise) without computing the half of each square that is thrown away: 6-15%
/// faster on SmolLM2's 576 and 1536 columns. One ssyrk per whole diagonal tile was slower there
/// (one thread held a 512-wide tile while the other had nothing left). Otherwise (Haswell's
/// kernels, where the products already ran at 0.86-0.93 of sgemm) squares under 256, each one
/// sgemm, which keeps the bits of every Hessian made with them. docs/performance.md
/// ("2026-12-07, later" and "2026-12-07, night") gives the sizes tried and the rates.
/// Blocks depend on n alone, never on the thread count (under some kernel sets, and OpenBLAS's
/// small-matrix paths, an element's rounding depends on its call's shape; see cut_invariant).
/// They are handed out one at a time, largest first, so the threads finish together.
/// `block_fn(i0, j0, mi, nj, diagonal)` runs once per block: rows i0.., columns j0.., j0 <= i0;
/// `diagonal`: the lower triangle of the mi x mi square at (i0, i0) (nj == mi, j0 == i0).
template <class BlockFn>
void for_gram_blocks(int threads, int n, bool syrk_diagonal, BlockFn&& block_fn) {
    const int tile = std::max(512, (n / 8 + 63) / 64 * 64);
    const int nt = (n + tile - 1) / tile;
    struct Block {
        int i0, j0, mi, nj;
        bool diagonal;
    };
    std::vector<Block> blocks;
    for (int i = 1; i < nt; ++i)
        for (int j = 0; j < i; j += 2)
            blocks.push_back({i * tile, j * tile, std::min(tile, n - i * tile), std::min(2, i - j) * tile, false});
    // a diagonal tile at or above the leaf size: its lower-left quarter, then each diagonal half in turn
    const auto diagonal = [&](auto&& self, int o, int s) -> void {
        const int m = std::min(s, n - o);
        if (m <= 0) return;
        if (s < (syrk_diagonal ? 512 : 256)) {
            blocks.push_back({o, o, m, m, syrk_diagonal});
            return;
        }
        const int h = s / 2;
        if (m > h) blocks.push_back({o + h, o, m - h, h, false});
        self(self, o, h);
        self(self, o + h, h);
    };
    for (int i = 0; i < nt; ++i) diagonal(diagonal, i * tile, tile);
    // a diagonal block's work is half its square's
    const auto work = [](const Block& b) { return std::size_t(b.mi) * std::size_t(b.nj) / (b.diagonal ? 2 : 1); };
    std::stable_sort(blocks.begin(), blocks.end(), [&](const Block& a, const Block& b) { return work(a) > work(b); });
    std::atomic<std::size_t> next{0};
    const int t = threads_here(threads);
    parallel_for(std::size_t(t), t, [&](std::size_t, std::size_t) {
        for (std::size_t b; (b = next.fetch_add(1, std::memory_order_relaxed)) < blocks.size();)
            block_fn(blocks[b].i0, blocks[b].j0, blocks[b].mi, blocks[b].nj, blocks[b].diagonal);
    });
}

// C[i0:, j0:] = A[:, i0:]^T A[:, j0:] (+ C when beta is 1); row-major A^T is A read transposed
void gram_block(const Library& lib, int k, const float* a, std::size_t lda, float beta, float* c, std::size_t ldc, int i0, int j0,
                int mi, int nj, bool diagonal) {
    float* ci = c + std::size_t(i0) * ldc + std::size_t(j0);
    if (diagonal)
        lib.ssyrk(row_major, lower, trans, mi, k, 1.0f, a + i0, int(lda), beta, ci, int(ldc));
    else
        lib.sgemm(row_major, trans, no_trans, mi, nj, k, 1.0f, a + i0, int(lda), a + j0, int(lda), beta, ci, int(ldc));
}
}  // namespace

void gram(int threads, int n, int k, const float* a, std::size_t lda, float* c, std::size_t ldc) {
    if (n == 0) return;
    const Library& lib = library();
    for_gram_blocks(threads, n, lib.tiles_by_threads, [&](int i0, int j0, int mi, int nj, bool diagonal) {
        gram_block(lib, k, a, lda, 0.0f, c, ldc, i0, j0, mi, nj, diagonal);
    });
    mirror_lower(n, c, ldc);
}

void gram_accumulate(int threads, int n, int k, const float* a, std::size_t lda, float* acc, std::size_t ldacc, bool overwrite) {
    if (n == 0) return;
    const Library& lib = library();
    // straight into the accumulator: no tile buffer, no second pass over the result
    for_gram_blocks(threads, n, lib.tiles_by_threads, [&](int i0, int j0, int mi, int nj, bool diagonal) {
        gram_block(lib, k, a, lda, overwrite ? 0.0f : 1.0f, acc, ldacc, i0, j0, mi, nj, diagonal);
    });
}

// The factorisations are cut into tiles of a fixed size (factor_tile), each one single-threaded
// LAPACK or BLAS call, handed out by qforge's pool: what every element's rounding goes through
// depends on n alone, never on the thread count. OpenBLAS 0.3.21's own threaded spotrf and
// strtri round otherwise than its single-threaded ones (from about 150 columns; checked for 192
// to 4096), which made GPTQ's codes depend on the thread count. Up to 2 tiles: one
// single-threaded call (576 columns: 1.2-1.6 ms for spotrf against 2.5-2.7 ms threaded).
constexpr int factor_tile = 256;

// Row-major lower = column-major upper: LAPACK is called with 'U' on the same memory.
// Right-looking blocked Cholesky: the diagonal tile (spotrf), the panel under it (row tiles,
// X L_kk^T = A_ik by strsm), the trailing lower triangle (tiles, A_IJ -= P_I P_J^T by sgemm).
bool cholesky_lower(int threads, int n, float* a) {
    if (n == 0) return true;
    const Library& lib = library();
    const std::size_t N = std::size_t(n);
    int info = 0;
    if (n <= 2 * factor_tile) {
        lib.spotrf("U", &n, a, &n, &info, 1);
        if (info != 0) return false;
    } else {
        std::vector<std::pair<int, int>> tiles;  // trailing (I, J), J <= I, in tile units
        for (int k0 = 0; k0 < n; k0 += factor_tile) {
            const int b = std::min(factor_tile, n - k0), k1 = k0 + b, m = n - k1;
            float* diag = a + std::size_t(k0) * N + std::size_t(k0);
            lib.spotrf("U", &b, diag, &n, &info, 1);
            if (info != 0) return false;
            if (m == 0) break;
            const int t = (m + factor_tile - 1) / factor_tile;
            parallel_for(std::size_t(t), threads, [&](std::size_t i0, std::size_t i1) {
                for (std::size_t i = i0; i < i1; ++i) {
                    const int r0 = k1 + int(i) * factor_tile, rows = std::min(factor_tile, n - r0);
                    lib.strsm(row_major, right, lower, trans, non_unit, rows, b, 1.0f, diag, n, a + std::size_t(r0) * N + std::size_t(k0), n);
                }
            });
            tiles.clear();
            for (int i = 0; i < t; ++i)
                for (int j = 0; j <= i; ++j) tiles.emplace_back(i, j);
            parallel_for(tiles.size(), threads, [&](std::size_t c0, std::size_t c1) {
                for (std::size_t c = c0; c < c1; ++c) {
                    const int r0 = k1 + tiles[c].first * factor_tile, c0j = k1 + tiles[c].second * factor_tile;
                    const int rows = std::min(factor_tile, n - r0), cols = std::min(factor_tile, n - c0j);
                    lib.sgemm(row_major, no_trans, trans, rows, cols, b, -1.0f, a + std::size_t(r0) * N + std::size_t(k0), n,
                              a + std::size_t(c0j) * N + std::size_t(k0), n, 1.0f, a + std::size_t(r0) * N + std::size_t(c0j), n);
                }
            });
        }
    }
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) a[std::size_t(i) * N + std::size_t(j)] = 0.0f;
    return true;
}

// LAPACK's blocked strtri for a lower triangle, from the last diagonal tile up, with its two
// products in tiles: for the column panel B under tile j (rows below it), B <- T B with T the
// already-inverted lower-right part (row tiles of sgemm into a scratch panel: T's strict upper
// triangle is zero), then B <- -B L_jj^{-1} (row tiles of strsm), then L_jj <- L_jj^{-1} (strtri).
void invert_lower(int threads, int n, float* l) {
    if (n == 0) return;
    const Library& lib = library();
    const std::size_t N = std::size_t(n);
    int info = 0;  // info > 0: a zero diagonal, excluded by the contract
    if (n <= 2 * factor_tile) {
        lib.strtri("U", "N", &n, l, &n, &info, 1, 1);
        return;
    }
    std::vector<float> panel;
    const int last = (n - 1) / factor_tile * factor_tile;
    for (int j0 = last; j0 >= 0; j0 -= factor_tile) {
        const int b = std::min(factor_tile, n - j0), j1 = j0 + b, m = n - j1;
        float* diag = l + std::size_t(j0) * N + std::size_t(j0);
        if (m > 0) {
            float* B = l + std::size_t(j1) * N + std::size_t(j0);  // m x b, stride N
            panel.assign(std::size_t(m) * std::size_t(b), 0.0f);
            const int t = (m + factor_tile - 1) / factor_tile;
            parallel_for(std::size_t(t), threads, [&](std::size_t i0, std::size_t i1) {
                for (std::size_t c = i0; c < i1; ++c) {
                    const int i = t - 1 - int(c);  // the deepest rows first: the last tile claimed is the shortest
                    const int r0 = i * factor_tile, rows = std::min(factor_tile, m - r0), depth = r0 + rows;
                    // rows r0.. of T B: T's rows r0.. up to its diagonal (the rest is zero)
                    lib.sgemm(row_major, no_trans, no_trans, rows, b, depth, 1.0f, l + std::size_t(j1 + r0) * N + std::size_t(j1), n, B, n, 0.0f,
                              panel.data() + std::size_t(r0) * std::size_t(b), b);
                }
            });
            parallel_for(std::size_t(t), threads, [&](std::size_t i0, std::size_t i1) {
                for (std::size_t i = i0; i < i1; ++i) {
                    const int r0 = int(i) * factor_tile, rows = std::min(factor_tile, m - r0);
                    float* out = B + std::size_t(r0) * N;
                    for (int r = 0; r < rows; ++r)
                        std::copy_n(panel.data() + std::size_t(r0 + r) * std::size_t(b), b, out + std::size_t(r) * N);
                    lib.strsm(row_major, right, lower, no_trans, non_unit, rows, b, -1.0f, diag, n, out, n);
                }
            });
        }
        lib.strtri("U", "N", &b, diag, &n, &info, 1, 1);
    }
}

}  // namespace qforge::blas
