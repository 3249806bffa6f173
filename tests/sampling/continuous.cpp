// Tests for patchbay/sampling/continuous.hpp and the objects built on it:
// ModelSamplingContinuousEDM (v_prediction, edm, edm_playground_v2.5, eps, cosmos_rflow),
// ModelSamplingContinuousV and ModelSamplingStableCascade: tables against the golden ComfyUI
// values, timestep <-> sigma identities, percent_to_sigma, prediction formulas, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "golden_util.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "test_util.hpp"

namespace test_sampling_continuous {

using namespace patchbay;
using test::batch_sigma;

namespace {

model_sampling from_case(const nlohmann::json& spec) {
    const auto& p = spec.at("params");
    const std::string patch = spec.at("patch");
    if (patch == "ModelSamplingStableCascade") return model_sampling::stable_cascade(p.at("shift").get<double>());
    const auto sampling = p.at("sampling").get<std::string>();
    const double hi = p.at("sigma_max").get<double>(), lo = p.at("sigma_min").get<double>();
    return patch == "ModelSamplingContinuousV" ? model_sampling::continuous_v(sampling, hi, lo)
                                               : model_sampling::continuous_edm(sampling, hi, lo);
}

} // namespace

TEST_CASE("continuous tables match ComfyUI's golden tables", "[continuous]") {
    for (const char* c : {"ModelSamplingContinuousEDM/v_prediction-default-schedule", "ModelSamplingContinuousEDM/edm-80-schedule",
                          "ModelSamplingContinuousEDM/edm-extreme-1000-schedule", "ModelSamplingContinuousEDM/eps-14.6-schedule",
                          "ModelSamplingContinuousEDM/cosmos_rflow-80-schedule", "ModelSamplingContinuousV/default-schedule",
                          "ModelSamplingContinuousV/100-0.01-schedule", "ModelSamplingStableCascade/shift0.0-schedule",
                          "ModelSamplingStableCascade/shift1.0-schedule", "ModelSamplingStableCascade/shift7.5-schedule"}) {
        const std::string dir = test::golden + "/" + c;
        test::require_table_matches_golden(dir, from_case(test::load_case(dir)));
    }
}

TEST_CASE("log-linear table and the EDM / V / Cosmos timestep maps", "[continuous]") {
    const auto edm = model_sampling::continuous_edm("edm", 80.0, 0.002);
    REQUIRE(edm.sigmas().size() == 1000);
    CHECK(edm.sigma_min() == Approx(0.002).epsilon(1e-6));
    CHECK(edm.sigma_max() == Approx(80.0).epsilon(1e-6));
    // geometric spacing: equal log steps
    const double step = std::log(80.0 / 0.002) / 999.0;
    for (std::size_t k = 1; k < 1000; k += 37)
        REQUIRE(std::log(double(edm.sigmas()[k]) / double(edm.sigmas()[k - 1])) == Approx(step).epsilon(5e-4));
    // EDM: t = 0.25 ln sigma, sigma = exp(4t), no clamp outside the table
    CHECK(edm.timestep(1.0) == 0.0);
    CHECK(edm.sigma(0.0) == 1.0);
    CHECK(edm.sigma(1.0) == Approx(std::exp(4.0)).epsilon(1e-6));
    CHECK(edm.sigma(5.0) == Approx(std::exp(20.0)).epsilon(1e-6)); // past the table top (80)
    for (float s : {0.002f, 0.37f, 14.6f, 80.0f})
        CHECK(edm.sigma(edm.timestep(s)) == Approx(s).epsilon(1e-6));
    // V: t = atan(sigma) 2/pi; t(1) = 1/2; the table's top timestep < 1
    const auto v = model_sampling::continuous_v();
    CHECK(v.timestep(1.0) == Approx(0.5).epsilon(1e-7));
    CHECK(v.sigma(0.5) == Approx(1.0).epsilon(1e-6));
    CHECK(v.timestep(v.sigma_max()) == Approx(0.99873).epsilon(1e-5));
    for (float s : {0.03f, 0.5f, 3.0f, 50.0f}) CHECK(v.sigma(v.timestep(s)) == Approx(s).epsilon(5e-5));
    CHECK(v.sigma(1.0) < 0.0); // tan(float(pi)/2) = -2.29e7 in float32, as ComfyUI (a documented quirk)
    // Cosmos: t = sigma / (sigma + 1); sigma(t) = t / (1 - t) below sigma_max's timestep, else sigma_max
    const auto cos = model_sampling::continuous_edm("cosmos_rflow", 80.0, 0.0002);
    CHECK(cos.timestep(1.0) == 0.5);
    CHECK(cos.sigma(0.5) == 1.0);
    CHECK(cos.sigma(0.25) == Approx(1.0 / 3.0).epsilon(1e-7));
    const double top = cos.timestep(cos.sigma_max());
    CHECK(cos.sigma(top) == cos.sigma_max());
    CHECK(cos.sigma(1.0) == cos.sigma_max());
    CHECK(cos.sigma(1.5) == cos.sigma_max());
    CHECK(cos.sigma(std::nextafter(static_cast<float>(top), 0.0f)) < cos.sigma_max());
    CHECK(cos.sigma(-0.1) == Approx(-0.1 / 1.1).epsilon(1e-6)); // outside [0, 1]: the formula
    CHECK(cos.prediction() == prediction_type::eps);
    CHECK(!cos.is_flow());
}

TEST_CASE("continuous percent_to_sigma is log-linear between the table ends", "[continuous]") {
    for (const auto& ms : {model_sampling::continuous_edm(), model_sampling::continuous_v(),
                           model_sampling::continuous_edm("cosmos_rflow", 80.0, 0.0002)}) {
        CHECK(ms.percent_to_sigma(0.0) == 999999999.9);
        CHECK(ms.percent_to_sigma(-3.0) == 999999999.9);
        CHECK(ms.percent_to_sigma(1.0) == 0.0);
        const double lo = ms.sigma_min(), hi = ms.sigma_max();
        CHECK(ms.percent_to_sigma(0.5) == Approx(std::sqrt(lo * hi)).epsilon(1e-13));
        CHECK(ms.percent_to_sigma(1e-12) == Approx(hi).epsilon(1e-9));
        CHECK(ms.percent_to_sigma(0.25) > ms.percent_to_sigma(0.75));
    }
    // sigma_min > sigma_max is accepted (as ComfyUI): a decreasing table
    const auto down = model_sampling::continuous_edm("eps", 0.5, 10.0);
    CHECK(down.sigma_min() > down.sigma_max());
}

TEST_CASE("EDM-family predictions use sigma_data", "[continuous]") {
    const auto x = test::random_tensor({2, 4, 3, 3}, 71), mo = test::random_tensor({2, 4, 3, 3}, 72),
               n = test::random_tensor({2, 4, 3, 3}, 73), l = test::random_tensor({2, 4, 3, 3}, 74);
    const auto s = batch_sigma({0.3f, 12.0f});
    const index_t per = x.size() / 2;
    tensor<float> a(x.shape()), b(x.shape());
    // edm: sigma_data 0.5, denoised = x*0.25/(s^2+0.25) + out*0.5*s/sqrt(s^2+0.25) (a plus)
    const auto edm = model_sampling::continuous_edm("edm", 80.0, 0.002);
    CHECK(edm.sigma_data() == 0.5);
    CHECK(edm.prediction() == prediction_type::v_prediction);
    edm.calculate_denoised<float, 4>(s.as<1>(), mo.as<4>(), x.as<4>(), a.as<4>());
    edm.calculate_input<float, 4>(s.as<1>(), x.as<4>(), b.as<4>());
    for (index_t i = 0; i < x.size(); ++i) {
        const double sg = s[i / per], q = sg * sg + 0.25;
        REQUIRE(a[i] == Approx(x[i] * 0.25 / q + mo[i] * 0.5 * sg / std::sqrt(q)).epsilon(2e-6).margin(1e-6));
        REQUIRE(b[i] == Approx(x[i] / std::sqrt(q)).epsilon(2e-6));
    }
    // the same table with v_prediction: sigma_data 1 and a minus
    const auto v = model_sampling::continuous_edm("v_prediction", 80.0, 0.002);
    v.calculate_denoised<float, 4>(s.as<1>(), mo.as<4>(), x.as<4>(), a.as<4>());
    for (index_t i = 0; i < x.size(); ++i) {
        const double sg = s[i / per], q = sg * sg + 1.0;
        REQUIRE(a[i] == Approx(x[i] / q - mo[i] * sg / std::sqrt(q)).epsilon(2e-6).margin(1e-6));
    }
    // eps on the continuous table computes exactly what discrete eps computes
    const auto ce = model_sampling::continuous_edm("eps", 14.6146, 0.0292);
    const auto de = model_sampling::discrete("eps");
    ce.calculate_input<float, 4>(s.as<1>(), x.as<4>(), a.as<4>());
    de.calculate_input<float, 4>(s.as<1>(), x.as<4>(), b.as<4>());
    CHECK(test::bit_equal(a, b));
    ce.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, a.as<4>());
    de.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, b.as<4>());
    CHECK(test::bit_equal(a, b));
    // the noise scaling of edm uses sqrt(1 + s^2) too (not sigma_data), inverse is the identity
    edm.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, a.as<4>());
    CHECK(test::bit_equal(a, b));
    edm.inverse_noise_scaling<float, 4>(s.as<1>(), x.as<4>(), a.as<4>());
    CHECK(test::bit_equal(a, x));
    // only edm_playground_v2.5 implies a latent format
    CHECK(edm.latent_format() == nullptr);
    CHECK(model_sampling::continuous_edm("edm_playground_v2.5", 80.0, 0.002).latent_format() ==
          &sdxl_playground_2_5_latent_format);
}

TEST_CASE("Cosmos rectified-flow prediction", "[continuous]") {
    const auto cos = model_sampling::continuous_edm("cosmos_rflow", 80.0, 0.0002);
    const auto x = test::random_tensor({3, 2, 4, 4}, 81), mo = test::random_tensor({3, 2, 4, 4}, 82),
               n = test::random_tensor({3, 2, 4, 4}, 83), l = test::random_tensor({3, 2, 4, 4}, 84);
    const auto s = batch_sigma({0.0f, 1.0f, 9.0f});
    const index_t per = x.size() / 3;
    tensor<float> a(x.shape()), b(x.shape());
    cos.calculate_input<float, 4>(s.as<1>(), x.as<4>(), a.as<4>());
    for (index_t i = 0; i < x.size(); ++i) {
        const double q = s[i / per] / (s[i / per] + 1.0);
        REQUIRE(a[i] == Approx(x[i] * (1.0 - q)).epsilon(1e-6).margin(1e-7));
    }
    cos.calculate_denoised<float, 4>(s.as<1>(), mo.as<4>(), x.as<4>(), a.as<4>());
    for (index_t i = 0; i < x.size(); ++i) {
        const double q = s[i / per] / (s[i / per] + 1.0);
        REQUIRE(a[i] == Approx(x[i] * (1.0 - q) - mo[i] * q).epsilon(1e-6).margin(1e-6));
    }
    cos.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, a.as<4>());
    cos.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, b.as<4>());
    CHECK(test::bit_equal(a, b)); // max_denoise ignored
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(a[i] == Approx(n[i] * s[i / per] + l[i]).epsilon(1e-6).margin(1e-6));
    cos.inverse_noise_scaling<float, 4>(s.as<1>(), x.as<4>(), a.as<4>());
    CHECK(test::bit_equal(a, x));
}

TEST_CASE("Stable Cascade: shifted cosine schedule, unshifted timestep, float32 percent_to_sigma", "[cascade]") {
    const auto one = model_sampling::stable_cascade(1.0);
    REQUIRE(one.sigmas().size() == 10000);
    // clamped alpha_bar: sigma in [sqrt(1e-4 / 0.9999), sqrt(0.9999 / 1e-4)] = [0.0100005, 99.995]
    // up to float32: 1 - float(0.9999) cancels, so the bottom is 0.01000133 (ComfyUI's value too)
    CHECK(one.sigma_min() == Approx(0.01000133).epsilon(1e-6));
    CHECK(one.sigma_max() == Approx(99.995).epsilon(1e-5));
    for (std::size_t k = 1; k < 10000; ++k) REQUIRE(one.sigmas()[k] >= one.sigmas()[k - 1]);
    // the cosine schedule: alpha_bar(t) = cos((t+s)/(1+s) pi/2)^2 / alpha_bar(0)
    const double s = 0.008, a0 = std::pow(std::cos(s / (1 + s) * std::numbers::pi / 2), 2);
    for (double t : {0.1, 0.5, 0.9}) {
        const double abar = std::pow(std::cos((t + s) / (1 + s) * std::numbers::pi / 2), 2) / a0;
        CHECK(one.sigma(t) == Approx(std::sqrt((1 - abar) / abar)).epsilon(2e-5));
        CHECK(one.timestep(one.sigma(t)) == Approx(t).epsilon(1e-4)); // the inverse, when unshifted
    }
    // shift 2: logSNR moves by 2 ln(1/2), i.e. alpha_bar/(1-alpha_bar) / 4 where unclamped
    const auto two = model_sampling::stable_cascade(2.0);
    for (double t : {0.2, 0.5, 0.8}) {
        const double r1 = 1.0 / (one.sigma(t) * one.sigma(t)), r2 = 1.0 / (two.sigma(t) * two.sigma(t));
        CHECK(r2 == Approx(r1 / 4.0).epsilon(1e-4));
    }
    // timestep ignores the shift: not the inverse of the shifted schedule
    CHECK(two.timestep(two.sigma(0.3)) == Approx(0.509).epsilon(2e-3));
    CHECK(two.timestep(one.sigma(0.3)) == one.timestep(one.sigma(0.3)));
    // shift 0: every alpha_bar -> 1, the clamp gives sigma_min everywhere
    const auto zero = model_sampling::stable_cascade(0.0);
    for (float v : zero.sigmas()) REQUIRE(v == zero.sigma_min());
    CHECK(zero.sigma_min() == one.sigma_min());
    // percent_to_sigma: float32, the shifted sigma of 1 - p
    CHECK(two.percent_to_sigma(0.0) == 999999999.9);
    CHECK(two.percent_to_sigma(1.0) == 0.0);
    const double p = two.percent_to_sigma(0.3);
    CHECK(p == static_cast<double>(static_cast<float>(p)));
    CHECK(p == two.sigma(0.7));
    // EPS prediction on this table
    CHECK(two.prediction() == prediction_type::eps);
    CHECK(two.sigma_data() == 1.0);
}

TEST_CASE("continuous bad input", "[continuous]") {
    CHECK_THROWS_AS(model_sampling::continuous_edm("edm", 120.0, 0.0), patchbay::error);
    CHECK_THROWS_AS(model_sampling::continuous_edm("edm", 0.0, 0.002), patchbay::error);
    CHECK_THROWS_AS(model_sampling::continuous_edm("edm", 1000.5, 0.002), patchbay::error);
    CHECK_THROWS_AS(model_sampling::continuous_edm("edm", std::nan(""), 0.002), patchbay::error);
    CHECK_THROWS_AS(model_sampling::continuous_edm("edm", 120.0, -1.0), patchbay::error);
    CHECK_THROWS_AS(model_sampling::continuous_edm("edm_v3"), patchbay::error);
    CHECK_THROWS_AS(model_sampling::continuous_v("eps"), patchbay::error);
    CHECK_THROWS_AS(model_sampling::continuous_v("v_prediction", 500.0, 0.0), patchbay::error);
    CHECK_NOTHROW(model_sampling::continuous_edm("eps", 1000.0, 1000.0));
    const std::string msg = test::error_of([] { (void)model_sampling::continuous_edm("edm", 120.0, 0.0); });
    CHECK(msg.find("ModelSamplingContinuousEDM") != std::string::npos);
    CHECK(msg.find("sigma_min") != std::string::npos);
    for (double bad : {-1.0, 100.5, std::numeric_limits<double>::infinity(), std::nan("")})
        CHECK_THROWS_AS(model_sampling::stable_cascade(bad), patchbay::error);
    CHECK_NOTHROW(model_sampling::stable_cascade(100.0));
    const auto c = model_sampling::stable_cascade();
    CHECK_THROWS_AS(c.timestep(std::nan("")), patchbay::error);
    CHECK_THROWS_AS(c.percent_to_sigma(std::nan("")), patchbay::error);
}

} // namespace test_sampling_continuous
