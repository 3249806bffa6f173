// Tests for patches/guider/perp_neg_guider.hpp: golden parity through guider and patch_chain
// (the model fails when asked for a prompt ComfyUI skips), the skip table, the finite limit
// where ComfyUI gives NaN, what the other patches' hooks see (three predictions, cond_scale =
// cfg, the empty prediction), and the refused cfg function (same error through both paths).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "counting_allocator.hpp"
#include "guider_golden.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "prompt_model.hpp"
#include "test_util.hpp"
#include "toy_gaussian.hpp"

namespace test_patches_guider_perp_neg_guider {

using namespace patchbay;
using test::body;
using test::error_of;
using test::guider_case;
using test::lookup_model;

namespace {

/// Records what the hooks inside the guider see.
struct seen {
    double pre_scale = -1, post_scale = -1;
    unsigned pre_count = 0;
    float pre_extra0 = -1, post_extra0 = -1, post_cond0 = -1, post_uncond0 = -1;
    bool pre_uncond_none = false, in_guider = false;
};

struct inspect_hooks {
    seen* s;
    static constexpr auto descriptor() { return describe<inspect_hooks>("InspectPre", "InspectPre", hook_kind::pre_cfg); }
    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>& gi, view<T, R> cond, view<T, R>) const {
        s->pre_scale = gi.cond_scale;
        s->pre_count = gi.prediction_count;
        s->pre_extra0 = static_cast<float>(gi.extra_denoised.data_handle()[0]);
        s->pre_uncond_none = gi.uncond_is_none;
        s->in_guider = gi.in_multi_prompt;
        kernels::transform(cond, [](auto c) { return c + T(1); }, view<const T, R>(cond)); // visible downstream
    }
};

struct inspect_post {
    seen* s;
    static constexpr auto descriptor() { return describe<inspect_post>("InspectPost", "InspectPost", hook_kind::post_cfg); }
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& gi, view<const T, R> cond, view<const T, R> uncond,
                  view<T, R>) const {
        s->post_scale = gi.cond_scale;
        s->post_extra0 = static_cast<float>(gi.extra_denoised.data_handle()[0]);
        s->post_cond0 = static_cast<float>(cond.data_handle()[0]);
        s->post_uncond0 = static_cast<float>(uncond.data_handle()[0]);
    }
};

guider_case load(const std::string& name) {
    return test::load_guider_case("PerpNegGuider", name, "positive", "negative", "empty");
}

perp_neg_guider patch_of(const guider_case& g) {
    return {g.params.at("cfg").get<double>(), g.params.at("neg_scale").get<double>()};
}

} // namespace

TEST_CASE("perp_neg_guider matches ComfyUI's golden cases and skips what ComfyUI skips", "[perp_neg_guider][golden]") {
    for (const char* name : {"default", "cfg-low", "neg-scale0-skips-negative", "neg-scale0-cfg1-skips-both",
                             "cfg1-no-skip", "cfg0-neg-scale-max", "ch16-batch3", "video-5d", "batch1-odd"}) {
        INFO(name);
        const guider_case g = load(name);
        g.check(patch_of(g));
    }
}

TEST_CASE("perp_neg_guider's skips follow math.isclose; disable_cfg1_optimization keeps every pass", "[perp_neg_guider]") {
    guidance_inputs<float, 4> gi;
    constexpr unsigned all = prompt_cond | prompt_uncond | prompt_extra;
    CHECK(perp_neg_guider{8.0, 1.0}.prompts(gi) == all);
    CHECK(perp_neg_guider{1.0, 1.0}.prompts(gi) == all); // cfg 1 alone skips nothing
    CHECK(perp_neg_guider{8.0, 0.0}.prompts(gi) == (prompt_cond | prompt_extra));
    CHECK(perp_neg_guider{8.0, 1e-12}.prompts(gi) == all); // isclose(x, 0) only for x == 0
    CHECK(perp_neg_guider{1.0, 0.0}.prompts(gi) == prompt_cond);
    CHECK(perp_neg_guider{1.0 + 1e-10, 0.0}.prompts(gi) == prompt_cond);
    CHECK(perp_neg_guider{1.0 + 1e-8, 0.0}.prompts(gi) == (prompt_cond | prompt_extra));
    gi.disable_cfg1_optimization = true;
    CHECK(perp_neg_guider{1.0, 0.0}.prompts(gi) == all);
}

TEST_CASE("perp_neg_guider: positive == empty gives the finite limit, pinned", "[perp_neg_guider][nan]") {
    const guider_case g = load("nan-positive-equals-empty");
    lookup_model model;
    const auto got = g.run_both<4>(model, patch_of(g));
    const auto& p = g.positive.prediction;
    const auto& n = g.negative.prediction;
    const auto& e = g.extra.prediction;
    const float s = static_cast<float>(patch_of(g).cfg), k = static_cast<float>(patch_of(g).neg_scale);
    for (index_t i = 0; i < got.size(); ++i) {
        REQUIRE(p[i] == e[i]);
        // projection 0: empty + cfg*(pos - neg_scale*neg), pos = 0
        CHECK(test::same_value(got[i], e[i] + s * ((p[i] - e[i]) - (n[i] - e[i] - 0.0f * (p[i] - e[i])) * k)));
    }
}

TEST_CASE("perp_neg_guider: neg_scale 0 and cfg 1 is the positive prediction, from one pass", "[perp_neg_guider]") {
    const guider_case g = load("neg-scale0-cfg1-skips-both");
    lookup_model model;
    const auto got = g.run_both<4>(model, patch_of(g));
    CHECK(test::bit_equal(got, g.positive.prediction));
    CHECK(model.calls.size() == 2); // one positive pass per front end
}

TEST_CASE("perp_neg_guider hands its hooks three predictions, cfg and the empty prediction", "[perp_neg_guider]") {
    for (bool skip_negative : {false, true}) {
        INFO(skip_negative);
        const guider_case g = load(skip_negative ? "neg-scale0-skips-negative" : "default");
        const perp_neg_guider pg = patch_of(g);
        seen s;
        lookup_model model;
        const guider<lookup_model, inspect_hooks, perp_neg_guider, inspect_post> gd(
            model, model_sampling::discrete(), inspect_hooks{&s}, pg, inspect_post{&s});
        const auto got = g.denoise<4>(gd);
        CHECK(s.pre_scale == pg.cfg);
        CHECK(s.post_scale == pg.cfg);
        CHECK(s.pre_count == 3u);
        CHECK(s.in_guider);
        CHECK(s.pre_uncond_none == skip_negative);
        CHECK(s.pre_extra0 == g.extra.prediction[0]);
        CHECK(s.post_extra0 == g.extra.prediction[0]);
        // post-cfg sees the positive as the pre-cfg hook left it (+1), and the negative (zeros if skipped)
        CHECK(s.post_cond0 == g.positive.prediction[0] + 1.0f);
        CHECK(s.post_uncond0 == (skip_negative ? 0.0f : g.negative.prediction[0]));
        // and the combination used that modified positive
        auto shifted = g.positive.prediction;
        for (index_t i = 0; i < shifted.size(); ++i) shifted[i] += 1.0f;
        tensor<float> want(g.x.shape());
        const tensor<float> zeros(g.x.shape());
        perp_neg_detail::combine<float, 4>(shifted.as<4>(), skip_negative ? zeros.as<4>() : g.negative.prediction.as<4>(),
                                           g.extra.prediction.as<4>(), pg.neg_scale, pg.cfg, want.as<4>());
        CHECK(test::same_arithmetic(got, want));
    }
}

TEST_CASE("perp_neg_guider refuses a cfg function, the same way through guider and patch_chain", "[perp_neg_guider][errors]") {
    lookup_model model;
    const auto ms = model_sampling::discrete();
    test::check_refused(rescale_cfg{}, perp_neg_guider{}, "cfg function");
    test::check_refused(perp_neg{}, perp_neg_guider{}, "cfg function");
    test::check_refused(cfg_norm{.pre_cfg = true}, perp_neg_guider{}, "cfg function"); // its slot at run time
    // pre- and post-cfg patches are welcome (ComfyUI runs them)
    patch_chain<lookup_model> chain(model, ms);
    CHECK_NOTHROW(chain.add(apg{}).add(perp_neg_guider{}).add(mahiro{}).add(cfg_norm{}));
}

TEST_CASE("perp_neg_guider rejects parameters outside ComfyUI's ranges", "[perp_neg_guider][errors]") {
    lookup_model model;
    const auto ms = model_sampling::discrete();
    for (const auto& p : {perp_neg_guider{-0.1, 1.0}, perp_neg_guider{100.5, 1.0}, perp_neg_guider{8.0, -1.0},
                          perp_neg_guider{std::numeric_limits<double>::infinity(), 1.0},
                          perp_neg_guider{8.0, std::nan("")}}) {
        CHECK_THAT(error_of([&] { guider<lookup_model, perp_neg_guider> g(model, ms, p); }),
                   Catch::Contains("PerpNegGuider"));
        patch_chain<lookup_model> chain(model, ms);
        CHECK_THAT(error_of([&] { chain.add(p); }), Catch::Contains("PerpNegGuider"));
    }
    // a run without the extra prompt: the model is asked for a pass with no prompt
    patch_chain<lookup_model> chain(model, ms);
    chain.add(perp_neg_guider{});
    const guider_case g = load("default");
    auto run = chain.begin_run(&g.positive, &g.negative);
    tensor<float> out(g.x.shape());
    CHECK_THAT(error_of([&] { chain.denoise(run, step_inputs<float, 4>{g.x.as<4>(), g.sigma.as<1>()}, out.as<4>()); }),
               Catch::Contains("prompt"));
}

TEST_CASE("PerpNeg, PerpNegGuider and DualCFGGuider allocate nothing after the first step", "[alloc]") {
    const examples::toy_gaussian model(examples::toy_kind::vp, 0.8);
    const auto mu_c = test::random_tensor({1, 4, 8, 8}, 1), mu_u = test::random_tensor({1, 4, 8, 8}, 2),
               mu_e = test::random_tensor({1, 4, 8, 8}, 3);
    const examples::toy_prompt pos(mu_c.as<4>()), neg(mu_u.as<4>()), extra(mu_e.as<4>());
    const auto x = test::random_tensor({2, 4, 8, 8}, 4);
    tensor<float> sigma({2}), out({2, 4, 8, 8});
    sigma.fill(3.f);
    const step_inputs<float, 4> st{x.as<4>(), sigma.as<1>(), 5.0};
    auto after_first = [&](const auto& g) {
        auto run = g.begin_run(&pos, &neg, &extra);
        g.denoise(run, st, out.as<4>());
        test::allocation_counter counter;
        for (int i = 0; i < 3; ++i) g.denoise(run, st, out.as<4>());
        return counter.count();
    };
    using toy = const examples::toy_gaussian;
    const auto ms = model_sampling::discrete();
    CHECK(after_first(guider<toy, perp_neg, mahiro>(model, ms, perp_neg{}, mahiro{})) == 0);
    CHECK(after_first(guider<toy, apg, perp_neg_guider, mahiro>(model, ms, apg{.momentum = 0.5}, perp_neg_guider{}, mahiro{})) == 0);
    CHECK(after_first(guider<toy, rescale_cfg, dual_cfg_guider, mahiro>(model, ms, rescale_cfg{}, dual_cfg_guider{}, mahiro{})) == 0);
    CHECK(after_first(guider<toy, dual_cfg_guider>(model, ms, dual_cfg_guider{.style = dual_cfg_style::nested})) == 0);
}

} // namespace test_patches_guider_perp_neg_guider
