// Tests of the CFG++ samplers in sampling/samplers.hpp (euler_cfg_pp, euler_ancestral_cfg_pp)
// and of the uncond prediction the dispatcher hands out for them (step_inputs::uncond_denoised):
// the step written out at cond_scale 1 (the uncond pass still runs), eta 0 equal to
// euler_cfg_pp, the reduction to Euler when both prompts agree, reproducible noise, guider and
// chain alike, the capture inside multi-prompt guiders, the flow sigma-1 step, and bad input
// (schedules rising from 0; for a flow model sigmas above 1 or a step to 1, where ComfyUI gives NaN).
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "sampler_util.hpp"

namespace test_sampling_cfgpp {

using namespace patchbay;
using examples::toy_gaussian;
using examples::toy_kind;
using examples::toy_prompt;
using test::counting_toy;
using test::geometric;
using setup = test::sampler_setup;

namespace {

double max_abs_diff(const tensor<float>& a, const tensor<float>& b) {
    double m = 0;
    for (index_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
    return m;
}

} // namespace

TEST_CASE("euler_cfg_pp at cond_scale 1 runs the uncond pass and steps along its noise", "[samplers][cfgpp]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    counting_toy model{toy_gaussian(toy_kind::vp, 0.8)};
    const guider<counting_toy> g(model, ms);
    auto run = g.begin_run(&su.pos, &su.neg);
    const std::vector<double> sigmas = geometric(ms.sigma_max(), 0.1, 8);
    sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 1.0, {}};
    tensor<float> out({2, 4, 8, 8});
    REQUIRE(sample_euler_cfg_pp(g, run, in, out.as<4>()) == sample_status::completed);
    CHECK(model.calls == 16); // cond and uncond at every step, although cond_scale is 1

    // reference: x = noise * sqrt(1 + s0^2); denoised = cond (scale 1); VP alpha = 1:
    // x' = denoised + (x - uncond) * s'/s, the last step x = denoised
    tensor<float> x = su.noise;
    const float s0 = static_cast<float>(sigmas[0]);
    for (index_t i = 0; i < x.size(); ++i) x[i] = su.noise[i] * std::sqrt(1.f + s0 * s0);
    const float s2 = 0.8f * 0.8f;
    for (std::size_t k = 0; k + 1 < sigmas.size(); ++k) {
        const float s = static_cast<float>(sigmas[k]), t = static_cast<float>(sigmas[k + 1]);
        const float coef = s2 / (s2 + s * s);
        for (index_t i = 0; i < x.size(); ++i) {
            const float mc = su.mu_c[i % 256], mu = su.mu_u[i % 256];
            const float c = mc + coef * (x[i] - mc), u = mu + coef * (x[i] - mu);
            x[i] = t == 0.f ? c : c + (x[i] - u) * (t / s);
        }
    }
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(out[i] == Approx(x[i]).margin(2e-5));

    // plain Euler at cond_scale 1 skips the uncond pass and gives another result
    model.calls = 0;
    auto run2 = g.begin_run(&su.pos, &su.neg);
    tensor<float> eul({2, 4, 8, 8});
    sample_euler(g, run2, in, eul.as<4>());
    CHECK(model.calls == 8);
    CHECK(max_abs_diff(out, eul) > 0.05);
}

TEST_CASE("CFG++ reduces to Euler when both prompts agree", "[samplers][cfgpp]") {
    // uncond == guided prediction: x' = den + (x - den) s'/s is the Euler step (VP)
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    const std::vector<double> sigmas = geometric(ms.sigma_max(), 0.05, 10);
    sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 3.0, {}};
    auto r1 = g.begin_run(&su.pos, &su.pos), r2 = g.begin_run(&su.pos, &su.pos);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    sample_euler_cfg_pp(g, r1, in, a.as<4>());
    sample_euler(g, r2, in, b.as<4>());
    CHECK(max_abs_diff(a, b) < 2e-5);
    // and differs from it with two prompts
    auto r3 = g.begin_run(&su.pos, &su.neg), r4 = g.begin_run(&su.pos, &su.neg);
    sample_euler_cfg_pp(g, r3, in, a.as<4>());
    sample_euler(g, r4, in, b.as<4>());
    CHECK(max_abs_diff(a, b) > 0.05);
}

TEST_CASE("euler_ancestral_cfg_pp with eta 0 is euler_cfg_pp; noise is reproducible", "[samplers][cfgpp]") {
    setup su;
    for (const bool flow : {false, true}) {
        INFO("flow " << flow);
        const auto ms = flow ? model_sampling::sd3(3.0) : model_sampling::discrete("eps");
        const toy_gaussian model(flow ? toy_kind::flow : toy_kind::vp, 0.8);
        const guider<const toy_gaussian> g(model, ms);
        // the flow schedule starts at sigma 1: alpha(1) = 0, the step only re-noises
        const std::vector<double> sigmas = flow ? geometric(1.0, 0.05, 10) : geometric(8.0, 0.05, 10);
        sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 2.5, {}};
        auto sample_with = [&](const char* name, const sample_options<float, 4>& opt) {
            auto run = g.begin_run(&su.pos, &su.neg);
            tensor<float> out({2, 4, 8, 8});
            REQUIRE(sample(name, g, run, in, out.as<4>(), opt) == sample_status::completed);
            for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));
            return out;
        };
        sample_options<float, 4> e0;
        e0.eta = 0.0;
        CHECK(test::bit_equal(sample_with("euler_ancestral_cfg_pp", e0), sample_with("euler_cfg_pp", {})));

        sample_options<float, 4> a, b;
        a.seed = 3;
        b.seed = 4;
        const tensor<float> r1 = sample_with("euler_ancestral_cfg_pp", a);
        CHECK(test::bit_equal(r1, sample_with("euler_ancestral_cfg_pp", a)));
        CHECK(max_abs_diff(r1, sample_with("euler_ancestral_cfg_pp", b)) > 1e-3);

        // the engine's noise: one draw per step but the last; zero noise is s_noise 0
        int draws = 0;
        auto zero_noise = [&](double, double, view<float, 4> n) {
            ++draws;
            kernels::fill(n, 0.f);
        };
        sample_options<float, 4> z;
        z.noise_source = callback<void(double, double, view<float, 4>)>::to(zero_noise);
        const tensor<float> zr = sample_with("euler_ancestral_cfg_pp", z);
        CHECK(draws == 9);
        sample_options<float, 4> quiet;
        quiet.s_noise = 0.0;
        CHECK(test::bit_equal(zr, sample_with("euler_ancestral_cfg_pp", quiet)));
        CHECK(draws == 9); // s_noise 0 draws none
        CHECK(max_abs_diff(zr, r1) > 1e-3);
    }
}

TEST_CASE("CFG++ samplers drive a patch_chain like a guider", "[samplers][cfgpp]") {
    setup su;
    const auto ms = model_sampling::discrete("v_prediction");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian, rescale_cfg> g(model, ms, rescale_cfg{0.7});
    patch_chain<const toy_gaussian> chain(model, ms);
    chain.add(rescale_cfg{0.7});
    const std::vector<double> sigmas = geometric(10.0, 0.05, 6);
    sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 4.0, {}};
    sample_options<float, 4> opt;
    opt.seed = 11;
    opt.eta = 0.6;
    auto rg = g.begin_run(&su.pos, &su.neg);
    auto rc = chain.begin_run(&su.pos, &su.neg);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    sample("euler_ancestral_cfg_pp", g, rg, in, a.as<4>(), opt);
    sample("euler_ancestral_cfg_pp", chain, rc, in, b.as<4>(), opt);
    CHECK(test::bit_equal(a, b));
}

TEST_CASE("denoise hands out the uncond prediction the post-cfg stage sees", "[samplers][cfgpp]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const toy_prompt mid{su.noise.as<4>().batch_slice(0, 1)};
    const tensor<float> x = test::random_tensor({2, 4, 8, 8}, 54, 0.f, 3.f);
    tensor<float> sigma({2});
    sigma.fill(2.5f);
    auto prediction_of = [&](const toy_prompt& p) {
        tensor<float> o({2, 4, 8, 8});
        const model_call<toy_prompt, float, 4> c{x.as<4>(), sigma.as<1>(), pass_kind::uncond, pass_kind::uncond, &p, nullptr};
        model.predict(c, o.as<4>());
        return o;
    };
    const tensor<float> want_neg = prediction_of(su.neg), want_mid = prediction_of(mid);
    auto step = [&](const auto& g, double scale, const toy_prompt* extra) {
        auto run = g.begin_run(&su.pos, &su.neg, extra);
        tensor<float> den({2, 4, 8, 8}), unc({2, 4, 8, 8});
        unc.fill(99.f);
        step_inputs<float, 4> st{x.as<4>(), sigma.as<1>(), scale};
        st.uncond_denoised = unc.as<4>();
        g.denoise(run, st, den.as<4>());
        return unc;
    };
    // plain CFG, also at cond_scale 1 (the uncond pass is kept)
    const guider<const toy_gaussian> plain(model, ms);
    CHECK(test::bit_equal(step(plain, 3.0, nullptr), want_neg));
    CHECK(test::bit_equal(step(plain, 1.0, nullptr), want_neg));
    // PerpNegGuider hands its post-cfg hooks the negative prediction; at neg_scale 0 it would
    // skip that prompt, but the CFG++ request keeps it
    const guider<const toy_gaussian, perp_neg_guider> pn(model, ms, perp_neg_guider{3.0, 0.0});
    CHECK(test::bit_equal(step(pn, 3.0, &mid), want_neg));
    // DualCFGGuider: regular style hands (middle, negative), nested (positive, middle)
    const guider<const toy_gaussian, dual_cfg_guider> dr(model, ms, dual_cfg_guider{});
    CHECK(test::bit_equal(step(dr, 3.0, &mid), want_neg));
    dual_cfg_guider nested;
    nested.style = dual_cfg_style::nested;
    const guider<const toy_gaussian, dual_cfg_guider> dn(model, ms, nested);
    CHECK(test::bit_equal(step(dn, 3.0, &mid), want_mid));
}

TEST_CASE("CFG++ samplers reject bad input", "[samplers][cfgpp]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    auto run = g.begin_run(&su.pos, &su.neg);
    tensor<float> out({2, 4, 8, 8});
    const std::vector<double> sigmas{2.0, 1.0, 0.0};
    const sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 2.0, {}};
    auto with = [](double eta, double s_noise) {
        sample_options<float, 4> o;
        o.eta = eta;
        o.s_noise = s_noise;
        return o;
    };
    CHECK_THROWS_WITH(sample_euler_ancestral_cfg_pp(g, run, in, out.as<4>(), with(1.5, 1.0)),
                      Catch::Contains("sample_euler_ancestral_cfg_pp") && Catch::Contains("'eta'"));
    CHECK_THROWS_AS(sample_euler_ancestral_cfg_pp(g, run, in, out.as<4>(), with(-0.1, 1.0)), error);
    CHECK_THROWS_AS(sample_euler_ancestral_cfg_pp(g, run, in, out.as<4>(), with(std::nan(""), 1.0)), error);
    CHECK_THROWS_WITH(sample_euler_ancestral_cfg_pp(g, run, in, out.as<4>(), with(1.0, 10.5)),
                      Catch::Contains("'s_noise'"));
    CHECK_NOTHROW(sample_euler_ancestral_cfg_pp(g, run, in, out.as<4>(), with(1.0, 10.0)));

    const tensor<float> latent = test::random_tensor({2, 4, 8, 6}, 55);
    CHECK_THROWS_WITH(sample_euler_cfg_pp(g, run, {su.noise.as<4>(), latent.as<4>(), sigmas, 2.0, {}}, out.as<4>()),
                      Catch::Contains("sample_euler_cfg_pp") && Catch::Contains("latent_image"));
    tensor<float> small({2, 4, 8, 4});
    CHECK_THROWS_AS(sample_euler_cfg_pp(g, run, in, small.as<4>()), error);

    // a step from sigma 0 divides by 0 (ComfyUI: NaN): refused, by every sampler
    const std::vector<double> rise{2.0, 0.0, 1.0};
    CHECK(test::error_of([&] { sample_euler_cfg_pp(g, run, {su.noise.as<4>(), {}, rise, 2.0, {}}, out.as<4>()); }) ==
          "sample_euler_cfg_pp: argument 'sigmas' must not rise from 0 (step 1 goes from 0 to 1); only the end of a "
          "schedule may be 0");
    CHECK_THROWS_WITH(sample_euler(g, run, {su.noise.as<4>(), {}, rise, 2.0, {}}, out.as<4>()),
                      Catch::Contains("sample_euler: argument 'sigmas' must not rise from 0"));
    const std::vector<double> zeros{2.0, 0.0, 0.0}; // trailing zeros: the prediction, finite
    REQUIRE_NOTHROW(sample_euler_cfg_pp(g, run, {su.noise.as<4>(), {}, zeros, 2.0, {}}, out.as<4>()));
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));

    // a flow model: alpha(sigma) = 1 - sigma, NaN in ComfyUI above 1 and on a step to 1
    const auto flow = model_sampling::sd3(3.0);
    const toy_gaussian fmodel(toy_kind::flow, 0.8);
    const guider<const toy_gaussian> fg(fmodel, flow);
    auto frun = fg.begin_run(&su.pos, &su.neg);
    const std::vector<double> above{1.5, 0.5, 0.0}, to_one{1.0, 1.0, 0.0}, flipped{0.5, 1.0};
    CHECK(test::error_of([&] { sample_euler_cfg_pp(fg, frun, {su.noise.as<4>(), {}, above, 2.0, {}}, out.as<4>()); }) ==
          "sample_euler_cfg_pp: argument 'sigmas' must be below 1 for a flow model (alpha = 1 - sigma; only the first "
          "may be 1), got 1.5 at index 0");
    CHECK_THROWS_WITH(sample_euler_ancestral_cfg_pp(fg, frun, {su.noise.as<4>(), {}, to_one, 2.0, {}}, out.as<4>()),
                      Catch::Contains("got 1 at index 1"));
    CHECK_THROWS_WITH(sample("euler_cfg_pp", fg, frun, {su.noise.as<4>(), {}, flipped, 2.0, {}}, out.as<4>()),
                      Catch::Contains("got 1 at index 1"));
    const std::vector<double> from_one{1.0, 0.5, 0.0}; // the start may be 1 (the step only re-noises)
    REQUIRE_NOTHROW(sample_euler_cfg_pp(fg, frun, {su.noise.as<4>(), {}, from_one, 2.0, {}}, out.as<4>()));
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));

    // the uncond output itself: shape and overlap, checked by the step
    tensor<float> sigma({2}), den({2, 4, 8, 8});
    sigma.fill(1.f);
    step_inputs<float, 4> st{su.noise.as<4>(), sigma.as<1>(), 2.0};
    st.uncond_denoised = small.as<4>();
    CHECK_THROWS_WITH(g.denoise(run, st, den.as<4>()), Catch::Contains("uncond_denoised"));
    st.uncond_denoised = den.as<4>();
    CHECK_THROWS_WITH(g.denoise(run, st, den.as<4>()), Catch::Contains("overlaps"));
}

} // namespace test_sampling_cfgpp
