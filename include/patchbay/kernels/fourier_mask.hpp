// patchbay: exact direct paths for centred-box Fourier masks (FreeU's 2x2 box, FreSca's
// cutoff box), without an FFT.
//
// ComfyUI filters a plane x with fftshift(fft2(x)) * mask, ifftshift, ifft2, real part. With a
// mask that is one value outside a centred box and another inside,
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
// Bases are built in double and cached per thread; scratch is per thread and only grows.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <memory>
#include <numbers>
#include <type_traits>
#include <vector>

#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"

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

namespace fourier_detail {

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
    static V fma(const V& a, const V& b, const V& c) noexcept {
        if constexpr (simd) return xsimd::fma(a, b, c);
        else return std::fma(a, b, c);
    }
};

template <class T>
constexpr index_t pad(index_t n) noexcept {
    constexpr index_t L = vec<T>::L;
    return (n + L - 1) / L * L;
}

/// Calls f.template operator()<N>() with N = n (1 <= n <= 8).
template <class F>
void with_count(index_t n, F&& f) {
    switch (n) {
    case 1: f.template operator()<1>(); break;
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    case 4: f.template operator()<4>(); break;
    case 5: f.template operator()<5>(); break;
    case 6: f.template operator()<6>(); break;
    case 7: f.template operator()<7>(); break;
    default: f.template operator()<8>(); break;
    }
}

/// out[r, :] = sum_w src[r, w] * U[w, :] for r < rows; U is len x kp (kp a multiple of the
/// SIMD width), out rows hold kp values. Several rows at once when kp is short, so the
/// multiply-add chains are independent.
template <class T>
void rows_times_basis(const T* src, index_t src_stride, index_t rows, index_t len, const T* U,
                      index_t kp, T* out, index_t out_stride) {
    using O = vec<T>;
    const index_t nvec = kp / O::L;
    for (index_t j0 = 0; j0 < nvec; j0 += 8) {
        const index_t nv = std::min<index_t>(8, nvec - j0);
        with_count(nv, [&]<int NV>() {
            constexpr int RB = NV <= 2 ? 4 : (NV <= 4 ? 2 : 1);
            index_t r = 0;
            for (; r + RB <= rows; r += RB) {
                typename O::V acc[RB][NV];
                for (int a = 0; a < RB; ++a)
                    for (int j = 0; j < NV; ++j) acc[a][j] = O::zero();
                for (index_t w = 0; w < len; ++w) {
                    const T* u = U + w * kp + j0 * O::L;
                    typename O::V uv[NV];
                    for (int j = 0; j < NV; ++j) uv[j] = O::load(u + j * O::L);
                    for (int a = 0; a < RB; ++a) {
                        const auto b = O::bcast(src[(r + a) * src_stride + w]);
                        for (int j = 0; j < NV; ++j) acc[a][j] = O::fma(b, uv[j], acc[a][j]);
                    }
                }
                for (int a = 0; a < RB; ++a)
                    for (int j = 0; j < NV; ++j)
                        O::store(out + (r + a) * out_stride + (j0 + j) * O::L, acc[a][j]);
            }
            for (; r < rows; ++r) {
                typename O::V acc[NV];
                for (int j = 0; j < NV; ++j) acc[j] = O::zero();
                for (index_t w = 0; w < len; ++w) {
                    const auto b = O::bcast(src[r * src_stride + w]);
                    const T* u = U + w * kp + j0 * O::L;
                    for (int j = 0; j < NV; ++j) acc[j] = O::fma(b, O::load(u + j * O::L), acc[j]);
                }
                for (int j = 0; j < NV; ++j) O::store(out + r * out_stride + (j0 + j) * O::L, acc[j]);
            }
        });
    }
}

/// out[k, :] = sum_h coef[h * coef_stride + k] * src[h, :] for k < K; rows of src and out hold
/// lenp values (a multiple of the SIMD width).
template <class T>
void transpose_times(const T* coef, index_t coef_stride, index_t K, const T* src,
                     index_t src_stride, index_t rows, index_t lenp, T* out, index_t out_stride) {
    using O = vec<T>;
    const index_t nvec = lenp / O::L;
    constexpr int KB = 4, CV = 2;
    index_t k0 = 0;
    for (; k0 + KB <= K; k0 += KB) {
        index_t c = 0;
        for (; c + CV <= nvec; c += CV) {
            typename O::V acc[KB][CV];
            for (int a = 0; a < KB; ++a)
                for (int j = 0; j < CV; ++j) acc[a][j] = O::zero();
            for (index_t h = 0; h < rows; ++h) {
                typename O::V s[CV];
                for (int j = 0; j < CV; ++j) s[j] = O::load(src + h * src_stride + (c + j) * O::L);
                for (int a = 0; a < KB; ++a) {
                    const auto b = O::bcast(coef[h * coef_stride + k0 + a]);
                    for (int j = 0; j < CV; ++j) acc[a][j] = O::fma(b, s[j], acc[a][j]);
                }
            }
            for (int a = 0; a < KB; ++a)
                for (int j = 0; j < CV; ++j) O::store(out + (k0 + a) * out_stride + (c + j) * O::L, acc[a][j]);
        }
        for (; c < nvec; ++c) {
            typename O::V acc[KB];
            for (int a = 0; a < KB; ++a) acc[a] = O::zero();
            for (index_t h = 0; h < rows; ++h) {
                const auto s = O::load(src + h * src_stride + c * O::L);
                for (int a = 0; a < KB; ++a)
                    acc[a] = O::fma(O::bcast(coef[h * coef_stride + k0 + a]), s, acc[a]);
            }
            for (int a = 0; a < KB; ++a) O::store(out + (k0 + a) * out_stride + c * O::L, acc[a]);
        }
    }
    for (; k0 < K; ++k0)
        for (index_t c = 0; c < nvec; ++c) {
            typename O::V acc = O::zero();
            for (index_t h = 0; h < rows; ++h)
                acc = O::fma(O::bcast(coef[h * coef_stride + k0]),
                             O::load(src + h * src_stride + c * O::L), acc);
            O::store(out + k0 * out_stride + c * O::L, acc);
        }
}

/// out[:] (+)= sum_k a[k] * V[k, :] over lenp values (a multiple of the SIMD width).
template <class T>
void combine_rows(const T* a, index_t K, const T* V, index_t v_stride, index_t lenp, T* out,
                  bool accumulate) {
    using O = vec<T>;
    const index_t nvec = lenp / O::L;
    for (index_t j0 = 0; j0 < nvec; j0 += 8) {
        const index_t nv = std::min<index_t>(8, nvec - j0);
        with_count(nv, [&]<int NV>() {
            typename O::V acc[NV];
            for (int j = 0; j < NV; ++j)
                acc[j] = accumulate ? O::load(out + (j0 + j) * O::L) : O::zero();
            for (index_t k = 0; k < K; ++k) {
                const auto b = O::bcast(a[k]);
                const T* v = V + k * v_stride + j0 * O::L;
                for (int j = 0; j < NV; ++j) acc[j] = O::fma(b, O::load(v + j * O::L), acc[j]);
            }
            for (int j = 0; j < NV; ++j) O::store(out + (j0 + j) * O::L, acc[j]);
        });
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

/// One axis: Re P = alpha I + U diag(d) U^T, Im P = U J U^T.
template <class T>
struct axis_basis {
    box_range box;
    bool complement = false; // alpha
    index_t n = 0, K = 0, Kp = 0, np = 0;
    std::vector<T> U;  // n x Kp, zero padded
    std::vector<T> UT; // K x np, zero padded
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

/// Per-thread cache of axis bases (a handful of sizes per model run).
template <class T>
std::shared_ptr<const axis_basis<T>> cached_axis(const box_range& box, bool complement) {
    thread_local std::vector<std::shared_ptr<const axis_basis<T>>> cache;
    for (const auto& c : cache)
        if (c->box == box && c->complement == complement) return c;
    auto b = build_axis<T>(box, complement);
    if (cache.size() >= 32) cache.erase(cache.begin());
    cache.push_back(b);
    return b;
}

} // namespace fourier_detail

/// Per-thread scratch of the direct path; grows to the largest plane seen, then is reused.
template <class T>
struct box_workspace {
    std::vector<T> plane, Y, X, Z, M, A, B, row;
    static box_workspace& local() {
        thread_local box_workspace ws;
        return ws;
    }
};

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
                if (!ac) c = 2 * hw * kc + 2 * double(H_) * kr * kc;
                else if (!ar) c = 2 * hw * kr + 2 * double(W_) * kr * kc;
                else c = 2 * hw * (kr + kc) + hw + 2 * double(H_) * kr * kc;
                if (best < 0 || c < best) {
                    best = c;
                    ar_ = ar;
                    ac_ = ac;
                }
            }
        cost_ = best;
        r_ = cached_axis<T>(rows, ar_ != 0);
        c_ = cached_axis<T>(cols, ac_ != 0);
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

    /// x: H rows of padded_cols() values (entries past W must be 0). Calls sink(h, Lrow) for
    /// every row, Lrow holding W values of L(x) (padded_cols() readable).
    template <class Sink>
    void apply(const T* x, box_workspace<T>& ws, Sink&& sink) const {
        using namespace fourier_detail;
        const index_t H = H_, Wp = Wp_;
        ws.row.resize(static_cast<std::size_t>(Wp));
        T* row = ws.row.data();
        if (zero_) {
            std::fill(row, row + Wp, T(0));
            for (index_t h = 0; h < H; ++h) sink(h, static_cast<const T*>(row));
            return;
        }
        const auto& R = *r_;
        const auto& C = *c_;
        const index_t Kr = R.K, Kc = C.K, Kcp = C.Kp;
        const bool use_A = !ac_ || ar_; // H x Kc term (A U_c^T)
        const bool use_B = ac_;         // Kr x W term (U_r B)
        ws.Z.assign(static_cast<std::size_t>(std::max<index_t>(Kr * Kcp, 1)), T(0));
        T* Z = ws.Z.data();
        if (use_A) {
            ws.Y.resize(static_cast<std::size_t>(std::max<index_t>(H * Kcp, 1)));
            ws.A.resize(static_cast<std::size_t>(std::max<index_t>(H * Kcp, 1)));
        }
        if (use_B) {
            ws.X.resize(static_cast<std::size_t>(std::max<index_t>(Kr * Wp, 1)));
            ws.B.resize(static_cast<std::size_t>(std::max<index_t>(Kr * Wp, 1)));
        }
        T* Y = ws.Y.data();
        T* A = ws.A.data();
        T* X = ws.X.data();
        T* B = ws.B.data();
        // Z = U_r^T x U_c
        if (Kc > 0 && use_A) {
            rows_times_basis(x, Wp, H, W_, C.U.data(), Kcp, Y, Kcp);
            if (Kr > 0) transpose_times(R.U.data(), R.Kp, Kr, Y, Kcp, H, Kcp, Z, Kcp);
        }
        if (use_B && Kr > 0) {
            transpose_times(R.U.data(), R.Kp, Kr, x, Wp, H, Wp, X, Wp);
            if (Kc > 0 && !use_A) rows_times_basis(X, Wp, Kr, W_, C.U.data(), Kcp, Z, Kcp);
        }
        // M = D_r Z D_c - J_r Z J_c^T (in place of Z; J terms read the original Z)
        ws.M.assign(ws.Z.begin(), ws.Z.end());
        T* M = ws.M.data();
        for (index_t i = 0; i < Kr; ++i)
            for (index_t j = 0; j < Kc; ++j) M[i * Kcp + j] = R.d[static_cast<std::size_t>(i)] * Z[i * Kcp + j] * C.d[static_cast<std::size_t>(j)];
        for (const auto& jr : R.J)
            for (const auto& jc : C.J) M[jr.row * Kcp + jc.row] -= jr.v * Z[jr.col * Kcp + jc.col] * jc.v;
        if (use_A && Kc > 0) {
            // A[h, :] = alpha_r Y[h, :] D_c + sum_kr U_r[h, kr] M[kr, :]
            for (index_t h = 0; h < H; ++h) {
                T* a = A + h * Kcp;
                if (ar_) {
                    for (index_t j = 0; j < Kcp; ++j) a[j] = j < Kc ? Y[h * Kcp + j] * C.d[static_cast<std::size_t>(j)] : T(0);
                    if (Kr > 0) combine_rows(R.U.data() + h * R.Kp, Kr, M, Kcp, Kcp, a, true);
                } else {
                    combine_rows(R.U.data() + h * R.Kp, Kr, M, Kcp, Kcp, a, false);
                }
            }
        }
        if (use_B && Kr > 0) {
            // B[kr, :] = D_r X[kr, :] (+ M[kr, :] U_c^T when there is no A term)
            for (index_t k = 0; k < Kr; ++k) {
                T* b = B + k * Wp;
                const T dk = R.d[static_cast<std::size_t>(k)];
                for (index_t w = 0; w < Wp; ++w) b[w] = dk * X[k * Wp + w];
                if (!use_A && Kc > 0) combine_rows(M + k * Kcp, Kc, C.UT.data(), C.np, Wp, b, true);
            }
        }
        const bool plus_x = ar_ && ac_;
        for (index_t h = 0; h < H; ++h) {
            if (plus_x) std::copy(x + h * Wp, x + (h + 1) * Wp, row);
            else std::fill(row, row + Wp, T(0));
            if (use_A && Kc > 0) combine_rows(A + h * Kcp, Kc, C.UT.data(), C.np, Wp, row, true);
            if (use_B && Kr > 0) combine_rows(R.U.data() + h * R.Kp, Kr, B, Wp, Wp, row, true);
            sink(h, static_cast<const T*>(row));
        }
    }

private:
    index_t H_ = 0, W_ = 0, Wp_ = 0;
    bool zero_ = true;
    int ar_ = 0, ac_ = 0;
    double cost_ = 0;
    std::shared_ptr<const fourier_detail::axis_basis<T>> r_, c_;
};

/// Per-thread cache of plans keyed by the two boxes.
template <class T>
std::shared_ptr<const box_projector<T>> cached_box_projector(const box_range& rows, const box_range& cols) {
    struct entry {
        box_range r, c;
        std::shared_ptr<const box_projector<T>> p;
    };
    thread_local std::vector<entry> cache;
    for (const auto& e : cache)
        if (e.r == rows && e.c == cols) return e.p;
    if (cache.size() >= 32) cache.erase(cache.begin());
    cache.push_back({rows, cols, std::make_shared<const box_projector<T>>(rows, cols)});
    return cache.back().p;
}

} // namespace patchbay::kernels
