// xtensor: an engine whose latents are xt::xtensor containers (or xt::adapt over its own
// memory). patchbay/adapters/xtensor.hpp gives views without copies; here a run with APG and
// FreSca, then the same step through xt::adapt over a raw buffer.
//
//   example_xtensor [--smoke]
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xrandom.hpp>
#include <xtensor/xtensor.hpp>

#include <patchbay/adapters/xtensor.hpp>
#include <patchbay/patchbay.hpp>

#include "toy_gaussian.hpp"

using namespace patchbay;

int main(int argc, char** argv) {
    const bool smoke = argc > 1 && std::string(argv[1]) == "--smoke";
    xt::random::seed(5);
    xt::xtensor<float, 4> mu_pos = 0.3f * xt::ones<float>({1, 4, 16, 16});
    xt::xtensor<float, 4> mu_neg = xt::zeros<float>({1, 4, 16, 16});
    xt::xtensor<float, 4> noise = xt::random::randn<float>({1, 4, 16, 16});
    xt::xtensor<float, 4> out = xt::zeros<float>({1, 4, 16, 16});
    const examples::toy_prompt positive(from_xtensor<4>(mu_pos)), negative(from_xtensor<4>(mu_neg));
    examples::toy_gaussian model(examples::toy_kind::vp, 0.5);
    guider<examples::toy_gaussian, fresca, apg> g(model, model_sampling::discrete("eps"), fresca{}, apg{});
    auto run = g.begin_run(&positive, &negative);
    const auto sigmas = simple_schedule(smoke ? 4 : 20, g.sampling());
    sample_euler(g, run, sample_inputs<float, 4>{from_xtensor<4>(static_cast<const xt::xtensor<float, 4>&>(noise)), {}, sigmas, 4.0},
                 from_xtensor<4>(out));
    // The engine's own buffer adapted with xt::adapt works the same way.
    std::vector<float> buffer(out.size());
    auto adapted = xt::adapt(buffer.data(), buffer.size(), xt::no_ownership(), std::array<std::size_t, 4>{1, 4, 16, 16});
    auto run2 = g.begin_run(&positive, &negative);
    sample_euler(g, run2, sample_inputs<float, 4>{from_xtensor<4>(static_cast<const xt::xtensor<float, 4>&>(noise)), {}, sigmas, 4.0},
                 from_xtensor<4>(adapted));
    const bool same = std::equal(buffer.begin(), buffer.end(), out.begin());
    std::printf("xtensor: APG + FreSca through xt::xtensor views; mean %.3f (prompt 0.3); xt::adapt run %s\n",
                double(xt::mean(out)()), same ? "identical" : "DIFFERENT");
    return same ? 0 : 1;
}
