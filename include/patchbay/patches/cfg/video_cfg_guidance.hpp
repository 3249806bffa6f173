// VideoLinearCFGGuidance and VideoTriangleCFGGuidance: CFG whose scale varies over the frames of
// a video model that puts its frames on the batch axis (Stable Video Diffusion); match ComfyUI's
// nodes of the same names (comfy_extras/nodes_video_model.py), cfg functions. No paper.
//
// With B batch items (the frames) and s = cond_scale:
//   Linear:   scale_b = linspace(min_cfg, s, B)[b]        (frame 0 gets min_cfg, the last s)
//   Triangle: v_b = linspace(0, 1, B)[b], t_b = 2 |v_b - floor(v_b + 0.5)| (0 at both ends,
//             1 in the middle), scale_b = t_b (s - min_cfg) + min_cfg
//   denoised_b = x - ((x - uncond) + scale_b ((x - cond) - (x - uncond)))
// which is ComfyUI's cfg function on its "x - denoised" arguments, undone by the sampler.
// Documented behaviours (the golden cases record them):
// - batch 1: linspace(a, b, 1) = [a], so a single image gets min_cfg, not cond_scale;
// - cond_scale 1: the uncond pass is skipped (zeros) and the frames still get scale_b, not 1;
// - 5-D latents (B, C, T, H, W): one scale per batch item. ComfyUI's (B, 1, 1, 1) scale only
//   broadcasts there for B = 1 (it raises for B > 1 unless B == C, where it silently scales
//   channels); patchbay gives every batch item its own scale, as for 4-D.
#pragma once

#include <cmath>
#include <cstddef>
#include <string_view>
#include <type_traits>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay {

namespace video_cfg_detail {

/// torch.linspace(start, end, n)[i] (torch's two-sided form: from the start for the first
/// half, from the end for the second), in double.
inline double linspace_at(double start, double end, index_t n, index_t i) {
    if (n == 1) return start;
    const double step = (end - start) / static_cast<double>(n - 1);
    return i < n / 2 ? start + step * static_cast<double>(i) : end - step * static_cast<double>(n - 1 - i);
}

/// The cfg function of either node: one scale per batch item, p.scale(b, B, cond_scale).
template <class P, class T, std::size_t R>
void apply(const P& p, const guidance_inputs<T, R>& in, const view<const T, R>& cond, const view<const T, R>& uncond,
           const view<T, R>& out) {
    require_nonempty(in.x, P::descriptor().class_type, "x");
    const index_t n = cond.extent(0);
    for (index_t b = 0; b < n; ++b) {
        const T s = static_cast<T>(p.scale(b, n, in.cond_scale));
        kernels::transform(
            out.batch_slice(b, 1),
            [s](auto x, auto c, auto u) {
                const auto xc = x - c, xu = x - u;
                return x - (xu + (xc - xu) * s);
            },
            in.x.batch_slice(b, 1), cond.batch_slice(b, 1), uncond.batch_slice(b, 1));
    }
}

/// Both nodes have one input, min_cfg, with the same declaration.
template <class P>
constexpr auto describe_video_cfg(std::string_view class_type) {
    return describe<P>(class_type, class_type, hook_kind::cfg_function,
                       floating("min_cfg", &P::min_cfg, 1.0, 0.0, 100.0, 0.5));
}

} // namespace video_cfg_detail

/// ComfyUI "VideoLinearCFGGuidance".
struct video_linear_cfg_guidance {
    double min_cfg = 1.0; ///< the first frame's scale, [0, 100]

    static constexpr auto descriptor() {
        return video_cfg_detail::describe_video_cfg<video_linear_cfg_guidance>("VideoLinearCFGGuidance");
    }
    void validate() const { patchbay::validate(*this); }

    /// The scale of batch item b of n at cond_scale s.
    double scale(index_t b, index_t n, double s) const { return video_cfg_detail::linspace_at(min_cfg, s, n, b); }

    /// Writes the denoised result to `out` (which may be exactly cond or uncond).
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                      std::type_identity_t<view<const T, R>> uncond, view<T, R> out) const {
        video_cfg_detail::apply(*this, in, cond, uncond, out);
    }
};

/// ComfyUI "VideoTriangleCFGGuidance".
struct video_triangle_cfg_guidance {
    double min_cfg = 1.0; ///< the scale of the first and last frames, [0, 100]

    static constexpr auto descriptor() {
        return video_cfg_detail::describe_video_cfg<video_triangle_cfg_guidance>("VideoTriangleCFGGuidance");
    }
    void validate() const { patchbay::validate(*this); }

    /// The scale of batch item b of n at cond_scale s.
    double scale(index_t b, index_t n, double s) const {
        const double v = video_cfg_detail::linspace_at(0.0, 1.0, n, b);
        const double t = 2.0 * std::fabs(v - std::floor(v + 0.5));
        return t * (s - min_cfg) + min_cfg;
    }

    /// Writes the denoised result to `out` (which may be exactly cond or uncond).
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                      std::type_identity_t<view<const T, R>> uncond, view<T, R> out) const {
        video_cfg_detail::apply(*this, in, cond, uncond, out);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::video_linear_cfg_guidance)
PATCHBAY_DECLARE_BUILTIN(patchbay::video_triangle_cfg_guidance)
