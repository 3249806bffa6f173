// Many sampling runs at once over one guider and the shared FFT plan cache give exactly the
// results of the same runs one after another. The suite also runs this under TSan
// (scripts/test.sh), so a data race in a guider, a patch state or the plan cache fails it.
#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "patchbay/kernels/fft.hpp"
#include "patchbay/patchbay.hpp"
#include "test_util.hpp"
#include "toy_gaussian.hpp"

namespace test_core_concurrency {

using namespace patchbay;
using examples::toy_gaussian;
using examples::toy_kind;
using examples::toy_prompt;

namespace {

struct scene {
    tensor<float> mu_c = test::random_tensor({1, 4, 24, 20}, 11, 0.f, 0.5f);
    tensor<float> mu_u = test::random_tensor({1, 4, 24, 20}, 12, 0.f, 0.5f);
    toy_prompt pos{mu_c.as<4>()}, neg{mu_u.as<4>()};
    model_sampling ms = model_sampling::discrete("eps");
};

// FreSca forced onto its FFT path so every run goes through the shared plan cache, APG with
// momentum so every run carries state, RescaleCFG and Mahiro for the cfg and post-cfg stages.
using guider_t = guider<const toy_gaussian, fresca, apg, rescale_cfg, mahiro>;

tensor<float> sample_one(const guider_t& g, const scene& sc, unsigned seed, double scale) {
    const auto noise = test::random_tensor({2, 4, 24, 20}, seed);
    const auto sigmas = simple_schedule(8, sc.ms);
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out(noise.shape());
    sample_euler(g, run, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, scale}, out.as<4>());
    return out;
}

} // namespace

TEST_CASE("parallel sampling runs over one guider equal sequential runs", "[threads]") {
    const scene sc;
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider_t g(model, sc.ms,
                     fresca{.scale_low = 0.8, .scale_high = 1.3, .freq_cutoff = 5, .path = fresca_path::fft},
                     apg{.eta = 0.5, .norm_threshold = 4.0, .momentum = -0.5}, rescale_cfg{0.6}, mahiro{});
    constexpr int runs = 6;
    std::vector<tensor<float>> sequential, parallel(runs);
    for (int i = 0; i < runs; ++i) sequential.push_back(sample_one(g, sc, 100u + unsigned(i), 2.0 + i));
    std::vector<std::thread> threads;
    for (int i = 0; i < runs; ++i)
        threads.emplace_back([&, i] { parallel[std::size_t(i)] = sample_one(g, sc, 100u + unsigned(i), 2.0 + i); });
    for (auto& t : threads) t.join();
    for (int i = 0; i < runs; ++i) {
        INFO("run " << i);
        CHECK(test::bit_equal(sequential[std::size_t(i)], parallel[std::size_t(i)]));
    }
    // and the runs differ from each other (the comparison above is not vacuous)
    CHECK_FALSE(test::bit_equal(sequential[0], sequential[1]));
}

} // namespace test_core_concurrency
