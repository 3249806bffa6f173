// Conformance handlers: every model-sampling node (ModelSamplingDiscrete, SD3, AuraFlow, Flux,
// LTXV, ContinuousEDM, ContinuousV, StableCascade) and ModelNoiseScale: model_sampling.schedule,
// model_sampling.prediction and the end-to-end Euler runs.
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "e2e.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "registry.hpp"

namespace conformance_cases_model_sampling {

namespace {

using namespace patchbay;
using namespace patchbay::conformance;

/// A node input of the expected JSON type; a wrong type (e.g. zsnr "yes", shift null) is bad
/// input and raises patchbay::error like any other invalid parameter.
template <class V>
V typed_param(const golden_case& gc, const char* patch, const std::string& name, V fallback) {
    if (!gc.params().contains(name)) return fallback;
    const auto& v = gc.params().at(name);
    const bool ok = std::is_same_v<V, bool> ? v.is_boolean()
                    : std::is_same_v<V, std::string> ? v.is_string()
                    : std::is_same_v<V, std::int64_t> ? v.is_number_integer()
                                                     : v.is_number();
    if (!ok) fail(patch, "parameter '" + name + "' has the wrong type: " + v.dump());
    return v.get<V>();
}

model_sampling discrete_from(const golden_case& gc) {
    constexpr const char* p = "ModelSamplingDiscrete";
    return model_sampling::discrete(typed_param<std::string>(gc, p, "sampling", "eps"),
                                    typed_param<bool>(gc, p, "zsnr", false));
}
/// A case that records the nodes applied before its own (ModelNoiseScale, SD3/AuraFlow
/// `after-noise-scale-*`) is built from that chain; otherwise from the node's params.
template <class F>
model_sampling chain_or(const golden_case& gc, F&& from_params) {
    const std::string chain = gc.scalar<std::string>("model_sampling_chain", "");
    return chain.empty() ? from_params() : model_sampling::from_comfy(chain);
}
model_sampling sd3_from(const golden_case& gc) {
    return chain_or(gc, [&] { return model_sampling::sd3(typed_param<double>(gc, "ModelSamplingSD3", "shift", 3.0)); });
}
model_sampling aura_from(const golden_case& gc) {
    constexpr const char* p = "ModelSamplingAuraFlow";
    return chain_or(gc, [&] {
        return model_sampling::aura_flow(typed_param<double>(gc, p, "shift", 1.73),
                                         typed_param<std::string>(gc, p, "sampling", "flow"));
    });
}
model_sampling noise_scale_from(const golden_case& gc) {
    return chain_or(gc, [&]() -> model_sampling {
        fail("ModelNoiseScale", "the case does not say which model sampling it scales (no model_sampling_chain)");
    });
}
model_sampling flux_from(const golden_case& gc) {
    constexpr const char* p = "ModelSamplingFlux";
    return model_sampling::flux(typed_param<double>(gc, p, "max_shift", 1.15),
                                typed_param<double>(gc, p, "base_shift", 0.5),
                                typed_param<std::int64_t>(gc, p, "width", 1024),
                                typed_param<std::int64_t>(gc, p, "height", 1024));
}
model_sampling ltxv_from(const golden_case& gc) {
    constexpr const char* p = "ModelSamplingLTXV";
    const double max_shift = typed_param<double>(gc, p, "max_shift", 2.05);
    const double base_shift = typed_param<double>(gc, p, "base_shift", 0.95);
    // Only the latent's shape matters; the case records it (null = no latent).
    if (!gc.scalars().contains("latent_shape") || gc.scalars().at("latent_shape").is_null())
        return model_sampling::ltxv(max_shift, base_shift);
    const auto shape = gc.scalars().at("latent_shape").get<std::vector<index_t>>();
    return model_sampling::ltxv(max_shift, base_shift, shape);
}
model_sampling edm_from(const golden_case& gc) {
    constexpr const char* p = "ModelSamplingContinuousEDM";
    return model_sampling::continuous_edm(typed_param<std::string>(gc, p, "sampling", "v_prediction"),
                                          typed_param<double>(gc, p, "sigma_max", 120.0),
                                          typed_param<double>(gc, p, "sigma_min", 0.002));
}
model_sampling v_from(const golden_case& gc) {
    constexpr const char* p = "ModelSamplingContinuousV";
    return model_sampling::continuous_v(typed_param<std::string>(gc, p, "sampling", "v_prediction"),
                                        typed_param<double>(gc, p, "sigma_max", 500.0),
                                        typed_param<double>(gc, p, "sigma_min", 0.03));
}
model_sampling cascade_from(const golden_case& gc) {
    return model_sampling::stable_cascade(typed_param<double>(gc, "ModelSamplingStableCascade", "shift", 2.0));
}

tensor<float> vector_tensor(std::span<const float> v) {
    tensor<float> t({static_cast<index_t>(v.size())});
    for (std::size_t i = 0; i < v.size(); ++i) t[static_cast<index_t>(i)] = v[i];
    return t;
}

void schedule(const model_sampling& ms, const golden_case& gc, results& out) {
    put(out, "sigmas", vector_tensor(ms.sigmas()));
    const bool discrete = ms.base() == sampling_base::discrete;
    if (discrete) put(out, "log_sigmas", vector_tensor(ms.log_sigmas()));
    tensor<float> smin({1}), smax({1});
    smin[0] = ms.sigma_min();
    smax[0] = ms.sigma_max();
    put(out, "sigma_min", smin);
    put(out, "sigma_max", smax);

    // Timesteps: integer indices (int64 in ComfyUI) for discrete tables, float32 for the
    // continuous ones; both are exact as doubles.
    const tensor<float> qs = gc.tensor_input<float>("query_sigma");
    tensor<double> ts(qs.shape());
    for (index_t i = 0; i < qs.size(); ++i) ts[i] = ms.timestep(qs[i]);
    if (!discrete) {
        tensor<float> tf(qs.shape());
        for (index_t i = 0; i < qs.size(); ++i) tf[i] = static_cast<float>(ts[i]);
        put(out, "timestep_of_sigma", tf);
    } else {
        put(out, "timestep_of_sigma", ts);
    }

    const tensor<float> qt = gc.tensor_input<float>("query_timestep");
    tensor<float> st(qt.shape());
    for (index_t i = 0; i < qt.size(); ++i) st[i] = static_cast<float>(ms.sigma(qt[i]));
    put(out, "sigma_of_timestep", st);

    const auto percents = gc.scalars().at("percents").get<std::vector<double>>();
    tensor<double> ps({static_cast<index_t>(percents.size())});
    for (std::size_t i = 0; i < percents.size(); ++i)
        ps[static_cast<index_t>(i)] = ms.percent_to_sigma(percents[i]);
    put(out, "percent_to_sigma", ps);
}

template <std::size_t R>
void prediction_r(const model_sampling& ms, const golden_case& gc, results& out) {
    const tensor<float> sigma = gc.tensor_input<float>("sigma");
    const tensor<float> x = gc.tensor_input<float>("x");
    const tensor<float> mo = gc.tensor_input<float>("model_output");
    const tensor<float> noise = gc.tensor_input<float>("noise");
    const tensor<float> latent = gc.tensor_input<float>("latent_image");
    const auto sv = sigma.as<1>();
    tensor<float> r(x.shape());
    ms.calculate_input<float, R>(sv, x.as<R>(), r.as<R>());
    put(out, "calculate_input", r);
    ms.calculate_denoised<float, R>(sv, mo.as<R>(), x.as<R>(), r.as<R>());
    put(out, "calculate_denoised", r);
    ms.noise_scaling<float, R>(sv, noise.as<R>(), latent.as<R>(), false, r.as<R>());
    put(out, "noise_scaling", r);
    ms.noise_scaling<float, R>(sv, noise.as<R>(), latent.as<R>(), true, r.as<R>());
    put(out, "noise_scaling_max_denoise", r);
    ms.inverse_noise_scaling<float, R>(sv, x.as<R>(), r.as<R>());
    put(out, "inverse_noise_scaling", r);
}

void prediction(const model_sampling& ms, const golden_case& gc, results& out) {
    // Latents are 4-D (B,C,H,W) or 5-D (B,C,T,H,W); sigma holds one value per batch item.
    const auto rank = gc.input("x").shape.size();
    if (gc.input("sigma").shape.size() != 1)
        fail("model_sampling.prediction", "tensor 'sigma' must be 1-D (one value per batch item)");
    if (rank == 4) prediction_r<4>(ms, gc, out);
    else if (rank == 5) prediction_r<5>(ms, gc, out);
    else fail("model_sampling.prediction", "tensor 'x' must have rank 4 or 5, got rank " + std::to_string(rank));
}

} // namespace

namespace {

/// Both non-e2e kinds of a node: the schedule and the prediction of the object it builds.
bool register_object_cases(const char* node, model_sampling (*factory)(const golden_case&)) {
    conformance::registry()[{node, "model_sampling.schedule"}] = [factory](const golden_case& gc, results& out) {
        schedule(factory(gc), gc, out);
    };
    conformance::registry()[{node, "model_sampling.prediction"}] = [factory](const golden_case& gc, results& out) {
        prediction(factory(gc), gc, out);
    };
    return true;
}

[[maybe_unused]] const bool object_cases_registered =
    register_object_cases("ModelSamplingDiscrete", discrete_from) &&
    register_object_cases("ModelSamplingSD3", sd3_from) &&
    register_object_cases("ModelSamplingAuraFlow", aura_from) &&
    register_object_cases("ModelSamplingFlux", flux_from) &&
    register_object_cases("ModelSamplingLTXV", ltxv_from) &&
    register_object_cases("ModelSamplingContinuousEDM", edm_from) &&
    register_object_cases("ModelSamplingContinuousV", v_from) &&
    register_object_cases("ModelSamplingStableCascade", cascade_from) &&
    register_object_cases("ModelNoiseScale", noise_scale_from);

} // namespace

// End-to-end Euler runs with plain CFG on the model sampling the case's scalar names.
PATCHBAY_CONFORMANCE("ModelSamplingFlux", "e2e.sample_euler") { e2e::run(gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingLTXV", "e2e.sample_euler") { e2e::run(gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingContinuousEDM", "e2e.sample_euler") { e2e::run(gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingContinuousV", "e2e.sample_euler") { e2e::run(gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingStableCascade", "e2e.sample_euler") { e2e::run(gc, out); }
PATCHBAY_CONFORMANCE("ModelNoiseScale", "e2e.sample_euler") { e2e::run(gc, out); }

} // namespace conformance_cases_model_sampling
