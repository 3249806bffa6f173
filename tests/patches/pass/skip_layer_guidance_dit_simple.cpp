// Tests for patches/pass/skip_layer_guidance_dit_simple.hpp: the negative prompt's pass skips
// the listed blocks inside the window (exact edges on the first item's sigma) and nothing
// else changes (no extra pass, cond untouched, plain CFG of the two), cond_scale 1 keeps one
// normal pass, empty lists do nothing, batched = per-prompt bit for bit on the toy DiT, other
// patches still run, and a model that cannot skip blocks is refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>

#include "../dit_support.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/pass/skip_layer_guidance_dit_simple.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "test_util.hpp"

namespace test_patches_pass_skip_layer_guidance_dit_simple {

using namespace patchbay;
using examples::toy_dit;

TEST_CASE("slg simple: descriptor, defaults, parameter checks", "[slg_simple]") {
    const auto d = with_defaults<skip_layer_guidance_dit_simple>();
    const skip_layer_guidance_dit_simple m{};
    CHECK(d.double_layers == m.double_layers);
    CHECK(d.single_layers == m.single_layers);
    CHECK(d.start_percent == 0.0);
    CHECK(d.end_percent == 1.0);
    CHECK(skip_layer_guidance_dit_simple::descriptor().slot == hook_kind::pass_composition);
    CHECK(test::error_of([] { validate(skip_layer_guidance_dit_simple{.end_percent = std::nan("")}); }) ==
          "SkipLayerGuidanceDiTSimple: parameter 'end_percent' must be a finite value in [0, 1], got nan");
    const auto l = m.skipped();
    CHECK(l.double_blocks.count == 3);
    CHECK(l.single_blocks.count == 3);
}

TEST_CASE("slg simple: inside the window the uncond pass skips the blocks; cond and the combine are unchanged",
          "[slg_simple][window]") {
    const auto ms = model_sampling::discrete("eps");
    const skip_layer_guidance_dit_simple p{"3", "", 0.25, 0.55};
    const auto s_start = static_cast<float>(ms.percent_to_sigma(0.25)), s_end = static_cast<float>(ms.percent_to_sigma(0.55));
    test::skip_affine_model model;
    const guider<test::skip_affine_model, skip_layer_guidance_dit_simple> g(model, ms, p);
    const test::skip_affine_model::prompt pos{0.5f, 0.1f}, neg{0.8f, -0.2f};
    auto run = g.begin_run(&pos, &neg);
    const auto x = test::random_tensor({3, 2, 3, 3}, 5);
    const float inf = std::numeric_limits<float>::infinity();
    struct probe {
        float sigma0, rest;
        bool inside;
    };
    for (const auto& pr : {probe{s_start, s_start, true}, probe{std::nextafter(s_start, inf), s_start, false},
                           probe{s_end, s_end, true}, probe{std::nextafter(s_end, 0.f), s_end, false},
                           probe{0.5f * (s_start + s_end), 50.f, true}, probe{50.f, 0.5f * (s_start + s_end), false}}) {
        model.calls = model.skipping = 0;
        const auto out = test::denoise_once(g, run, x, pr.sigma0, 4.0, pr.rest);
        INFO("sigma[0] = " << pr.sigma0);
        CHECK(model.calls == 2); // no extra pass
        CHECK(model.skipping == (pr.inside ? 1 : 0));
        for (index_t i = 0; i < out.size(); ++i) {
            const float xv = x[i], cond = xv * 0.5f + 0.1f;
            const float uncond = pr.inside ? xv * 0.4f + 0.2f : xv * 0.8f - 0.2f;
            REQUIRE(out[i] == uncond + (cond - uncond) * 4.0f);
        }
    }
    // cond_scale 1: the uncond pass is skipped, one normal pass (ComfyUI: uncond is None)
    model.calls = model.skipping = 0;
    const auto one = test::denoise_once(g, run, x, s_start, 1.0);
    CHECK(model.calls == 1);
    CHECK(model.skipping == 0);
    for (index_t i = 0; i < one.size(); ++i) REQUIRE(one[i] == x[i] * 0.5f + 0.1f);
}

TEST_CASE("slg simple: empty lists change nothing", "[slg_simple]") {
    const auto ms = model_sampling::sd3(3.0);
    test::skip_affine_model model;
    const guider<test::skip_affine_model, skip_layer_guidance_dit_simple> g(model, ms, skip_layer_guidance_dit_simple{"", " ; "});
    const guider<test::skip_affine_model> plain(model, ms);
    const test::skip_affine_model::prompt pos{0.5f, 0.1f}, neg{0.8f, -0.2f};
    auto r1 = g.begin_run(&pos, &neg);
    auto r2 = plain.begin_run(&pos, &neg);
    const auto x = test::random_tensor({1, 2, 4, 4}, 6);
    CHECK(test::bit_equal(test::denoise_once(g, r1, x, 0.7f, 3.0), test::denoise_once(plain, r2, x, 0.7f, 3.0)));
    CHECK(model.skipping == 0);
}

TEST_CASE("slg simple: on the toy DiT the negative prediction is the skip-layer model's; batched = per prompt",
          "[slg_simple][batched]") {
    toy_dit a(test::small_dit()), b(test::small_dit());
    test::per_prompt_dit single{&b};
    const auto ms = model_sampling::sd3(3.0);
    const skip_layer_guidance_dit_simple p{"0, 2", "3", 0.0, 0.5};
    const guider<toy_dit, skip_layer_guidance_dit_simple> g1(a, ms, p);
    const guider<test::per_prompt_dit, skip_layer_guidance_dit_simple> g2(single, ms, p);
    const auto pos = a.prompt(3), neg = a.negative_prompt();
    auto r1 = g1.begin_run(&pos, &neg);
    auto r2 = g2.begin_run(&pos, &neg);
    const auto x = test::dit_latent(a, 2, 7);
    call_overrides<float> none, skips;
    p.skipped().request(skips);
    for (float s : {1.0f, 0.8f, 0.3f}) {
        const auto o1 = test::denoise_once(g1, r1, x, s, 4.5), o2 = test::denoise_once(g2, r2, x, s, 4.5);
        CHECK(test::bit_equal(o1, o2));
        const bool inside = double(s) >= ms.percent_to_sigma(0.5);
        const auto cond = test::dit_predict(a, x, s, pos, none);
        const auto uncond = test::dit_predict(a, x, s, neg, inside ? skips : none, pass_kind::uncond);
        CHECK(test::bit_equal(o1, test::cfg_of(cond, uncond, 4.5)));
    }
    CHECK(b.counts.skipping == 2); // the uncond passes of the two steps inside the window
    CHECK(b.counts.reevaluation == 0);
}

TEST_CASE("slg simple: other patches still run, each pass with its own skips", "[slg_simple]") {
    const auto ms = model_sampling::discrete("eps");
    test::skip_affine_model model;
    // the simple form on the uncond pass and the post-cfg form's re-run on cond: three calls,
    // two of them skipping
    const guider<test::skip_affine_model, skip_layer_guidance_dit_simple, skip_layer_guidance_dit> g(
        model, ms, skip_layer_guidance_dit_simple{"1", ""}, skip_layer_guidance_dit{"2", "", 2.0, 0.0, 1.0});
    const test::skip_affine_model::prompt pos{0.5f, 0.1f}, neg{0.8f, -0.2f};
    auto run = g.begin_run(&pos, &neg);
    const auto x = test::random_tensor({1, 1, 2, 2}, 8);
    const auto out = test::denoise_once(g, run, x, 3.0f, 2.0);
    CHECK(model.calls == 3);
    CHECK(model.skipping == 2);
    for (index_t i = 0; i < out.size(); ++i) {
        const float xv = x[i], cond = xv * 0.5f + 0.1f, uncond = xv * 0.4f + 0.2f, rerun = xv * 0.25f - 0.1f;
        REQUIRE(out[i] == (uncond + (cond - uncond) * 2.0f) + (cond - rerun) * 2.0f);
    }
}

TEST_CASE("slg simple: refused on a model that cannot skip blocks; only one pass composition", "[slg_simple]") {
    test::plain_model model;
    const auto ms = model_sampling::discrete("eps");
    patch_chain<test::plain_model> chain(model, ms);
    chain.add(skip_layer_guidance_dit_simple{});
    CHECK(test::error_of([&] { (void)chain.begin_run(); }) ==
          "patch_chain::begin_run: patch 'SkipLayerGuidanceDiTSimple' needs block skipping, which the model does not "
          "support");
    CHECK(test::error_of([&] { chain.add(skip_layer_guidance_dit_simple{}); }).find("both occupy the pass composition slot") !=
          std::string::npos);
}

} // namespace test_patches_pass_skip_layer_guidance_dit_simple
