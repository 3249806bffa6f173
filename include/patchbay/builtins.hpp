// patchbay: the built-in patch types, listed once, and the separate compilation of their
// function tables.
//
// A patch's function table (vtable_of<P>) compiles every hook of P for float and double, 4-D
// and 5-D. A translation unit that names all the built-ins (the workflow importer does) so
// compiles the whole library, about a minute per unit at -O2. A program with several such
// units compiles them once:
//   - define PATCHBAY_EXTERN_BUILTINS for the whole program (every unit then only declares the
//     built-in tables: each patch header says PATCHBAY_DECLARE_BUILTIN for its types);
//   - in exactly one .cpp, `#define PATCHBAY_INSTANTIATE_BUILTINS` and include this header
//     (that unit defines them all).
// Without PATCHBAY_EXTERN_BUILTINS nothing changes: every unit instantiates what it uses.
// Patches of the engine's own are not affected either way.
#pragma once

#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/attention/nag.hpp"
#include "patchbay/patches/block/deep_shrink.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"
#include "patchbay/patches/cfg/renorm_cfg.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/cfg/video_cfg_guidance.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"
#include "patchbay/patches/mask/differential_diffusion.hpp"
#include "patchbay/patches/model_sampling/model_sampling_nodes.hpp"
#include "patchbay/patches/pass/skip_layer_guidance_dit_simple.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/post_cfg/cfg_zero_star.hpp"
#include "patchbay/patches/post_cfg/epsilon_scaling.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/post_cfg/sag.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"
#include "patchbay/patches/post_cfg/temporal_score_rescaling.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"
#include "patchbay/patches/pre_cfg/latent_apply_operation_cfg.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"

/// Calls X(type) for every built-in patch type, in the order of the docs' node table.
#define PATCHBAY_FOR_EACH_BUILTIN(X)                                                                    \
    X(differential_diffusion)                                                                           \
    X(free_u)                                                                                           \
    X(free_u_v2)                                                                                        \
    X(fresca)                                                                                           \
    X(apg)                                                                                              \
    X(tcfg)                                                                                             \
    X(rescale_cfg)                                                                                      \
    X(renorm_cfg)                                                                                       \
    X(cfg_norm)                                                                                         \
    X(mahiro)                                                                                           \
    X(self_attention_guidance)                                                                          \
    X(perturbed_attention_guidance)                                                                     \
    X(cfg_zero_star)                                                                                    \
    X(epsilon_scaling)                                                                                  \
    X(temporal_score_rescaling)                                                                         \
    X(video_linear_cfg_guidance)                                                                        \
    X(video_triangle_cfg_guidance)                                                                      \
    X(latent_apply_operation_cfg)                                                                       \
    X(skip_layer_guidance_dit)                                                                          \
    X(skip_layer_guidance_dit_simple)                                                                   \
    X(skip_layer_guidance_sd3)                                                                          \
    X(normalized_attention_guidance)                                                                    \
    X(deep_shrink)                                                                                      \
    X(perp_neg)                                                                                         \
    X(perp_neg_guider)                                                                                  \
    X(dual_cfg_guider)                                                                                  \
    X(model_sampling_discrete)                                                                          \
    X(model_sampling_sd3)                                                                               \
    X(model_sampling_aura_flow)                                                                         \
    X(model_sampling_flux)                                                                              \
    X(model_sampling_ltxv)                                                                              \
    X(model_sampling_continuous_edm)                                                                    \
    X(model_sampling_continuous_v)                                                                      \
    X(model_sampling_stable_cascade)                                                                    \
    X(model_noise_scale)

#if defined(PATCHBAY_INSTANTIATE_BUILTINS)
namespace patchbay {
#define PATCHBAY_INSTANTIATE_BUILTIN_(P) template const patch_vtable& vtable_of<P>();
PATCHBAY_FOR_EACH_BUILTIN(PATCHBAY_INSTANTIATE_BUILTIN_)
#undef PATCHBAY_INSTANTIATE_BUILTIN_
} // namespace patchbay
#endif
