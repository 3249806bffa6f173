// Tests for patchbay/sampling/schedules.hpp: the simple schedule against every golden e2e run
// that used it, and the shape/end-point/spacing properties of normal, sgm_uniform, karras and
// exponential.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/sampling/schedules.hpp"

using namespace patchbay;

namespace {

void require_decreasing_to_zero(const std::vector<double>& s) {
    REQUIRE(s.size() >= 2);
    CHECK(s.back() == 0.0);
    for (std::size_t i = 1; i < s.size(); ++i) {
        INFO("index " << i);
        CHECK(s[i] < s[i - 1]);
    }
}

} // namespace

TEST_CASE("simple schedule equals the sigmas of every golden simple-scheduler run", "[schedules]") {
    int checked = 0;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(PATCHBAY_GOLDEN_DIR)) {
        if (entry.path().filename() != "case.json") continue;
        std::ifstream f(entry.path());
        const auto spec = nlohmann::json::parse(f);
        if (spec.value("function", "") != "e2e.sample_euler") continue;
        const auto& sc = spec.at("scalars");
        if (sc.value("scheduler", "") != "simple") continue;
        const auto ms = model_sampling::from_comfy(sc.at("model_sampling").get<std::string>());
        const auto got = simple_schedule(ms, sc.at("steps").get<int>());
        const auto want = npy::load(entry.path().parent_path().string() + "/" +
                                    spec.at("inputs").at("sigmas").get<std::string>());
        INFO(entry.path().parent_path().string());
        REQUIRE(static_cast<std::size_t>(want.size()) == got.size());
        for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == want.values[i]); // exact float32 values
        ++checked;
    }
    CHECK(checked >= 10);
}

TEST_CASE("simple schedule picks table entries from the top", "[schedules]") {
    const auto ms = model_sampling::discrete("eps");
    const auto s = simple_schedule(ms, 4);
    REQUIRE(s.size() == 5);
    CHECK(s[0] == ms.sigmas()[999]);
    CHECK(s[1] == ms.sigmas()[749]);
    CHECK(s[2] == ms.sigmas()[499]);
    CHECK(s[3] == ms.sigmas()[249]);
    CHECK(s[4] == 0.0);
    // more steps than table entries repeats entries (LCM has 50)
    const auto l = simple_schedule(model_sampling::discrete("lcm"), 100);
    REQUIRE(l.size() == 101);
    CHECK(l[0] == l[1]);
    CHECK_THROWS_AS(simple_schedule(ms, 0), patchbay::error);
}

TEST_CASE("normal and sgm_uniform schedules", "[schedules]") {
    for (const auto& ms : {model_sampling::discrete("eps"), model_sampling::discrete("v_prediction", true),
                           model_sampling::discrete("lcm"), model_sampling::sd3(3.0), model_sampling::aura_flow(1.73)}) {
        for (int steps : {1, 2, 7, 20}) {
            INFO("steps " << steps << " flow " << ms.is_flow());
            const auto n = normal_schedule(ms, steps);
            REQUIRE(n.size() == static_cast<std::size_t>(steps) + 1);
            CHECK(static_cast<float>(n[0]) == Approx(ms.sigma_max()).epsilon(2e-6));
            if (steps > 1) {
                // the last timestep is timestep(sigma_min)
                CHECK(n[n.size() - 2] == Approx(ms.sigma(ms.timestep(ms.sigma_min()))).epsilon(1e-6));
                require_decreasing_to_zero(n);
            }
            const auto g = sgm_uniform_schedule(ms, steps);
            REQUIRE(g.size() == static_cast<std::size_t>(steps) + 1);
            CHECK(static_cast<float>(g[0]) == Approx(ms.sigma_max()).epsilon(2e-6));
            if (steps > 1) require_decreasing_to_zero(g);
            // sgm drops the last of steps + 1 timesteps: it stops above sigma_min
            CHECK(g[g.size() - 2] > ms.sigma_min());
        }
    }
    // discrete normal: timesteps 999 .. 0 evenly spaced; 4 steps = 999, 666, 333, 0
    const auto ms = model_sampling::discrete("eps");
    const auto n = normal_schedule(ms, 4);
    CHECK(n[1] == static_cast<double>(static_cast<float>(ms.sigma(666.0))));
    CHECK(n[2] == static_cast<double>(static_cast<float>(ms.sigma(333.0))));
    CHECK(n[3] == ms.sigma(0.0)); // exp(log_sigmas[0]): not bit-equal to sigmas[0]
    // a model whose lowest timestep has sigma ~0 takes one more step and appends no 0
    const auto zero = model_sampling::sd3(0.0);
    const auto z = normal_schedule(zero, 3);
    CHECK(z.size() == 4);
    CHECK_THROWS_AS(normal_schedule(ms, 0), patchbay::error);
    CHECK_THROWS_AS(sgm_uniform_schedule(ms, -1), patchbay::error);
}

TEST_CASE("karras schedule", "[schedules]") {
    const double lo = 0.0291675, hi = 14.614642;
    const auto k = karras_schedule(10, lo, hi);
    REQUIRE(k.size() == 11);
    CHECK(k[0] == Approx(hi).epsilon(1e-5));
    CHECK(k[9] == Approx(lo).epsilon(1e-5));
    require_decreasing_to_zero(k);
    // rho = 1 is linear spacing
    const auto lin = karras_schedule(5, 1.0, 5.0, 1.0);
    for (int i = 0; i < 5; ++i) CHECK(lin[static_cast<std::size_t>(i)] == Approx(5.0 - i).epsilon(1e-6));
    // larger rho concentrates steps at low noise
    const auto k3 = karras_schedule(10, lo, hi, 3.0);
    CHECK(k[5] < k3[5]);
    const auto one = karras_schedule(1, lo, hi);
    REQUIRE(one.size() == 2);
    CHECK(one[0] == Approx(hi).epsilon(1e-5));
    CHECK_THROWS_AS(karras_schedule(0, lo, hi), patchbay::error);
    CHECK_THROWS_AS(karras_schedule(5, 0.0, hi), patchbay::error);
    CHECK_THROWS_AS(karras_schedule(5, hi, lo), patchbay::error);
    CHECK_THROWS_AS(karras_schedule(5, lo, std::nan("")), patchbay::error);
    CHECK_THROWS_AS(karras_schedule(5, lo, hi, 0.0), patchbay::error);
}

TEST_CASE("exponential schedule", "[schedules]") {
    const double lo = 0.0291675, hi = 14.614642;
    const auto e = exponential_schedule(8, lo, hi);
    REQUIRE(e.size() == 9);
    CHECK(e[0] == Approx(hi).epsilon(1e-5));
    CHECK(e[7] == Approx(lo).epsilon(1e-5));
    require_decreasing_to_zero(e);
    const double ratio = e[1] / e[0];
    for (std::size_t i = 1; i + 1 < 8; ++i) CHECK(e[i + 1] / e[i] == Approx(ratio).epsilon(1e-5));
    CHECK_THROWS_AS(exponential_schedule(0, lo, hi), patchbay::error);
    CHECK_THROWS_AS(exponential_schedule(3, -1.0, hi), patchbay::error);
}
