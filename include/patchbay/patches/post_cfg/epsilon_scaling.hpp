// Epsilon Scaling (Ning et al., "Elucidating the Exposure Bias in Diffusion Models", ICLR 2024,
// uniform schedule); matches ComfyUI's "Epsilon Scaling" node (comfy_extras/nodes_eps.py; the
// class_type has a space), a post-CFG function.
//
//   denoised = x - (x - denoised) / scaling_factor
// i.e. the guided noise estimate x - denoised is divided by the factor. ComfyUI replaces a
// factor of 0 by 1e-9; its declared range [0.5, 1.5] makes that unreachable. At factor 1
// ComfyUI returns x - (x - denoised), denoised up to rounding; patchbay returns denoised exactly.
#pragma once

#include <cstddef>
#include <type_traits>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay {

/// ComfyUI "Epsilon Scaling".
struct epsilon_scaling {
    double scaling_factor = 1.005; ///< divides the noise estimate, [0.5, 1.5]

    static constexpr auto descriptor() {
        return describe<epsilon_scaling>("Epsilon Scaling", "Epsilon Scaling", hook_kind::post_cfg,
                                         floating("scaling_factor", &epsilon_scaling::scaling_factor, 1.005, 0.5,
                                                  1.5, 0.001));
    }
    void validate() const { patchbay::validate(*this); }

    /// Rewrites `denoised` in place. Reads x (ComfyUI's args["input"]), which must be given.
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>>,
                  std::type_identity_t<view<const T, R>>, view<T, R> denoised) const {
        require_nonempty(in.x, "Epsilon Scaling", "x");
        if (scaling_factor == 1.0) return;
        const T f = static_cast<T>(scaling_factor);
        kernels::transform(denoised, [f](auto x, auto d) { return x - (x - d) / f; }, in.x,
                           view<const T, R>(denoised));
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::epsilon_scaling)
