// Conformance handlers of the cfg-stage patches of the guidance wave: CFGZeroStar, Epsilon
// Scaling, TemporalScoreRescaling (post-CFG), VideoLinearCFGGuidance, VideoTriangleCFGGuidance
// (cfg functions) and LatentApplyOperationCFG (pre-CFG). Single calls go through the checked
// standalone entry points (apply_pre_cfg, apply_cfg_function, apply_post_cfg), so the bad-input
// cases meet the same checks as a sampling step; end-to-end cases run the library's guider.
// LatentApplyOperationCFG is built by the workflow importer from a two-node workflow (the patch
// node linked to its LATENT_OPERATION node), as an engine would import it.
#include <cstddef>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "e2e.hpp"
#include "registry.hpp"
#include "storage.hpp"

#include "patchbay/comfy/workflow.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/cfg/video_cfg_guidance.hpp"
#include "patchbay/patches/post_cfg/cfg_zero_star.hpp"
#include "patchbay/patches/post_cfg/epsilon_scaling.hpp"
#include "patchbay/patches/post_cfg/temporal_score_rescaling.hpp"
#include "patchbay/patches/pre_cfg/latent_apply_operation_cfg.hpp"

namespace conformance_cases_guidance_wave {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

/// The inputs of one hook call, and the model sampling the case names (TSR reads it).
struct hook_call {
    tensor<float> x, sigma, cond, uncond;
    std::optional<model_sampling> sampling;

    explicit hook_call(const golden_case& gc)
        : x(gc.tensor_input<float>("x")), sigma(gc.tensor_input<float>("sigma")),
          cond(gc.tensor_input<float>("cond_denoised")), uncond(gc.tensor_input<float>("uncond_denoised")) {
        const std::string ms = gc.scalar<std::string>("model_sampling", "");
        if (!ms.empty()) sampling = model_sampling::from_comfy(ms);
    }

    template <std::size_t R>
    guidance_inputs<float, R> inputs(const golden_case& gc) const {
        guidance_inputs<float, R> in;
        in.x = x.as<R>();
        in.sigma = sigma.as<1>();
        in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
        in.uncond_is_none = gc.scalar<bool>("uncond_is_none", false);
        if (sampling) {
            in.prediction = sampling->prediction();
            in.sampling = &*sampling;
        }
        return in;
    }
};

/// Calls run<R>() with the rank of the case's cond prediction (4 or 5).
template <class F>
void by_rank(const golden_case& gc, F&& run) {
    const auto rank = gc.input("cond_denoised").shape.size();
    if (rank == 4) run.template operator()<4>();
    else if (rank == 5) run.template operator()<5>();
    else fail("conformance", "cond_denoised must be 4-D or 5-D, got rank " + std::to_string(rank));
}

/// Post-CFG: `cfg_result_in` = the plain CFG the hook is handed, `result` = what it returns.
template <class P>
void post_cfg_case(const golden_case& gc, results& out, const P& patch) {
    hook_call t(gc);
    by_rank(gc, [&]<std::size_t R>() {
        const auto in = t.inputs<R>(gc);
        tensor<float> denoised = t.cond; // (a shape mismatch is for the hook to reject)
        if (t.uncond.shape() == t.cond.shape())
            kernels::cfg_combine<float, R>(t.cond.as<R>(), t.uncond.as<R>(), in.cond_scale, denoised.as<R>());
        const tensor<float> cfg_in = denoised;
        state_t<P> state{};
        conformance::apply_post_cfg(patch, state, in, t.cond.as<R>(), t.uncond.as<R>(), denoised.as<R>());
        conformance::put(out, "cfg_result_in", cfg_in);
        conformance::put(out, "result", denoised);
    });
}

/// cfg function: `denoised`, and `cfg_function_return` = x - denoised (ComfyUI's return value).
template <class P>
void cfg_function_case(const golden_case& gc, results& out, const P& patch) {
    hook_call t(gc);
    by_rank(gc, [&]<std::size_t R>() {
        const auto in = t.inputs<R>(gc);
        tensor<float> denoised(t.cond.shape());
        state_t<P> state{};
        conformance::apply_cfg_function(patch, state, in, t.cond.as<R>(), t.uncond.as<R>(), denoised.as<R>());
        tensor<float> ret(t.cond.shape());
        kernels::transform(ret.as<R>(), [](auto x, auto d) { return x - d; }, t.x.as<R>(),
                           view<const float, R>(denoised.as<R>()));
        conformance::put(out, "denoised", denoised);
        conformance::put(out, "cfg_function_return", ret);
    });
}

/// Pre-CFG: `cond_out`, `uncond_out` in place, `denoised` = their plain CFG.
template <class P>
void pre_cfg_case(const golden_case& gc, results& out, const P& patch) {
    hook_call t(gc);
    by_rank(gc, [&]<std::size_t R>() {
        const auto in = t.inputs<R>(gc);
        state_t<P> state{};
        conformance::apply_pre_cfg(patch, state, in, t.cond.as<R>(), t.uncond.as<R>());
        tensor<float> denoised(t.cond.shape());
        kernels::cfg_combine<float, R>(t.cond.as<R>(), t.uncond.as<R>(), in.cond_scale, denoised.as<R>());
        conformance::put(out, "cond_out", t.cond);
        conformance::put(out, "uncond_out", t.uncond);
        conformance::put(out, "denoised", denoised);
    });
}

epsilon_scaling epsilon_scaling_from(const golden_case& gc) {
    return {.scaling_factor = gc.param<double>("scaling_factor", 1.005)};
}

temporal_score_rescaling tsr_from(const golden_case& gc) {
    return {.tsr_k = gc.param<double>("tsr_k", 0.95), .tsr_sigma = gc.param<double>("tsr_sigma", 1.0)};
}

/// The case's LatentApplyOperationCFG through the workflow importer: params name the
/// operation node's class_type ("operation") and carry that node's inputs.
latent_apply_operation_cfg latent_operation_from(const golden_case& gc) {
    using json = nlohmann::json;
    json op_inputs = gc.params();
    op_inputs.erase("operation");
    json wf = json::object();
    wf["1"] = {{"class_type", "CheckpointLoaderSimple"}, {"inputs", {{"ckpt_name", "model.safetensors"}}}};
    wf["2"] = {{"class_type", gc.params().at("operation")}, {"inputs", op_inputs}};
    wf["3"] = {{"class_type", "LatentApplyOperationCFG"},
               {"inputs", {{"model", json::array({"1", 0})}, {"operation", json::array({"2", 0})}}}};
    wf["4"] = {{"class_type", "KSampler"}, {"inputs", {{"model", json::array({"3", 0})}}}};
    comfy::import_options options;
    options.add_node<latent_apply_operation_cfg>();
    const comfy::workflow w = comfy::parse_workflow(wf, options);
    require(w.patches.size() == 1, "conformance", "the workflow holds one patch");
    return w.patches.front().config.as<latent_apply_operation_cfg>();
}

} // namespace

PATCHBAY_CONFORMANCE("CFGZeroStar", "sampler_post_cfg_function") { post_cfg_case(gc, out, cfg_zero_star{}); }
PATCHBAY_CONFORMANCE("CFGZeroStar", "e2e.sample_euler") { e2e::run(gc, out, cfg_zero_star{}); }

// The golden folder is EpsilonScaling; ComfyUI's class_type is "Epsilon Scaling".
PATCHBAY_CONFORMANCE("EpsilonScaling", "sampler_post_cfg_function") {
    post_cfg_case(gc, out, epsilon_scaling_from(gc));
}
PATCHBAY_CONFORMANCE("EpsilonScaling", "e2e.sample_euler") { e2e::run(gc, out, epsilon_scaling_from(gc)); }

PATCHBAY_CONFORMANCE("TemporalScoreRescaling", "sampler_post_cfg_function") {
    post_cfg_case(gc, out, tsr_from(gc));
}
PATCHBAY_CONFORMANCE("TemporalScoreRescaling", "e2e.sample_euler") { e2e::run(gc, out, tsr_from(gc)); }

PATCHBAY_CONFORMANCE("VideoLinearCFGGuidance", "sampler_cfg_function") {
    cfg_function_case(gc, out, video_linear_cfg_guidance{gc.param<double>("min_cfg", 1.0)});
}
PATCHBAY_CONFORMANCE("VideoLinearCFGGuidance", "e2e.sample_euler") {
    e2e::run(gc, out, video_linear_cfg_guidance{gc.param<double>("min_cfg", 1.0)});
}
PATCHBAY_CONFORMANCE("VideoTriangleCFGGuidance", "sampler_cfg_function") {
    cfg_function_case(gc, out, video_triangle_cfg_guidance{gc.param<double>("min_cfg", 1.0)});
}
PATCHBAY_CONFORMANCE("VideoTriangleCFGGuidance", "e2e.sample_euler") {
    e2e::run(gc, out, video_triangle_cfg_guidance{gc.param<double>("min_cfg", 1.0)});
}

PATCHBAY_CONFORMANCE("LatentApplyOperationCFG", "sampler_pre_cfg_function") {
    pre_cfg_case(gc, out, latent_operation_from(gc));
}
PATCHBAY_CONFORMANCE("LatentApplyOperationCFG", "e2e.sample_euler") { e2e::run(gc, out, latent_operation_from(gc)); }

} // namespace conformance_cases_guidance_wave
