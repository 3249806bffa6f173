// patchbay: TCFG - Tangential Damping Classifier-Free Guidance (Kwon et al., "TCFG:
// Tangential Damping Classifier-free Guidance", CVPR 2025), matching ComfyUI's "TCFG" node
// (comfy_extras/nodes_tcfg.py), a pre-CFG function without parameters.
//
// Per batch item (docs/patches/tcfg.md): the scores a = x - uncond and b = x - cond form
// a 2 x N matrix; v1 is its first right-singular vector; uncond becomes x - (a . v1) v1.
// With e = (e1, e2) the top eigenvector of the 2x2 Gram matrix (kernels/svd2.hpp),
// (a . v1) v1 = e1 (e1 a + e2 b), so one reduction pass and one elementwise pass suffice
// and no 2 x N matrix or SVD is formed. Skipped when the sampler dropped the uncond pass.
#pragma once

#include <array>
#include <cstddef>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/svd2.hpp"

namespace patchbay {

/// ComfyUI "TCFG" (no inputs besides the model).
struct tcfg {
    static constexpr auto descriptor() {
        return describe<tcfg>("TCFG", "Tangential Damping CFG", hook_kind::pre_cfg);
    }
    void validate() const { patchbay::validate(*this); }

    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>& in, view<T, R> cond,
                 view<T, R> uncond) const {
        static_assert(R == 4 || R == 5, "TCFG works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        // Its own preconditions (the dispatcher has checked the rest): TCFG reads x and
        // rewrites uncond, which must not overlap x.
        constexpr const char* where = "TCFG";
        require_nonempty(in.x, where, "x");
        PATCHBAY_REQUIRE(!may_overlap(uncond, in.x), where,
                "output 'uncond' overlaps input 'x'; they must be separate tensors");
        if (in.uncond_is_none) return; // ComfyUI skips when the negative prompt was dropped

        for (index_t b = 0; b < cond.extent(0); ++b) {
            const view<const T, R> xb = in.x.batch_slice(b, 1);
            const view<const T, R> cb = cond.batch_slice(b, 1);
            const view<T, R> ub = uncond.batch_slice(b, 1);
            const kernels::svd2_top top = kernels::svd2_from_gram(kernels::gram2_of<R>(
                [](auto xv, auto uv, auto cv) { return std::array{xv - uv, xv - cv}; }, xb,
                view<const T, R>(ub), cb), kernels::svd2_tie_rtol<T>);
            // (a . v1) v1 = p a + q b
            const T p = static_cast<T>(top.e1 * top.e1), q = static_cast<T>(top.e1 * top.e2);
            kernels::transform_backward(
                ub, [p, q](auto xv, auto uv, auto cv) { return xv - ((xv - uv) * p + (xv - cv) * q); },
                xb, view<const T, R>(ub), cb);
        }
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::tcfg)
