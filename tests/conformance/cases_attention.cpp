// Conformance handlers: SelfAttentionGuidance and PerturbedAttentionGuidance (the attention
// kernels, SAG's blur and blur map, and both post-cfg combinations).
#include <algorithm>
#include <vector>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/attention.hpp"
#include "patchbay/kernels/blur.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/post_cfg/sag.hpp"
#include "registry.hpp"
#include "storage.hpp"

namespace conformance_cases_attention {

namespace {

using patchbay::tensor;
using namespace patchbay::conformance;

tensor<float> empty_like(const tensor<float>& t) { return tensor<float>(t.shape()); }

} // namespace

PATCHBAY_CONFORMANCE("SelfAttentionGuidance", "gaussian_blur_2d") {
    const auto img = gc.tensor_input<float>("img");
    const auto ksize = gc.scalar<int>("kernel_size", 9);
    patchbay::require(ksize == patchbay::kernels::blur_taps, "SelfAttentionGuidance",
                      "only kernel_size 9 exists in SAG");
    auto blurred = empty_like(img);
    patchbay::kernels::gaussian_blur_2d<float>(img.as<4>(), gc.param<double>("blur_sigma", 2.0),
                                               blurred.as<4>());
    put(out, "blurred", blurred);
}

PATCHBAY_CONFORMANCE("SelfAttentionGuidance", "attention_basic_with_sim") {
    const auto q = gc.tensor_input<float>("q"), k = gc.tensor_input<float>("k"),
               v = gc.tensor_input<float>("v");
    const int heads = gc.scalar<int>("heads", 1);
    tensor<float> o({q.extent(0), q.extent(1), v.extent(2)});
    tensor<float> sim({q.extent(0) * heads, q.extent(1), k.extent(1)});
    patchbay::conformance::attention_basic_with_sim<float>(q.as<3>(), k.as<3>(), v.as<3>(), heads, o.as<3>(),
                                                           sim.as<3>());
    put(out, "out", o);
    put(out, "sim", sim);
}

PATCHBAY_CONFORMANCE("SelfAttentionGuidance", "create_blur_map") {
    const auto x0 = gc.tensor_input<float>("x0"), attn = gc.tensor_input<float>("attn");
    const int heads = gc.scalar<int>("heads", 1);
    patchbay::require(attn.extent(0) == x0.extent(0) * heads, "SelfAttentionGuidance",
                      "attn must hold batch*heads rows");
    auto blurred = empty_like(x0);
    patchbay::sag::create_blur_map<float>(x0.as<4>(), attn.as<3>(), gc.param<double>("blur_sigma", 2.0),
                                          gc.scalar<double>("threshold", 1.0), {}, blurred.as<4>());
    put(out, "blurred", blurred);
}

PATCHBAY_CONFORMANCE("SelfAttentionGuidance", "attn1_replace+sampler_post_cfg_function") {
    const auto q = gc.tensor_input<float>("q"), k = gc.tensor_input<float>("k"),
               v = gc.tensor_input<float>("v");
    const auto x = gc.tensor_input<float>("x"), sigma = gc.tensor_input<float>("sigma");
    const auto cond = gc.tensor_input<float>("cond_denoised");
    const auto uncond = gc.tensor_input<float>("uncond_denoised");
    const auto sag_model_out = gc.tensor_input<float>("sag_model_out");
    const int heads = gc.scalar<int>("n_heads", 1);
    const auto chunks = gc.scalars().at("cond_or_uncond").get<std::vector<int>>();
    const patchbay::self_attention_guidance p{gc.param<double>("scale", 0.5),
                                              gc.param<double>("blur_sigma", 2.0)};
    patchbay::validate(p);

    // The middle-block attention of ComfyUI's batched call, chunk by chunk as patchbay's
    // separate passes: each pass gets SAG's hooks, and the site computes the probabilities
    // explicitly when a hook reads them (the site reports no grid: SAG guesses it).
    patchbay::state_t<patchbay::self_attention_guidance> st{};
    tensor<float> attn_out({q.extent(0), q.extent(1), v.extent(2)});
    const patchbay::index_t per_chunk = q.extent(0) / static_cast<patchbay::index_t>(chunks.size());
    patchbay::require(per_chunk * static_cast<patchbay::index_t>(chunks.size()) == q.extent(0) &&
                          per_chunk == x.extent(0),
                      "SelfAttentionGuidance", "q must hold one chunk of the latent batch per cond_or_uncond entry");
    for (std::size_t c = 0; c < chunks.size(); ++c) {
        const auto first = static_cast<patchbay::index_t>(c) * per_chunk;
        const auto pass = chunks[c] == 1 ? patchbay::pass_kind::uncond : patchbay::pass_kind::cond;
        patchbay::call_overrides<float> ov;
        p.on_model_call(st, pass, ov);
        const auto qc = q.as<3>().batch_slice(first, per_chunk);
        tensor<float> sim({per_chunk * heads, q.extent(1), k.extent(1)});
        patchbay::kernels::attention_basic_with_sim<float>(
            qc, k.as<3>().batch_slice(first, per_chunk), v.as<3>().batch_slice(first, per_chunk),
            heads, attn_out.as<3>().batch_slice(first, per_chunk), sim.as<3>());
        if (ov.reads_attention(patchbay::sag::site))
            ov.on_attention_probabilities(patchbay::sag::site, sim.as<3>(), heads);
    }

    auto cfg = empty_like(x);
    patchbay::kernels::cfg_combine<float, 4>(cond.as<4>(), uncond.as<4>(), gc.scalar<double>("cond_scale", 1.0),
                                             cfg.as<4>());
    put(out, "cfg_result_in", cfg);
    auto degraded_noised = empty_like(x); // zeros unless SAG runs the model
    const patchbay::guidance_inputs<float, 4> in{x.as<4>(), sigma.as<1>(), gc.scalar<double>("cond_scale", 1.0),
                                                 false, patchbay::prediction_type::eps};
    // The model SAG re-runs: check it asks for the uncond prompt, record its input, answer
    // with the golden model output.
    auto evaluate = [&](patchbay::pass_kind prompt, patchbay::view<const float, 4> input,
                        patchbay::view<float, 4> prediction, const patchbay::call_overrides<float>*) {
        patchbay::require(prompt == patchbay::pass_kind::uncond, "SelfAttentionGuidance",
                          "the re-evaluation must use the uncond prompt");
        patchbay::kernels::copy<float, 4>(input, degraded_noised.as<4>());
        patchbay::kernels::copy<float, 4>(sag_model_out.as<4>(), prediction);
    };
    patchbay::model_access<float, 4> model(patchbay::model_access<float, 4>::evaluate_fn::to(evaluate));
    // the checked entry point: parameters and inputs are validated as the step does
    patchbay::conformance::apply_post_cfg(p, st, in, cond.as<4>(), uncond.as<4>(), cfg.as<4>(), model);
    put(out, "attn1_out", attn_out);
    put(out, "degraded_noised", degraded_noised);
    put(out, "result", cfg);
}

PATCHBAY_CONFORMANCE("PerturbedAttentionGuidance", "attn1_replace(middle,0)") {
    const auto q = gc.tensor_input<float>("q"), k = gc.tensor_input<float>("k"),
               v = gc.tensor_input<float>("v");
    const patchbay::perturbed_attention_guidance p{gc.param<double>("scale", 3.0)};
    patchbay::validate(p);
    tensor<float> o({q.extent(0), q.extent(1), v.extent(2)});
    patchbay::conformance::perturbed_attention<float>(q.as<3>(), k.as<3>(), v.as<3>(), o.as<3>());
    put(out, "attn_out", o);
}

namespace {
template <std::size_t R>
void pag_post_cfg(const golden_case& gc, results& out) {
    const auto x = gc.tensor_input<float>("x"), sigma = gc.tensor_input<float>("sigma");
    const auto cond = gc.tensor_input<float>("cond_denoised");
    const auto uncond = gc.tensor_input<float>("uncond_denoised");
    const auto pag_model_out = gc.tensor_input<float>("pag_model_out");
    const double cond_scale = gc.scalar<double>("cond_scale", 1.0);
    const patchbay::perturbed_attention_guidance p{gc.param<double>("scale", 3.0)};
    patchbay::validate(p);
    auto cfg = empty_like(x);
    patchbay::kernels::cfg_combine<float, R>(cond.as<R>(), uncond.as<R>(), cond_scale, cfg.as<R>());
    put(out, "cfg_result_in", cfg);
    const patchbay::guidance_inputs<float, R> in{x.as<R>(), sigma.as<1>(), cond_scale,
                                                 gc.scalar<bool>("uncond_is_none", false),
                                                 patchbay::prediction_type::eps};
    // The model PAG re-runs: the cond prompt at the same x, with the middle block's
    // self-attention replaced; answered with the golden model output.
    auto evaluate = [&](patchbay::pass_kind prompt, patchbay::view<const float, R> input,
                        patchbay::view<float, R> prediction, const patchbay::call_overrides<float>* extra) {
        patchbay::require(prompt == patchbay::pass_kind::cond && input.data_handle() == x.data() &&
                              extra && extra->attention_replacement(patchbay::attention_site{}),
                          "PerturbedAttentionGuidance",
                          "the re-evaluation must use the cond prompt at x with the middle attention replaced");
        patchbay::kernels::copy<float, R>(pag_model_out.as<R>(), prediction);
    };
    patchbay::model_access<float, R> model(patchbay::model_access<float, R>::evaluate_fn::to(evaluate));
    patchbay::state_t<patchbay::perturbed_attention_guidance> st{};
    patchbay::conformance::apply_post_cfg(p, st, in, cond.as<R>(), uncond.as<R>(), cfg.as<R>(), model);
    put(out, "result", cfg);
}
} // namespace

PATCHBAY_CONFORMANCE("PerturbedAttentionGuidance", "sampler_post_cfg_function") {
    if (gc.tensor_input<float>("x").rank() == 5) pag_post_cfg<5>(gc, out);
    else pag_post_cfg<4>(gc, out);
}

} // namespace conformance_cases_attention
