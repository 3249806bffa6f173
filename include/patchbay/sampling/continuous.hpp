// patchbay: the continuous noise schedules of ComfyUI's model sampling objects (float32, in
// torch's operation order; comfy/model_sampling.py):
//   - the log-linear table of ModelSamplingContinuousEDM / ContinuousV / CosmosRFlow with
//     their timestep maps: EDM 0.25 ln(sigma) (Karras et al. 2022, "Elucidating the Design
//     Space of Diffusion-Based Generative Models"), V atan(sigma) 2/pi (continuous
//     v-prediction), Cosmos rectified flow sigma / (sigma + 1);
//   - StableCascadeSampling: the shifted cosine schedule of Nichol & Dhariwal, "Improved
//     Denoising Diffusion Probabilistic Models" (2021), as Wuerstchen / Stable Cascade use it.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "patchbay/sampling/discrete.hpp"
#include "patchbay/sampling/flow.hpp"

namespace patchbay::sampling_detail {

/// torch.pi (a Python float) as it meets a float32 tensor.
inline constexpr float pi_f = 3.14159265358979323846f;

/// exp(linspace(ln lo, ln hi, n)) in float32: the logs are taken in double (math.log) and
/// rounded to float32 by torch.linspace, the exponential is float32.
inline std::vector<float> log_linear_table(double lo, double hi, int n) {
    std::vector<float> t =
        linspace<float>(static_cast<float>(std::log(lo)), static_cast<float>(std::log(hi)), n);
    for (float& v : t) v = std::exp(v);
    return t;
}

/// exp(ln lo + (1 - p)(ln hi - ln lo)) in double from the float32 table ends (ComfyUI's
/// ContinuousEDM percent_to_sigma for 0 < p < 1).
inline double log_linear_percent(float lo, float hi, double percent) {
    const double log_lo = std::log(static_cast<double>(lo));
    return std::exp((std::log(static_cast<double>(hi)) - log_lo) * (1.0 - percent) + log_lo);
}

inline float edm_timestep(float sigma) { return 0.25f * std::log(sigma); }
inline float edm_sigma(float t) { return std::exp(t / 0.25f); }

inline float v_timestep(float sigma) { return std::atan(sigma) / pi_f * 2.0f; }
/// tan is singular at t = 1: float32 gives tan(float(pi)/2) = -2.29e7 there, as ComfyUI.
inline float v_sigma(float t) { return std::tan(t * pi_f / 2.0f); }

inline float cosmos_timestep(float sigma) { return sigma / (sigma + 1.0f); }
/// ComfyUI's ModelSamplingCosmosRFlow.sigma for one value (it raises on a tensor of several;
/// patchbay applies it per element): the table top from t >= sigma_max / (sigma_max + 1) on.
inline float cosmos_sigma(float t, float sigma_max) {
    if (t >= sigma_max / (sigma_max + 1.0f)) return sigma_max;
    return t / (1.0f - t);
}

/// StableCascadeSampling (cosine schedule, s = 0.008, then a logSNR shift), float32.
class cascade_schedule {
public:
    cascade_schedule() = default;
    explicit cascade_schedule(double shift) : shift_(shift) {
        abar0_ = std::cos(s_ / (1.0f + s_) * pi_f * 0.5f);
        abar0_ = abar0_ * abar0_;
        // 2 ln(1 / shift) on float32(shift): +inf for shift 0 (every alpha_bar -> 1, then the
        // clamp gives sigma 0.0100005 everywhere).
        logsnr_shift_ = 2.0f * std::log(1.0f / static_cast<float>(shift));
    }

    /// sigma(t): alpha_bar from the cosine, shifted in logSNR when shift != 1, clamped to
    /// [1e-4, 0.9999], sigma = sqrt((1 - alpha_bar) / alpha_bar).
    float sigma(float t) const {
        const float c = std::cos((t + s_) / (1.0f + s_) * pi_f * 0.5f);
        float abar = (c * c) / abar0_;
        if (shift_ != 1.0) {
            const float logsnr = std::log(abar / (1.0f - abar)) + logsnr_shift_;
            abar = 1.0f / (1.0f + std::exp(-logsnr));
        }
        abar = std::clamp(abar, 0.0001f, 0.9999f);
        return std::sqrt((1.0f - abar) / abar);
    }

    /// The inverse of the unshifted, unclamped schedule (ComfyUI's timestep ignores the shift,
    /// so timestep(sigma(t)) != t when shift != 1).
    float timestep(float sigma) const {
        const float var = std::clamp(1.0f / (rounded(sigma * sigma) + 1.0f), 0.0f, 1.0f);
        const float half_pi = static_cast<float>(3.14159265358979323846 * 0.5);
        return rounded(std::acos(std::sqrt(var * abar0_)) / half_pi * (1.0f + s_)) - s_;
    }

    float abar0() const noexcept { return abar0_; }

private:
    double shift_ = 1.0;
    float s_ = 0.008f;
    float abar0_ = 1.0f;
    float logsnr_shift_ = 0.0f;
};

} // namespace patchbay::sampling_detail
