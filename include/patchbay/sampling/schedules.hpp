// patchbay: sigma schedules for a sampling run (ComfyUI's schedulers).
//
// Papers: Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models"
// (2022, karras); k-diffusion (exponential); ComfyUI's simple, normal and sgm_uniform
// schedulers (comfy/samplers.py). Each returns `steps` noise levels from high to low followed
// by a final 0 (normal drops the 0 when the model's lowest timestep already has sigma ~0).
// Every function takes the step count first, then where the noise range comes from (a model
// sampling, or sigma_min and sigma_max), then options.
//
// The values are ComfyUI's float32 values, widened to double: ComfyUI builds these lists in
// float32 tensors (torch.linspace in float32, sigma() in float32) or rounds them to float32
// (torch.FloatTensor), and a sampler then runs on them.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

namespace sampling_detail {

inline void require_steps(int steps, std::string_view where) {
    if (steps < 1) fail(where, "argument 'steps' must be >= 1, got " + std::to_string(steps));
}

/// ComfyUI's normal_scheduler (sgm = false) and sgm_uniform (sgm = true).
inline std::vector<double> normal_like(int steps, const model_sampling& ms, bool sgm,
                                       std::string_view where) {
    require_steps(steps, where);
    const float start = static_cast<float>(ms.timestep(ms.sigma_max()));
    const float end = static_cast<float>(ms.timestep(ms.sigma_min()));
    bool append_zero = true;
    std::vector<float> ts;
    if (sgm) {
        ts = linspace<float>(start, end, steps + 1);
        ts.pop_back();
    } else {
        if (std::abs(ms.sigma(end)) <= 1e-5) { // math.isclose(sigma(end), 0, abs_tol=1e-5)
            ++steps;
            append_zero = false;
        }
        ts = linspace<float>(start, end, steps);
    }
    std::vector<double> sigs;
    sigs.reserve(ts.size() + 1);
    for (float t : ts) sigs.push_back(static_cast<double>(static_cast<float>(ms.sigma(t))));
    if (append_zero) sigs.push_back(0.0);
    return sigs;
}

} // namespace sampling_detail

/// ComfyUI's "simple" scheduler: steps entries taken evenly from the model's table, from the
/// top down (sigs[k] = sigmas[len - 1 - int(k * len / steps)]), then 0.
inline std::vector<double> simple_schedule(int steps, const model_sampling& ms) {
    sampling_detail::require_steps(steps, "simple_schedule");
    const auto table = ms.sigmas();
    const double stride = static_cast<double>(table.size()) / static_cast<double>(steps);
    std::vector<double> sigs;
    sigs.reserve(static_cast<std::size_t>(steps) + 1);
    for (int k = 0; k < steps; ++k) {
        const auto idx = static_cast<std::size_t>(static_cast<double>(k) * stride);
        sigs.push_back(static_cast<double>(table[table.size() - 1 - idx]));
    }
    sigs.push_back(0.0);
    return sigs;
}

/// ComfyUI's "normal" scheduler: timesteps evenly spaced from timestep(sigma_max) to
/// timestep(sigma_min), converted with sigma(t), then 0 (unless sigma at the last timestep is
/// within 1e-5 of 0, in which case one more step is taken and no 0 appended).
inline std::vector<double> normal_schedule(int steps, const model_sampling& ms) {
    return sampling_detail::normal_like(steps, ms, false, "normal_schedule");
}

/// ComfyUI's "sgm_uniform": like normal, but steps + 1 evenly spaced timesteps with the last
/// dropped, then 0.
inline std::vector<double> sgm_uniform_schedule(int steps, const model_sampling& ms) {
    return sampling_detail::normal_like(steps, ms, true, "sgm_uniform_schedule");
}

/// Karras et al. (2022) schedule: (max^(1/rho) + ramp * (min^(1/rho) - max^(1/rho)))^rho for
/// ramp evenly spaced in [0, 1], then 0 (k-diffusion get_sigmas_karras, float32).
inline std::vector<double> karras_schedule(int steps, double sigma_min, double sigma_max,
                                           double rho = 7.0) {
    constexpr std::string_view where = "karras_schedule";
    sampling_detail::require_steps(steps, where);
    require_finite(sigma_min, where, "sigma_min");
    require_finite(sigma_max, where, "sigma_max");
    require_finite(rho, where, "rho");
    PATCHBAY_REQUIRE(sigma_min > 0.0 && sigma_max >= sigma_min, where,
            "expected 0 < sigma_min <= sigma_max, got sigma_min " + detail::fmt_num(sigma_min) +
                ", sigma_max " + detail::fmt_num(sigma_max));
    PATCHBAY_REQUIRE(rho > 0.0, where, "argument 'rho' must be > 0, got " + detail::fmt_num(rho));
    const std::vector<float> ramp = sampling_detail::linspace<float>(0.0f, 1.0f, steps);
    const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
    const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
    // torch rounds the Python scalars to float32 before the tensor arithmetic.
    const float lo = static_cast<float>(min_inv_rho - max_inv_rho);
    const float hi = static_cast<float>(max_inv_rho);
    const float r = static_cast<float>(rho);
    std::vector<double> sigs;
    sigs.reserve(ramp.size() + 1);
    for (float u : ramp) sigs.push_back(static_cast<double>(std::pow(hi + sampling_detail::rounded(u * lo), r)));
    sigs.push_back(0.0);
    return sigs;
}

/// Exponential schedule: log sigma evenly spaced from log(sigma_max) to log(sigma_min), then 0
/// (k-diffusion get_sigmas_exponential, float32).
inline std::vector<double> exponential_schedule(int steps, double sigma_min, double sigma_max) {
    constexpr std::string_view where = "exponential_schedule";
    sampling_detail::require_steps(steps, where);
    require_finite(sigma_min, where, "sigma_min");
    require_finite(sigma_max, where, "sigma_max");
    PATCHBAY_REQUIRE(sigma_min > 0.0 && sigma_max >= sigma_min, where,
            "expected 0 < sigma_min <= sigma_max, got sigma_min " + detail::fmt_num(sigma_min) +
                ", sigma_max " + detail::fmt_num(sigma_max));
    const std::vector<float> logs = sampling_detail::linspace<float>(
        static_cast<float>(std::log(sigma_max)), static_cast<float>(std::log(sigma_min)), steps);
    std::vector<double> sigs;
    sigs.reserve(logs.size() + 1);
    for (float l : logs) sigs.push_back(static_cast<double>(std::exp(l)));
    sigs.push_back(0.0);
    return sigs;
}

/// ComfyUI's "karras" scheduler: karras_schedule over the model's table range.
inline std::vector<double> karras_schedule(int steps, const model_sampling& ms, double rho = 7.0) {
    return karras_schedule(steps, static_cast<double>(ms.sigma_min()), static_cast<double>(ms.sigma_max()), rho);
}

/// ComfyUI's "exponential" scheduler: exponential_schedule over the model's table range.
inline std::vector<double> exponential_schedule(int steps, const model_sampling& ms) {
    return exponential_schedule(steps, static_cast<double>(ms.sigma_min()), static_cast<double>(ms.sigma_max()));
}

} // namespace patchbay
