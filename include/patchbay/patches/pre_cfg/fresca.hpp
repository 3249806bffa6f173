// patchbay: FreSca (Huang et al., "FreSca: Scaling in Frequency Space Enhances Diffusion
// Models", 2025), matching ComfyUI's "FreSca" node (comfy_extras/nodes_fresca.py), a pre-CFG
// function.
//
// semantics.md section 5: g = cond - uncond; cond' = uncond + F(g) with
//     F(g) = Re(ifft2(ifftshift(fftshift(fft2(g)) * mask))),
// mask = scale_high everywhere and scale_low on the centred box [n/2 - f, n/2 + f) of every
// dim from 2 on, f = min(freq_cutoff, n/2) per dim. The FFT covers the last two dims only; in
// 5-D (N,C,T,H,W) the box is also cut along T, so frames outside it get scale_high at all
// frequencies. Skipped when the sampler dropped the uncond pass (cond_scale 1).
//
// F(g) = scale_high * g + (scale_low - scale_high) * L(g), L the real part of the box
// projection. L is computed either directly (kernels/fourier_mask.hpp: a separable partial
// DFT over the box's rows and columns, or over the complement when the box covers most of an
// axis; exact) or with the 2-D FFT (kernels/fft.hpp), whichever costs fewer operations.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <string>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/fft.hpp"
#include "patchbay/kernels/fourier_mask.hpp"

namespace patchbay {

/// Which implementation of the low-pass FreSca uses.
enum class fresca_path : unsigned char {
    automatic, ///< the cheaper of the two by an operation count
    direct,    ///< partial DFT over the box (kernels/fourier_mask.hpp)
    fft        ///< complex 2-D FFT, mask, inverse FFT, real part (kernels/fft.hpp)
};

namespace fresca_detail {

/// Chosen path for H x W planes with the given boxes.
template <class T>
fresca_path choose(const kernels::box_projector<T>& proj, index_t H, index_t W) {
    if (proj.is_zero() || proj.is_identity()) return fresca_path::direct;
    // A complex 2-D FFT pair costs about 5 HW log2(HW) multiply-adds; the direct path's
    // count is exact. The constant leans to the direct path, whose loops run at full SIMD
    // width (measured in bench/patches/pre_cfg/fresca.cpp).
    const double hw = double(H) * double(W);
    const double fft_cost = 2.0 * 5.0 * hw * std::log2(std::max(hw, 2.0));
    return proj.cost() <= fft_cost ? fresca_path::direct : fresca_path::fft;
}

/// cond = uncond + sh * g + (sl - sh) * L(g) over the planes of one frame set, direct path.
/// Planes are (n, c, t) for t in [t_lo, t_hi); g is formed per plane in scratch.
template <class T, std::size_t R>
void filter_direct(const kernels::box_projector<T>& proj, view<T, R> cond, view<const T, R> uncond,
                   index_t t_lo, index_t t_hi, T sh, T k) {
    using O = kernels::fourier_detail::vec<T>;
    constexpr std::size_t hd = R - 2, wd = R - 1;
    const index_t H = cond.extent(hd), W = cond.extent(wd), Wp = proj.padded_cols();
    auto& ws = kernels::box_workspace<T>::local();
    ws.plane.assign(static_cast<std::size_t>(H * Wp), T(0));
    T* g = ws.plane.data();
    for (index_t n = 0; n < cond.extent(0); ++n)
        for (index_t c = 0; c < cond.extent(1); ++c)
            for (index_t t = t_lo; t < t_hi; ++t) {
                index_t co = n * cond.stride(0) + c * cond.stride(1);
                index_t uo = n * uncond.stride(0) + c * uncond.stride(1);
                if constexpr (R == 5) {
                    co += t * cond.stride(2);
                    uo += t * uncond.stride(2);
                }
                T* cp = cond.data_handle() + co;
                const T* up = uncond.data_handle() + uo;
                const index_t cs = cond.stride(wd), us = uncond.stride(wd);
                for (index_t h = 0; h < H; ++h) {
                    const T* cr = cp + h * cond.stride(hd);
                    const T* ur = up + h * uncond.stride(hd);
                    T* gr = g + h * Wp;
                    for (index_t w = 0; w < W; ++w) gr[w] = cr[w * cs] - ur[w * us];
                }
                proj.apply(g, Wp, ws, [&](index_t h, const T* L) {
                    T* cr = cp + h * cond.stride(hd);
                    const T* ur = up + h * uncond.stride(hd);
                    const T* gr = g + h * Wp;
                    index_t w = 0;
                    if (cs == 1 && us == 1) {
                        const auto shv = O::bcast(sh), kv = O::bcast(k);
                        for (; w + O::L <= W; w += O::L)
                            O::store(cr + w, O::fma(kv, O::load(L + w),
                                                    O::fma(shv, O::load(gr + w), O::load(ur + w))));
                    }
                    for (; w < W; ++w) cr[w * cs] = std::fma(k, L[w], std::fma(sh, gr[w], ur[w * us]));
                });
            }
}

/// The same through the complex 2-D FFT (planes batched, so the FFT vectorises across them).
template <class T, std::size_t R>
void filter_fft(const kernels::box_range& rb, const kernels::box_range& cb, view<T, R> cond,
                view<const T, R> uncond, index_t t_lo, index_t t_hi, T sl, T sh) {
    constexpr std::size_t hd = R - 2, wd = R - 1;
    const index_t H = cond.extent(hd), W = cond.extent(wd), P = H * W;
    constexpr index_t chunk = 16;
    thread_local std::vector<std::complex<T>> spec;
    thread_local std::vector<T> mask;
    spec.resize(static_cast<std::size_t>(chunk * P));
    mask.resize(static_cast<std::size_t>(P));
    for (index_t h = 0; h < H; ++h) {
        const index_t sh_ = kernels::natural_to_fftshift(h, H);
        const bool hin = sh_ >= rb.lo && sh_ < rb.hi;
        for (index_t w = 0; w < W; ++w) {
            const index_t sw = kernels::natural_to_fftshift(w, W);
            mask[static_cast<std::size_t>(h * W + w)] = (hin && sw >= cb.lo && sw < cb.hi) ? sl : sh;
        }
    }
    const index_t frames = t_hi - t_lo, C = cond.extent(1);
    const index_t total = cond.extent(0) * C * frames;
    auto plane_ptrs = [&](index_t i, T*& cp, const T*& up) {
        const index_t t = t_lo + i % frames, c = (i / frames) % C, n = i / (frames * C);
        index_t co = n * cond.stride(0) + c * cond.stride(1), uo = n * uncond.stride(0) + c * uncond.stride(1);
        if constexpr (R == 5) {
            co += t * cond.stride(2);
            uo += t * uncond.stride(2);
        }
        cp = cond.data_handle() + co;
        up = uncond.data_handle() + uo;
    };
    for (index_t i0 = 0; i0 < total; i0 += chunk) {
        const index_t cnt = std::min(chunk, total - i0);
        for (index_t i = 0; i < cnt; ++i) {
            T* cp;
            const T* up;
            plane_ptrs(i0 + i, cp, up);
            std::complex<T>* s = spec.data() + i * P;
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w)
                    s[h * W + w] = std::complex<T>(cp[h * cond.stride(hd) + w * cond.stride(wd)] -
                                                       up[h * uncond.stride(hd) + w * uncond.stride(wd)],
                                                   T(0));
        }
        kernels::fft2(spec.data(), cnt, H, W, kernels::fft_direction::forward);
        for (index_t i = 0; i < cnt; ++i)
            for (index_t p = 0; p < P; ++p) spec[static_cast<std::size_t>(i * P + p)] *= mask[static_cast<std::size_t>(p)];
        kernels::fft2(spec.data(), cnt, H, W, kernels::fft_direction::inverse);
        for (index_t i = 0; i < cnt; ++i) {
            T* cp;
            const T* up;
            plane_ptrs(i0 + i, cp, up);
            const std::complex<T>* s = spec.data() + i * P;
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w)
                    cp[h * cond.stride(hd) + w * cond.stride(wd)] =
                        s[h * W + w].real() + up[h * uncond.stride(hd) + w * uncond.stride(wd)];
        }
    }
}

} // namespace fresca_detail

/// ComfyUI "FreSca".
struct fresca {
    static constexpr auto descriptor() {
        return describe<fresca>("FreSca", "FreSca", hook_kind::pre_cfg,
                                floating("scale_low", &fresca::scale_low, 1.0, 0.0, 10.0, 0.01),
                                floating("scale_high", &fresca::scale_high, 1.25, 0.0, 10.0, 0.01),
                                integer("freq_cutoff", &fresca::freq_cutoff, 20, 1, 10000, 1));
    }
    static constexpr const char* name = "FreSca"; // messages (the descriptor's class_type)

    double scale_low = 1.0;  ///< factor on the low-frequency box, [0, 10]
    double scale_high = 1.25; ///< factor on every other frequency, [0, 10]
    int freq_cutoff = 20;    ///< half-width of the box in frequency bins, [1, 10000]
    fresca_path path = fresca_path::automatic; ///< implementation choice (not a ComfyUI input)

    void validate() const { patchbay::validate(*this); }

    /// Rewrites cond in place (uncond is left as is). cond and uncond must not overlap
    /// unless they are exactly the same view.
    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond) const {
        static_assert(R == 4 || R == 5, "FreSca works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        require_nonempty(cond, name, "cond");
        require_same_shape(cond, uncond, name, "cond", "uncond");
        if (in.x.data_handle() != nullptr) require_same_shape(cond, in.x, name, "cond", "x");
        require_finite(in.cond_scale, name, "cond_scale");
        require_writable_layout(cond, name, "cond");
        require_no_partial_overlap(cond, uncond, name, "cond", "uncond");
        if (in.uncond_is_none) return; // ComfyUI skips when the negative prompt was dropped
        if (scale_low == 1.0 && scale_high == 1.0) return; // the mask is all ones: exact identity
        apply<T, R>(cond, uncond);
    }

    /// cond <- uncond + F(cond - uncond) with no skip check (the filter itself).
    template <class T, std::size_t R>
    void apply(view<T, R> cond, std::type_identity_t<view<const T, R>> uncond) const {
        constexpr std::size_t hd = R - 2, wd = R - 1;
        const index_t H = cond.extent(hd), W = cond.extent(wd);
        const auto rb = kernels::fresca_box(H, freq_cutoff), cb = kernels::fresca_box(W, freq_cutoff);
        index_t t_lo = 0, t_hi = 1;
        if constexpr (R == 5) {
            const auto tb = kernels::fresca_box(cond.extent(2), freq_cutoff);
            t_lo = tb.lo;
            t_hi = tb.hi;
        }
        const T sh = static_cast<T>(scale_high), sl = static_cast<T>(scale_low);
        const auto proj = kernels::cached_box_projector<T>(rb, cb);
        // Frames outside the T box (5-D), or every plane when the box is empty: F(g) = sh g.
        auto outside = [&](index_t lo, index_t hi) {
            for (index_t t = lo; t < hi; ++t) {
                view<T, R> cv = cond;
                view<const T, R> uv = uncond;
                if constexpr (R == 5) {
                    cv = view<T, R>(cond.data_handle() + t * cond.stride(2),
                                    {cond.extent(0), cond.extent(1), 1, H, W}, cond.strides());
                    uv = view<const T, R>(uncond.data_handle() + t * uncond.stride(2),
                                          {cond.extent(0), cond.extent(1), 1, H, W}, uncond.strides());
                }
                kernels::transform(cv, [sh](auto c, auto u) { return u + (c - u) * sh; },
                                   view<const T, R>(cv), uv);
            }
        };
        if (proj->is_zero() || t_lo == t_hi) {
            if constexpr (R == 5) outside(0, cond.extent(2));
            else outside(0, 1);
            return;
        }
        if constexpr (R == 5) {
            outside(0, t_lo);
            outside(t_hi, cond.extent(2));
        }
        fresca_path p = path == fresca_path::automatic ? fresca_detail::choose(*proj, H, W) : path;
        if (p == fresca_path::direct)
            fresca_detail::filter_direct<T, R>(*proj, cond, uncond, t_lo, t_hi, sh, static_cast<T>(sl - sh));
        else
            fresca_detail::filter_fft<T, R>(rb, cb, cond, uncond, t_lo, t_hi, sl, sh);
    }
};

} // namespace patchbay
