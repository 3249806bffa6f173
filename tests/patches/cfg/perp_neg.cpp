// Tests for patches/cfg/perp_neg.hpp: golden parity, ComfyUI's formula (independent double
// reference) with its whole-tensor projection, the finite limit where ComfyUI gives NaN, the
// extra model pass (pass_kind::extra, once, with the run's third prompt) through guider and
// patch_chain, stride invariance, float and double, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../guider/guider_golden.hpp" // error_of
#include "npy.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "test_util.hpp"
#include "toy_gaussian.hpp"

namespace test_patches_cfg_perp_neg {

using namespace patchbay;
using test::error_of;

namespace {

struct inputs {
    tensor<float> x, sigma, c, u, e;
};

inputs make(std::vector<index_t> shape, unsigned seed) {
    inputs in;
    in.x = test::random_tensor(shape, seed, 0.f, 3.f);
    in.c = test::random_tensor(shape, seed + 1, 0.2f, 1.f);
    in.u = test::random_tensor(shape, seed + 2, -0.1f, 0.8f);
    in.e = test::random_tensor(shape, seed + 3, 0.05f, 0.9f);
    in.sigma = tensor<float>({shape[0]});
    in.sigma.fill(1.5f);
    return in;
}

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

template <std::size_t R, class T>
tensor<T> run(const perp_neg& p, const tensor<T>& x, const tensor<T>& sigma, const tensor<T>& c, const tensor<T>& u,
              const tensor<T>& e, double scale) {
    const guidance_inputs<T, R> in{x.template as<R>(), sigma.template as<1>(), scale};
    tensor<T> out(c.shape());
    p.combine(in, c.template as<R>(), u.template as<R>(), e.template as<R>(), out.template as<R>());
    return out;
}

/// ComfyUI's perp_neg() in double: one projection coefficient over the whole tensor.
std::vector<double> reference(const inputs& in, double neg_scale, double s) {
    double dot = 0, nn = 0;
    for (index_t i = 0; i < in.c.size(); ++i) {
        const double pos = double(in.c[i]) - in.e[i], neg = double(in.u[i]) - in.e[i];
        dot += neg * pos, nn += pos * pos;
    }
    const double a = dot / nn;
    std::vector<double> out(static_cast<std::size_t>(in.c.size()));
    for (index_t i = 0; i < in.c.size(); ++i) {
        const double pos = double(in.c[i]) - in.e[i], neg = double(in.u[i]) - in.e[i];
        out[std::size_t(i)] = in.e[i] + s * (pos - neg_scale * (neg - a * pos));
    }
    return out;
}

template <class T>
double max_err(const tensor<T>& got, const std::vector<double>& want) {
    double m = 0;
    for (index_t i = 0; i < got.size(); ++i) m = std::max(m, std::fabs(double(got[i]) - want[std::size_t(i)]));
    return m;
}

/// The toy model, recording (pass, prompt) of every call.
struct counted : examples::toy_gaussian {
    using toy_gaussian::toy_gaussian;
    std::vector<std::pair<pass_kind, pass_kind>> calls;
    template <class T, std::size_t R>
    void predict(const model_call<examples::toy_prompt, T, R>& c, view<T, R> out) {
        calls.emplace_back(c.pass, c.prompt);
        toy_gaussian::predict(c, out);
    }
};

} // namespace

TEST_CASE("perp_neg matches ComfyUI's golden cases", "[perp_neg][golden]") {
    const std::string dir = PATCHBAY_GOLDEN_DIR "/PerpNeg/";
    for (const char* name : {"default", "neg-scale-mid", "neg-scale0", "video-5d", "cfg1-uncond-zeros", "batch1-odd"}) {
        INFO(name);
        const std::string d = dir + name + "/";
        auto ld = [&](const char* f) { return npy::load(d + f).to_tensor<float>(); };
        const auto x = ld("in_x.npy"), s = ld("in_sigma.npy"), c = ld("in_cond_denoised.npy"),
                   u = ld("in_uncond_denoised.npy"), e = ld("in_empty_denoised.npy");
        const auto want = npy::load(d + "out_denoised.npy");
        std::ifstream f(d + "case.json");
        const auto spec = nlohmann::json::parse(f);
        const perp_neg p{spec.at("params").at("neg_scale").get<double>()};
        const double scale = spec.at("scalars").at("cond_scale").get<double>();
        const double atol = spec.at("tolerances").at("denoised").at("atol").get<double>();
        const tensor<float> got = c.rank() == 4 ? run<4>(p, x, s, c, u, e, scale) : run<5>(p, x, s, c, u, e, scale);
        double worst = 0;
        for (index_t i = 0; i < got.size(); ++i)
            worst = std::max(worst, std::fabs(got[i] - want.values[std::size_t(i)]) /
                                        (atol + 1e-5 * std::fabs(want.values[std::size_t(i)])));
        CHECK(worst <= 1.0);
    }
}

TEST_CASE("perp_neg follows ComfyUI's formula with one projection over the whole batch", "[perp_neg]") {
    const auto a = make({3, 4, 7, 9}, 11);
    const auto got = run<4>(perp_neg{0.8}, cast<double>(a.x), cast<double>(a.sigma), cast<double>(a.c),
                            cast<double>(a.u), cast<double>(a.e), 6.5);
    CHECK(max_err(got, reference(a, 0.8, 6.5)) < 1e-11);
    const auto f = run<4>(perp_neg{0.8}, a.x, a.sigma, a.c, a.u, a.e, 6.5);
    CHECK(max_err(f, reference(a, 0.8, 6.5)) < 3e-5);

    // one coefficient for the batch: item 0 alone projects with its own coefficient and differs
    inputs one;
    one.x = tensor<float>::copy_of(a.x.as<4>().batch_slice(0, 1));
    one.c = tensor<float>::copy_of(a.c.as<4>().batch_slice(0, 1));
    one.u = tensor<float>::copy_of(a.u.as<4>().batch_slice(0, 1));
    one.e = tensor<float>::copy_of(a.e.as<4>().batch_slice(0, 1));
    one.sigma = tensor<float>({1});
    const auto alone = run<4>(perp_neg{0.8}, one.x, one.sigma, one.c, one.u, one.e, 6.5);
    double diff = 0;
    for (index_t i = 0; i < alone.size(); ++i) diff = std::max(diff, double(std::fabs(alone[i] - f[i])));
    CHECK(diff > 1e-3);
    CHECK(max_err(alone, reference(one, 0.8, 6.5)) < 3e-5);

    // 5-D latents: the same whole-tensor projection
    const auto v = make({2, 3, 4, 5, 37}, 21);
    CHECK(max_err(run<5>(perp_neg{1.3}, cast<double>(v.x), cast<double>(v.sigma), cast<double>(v.c),
                         cast<double>(v.u), cast<double>(v.e), 4.0),
                  reference(v, 1.3, 4.0)) < 1e-11);
}

TEST_CASE("perp_neg: cond == empty gives the finite limit (projection 0), not ComfyUI's NaN", "[perp_neg][nan]") {
    auto a = make({2, 4, 5, 6}, 41);
    a.e = a.c; // ||pos|| = 0: ComfyUI's coefficient is 0/0
    const auto got = run<4>(perp_neg{1.5}, a.x, a.sigma, a.c, a.u, a.e, 5.0);
    for (index_t i = 0; i < got.size(); ++i) {
        // pos = 0, perp = neg: empty + s*(0 - k*(uncond - empty)), in float as the kernel forms it
        const float pos = a.c[i] - a.e[i];
        const float want = a.e[i] + 5.0f * (pos - (a.u[i] - a.e[i] - 0.0f * pos) * 1.5f);
        REQUIRE(std::isfinite(got[i]));
        CHECK(got[i] == want);
    }
    // the golden case's positions that ComfyUI recorded as NaN get exactly this limit
    const std::string d = PATCHBAY_GOLDEN_DIR "/PerpNeg/nan-cond-equals-empty/";
    auto ld = [&](const char* f) { return npy::load(d + f).to_tensor<float>(); };
    const auto x = ld("in_x.npy"), s = ld("in_sigma.npy"), c = ld("in_cond_denoised.npy"),
               u = ld("in_uncond_denoised.npy"), e = ld("in_empty_denoised.npy");
    const auto g = run<4>(perp_neg{1.0}, x, s, c, u, e, 5.0);
    for (index_t i = 0; i < g.size(); ++i) CHECK(g[i] == e[i] + 5.0f * ((c[i] - e[i]) - (u[i] - e[i] - 0.0f) * 1.0f));
}

TEST_CASE("perp_neg: neg_scale 0 is empty + s*(cond - empty) whatever the negative", "[perp_neg]") {
    auto a = make({2, 3, 8, 8}, 51);
    const auto base = run<4>(perp_neg{0.0}, a.x, a.sigma, a.c, a.u, a.e, 7.0);
    for (index_t i = 0; i < base.size(); ++i) CHECK(base[i] == a.e[i] + 7.0f * (a.c[i] - a.e[i]));
    a.u.fill(123.f);
    CHECK(test::bit_equal(run<4>(perp_neg{0.0}, a.x, a.sigma, a.c, a.u, a.e, 7.0), base));
    a.e = a.c; // and the NaN case needs no limit there: the result is cond
    const auto c_only = run<4>(perp_neg{0.0}, a.x, a.sigma, a.c, a.u, a.e, 7.0);
    CHECK(test::bit_equal(c_only, a.c));
}

TEST_CASE("perp_neg: strided views give the contiguous result bit for bit", "[perp_neg]") {
    const auto a = make({2, 5, 9, 13}, 61);
    const auto want = run<4>(perp_neg{0.7}, a.x, a.sigma, a.c, a.u, a.e, 3.0);
    // transpose the last two dims of every input and of the output (strided everywhere)
    auto tr = [](const tensor<float>& t) {
        tensor<float> r({t.extent(0), t.extent(1), t.extent(3), t.extent(2)});
        auto v = t.as<4>();
        auto w = r.as<4>();
        for (index_t b = 0; b < t.extent(0); ++b)
            for (index_t ch = 0; ch < t.extent(1); ++ch)
                for (index_t y = 0; y < t.extent(2); ++y)
                    for (index_t xx = 0; xx < t.extent(3); ++xx) w(b, ch, xx, y) = v(b, ch, y, xx);
        return r;
    };
    auto swapped = [](view<float, 4> v) {
        return view<float, 4>(v.data_handle(), {v.extent(0), v.extent(1), v.extent(3), v.extent(2)},
                              {v.stride(0), v.stride(1), v.stride(3), v.stride(2)});
    };
    auto xt = tr(a.x), ct = tr(a.c), ut = tr(a.u), et = tr(a.e);
    tensor<float> outt(xt.shape());
    const guidance_inputs<float, 4> in{swapped(xt.as<4>()), a.sigma.as<1>(), 3.0};
    perp_neg{0.7}.combine(in, swapped(ct.as<4>()), swapped(ut.as<4>()), swapped(et.as<4>()), swapped(outt.as<4>()));
    CHECK(test::bit_equal(tr(outt), want));
}

TEST_CASE("perp_neg's cfg function evaluates the extra prompt once, on x, and combines", "[perp_neg]") {
    const auto a = make({2, 3, 6, 10}, 71);
    const auto want = run<4>(perp_neg{1.2}, a.x, a.sigma, a.c, a.u, a.e, 4.0);
    int calls = 0;
    auto evaluate = [&](pass_kind prompt, view<const float, 4> xv, view<float, 4> out, const call_overrides<float>*) {
        ++calls;
        CHECK(prompt == pass_kind::extra);
        CHECK(xv.data_handle() == a.x.data());
        kernels::copy<float, 4>(a.e.as<4>(), out);
    };
    model_access<float, 4> model(model_access<float, 4>::evaluate_fn::to(evaluate));
    const guidance_inputs<float, 4> in{a.x.as<4>(), a.sigma.as<1>(), 4.0};
    no_state st;
    tensor<float> out(a.c.shape());
    perp_neg{1.2}.cfg_function<float, 4>(st, in, a.c.as<4>(), a.u.as<4>(), out.as<4>(), model);
    CHECK(calls == 1);
    CHECK(test::bit_equal(out, want));

    // out exactly cond: the extra prediction goes to scratch, cond is read intact
    tensor<float> c2 = a.c;
    workspace ws;
    guidance_inputs<float, 4> in2 = in;
    in2.scratch = &ws;
    perp_neg{1.2}.cfg_function<float, 4>(st, in2, c2.as<4>(), a.u.as<4>(), c2.as<4>(), model);
    CHECK(test::bit_equal(c2, want));
    CHECK(ws.bytes() > 0);

    // inside a multi-prompt guider the extra prompt is the guider's: refused
    in2.in_multi_prompt = true;
    const std::string refused =
        error_of([&] { perp_neg{}.cfg_function<float, 4>(st, in2, a.c.as<4>(), a.u.as<4>(), out.as<4>(), model); });
    CHECK_THAT(refused, Catch::Contains("PerpNeg") && Catch::Contains("multi-prompt guider"));
}

TEST_CASE("perp_neg through guider and patch_chain: the third prompt, skipped uncond at scale 1", "[perp_neg]") {
    using examples::toy_prompt;
    counted model(examples::toy_kind::vp, 0.8);
    const auto mu_c = test::random_tensor({1, 3, 4, 4}, 1), mu_u = test::random_tensor({1, 3, 4, 4}, 2),
               mu_e = test::random_tensor({1, 3, 4, 4}, 3);
    const toy_prompt pos(mu_c.as<4>()), neg(mu_u.as<4>()), empty(mu_e.as<4>());
    const auto x = test::random_tensor({2, 3, 4, 4}, 4, 0.f, 2.f);
    tensor<float> sigma({2});
    sigma.fill(1.7f);
    const auto ms = model_sampling::discrete();

    // the three predictions, straight from the model
    auto predict = [&](const toy_prompt& p) {
        tensor<float> o(x.shape());
        const model_call<toy_prompt, float, 4> call{x.as<4>(), sigma.as<1>(), pass_kind::cond, pass_kind::cond, &p};
        model.toy_gaussian::predict(call, o.as<4>());
        return o;
    };
    const auto dc = predict(pos), du = predict(neg), de = predict(empty);
    for (double scale : {5.0, 1.0}) {
        INFO(scale);
        tensor<float> zeros(x.shape());
        const auto want = run<4>(perp_neg{0.9}, x, sigma, dc, scale == 1.0 ? zeros : du, de, scale);
        const step_inputs<float, 4> st{x.as<4>(), sigma.as<1>(), scale};

        const guider<counted, perp_neg> g(model, ms, perp_neg{0.9});
        auto run_g = g.begin_run(&pos, &neg, &empty);
        tensor<float> out_g(x.shape());
        model.calls.clear();
        g.denoise(run_g, st, out_g.as<4>());
        const auto calls_g = model.calls;

        patch_chain<counted> chain(model, ms);
        chain.add(perp_neg{0.9});
        auto run_c = chain.begin_run(&pos, &neg, &empty);
        tensor<float> out_c(x.shape());
        model.calls.clear();
        chain.denoise(run_c, st, out_c.as<4>());

        CHECK(test::bit_equal(out_g, out_c));
        CHECK(test::same_arithmetic(out_g, want));
        CHECK(model.calls == calls_g);
        // cond, uncond (not at scale 1), then the extra pass with the empty prompt
        std::vector<std::pair<pass_kind, pass_kind>> expect{{pass_kind::cond, pass_kind::cond}};
        if (scale != 1.0) expect.emplace_back(pass_kind::uncond, pass_kind::uncond);
        expect.emplace_back(pass_kind::reevaluation, pass_kind::extra);
        CHECK(calls_g == expect);
    }
}

TEST_CASE("perp_neg rejects bad input with messages naming PerpNeg", "[perp_neg][errors]") {
    const auto a = make({2, 3, 4, 4}, 81);
    const auto other = test::random_tensor({2, 3, 4, 5}, 82);
    CHECK_THROWS_WITH(run<4>(perp_neg{}, a.x, a.sigma, a.c, a.u, other, 5.0),
                      Catch::Contains("PerpNeg") && Catch::Contains("empty"));
    CHECK_THROWS_WITH(run<4>(perp_neg{-0.5}, a.x, a.sigma, a.c, a.u, a.e, 5.0),
                      Catch::Contains("PerpNeg") && Catch::Contains("neg_scale"));
    CHECK_THROWS_WITH(run<4>(perp_neg{100.5}, a.x, a.sigma, a.c, a.u, a.e, 5.0), Catch::Contains("neg_scale"));
    CHECK_THROWS_WITH(run<4>(perp_neg{}, a.x, a.sigma, a.c, a.u, a.e, std::nan("")),
                      Catch::Contains("PerpNeg") && Catch::Contains("cond_scale"));
    // out partly overlapping empty
    tensor<float> big({2 * a.c.size()});
    const view<float, 4> e1(big.data(), {2, 3, 4, 4}), o1(big.data() + 5, {2, 3, 4, 4});
    kernels::copy<float, 4>(a.e.as<4>(), e1);
    const guidance_inputs<float, 4> in{a.x.as<4>(), a.sigma.as<1>(), 5.0};
    CHECK(!error_of([&] { perp_neg{}.combine(in, a.c.as<4>(), a.u.as<4>(), e1, o1); }).empty());
    // a cfg-function neighbour is refused by the slot rules (one cfg function)
    examples::toy_gaussian toy(examples::toy_kind::vp, 0.8);
    patch_chain<examples::toy_gaussian> chain(toy, model_sampling::discrete());
    chain.add(perp_neg{});
    CHECK_THROWS_WITH(chain.add(perp_neg{}), Catch::Contains("PerpNeg") && Catch::Contains("cfg function"));
}

} // namespace test_patches_cfg_perp_neg
