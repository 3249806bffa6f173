// Conformance handlers: APG, TCFG (pre-CFG) and Mahiro (post-CFG).
#include <cstddef>
#include <vector>

#include "e2e.hpp"
#include "registry.hpp"
#include "storage.hpp"

#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"

namespace conformance_cases_guidance {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

/// Rank of a case's latent tensors (4 or 5), from the cond input.
std::size_t latent_rank(const golden_case& gc, const char* name, std::size_t extra = 0) {
    const auto r = gc.tensor_input<float>(name).rank();
    if (r != 4 + extra && r != 5 + extra)
        fail("conformance", "latent input '" + std::string(name) + "' has unexpected rank " + std::to_string(r));
    return r - extra;
}

/// Runs one pre-CFG patch call (through the checked entry point, which validates the
/// parameters and inputs as the step does) and fills cond_out / uncond_out / denoised.
template <std::size_t R, class P>
void run_pre_cfg(const golden_case& gc, results& out, const P& patch, state_t<P>& state) {
    auto x = gc.tensor_input<float>("x");
    auto sigma = gc.tensor_input<float>("sigma");
    auto cond = gc.tensor_input<float>("cond_denoised");
    auto uncond = gc.tensor_input<float>("uncond_denoised");
    guidance_inputs<float, R> in;
    in.x = x.as<R>();
    in.sigma = sigma.as<1>();
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
    in.uncond_is_none = gc.scalar<bool>("uncond_is_none", false);
    conformance::apply_pre_cfg(patch, state, in, cond.as<R>(), uncond.as<R>());
    tensor<float> denoised(cond.shape());
    kernels::cfg_combine<float, R>(cond.as<R>(), uncond.as<R>(), in.cond_scale, denoised.as<R>());
    conformance::put(out, "cond_out", cond);
    conformance::put(out, "uncond_out", uncond);
    conformance::put(out, "denoised", denoised);
}

template <class P>
void pre_cfg_case(const golden_case& gc, results& out, const P& patch) {
    state_t<P> state{};
    if (latent_rank(gc, "cond_denoised") == 4) run_pre_cfg<4>(gc, out, patch, state);
    else run_pre_cfg<5>(gc, out, patch, state);
}

apg apg_from(const golden_case& gc) {
    return apg{.eta = gc.param<double>("eta", 1.0),
               .norm_threshold = gc.param<double>("norm_threshold", 5.0),
               .momentum = gc.param<double>("momentum", 0.0)};
}

/// APG over a leading step axis: one state for all steps, sigma = sigmas[step] per item.
template <std::size_t R>
void apg_sequence(const golden_case& gc, results& out, const apg& patch) {
    auto x = gc.tensor_input<float>("x");
    auto sigmas = gc.tensor_input<float>("sigmas");
    auto cond = gc.tensor_input<float>("cond_denoised");
    auto uncond = gc.tensor_input<float>("uncond_denoised");
    const double cond_scale = gc.scalar<double>("cond_scale", 1.0);
    const index_t steps = cond.extent(0);
    require(sigmas.size() == steps && x.extent(0) == steps && uncond.extent(0) == steps,
            "conformance", "sequence inputs must share the step axis");
    // every step's views are built with cond's shape below, so the shapes must match exactly
    if (x.shape() != cond.shape() || uncond.shape() != cond.shape())
        fail("APG", "tensors 'x' and 'uncond_denoised' must have the shape of 'cond_denoised'");
    std::vector<index_t> step_shape(cond.shape().begin() + 1, cond.shape().end());
    std::array<index_t, R> ext{};
    std::copy(step_shape.begin(), step_shape.end(), ext.begin());
    const index_t per_step = cond.size() / steps;
    tensor<float> denoised(cond.shape());
    tensor<float> sigma_vec({ext[0]});
    apg::state_type state{};
    for (index_t s = 0; s < steps; ++s) {
        sigma_vec.fill(sigmas[s]);
        guidance_inputs<float, R> in;
        in.x = view<const float, R>(x.data() + s * per_step, ext);
        in.sigma = sigma_vec.as<1>();
        in.cond_scale = cond_scale;
        view<float, R> c(cond.data() + s * per_step, ext), u(uncond.data() + s * per_step, ext);
        conformance::apply_pre_cfg(patch, state, in, c, u);
        kernels::cfg_combine<float, R>(c, u, cond_scale, view<float, R>(denoised.data() + s * per_step, ext));
    }
    conformance::put(out, "cond_out", cond);
    conformance::put(out, "uncond_out", uncond);
    conformance::put(out, "denoised", denoised);
}

template <std::size_t R>
void mahiro_case(const golden_case& gc, results& out) {
    auto x = gc.tensor_input<float>("x");
    auto sigma = gc.tensor_input<float>("sigma");
    auto cond = gc.tensor_input<float>("cond_denoised");
    auto uncond = gc.tensor_input<float>("uncond_denoised");
    guidance_inputs<float, R> in;
    in.x = x.as<R>();
    in.sigma = sigma.as<1>();
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
    in.uncond_is_none = gc.scalar<bool>("uncond_is_none", false);
    // the plain CFG below needs matching shapes; apply_post_cfg checks everything else
    require_same_shape(cond.as<R>(), uncond.as<R>(), "Mahiro", "cond", "uncond");
    tensor<float> cfg(cond.shape());
    kernels::cfg_combine<float, R>(cond.as<R>(), uncond.as<R>(), in.cond_scale, cfg.as<R>());
    tensor<float> result = cfg;
    no_state st;
    conformance::apply_post_cfg(mahiro{}, st, in, cond.as<R>(), uncond.as<R>(), result.as<R>());
    conformance::put(out, "cfg_result_in", cfg);
    conformance::put(out, "result", result);
}

} // namespace

PATCHBAY_CONFORMANCE("APG", "sampler_pre_cfg_function") { pre_cfg_case(gc, out, apg_from(gc)); }

PATCHBAY_CONFORMANCE("APG", "sampler_pre_cfg_function.sequence") {
    if (latent_rank(gc, "cond_denoised", 1) == 4) apg_sequence<4>(gc, out, apg_from(gc));
    else apg_sequence<5>(gc, out, apg_from(gc));
}

PATCHBAY_CONFORMANCE("TCFG", "sampler_pre_cfg_function") { pre_cfg_case(gc, out, tcfg{}); }

PATCHBAY_CONFORMANCE("Mahiro", "sampler_post_cfg_function") {
    if (latent_rank(gc, "cond_denoised") == 4) mahiro_case<4>(gc, out);
    else mahiro_case<5>(gc, out);
}

PATCHBAY_CONFORMANCE("APG", "e2e.sample_euler") { e2e::run(gc, out, apg_from(gc)); }

PATCHBAY_CONFORMANCE("TCFG", "e2e.sample_euler") { e2e::run(gc, out, tcfg{}); }

PATCHBAY_CONFORMANCE("Mahiro", "e2e.sample_euler") { e2e::run(gc, out, mahiro{}); }

} // namespace conformance_cases_guidance
