#pragma once
/// @file
/// qforge's instruction-set tags and run-time detection.
///
/// Each tag names an instruction set and the xsimd architecture used for its float work. Kernels
/// for a tag live in backends/simd/TAG.hpp and compile only where the compiler targets that
/// instruction set (`-mavx2 -mfma`, or `-march=...`). Two ways to use them:
/// - fixed at compile time: include the header and use `Kernels<Simd<simd::avx2>, F>` in code
///   built for that target (what an engine that ships one binary per CPU does);
/// - chosen at run time: link `qforge::dispatch`, which compiles every tag in `all_archs` in its
///   own translation unit with that tag's flags; runtime/dispatch.hpp then picks the best tag
///   this CPU supports (the CLI binaries do this, so they run on any x86-64).
/// Adding an instruction set = a new tag here (with `available()`), a new TAG.hpp with its
/// Primitives, and one entry in CMake's QFORGE_DISPATCH_ARCHS.
#include <string_view>

#include <xsimd/xsimd.hpp>

namespace qforge::simd {

/// AVX2 + FMA (Haswell, Zen 1 and later). Integer dots by vpmaddubsw.
struct avx2 {
    using xsimd_arch = xsimd::fma3<xsimd::avx2>;
    using xsimd_float_arch = xsimd::fma3<xsimd::avx2>;  ///< float batches (FP32 kernels)
    static constexpr std::string_view name() noexcept { return "avx2"; }
    static bool available() noexcept {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
        return false;
#endif
    }
};

/// AVX-512 F/BW/VL with VNNI and VBMI (Ice Lake, Zen 4 and later). Integer dots by vpdpbusd,
/// which xsimd 8 does not wrap, so its kernels use intrinsics.
struct avx512_vnni {
    using xsimd_arch = xsimd::avx512bw;
    using xsimd_float_arch = xsimd::avx512f;  ///< xsimd 8 defines float batches on avx512f only
    static constexpr std::string_view name() noexcept { return "avx512_vnni"; }
    static bool available() noexcept {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("avx512vbmi");
#else
        return false;
#endif
    }
};

}  // namespace qforge::simd
