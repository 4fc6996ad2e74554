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
    return lib;
}

const Library& library() {
    static const Library lib = load();
    return lib;
}

// OpenBLAS's thread count is process-wide; it is set only when a call asks for another one, and
// calls are serialised so that two callers cannot change it under each other's product.
std::mutex& call_mutex() {
    static std::mutex m;
    return m;
}
int current_threads = -1;

int effective_threads(int threads) {
    if (qforge::detail::ThreadPool::in_pool()) return 1;  // inside a qforge chunk the other threads are busy already
    return threads > 0 ? threads : default_threads();
}
void use_threads(const Library& lib, int n) {
    if (n != current_threads) {
        lib.set_num_threads(n);
        current_threads = n;
    }
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
    const int t = effective_threads(threads);
    const std::lock_guard<std::mutex> lock(call_mutex());
    use_threads(lib, t);
    lib.sgemm(row_major, no_trans, trans, m, n, k, alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

void gram(int threads, int n, int k, const float* a, std::size_t lda, float* c, std::size_t ldc) {
    if (n == 0) return;
    const Library& lib = library();
    const int t = effective_threads(threads);
    // the lower triangle as square tiles of A^T A, each one sgemm: OpenBLAS's ssyrk ran at 40% of
    // its sgemm rate here, the tiles (about 5/8 of the full product's FLOPs) at its full rate
    const int tile = std::max(256, (n / 8 + 63) / 64 * 64);
    const std::lock_guard<std::mutex> lock(call_mutex());
    use_threads(lib, t);
    for (int i0 = 0; i0 < n; i0 += tile)
        for (int j0 = 0; j0 <= i0; j0 += tile) {
            const int mi = std::min(tile, n - i0), nj = std::min(tile, n - j0);
            // C[i0:, j0:] = A[:, i0:]^T A[:, j0:]; row-major A^T is A read transposed
            lib.sgemm(row_major, trans, no_trans, mi, nj, k, 1.0f, a + i0, int(lda), a + j0, int(lda), 0.0f,
                      c + std::size_t(i0) * ldc + std::size_t(j0), int(ldc));
        }
    mirror_lower(n, c, ldc);
}

// Row-major lower = column-major upper: LAPACK is called with 'U' on the same memory.
bool cholesky_lower(int threads, int n, float* a) {
    if (n == 0) return true;
    const Library& lib = library();
    int info = 0;
    {
        const std::lock_guard<std::mutex> lock(call_mutex());
        use_threads(lib, effective_threads(threads));
        lib.spotrf("U", &n, a, &n, &info, 1);
    }
    if (info != 0) return false;
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) a[std::size_t(i) * std::size_t(n) + std::size_t(j)] = 0.0f;
    return true;
}

void invert_lower(int threads, int n, float* l) {
    if (n == 0) return;
    const Library& lib = library();
    int info = 0;
    const std::lock_guard<std::mutex> lock(call_mutex());
    use_threads(lib, effective_threads(threads));
    lib.strtri("U", "N", &n, l, &n, &info, 1, 1);  // info > 0: a zero diagonal, excluded by the contract
}

}  // namespace qforge::blas
