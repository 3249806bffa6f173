// patchbay conformance: the end-to-end harness of the three-prompt cases (PerpNeg, PerpNegGuider,
// DualCFGGuider). As e2e.hpp, with the toy model's third prompt: the run's extra conditioning
// (begin_run's third argument) is the Gaussian with mean `extra_mu` (mu_empty: Perp-Neg's empty
// prompt; mu_middle: Dual CFG's cond2). Records `samples` and `trajectory` like e2e::run.
#pragma once

#include <algorithm>
#include <string>
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
    const guider<const examples::toy_gaussian, Patch> g(model, ms, std::move(patch));
    auto run_state = g.begin_run(&positive, &negative, &extra);

    npy::array trajectory;
    trajectory.type = npy::dtype::f4;
    trajectory.shape = {static_cast<index_t>(sigmas.size())};
    trajectory.shape.insert(trajectory.shape.end(), noise.shape().begin(), noise.shape().end());
    trajectory.values.resize(sigmas.size() * static_cast<std::size_t>(noise.size()));
    auto record = [&](const step_report<float, R>& r) { // x before each step, then the final x
        const tensor<float> x = tensor<float>::copy_of(r.x);
        std::copy(x.data(), x.data() + x.size(),
                  trajectory.values.begin() + static_cast<std::ptrdiff_t>(r.step) * x.size());
    };
    sample_options<float, R> opt;
    opt.progress = callback<void(const step_report<float, R>&)>::to(record);
    sample_inputs<float, R> in;
    in.noise = noise.as<R>();
    in.latent_image = latent.as<R>();
    in.sigmas = sigmas;
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0); // guiders carry their scales as params

    tensor<float> samples(noise.shape());
    const auto status = sample(gc.scalar<std::string>("sampler", "euler"), g, run_state, in, samples.as<R>(), opt);
    require(status == sample_status::completed, "e2e::run_three_prompts", "the sampler did not complete");
    conformance::put(out, "samples", samples);
    out["trajectory"] = std::move(trajectory);
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
