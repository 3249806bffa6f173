// patchbay: zero-terminal-SNR rescale of a discrete sigma table.
//
// Paper: Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed" (2023).
// Matches ComfyUI's rescale_zero_terminal_snr_sigmas (comfy/model_sampling.py), used by
// ModelSamplingDiscrete's `zsnr` input.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "patchbay/sampling/flow.hpp"

namespace patchbay::sampling_detail {

/// ComfyUI pins the last cumulative alpha to this value instead of 0 (which would make the
/// last sigma infinite); the last sigma becomes about 4518.76.
inline constexpr double zsnr_last_alpha_bar = 4.8973451890853435e-08;

/// Rescale a float64 sigma table (index 0 = least noise) so the last step has (almost) zero
/// SNR. Works on the float64 table before it is rounded to float32, as ComfyUI does.
inline std::vector<double> rescale_zero_terminal_snr(std::vector<double> sigmas) {
    const std::size_t n = sigmas.size();
    if (n < 2) return sigmas;
    std::vector<double> r(n);
    for (std::size_t i = 0; i < n; ++i) r[i] = std::sqrt(1.0 / (rounded(sigmas[i] * sigmas[i]) + 1.0));
    const double r0 = r[0];
    const double rT = r[n - 1];
    // Two in-place steps, in ComfyUI's order: shift so the last is 0, then scale so the first
    // keeps its value.
    const double scale = r0 / (r0 - rT);
    for (std::size_t i = 0; i < n; ++i) {
        r[i] -= rT;
        r[i] *= scale;
    }
    for (std::size_t i = 0; i < n; ++i) {
        double abar = rounded(r[i] * r[i]);
        if (i == n - 1) abar = zsnr_last_alpha_bar;
        sigmas[i] = std::sqrt((1.0 - abar) / abar);
    }
    return sigmas;
}

} // namespace patchbay::sampling_detail
