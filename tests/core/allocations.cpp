// After the first step of a run nothing allocates: every cfg-stage patch through a guider, the
// same with the prompts evaluated in one batched call (guider and chain), and FreeU /
// FreeU_V2's block patch on its own with the run's arena in its site (the toy UNet, example
// code, allocates itself).
#include <catch2/catch.hpp>

#include "counting_allocator.hpp"
#include "patchbay/patchbay.hpp"
#include "prompt_batcher.hpp"
#include "test_patches.hpp"

namespace test_core_allocations {

using namespace patchbay;

namespace {

template <class G>
std::size_t allocations_after_first_step(const G& g, const test::scene& sc, double scale) {
    tensor<float> out({2, 4, 8, 8});
    auto run = g.begin_run(&sc.pos, &sc.neg);
    g.denoise(run, sc.step(scale), out.as<4>());
    test::allocation_counter counter;
    for (int i = 0; i < 3; ++i) g.denoise(run, sc.step(scale), out.as<4>());
    return counter.count();
}

} // namespace

TEST_CASE("cfg-stage patches allocate nothing after the first step", "[alloc]") {
    const test::scene sc;
    const test::toy_gaussian model(test::toy_kind::vp, 0.8);
    const guider<const test::toy_gaussian, fresca, apg, tcfg, rescale_cfg, cfg_norm, mahiro> g1(
        model, sc.ms, fresca{.scale_low = 0.9, .scale_high = 1.2, .freq_cutoff = 2}, apg{.momentum = 0.5},
        tcfg{}, rescale_cfg{}, cfg_norm{}, mahiro{});
    CHECK(allocations_after_first_step(g1, sc, 4.0) == 0);
    const guider<const test::toy_gaussian, fresca, renorm_cfg> g2(
        model, sc.ms, fresca{.scale_low = 0.9, .scale_high = 1.2, .freq_cutoff = 3, .path = fresca_path::fft},
        renorm_cfg{.cfg_trunc = 100, .renorm_cfg = 0.5});
    CHECK(allocations_after_first_step(g2, sc, 4.0) == 0);
}

TEST_CASE("handing out the uncond prediction (CFG++) allocates nothing after the first step", "[alloc]") {
    const test::scene sc;
    const test::toy_gaussian model(test::toy_kind::vp, 0.8);
    const guider<const test::toy_gaussian, rescale_cfg> g(model, sc.ms, rescale_cfg{});
    patch_chain<const test::toy_gaussian> chain(model, sc.ms);
    chain.add(perp_neg_guider{});
    const test::toy_prompt empty{sc.mu_u.as<4>()};
    tensor<float> out({2, 4, 8, 8}), uncond({2, 4, 8, 8});
    auto st = sc.step(1.0); // cond_scale 1: the uncond pass is kept for the hand-out
    st.uncond_denoised = uncond.as<4>();
    auto rg = g.begin_run(&sc.pos, &sc.neg);
    auto rc = chain.begin_run(&sc.pos, &sc.neg, &empty);
    g.denoise(rg, st, out.as<4>());
    chain.denoise(rc, st, out.as<4>());
    test::allocation_counter counter;
    for (int i = 0; i < 3; ++i) {
        g.denoise(rg, st, out.as<4>());
        chain.denoise(rc, st, out.as<4>());
    }
    CHECK(counter.count() == 0);
    CHECK(test::bit_equal(uncond, sc.predict(sc.neg, sc.x.as<4>())));
}

TEST_CASE("a batched evaluation allocates nothing after the first step", "[alloc][batched]") {
    const test::scene sc;
    const test::toy_gaussian model(test::toy_kind::vp, 0.8);
    int calls = 0;
    using batched = const test::prompt_batcher<const test::toy_gaussian>;
    batched m{&model, &calls};
    const guider<batched, fresca, apg, rescale_cfg> g(m, sc.ms, fresca{.scale_low = 0.9, .scale_high = 1.2, .freq_cutoff = 2},
                                                      apg{.momentum = 0.5}, rescale_cfg{});
    CHECK(allocations_after_first_step(g, sc, 4.0) == 0);
    CHECK(calls == 4); // cond and uncond in one call, every step
    patch_chain<batched> chain(m, sc.ms);
    chain.add(apg{.momentum = 0.5}).add(cfg_norm{});
    CHECK(allocations_after_first_step(chain, sc, 4.0) == 0);
    CHECK(calls == 8);
}

TEST_CASE("FreeU and FreeU_V2 allocate nothing after the first call", "[alloc]") {
    auto h = test::random_tensor({1, 16, 12, 10}, 1), hsp = test::random_tensor({1, 8, 12, 10}, 2);
    const free_u fu{.model_channels = 4};
    const free_u_v2 fu2{.model_channels = 4};
    no_state none;
    // the scratch comes from the run's arena, which the dispatcher puts in the site (a call
    // without one scratches locally, for that call only)
    workspace run_scratch;
    block_site site{unet_stage::output, 0, 16};
    site.scratch = &run_scratch;
    fu.output_block(none, site, h.as<4>(), hsp.as<4>());
    fu2.output_block(none, site, h.as<4>(), hsp.as<4>());
    test::allocation_counter counter;
    for (int i = 0; i < 3; ++i) {
        fu.output_block(none, site, h.as<4>(), hsp.as<4>());
        fu2.output_block(none, site, h.as<4>(), hsp.as<4>());
    }
    CHECK(counter.count() == 0);
}

} // namespace test_core_allocations
