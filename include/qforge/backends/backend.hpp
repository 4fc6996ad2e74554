#pragma once
/// @file
/// Kernel backends are policies: a tag type naming *how* kernels run. The generic row kernels
/// (kernels.hpp) are written once; each backend supplies `Primitives<Backend>`: decode codes,
/// integer dot of a sub-block, and dequantize a run of codes, per codec.
#include <concepts>
#include <string_view>

namespace qforge {

/// The reference backend: plain C++, the oracle every other backend is tested against.
struct Scalar {
    static constexpr std::string_view name() noexcept { return "scalar"; }
};

/// Vector backend for an instruction set `Arch` (an xsimd architecture tag or one of qforge's
/// tags in backends/simd/arch.hpp).
template <class Arch>
struct Simd {
    using arch = Arch;
    static constexpr std::string_view name() noexcept { return Arch::name(); }
};

/// What a kernel backend tag must provide to run qforge's kernels (the run-time handle that
/// models and quantizers take is `qforge::Backend`, runtime/backend.hpp).
template <class B>
concept KernelBackend = requires {
    { B::name() } -> std::convertible_to<std::string_view>;
};

/// Primary template: a backend without primitives is a compile error that says so.
template <class B>
struct Primitives {
    static_assert(sizeof(B) == 0,
                  "qforge: no kernel primitives for this backend; include its header "
                  "(backends/scalar/primitives.hpp or backends/simd/<arch>.hpp)");
};

}  // namespace qforge
