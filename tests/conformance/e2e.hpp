// patchbay conformance: the end-to-end harness of the `e2e.sample_euler` golden cases.
//
// A case names a model sampling, a toy Gaussian model (golden README, e2e.sample_euler) and a
// schedule; e2e::run builds the model sampling, the toy model with the cond and uncond means
// as its two prompts, a guider over the given patches, and runs the library's own sampler on
// the case's noise, latent image and (for inpainting) denoise mask. It records `samples` and
// `trajectory` (x before step 0 and after every step). Register a patch's e2e cases with
//   PATCHBAY_CONFORMANCE("APG", "e2e.sample_euler") { e2e::run(gc, out, apg{...}); }
#pragma once

#include <string>
#include <vector>

#include "patchbay/core/guider.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "registry.hpp"
#include "toy_gaussian.hpp"

namespace patchbay::e2e {

using conformance::golden_case;
using conformance::results;

/// Run the case's sampler with a guider over `patches` and store samples and trajectory.
template <class... Patches>
void run(const golden_case& gc, results& out, Patches... patches) {
    constexpr std::string_view where = "e2e::run";
    const auto sigmas_f = gc.tensor_input<double>("sigmas");
    const std::vector<double> sigmas(sigmas_f.data(), sigmas_f.data() + sigmas_f.size());
    const tensor<float> noise = gc.tensor_input<float>("noise");
    require(noise.rank() == 4, where, "the e2e harness runs 4-D latents");
    const tensor<float> latent = gc.has_input("latent_image") ? gc.tensor_input<float>("latent_image")
                                                              : tensor<float>();
    const tensor<float> mask = gc.has_input("denoise_mask") ? gc.tensor_input<float>("denoise_mask")
                                                            : tensor<float>();
    const tensor<float> mu_cond = gc.tensor_input<float>("mu_cond");
    const tensor<float> mu_uncond = gc.tensor_input<float>("mu_uncond");

    const model_sampling ms =
        model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete"));
    const examples::toy_gaussian model(examples::toy_kind_from(gc.scalar<std::string>("toy_kind", "vp")),
                                       gc.scalar<double>("toy_data_std", 1.0));
    const examples::toy_prompt positive(mu_cond.as<4>());
    const examples::toy_prompt negative(mu_uncond.as<4>());

    const guider<const examples::toy_gaussian, Patches...> g(model, ms, std::move(patches)...);
    auto run_state = g.begin_run(&positive, &negative);

    const index_t steps = static_cast<index_t>(sigmas.size()) - 1;
    std::vector<index_t> traj_shape{steps + 1};
    traj_shape.insert(traj_shape.end(), noise.shape().begin(), noise.shape().end());
    tensor<float> trajectory(traj_shape);
    const index_t item = noise.size();
    // x before each step comes from the progress report; the final report is x after the last
    // step (before inverse noise scaling)
    auto record = [&](const step_report<float, 4>& r) {
        tensor<float> x = tensor<float>::copy_of(r.x);
        std::copy(x.data(), x.data() + item, trajectory.data() + r.step * item);
    };
    sample_options<float, 4> opt;
    opt.progress = callback<void(const step_report<float, 4>&)>::to(record);

    sample_inputs<float, 4> in;
    in.noise = noise.as<4>();
    if (latent.rank() != 0) in.latent_image = latent.as<4>();
    if (mask.rank() != 0) in.denoise_mask = mask.as<4>();
    in.sigmas = sigmas;
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0);

    tensor<float> samples(noise.shape());
    const auto status = sample(gc.scalar<std::string>("sampler", "euler"), g, run_state, in,
                               samples.as<4>(), opt);
    require(status == sample_status::completed, where, "the sampler did not complete");
    conformance::put(out, "samples", samples);
    conformance::put(out, "trajectory", trajectory);
}

} // namespace patchbay::e2e
