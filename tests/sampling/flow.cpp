// Tests for patchbay/sampling/flow.hpp and the flow objects built on it: ModelSamplingFlux and
// ModelSamplingLTXV (the Flux time shift: mu from resolution / token count, tables against the
// golden ComfyUI values, identities, the finite limit where ComfyUI overflows), and
// ModelNoiseScale on SD3 / AuraFlow (noise scaling, inheritance, bad input).
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "golden_util.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "test_util.hpp"

namespace test_sampling_flow {

using namespace patchbay;
using test::batch_sigma;

namespace {

/// Build a Flux/LTXV object from a golden case's params and scalars.
model_sampling from_case(const nlohmann::json& spec) {
    const auto& p = spec.at("params");
    if (spec.at("patch") == "ModelSamplingFlux")
        return model_sampling::flux(p.at("max_shift").get<double>(), p.at("base_shift").get<double>(),
                                    p.at("width").get<std::int64_t>(), p.at("height").get<std::int64_t>());
    const auto& shape = spec.at("scalars").at("latent_shape");
    if (shape.is_null()) return model_sampling::ltxv(p.at("max_shift").get<double>(), p.at("base_shift").get<double>());
    const auto dims = shape.get<std::vector<index_t>>();
    return model_sampling::ltxv(p.at("max_shift").get<double>(), p.at("base_shift").get<double>(), dims);
}

} // namespace

TEST_CASE("Flux and LTXV: mu from the token count", "[flux]") {
    // Flux: 16x16-pixel tokens; base_shift at 256 tokens, max_shift at 4096.
    CHECK(model_sampling::flux().shift() == Approx(1.15).epsilon(1e-15));
    CHECK(model_sampling::flux(1.15, 0.5, 256, 256).shift() == Approx(0.5).epsilon(1e-15));
    CHECK(model_sampling::flux(1.15, 0.5, 16, 16).shift() == Approx(0.4568359375).epsilon(1e-15));
    CHECK(model_sampling::flux(1.15, 0.5, 1920, 1088).shift() == Approx(1.8379166666666666).epsilon(1e-15));
    CHECK(model_sampling::flux(0.0, 3.0, 2048, 2048).shift() == Approx(-9.6).epsilon(1e-14));
    CHECK(model_sampling::flux(0.5, 0.5, 1344, 768).shift() == 0.5); // max = base: no resolution effect
    // LTXV: base_shift at 1024 tokens, max_shift at 4096; tokens = prod(shape[2:]).
    CHECK(model_sampling::ltxv().shift() == Approx(2.05).epsilon(1e-15)); // no latent: 4096 tokens
    const std::array<index_t, 5> video{1, 128, 8, 16, 24};                // 3072 tokens
    CHECK(model_sampling::ltxv(2.05, 0.95, video).shift() == Approx(1.6833333333333331).epsilon(1e-15));
    const std::array<index_t, 4> image{1, 4, 64, 64}; // 4-D: H*W = 4096
    CHECK(model_sampling::ltxv(1.5, 0.5, image).shift() == Approx(1.5).epsilon(1e-15));
    const std::array<index_t, 5> one_frame{1, 128, 1, 16, 16}; // T = 1 counts like any T
    CHECK(model_sampling::ltxv(2.05, 0.95, one_frame).shift() == Approx(0.6749999999999999).epsilon(1e-14));
    const std::array<index_t, 2> flat{3, 7}; // rank 2: the empty product, 1 token
    CHECK(model_sampling::ltxv(2.05, 0.95, flat).shift() ==
          Approx(0.95 + (1.0 - 1024.0) * (1.1 / 3072.0)).epsilon(1e-14));
    // only the shape matters: batch and channels do not
    const std::array<index_t, 5> other{4, 16, 8, 16, 24};
    CHECK(model_sampling::ltxv(2.05, 0.95, other).shift() == model_sampling::ltxv(2.05, 0.95, video).shift());
}

TEST_CASE("Flux and LTXV tables match ComfyUI's golden tables", "[flux]") {
    for (const char* c : {"ModelSamplingFlux/default-schedule", "ModelSamplingFlux/512x512-schedule",
                          "ModelSamplingFlux/min-16x16-schedule", "ModelSamplingFlux/negative-mu-schedule",
                          "ModelSamplingFlux/large-mu-schedule", "ModelSamplingFlux/zero-shift-schedule",
                          "ModelSamplingLTXV/big-latent-16x32x48-schedule", "ModelSamplingLTXV/default-no-latent-schedule",
                          "ModelSamplingLTXV/latent-4d-64x64-schedule"}) {
        const std::string dir = test::golden + "/" + c;
        const auto spec = test::load_case(dir);
        const auto ms = from_case(spec);
        REQUIRE(ms.sigmas().size() == 10000);
        CHECK(ms.shift() == Approx(spec["scalars"]["mu"].get<double>()).epsilon(1e-14));
        test::require_table_matches_golden(dir, ms);
    }
}

TEST_CASE("Flux shift identities", "[flux]") {
    // mu = 0 is the identity up to float32 rounding of 1 / (1/t)
    const auto zero = model_sampling::flux(0.0, 0.0);
    REQUIRE(zero.shift() == 0.0);
    for (std::size_t k = 0; k < 10000; k += 97) {
        const float t = static_cast<float>(k + 1) / 10000.0f;
        REQUIRE(std::abs(zero.sigmas()[k] - t) <= 4.0f * std::numeric_limits<float>::epsilon() * t);
    }
    // endpoints, monotone table, timestep is the identity
    const auto f = model_sampling::flux();
    CHECK(f.sigma(0.0) == 0.0);
    CHECK(f.sigma(1.0) == Approx(1.0).epsilon(2.5e-7));
    CHECK(f.sigma_max() == Approx(1.0f).epsilon(2.5e-7));
    CHECK(f.timestep(0.3) == static_cast<double>(0.3f));
    for (std::size_t k = 1; k < f.sigmas().size(); ++k) REQUIRE(f.sigmas()[k] >= f.sigmas()[k - 1]);
    // sigma_mu(t) + sigma_-mu(1 - t) = 1 (the shift is symmetric in log-odds)
    for (double t : {0.1, 0.25, 0.5, 0.9})
        CHECK(sampling_detail::flux_time_shift64(1.7, t) + sampling_detail::flux_time_shift64(-1.7, 1.0 - t) ==
              Approx(1.0).epsilon(1e-14));
    // log-odds shift: logit(sigma) = logit(t) + mu
    const double t = 0.3, s = sampling_detail::flux_time_shift64(2.5, t);
    CHECK(std::log(s / (1.0 - s)) == Approx(std::log(t / (1.0 - t)) + 2.5).epsilon(1e-13));
    // percent_to_sigma: 1 at 0 (flow convention), 0 at 1, double in between
    CHECK(f.percent_to_sigma(0.0) == 1.0);
    CHECK(f.percent_to_sigma(1.0) == 0.0);
    CHECK(f.percent_to_sigma(0.4) == sampling_detail::flux_time_shift64(f.shift(), 0.6));
    CHECK_THROWS_AS(f.percent_to_sigma(std::nan("")), patchbay::error);
    CHECK_THROWS_AS(f.sigma(std::nan("")), patchbay::error);
}

TEST_CASE("Flux and LTXV: the finite limit where ComfyUI overflows", "[flux]") {
    // mu > ln(FLT_MAX) = 88.72: ComfyUI's float32 e^mu is inf and every sigma inf/inf = NaN.
    // patchbay returns the limit 1 / (1 + e^-mu (1/t - 1)): 1 for t > 0, 0 at t = 0.
    const auto over = model_sampling::flux(95.0, 0.5);
    REQUIRE(over.shift() == Approx(95.0).epsilon(1e-15));
    for (float s : over.sigmas()) REQUIRE(s == 1.0f);
    CHECK(over.sigma_min() == 1.0f);
    CHECK(over.sigma(0.0) == 0.0);
    CHECK(over.sigma(0.5) == 1.0);
    CHECK(over.percent_to_sigma(0.7) == 1.0);
    // continuous across the float32 overflow threshold: just below, the float32 path gives ~1
    const auto below = model_sampling::flux(88.5, 0.5);
    REQUIRE(std::isfinite(std::exp(static_cast<float>(88.5))));
    for (std::size_t k = 0; k < 10000; k += 101) REQUIRE(below.sigmas()[k] == Approx(1.0f).epsilon(1e-6));
    // mu > 709.78 (ComfyUI: OverflowError even in double), largest range: mu ~ 27300
    const auto huge = model_sampling::flux(100.0, 0.0, 16384, 16384);
    REQUIRE(huge.shift() > 709.8);
    for (float s : huge.sigmas()) REQUIRE(s == 1.0f);
    CHECK(huge.percent_to_sigma(0.999) == 1.0);
    CHECK(huge.sigma(0.0) == 0.0);
    // mu < -88.7: 1/e^mu overflows float32 and ComfyUI's sigma(1) is inf * e^mu = inf
    const auto low = model_sampling::flux(0.0, 100.0, 1408, 1408);
    REQUIRE(low.shift() == Approx(-95.0).epsilon(1e-12));
    CHECK(low.sigma_max() == 1.0f);
    for (float v : low.sigmas()) REQUIRE(std::isfinite(v));
    CHECK(low.sigma(0.5) == Approx(std::exp(-95.0)).epsilon(1e-3)); // a float32 subnormal
    // the other end: mu ~ -27200, e^mu underflows to 0 (ComfyUI: 0/0 = NaN at t = 1)
    const auto tiny = model_sampling::flux(0.0, 100.0, 16384, 16384);
    REQUIRE(tiny.shift() < -745.2);
    CHECK(tiny.sigma_max() == 1.0f); // t = 1 gives 1 for every mu
    CHECK(tiny.sigmas()[9998] == 0.0f);
    CHECK(tiny.sigma_min() == 0.0f);
    CHECK(tiny.percent_to_sigma(0.001) == 0.0);
    // LTXV shares the path: a big latent with a large slope
    const std::array<index_t, 5> big{1, 128, 64, 64, 64};
    const auto ltx = model_sampling::ltxv(100.0, 0.0, big);
    REQUIRE(ltx.shift() > 88.8);
    for (std::size_t k = 0; k < 10000; k += 53) REQUIRE(ltx.sigmas()[k] == 1.0f);
}

TEST_CASE("Flux / LTXV prediction is CONST without a noise scale", "[flux]") {
    const auto f = model_sampling::flux();
    CHECK(f.is_flow());
    CHECK(f.prediction() == prediction_type::flow);
    CHECK(!f.has_noise_scale());
    const auto x = test::random_tensor({2, 16, 4, 4}, 51), mo = test::random_tensor({2, 16, 4, 4}, 52),
               n = test::random_tensor({2, 16, 4, 4}, 53), l = test::random_tensor({2, 16, 4, 4}, 54);
    const auto s = batch_sigma({0.0f, 0.6f});
    const index_t per = x.size() / 2;
    tensor<float> a(x.shape()), b(x.shape());
    f.calculate_input<float, 4>(s.as<1>(), x.as<4>(), a.as<4>());
    CHECK(test::bit_equal(a, x));
    f.calculate_denoised<float, 4>(s.as<1>(), mo.as<4>(), x.as<4>(), a.as<4>());
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(a[i] == Approx(x[i] - mo[i] * s[i / per]).epsilon(1e-6).margin(1e-6));
    f.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, a.as<4>());
    f.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, b.as<4>());
    CHECK(test::bit_equal(a, b)); // max_denoise ignored
    for (index_t i = 0; i < per; ++i) REQUIRE(a[i] == l[i]); // sigma 0: the latent image
    f.inverse_noise_scaling<float, 4>(s.as<1>(), x.as<4>(), a.as<4>());
    for (index_t i = per; i < x.size(); ++i) REQUIRE(a[i] == Approx(x[i] / 0.4f).epsilon(1e-6));
    // 5-D video latents (LTXV)
    const auto x5 = test::random_tensor({1, 8, 3, 4, 4}, 55);
    tensor<float> o5(x5.shape());
    model_sampling::ltxv().calculate_denoised<float, 5>(batch_sigma({0.25f}).as<1>(), x5.as<5>(), x5.as<5>(), o5.as<5>());
    for (index_t i = 0; i < x5.size(); ++i) REQUIRE(o5[i] == x5[i] * 0.75f); // exact: x - x/4
}

TEST_CASE("Flux / LTXV bad input", "[flux]") {
    for (auto [w, h] : {std::pair<std::int64_t, std::int64_t>{8, 1024}, {1024, 16392}, {0, 0}})
        CHECK_THROWS_AS(model_sampling::flux(1.15, 0.5, w, h), patchbay::error);
    CHECK_THROWS_AS(model_sampling::flux(std::nan(""), 0.5), patchbay::error);
    CHECK_THROWS_AS(model_sampling::flux(1.15, -0.1), patchbay::error);
    CHECK_THROWS_AS(model_sampling::flux(100.01, 0.5), patchbay::error);
    CHECK_THROWS_AS(model_sampling::ltxv(150.0, 0.95), patchbay::error);
    CHECK_THROWS_AS(model_sampling::ltxv(2.05, std::nan("")), patchbay::error);
    const std::array<index_t, 4> negative{1, 4, -8, 8};
    CHECK_THROWS_AS(model_sampling::ltxv(2.05, 0.95, negative), patchbay::error);
    const std::string msg = test::error_of([] { (void)model_sampling::flux(1.15, 0.5, 8, 1024); });
    CHECK(msg.find("ModelSamplingFlux") != std::string::npos);
    CHECK(msg.find("width") != std::string::npos);
}

TEST_CASE("ModelNoiseScale scales the noise of SD3 / AuraFlow objects only", "[noise_scale]") {
    const auto sd3 = model_sampling::sd3(3.0);
    const auto scaled = sd3.with_noise_scale(8.0);
    CHECK(scaled.noise_scale() == 8.0);
    CHECK(sd3.noise_scale() == 1.0);
    // the schedule, timesteps and prediction are the previous object's
    CHECK(std::equal(scaled.sigmas().begin(), scaled.sigmas().end(), sd3.sigmas().begin(), sd3.sigmas().end()));
    CHECK(scaled.shift() == 3.0);
    CHECK(scaled.multiplier() == 1000.0);
    CHECK(scaled.timestep(0.5) == sd3.timestep(0.5));
    CHECK(std::string(scaled.class_type()) == "ModelSamplingSD3");

    const auto n = test::random_tensor({2, 4, 3, 3}, 61), l = test::random_tensor({2, 4, 3, 3}, 62);
    const auto s = batch_sigma({0.25f, 0.75f});
    const index_t per = n.size() / 2;
    tensor<float> a(n.shape()), b(n.shape());
    scaled.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, a.as<4>());
    for (index_t i = 0; i < n.size(); ++i) {
        const float sg = s[i / per];
        REQUIRE(a[i] == Approx(sg * (8.0f * n[i]) + (1.0f - sg) * l[i]).epsilon(1e-6).margin(1e-6));
    }
    scaled.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, b.as<4>());
    CHECK(test::bit_equal(a, b)); // max_denoise still ignored
    // noise_scale 0: no noise at all; noise_scale 1 equals the plain object bit for bit
    sd3.with_noise_scale(0.0).noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, a.as<4>());
    for (index_t i = 0; i < n.size(); ++i) REQUIRE(a[i] == (1.0f - s[i / per]) * l[i]);
    sd3.with_noise_scale(1.0).noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, a.as<4>());
    sd3.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, b.as<4>());
    CHECK(test::bit_equal(a, b));
    // only noise_scaling changes
    tensor<float> c(n.shape()), d(n.shape());
    scaled.calculate_denoised<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), c.as<4>());
    sd3.calculate_denoised<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), d.as<4>());
    CHECK(test::bit_equal(c, d));
    // applied twice: the last wins; with_noise_scale(ms, s) is the same call
    CHECK(scaled.with_noise_scale(2.0).noise_scale() == 2.0);
    CHECK(with_noise_scale(sd3, 7.5).noise_scale() == 7.5);
    // img_to_img_velocity ignores it (its noise_scaling is the latent image)
    const auto vel = model_sampling::aura_flow(1.73, "img_to_img_velocity").with_noise_scale(4.0);
    vel.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, a.as<4>());
    CHECK(test::bit_equal(a, l));
}

TEST_CASE("SD3 / AuraFlow inherit the previous object's noise scale", "[noise_scale]") {
    const auto before = model_sampling::sd3(3.0).with_noise_scale(7.5);
    const auto after = model_sampling::sd3(2.0).inheriting_noise_scale(before);
    CHECK(after.shift() == 2.0);
    CHECK(after.noise_scale() == 7.5);
    CHECK(model_sampling::aura_flow(2.5).inheriting_noise_scale(model_sampling::aura_flow().with_noise_scale(4.0))
              .noise_scale() == 4.0);
    // objects without a noise scale leave it at 1, and Flux never takes one
    CHECK(model_sampling::sd3(2.0).inheriting_noise_scale(model_sampling::discrete()).noise_scale() == 1.0);
    CHECK(model_sampling::flux().inheriting_noise_scale(before).noise_scale() == 1.0);
}

TEST_CASE("ModelNoiseScale bad input", "[noise_scale]") {
    const auto sd3 = model_sampling::sd3();
    CHECK_THROWS_AS(sd3.with_noise_scale(64.01), patchbay::error);
    CHECK_THROWS_AS(sd3.with_noise_scale(-0.5), patchbay::error);
    CHECK_THROWS_AS(sd3.with_noise_scale(std::nan("")), patchbay::error);
    CHECK_NOTHROW(sd3.with_noise_scale(64.0));
    for (const auto& other : {model_sampling::discrete(), model_sampling::flux(), model_sampling::ltxv(),
                              model_sampling::continuous_edm(), model_sampling::continuous_v(),
                              model_sampling::stable_cascade()}) {
        INFO(other.class_type());
        const std::string msg = test::error_of([&] { (void)other.with_noise_scale(2.0); });
        CHECK(msg.find("ModelNoiseScale") != std::string::npos);
        CHECK(msg.find(other.class_type()) != std::string::npos);
    }
}

} // namespace test_sampling_flow
