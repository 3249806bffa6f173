// Conformance handlers: RescaleCFG, RenormCFG (sampler cfg function) and CFGNorm (post-CFG, or
// with pre_cfg the sampler cfg function).
#include <cstddef>
#include <string>
#include <vector>

#include "e2e.hpp"
#include "registry.hpp"
#include "storage.hpp"

#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/cfg/renorm_cfg.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"

namespace conformance_cases_cfg_mods {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

/// The prediction type of the model a case names in its `model_sampling` scalar; a missing
/// scalar means a non-flow (eps) model, as the golden README says.
prediction_type prediction_of(const golden_case& gc) {
    const std::string ms = gc.scalar<std::string>("model_sampling", "");
    return ms.empty() ? prediction_type::eps : model_sampling::from_comfy(ms).prediction();
}

struct case_tensors {
    tensor<float> x, sigma, cond, uncond;
    explicit case_tensors(const golden_case& gc)
        : x(gc.tensor_input<float>("x")), sigma(gc.tensor_input<float>("sigma")),
          cond(gc.tensor_input<float>("cond_denoised")), uncond(gc.tensor_input<float>("uncond_denoised")) {}

    template <std::size_t R>
    guidance_inputs<float, R> inputs(const golden_case& gc) {
        guidance_inputs<float, R> in;
        in.x = x.as<R>();
        in.sigma = sigma.as<1>();
        in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
        in.uncond_is_none = gc.scalar<bool>("uncond_is_none", false);
        in.prediction = prediction_of(gc);
        return in;
    }
};

/// A cfg-function patch: `denoised` from the patch, `cfg_function_return` = x - denoised
/// (what ComfyUI's hook returns).
template <std::size_t R, class P>
void run_cfg_function(const golden_case& gc, results& out, const P& patch) {
    case_tensors t(gc);
    auto in = t.inputs<R>(gc);
    tensor<float> denoised(t.cond.shape());
    state_t<P> state{};
    // the checked entry point: bad inputs are refused there, once, as the dispatcher does
    conformance::apply_cfg_function<P, float, R>(patch, state, in, t.cond.as<R>(), t.uncond.as<R>(), denoised.as<R>());
    tensor<float> ret(t.cond.shape());
    kernels::transform(ret.as<R>(), [](auto x, auto d) { return x - d; }, t.x.as<R>(),
                       view<const float, R>(denoised.as<R>()));
    conformance::put(out, "denoised", denoised);
    conformance::put(out, "cfg_function_return", ret);
}

template <class P>
void cfg_function_case(const golden_case& gc, results& out, const P& patch) {
    const auto rank = gc.tensor_input<float>("cond_denoised").rank();
    if (rank == 4) run_cfg_function<4>(gc, out, patch);
    else if (rank == 5) run_cfg_function<5>(gc, out, patch);
    else fail("conformance", "cond_denoised must be 4-D or 5-D, got rank " + std::to_string(rank));
}

/// A post-CFG patch: `cfg_result_in` is the plain CFG result it is handed, `result` what it
/// returns.
template <std::size_t R, class P>
void run_post_cfg(const golden_case& gc, results& out, const P& patch) {
    case_tensors t(gc);
    auto in = t.inputs<R>(gc);
    tensor<float> denoised(t.cond.shape());
    if (t.uncond.shape() == t.cond.shape())
        kernels::cfg_combine<float, R>(t.cond.as<R>(), t.uncond.as<R>(), in.cond_scale, denoised.as<R>());
    else // the patch must reject the mismatch; hand it something of cond's shape
        denoised = t.cond;
    const tensor<float> cfg_in = denoised;
    state_t<P> state{};
    conformance::apply_post_cfg<P, float, R>(patch, state, in, t.cond.as<R>(), t.uncond.as<R>(), denoised.as<R>());
    conformance::put(out, "cfg_result_in", cfg_in);
    conformance::put(out, "result", denoised);
}

template <class P>
void post_cfg_case(const golden_case& gc, results& out, const P& patch) {
    const auto rank = gc.tensor_input<float>("cond_denoised").rank();
    if (rank == 4) run_post_cfg<4>(gc, out, patch);
    else if (rank == 5) run_post_cfg<5>(gc, out, patch);
    else fail("conformance", "cond_denoised must be 4-D or 5-D, got rank " + std::to_string(rank));
}

rescale_cfg rescale_from(const golden_case& gc) {
    return rescale_cfg{.multiplier = gc.param<double>("multiplier", 0.7)};
}

renorm_cfg renorm_from(const golden_case& gc) {
    return renorm_cfg{.cfg_trunc = gc.param<double>("cfg_trunc", 100.0),
                      .renorm_cfg = gc.param<double>("renorm_cfg", 1.0),
                      .in_channels = gc.scalar<index_t>("in_channels", 0)};
}

cfg_norm cfg_norm_from(const golden_case& gc) {
    return cfg_norm{.strength = gc.param<double>("strength", 1.0),
                    .pre_cfg = gc.param<bool>("pre_cfg", false)};
}

} // namespace

PATCHBAY_CONFORMANCE("RescaleCFG", "sampler_cfg_function") { cfg_function_case(gc, out, rescale_from(gc)); }

PATCHBAY_CONFORMANCE("RenormCFG", "sampler_cfg_function") { cfg_function_case(gc, out, renorm_from(gc)); }

// End-to-end Euler runs through the library's guider (prediction type from the case's model
// sampling, so RescaleCFG takes its flow branch for ModelSamplingSD3).
PATCHBAY_CONFORMANCE("RescaleCFG", "e2e.sample_euler") { e2e::run(gc, out, rescale_from(gc)); }

PATCHBAY_CONFORMANCE("RenormCFG", "e2e.sample_euler") { e2e::run(gc, out, renorm_from(gc)); }

PATCHBAY_CONFORMANCE("CFGNorm", "e2e.sample_euler") { e2e::run(gc, out, cfg_norm_from(gc)); }

// pre_cfg = true: ComfyUI installs a sampler cfg function (cases `pre-cfg-*`).
PATCHBAY_CONFORMANCE("CFGNorm", "sampler_cfg_function") {
    const cfg_norm p = cfg_norm_from(gc);
    if (!p.pre_cfg) fail("CFGNorm", "a sampler_cfg_function case needs pre_cfg = true");
    cfg_function_case(gc, out, p);
}

PATCHBAY_CONFORMANCE("CFGNorm", "sampler_post_cfg_function") {
    const cfg_norm p = cfg_norm_from(gc);
    if (p.pre_cfg) cfg_function_case(gc, out, p);
    else post_cfg_case(gc, out, p);
}

} // namespace conformance_cases_cfg_mods
