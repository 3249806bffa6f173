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
#include <memory>
#include <numbers>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "patchbay/core/config.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::kernels::fft_detail {

template <class T>
struct ops {
    static constexpr bool vectorised = simd::enabled;
    using vec = std::conditional_t<vectorised, simd::batch<T>, T>;
    static constexpr index_t V = vectorised ? static_cast<index_t>(simd::batch<T>::size) : 1;
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
    // a*b + c and a*b - c and c - a*b, fused where the hardware can.
    static PATCHBAY_ALWAYS_INLINE vec fmadd(const vec& a, const vec& b, const vec& c) noexcept {
        if constexpr (vectorised) return xsimd::fma(a, b, c);
        else return a * b + c;
    }
    static PATCHBAY_ALWAYS_INLINE vec fmsub(const vec& a, const vec& b, const vec& c) noexcept {
        if constexpr (vectorised) return xsimd::fms(a, b, c);
        else return a * b - c;
    }
    static PATCHBAY_ALWAYS_INLINE vec fnmadd(const vec& a, const vec& b, const vec& c) noexcept {
        if constexpr (vectorised) return xsimd::fnma(a, b, c);
        else return c - a * b;
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

struct stage {
    int radix;
    index_t m;      // sub-length / radix
    index_t s;      // stride in sequence elements (product of earlier radices)
    std::size_t tw; // offset of this stage's twiddles (complex) in the table
};

// One Stockham stage over packs: for each pp < m and each of the L = s*inner contiguous packs,
// a_r = x[(pp + m r) L + k], y[(P pp + j) L + k] = DFT_P(a)_j * w^(pp j).
template <int P, class T>
void run_stage(const T* PATCHBAY_RESTRICT x, T* PATCHBAY_RESTRICT y, index_t outer, index_t seq,
               index_t m, index_t L, const T* tw) noexcept {
    using O = ops<T>;
    constexpr index_t PS = O::PS, V = O::V;
    const index_t rstride = m * L * PS;
    for (index_t pp = 0; pp < m; ++pp) {
        cpx<T> w[P];
        const bool twiddle = pp != 0;
        if (twiddle)
            for (int j = 1; j < P; ++j) {
                const T* t = tw + 2 * (pp * (P - 1) + (j - 1));
                w[j] = {O::bcast(t[0]), O::bcast(t[1])};
            }
        for (index_t o = 0; o < outer; ++o) {
            const T* xb = x + (o * seq + pp * L) * PS;
            T* yb = y + (o * seq + P * pp * L) * PS;
            if (twiddle) {
                for (index_t k = 0; k < L; ++k) {
                    cpx<T> a[P];
                    for (int r = 0; r < P; ++r) {
                        const T* p = xb + r * rstride + k * PS;
                        a[r] = {O::load(p), O::load(p + V)};
                    }
                    dft<P, T>(a);
                    T* q = yb + k * PS;
                    O::store(q, a[0].re);
                    O::store(q + V, a[0].im);
                    for (int j = 1; j < P; ++j) {
                        const cpx<T> b = cmul(a[j], w[j]);
                        O::store(q + j * L * PS, b.re);
                        O::store(q + j * L * PS + V, b.im);
                    }
                }
            } else {
                for (index_t k = 0; k < L; ++k) {
                    cpx<T> a[P];
                    for (int r = 0; r < P; ++r) {
                        const T* p = xb + r * rstride + k * PS;
                        a[r] = {O::load(p), O::load(p + V)};
                    }
                    dft<P, T>(a);
                    T* q = yb + k * PS;
                    for (int j = 0; j < P; ++j) {
                        O::store(q + j * L * PS, a[j].re);
                        O::store(q + j * L * PS + V, a[j].im);
                    }
                }
            }
        }
    }
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

    /// Transform the (outer, n, inner) packs in `a`; `b` is a buffer of the same size. Returns
    /// the buffer holding the result (a or b).
    T* run(T* a, T* b, T* scratch, index_t outer, index_t inner) const {
        if (sub_) {
            run_bluestein(a, scratch, outer, inner);
            return a;
        }
        T* x = a;
        T* y = b;
        const index_t seq = n_ * inner;
        for (const stage& st : stages_) {
            const index_t L = st.s * inner;
            const T* tw = tw_.data() + 2 * st.tw;
            switch (st.radix) {
            case 2: run_stage<2, T>(x, y, outer, seq, st.m, L, tw); break;
            case 3: run_stage<3, T>(x, y, outer, seq, st.m, L, tw); break;
            case 4: run_stage<4, T>(x, y, outer, seq, st.m, L, tw); break;
            case 5: run_stage<5, T>(x, y, outer, seq, st.m, L, tw); break;
            case 7: run_stage<7, T>(x, y, outer, seq, st.m, L, tw); break;
            default: run_stage<8, T>(x, y, outer, seq, st.m, L, tw); break;
            }
            std::swap(x, y);
        }
        return x;
    }

private:
    void init_bluestein() {
        M_ = smooth_at_least(2 * n_ - 1);
        sub_ = std::make_shared<const pass_plan>(M_);
        // chirp w_t = exp(-i pi t^2 / n); t^2 reduced mod 2n in integers keeps the angle exact.
        std::vector<std::complex<double>> w(static_cast<std::size_t>(n_));
        for (index_t t = 0; t < n_; ++t) {
            const index_t q = static_cast<index_t>((static_cast<unsigned long long>(t) * t) %
                                                   static_cast<unsigned long long>(2 * n_));
            const double ang = -std::numbers::pi * static_cast<double>(q) / static_cast<double>(n_);
            w[static_cast<std::size_t>(t)] = {std::cos(ang), std::sin(ang)};
            chirp_.push_back(static_cast<T>(std::cos(ang)));
            chirp_.push_back(static_cast<T>(std::sin(ang)));
        }
        // kernel = DFT_M(b) / M with b_t = conj(w_|t|) for |t| < n (cyclic), computed in double
        // by a direct O(M n) sum so its rounding does not add to the float error.
        std::vector<std::complex<double>> b(static_cast<std::size_t>(M_));
        for (index_t t = 0; t < n_; ++t) {
            b[static_cast<std::size_t>(t)] = std::conj(w[static_cast<std::size_t>(t)]);
            if (t) b[static_cast<std::size_t>(M_ - t)] = std::conj(w[static_cast<std::size_t>(t)]);
        }
        for (index_t k = 0; k < M_; ++k) {
            std::complex<double> acc = 0;
            for (index_t t = -(n_ - 1); t < n_; ++t) {
                const index_t tt = t < 0 ? t + M_ : t;
                const index_t q = (((k * tt) % M_) + M_) % M_;
                const double ang = -2.0 * std::numbers::pi * static_cast<double>(q) /
                                   static_cast<double>(M_);
                acc += b[static_cast<std::size_t>(tt)] * std::complex<double>(std::cos(ang), std::sin(ang));
            }
            acc /= static_cast<double>(M_);
            kern_.push_back(static_cast<T>(acc.real()));
            kern_.push_back(static_cast<T>(acc.imag()));
        }
    }

    void run_bluestein(T* a, T* scratch, index_t outer, index_t inner) const {
        constexpr index_t PS = O::PS, V = O::V;
        using vec = typename O::vec;
        T* u = scratch;
        T* v = scratch + outer * M_ * inner * PS;
        // u = x * chirp, zero-padded to M
        for (index_t o = 0; o < outer; ++o)
            for (index_t e = 0; e < M_; ++e) {
                T* dst = u + (o * M_ + e) * inner * PS;
                if (e < n_) {
                    const cpx<T> w{O::bcast(chirp_[2 * e]), O::bcast(chirp_[2 * e + 1])};
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
        T* r = sub_->run(u, v, nullptr, outer, inner);
        T* other = r == u ? v : u;
        // r = swap(r * K): the inverse DFT of the product as a forward DFT of swapped parts
        for (index_t o = 0; o < outer; ++o)
            for (index_t e = 0; e < M_; ++e) {
                const cpx<T> k{O::bcast(kern_[2 * e]), O::bcast(kern_[2 * e + 1])};
                T* p = r + (o * M_ + e) * inner * PS;
                for (index_t i = 0; i < inner; ++i) {
                    const cpx<T> z = cmul(cpx<T>{O::load(p + i * PS), O::load(p + i * PS + V)}, k);
                    O::store(p + i * PS, z.im);
                    O::store(p + i * PS + V, z.re);
                }
            }
        T* r2 = sub_->run(r, other, nullptr, outer, inner);
        // x = swap(r2) * chirp
        for (index_t o = 0; o < outer; ++o)
            for (index_t e = 0; e < n_; ++e) {
                const cpx<T> w{O::bcast(chirp_[2 * e]), O::bcast(chirp_[2 * e + 1])};
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

/// True when the AVX transposes match the pack width of T.
template <class T>
constexpr bool avx_packs() noexcept {
#if defined(__AVX__)
    if constexpr (ops<T>::vectorised) {
        if constexpr (std::is_same_v<T, float>) return ops<T>::V == 8;
        else return ops<T>::V == 4;
    }
#endif
    return false;
}

/// Interleaved complex planes src[p] (p < nb, plane stride HW complex) -> packs; lanes >= nb
/// are zero. With `swap` the real and imaginary parts trade places.
template <class T>
void gather_complex(const T* src, index_t nb, index_t HW, T* dst, bool swap) noexcept {
    constexpr index_t V = ops<T>::V, PS = ops<T>::PS;
    index_t e0 = 0;
#if defined(__AVX__)
    if constexpr (avx_packs<T>()) {
        if (nb == V) {
            constexpr index_t C = V / 2; // complex per 256-bit register
            const int sw = swap ? 1 : 0;
            for (; e0 + C <= HW; e0 += C) {
                T* d = dst + e0 * PS;
                if constexpr (std::is_same_v<T, float>) {
                    __m256 r[8];
                    for (int p = 0; p < 8; ++p) r[p] = _mm256_loadu_ps(src + (p * HW + e0) * 2);
                    transpose8(r);
                    for (int c = 0; c < 8; ++c) _mm256_store_ps(d + c * 8, r[c ^ sw]);
                } else {
                    __m256d r[4];
                    for (int p = 0; p < 4; ++p) r[p] = _mm256_loadu_pd(src + (p * HW + e0) * 2);
                    transpose4(r);
                    for (int c = 0; c < 4; ++c) _mm256_store_pd(d + c * 4, r[c ^ sw]);
                }
            }
        }
    }
#endif
    const index_t ro = swap ? V : 0, io = swap ? 0 : V;
    for (index_t e = e0; e < HW; ++e) {
        T* d = dst + e * PS;
        for (index_t p = 0; p < V; ++p) {
            if (p < nb) {
                d[ro + p] = src[(p * HW + e) * 2];
                d[io + p] = src[(p * HW + e) * 2 + 1];
            } else {
                d[p] = T(0);
                d[V + p] = T(0);
            }
        }
    }
}

/// Packs -> interleaved complex planes (p < nb), times `scale`, optionally swapping parts.
template <class T>
void scatter_complex(const T* src, index_t nb, index_t HW, T* dst, bool swap, T scale) noexcept {
    constexpr index_t V = ops<T>::V, PS = ops<T>::PS;
    index_t e0 = 0;
#if defined(__AVX__)
    if constexpr (avx_packs<T>()) {
        if (nb == V) {
            constexpr index_t C = V / 2;
            const int sw = swap ? 1 : 0;
            for (; e0 + C <= HW; e0 += C) {
                const T* s = src + e0 * PS;
                if constexpr (std::is_same_v<T, float>) {
                    __m256 r[8];
                    const __m256 k = _mm256_set1_ps(scale);
                    for (int c = 0; c < 8; ++c) r[c ^ sw] = _mm256_mul_ps(_mm256_load_ps(s + c * 8), k);
                    transpose8(r);
                    for (int p = 0; p < 8; ++p) _mm256_storeu_ps(dst + (p * HW + e0) * 2, r[p]);
                } else {
                    __m256d r[4];
                    const __m256d k = _mm256_set1_pd(scale);
                    for (int c = 0; c < 4; ++c) r[c ^ sw] = _mm256_mul_pd(_mm256_load_pd(s + c * 4), k);
                    transpose4(r);
                    for (int p = 0; p < 4; ++p) _mm256_storeu_pd(dst + (p * HW + e0) * 2, r[p]);
                }
            }
        }
    }
#endif
    const index_t ro = swap ? V : 0, io = swap ? 0 : V;
    for (index_t p = 0; p < nb; ++p)
        for (index_t e = e0; e < HW; ++e) {
            const T* s = src + e * PS;
            dst[(p * HW + e) * 2] = s[ro + p] * scale;
            dst[(p * HW + e) * 2 + 1] = s[io + p] * scale;
        }
}

template <class T>
struct engine {
    using O = ops<T>;

    static std::size_t workspace_elems(const pass_plan<T>& row, const pass_plan<T>& col, index_t H,
                                       index_t W) noexcept {
        const index_t packs =
            2 * H * W + std::max(row.scratch_packs(H, 1), col.scratch_packs(1, W));
        return static_cast<std::size_t>(packs * O::PS);
    }

    /// Both passes over the chunk in `a` (b: second buffer); returns the buffer with the result.
    static T* transform(const pass_plan<T>& row, const pass_plan<T>& col, index_t H, index_t W,
                        T* a, T* b, T* scratch) {
        T* r = row.run(a, b, scratch, H, 1);
        T* other = r == a ? b : a;
        return col.run(r, other, scratch, 1, W);
    }

    static void run_complex(const pass_plan<T>& row, const pass_plan<T>& col, index_t H,
                            index_t W, const T* in, T* out, index_t count, bool inverse, T* ws) {
        const index_t HW = H * W;
        T* a = ws;
        T* b = ws + HW * O::PS;
        T* scratch = ws + 2 * HW * O::PS;
        const T scale = inverse ? static_cast<T>(1.0 / static_cast<double>(HW)) : T(1);
        for (index_t c0 = 0; c0 < count; c0 += O::V) {
            const index_t nb = std::min(O::V, count - c0);
            gather_complex(in + 2 * c0 * HW, nb, HW, a, inverse);
            T* r = transform(row, col, H, W, a, b, scratch);
            scatter_complex(r, nb, HW, out + 2 * c0 * HW, inverse, scale);
        }
    }

    static void run_real_in(const pass_plan<T>& row, const pass_plan<T>& col, index_t H, index_t W,
                            view<const T, 3> in, T* out, T* ws) {
        const index_t HW = H * W, count = in.extent(0);
        const index_t s0 = in.stride(0), s1 = in.stride(1), s2 = in.stride(2);
        T* a = ws;
        T* b = ws + HW * O::PS;
        T* scratch = ws + 2 * HW * O::PS;
        for (index_t c0 = 0; c0 < count; c0 += O::V) {
            const index_t nb = std::min(O::V, count - c0);
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w) {
                    T* d = a + (h * W + w) * O::PS;
                    const T* s = in.data_handle() + c0 * s0 + h * s1 + w * s2;
                    for (index_t p = 0; p < O::V; ++p) {
                        d[p] = p < nb ? s[p * s0] : T(0);
                        d[O::V + p] = T(0);
                    }
                }
            T* r = transform(row, col, H, W, a, b, scratch);
            scatter_complex(r, nb, HW, out + 2 * c0 * HW, false, T(1));
        }
    }

    static void run_real_out(const pass_plan<T>& row, const pass_plan<T>& col, index_t H,
                             index_t W, const T* in, view<T, 3> out, T* ws) {
        const index_t HW = H * W, count = out.extent(0);
        const index_t s0 = out.stride(0), s1 = out.stride(1), s2 = out.stride(2);
        T* a = ws;
        T* b = ws + HW * O::PS;
        T* scratch = ws + 2 * HW * O::PS;
        const T scale = static_cast<T>(1.0 / static_cast<double>(HW));
        for (index_t c0 = 0; c0 < count; c0 += O::V) {
            const index_t nb = std::min(O::V, count - c0);
            gather_complex(in + 2 * c0 * HW, nb, HW, a, true);
            T* r = transform(row, col, H, W, a, b, scratch);
            // real part of swap(result) is the imaginary lane
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w) {
                    const T* s = r + (h * W + w) * O::PS + O::V;
                    T* d = out.data_handle() + c0 * s0 + h * s1 + w * s2;
                    for (index_t p = 0; p < nb; ++p) d[p * s0] = s[p] * scale;
                }
        }
    }
};

} // namespace patchbay::kernels::fft_detail
