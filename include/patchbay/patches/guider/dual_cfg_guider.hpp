// DualCFGGuider: two-prompt-plus-negative guidance, matching ComfyUI's `DualCFGGuider` node
// (comfy_extras/nodes_custom_sampler.py, Guider_DualCFG.predict_noise). A multi-prompt guider:
// the run's prompts are positive (cond1), negative and middle (cond2) as the extra prompt
// (begin_run(cond1, negative, cond2)). With s1 = cfg_conds, s2 = cfg_cond2_negative and
// ComfyUI's cfg_function (the cfg function patch or the default combine, then the post-cfg
// hooks, on one pair of predictions):
//   regular: denoised = cfg_function(middle, negative, s2) + s1 * (positive - middle)
//            (negative skipped at s2 == 1, middle too when also s1 == 1: a skipped prompt is
//            zeros, unless a patch disables the cfg-1 shortcut)
//   nested:  denoised = negative + s2 * (cfg_function(positive, middle, s1) - negative)
//            (never skips)
// The hooks inside cfg_function see that pair as cond / uncond and its scale as cond_scale; a
// hook that evaluates its cond or uncond prompt again gets that pair's prompt. ComfyUI never
// calls a pre-cfg hook here (APG, TCFG, ... would be silently ignored): patchbay refuses a
// pre-cfg patch beside this guider when the guider or chain is built. With no cfg function and
// no post-cfg hook the whole combination is one fused pass.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay {

/// ComfyUI's DualCFGGuider "style" (the option's index).
enum class dual_cfg_style : std::uint8_t { regular, nested };

inline constexpr std::array<std::string_view, 2> dual_cfg_styles{"regular", "nested"};

/// ComfyUI "DualCFGGuider" (a GUIDER node, used by SamplerCustomAdvanced).
struct dual_cfg_guider {
    double cfg_conds = 8.0;          ///< ComfyUI "cfg_conds" (s1), default 8.0, range [0, 100]
    double cfg_cond2_negative = 8.0; ///< ComfyUI "cfg_cond2_negative" (s2), default 8.0, range [0, 100]
    dual_cfg_style style = dual_cfg_style::regular; ///< ComfyUI "style": regular or nested
    node_link cond1{}, cond2{}, negative{}; ///< the prompts (recorded for the engine)

    /// ComfyUI never calls a pre-cfg hook inside this guider: refuse one beside it.
    static constexpr unsigned refuses_slots = detail::slot_bit(hook_kind::pre_cfg);

    static constexpr auto descriptor() {
        return describe<dual_cfg_guider>(
            "DualCFGGuider", "Dual CFG Guider", hook_kind::multi_prompt,
            link("cond1", &dual_cfg_guider::cond1, "CONDITIONING"),
            link("cond2", &dual_cfg_guider::cond2, "CONDITIONING"),
            link("negative", &dual_cfg_guider::negative, "CONDITIONING"),
            floating("cfg_conds", &dual_cfg_guider::cfg_conds, 8.0, 0.0, 100.0, 0.1),
            floating("cfg_cond2_negative", &dual_cfg_guider::cfg_cond2_negative, 8.0, 0.0, 100.0, 0.1),
            combo("style", &dual_cfg_guider::style, dual_cfg_styles, "regular"));
    }

    /// The passes to evaluate (regular: ComfyUI's math.isclose(s, 1) shortcuts).
    template <class T, std::size_t R>
    unsigned prompts(const guidance_inputs<T, R>& gi) const {
        unsigned p = prompt_cond | prompt_uncond | prompt_extra;
        if (style == dual_cfg_style::regular && !gi.disable_cfg1_optimization &&
            detail::cond_scale_is_one(cfg_cond2_negative)) {
            p &= ~prompt_uncond;
            if (detail::cond_scale_is_one(cfg_conds)) p &= ~prompt_extra;
        }
        return p;
    }

    template <class T, std::size_t R>
    void combine_prompts(no_state&, const guidance_inputs<T, R>& gi, const prompt_predictions<T, R>& preds,
                         view<T, R> out, stage_runner<T, R>& stages) const {
        const view<const T, R> pos = preds.cond, neg = preds.uncond, mid = preds.extra_or_zeros();
        const T s1 = static_cast<T>(cfg_conds), s2 = static_cast<T>(cfg_cond2_negative);
        const bool fused = !stages.runs(hook_kind::cfg_function) && !stages.runs(hook_kind::post_cfg);
        const bool regular = style == dual_cfg_style::regular;
        if (fused) { // the same expressions as below, without the intermediate store
            if (regular)
                kernels::transform(
                    out, [s1, s2](auto p, auto m, auto n) { return (n + (m - n) * s2) + (p - m) * s1; }, pos, mid,
                    neg);
            else
                kernels::transform(
                    out, [s1, s2](auto p, auto m, auto n) { return n + s2 * ((m + (p - m) * s1) - n); }, pos, mid,
                    neg);
            return;
        }
        guidance_inputs<T, R> hooks = gi;
        hooks.in_multi_prompt = true;
        // ComfyUI's cfg_function(cond_pred, uncond_pred, scale, cond=..., uncond=...)
        const view<const T, R> c = regular ? mid : pos;
        const view<const T, R> u = regular ? neg : mid;
        hooks.cond_scale = regular ? cfg_cond2_negative : cfg_conds;
        hooks.uncond_is_none = regular && gi.uncond_is_none; // nested never skips the middle
        if (regular) stages.route_prompts(pass_kind::extra, pass_kind::uncond);
        else stages.route_prompts(pass_kind::cond, pass_kind::extra);
        if (!stages.cfg_function(hooks, c, u, out)) kernels::cfg_combine<T, R>(c, u, hooks.cond_scale, out);
        stages.post_cfg(hooks, c, u, out);
        if (regular)
            kernels::transform(out, [s1](auto o, auto p, auto m) { return o + (p - m) * s1; }, view<const T, R>(out), pos,
                               mid);
        else
            kernels::transform(out, [s2](auto t, auto n) { return n + s2 * (t - n); }, view<const T, R>(out), neg);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::dual_cfg_guider)
