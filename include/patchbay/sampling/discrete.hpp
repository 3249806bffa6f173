// patchbay: the discrete (DDPM) noise table of ModelSamplingDiscrete.
//
// Paper: Ho et al., "Denoising Diffusion Probabilistic Models" (2020), "linear" beta schedule
// of Stable Diffusion. Matches ComfyUI's make_beta_schedule("linear") and
// ModelSamplingDiscrete._register_schedule (comfy/model_sampling.py), plus the 50-entry LCM
// subsampling of ModelSamplingDiscreteDistilled (comfy_extras/nodes_model_advanced.py).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "patchbay/sampling/flow.hpp"
#include "patchbay/sampling/zero_terminal_snr.hpp"

namespace patchbay::sampling_detail {

inline constexpr int discrete_timesteps = 1000;
inline constexpr double linear_start = 0.00085;
inline constexpr double linear_end = 0.012;
inline constexpr int lcm_original_timesteps = 50;

/// torch.linspace in Real (float64 or float32): the step is computed in Real, the first half
/// counts up from `start` and the second half back from `end`, so both end points are exact.
template <class Real>
inline std::vector<Real> linspace(Real start, Real end, int steps) {
    std::vector<Real> v(static_cast<std::size_t>(steps));
    if (steps == 1) {
        v[0] = start;
        return v;
    }
    const Real step = (end - start) / static_cast<Real>(steps - 1);
    const int half = steps / 2;
    for (int i = 0; i < steps; ++i)
        v[static_cast<std::size_t>(i)] = i < half ? start + rounded(step * static_cast<Real>(i))
                                                  : end - rounded(step * static_cast<Real>(steps - i - 1));
    return v;
}

/// The float64 sigma table of the SD "linear" schedule (index 0 = least noise), with the
/// optional zero-terminal-SNR rescale. Everything stays in float64 until the caller rounds
/// once: a float32 cumprod over 1000 steps drifts beyond the golden tolerances.
inline std::vector<double> linear_schedule_sigmas64(bool zsnr) {
    std::vector<double> betas = linspace<double>(std::sqrt(linear_start), std::sqrt(linear_end),
                                           discrete_timesteps);
    std::vector<double> sigmas(betas.size());
    double cumprod = 1.0;
    for (std::size_t i = 0; i < betas.size(); ++i) {
        const double beta = rounded(betas[i] * betas[i]);
        cumprod *= 1.0 - beta;
        sigmas[i] = std::sqrt((1.0 - cumprod) / cumprod);
    }
    if (zsnr) sigmas = rescale_zero_terminal_snr(std::move(sigmas));
    return sigmas;
}

} // namespace patchbay::sampling_detail
