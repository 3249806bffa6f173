// patchbay: the FFT engine behind kernels/fft.hpp (Stockham stages on SIMD "packs").
//
// A pack is V complex numbers stored split: V real parts then V imaginary parts (V = SIMD width
// of T). Lane p of every pack belongs to plane p of the current chunk, so a butterfly over packs
// transforms V planes at once. A 1-D pass transforms along the middle axis of an
// (outer, n, inner) array of packs; the row pass of an H x W chunk is (H, W, 1), the column
// pass (1, H, W). Stockham autosort (decimation in frequency) ping-pongs between two buffers
// and leaves the result in natural order, so no bit reversal is needed.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <numbers>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "patchbay/core/config.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#ifndef PATCHBAY_FFT_ROW_TARGET
#define PATCHBAY_FFT_ROW_TARGET 256
#endif
#ifndef PATCHBAY_FFT_COL_TARGET
#define PATCHBAY_FFT_COL_TARGET 1024
#endif
#ifndef PATCHBAY_FFT_PREFETCH
#define PATCHBAY_FFT_PREFETCH 1
#endif
// A call streams its lines ahead (prefetch_stream) when its input and output planes together
// take at least PATCHBAY_FFT_STREAM_BYTES, and each chunk at most PATCHBAY_FFT_PREFETCH_BYTES
// of them (output and next input).
#ifndef PATCHBAY_FFT_STREAM_BYTES
#define PATCHBAY_FFT_STREAM_BYTES (8 << 20)
#endif
#ifndef PATCHBAY_FFT_PREFETCH_BYTES
#define PATCHBAY_FFT_PREFETCH_BYTES (512 << 10)
#endif

namespace patchbay::kernels::fft_detail {

#if defined(__FMA__) || defined(__AVX512F__) || defined(__ARM_FEATURE_FMA)
inline constexpr bool hardware_fma = true;
#else
inline constexpr bool hardware_fma = false;
#endif

/// a*b + c, a*b - c and c - a*b on SIMD batches and scalars, rounded once wherever the CPU has
/// FMA and twice where it has none, whatever the compiler's contraction setting: xsimd 8.1 has
/// no AVX-512 fma (it computes x*y + z, which the compiler then fuses at some call sites and
/// not at others, so two paths through the same arithmetic could differ in the last bit).
/// The Fourier kernels (this engine, kernels/fourier_mask.hpp) use these for every fused op.
template <class V>
PATCHBAY_ALWAYS_INLINE V fmadd(const V& a, const V& b, const V& c) noexcept {
    if constexpr (std::is_floating_point_v<V>) {
        if constexpr (hardware_fma) return std::fma(a, b, c);
        else return a * b + c; // no FMA instruction: nothing can fuse it
    } else {
#if defined(__AVX512F__)
        if constexpr (sizeof(V) == 64) {
            if constexpr (std::is_same_v<typename V::value_type, float>) return V(_mm512_fmadd_ps(a, b, c));
            else return V(_mm512_fmadd_pd(a, b, c));
        } else
#endif
            return xsimd::fma(a, b, c);
    }
}
/// a*b - c and c - a*b: negating an operand is exact, so these round exactly as fmadd does.
/// Without FMA they are written out: the same two roundings, without an xor for the sign.
template <class V>
PATCHBAY_ALWAYS_INLINE V fmsub(const V& a, const V& b, const V& c) noexcept {
    if constexpr (hardware_fma) return fmadd(a, b, V(-c));
    else return a * b - c;
}
template <class V>
PATCHBAY_ALWAYS_INLINE V fnmadd(const V& a, const V& b, const V& c) noexcept {
    if constexpr (hardware_fma) return fmadd(V(-a), b, c);
    else return c - a * b;
}

/// The FFT's SIMD batch: the build's, capped at 256 bits. The FFT's time goes to moving planes
/// in and out of packs and to the chunk array, whose size grows with the lane count: with
/// 16-float packs a chunk of 128 x 128 planes is 2 MiB (past L2) and a chunk's gather reads
/// 16 planes that compete for one cache set, which measured 10-25 % slower than 8-float packs
/// on AVX-512 (bench/kernels/fft.cpp; docs/kernels_fft.md).
#if defined(__AVX512F__) && !defined(PATCHBAY_DISABLE_SIMD)
template <class T>
using fft_batch = xsimd::batch<T, xsimd::fma3<xsimd::avx2>>;
#else
template <class T>
using fft_batch = simd::batch<T>;
#endif

template <class T>
struct ops {
    static constexpr bool vectorised = simd::enabled;
    using vec = std::conditional_t<vectorised, fft_batch<T>, T>;
    static constexpr index_t V = vectorised ? static_cast<index_t>(fft_batch<T>::size) : 1;
    static constexpr index_t PS = 2 * V; // elements of T per pack

    static PATCHBAY_ALWAYS_INLINE vec load(const T* p) noexcept {
        if constexpr (vectorised) return vec::load_aligned(p);
        else return *p;
    }
    static PATCHBAY_ALWAYS_INLINE void store(T* p, const vec& v) noexcept {
        if constexpr (vectorised) v.store_aligned(p);
        else *p = v;
    }
    static PATCHBAY_ALWAYS_INLINE vec bcast(T v) noexcept { return vec(v); }
    static PATCHBAY_ALWAYS_INLINE vec fmadd(const vec& a, const vec& b, const vec& c) noexcept {
        return fft_detail::fmadd(a, b, c);
    }
    static PATCHBAY_ALWAYS_INLINE vec fmsub(const vec& a, const vec& b, const vec& c) noexcept {
        return fft_detail::fmsub(a, b, c);
    }
    static PATCHBAY_ALWAYS_INLINE vec fnmadd(const vec& a, const vec& b, const vec& c) noexcept {
        return fft_detail::fnmadd(a, b, c);
    }
};

template <class T>
struct cpx {
    typename ops<T>::vec re, im;
};

template <class T>
PATCHBAY_ALWAYS_INLINE cpx<T> operator+(const cpx<T>& a, const cpx<T>& b) noexcept {
    return {a.re + b.re, a.im + b.im};
}
template <class T>
PATCHBAY_ALWAYS_INLINE cpx<T> operator-(const cpx<T>& a, const cpx<T>& b) noexcept {
    return {a.re - b.re, a.im - b.im};
}
/// a * w for a broadcast twiddle w.
template <class T>
PATCHBAY_ALWAYS_INLINE cpx<T> cmul(const cpx<T>& a, const cpx<T>& w) noexcept {
    using O = ops<T>;
    return {O::fmsub(a.re, w.re, a.im * w.im), O::fmadd(a.re, w.im, a.im * w.re)};
}
/// a * (-i)
template <class T>
PATCHBAY_ALWAYS_INLINE cpx<T> mul_neg_i(const cpx<T>& a) noexcept {
    return {a.im, -a.re};
}

// cos / sin of 2*pi*t/P for the odd radices (t = 0..P-1).
template <int P>
struct odd_table;
template <>
struct odd_table<3> {
    static constexpr long double c[3] = {1.0L, -0.5L, -0.5L};
    static constexpr long double s[3] = {0.0L, 0.86602540378443864676L, -0.86602540378443864676L};
};
template <>
struct odd_table<5> {
    static constexpr long double c[5] = {1.0L, 0.30901699437494742410L, -0.80901699437494742410L,
                                         -0.80901699437494742410L, 0.30901699437494742410L};
    static constexpr long double s[5] = {0.0L, 0.95105651629515357212L, 0.58778525229247312917L,
                                         -0.58778525229247312917L, -0.95105651629515357212L};
};
template <>
struct odd_table<7> {
    static constexpr long double c[7] = {1.0L,
                                         0.62348980185873353053L,
                                         -0.22252093395631440429L,
                                         -0.90096886790241912624L,
                                         -0.90096886790241912624L,
                                         -0.22252093395631440429L,
                                         0.62348980185873353053L};
    static constexpr long double s[7] = {0.0L,
                                         0.78183148246802980871L,
                                         0.97492791218182360702L,
                                         0.43388373911755812048L,
                                         -0.43388373911755812048L,
                                         -0.97492791218182360702L,
                                         -0.78183148246802980871L};
};

// Forward DFT of P packs in place: a_k <- sum_r a_r exp(-2 pi i r k / P).
template <int P, class T>
PATCHBAY_ALWAYS_INLINE void dft(cpx<T>* a) noexcept {
    using O = ops<T>;
    if constexpr (P == 2) {
        const cpx<T> t = a[0] - a[1];
        a[0] = a[0] + a[1];
        a[1] = t;
    } else if constexpr (P == 4) {
        const cpx<T> t0 = a[0] + a[2], t1 = a[0] - a[2];
        const cpx<T> t2 = a[1] + a[3], t3 = mul_neg_i(a[1] - a[3]);
        a[0] = t0 + t2;
        a[1] = t1 + t3;
        a[2] = t0 - t2;
        a[3] = t1 - t3;
    } else if constexpr (P == 8) {
        const auto h = O::bcast(static_cast<T>(0.70710678118654752440L));
        cpx<T> e[4] = {a[0], a[2], a[4], a[6]};
        cpx<T> o[4] = {a[1], a[3], a[5], a[7]};
        dft<4, T>(e);
        dft<4, T>(o);
        // o_k *= exp(-2 pi i k / 8)
        o[1] = {(o[1].re + o[1].im) * h, (o[1].im - o[1].re) * h};
        o[2] = mul_neg_i(o[2]);
        o[3] = {(o[3].im - o[3].re) * h, -(o[3].re + o[3].im) * h};
        for (int k = 0; k < 4; ++k) {
            a[k] = e[k] + o[k];
            a[k + 4] = e[k] - o[k];
        }
    } else {
        static_assert(P == 3 || P == 5 || P == 7, "unsupported radix");
        constexpr int H = (P - 1) / 2;
        using tab = odd_table<P>;
        cpx<T> s[H], d[H];
        for (int j = 1; j <= H; ++j) {
            s[j - 1] = a[j] + a[P - j];
            d[j - 1] = a[j] - a[P - j];
        }
        const cpx<T> a0 = a[0];
        cpx<T> y0 = a0;
        for (int j = 0; j < H; ++j) y0 = y0 + s[j];
        for (int k = 1; k <= H; ++k) {
            cpx<T> A = a0, B;
            {
                const int t = k % P;
                const auto st = O::bcast(static_cast<T>(tab::s[t]));
                B = {d[0].re * st, d[0].im * st};
                const auto ct = O::bcast(static_cast<T>(tab::c[t]));
                A = {O::fmadd(s[0].re, ct, A.re), O::fmadd(s[0].im, ct, A.im)};
            }
            for (int j = 2; j <= H; ++j) {
                const int t = (j * k) % P;
                const auto ct = O::bcast(static_cast<T>(tab::c[t]));
                const auto st = O::bcast(static_cast<T>(tab::s[t]));
                A = {O::fmadd(s[j - 1].re, ct, A.re), O::fmadd(s[j - 1].im, ct, A.im)};
                B = {O::fmadd(d[j - 1].re, st, B.re), O::fmadd(d[j - 1].im, st, B.im)};
            }
            // y_k = A - i B, y_{P-k} = A + i B
            a[k] = {A.re + B.im, A.im - B.re};
            a[P - k] = {A.re - B.im, A.im + B.re};
        }
        a[0] = y0;
    }
}

/// Powers of two as radix-8 stages: a radix-8 butterfly holds 16 registers of data besides its
/// twiddles. Without AVX (SSE2: 16 registers, two-operand instructions) it spills, and radix-4
/// stages measured faster there: 1280 x 32x32 10 %, 640 x 64x64 21 %, 128 x 128 and 96 x 80
/// equal. With AVX2 and AVX-512 radix 4 won at 64 x 64 (3-10 %) and lost at 128 x 128 (4-6 %).
#if defined(__SSE2__) && !defined(__AVX__)
inline constexpr bool radix8_stages = false;
#else
inline constexpr bool radix8_stages = true;
#endif

struct stage {
    int radix;
    index_t m;      // sub-length / radix
    index_t s;      // stride in sequence elements (product of earlier radices)
    std::size_t tw; // offset of this stage's twiddles (complex) in the table
};

/// Cache lines requested a few at a time between butterflies, so that memory traffic overlaps
/// the transforms: a chunk's output lines (written when the chunk ends), then the next chunk's
/// input lines. Requested as bursts between row blocks they measured slower than none (the
/// requests queue up behind each other); spread this way they take 7-10 % off the SSE2
/// transform of 1280 x 32x32 planes, which come from and go to DRAM (docs/kernels_fft.md).
/// A read request serves the output lines too: a line no other core holds arrives exclusive,
/// so the write needs no second request.
/// Only 128-bit packs (SSE2, NEON) use it: with 256-bit packs it measured 10-25 % slower at
/// 1280 x 32x32 and 640 x 64x64 (their gathers keep enough lines in flight already, and the
/// requested lines crowd the chunk's own out of L1 and L2).
template <class T>
inline constexpr bool streamed_packs = ops<T>::PS * sizeof(T) <= 32;

struct prefetch_stream {
    const char* next = nullptr; // the range being requested
    const char* end = nullptr;
    const char* then_next = nullptr; // the range after it
    const char* then_end = nullptr;
    index_t step_bytes = 0; // requested per butterfly: a multiple of 64

    PATCHBAY_ALWAYS_INLINE void step() noexcept {
#if PATCHBAY_FFT_PREFETCH && (defined(__GNUC__) || defined(__clang__))
        if (next < end) {
            for (index_t b = 0; b < step_bytes; b += 64) __builtin_prefetch(next + b, 0, 3);
            next += step_bytes;
        } else if (then_next != then_end) {
            next = then_next;
            end = then_end;
            then_next = then_end;
        }
#endif
    }
};

// `count` radix-P butterflies, the k-th reading its P inputs at x + k xstep + r rstride and
// writing its outputs at y + k ystep + j jstride, the outputs j > 0 times w[j] when Twiddled.
// Everything the loop needs is a parameter or a local: reached through a lambda's captures, the
// pointers and strides were reloaded after every store (a vector store may alias them).
// With Stream, `pf` requests its next cache lines once per butterfly (a compile-time choice:
// the test per butterfly cost the transforms without a stream 8 % at SSE2).
template <int P, bool Twiddled, bool Stream, class T>
PATCHBAY_ALWAYS_INLINE void butterflies(const T* PATCHBAY_RESTRICT x, T* PATCHBAY_RESTRICT y, index_t count,
                                        index_t xstep, index_t ystep, index_t rstride, index_t jstride,
                                        const cpx<T>* tw, prefetch_stream* pf) noexcept {
    using O = ops<T>;
    constexpr index_t V = O::V;
    cpx<T> w[P];
    if constexpr (Twiddled)
        for (int j = 1; j < P; ++j) w[j] = tw[j];
    for (index_t k = 0; k < count; ++k) {
        const T* p = x + k * xstep;
        T* q = y + k * ystep;
        cpx<T> a[P];
        for (int r = 0; r < P; ++r) a[r] = {O::load(p + r * rstride), O::load(p + r * rstride + V)};
        dft<P, T>(a);
        if constexpr (Stream) pf->step();
        for (int j = 0; j < P; ++j) {
            const cpx<T> b = Twiddled && j > 0 ? cmul(a[j], w[j]) : a[j];
            O::store(q + j * jstride, b.re);
            O::store(q + j * jstride + V, b.im);
        }
    }
}

// One Stockham stage over packs: for each pp < m and each of the L = s*inner contiguous packs,
// a_r = x[(pp + m r) xs + k], y[(P pp + j) L + k] = DFT_P(a)_j * w^(pp j). The input element
// stride xs is L except for a first stage reading straight from a wider array (column blocks).
// With L = 1 (a row pass's first stage) the butterflies of one pp run along the sequences.
template <int P, bool Stream, class T>
void run_stage_of(const T* PATCHBAY_RESTRICT x, T* PATCHBAY_RESTRICT y, index_t outer, index_t xseq,
                  index_t yseq, index_t m, index_t L, index_t xs, const T* tw, prefetch_stream* pf) noexcept {
    using O = ops<T>;
    constexpr index_t PS = O::PS;
    const index_t rstride = m * xs * PS, jstride = L * PS;
    for (index_t pp = 0; pp < m; ++pp) {
        cpx<T> w[P];
        const bool twiddle = pp != 0; // the first pp's twiddles are all 1: no multiplies
        if (twiddle)
            for (int j = 1; j < P; ++j) {
                const T* t = tw + 2 * (pp * (P - 1) + (j - 1));
                w[j] = {O::bcast(t[0]), O::bcast(t[1])};
            }
        const T* xb = x + pp * xs * PS;
        T* yb = y + P * pp * L * PS;
        if (L == 1) {
            if (twiddle) butterflies<P, true, Stream>(xb, yb, outer, xseq * PS, yseq * PS, rstride, jstride, w, pf);
            else butterflies<P, false, Stream>(xb, yb, outer, xseq * PS, yseq * PS, rstride, jstride, w, pf);
            continue;
        }
        for (index_t o = 0; o < outer; ++o) {
            const T* xo = xb + o * xseq * PS;
            T* yo = yb + o * yseq * PS;
            if (twiddle) butterflies<P, true, Stream>(xo, yo, L, PS, PS, rstride, jstride, w, pf);
            else butterflies<P, false, Stream>(xo, yo, L, PS, PS, rstride, jstride, w, pf);
        }
    }
}

/// One stage, with the prefetch stream `pf` advancing through it when there is one.
template <int P, class T>
void run_stage(const T* x, T* y, index_t outer, index_t xseq, index_t yseq, index_t m, index_t L, index_t xs,
               const T* tw, prefetch_stream* pf) noexcept {
    if constexpr (streamed_packs<T>)
        if (pf) return run_stage_of<P, true>(x, y, outer, xseq, yseq, m, L, xs, tw, pf);
    run_stage_of<P, false>(x, y, outer, xseq, yseq, m, L, xs, tw, nullptr);
}

/// Smallest 2^a 3^b 5^c >= n (Bluestein's convolution length).
inline index_t smooth_at_least(index_t n) {
    index_t best = 1;
    while (best < n) best *= 2;
    for (index_t p5 = 1; p5 < best; p5 *= 5)
        for (index_t p35 = p5; p35 < best; p35 *= 3) {
            index_t v = p35;
            while (v < n) v *= 2;
            best = std::min(best, v);
        }
    return best;
}

/// A 1-D transform of length n along the middle axis of an (outer, n, inner) pack array.
template <class T>
class pass_plan {
    using O = ops<T>;

public:
    explicit pass_plan(index_t n) : n_(n) {
        std::vector<int> radices;
        index_t r = n;
        int twos = 0;
        while (r % 2 == 0) r /= 2, ++twos;
        for (int p : {3, 5, 7})
            while (r % p == 0) r /= p, radices.push_back(p);
        if (r != 1) { // a prime factor above 7: Bluestein over the whole length
            init_bluestein();
            return;
        }
        // powers of two as 8s, with a 4 (or two 4s) for the remainder: no radix-2 stage
        // unless n is 2 itself.
        std::vector<int> pow2;
        if (twos == 1) pow2 = {2};
        else if (twos == 2) pow2 = {4};
        else if (twos >= 3) {
            int eights = twos / 3;
            if (twos % 3 == 1) pow2 = {4, 4}, --eights;
            else if (twos % 3 == 2) pow2 = {4};
            pow2.insert(pow2.begin(), static_cast<std::size_t>(eights), 8);
        }
        if constexpr (!radix8_stages) { // 4s, and a 2 for an odd power
            pow2.assign(static_cast<std::size_t>(twos / 2), 4);
            if (twos % 2) pow2.push_back(2);
        }
        radices.insert(radices.begin(), pow2.begin(), pow2.end());
        index_t len = n, s = 1;
        for (int p : radices) {
            stage st{p, len / p, s, tw_.size() / 2};
            for (index_t pp = 0; pp < st.m; ++pp)
                for (int j = 1; j < p; ++j) {
                    const index_t k = (pp * j) % len;
                    const double ang = -2.0 * std::numbers::pi * static_cast<double>(k) /
                                       static_cast<double>(len);
                    tw_.push_back(static_cast<T>(std::cos(ang)));
                    tw_.push_back(static_cast<T>(std::sin(ang)));
                }
            stages_.push_back(st);
            len /= p;
            s *= p;
        }
    }

    index_t size() const noexcept { return n_; }
    bool bluestein() const noexcept { return sub_ != nullptr; }

    /// Scratch packs run() needs beyond the two ping-pong buffers.
    index_t scratch_packs(index_t outer, index_t inner) const noexcept {
        return sub_ ? 2 * outer * M_ * inner : 0;
    }

    /// True when run() leaves the result in its first buffer.
    bool result_in_first() const noexcept { return sub_ || stages_.size() % 2 == 0; }

    /// Butterflies per sequence of one pack (what a prefetch_stream spreads its lines over).
    index_t butterflies() const noexcept {
        if (sub_) return 2 * sub_->butterflies();
        index_t total = 0;
        for (const stage& st : stages_) total += n_ / st.radix;
        return total;
    }

    /// Transform the (outer, n, inner) packs in `a`; `b` is a buffer of the same size. Returns
    /// the buffer holding the result (a or b). `pf` (may be null) advances once per butterfly.
    T* run(T* a, T* b, T* scratch, index_t outer, index_t inner, prefetch_stream* pf = nullptr) const {
        if (sub_) {
            run_bluestein(a, scratch, outer, inner, pf);
            return a;
        }
        return run_stages(a, n_ * inner, inner, a, b, outer, inner, pf);
    }

    /// One column block (outer 1): sequence element e, pack i is read at src + (e xs + i) PS
    /// (src is not written); the result lands in b1 or b2 (returned), each n * inner packs.
    T* run_from(const T* src, index_t xs, T* b1, T* b2, T* scratch, index_t inner,
                prefetch_stream* pf = nullptr) const {
        if (sub_ || stages_.empty()) {
            for (index_t e = 0; e < n_; ++e)
                std::copy(src + e * xs * O::PS, src + (e * xs + inner) * O::PS, b1 + e * inner * O::PS);
            return run(b1, b2, scratch, 1, inner, pf);
        }
        // the first stage reads src and writes b1; later stages ping-pong b1 / b2
        return run_stages(src, n_ * xs, xs, b1, b2, 1, inner, pf);
    }

private:
    // Stages from x0 (element stride xs0 packs, sequences xseq0 packs apart) ping-ponging
    // between a and b; x0 is a or an external read-only array. Returns the result buffer.
    T* run_stages(const T* x0, index_t xseq0, index_t xs0, T* a, T* b, index_t outer,
                  index_t inner, prefetch_stream* pf) const {
        const T* x = x0;
        T* y = x0 == a ? b : a;
        const index_t seq = n_ * inner;
        index_t xseq = xseq0, xs = xs0;
        for (const stage& st : stages_) {
            const index_t L = st.s * inner;
            const T* tw = tw_.data() + 2 * st.tw;
            switch (st.radix) {
            case 2: run_stage<2, T>(x, y, outer, xseq, seq, st.m, L, xs, tw, pf); break;
            case 3: run_stage<3, T>(x, y, outer, xseq, seq, st.m, L, xs, tw, pf); break;
            case 4: run_stage<4, T>(x, y, outer, xseq, seq, st.m, L, xs, tw, pf); break;
            case 5: run_stage<5, T>(x, y, outer, xseq, seq, st.m, L, xs, tw, pf); break;
            case 7: run_stage<7, T>(x, y, outer, xseq, seq, st.m, L, xs, tw, pf); break;
            default: run_stage<8, T>(x, y, outer, xseq, seq, st.m, L, xs, tw, pf); break;
            }
            x = y;
            y = y == a ? b : a;
            xseq = seq;
            xs = st.s * st.radix * inner; // the next stage's L
        }
        return const_cast<T*>(x);
    }

    void init_bluestein() {
        M_ = smooth_at_least(2 * n_ - 1);
        sub_ = std::make_shared<const pass_plan>(M_);
        // chirp w_t = exp(-i pi t^2 / n); t^2 reduced mod 2n in integers keeps the angle exact.
        std::vector<std::complex<double>> w(static_cast<std::size_t>(n_));
        for (index_t t = 0; t < n_; ++t) {
            const auto tu = static_cast<unsigned long long>(t);
            const index_t q =
                static_cast<index_t>((tu * tu) % static_cast<unsigned long long>(2 * n_));
            const double ang = -std::numbers::pi * static_cast<double>(q) / static_cast<double>(n_);
            w[static_cast<std::size_t>(t)] = {std::cos(ang), std::sin(ang)};
            chirp_.push_back(static_cast<T>(std::cos(ang)));
            chirp_.push_back(static_cast<T>(std::sin(ang)));
        }
        // kernel = DFT_M(b) / M with b_t = conj(w_|t|) for |t| < n (cyclic), computed in double
        // (one lane of a double-precision plan of the smooth length M) so its rounding does not
        // add to the float error and building the plan stays O(M log M).
        using OD = ops<double>;
        const pass_plan<double> dplan(M_);
        const std::size_t elems = static_cast<std::size_t>(2 * M_ * OD::PS);
        std::unique_ptr<double[], aligned_delete> buf(
            static_cast<double*>(::operator new[](elems * sizeof(double), std::align_val_t{64})));
        std::fill(buf.get(), buf.get() + elems, 0.0);
        double* x = buf.get();
        for (index_t t = 0; t < n_; ++t) {
            const std::complex<double> c = std::conj(w[static_cast<std::size_t>(t)]);
            x[t * OD::PS] = c.real();
            x[t * OD::PS + OD::V] = c.imag();
            if (t) {
                x[(M_ - t) * OD::PS] = c.real();
                x[(M_ - t) * OD::PS + OD::V] = c.imag();
            }
        }
        const double* r = dplan.run(x, x + M_ * OD::PS, nullptr, 1, 1);
        for (index_t k = 0; k < M_; ++k) {
            kern_.push_back(static_cast<T>(r[k * OD::PS] / static_cast<double>(M_)));
            kern_.push_back(static_cast<T>(r[k * OD::PS + OD::V] / static_cast<double>(M_)));
        }
    }

    struct aligned_delete {
        void operator()(double* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
    };

    void run_bluestein(T* a, T* scratch, index_t outer, index_t inner, prefetch_stream* pf) const {
        constexpr index_t PS = O::PS, V = O::V;
        using vec = typename O::vec;
        T* u = scratch;
        T* v = scratch + outer * M_ * inner * PS;
        // u = x * chirp, zero-padded to M
        for (index_t o = 0; o < outer; ++o)
            for (index_t e = 0; e < M_; ++e) {
                T* dst = u + (o * M_ + e) * inner * PS;
                if (e < n_) {
                    const cpx<T> w{O::bcast(chirp_.data()[2 * e]), O::bcast(chirp_.data()[2 * e + 1])};
                    const T* src = a + (o * n_ + e) * inner * PS;
                    for (index_t i = 0; i < inner; ++i) {
                        const cpx<T> z = cmul(cpx<T>{O::load(src + i * PS), O::load(src + i * PS + V)}, w);
                        O::store(dst + i * PS, z.re);
                        O::store(dst + i * PS + V, z.im);
                    }
                } else {
                    std::fill(dst, dst + inner * PS, T(0));
                }
            }
        T* r = sub_->run(u, v, nullptr, outer, inner, pf);
        T* other = r == u ? v : u;
        // r = swap(r * K): the inverse DFT of the product as a forward DFT of swapped parts
        for (index_t o = 0; o < outer; ++o)
            for (index_t e = 0; e < M_; ++e) {
                const cpx<T> k{O::bcast(kern_.data()[2 * e]), O::bcast(kern_.data()[2 * e + 1])};
                T* p = r + (o * M_ + e) * inner * PS;
                for (index_t i = 0; i < inner; ++i) {
                    const cpx<T> z = cmul(cpx<T>{O::load(p + i * PS), O::load(p + i * PS + V)}, k);
                    O::store(p + i * PS, z.im);
                    O::store(p + i * PS + V, z.re);
                }
            }
        T* r2 = sub_->run(r, other, nullptr, outer, inner, pf);
        // x = swap(r2) * chirp
        for (index_t o = 0; o < outer; ++o)
            for (index_t e = 0; e < n_; ++e) {
                const cpx<T> w{O::bcast(chirp_.data()[2 * e]), O::bcast(chirp_.data()[2 * e + 1])};
                const T* src = r2 + (o * M_ + e) * inner * PS;
                T* dst = a + (o * n_ + e) * inner * PS;
                for (index_t i = 0; i < inner; ++i) {
                    const vec re = O::load(src + i * PS + V), im = O::load(src + i * PS);
                    const cpx<T> z = cmul(cpx<T>{re, im}, w);
                    O::store(dst + i * PS, z.re);
                    O::store(dst + i * PS + V, z.im);
                }
            }
    }

    index_t n_;
    std::vector<stage> stages_;
    std::vector<T> tw_; // interleaved complex twiddles of every stage
    // Bluestein
    index_t M_ = 0;
    std::shared_ptr<const pass_plan> sub_;
    std::vector<T> chirp_; // n complex
    std::vector<T> kern_;  // M complex
};

// ----------------------------------------------------------------------------------------
// Moving planes in and out of packs.

#if defined(__AVX__)
using simd::transpose4;
using simd::transpose8;
#endif

/// True when packs are whole 256-bit registers per part (8 floats or 4 doubles on AVX2, two
/// registers on AVX-512): planes then move in and out of packs through AVX transposes of
/// groups of 8 float / 4 double planes, one register per group and part.
template <class T>
constexpr bool avx_packs() noexcept {
#if defined(__AVX__)
    if constexpr (ops<T>::vectorised) return ops<T>::V % (32 / static_cast<index_t>(sizeof(T))) == 0;
#endif
    return false;
}

#if defined(__SSE2__)
/// One register of the build's widest 128- or 256-bit instruction set (Arch: xsimd::avx, or
/// xsimd::sse2 in a build without AVX), as its raw intrinsic type, and the operations the pack
/// moves below need: 8 x 8 / 4 x 4 float and 4 x 4 / 2 x 2 double transposes.
template <class T, class Arch>
struct pack_reg {
    using batch = xsimd::batch<T, Arch>;
    using type = typename batch::register_type;
    static constexpr index_t n = static_cast<index_t>(batch::size);
    static type load(const T* p) noexcept { return batch::load_aligned(p); }
    static type loadu(const T* p) noexcept { return batch::load_unaligned(p); }
    static void store(T* p, type v, bool aligned = true) noexcept {
        if (aligned) batch(v).store_aligned(p);
        else batch(v).store_unaligned(p);
    }
    static type scaled(type v, T k) noexcept { return batch(v) * k; }
    static void transpose(type (&r)[n]) noexcept {
        constexpr bool f = std::is_same_v<T, float>;
#if defined(__AVX__)
        if constexpr (f) transpose8(r);
        else transpose4(r);
#else
        if constexpr (f) {
            _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]);
        } else {
            const __m128d lo = _mm_unpacklo_pd(r[0], r[1]), hi = _mm_unpackhi_pd(r[0], r[1]);
            r[0] = lo;
            r[1] = hi;
        }
#endif
    }
};
#endif

/// The register fast path of gather_complex (ToPacks) and scatter_complex with full packs (nb == V):
/// groups g of G planes (one register each) and blocks of C complex elements, moved through a
/// register transpose; register c of a block holds part (c & 1) of element b + c / 2 of the
/// group's planes. One group at a time: its G plane lines stay in L1 for the next block (planes
/// often lie a multiple of 4 KiB apart, so all of a chunk's lines compete for one 8-way set).
/// Returns the first element not moved (0 when the packs are not full). Scaled: the values
/// are multiplied by `scale` (a forward scatter skips the multiply by 1).
template <bool ToPacks, bool Scaled, class T, class A>
index_t move_reg_blocks(const T* src, T* dst, index_t nb, index_t ps, index_t count, bool swap, T scale) noexcept {
    constexpr index_t V = ops<T>::V, PS = ops<T>::PS, G = A::n, C = G / 2;
    if (nb != V) return 0;
    const index_t sw = swap ? 1 : 0, full = count / C * C;
    auto pack_at = [&](index_t c) { return (c >> 1) * PS + ((c ^ sw) & 1) * V; };
    for (index_t g = 0; g < V; g += G)
        for (index_t b = 0; b < full; b += C) {
            const index_t plane = (g * ps + b) * 2, pack = b * PS + g;
            typename A::type r[A::n];
            if constexpr (ToPacks)
                for (index_t p = 0; p < A::n; ++p) r[p] = A::loadu(src + plane + p * ps * 2);
            else
                for (index_t c = 0; c < A::n; ++c) {
                    r[c] = A::load(src + pack + pack_at(c));
                    if constexpr (Scaled) r[c] = A::scaled(r[c], scale);
                }
            A::transpose(r);
            if constexpr (ToPacks)
                for (index_t c = 0; c < A::n; ++c) A::store(dst + pack + pack_at(c), r[c]);
            else
                for (index_t p = 0; p < A::n; ++p) A::store(dst + plane + p * ps * 2, r[p], false);
        }
    return full;
}

/// The register fast path for this build's packs, if it has one (returns the first element
/// not moved: 0 when there is none or the packs are not full).
template <bool ToPacks, class T>
index_t move_blocks(const T* src, T* dst, index_t nb, index_t ps, index_t count, bool swap, T scale) noexcept {
#if defined(__AVX__)
    using reg = pack_reg<T, xsimd::avx>;
    constexpr bool fast = avx_packs<T>();
#elif defined(__SSE2__)
    // without AVX the packs are 128 bits wide: 4 x 4 (2 x 2) transposes instead of one scalar
    // copy per value (a build with the compiler's default flags on x86-64)
    using reg = pack_reg<T, xsimd::sse2>;
    constexpr bool fast = ops<T>::vectorised && ops<T>::V == reg::n;
#endif
#if defined(__SSE2__)
    if constexpr (fast) {
        if (ToPacks || scale == T(1))
            return move_reg_blocks<ToPacks, false, T, reg>(src, dst, nb, ps, count, swap, scale);
        return move_reg_blocks<ToPacks, true, T, reg>(src, dst, nb, ps, count, swap, scale);
    }
#endif
    (void)src, (void)dst, (void)nb, (void)ps, (void)count, (void)swap, (void)scale;
    return 0;
}

/// Interleaved complex planes (plane p at src + 2 p ps, elements e < count) -> packs; lanes
/// >= nb are zero. With `swap` the real and imaginary parts trade places.
template <class T>
void gather_complex(const T* src, index_t nb, index_t ps, index_t count, T* dst, bool swap) noexcept {
    constexpr index_t V = ops<T>::V, PS = ops<T>::PS;
    const index_t e0 = move_blocks<true, T>(src, dst, nb, ps, count, swap, T(1));
    const index_t ro = swap ? V : 0, io = swap ? 0 : V;
    for (index_t e = e0; e < count; ++e) {
        T* d = dst + e * PS;
        for (index_t p = 0; p < V; ++p) {
            if (p < nb) {
                d[ro + p] = src[(p * ps + e) * 2];
                d[io + p] = src[(p * ps + e) * 2 + 1];
            } else {
                d[p] = T(0);
                d[V + p] = T(0);
            }
        }
    }
}

/// Packs -> interleaved complex planes (plane p at dst + 2 p ps, elements e < count, p < nb),
/// times `scale`, optionally swapping parts.
template <class T>
void scatter_complex(const T* src, index_t nb, index_t count, T* dst, index_t ps, bool swap,
                     T scale) noexcept {
    constexpr index_t V = ops<T>::V, PS = ops<T>::PS;
    const index_t e0 = move_blocks<false, T>(src, dst, nb, ps, count, swap, scale);
    const index_t ro = swap ? V : 0, io = swap ? 0 : V;
    for (index_t p = 0; p < nb; ++p)
        for (index_t e = e0; e < count; ++e) {
            const T* s = src + e * PS;
            dst[(p * ps + e) * 2] = s[ro + p] * scale;
            dst[(p * ps + e) * 2 + 1] = s[io + p] * scale;
        }
}

/// nb <= V adjacent interleaved complex values -> one pack (V real parts, V imaginary parts);
/// lanes >= nb are zero.
template <class T>
void deinterleave(const T* s, index_t nb, T* pk) noexcept {
    constexpr index_t V = ops<T>::V;
#if defined(__AVX2__)
    if constexpr (ops<T>::vectorised && V * static_cast<index_t>(sizeof(T)) == 32) {
        if (nb == V) { // split the parts, then restore the order the 128-bit lanes scrambled
            if constexpr (std::is_same_v<T, float>) {
                const __m256 lo = _mm256_loadu_ps(s), hi = _mm256_loadu_ps(s + 8);
                const __m256 re = _mm256_shuffle_ps(lo, hi, 0x88), im = _mm256_shuffle_ps(lo, hi, 0xDD);
                _mm256_store_ps(pk, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(re), 0xD8)));
                _mm256_store_ps(pk + V, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(im), 0xD8)));
            } else {
                const __m256d lo = _mm256_loadu_pd(s), hi = _mm256_loadu_pd(s + 4);
                _mm256_store_pd(pk, _mm256_permute4x64_pd(_mm256_unpacklo_pd(lo, hi), 0xD8));
                _mm256_store_pd(pk + V, _mm256_permute4x64_pd(_mm256_unpackhi_pd(lo, hi), 0xD8));
            }
            return;
        }
    }
#endif
    for (index_t l = 0; l < V; ++l) {
        pk[l] = l < nb ? s[2 * l] : T(0);
        pk[V + l] = l < nb ? s[2 * l + 1] : T(0);
    }
}

/// One pack -> its first nb lanes as interleaved complex values times `scale`, the parts
/// swapped when `swap`.
template <class T>
void interleave(const T* pk, index_t nb, T* d, bool swap, T scale) noexcept {
    constexpr index_t V = ops<T>::V;
    const index_t ro = swap ? V : 0, io = swap ? 0 : V;
#if defined(__AVX2__)
    if constexpr (ops<T>::vectorised && V * static_cast<index_t>(sizeof(T)) == 32) {
        if (nb == V) {
            if constexpr (std::is_same_v<T, float>) {
                const __m256 k = _mm256_set1_ps(scale);
                const __m256 re = _mm256_castpd_ps(_mm256_permute4x64_pd(
                    _mm256_castps_pd(_mm256_mul_ps(_mm256_load_ps(pk + ro), k)), 0xD8));
                const __m256 im = _mm256_castpd_ps(_mm256_permute4x64_pd(
                    _mm256_castps_pd(_mm256_mul_ps(_mm256_load_ps(pk + io), k)), 0xD8));
                _mm256_storeu_ps(d, _mm256_unpacklo_ps(re, im));
                _mm256_storeu_ps(d + 8, _mm256_unpackhi_ps(re, im));
            } else {
                const __m256d k = _mm256_set1_pd(scale);
                const __m256d re = _mm256_permute4x64_pd(_mm256_mul_pd(_mm256_load_pd(pk + ro), k), 0xD8);
                const __m256d im = _mm256_permute4x64_pd(_mm256_mul_pd(_mm256_load_pd(pk + io), k), 0xD8);
                _mm256_storeu_pd(d, _mm256_unpacklo_pd(re, im));
                _mm256_storeu_pd(d + 4, _mm256_unpackhi_pd(re, im));
            }
            return;
        }
    }
#endif
    for (index_t l = 0; l < nb; ++l) {
        d[2 * l] = pk[ro + l] * scale;
        d[2 * l + 1] = pk[io + l] * scale;
    }
}

/// Buffer layout of one call: the chunk array A (H x W packs), two row-block buffers of g rows,
/// two column-block buffers of wb columns, and Bluestein scratch. Blocks are sized to stay in
/// L1 / L2 so the Stockham ping-pong never streams the whole chunk.
struct blocking {
    index_t g, wb;
    index_t a, r1, r2, c1, c2, scratch, total; // offsets / total in packs

    template <class P>
    static blocking make(const P& row, const P& col, index_t H, index_t W) noexcept {
        // rows: small blocks, so gathering from memory interleaves with in-L1 row transforms;
        // columns: up to 64 KiB (L2), whole rows when they fit, so the scatter is sequential
        constexpr index_t row_target = PATCHBAY_FFT_ROW_TARGET, col_target = PATCHBAY_FFT_COL_TARGET;
        blocking b{};
        b.g = std::clamp<index_t>(row_target / W, 1, H);
        b.wb = W;
        if (H * W > col_target) {
            // at least 8 packs: a row segment of a block then fills whole cache lines
            b.wb = std::max<index_t>(8, (col_target / H) / 4 * 4);
            b.wb = std::min(b.wb, W);
        }
        b.a = 0;
        b.r1 = H * W;
        b.r2 = b.r1 + b.g * W;
        b.c1 = b.r2 + b.g * W;
        b.c2 = b.c1 + H * b.wb;
        b.scratch = b.c2 + H * b.wb;
        b.total = b.scratch + std::max(row.scratch_packs(b.g, 1), col.scratch_packs(1, b.wb));
        return b;
    }
};

template <class T>
struct engine {
    using O = ops<T>;

    static std::size_t workspace_elems(const pass_plan<T>& row, const pass_plan<T>& col, index_t H,
                                       index_t W) noexcept {
        return static_cast<std::size_t>(blocking::make(row, col, H, W).total * O::PS);
    }

    /// One chunk of V planes. gather(dst, h0, rows) fills rows [h0, h0 + rows) of every plane
    /// as packs; scatter(src, w0, cols) takes the finished columns [w0, w0 + cols) (H x cols
    /// packs, row-major). `pf` (may be null) advances once per butterfly.
    template <class Gather, class Scatter>
    static void run_chunk(const pass_plan<T>& row, const pass_plan<T>& col, index_t H, index_t W,
                          T* ws, Gather&& gather, Scatter&& scatter, prefetch_stream* pf = nullptr) {
        const blocking bl = blocking::make(row, col, H, W);
        constexpr index_t PS = O::PS;
        T* A = ws + bl.a * PS;
        T* R1 = ws + bl.r1 * PS;
        T* S = ws + bl.scratch * PS;
        const bool in_first = row.result_in_first();
        for (index_t h0 = 0; h0 < H; h0 += bl.g) {
            const index_t gb = std::min(bl.g, H - h0);
            T* blk = A + h0 * W * PS;
            // gather so that the last stage writes straight into A
            T* x = in_first ? blk : R1;
            T* y = in_first ? R1 : blk;
            gather(x, h0, gb);
            row.run(x, y, S, gb, 1, pf);
        }
        T* C1 = ws + bl.c1 * PS;
        T* C2 = ws + bl.c2 * PS;
        if (bl.wb == W) {
            scatter(col.run_from(A, W, C1, C2, S, W, pf), 0, W);
            return;
        }
        // column blocks go back into A, then one sequential scatter of whole rows: scattering
        // narrow column blocks would write every output plane at a stride (slow on big chunks)
        for (index_t w0 = 0; w0 < W; w0 += bl.wb) {
            const index_t wbb = std::min(bl.wb, W - w0);
            const T* r = col.run_from(A + w0 * PS, W, C1, C2, S, wbb, pf);
            for (index_t h = 0; h < H; ++h)
                std::memcpy(A + (h * W + w0) * PS, r + h * wbb * PS,
                            static_cast<std::size_t>(wbb * PS) * sizeof(T));
        }
        scatter(A, 0, W);
    }

    /// The lines a chunk's transforms request as they go (prefetch_stream): its output
    /// [out, out + out_bytes), then the next chunk's input [in, in + in_bytes), spread evenly
    /// over the chunk's butterflies (the output's lines are in by the middle of the chunk). Nothing when together they exceed
    /// PATCHBAY_FFT_PREFETCH_BYTES: lines requested that early would leave L2 before their use.
    /// (Planes small enough to stay in cache gain nothing and pay for the requests: the caller
    /// decides, see PATCHBAY_FFT_STREAM_BYTES.)
    static prefetch_stream chunk_prefetch(const pass_plan<T>& row, const pass_plan<T>& col, index_t H,
                                          index_t W, const void* out, std::size_t out_bytes,
                                          const void* in, std::size_t in_bytes) noexcept {
        prefetch_stream pf;
        const std::size_t bytes = out_bytes + in_bytes;
        if (bytes == 0 || bytes > PATCHBAY_FFT_PREFETCH_BYTES) return pf;
        const char* o = static_cast<const char*>(out);
        const char* i = static_cast<const char*>(in);
        pf.next = o;
        pf.end = o + out_bytes;
        pf.then_next = i;
        pf.then_end = i + in_bytes;
        const index_t lines = static_cast<index_t>(bytes / 64) + 2;
        const index_t steps = std::max<index_t>(1, H * row.butterflies() + W * col.butterflies());
        pf.step_bytes = 64 * ((lines + steps - 1) / steps);
        return pf;
    }

    /// Planes in chunks of V when the chunk fills the lanes; a last partial chunk of r planes
    /// goes through run_lines() instead when its lines fill more lanes than r planes would
    /// (4 planes of 64 x 64 with 16 lanes: 4 / 16 of the work would be useful). Both give the
    /// same bits: every lane runs the same operations.
    static void run_complex(const pass_plan<T>& row, const pass_plan<T>& col, index_t H,
                            index_t W, const T* in, T* out, index_t count, bool inverse, T* ws) {
        const index_t HW = H * W;
        const T scale = inverse ? static_cast<T>(1.0 / static_cast<double>(HW)) : T(1);
        const index_t rest = count % O::V;
        const index_t chunked = rest > 0 && std::min(H, W) > rest ? count - rest : count;
        const auto bytes = [HW](index_t planes) { return static_cast<std::size_t>(planes * HW) * 2 * sizeof(T); };
        const bool stream = streamed_packs<T> && (in == out ? 1 : 2) * bytes(count) >= PATCHBAY_FFT_STREAM_BYTES;
        for (index_t p = chunked; p < count; ++p)
            run_lines(row, col, H, W, in + 2 * p * HW, out + 2 * p * HW, inverse, scale, ws);
        for (index_t c0 = 0; c0 < chunked; c0 += O::V) {
            const index_t nb = std::min(O::V, count - c0);
            const index_t next = std::clamp<index_t>(chunked - c0 - O::V, 0, O::V); // planes
            const T* src = in + 2 * c0 * HW;
            T* dst = out + 2 * c0 * HW;
            // in place, the output lines are the chunk's own input, already in cache
            prefetch_stream pf =
                stream ? chunk_prefetch(row, col, H, W, dst, dst == src ? 0 : bytes(nb), src + 2 * nb * HW, bytes(next))
                       : prefetch_stream{};
            run_chunk(
                row, col, H, W, ws,
                [&](T* d, index_t h0, index_t rows) { gather_complex(src + 2 * h0 * W, nb, HW, rows * W, d, inverse); },
                [&](const T* r, index_t w0, index_t cols) {
                    if (cols == W) return scatter_complex(r, nb, HW, dst, HW, inverse, scale);
                    for (index_t h = 0; h < H; ++h)
                        scatter_complex(r + h * cols * O::PS, nb, cols, dst + 2 * (h * W + w0), HW,
                                        inverse, scale);
                },
                pf.step_bytes > 0 ? &pf : nullptr);
        }
    }

    /// One plane by its lines: the row pass with lanes across V rows, then the column pass with
    /// lanes across V columns, each on as many line groups at once as the blocks hold.
    static void run_lines(const pass_plan<T>& row, const pass_plan<T>& col, index_t H, index_t W,
                          const T* src, T* dst, bool inverse, T scale, T* ws) {
        constexpr index_t V = O::V, PS = O::PS;
        const blocking bl = blocking::make(row, col, H, W);
        T* R1 = ws + bl.r1 * PS;
        T* R2 = ws + bl.r2 * PS;
        T* S = ws + bl.scratch * PS;
        // rows: groups of V rows as packs (a row is a 1 x W "plane"), up to bl.g groups at once;
        // the inverse's part swap on the way in, kept through the intermediate result
        const index_t row_groups = (H + V - 1) / V;
        for (index_t g0 = 0; g0 < row_groups; g0 += bl.g) {
            const index_t ng = std::min(bl.g, row_groups - g0);
            for (index_t g = 0; g < ng; ++g) {
                const index_t h0 = (g0 + g) * V;
                gather_complex(src + 2 * h0 * W, std::min(V, H - h0), W, W, R1 + g * W * PS, inverse);
            }
            const T* r = row.run(R1, R2, S, ng, 1);
            for (index_t g = 0; g < ng; ++g) {
                const index_t h0 = (g0 + g) * V;
                scatter_complex(r + g * W * PS, std::min(V, H - h0), W, dst + 2 * h0 * W, W, false, T(1));
            }
        }
        // columns: groups of V adjacent columns side by side (pack h * n + j: row h of group j)
        T* C1 = ws + bl.c1 * PS;
        T* C2 = ws + bl.c2 * PS;
        const index_t col_groups = (W + V - 1) / V;
        for (index_t j0 = 0; j0 < col_groups; j0 += bl.wb) {
            const index_t nj = std::min(bl.wb, col_groups - j0);
            for (index_t h = 0; h < H; ++h)
                for (index_t j = 0; j < nj; ++j) {
                    const index_t w0 = (j0 + j) * V;
                    deinterleave(dst + 2 * (h * W + w0), std::min(V, W - w0), C1 + (h * nj + j) * PS);
                }
            const T* r = col.run(C1, C2, S, 1, nj);
            for (index_t h = 0; h < H; ++h)
                for (index_t j = 0; j < nj; ++j) {
                    const index_t w0 = (j0 + j) * V;
                    interleave(r + (h * nj + j) * PS, std::min(V, W - w0), dst + 2 * (h * W + w0), inverse,
                               scale);
                }
        }
    }

    static void run_real_in(const pass_plan<T>& row, const pass_plan<T>& col, index_t H, index_t W,
                            view<const T, 3> in, T* out, T* ws) {
        const index_t HW = H * W, count = in.extent(0);
        const index_t s0 = in.stride(0), s1 = in.stride(1), s2 = in.stride(2);
        for (index_t c0 = 0; c0 < count; c0 += O::V) {
            const index_t nb = std::min(O::V, count - c0);
            T* dst = out + 2 * c0 * HW;
            run_chunk(
                row, col, H, W, ws,
                [&](T* d, index_t h0, index_t rows) {
                    for (index_t h = h0; h < h0 + rows; ++h)
                        for (index_t w = 0; w < W; ++w) {
                            T* pk = d + ((h - h0) * W + w) * O::PS;
                            const T* s = in.data_handle() + c0 * s0 + h * s1 + w * s2;
                            for (index_t p = 0; p < O::V; ++p) {
                                pk[p] = p < nb ? s[p * s0] : T(0);
                                pk[O::V + p] = T(0);
                            }
                        }
                },
                [&](const T* r, index_t w0, index_t cols) {
                    if (cols == W) return scatter_complex(r, nb, HW, dst, HW, false, T(1));
                    for (index_t h = 0; h < H; ++h)
                        scatter_complex(r + h * cols * O::PS, nb, cols, dst + 2 * (h * W + w0), HW,
                                        false, T(1));
                });
        }
    }

    static void run_real_out(const pass_plan<T>& row, const pass_plan<T>& col, index_t H,
                             index_t W, const T* in, view<T, 3> out, T* ws) {
        const index_t HW = H * W, count = out.extent(0);
        const index_t s0 = out.stride(0), s1 = out.stride(1), s2 = out.stride(2);
        const T scale = static_cast<T>(1.0 / static_cast<double>(HW));
        for (index_t c0 = 0; c0 < count; c0 += O::V) {
            const index_t nb = std::min(O::V, count - c0);
            const T* src = in + 2 * c0 * HW;
            run_chunk(
                row, col, H, W, ws,
                [&](T* d, index_t h0, index_t rows) {
                    gather_complex(src + 2 * h0 * W, nb, HW, rows * W, d, true);
                },
                [&](const T* r, index_t w0, index_t cols) {
                    // real part of swap(result) is the imaginary lane
                    for (index_t h = 0; h < H; ++h)
                        for (index_t w = 0; w < cols; ++w) {
                            const T* pk = r + (h * cols + w) * O::PS + O::V;
                            T* d = out.data_handle() + c0 * s0 + h * s1 + (w0 + w) * s2;
                            for (index_t p = 0; p < nb; ++p) d[p * s0] = pk[p] * scale;
                        }
                });
        }
    }
};

} // namespace patchbay::kernels::fft_detail
