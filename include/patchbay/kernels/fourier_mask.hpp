// patchbay: centred-box Fourier masks (FreeU's 2x2 box, FreSca's cutoff box).
//
// ComfyUI filters a plane x with fftshift(fft2(x)) * mask, ifftshift, ifft2, real part, the
// mask one value inside a centred box and another outside. centred_box_filter() applies that
// filter to every H x W plane of a tensor (the last two dims), through the 2-D FFT
// (kernels/fft.hpp) or by the exact direct path below, whichever costs fewer operations.
//
// Direct path. With F the filter,
//     y = outside * x + (inside - outside) * L(x),   L(x) = Re(ifft2(box(fft2(x)))).
// The box is a product of one frequency set per axis, so the complex filter is P_r x P_c with
// P = F^-1 diag(1_set) F (an n x n circulant), and for real x
//     L = Re(P_r) x Re(P_c)^T - Im(P_r) x Im(P_c)^T.
// On one axis Re P = alpha I + U diag(d) U^T and Im P = U J U^T, where U holds a few cosine /
// sine columns (a pair per frequency pair +-m, one column for 0 and for n/2) and J one
// antisymmetric 2x2 block per frequency whose mirror is not in the set: the boxes are
// asymmetric (-f .. f-1), which is why the imaginary parts matter. alpha = 1 writes the set as
// "everything but its complement", cheaper when the box covers most of an axis. With
// Z = U_r^T x U_c, M = D_r Z D_c - J_r Z J_c^T:
//     L = alpha_r alpha_c x + alpha_r x U_c D_c U_c^T + alpha_c U_r D_r U_r^T x + U_r M U_c^T,
// about 2 * (columns) multiply-adds per element: 3 columns for FreeU, 2f+1 for FreSca.
// FreeU's box on planes of at least 3 x 3 has a fused two-pass form (freeu_box_filter).
//
// Every output row is computed with SIMD arithmetic only (unit-stride rows in place, strided
// rows and row tails through a padded copy), so a strided tensor gives exactly the bits of a
// contiguous one. Plans come from fourier_plan_cache (kernels/fft.hpp); scratch comes from the
// caller's workspace (keys: fourier_detail::scratch).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <numbers>
#include <type_traits>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/fft.hpp"

namespace patchbay::kernels {

/// The frequencies a centred box keeps on one axis of length n: fftshifted positions
/// [lo, hi), i.e. signed frequencies lo - n/2 .. hi - 1 - n/2 (numpy's fftshift convention).
struct box_range {
    index_t n = 1, lo = 0, hi = 0;
    friend bool operator==(const box_range&, const box_range&) = default;
};

/// FreeU's box on one axis: ComfyUI's slice [n/2 - 1 : n/2 + 1] (threshold 1). For n == 1 the
/// slice [-1:1] still selects position 0.
constexpr box_range freeu_box(index_t n) noexcept {
    const index_t c = n / 2;
    return n == 1 ? box_range{1, 0, 1} : box_range{n, c - 1, c + 1};
}

/// FreSca's box on one axis: [n/2 - f, n/2 + f) with f = min(cutoff, n/2) (empty for n == 1).
constexpr box_range fresca_box(index_t n, index_t cutoff) noexcept {
    const index_t c = n / 2, f = std::min(cutoff, c);
    return box_range{n, c - f, c + f};
}

/// How centred_box_filter computes the filter.
enum class box_filter_method : unsigned char {
    automatic, ///< the cheaper of the two by an operation count
    direct,    ///< the exact partial DFT over the box (this header)
    fft        ///< complex 2-D FFT, mask, inverse FFT, real part (kernels/fft.hpp)
};

namespace fourier_detail {

/// Keys of the scratch buffers in the caller's workspace (after the FFT's own key).
enum scratch : std::size_t {
    key_plane = fft_scratch_key + 1, // the padded input plane
    key_row,                         // one padded row (strided rows and tails)
    key_L, key_X, key_Y, key_Z, key_M, key_A, key_B, // box_projector::apply
    key_coef,                        // freeu_box_filter
    key_spectrum, key_mask           // the FFT path
};

template <class T>
struct vec {
    static constexpr bool simd = simd::enabled;
    using V = std::conditional_t<simd, simd::batch<T>, T>;
    static constexpr index_t L = simd ? static_cast<index_t>(simd::batch<T>::size) : 1;
    static V load(const T* p) noexcept {
        if constexpr (simd) return V::load_unaligned(p);
        else return *p;
    }
    static void store(T* p, const V& v) noexcept {
        if constexpr (simd) v.store_unaligned(p);
        else *p = v;
    }
    static V bcast(T x) noexcept { return V(x); }
    static V zero() noexcept { return V(T(0)); }
    static V fma(const V& a, const V& b, const V& c) noexcept { return fft_detail::fmadd(a, b, c); }
    /// The lanes' sum in double, as four interleaved partial sums (short chains; the order
    /// depends on the lane count). Not xsimd's hadd: its AVX-512 form trips g++ 12's
    /// -Wuninitialized inside avx512fintrin.h (an "undefined" pass-through operand). The four
    /// partial sums are one vector of the compiler's generic vector extension: the same adds
    /// as four scalar chains, in fewer instructions (FreeU's filter on 32x32 planes
    /// is 5 % faster).
    static double sum(const V& v) noexcept {
        if constexpr (!simd) {
            return static_cast<double>(v);
        } else {
            alignas(simd::alignment) T t[L];
            v.store_aligned(t);
            if constexpr (L % 4 == 0) {
                typedef T four __attribute__((vector_size(4 * sizeof(T))));
                typedef double four_d __attribute__((vector_size(4 * sizeof(double))));
                four_d s = {};
                for (index_t i = 0; i < L; i += 4) {
                    four q;
                    std::memcpy(&q, t + i, sizeof q);
                    s += __builtin_convertvector(q, four_d);
                }
                return (s[0] + s[1]) + (s[2] + s[3]);
            } else {
                double s = 0;
                for (index_t i = 0; i < L; ++i) s += static_cast<double>(t[i]);
                return s;
            }
        }
    }
};

template <class T>
constexpr index_t pad(index_t n) noexcept {
    constexpr index_t L = vec<T>::L;
    return (n + L - 1) / L * L;
}

/// Calls f.template operator()<N>() with N = n (1 <= n <= 4).
template <class F>
void with_count(index_t n, F&& f) {
    switch (n) {
    case 1: f.template operator()<1>(); break;
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    default: f.template operator()<4>(); break;
    }
}

/// v, held in a register: g++ at -march=native (AVX-512, znver4 tuning) otherwise folds the
/// B loads of the gemm tile into each of its MR multiply-adds, loading every B vector MR
/// times: load-bound, FreSca's direct path ran 1.3x slower in the AVX-512 build than in the AVX2 one.
template <class V>
PATCHBAY_ALWAYS_INLINE V in_register(V v) noexcept {
#if defined(__GNUC__) && defined(__AVX512F__)
    if constexpr (sizeof(V) == 64) return simd::in_register(v);
#endif
    return v;
}

/// One MR x NR-vector tile of C = A B (C += A B when accumulating).
template <class T, int MR, int NR>
PATCHBAY_ALWAYS_INLINE void gemm_tile(const T* A, index_t lda, const T* B, index_t ldb, T* C,
                                      index_t ldc, index_t K, bool accumulate) {
    using O = vec<T>;
    typename O::V acc[MR][NR];
    simd::unrolled<MR>([&](auto i) PATCHBAY_INLINE_LAMBDA {
        simd::unrolled<NR>([&](auto j) PATCHBAY_INLINE_LAMBDA { acc[i][j] = accumulate ? O::load(C + i * ldc + j * O::L) : O::zero(); });
    });
    for (index_t k = 0; k < K; ++k) {
        typename O::V b[NR];
        simd::unrolled<NR>([&](auto j) PATCHBAY_INLINE_LAMBDA { b[j] = in_register(O::load(B + k * ldb + j * O::L)); });
        simd::unrolled<MR>([&](auto i) PATCHBAY_INLINE_LAMBDA {
            const auto a = O::bcast(A[i * lda + k]);
            simd::unrolled<NR>([&](auto j) PATCHBAY_INLINE_LAMBDA { acc[i][j] = O::fma(a, b[j], acc[i][j]); });
        });
    }
    simd::unrolled<MR>([&](auto i) PATCHBAY_INLINE_LAMBDA {
        simd::unrolled<NR>([&](auto j) PATCHBAY_INLINE_LAMBDA { O::store(C + i * ldc + j * O::L, acc[i][j]); });
    });
}

template <class T, int MR>
void gemm_rows(const T* A, index_t lda, const T* B, index_t ldb, T* C, index_t ldc, index_t K,
               index_t nvec, bool accumulate) {
    using O = vec<T>;
    index_t j = 0;
    for (; j + 3 <= nvec; j += 3) gemm_tile<T, MR, 3>(A, lda, B + j * O::L, ldb, C + j * O::L, ldc, K, accumulate);
    if (nvec - j == 2) gemm_tile<T, MR, 2>(A, lda, B + j * O::L, ldb, C + j * O::L, ldc, K, accumulate);
    else if (nvec - j == 1) gemm_tile<T, MR, 1>(A, lda, B + j * O::L, ldb, C + j * O::L, ldc, K, accumulate);
}

/// C (M x Np) = A (M x K, row stride lda) * B (K x Np, row stride ldb), or C += A B. Np is a
/// multiple of the SIMD width; register tiles of 4 rows x 3 vectors.
template <class T>
void gemm(const T* A, index_t lda, const T* B, index_t ldb, T* C, index_t ldc, index_t M,
          index_t K, index_t Np, bool accumulate) {
    using O = vec<T>;
    const index_t nvec = Np / O::L;
    if (M <= 0 || nvec <= 0) return;
    if (K <= 0) {
        if (!accumulate)
            for (index_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + Np, T(0));
        return;
    }
    index_t i = 0;
    for (; i + 4 <= M; i += 4) gemm_rows<T, 4>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, K, nvec, accumulate);
    switch (M - i) {
    case 3: gemm_rows<T, 3>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, K, nvec, accumulate); break;
    case 2: gemm_rows<T, 2>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, K, nvec, accumulate); break;
    case 1: gemm_rows<T, 1>(A + i * lda, lda, B, ldb, C + i * ldc, ldc, K, nvec, accumulate); break;
    default: break;
    }
}

/// Which residues mod n a box keeps.
inline std::vector<char> residues_of(const box_range& b) {
    std::vector<char> in(static_cast<std::size_t>(b.n), 0);
    for (index_t k = b.lo; k < b.hi; ++k) {
        const index_t f = k - b.n / 2;
        in[static_cast<std::size_t>(((f % b.n) + b.n) % b.n)] = 1;
    }
    return in;
}

/// Number of basis columns a residue set needs.
inline index_t columns_for(const std::vector<char>& in) {
    const index_t n = static_cast<index_t>(in.size());
    index_t K = in[0] ? 1 : 0;
    for (index_t m = 1; 2 * m < n; ++m)
        if (in[static_cast<std::size_t>(m)] || in[static_cast<std::size_t>(n - m)]) K += 2;
    if (n % 2 == 0 && n >= 2 && in[static_cast<std::size_t>(n / 2)]) K += 1;
    return K;
}

/// Cache-line aligned storage for the plans' tables: the gemm streams them with full-width
/// SIMD loads, which must not straddle cache lines (a 64-byte load always would from malloc's
/// 16-byte alignment).
template <class T>
struct aligned_allocator {
    using value_type = T;
    aligned_allocator() = default;
    template <class U>
    aligned_allocator(const aligned_allocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        return static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t{workspace::alignment}));
    }
    void deallocate(T* p, std::size_t) noexcept { ::operator delete[](p, std::align_val_t{workspace::alignment}); }
    template <class U>
    friend bool operator==(const aligned_allocator&, const aligned_allocator<U>&) noexcept { return true; }
};
template <class T>
using aligned_vector = std::vector<T, aligned_allocator<T>>;

/// One axis: Re P = alpha I + U diag(d) U^T, Im P = U J U^T.
template <class T>
struct axis_basis {
    box_range box;
    bool complement = false; // alpha
    index_t n = 0, K = 0, Kp = 0, np = 0;
    aligned_vector<T> U;  // n x Kp, zero padded
    aligned_vector<T> UT; // K x np, zero padded
    std::vector<T> d;  // K
    struct jentry {
        index_t row, col;
        T v;
    };
    std::vector<jentry> J; // J[row][col] = v
};

template <class T>
std::shared_ptr<const axis_basis<T>> build_axis(const box_range& box, bool complement) {
    auto ab = std::make_shared<axis_basis<T>>();
    const index_t n = box.n;
    std::vector<char> in = residues_of(box);
    if (complement)
        for (auto& c : in) c = !c;
    const double sign = complement ? -1.0 : 1.0;
    ab->box = box;
    ab->complement = complement;
    ab->n = n;
    ab->np = pad<T>(n);
    // Columns as (kind, m): 0 const, 1 cos m, 2 sin m, 3 alternating (-1)^w.
    struct col {
        int kind;
        index_t m;
        double d;
    };
    std::vector<col> cols;
    struct jb {
        std::size_t a, b;
        double v;
    };
    std::vector<jb> js;
    const double inv_n = 1.0 / static_cast<double>(n);
    if (in[0]) cols.push_back({0, 0, sign * inv_n});
    for (index_t m = 1; 2 * m < n; ++m) {
        const bool p = in[static_cast<std::size_t>(m)], q = in[static_cast<std::size_t>(n - m)];
        if (!p && !q) continue;
        const double w = sign * (double(p) + double(q)) * inv_n;
        const std::size_t ci = cols.size();
        cols.push_back({1, m, w});
        cols.push_back({2, m, w});
        // +m alone: Im P = sin(theta (w - w'))/n = (s c' - c s')/n; -m alone: the negative.
        if (p != q) js.push_back(p ? jb{ci + 1, ci, sign * inv_n} : jb{ci, ci + 1, sign * inv_n});
    }
    if (n % 2 == 0 && n >= 2 && in[static_cast<std::size_t>(n / 2)]) cols.push_back({3, n / 2, sign * inv_n});
    ab->K = static_cast<index_t>(cols.size());
    ab->Kp = pad<T>(ab->K);
    ab->U.assign(static_cast<std::size_t>(n * ab->Kp), T(0));
    ab->UT.assign(static_cast<std::size_t>(ab->K * ab->np), T(0));
    for (std::size_t k = 0; k < cols.size(); ++k) {
        ab->d.push_back(static_cast<T>(cols[k].d));
        for (index_t w = 0; w < n; ++w) {
            // reduce m*w mod n first so the angle stays exact for large n
            const double ang = 2.0 * std::numbers::pi * static_cast<double>((cols[k].m * w) % n) * inv_n;
            double v = 1.0;
            if (cols[k].kind == 1) v = std::cos(ang);
            else if (cols[k].kind == 2) v = std::sin(ang);
            else if (cols[k].kind == 3) v = (w % 2) ? -1.0 : 1.0;
            const T tv = static_cast<T>(v);
            ab->U[static_cast<std::size_t>(w * ab->Kp) + k] = tv;
            ab->UT[k * static_cast<std::size_t>(ab->np) + static_cast<std::size_t>(w)] = tv;
        }
    }
    for (const auto& j : js) {
        ab->J.push_back({static_cast<index_t>(j.a), static_cast<index_t>(j.b), static_cast<T>(j.v)});
        ab->J.push_back({static_cast<index_t>(j.b), static_cast<index_t>(j.a), static_cast<T>(-j.v)});
    }
    return ab;
}


} // namespace fourier_detail

/// A plan for L(x) = Re(ifft2(box(fft2(x)))) on H x W planes by the direct path.
template <class T>
class box_projector {
public:
    box_projector() = default;
    box_projector(const box_range& rows, const box_range& cols) : H_(rows.n), W_(cols.n) {
        using namespace fourier_detail;
        const auto rin = residues_of(rows), cin = residues_of(cols);
        const index_t n_rin = columns_for(rin), n_cin = columns_for(cin);
        auto flip = [](std::vector<char> v) {
            for (auto& c : v) c = !c;
            return v;
        };
        const index_t n_rout = columns_for(flip(rin)), n_cout = columns_for(flip(cin));
        zero_ = std::none_of(rin.begin(), rin.end(), [](char c) { return c; }) ||
                std::none_of(cin.begin(), cin.end(), [](char c) { return c; });
        Wp_ = pad<T>(W_);
        if (zero_) return;
        // Pick the cheapest of {direct, complement} per axis (multiply-adds per plane).
        double best = -1;
        for (int ar = 0; ar < 2; ++ar)
            for (int ac = 0; ac < 2; ++ac) {
                const double kr = double(ar ? n_rout : n_rin), kc = double(ac ? n_cout : n_cin);
                const double hw = double(H_) * double(W_);
                double c = 0;
                if (!ar) c = 2 * hw * kr + 2 * double(W_) * kr * kc;
                else if (!ac) c = 2 * hw * kc + 2 * double(H_) * kr * kc;
                else c = 2 * hw * (kr + kc) + hw + 2 * double(H_) * kr * kc;
                if (best < 0 || c < best) {
                    best = c;
                    ar_ = ar;
                    ac_ = ac;
                }
            }
        cost_ = best;
        r_ = build_axis<T>(rows, ar_ != 0);
        c_ = build_axis<T>(cols, ac_ != 0);
    }

    index_t rows() const noexcept { return H_; }
    index_t cols() const noexcept { return W_; }
    /// Row stride of the padded planes apply() reads.
    index_t padded_cols() const noexcept { return Wp_; }
    /// True when the box is empty on some axis (L == 0).
    bool is_zero() const noexcept { return zero_; }
    /// True when the box keeps every frequency (L == x).
    bool is_identity() const noexcept {
        return !zero_ && ar_ && ac_ && r_->K == 0 && c_->K == 0;
    }
    /// Estimated multiply-adds per plane.
    double cost() const noexcept { return cost_; }

    /// x: H rows of padded_cols() values, row stride ldx (entries past W must be 0). Calls
    /// sink(h, Lrow) for every row, Lrow holding W values of L(x) (padded_cols() readable).
    /// Reads x before the first sink call, so the sink may overwrite x's memory. Scratch
    /// comes from `ws` (keys key_L .. key_B).
    template <class Sink>
    void apply(const T* x, index_t ldx, workspace& ws, Sink&& sink) const {
        using namespace fourier_detail;
        const index_t H = H_, Wp = Wp_;
        auto grab = [&ws](scratch key, index_t n) {
            return ws.buffer<T>(key, static_cast<std::size_t>(std::max<index_t>(n, 1))).data();
        };
        T* L = grab(key_L, H * Wp);
        if (zero_) {
            std::fill(L, L + H * Wp, T(0));
        } else {
            const auto& R = *r_;
            const auto& C = *c_;
            const index_t Kr = R.K, Kc = C.K, Kcp = C.Kp, Krp = R.Kp;
            T* Z = grab(key_Z, Kr * Kcp);
            T* M = grab(key_M, Kr * Kcp);
            // M = D_r Z D_c - J_r Z J_c^T
            auto make_m = [&] {
                for (index_t i = 0; i < Kr; ++i)
                    for (index_t j = 0; j < Kcp; ++j)
                        M[i * Kcp + j] = j < Kc ? R.d[static_cast<std::size_t>(i)] * Z[i * Kcp + j] * C.d[static_cast<std::size_t>(j)] : T(0);
                for (const auto& jr : R.J)
                    for (const auto& jc : C.J) M[jr.row * Kcp + jc.row] -= jr.v * Z[jr.col * Kcp + jc.col] * jc.v;
            };
            if (!ar_) {
                // rows first: X = U_r^T x, Z = X U_c, B = M U_c^T (+ D_r X), L = U_r B
                T* X = grab(key_X, Kr * Wp);
                T* B = grab(key_B, Kr * Wp);
                gemm(R.UT.data(), R.np, x, ldx, X, Wp, Kr, H, Wp, false);
                gemm(X, Wp, C.U.data(), Kcp, Z, Kcp, Kr, W_, Kcp, false);
                make_m();
                gemm(M, Kcp, C.UT.data(), C.np, B, Wp, Kr, Kc, Wp, false);
                if (ac_)
                    for (index_t k = 0; k < Kr; ++k) {
                        const T dk = R.d[static_cast<std::size_t>(k)];
                        for (index_t w = 0; w < Wp; ++w) B[k * Wp + w] += dk * X[k * Wp + w];
                    }
                gemm(R.U.data(), Krp, B, Wp, L, Wp, H, Kr, Wp, false);
            } else {
                // columns first: Y = x U_c, Z = U_r^T Y, A = Y D_c + U_r M, L = (x) + A U_c^T (+ U_r D_r X)
                T* Y = grab(key_Y, H * Kcp);
                T* A = grab(key_A, H * Kcp);
                gemm(x, ldx, C.U.data(), Kcp, Y, Kcp, H, W_, Kcp, false);
                gemm(R.UT.data(), R.np, Y, Kcp, Z, Kcp, Kr, H, Kcp, false);
                make_m();
                for (index_t h = 0; h < H; ++h)
                    for (index_t j = 0; j < Kcp; ++j)
                        A[h * Kcp + j] = j < Kc ? Y[h * Kcp + j] * C.d[static_cast<std::size_t>(j)] : T(0);
                gemm(R.U.data(), Krp, M, Kcp, A, Kcp, H, Kr, Kcp, true);
                if (ac_)
                    for (index_t h = 0; h < H; ++h) std::copy(x + h * ldx, x + h * ldx + Wp, L + h * Wp);
                gemm(A, Kcp, C.UT.data(), C.np, L, Wp, H, Kc, Wp, ac_ != 0);
                if (ac_ && Kr > 0) {
                    T* X = grab(key_X, Kr * Wp);
                    gemm(R.UT.data(), R.np, x, ldx, X, Wp, Kr, H, Wp, false);
                    for (index_t k = 0; k < Kr; ++k) {
                        const T dk = R.d[static_cast<std::size_t>(k)];
                        for (index_t w = 0; w < Wp; ++w) X[k * Wp + w] *= dk;
                    }
                    gemm(R.U.data(), Krp, X, Wp, L, Wp, H, Kr, Wp, true);
                }
            }
        }
        for (index_t h = 0; h < H; ++h) sink(h, static_cast<const T*>(L + h * Wp));
    }

private:
    index_t H_ = 0, W_ = 0, Wp_ = 0;
    bool zero_ = true;
    int ar_ = 0, ac_ = 0;
    double cost_ = 0;
    std::shared_ptr<const fourier_detail::axis_basis<T>> r_, c_;
};

/// FreeU's 2x2 box {-1, 0} x {-1, 0} on planes with H, W >= 3, fused into two passes. The
/// first sums the columns with the rows weighted by 1, cos and sin of phi_h = 2 pi h / H and
/// folds them with cos and sin of psi_w = 2 pi w / W into the four coefficients X00, X10, X01,
/// X11 (seven real sums). The filtered plane is then
///   L[h, w] = A(w) + cos(phi_h) B(w) + sin(phi_h) C(w)
/// with A, B, C three rows computed once per plane from those sums, so the second pass costs
/// one add and two multiply-adds per element and two broadcasts per row.
template <class T>
class freeu_box_filter {
public:
    freeu_box_filter(index_t H, index_t W) : H_(H), W_(W), Wp_(fourier_detail::pad<T>(W)) {
        cw_.assign(static_cast<std::size_t>(Wp_), T(0));
        sw_.assign(static_cast<std::size_t>(Wp_), T(0));
        for (index_t w = 0; w < W; ++w) {
            const double a = 2.0 * std::numbers::pi * double(w) / double(W);
            cw_[static_cast<std::size_t>(w)] = static_cast<T>(std::cos(a));
            sw_[static_cast<std::size_t>(w)] = static_cast<T>(std::sin(a));
        }
        for (index_t h = 0; h < H; ++h) {
            const double a = 2.0 * std::numbers::pi * double(h) / double(H);
            ch_.push_back(static_cast<T>(std::cos(a)));
            sh_.push_back(static_cast<T>(std::sin(a)));
        }
    }
    index_t padded_cols() const noexcept { return Wp_; }
    /// cos and sin of phi_h, one per row.
    const T* cos_h() const noexcept { return ch_.data(); }
    const T* sin_h() const noexcept { return sh_.data(); }

    /// abc[0 .. Wp) = scale A, abc[Wp .. 2 Wp) = scale B, abc[2 Wp .. 3 Wp) = scale C; x has
    /// padded_cols() readable columns per row (zeros past W), row stride ldx.
    void coefficients(const T* x, index_t ldx, double scale, T* abc) const {
        using O = fourier_detail::vec<T>;
        const index_t nvec = Wp_ / O::L;
        // per lane: sums of x, x cos(phi_h), x sin(phi_h), the first weighted by cos and sin of
        // psi_w, and the X11 combinations of the other two
        typename O::V acc[7];
        for (auto& v : acc) v = O::zero();
        for (index_t j0 = 0; j0 < nvec; j0 += 4) {
            const index_t nv = std::min<index_t>(4, nvec - j0);
            fourier_detail::with_count(nv, [&]<int NV>() {
                typename O::V a0[NV], ac[NV], as[NV];
                simd::unrolled<NV>([&](auto j) PATCHBAY_INLINE_LAMBDA { a0[j] = ac[j] = as[j] = O::zero(); });
                for (index_t h = 0; h < H_; ++h) {
                    const auto c = O::bcast(ch_[static_cast<std::size_t>(h)]);
                    const auto sn = O::bcast(sh_[static_cast<std::size_t>(h)]);
                    const T* xr = x + h * ldx + j0 * O::L;
                    simd::unrolled<NV>([&](auto j) PATCHBAY_INLINE_LAMBDA {
                        // one load feeding three operations (not three folded loads)
                        const auto v = simd::in_register(O::load(xr + j * O::L));
                        a0[j] = a0[j] + v;
                        ac[j] = O::fma(c, v, ac[j]);
                        as[j] = O::fma(sn, v, as[j]);
                    });
                }
                simd::unrolled<NV>([&](auto j) PATCHBAY_INLINE_LAMBDA {
                    const auto cw = O::load(cw_.data() + (j0 + j) * O::L);
                    const auto sw = O::load(sw_.data() + (j0 + j) * O::L);
                    acc[0] = acc[0] + a0[j];
                    acc[1] = acc[1] + ac[j];
                    acc[2] = acc[2] + as[j];
                    acc[3] = O::fma(a0[j], cw, acc[3]);
                    acc[4] = O::fma(a0[j], sw, acc[4]);
                    acc[5] = O::fma(ac[j], cw, acc[5]) - as[j] * sw;
                    acc[6] = O::fma(ac[j], sw, acc[6]) + as[j] * cw;
                });
            });
        }
        double xs[7];
        for (int q = 0; q < 7; ++q) xs[q] = O::sum(acc[q]);
        const double k = scale / (double(H_) * double(W_));
        const auto bc = [k](double v) { return O::bcast(static_cast<T>(k * v)); };
        // L expanded in 1, cos phi_h, sin phi_h; each factor is p + q cos psi_w + r sin psi_w
        const auto a0 = bc(xs[0]), a1 = bc(xs[3]), a2 = bc(xs[4]);
        const auto b0 = bc(xs[1]), b1 = bc(xs[5]), b2 = bc(xs[6]);
        const auto c0 = bc(xs[2]), c1 = bc(xs[6]), c2 = bc(-xs[5]);
        T* A = abc;
        T* B = abc + Wp_;
        T* C = abc + 2 * Wp_;
        for (index_t w = 0; w < Wp_; w += O::L) {
            const auto cw = O::load(cw_.data() + w), sw = O::load(sw_.data() + w);
            O::store(A + w, O::fma(a2, sw, O::fma(a1, cw, a0)));
            O::store(B + w, O::fma(b2, sw, O::fma(b1, cw, b0)));
            O::store(C + w, O::fma(c2, sw, O::fma(c1, cw, c0)));
        }
    }

private:
    index_t H_, W_, Wp_;
    fourier_detail::aligned_vector<T> cw_, sw_;
    std::vector<T> ch_, sh_;
};

/// The plan of the direct path for these two boxes, from the plan cache.
template <class T>
std::shared_ptr<const box_projector<T>> cached_box_projector(const box_range& rows, const box_range& cols) {
    const fourier_plan_cache::key k{std::is_same_v<T, float> ? 2 : 3,
                                    {rows.n, rows.lo, rows.hi, cols.n, cols.lo, cols.hi}};
    return fourier_plan_cache::global().get<box_projector<T>>(
        k, [&] { return std::make_shared<const box_projector<T>>(rows, cols); });
}

/// FreeU's fused filter for H x W planes, from the plan cache.
template <class T>
std::shared_ptr<const freeu_box_filter<T>> cached_freeu_filter(index_t H, index_t W) {
    const fourier_plan_cache::key k{std::is_same_v<T, float> ? 4 : 5, {H, W}};
    return fourier_plan_cache::global().get<freeu_box_filter<T>>(
        k, [&] { return std::make_shared<const freeu_box_filter<T>>(H, W); });
}

namespace fourier_detail {

/// Index offset of plane p (row-major over the leading R - 2 dims) in v.
template <class View>
index_t plane_offset(const View& v, index_t p) noexcept {
    constexpr std::size_t R = View::rank();
    index_t off = 0;
    for (std::size_t r = R - 2; r-- > 0;) {
        off += (p % v.extent(r)) * v.stride(r);
        p /= v.extent(r);
    }
    return off;
}
template <class View>
index_t plane_count(const View& v) noexcept {
    index_t n = 1;
    for (std::size_t r = 0; r + 2 < View::rank(); ++r) n *= v.extent(r);
    return n;
}

/// Writes W outputs out[w * os] = f(w, base lanes at w) with SIMD arithmetic only: unit-stride
/// rows in place, the tail and strided rows through `tmp` (padded_cols readable, zero padded),
/// so every layout gives the same bits. f reads its other operands padded (Wp readable).
/// Without a base (Base false) f gets zeros.
template <bool Base, class T, class F>
PATCHBAY_ALWAYS_INLINE void emit_row(T* out, index_t os, const T* base, index_t bs, index_t W,
                                     index_t Wp, T* tmp, F&& f) {
    using O = vec<T>;
    constexpr index_t L = O::L;
    auto lanes = [](const T* p, index_t w) {
        if constexpr (Base) return O::load(p + w);
        else return (void)p, (void)w, O::zero();
    };
    if (os == 1 && (!Base || bs == 1)) {
        index_t w = 0;
        for (; w + L <= W; w += L) O::store(out + w, f(w, lanes(base, w)));
        if (w == W) return;
        const index_t n = W - w;
        if constexpr (Base)
            for (index_t i = 0; i < L; ++i) tmp[i] = i < n ? base[w + i] : T(0);
        O::store(tmp, f(w, lanes(tmp, 0)));
        std::copy(tmp, tmp + n, out + w);
        return;
    }
    if constexpr (Base)
        for (index_t w = 0; w < Wp; ++w) tmp[w] = w < W ? base[w * bs] : T(0);
    for (index_t w = 0; w < Wp; w += L) O::store(tmp + w, f(w, lanes(tmp, w)));
    for (index_t w = 0; w < W; ++w) out[w * os] = tmp[w];
}

/// What the direct path adds to (inside - outside) L(g): base + outside g (FreSca), g itself
/// (no base and outside 1: FreeU), or outside g (no base).
enum class prefix { with_base, unit, scaled };

/// out = base + outside (x - base) + (inside - outside) L(x - base), the direct path (without
/// a base, x stands for x - base). fast: FreeU's fused filter when the box is its.
template <prefix Pre, class T, std::size_t R>
void box_filter_direct(const box_projector<T>& proj, const freeu_box_filter<T>* fast,
                       view<const T, R> x, view<const T, R> base, view<T, R> out, double inside,
                       double outside, workspace& ws) {
    using O = vec<T>;
    constexpr bool has_base = Pre == prefix::with_base;
    constexpr std::size_t hd = R - 2, wd = R - 1;
    const index_t H = x.extent(hd), W = x.extent(wd), Wp = proj.padded_cols();
    // Planes whose rows are unit-stride whole SIMD vectors are read in place; other layouts
    // (and x - base) go through a padded plane whose columns past W stay zero.
    const bool in_place = !has_base && x.stride(wd) == 1 && Wp == W;
    T* plane = nullptr;
    if (!in_place) {
        plane = ws.buffer<T>(key_plane, static_cast<std::size_t>(H * Wp)).data();
        for (index_t h = 0; h < H; ++h) std::fill(plane + h * Wp + W, plane + (h + 1) * Wp, T(0));
    }
    T* tmp = ws.buffer<T>(key_row, static_cast<std::size_t>(Wp)).data();
    T* abc = fast ? ws.buffer<T>(key_coef, static_cast<std::size_t>(3 * Wp)).data() : nullptr;
    const auto kv = O::bcast(static_cast<T>(inside - outside)), sov = O::bcast(static_cast<T>(outside));
    const index_t xs = x.stride(wd), bs = has_base ? base.stride(wd) : 0, os = out.stride(wd);
    const index_t planes = plane_count(x);
    for (index_t p = 0; p < planes; ++p) {
        const T* xp = x.data_handle() + plane_offset(x, p);
        const T* bp = has_base ? base.data_handle() + plane_offset(base, p) : nullptr;
        T* op = out.data_handle() + plane_offset(out, p);
        const T* g = xp;
        index_t ldg = x.stride(hd);
        if (!in_place) {
            for (index_t h = 0; h < H; ++h) {
                const T* xr = xp + h * x.stride(hd);
                T* gr = plane + h * Wp;
                if constexpr (has_base) {
                    const T* br = bp + h * base.stride(hd);
                    index_t w = 0;
                    if (xs == 1 && bs == 1) // a subtraction rounds alike in SIMD and scalar code
                        for (; w + O::L <= W; w += O::L) O::store(gr + w, O::load(xr + w) - O::load(br + w));
                    for (; w < W; ++w) gr[w] = xr[w * xs] - br[w * bs];
                } else {
                    for (index_t w = 0; w < W; ++w) gr[w] = xr[w * xs];
                }
            }
            g = plane;
            ldg = Wp;
        }
        // the prefix in one fused op (b: the base lanes, zeros without a base); nothing here
        // is left for the compiler to contract
        auto pre = [&](const T* gr, index_t w, const typename O::V& b) {
            if constexpr (Pre == prefix::unit) return (void)b, O::load(gr + w);
            else return O::fma(sov, O::load(gr + w), b);
        };
        auto row_base = [&](index_t h) { return has_base ? bp + h * base.stride(hd) : nullptr; };
        if (fast) { // two fused passes (freeu_box_filter): L = A + cos(phi_h) B + sin(phi_h) C
            fast->coefficients(g, ldg, inside - outside, abc);
            const T* ch = fast->cos_h();
            const T* sh = fast->sin_h();
            const T* A = abc;
            const T* B = abc + Wp;
            const T* C = abc + 2 * Wp;
            auto value = [](const typename O::V& pv, const typename O::V& a, const typename O::V& b,
                            const typename O::V& c, const typename O::V& cv, const typename O::V& sv) {
                return O::fma(sv, c, O::fma(cv, b, pv + a));
            };
            const index_t nvec = Wp / O::L;
            if (os == 1 && Wp == W && (!has_base || bs == 1)) {
                // whole-vector rows written in place, in column chunks of up to 4 vectors (64
                // columns at 16 lanes, 32 at 8): a chunk's A, B, C stay in registers over every
                // row, and so do the pointers and strides (copied into locals: the stores could
                // alias the captures). (At 8 lanes a 64-wide plane took the loop below: 1.6x
                // slower at 640x64x64.)
                for (index_t j0 = 0; j0 < nvec; j0 += 4)
                with_count(std::min<index_t>(4, nvec - j0), [&]<int NV>() {
                    const index_t c0 = j0 * O::L;
                    const T* const g0 = g + c0;
                    const T* const b0 = has_base ? bp + c0 : nullptr;
                    T* const o0 = op + c0;
                    const T* const ch0 = ch;
                    const T* const sh0 = sh;
                    const index_t H0 = H, ldg0 = ldg, bst = has_base ? base.stride(hd) : 0,
                                  ost = out.stride(hd);
                    // the same columns of the next plane, prefetched to L2 row by row: this
                    // pass computes from L1, and the memory would sit idle (FreeU at
                    // 1x640x64x64: 13 % faster with AVX-512, 16 % with AVX2; equal at 32x32)
                    const char* const ahead =
                        in_place && p + 1 < planes
                            ? reinterpret_cast<const char*>(x.data_handle() + plane_offset(x, p + 1) + c0)
                            : nullptr;
                    constexpr index_t chunk_bytes = NV * O::L * static_cast<index_t>(sizeof(T));
                    const index_t ahead_ld = ldg * static_cast<index_t>(sizeof(T));
                    const auto so = sov;
                    typename O::V av[NV], bv[NV], cv[NV];
                    simd::unrolled<NV>([&](auto j) PATCHBAY_INLINE_LAMBDA {
                        av[j] = O::load(A + c0 + j * O::L);
                        bv[j] = O::load(B + c0 + j * O::L);
                        cv[j] = O::load(C + c0 + j * O::L);
                    });
                    for (index_t h = 0; h < H0; ++h) {
                        const auto c = O::bcast(ch0[h]), sn = O::bcast(sh0[h]);
                        const T* gr = g0 + h * ldg0;
                        T* orow = o0 + h * ost;
                        if (ahead)
                            for (index_t b = 0; b < chunk_bytes; b += 64) __builtin_prefetch(ahead + h * ahead_ld + b, 0, 2);
                        simd::unrolled<NV>([&](auto j) PATCHBAY_INLINE_LAMBDA {
                            const index_t w = j * O::L;
                            typename O::V pv;
                            if constexpr (Pre == prefix::unit) pv = O::load(gr + w);
                            else if constexpr (Pre == prefix::scaled) pv = O::fma(so, O::load(gr + w), O::zero());
                            else pv = O::fma(so, O::load(gr + w), O::load(b0 + h * bst + w));
                            O::store(orow + w, value(pv, av[j], bv[j], cv[j], c, sn));
                        });
                    }
                });
                continue;
            }
            for (index_t h = 0; h < H; ++h) {
                const T* gr = g + h * ldg;
                const auto c = O::bcast(ch[h]), sn = O::bcast(sh[h]);
                emit_row<has_base>(op + h * out.stride(hd), os, row_base(h), bs, W, Wp, tmp,
                                   [&](index_t w, const typename O::V& b) {
                                       return value(pre(gr, w, b), O::load(A + w), O::load(B + w),
                                                    O::load(C + w), c, sn);
                                   });
            }
            continue;
        }
        // apply() reads the whole plane before the first row is written, so in place is safe
        proj.apply(g, ldg, ws, [&](index_t h, const T* Lr) {
            const T* gr = g + h * ldg;
            emit_row<has_base>(op + h * out.stride(hd), os, row_base(h), bs, W, Wp, tmp,
                               [&](index_t w, const typename O::V& b) {
                                   return O::fma(kv, O::load(Lr + w), pre(gr, w, b));
                               });
        });
    }
}

/// The same through the complex 2-D FFT, as ComfyUI computes it (planes batched, so the FFT
/// vectorises across them).
template <class T, std::size_t R>
void box_filter_fft(const box_range& rb, const box_range& cb, view<const T, R> x,
                    view<const T, R> base, bool has_base, view<T, R> out, double inside,
                    double outside, workspace& ws) {
    constexpr std::size_t hd = R - 2, wd = R - 1;
    const index_t H = x.extent(hd), W = x.extent(wd), P = H * W;
    constexpr index_t chunk = 16;
    const auto plan = fft_plan<T>(H, W);
    std::complex<T>* spec =
        ws.buffer<std::complex<T>>(key_spectrum, static_cast<std::size_t>(chunk * P)).data();
    T* mask = ws.buffer<T>(key_mask, static_cast<std::size_t>(P)).data();
    const T in_v = static_cast<T>(inside), out_v = static_cast<T>(outside);
    for (index_t h = 0; h < H; ++h) {
        const index_t sh = natural_to_fftshift(h, H);
        const bool hin = sh >= rb.lo && sh < rb.hi;
        for (index_t w = 0; w < W; ++w) {
            const index_t sw = natural_to_fftshift(w, W);
            mask[h * W + w] = (hin && sw >= cb.lo && sw < cb.hi) ? in_v : out_v;
        }
    }
    const index_t total = plane_count(x);
    for (index_t i0 = 0; i0 < total; i0 += chunk) {
        const index_t cnt = std::min(chunk, total - i0);
        for (index_t i = 0; i < cnt; ++i) {
            const T* xp = x.data_handle() + plane_offset(x, i0 + i);
            const T* bp = has_base ? base.data_handle() + plane_offset(base, i0 + i) : nullptr;
            std::complex<T>* s = spec + i * P;
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w) {
                    const T v = xp[h * x.stride(hd) + w * x.stride(wd)];
                    s[h * W + w] = std::complex<T>(
                        has_base ? v - bp[h * base.stride(hd) + w * base.stride(wd)] : v, T(0));
                }
        }
        plan->execute(spec, cnt, fft_direction::forward, ws);
        for (index_t i = 0; i < cnt; ++i)
            for (index_t q = 0; q < P; ++q) spec[i * P + q] *= mask[q];
        plan->execute(spec, cnt, fft_direction::inverse, ws);
        for (index_t i = 0; i < cnt; ++i) {
            T* op = out.data_handle() + plane_offset(out, i0 + i);
            const T* bp = has_base ? base.data_handle() + plane_offset(base, i0 + i) : nullptr;
            const std::complex<T>* s = spec + i * P;
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w) {
                    const T v = s[h * W + w].real();
                    op[h * out.stride(hd) + w * out.stride(wd)] =
                        has_base ? v + bp[h * base.stride(hd) + w * base.stride(wd)] : v;
                }
        }
    }
}

} // namespace fourier_detail

/// out = base + F(x - base) on every H x W plane of x (the last two dims; leading dims index
/// the planes), F(v) = Re(ifft2(ifftshift(fftshift(fft2(v)) * mask))) with mask = `inside` on
/// the centred box rows x cols and `outside` elsewhere. `base` may be an empty view (no data):
/// then out = F(x). out may be exactly x or exactly base; nothing else may overlap. Scratch
/// comes from `ws`. The direct path is exact and the default where it is cheaper; the FFT path
/// is ComfyUI's computation.
template <class T, std::size_t R>
void centred_box_filter(std::type_identity_t<view<const T, R>> x,
                        std::type_identity_t<view<const T, R>> base, view<T, R> out,
                        const box_range& rows, const box_range& cols, double inside,
                        double outside, workspace& ws,
                        box_filter_method method = box_filter_method::automatic) {
    static_assert(R >= 2, "centred_box_filter works on planes (the last two dims)");
    constexpr const char* where = "centred_box_filter";
    const bool has_base = base.data_handle() != nullptr;
    PATCHBAY_REQUIRE(out.extents() == x.extents() && (!has_base || base.extents() == x.extents()),
                     where, "x, base and out must have one shape");
    PATCHBAY_REQUIRE(rows.n == x.extent(R - 2) && cols.n == x.extent(R - 1), where,
                     "the boxes must be sized like the planes");
    if (x.size() == 0) return;
    const index_t H = rows.n, W = cols.n;
    const auto proj = cached_box_projector<T>(rows, cols);
    if (proj->is_zero() || proj->is_identity()) { // the mask is one value: F = s I
        const T s = static_cast<T>(proj->is_zero() ? outside : inside);
        if (has_base)
            transform(out, [s](auto v, auto b) { return b + (v - b) * s; }, x, base);
        else
            transform(out, [s](auto v) { return v * s; }, x);
        return;
    }
    if (method == box_filter_method::automatic) {
        // A complex 2-D FFT pair costs about 5 HW log2(HW) multiply-adds; the direct path's
        // count is exact. The constant leans to the direct path, whose loops run at full SIMD
        // width (measured in bench/patches/pre_cfg/fresca.cpp).
        const double hw = double(H) * double(W);
        const double fft_cost = 2.0 * 5.0 * hw * std::log2(std::max(hw, 2.0));
        method = proj->cost() <= fft_cost ? box_filter_method::direct : box_filter_method::fft;
    }
    if (method == box_filter_method::fft) {
        fourier_detail::box_filter_fft<T, R>(rows, cols, x, base, has_base, out, inside, outside, ws);
        return;
    }
    const bool freeu_shape = rows == freeu_box(H) && cols == freeu_box(W) && H >= 3 && W >= 3;
    const auto fast = freeu_shape ? cached_freeu_filter<T>(H, W) : nullptr;
    using fourier_detail::prefix;
    if (has_base)
        fourier_detail::box_filter_direct<prefix::with_base, T, R>(*proj, fast.get(), x, base, out, inside,
                                                                   outside, ws);
    else if (outside == 1.0)
        fourier_detail::box_filter_direct<prefix::unit, T, R>(*proj, fast.get(), x, base, out, inside,
                                                              outside, ws);
    else
        fourier_detail::box_filter_direct<prefix::scaled, T, R>(*proj, fast.get(), x, base, out, inside,
                                                                outside, ws);
}

} // namespace patchbay::kernels
