// Conformance handlers: ModelSamplingDiscrete, ModelSamplingSD3, ModelSamplingAuraFlow
// (model_sampling.schedule and model_sampling.prediction).
#include <string>
#include <vector>

#include "patchbay/sampling/model_sampling.hpp"
#include "registry.hpp"

namespace {

using namespace patchbay;
using namespace patchbay::conformance;

model_sampling discrete_from(const golden_case& gc) {
    return model_sampling::discrete(gc.param<std::string>("sampling", "eps"),
                                    gc.param<bool>("zsnr", false));
}
model_sampling sd3_from(const golden_case& gc) { return model_sampling::sd3(gc.param<double>("shift", 3.0)); }
model_sampling aura_from(const golden_case& gc) {
    return model_sampling::aura_flow(gc.param<double>("shift", 1.73));
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
    const auto rank = gc.input("x").shape.size();
    if (rank == 4) prediction_r<4>(ms, gc, out);
    else if (rank == 5) prediction_r<5>(ms, gc, out);
    else if (rank == 3) prediction_r<3>(ms, gc, out);
    else if (rank == 2) prediction_r<2>(ms, gc, out);
    else fail("conformance", "model_sampling.prediction: unsupported rank of x");
}

} // namespace

PATCHBAY_CONFORMANCE("ModelSamplingDiscrete", "model_sampling.schedule") { schedule(discrete_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingDiscrete", "model_sampling.prediction") { prediction(discrete_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingSD3", "model_sampling.schedule") { schedule(sd3_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingSD3", "model_sampling.prediction") { prediction(sd3_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingAuraFlow", "model_sampling.schedule") { schedule(aura_from(gc), gc, out); }
PATCHBAY_CONFORMANCE("ModelSamplingAuraFlow", "model_sampling.prediction") { prediction(aura_from(gc), gc, out); }
