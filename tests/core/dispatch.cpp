// Tests of the one dispatcher (core/dispatch.hpp) through both front ends: the same patch set
// through guider and patch_chain gives the same results and the same errors (refused before
// anything was modified), and every hook slot the coming patches need runs where it should.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/post_cfg/sag.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "patchbay/sampling/schedules.hpp"
#include "test_patches.hpp"
#include "../../examples/toy_unet.hpp"

namespace test_core_dispatch {

using namespace patchbay;
using namespace patchbay::test;

namespace {

std::string error_of(const auto& f) {
    try {
        f();
    } catch (const error& e) {
        return e.what();
    }
    return "";
}

/// The message without the entry point that raised it ("guider: ..." / "patch_chain::add: ...").
std::string body(const std::string& m) {
    const auto at = m.find(": ");
    return at == std::string::npos ? m : m.substr(at + 2);
}

/// A multi-prompt test guider: out = extra + s*(cond - uncond), running the other patches'
/// pre- and post-cfg hooks around it; it never runs a cfg function.
struct three_prompt_guider {
    double scale = 2.0;
    static constexpr auto descriptor() {
        return describe<three_prompt_guider>("ThreePromptGuider", "ThreePromptGuider", hook_kind::multi_prompt,
                                             floating("scale", &three_prompt_guider::scale, 2.0, 0.0, 100.0));
    }
    static constexpr unsigned refuses_slots = detail::slot_bit(hook_kind::cfg_function);
    template <class T, std::size_t R>
    unsigned prompts(const guidance_inputs<T, R>&) const {
        return prompt_cond | prompt_uncond | prompt_extra;
    }
    template <class T, std::size_t R>
    void combine_prompts(no_state&, const guidance_inputs<T, R>& gi, const prompt_predictions<T, R>& p,
                         view<T, R> out, stage_runner<T, R>& stages) const {
        stages.pre_cfg(gi, p.cond, p.uncond);
        const T s = static_cast<T>(scale);
        kernels::transform(out, [s](auto c, auto u, auto e) { return e + (c - u) * s; }, view<const T, R>(p.cond),
                           view<const T, R>(p.uncond), view<const T, R>(p.extra));
        stages.post_cfg(gi, p.cond, p.uncond, out);
    }
};

/// A cfg function that evaluates the model once more on the run's third prompt (Perp-Neg's shape).
struct extra_pass_cfg {
    static constexpr auto descriptor() {
        return describe<extra_pass_cfg>("ExtraPassCFG", "ExtraPassCFG", hook_kind::cfg_function);
    }
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& gi, view<const T, R> c, view<const T, R> u,
                      view<T, R> out, model_access<T, R>& model) const {
        model.evaluate(pass_kind::extra, gi.x, out); // out = D(x | extra prompt)
        kernels::transform(out, [](auto e, auto cv, auto uv) { return e + (cv - uv); }, view<const T, R>(out), c, u);
    }
};

/// A model-sampling patch: replaces the sampling by SD3's with a shift.
struct shift_sampling {
    double shift = 3.0;
    static constexpr auto descriptor() {
        return describe<shift_sampling>("ShiftSampling", "ShiftSampling", hook_kind::model_sampling,
                                        floating("shift", &shift_sampling::shift, 3.0, 0.0, 100.0));
    }
    model_sampling apply_sampling(const model_sampling&) const { return model_sampling::sd3(shift); }
};

/// Network hooks of the coming in-network patches: a pass-composition patch asks the uncond
/// pass to skip double block 1; a model-hooks patch doubles h in input block 0 (a new view of
/// twice the width from the run's scratch) and scales attention outputs.
struct skip_uncond_block {
    static constexpr auto descriptor() {
        return describe<skip_uncond_block>("SkipUncondBlock", "SkipUncondBlock", hook_kind::pass_composition);
    }
    template <class T, std::size_t R>
    void compose_passes(no_state&, const guidance_inputs<T, R>&, pass_plan<T>& plan) const {
        plan.uncond.skip_block({dit_block_site::kind::double_block, 1});
    }
};

struct network_hooks {
    struct state_type {
        tensor<float> wide; // the resized h (a real patch would take it from the run's arena)
    };
    static constexpr auto descriptor() {
        return describe<network_hooks>("NetworkHooks", "NetworkHooks", hook_kind::model_hooks);
    }
    template <class T>
    void on_model_call(state_type& st, pass_kind, call_overrides<T>& ov) const {
        if constexpr (std::is_same_v<T, float>) {
            ov.add_input_block(typename call_overrides<T>::input_block_fn(
                [](void* ctx, const block_site&, view<T, 4> h) -> view<T, 4> {
                    auto& s = *static_cast<state_type*>(ctx);
                    s.wide = tensor<float>({h.extent(0), h.extent(1), h.extent(2), 2 * h.extent(3)});
                    view<T, 4> w = s.wide.as<4>();
                    for (index_t b = 0; b < h.extent(0); ++b)
                        for (index_t c = 0; c < h.extent(1); ++c)
                            for (index_t y = 0; y < h.extent(2); ++y)
                                for (index_t x = 0; x < w.extent(3); ++x) w(b, c, y, x) = h(b, c, y, x / 2);
                    return w;
                },
                &st));
            ov.add_attention_output(attention_site{unet_stage::middle, 0, -1},
                                    typename call_overrides<T>::attention_output_fn(
                                        [](void*, const attention_site&, view<T, 3> out, std::span<const pass_kind>) {
                                            kernels::transform(out, [](auto v) { return v * T(2); },
                                                               view<const T, 3>(out));
                                        },
                                        nullptr));
        }
    }
};

/// A model that uses every network hook: records skip requests per pass, the width of h after
/// the input-block hooks, and adds the (hooked) attention output to element 0.
struct network_model {
    using conditioning_type = toy_prompt;
    static constexpr bool calls_input_block_hooks = true;
    static constexpr bool calls_attention_output_hooks = true;
    static constexpr bool skips_blocks = true;
    toy_gaussian toy{toy_kind::vp, 0.8};
    std::vector<std::string> seen;
    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& c, view<T, R> out) {
        toy.predict(c, out);
        if constexpr (R == 4) {
            const call_overrides<T>& ov = *c.overrides;
            const char* pass = c.pass == pass_kind::cond ? "cond" : c.pass == pass_kind::uncond ? "uncond" : "other";
            if (ov.skips({dit_block_site::kind::double_block, 1})) seen.push_back(std::string(pass) + ":skip1");
            tensor<T> h = tensor<T>::copy_of(out);
            const view<T, 4> h2 = ov.apply_input_block(block_site{unet_stage::input, 0, out.extent(1)}, h.template as<4>());
            seen.push_back(std::string(pass) + ":w" + std::to_string(h2.extent(3)));
            tensor<T> att({1, 2, 2});
            att.fill(T(0.25));
            ov.apply_attention_output(attention_site{unet_stage::middle, 0, 0}, att.template as<3>(), {});
            out.data_handle()[0] += att[0];
        }
    }
};

/// The hooked model, counting every call.
struct counted_model : hooked_model {
    int calls = 0;
    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& c, view<T, R> out) {
        ++calls;
        hooked_model::predict(c, out);
    }
};

/// Runs a chain and a guider over the same patches for a few steps; returns both outputs.
template <class Model, class... P>
std::pair<tensor<float>, tensor<float>> both_paths(Model& mg, Model& mc, const scene& sc, double cond_scale, P... p) {
    const guider<Model, P...> g(mg, sc.ms, p...);
    patch_chain<Model> chain(mc, sc.ms);
    (chain.add(p), ...);
    auto rg = g.begin_run(&sc.pos, &sc.neg, &sc.pos);
    auto rc = chain.begin_run(&sc.pos, &sc.neg, &sc.pos);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    for (int i = 0; i < 3; ++i) { // several steps: per-run state (APG's momentum) carries over
        g.denoise(rg, sc.step(cond_scale), a.as<4>());
        chain.denoise(rc, sc.step(cond_scale), b.as<4>());
    }
    return {std::move(a), std::move(b)};
}

} // namespace

TEST_CASE("guider and chain give bit-identical results for the same real patches", "[dispatch]") {
    scene sc;
    SECTION("cfg-stage patches with per-run state") {
        counting_model m1, m2;
        const auto [a, b] = both_paths(m1, m2, sc, 5.0, apg{.eta = 0.5, .norm_threshold = 2.0, .momentum = -0.5},
                                       tcfg{}, rescale_cfg{.multiplier = 0.6}, cfg_norm{.strength = 0.8}, mahiro{});
        CHECK(test::bit_equal(a, b));
        CHECK(m1.cond_calls == m2.cond_calls);
    }
    SECTION("network patches: FreeU and PAG on a hooked model") {
        hooked_model m1, m2;
        const auto [a, b] = both_paths(m1, m2, sc, 4.0, free_u{.model_channels = 1},
                                       perturbed_attention_guidance{.scale = 2.0});
        CHECK(test::bit_equal(a, b));
    }
    SECTION("network patches: FreeU, SAG and PAG sampling the toy UNet") {
        examples::toy_unet m1, m2;
        const auto c = m1.config();
        const auto ms = model_sampling::discrete("eps");
        const free_u fu{.model_channels = c.model_channels};
        const self_attention_guidance sag{.scale = 0.8};
        const perturbed_attention_guidance pag{.scale = 1.5};
        const guider<examples::toy_unet, free_u, self_attention_guidance, perturbed_attention_guidance> g(m1, ms, fu, sag,
                                                                                                        pag);
        patch_chain<examples::toy_unet> chain(m2, ms);
        chain.add(fu).add(sag).add(pag);
        const auto pos = m1.prompt(1), neg = m1.negative_prompt();
        auto rg = g.begin_run(&pos, &neg);
        auto rc = chain.begin_run(&pos, &neg);
        const auto noise = test::random_tensor({1, c.channels, c.height, c.width}, 3);
        const auto sigmas = karras_schedule(4, ms.sigma_min(), ms.sigma_max());
        tensor<float> a(noise.shape()), b(noise.shape());
        sample_euler(g, rg, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 5.0}, a.as<4>());
        sample_euler(chain, rc, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 5.0}, b.as<4>());
        CHECK(test::bit_equal(a, b));
        CHECK(m1.counts.total() == m2.counts.total());
        CHECK(m1.counts.attention_reads > 0);
    }
    SECTION("CFGNorm in the cfg-function slot (a run-time slot)") {
        counting_model m1, m2;
        const auto [a, b] = both_paths(m1, m2, sc, 3.0, cfg_norm{.strength = 0.5, .pre_cfg = true});
        CHECK(test::bit_equal(a, b));
    }
}

TEST_CASE("guider and chain refuse the same patch sets with the same message", "[dispatch]") {
    scene sc;
    counting_model model;
    SECTION("a parameter outside ComfyUI's range, named by class_type") {
        const std::string eg = error_of([&] { (void)guider<counting_model, apg>(model, sc.ms, apg{.eta = 11.0}); });
        const std::string ec = error_of([&] { patch_chain<counting_model>(model, sc.ms).add(apg{.eta = 11.0}); });
        CHECK(body(eg) == body(ec));
        CHECK(eg.find("APG: parameter 'eta' must be a finite value in [-10, 10], got 11") != std::string::npos);
    }
    SECTION("two cfg functions, one of them a run-time slot") {
        const std::string eg = error_of([&] {
            (void)guider<counting_model, rescale_cfg, cfg_norm>(model, sc.ms, rescale_cfg{}, cfg_norm{.pre_cfg = true});
        });
        patch_chain<counting_model> chain(model, sc.ms);
        chain.add(rescale_cfg{});
        const std::string ec = error_of([&] { chain.add(cfg_norm{.pre_cfg = true}); });
        REQUIRE(!eg.empty());
        CHECK(body(eg) == body(ec));
        CHECK(eg.find("'CFGNorm' and 'RescaleCFG' both occupy the cfg function slot") != std::string::npos);
        CHECK(chain.size() == 1); // the refused patch was not added
    }
    SECTION("a multi-prompt guider refuses a cfg function it would never call") {
        const std::string eg = error_of([&] {
            (void)guider<counting_model, three_prompt_guider, rescale_cfg>(model, sc.ms, three_prompt_guider{},
                                                                           rescale_cfg{});
        });
        patch_chain<counting_model> chain(model, sc.ms);
        chain.add(three_prompt_guider{});
        const std::string ec = error_of([&] { chain.add(rescale_cfg{}); });
        REQUIRE(!eg.empty());
        CHECK(body(eg) == body(ec));
        CHECK(eg.find("'ThreePromptGuider' never runs cfg function hooks, so 'RescaleCFG' would be silently skipped") !=
              std::string::npos);
    }
    SECTION("a capability the model lacks, found when the run begins") {
        runtime_caps_model rm; // answers supports() at run time: no block hooks
        const guider<runtime_caps_model, free_u> g(rm, sc.ms, free_u{});
        patch_chain<runtime_caps_model> chain(rm, sc.ms);
        chain.add(free_u{});
        const std::string eg = error_of([&] { (void)g.begin_run(&sc.pos, &sc.neg); });
        const std::string ec = error_of([&] { (void)chain.begin_run(&sc.pos, &sc.neg); });
        REQUIRE(!eg.empty());
        CHECK(body(eg) == body(ec));
        CHECK(eg.find("'FreeU' needs block hooks") != std::string::npos);
    }
    SECTION("bad step input") {
        const guider<counting_model, mahiro> g(model, sc.ms, mahiro{});
        patch_chain<counting_model> chain(model, sc.ms);
        chain.add(mahiro{});
        auto rg = g.begin_run(&sc.pos, &sc.neg);
        auto rc = chain.begin_run(&sc.pos, &sc.neg);
        tensor<float> out({2, 4, 8, 8});
        auto st = sc.step(2.0);
        tensor<float> bad_sigma{2};
        bad_sigma[0] = 1.0f;
        bad_sigma[1] = -1.0f;
        st.sigma = bad_sigma.as<1>();
        const std::string eg = error_of([&] { g.denoise(rg, st, out.as<4>()); });
        const std::string ec = error_of([&] { chain.denoise(rc, st, out.as<4>()); });
        REQUIRE(!eg.empty());
        CHECK(body(eg) == body(ec));
    }
}

TEST_CASE("combine refuses a patch that needs the model before anything is modified", "[dispatch]") {
    scene sc;
    hooked_model model;
    patch_chain<hooked_model> chain(model, sc.ms);
    chain.add(apg{.momentum = 0.5}).add(rescale_cfg{}).add(perturbed_attention_guidance{});
    auto run = chain.begin_run(&sc.pos, &sc.neg);
    tensor<float> cond = test::random_tensor({2, 4, 8, 8}, 1), uncond = test::random_tensor({2, 4, 8, 8}, 2);
    tensor<float> out({2, 4, 8, 8});
    out.fill(7.0f);
    const tensor<float> c0 = tensor<float>::copy_of(cond.as<4>()), u0 = tensor<float>::copy_of(uncond.as<4>()),
                        o0 = tensor<float>::copy_of(out.as<4>());
    const guidance_inputs<float, 4> gi{sc.x.as<4>(), sc.sigma.as<1>(), 5.0};
    const std::string e = error_of([&] { chain.combine(run, gi, cond.as<4>(), uncond.as<4>(), out.as<4>()); });
    CHECK(e.find("'PerturbedAttentionGuidance' evaluates the model") != std::string::npos);
    CHECK(test::bit_equal(cond, c0)); // APG's pre-cfg did not run
    CHECK(test::bit_equal(uncond, u0));
    CHECK(test::bit_equal(out, o0)); // nor the cfg function
}

TEST_CASE("combine through guider and chain equals the cfg stage of denoise", "[dispatch]") {
    scene sc;
    counting_model model;
    const guider<counting_model, apg, rescale_cfg, mahiro> g(model, sc.ms, apg{.momentum = 0.3}, rescale_cfg{}, mahiro{});
    patch_chain<counting_model> chain(model, sc.ms);
    chain.add(apg{.momentum = 0.3}).add(rescale_cfg{}).add(mahiro{});
    auto rg = g.begin_run();
    auto rc = chain.begin_run();
    const guidance_inputs<float, 4> gi{sc.x.as<4>(), sc.sigma.as<1>(), 5.0};
    for (int i = 0; i < 2; ++i) {
        tensor<float> c1 = test::random_tensor({2, 4, 8, 8}, 1), u1 = test::random_tensor({2, 4, 8, 8}, 2);
        tensor<float> c2 = tensor<float>::copy_of(c1.as<4>()), u2 = tensor<float>::copy_of(u1.as<4>());
        tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
        g.combine(rg, gi, c1.as<4>(), u1.as<4>(), a.as<4>());
        chain.combine(rc, gi, c2.as<4>(), u2.as<4>(), b.as<4>());
        CHECK(test::bit_equal(a, b));
    }
}

TEST_CASE("a multi-prompt guider evaluates three prompts and runs the other hooks around it", "[dispatch]") {
    scene sc;
    counting_model m1, m2;
    const auto [a, b] = both_paths(m1, m2, sc, 5.0, three_prompt_guider{.scale = 3.0});
    CHECK(test::bit_equal(a, b));
    CHECK(m1.reeval_calls == 3); // the counting model files the third prompt's passes here
    // out = extra + 3 (cond - uncond), with extra = the positive prompt here
    const tensor<float> pc = sc.predict(sc.pos, sc.x.as<4>()), pu = sc.predict(sc.neg, sc.x.as<4>());
    for (index_t i = 0; i < a.size(); i += 37) CHECK(a[i] == Approx(pc[i] + 3.0f * (pc[i] - pu[i])).margin(1e-5));
    // a pre-cfg hook of another patch ran inside the guider: it shifts cond by 0.5
    event_log log;
    const guider<counting_model, log_pre, three_prompt_guider> g(m1, sc.ms, log_pre{&log, "p", 0.5f},
                                                                 three_prompt_guider{.scale = 1.0});
    auto run = g.begin_run(&sc.pos, &sc.neg, &sc.pos);
    tensor<float> out({2, 4, 8, 8});
    g.denoise(run, sc.step(5.0), out.as<4>());
    CHECK(!log.empty());
}

TEST_CASE("a cfg function can evaluate the model on the run's third prompt", "[dispatch]") {
    scene sc;
    counting_model m1, m2;
    const auto [a, b] = both_paths(m1, m2, sc, 5.0, extra_pass_cfg{});
    CHECK(test::bit_equal(a, b));
    CHECK(m1.reeval_calls == 3); // one per step
    const tensor<float> pc = sc.predict(sc.pos, sc.x.as<4>()), pu = sc.predict(sc.neg, sc.x.as<4>());
    for (index_t i = 0; i < a.size(); i += 41) CHECK(a[i] == Approx(pc[i] + (pc[i] - pu[i])).margin(1e-5));
}

TEST_CASE("model-sampling patches replace the run's sampling in order", "[dispatch]") {
    scene sc;
    counting_model model;
    const guider<counting_model, shift_sampling> g(model, sc.ms, shift_sampling{.shift = 2.0});
    patch_chain<counting_model> chain(model, sc.ms);
    chain.add(shift_sampling{.shift = 2.0});
    CHECK(g.sampling().prediction() == prediction_type::flow);
    CHECK(chain.sampling().prediction() == prediction_type::flow);
    CHECK(g.sampling().sigma_max() == chain.sampling().sigma_max());
    CHECK(g.sampling().sigma_max() == model_sampling::sd3(2.0).sigma_max());
}

TEST_CASE("pass composition, input-block and attention-output hooks reach the model", "[dispatch]") {
    scene sc;
    network_model m1, m2;
    const auto [a, b] = both_paths(m1, m2, sc, 4.0, skip_uncond_block{}, network_hooks{});
    CHECK(test::bit_equal(a, b));
    CHECK(m1.seen == m2.seen);
    // per step: the cond pass is not asked to skip, the uncond pass is; h is widened 8 -> 16
    const std::vector<std::string> step{"cond:w16", "uncond:skip1", "uncond:w16"};
    REQUIRE(m1.seen.size() == 9);
    CHECK(std::vector<std::string>(m1.seen.begin(), m1.seen.begin() + 3) == step);
    // the attention output (0.25) was doubled by the hook before the model used it
    network_model plain;
    const guider<network_model> g(plain, sc.ms);
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> c({2, 4, 8, 8});
    g.denoise(run, sc.step(4.0), c.as<4>());
    tensor<float> a1({2, 4, 8, 8});
    const guider<network_model, network_hooks> g2(m1, sc.ms, network_hooks{});
    auto r2 = g2.begin_run(&sc.pos, &sc.neg);
    g2.denoise(r2, sc.step(4.0), a1.as<4>());
    CHECK(a1[0] - c[0] == Approx(0.25f).margin(1e-6));
    CHECK(test::bit_equal(tensor<float>::copy_of(a1.as<4>().batch_slice(1, 1)),
                          tensor<float>::copy_of(c.as<4>().batch_slice(1, 1))));
}

TEST_CASE("step windows: both edges inside, decided on the first item's sigma, state frozen outside", "[dispatch][window]") {
    scene sc;
    counting_model m1, m2;
    const step_window w{0.2, 0.5};
    const guider<counting_model, windowed<counter_patch>> g(m1, sc.ms, windowed<counter_patch>{{}, w});
    patch_chain<counting_model> chain(m2, sc.ms);
    chain.add(windowed<counter_patch>{{}, w});
    const float s_start = static_cast<float>(sc.ms.percent_to_sigma(0.2));
    const float s_end = static_cast<float>(sc.ms.percent_to_sigma(0.5));
    REQUIRE(static_cast<double>(s_start) == sc.ms.percent_to_sigma(0.2)); // float32 values: exact edges
    REQUIRE(static_cast<double>(s_end) == sc.ms.percent_to_sigma(0.5));
    const float inf = std::numeric_limits<float>::infinity();
    // (sigma of item 0, inside?) — item 1's sigma never decides
    const std::vector<std::pair<float, bool>> steps{{std::nextafter(s_start, inf), false},
                                                    {s_start, true},
                                                    {0.5f * (s_start + s_end), true},
                                                    {s_end, true},
                                                    {std::nextafter(s_end, 0.f), false}};
    auto rg = g.begin_run(&sc.pos, &sc.neg);
    auto rc = chain.begin_run(&sc.pos, &sc.neg);
    int expected = 0;
    for (const auto& [s0, inside] : steps) {
        tensor<float> sigma{2};
        sigma[0] = s0;
        sigma[1] = inside ? 1e3f : s_end; // the second item is outside whenever the first is inside
        auto st = sc.step(3.0);
        st.sigma = sigma.as<1>();
        tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8}), plain({2, 4, 8, 8});
        g.denoise(rg, st, a.as<4>());
        chain.denoise(rc, st, b.as<4>());
        const guider<counting_model> none(m1, sc.ms);
        auto rn = none.begin_run(&sc.pos, &sc.neg);
        none.denoise(rn, st, plain.as<4>());
        expected += inside ? 1 : 0;
        CHECK(rg.state<0>().calls == expected); // not reset outside the window: frozen
        CHECK(rc.state<counter_patch::state_type>(0).calls == expected);
        CHECK(test::bit_equal(a, b));
        if (!inside) CHECK(test::bit_equal(a, plain)); // outside: exactly plain CFG
        else if (expected > 1) CHECK(!test::bit_equal(a, plain)); // (its first call adds 0)
    }
}

TEST_CASE("a windowed patch's extra passes are not run outside its window", "[dispatch][window]") {
    scene sc;
    counted_model model;
    const guider<counted_model, windowed<perturbed_attention_guidance>> g(
        model, sc.ms, windowed<perturbed_attention_guidance>{{.scale = 2.0}, {0.0, 0.3}});
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    tensor<float> sigma{2};
    sigma[0] = sigma[1] = 0.01f; // below percent_to_sigma(0.3): outside
    auto st = sc.step(3.0);
    st.sigma = sigma.as<1>();
    g.denoise(run, st, out.as<4>());
    CHECK(model.calls == 2); // cond and uncond only
    sigma[0] = sigma[1] = 10.0f; // inside
    g.denoise(run, st, out.as<4>());
    CHECK(model.calls == 5); // cond, uncond and PAG's perturbed pass
    const std::string e = error_of([&] {
        (void)guider<counted_model, windowed<perturbed_attention_guidance>>(
            model, sc.ms, windowed<perturbed_attention_guidance>{{}, {0.0, 1.5}});
    });
    CHECK(e.find("PerturbedAttentionGuidance: parameter 'end_percent' must be a finite value in [0, 1]") !=
          std::string::npos);
}

namespace {
/// The hooked model with batched evaluation: one call for every prompt of an evaluation, hooks
/// applied per prompt to its items. Counts calls of each kind.
struct batched_hooked_model : hooked_model {
    int batched_calls = 0, single_calls = 0;
    std::vector<index_t> batch_sizes;
    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& c, view<T, R> out) {
        ++single_calls;
        hooked_model::predict(c, out);
    }
    template <class T, std::size_t R>
    void predict_batch(const batched_call<toy_prompt, T, R>& c, view<T, R> out) {
        ++batched_calls;
        batch_sizes.push_back(c.x.extent(0));
        for (const auto& p : c.prompts) {
            const model_call<toy_prompt, T, R> one{c.x.batch_slice(p.first, p.count), c.sigma.batch_slice(p.first, p.count),
                                                   p.pass, p.prompt, p.conditioning, p.overrides};
            hooked_model::predict(one, out.batch_slice(p.first, p.count));
        }
    }
};
} // namespace

TEST_CASE("batched evaluation gives the per-prompt results bit for bit, hooks per prompt", "[dispatch][batched]") {
    scene sc;
    hooked_model plain;
    batched_hooked_model batched;
    const auto make = [&](auto& m) {
        return guider<std::remove_cvref_t<decltype(m)>, free_u, perturbed_attention_guidance, three_prompt_guider>(
            m, sc.ms, free_u{.model_channels = 1}, perturbed_attention_guidance{.scale = 2.0}, three_prompt_guider{});
    };
    const auto g1 = make(plain);
    const auto g2 = make(batched);
    auto r1 = g1.begin_run(&sc.pos, &sc.neg, &sc.pos);
    auto r2 = g2.begin_run(&sc.pos, &sc.neg, &sc.pos);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    for (int i = 0; i < 2; ++i) {
        g1.denoise(r1, sc.step(4.0), a.as<4>());
        g2.denoise(r2, sc.step(4.0), b.as<4>());
        CHECK(test::bit_equal(a, b));
    }
    CHECK(batched.batched_calls == 2);                      // one per evaluation for the three prompts
    CHECK(batched.batch_sizes == std::vector<index_t>{6, 6}); // 3 prompts x batch 2
    CHECK(batched.single_calls == 2);                       // PAG's extra pass stays its own call
    // cond_scale 1 without a multi-prompt guider: one prompt, no batched call
    const guider<batched_hooked_model, free_u> g3(batched, sc.ms, free_u{.model_channels = 1});
    auto r3 = g3.begin_run(&sc.pos, &sc.neg);
    g3.denoise(r3, sc.step(1.0), b.as<4>());
    CHECK(batched.batched_calls == 2);
    g3.denoise(r3, sc.step(3.0), b.as<4>());
    CHECK(batched.batched_calls == 3);
}

namespace {
/// A patch with start/end inputs of its own (as SLG and Deep Shrink have): they are its window.
struct own_window_patch {
    double start_percent = 0.2, end_percent = 0.5;
    static constexpr auto descriptor() {
        return describe<own_window_patch>("OwnWindow", "OwnWindow", hook_kind::pre_cfg,
                                          floating("start_percent", &own_window_patch::start_percent, 0.2, 0.0, 1.0),
                                          floating("end_percent", &own_window_patch::end_percent, 0.5, 0.0, 1.0));
    }
    struct state_type {
        int calls = 0;
    };
    template <class T, std::size_t R>
    void pre_cfg(state_type& s, const guidance_inputs<T, R>&, view<T, R>, view<T, R>) const {
        ++s.calls;
    }
};

/// A patch that needs both prompts in one model call (as NAG does).
struct needs_batching {
    static constexpr auto descriptor() { return describe<needs_batching>("NeedsBatching", "NeedsBatching", hook_kind::post_cfg); }
    static constexpr unsigned needs_capabilities = capability_bit(capability::batched_passes);
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>&, view<const T, R>, view<const T, R>, view<T, R>) const {}
};
} // namespace

TEST_CASE("a patch's own start/end inputs are its window, never a second one", "[dispatch][window]") {
    scene sc;
    counting_model model;
    const guider<counting_model, own_window_patch> g(model, sc.ms, own_window_patch{});
    patch_chain<counting_model> chain(model, sc.ms);
    chain.add(own_window_patch{});
    auto rg = g.begin_run(&sc.pos, &sc.neg);
    auto rc = chain.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8}), sigma{2};
    auto st = sc.step(3.0);
    st.sigma = sigma.as<1>();
    for (float s : {1000.0f, static_cast<float>(sc.ms.percent_to_sigma(0.3)), 0.001f}) {
        sigma[0] = sigma[1] = s;
        g.denoise(rg, st, out.as<4>());
        chain.denoise(rc, st, out.as<4>());
    }
    CHECK(rg.state<0>().calls == 1);
    CHECK(rc.state<own_window_patch::state_type>(0).calls == 1);
    const std::string e = error_of([&] { patch_chain<counting_model>(model, sc.ms).add(own_window_patch{}, {0.1, 0.9}); });
    CHECK(e.find("'OwnWindow' has start_percent / end_percent inputs of its own") != std::string::npos);
}

TEST_CASE("a patch needing batched passes is refused when the run begins on a per-prompt model", "[dispatch][batched]") {
    scene sc;
    counting_model per_prompt;
    batched_hooked_model batched;
    const guider<counting_model, needs_batching> g1(per_prompt, sc.ms, needs_batching{});
    CHECK_THROWS_WITH(g1.begin_run(&sc.pos, &sc.neg),
                      Catch::Contains("patch 'NeedsBatching' needs batched evaluation of the prompts (predict_batch), "
                                      "which the model does not support"));
    patch_chain<counting_model> c1(per_prompt, sc.ms);
    c1.add(needs_batching{});
    CHECK_THROWS_WITH(c1.begin_run(&sc.pos, &sc.neg), Catch::Contains("needs batched evaluation"));
    const guider<batched_hooked_model, needs_batching> g2(batched, sc.ms, needs_batching{});
    CHECK_NOTHROW(g2.begin_run(&sc.pos, &sc.neg));
}

} // namespace test_core_dispatch
