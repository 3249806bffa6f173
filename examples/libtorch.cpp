// libtorch: an engine that keeps its latents in at::Tensor (built when libtorch is found).
// Tensors go in and out through patchbay/adapters/torch.hpp without copies; a transposed
// (non-contiguous) tensor works as well, through the strided paths.
//
//   example_libtorch [--smoke]
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include <patchbay/adapters/torch.hpp>
#include <patchbay/patchbay.hpp>

#include "toy_gaussian.hpp"

using namespace patchbay;

int main(int argc, char** argv) {
    const bool smoke = argc > 1 && std::string(argv[1]) == "--smoke";
    torch::manual_seed(0);
    const auto mu_pos = torch::full({1, 4, 16, 16}, 0.3f), mu_neg = torch::zeros({1, 4, 16, 16});
    const auto noise = torch::randn({1, 4, 16, 16});
    auto out = torch::empty({1, 4, 16, 16});
    const examples::toy_prompt positive(from_torch<const float, 4>(mu_pos)), negative(from_torch<const float, 4>(mu_neg));
    examples::toy_gaussian model(examples::toy_kind::vp, 0.5);
    guider<examples::toy_gaussian, rescale_cfg, cfg_norm> g(model, model_sampling::discrete("eps"), rescale_cfg{},
                                                            cfg_norm{});
    const auto sigmas = simple_schedule(smoke ? 4 : 20, g.sampling());
    auto run = g.begin_run(&positive, &negative);
    sample_euler(g, run, sample_inputs<float, 4>{from_torch<const float, 4>(noise), {}, sigmas, 6.0},
                 from_torch<float, 4>(out));
    // the same run writing into a transposed tensor: a strided view of the same values
    auto out_t = torch::empty({1, 4, 16, 16}).transpose(2, 3);
    auto run2 = g.begin_run(&positive, &negative);
    sample_euler(g, run2, sample_inputs<float, 4>{from_torch<const float, 4>(noise), {}, sigmas, 6.0},
                 from_torch<float, 4>(out_t));
    // the strided path computes the same expressions; results agree to float rounding
    const double diff = (out - out_t).abs().max().item<double>();
    const bool same = diff <= 1e-5;
    std::printf("libtorch: RescaleCFG + CFGNorm on at::Tensor; mean %.3f; transposed output differs by %.2g\n",
                out.mean().item<double>(), diff);
    return same ? 0 : 1;
}
