// Tests of sampling/samplers.hpp: the Euler loop against a hand-written reference, accuracy of
// euler / dpmpp_2m against the exact solution for Gaussian data, euler_ancestral determinism,
// inpainting, progress reports, cancellation, and bad input.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <vector>

#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "sampler_util.hpp"

namespace test_sampling_samplers {

using namespace patchbay;
using examples::toy_gaussian;
using examples::toy_kind;
using examples::toy_prompt;
using test::counting_toy;
using test::geometric;
using setup = test::sampler_setup;

TEST_CASE("euler matches the k-diffusion loop written out", "[samplers]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    auto run = g.begin_run(&su.pos, &su.neg);
    const std::vector<double> sigmas = geometric(ms.sigma_max(), 0.1, 8);
    sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 5.0, {}};
    tensor<float> out({2, 4, 8, 8});
    REQUIRE(sample_euler(g, run, in, out.as<4>()) == sample_status::completed);

    // reference: x = noise * sqrt(1 + s0^2) (max_denoise: s0 == sigma_max), plain CFG, Euler
    tensor<float> x = su.noise;
    const float s0 = static_cast<float>(sigmas[0]);
    for (index_t i = 0; i < x.size(); ++i) x[i] = su.noise[i] * std::sqrt(1.f + s0 * s0);
    const float s2 = 0.8f * 0.8f;
    for (std::size_t k = 0; k + 1 < sigmas.size(); ++k) {
        const float s = static_cast<float>(sigmas[k]), dt = static_cast<float>(sigmas[k + 1]) - s;
        const float coef = s2 / (s2 + s * s);
        for (index_t i = 0; i < x.size(); ++i) {
            const float mc = su.mu_c[i % 256], mu = su.mu_u[i % 256];
            const float c = mc + coef * (x[i] - mc), u = mu + coef * (x[i] - mu);
            const float d = u + (c - u) * 5.f;
            x[i] = x[i] + ((x[i] - d) / s) * dt;
        }
    }
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(out[i] == Approx(x[i]).margin(2e-5));
}

TEST_CASE("euler and dpmpp_2m converge to the exact Gaussian solution", "[samplers]") {
    // For Gaussian data the probability-flow ODE has the closed form
    // x(sigma) - mu = (x_T - mu) * sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2).
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    auto error_of = [&](const char* sampler, int steps) {
        const std::vector<double> sigmas = geometric(10.0, 0.002, steps);
        sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 1.0, {}};
        tensor<float> xt({2, 4, 8, 8}), out({2, 4, 8, 8});
        auto first_x = [&](const step_report<float, 4>& r) {
            if (r.step == 0) xt = tensor<float>::copy_of(r.x);
        };
        sample_options<float, 4> opt;
        opt.progress = callback<void(const step_report<float, 4>&)>::to(first_x);
        auto run = g.begin_run(&su.pos, &su.neg);
        REQUIRE(sample(sampler, g, run, in, out.as<4>(), opt) == sample_status::completed);
        const double f = 0.8 / std::sqrt(0.64 + sigmas[0] * sigmas[0]);
        double worst = 0;
        for (index_t i = 0; i < out.size(); ++i) {
            const double mu = su.mu_c[i % 256];
            worst = std::max(worst, std::fabs(out[i] - (mu + (xt[i] - mu) * f)));
        }
        return worst;
    };
    const double e1 = error_of("euler", 30), e2 = error_of("euler", 120);
    const double d1 = error_of("dpmpp_2m", 30), d2 = error_of("dpmpp_2m", 120);
    INFO("euler " << e1 << " -> " << e2 << ", dpmpp_2m " << d1 << " -> " << d2);
    CHECK(e2 < e1 / 3);   // first order: 4x the steps, about 4x smaller error
    CHECK(d2 < d1 / 10);  // second order: about 16x smaller
    CHECK(d1 < e1 / 3);   // and better than Euler at the same step count
    CHECK(d2 < 2e-3);
}

TEST_CASE("euler_ancestral is deterministic for a seed and uses the engine's noise", "[samplers]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    const std::vector<double> sigmas = geometric(8.0, 0.05, 10);
    sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 4.0, {}};
    auto sample_with = [&](const sample_options<float, 4>& opt) {
        auto run = g.begin_run(&su.pos, &su.neg);
        tensor<float> out({2, 4, 8, 8});
        sample_euler_ancestral(g, run, in, out.as<4>(), opt);
        return out;
    };
    sample_options<float, 4> a, b;
    a.seed = 7;
    b.seed = 8;
    const tensor<float> r1 = sample_with(a), r2 = sample_with(a), r3 = sample_with(b);
    CHECK(test::bit_equal(r1, r2));
    CHECK_FALSE(test::bit_equal(r1, r3));

    int noise_calls = 0;
    auto zero_noise = [&](double, double, view<float, 4> out) {
        ++noise_calls;
        kernels::fill(out, 0.f);
    };
    sample_options<float, 4> c;
    c.noise_source = callback<void(double, double, view<float, 4>)>::to(zero_noise);
    const tensor<float> r4 = sample_with(c);
    CHECK(noise_calls == 9); // every step but the last (sigma_down == 0 there)
    CHECK_FALSE(test::bit_equal(r4, r1));

    // eta = 0 is the Euler method (discrete and flow variants)
    sample_options<float, 4> e0;
    e0.eta = 0.0;
    const tensor<float> anc = sample_with(e0);
    auto run = g.begin_run(&su.pos, &su.neg);
    tensor<float> eul({2, 4, 8, 8});
    sample_euler(g, run, in, eul.as<4>());
    for (index_t i = 0; i < eul.size(); ++i) REQUIRE(anc[i] == Approx(eul[i]).margin(1e-5));

    const auto flow = model_sampling::sd3(3.0);
    const toy_gaussian fmodel(toy_kind::flow, 0.8);
    const guider<const toy_gaussian> gf(fmodel, flow);
    const std::vector<double> fs = geometric(1.0, 0.05, 10);
    sample_inputs<float, 4> fin{su.noise.as<4>(), {}, fs, 4.0, {}};
    auto rf1 = gf.begin_run(&su.pos, &su.neg), rf2 = gf.begin_run(&su.pos, &su.neg);
    tensor<float> fa({2, 4, 8, 8}), fe({2, 4, 8, 8});
    sample_euler_ancestral(gf, rf1, fin, fa.as<4>(), e0);
    sample_euler(gf, rf2, fin, fe.as<4>());
    for (index_t i = 0; i < fe.size(); ++i) REQUIRE(fa[i] == Approx(fe[i]).margin(1e-5));
}

TEST_CASE("progress reports every step and cancellation stops the run", "[samplers]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    counting_toy model{toy_gaussian(toy_kind::vp, 0.8)};
    const guider<counting_toy> g(model, ms);
    const std::vector<double> sigmas = geometric(5.0, 0.1, 6);
    sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 2.0, {}};
    std::vector<int> steps;
    std::vector<double> sig;
    std::atomic<bool> stop{false};
    bool final_has_no_denoised = false;
    auto progress = [&](const step_report<float, 4>& r) {
        steps.push_back(r.step);
        sig.push_back(r.sigma);
        CHECK(r.steps == 6);
        if (r.step == r.steps) final_has_no_denoised = r.denoised.empty();
        else CHECK(r.denoised.size() == r.x.size());
    };
    sample_options<float, 4> opt;
    opt.progress = callback<void(const step_report<float, 4>&)>::to(progress);
    auto run = g.begin_run(&su.pos, &su.neg);
    tensor<float> out({2, 4, 8, 8});
    CHECK(sample_euler(g, run, in, out.as<4>(), opt) == sample_status::completed);
    CHECK(steps == std::vector<int>{0, 1, 2, 3, 4, 5, 6});
    CHECK(sig[2] == sigmas[2]);
    CHECK(final_has_no_denoised);
    CHECK(model.calls == 12); // cond + uncond per step

    model.calls = 0;
    steps.clear();
    auto cancel_at_2 = [&](const step_report<float, 4>& r) {
        steps.push_back(r.step);
        if (r.step == 2) stop = true;
    };
    opt.progress = callback<void(const step_report<float, 4>&)>::to(cancel_at_2);
    opt.cancel = &stop;
    auto run2 = g.begin_run(&su.pos, &su.neg);
    CHECK(sample_dpmpp_2m(g, run2, in, out.as<4>(), opt) == sample_status::cancelled);
    CHECK(steps == std::vector<int>{0, 1, 2});
    CHECK(model.calls == 6);
}

TEST_CASE("inpainting with a zero mask keeps the latent image", "[samplers]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    const tensor<float> latent = test::random_tensor({2, 4, 8, 8}, 41);
    tensor<float> mask({2, 4, 8, 8});
    for (index_t i = 0; i < mask.size(); ++i) mask[i] = i < 256 ? 0.f : 1.f; // batch item 0 kept
    const std::vector<double> sigmas = geometric(6.0, 0.1, 8);
    sample_inputs<float, 4> in{su.noise.as<4>(), latent.as<4>(), sigmas, 3.0, mask.as<4>()};
    auto run = g.begin_run(&su.pos, &su.neg);
    tensor<float> out({2, 4, 8, 8});
    sample_euler(g, run, in, out.as<4>());
    for (index_t i = 0; i < 256; ++i) REQUIRE(out[i] == Approx(latent[i]).margin(1e-5));
    // batch item 1 is regenerated: far from the latent image
    double diff = 0;
    for (index_t i = 256; i < 512; ++i) diff += std::fabs(out[i] - latent[i]);
    CHECK(diff / 256 > 0.1);
}

TEST_CASE("samplers drive a patch_chain like a guider", "[samplers]") {
    setup su;
    const auto ms = model_sampling::aura_flow();
    const toy_gaussian model(toy_kind::flow, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    const patch_chain<const toy_gaussian> chain(model, ms);
    const std::vector<double> sigmas = geometric(1.0, 0.05, 6);
    sample_inputs<float, 4> in{su.noise.as<4>(), {}, sigmas, 4.0, {}};
    auto rg = g.begin_run(&su.pos, &su.neg);
    auto rc = chain.begin_run(&su.pos, &su.neg);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    sample("dpmpp_2m", g, rg, in, a.as<4>());
    sample("dpmpp_2m", chain, rc, in, b.as<4>());
    CHECK(test::bit_equal(a, b));
}

TEST_CASE("samplers reject bad input", "[samplers]") {
    setup su;
    const auto ms = model_sampling::discrete("eps");
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian> g(model, ms);
    auto run = g.begin_run(&su.pos, &su.neg);
    tensor<float> out({2, 4, 8, 8}), small({2, 4, 8, 4});
    const std::vector<double> one{1.0}, ok{1.0, 0.0}, nan{1.0, std::nan("")}, neg{1.0, -0.5};
    CHECK_THROWS_AS(sample_euler(g, run, {su.noise.as<4>(), {}, one, 2.0, {}}, out.as<4>()), error);
    CHECK_THROWS_AS(sample_euler(g, run, {su.noise.as<4>(), {}, nan, 2.0, {}}, out.as<4>()), error);
    CHECK_THROWS_AS(sample_euler(g, run, {su.noise.as<4>(), {}, neg, 2.0, {}}, out.as<4>()), error);
    CHECK_THROWS_AS(sample_euler(g, run, {su.noise.as<4>(), {}, ok, 2.0, {}}, small.as<4>()), error);
    CHECK_THROWS_AS(sample("heun", g, run, {su.noise.as<4>(), {}, ok, 2.0, {}}, out.as<4>()), error);
    tensor<float> n2 = su.noise;
    CHECK_THROWS_AS(sample_euler(g, run, {n2.as<4>(), {}, ok, 2.0, {}}, n2.as<4>()), error); // out aliases noise
    CHECK_NOTHROW(sample_euler(g, run, {su.noise.as<4>(), {}, ok, 2.0, {}}, out.as<4>()));
}

} // namespace test_sampling_samplers
