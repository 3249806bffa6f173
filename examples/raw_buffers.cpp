// raw_buffers: a stable-diffusion.cpp-style engine loop over plain float buffers. The engine
// owns its tensors in ggml's layout (ne[0] = W innermost, byte strides nb[]), runs its own
// network for cond and uncond (here: a stand-in eps-predicting "network"), converts the raw
// output to denoised with patchbay's model sampling, and hands the cfg stage to a cfg_chain
// assembled from configuration (as an engine would from its settings file): the model-free
// chain, so the engine names no model type and passes no model object.
//
//   example_raw_buffers [--smoke]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <patchbay/adapters/raw.hpp>
#include <patchbay/patchbay.hpp>

using namespace patchbay;

namespace {

/// What an engine's tensor looks like: ggml-style extents and byte strides, innermost first.
struct engine_tensor {
    std::int64_t ne[4];
    std::size_t nb[4];
    std::vector<float> data;
    explicit engine_tensor(std::int64_t w, std::int64_t h, std::int64_t c, std::int64_t n)
        : ne{w, h, c, n}, nb{4, std::size_t(4 * w), std::size_t(4 * w * h), std::size_t(4 * w * h * c)},
          data(std::size_t(w * h * c * n), 0.f) {}
    view<float, 4> as_view() { return from_ggml<4>(data.data(), ne, nb); }
};

/// The engine's "network": predicts eps for data that is Gaussian around mu (the exact eps of
/// the toy model, so the loop converges to something checkable).
void network_eps(const std::vector<float>& x, const std::vector<float>& mu, double sigma, std::vector<float>& eps) {
    const double s2 = 0.64, coef = s2 / (s2 + sigma * sigma);
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double denoised = mu[i] + coef * (x[i] - mu[i]);
        eps[i] = static_cast<float>((x[i] - denoised) / sigma);
    }
}

} // namespace

int main(int argc, char** argv) {
    const bool smoke = argc > 1 && std::string(argv[1]) == "--smoke";
    const int steps = smoke ? 4 : 20;
    const std::int64_t W = 24, H = 16, C = 4;
    engine_tensor x(W, H, C, 1), eps_c(W, H, C, 1), eps_u(W, H, C, 1), cond(W, H, C, 1), uncond(W, H, C, 1),
        denoised(W, H, C, 1);
    std::vector<float> mu_pos(x.data.size()), mu_neg(x.data.size(), 0.f);
    for (std::size_t i = 0; i < mu_pos.size(); ++i) mu_pos[i] = static_cast<float>(0.5 * std::cos(0.05 * double(i)));

    // Configuration an engine reads from its settings: RescaleCFG 0.7 then CFGNorm 1.0.
    const model_sampling ms = model_sampling::discrete("eps");
    cfg_chain chain(ms);
    chain.add(rescale_cfg{.multiplier = 0.7}).add(cfg_norm{.strength = 1.0});
    try { // a patch that needs the model (an extra pass) is refused when it is added
        chain.add(perturbed_attention_guidance{});
        std::printf("raw_buffers: PAG was accepted by a model-free chain\n");
        return 1;
    } catch (const error& e) {
        if (!smoke) std::printf("refused as expected: %s\n", e.what());
    }
    auto run = chain.begin_run();

    const auto sigmas = karras_schedule(steps, ms.sigma_min(), ms.sigma_max());
    normal_generator rng(3);
    for (auto& v : x.data) v = static_cast<float>(rng.next() * sigmas[0]);
    tensor<float> sigma_vec({1});
    const double cond_scale = 6.0;
    for (int i = 0; i < steps; ++i) {
        sigma_vec[0] = static_cast<float>(sigmas[std::size_t(i)]);
        network_eps(x.data, mu_pos, sigmas[std::size_t(i)], eps_c.data); // the engine's own passes
        network_eps(x.data, mu_neg, sigmas[std::size_t(i)], eps_u.data);
        const view<const float, 1> sv = sigma_vec.as<1>();
        ms.calculate_denoised<float, 4>(sv, eps_c.as_view(), x.as_view(), cond.as_view());
        ms.calculate_denoised<float, 4>(sv, eps_u.as_view(), x.as_view(), uncond.as_view());
        const guidance_inputs<float, 4> in{x.as_view(), sv, cond_scale};
        chain.combine(run, in, cond.as_view(), uncond.as_view(), denoised.as_view());
        const double dt = sigmas[std::size_t(i) + 1] - sigmas[std::size_t(i)];
        for (std::size_t k = 0; k < x.data.size(); ++k) // Euler step in the engine's loop
            x.data[k] += static_cast<float>((x.data[k] - denoised.data[k]) / sigmas[std::size_t(i)] * dt);
    }
    double mean_pos = 0, mean_x = 0;
    for (std::size_t k = 0; k < x.data.size(); ++k) mean_pos += mu_pos[k], mean_x += x.data[k];
    std::printf("raw_buffers: %d steps, ggml layout ne = {%lld, %lld, %lld, 1}, cfg_chain = RescaleCFG + CFGNorm; "
                "sample mean %.3f (prompt mean %.3f)\n",
                steps, (long long)W, (long long)H, (long long)C, mean_x / double(x.data.size()),
                mean_pos / double(x.data.size()));
    return std::isfinite(mean_x) ? 0 : 1;
}
