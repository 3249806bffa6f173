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

/// Which model pass a call is.
enum class pass_kind : std::uint8_t {
    cond,        ///< the positive prompt
    uncond,      ///< the negative prompt
    reevaluation ///< an extra call a post-cfg hook makes (SAG, PAG)
};

/// The hook slot a patch occupies (DESIGN.md, "Hook kinds").
enum class hook_kind : std::uint8_t {
    model_sampling,
    output_block, ///< FreeU, FreeU_V2: (h, hsp) at each UNet output block
    attention,    ///< SAG, PAG (read / replace self-attention), always paired with post_cfg
    mask_function, ///< DifferentialDiffusion: at most one
    pre_cfg,      ///< APG, TCFG, FreSca, CFGNorm(pre_cfg): ordered list
    cfg_function, ///< RescaleCFG, RenormCFG: at most one
    post_cfg      ///< CFGNorm, Mahiro, SAG, PAG: ordered list
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
};

/// The checks every cfg-stage hook makes on what the step hands it, whether or not the patch
/// reads each value (a NaN sigma or a mis-shaped x is bad input either way): cond is not
/// empty; x, when given,
/// has cond's shape; sigma, when given, holds one finite, non-negative value per batch item;
/// cond_scale is finite.
template <class T, std::size_t R, class C>
void require_guidance_inputs(const guidance_inputs<T, R>& in, const view<C, R>& cond,
                             std::string_view where) {
    require_nonempty(cond, where, "cond");
    if (in.x.data_handle() != nullptr || in.x.extents() != std::array<index_t, R>{})
        require_same_shape(cond, in.x, where, "cond", "x");
    if (in.sigma.data_handle() != nullptr || in.sigma.extent(0) != 0) {
        require_batch_vector(in.sigma, cond, where, "sigma");
        for (index_t b = 0; b < in.sigma.extent(0); ++b) {
            const double s = static_cast<double>(in.sigma(b));
            if (!(s >= 0.0) || !(s - s == 0.0))
                fail(where, "argument 'sigma' must be finite and non-negative, got " +
                                detail::fmt_num(s) + " for batch item " + std::to_string(b));
        }
    }
    require_finite(in.cond_scale, where, "cond_scale");
}

/// UNet stage of a hook site.
enum class unet_stage : std::uint8_t { input, middle, output };

/// An output block of a UNet, named explicitly by the model (never found by tensor shape).
/// `channels` is the channel count of h entering the block, which FreeU's rule reads.
struct block_site {
    unet_stage stage = unet_stage::output;
    int index = 0;
    index_t channels = 0;
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
