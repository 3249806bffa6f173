// Perturbed-Attention Guidance: Ahn et al., "Self-Rectifying Diffusion Sampling with
// Perturbed-Attention Guidance" (ECCV 2024). Matches ComfyUI's PerturbedAttentionGuidance node
// (comfy_extras/nodes_pag.py).
//
// After CFG the model is run once more on the cond prompt with the self-attention of every
// transformer block of the middle block replaced by identity attention (the output is v, so
// the block's self-attention becomes to_out(to_v(x))); the result is pushed away from that
// perturbed prediction: result = cfg + scale * (cond - perturbed).
#pragma once

#include <cstddef>
#include <type_traits>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay::pag {

/// The sites PAG perturbs: every transformer of middle block 0 (ComfyUI's ("middle", 0) key).
inline constexpr attention_site site{unet_stage::middle, 0, -1, 0, 0};

/// The replacement attention: out = v (identity attention). q and k are unused, as in ComfyUI.
/// Half-precision storage (T = f16, bf16): v is widened to float32 in `scratch` (null: a local
/// arena) and rounded once into out, as every staged hook.
template <class T>
void perturbed_attention(std::type_identity_t<view<const T, 3>> q,
                         std::type_identity_t<view<const T, 3>> k,
                         std::type_identity_t<view<const T, 3>> v, view<T, 3> out, workspace* scratch = nullptr) {
    constexpr const char* where = "PerturbedAttentionGuidance";
    (void)k;
    require_nonempty(v, where, "v");
    PATCHBAY_REQUIRE(q.extent(0) == v.extent(0) && q.extent(1) == v.extent(1), where,
            "identity attention needs one value per query: q " + shape_string(q) + ", v " +
                shape_string(v));
    require_same_shape(v, view<const T, 3>(out), where, "v", "out");
    require_writable_layout(out, where, "out");
    require_no_partial_overlap(out, v, where, "out", "v");
    if constexpr (is_half_v<T>) {
        workspace local;
        detail::stager s(scratch ? *scratch : local);
        kernels::narrow<T, 3>(s.widen<T, 3>(v), out);
    } else {
        (void)scratch;
        kernels::copy<T, 3>(v, out);
    }
}

} // namespace patchbay::pag

namespace patchbay {

/// PAG (ComfyUI node PerturbedAttentionGuidance). Needs a model that calls attention hooks in
/// its middle block. scale 0 returns the cfg result without the extra model call.
struct perturbed_attention_guidance {
    double scale = 3.0; ///< ComfyUI "scale", [0, 100]

    static constexpr auto descriptor() {
        return describe<perturbed_attention_guidance>(
            "PerturbedAttentionGuidance", "Perturbed-Attention Guidance", hook_kind::post_cfg,
            floating("scale", &perturbed_attention_guidance::scale, 3.0, 0.0, 100.0, 0.01));
    }
    static constexpr bool needs_attention_hooks = true;

    /// Nothing carries between steps: the perturbed prediction lives in the run's workspace.
    using state_type = no_state;
    /// Key of the perturbed prediction in the workspace: it must survive the extra model call,
    /// whose block hooks (FreeU) use the workspace too.
    static constexpr std::size_t perturbed_key = workspace::model_call_keys;

    void validate() const { patchbay::validate(*this); }

    /// The overrides PAG's extra model call carries: identity attention at the middle block.
    template <class T>
    static call_overrides<T> perturbation() {
        call_overrides<T> ov;
        ov.replace_attention(pag::site,
                             typename call_overrides<T>::attention_replace_fn(
                                 [](void*, const attention_site&, const attention_tensors<T>& t,
                                    view<T, 3> out) { pag::perturbed_attention<T>(t.q, t.k, t.v, out); },
                                 nullptr));
        return ov;
    }

    /// The post-cfg step, evaluating the model through the guider's model access.
    template <class T, std::size_t R>
    void post_cfg(state_type& st, const guidance_inputs<T, R>& in,
                  std::type_identity_t<view<const T, R>> cond,
                  std::type_identity_t<view<const T, R>> uncond, view<T, R> denoised,
                  model_access<T, R>& model) const {
        (void)uncond;
        const auto extra = perturbation<T>();
        post_cfg_with(st, in, cond, denoised,
                      [&model, &extra](view<const T, R> input, view<T, R> prediction) {
                          model.evaluate(pass_kind::cond, input, prediction, &extra);
                      });
    }

    /// The post-cfg step with the extra model evaluation supplied by the caller:
    /// `perturbed_model(x, prediction)` writes the model's denoised prediction for x with the
    /// cond conditioning and the middle block's self-attention replaced by its value
    /// (perturbation<T>() / pag::perturbed_attention). `denoised` is updated in place.
    template <class T, std::size_t R, class PerturbedModel>
    void post_cfg_with(state_type& st, const guidance_inputs<T, R>& in,
                       std::type_identity_t<view<const T, R>> cond, view<T, R> denoised,
                       PerturbedModel&& perturbed_model) const {
        constexpr const char* where = "PerturbedAttentionGuidance";
        // its own preconditions (the dispatcher has checked shapes and values): x and sigma
        require_nonempty(in.x, where, "x");
        require_batch_vector(in.sigma, in.x, where, "sigma");
        if (scale == 0.0) return; // ComfyUI skips the extra call
        (void)st;
        workspace local; // a standalone call (no run): scratch for this call only
        workspace& ws = in.scratch ? *in.scratch : local;
        const view<T, R> perturbed(
            ws.buffer<T>(perturbed_key, static_cast<std::size_t>(denoised.size())).data(),
            denoised.extents());
        perturbed_model(in.x, perturbed);
        kernels::add_scaled_difference<T, R>(cond, perturbed, scale, denoised);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::perturbed_attention_guidance)
