// patchbay: which SIMD instruction set this build's kernels use, for logs and test output.
#pragma once

#include <string_view>
#include <type_traits>

#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay {

/// The SIMD variant the kernels run with: xsimd's name of the compile-time architecture
/// (e.g. "sse2", "fma3+avx2", "avx512bw", "arm64+neon"), or "scalar" when SIMD is off
/// (PATCHBAY_DISABLE_SIMD, or no SIMD instruction set enabled by the compiler flags).
inline std::string_view simd_arch_name() noexcept {
    if constexpr (simd::enabled) {
        return xsimd::default_arch::name();
    } else {
        return "scalar";
    }
}

} // namespace patchbay
