// Tests for patches/guider/dual_cfg_guider.hpp: golden parity through guider and patch_chain
// (the model fails when asked for a prompt ComfyUI skips), the skip table, the fused pass equal
// to the hooked path, the cfg function and post-cfg hooks on the pair ComfyUI hands them (and
// their re-evaluations routed to that pair's prompts), and the refused pre-cfg hook.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "guider_golden.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "prompt_model.hpp"
#include "test_util.hpp"

namespace test_patches_guider_dual_cfg_guider {

using namespace patchbay;
using test::body;
using test::error_of;
using test::guider_case;
using test::lookup_model;

namespace {

// cond1 is the run's positive prompt, cond2 (the middle) its extra prompt
guider_case load(const std::string& name) {
    return test::load_guider_case("DualCFGGuider", name, "positive", "negative", "middle");
}

dual_cfg_guider patch_of(const guider_case& g) {
    return {g.params.at("cfg_conds").get<double>(), g.params.at("cfg_cond2_negative").get<double>(),
            g.params.at("style").get<std::string>() == "nested" ? dual_cfg_style::nested : dual_cfg_style::regular};
}

/// A post-cfg patch that evaluates the model again on its cond and uncond prompts (PAG's and
/// SAG's shape) and records the prompt names the model saw and the scale it was given.
struct reevaluating_post {
    std::vector<std::string>* log;
    static constexpr auto descriptor() {
        return describe<reevaluating_post>("ReevaluatingPost", "ReevaluatingPost", hook_kind::post_cfg);
    }
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& gi, view<const T, R>, view<const T, R>, view<T, R> denoised,
                  model_access<T, R>& model) const {
        tensor<T> scratch(std::vector<index_t>(denoised.extents().begin(), denoised.extents().end()));
        model.evaluate(pass_kind::cond, gi.x, scratch.template as<R>());
        model.evaluate(pass_kind::uncond, gi.x, scratch.template as<R>());
        log->push_back("scale " + std::to_string(gi.cond_scale));
    }
};

} // namespace

TEST_CASE("dual_cfg_guider matches ComfyUI's golden cases and skips what ComfyUI skips", "[dual_cfg_guider][golden]") {
    for (const char* name : {"regular-default", "regular-mixed", "regular-both-1-skips-two", "regular-cfg2-1-skips-negative",
                             "regular-zero", "regular-max", "regular-video-5d", "regular-ch16", "nested-default",
                             "nested-mixed", "nested-both-1-no-skip", "nested-zero", "nested-max", "nested-odd-batch1"}) {
        INFO(name);
        const guider_case g = load(name);
        g.check(patch_of(g));
    }
}

TEST_CASE("dual_cfg_guider's skips: regular only, math.isclose, disable_cfg1_optimization", "[dual_cfg_guider]") {
    guidance_inputs<float, 4> gi;
    constexpr unsigned all = prompt_cond | prompt_uncond | prompt_extra;
    using S = dual_cfg_style;
    CHECK(dual_cfg_guider{8, 8, S::regular}.prompts(gi) == all);
    CHECK(dual_cfg_guider{8, 1, S::regular}.prompts(gi) == (prompt_cond | prompt_extra));
    CHECK(dual_cfg_guider{1, 8, S::regular}.prompts(gi) == all); // cfg_conds 1 alone skips nothing
    CHECK(dual_cfg_guider{1, 1, S::regular}.prompts(gi) == prompt_cond);
    CHECK(dual_cfg_guider{1, 1 + 1e-10, S::regular}.prompts(gi) == prompt_cond);
    CHECK(dual_cfg_guider{1, 1 + 1e-8, S::regular}.prompts(gi) == all);
    CHECK(dual_cfg_guider{1, 1, S::nested}.prompts(gi) == all); // nested never skips
    gi.disable_cfg1_optimization = true;
    CHECK(dual_cfg_guider{1, 1, S::regular}.prompts(gi) == all);
}

TEST_CASE("dual_cfg_guider: the fused pass equals the hooked path bit for bit", "[dual_cfg_guider]") {
    // A post-cfg patch that changes nothing forces the unfused path.
    struct noop_post {
        static constexpr auto descriptor() { return describe<noop_post>("NoopPost", "NoopPost", hook_kind::post_cfg); }
        void post_cfg(no_state&, const guidance_inputs<float, 4>&, view<const float, 4>, view<const float, 4>,
                      view<float, 4>) const {}
    };
    for (const char* name : {"regular-mixed", "nested-mixed", "regular-both-1-skips-two"}) {
        INFO(name);
        const guider_case g = load(name);
        lookup_model model;
        const auto ms = model_sampling::discrete();
        const auto fused = g.denoise<4>(guider<lookup_model, dual_cfg_guider>(model, ms, patch_of(g)));
        const auto hooked = g.denoise<4>(guider<lookup_model, dual_cfg_guider, noop_post>(model, ms, patch_of(g), noop_post{}));
        CHECK(test::bit_equal(fused, hooked));
    }
}

TEST_CASE("dual_cfg_guider runs the cfg function and post-cfg hooks on ComfyUI's pair", "[dual_cfg_guider]") {
    for (const char* name : {"regular-mixed", "nested-mixed"}) {
        INFO(name);
        const guider_case g = load(name);
        const dual_cfg_guider dg = patch_of(g);
        const bool regular = dg.style == dual_cfg_style::regular;
        lookup_model model;
        std::vector<std::string> log;
        const guider<lookup_model, rescale_cfg, dual_cfg_guider, reevaluating_post> gd(
            model, model_sampling::discrete(), rescale_cfg{0.5}, dg, reevaluating_post{&log});
        auto run = gd.begin_run(&g.positive, &g.negative, &g.extra);
        tensor<float> out(g.x.shape());
        model.calls.clear();
        gd.denoise(run, step_inputs<float, 4>{g.x.as<4>(), g.sigma.as<1>()}, out.as<4>());

        // the passes, then the hook's two re-evaluations of its pair's prompts
        REQUIRE(model.calls.size() == 5);
        CHECK(model.calls[3] == std::pair{pass_kind::reevaluation, std::string(regular ? "middle" : "positive")});
        CHECK(model.calls[4] == std::pair{pass_kind::reevaluation, std::string(regular ? "negative" : "middle")});
        const double scale = regular ? dg.cfg_cond2_negative : dg.cfg_conds;
        CHECK(log == std::vector<std::string>{"scale " + std::to_string(scale)});

        // RescaleCFG on the pair with that scale, then the outer mix
        const auto& c = regular ? g.extra.prediction : g.positive.prediction;
        const auto& u = regular ? g.negative.prediction : g.extra.prediction;
        tensor<float> t(g.x.shape());
        const guidance_inputs<float, 4> in{g.x.as<4>(), g.sigma.as<1>(), scale};
        no_state st;
        rescale_cfg{0.5}.cfg_function<float, 4>(st, in, c.as<4>(), u.as<4>(), t.as<4>());
        tensor<float> want(g.x.shape());
        const float s1 = static_cast<float>(dg.cfg_conds), s2 = static_cast<float>(dg.cfg_cond2_negative);
        for (index_t i = 0; i < want.size(); ++i)
            want[i] = regular ? t[i] + (g.positive.prediction[i] - g.extra.prediction[i]) * s1
                              : g.negative.prediction[i] + s2 * (t[i] - g.negative.prediction[i]);
        CHECK(test::same_arithmetic(out, want));
    }
}

TEST_CASE("dual_cfg_guider refuses a pre-cfg patch, the same way through guider and patch_chain", "[dual_cfg_guider][errors]") {
    lookup_model model;
    const auto ms = model_sampling::discrete();
    test::check_refused(apg{}, dual_cfg_guider{}, "pre-cfg");
    test::check_refused(tcfg{}, dual_cfg_guider{.style = dual_cfg_style::nested}, "pre-cfg");
    // cfg functions and post-cfg patches are welcome (ComfyUI's cfg_function runs them)
    patch_chain<lookup_model> ok(model, ms);
    CHECK_NOTHROW(ok.add(rescale_cfg{}).add(mahiro{}).add(dual_cfg_guider{}));
}

TEST_CASE("dual_cfg_guider: PerpNeg beside it is refused when built (the extra prompt is the middle one)",
          "[dual_cfg_guider][errors]") {
    test::check_refused(perp_neg{}, dual_cfg_guider{}, "extra prompt");
    test::check_refused(perp_neg{}, dual_cfg_guider{.style = dual_cfg_style::nested}, "extra prompt");
}

TEST_CASE("dual_cfg_guider rejects parameters outside ComfyUI's ranges and unknown styles", "[dual_cfg_guider][errors]") {
    lookup_model model;
    const auto ms = model_sampling::discrete();
    for (const auto& p : {dual_cfg_guider{150, 8}, dual_cfg_guider{8, -1}, dual_cfg_guider{std::nan(""), 8},
                          dual_cfg_guider{8, 8, static_cast<dual_cfg_style>(2)}}) {
        CHECK_THAT(error_of([&] { guider<lookup_model, dual_cfg_guider> g(model, ms, p); }),
                   Catch::Contains("DualCFGGuider"));
        patch_chain<lookup_model> chain(model, ms);
        CHECK_THAT(error_of([&] { chain.add(p); }), Catch::Contains("DualCFGGuider"));
    }
    CHECK(to_string(dual_cfg_guider{2, 3, dual_cfg_style::nested}) ==
          "DualCFGGuider(cond1=None, cond2=None, negative=None, cfg_conds=2, cfg_cond2_negative=3, style=nested)");
}

} // namespace test_patches_guider_dual_cfg_guider
