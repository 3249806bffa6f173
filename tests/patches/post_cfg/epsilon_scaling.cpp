// patches/post_cfg/epsilon_scaling.hpp: the descriptor (class_type with a space), a float64
// reference, factor 1 as a bit-exact pass-through, strided = contiguous bit for bit, bad input
// through apply_post_cfg.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/post_cfg/epsilon_scaling.hpp"

namespace test_patches_post_cfg_epsilon_scaling {

using namespace patchbay;
using test::wave::cfg_call;
using test::wave::random_call;

namespace {

template <std::size_t R, class T>
tensor<T> run(const epsilon_scaling& p, const cfg_call<T>& c) {
    tensor<T> d = c.template cfg<R>();
    no_state st;
    apply_post_cfg(p, st, c.template inputs<R>(), c.cond.template as<R>(), c.uncond.template as<R>(),
                   d.template as<R>());
    return d;
}

/// semantics-guidance.md section 2 in float64.
template <class T>
tensor<double> reference(const cfg_call<T>& c, const tensor<T>& denoised, double f) {
    tensor<double> out(c.cond.shape());
    for (index_t i = 0; i < out.size(); ++i) out[i] = double(c.x[i]) - (double(c.x[i]) - double(denoised[i])) / f;
    return out;
}

} // namespace

TEST_CASE("Epsilon Scaling descriptor: ComfyUI's class_type has a space", "[epsilon_scaling]") {
    constexpr auto d = epsilon_scaling::descriptor();
    CHECK(d.class_type == "Epsilon Scaling");
    CHECK(d.slot == hook_kind::post_cfg);
    const auto in = d.infos();
    REQUIRE(in.size() == 1);
    CHECK(in[0].name == "scaling_factor");
    CHECK(in[0].def == 1.005);
    CHECK(in[0].lo == 0.5);
    CHECK(in[0].hi == 1.5);
    CHECK(to_string(epsilon_scaling{}) == "Epsilon Scaling(scaling_factor=1.005)");
}

TEMPLATE_TEST_CASE("Epsilon Scaling matches the float64 reference", "[epsilon_scaling]", float, double) {
    const double tol = std::is_same_v<TestType, float> ? 1e-5 : 1e-13;
    for (double f : {0.5, 1.005, 1.5}) {
        const auto c = random_call<TestType>({2, 4, 9, 13}, 10, 6.0);
        CHECK(test::wave::max_rel_diff(run<4>(epsilon_scaling{f}, c), reference(c, c.template cfg<4>(), f)) < tol);
        const auto v = random_call<TestType>({1, 4, 3, 8, 8}, 20, 5.0);
        CHECK(test::wave::max_rel_diff(run<5>(epsilon_scaling{f}, v), reference(v, v.template cfg<5>(), f)) < tol);
    }
}

TEST_CASE("Epsilon Scaling at factor 1 returns denoised bit for bit", "[epsilon_scaling]") {
    const auto c = random_call({2, 4, 8, 8}, 30, 7.0);
    CHECK(test::bit_equal(run<4>(epsilon_scaling{1.0}, c), c.cfg<4>()));
}

TEST_CASE("Epsilon Scaling: factor > 1 moves denoised toward x", "[epsilon_scaling]") {
    const auto c = random_call({1, 4, 8, 8}, 35, 7.0);
    const auto d = c.cfg<4>();
    const auto out = run<4>(epsilon_scaling{1.25}, c);
    for (index_t i = 0; i < out.size(); ++i) // x - (x - d)/1.25 = 0.2 x + 0.8 d
        REQUIRE(out[i] == Approx(0.2f * c.x[i] + 0.8f * d[i]).margin(2e-6));
}

TEST_CASE("Epsilon Scaling: strided inputs give the contiguous result bit for bit", "[epsilon_scaling]") {
    const auto c = random_call({2, 3, 5, 11}, 40, 7.0);
    const epsilon_scaling p{1.1};
    CHECK(test::bit_equal(test::wave::post_cfg_strided<4>(p, c), run<4>(p, c)));
}

TEST_CASE("Epsilon Scaling rejects bad input through apply_post_cfg", "[epsilon_scaling]") {
    const auto c = random_call({1, 4, 8, 8}, 50);
    auto d = c.cfg<4>();
    no_state st;
    CHECK_THROWS_WITH(apply_post_cfg(epsilon_scaling{0.3}, st, c.inputs<4>(), c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                      Catch::Contains("Epsilon Scaling") && Catch::Contains("scaling_factor"));
    auto in = c.inputs<4>();
    in.x = {};
    CHECK_THROWS_WITH(apply_post_cfg(epsilon_scaling{}, st, in, c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                      Catch::Contains("Epsilon Scaling") && Catch::Contains("'x'"));
}

} // namespace test_patches_post_cfg_epsilon_scaling
