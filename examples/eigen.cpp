// eigen: an engine whose latents are Eigen tensors. Eigen::Tensor (RowMajor: contiguous
// views; ColMajor would give strided views with the same logical indexing) goes into the
// guider and sampler through patchbay/adapters/eigen.hpp without copies.
//
//   example_eigen [--smoke]
#include <cmath>
#include <cstdio>
#include <string>

#include <patchbay/adapters/eigen.hpp>
#include <patchbay/patchbay.hpp>

#include "toy_gaussian.hpp"

using namespace patchbay;
using RowTensor = Eigen::Tensor<float, 4, Eigen::RowMajor>;

int main(int argc, char** argv) {
    const bool smoke = argc > 1 && std::string(argv[1]) == "--smoke";
    RowTensor mu_pos(1, 4, 16, 16), mu_neg(1, 4, 16, 16), noise(2, 4, 16, 16), out(2, 4, 16, 16);
    mu_pos.setConstant(0.4f);
    mu_neg.setZero();
    noise.setRandom<Eigen::internal::NormalRandomGenerator<float>>();
    const examples::toy_prompt positive(from_eigen(mu_pos)), negative(from_eigen(mu_neg));
    examples::toy_gaussian model(examples::toy_kind::vp, 0.5);
    guider<examples::toy_gaussian, tcfg, mahiro> g(model, model_sampling::discrete("eps"), tcfg{}, mahiro{});
    auto run = g.begin_run(&positive, &negative);
    const auto sigmas = simple_schedule(smoke ? 4 : 20, g.sampling());
    const auto noise_view = from_eigen(static_cast<const RowTensor&>(noise));
    sample_euler(g, run, sample_inputs<float, 4>{noise_view, {}, sigmas, 5.0}, from_eigen(out));
    const Eigen::Tensor<float, 0, Eigen::RowMajor> mean = out.mean();
    std::printf("eigen: 2 samples of 4x16x16 with TCFG + Mahiro through Eigen::Tensor views; mean %.3f "
                "(prompt 0.4, negative 0)\n",
                double(mean()));
    return std::isfinite(mean()) ? 0 : 1;
}
