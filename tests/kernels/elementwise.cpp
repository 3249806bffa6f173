// Tests for kernels/elementwise.hpp: SIMD, tail and strided paths compute the same values;
// and the SIMD layer (kernels/detail/simd.hpp) agrees with its scalar forms.
#include <catch2/catch.hpp>

#include <vector>

#include "patchbay/core/tensor.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "test_util.hpp"

namespace test_kernels_elementwise {

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

TEST_CASE("transform_backward writes what transform writes, on every layout", "[kernels][elementwise]") {
    // 2*3*5*37 elements: SIMD batches and a scalar tail on the contiguous path; several rows
    // (walked last to first) on the strided ones
    const auto a = test::random_tensor({2, 3, 5, 37}, 11);
    const auto b = test::random_tensor({2, 3, 5, 37}, 12);
    auto f = [](auto x, auto y) { return (x - y) * 1.5f; }; // (no multiply-add to contract)
    tensor<float> forward({2, 3, 5, 37}), backward({2, 3, 5, 37});
    kernels::transform(forward.as<4>(), f, a.as<4>(), b.as<4>());
    kernels::transform_backward(backward.as<4>(), f, a.as<4>(), b.as<4>());
    CHECK(test::bit_equal(backward, forward));
    for (index_t i = 0; i < a.size(); ++i) REQUIRE(forward[i] == (a[i] - b[i]) * 1.5f);

    // strided output (every other element, untouched between) and a reversed input
    tensor<float> wide({2, 3, 5, 74});
    view<float, 4> strided(wide.data(), {2, 3, 5, 37}, {3 * 5 * 74, 5 * 74, 74, 2});
    tensor<float> flipped({2, 3, 5, 37});
    for (index_t i = 0; i < b.size(); ++i) flipped[b.size() - 1 - i] = b[i];
    view<const float, 4> b_rev(flipped.data() + b.size() - 1, {2, 3, 5, 37}, {-3 * 5 * 37, -5 * 37, -37, -1});
    kernels::transform_backward(strided, f, a.as<4>(), b_rev);
    for (index_t i = 0; i < a.size(); ++i) {
        REQUIRE(wide[2 * i] == forward[i]);
        REQUIRE(wide[2 * i + 1] == 0.f);
    }

    // in place over one of its inputs
    auto in_place = a;
    kernels::transform_backward(in_place.as<4>(), f, view<const float, 4>(in_place.as<4>()), b.as<4>());
    CHECK(test::bit_equal(in_place, forward));
}

TEST_CASE("copy handles a negative stride", "[kernels][elementwise]") {
    auto a = test::random_tensor({1, 1, 1, 10}, 9);
    view<const float, 4> reversed(a.data() + 9, {1, 1, 1, 10}, {10, 10, 10, -1});
    tensor<float> out({1, 1, 1, 10});
    kernels::copy(reversed, out.as<4>());
    for (index_t i = 0; i < 10; ++i) REQUIRE(out[i] == a[9 - i]);
}

TEST_CASE("the SIMD layer's helpers match their scalar forms lane by lane", "[kernels][simd]") {
    if constexpr (!simd::enabled) {
        SUCCEED("SIMD is off in this build");
    } else {
        using B = simd::batch<float>;
        constexpr index_t W = static_cast<index_t>(B::size);
        auto src = test::random_tensor({3 * W}, 13);
        // partial loads read n values and zero the rest; partial stores write n values only
        for (index_t n = 1; n < W; ++n) {
            alignas(simd::alignment) float lanes[B::size];
            simd::load_partial(src.data() + W, n).store_aligned(lanes);
            for (index_t l = 0; l < W; ++l) REQUIRE(lanes[l] == (l < n ? src[W + l] : 0.f));
            std::vector<float> dst(static_cast<std::size_t>(W), -1.f);
            simd::store_partial(dst.data(), B::load_unaligned(src.data()), n);
            for (index_t l = 0; l < W; ++l) REQUIRE(dst[static_cast<std::size_t>(l)] == (l < n ? src[l] : -1.f));
        }
        // widening keeps the lane order; fma, fms and fnma round as their scalar forms
        const auto wide = simd::to_double(B::load_unaligned(src.data()));
        alignas(simd::alignment) double d[B::size];
        for (std::size_t i = 0; i < wide.size(); ++i) wide[i].store_aligned(d + i * simd::batch<double>::size);
        const B a = B::load_unaligned(src.data()), b = B::load_unaligned(src.data() + W),
                c = B::load_unaligned(src.data() + 2 * W);
        alignas(simd::alignment) float f1[B::size], f2[B::size], f3[B::size];
        simd::fma(a, b, c).store_aligned(f1);
        simd::fms(a, b, c).store_aligned(f2);
        simd::fnma(a, b, c).store_aligned(f3);
        for (index_t l = 0; l < W; ++l) {
            CHECK(d[l] == static_cast<double>(src[l]));
            CHECK(f1[l] == simd::fma(src[l], src[W + l], src[2 * W + l]));
            CHECK(f2[l] == simd::fms(src[l], src[W + l], src[2 * W + l]));
            CHECK(f3[l] == simd::fnma(src[l], src[W + l], src[2 * W + l]));
        }
        CHECK(simd::hsum(a) == [&] {
            double s = 0;
            for (index_t l = 0; l < W; ++l) s += static_cast<double>(src[l]);
            return s;
        }());
    }
}

} // namespace test_kernels_elementwise
