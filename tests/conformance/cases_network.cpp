// Conformance handlers of the in-network nodes: SkipLayerGuidanceDiT and SkipLayerGuidanceSD3
// (post-CFG with a model re-run), SkipLayerGuidanceDiTSimple (the sampler's model call, through
// the guider and a batched lookup model), NAGuidance (the attention-output patch) and the
// skip-layer end-to-end runs.
#include <algorithm>
#include <cstddef>
#include <span>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "e2e_network.hpp"
#include "registry.hpp"
#include "storage.hpp"

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/attention/nag.hpp"
#include "patchbay/patches/pass/skip_layer_guidance_dit_simple.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace conformance_cases_network {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

skip_layer_guidance_dit slg_from(const golden_case& gc) {
    return {gc.param<std::string>("double_layers", "7, 8, 9"), gc.param<std::string>("single_layers", "7, 8, 9"),
            gc.param<double>("scale", 3.0), gc.param<double>("start_percent", 0.01), gc.param<double>("end_percent", 0.15),
            gc.param<double>("rescaling_scale", 0.0)};
}

skip_layer_guidance_sd3 sd3_from(const golden_case& gc) {
    return {gc.param<std::string>("layers", "7, 8, 9"), gc.param<double>("scale", 3.0),
            gc.param<double>("start_percent", 0.01), gc.param<double>("end_percent", 0.15)};
}

skip_layer_guidance_dit_simple simple_from(const golden_case& gc) {
    return {gc.param<std::string>("double_layers", "7, 8, 9"), gc.param<std::string>("single_layers", "7, 8, 9"),
            gc.param<double>("start_percent", 0.0), gc.param<double>("end_percent", 1.0)};
}

model_sampling sampling_of(const golden_case& gc) {
    return model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete(eps)"));
}

std::vector<long long> as_longs(std::span<const int> v) { return {v.begin(), v.end()}; }

void put_skipped(results& out, const slg::skipped_layers& l, bool any) {
    const auto d = any ? as_longs(l.double_blocks.indices()) : std::vector<long long>{};
    const auto s = any ? as_longs(l.single_blocks.indices()) : std::vector<long long>{};
    out["skip_double_blocks"] = e2e::int_array({static_cast<index_t>(d.size())}, d);
    out["skip_single_blocks"] = e2e::int_array({static_cast<index_t>(s.size())}, s);
}

/// A post-CFG case with a re-run: the window as the dispatcher decides it (the patch's own
/// start/end inputs, percent_to_sigma of the case's model sampling, sigma[0]); inside it the
/// patch's post-cfg step, whose re-run answers slg_model_out (checked by the patch against
/// cond's shape) and must request exactly the listed blocks.
template <std::size_t R, class P>
void run_rerun_case(const golden_case& gc, results& out, const P& patch) {
    conformance::not_staged(std::string(P::descriptor().class_type) +
                            "'s post-cfg hook evaluates the model again: it runs in float32 only");
    validate(patch);
    const tensor<float> x = gc.tensor_input<float>("x"), sigma = gc.tensor_input<float>("sigma"),
                        cond = gc.tensor_input<float>("cond_denoised"), uncond = gc.tensor_input<float>("uncond_denoised"),
                        answer = gc.tensor_input<float>("slg_model_out");
    guidance_inputs<float, R> in{x.as<R>(), sigma.as<1>(), gc.scalar<double>("cond_scale", 1.0),
                                 gc.scalar<bool>("uncond_is_none", false)};
    const model_sampling ms = sampling_of(gc);
    in.prediction = ms.prediction();
    in.sampling = &ms;
    tensor<float> denoised(cond.shape()); // checked as the dispatcher checks a step's cfg inputs
    detail::validate_cfg_inputs<float, R>(in, cond.as<R>(), uncond.as<R>(), denoised.as<R>(), P::descriptor().class_type);
    kernels::cfg_combine<float, R>(cond.as<R>(), uncond.as<R>(), in.cond_scale, denoised.as<R>());
    conformance::put(out, "cfg_result_in", denoised);
    const auto window = window_bounds::of(detail::own_window_of(patch), ms);
    int reruns = 0;
    const auto layers = patch.skipped();
    if (window.contains(static_cast<double>(sigma[0]))) {
        no_state st;
        patch.post_cfg_with(st, in, cond.as<R>(), denoised.as<R>(),
                            [&](const call_overrides<float>& skips, view<float, R>) -> view<const float, R> {
                                ++reruns;
                                call_overrides<float> listed;
                                layers.request(listed);
                                for (int i = 0; i < 256; ++i)
                                    for (auto k : {dit_block_site::kind::double_block, dit_block_site::kind::single_block})
                                        require(skips.skips({k, i}) == listed.skips({k, i}), "conformance",
                                                "the re-run skips other blocks than the patch lists");
                                return answer.as<R>();
                            });
    }
    conformance::put(out, "result", denoised);
    out["rerun"] = e2e::int_array({1}, {reruns});
    put_skipped(out, layers, reruns > 0);
}

template <class P>
void rerun_case(const golden_case& gc, results& out, const P& patch) {
    const auto rank = gc.input("x").shape.size();
    if (rank == 4) run_rerun_case<4>(gc, out, patch);
    else if (rank == 5) run_rerun_case<5>(gc, out, patch);
    else fail("conformance", "x must be 4-D or 5-D, got rank " + std::to_string(rank));
}

/// The sampler's model call with SkipLayerGuidanceDiTSimple: one guided step of the guider on
/// the lookup model (positive: model_cond / model_cond_skip, negative: model_uncond /
/// model_uncond_skip). The guider skips the negative pass at cond_scale 1, as ComfyUI.
template <std::size_t R>
void run_calc_cond_batch(const golden_case& gc, results& out) {
    conformance::not_staged("SkipLayerGuidanceDiTSimple only changes which layers the model runs for the negative "
                            "prompt (a pass composition): it computes nothing in the cfg stage, and the model's "
                            "predictions are float32");
    const auto patch = simple_from(gc);
    const tensor<float> x = gc.tensor_input<float>("x"), sigma = gc.tensor_input<float>("sigma");
    const tensor<float> mc = gc.tensor_input<float>("model_cond"), mu = gc.tensor_input<float>("model_uncond"),
                        mcs = gc.tensor_input<float>("model_cond_skip"), mus = gc.tensor_input<float>("model_uncond_skip");
    e2e::skip_gaussian model(std::nullopt);
    const e2e::skip_prompt positive{examples::toy_prompt(mc.as<R>()), examples::toy_prompt(mcs.as<R>())};
    const e2e::skip_prompt negative{examples::toy_prompt(mu.as<R>()), examples::toy_prompt(mus.as<R>())};
    const guider<e2e::skip_gaussian, skip_layer_guidance_dit_simple> g(model, sampling_of(gc), patch);
    auto run = g.begin_run(&positive, &negative);
    tensor<float> denoised(x.shape());
    g.denoise(run, step_inputs<float, R>{x.as<R>(), sigma.as<1>(), gc.scalar<double>("cond_scale", 1.0)},
              denoised.as<R>());
    conformance::put(out, "cond_out", model.last_cond);
    tensor<float> uncond_out(x.shape()); // a prompt the sampler dropped is zeros
    if (model.last_uncond.rank() != 0) uncond_out = model.last_uncond;
    conformance::put(out, "uncond_out", uncond_out);
    conformance::put(out, "denoised", denoised);
    std::vector<long long> rows;
    for (const auto& r : model.rows) rows.insert(rows.end(), {r.positive, r.negative, r.skipped});
    out["model_calls"] = e2e::int_array({static_cast<index_t>(model.rows.size()), 3}, rows);
    put_skipped(out, patch.skipped(), model.skipping_calls() > 0);
}

/// NAG's attention-output patch on a batch of chunks (ComfyUI's call); `z_final` is the guided
/// positive chunk restricted to img_slice.
void run_nag(const golden_case& gc, results& out) {
    const normalized_attention_guidance p{gc.param<double>("nag_scale", 5.0), gc.param<double>("nag_alpha", 0.5),
                                          gc.param<double>("nag_tau", 1.5)};
    tensor<float> attn = gc.tensor_input<float>("attn");
    const auto chunks = gc.scalars().at("cond_or_uncond").get<std::vector<int>>();
    std::optional<std::pair<index_t, index_t>> img;
    if (gc.scalars().contains("img_slice") && !gc.scalars().at("img_slice").is_null()) {
        const auto s = gc.scalars().at("img_slice").get<std::vector<index_t>>();
        require(s.size() == 2, "conformance", "img_slice must be [first, end]");
        img = std::pair<index_t, index_t>{s[0], s[1]};
    }
    const bool guided = conformance::nag_apply_chunks<float>(p, attn.as<3>(), chunks, img);
    conformance::put(out, "result", attn);
    if (!guided) return;
    const index_t n = attn.extent(0) / static_cast<index_t>(chunks.size());
    const auto pos = static_cast<index_t>(std::find(chunks.begin(), chunks.end(), 0) - chunks.begin());
    const index_t first = img ? img->first : 0, end = img ? img->second : attn.extent(1);
    tensor<float> z({n, end - first, attn.extent(2)});
    for (index_t b = 0; b < n; ++b)
        for (index_t t = first; t < end; ++t)
            for (index_t f = 0; f < attn.extent(2); ++f) z.as<3>()(b, t - first, f) = attn.as<3>()(pos * n + b, t, f);
    conformance::put(out, "z_final", z);
}

} // namespace

PATCHBAY_CONFORMANCE("SkipLayerGuidanceDiT", "sampler_post_cfg_function") { rerun_case(gc, out, slg_from(gc)); }

// SkipLayerGuidanceSD3 is the SkipLayerGuidanceDiT it builds (as ComfyUI's node), checked as itself.
PATCHBAY_CONFORMANCE("SkipLayerGuidanceSD3", "sampler_post_cfg_function") {
    const auto p = sd3_from(gc);
    validate(p);
    rerun_case(gc, out, p.as_dit());
}

PATCHBAY_CONFORMANCE("SkipLayerGuidanceDiTSimple", "sampler_calc_cond_batch_function") {
    const auto rank = gc.input("x").shape.size();
    if (rank == 4) run_calc_cond_batch<4>(gc, out);
    else if (rank == 5) run_calc_cond_batch<5>(gc, out);
    else fail("conformance", "x must be 4-D or 5-D, got rank " + std::to_string(rank));
}

PATCHBAY_CONFORMANCE("NAGuidance", "attn1_output_patch") { run_nag(gc, out); }

PATCHBAY_CONFORMANCE("SkipLayerGuidanceDiT", "e2e.sample_euler") { e2e::run_skip_layer(gc, out, slg_from(gc)); }

PATCHBAY_CONFORMANCE("SkipLayerGuidanceSD3", "e2e.sample_euler") { e2e::run_skip_layer(gc, out, sd3_from(gc)); }

PATCHBAY_CONFORMANCE("SkipLayerGuidanceDiTSimple", "e2e.sample_euler") { e2e::run_skip_layer(gc, out, simple_from(gc)); }

} // namespace conformance_cases_network
