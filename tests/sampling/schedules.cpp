// Tests for patchbay/sampling/schedules.hpp: the simple schedule against every golden e2e run
// that used it, and the shape/end-point/spacing properties of normal, sgm_uniform, karras and
// exponential.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/sampling/schedules.hpp"

namespace test_sampling_schedules {

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
        const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        // (bad-input cases may hold Python's NaN token, which JSON parsers reject: skip early)
        if (text.find("\"e2e.sample_euler\"") == std::string::npos) continue;
        const auto spec = nlohmann::json::parse(text);
        if (spec.value("function", "") != "e2e.sample_euler") continue;
        const auto& sc = spec.at("scalars");
        if (sc.value("scheduler", "") != "simple") continue;
        const auto ms = model_sampling::from_comfy(sc.at("model_sampling").get<std::string>());
        const auto got = simple_schedule(sc.at("steps").get<int>(), ms);
        const auto want = npy::load(entry.path().parent_path().string() + "/" +
                                    spec.at("inputs").at("sigmas").get<std::string>());
        INFO(entry.path().parent_path().string());
        REQUIRE(static_cast<std::size_t>(want.size()) == got.size());
        // Exact float32 values, except on the log-linear tables (ContinuousEDM / V): torch's CPU
        // exp is SLEEF's 1-ulp exp and its linspace runs in AVX2 blocks of 8 (start + step*i,
        // then + k*step), so ComfyUI's own table entries sit a few ulps from the correctly
        // rounded exp(linspace) that patchbay computes.
        const bool log_linear = ms.base() == sampling_base::continuous_edm || ms.base() == sampling_base::continuous_v;
        for (std::size_t i = 0; i < got.size(); ++i) {
            if (log_linear) CHECK(got[i] == Approx(want.values[i]).epsilon(1e-6));
            else CHECK(got[i] == want.values[i]);
        }
        ++checked;
    }
    CHECK(checked >= 10);
}

TEST_CASE("simple schedule picks table entries from the top", "[schedules]") {
    const auto ms = model_sampling::discrete("eps");
    const auto s = simple_schedule(4, ms);
    REQUIRE(s.size() == 5);
    CHECK(s[0] == ms.sigmas()[999]);
    CHECK(s[1] == ms.sigmas()[749]);
    CHECK(s[2] == ms.sigmas()[499]);
    CHECK(s[3] == ms.sigmas()[249]);
    CHECK(s[4] == 0.0);
    // more steps than table entries repeats entries (LCM has 50)
    const auto l = simple_schedule(100, model_sampling::discrete("lcm"));
    REQUIRE(l.size() == 101);
    CHECK(l[0] == l[1]);
    CHECK_THROWS_AS(simple_schedule(0, ms), patchbay::error);
}

TEST_CASE("normal and sgm_uniform schedules", "[schedules]") {
    for (const auto& ms : {model_sampling::discrete("eps"), model_sampling::discrete("v_prediction", true),
                           model_sampling::discrete("lcm"), model_sampling::sd3(3.0), model_sampling::aura_flow(1.73)}) {
        for (int steps : {1, 2, 7, 20}) {
            INFO("steps " << steps << " flow " << ms.is_flow());
            const auto n = normal_schedule(steps, ms);
            REQUIRE(n.size() == static_cast<std::size_t>(steps) + 1);
            CHECK(static_cast<float>(n[0]) == Approx(ms.sigma_max()).epsilon(2e-6));
            if (steps > 1) {
                // the last timestep is timestep(sigma_min)
                CHECK(n[n.size() - 2] == Approx(ms.sigma(ms.timestep(ms.sigma_min()))).epsilon(1e-6));
                require_decreasing_to_zero(n);
            }
            const auto g = sgm_uniform_schedule(steps, ms);
            REQUIRE(g.size() == static_cast<std::size_t>(steps) + 1);
            CHECK(static_cast<float>(g[0]) == Approx(ms.sigma_max()).epsilon(2e-6));
            if (steps > 1) require_decreasing_to_zero(g);
            // sgm drops the last of steps + 1 timesteps: it stops above sigma_min
            CHECK(g[g.size() - 2] > ms.sigma_min());
        }
    }
    // discrete normal: timesteps 999 .. 0 evenly spaced; 4 steps = 999, 666, 333, 0
    const auto ms = model_sampling::discrete("eps");
    const auto n = normal_schedule(4, ms);
    CHECK(n[1] == static_cast<double>(static_cast<float>(ms.sigma(666.0))));
    CHECK(n[2] == static_cast<double>(static_cast<float>(ms.sigma(333.0))));
    CHECK(n[3] == ms.sigma(0.0)); // exp(log_sigmas[0]): not bit-equal to sigmas[0]
    // a model whose lowest timestep has sigma ~0 takes one more step and appends no 0
    const auto zero = model_sampling::sd3(0.0);
    const auto z = normal_schedule(3, zero);
    CHECK(z.size() == 4);
    CHECK_THROWS_AS(normal_schedule(0, ms), patchbay::error);
    CHECK_THROWS_AS(sgm_uniform_schedule(-1, ms), patchbay::error);
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

TEST_CASE("schedules take the step count first; karras / exponential also from a model sampling", "[schedules]") {
    const auto ms = model_sampling::continuous_edm("edm", 80.0, 0.002);
    const double lo = ms.sigma_min(), hi = ms.sigma_max();
    CHECK(karras_schedule(12, ms) == karras_schedule(12, lo, hi));
    CHECK(karras_schedule(12, ms, 5.0) == karras_schedule(12, lo, hi, 5.0));
    CHECK(exponential_schedule(9, ms) == exponential_schedule(9, lo, hi));
    CHECK(karras_schedule(12, ms).front() == Approx(80.0).epsilon(1e-5));
    // every model sampling works with the table-based schedules
    for (const auto& m : {model_sampling::flux(), model_sampling::ltxv(), model_sampling::continuous_v(),
                          model_sampling::stable_cascade(), model_sampling::continuous_edm("cosmos_rflow", 80.0, 0.0002)}) {
        INFO(m.class_type());
        const auto s = simple_schedule(10, m);
        REQUIRE(s.size() == 11);
        CHECK(s[0] == m.sigma_max());
        require_decreasing_to_zero(s);
        const auto n = normal_schedule(10, m);
        CHECK(n.front() == Approx(m.sigma_max()).epsilon(1e-4));
        CHECK(n.back() == 0.0);
    }
}

} // namespace test_sampling_schedules
