// patchbay conformance: the end-to-end harness of the three-prompt cases (PerpNeg, PerpNegGuider,
// DualCFGGuider). As e2e.hpp, with the toy model's third prompt: the run's extra conditioning
// (begin_run's third argument) is the Gaussian with mean `extra_mu` (mu_empty: Perp-Neg's empty
// prompt; mu_middle: Dual CFG's cond2). Records `samples` and `trajectory` like e2e::run, and
// batches the prompts under --batched-passes as it does.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "e2e.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "registry.hpp"
#include "toy_gaussian.hpp"

namespace patchbay::e2e {

namespace detail {

template <std::size_t R, class Patch>
void run_three_rank(const golden_case& gc, results& out, const std::string& extra_mu, Patch patch) {
    const auto sigmas_d = gc.tensor_input<double>("sigmas");
    const std::vector<double> sigmas(sigmas_d.data(), sigmas_d.data() + sigmas_d.size());
    const tensor<float> noise = gc.tensor_input<float>("noise");
    const tensor<float> latent = gc.tensor_input<float>("latent_image");
    const tensor<float> mu_cond = gc.tensor_input<float>("mu_cond"), mu_uncond = gc.tensor_input<float>("mu_uncond"),
                        mu_extra = gc.tensor_input<float>(extra_mu);
    const examples::toy_gaussian model(examples::toy_kind_from(gc.scalar<std::string>("toy_kind", "vp")),
                                       gc.scalar<double>("toy_data_std", 1.0));
    const examples::toy_prompt positive(mu_cond.as<R>()), negative(mu_uncond.as<R>()), extra(mu_extra.as<R>());
    const auto ms = model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete"));
    sample_inputs<float, R> in;
    in.noise = noise.as<R>();
    in.latent_image = latent.as<R>();
    in.sigmas = sigmas;
    with_model(model, [&](auto& m) {
        const guider<std::remove_reference_t<decltype(m)>, Patch> g(m, ms, patch);
        auto run_state = g.begin_run(&positive, &negative, &extra);
        sample_case<R>(gc, out, g, run_state, in, "e2e::run_three_prompts");
    });
}

} // namespace detail

/// Run the case's sampler with a guider over `patch` and the toy model's three prompts
/// (positive mu_cond, negative mu_uncond, extra `extra_mu`).
template <class Patch>
void run_three_prompts(const golden_case& gc, results& out, const std::string& extra_mu, Patch patch) {
    const auto rank = gc.input("noise").shape.size();
    if (rank == 4) detail::run_three_rank<4>(gc, out, extra_mu, std::move(patch));
    else if (rank == 5) detail::run_three_rank<5>(gc, out, extra_mu, std::move(patch));
    else fail("e2e::run_three_prompts", "the e2e harness runs 4-D or 5-D latents, got rank " + std::to_string(rank));
}

} // namespace patchbay::e2e
