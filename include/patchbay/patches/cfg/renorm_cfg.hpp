// RenormCFG: truncated and renormalised CFG from Lumina-Image 2.0 ("Lumina-Image 2.0: A
// Unified and Efficient Image Generative Framework", 2025); matches ComfyUI's RenormCFG node
// (comfy_extras/nodes_lumina2.py).
//
// With t = sigma of batch item 0 (ComfyUI's args["timestep"] is sigma) and the first
// `in_channels` channels (the rest are always taken from cond):
//   t <  cfg_trunc: h = uncond + s*(cond - uncond); if renorm_cfg > 0, per batch item,
//                   limit = ||cond|| * renorm_cfg and h *= limit/||h|| when ||h|| >= limit
//                   (L2 norms over all non-batch elements of the guided channels);
//   t >= cfg_trunc: h = cond (no guidance).
// ComfyUI raises for batch > 1 with renorm_cfg > 0 (it tests a tensor in an `if`); patchbay
// renormalises each batch item on its own, the natural generalisation.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

struct renorm_cfg {
    double cfg_trunc = 100.0; ///< ComfyUI "cfg_trunc", default 100, range [0, 100] (compared with sigma)
    double renorm_cfg = 1.0;  ///< ComfyUI "renorm_cfg", default 1.0, range [0, 100]; 0 = no renorm
    index_t in_channels = 0;  ///< the model's in_channels (guided channels); 0 = all channels

    static constexpr auto descriptor() {
        return describe<patchbay::renorm_cfg>("RenormCFG", "RenormCFG", hook_kind::cfg_function,
                                    floating("cfg_trunc", &patchbay::renorm_cfg::cfg_trunc, 100.0, 0.0, 100.0, 0.01),
                                    floating("renorm_cfg", &patchbay::renorm_cfg::renorm_cfg, 1.0, 0.0, 100.0, 0.01),
                                    // the model's in_channels, not a node input (0 = all channels)
                                    model_fact("in_channels", &patchbay::renorm_cfg::in_channels, 0, 0, 1e9));
    }
    void validate() const { patchbay::validate(*this); }

    /// Writes the denoised result to `out` (which may be exactly `cond` or `uncond`).
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& in,
                      std::type_identity_t<view<const T, R>> cond,
                      std::type_identity_t<view<const T, R>> uncond, view<T, R> out) const {
        static_assert(R == 4 || R == 5, "renorm_cfg works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        check(in, cond, uncond, out);
        const index_t channels = cond.extent(1);
        // ComfyUI slices [:in_channels], which is every channel when in_channels >= C.
        const index_t guided = (in_channels == 0 || in_channels > channels) ? channels : in_channels;
        // Strict <, against sigma of item 0 (nodes_lumina2: `if t < cfg_trunc`).
        if (!(static_cast<double>(in.sigma(0)) < cfg_trunc)) {
            kernels::copy<T, R>(cond, out);
            return;
        }
        const T k = static_cast<T>(in.cond_scale);
        for (index_t b = 0; b < cond.extent(0); ++b) {
            const auto cg = cond.batch_slice(b, 1).channel_slice(0, guided);
            const auto ug = uncond.batch_slice(b, 1).channel_slice(0, guided);
            const auto og = out.batch_slice(b, 1).channel_slice(0, guided);
            T scale = T(1);
            if (renorm_cfg > 0.0) {
                const auto s = kernels::reduce<2>(
                    [k](auto c, auto u) {
                        const auto h = u + (c - u) * k;
                        return std::array{c * c, h * h};
                    },
                    cg, ug);
                const double norm_h = std::sqrt(s[1]);
                const double limit = std::sqrt(s[0]) * renorm_cfg;
                // an all-zero h stays zero (ComfyUI: 0/0 = NaN when cond is zero too)
                if (norm_h >= limit && norm_h > 0.0) scale = static_cast<T>(limit / norm_h);
            }
            kernels::transform_backward(og, [k, scale](auto c, auto u) { return (u + (c - u) * k) * scale; }, cg, ug);
            if (guided < channels)
                kernels::copy<T, R>(cond.batch_slice(b, 1).channel_slice(guided, channels - guided),
                                    out.batch_slice(b, 1).channel_slice(guided, channels - guided));
        }
    }

private:
    /// Its own precondition (the dispatcher has checked the rest): it reads sigma of item 0.
    template <class T, std::size_t R>
    static void check(const guidance_inputs<T, R>& in, const view<const T, R>& cond, const view<const T, R>&,
                      const view<T, R>&) {
        require_batch_vector(in.sigma, cond, "RenormCFG", "sigma");
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::renorm_cfg)
