// patchbay: what a denoise call hands each kind of hook (ComfyUI's model_options slots).
//
// All predictions are in denoised (x0) space, as ComfyUI hands them to its hooks. A patch
// that works in another space (RescaleCFG: v space) converts inside.
#pragma once

#include <cstddef>
#include <cstdint>

#include <array>
#include <string>
#include <string_view>

#include "patchbay/core/view.hpp"

namespace patchbay {

class workspace;      // core/workspace.hpp: the run's scratch arena
class model_sampling; // sampling/model_sampling.hpp

/// Which model pass a call is.
enum class pass_kind : std::uint8_t {
    cond,         ///< the positive prompt
    uncond,       ///< the negative prompt
    reevaluation, ///< an extra call a hook makes (SAG, PAG, SLG, Perp-Neg)
    extra         ///< a third prompt: Perp-Neg's empty prompt, Dual CFG's middle prompt
};

/// The hook slot a patch occupies (docs/design.md, "The patch protocol"). Patches that reach
/// into the network (block, attention, attention-output, block-skip hooks) attach them to each
/// model call through on_model_call; their slot is the cfg-stage slot they also use, or
/// `model_hooks` when they have none.
enum class hook_kind : std::uint8_t {
    model_sampling,   ///< transforms the model sampling (ModelSampling*, ModelNoiseScale): ordered
    output_block,     ///< FreeU, FreeU_V2: (h, hsp) at each UNet output block
    attention,        ///< SAG, PAG (read / replace self-attention), always paired with post_cfg
    mask_function,    ///< DifferentialDiffusion: at most one
    pre_cfg,          ///< APG, TCFG, FreSca: ordered list
    cfg_function,     ///< RescaleCFG, RenormCFG, CFGNorm(pre_cfg), PerpNeg: at most one
    post_cfg,         ///< CFGNorm, Mahiro, SAG, PAG: ordered list
    model_hooks,      ///< only network hooks through on_model_call (NAG, Deep Shrink)
    pass_composition, ///< rewrites the passes of one evaluation (SkipLayerGuidanceDiTSimple): at most one
    multi_prompt      ///< a guider combining more than two predictions (Perp-Neg, Dual CFG): at most one
};

inline constexpr std::string_view to_string(hook_kind k) noexcept {
    constexpr std::string_view names[] = {"model sampling", "output block", "attention", "mask function",
                                          "pre-cfg", "cfg function", "post-cfg", "model hooks",
                                          "pass composition", "multi-prompt guider"};
    return names[static_cast<std::size_t>(k)];
}

/// A transformer block of a DiT model (MMDiT / Flux numbering: double blocks, then single).
struct dit_block_site {
    enum class kind : std::uint8_t { double_block, single_block } type = kind::double_block;
    int index = 0;
    friend bool operator==(const dit_block_site&, const dit_block_site&) = default;
};

/// The model's prediction type, as ComfyUI's model sampling names it. Hooks that depend on
/// the model kind (RescaleCFG: v space for discrete models, x0 space for flow) read it.
enum class prediction_type : std::uint8_t { eps, v_prediction, lcm, x0, img_to_img, flow };

inline bool is_flow(prediction_type p) noexcept { return p == prediction_type::flow; }

/// The values a sampling step hands every cfg-stage hook (pre-cfg, cfg function, post-cfg).
/// ComfyUI's args["timestep"] is this sigma vector too.
template <class T, std::size_t R>
struct guidance_inputs {
    view<const T, R> x;        ///< the current noisy latent (ComfyUI's "input")
    view<const T, 1> sigma;    ///< one noise level per batch item
    double cond_scale = 1.0;   ///< the CFG scale
    bool uncond_is_none = false; ///< the uncond pass was skipped (cond_scale 1): uncond is 0
    prediction_type prediction = prediction_type::eps; ///< the model sampling's type
    /// The run's scratch arena (transient buffers valid for this call only). Null in a
    /// standalone call: a patch that needs scratch then uses a local one.
    workspace* scratch = nullptr;
    /// The run's model sampling (percent_to_sigma, the model kind); null when the caller has none.
    const model_sampling* sampling = nullptr;

    // A multi-prompt guider (PerpNegGuider, DualCFGGuider) sets these for the hooks it runs.
    /// ComfyUI's len(conds_out) as pre-cfg hooks see it: 2 in the default cfg stage, 3 inside
    /// PerpNegGuider (LatentApplyOperationCFG then transforms the positive prediction alone).
    unsigned prediction_count = 2;
    /// The third prediction when prediction_count is 3: PerpNegGuider's empty-prompt one
    /// (conds_out[2] for pre-cfg hooks, empty_cond_denoised for post-cfg hooks; zeros when the
    /// guider skipped that prompt). Empty otherwise.
    view<const T, R> extra_denoised{};
    /// The hook runs inside a multi-prompt guider, whose prompts take the run's extra
    /// conditioning: a cfg function that evaluates pass_kind::extra itself (PerpNeg) refuses.
    bool in_multi_prompt = false;
    /// ComfyUI's model_options["disable_cfg1_optimization"]: a patch of the step keeps every
    /// pass the cfg-1 shortcut would skip (SAG); a multi-prompt guider's prompts() honours it.
    bool disable_cfg1_optimization = false;
};

/// UNet stage of a hook site.
enum class unet_stage : std::uint8_t { input, middle, output };

/// An output block of a UNet, named explicitly by the model (never found by tensor shape).
/// `channels` is the channel count of h entering the block, which FreeU's rule reads.
struct block_site {
    unet_stage stage = unet_stage::output;
    int index = 0;
    index_t channels = 0;
    /// The run's scratch arena, filled in by the dispatcher before a patch sees the site
    /// (models leave it null). Null in a standalone call: the patch uses a local one.
    workspace* scratch = nullptr;
};

/// A self-attention site (ComfyUI's attn1 key: block name, block number, transformer index).
/// A model reports the site's token grid (rows x cols of the feature map the tokens come
/// from, row-major) when it calls a hook; 0 x 0 means "not reported" (SAG then guesses it
/// as ComfyUI does). Sites compare equal by name only: the grid is what the site reports,
/// not part of its key.
struct attention_site {
    unet_stage stage = unet_stage::middle;
    int block = 0;
    int transformer = 0;
    index_t rows = 0; ///< token grid rows reported by the model (0 = unknown)
    index_t cols = 0; ///< token grid columns reported by the model (0 = unknown)
    friend bool operator==(const attention_site& a, const attention_site& b) noexcept {
        return a.stage == b.stage && a.block == b.block && a.transformer == b.transformer;
    }
};

/// Parameters-free marker for patches that keep nothing between calls.
struct no_state {};

} // namespace patchbay
