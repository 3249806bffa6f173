// quickstart: the README's usage snippet as a program. A model (here the toy Gaussian-data
// denoiser from examples/toy_gaussian.hpp; yours wraps your network), patches with ComfyUI's
// names and defaults composed by a guider, and a sampler run.
#include <cmath>
#include <cstdio>

#include <patchbay/patchbay.hpp>

#include "toy_gaussian.hpp"

using namespace patchbay;
using examples::toy_gaussian;
using examples::toy_prompt;

int main() {
    // The engine's side: a model, its conditioning, and the starting noise (1 x 4 x 32 x 32).
    toy_gaussian model(examples::toy_kind::vp, 0.8);
    tensor<float> mu_pos({1, 4, 32, 32}), mu_neg({1, 4, 32, 32}), noise({1, 4, 32, 32}), out({1, 4, 32, 32});
    normal_generator rng(7);
    for (index_t i = 0; i < noise.size(); ++i) {
        mu_pos[i] = static_cast<float>(std::sin(0.1 * double(i)));
        mu_neg[i] = 0.0f;
        noise[i] = static_cast<float>(rng.next());
    }
    const toy_prompt positive(mu_pos.as<4>()), negative(mu_neg.as<4>());

    // patchbay's side: patches with ComfyUI's input names, a guider, a schedule, a sampler.
    guider<toy_gaussian, apg, rescale_cfg> g(model, model_sampling::discrete("eps"),
                                             apg{.eta = 1.0, .norm_threshold = 5.0, .momentum = -0.5},
                                             rescale_cfg{.multiplier = 0.7});
    auto run = g.begin_run(&positive, &negative); // per-run state (APG's momentum)
    const auto sigmas = karras_schedule(20, g.sampling().sigma_min(), g.sampling().sigma_max());
    sample_euler(g, run, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 7.0}, out.as<4>());

    double err = 0; // distance of the sample from the positive prompt's mean
    for (index_t i = 0; i < out.size(); ++i) err += (out[i] - mu_pos[i]) * (out[i] - mu_pos[i]);
    std::printf("quickstart: 20 Euler steps with APG + RescaleCFG at cond_scale 7; rms distance to "
                "the prompt's mean %.3f\n",
                std::sqrt(err / double(out.size())));
    return 0;
}
