// patchbay: ComfyUI's model-sampling nodes as patches of the model_sampling slot, so guiders,
// chains and the workflow importer handle them through their descriptors like any patch. Each
// node builds its object with the model_sampling factory of the same name
// (sampling/model_sampling.hpp, which cites the schedules' papers and ComfyUI's classes);
// ModelNoiseScale and the SD3 / AuraFlow nodes read the object in effect before them, as ComfyUI's
// nodes read the model's current model_sampling. Semantics: docs/patches/model_sampling.md.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

/// ComfyUI "ModelSamplingDiscrete".
struct model_sampling_discrete {
    static constexpr std::array<std::string_view, 6> samplings{"eps",        "v_prediction", "lcm",
                                                               "x0",         "img_to_img",   "img_to_img_flow"};
    std::string sampling = "eps";
    bool zsnr = false;

    static constexpr auto descriptor() {
        return describe<model_sampling_discrete>("ModelSamplingDiscrete", "ModelSamplingDiscrete", hook_kind::model_sampling,
                                                 combo("sampling", &model_sampling_discrete::sampling, samplings, "eps"),
                                                 boolean("zsnr", &model_sampling_discrete::zsnr, false));
    }
    model_sampling apply_sampling(const model_sampling&) const { return model_sampling::discrete(sampling, zsnr); }
};

/// ComfyUI "ModelSamplingSD3" (keeps a noise scale set earlier in the chain).
struct model_sampling_sd3 {
    double shift = 3.0;
    static constexpr bool reads_previous_sampling = true;
    static constexpr auto descriptor() {
        return describe<model_sampling_sd3>("ModelSamplingSD3", "ModelSamplingSD3", hook_kind::model_sampling,
                                            floating("shift", &model_sampling_sd3::shift, 3.0, 0.0, 100.0, 0.01));
    }
    model_sampling apply_sampling(const model_sampling& previous) const {
        return model_sampling::sd3(shift).inheriting_noise_scale(previous);
    }
};

/// ComfyUI "ModelSamplingAuraFlow" (keeps a noise scale set earlier in the chain).
struct model_sampling_aura_flow {
    static constexpr std::array<std::string_view, 2> samplings{"flow", "img_to_img_velocity"};
    double shift = 1.73;
    std::string sampling = "flow";
    static constexpr bool reads_previous_sampling = true;
    static constexpr auto descriptor() {
        return describe<model_sampling_aura_flow>(
            "ModelSamplingAuraFlow", "ModelSamplingAuraFlow", hook_kind::model_sampling,
            floating("shift", &model_sampling_aura_flow::shift, 1.73, 0.0, 100.0, 0.01),
            optional(combo("sampling", &model_sampling_aura_flow::sampling, samplings, "flow")));
    }
    model_sampling apply_sampling(const model_sampling& previous) const {
        return model_sampling::aura_flow(shift, sampling).inheriting_noise_scale(previous);
    }
};

/// ComfyUI "ModelSamplingFlux".
struct model_sampling_flux {
    double max_shift = 1.15;
    double base_shift = 0.5;
    std::int64_t width = 1024;
    std::int64_t height = 1024;
    static constexpr auto descriptor() {
        return describe<model_sampling_flux>(
            "ModelSamplingFlux", "ModelSamplingFlux", hook_kind::model_sampling,
            floating("max_shift", &model_sampling_flux::max_shift, 1.15, 0.0, 100.0, 0.01),
            floating("base_shift", &model_sampling_flux::base_shift, 0.5, 0.0, 100.0, 0.01),
            integer("width", &model_sampling_flux::width, 1024, 16, 16384, 8),
            integer("height", &model_sampling_flux::height, 1024, 16, 16384, 8));
    }
    model_sampling apply_sampling(const model_sampling&) const {
        return model_sampling::flux(max_shift, base_shift, width, height);
    }
};

/// ComfyUI "ModelSamplingLTXV". Its optional `latent` input is a LATENT whose shape sets the
/// shift; a workflow records the link, and the engine gives the latent's token count (T*H*W of
/// the latent, H*W for images) as the model fact `latent_tokens`. A linked latent without that
/// fact is refused rather than silently taking the no-latent default.
struct model_sampling_ltxv {
    double max_shift = 2.05;
    double base_shift = 0.95;
    node_link latent{};
    std::int64_t latent_tokens = 0; ///< 0: no latent (ComfyUI's default, 4096 tokens)
    static constexpr auto descriptor() {
        return describe<model_sampling_ltxv>(
            "ModelSamplingLTXV", "ModelSamplingLTXV", hook_kind::model_sampling,
            floating("max_shift", &model_sampling_ltxv::max_shift, 2.05, 0.0, 100.0, 0.01),
            floating("base_shift", &model_sampling_ltxv::base_shift, 0.95, 0.0, 100.0, 0.01),
            link("latent", &model_sampling_ltxv::latent, "LATENT", /*optional=*/true),
            model_fact("latent_tokens", &model_sampling_ltxv::latent_tokens, 0, 0, 1e12));
    }
    void check_params() const {
        if (!latent.node_id.empty() && latent_tokens == 0)
            fail("ModelSamplingLTXV", "input 'latent' links to node '" + latent.node_id +
                                          "', whose shape sets the shift; give the latent's token count as the "
                                          "model fact 'latent_tokens'");
    }
    model_sampling apply_sampling(const model_sampling&) const {
        if (latent_tokens == 0) return model_sampling::ltxv(max_shift, base_shift);
        const std::array<index_t, 3> shape{1, 1, static_cast<index_t>(latent_tokens)};
        return model_sampling::ltxv(max_shift, base_shift, shape);
    }
};

/// ModelSamplingContinuousEDM and ModelSamplingContinuousV share their inputs (a sampling
/// combo and the sigma range of a log-linear table); a tag gives each its name, options,
/// defaults and factory.
template <class Tag>
struct model_sampling_continuous_node {
    std::string sampling = std::string(Tag::options[0]);
    double sigma_max = Tag::sigma_max;
    double sigma_min = Tag::sigma_min;
    static constexpr auto descriptor() {
        using S = model_sampling_continuous_node;
        return describe<S>(Tag::class_type, Tag::class_type, hook_kind::model_sampling,
                           combo("sampling", &S::sampling, Tag::options, Tag::options[0]),
                           floating("sigma_max", &S::sigma_max, Tag::sigma_max, 0.0, 1000.0, 0.001),
                           floating("sigma_min", &S::sigma_min, Tag::sigma_min, 0.0, 1000.0, 0.001));
    }
    model_sampling apply_sampling(const model_sampling&) const { return Tag::make(sampling, sigma_max, sigma_min); }
};

struct continuous_edm_node {
    static constexpr std::string_view class_type = "ModelSamplingContinuousEDM";
    static constexpr std::array<std::string_view, 5> options{"v_prediction", "edm", "edm_playground_v2.5", "eps",
                                                             "cosmos_rflow"};
    static constexpr double sigma_max = 120.0, sigma_min = 0.002;
    static model_sampling make(std::string_view s, double hi, double lo) { return model_sampling::continuous_edm(s, hi, lo); }
};
struct continuous_v_node {
    static constexpr std::string_view class_type = "ModelSamplingContinuousV";
    static constexpr std::array<std::string_view, 1> options{"v_prediction"};
    static constexpr double sigma_max = 500.0, sigma_min = 0.03;
    static model_sampling make(std::string_view s, double hi, double lo) { return model_sampling::continuous_v(s, hi, lo); }
};

/// ComfyUI "ModelSamplingContinuousEDM" (edm_playground_v2.5 also has a latent format, see
/// model_sampling::latent_format()).
using model_sampling_continuous_edm = model_sampling_continuous_node<continuous_edm_node>;
/// ComfyUI "ModelSamplingContinuousV".
using model_sampling_continuous_v = model_sampling_continuous_node<continuous_v_node>;

/// ComfyUI "ModelSamplingStableCascade".
struct model_sampling_stable_cascade {
    double shift = 2.0;
    static constexpr auto descriptor() {
        return describe<model_sampling_stable_cascade>(
            "ModelSamplingStableCascade", "ModelSamplingStableCascade", hook_kind::model_sampling,
            floating("shift", &model_sampling_stable_cascade::shift, 2.0, 0.0, 100.0, 0.01));
    }
    model_sampling apply_sampling(const model_sampling&) const { return model_sampling::stable_cascade(shift); }
};

/// ComfyUI "ModelNoiseScale": the current (SD3 / AuraFlow-style) object with a noise scale; on
/// any other model sampling a patchbay::error (ComfyUI raises AttributeError).
struct model_noise_scale {
    double noise_scale = 1.0;
    static constexpr bool reads_previous_sampling = true;
    static constexpr bool builds_sampling_object = false;
    static constexpr auto descriptor() {
        return describe<model_noise_scale>("ModelNoiseScale", "ModelNoiseScale", hook_kind::model_sampling,
                                           floating("noise_scale", &model_noise_scale::noise_scale, 1.0, 0.0, 64.0, 0.01));
    }
    model_sampling apply_sampling(const model_sampling& previous) const {
        return previous.with_noise_scale(noise_scale);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_discrete)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_sd3)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_aura_flow)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_flux)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_ltxv)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_continuous_edm)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_continuous_v)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_sampling_stable_cascade)
PATCHBAY_DECLARE_BUILTIN(patchbay::model_noise_scale)
