// patchbay: the SIMD layer (xsimd), chosen at compile time from the consumer's flags.
#pragma once

#include <cmath>
#include <cstddef>

#include <xsimd/xsimd.hpp>

namespace patchbay::simd {

#if defined(PATCHBAY_DISABLE_SIMD)
inline constexpr bool enabled = false;
#else
inline constexpr bool enabled = !std::is_same_v<xsimd::default_arch, xsimd::unavailable>;
#endif

/// The SIMD batch for T on the compile-time default architecture.
template <class T>
using batch = xsimd::batch<T, xsimd::default_arch>;

template <class T>
inline constexpr std::size_t lanes = enabled ? batch<T>::size : 1;

/// Horizontal sum of a batch into double. Stores and adds in order: avoids xsimd 8.1's
/// AVX-512 hadd, whose lane order is wrong, and gives the same result on every arch.
template <class T>
inline double hsum(const batch<T>& b) noexcept {
    alignas(64) T tmp[batch<T>::size];
    b.store_aligned(tmp);
    double s = 0.0;
    for (std::size_t i = 0; i < batch<T>::size; ++i) s += static_cast<double>(tmp[i]);
    return s;
}
inline double hsum(float v) noexcept { return v; }
inline double hsum(double v) noexcept { return v; }

// Math that works on both a batch and a scalar, so one generic lambda serves the SIMD body
// and the scalar tail / strided path with the same operations.
using std::abs;
using std::sqrt;
using std::max;
using std::min;
using xsimd::abs;
using xsimd::sqrt;
using xsimd::max;
using xsimd::min;

template <class T>
inline auto select(bool c, T a, T b) noexcept { return c ? a : b; }
using xsimd::select;

} // namespace patchbay::simd
