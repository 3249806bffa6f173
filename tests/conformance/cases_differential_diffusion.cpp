// Conformance handlers: DifferentialDiffusion (denoise_mask_function.sequence; the
// e2e.sample_euler inpainting runs go through the guider's e2e harness).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "patchbay/patches/mask/differential_diffusion.hpp"
#include "registry.hpp"

namespace {

using namespace patchbay;
using namespace patchbay::conformance;

template <std::size_t R>
void sequence(const golden_case& gc, results& out) {
    const differential_diffusion dd{gc.param<double>("strength", 1.0)};
    const model_sampling ms =
        model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete(eps)"));
    const tensor<float> sig = gc.tensor_input<float>("sigmas");
    const tensor<float> mask = gc.tensor_input<float>("denoise_mask");
    std::vector<double> sigmas(static_cast<std::size_t>(sig.size()));
    for (index_t i = 0; i < sig.size(); ++i) sigmas[static_cast<std::size_t>(i)] = sig[i];
    require(sigmas.size() >= 2, "conformance", "sigmas needs at least two entries");
    const index_t steps = static_cast<index_t>(sigmas.size()) - 1;
    // The stacked result has rank R + 1 (6 for video masks), beyond tensor<>'s rank limit,
    // so it is assembled as an npy array directly.
    npy::array masks;
    masks.type = npy::dtype::f4;
    masks.shape = {steps};
    masks.shape.insert(masks.shape.end(), mask.shape().begin(), mask.shape().end());
    tensor<float> step_mask(mask.shape());
    no_state st;
    for (index_t i = 0; i < steps; ++i) {
        const mask_inputs in{sigmas[static_cast<std::size_t>(i)], sigmas, &ms};
        dd.mask<float, R>(st, in, mask.as<R>(), step_mask.as<R>());
        masks.values.insert(masks.values.end(), step_mask.data(), step_mask.data() + step_mask.size());
    }
    out["masks"] = std::move(masks);
}

// Interim Euler inpainting harness (README "e2e.sample_euler", semantics section 0), used
// until the guider's tests/conformance/e2e.hpp takes over: toy Gaussian denoiser, plain CFG,
// KSamplerX0Inpaint blending with the mask the patch returns at each step.
void e2e_inpaint(const golden_case& gc, results& out) {
    constexpr std::size_t R = 4;
    const differential_diffusion dd{gc.param<double>("strength", 1.0)};
    dd.validate();
    const model_sampling ms =
        model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete(eps)"));
    const tensor<float> sig = gc.tensor_input<float>("sigmas");
    const tensor<float> noise = gc.tensor_input<float>("noise");
    const tensor<float> latent = gc.tensor_input<float>("latent_image");
    const tensor<float> mu_c = gc.tensor_input<float>("mu_cond");
    const tensor<float> mu_u = gc.tensor_input<float>("mu_uncond");
    const tensor<float> dmask = gc.tensor_input<float>("denoise_mask");
    const float cond_scale = static_cast<float>(gc.scalar<double>("cond_scale", 1.0));
    const bool skip_uncond = std::abs(gc.scalar<double>("cond_scale", 1.0) - 1.0) <= 1e-9;
    const float s2 = static_cast<float>(gc.scalar<double>("toy_data_std", 1.0));
    const float sd2 = s2 * s2;
    const bool flow = gc.scalar<std::string>("toy_kind", "vp") == "flow";
    std::vector<double> sigmas(static_cast<std::size_t>(sig.size()));
    for (index_t i = 0; i < sig.size(); ++i) sigmas[static_cast<std::size_t>(i)] = sig[i];
    const index_t B = noise.extent(0), per = noise.size() / B, steps = sig.size() - 1;
    require(dmask.shape() == noise.shape(), "conformance", "denoise_mask must match the latent");

    auto batch_sigma = [&](float s) {
        tensor<float> v({B});
        v.fill(s);
        return v;
    };
    const float smax = ms.sigma_max(), s0 = sig[0];
    const bool max_denoise = std::abs(smax - s0) <= 1e-5 * std::max(std::abs(smax), std::abs(s0)) || s0 > smax;
    tensor<float> x(noise.shape());
    ms.noise_scaling<float, R>(batch_sigma(s0).as<1>(), noise.as<R>(), latent.as<R>(), max_denoise, x.as<R>());
    std::vector<index_t> tshape{steps + 1};
    tshape.insert(tshape.end(), noise.shape().begin(), noise.shape().end());
    tensor<float> traj(tshape);
    std::copy(x.data(), x.data() + x.size(), traj.data());

    tensor<float> m(noise.shape()), xin(noise.shape()), scaled(noise.shape()), den(noise.shape());
    no_state st;
    for (index_t i = 0; i < steps; ++i) {
        const float s = sig[i];
        const tensor<float> sv = batch_sigma(s);
        dd.mask<float, R>(st, mask_inputs{s, sigmas, &ms}, dmask.as<R>(), m.as<R>());
        ms.noise_scaling<float, R>(sv.as<1>(), noise.as<R>(), latent.as<R>(), false, scaled.as<R>());
        for (index_t k = 0; k < x.size(); ++k) xin[k] = x[k] * m[k] + scaled[k] * (1.0f - m[k]);
        // Toy exact denoiser per element (mu broadcast over the batch), then CFG.
        float gain, mu_scale;
        if (flow) {
            const float a = 1.0f - s;
            gain = a * sd2 / (a * a * sd2 + s * s);
            mu_scale = a;
        } else {
            gain = sd2 / (sd2 + s * s);
            mu_scale = 1.0f;
        }
        for (index_t k = 0; k < x.size(); ++k) {
            const index_t j = k % per;
            const float c = mu_c[j] + gain * (xin[k] - mu_scale * mu_c[j]);
            const float u = skip_uncond ? 0.0f : mu_u[j] + gain * (xin[k] - mu_scale * mu_u[j]);
            const float d = u + (c - u) * cond_scale;
            den[k] = d * m[k] + latent[k] * (1.0f - m[k]);
        }
        const float dt = sig[i + 1] - s;
        for (index_t k = 0; k < x.size(); ++k) x[k] = x[k] + (x[k] - den[k]) / s * dt;
        std::copy(x.data(), x.data() + x.size(), traj.data() + (i + 1) * x.size());
    }
    tensor<float> samples(noise.shape());
    ms.inverse_noise_scaling<float, R>(batch_sigma(sig[steps]).as<1>(), x.as<R>(), samples.as<R>());
    put(out, "samples", samples);
    put(out, "trajectory", traj);
}

} // namespace

PATCHBAY_CONFORMANCE("DifferentialDiffusion", "e2e.sample_euler") { e2e_inpaint(gc, out); }

PATCHBAY_CONFORMANCE("DifferentialDiffusion", "denoise_mask_function.sequence") {
    const auto rank = gc.input("denoise_mask").shape.size();
    if (rank == 4) sequence<4>(gc, out);
    else if (rank == 5) sequence<5>(gc, out);
    else fail("DifferentialDiffusion", "tensor 'denoise_mask' must have rank 4 or 5");
}
