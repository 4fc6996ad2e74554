#pragma once
/// @file
/// Included by each generated dispatch translation unit after its architecture's primitives
/// header, with QFORGE_ARCH_TAG naming the tag. Instantiates the row kernels of every packed
/// format of the registry (formats/registry.hpp) for that tag, compiled with that tag's flags.
#include <cstdint>

#include "qforge/formats/registry.hpp"
#include "qforge/runtime/dispatch.hpp"

#ifndef QFORGE_ARCH_TAG
#error "define QFORGE_ARCH_TAG before including qforge/runtime/instantiate.hpp"
#endif

namespace qforge {

template <class Arch, class F>
RowFunctions<F> simd_row_functions() noexcept {
    return row_functions_of<Simd<Arch>, F>();
}

template <class Arch>
Fp32Functions simd_fp32_functions() noexcept {
    return fp32_functions_of<Simd<Arch>>();
}
template Fp32Functions simd_fp32_functions<QFORGE_ARCH_TAG>() noexcept;

namespace detail {
/// Takes the address of simd_row_functions<Arch, F> for every format of the registry, so this
/// translation unit (built with Arch's flags) emits each one; the other units only declare them.
template <class Arch, class... F>
std::size_t emit_row_functions(format_list<F...>) noexcept {
    std::size_t sum = 0;
    ((sum += reinterpret_cast<std::uintptr_t>(&simd_row_functions<Arch, F>)), ...);
    return sum;
}
}  // namespace detail
[[gnu::used]] inline const std::size_t emitted_row_functions = detail::emit_row_functions<QFORGE_ARCH_TAG>(Formats{});

}  // namespace qforge
