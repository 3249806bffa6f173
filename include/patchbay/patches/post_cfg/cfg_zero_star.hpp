// CFGZeroStar: CFG-Zero* (Fan et al., "CFG-Zero*: Improved Classifier-Free Guidance for Flow
// Matching Models", 2025), its optimised scale; matches ComfyUI's CFGZeroStar node
// (comfy_extras/nodes_cfg.py), a post-CFG function without parameters.
//
// Per batch item b, over all its non-batch elements (4-D and 5-D alike):
//   alpha_b = sum((x - cond) * (x - uncond)) / (sum((x - uncond)^2) + 1e-8)
//   denoised = denoised + uncond * (alpha_b - 1) + cond_scale * uncond * (1 - alpha_b)
// The hook is relative to the denoised it is handed, so an earlier cfg function or post-CFG hook
// shifts the result additively, as in ComfyUI. ComfyUI has no "zero-init" steps (the paper's
// zeroing of the first steps). With the uncond pass skipped (cond_scale 1, uncond all zeros)
// both correction terms are 0 and denoised is returned unchanged, as ComfyUI computes it.
//
// Two passes per item: one reduction of the dot product and the norm, one fused write.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

/// ComfyUI "CFGZeroStar" (no inputs besides the model).
struct cfg_zero_star {
    static constexpr auto descriptor() {
        return describe<cfg_zero_star>("CFGZeroStar", "CFGZeroStar", hook_kind::post_cfg);
    }
    void validate() const { patchbay::validate(*this); }

    /// Rewrites `denoised` in place. Reads x (ComfyUI's args["input"]), which must be given.
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                  std::type_identity_t<view<const T, R>> uncond, view<T, R> denoised) const {
        require_nonempty(in.x, "CFGZeroStar", "x");
        if (in.uncond_is_none) return; // uncond is all zeros: both terms vanish
        const T s = static_cast<T>(in.cond_scale);
        for (index_t b = 0; b < cond.extent(0); ++b) {
            const auto ub = uncond.batch_slice(b, 1);
            const auto sums = kernels::reduce<2>(
                [](auto x, auto c, auto u) {
                    const auto xc = x - c, xu = x - u;
                    return std::array{xc * xu, xu * xu};
                },
                in.x.batch_slice(b, 1), cond.batch_slice(b, 1), ub);
            const auto alpha = static_cast<T>(sums[0] / (sums[1] + 1e-8));
            const T alpha_m1 = alpha - T(1), one_m_alpha = T(1) - alpha;
            const auto db = denoised.batch_slice(b, 1);
            kernels::transform(
                db, [=](auto d, auto u) { return d + u * alpha_m1 + (u * s) * one_m_alpha; },
                view<const T, R>(db), ub);
        }
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::cfg_zero_star)
