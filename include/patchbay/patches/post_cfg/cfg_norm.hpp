// CFGNorm: per-pixel channel-norm limiting of the CFG result; matches ComfyUI's CFGNorm node
// (comfy_extras/nodes_cfg.py). The newest upstream node adds `pre_cfg`, which moves the patch
// into the cfg-function slot and rescales the combined "x - denoised" without clamping (the
// norm-scaled CFG of models like Lens). No paper: ComfyUI's experimental guidance node.
//
//   post-CFG (pre_cfg = false):
//     k = clamp(||cond||_c / (||denoised||_c + 1e-8), 0, 1),  denoised *= k * strength
//   cfg function (pre_cfg = true), with dc = x - cond, dg = x - (uncond + s*(cond - uncond)):
//     r = ||dc||_c / max(||dg||_c, 1e-12) where ||dg||_c > 0, else 1
//     denoised = x - dg * (strength * r + 1 - strength)
// ||.||_c is the L2 norm over the channels (dim 1) of each pixel.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

struct cfg_norm {
    double strength = 1.0; ///< ComfyUI "strength", default 1.0, range [0, 100]
    bool pre_cfg = false;  ///< ComfyUI "pre_cfg" (newest node, optional), default false

    /// The declared slot is post-cfg (pre_cfg = false, the node's original behaviour).
    static constexpr auto descriptor() {
        return describe<cfg_norm>("CFGNorm", "CFGNorm", hook_kind::post_cfg,
                                  floating("strength", &cfg_norm::strength, 1.0, 0.0, 100.0, 0.01),
                                  optional(boolean("pre_cfg", &cfg_norm::pre_cfg, false)));
    }

    /// The slot for the current flag: ComfyUI's pre_cfg = true installs a sampler cfg
    /// function (replacing the default combine), not a pre-cfg hook.
    constexpr hook_kind slot() const noexcept {
        return pre_cfg ? hook_kind::cfg_function : hook_kind::post_cfg;
    }

    void validate() const { patchbay::validate(*this); }

    /// Post-CFG: scale the current result per pixel so its channel norm does not exceed the
    /// cond prediction's, then by strength. Throws when strength > 1 made the result
    /// non-finite (as ComfyUI does); `denoised` is then left partly rewritten.
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in,
                  std::type_identity_t<view<const T, R>> cond,
                  std::type_identity_t<view<const T, R>> uncond, view<T, R> denoised) const {
        PATCHBAY_REQUIRE(!pre_cfg, "CFGNorm", "post_cfg called with pre_cfg = true; that setting occupies the cfg-function slot (see slot())");
        check(in, cond, uncond, denoised, false);
        const T str = static_cast<T>(strength);
        const T eps = static_cast<T>(1e-8);
        kernels::reduce_channels_map<2>(
            denoised,
            [](auto c, auto d) { return std::array{c * c, d * d}; },
            [str, eps](const auto& s) {
                using V = std::decay_t<decltype(s[0])>;
                const V k = simd::sqrt(s[0]) / (simd::sqrt(s[1]) + eps);
                return simd::min(simd::max(k, V(T(0))), V(T(1))) * str;
            },
            [](auto f, auto, auto d) { return d * f; }, cond, view<const T, R>(denoised));
        if (strength > 1.0) {
            // NaN propagates through the sum of (v - v), which is NaN exactly for inf/NaN v.
            const double probe = kernels::reduce<1>([](auto v) { return std::array{v - v}; },
                                                    view<const T, R>(denoised))[0];
            if (!(probe == 0.0))
                fail("CFGNorm", "strength " + detail::fmt_num(strength) +
                                     " made the denoised prediction non-finite (strength > 1 "
                                     "amplifies every step; use strength <= 1)");
        }
    }

    /// cfg function (pre_cfg = true): writes the denoised result.
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& in,
                      std::type_identity_t<view<const T, R>> cond,
                      std::type_identity_t<view<const T, R>> uncond, view<T, R> out) const {
        PATCHBAY_REQUIRE(pre_cfg, "CFGNorm", "cfg_function called with pre_cfg = false; that setting occupies the post-cfg slot (see slot())");
        check(in, cond, uncond, out, true);
        const T s = static_cast<T>(in.cond_scale);
        const T str = static_cast<T>(strength);
        const T keep = static_cast<T>(1.0 - strength);
        const T tiny2 = static_cast<T>(1e-24); // ComfyUI's floor 1e-12 on the norm, squared
        kernels::reduce_channels_map<2>(
            out,
            [s](auto x, auto c, auto u) {
                const auto dc = x - c;
                const auto dg = x - (u + (c - u) * s);
                return std::array{dc * dc, dg * dg};
            },
            [str, keep, tiny2](const auto& n2) {
                using V = std::decay_t<decltype(n2[0])>;
                // ||dc|| / max(||dg||, 1e-12) with one root, sqrt(|dc|^2 / max(|dg|^2, 1e-24)):
                // the roots and the divide wait on each other, so two roots cost twice. Where
                // the squared ratio overflows (ratios past 1.8e19) the two roots give the
                // finite ratio ComfyUI computes.
                const V d2 = simd::max(n2[1], V(tiny2)), q = n2[0] / d2;
                V r = simd::sqrt(q);
                if (simd::any(q > V(std::numeric_limits<T>::max()))) [[unlikely]]
                    r = simd::select(q > V(std::numeric_limits<T>::max()), simd::sqrt(n2[0]) / simd::sqrt(d2), r);
                // a pixel whose combined norm is 0 is left as plain CFG (ComfyUI: where(>0))
                return simd::select(n2[1] > V(T(0)), r, V(T(1))) * str + keep;
            },
            [s](auto f, auto x, auto c, auto u) { return x - (x - (u + (c - u) * s)) * f; }, in.x,
            cond, uncond);
    }

private:
    /// Its own precondition (the dispatcher has checked the rest): the cfg function reads x.
    template <class T, std::size_t R>
    static void check(const guidance_inputs<T, R>& in, const view<const T, R>&, const view<const T, R>&,
                      const view<T, R>&, bool need_x) {
        static_assert(R == 4 || R == 5, "CFGNorm works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        if (need_x) require_nonempty(in.x, "CFGNorm", "x");
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::cfg_norm)
