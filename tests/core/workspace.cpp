// Tests for core/workspace.hpp, the run's one scratch arena: slots and transient buffers grow
// only; bytes() counts everything and release() frees it; a guided run with FreeU and FreSca on
// the toy UNet keeps the patches' scratch in run.scratch, gives the same result after
// release(); hooks handed the arena allocate nothing after their first call, and what they
// hold survives nesting (PAG's perturbed prediction across the block hooks of its model call).
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "../../examples/toy_unet.hpp"
#include "counting_allocator.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"
#include "test_util.hpp"

namespace test_core_workspace {

using namespace patchbay;
using examples::toy_unet;

TEST_CASE("workspace: buffers grow only, are aligned and counted; release frees all", "[workspace]") {
    workspace ws;
    CHECK(ws.bytes() == 0);
    const auto a = ws.buffer<float>(workspace::kernel_keys + 3, 100);
    CHECK(a.size() == 100);
    CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % workspace::alignment == 0);
    CHECK(ws.bytes() == 400);
    // smaller or equal requests reuse the storage; the same key in another type too
    CHECK(ws.buffer<float>(workspace::kernel_keys + 3, 10).data() == a.data());
    CHECK(static_cast<void*>(ws.buffer<double>(workspace::kernel_keys + 3, 50).data()) == a.data());
    CHECK(ws.bytes() == 400);
    // keys are independent
    const auto b = ws.buffer<double>(workspace::patch_keys, 10);
    CHECK(static_cast<void*>(b.data()) != static_cast<void*>(a.data()));
    CHECK(ws.bytes() == 480);
    // growing replaces the storage
    ws.buffer<float>(workspace::kernel_keys + 3, 1000);
    CHECK(ws.bytes() == 4080);
    // slots: float and double apart, reused for any shape that fits
    const auto s = ws.get<float, 4>(0, {1, 2, 3, 4});
    CHECK(s.size() == 24);
    CHECK(ws.get<float, 2>(0, {4, 6}).data_handle() == s.data_handle());
    ws.get<double, 1>(0, {5});
    CHECK(ws.bytes() == 4080 + 24 * 4 + 5 * 8);
    ws.release();
    CHECK(ws.bytes() == 0);
    CHECK(ws.buffer<float>(workspace::model_call_keys, 4).size() == 4);
    CHECK(ws.bytes() == 16);
}

TEST_CASE("workspace: a copy keeps the slots' contents, not the transient buffers", "[workspace]") {
    workspace ws;
    auto s = ws.get<float, 1>(2, {3});
    s(0) = 1.f, s(1) = 2.f, s(2) = 3.f;
    ws.buffer<float>(workspace::kernel_keys, 64);
    const workspace copy = ws;
    CHECK(copy.bytes() == 3 * 4);
    workspace other;
    other = ws;
    const auto t = other.get<float, 1>(2, {3});
    CHECK(t.data_handle() != s.data_handle());
    CHECK((t(0) == 1.f && t(1) == 2.f && t(2) == 3.f));
}

namespace {

constexpr index_t batch = 2;

using guided = guider<toy_unet, free_u, fresca>;

struct scene {
    toy_unet model;
    examples::toy_unet_prompt pos = model.prompt(1), neg = model.negative_prompt();
    tensor<float> x = test::random_tensor({batch, model.config().channels, model.config().height,
                                           model.config().width},
                                          7, 0.f, 3.f);
    tensor<float> sigma{batch};
    scene() {
        sigma[0] = 3.f;
        sigma[1] = 1.5f;
    }
    step_inputs<float, 4> step() const { return {x.as<4>(), sigma.as<1>(), 5.0}; }
};

template <class G>
tensor<float> denoise(const G& g, typename G::run_state& run, const scene& sc) {
    tensor<float> out(sc.x.shape());
    g.denoise(run, sc.step(), out.as<4>());
    return out;
}

} // namespace

TEST_CASE("a guided run keeps FreeU's and FreSca's scratch in run.scratch; release() frees it",
          "[workspace][guider]") {
    scene sc;
    const auto mc = sc.model.config().model_channels;
    const guided g(sc.model, model_sampling::discrete("eps"), free_u{.model_channels = mc},
                   fresca{.scale_low = 0.7, .scale_high = 1.3, .freq_cutoff = 3});
    const guider<toy_unet> plain(sc.model, model_sampling::discrete("eps"));
    auto run = g.begin_run(&sc.pos, &sc.neg);
    auto plain_run = plain.begin_run(&sc.pos, &sc.neg);
    tensor<float> first;
    for (int i = 0; i < 3; ++i) first = denoise(g, run, sc);
    denoise(plain, plain_run, sc);
    // the run holds the patches' scratch (FFT / Fourier-mask buffers), beyond the guider's slots
    const std::size_t held = run.scratch.bytes();
    CHECK(held > 0);
    CHECK(held > plain_run.scratch.bytes());
    // the patches did something (the comparison below is not vacuous)
    CHECK(test::max_abs_diff(first, denoise(plain, plain_run, sc)) > 1e-4);

    run.release();
    CHECK(run.scratch.bytes() == 0);
    const auto after = denoise(g, run, sc);
    CHECK(test::bit_equal(after, first));
    CHECK(run.scratch.bytes() == held); // grown again to the same size
}

TEST_CASE("hooks handed the arena allocate nothing after the first call", "[workspace][alloc]") {
    // allocations made by calls 2 to 4 of `call`
    auto steady_allocations = [](auto&& call) {
        call();
        test::allocation_counter counter;
        for (int i = 0; i < 3; ++i) call();
        return counter.count();
    };
    workspace ws;
    no_state none;
    // FreeU / FreeU_V2 at an output block (the two-pass and the general direct path)
    for (auto [H, W] : std::vector<std::pair<index_t, index_t>>{{12, 10}, {2, 9}}) {
        INFO(H << "x" << W);
        auto h = test::random_tensor({1, 16, H, W}, 1), hsp = test::random_tensor({1, 8, H, W}, 2);
        const block_site site{unet_stage::output, 0, 16, &ws};
        CHECK(steady_allocations([&] {
                  free_u{.model_channels = 4}.output_block(none, site, h.as<4>(), hsp.as<4>());
                  free_u_v2{.model_channels = 4}.output_block(none, site, h.as<4>(), hsp.as<4>());
              }) == 0);
    }
    // FreSca on both paths, 5-D
    auto c = test::random_tensor({1, 4, 3, 12, 20}, 3), u = test::random_tensor({1, 4, 3, 12, 20}, 4);
    guidance_inputs<float, 5> in;
    in.cond_scale = 4.0;
    in.scratch = &ws;
    for (auto path : {fresca_path::direct, fresca_path::fft}) {
        const fresca p{0.8, 1.2, 3, path};
        CHECK(steady_allocations([&] { p.pre_cfg<float, 5>(none, in, c.as<5>(), u.as<5>()); }) == 0);
    }
    ws.release();
    CHECK(ws.bytes() == 0);
}

TEST_CASE("the arena gives the results of a standalone call", "[workspace]") {
    workspace ws;
    ws.buffer<float>(workspace::kernel_keys + 1, 4096); // stale contents must not leak in
    for (float& v : ws.buffer<float>(workspace::kernel_keys + 1, 4096)) v = 1e30f;
    auto c = test::random_tensor({2, 3, 13, 11}, 5), u = test::random_tensor({2, 3, 13, 11}, 6);
    auto c2 = c;
    const fresca p{0.6, 1.4, 2, fresca_path::direct};
    guidance_inputs<float, 4> in;
    in.cond_scale = 3.0;
    no_state none;
    p.pre_cfg<float, 4>(none, in, c.as<4>(), u.as<4>()); // local scratch
    in.scratch = &ws;
    p.pre_cfg<float, 4>(none, in, c2.as<4>(), u.as<4>());
    CHECK(test::bit_equal(c, c2));

    auto h = test::random_tensor({1, 8, 9, 7}, 7), hsp = test::random_tensor({1, 8, 9, 7}, 8);
    auto h2 = h, hsp2 = hsp;
    const free_u_v2 fu{.model_channels = 2};
    fu.output_block(none, block_site{unet_stage::output, 0, 8}, h.as<4>(), hsp.as<4>());
    fu.output_block(none, block_site{unet_stage::output, 0, 8, &ws}, h2.as<4>(), hsp2.as<4>());
    CHECK(test::bit_equal(h, h2));
    CHECK(test::bit_equal(hsp, hsp2));
}

TEST_CASE("PAG's perturbed prediction lives in the arena and survives the block hooks of its call",
          "[workspace][pag]") {
    workspace ws;
    const auto x = test::random_tensor({1, 4, 8, 8}, 9), cond = test::random_tensor({1, 4, 8, 8}, 11);
    tensor<float> sigma({1});
    sigma[0] = 2.f;
    const auto denoised0 = test::random_tensor({1, 4, 8, 8}, 12);
    auto denoised = denoised0, denoised2 = denoised0;
    const auto perturbed = test::random_tensor({1, 4, 8, 8}, 13);
    guidance_inputs<float, 4> in{x.as<4>(), sigma.as<1>(), 5.0};
    const perturbed_attention_guidance pag{2.0};
    no_state none;
    // the "model call" writes the prediction, then runs FreeU's block hook on the same arena,
    // as the guider's extra evaluation does
    auto model = [&](view<const float, 4>, view<float, 4> out) {
        kernels::copy<float, 4>(perturbed.as<4>(), out);
        auto h = test::random_tensor({1, 16, 12, 10}, 14), hsp = test::random_tensor({1, 8, 12, 10}, 15);
        no_state st;
        free_u_v2{.model_channels = 4}.output_block(st, block_site{unet_stage::output, 0, 16, &ws}, h.as<4>(),
                                                    hsp.as<4>());
    };
    pag.post_cfg_with(none, in, cond.as<4>(), denoised.as<4>(), model); // local scratch
    in.scratch = &ws;
    pag.post_cfg_with(none, in, cond.as<4>(), denoised2.as<4>(), model);
    CHECK(test::bit_equal(denoised, denoised2));
    CHECK(ws.bytes() >= sizeof(float) * static_cast<std::size_t>(perturbed.size()));
    // result = cfg + scale (cond - perturbed): the prediction was not overwritten by FreeU
    for (index_t i = 0; i < denoised2.size(); ++i)
        REQUIRE(denoised2[i] == Approx(denoised0[i] + 2.f * (cond[i] - perturbed[i])).margin(1e-5));
}

} // namespace test_core_workspace
