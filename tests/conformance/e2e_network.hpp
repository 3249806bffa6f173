// patchbay conformance: the skip-layer nodes' model and end-to-end harness.
//
// skip_gaussian is the golden README's toy model for these nodes: the exact Gaussian denoiser
// of e2e.hpp, which answers with the prompt's other mean (mu_cond_skip / mu_uncond_skip) when
// the call skips any DiT block; in lookup mode it answers the prompt's recorded tensors instead
// (the sampler_calc_cond_batch_function cases). It evaluates the prompts of a step in one call
// (predict_batch) and records its calls as ComfyUI counts them: one row [positive evaluated,
// negative evaluated, blocks skipped] per group of prompts evaluated together with the same
// blocks skipped (what calc_cond_batch runs as one call). It batches with or without the
// runner's --batched-passes: the recorded rows are ComfyUI's batched calls.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "e2e.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "registry.hpp"
#include "toy_gaussian.hpp"

namespace patchbay::e2e {

/// What the model answers for one prompt, normally and with blocks skipped.
struct skip_prompt {
    examples::toy_prompt normal, skipped;
};

class skip_gaussian {
public:
    using conditioning_type = skip_prompt;
    static constexpr bool skips_blocks = true;

    struct call_row {
        bool positive = false, negative = false, skipped = false;
    };

    /// The Gaussian denoiser (lookup mode when `toy` is empty).
    explicit skip_gaussian(std::optional<examples::toy_gaussian> toy) : toy_(toy) {}

    std::vector<call_row> rows;          ///< every call, as ComfyUI's calc_cond_batch calls
    tensor<float> last_cond, last_uncond; ///< the last answers for each prompt

    template <class T, std::size_t R>
    void predict(const model_call<skip_prompt, T, R>& c, view<T, R> out) {
        const bool skipped = skips_any(*c.overrides);
        rows.push_back({c.prompt == pass_kind::cond, c.prompt == pass_kind::uncond, skipped});
        answer(c, skipped, out);
    }

    template <class T, std::size_t R>
    void predict_batch(const batched_call<skip_prompt, T, R>& c, view<T, R> out) {
        ++conformance::options().batched_calls;
        for (std::size_t i = 0; i < c.prompts.size(); ++i) {
            const auto& p = c.prompts[i];
            const bool skipped = skips_any(*p.overrides);
            if (i == 0 || rows.back().skipped != skipped) rows.push_back({false, false, skipped});
            rows.back().positive = rows.back().positive || p.prompt == pass_kind::cond;
            rows.back().negative = rows.back().negative || p.prompt == pass_kind::uncond;
            const model_call<skip_prompt, T, R> one{c.x.batch_slice(p.first, p.count), c.sigma.batch_slice(p.first, p.count),
                                                    p.pass, p.prompt, p.conditioning, p.overrides};
            answer(one, skipped, out.batch_slice(p.first, p.count));
        }
    }

    /// Calls with blocks skipped among the rows from `first` on.
    int skipping_calls(std::size_t first = 0) const {
        return static_cast<int>(std::count_if(rows.begin() + static_cast<std::ptrdiff_t>(first), rows.end(),
                                              [](const call_row& r) { return r.skipped; }));
    }

    /// Does the call skip any DiT block (indices below 256)?
    template <class T>
    static bool skips_any(const call_overrides<T>& ov) {
        for (int i = 0; i < 256; ++i)
            if (ov.skips({dit_block_site::kind::double_block, i}) || ov.skips({dit_block_site::kind::single_block, i}))
                return true;
        return false;
    }

private:
    template <class T, std::size_t R>
    void answer(const model_call<skip_prompt, T, R>& c, bool skipped, view<T, R> out) {
        const examples::toy_prompt& mu = skipped ? c.conditioning->skipped : c.conditioning->normal;
        if (toy_) {
            model_call<examples::toy_prompt, T, R> g{c.x, c.sigma, c.pass, c.prompt, &mu, nullptr};
            toy_->predict(g, out);
        } else {
            const view<const T, R> v = mu.template mu<T, R>();
            require_same_shape(c.x, v, "skip_gaussian", "x", "the recorded answer");
            kernels::copy<T, R>(v, out);
        }
        if constexpr (std::is_same_v<T, float>)
            (c.prompt == pass_kind::uncond ? last_uncond : last_cond) = tensor<float>::copy_of(view<const T, R>(out));
    }

    std::optional<examples::toy_gaussian> toy_;
};

/// An int64 output of the given shape.
inline npy::array int_array(std::vector<index_t> shape, const std::vector<long long>& values) {
    npy::array a;
    a.type = npy::dtype::i8;
    a.shape = std::move(shape);
    for (long long v : values) {
        a.values.push_back(static_cast<double>(v));
        a.ints.push_back(v);
    }
    return a;
}

namespace detail {

template <std::size_t R, class Patch>
void run_skip_layer_rank(const golden_case& gc, results& out, Patch patch) {
    const auto sigmas_d = gc.tensor_input<double>("sigmas");
    const std::vector<double> sigmas(sigmas_d.data(), sigmas_d.data() + sigmas_d.size());
    const tensor<float> noise = gc.tensor_input<float>("noise"), latent = gc.tensor_input<float>("latent_image");
    const tensor<float> mu_c = gc.tensor_input<float>("mu_cond"), mu_u = gc.tensor_input<float>("mu_uncond"),
                        mu_cs = gc.tensor_input<float>("mu_cond_skip"), mu_us = gc.tensor_input<float>("mu_uncond_skip");
    skip_gaussian model(examples::toy_gaussian(examples::toy_kind_from(gc.scalar<std::string>("toy_kind", "vp")),
                                               gc.scalar<double>("toy_data_std", 1.0)));
    const skip_prompt positive{examples::toy_prompt(mu_c.as<R>()), examples::toy_prompt(mu_cs.as<R>())};
    const skip_prompt negative{examples::toy_prompt(mu_u.as<R>()), examples::toy_prompt(mu_us.as<R>())};
    const auto ms = model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete"));
    const guider<skip_gaussian, Patch> g(model, ms, std::move(patch));
    auto run_state = g.begin_run(&positive, &negative);

    // per step: x before it, the sampler's denoised, the calls that skipped blocks; then the final x
    std::vector<tensor<float>> xs, denoised;
    std::vector<long long> skip_calls;
    std::size_t rows_seen = 0;
    auto record = [&](const step_report<float, R>& r) {
        xs.push_back(tensor<float>::copy_of(r.x));
        if (r.step == r.steps) return;
        denoised.push_back(tensor<float>::copy_of(r.denoised));
        skip_calls.push_back(model.skipping_calls(rows_seen));
        rows_seen = model.rows.size();
    };
    sample_options<float, R> opt;
    opt.progress = callback<void(const step_report<float, R>&)>::to(record);
    sample_inputs<float, R> in;
    in.noise = noise.as<R>();
    in.latent_image = latent.as<R>();
    in.sigmas = sigmas;
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
    tensor<float> samples(noise.shape());
    const auto status = sample(gc.scalar<std::string>("sampler", "euler"), g, run_state, in, samples.as<R>(), opt);
    require(status == sample_status::completed, "e2e::run_skip_layer", "the sampler did not complete");
    conformance::put(out, "samples", samples);
    out["trajectory"] = stacked(xs);
    out["denoised"] = stacked(denoised);
    out["skip_layer_calls"] = int_array({static_cast<index_t>(skip_calls.size())}, skip_calls);
}

} // namespace detail

/// An e2e.sample_euler case of a skip-layer node: the case's sampler with a guider over `patch`
/// and skip_gaussian; records samples, trajectory, per-step denoised and skip_layer_calls.
template <class Patch>
void run_skip_layer(const golden_case& gc, results& out, Patch patch) {
    const auto rank = gc.input("noise").shape.size();
    if (rank == 4) detail::run_skip_layer_rank<4>(gc, out, std::move(patch));
    else if (rank == 5) detail::run_skip_layer_rank<5>(gc, out, std::move(patch));
    else fail("e2e::run_skip_layer", "the e2e harness runs 4-D or 5-D latents, got rank " + std::to_string(rank));
}

} // namespace patchbay::e2e
