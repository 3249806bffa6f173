// Tests for kernels/reduce.hpp: SIMD and strided paths agree; long sums stay float32-exact.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "patchbay/core/tensor.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "test_util.hpp"

using namespace patchbay;

TEST_CASE("sample reductions match a long double reference on 10^7 elements", "[kernels][reduce]") {
    const index_t n = 10'000'000;
    tensor<float> t({1, n});
    std::mt19937 rng(7);
    std::normal_distribution<float> d(0.3f, 2.0f);
    long double ref_sum = 0, ref_sq = 0;
    for (index_t i = 0; i < n; ++i) {
        t[i] = d(rng);
        ref_sum += t[i];
        ref_sq += static_cast<long double>(t[i]) * t[i];
    }
    double sum[1] = {}, sq[1] = {}, nrm[1] = {};
    kernels::sample_sum(t.as<2>(), sum);
    kernels::sample_sum_sq(t.as<2>(), sq);
    kernels::sample_l2_norm(t.as<2>(), nrm);
    // float32-exact: within a couple of float32 ulps of the exact value
    CHECK(std::fabs(sum[0] - static_cast<double>(ref_sum)) <= 2e-7 * std::fabs(static_cast<double>(ref_sum)));
    CHECK(std::fabs(sq[0] - static_cast<double>(ref_sq)) <= 2e-7 * static_cast<double>(ref_sq));
    CHECK(std::fabs(nrm[0] - std::sqrt(static_cast<double>(ref_sq))) <= 2e-7 * nrm[0]);

    kernels::moments m[1];
    kernels::sample_mean_std(t.as<2>(), 1, m);
    const long double mean = ref_sum / n;
    long double ss = 0;
    for (index_t i = 0; i < n; ++i) ss += (t[i] - mean) * (t[i] - mean);
    const double ref_std = std::sqrt(static_cast<double>(ss / (n - 1)));
    CHECK(std::fabs(m[0].mean - static_cast<double>(mean)) <= 2e-7 * std::fabs(static_cast<double>(mean)) + 1e-9);
    CHECK(std::fabs(m[0].std - ref_std) <= 2e-7 * ref_std);
}

TEST_CASE("strided views reduce to the same values as their contiguous copy", "[kernels][reduce]") {
    // Paths differ only by float rounding of the block sums (~1e-7 relative).
    // a (2, 5, 7, 9) tensor viewed through a transposed layout: dims permuted (0, 1, 3, 2)
    tensor<float> base = test::random_tensor({2, 5, 9, 7}, 3);
    const view<const float, 4> strided(base.data(), {2, 5, 7, 9},
                                       {5 * 9 * 7, 9 * 7, 1, 7}); // (H, W) swapped
    const tensor<float> packed = tensor<float>::copy_of(strided);
    REQUIRE_FALSE(strided.is_contiguous());
    double a[2] = {}, b[2] = {};
    kernels::sample_sum_sq(strided, a);
    kernels::sample_sum_sq(packed.as<4>(), b);
    for (int i = 0; i < 2; ++i) CHECK(a[i] == Approx(b[i]).epsilon(1e-6));
    kernels::moments ms[2], mp[2];
    kernels::sample_mean_std(strided, 1, ms);
    kernels::sample_mean_std(packed.as<4>(), 1, mp);
    for (int i = 0; i < 2; ++i) {
        CHECK(ms[i].mean == Approx(mp[i].mean).epsilon(1e-6));
        CHECK(ms[i].std == Approx(mp[i].std).epsilon(1e-6));
    }
    double da[2] = {}, db[2] = {};
    kernels::sample_dot(strided, strided, da);
    kernels::sample_dot(packed.as<4>(), packed.as<4>(), db);
    for (int i = 0; i < 2; ++i) CHECK(da[i] == Approx(a[i]).epsilon(1e-6));
    for (int i = 0; i < 2; ++i) CHECK(db[i] == Approx(b[i]).epsilon(1e-6));
}

TEST_CASE("std with correction 1 matches torch.std's unbiased definition", "[kernels][reduce]") {
    float v[] = {1.f, 2.f, 3.f, 4.f};
    kernels::moments m[1];
    kernels::sample_mean_std(make_view(static_cast<const float*>(v), 1, 4), 1, m);
    CHECK(m[0].mean == 2.5);
    CHECK(m[0].std == Approx(std::sqrt(5.0 / 3.0)).epsilon(1e-6));
    kernels::sample_mean_std(make_view(static_cast<const float*>(v), 1, 4), 0, m);
    CHECK(m[0].std == Approx(std::sqrt(5.0 / 4.0)).epsilon(1e-6));
}

TEST_CASE("per-pixel channel reduction sums over dim 1 only", "[kernels][reduce]") {
    tensor<float> t = test::random_tensor({2, 3, 4, 5}, 11);
    std::vector<double> acc(2 * 20);
    kernels::channel_reduce<4>([](float a) { return a * a; }, acc.data(), t.as<4>());
    for (index_t b = 0; b < 2; ++b)
        for (index_t p = 0; p < 20; ++p) {
            double want = 0;
            for (index_t c = 0; c < 3; ++c) {
                const double x = t[(b * 3 + c) * 20 + p];
                want += x * x;
            }
            CHECK(acc[static_cast<std::size_t>(b * 20 + p)] == Approx(want).epsilon(1e-6));
        }
}
