// patchbay: Mahiro - "Mahiro is so cute that she deserves a better guidance function!!
// (。・ω・。)" (an unpublished guidance tweak by the ComfyUI community), matching ComfyUI's
// "Mahiro" node (comfy_extras/nodes_mahiro.py), a post-CFG function without parameters.
//
// docs/patches/mahiro.md, with s = cond_scale and cfg the current CFG result:
//   leap = s * cond, merge = (leap + cfg) / 2,
//   sim = mean over batch and pixels of cos_channels(ssqrt(s * uncond), ssqrt(merge))
//   (ssqrt(v) = sign(v) sqrt|v|, cosine over dim 1 with torch's eps 1e-8),
//   w = 2 (sim + 1), result = (w cfg + (4 - w) leap) / 4.
// The similarity is ONE scalar for the whole batch, as in ComfyUI: batch items influence each
// other, so running items separately gives a different result (documented, tested).
//
// Two passes: per-pixel channel sums over pixel tiles (no heap memory), then one fused
// elementwise pass. The cosine needs no per-element square roots for the norms because
// |ssqrt(v)|^2 = |v|, and one square root per element for the dot: ssqrt(a) ssqrt(b) =
// sign(ab) sqrt|ab|.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/config.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

namespace detail {

/// The three per-element terms of Mahiro's channel cosine: the dot product term
/// ssqrt(s u) ssqrt(merge) and the two squared-norm terms |s u| and |merge|.
template <class V, class T>
PATCHBAY_ALWAYS_INLINE std::array<V, 3> mahiro_terms(V c, V u, V cfg, T s) noexcept {
    const V us = u * s;
    const V merge = (c * s + cfg) * T(0.5);
    // |us merge| = |us| |merge| exactly, so the root of the product's magnitude is the root
    // of the norms' terms' product
    return {simd::signed_sqrt(us * merge), simd::abs(us), simd::abs(merge)};
}

/// torch.cosine_similarity from the sums, dot / (max(|x|, eps) * max(|y|, eps)) with
/// eps = 1e-8, in one square root: max(|x|, eps) = sqrt(max(|x|^2, eps^2)).
template <class V, class T>
PATCHBAY_ALWAYS_INLINE V mahiro_cosine(V dot, V nn, V mm) noexcept {
    const V eps2(T(1e-16));
    return dot / simd::sqrt(simd::max(nn, eps2) * simd::max(mm, eps2));
}

/// Sum over batch items and pixels of the channel cosine of Mahiro's two signed-root maps.
template <class T, std::size_t R>
double mahiro_cosine_sum(const view<const T, R>& cond, const view<const T, R>& uncond,
                         const view<const T, R>& cfg, T s) {
    double total = 0.0;
    kernels::reduce_channels<3>(
        [s](auto c, auto u, auto f) { return mahiro_terms(c, u, f, s); },
        [&total](index_t, index_t, index_t len, const std::array<const T*, 3>& sums) {
            // the tile's cosines, summed like any reduction (blocks in double)
            total += kernels::reduce<1>(
                [](auto dot, auto nn, auto mm) { return std::array{mahiro_cosine<decltype(dot), T>(dot, nn, mm)}; },
                view<const T, 1>(sums[0], {len}), view<const T, 1>(sums[1], {len}),
                view<const T, 1>(sums[2], {len}))[0];
        },
        cond, uncond, cfg);
    return total;
}

} // namespace detail

/// ComfyUI "Mahiro" (no inputs besides the model).
struct mahiro {
    static constexpr auto descriptor() {
        return describe<mahiro>("Mahiro", "Mahiro CFG", hook_kind::post_cfg);
    }
    void validate() const { patchbay::validate(*this); }

    /// The batch-wide similarity weight w = 2 (sim + 1) in [0, 4] (exposed for tests).
    template <class T, std::size_t R>
    static double weight(std::type_identity_t<view<const T, R>> cond,
                         std::type_identity_t<view<const T, R>> uncond,
                         std::type_identity_t<view<const T, R>> cfg, double cond_scale) {
        const double sum = detail::mahiro_cosine_sum<T, R>(cond, uncond, cfg, static_cast<T>(cond_scale));
        const double count = static_cast<double>(cond.size() / cond.extent(1));
        return 2.0 * (sum / count + 1.0);
    }

    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, view<const T, R> cond,
                  view<const T, R> uncond, view<T, R> denoised) const {
        static_assert(R == 4 || R == 5, "Mahiro works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        // no preconditions of its own: the dispatcher has checked the inputs

        const T s = static_cast<T>(in.cond_scale);
        const T w = static_cast<T>(weight<T, R>(cond, uncond, denoised, in.cond_scale));
        const T k = T(4) - w;
        kernels::transform_backward(denoised, [=](auto cfg, auto c) { return (cfg * w + (c * s) * k) * T(0.25); },
                           denoised, cond);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::mahiro)
