// Tests of guider<Model, Patches...>: plain CFG parity, the cond_scale 1 optimisation, hook
// order, slot overrides, block / attention hooks, model re-evaluation, inpainting, per-run
// state (reset, clone, concurrent runs), the combine step alone, and zero allocations after
// the first step of a run.
#include <catch2/catch.hpp>

#include <string>
#include <thread>
#include <vector>

#include "counting_allocator.hpp"
#include "test_patches.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "test_util.hpp"
#include "toy_gaussian.hpp"

namespace test_core_guider {

using namespace patchbay;
using examples::toy_gaussian;
using examples::toy_kind;
using examples::toy_prompt;
using namespace patchbay::test;

TEST_CASE("guider without patches equals plain CFG bit for bit", "[guider]") {
    scene sc;
    counting_model model;
    const guider<counting_model> g(model, sc.ms);
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    g.denoise(run, sc.step(7.0), out.as<4>());
    CHECK(model.cond_calls == 1);
    CHECK(model.uncond_calls == 1);

    const tensor<float> c = sc.predict(sc.pos, sc.x.as<4>()), u = sc.predict(sc.neg, sc.x.as<4>());
    tensor<float> want({2, 4, 8, 8});
    kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), 7.0, want.as<4>());
    CHECK(test::bit_equal(out, want));
    // and differs from the cond prediction (the test can fail)
    CHECK_FALSE(test::bit_equal(out, c));
}

TEST_CASE("cond_scale 1 returns the cond prediction and skips the uncond pass", "[guider]") {
    scene sc;
    counting_model model;
    event_log log;
    {
        const guider<counting_model> g(model, sc.ms);
        auto run = g.begin_run(&sc.pos, &sc.neg);
        tensor<float> out({2, 4, 8, 8});
        g.denoise(run, sc.step(1.0 + 1e-12), out.as<4>()); // math.isclose(.., 1.0)
        CHECK(model.uncond_calls == 0);
        CHECK(model.cond_calls == 1);
        CHECK(test::bit_equal(out, sc.predict(sc.pos, sc.x.as<4>())));
        g.denoise(run, sc.step(1.0 + 1e-6), out.as<4>()); // not close: uncond runs
        CHECK(model.uncond_calls == 1);
    }
    SECTION("patches see a zero uncond and uncond_is_none") {
        const guider<counting_model, log_post> g(model, sc.ms, log_post{&log, "p"});
        auto run = g.begin_run(&sc.pos, &sc.neg);
        tensor<float> out({2, 4, 8, 8});
        g.denoise(run, sc.step(1.0), out.as<4>());
        CHECK(log == event_log{"post:p:none"});
    }
    SECTION("a patch with disable_cfg1_optimization keeps the uncond pass") {
        model.uncond_calls = 0;
        const guider<counting_model, keeps_uncond> g(model, sc.ms, keeps_uncond{&log});
        auto run = g.begin_run(&sc.pos, &sc.neg);
        tensor<float> out({2, 4, 8, 8});
        g.denoise(run, sc.step(1.0), out.as<4>());
        CHECK(model.uncond_calls == 1);
        CHECK(log == event_log{"uncond"});
    }
}

TEST_CASE("hooks run in ComfyUI's order: mask, pre-cfg, cfg function, post-cfg", "[guider]") {
    scene sc;
    counting_model model;
    event_log log;
    // patches listed out of stage order: stage order wins, list order within a stage
    const guider<counting_model, log_post, log_pre, log_cfg, log_mask, log_pre, log_post> g(
        model, sc.ms, log_post{&log, "a"}, log_pre{&log, "a"}, log_cfg{&log}, log_mask{&log},
        log_pre{&log, "b"}, log_post{&log, "b"});
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    g.denoise(run, sc.step(5.0), out.as<4>());
    // no denoise mask given: the mask function is not called (as KSamplerX0Inpaint)
    CHECK(log == event_log{"pre:a", "pre:b", "cfg", "post:a", "post:b"});

    log.clear();
    tensor<float> mask({2, 4, 8, 8}), latent = test::random_tensor({2, 4, 8, 8}, 5),
                                      noise = test::random_tensor({2, 4, 8, 8}, 6);
    mask.fill(1.f);
    const inpaint_inputs<float, 4> ip{mask.as<4>(), latent.as<4>(), noise.as<4>()};
    const std::vector<double> sigmas{1.5, 0.7, 0.0};
    auto st = sc.step(5.0);
    st.inpaint = &ip;
    st.step_sigmas = sigmas;
    g.denoise(run, st, out.as<4>());
    CHECK(log == event_log{"mask", "pre:a", "pre:b", "cfg", "post:a", "post:b"});
}

TEST_CASE("pre-cfg rewrites reach the combine; the cfg function replaces it", "[guider]") {
    scene sc;
    counting_model model;
    event_log log;
    const tensor<float> c = sc.predict(sc.pos, sc.x.as<4>()), u = sc.predict(sc.neg, sc.x.as<4>());
    tensor<float> c2 = c;
    kernels::transform(c2.as<4>(), [](auto v) { return v * 2.f; }, c2.as<4>());
    tensor<float> want({2, 4, 8, 8}), out({2, 4, 8, 8});
    kernels::cfg_combine<float, 4>(c2.as<4>(), u.as<4>(), 3.0, want.as<4>());
    kernels::transform(want.as<4>(), [](auto v) { return v + 0.5f; }, want.as<4>());

    const guider<counting_model, log_pre, log_post> g(model, sc.ms, log_pre{&log, "x", 2.f},
                                                      log_post{&log, "y", 0.5f});
    auto run = g.begin_run(&sc.pos, &sc.neg);
    g.denoise(run, sc.step(3.0), out.as<4>());
    CHECK(test::bit_equal(out, want));

    const guider<counting_model, log_cfg> gc(model, sc.ms, log_cfg{&log});
    auto run2 = gc.begin_run(&sc.pos, &sc.neg);
    gc.denoise(run2, sc.step(3.0), out.as<4>());
    CHECK(test::bit_equal(out, c));
}

TEST_CASE("a patch's slot() overrides its descriptor's slot at run time", "[guider]") {
    scene sc;
    counting_model model;
    event_log log;
    tensor<float> out({2, 4, 8, 8});
    const guider<counting_model, log_post, movable, log_pre> a(model, sc.ms, log_post{&log, "p"},
                                                               movable{&log, true}, log_pre{&log, "q"});
    auto ra = a.begin_run(&sc.pos, &sc.neg);
    a.denoise(ra, sc.step(2.0), out.as<4>());
    CHECK(log == event_log{"movable:pre", "pre:q", "post:p"});
    log.clear();
    const guider<counting_model, log_post, movable, log_pre> b(model, sc.ms, log_post{&log, "p"},
                                                               movable{&log, false}, log_pre{&log, "q"});
    auto rb = b.begin_run(&sc.pos, &sc.neg);
    b.denoise(rb, sc.step(2.0), out.as<4>());
    CHECK(log == event_log{"pre:q", "post:p", "movable:post"});
}

TEST_CASE("patch parameters are validated when the guider is built", "[guider]") {
    counting_model model;
    const auto ms = model_sampling::discrete("eps");
    // the descriptor's range, in a message naming its class_type (the chain says the same)
    CHECK_THAT(test::error_of([&] { (void)guider<counting_model, bad_param_patch>(model, ms, bad_param_patch{}); }),
               Catch::Matchers::Equals("bad_param_patch: parameter 'strength' must be a finite value in [0, 1], got 2"));
    CHECK_NOTHROW((guider<counting_model, bad_param_patch>(model, ms, bad_param_patch{0.5})));
}

TEST_CASE("bad step inputs are rejected", "[guider]") {
    scene sc;
    counting_model model;
    const guider<counting_model> g(model, sc.ms);
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8}), wrong({2, 4, 8, 4}), sig1{1};
    CHECK_THROWS_AS(g.denoise(run, sc.step(2.0), wrong.as<4>()), error);
    auto st = sc.step(2.0);
    st.sigma = sig1.as<1>();
    CHECK_THROWS_AS(g.denoise(run, st, out.as<4>()), error);
    st = sc.step(std::nan(""));
    CHECK_THROWS_AS(g.denoise(run, st, out.as<4>()), error);
    // denoised may not alias x (hooks read x while it is written)
    tensor<float> x2 = sc.x;
    st = sc.step(2.0);
    st.x = x2.as<4>();
    CHECK_THROWS_AS(g.denoise(run, st, x2.as<4>()), error);
    CHECK(model.cond_calls == 0);
}

TEST_CASE("block hooks reach the model's output blocks", "[guider]") {
    scene sc;
    hooked_model model;
    const guider<hooked_model> plain(model, sc.ms);
    const guider<hooked_model, block_doubler> doubled(model, sc.ms, block_doubler{});
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    auto ra = plain.begin_run(&sc.pos, &sc.neg);
    auto rb = doubled.begin_run(&sc.pos, &sc.neg);
    plain.denoise(ra, sc.step(4.0), a.as<4>());
    doubled.denoise(rb, sc.step(4.0), b.as<4>());
    // both predictions doubled -> the CFG result doubles (exact in float: scaling by 2)
    for (index_t i = 0; i < a.size(); ++i) REQUIRE(b[i] == 2.f * a[i]);
}

TEST_CASE("capabilities: run-time answers are checked when a run begins", "[guider]") {
    scene sc;
    runtime_caps_model model;
    const guider<runtime_caps_model, block_doubler> g(model, sc.ms, block_doubler{});
    CHECK_THROWS_AS(g.begin_run(&sc.pos, &sc.neg), error);
    model.blocks = true;
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    g.denoise(run, sc.step(4.0), out.as<4>());
    // (a model without any declaration is a compile-time error: guider's static_assert)
    STATIC_REQUIRE(!block_hookable<counting_model>);
    STATIC_REQUIRE(!runtime_capabilities<counting_model>);
}

TEST_CASE("post-cfg hooks re-evaluate the model with attention overrides", "[guider]") {
    scene sc;
    hooked_model model;
    const guider<hooked_model, reeval_patch> g(model, sc.ms, reeval_patch{2.f});
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8}), plain({2, 4, 8, 8});
    g.denoise(run, sc.step(3.0), out.as<4>());
    // the uncond pass's attention was read, the re-evaluation's was replaced (not read)
    CHECK(model.attention_reads == std::vector<pass_kind>{pass_kind::uncond});
    CHECK(run.state<0>().reads == 1);

    const guider<hooked_model> g0(model, sc.ms);
    auto run0 = g0.begin_run(&sc.pos, &sc.neg);
    g0.denoise(run0, sc.step(3.0), plain.as<4>());
    // cond - pag differs only at element 0 of each batch item... the fake model adds the
    // attention output (0.25 with v, 0 otherwise) to element 0 of the whole tensor
    CHECK(out[0] == Approx(plain[0] + 2.f * (0.f - 0.25f)));
    for (index_t i = 1; i < out.size(); ++i) REQUIRE(out[i] == plain[i]);
}

TEST_CASE("inpainting blends x and the result as KSamplerX0Inpaint", "[guider]") {
    scene sc;
    counting_model model;
    const guider<counting_model> g(model, sc.ms);
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> mask({2, 4, 8, 8}), latent = test::random_tensor({2, 4, 8, 8}, 7),
                                      noise = test::random_tensor({2, 4, 8, 8}, 8);
    for (index_t i = 0; i < mask.size(); ++i) mask[i] = (i % 3 == 0) ? 1.f : (i % 3 == 1 ? 0.f : 0.25f);
    const inpaint_inputs<float, 4> ip{mask.as<4>(), latent.as<4>(), noise.as<4>()};
    auto st = sc.step(4.0);
    st.inpaint = &ip;
    tensor<float> out({2, 4, 8, 8});
    g.denoise(run, st, out.as<4>());

    // reference: blend x, plain CFG on it, blend the result
    tensor<float> xin({2, 4, 8, 8});
    for (index_t i = 0; i < xin.size(); ++i) {
        const float s = sc.sigma[i / (4 * 8 * 8)];
        const float scaled = noise[i] * s + latent[i];
        xin[i] = sc.x[i] * mask[i] + scaled * (1.f - mask[i]);
    }
    const tensor<float> c = sc.predict(sc.pos, xin.as<4>()), u = sc.predict(sc.neg, xin.as<4>());
    for (index_t i = 0; i < out.size(); ++i) {
        const float cfg = u[i] + (c[i] - u[i]) * 4.f;
        const float want = cfg * mask[i] + latent[i] * (1.f - mask[i]);
        REQUIRE(out[i] == Approx(want).margin(1e-5));
        if (mask[i] == 0.f) REQUIRE(out[i] == latent[i]);
    }
}

TEST_CASE("run state: reset restarts, a copy clones, runs are independent", "[guider][state]") {
    scene sc;
    counting_model model;
    const guider<counting_model, counter_patch> g(model, sc.ms, counter_patch{});
    auto step = [&](auto& run) {
        tensor<float> out({2, 4, 8, 8});
        g.denoise(run, sc.step(3.0), out.as<4>());
        return out;
    };
    auto run = g.begin_run(&sc.pos, &sc.neg);
    const tensor<float> first = step(run);
    auto clone = run; // after one step
    const tensor<float> second = step(run);
    CHECK_FALSE(test::bit_equal(first, second)); // the state changes the result
    CHECK(test::bit_equal(step(clone), second));  // the clone continues identically
    CHECK(run.state<0>().calls == 2);
    CHECK(clone.state<0>().calls == 2);
    run.reset();
    CHECK(test::bit_equal(step(run), first)); // reset = fresh
    auto other = g.begin_run(&sc.pos, &sc.neg);
    CHECK(test::bit_equal(step(other), first)); // a second run is unaffected by the first
}

TEST_CASE("concurrent runs on one guider equal sequential runs", "[guider][threads]") {
    scene sc;
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian, counter_patch> g(model, sc.ms, counter_patch{});
    constexpr int steps = 6;
    auto run_all = [&](double scale) {
        auto run = g.begin_run(&sc.pos, &sc.neg);
        tensor<float> out({2, 4, 8, 8}), acc({2, 4, 8, 8});
        for (int s = 0; s < steps; ++s) {
            g.denoise(run, sc.step(scale), out.as<4>());
            kernels::transform(acc.as<4>(), [](auto a, auto o) { return a + o; }, acc.as<4>(), out.as<4>());
        }
        return acc;
    };
    const tensor<float> seq_a = run_all(3.0), seq_b = run_all(6.0);
    tensor<float> par_a, par_b;
    std::thread ta([&] { par_a = run_all(3.0); });
    std::thread tb([&] { par_b = run_all(6.0); });
    ta.join();
    tb.join();
    CHECK(test::bit_equal(seq_a, par_a));
    CHECK(test::bit_equal(seq_b, par_b));
}

TEST_CASE("combine alone runs pre-cfg, cfg and post-cfg on given predictions", "[guider]") {
    scene sc;
    counting_model model;
    event_log log;
    const guider<counting_model, log_pre, log_post> g(model, sc.ms, log_pre{&log, "a", 2.f},
                                                      log_post{&log, "b", 0.5f});
    auto run = g.begin_run();
    tensor<float> c = test::random_tensor({2, 4, 8, 8}, 21), u = test::random_tensor({2, 4, 8, 8}, 22);
    tensor<float> want({2, 4, 8, 8}), out({2, 4, 8, 8});
    tensor<float> c2 = c;
    kernels::transform(c2.as<4>(), [](auto v) { return v * 2.f; }, c2.as<4>());
    kernels::cfg_combine<float, 4>(c2.as<4>(), u.as<4>(), 5.0, want.as<4>());
    kernels::transform(want.as<4>(), [](auto v) { return v + 0.5f; }, want.as<4>());
    const guidance_inputs<float, 4> in{sc.x.as<4>(), sc.sigma.as<1>(), 5.0, false, prediction_type::eps};
    g.combine(run, in, c.as<4>(), u.as<4>(), out.as<4>());
    CHECK(test::bit_equal(out, want));
    CHECK(test::bit_equal(c, c2)); // pre-cfg rewrote cond in place, as documented
    CHECK(model.cond_calls + model.uncond_calls == 0);
    CHECK(log == event_log{"pre:a", "post:b"});
}

TEST_CASE("a denoise call allocates nothing after the first step of a run", "[guider][alloc]") {
    scene sc;
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian, counter_patch> g(model, sc.ms, counter_patch{});
    auto run = g.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    g.denoise(run, sc.step(5.0), out.as<4>()); // first step: buffers grow
    test::allocation_counter counter;
    for (int i = 0; i < 5; ++i) {
        g.denoise(run, sc.step(5.0), out.as<4>());
        g.denoise(run, sc.step(1.0), out.as<4>()); // the skipped-uncond path too
    }
    CHECK(counter.count() == 0);
    // the counter works: a tensor allocates
    test::allocation_counter check;
    tensor<float> t({4});
    CHECK(check.count() > 0);
}

TEST_CASE("strided x and denoised give the contiguous result", "[guider][strides]") {
    scene sc;
    const toy_gaussian model(toy_kind::vp, 0.8);
    const guider<const toy_gaussian, counter_patch> g(model, sc.ms, counter_patch{});
    tensor<float> want({2, 4, 8, 8});
    auto r1 = g.begin_run(&sc.pos, &sc.neg);
    g.denoise(r1, sc.step(4.0), want.as<4>());

    // x stored transposed (N, W, H, C in memory), denoised written every other element
    tensor<float> xt({2, 8, 8, 4});
    const view<float, 4> xv(xt.data(), {2, 4, 8, 8}, {256, 1, 4, 32});
    for (index_t n = 0; n < 2; ++n)
        for (index_t c = 0; c < 4; ++c)
            for (index_t h = 0; h < 8; ++h)
                for (index_t w = 0; w < 8; ++w) xv(n, c, h, w) = sc.x.as<4>()(n, c, h, w);
    tensor<float> big({2, 4, 8, 16});
    const view<float, 4> dv(big.data(), {2, 4, 8, 8}, {512, 128, 16, 2});
    auto r2 = g.begin_run(&sc.pos, &sc.neg);
    auto st = sc.step(4.0);
    st.x = xv;
    g.denoise(r2, st, dv);
    for (index_t n = 0; n < 2; ++n)
        for (index_t c = 0; c < 4; ++c)
            for (index_t h = 0; h < 8; ++h)
                for (index_t w = 0; w < 8; ++w)
                    REQUIRE(dv(n, c, h, w) == Approx(want.as<4>()(n, c, h, w)).margin(1e-6));
    CHECK(big[1] == 0.f); // the gaps are untouched
}

TEST_CASE("double precision and 5-D latents", "[guider]") {
    const tensor<double> x = [] {
        tensor<double> t({2, 3, 2, 4, 5});
        const tensor<float> r = test::random_tensor({2, 3, 2, 4, 5}, 51);
        for (index_t i = 0; i < t.size(); ++i) t[i] = r[i];
        return t;
    }();
    const tensor<float> mc = test::random_tensor({1, 3, 2, 4, 5}, 52), mu = test::random_tensor({1, 3, 2, 4, 5}, 53);
    const toy_prompt pos(mc.as<5>()), neg(mu.as<5>());
    tensor<double> sigma({2});
    sigma[0] = 0.9;
    sigma[1] = 0.3;
    const toy_gaussian model(toy_kind::flow, 0.7);
    const guider<const toy_gaussian> g(model, model_sampling::sd3());
    auto run = g.begin_run(&pos, &neg);
    tensor<double> out({2, 3, 2, 4, 5}), c({2, 3, 2, 4, 5}), u({2, 3, 2, 4, 5}), want({2, 3, 2, 4, 5});
    g.denoise(run, step_inputs<double, 5>{x.as<5>(), sigma.as<1>(), 3.5, {}, nullptr}, out.as<5>());
    call_overrides<double> none;
    model.predict(model_call<toy_prompt, double, 5>{x.as<5>(), sigma.as<1>(), pass_kind::cond, pass_kind::cond, &pos, &none}, c.as<5>());
    model.predict(model_call<toy_prompt, double, 5>{x.as<5>(), sigma.as<1>(), pass_kind::uncond, pass_kind::uncond, &neg, &none}, u.as<5>());
    kernels::cfg_combine<double, 5>(c.as<5>(), u.as<5>(), 3.5, want.as<5>());
    CHECK(test::bit_equal(out, want));
}

} // namespace test_core_guider
