// patchbay: the SIMD layer, chosen at compile time from the consumer's flags.
//
// Every SIMD kernel and patch goes through this namespace, never through xsimd directly, so
// a change of backend or a run-time ISA dispatch changes one place. The operations take a
// batch or a scalar alike, which lets one generic lambda serve a kernel's SIMD body and its
// scalar tail / strided path with the same expression (the paths agree bit for bit).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "patchbay/core/config.hpp"

#if XSIMD_WITH_NEON64
// xsimd 8.1 has no AArch64 kernels for float division and square root: batch<float> on neon64
// falls back to the 32-bit NEON ones, a reciprocal (square root) estimate refined by two
// Newton-Raphson steps, which is off by an ulp for many inputs, so a kernel's SIMD body and its
// scalar tail / strided path (IEEE `/` and std::sqrt) disagreed in the last bit. AArch64 has
// the correctly rounded instructions: these explicit specialisations of xsimd's NEON kernels
// for neon64 use them (fdiv, fsqrt), as later xsimd releases do. (They must precede every use
// of batch<float> `/` or sqrt in a translation unit: xsimd is only ever included here.)
namespace xsimd::kernel {
template <>
inline batch<float, neon64> div<neon64>(batch<float, neon64> const& lhs, batch<float, neon64> const& rhs,
                                        requires_arch<neon>) noexcept {
    return vdivq_f32(lhs, rhs);
}
template <>
inline batch<float, neon64> sqrt<neon64>(batch<float, neon64> const& arg, requires_arch<neon>) noexcept {
    return vsqrtq_f32(arg);
}
} // namespace xsimd::kernel
#endif

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
using batch_bool = xsimd::batch_bool<T, xsimd::default_arch>;

/// Elements a kernel processes per step: the batch's lanes, or 1 when SIMD is off.
template <class T>
inline constexpr std::size_t lanes = enabled ? batch<T>::size : 1;

/// The widest value type a kernel steps with: the batch, or T itself when SIMD is off.
template <class T>
using vec = std::conditional_t<enabled, batch<T>, T>;

/// Alignment that suits every batch type (scratch arrays are declared with it).
inline constexpr std::size_t alignment = 64;

template <class V>
struct is_batch : std::false_type {};
template <class T, class A>
struct is_batch<xsimd::batch<T, A>> : std::true_type {};
template <class V>
inline constexpr bool is_batch_v = is_batch<std::remove_cvref_t<V>>::value;

template <class V>
struct scalar_of {
    using type = V;
};
template <class T, class A>
struct scalar_of<xsimd::batch<T, A>> {
    using type = T;
};
/// The element type of a batch, or the scalar itself.
template <class V>
using scalar_t = typename scalar_of<std::remove_cvref_t<V>>::type;

// ---- memory -------------------------------------------------------------------------------

/// V from p: a batch (unaligned load) or one element.
template <class V, class T>
PATCHBAY_ALWAYS_INLINE V load(const T* p) noexcept {
    if constexpr (is_batch_v<V>) return V::load_unaligned(p);
    else return V(*p);
}
/// As load, with p aligned to the batch.
template <class V, class T>
PATCHBAY_ALWAYS_INLINE V load_aligned(const T* p) noexcept {
    if constexpr (is_batch_v<V>) return V::load_aligned(p);
    else return V(*p);
}
template <class T, class A>
PATCHBAY_ALWAYS_INLINE void store(T* p, const xsimd::batch<T, A>& v) noexcept {
    v.store_unaligned(p);
}
template <class T, class A>
PATCHBAY_ALWAYS_INLINE void store_aligned(T* p, const xsimd::batch<T, A>& v) noexcept {
    v.store_aligned(p);
}
template <class T>
    requires std::is_arithmetic_v<T>
PATCHBAY_ALWAYS_INLINE void store(T* p, T v) noexcept {
    *p = v;
}
template <class T>
    requires std::is_arithmetic_v<T>
PATCHBAY_ALWAYS_INLINE void store_aligned(T* p, T v) noexcept {
    *p = v;
}
/// The signed integer type of T's size: the element index type of gather().
template <class T>
using index_type = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;

/// V of p[index[0]], p[index[1]], ... (one lane per index; a gather on a batch).
/// (The AVX2 / AVX-512 instructions directly: xsimd 8.1's gather is an out-of-line call.)
template <class V, class T>
PATCHBAY_ALWAYS_INLINE V gather(const T* p, const index_type<T>* index) noexcept {
    if constexpr (!is_batch_v<V>) {
        return V(p[*index]);
    } else {
#if defined(__AVX512F__)
        // (the masked forms with a zero pass-through: the plain ones start from an "undefined"
        // register that g++ 12 reports as maybe-uninitialized, see max / min below)
        if constexpr (V::size == 16 && std::is_same_v<T, float>)
            return V(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), static_cast<__mmask16>(0xFFFF),
                                              _mm512_loadu_si512(index), p, 4));
        else if constexpr (V::size == 8 && std::is_same_v<T, double>)
            return V(_mm512_mask_i64gather_pd(_mm512_setzero_pd(), static_cast<__mmask8>(0xFF),
                                              _mm512_loadu_si512(index), p, 8));
        else
#endif
#if defined(__AVX2__)
        if constexpr (V::size == 8 && std::is_same_v<T, float>)
            return V(_mm256_i32gather_ps(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(index)), 4));
        else if constexpr (V::size == 4 && std::is_same_v<T, double>)
            return V(_mm256_i64gather_pd(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(index)), 8));
        else
#endif
            return V::gather(p, xsimd::batch<index_type<T>, typename V::arch_type>::load_unaligned(index));
    }
}

#if defined(__AVX__)
/// In-register transposes of 8 x 8 floats and 4 x 4 doubles (rows r[0], r[1], ... become columns).
PATCHBAY_ALWAYS_INLINE void transpose8(__m256* r) noexcept {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
PATCHBAY_ALWAYS_INLINE void transpose4(__m256d* r) noexcept {
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
#endif

/// Transposes the lanes x lanes matrix whose rows are m[0], m[1], ...: afterwards m[j] holds
/// lane j of every former row. Moves only (exact). AVX (8 floats, 4 doubles) and SSE (4 floats,
/// 2 doubles) use shuffles; other widths go through memory.
template <class T, std::size_t N>
PATCHBAY_ALWAYS_INLINE void transpose(std::array<batch<T>, N>& m) noexcept {
    static_assert(N == batch<T>::size, "transpose takes lanes rows of lanes values");
    using B = batch<T>;
#if defined(__AVX__)
    constexpr bool is_float = std::is_same_v<T, float>;
    if constexpr ((is_float && N == 8) || (std::is_same_v<T, double> && N == 4)) {
        typename B::register_type r[N]; // __m256 or __m256d
        for (std::size_t i = 0; i < N; ++i) r[i] = m[i];
        if constexpr (is_float) transpose8(r);
        else transpose4(r);
        for (std::size_t i = 0; i < N; ++i) m[i] = B(r[i]);
        return;
    }
#endif
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, float> && N == 4) {
        const __m128 t0 = _mm_unpacklo_ps(m[0], m[1]), t1 = _mm_unpackhi_ps(m[0], m[1]);
        const __m128 t2 = _mm_unpacklo_ps(m[2], m[3]), t3 = _mm_unpackhi_ps(m[2], m[3]);
        m[0] = B(_mm_movelh_ps(t0, t2));
        m[1] = B(_mm_movehl_ps(t2, t0));
        m[2] = B(_mm_movelh_ps(t1, t3));
        m[3] = B(_mm_movehl_ps(t3, t1));
        return;
    }
    if constexpr (std::is_same_v<T, double> && N == 2) {
        const __m128d t0 = _mm_unpacklo_pd(m[0], m[1]), t1 = _mm_unpackhi_pd(m[0], m[1]);
        m[0] = B(t0);
        m[1] = B(t1);
        return;
    }
#endif
    alignas(alignment) T in[N * N];
    alignas(alignment) T out[N * N];
    for (std::size_t i = 0; i < N; ++i) m[i].store_aligned(in + i * N);
    for (std::size_t i = 0; i < N; ++i)
        for (std::size_t j = 0; j < N; ++j) out[j * N + i] = in[i * N + j];
    for (std::size_t i = 0; i < N; ++i) m[i] = B::load_aligned(out + i * N);
}

/// A batch of the n < lanes values from p, zero in the other lanes (never reads past p[n-1]).
template <class T>
PATCHBAY_ALWAYS_INLINE batch<T> load_partial(const T* p, std::ptrdiff_t n) noexcept {
    using B = batch<T>;
#if defined(__AVX512F__)
    const auto m = static_cast<unsigned>((1u << n) - 1u);
    if constexpr (std::is_same_v<T, float>) return B(_mm512_maskz_loadu_ps(static_cast<__mmask16>(m), p));
    else return B(_mm512_maskz_loadu_pd(static_cast<__mmask8>(m), p));
#elif defined(__AVX__)
    const float nf = static_cast<float>(n);
    if constexpr (std::is_same_v<T, float>) {
        const __m256 on = _mm256_cmp_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_ps(nf), _CMP_LT_OQ);
        return B(_mm256_maskload_ps(p, _mm256_castps_si256(on)));
    } else {
        const __m256d on = _mm256_cmp_pd(_mm256_setr_pd(0, 1, 2, 3), _mm256_set1_pd(nf), _CMP_LT_OQ);
        return B(_mm256_maskload_pd(p, _mm256_castpd_si256(on)));
    }
#else
    alignas(alignment) T tmp[B::size] = {};
    for (std::ptrdiff_t l = 0; l < n; ++l) tmp[l] = p[l];
    return B::load_aligned(tmp);
#endif
}

/// Stores the first n < lanes values of v to p (never writes past p[n-1]).
template <class T>
PATCHBAY_ALWAYS_INLINE void store_partial(T* p, const batch<T>& v, std::ptrdiff_t n) noexcept {
#if defined(__AVX512F__)
    const auto m = static_cast<unsigned>((1u << n) - 1u);
    if constexpr (std::is_same_v<T, float>) _mm512_mask_storeu_ps(p, static_cast<__mmask16>(m), v);
    else _mm512_mask_storeu_pd(p, static_cast<__mmask8>(m), v);
#elif defined(__AVX__)
    const float nf = static_cast<float>(n);
    if constexpr (std::is_same_v<T, float>) {
        const __m256 on = _mm256_cmp_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_ps(nf), _CMP_LT_OQ);
        _mm256_maskstore_ps(p, _mm256_castps_si256(on), v);
    } else {
        const __m256d on = _mm256_cmp_pd(_mm256_setr_pd(0, 1, 2, 3), _mm256_set1_pd(nf), _CMP_LT_OQ);
        _mm256_maskstore_pd(p, _mm256_castpd_si256(on), v);
    }
#else
    alignas(alignment) T tmp[batch<T>::size];
    v.store_aligned(tmp);
    for (std::ptrdiff_t l = 0; l < n; ++l) p[l] = tmp[l];
#endif
}

/// The lanes of b in double, in lane order: two batches for float, b itself for double.
template <class T>
PATCHBAY_ALWAYS_INLINE std::array<batch<double>, sizeof(double) / sizeof(T)> to_double(const batch<T>& b) noexcept {
    if constexpr (std::is_same_v<T, double>) {
        return {b};
    } else {
#if defined(__AVX512F__)
        // (the zero-masked forms: see the note on g++ 12 and "undefined" operands above)
        const __m512d x = _mm512_castps_pd(b);
        const auto all = static_cast<__mmask8>(0xFF);
        return {batch<double>(_mm512_maskz_cvtps_pd(all, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(all, x, 0)))),
                batch<double>(_mm512_maskz_cvtps_pd(all, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(all, x, 1))))};
#elif defined(__AVX__)
        const __m256 x = b;
        return {batch<double>(_mm256_cvtps_pd(_mm256_castps256_ps128(x))),
                batch<double>(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)))};
#elif defined(__SSE2__)
        const __m128 x = b;
        return {batch<double>(_mm_cvtps_pd(x)), batch<double>(_mm_cvtps_pd(_mm_movehl_ps(x, x)))};
#elif defined(__aarch64__)
        const float32x4_t x = b;
        return {batch<double>(vcvt_f64_f32(vget_low_f32(x))), batch<double>(vcvt_high_f64_f32(x))};
#else
        alignas(alignment) T tmp[batch<T>::size];
        alignas(alignment) double wide[batch<T>::size];
        b.store_aligned(tmp);
        for (std::size_t j = 0; j < batch<T>::size; ++j) wide[j] = static_cast<double>(tmp[j]);
        std::array<batch<double>, sizeof(double) / sizeof(T)> r;
        for (std::size_t i = 0; i < r.size(); ++i) r[i] = batch<double>::load_aligned(wide + i * batch<double>::size);
        return r;
#endif
    }
}

/// The lanes of batch<T> values summed in double, kept in registers.
template <class T>
struct wide_sum {
    static constexpr std::size_t parts = sizeof(double) / sizeof(T);
    std::array<batch<double>, parts> part;

    wide_sum() noexcept { part.fill(batch<double>(0.0)); }

    PATCHBAY_ALWAYS_INLINE void add(const batch<T>& b) noexcept {
        const auto w = to_double(b);
        for (std::size_t i = 0; i < parts; ++i) part[i] += w[i];
    }

    /// The lanes' sums, in lane order, to out[0 .. lanes<T>).
    void store(double* out) const noexcept {
        for (std::size_t i = 0; i < parts; ++i) part[i].store_unaligned(out + i * batch<double>::size);
    }
};

/// v, held in a register, its lanes unknown to the optimiser. Two uses:
/// - Where one loaded batch feeds several operations, g++ otherwise folds the load into each
///   of them as a memory operand, and a loop with a few multiply-adds per input becomes
///   load-bound (docs/design.md).
/// - Twin paths that must round alike (a packed path and its strided twin, a body and its
///   tail) hand the user's functors batches through this. A partial load's lanes are known
///   zero when its copy loop does not run; g++ -O2 on AArch64 then moved a product into that
///   branch, away from its add, and left it unfused where the twin fused it.
/// Values are unchanged.
template <class V>
PATCHBAY_ALWAYS_INLINE V in_register(V v) noexcept {
    if constexpr (is_batch_v<V>) {
#if defined(__GNUC__) && defined(__aarch64__)
        typename V::register_type r = v;
        __asm__("" : "+w"(r));
        return V(r);
#elif defined(__GNUC__) && defined(__AVX512F__)
        typename V::register_type r = v;
        __asm__("" : "+v"(r));
        return V(r);
#elif defined(__GNUC__) && defined(__SSE2__)
        if constexpr (sizeof(V) <= 32) {
            typename V::register_type r = v;
            __asm__("" : "+x"(r));
            return V(r);
        }
#endif
    }
    return v;
}

/// f(0), f(1), ... f(N - 1), each index a compile-time constant: unrolled at every
/// optimisation level. g++ -O3 unrolls short loops over arrays of batches (accumulators,
/// column batches) completely, but -O2 keeps them as loops, and the arrays then live on the
/// stack, stored and reloaded on every step: kernels::reduce<3> over 64K floats took 16.1 us
/// at -O2 against 4.7 us at -O3 (AVX-512); written with this, 5.0 us at -O2.
template <auto N, class F>
PATCHBAY_ALWAYS_INLINE void unrolled(F&& f) {
    [&]<auto... i>(std::integer_sequence<decltype(N), i...>) {
        (f(std::integral_constant<decltype(N), i>{}), ...);
    }(std::make_integer_sequence<decltype(N), N>{});
}

/// V with every lane x.
template <class V>
PATCHBAY_ALWAYS_INLINE V broadcast(scalar_t<V> x) noexcept {
    return V(x);
}

// ---- horizontal ---------------------------------------------------------------------------

/// Horizontal sum of a batch into double. Stores and adds in order: avoids xsimd 8.1's
/// AVX-512 hadd, whose lane order is wrong, and gives the same result on every arch.
template <class T>
inline double hsum(const batch<T>& b) noexcept {
    alignas(alignment) T tmp[batch<T>::size];
    b.store_aligned(tmp);
    double s = 0.0;
    for (std::size_t i = 0; i < batch<T>::size; ++i) s += static_cast<double>(tmp[i]);
    return s;
}
inline double hsum(float v) noexcept { return v; }
inline double hsum(double v) noexcept { return v; }

/// True when any / every lane of a mask is set (a bool for scalars).
template <class T, class A>
PATCHBAY_ALWAYS_INLINE bool any(const xsimd::batch_bool<T, A>& m) noexcept {
    return xsimd::any(m);
}
template <class T, class A>
PATCHBAY_ALWAYS_INLINE bool all(const xsimd::batch_bool<T, A>& m) noexcept {
    return xsimd::all(m);
}
PATCHBAY_ALWAYS_INLINE bool any(bool m) noexcept { return m; }
PATCHBAY_ALWAYS_INLINE bool all(bool m) noexcept { return m; }

// ---- arithmetic ---------------------------------------------------------------------------
// Math that works on both a batch and a scalar.

using std::abs;
using std::copysign;
using std::max;
using std::min;
using std::sqrt;
using xsimd::abs;
using xsimd::copysign;
using xsimd::max;
using xsimd::min;
using xsimd::sqrt;

#if defined(__AVX512F__) && !defined(PATCHBAY_DISABLE_SIMD)
// g++ 12's avx512fintrin.h gives _mm512_{sqrt,min,max}_{ps,pd} a self-initialised "undefined"
// pass-through operand, which -Wmaybe-uninitialized reports inside the header in some
// inlining contexts (GCC PR 105593). The masked forms with an all-ones mask and a defined
// pass-through compile to the same instruction and do not warn.
PATCHBAY_ALWAYS_INLINE batch<float> sqrt(const batch<float>& x) noexcept {
    return _mm512_mask_sqrt_ps(x, static_cast<__mmask16>(0xFFFF), x);
}
PATCHBAY_ALWAYS_INLINE batch<double> sqrt(const batch<double>& x) noexcept {
    return _mm512_mask_sqrt_pd(x, static_cast<__mmask8>(0xFF), x);
}
PATCHBAY_ALWAYS_INLINE batch<float> max(const batch<float>& a, const batch<float>& b) noexcept {
    return _mm512_mask_max_ps(a, static_cast<__mmask16>(0xFFFF), a, b);
}
PATCHBAY_ALWAYS_INLINE batch<double> max(const batch<double>& a, const batch<double>& b) noexcept {
    return _mm512_mask_max_pd(a, static_cast<__mmask8>(0xFF), a, b);
}
PATCHBAY_ALWAYS_INLINE batch<float> min(const batch<float>& a, const batch<float>& b) noexcept {
    return _mm512_mask_min_ps(a, static_cast<__mmask16>(0xFFFF), a, b);
}
PATCHBAY_ALWAYS_INLINE batch<double> min(const batch<double>& a, const batch<double>& b) noexcept {
    return _mm512_mask_min_pd(a, static_cast<__mmask8>(0xFF), a, b);
}
#endif

/// sign(x) sqrt|x|, the same bits as copysign(sqrt(abs(x)), x): the root is never negative,
/// so x's sign bit is simply or-ed in (copysign would clear the root's first).
template <class T, class A>
PATCHBAY_ALWAYS_INLINE xsimd::batch<T, A> signed_sqrt(const xsimd::batch<T, A>& x) noexcept {
    return sqrt(abs(x)) | xsimd::bitofsign(x);
}
template <class T>
    requires std::is_floating_point_v<T>
PATCHBAY_ALWAYS_INLINE T signed_sqrt(T x) noexcept {
    return std::copysign(std::sqrt(std::abs(x)), x);
}

/// True when this build's batch fma is one fused operation; the scalar fma then fuses too,
/// so SIMD bodies and scalar tails round alike (a batch fma without FMA hardware is a
/// multiply and an add, and so is the scalar one).
#if defined(__FMA__) || defined(__AVX512F__) || defined(__aarch64__)
inline constexpr bool fused_fma = true;
#else
inline constexpr bool fused_fma = false;
#endif

/// a * b + c
template <class T, class A>
PATCHBAY_ALWAYS_INLINE xsimd::batch<T, A> fma(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& b,
                                              const xsimd::batch<T, A>& c) noexcept {
#if defined(__AVX512F__)
    // xsimd 8.1 has no AVX-512 fma: its generic a * b + c is two roundings, or one where the
    // compiler contracts it, and then maybe around the other product of fma(a, b, c * d)
    if constexpr (sizeof(xsimd::batch<T, A>) == 64 && std::is_same_v<T, float>)
        return _mm512_fmadd_ps(a, b, c);
    else if constexpr (sizeof(xsimd::batch<T, A>) == 64 && std::is_same_v<T, double>)
        return _mm512_fmadd_pd(a, b, c);
    else
#endif
        return xsimd::fma(a, b, c);
}
template <class T>
    requires std::is_floating_point_v<T>
PATCHBAY_ALWAYS_INLINE T fma(T a, T b, T c) noexcept {
    if constexpr (fused_fma) return std::fma(a, b, c);
    else return a * b + c;
}
/// a * b - c and c - a * b, through fma (negation is exact, so these round as fma does).
template <class V>
PATCHBAY_ALWAYS_INLINE V fms(const V& a, const V& b, const V& c) noexcept {
    return simd::fma(a, b, V(-c));
}
template <class V>
PATCHBAY_ALWAYS_INLINE V fnma(const V& a, const V& b, const V& c) noexcept {
    return simd::fma(V(-a), b, c);
}

/// c ? a : b, lane by lane for batches.
template <class T>
PATCHBAY_ALWAYS_INLINE T select(bool c, T a, T b) noexcept {
    return c ? a : b;
}
using xsimd::select;

} // namespace patchbay::simd
