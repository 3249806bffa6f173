// PerpNeg: Perp-Neg (Armandpour et al. 2023, "Re-imagine the Negative Prompt Algorithm:
// Transform 2D Diffusion into 3D, alleviate Janus problem and Beyond"), matching ComfyUI's
// deprecated `PerpNeg` node (comfy_extras/nodes_perpneg.py): a cfg function that evaluates the
// model once more on an empty prompt (the run's extra conditioning, begin_run's third prompt)
// and keeps only the part of the negative guidance perpendicular to the positive guidance.
//
// With the denoised predictions cond, uncond and empty (the extra pass):
//   pos = cond - empty,  neg = uncond - empty
//   a   = sum(neg * pos) / ||pos||^2        (sums over the WHOLE tensor, batch included)
//   denoised = empty + cond_scale * (pos - neg_scale * (neg - a * pos))
// Where ComfyUI divides 0 by 0 (cond == empty: NaN everywhere) or the quotient overflows, a = 0
// (the projection's limit). neg_scale 0 needs no projection: empty + cond_scale * pos.
//
// Two passes: one reduction (neg.pos, |pos|^2) and one fused write. PerpNegGuider
// (patches/guider/perp_neg_guider.hpp) uses the same kernels.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string_view>
#include <type_traits>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/half.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/convert.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

namespace perp_neg_detail {

/// a = sum(neg * pos) / ||pos||^2 over every element, or 0 where that is 0/0, overflows T or
/// is not a number.
template <class T, std::size_t R>
T projection(const view<const T, R>& cond, const view<const T, R>& uncond, const view<const T, R>& empty) {
    const auto s = kernels::reduce<2>(
        [](auto c, auto u, auto e) {
            const auto p = c - e;
            const auto n = u - e;
            return std::array{n * p, p * p};
        },
        cond, uncond, empty);
    if (!(s[1] > 0.0)) return T(0);
    const double a = s[0] / s[1];
    return std::fabs(a) <= static_cast<double>(std::numeric_limits<T>::max()) ? static_cast<T>(a) : T(0);
}

/// out = empty + cond_scale * (pos - neg_scale * perp), ComfyUI's perp_neg(). `out` may be
/// exactly one of the inputs (the projection is summed before anything is written).
template <class T, std::size_t R>
void combine(const view<const T, R>& cond, const view<const T, R>& uncond, const view<const T, R>& empty,
             double neg_scale, double cond_scale, const view<T, R>& out) {
    const T s = static_cast<T>(cond_scale);
    if (neg_scale == 0.0) { // perp * 0 vanishes whatever the projection is
        kernels::transform(out, [s](auto c, auto e) { return e + s * (c - e); }, cond, empty);
        return;
    }
    const T k = static_cast<T>(neg_scale);
    const T a = projection<T, R>(cond, uncond, empty);
    kernels::transform(
        out,
        [s, k, a](auto c, auto u, auto e) {
            const auto p = c - e;
            return e + s * (p - (u - e - a * p) * k);
        },
        cond, uncond, empty);
}

} // namespace perp_neg_detail

/// ComfyUI "PerpNeg" (deprecated by PerpNegGuider). The engine passes the node's
/// empty_conditioning as the run's extra prompt (begin_run(positive, negative, empty)).
struct perp_neg {
    double neg_scale = 1.0;        ///< ComfyUI "neg_scale", default 1.0, range [0, 100]
    node_link empty_conditioning{}; ///< ComfyUI "empty_conditioning" (recorded for the engine)

    /// Its extra pass is the run's extra prompt: refused beside a multi-prompt guider, whose
    /// extra prompt that is (checked when the guider or chain is built).
    static constexpr bool evaluates_extra_prompt = true;

    static constexpr auto descriptor() {
        return describe<perp_neg>("PerpNeg", "Perp-Neg (DEPRECATED by Perp-Neg Guider)", hook_kind::cfg_function,
                                  link("empty_conditioning", &perp_neg::empty_conditioning, "CONDITIONING"),
                                  floating("neg_scale", &perp_neg::neg_scale, 1.0, 0.0, 100.0, 0.01));
    }

    /// cfg function: evaluates the model on the extra (empty) prompt, then combines. The extra
    /// prediction is written to `out` itself when out is a buffer of its own (the
    /// dispatcher's), else to the run's scratch.
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                      std::type_identity_t<view<const T, R>> uncond, view<T, R> out, model_access<T, R>& model) const {
        PATCHBAY_REQUIRE(!in.in_multi_prompt, "PerpNeg",
                         "cannot run inside a multi-prompt guider (DualCFGGuider): the run's extra prompt is the "
                         "guider's, not PerpNeg's empty prompt; use PerpNegGuider instead");
        workspace local;
        view<T, R> empty = out;
        if (may_overlap(out, cond) || may_overlap(out, uncond) || may_overlap(out, in.x)) {
            workspace& ws = in.scratch ? *in.scratch : local;
            empty = view<T, R>(ws.buffer<T>(workspace::model_call_keys, static_cast<std::size_t>(out.size())).data(),
                               out.extents());
        }
        model.evaluate(pass_kind::extra, in.x, empty);
        perp_neg_detail::combine<T, R>(cond, uncond, view<const T, R>(empty), neg_scale, in.cond_scale, out);
    }

    /// The combination alone, for an engine that evaluated the empty prompt itself (checked
    /// entry point). `out` may be exactly cond, uncond or empty. On f16 / bf16 storage the
    /// inputs are widened to float32, combined as float32 and `out` rounded once (core/storage.hpp).
    template <class T, std::size_t R>
    void combine(const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                 std::type_identity_t<view<const T, R>> uncond, std::type_identity_t<view<const T, R>> empty,
                 view<T, R> out) const {
        if constexpr (is_half_v<T>) { // every input is copied before out is written: any aliasing is fine
            detail::staged_call<T>(in.scratch, [&](detail::stager& s, workspace& ws) {
                const view<float, R> o = s.make<R>(out.extents());
                combine<float, R>(detail::widen_inputs<T, R>(s, ws, in), s.widen<T, R>(cond), s.widen<T, R>(uncond),
                                  s.widen<T, R>(empty), o);
                kernels::narrow<T, R>(o, out);
            });
        } else {
            constexpr std::string_view where = "PerpNeg";
            patchbay::validate(*this);
            detail::validate_cfg_inputs<T, R>(in, cond, uncond, out, where, "out", true);
            require_same_shape(cond, empty, where, "cond", "empty");
            require_no_partial_overlap(out, empty, where, "out", "empty");
            perp_neg_detail::combine<T, R>(cond, uncond, empty, neg_scale, in.cond_scale, out);
        }
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::perp_neg)
