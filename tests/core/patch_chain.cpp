// Tests of patch_chain<Model>: same results and hook order as the static guider, one cfg /
// mask function, capability errors before sampling, value semantics, per-run state, and zero
// allocations after the first step.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "counting_allocator.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "test_patches.hpp"

namespace test_core_patch_chain {

using namespace patchbay;
using namespace patchbay::test;

TEST_CASE("an empty chain equals an empty guider bit for bit", "[patch_chain]") {
    scene sc;
    counting_model model;
    const guider<counting_model> g(model, sc.ms);
    const patch_chain<counting_model> chain(model, sc.ms);
    auto rg = g.begin_run(&sc.pos, &sc.neg);
    auto rc = chain.begin_run(&sc.pos, &sc.neg);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    g.denoise(rg, sc.step(6.0), a.as<4>());
    chain.denoise(rc, sc.step(6.0), b.as<4>());
    CHECK(test::bit_equal(a, b));
    chain.denoise(rc, sc.step(1.0), b.as<4>());
    CHECK(model.uncond_calls == 2); // guider 1, chain 1: the chain's second call skipped it
}

TEST_CASE("a chain runs hooks in the guider's order with the same results", "[patch_chain]") {
    scene sc;
    counting_model model;
    event_log lg, lc;
    const guider<counting_model, log_post, log_pre, log_mask, movable, log_pre, counter_patch> g(
        model, sc.ms, log_post{&lg, "a", 0.25f}, log_pre{&lg, "a", 1.5f}, log_mask{&lg},
        movable{&lg, true}, log_pre{&lg, "b", 0.5f}, counter_patch{});
    patch_chain<counting_model> chain(model, sc.ms);
    chain.add(log_post{&lc, "a", 0.25f})
        .add(log_pre{&lc, "a", 1.5f})
        .add(log_mask{&lc})
        .add(movable{&lc, true})
        .add(log_pre{&lc, "b", 0.5f})
        .add(counter_patch{});
    CHECK(chain.size() == 6);
    CHECK(chain.slot(3) == hook_kind::pre_cfg); // movable's run-time slot
    CHECK(chain.slot(2) == hook_kind::mask_function);

    tensor<float> mask({2, 4, 8, 8}), latent = test::random_tensor({2, 4, 8, 8}, 5),
                                      noise = test::random_tensor({2, 4, 8, 8}, 6);
    mask.fill(0.5f);
    const inpaint_inputs<float, 4> ip{mask.as<4>(), latent.as<4>(), noise.as<4>()};
    const std::vector<double> sigmas{1.5, 0.7, 0.0};
    auto st = sc.step(4.0);
    st.inpaint = &ip;
    st.step_sigmas = sigmas;

    auto rg = g.begin_run(&sc.pos, &sc.neg);
    auto rc = chain.begin_run(&sc.pos, &sc.neg);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    for (int i = 0; i < 3; ++i) {
        g.denoise(rg, st, a.as<4>());
        chain.denoise(rc, st, b.as<4>());
        REQUIRE(test::bit_equal(a, b));
    }
    CHECK(lg == lc);
    CHECK(lc.front() == "mask");
    CHECK(rc.state<counter_patch::state_type>(5).calls == 3);
    CHECK_THROWS_AS(rc.state<no_state>(5), error);
}

TEST_CASE("a chain rejects a second cfg or mask function", "[patch_chain]") {
    counting_model model;
    event_log log;
    patch_chain<counting_model> chain(model, model_sampling::discrete("eps"));
    chain.add(log_cfg{&log});
    CHECK_THROWS_AS(chain.add(log_cfg{&log}), error);
    chain.add(log_mask{&log});
    CHECK_THROWS_AS(chain.add(log_mask{&log}), error);
    CHECK(chain.size() == 2);
    // validated when added, named by the descriptor's class_type
    CHECK_THAT(test::error_of([&] { chain.add(bad_param_patch{}); }),
               Catch::Matchers::Contains("bad_param_patch: parameter 'strength' must be a finite value in [0, 1], got 2"));
    CHECK_THAT(test::error_of([&] { chain.add(log_cfg{&log}); }),
               Catch::Matchers::Contains("at most one") && Catch::Matchers::Contains("'log_cfg'"));
    CHECK(chain.size() == 2);
}

TEST_CASE("a chain checks model capabilities before sampling", "[patch_chain]") {
    scene sc;
    counting_model plain;
    patch_chain<counting_model> c1(plain, sc.ms);
    CHECK_THROWS_AS(c1.add(block_doubler{}), error); // the model declares no block hooks
    CHECK_THROWS_AS(c1.add(reeval_patch{}), error);  // nor attention hooks

    runtime_caps_model rt;
    patch_chain<runtime_caps_model> c2(rt, sc.ms);
    c2.add(block_doubler{}); // answered at run time
    CHECK_THROWS_AS(c2.begin_run(&sc.pos, &sc.neg), error);
    rt.blocks = true;
    auto run = c2.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    c2.denoise(run, sc.step(3.0), out.as<4>());
}

TEST_CASE("a chain with block and attention patches equals the guider", "[patch_chain]") {
    scene sc;
    hooked_model m1, m2;
    const guider<hooked_model, block_doubler, reeval_patch> g(m1, sc.ms, block_doubler{}, reeval_patch{1.5f});
    patch_chain<hooked_model> chain(m2, sc.ms);
    chain.add(block_doubler{}).add(reeval_patch{1.5f});
    auto rg = g.begin_run(&sc.pos, &sc.neg);
    auto rc = chain.begin_run(&sc.pos, &sc.neg);
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
    g.denoise(rg, sc.step(3.0), a.as<4>());
    chain.denoise(rc, sc.step(3.0), b.as<4>());
    CHECK(test::bit_equal(a, b));
    CHECK(m1.attention_reads == m2.attention_reads);
    CHECK(rc.state<reeval_patch::state_type>(1).reads == 1);

    // the combine step cannot run a patch that evaluates the model
    const guidance_inputs<float, 4> in{sc.x.as<4>(), sc.sigma.as<1>(), 3.0, false, prediction_type::eps};
    tensor<float> c = sc.predict(sc.pos, sc.x.as<4>()), u = sc.predict(sc.neg, sc.x.as<4>());
    CHECK_THROWS_AS(chain.combine(rc, in, c.as<4>(), u.as<4>(), b.as<4>()), error);
    // nor one that hooks into the model (it would be skipped silently)
    patch_chain<hooked_model> blocks(m2, sc.ms);
    blocks.add(block_doubler{});
    auto rb = blocks.begin_run();
    CHECK_THROWS_AS(blocks.combine(rb, in, c.as<4>(), u.as<4>(), b.as<4>()), error);
    const patch_chain<hooked_model> none(m2, sc.ms);
    auto rn = none.begin_run();
    CHECK_NOTHROW(none.combine(rn, in, c.as<4>(), u.as<4>(), b.as<4>()));
}

TEST_CASE("chains are values; run states reset and clone", "[patch_chain][state]") {
    scene sc;
    counting_model model;
    patch_chain<counting_model> chain(model, sc.ms);
    chain.add(counter_patch{});
    patch_chain<counting_model> copy = chain;
    copy.add(counter_patch{});
    CHECK(chain.size() == 1);
    CHECK(copy.size() == 2);

    auto step = [&](auto& run) {
        tensor<float> out({2, 4, 8, 8});
        chain.denoise(run, sc.step(3.0), out.as<4>());
        return out;
    };
    auto run = chain.begin_run(&sc.pos, &sc.neg);
    const tensor<float> first = step(run);
    auto clone = run;
    const tensor<float> second = step(run);
    CHECK_FALSE(test::bit_equal(first, second));
    CHECK(test::bit_equal(step(clone), second));
    run.reset();
    CHECK(test::bit_equal(step(run), first));
    // a run state from another chain is rejected
    auto other = copy.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    CHECK_THROWS_AS(chain.denoise(other, sc.step(3.0), out.as<4>()), error);
}

TEST_CASE("a chain's denoise allocates nothing after the first step", "[patch_chain][alloc]") {
    scene sc;
    const examples::toy_gaussian model(examples::toy_kind::vp, 0.8);
    patch_chain<const examples::toy_gaussian> chain(model, sc.ms);
    chain.add(counter_patch{}).add(counter_patch{});
    auto run = chain.begin_run(&sc.pos, &sc.neg);
    tensor<float> out({2, 4, 8, 8});
    chain.denoise(run, sc.step(5.0), out.as<4>());
    test::allocation_counter counter;
    for (int i = 0; i < 5; ++i) {
        chain.denoise(run, sc.step(5.0), out.as<4>());
        chain.denoise(run, sc.step(1.0), out.as<4>());
    }
    CHECK(counter.count() == 0);
}

} // namespace test_core_patch_chain
