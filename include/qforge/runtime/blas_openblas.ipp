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
enum : int { row_major = 101, no_trans = 111, trans = 112, lower = 122 };

struct Library {
    void (*sgemm)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int) = nullptr;
    void (*set_num_threads)(int) = nullptr;
    // Fortran LAPACK: arguments by pointer, then the hidden lengths of the character arguments
    void (*spotrf)(const char*, const int*, float*, const int*, int*, std::size_t) = nullptr;
    void (*strtri)(const char*, const char*, const int*, float*, const int*, int*, std::size_t, std::size_t) = nullptr;
    char* (*get_config)() = nullptr;
    char* (*get_corename)() = nullptr;
    bool loaded = false;
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
    // OpenBLAS's threads work only inside LAPACK's factorisations; after each they spun on
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
    sym(lib.spotrf, "spotrf_");
    sym(lib.strtri, "strtri_");
    sym(lib.get_config, "openblas_get_config");
    sym(lib.get_corename, "openblas_get_corename");
    lib.loaded = lib.problem.empty();
    if (lib.loaded) lib.set_num_threads(1);
    return lib;
}

const Library& library() {
    static const Library lib = load();
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
// with halves at 235-250 (2026-12-06; sgemm 4096^3 290).
int tile_for(int extent, int threads) {
    const int t = threads_here(threads);
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

std::string name() {
    const Library& lib = library();
    if (!lib.loaded) return {};
    const char* config = lib.get_config();
    const char* core = lib.get_corename();
    return std::string(config ? config : "OpenBLAS") + ", kernels " + (core ? core : "?");
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
/// The lower triangle of A^T A as square tiles, each one single-threaded sgemm on qforge's pool:
/// OpenBLAS's ssyrk ran at 40% of its sgemm rate here, the tiles (about 5/8 of the full
/// product's FLOPs) at its full rate. `tile_fn(i0, j0, mi, nj, scratch)` runs once per tile
/// (j0 <= i0) with a per-chunk scratch of tile x tile floats.
template <class TileFn>
void for_gram_tiles(int threads, int n, int k, TileFn&& tile_fn) {
    const int tile = std::max(128, (n / 8 + 63) / 64 * 64);
    const int nt = (n + tile - 1) / tile;
    struct Block {
        int i0, j0, size;  // rows i0.., columns j0.., j0 <= i0, at most size x size
    };
    std::vector<Block> blocks;
    for (int i = 0; i < nt; ++i)
        for (int j = 0; j <= i; ++j) {
            if (i != j || tile < 256) {
                blocks.push_back({i * tile, j * tile, tile});
                continue;
            }
            // a diagonal tile as three half tiles (the fourth is the mirror): 3/4 of its FLOPs,
            // 5% of the whole product's on a 4096-wide layer
            const int h = tile / 2;
            blocks.push_back({i * tile, i * tile, h});
            blocks.push_back({i * tile + h, i * tile, h});
            blocks.push_back({i * tile + h, i * tile + h, h});
        }
    parallel_for(
        blocks.size(), threads,
        [&](std::size_t b0, std::size_t b1) {
            std::vector<float> scratch;
            for (std::size_t bi = b0; bi < b1; ++bi) {
                const Block b = blocks[bi];
                if (b.i0 >= n || b.j0 >= n) continue;  // a half tile past the last row
                tile_fn(b.i0, b.j0, std::min(b.size, n - b.i0), std::min(b.size, n - b.j0), tile, scratch);
            }
        },
        grain_for(std::size_t(tile) * std::size_t(tile) * std::size_t(std::max(k, 1))));
}
}  // namespace

void gram(int threads, int n, int k, const float* a, std::size_t lda, float* c, std::size_t ldc) {
    if (n == 0) return;
    const Library& lib = library();
    for_gram_tiles(threads, n, k, [&](int i0, int j0, int mi, int nj, int, std::vector<float>&) {
        // C[i0:, j0:] = A[:, i0:]^T A[:, j0:]; row-major A^T is A read transposed
        lib.sgemm(row_major, trans, no_trans, mi, nj, k, 1.0f, a + i0, int(lda), a + j0, int(lda), 0.0f,
                  c + std::size_t(i0) * ldc + std::size_t(j0), int(ldc));
    });
    mirror_lower(n, c, ldc);
}

void gram_accumulate(int threads, int n, int k, const float* a, std::size_t lda, double* acc, std::size_t ldacc, bool overwrite) {
    if (n == 0) return;
    const Library& lib = library();
    for_gram_tiles(threads, n, k, [&](int i0, int j0, int mi, int nj, int tile, std::vector<float>& scratch) {
        scratch.resize(std::size_t(tile) * std::size_t(tile));
        // the same call as gram's for this tile (the same bits), into the scratch with stride nj
        lib.sgemm(row_major, trans, no_trans, mi, nj, k, 1.0f, a + i0, int(lda), a + j0, int(lda), 0.0f, scratch.data(), nj);
        for (int i = 0; i < mi; ++i) {
            double* row = acc + std::size_t(i0 + i) * ldacc + std::size_t(j0);
            const float* t = scratch.data() + std::size_t(i) * std::size_t(nj);
            const int jn = i0 == j0 ? i + 1 : nj;  // a diagonal tile's upper part is the mirror
            if (overwrite)
                for (int j = 0; j < jn; ++j) row[j] = double(t[j]);
            else
                for (int j = 0; j < jn; ++j) row[j] += double(t[j]);
        }
    });
}

// Row-major lower = column-major upper: LAPACK is called with 'U' on the same memory. On one
// thread whatever `threads` says: OpenBLAS 0.3.21's threaded spotrf and strtri round otherwise
// than its single-threaded ones (from about 150 columns; checked for 192 to 4096), which made
// GPTQ's codes depend on the thread count. One thread costs 1-3 ms more for SmolLM2's 1536
// columns and about 0.2 s for 4096 (2026-12-07).
bool cholesky_lower(int /*threads*/, int n, float* a) {
    if (n == 0) return true;
    const Library& lib = library();
    int info = 0;
    lib.spotrf("U", &n, a, &n, &info, 1);
    if (info != 0) return false;
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) a[std::size_t(i) * std::size_t(n) + std::size_t(j)] = 0.0f;
    return true;
}

void invert_lower(int /*threads*/, int n, float* l) {
    if (n == 0) return;
    const Library& lib = library();
    int info = 0;
    lib.strtri("U", "N", &n, l, &n, &info, 1, 1);  // one thread: see cholesky_lower  // info > 0: a zero diagonal, excluded by the contract
}

}  // namespace qforge::blas
