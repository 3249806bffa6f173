// Skip Layer Guidance, simple form. Matches ComfyUI's SkipLayerGuidanceDiTSimple node
// (comfy_extras/nodes_slg.py).
//
// Inside its window (start_percent / end_percent, applied by the dispatcher on the first batch
// item's sigma, both edges inside) the negative prompt's pass runs with the listed double and
// single blocks replaced by the identity: the skip-layer model acts as the negative prompt's
// model, and CFG and every other hook then run unchanged on (cond, uncond). No extra pass. When
// the negative pass is skipped (cond_scale 1) there is nothing to change. ComfyUI replaces the
// sampler's model call for this (sampler_calc_cond_batch_function) and so evaluates cond and
// uncond in two calls inside the window; patchbay adds the skips to the uncond prompt's hooks
// (pass composition), and a batched model still evaluates both prompts in one call.
#pragma once

#include <cstddef>
#include <string>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"

namespace patchbay {

/// ComfyUI node SkipLayerGuidanceDiTSimple. Needs a model that skips DiT blocks on request.
struct skip_layer_guidance_dit_simple {
    std::string double_layers = "7, 8, 9";
    std::string single_layers = "7, 8, 9";
    double start_percent = 0.0; ///< window start (the dispatcher applies it)
    double end_percent = 1.0;   ///< window end

    static constexpr auto descriptor() {
        using P = skip_layer_guidance_dit_simple;
        return slg::describe_with_layers<P>("SkipLayerGuidanceDiTSimple", hook_kind::pass_composition,
                                            floating("start_percent", &P::start_percent, 0.0, 0.0, 1.0, 0.001),
                                            floating("end_percent", &P::end_percent, 1.0, 0.0, 1.0, 0.001));
    }
    static constexpr unsigned needs_capabilities = capability_bit(capability::block_skipping);

    void check_params() const { (void)skipped(); }
    /// The parsed layer lists (no allocation).
    slg::skipped_layers skipped() const { return slg::skipped_of(*this); }

    /// The negative prompt's pass skips the listed blocks (called only inside the window).
    template <class T, std::size_t R>
    void compose_passes(no_state&, const guidance_inputs<T, R>&, pass_plan<T>& plan) const {
        skipped().request(plan.uncond);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::skip_layer_guidance_dit_simple)
