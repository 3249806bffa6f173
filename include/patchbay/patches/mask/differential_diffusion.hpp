// patchbay: DifferentialDiffusion, a per-step inpainting mask from a soft (graded) mask.
//
// Paper: Levin & Fried, "Differential Diffusion: Giving Each Pixel Its Strength" (2023).
// Matches ComfyUI's DifferentialDiffusion node (comfy_extras/nodes_differential_diffusion.py,
// denoise_mask_function), including its optional `strength` input.
//
// At each model evaluation the soft mask becomes binary with a threshold that falls from 1 at
// the first step to 0 at the end of the schedule, so a pixel with mask value m is regenerated
// during roughly the last m fraction of the run. The threshold is computed as ComfyUI does, in
// float32 from model timesteps: (t(sigma) - t(sigma_to)) / (t(sigma_from) - t(sigma_to)) with
// sigma_from = first schedule sigma, sigma_to = max(sigma_min, last schedule sigma) and
// discrete timesteps snapped to integers.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

struct differential_diffusion {
    /// ComfyUI "strength", default 1.0, range [0, 1]: out = strength * binary + (1 - strength)
    /// * mask. 0 behaves exactly like 1 (ComfyUI tests `if strength and strength < 1`, and 0 is
    /// falsy), so 0 returns the binary mask too.
    double strength = 1.0;

    static constexpr auto descriptor() {
        return describe<differential_diffusion>(
            "DifferentialDiffusion", "Differential Diffusion", hook_kind::mask_function,
            optional(floating("strength", &differential_diffusion::strength, 1.0, 0.0, 1.0, 0.01)));
    }
    void validate() const { patchbay::validate(*this); }

    /// The float32 threshold for this evaluation. When the schedule has no timestep range
    /// (t(sigma_from) == t(sigma_to), e.g. one step at the lowest noise) ComfyUI divides by
    /// zero; patchbay returns 1, the value the formula gives at the first step of any schedule
    /// (only pixels with mask 1 are regenerated).
    static float threshold(const mask_inputs& in) {
        constexpr std::string_view where = "DifferentialDiffusion";
        PATCHBAY_REQUIRE(in.sampling != nullptr, where, "mask_inputs.sampling must point to the model sampling");
        PATCHBAY_REQUIRE(!in.step_sigmas.empty(), where, "mask_inputs.step_sigmas must not be empty");
        require_finite(in.sigma, where, "sigma");
        for (double s : in.step_sigmas) require_finite(s, where, "step_sigmas");
        const model_sampling& ms = *in.sampling;
        // Sigmas are float32 tensors in ComfyUI; timesteps are float32 (flow) or integers
        // (discrete, exact in float32), and the quotient is a float32 division.
        float sigma_to = ms.sigma_min();
        const float last = static_cast<float>(in.step_sigmas.back());
        if (last > sigma_to) sigma_to = last;
        const float sigma_from = static_cast<float>(in.step_sigmas.front());
        const float ts_from = static_cast<float>(ms.timestep(sigma_from));
        const float ts_to = static_cast<float>(ms.timestep(sigma_to));
        const float ts_cur = static_cast<float>(ms.timestep(static_cast<float>(in.sigma)));
        const float den = ts_from - ts_to;
        if (den == 0.0f) return 1.0f;
        return (ts_cur - ts_to) / den;
    }

    /// Write the mask for this evaluation. denoise_mask values must lie in [0, 1] (NaN is
    /// rejected); out has the mask's shape (the sampler broadcasts it to the latent) and may
    /// be exactly the same view as denoise_mask.
    template <class T, std::size_t R>
    void mask(no_state&, const mask_inputs& in, std::type_identity_t<view<const T, R>> denoise_mask,
              view<T, R> out) const {
        constexpr std::string_view where = "DifferentialDiffusion";
        require_nonempty(denoise_mask, where, "denoise_mask");
        require_same_shape(denoise_mask, out, where, "denoise_mask", "out");
        require_writable_layout(out, where, "out");
        require_no_partial_overlap(out, denoise_mask, where, "out", "denoise_mask");
        const auto bad = kernels::reduce<1>(
            [](auto m) {
                using V = decltype(m);
                return std::array<V, 1>{simd::select((m >= V(T(0))) && (m <= V(T(1))), V(T(0)), V(T(1)))};
            },
            denoise_mask);
        if (bad[0] != 0.0)
            fail(where, "tensor 'denoise_mask' must hold values in [0, 1] (no NaN); " +
                            std::to_string(static_cast<long long>(bad[0])) + " elements are outside");
        const T th = static_cast<T>(threshold(in));
        if (strength != 0.0 && strength < 1.0) {
            const T s = static_cast<T>(strength);
            const T keep = static_cast<T>(1.0 - strength);
            kernels::transform(
                out,
                [th, s, keep](auto m) {
                    using V = decltype(m);
                    const V binary = simd::select(m >= V(th), V(T(1)), V(T(0)));
                    return s * binary + keep * m;
                },
                denoise_mask);
        } else {
            kernels::transform(
                out,
                [th](auto m) {
                    using V = decltype(m);
                    return simd::select(m >= V(th), V(T(1)), V(T(0)));
                },
                denoise_mask);
        }
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::differential_diffusion)
