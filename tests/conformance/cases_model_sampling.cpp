// Conformance handlers: ModelSamplingDiscrete, ModelSamplingSD3, ModelSamplingAuraFlow
// (model_sampling.schedule and model_sampling.prediction).
#include <string>
#include <type_traits>
#include <vector>

#include "patchbay/sampling/model_sampling.hpp"
#include "registry.hpp"

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
                                                     : v.is_number();
    if (!ok) fail(patch, "parameter '" + name + "' has the wrong type: " + v.dump());
    return v.get<V>();
}

model_sampling discrete_from(const golden_case& gc) {
    constexpr const char* p = "ModelSamplingDiscrete";
    return model_sampling::discrete(typed_param<std::string>(gc, p, "sampling", "eps"),
                                    typed_param<bool>(gc, p, "zsnr", false));
}
model_sampling sd3_from(const golden_case& gc) {
    return model_sampling::sd3(typed_param<double>(gc, "ModelSamplingSD3", "shift", 3.0));
}
model_sampling aura_from(const golden_case& gc) {
    return model_sampling::aura_flow(typed_param<double>(gc, "ModelSamplingAuraFlow", "shift", 1.73));
}

tensor<float> vector_tensor(std::span<const float> v) {
    tensor<float> t({static_cast<index_t>(v.size())});
    for (std::size_t i = 0; i < v.size(); ++i) t[static_cast<index_t>(i)] = v[i];
    return t;
}

void schedule(const model_sampling& ms, const golden_case& gc, results& out) {
    put(out, "sigmas", vector_tensor(ms.sigmas()));
    if (!ms.is_flow()) put(out, "log_sigmas", vector_tensor(ms.log_sigmas()));
    tensor<float> smin({1}), smax({1});
    smin[0] = ms.sigma_min();
    smax[0] = ms.sigma_max();
    put(out, "sigma_min", smin);
    put(out, "sigma_max", smax);

    // Timesteps: integer indices (int64 in ComfyUI) for discrete, float32 for flow; both are
    // exact as doubles.
    const tensor<float> qs = gc.tensor_input<float>("query_sigma");
    tensor<double> ts(qs.shape());
    for (index_t i = 0; i < qs.size(); ++i) ts[i] = ms.timestep(qs[i]);
    if (ms.is_flow()) {
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

PATCHBAY_CONFORMANCE("ModelSamplingDiscrete", "model_sampling.schedule") { schedule(discrete_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingDiscrete", "model_sampling.prediction") { prediction(discrete_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingSD3", "model_sampling.schedule") { schedule(sd3_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingSD3", "model_sampling.prediction") { prediction(sd3_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingAuraFlow", "model_sampling.schedule") { schedule(aura_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingAuraFlow", "model_sampling.prediction") { prediction(aura_from(gc), gc, out); }
