// patchbay conformance: the end-to-end harness of the `e2e.sample_euler` golden cases.
//
// A case names a model sampling, a toy Gaussian model (golden README, e2e.sample_euler) and a
// schedule; e2e::run builds the model sampling, the toy model with the cond and uncond means
// as its two prompts, a guider over the given patches, and runs the library's own sampler on
// the case's noise, latent image and (for inpainting) denoise mask. It records `samples` and
// `trajectory` (x before step 0 and after every step). Register a patch's e2e cases with
//   PATCHBAY_CONFORMANCE("APG", "e2e.sample_euler") { e2e::run(gc, out, apg{...}); }
// Under the runner's --batched-passes the model is given predict_batch (test::prompt_batcher),
// so the guider evaluates the prompts of each step in one call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "patchbay/core/guider.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "prompt_batcher.hpp"
#include "registry.hpp"
#include "toy_gaussian.hpp"

namespace patchbay::e2e {

using conformance::golden_case;
using conformance::results;

/// Call f with the model, or under --batched-passes with it given predict_batch
/// (test::prompt_batcher: the prompts of a step in one call, counted in options().batched_calls).
template <class M, class F>
void with_model(M& model, F&& f) {
    if (conformance::options().batched_passes) {
        const test::prompt_batcher<M> batched{&model, &conformance::options().batched_calls};
        f(batched);
    } else {
        f(model);
    }
}

namespace detail {

/// The sampler's run of guider g from the case's scalars; stores `samples` and `trajectory`
/// (x before each step, then the final x before the inverse noise scaling).
template <std::size_t R, class G>
void sample_case(const golden_case& gc, results& out, const G& g, typename G::run_state& run_state,
                 sample_inputs<float, R> in, const char* where) {
    const std::size_t steps = in.sigmas.size() - 1;
    const auto& shape = in.noise.extents();
    npy::array trajectory;
    trajectory.type = npy::dtype::f4;
    trajectory.shape = {static_cast<index_t>(steps + 1)};
    trajectory.shape.insert(trajectory.shape.end(), shape.begin(), shape.end());
    trajectory.values.resize((steps + 1) * static_cast<std::size_t>(in.noise.size()));
    auto record = [&](const step_report<float, R>& r) { // rank R + 1, so stored directly
        const tensor<float> x = tensor<float>::copy_of(r.x);
        std::copy(x.data(), x.data() + x.size(),
                  trajectory.values.begin() + static_cast<std::ptrdiff_t>(r.step) * x.size());
    };
    sample_options<float, R> opt;
    opt.progress = callback<void(const step_report<float, R>&)>::to(record);
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
    tensor<float> samples(std::vector<index_t>(shape.begin(), shape.end()));
    const auto status = sample(gc.scalar<std::string>("sampler", "euler"), g, run_state, in, samples.as<R>(), opt);
    require(status == sample_status::completed, where, "the sampler did not complete");
    conformance::put(out, "samples", samples);
    out["trajectory"] = std::move(trajectory);
}

template <std::size_t R, class... Patches>
void run_rank(const golden_case& gc, results& out, Patches... patches) {
    const auto sigmas_f = gc.tensor_input<double>("sigmas");
    const std::vector<double> sigmas(sigmas_f.data(), sigmas_f.data() + sigmas_f.size());
    const tensor<float> noise = gc.tensor_input<float>("noise");
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
    const examples::toy_prompt positive(mu_cond.as<R>());
    const examples::toy_prompt negative(mu_uncond.as<R>());

    sample_inputs<float, R> in;
    in.noise = noise.as<R>();
    if (latent.rank() != 0) in.latent_image = latent.as<R>();
    if (mask.rank() != 0) in.denoise_mask = mask.as<R>();
    in.sigmas = sigmas;
    with_model(model, [&](auto& m) {
        const guider<std::remove_reference_t<decltype(m)>, Patches...> g(m, ms, patches...);
        auto run_state = g.begin_run(&positive, &negative);
        sample_case<R>(gc, out, g, run_state, in, "e2e::run");
    });
}

} // namespace detail

/// Run the case's sampler with a guider over `patches` and store samples and trajectory.
/// Latents may be 4-D (N,C,H,W) or 5-D (N,C,T,H,W).
template <class... Patches>
void run(const golden_case& gc, results& out, Patches... patches) {
    const auto rank = gc.input("noise").shape.size();
    if (rank == 4) detail::run_rank<4>(gc, out, std::move(patches)...);
    else if (rank == 5) detail::run_rank<5>(gc, out, std::move(patches)...);
    else fail("e2e::run", "the e2e harness runs 4-D or 5-D latents, got rank " + std::to_string(rank));
}

} // namespace patchbay::e2e
