// patches/cfg/video_cfg_guidance.hpp: the per-frame scales (Linear, Triangle, batch 1 gets
// min_cfg), a float64 reference, cond_scale 1 still scaling the frames, 5-D batch > 1 with one
// scale per item (= the (B, C*T, H, W) view), out aliasing cond, strided = contiguous bit for
// bit, bad input through apply_cfg_function.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/cfg/video_cfg_guidance.hpp"

namespace test_patches_cfg_video_cfg_guidance {

using namespace patchbay;
using test::wave::cfg_call;
using test::wave::random_call;

namespace {

template <std::size_t R, class P, class T>
tensor<T> run(const P& p, const cfg_call<T>& c) {
    tensor<T> out(c.cond.shape());
    no_state st;
    apply_cfg_function(p, st, c.template inputs<R>(), c.cond.template as<R>(), c.uncond.template as<R>(),
                       out.template as<R>());
    return out;
}

/// uncond + scale_b (cond - uncond) in float64.
template <class T, class P>
tensor<double> reference(const P& p, const cfg_call<T>& c) {
    const index_t B = c.cond.extent(0), n = c.cond.size() / B;
    tensor<double> out(c.cond.shape());
    for (index_t b = 0; b < B; ++b) {
        const double s = p.scale(b, B, c.cond_scale);
        for (index_t i = b * n; i < (b + 1) * n; ++i)
            out[i] = double(c.uncond[i]) + s * (double(c.cond[i]) - double(c.uncond[i]));
    }
    return out;
}

} // namespace

TEST_CASE("Video CFG descriptors", "[video_cfg]") {
    CHECK(video_linear_cfg_guidance::descriptor().class_type == "VideoLinearCFGGuidance");
    CHECK(video_triangle_cfg_guidance::descriptor().class_type == "VideoTriangleCFGGuidance");
    CHECK(video_linear_cfg_guidance::descriptor().slot == hook_kind::cfg_function);
    CHECK(to_string(video_triangle_cfg_guidance{2.5}) == "VideoTriangleCFGGuidance(min_cfg=2.5)");
}

TEST_CASE("Video CFG scales over the frames", "[video_cfg]") {
    const video_linear_cfg_guidance lin{1.0};
    const video_triangle_cfg_guidance tri{1.0};
    const double want_lin[] = {1.0, 1.5, 2.0, 2.5, 3.0};
    const double want_tri[] = {1.0, 2.0, 3.0, 2.0, 1.0}; // t = 0, 0.5, 1, 0.5, 0
    for (index_t b = 0; b < 5; ++b) {
        CHECK(lin.scale(b, 5, 3.0) == want_lin[b]);
        CHECK(tri.scale(b, 5, 3.0) == want_tri[b]);
    }
    // batch 1: linspace(a, b, 1) = [a], so a single image gets min_cfg
    CHECK(video_linear_cfg_guidance{1.5}.scale(0, 1, 6.0) == 1.5);
    CHECK(video_triangle_cfg_guidance{1.5}.scale(0, 1, 6.0) == 1.5);
    // min_cfg above cond_scale: the scale decreases
    CHECK(video_linear_cfg_guidance{10.0}.scale(1, 2, 4.0) == 4.0);
    // even frame counts: the triangle never reaches its peak
    CHECK(tri.scale(1, 4, 4.0) == Approx(1.0 + 3.0 * 2.0 / 3.0));
}

TEMPLATE_TEST_CASE("Video CFG matches the float64 reference", "[video_cfg]", float, double) {
    const double tol = std::is_same_v<TestType, float> ? 2e-5 : 1e-12;
    const auto c = random_call<TestType>({6, 4, 7, 9}, 10, 2.5);
    CHECK(test::wave::max_rel_diff(run<4>(video_linear_cfg_guidance{0.5}, c), reference(video_linear_cfg_guidance{0.5}, c)) < tol);
    CHECK(test::wave::max_rel_diff(run<4>(video_triangle_cfg_guidance{0.5}, c), reference(video_triangle_cfg_guidance{0.5}, c)) < tol);
}

TEST_CASE("Video CFG at cond_scale 1 still scales the frames (uncond zeros)", "[video_cfg]") {
    auto c = random_call({4, 4, 8, 8}, 20, 1.0);
    c.uncond.fill(0.f);
    c.uncond_is_none = true;
    const auto out = run<4>(video_linear_cfg_guidance{0.5}, c);
    const index_t n = c.cond.size() / 4;
    for (index_t b = 0; b < 4; ++b) {
        const double s = 0.5 + 0.5 * double(b) / 3.0;
        for (index_t i = b * n; i < (b + 1) * n; ++i) REQUIRE(out[i] == Approx(s * c.cond[i]).margin(1e-5));
    }
}

TEST_CASE("Video CFG on 5-D latents: one scale per batch item", "[video_cfg]") {
    const auto c = random_call({3, 4, 2, 6, 6}, 30, 4.0);
    // the same data as (B, C*T, H, W): ComfyUI's function on that view is the recorded behaviour
    cfg_call<float> flat = c;
    for (auto* t : {&flat.x, &flat.cond, &flat.uncond}) {
        tensor<float> r({3, 8, 6, 6});
        std::copy(t->data(), t->data() + t->size(), r.data());
        *t = r;
    }
    const auto five = run<5>(video_triangle_cfg_guidance{1.0}, c);
    const auto four = run<4>(video_triangle_cfg_guidance{1.0}, flat);
    for (index_t i = 0; i < five.size(); ++i) REQUIRE(five[i] == four[i]);
}

TEST_CASE("Video CFG: out may be cond; strided inputs give the contiguous result bit for bit", "[video_cfg]") {
    const auto c = random_call({5, 3, 5, 11}, 40, 6.0);
    const video_linear_cfg_guidance p{1.0};
    const auto want = run<4>(p, c);
    no_state st;
    auto aliased = c;
    apply_cfg_function(p, st, aliased.inputs<4>(), aliased.cond.as<4>(), aliased.uncond.as<4>(), aliased.cond.as<4>());
    CHECK(test::bit_equal(aliased.cond, want));
    test::wave::strided<float> x(c.x), cond(c.cond), uncond(c.uncond), out(c.cond);
    auto in = c.inputs<4>();
    in.x = x.as<4>();
    apply_cfg_function(p, st, in, cond.as<4>(), uncond.as<4>(), out.as<4>());
    CHECK(test::bit_equal(out.values(), want));
}

TEST_CASE("Video CFG rejects bad input through apply_cfg_function", "[video_cfg]") {
    const auto c = random_call({4, 4, 8, 8}, 50, 3.0);
    tensor<float> out(c.cond.shape());
    no_state st;
    CHECK_THROWS_WITH(apply_cfg_function(video_linear_cfg_guidance{-1.0}, st, c.inputs<4>(), c.cond.as<4>(),
                                         c.uncond.as<4>(), out.as<4>()),
                      Catch::Contains("VideoLinearCFGGuidance") && Catch::Contains("min_cfg"));
    tensor<float> narrow({4, 4, 8, 7});
    narrow.fill(0.f);
    CHECK_THROWS_WITH(apply_cfg_function(video_triangle_cfg_guidance{}, st, c.inputs<4>(), c.cond.as<4>(),
                                         narrow.as<4>(), out.as<4>()),
                      Catch::Contains("VideoTriangleCFGGuidance") && Catch::Contains("uncond"));
    auto in = c.inputs<4>();
    in.x = {};
    CHECK_THROWS_WITH(apply_cfg_function(video_triangle_cfg_guidance{}, st, in, c.cond.as<4>(), c.uncond.as<4>(),
                                         out.as<4>()),
                      Catch::Contains("VideoTriangleCFGGuidance") && Catch::Contains("'x'"));
}

} // namespace test_patches_cfg_video_cfg_guidance
