// patchbay: bulk conversions between half-precision storage (f16, bf16) and float32.
//
// widen: exact. narrow: round to nearest even, once. Contiguous rows convert eight lanes at a
// time with F16C (f16) and AVX2 integer lanes (bf16): compiled in where the build's flags have
// them, and otherwise, on x86-64 with GCC or clang, chosen at run time when the CPU has them
// (functions compiled for those instructions alone, picked once per process; the environment
// variable PATCHBAY_ISA=x86-64 keeps the scalar code, core/isa.hpp). Strided rows and other
// targets use the scalar conversions of core/half.hpp; every path gives identical bits.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#if defined(__F16C__) && defined(__AVX2__)
#define PATCHBAY_CONVERT_ROWS 1 // compiled in: the build has F16C and AVX2
#define PATCHBAY_CONVERT_TARGET
#else
#define PATCHBAY_CONVERT_ROWS 2 // chosen at run time
#define PATCHBAY_CONVERT_TARGET __attribute__((target("avx2,f16c")))
#endif
#else
#define PATCHBAY_CONVERT_ROWS 0 // scalar only (other targets and compilers)
#endif

#include "patchbay/core/half.hpp"
#include "patchbay/core/isa.hpp"
#include "patchbay/core/view.hpp"

namespace patchbay::kernels {

namespace convert_detail {

#if PATCHBAY_CONVERT_ROWS
// Eight lanes at a time; each returns how many leading elements it converted (a multiple of 8).
PATCHBAY_CONVERT_TARGET inline index_t widen_rows(const f16* src, float* dst, index_t n) noexcept {
    index_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    return i;
}
PATCHBAY_CONVERT_TARGET inline index_t widen_rows(const bf16* src, float* dst, index_t n) noexcept {
    index_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    return i;
}
PATCHBAY_CONVERT_TARGET inline index_t narrow_rows(const float* src, f16* dst, index_t n) noexcept {
    index_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return i;
}
PATCHBAY_CONVERT_TARGET inline index_t narrow_rows(const float* src, bf16* dst, index_t n) noexcept {
    index_t i = 0;
    for (; i + 8 <= n; i += 8) {
        // (x + 0x7FFF + lsb) >> 16, NaN kept quiet: the scalar to_bf16, eight lanes at once
        const __m256i x = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
        const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7FFF)), lsb), 16);
        const __m256i abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFFFFFF));
        const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F800000));
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x0040));
        const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
        // pack the low 16 bits of the eight lanes (packus works per 128-bit half: reorder)
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(packed));
    }
    return i;
}
#endif

/// Whether contiguous rows convert eight lanes at a time in this process: always where the
/// build has F16C and AVX2; with run-time selection, when the CPU is x86-64-v3 (F16C, AVX2,
/// the AVX state kept by the OS) and PATCHBAY_ISA does not cap below it. Decided once; throws
/// patchbay::error for an unknown PATCHBAY_ISA, as the dispatcher does.
inline bool vector_rows() {
#if PATCHBAY_CONVERT_ROWS == 1
    return true;
#elif PATCHBAY_CONVERT_ROWS == 2
    static const bool on = [] {
        return detail::x86_cpu_level() >= 3 && detail::isa_level_cap() >= 3;
    }();
    return on;
#else
    return false;
#endif
}

/// n contiguous values converted: half -> float (D = float, exact) or float -> half (rounded to
/// nearest even); eight lanes at a time when `vector` (vector_rows()).
template <class S, class D>
inline void convert_row(const S* src, D* dst, index_t n, [[maybe_unused]] bool vector) noexcept {
    index_t i = 0;
#if PATCHBAY_CONVERT_ROWS
    if (vector) {
        if constexpr (std::is_same_v<D, float>) i = widen_rows(src, dst, n);
        else i = narrow_rows(src, dst, n);
    }
#endif
    for (; i < n; ++i) {
        if constexpr (std::is_same_v<D, float>) dst[i] = to_float(src[i]);
        else dst[i] = round_to<D>(src[i]);
    }
}

/// Calls row(src_offset, dst_offset, inner_src_stride, inner_dst_stride, length) for every
/// innermost row of the two same-shaped views.
template <std::size_t R, class Row>
void for_each_row(const std::array<index_t, R>& ext, const std::array<index_t, R>& ss,
                  const std::array<index_t, R>& ds, Row row) {
    std::array<index_t, R> idx{};
    const index_t n = ext[R - 1];
    if (n == 0) return;
    for (std::size_t r = 0; r + 1 < R; ++r)
        if (ext[r] == 0) return;
    while (true) {
        index_t so = 0, dof = 0;
        for (std::size_t r = 0; r + 1 < R; ++r) so += idx[r] * ss[r], dof += idx[r] * ds[r];
        row(so, dof, ss[R - 1], ds[R - 1], n);
        std::size_t r = R - 1;
        while (r > 0) {
            --r;
            if (++idx[r] < ext[r]) break;
            idx[r] = 0;
            if (r == 0) return;
        }
        if (R == 1) return;
    }
}

} // namespace convert_detail

namespace convert_detail {
/// dst = src converted element by element (widen or narrow), any strides, same shapes.
template <class S, class D, std::size_t R>
void convert(view<const S, R> src, view<D, R> dst, const char* where) {
    require_same_shape(src, view<const D, R>(dst), where, "src", "dst");
    const S* s = src.data_handle();
    D* d = dst.data_handle();
    const bool vector = vector_rows();
    if (src.is_contiguous() && dst.is_contiguous()) return convert_row(s, d, src.size(), vector);
    for_each_row<R>(src.extents(), src.strides(), dst.strides(),
                    [&](index_t so, index_t dof, index_t sst, index_t dst_s, index_t n) {
                        if (sst == 1 && dst_s == 1) return convert_row(s + so, d + dof, n, vector);
                        for (index_t i = 0; i < n; ++i) {
                            if constexpr (std::is_same_v<D, float>) d[dof + i * dst_s] = to_float(s[so + i * sst]);
                            else d[dof + i * dst_s] = round_to<D>(s[so + i * sst]);
                        }
                    });
}
} // namespace convert_detail

/// dst = src widened to float32 (exact). Same shapes; any strides; dst must not overlap src.
template <class H, std::size_t R>
void widen(view<const H, R> src, view<float, R> dst) {
    convert_detail::convert<H, float, R>(src, dst, "kernels::widen");
}

/// dst = src rounded to the storage type H (nearest even). Same shapes; any strides.
template <class H, std::size_t R>
void narrow(view<const float, R> src, view<H, R> dst) {
    convert_detail::convert<float, H, R>(src, dst, "kernels::narrow");
}

/// The conversion path contiguous rows take in this process: "f16c+avx2" (eight lanes, compiled
/// in or chosen at run time) or "scalar".
inline std::string_view half_conversion_path() { return convert_detail::vector_rows() ? "f16c+avx2" : "scalar"; }

} // namespace patchbay::kernels
