// patchbay conformance: the end-to-end harness of the `e2e.sample_euler` golden cases.
//
// A case names a model sampling, a toy Gaussian model (golden README, e2e.sample_euler) and a
// schedule; e2e::run builds the model sampling, the toy model with the cond and uncond means
// as its two prompts, a guider over the given patches, and runs the library's own sampler on
// the case's noise, latent image and (for inpainting) denoise mask. It records `samples`,
// `trajectory` (x before step 0 and after every step) and `denoised` (the sampler's guided
// prediction per step). An ancestral sampler takes eta / s_noise from the case's scalars and
// the k-th noise it draws from the input `step_noise` (row k), when the case has them.
// Register a patch's e2e cases with
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

/// A (steps, ...) float output from per-step tensors.
inline npy::array stacked(const std::vector<tensor<float>>& steps) {
    npy::array a;
    a.type = npy::dtype::f4;
    a.shape = {static_cast<index_t>(steps.size())};
    if (!steps.empty()) a.shape.insert(a.shape.end(), steps[0].shape().begin(), steps[0].shape().end());
    for (const auto& t : steps) a.values.insert(a.values.end(), t.data(), t.data() + t.size());
    return a;
}

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

/// The sampler's run of guider g from the case's scalars; stores `samples`, `trajectory` (x
/// before each step, then the final x before the inverse noise scaling) and `denoised` (each
/// step's guided prediction). eta / s_noise come from the case's scalars, an ancestral sampler's
/// noise from its `step_noise` rows when it has them.
template <std::size_t R, class G>
void sample_case(const golden_case& gc, results& out, const G& g, typename G::run_state& run_state,
                 sample_inputs<float, R> in, const char* where) {
    const auto& shape = in.noise.extents();
    std::vector<tensor<float>> xs, denoised;
    auto record = [&](const step_report<float, R>& r) {
        xs.push_back(tensor<float>::copy_of(r.x));
        if (r.step < r.steps) denoised.push_back(tensor<float>::copy_of(r.denoised));
    };
    sample_options<float, R> opt;
    opt.progress = callback<void(const step_report<float, R>&)>::to(record);
    opt.eta = gc.scalar<double>("eta", opt.eta);
    opt.s_noise = gc.scalar<double>("s_noise", opt.s_noise);
    // the recorded noise: row k is what ComfyUI's noise sampler returned at its k-th call
    const tensor<float> noise_rows = gc.has_input("step_noise") ? gc.tensor_input<float>("step_noise")
                                                                : tensor<float>();
    index_t draws = 0;
    auto recorded_noise = [&](double, double, view<float, R> n) {
        require(noise_rows.rank() == R + 1 && draws < noise_rows.shape()[0] &&
                    noise_rows.size() / noise_rows.shape()[0] == n.size(),
                where, "the sampler drew more noise than the case's step_noise holds, or of another shape");
        kernels::copy<float, R>(view<const float, R>(noise_rows.data() + draws * n.size(), n.extents()), n);
        ++draws;
    };
    if (noise_rows.rank() != 0) opt.noise_source = callback<void(double, double, view<float, R>)>::to(recorded_noise);
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
    tensor<float> samples(std::vector<index_t>(shape.begin(), shape.end()));
    const auto status = sample(gc.scalar<std::string>("sampler", "euler"), g, run_state, in, samples.as<R>(), opt);
    require(status == sample_status::completed, where, "the sampler did not complete");
    conformance::put(out, "samples", samples);
    out["trajectory"] = stacked(xs);
    out["denoised"] = stacked(denoised);
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
