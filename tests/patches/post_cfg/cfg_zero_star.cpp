// patches/post_cfg/cfg_zero_star.hpp: a float64 reference written from the semantics (4-D,
// 5-D, odd sizes, float and double), uncond == x (alpha 0), the cond_scale 1 pass-through,
// batch split, strided = contiguous bit for bit, relative to the denoised it is handed, bad
// input through apply_post_cfg.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/post_cfg/cfg_zero_star.hpp"

namespace test_patches_post_cfg_cfg_zero_star {

using namespace patchbay;
using test::wave::cfg_call;
using test::wave::random_call;

namespace {

/// CFGZeroStar applied to `denoised` (default: the plain CFG result) through the checked entry.
template <std::size_t R, class T>
tensor<T> run(const cfg_call<T>& c, const tensor<T>* denoised = nullptr) {
    tensor<T> d = denoised ? *denoised : c.template cfg<R>();
    no_state st;
    apply_post_cfg(cfg_zero_star{}, st, c.template inputs<R>(), c.cond.template as<R>(), c.uncond.template as<R>(),
                   d.template as<R>());
    return d;
}

/// semantics-guidance.md section 1 in float64.
template <class T>
tensor<double> reference(const cfg_call<T>& c, const tensor<T>& denoised) {
    const index_t B = c.cond.extent(0), n = c.cond.size() / B;
    tensor<double> out(c.cond.shape());
    for (index_t b = 0; b < B; ++b) {
        double dot = 0, sq = 0;
        for (index_t i = b * n; i < (b + 1) * n; ++i) {
            const double xc = double(c.x[i]) - double(c.cond[i]), xu = double(c.x[i]) - double(c.uncond[i]);
            dot += xc * xu;
            sq += xu * xu;
        }
        const double alpha = dot / (sq + 1e-8);
        for (index_t i = b * n; i < (b + 1) * n; ++i)
            out[i] = double(denoised[i]) + double(c.uncond[i]) * (alpha - 1) +
                     c.cond_scale * double(c.uncond[i]) * (1 - alpha);
    }
    return out;
}

} // namespace

TEST_CASE("CFGZeroStar descriptor", "[cfg_zero_star]") {
    CHECK(cfg_zero_star::descriptor().class_type == "CFGZeroStar");
    CHECK(cfg_zero_star::descriptor().slot == hook_kind::post_cfg);
    CHECK(cfg_zero_star::descriptor().input_count == 0);
    CHECK(to_string(cfg_zero_star{}) == "CFGZeroStar()");
}

TEMPLATE_TEST_CASE("CFGZeroStar matches the float64 reference", "[cfg_zero_star]", float, double) {
    const double tol = std::is_same_v<TestType, float> ? 2e-5 : 1e-12;
    SECTION("4-D batch 2") {
        const auto c = random_call<TestType>({2, 4, 16, 16}, 10, 7.0);
        const auto d = c.template cfg<4>();
        CHECK(test::wave::max_rel_diff(run<4>(c), reference(c, d)) < tol);
    }
    SECTION("5-D, odd sizes (SIMD tails)") {
        const auto c = random_call<TestType>({2, 3, 3, 7, 9}, 20, 4.5);
        const auto d = c.template cfg<5>();
        CHECK(test::wave::max_rel_diff(run<5>(c), reference(c, d)) < tol);
    }
    SECTION("relative to the denoised it is handed (an earlier hook's result)") {
        const auto c = random_call<TestType>({1, 4, 8, 8}, 30, 6.0);
        const auto other = test::wave::cast<TestType>(test::random_tensor({1, 4, 8, 8}, 33));
        CHECK(test::wave::max_rel_diff(run<4>(c, &other), reference(c, other)) < tol);
    }
}

TEST_CASE("CFGZeroStar with uncond == x gives alpha 0: denoised - uncond + s*uncond", "[cfg_zero_star]") {
    auto c = random_call({1, 4, 8, 8}, 40, 5.0);
    c.uncond = c.x;
    const auto d = c.cfg<4>();
    const auto out = run<4>(c);
    for (index_t i = 0; i < out.size(); ++i)
        REQUIRE(out[i] == Approx(d[i] - c.uncond[i] + 5.0f * c.uncond[i]).margin(1e-5));
}

TEST_CASE("CFGZeroStar at cond_scale 1 (uncond skipped, zeros) returns denoised bit for bit", "[cfg_zero_star]") {
    auto c = random_call({2, 4, 8, 8}, 50, 1.0);
    c.uncond.fill(0.f);
    const auto d = c.cfg<4>();
    for (bool flagged : {true, false}) { // the flag short-cuts; the arithmetic gives the same
        c.uncond_is_none = flagged;
        CHECK(test::bit_equal(run<4>(c), d));
    }
}

TEST_CASE("CFGZeroStar: one alpha per batch item (batch split is exact)", "[cfg_zero_star]") {
    const auto c = random_call({3, 4, 8, 8}, 60, 6.0);
    const auto whole = run<4>(c);
    for (index_t b = 0; b < 3; ++b) CHECK(test::bit_equal(test::wave::item(whole, b), run<4>(c.item(b))));
}

TEST_CASE("CFGZeroStar: strided inputs give the contiguous result bit for bit", "[cfg_zero_star]") {
    const auto c = random_call({2, 3, 5, 11}, 70, 7.0);
    CHECK(test::bit_equal(test::wave::post_cfg_strided<4>(cfg_zero_star{}, c), run<4>(c)));
}

TEST_CASE("CFGZeroStar rejects bad input through apply_post_cfg", "[cfg_zero_star]") {
    auto c = random_call({2, 4, 8, 8}, 80);
    auto d = c.cfg<4>();
    no_state st;
    const cfg_zero_star p;
    SECTION("no x") {
        auto in = c.inputs<4>();
        in.x = {};
        CHECK_THROWS_WITH(apply_post_cfg(p, st, in, c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                          Catch::Contains("CFGZeroStar") && Catch::Contains("'x'"));
    }
    SECTION("batch mismatch") {
        const auto u1 = test::wave::item(c.uncond, 0);
        CHECK_THROWS_WITH(apply_post_cfg(p, st, c.inputs<4>(), c.cond.as<4>(), u1.as<4>(), d.as<4>()),
                          Catch::Contains("CFGZeroStar") && Catch::Contains("uncond"));
    }
    SECTION("NaN cond_scale") {
        c.cond_scale = std::numeric_limits<double>::quiet_NaN();
        CHECK_THROWS_WITH(apply_post_cfg(p, st, c.inputs<4>(), c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                          Catch::Contains("CFGZeroStar") && Catch::Contains("cond_scale"));
    }
}

} // namespace test_patches_post_cfg_cfg_zero_star
