// Pins where the other patches' hooks run inside the multi-prompt guiders, through the static
// guider and patch_chain alike (ComfyUI: semantics of PerpNegGuider and DualCFGGuider):
//   PerpNegGuider: pre-cfg hooks (in order, on positive/negative with the empty prediction as a
//     third, cond_scale = cfg), the Perp-Neg combination, post-cfg hooks (in order, on
//     positive/negative with the combination as denoised); never a cfg function.
//   DualCFGGuider: never a pre-cfg hook; the cfg function then the post-cfg hooks on ComfyUI's
//     pair (regular: middle/negative at cfg_cond2_negative, before the + cfg_conds term;
//     nested: positive/middle at cfg_conds, before the outer mix with the negative).
// A recording patch (one type, any of the three slots) logs what each hook saw: the prompts of
// its cond and uncond (by their first element: positive 1, negative 2, extra 4; 0 = skipped),
// cond_scale, the prediction count and the extra prediction, and the denoised value it got.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "prompt_model.hpp"
#include "test_util.hpp"

namespace test_patches_guider_hook_order {

using namespace patchbay;
using test::fixed_prompt;
using test::lookup_model;

namespace {

using event_log = std::vector<std::string>;

std::string num(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
}

/// The recording patch: sits in the slot it is given; pre-cfg adds `add` to cond, post-cfg
/// adds it to denoised, the cfg function is plain CFG.
struct recorder {
    event_log* log;
    std::string tag;
    hook_kind where = hook_kind::post_cfg;
    float add = 0.f;

    static constexpr auto descriptor() { return describe<recorder>("Recorder", "Recorder", hook_kind::post_cfg); }
    hook_kind slot() const { return where; }

    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>& gi, view<T, R> cond, view<T, R> uncond) const {
        log->push_back("pre " + tag + seen(gi, cond, uncond) + " n=" + std::to_string(gi.prediction_count) +
                       " e=" + (gi.extra_denoised.empty() ? std::string("-") : num(gi.extra_denoised.data_handle()[0])));
        const T a = static_cast<T>(add);
        kernels::transform(cond, [a](auto c) { return c + a; }, view<const T, R>(cond));
    }
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& gi, view<const T, R> cond, view<const T, R> uncond,
                      view<T, R> out) const {
        log->push_back("cfg " + tag + seen(gi, cond, uncond));
        kernels::cfg_combine<T, R>(cond, uncond, gi.cond_scale, out);
    }
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& gi, view<const T, R> cond, view<const T, R> uncond,
                  view<T, R> denoised) const {
        log->push_back("post " + tag + seen(gi, cond, uncond) + " d=" + num(denoised.data_handle()[0]) +
                       " e=" + (gi.extra_denoised.empty() ? std::string("-") : num(gi.extra_denoised.data_handle()[0])));
        const T a = static_cast<T>(add);
        kernels::transform(denoised, [a](auto d) { return d + a; }, view<const T, R>(denoised));
    }

private:
    template <class T, std::size_t R>
    static std::string seen(const guidance_inputs<T, R>& gi, std::type_identity_t<view<const T, R>> cond,
                            std::type_identity_t<view<const T, R>> uncond) {
        return " cs=" + num(gi.cond_scale) + " c=" + num(cond.data_handle()[0]) + " u=" + num(uncond.data_handle()[0]) +
               (gi.uncond_is_none ? " none" : "");
    }
};

recorder pre(event_log& l, std::string tag, float add = 0.f) { return {&l, std::move(tag), hook_kind::pre_cfg, add}; }
recorder cfg(event_log& l, std::string tag) { return {&l, std::move(tag), hook_kind::cfg_function, 0.f}; }
recorder post(event_log& l, std::string tag, float add = 0.f) { return {&l, std::move(tag), hook_kind::post_cfg, add}; }

/// Predictions whose element 0 names the prompt (value id + 0.01 * index).
fixed_prompt prompt(const std::string& name, float id, bool skipped = false) {
    tensor<float> t({1, 2, 3, 4});
    for (index_t i = 0; i < t.size(); ++i) t[i] = id + 0.01f * static_cast<float>(i) * (id == 2.f ? -1.f : 1.f);
    return {name, t, skipped};
}

struct setup {
    fixed_prompt positive, negative, extra;
    tensor<float> x{1, 2, 3, 4}, sigma{1};
    lookup_model model{};
};

/// Runs one step through the static guider and through a patch_chain of the same patches;
/// both logs and results must agree. Returns (log, denoised).
template <class... P>
std::pair<event_log, tensor<float>> run(setup& s, event_log& log, P... patches) {
    const auto ms = model_sampling::discrete();
    const step_inputs<float, 4> st{s.x.as<4>(), s.sigma.as<1>()};
    s.model.calls.clear();
    const guider<lookup_model, P...> g(s.model, ms, patches...);
    auto rg = g.begin_run(&s.positive, &s.negative, &s.extra);
    tensor<float> a(s.x.shape());
    log.clear();
    g.denoise(rg, st, a.as<4>());
    const event_log via_guider = log;

    patch_chain<lookup_model> chain(s.model, ms);
    (chain.add(patches), ...);
    auto rc = chain.begin_run(&s.positive, &s.negative, &s.extra);
    tensor<float> b(s.x.shape());
    log.clear();
    chain.denoise(rc, st, b.as<4>());
    CHECK(log == via_guider);
    CHECK(test::bit_equal(a, b));
    return {via_guider, a};
}

} // namespace

TEST_CASE("hook order inside PerpNegGuider: pre-cfg, the combination, post-cfg", "[hook_order][perp_neg_guider]") {
    event_log log;
    setup s{prompt("positive", 1.f), prompt("negative", 2.f), prompt("empty", 4.f)};
    const perp_neg_guider g{3.0, 0.5};

    // the combination the post-cfg hooks must see: Perp-Neg of the positive as the pre-cfg hooks left it
    tensor<float> shifted = s.positive.prediction;
    for (index_t i = 0; i < shifted.size(); ++i) shifted[i] += 10.f;
    tensor<float> combo(s.x.shape());
    perp_neg_detail::combine<float, 4>(shifted.as<4>(), s.negative.prediction.as<4>(), s.extra.prediction.as<4>(),
                                       0.5, 3.0, combo.as<4>());
    const std::string d = num(combo[0]);

    const event_log want{"pre A cs=3 c=1 u=2 n=3 e=4", "pre B cs=3 c=11 u=2 n=3 e=4",
                         "post C cs=3 c=11 u=2 d=" + d + " e=4", "post D cs=3 c=11 u=2 d=" + num(combo[0] + 100.f) + " e=4"};
    auto [got, out] = run(s, log, pre(log, "A", 10.f), pre(log, "B"), g, post(log, "C", 100.f), post(log, "D"));
    CHECK(got == want);
    CHECK(out[0] == combo[0] + 100.f);
    // where the guider sits in the patch list does not matter (ComfyUI's guider is not a patch)
    CHECK(run(s, log, g, pre(log, "A", 10.f), post(log, "C", 100.f), pre(log, "B"), post(log, "D")).first == want);

    // neg_scale 0: the negative pass is skipped and the hooks get zeros, flagged
    auto [skip, out2] = run(s, log, pre(log, "A"), perp_neg_guider{3.0, 0.0}, post(log, "C"));
    CHECK(skip.size() == 2);
    CHECK(skip[0] == "pre A cs=3 c=1 u=0 none n=3 e=4");
    CHECK(s.model.count("negative") == 0);
    CHECK(out2[0] == 4.f + 3.f * (1.f - 4.f));

    // a cfg function is refused, never skipped
    CHECK_THROWS_WITH((guider<lookup_model, recorder, perp_neg_guider>(s.model, model_sampling::discrete(),
                                                                       cfg(log, "X"), g)),
                      Catch::Contains("PerpNegGuider") && Catch::Contains("cfg function"));
    patch_chain<lookup_model> chain(s.model, model_sampling::discrete());
    chain.add(g);
    CHECK_THROWS_WITH(chain.add(cfg(log, "X")), Catch::Contains("PerpNegGuider") && Catch::Contains("cfg function"));
}

TEST_CASE("hook order inside DualCFGGuider: cfg function, post-cfg, then the outer term", "[hook_order][dual_cfg_guider]") {
    event_log log;
    setup s{prompt("positive", 1.f), prompt("negative", 2.f), prompt("middle", 4.f)};

    SECTION("regular: on (middle, negative) at cfg_cond2_negative, + cfg_conds*(positive - middle) after") {
        const dual_cfg_guider g{2.0, 3.0, dual_cfg_style::regular};
        // cfg: 2 + (4 - 2)*3 = 8; D saw 8 and adds 100; C sees 108; final 108 + (1 - 4)*2
        auto [got, out] = run(s, log, cfg(log, "B"), g, post(log, "D", 100.f), post(log, "C"));
        CHECK(got == event_log{"cfg B cs=3 c=4 u=2", "post D cs=3 c=4 u=2 d=8 e=-", "post C cs=3 c=4 u=2 d=108 e=-"});
        CHECK(out[0] == 102.f);
        // without a cfg function the default combine stands in its place
        auto [got2, out2] = run(s, log, g, post(log, "C"));
        CHECK(got2 == event_log{"post C cs=3 c=4 u=2 d=8 e=-"});
        CHECK(out2[0] == 2.f);
    }
    SECTION("regular with both scales 1: the hooks see the skipped prompts as zeros") {
        auto [got, out] = run(s, log, cfg(log, "B"), dual_cfg_guider{1.0, 1.0}, post(log, "C"));
        CHECK(got == event_log{"cfg B cs=1 c=0 u=0 none", "post C cs=1 c=0 u=0 none d=0 e=-"});
        CHECK(out[0] == 1.f);
        CHECK(s.model.count("middle") == 0);
        CHECK(s.model.count("negative") == 0);
    }
    SECTION("nested: on (positive, middle) at cfg_conds, then negative + cfg_cond2_negative*(t - negative)") {
        const dual_cfg_guider g{2.0, 3.0, dual_cfg_style::nested};
        // cfg: 4 + (1 - 4)*2 = -2; post D adds 100 -> 98; final 2 + 3*(98 - 2) = 290
        auto [got, out] = run(s, log, post(log, "C"), cfg(log, "B"), g, post(log, "D", 100.f));
        CHECK(got == event_log{"cfg B cs=2 c=1 u=4", "post C cs=2 c=1 u=4 d=-2 e=-", "post D cs=2 c=1 u=4 d=-2 e=-"});
        CHECK(out[0] == 290.f);
    }
    SECTION("a pre-cfg hook is refused, never skipped") {
        CHECK_THROWS_WITH((guider<lookup_model, recorder, dual_cfg_guider>(s.model, model_sampling::discrete(),
                                                                           pre(log, "A"), dual_cfg_guider{})),
                          Catch::Contains("DualCFGGuider") && Catch::Contains("pre-cfg"));
        patch_chain<lookup_model> chain(s.model, model_sampling::discrete());
        chain.add(dual_cfg_guider{});
        CHECK_THROWS_WITH(chain.add(pre(log, "A")), Catch::Contains("DualCFGGuider") && Catch::Contains("pre-cfg"));
    }
}

} // namespace test_patches_guider_hook_order
