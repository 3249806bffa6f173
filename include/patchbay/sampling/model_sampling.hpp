// patchbay: model sampling = prediction type x noise schedule (ComfyUI's model_sampling object).
//
// Papers: Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models"
// (2022, the sigma parameterisation, c_skip/c_out/c_in, sigma_data); Salimans & Ho,
// "Progressive Distillation" (2022, v-prediction); Luo et al., "Latent Consistency Models"
// (2023); Esser et al., "Scaling Rectified Flow Transformers" (2024, SD3 flow shift); Nichol &
// Dhariwal (2021, the cosine schedule of Stable Cascade). Matches ComfyUI's nodes
// ModelSamplingDiscrete (eps, v_prediction, lcm, x0, img_to_img, img_to_img_flow; zsnr),
// ModelSamplingSD3, ModelSamplingAuraFlow (flow, img_to_img_velocity), ModelSamplingFlux,
// ModelSamplingLTXV, ModelSamplingContinuousEDM (v_prediction, edm, edm_playground_v2.5, eps,
// cosmos_rflow), ModelSamplingContinuousV, ModelSamplingStableCascade and ModelNoiseScale
// (comfy/model_sampling.py, comfy_extras/nodes_model_advanced.py, comfy_extras/nodes_lt.py).
//
// Numbers follow ComfyUI's float32 arithmetic: the discrete table is built in float64 and
// rounded once, the other tables and every sigma <-> timestep conversion run in float32, and
// the tensor operations compute their per-batch scalars (sqrt(sigma^2 + sigma_data^2), 1 -
// sigma) in the element type, in torch's operation order (x / sqrt(...) is a division, not a
// multiply by a reciprocal). Where ComfyUI turns finite input inside the declared ranges into
// NaN (Flux/LTXV with mu > 88.72) patchbay returns the finite limit (docs/patches/model_sampling.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/sampling/continuous.hpp"
#include "patchbay/sampling/discrete.hpp"
#include "patchbay/sampling/flow.hpp"
#include "patchbay/sampling/latent_format.hpp"

namespace patchbay {

/// ComfyUI's prediction classes (the `sampling_type` its nodes mix into the object):
/// how the network output becomes a denoised latent and how noise is added and removed.
enum class sampling_type : std::uint8_t {
    eps,                 ///< EPS
    v_prediction,        ///< V_PREDICTION
    edm,                 ///< EDM: v-prediction with a plus sign (and sigma_data 0.5)
    lcm,                 ///< LCM (ModelSamplingDiscrete sampling=lcm)
    x0,                  ///< X0
    img_to_img,          ///< IMG_TO_IMG
    flow,                ///< CONST: rectified flow (SD3, AuraFlow, Flux, LTXV)
    img_to_img_flow,     ///< IMG_TO_IMG_FLOW (a CONST)
    img_to_img_velocity, ///< IMG_TO_IMG_VELOCITY (a CONST)
    cosmos_rflow         ///< COSMOS_RFLOW
};

/// ComfyUI's schedule classes (the `sampling_base`): the noise table and sigma <-> timestep.
enum class sampling_base : std::uint8_t {
    discrete,        ///< ModelSamplingDiscrete (and the 50-entry distilled table of lcm)
    discrete_flow,   ///< ModelSamplingDiscreteFlow (SD3, AuraFlow): shift and multiplier
    flux,            ///< ModelSamplingFlux (Flux, LTXV): resolution-dependent shift mu
    continuous_edm,  ///< ModelSamplingContinuousEDM: log-linear table, t = 0.25 ln sigma
    continuous_v,    ///< ModelSamplingContinuousV: log-linear table, t = atan(sigma) 2/pi
    cosmos_rflow,    ///< ModelSamplingCosmosRFlow: log-linear table, t = sigma/(sigma+1)
    stable_cascade   ///< StableCascadeSampling: shifted cosine schedule
};

std::string_view to_string(sampling_type t) noexcept;
std::string_view to_string(sampling_base b) noexcept;

/// A model sampling object: the prediction type and the noise table of a model.
/// A plain value (copyable); build it with a factory named after the ComfyUI node or with
/// from_comfy(). Table lengths: discrete 1000 (50 for lcm), SD3/AuraFlow 1000,
/// Flux/LTXV 10000, ContinuousEDM/V 1000, StableCascade 10000.
class model_sampling {
public:
    // ---- ModelSamplingDiscrete ------------------------------------------------------------
    /// sampling: "eps", "v_prediction", "lcm", "x0", "img_to_img", "img_to_img_flow".
    static model_sampling discrete(std::string_view sampling = "eps", bool zsnr = false);
    /// The same from a prediction type (eps, v_prediction, lcm, x0, img_to_img).
    static model_sampling discrete(prediction_type prediction, bool zsnr);
    /// The same from ComfyUI's prediction class (also img_to_img_flow).
    static model_sampling discrete(sampling_type sampling, bool zsnr);

    // ---- flow: ModelSamplingSD3 / ModelSamplingAuraFlow -------------------------------------
    /// ModelSamplingSD3: CONST (flow) with multiplier 1000. shift in [0, 100].
    static model_sampling sd3(double shift = 3.0) { return flow(shift, 1000.0, node::sd3, sampling_type::flow); }
    /// ModelSamplingAuraFlow: multiplier 1; sampling "flow" (CONST) or "img_to_img_velocity".
    static model_sampling aura_flow(double shift = 1.73, std::string_view sampling = "flow");
    /// Any flow model sampling: shift in [0, 100], multiplier finite and > 0.
    static model_sampling flow(double shift, double multiplier) {
        return flow(shift, multiplier, node::flow, sampling_type::flow);
    }

    // ---- Flux-style shift: ModelSamplingFlux / ModelSamplingLTXV ------------------------------
    /// ModelSamplingFlux: mu = max_shift at 4096 tokens (1024x1024), base_shift at 256
    /// (256x256), linear in width*height/256 between; CONST. Shifts in [0, 100], width and
    /// height in [16, 16384].
    static model_sampling flux(double max_shift = 1.15, double base_shift = 0.5,
                               std::int64_t width = 1024, std::int64_t height = 1024);
    /// ModelSamplingLTXV without a latent: 4096 tokens (mu = max_shift).
    static model_sampling ltxv(double max_shift = 2.05, double base_shift = 0.95);
    /// ModelSamplingLTXV with the latent's shape: tokens = prod(shape[2:]) (T*H*W for a 5-D
    /// video latent, H*W for 4-D), mu = max_shift at 4096 tokens, base_shift at 1024.
    static model_sampling ltxv(double max_shift, double base_shift,
                               std::span<const index_t> latent_shape);

    // ---- continuous tables ---------------------------------------------------------------------
    /// ModelSamplingContinuousEDM. sampling: "v_prediction", "edm", "edm_playground_v2.5",
    /// "eps", "cosmos_rflow". sigma_max, sigma_min in (0, 1000] (0 is in ComfyUI's range but
    /// fails there: ln 0).
    static model_sampling continuous_edm(std::string_view sampling = "v_prediction",
                                         double sigma_max = 120.0, double sigma_min = 0.002);
    /// ModelSamplingContinuousV. sampling: "v_prediction" (its only option).
    static model_sampling continuous_v(std::string_view sampling = "v_prediction",
                                       double sigma_max = 500.0, double sigma_min = 0.03);
    /// ModelSamplingStableCascade: EPS on the shifted cosine schedule. shift in [0, 100].
    static model_sampling stable_cascade(double shift = 2.0);

    // ---- ModelNoiseScale --------------------------------------------------------------------------
    /// ModelNoiseScale applied to this object: the same schedule and prediction with
    /// noise_scaling = sigma * (noise_scale * noise) + (1 - sigma) * latent. noise_scale in
    /// [0, 64]. Only SD3/AuraFlow-style objects (sampling_base::discrete_flow) carry a noise
    /// scale; on any other this is a patchbay::error (ComfyUI raises AttributeError).
    model_sampling with_noise_scale(double noise_scale) const;
    /// What ModelSamplingSD3 / ModelSamplingAuraFlow do with the model's previous object: this
    /// object with `previous`'s noise scale when `previous` has one (a discrete_flow object),
    /// else this object unchanged. So SD3(3) -> ModelNoiseScale(7.5) -> SD3(2) keeps 7.5.
    model_sampling inheriting_noise_scale(const model_sampling& previous) const;

    /// Parse ComfyUI-style node text, or a chain of them applied in order with "->":
    ///   "ModelSamplingDiscrete(eps)", "ModelSamplingDiscrete(v_prediction, zsnr=True)",
    ///   "ModelSamplingSD3(shift=3.0)", "ModelSamplingAuraFlow(1.73, sampling=img_to_img_velocity)",
    ///   "ModelSamplingFlow(shift=1.0, multiplier=1000)",
    ///   "ModelSamplingFlux(max_shift=1.15, base_shift=0.5, width=1024, height=1024)",
    ///   "ModelSamplingLTXV(2.05, 0.95, latent_shape=[1, 128, 8, 16, 24])" (also written
    ///   "latent of shape [...]", or tokens=N),
    ///   "ModelSamplingContinuousEDM(edm, sigma_max=80.0, sigma_min=0.002)",
    ///   "ModelSamplingContinuousV(v_prediction, sigma_max=500, sigma_min=0.03)",
    ///   "ModelSamplingStableCascade(shift=2.0)",
    ///   "ModelSamplingSD3(shift=3.0) -> ModelNoiseScale(noise_scale=7.5) -> ModelSamplingSD3(2)".
    /// Arguments left out take the node defaults; ModelNoiseScale needs a node before it.
    /// Anything else is a patchbay::error.
    static model_sampling from_comfy(std::string_view text);

    // ---- what the object is ------------------------------------------------------------------------
    /// The prediction type hooks see (prediction_type has no EDM or Cosmos entry: EDM reports
    /// v_prediction, which it extends in ComfyUI; Cosmos reports eps; every CONST kind
    /// (flow, img_to_img_flow, img_to_img_velocity) reports flow). type() has the full answer.
    prediction_type prediction() const noexcept;
    sampling_type type() const noexcept { return type_; }
    sampling_base base() const noexcept { return base_; }
    /// The ComfyUI node that built the table (its class_type, e.g. "ModelSamplingFlux").
    const char* class_type() const noexcept;
    /// ComfyUI's isinstance(model_sampling, CONST): the flow samplers' switch (e.g. the
    /// rectified-flow variant of euler_ancestral) and RescaleCFG's x0-space branch.
    bool is_flow() const noexcept {
        return type_ == sampling_type::flow || type_ == sampling_type::img_to_img_flow ||
               type_ == sampling_type::img_to_img_velocity;
    }
    bool zsnr() const noexcept { return zsnr_; }
    /// SD3/AuraFlow: the shift; Flux/LTXV: mu; StableCascade: the shift; 1 otherwise.
    double shift() const noexcept { return shift_; }
    double multiplier() const noexcept { return multiplier_; } ///< discrete_flow only (1 otherwise)
    double sigma_data() const noexcept { return sigma_data_; } ///< 0.5 for edm, 1 otherwise
    /// ModelNoiseScale's factor (1 unless set; only discrete_flow objects carry one).
    double noise_scale() const noexcept { return noise_scale_; }
    bool has_noise_scale() const noexcept { return base_ == sampling_base::discrete_flow; }
    /// The latent format the node also installs (edm_playground_v2.5), or null: the engine
    /// applies its process_in before sampling and process_out after.
    const channel_latent_format* latent_format() const noexcept { return latent_format_; }

    /// The float32 noise table, index 0 = least noise.
    std::span<const float> sigmas() const noexcept { return sigmas_; }
    /// float32 log of the table (discrete only; empty otherwise). For the 1000-entry tables the
    /// log is of the float64 values; for lcm of the float32 subsampled values (as ComfyUI).
    std::span<const float> log_sigmas() const noexcept { return log_sigmas_; }
    float sigma_min() const noexcept { return sigmas_.front(); }
    float sigma_max() const noexcept { return sigmas_.back(); }

    /// Model timestep of a noise level, in float32 on float32(sigma). Discrete: the integer
    /// table index nearest in log sigma (first on ties); lcm: 20*index + 19. SD3/AuraFlow:
    /// sigma * multiplier; Flux/LTXV: sigma; EDM: 0.25 ln sigma; V: atan(sigma) 2/pi; Cosmos:
    /// sigma/(sigma+1); StableCascade: the inverse of its unshifted cosine schedule.
    double timestep(double sigma) const;
    /// Noise level of a (possibly fractional) timestep, in float32. Discrete: clamped to the
    /// table and log-linearly interpolated; flow: shift_fn(t / multiplier); Flux: the Flux
    /// shift (finite limit where ComfyUI overflows); EDM: exp(4t); V: tan(t pi/2); Cosmos:
    /// t/(1-t) up to the table top; StableCascade: its shifted schedule.
    double sigma(double timestep) const;
    /// ComfyUI's percent_to_sigma: p <= 0 -> the largest noise (999999999.9, or 1 for
    /// SD3/AuraFlow/Flux/LTXV), p >= 1 -> 0; in double except StableCascade (float32, as
    /// ComfyUI). NaN is an error.
    double percent_to_sigma(double percent) const;

    /// Network input for x at sigma (one sigma per batch item). out may alias x.
    template <class T, std::size_t R>
    void calculate_input(std::type_identity_t<view<const T, 1>> sigma,
                         std::type_identity_t<view<const T, R>> x, view<T, R> out) const;
    /// Denoised (x0) estimate from the raw network output. out may alias x or model_output.
    template <class T, std::size_t R>
    void calculate_denoised(std::type_identity_t<view<const T, 1>> sigma,
                            std::type_identity_t<view<const T, R>> model_output,
                            std::type_identity_t<view<const T, R>> x, view<T, R> out) const;
    /// Initial noisy latent from noise and the (model-space) latent image. max_denoise
    /// ("start from pure noise") scales the noise by sqrt(1 + sigma^2) for the EPS-family
    /// types; CONST and Cosmos ignore it; img_to_img_flow / img_to_img_velocity return the
    /// latent image (no noise). out may alias noise or latent_image.
    template <class T, std::size_t R>
    void noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                       std::type_identity_t<view<const T, R>> noise,
                       std::type_identity_t<view<const T, R>> latent_image, bool max_denoise,
                       view<T, R> out) const;
    /// Undo the noise scaling at the end of sampling (applied with the last sigma, normally 0).
    /// CONST: latent / (1 - sigma), sigma == 1 exactly is a patchbay::error (ComfyUI divides by
    /// zero there: the latent holds no image at sigma 1); img_to_img_flow: 1 - latent;
    /// every other type: identity.
    template <class T, std::size_t R>
    void inverse_noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                               std::type_identity_t<view<const T, R>> latent, view<T, R> out) const;

    /// Coefficients with denoised = c_skip * x + c_out * raw_output and network input =
    /// c_in * x, in double. For lcm, c_skip and c_out depend on the timestep snapped to the
    /// 50-entry table (20*index + 19), so they jump where sigma crosses a table midpoint.
    struct scalings {
        double c_skip, c_out, c_in;
    };
    scalings scalings_at(double sigma) const;

private:
    /// The node an object comes from (error messages name it).
    enum class node : std::uint8_t {
        discrete, sd3, aura_flow, flow, flux, ltxv, continuous_edm, continuous_v, stable_cascade
    };
    enum class op : int { calculate_input, calculate_denoised, noise_scaling, inverse_noise_scaling };

    model_sampling() = default;
    static model_sampling flow(double shift, double multiplier, node n, sampling_type type);
    static model_sampling flux_shift(double mu, node n);
    static model_sampling log_linear(sampling_base base, sampling_type type, double sigma_max,
                                     double sigma_min, node n);
    static model_sampling apply_comfy(std::string_view text, const model_sampling* previous);
    /// "<node>.<op>" as a string literal: the hot path builds no strings (no allocation).
    const char* where(op o) const noexcept;
    template <class T, std::size_t R>
    void check_op(const view<const T, 1>& sigma, const view<const T, R>& a,
                  const view<T, R>& out, const char* w, std::string_view name_a) const;
    /// The Flux table's sigma(t) in float32, or its finite limit where ComfyUI's overflows.
    float flux_sigma(float t) const;

    sampling_type type_ = sampling_type::eps;
    sampling_base base_ = sampling_base::discrete;
    node node_ = node::discrete;
    bool zsnr_ = false;
    double shift_ = 1.0;
    double multiplier_ = 1.0;
    double sigma_data_ = 1.0;
    double noise_scale_ = 1.0;
    int skip_steps_ = 1;  ///< 20 for lcm (1000 / 50), 1 otherwise
    float flux_e_mu_ = 1.0f; ///< float32(e^mu)
    sampling_detail::cascade_schedule cascade_{};
    const channel_latent_format* latent_format_ = nullptr;
    std::vector<float> sigmas_;
    std::vector<float> log_sigmas_;
};

/// ModelNoiseScale as a function of the model's current model sampling (see
/// model_sampling::with_noise_scale).
inline model_sampling with_noise_scale(const model_sampling& current, double noise_scale) {
    return current.with_noise_scale(noise_scale);
}

/// What a denoise-mask function (DifferentialDiffusion) sees at one model evaluation.
struct mask_inputs {
    double sigma = 0.0;                  ///< batch item 0's sigma (the only one ComfyUI reads)
    std::span<const double> step_sigmas; ///< the whole schedule the sampler runs, incl. final 0
    const model_sampling* sampling = nullptr; ///< the model's sampling object (required)
};

// ------------------------------------------------------------------------------------------
// Implementation

inline std::string_view to_string(sampling_type t) noexcept {
    constexpr std::string_view names[] = {"eps", "v_prediction", "edm", "lcm", "x0", "img_to_img",
                                          "flow", "img_to_img_flow", "img_to_img_velocity",
                                          "cosmos_rflow"};
    return names[static_cast<std::size_t>(t)];
}

inline std::string_view to_string(sampling_base b) noexcept {
    constexpr std::string_view names[] = {"discrete", "discrete_flow", "flux", "continuous_edm",
                                          "continuous_v", "cosmos_rflow", "stable_cascade"};
    return names[static_cast<std::size_t>(b)];
}

inline prediction_type model_sampling::prediction() const noexcept {
    switch (type_) {
    case sampling_type::eps: return prediction_type::eps;
    case sampling_type::v_prediction:
    case sampling_type::edm: return prediction_type::v_prediction;
    case sampling_type::lcm: return prediction_type::lcm;
    case sampling_type::x0: return prediction_type::x0;
    case sampling_type::img_to_img: return prediction_type::img_to_img;
    case sampling_type::flow:
    case sampling_type::img_to_img_flow:
    case sampling_type::img_to_img_velocity: return prediction_type::flow;
    case sampling_type::cosmos_rflow: return prediction_type::eps;
    }
    return prediction_type::eps;
}

inline model_sampling model_sampling::discrete(sampling_type sampling, bool zsnr) {
    switch (sampling) {
    case sampling_type::eps: case sampling_type::v_prediction: case sampling_type::lcm:
    case sampling_type::x0: case sampling_type::img_to_img: case sampling_type::img_to_img_flow:
        break;
    default:
        fail("ModelSamplingDiscrete",
             "parameter 'sampling' must be one of eps, v_prediction, lcm, x0, img_to_img, "
             "img_to_img_flow, got '" + std::string(to_string(sampling)) + "'");
    }
    model_sampling ms;
    ms.type_ = sampling;
    ms.zsnr_ = zsnr;
    const std::vector<double> s64 = sampling_detail::linear_schedule_sigmas64(zsnr);
    if (sampling != sampling_type::lcm) {
        ms.sigmas_.resize(s64.size());
        ms.log_sigmas_.resize(s64.size());
        for (std::size_t i = 0; i < s64.size(); ++i) {
            ms.sigmas_[i] = static_cast<float>(s64[i]);
            ms.log_sigmas_[i] = static_cast<float>(std::log(s64[i])); // log before rounding
        }
    } else {
        // LCM keeps every 20th entry of the rounded (and, with zsnr, rescaled) table, ending
        // at the last one; its log table is the float32 log of those float32 values.
        constexpr int n = sampling_detail::lcm_original_timesteps;
        const int total = static_cast<int>(s64.size());
        ms.skip_steps_ = total / n;
        ms.sigmas_.resize(n);
        ms.log_sigmas_.resize(n);
        for (int k = 0; k < n; ++k) {
            const float s = static_cast<float>(s64[static_cast<std::size_t>(total - 1 - k * ms.skip_steps_)]);
            ms.sigmas_[static_cast<std::size_t>(n - 1 - k)] = s;
        }
        for (int k = 0; k < n; ++k)
            ms.log_sigmas_[static_cast<std::size_t>(k)] = std::log(ms.sigmas_[static_cast<std::size_t>(k)]);
    }
    return ms;
}

inline model_sampling model_sampling::discrete(std::string_view sampling, bool zsnr) {
    for (auto t : {sampling_type::eps, sampling_type::v_prediction, sampling_type::lcm,
                   sampling_type::x0, sampling_type::img_to_img, sampling_type::img_to_img_flow})
        if (sampling == to_string(t)) return discrete(t, zsnr);
    fail("ModelSamplingDiscrete",
         "parameter 'sampling' must be one of eps, v_prediction, lcm, x0, img_to_img, "
         "img_to_img_flow, got '" + std::string(sampling) + "'");
}

inline model_sampling model_sampling::discrete(prediction_type prediction, bool zsnr) {
    switch (prediction) {
    case prediction_type::eps: return discrete(sampling_type::eps, zsnr);
    case prediction_type::v_prediction: return discrete(sampling_type::v_prediction, zsnr);
    case prediction_type::lcm: return discrete(sampling_type::lcm, zsnr);
    case prediction_type::x0: return discrete(sampling_type::x0, zsnr);
    case prediction_type::img_to_img: return discrete(sampling_type::img_to_img, zsnr);
    case prediction_type::flow: break;
    }
    fail("ModelSamplingDiscrete",
         "prediction type 'flow' has no discrete model sampling (ComfyUI's img_to_img_flow is "
         "discrete(sampling_type::img_to_img_flow, zsnr); flow schedules are sd3() / aura_flow())");
}

inline model_sampling model_sampling::flow(double shift, double multiplier, node n, sampling_type type) {
    model_sampling ms;
    ms.node_ = n;
    const char* w = ms.class_type();
    require_range(shift, 0.0, 100.0, w, "shift");
    if (!(multiplier > 0.0 && multiplier - multiplier == 0.0))
        fail(w, "parameter 'multiplier' must be finite and > 0, got " + detail::fmt_num(multiplier));
    ms.type_ = type;
    ms.base_ = sampling_base::discrete_flow;
    ms.shift_ = shift;
    ms.multiplier_ = multiplier;
    constexpr int n_entries = 1000;
    ms.sigmas_.resize(n_entries);
    const float mult = static_cast<float>(multiplier);
    for (int k = 1; k <= n_entries; ++k) {
        // arange(1, n+1) / n in float32, times the multiplier, then sigma(t) divides it out
        // again: both roundings are kept, as ComfyUI builds the table through sigma().
        const float t = static_cast<float>(k) / static_cast<float>(n_entries) * mult;
        ms.sigmas_[static_cast<std::size_t>(k - 1)] = sampling_detail::time_snr_shift<float>(shift, t / mult);
    }
    return ms;
}

inline model_sampling model_sampling::aura_flow(double shift, std::string_view sampling) {
    // ComfyUI's patch() treats anything but img_to_img_velocity as flow; its combo offers
    // exactly these two, so anything else is bad input.
    if (sampling == "flow") return flow(shift, 1.0, node::aura_flow, sampling_type::flow);
    if (sampling == "img_to_img_velocity")
        return flow(shift, 1.0, node::aura_flow, sampling_type::img_to_img_velocity);
    fail("ModelSamplingAuraFlow", "parameter 'sampling' must be one of flow, img_to_img_velocity, got '" +
                                      std::string(sampling) + "'");
}

inline model_sampling model_sampling::flux_shift(double mu, node n) {
    model_sampling ms;
    ms.type_ = sampling_type::flow;
    ms.base_ = sampling_base::flux;
    ms.node_ = n;
    ms.shift_ = mu;
    ms.flux_e_mu_ = static_cast<float>(std::exp(mu));
    constexpr int n_entries = 10000;
    ms.sigmas_.resize(n_entries);
    for (int k = 1; k <= n_entries; ++k) // arange(1, n+1) / n: a float32 division
        ms.sigmas_[static_cast<std::size_t>(k - 1)] =
            ms.flux_sigma(static_cast<float>(k) / static_cast<float>(n_entries));
    return ms;
}

inline model_sampling model_sampling::flux(double max_shift, double base_shift, std::int64_t width,
                                           std::int64_t height) {
    constexpr const char* w = "ModelSamplingFlux";
    require_range(max_shift, 0.0, 100.0, w, "max_shift");
    require_range(base_shift, 0.0, 100.0, w, "base_shift");
    require_range(static_cast<double>(width), 16.0, 16384.0, w, "width");
    require_range(static_cast<double>(height), 16.0, 16384.0, w, "height");
    // mu is linear in the token count (16x16-pixel tokens): base_shift at 256, max_shift at 4096.
    const double slope = (max_shift - base_shift) / (4096.0 - 256.0);
    const double offset = base_shift - sampling_detail::rounded(slope * 256.0);
    const double tokens = static_cast<double>(width * height) / 256.0;
    return flux_shift(sampling_detail::rounded(tokens * slope) + offset, node::flux);
}

inline model_sampling model_sampling::ltxv(double max_shift, double base_shift,
                                           std::span<const index_t> latent_shape) {
    constexpr const char* w = "ModelSamplingLTXV";
    require_range(max_shift, 0.0, 100.0, w, "max_shift");
    require_range(base_shift, 0.0, 100.0, w, "base_shift");
    double tokens = 1.0; // prod(shape[2:]): the empty product for rank <= 2
    for (std::size_t d = 0; d < latent_shape.size(); ++d) {
        PATCHBAY_REQUIRE(latent_shape[d] >= 0, w,
                         "input 'latent' has a negative extent " + std::to_string(latent_shape[d]));
        if (d >= 2) tokens *= static_cast<double>(latent_shape[d]);
    }
    const double slope = (max_shift - base_shift) / (4096.0 - 1024.0);
    const double offset = base_shift - sampling_detail::rounded(slope * 1024.0);
    return flux_shift(sampling_detail::rounded(tokens * slope) + offset, node::ltxv);
}

inline model_sampling model_sampling::ltxv(double max_shift, double base_shift) {
    const index_t no_latent[4] = {1, 1, 64, 64}; // ComfyUI's 4096 tokens without a latent
    return ltxv(max_shift, base_shift, no_latent);
}

inline model_sampling model_sampling::log_linear(sampling_base base, sampling_type type,
                                                 double sigma_max, double sigma_min, node n) {
    model_sampling ms;
    ms.node_ = n;
    const char* w = ms.class_type();
    require_range(sigma_max, 0.0, 1000.0, w, "sigma_max");
    require_range(sigma_min, 0.0, 1000.0, w, "sigma_min");
    PATCHBAY_REQUIRE(sigma_min > 0.0, w,
                     "parameter 'sigma_min' must be > 0: the table is log-linear (ComfyUI fails on ln 0)");
    PATCHBAY_REQUIRE(sigma_max > 0.0, w,
                     "parameter 'sigma_max' must be > 0: the table is log-linear (ComfyUI fails on ln 0)");
    ms.type_ = type;
    ms.base_ = base;
    ms.sigma_data_ = type == sampling_type::edm ? 0.5 : 1.0;
    // sigma_min > sigma_max is accepted, as ComfyUI: the table then decreases.
    ms.sigmas_ = sampling_detail::log_linear_table(sigma_min, sigma_max, 1000);
    return ms;
}

inline model_sampling model_sampling::continuous_edm(std::string_view sampling, double sigma_max,
                                                     double sigma_min) {
    constexpr auto base = sampling_base::continuous_edm;
    if (sampling == "v_prediction")
        return log_linear(base, sampling_type::v_prediction, sigma_max, sigma_min, node::continuous_edm);
    if (sampling == "edm")
        return log_linear(base, sampling_type::edm, sigma_max, sigma_min, node::continuous_edm);
    if (sampling == "edm_playground_v2.5") {
        model_sampling ms = log_linear(base, sampling_type::edm, sigma_max, sigma_min, node::continuous_edm);
        ms.latent_format_ = &sdxl_playground_2_5_latent_format;
        return ms;
    }
    if (sampling == "eps")
        return log_linear(base, sampling_type::eps, sigma_max, sigma_min, node::continuous_edm);
    if (sampling == "cosmos_rflow")
        return log_linear(sampling_base::cosmos_rflow, sampling_type::cosmos_rflow, sigma_max,
                          sigma_min, node::continuous_edm);
    fail("ModelSamplingContinuousEDM",
         "parameter 'sampling' must be one of v_prediction, edm, edm_playground_v2.5, eps, "
         "cosmos_rflow, got '" + std::string(sampling) + "'");
}

inline model_sampling model_sampling::continuous_v(std::string_view sampling, double sigma_max,
                                                   double sigma_min) {
    PATCHBAY_REQUIRE(sampling == "v_prediction", "ModelSamplingContinuousV",
                     "parameter 'sampling' must be v_prediction (its only option), got '" +
                         std::string(sampling) + "'");
    return log_linear(sampling_base::continuous_v, sampling_type::v_prediction, sigma_max,
                      sigma_min, node::continuous_v);
}

inline model_sampling model_sampling::stable_cascade(double shift) {
    require_range(shift, 0.0, 100.0, "ModelSamplingStableCascade", "shift");
    model_sampling ms;
    ms.type_ = sampling_type::eps;
    ms.base_ = sampling_base::stable_cascade;
    ms.node_ = node::stable_cascade;
    ms.shift_ = shift;
    ms.cascade_ = sampling_detail::cascade_schedule(shift);
    constexpr int n_entries = 10000;
    ms.sigmas_.resize(n_entries);
    for (int k = 0; k < n_entries; ++k) // t = (k + 1) / 10000 in Python double, then float32
        ms.sigmas_[static_cast<std::size_t>(k)] =
            ms.cascade_.sigma(static_cast<float>(static_cast<double>(k + 1) / n_entries));
    return ms;
}

inline model_sampling model_sampling::with_noise_scale(double noise_scale) const {
    constexpr const char* w = "ModelNoiseScale";
    require_range(noise_scale, 0.0, 64.0, w, "noise_scale");
    PATCHBAY_REQUIRE(has_noise_scale(), w,
                     std::string("needs the model sampling of ModelSamplingSD3 or ModelSamplingAuraFlow "
                                 "(a flow schedule with shift and multiplier), the model's comes from ") +
                         class_type() + " (ComfyUI raises AttributeError there)");
    model_sampling ms = *this;
    ms.noise_scale_ = noise_scale;
    return ms;
}

inline model_sampling model_sampling::inheriting_noise_scale(const model_sampling& previous) const {
    model_sampling ms = *this;
    if (previous.has_noise_scale() && ms.has_noise_scale()) ms.noise_scale_ = previous.noise_scale_;
    return ms;
}

#define PATCHBAY_MS_OPS(name)                                                                     \
    {name, name ".calculate_input", name ".calculate_denoised", name ".noise_scaling",            \
     name ".inverse_noise_scaling"}
namespace sampling_detail {
inline constexpr const char* node_names[9][5] = {
    PATCHBAY_MS_OPS("ModelSamplingDiscrete"),     PATCHBAY_MS_OPS("ModelSamplingSD3"),
    PATCHBAY_MS_OPS("ModelSamplingAuraFlow"),     PATCHBAY_MS_OPS("ModelSamplingFlow"),
    PATCHBAY_MS_OPS("ModelSamplingFlux"),         PATCHBAY_MS_OPS("ModelSamplingLTXV"),
    PATCHBAY_MS_OPS("ModelSamplingContinuousEDM"), PATCHBAY_MS_OPS("ModelSamplingContinuousV"),
    PATCHBAY_MS_OPS("ModelSamplingStableCascade")};
} // namespace sampling_detail
#undef PATCHBAY_MS_OPS

inline const char* model_sampling::class_type() const noexcept {
    return sampling_detail::node_names[static_cast<int>(node_)][0];
}

inline const char* model_sampling::where(op o) const noexcept {
    return sampling_detail::node_names[static_cast<int>(node_)][1 + static_cast<int>(o)];
}

inline float model_sampling::flux_sigma(float t) const {
    // ComfyUI's float32 expression while e^mu and 1/e^mu are finite floats (|mu| < ~88.7);
    // beyond, it gives NaN or inf and patchbay returns the limit.
    constexpr float inf = std::numeric_limits<float>::infinity();
    if (flux_e_mu_ < inf && 1.0f / flux_e_mu_ < inf) return sampling_detail::flux_time_shift32(flux_e_mu_, t);
    return static_cast<float>(sampling_detail::flux_time_shift64(shift_, static_cast<double>(t)));
}

inline double model_sampling::timestep(double sigma) const {
    PATCHBAY_REQUIRE(sigma == sigma, class_type(), "timestep: argument 'sigma' is NaN");
    const float s = static_cast<float>(sigma);
    switch (base_) {
    case sampling_base::discrete_flow: return static_cast<double>(s * static_cast<float>(multiplier_));
    case sampling_base::flux: return static_cast<double>(s);
    case sampling_base::continuous_edm: return static_cast<double>(sampling_detail::edm_timestep(s));
    case sampling_base::continuous_v: return static_cast<double>(sampling_detail::v_timestep(s));
    case sampling_base::cosmos_rflow: return static_cast<double>(sampling_detail::cosmos_timestep(s));
    case sampling_base::stable_cascade: return static_cast<double>(cascade_.timestep(s));
    case sampling_base::discrete: break;
    }
    const float ls = std::log(s);
    // ComfyUI: argmin_i |ls - log_sigmas[i]| in float32, first index on ties. The table is
    // increasing, so the float32 distances fall up to the insertion point k and rise after it:
    // the minimum is at k-1 or k, and on the falling side equal (rounded) distances can form a
    // plateau whose first index is the answer. NaN (negative sigma) gives index 0, as torch.
    std::size_t best = 0;
    if (ls == ls) {
        const auto& L = log_sigmas_;
        const std::size_t k =
            static_cast<std::size_t>(std::lower_bound(L.begin(), L.end(), ls) - L.begin());
        auto dist = [&](std::size_t i) { return std::abs(ls - L[i]); };
        if (k == 0) best = 0;
        else if (k == L.size() || dist(k - 1) <= dist(k)) {
            best = k - 1;
            while (best > 0 && dist(best - 1) == dist(best)) --best;
        } else best = k;
    }
    return static_cast<double>(static_cast<long long>(best) * skip_steps_ + (skip_steps_ - 1));
}

inline double model_sampling::sigma(double timestep) const {
    PATCHBAY_REQUIRE(timestep == timestep, class_type(), "sigma: argument 'timestep' is NaN");
    float t = static_cast<float>(timestep);
    switch (base_) {
    case sampling_base::discrete_flow:
        return static_cast<double>(
            sampling_detail::time_snr_shift<float>(shift_, t / static_cast<float>(multiplier_)));
    case sampling_base::flux: return static_cast<double>(flux_sigma(t));
    case sampling_base::continuous_edm: return static_cast<double>(sampling_detail::edm_sigma(t));
    case sampling_base::continuous_v: return static_cast<double>(sampling_detail::v_sigma(t));
    case sampling_base::cosmos_rflow:
        return static_cast<double>(sampling_detail::cosmos_sigma(t, sigma_max()));
    case sampling_base::stable_cascade: return static_cast<double>(cascade_.sigma(t));
    case sampling_base::discrete: break;
    }
    if (skip_steps_ != 1)
        t = (t - static_cast<float>(skip_steps_ - 1)) / static_cast<float>(skip_steps_);
    const float top = static_cast<float>(sigmas_.size() - 1);
    t = std::clamp(t, 0.0f, top);
    const float lo = std::floor(t);
    const float hi = std::ceil(t);
    const float w = t - lo;
    const float log_sigma = sampling_detail::rounded((1.0f - w) * log_sigmas_[static_cast<std::size_t>(lo)]) +
                            sampling_detail::rounded(w * log_sigmas_[static_cast<std::size_t>(hi)]);
    return static_cast<double>(std::exp(log_sigma));
}

inline double model_sampling::percent_to_sigma(double percent) const {
    PATCHBAY_REQUIRE(percent == percent, class_type(), "percent_to_sigma: argument 'percent' is NaN");
    const bool unit_top = base_ == sampling_base::discrete_flow || base_ == sampling_base::flux;
    if (percent <= 0.0) return unit_top ? 1.0 : 999999999.9;
    if (percent >= 1.0) return 0.0;
    switch (base_) {
    case sampling_base::discrete_flow: return sampling_detail::time_snr_shift<double>(shift_, 1.0 - percent);
    case sampling_base::flux: return sampling_detail::flux_time_shift64(shift_, 1.0 - percent);
    case sampling_base::continuous_edm:
    case sampling_base::continuous_v:
    case sampling_base::cosmos_rflow:
        return sampling_detail::log_linear_percent(sigma_min(), sigma_max(), percent);
    case sampling_base::stable_cascade: // float32 on ComfyUI's master too (a 0-d tensor)
        return static_cast<double>(cascade_.sigma(static_cast<float>(1.0 - percent)));
    case sampling_base::discrete: break;
    }
    // torch.tensor(python float) is float32: the timestep is rounded before sigma().
    return sigma(static_cast<double>(static_cast<float>((1.0 - percent) * 999.0)));
}

inline model_sampling::scalings model_sampling::scalings_at(double sigma) const {
    require_finite(sigma, class_type(), "sigma");
    const double sd2 = sigma_data_ * sigma_data_;
    const double a = sigma * sigma + sd2;
    const double c_in = 1.0 / std::sqrt(a);
    switch (type_) {
    case sampling_type::eps: return {1.0, -sigma, c_in};
    case sampling_type::v_prediction: return {sd2 / a, -sigma * sigma_data_ * c_in, c_in};
    case sampling_type::edm: return {sd2 / a, sigma * sigma_data_ * c_in, c_in};
    case sampling_type::x0: return {0.0, 1.0, c_in};
    case sampling_type::img_to_img:
    case sampling_type::img_to_img_flow: return {0.0, 1.0, 1.0};
    case sampling_type::img_to_img_velocity: return {1.0, -1.0, 1.0};
    case sampling_type::flow: return {1.0, -sigma, 1.0};
    case sampling_type::cosmos_rflow: {
        const double q = sigma / (sigma + 1.0);
        return {1.0 - q, -q, 1.0 - q};
    }
    case sampling_type::lcm: {
        // denoised = c_out_l * (x - out*sigma) + c_skip_l * x with the snapped timestep.
        const double s = timestep(sigma) * 10.0;
        const double skip = 0.25 / (s * s + 0.25);
        const double outc = s / std::sqrt(s * s + 0.25);
        return {outc + skip, -outc * sigma, c_in};
    }
    }
    return {1.0, -sigma, c_in};
}

namespace sampling_detail {
/// Calls f(sigma(b), item b of out, item b of each input) for every batch item b (one-item
/// slices): the formulas take a per-item sigma.
template <class T, std::size_t R, class F, class... In>
void per_item(const view<const T, 1>& sigma, const view<T, R>& out, F&& f, const In&... in) {
    for (index_t b = 0; b < out.extent(0); ++b) f(sigma(b), out.batch_slice(b, 1), in.batch_slice(b, 1)...);
}
} // namespace sampling_detail

template <class T, std::size_t R>
void model_sampling::check_op(const view<const T, 1>& sigma, const view<const T, R>& a,
                              const view<T, R>& out, const char* w,
                              std::string_view name_a) const {
    require_nonempty(a, w, name_a);
    require_same_shape(a, out, w, name_a, "out");
    require_batch_vector(sigma, a, w, "sigma");
    require_writable_layout(out, w, "out");
    require_no_partial_overlap(out, a, w, "out", name_a);
    for (index_t b = 0; b < sigma.extent(0); ++b)
        require_finite(static_cast<double>(sigma(b)), w, "sigma");
}

template <class T, std::size_t R>
void model_sampling::calculate_input(std::type_identity_t<view<const T, 1>> sigma,
                                     std::type_identity_t<view<const T, R>> x,
                                     view<T, R> out) const {
    check_op<T, R>(sigma, x, out, where(op::calculate_input), "x");
    const T sd2 = static_cast<T>(sigma_data_ * sigma_data_);
    sampling_detail::per_item<T, R>(sigma, out, [&](const T s, auto ob, auto xb) {
        switch (type_) {
        case sampling_type::img_to_img:
        case sampling_type::flow:
        case sampling_type::img_to_img_flow:
        case sampling_type::img_to_img_velocity:
            if (!same_elements(ob, xb)) kernels::copy<T, R>(xb, ob);
            break;
        case sampling_type::cosmos_rflow: {
            const T keep = T(1) - s / (s + T(1));
            kernels::transform(ob, [keep](auto v) { return v * keep; }, xb);
            break;
        }
        default: { // the EPS family: x / sqrt(sigma^2 + sigma_data^2)
            const T q = std::sqrt(sampling_detail::rounded(s * s) + sd2);
            kernels::transform(ob, [q](auto v) { return v / q; }, xb);
        }
        }
    }, x);
}

template <class T, std::size_t R>
void model_sampling::calculate_denoised(std::type_identity_t<view<const T, 1>> sigma,
                                        std::type_identity_t<view<const T, R>> model_output,
                                        std::type_identity_t<view<const T, R>> x,
                                        view<T, R> out) const {
    const char* w = where(op::calculate_denoised);
    require_same_shape(x, model_output, w, "x", "model_output"); // inputs first: clearer message
    check_op<T, R>(sigma, x, out, w, "x");
    require_no_partial_overlap(out, model_output, w, "out", "model_output");
    const T sd = static_cast<T>(sigma_data_);
    const T sd2 = static_cast<T>(sigma_data_ * sigma_data_);
    sampling_detail::per_item<T, R>(sigma, out, [&](const T s, auto ob, auto xb, auto mb) {
        switch (type_) {
        case sampling_type::eps:
        case sampling_type::flow:
            kernels::transform(ob, [s](auto xv, auto mv) { return xv - mv * s; }, xb, mb);
            break;
        case sampling_type::x0:
        case sampling_type::img_to_img:
        case sampling_type::img_to_img_flow:
            if (!same_elements(ob, mb)) kernels::copy<T, R>(mb, ob);
            break;
        case sampling_type::img_to_img_velocity:
            kernels::transform(ob, [](auto xv, auto mv) { return xv - mv; }, xb, mb);
            break;
        case sampling_type::v_prediction:
        case sampling_type::edm: {
            // x*sd^2/a -+ out*s*sd/sqrt(a) with a = s^2 + sd^2. sd is 1 or 0.5, so scaling by
            // sd and sd^2 is exact and folds into a/sd^2 and s*sd without changing any bit.
            const T a = sampling_detail::rounded(s * s) + sd2;
            const T q = std::sqrt(a);
            const T a_s = a / sd2;
            const T c = s * sd;
            if (type_ == sampling_type::v_prediction)
                kernels::transform(ob, [a_s, c, q](auto xv, auto mv) { return xv / a_s - mv * c / q; }, xb, mb);
            else
                kernels::transform(ob, [a_s, c, q](auto xv, auto mv) { return xv / a_s + mv * c / q; }, xb, mb);
            break;
        }
        case sampling_type::cosmos_rflow: {
            const T q = s / (s + T(1));
            const T keep = T(1) - q;
            kernels::transform(ob, [q, keep](auto xv, auto mv) { return xv * keep - mv * q; }, xb, mb);
            break;
        }
        case sampling_type::lcm: {
            // ComfyUI: scaled = 10 * snapped timestep; c_skip = 0.25 / (scaled^2 + 0.25)
            // (torch evaluates scalar / tensor as reciprocal * scalar); c_out = scaled /
            // sqrt(scaled^2 + 0.25); result c_out * (x - out*sigma) + c_skip * x.
            const T st = static_cast<T>(timestep(static_cast<double>(s))) * T(10);
            const T d = sampling_detail::rounded(st * st) + T(0.25);
            const T c_skip = (T(1) / d) * T(0.25);
            const T c_out = st / std::sqrt(d);
            kernels::transform(
                ob, [s, c_skip, c_out](auto xv, auto mv) { return c_out * (xv - mv * s) + c_skip * xv; },
                xb, mb);
            break;
        }
        }
    }, x, model_output);
}

template <class T, std::size_t R>
void model_sampling::noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                                   std::type_identity_t<view<const T, R>> noise,
                                   std::type_identity_t<view<const T, R>> latent_image,
                                   bool max_denoise, view<T, R> out) const {
    const char* w = where(op::noise_scaling);
    require_same_shape(noise, latent_image, w, "noise", "latent_image");
    check_op<T, R>(sigma, noise, out, w, "noise");
    require_no_partial_overlap(out, latent_image, w, "out", "latent_image");
    const T ns = static_cast<T>(noise_scale_);
    sampling_detail::per_item<T, R>(sigma, out, [&](const T s, auto ob, auto nb, auto lb) {
        switch (type_) {
        case sampling_type::flow: {
            const T keep = T(1) - s;
            if (noise_scale_ == 1.0) // s * (1 * noise) is s * noise: skip the multiply
                kernels::transform(ob, [s, keep](auto n, auto l) { return s * n + keep * l; }, nb, lb);
            else
                kernels::transform(ob, [s, ns, keep](auto n, auto l) { return s * (ns * n) + keep * l; },
                                   nb, lb);
            break;
        }
        case sampling_type::img_to_img_flow:
        case sampling_type::img_to_img_velocity:
            if (!same_elements(ob, lb)) kernels::copy<T, R>(lb, ob);
            break;
        case sampling_type::cosmos_rflow:
            kernels::transform(ob, [s](auto n, auto l) { return n * s + l; }, nb, lb);
            break;
        default: { // the EPS family
            const T scale = max_denoise ? std::sqrt(T(1) + sampling_detail::rounded(s * s)) : s;
            kernels::transform(ob, [scale](auto n, auto l) { return n * scale + l; }, nb, lb);
        }
        }
    }, noise, latent_image);
}

template <class T, std::size_t R>
void model_sampling::inverse_noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                                           std::type_identity_t<view<const T, R>> latent,
                                           view<T, R> out) const {
    check_op<T, R>(sigma, latent, out, where(op::inverse_noise_scaling), "latent");
    sampling_detail::per_item<T, R>(sigma, out, [&](const T s, auto ob, auto lb) {
        if (type_ == sampling_type::img_to_img_flow) {
            kernels::transform(ob, [](auto v) { return T(1) - v; }, lb);
            return;
        }
        if (type_ != sampling_type::flow) {
            if (!same_elements(ob, lb)) kernels::copy<T, R>(lb, ob);
            return;
        }
        const T keep = T(1) - s;
        if (keep == T(0))
            fail(where(op::inverse_noise_scaling),
                 "argument 'sigma' is 1: a flow latent at sigma 1 is pure noise and cannot be "
                 "unscaled (latent / (1 - sigma) divides by zero)");
        kernels::transform(ob, [keep](auto v) { return v / keep; }, lb);
    }, latent);
}

// ------------------------------------------------------------------------------------------
// from_comfy: "Name", "Name(arg, key=value, ...)" or a chain "A -> B -> ...".

namespace sampling_detail {

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

inline std::string_view unquote(std::string_view s) {
    s = trim(s);
    if (s.size() >= 2 && (s.front() == '\'' || s.front() == '"') && s.back() == s.front())
        s = s.substr(1, s.size() - 2);
    return s;
}

/// Split on `sep` outside brackets, parentheses and quotes.
inline std::vector<std::string_view> split_top_level(std::string_view s, std::string_view sep) {
    std::vector<std::string_view> parts;
    int depth = 0;
    char quote = 0;
    std::size_t start = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (quote) {
            if (c == quote) quote = 0;
        } else if (c == '\'' || c == '"') {
            quote = c;
        } else if (c == '(' || c == '[') {
            ++depth;
        } else if (c == ')' || c == ']') {
            --depth;
        } else if (depth == 0 && s.substr(i, sep.size()) == sep) {
            parts.push_back(s.substr(start, i - start));
            start = i + sep.size();
            i = start - 1;
        }
    }
    parts.push_back(s.substr(start));
    return parts;
}

inline double parse_double(std::string_view s, std::string_view where, std::string_view name) {
    const std::string str(trim(s));
    char* end = nullptr;
    const double v = std::strtod(str.c_str(), &end);
    if (str.empty() || end != str.c_str() + str.size())
        fail(where, "parameter '" + std::string(name) + "' is not a number: '" + str + "'");
    return v;
}

inline std::int64_t parse_int(std::string_view s, std::string_view where, std::string_view name) {
    const double v = parse_double(s, where, name);
    if (!(std::abs(v) < 9.0e15) || v != std::floor(v))
        fail(where, "parameter '" + std::string(name) + "' must be an integer, got '" +
                        std::string(trim(s)) + "'");
    return static_cast<std::int64_t>(v);
}

inline bool parse_bool(std::string_view s, std::string_view where, std::string_view name) {
    s = unquote(s);
    if (s == "True" || s == "true" || s == "1") return true;
    if (s == "False" || s == "false" || s == "0") return false;
    fail(where, "parameter '" + std::string(name) + "' must be True or False, got '" +
                    std::string(s) + "'");
}

/// "[1, 128, 8, 16, 24]" (or parentheses) -> extents.
inline std::vector<index_t> parse_shape(std::string_view s, std::string_view where, std::string_view name) {
    s = trim(s);
    if (s.size() < 2 || !((s.front() == '[' && s.back() == ']') || (s.front() == '(' && s.back() == ')')))
        fail(where, "parameter '" + std::string(name) + "' must be a list like [1, 4, 64, 64], got '" +
                        std::string(s) + "'");
    std::vector<index_t> shape;
    const std::string_view inner = trim(s.substr(1, s.size() - 2));
    if (inner.empty()) return shape;
    for (std::string_view item : split_top_level(inner, ","))
        if (!trim(item).empty()) shape.push_back(static_cast<index_t>(parse_int(item, where, name)));
    return shape;
}

} // namespace sampling_detail

inline model_sampling model_sampling::apply_comfy(std::string_view text, const model_sampling* previous) {
    using namespace sampling_detail;
    constexpr std::string_view where = "model_sampling::from_comfy";
    std::string_view s = trim(text);
    std::string_view name = s, args;
    if (const auto open = s.find('('); open != std::string_view::npos) {
        if (s.back() != ')') fail(where, "missing ')' in '" + std::string(text) + "'");
        name = trim(s.substr(0, open));
        args = s.substr(open + 1, s.size() - open - 2);
    }
    // Split the argument list into positional values and key=value pairs.
    std::vector<std::string_view> positional;
    std::vector<std::pair<std::string_view, std::string_view>> named;
    if (!trim(args).empty()) {
        for (std::string_view item : split_top_level(args, ",")) {
            item = trim(item);
            if (item.empty()) fail(where, "empty argument in '" + std::string(text) + "'");
            const auto eq = item.find('=');
            constexpr std::string_view latent_prose = "latent of shape "; // the golden cases' wording
            if (eq != std::string_view::npos && item.find_first_of("[(") > eq)
                named.emplace_back(trim(item.substr(0, eq)), trim(item.substr(eq + 1)));
            else if (item.substr(0, latent_prose.size()) == latent_prose)
                named.emplace_back("latent_shape", trim(item.substr(latent_prose.size())));
            else if (!named.empty())
                fail(where, "positional argument after a named one in '" + std::string(text) + "'");
            else
                positional.push_back(item);
        }
    }
    // Bind arguments to the node's inputs in ComfyUI's order; returns the value text or "".
    std::vector<std::string_view> values;
    auto bind = [&](std::initializer_list<std::string_view> inputs) {
        if (positional.size() > inputs.size())
            fail(where, "too many arguments in '" + std::string(text) + "'");
        values.assign(inputs.size(), std::string_view{});
        for (std::size_t i = 0; i < positional.size(); ++i) values[i] = positional[i];
        for (auto [k, v] : named) {
            std::size_t i = 0;
            for (auto in : inputs) {
                if (in == k) break;
                ++i;
            }
            if (i == inputs.size())
                fail(where, "unknown argument '" + std::string(k) + "' for " + std::string(name));
            values[i] = v;
        }
    };
    auto num = [&](std::size_t i, std::string_view input, double def) {
        return values[i].empty() ? def : parse_double(values[i], where, input);
    };
    auto text_of = [&](std::size_t i, std::string_view def) {
        return values[i].empty() ? def : unquote(values[i]);
    };

    if (name == "ModelSamplingDiscrete") {
        bind({"sampling", "zsnr"});
        return discrete(text_of(0, "eps"), values[1].empty() ? false : parse_bool(values[1], where, "zsnr"));
    }
    if (name == "ModelSamplingSD3") {
        bind({"shift"});
        const model_sampling ms = sd3(num(0, "shift", 3.0));
        return previous ? ms.inheriting_noise_scale(*previous) : ms;
    }
    if (name == "ModelSamplingAuraFlow") {
        bind({"shift", "sampling"});
        const model_sampling ms = aura_flow(num(0, "shift", 1.73), text_of(1, "flow"));
        return previous ? ms.inheriting_noise_scale(*previous) : ms;
    }
    if (name == "ModelSamplingFlow") {
        bind({"shift", "multiplier"});
        return flow(num(0, "shift", 1.0), num(1, "multiplier", 1000.0));
    }
    if (name == "ModelSamplingFlux") {
        bind({"max_shift", "base_shift", "width", "height"});
        return flux(num(0, "max_shift", 1.15), num(1, "base_shift", 0.5),
                    values[2].empty() ? 1024 : parse_int(values[2], where, "width"),
                    values[3].empty() ? 1024 : parse_int(values[3], where, "height"));
    }
    if (name == "ModelSamplingLTXV") {
        bind({"max_shift", "base_shift", "latent_shape", "tokens"});
        const double max_shift = num(0, "max_shift", 2.05), base_shift = num(1, "base_shift", 0.95);
        if (!values[2].empty() && !values[3].empty())
            fail(where, "ModelSamplingLTXV takes latent_shape or tokens, not both");
        if (!values[3].empty()) {
            const std::int64_t tokens = parse_int(values[3], where, "tokens");
            const index_t shape[3] = {1, 1, static_cast<index_t>(tokens)};
            return ltxv(max_shift, base_shift, shape);
        }
        if (!values[2].empty()) {
            const std::vector<index_t> shape = parse_shape(values[2], where, "latent_shape");
            return ltxv(max_shift, base_shift, shape);
        }
        return ltxv(max_shift, base_shift);
    }
    if (name == "ModelSamplingContinuousEDM") {
        bind({"sampling", "sigma_max", "sigma_min"});
        return continuous_edm(text_of(0, "v_prediction"), num(1, "sigma_max", 120.0), num(2, "sigma_min", 0.002));
    }
    if (name == "ModelSamplingContinuousV") {
        bind({"sampling", "sigma_max", "sigma_min"});
        return continuous_v(text_of(0, "v_prediction"), num(1, "sigma_max", 500.0), num(2, "sigma_min", 0.03));
    }
    if (name == "ModelSamplingStableCascade") {
        bind({"shift"});
        return stable_cascade(num(0, "shift", 2.0));
    }
    if (name == "ModelNoiseScale") {
        bind({"noise_scale"});
        if (!previous)
            fail(where, "ModelNoiseScale changes the model sampling before it: write it after one, "
                        "e.g. 'ModelSamplingSD3(shift=3.0) -> ModelNoiseScale(noise_scale=7.5)'");
        return previous->with_noise_scale(num(0, "noise_scale", 1.0));
    }
    fail(where, "unknown model sampling '" + std::string(name) +
                    "' (expected ModelSamplingDiscrete, ModelSamplingSD3, ModelSamplingAuraFlow, "
                    "ModelSamplingFlux, ModelSamplingLTXV, ModelSamplingContinuousEDM, "
                    "ModelSamplingContinuousV, ModelSamplingStableCascade, ModelNoiseScale or "
                    "ModelSamplingFlow)");
}

inline model_sampling model_sampling::from_comfy(std::string_view text) {
    const auto nodes = sampling_detail::split_top_level(text, "->");
    model_sampling ms = apply_comfy(nodes.front(), nullptr);
    for (std::size_t i = 1; i < nodes.size(); ++i) ms = apply_comfy(nodes[i], &ms);
    return ms;
}

} // namespace patchbay
