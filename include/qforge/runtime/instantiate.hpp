#pragma once
/// @file
/// Included by each generated dispatch translation unit after its architecture's primitives
/// header, with QFORGE_ARCH_TAG naming the tag. Instantiates the row kernels of every packed
/// format for that tag, compiled with that tag's flags.
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

template RowFunctions<Dense<2>> simd_row_functions<QFORGE_ARCH_TAG, Dense<2>>() noexcept;
template RowFunctions<Dense<3>> simd_row_functions<QFORGE_ARCH_TAG, Dense<3>>() noexcept;
template RowFunctions<Dense<4>> simd_row_functions<QFORGE_ARCH_TAG, Dense<4>>() noexcept;
template RowFunctions<Dense<8>> simd_row_functions<QFORGE_ARCH_TAG, Dense<8>>() noexcept;
template RowFunctions<Q4_0> simd_row_functions<QFORGE_ARCH_TAG, Q4_0>() noexcept;
template RowFunctions<Q4_1> simd_row_functions<QFORGE_ARCH_TAG, Q4_1>() noexcept;
template RowFunctions<Q8_0> simd_row_functions<QFORGE_ARCH_TAG, Q8_0>() noexcept;

}  // namespace qforge
