// PerpNegGuider: the Perp-Neg guider (Armandpour et al. 2023, "Re-imagine the Negative Prompt
// Algorithm"), matching ComfyUI's `PerpNegGuider` node (comfy_extras/nodes_perpneg.py,
// Guider_PerpNeg.predict_noise). A multi-prompt guider: the run's prompts are positive,
// negative and the empty prompt (begin_run(positive, negative, empty)); it combines their
// three predictions as Perp-Neg (patches/cfg/perp_neg.hpp, whole-tensor projection) with
// cond_scale = cfg.
//
// Where ComfyUI runs the other patches' hooks (semantics: docs/patches/perp_neg_guider.md):
//   1. the passes: negative skipped when neg_scale == 0, empty too when also cfg == 1
//      (math.isclose; a skipped prompt is zeros) unless a patch disables the cfg-1 shortcut;
//   2. every pre-cfg hook on (positive, negative) with cond_scale = cfg and the empty
//      prediction as the third of three (guidance_inputs::prediction_count = 3, extra_denoised);
//   3. the Perp-Neg combination;
//   4. every post-cfg hook with cond = positive, uncond = negative, cond_scale = cfg and
//      extra_denoised = the empty prediction (ComfyUI's empty_cond_denoised).
// ComfyUI never calls a cfg function here (RescaleCFG, PerpNeg, ... would be silently
// ignored): patchbay refuses a cfg function beside this guider when the guider or chain is built.
#pragma once

#include <cstddef>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"

namespace patchbay {

/// ComfyUI "PerpNegGuider" (a GUIDER node, used by SamplerCustomAdvanced).
struct perp_neg_guider {
    double cfg = 8.0;       ///< ComfyUI "cfg", default 8.0, range [0, 100]
    double neg_scale = 1.0; ///< ComfyUI "neg_scale", default 1.0, range [0, 100]
    node_link positive{}, negative{}, empty_conditioning{}; ///< the prompts (recorded for the engine)

    /// ComfyUI never calls a cfg function inside this guider: refuse one beside it.
    static constexpr unsigned refuses_slots = detail::slot_bit(hook_kind::cfg_function);

    static constexpr auto descriptor() {
        return describe<perp_neg_guider>(
            "PerpNegGuider", "Perp-Neg Guider", hook_kind::multi_prompt,
            link("positive", &perp_neg_guider::positive, "CONDITIONING"),
            link("negative", &perp_neg_guider::negative, "CONDITIONING"),
            link("empty_conditioning", &perp_neg_guider::empty_conditioning, "CONDITIONING"),
            floating("cfg", &perp_neg_guider::cfg, 8.0, 0.0, 100.0, 0.1),
            floating("neg_scale", &perp_neg_guider::neg_scale, 1.0, 0.0, 100.0, 0.01));
    }

    /// The passes to evaluate: ComfyUI drops the negative prompt at neg_scale 0 and the empty
    /// one too at cfg 1 (math.isclose), unless a patch disables the cfg-1 shortcut.
    template <class T, std::size_t R>
    unsigned prompts(const guidance_inputs<T, R>& gi) const {
        unsigned p = prompt_cond | prompt_uncond | prompt_extra;
        if (!gi.disable_cfg1_optimization && neg_scale == 0.0) { // isclose(x, 0) is x == 0
            p &= ~prompt_uncond;
            if (detail::cond_scale_is_one(cfg)) p &= ~prompt_extra;
        }
        return p;
    }

    template <class T, std::size_t R>
    void combine_prompts(no_state&, const guidance_inputs<T, R>& gi, const prompt_predictions<T, R>& preds,
                         view<T, R> out, stage_runner<T, R>& stages) const {
        guidance_inputs<T, R> hooks = gi;
        hooks.cond_scale = cfg;
        hooks.prediction_count = 3;
        hooks.extra_denoised = preds.extra_or_zeros();
        hooks.in_multi_prompt = true;
        stages.pre_cfg(hooks, preds.cond, preds.uncond);
        perp_neg_detail::combine<T, R>(preds.cond, preds.uncond, hooks.extra_denoised, neg_scale, cfg, out);
        stages.post_cfg(hooks, preds.cond, preds.uncond, out);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::perp_neg_guider)
