// Tests for kernels/reduce.hpp: SIMD and strided paths agree; long sums stay float32-exact;
// the fused-write and per-column forms compute what they say, bit for bit across layouts.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "patchbay/core/tensor.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "test_util.hpp"

namespace test_kernels_reduce {

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

namespace {

/// A copy of t stored with its last two dims swapped in memory (a strided view of it).
struct transposed_copy {
    tensor<float> storage;
    view<float, 4> v;
    explicit transposed_copy(const tensor<float>& t)
        : storage({t.extent(0), t.extent(1), t.extent(3), t.extent(2)}),
          v(storage.data(), {t.extent(0), t.extent(1), t.extent(2), t.extent(3)},
            {t.extent(1) * t.extent(2) * t.extent(3), t.extent(2) * t.extent(3), 1, t.extent(2)}) {
        kernels::copy<float, 4>(t.as<4>(), v);
    }
};

} // namespace

TEST_CASE("reduce sums exactly enough on every length and layout", "[kernels][reduce]") {
    auto terms = [](auto x, auto y) { return std::array{x * x, x * y, y - x}; };
    for (index_t n : {1, 7, 8, 31, 32, 33, 255, 513, 4096 + 5, 70000}) {
        const auto a = test::random_tensor({n}, 21), b = test::random_tensor({n}, 22);
        const auto got = kernels::reduce<3>(terms, a.as<1>(), b.as<1>());
        double exact[3] = {0, 0, 0};
        for (index_t i = 0; i < n; ++i) {
            exact[0] += double(a[i]) * a[i];
            exact[1] += double(a[i]) * b[i];
            exact[2] += double(b[i]) - a[i];
        }
        INFO("n = " << n);
        for (std::size_t k = 0; k < 3; ++k) CHECK(got[k] == Approx(exact[k]).epsilon(1e-6).margin(1e-4));
    }
    // every other element: the scalar path, against the contiguous copy
    const auto a = test::random_tensor({2000}, 23);
    const view<const float, 1> even(a.data(), {1000}, {2}), odd(a.data() + 1, {1000}, {2});
    const auto packed_even = tensor<float>::copy_of(even), packed_odd = tensor<float>::copy_of(odd);
    const auto got = kernels::reduce<3>(terms, even, odd);
    const auto want = kernels::reduce<3>(terms, packed_even.as<1>(), packed_odd.as<1>());
    for (std::size_t k = 0; k < 3; ++k) CHECK(got[k] == Approx(want[k]).epsilon(1e-6).margin(1e-5));
}

TEST_CASE("transform_reduce writes f and sums g of what it wrote", "[kernels][reduce]") {
    for (index_t n : {5, 64, 1000, 4099}) {
        const auto a = test::random_tensor({n}, 31), b = test::random_tensor({n}, 32);
        tensor<float> out({n});
        const auto sums = kernels::transform_reduce<2>(
            out.as<1>(), [](auto x, auto y) { return x - y * 0.5f; },
            [](auto o, auto x, auto) { return std::array{o * o, o * x}; }, a.as<1>(), b.as<1>());
        double e0 = 0, e1 = 0;
        for (index_t i = 0; i < n; ++i) {
            REQUIRE(out[i] == a[i] - b[i] * 0.5f);
            e0 += double(out[i]) * out[i];
            e1 += double(out[i]) * a[i];
        }
        CHECK(sums[0] == Approx(e0).epsilon(1e-6));
        CHECK(sums[1] == Approx(e1).epsilon(1e-6).margin(1e-4));
    }
    // in place over a strided input: every element rewritten, sums as for the packed copy
    auto t = test::random_tensor({2, 3, 9, 7}, 33);
    transposed_copy s(t);
    auto packed = t;
    const auto f = [](auto x) { return x * 3.0f - 1.0f; };
    const auto g = [](auto o, auto) { return std::array{o}; };
    const auto got = kernels::transform_reduce<1>(s.v, f, g, view<const float, 4>(s.v));
    const auto want = kernels::transform_reduce<1>(packed.as<4>(), f, g, view<const float, 4>(packed.as<4>()));
    CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(s.v)), packed));
    CHECK(got[0] == Approx(want[0]).epsilon(1e-6));
}

TEST_CASE("reduce_channels sums over dim 1 per pixel, bit for bit across layouts", "[kernels][reduce]") {
    // channel counts around the tile sweeps' row groups and blocks (40 is three blocks of
    // channels); 50x50 pixels span two tiles of columns
    struct shape { index_t channels, h, w; };
    for (const shape sh : {shape{1, 9, 7}, shape{3, 9, 7}, shape{8, 9, 7}, shape{9, 9, 7}, shape{16, 9, 7},
                           shape{40, 9, 7}, shape{4, 50, 50}}) {
        const index_t channels = sh.channels, pixels = sh.h * sh.w;
        const auto t = test::random_tensor({2, channels, sh.h, sh.w}, 11);
        std::vector<float> packed_sums(static_cast<std::size_t>(2 * pixels * 2), -1.f);
        std::vector<float> strided_sums = packed_sums;
        auto collect = [&](std::vector<float>& dst) {
            return [&dst, pixels](index_t b, index_t p0, index_t len, const std::array<const float*, 2>& sums) {
                for (index_t i = 0; i < len; ++i)
                    for (std::size_t k = 0; k < 2; ++k)
                        dst[static_cast<std::size_t>(((b * pixels) + p0 + i) * 2) + k] = sums[k][i];
            };
        };
        auto terms = [](auto a) { return std::array{a * a, a}; };
        kernels::reduce_channels<2>(terms, collect(packed_sums), t.as<4>());
        const transposed_copy s(t);
        kernels::reduce_channels<2>(terms, collect(strided_sums), view<const float, 4>(s.v));
        INFO("channels = " << channels);
        CHECK(packed_sums == strided_sums);
        for (index_t b = 0; b < 2; ++b)
            for (index_t p = 0; p < pixels; ++p) {
                double sq = 0, sum = 0;
                for (index_t c = 0; c < channels; ++c) {
                    const double x = t[(b * channels + c) * pixels + p];
                    sq += x * x;
                    sum += x;
                }
                const auto at = static_cast<std::size_t>((b * pixels + p) * 2);
                CHECK(packed_sums[at] == Approx(sq).epsilon(1e-5));
                CHECK(packed_sums[at + 1] == Approx(sum).epsilon(1e-5).margin(1e-5));
            }
    }
}

TEST_CASE("reduce_columns sums over the middle dims per column in double blocks", "[kernels][reduce]") {
    // (items, rows..., columns): 2 items, 3*5*11 = 165 rows, 37 columns
    const auto t = test::random_tensor({2, 3, 5, 11, 37}, 41, 0.5f);
    std::vector<double> got(2 * 37, -1.0);
    kernels::reduce_columns<1, 4>(
        [](auto a) { return std::array{a}; },
        [&](index_t b, index_t c0, index_t len, const std::array<const double*, 1>& sums) {
            for (index_t j = 0; j < len; ++j) got[static_cast<std::size_t>(b * 37 + c0 + j)] = sums[0][j];
        },
        t.as<5>());
    for (index_t b = 0; b < 2; ++b)
        for (index_t w = 0; w < 37; ++w) {
            double want = 0;
            for (index_t r = 0; r < 165; ++r) want += t[(b * 165 + r) * 37 + w];
            CHECK(got[static_cast<std::size_t>(b * 37 + w)] == Approx(want).epsilon(1e-6));
        }

    // one long column: float blocks, double between them, so float32-exact
    const index_t rows = 1'000'000;
    const auto col = test::random_tensor({1, rows, 2}, 42, 0.3f, 2.0f);
    long double ref = 0;
    for (index_t r = 0; r < rows; ++r) ref += col[r * 2];
    double sum = 0;
    kernels::reduce_columns<1, 2>([](auto a) { return std::array{a}; },
                                  [&](index_t, index_t c0, index_t, const std::array<const double*, 1>& s) {
                                      if (c0 == 0) sum = s[0][0];
                                  },
                                  col.as<3>());
    CHECK(std::fabs(sum - static_cast<double>(ref)) <= 2e-7 * std::fabs(static_cast<double>(ref)));
}

// reduce_channels_map on (2, channels, 9, width): the packed layout (up to 8 channels: the
// single-pass register path, 1 to 4 compiled per count, more with a run-time count and four
// column batches, which 135 pixels reach at 16 lanes; more channels: the tiles) against the
// transposed copy (the gathered tile path), bit for bit, and both against double sums.
static void check_channel_map(index_t channels, index_t width) {
    const index_t P = 9 * width;
    const auto t = test::random_tensor({2, channels, 9, width}, 51);
    // each pixel scaled by 1 / (1 + its channel sum of squares)
    auto terms = [](auto a) { return std::array{a * a}; };
    auto factor = [](const auto& s) { return 1.0f / (s[0] + 1.0f); };
    auto apply = [](auto f, auto a) { return a * f; };
    auto packed = t;
    kernels::reduce_channels_map<1>(packed.as<4>(), terms, factor, apply, view<const float, 4>(packed.as<4>()));
    transposed_copy s(t);
    kernels::reduce_channels_map<1>(s.v, terms, factor, apply, view<const float, 4>(s.v));
    INFO("channels = " << channels << ", width = " << width);
    CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(s.v)), packed));
    for (index_t b = 0; b < 2; ++b)
        for (index_t p = 0; p < P; ++p) {
            double sq = 0;
            for (index_t c = 0; c < channels; ++c) sq += double(t[(b * channels + c) * P + p]) * t[(b * channels + c) * P + p];
            for (index_t c = 0; c < channels; ++c) {
                const index_t i = (b * channels + c) * P + p;
                REQUIRE(packed[i] == Approx(t[i] / (sq + 1.0)).epsilon(1e-5));
            }
        }
}

TEST_CASE("the channel map's register path per row count, bit for bit with the tiles",
          "[kernels][reduce]") {
    for (index_t width : {7, 15})
        for (index_t channels : {1, 2, 3, 4, 5, 8, 9}) check_channel_map(channels, width);
}

TEST_CASE("the column maps write apply(factor(sums)) in place, bit for bit across layouts", "[kernels][reduce]") {
    for (index_t channels : {1, 4, 8, 9, 19}) check_channel_map(channels, 7);
    // per column over (C, H) with double sums: out = in - column mean
    const auto t = test::random_tensor({2, 3, 40, 21}, 52, 4.0f);
    tensor<float> out({2, 3, 40, 21});
    kernels::reduce_columns_map<1, 3>(
        out.as<4>(), [](auto a) { return std::array{a}; },
        [](const std::array<double, 1>& s) { return static_cast<float>(s[0] / 120.0); },
        [](auto mean, auto a) { return a - mean; }, t.as<4>());
    for (index_t b = 0; b < 2; ++b)
        for (index_t w = 0; w < 21; ++w) {
            double sum = 0;
            for (index_t r = 0; r < 120; ++r) sum += t[(b * 120 + r) * 21 + w];
            const auto mean = static_cast<float>(sum / 120.0);
            for (index_t r = 0; r < 120; ++r) {
                const index_t i = (b * 120 + r) * 21 + w;
                REQUIRE(out[i] == Approx(t[i] - mean).margin(1e-6));
            }
        }
}

} // namespace test_kernels_reduce
