// Tests for kernels/elementwise.hpp: SIMD, tail and strided paths compute the same values.
#include <catch2/catch.hpp>

#include "patchbay/core/tensor.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "test_util.hpp"

using namespace patchbay;

TEST_CASE("cfg_combine is uncond + s * (cond - uncond) on every path", "[kernels][elementwise]") {
    // 3*5*7*11 elements: not a multiple of any SIMD width, so the scalar tail runs too.
    auto c = test::random_tensor({3, 5, 7, 11}, 1);
    auto u = test::random_tensor({3, 5, 7, 11}, 2);
    tensor<float> out({3, 5, 7, 11});
    kernels::cfg_combine(c.as<4>(), u.as<4>(), 6.5, out.as<4>());
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == u[i] + (c[i] - u[i]) * 6.5f);

    // Strided output: write into every other element of a larger buffer.
    tensor<float> wide({3, 5, 7, 22});
    view<float, 4> strided(wide.data(), {3, 5, 7, 11}, {5 * 7 * 22, 7 * 22, 22, 2});
    kernels::cfg_combine(c.as<4>(), u.as<4>(), 6.5, strided);
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(wide[2 * i] == out[i]);
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(wide[2 * i + 1] == 0.f); // untouched
}

TEST_CASE("transform may write in place over one of its inputs", "[kernels][elementwise]") {
    auto a = test::random_tensor({1, 4, 9, 9}, 5);
    const auto orig = a;
    kernels::transform(a.as<4>(), [](auto x) { return x * 2.0f + 1.0f; }, view<const float, 4>(a.as<4>()));
    for (index_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == orig[i] * 2.0f + 1.0f);
}

TEST_CASE("copy handles a negative stride", "[kernels][elementwise]") {
    auto a = test::random_tensor({1, 1, 1, 10}, 9);
    view<const float, 4> reversed(a.data() + 9, {1, 1, 1, 10}, {10, 10, 10, -1});
    tensor<float> out({1, 1, 1, 10});
    kernels::copy(reversed, out.as<4>());
    for (index_t i = 0; i < 10; ++i) REQUIRE(out[i] == a[9 - i]);
}
