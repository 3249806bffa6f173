// Tests for adapters/raw.hpp: raw buffers and ggml ne/nb tensors give the expected views.
#include <catch2/catch.hpp>

#include "patchbay/adapters/raw.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "test_util.hpp"

namespace test_adapters_raw {

using namespace patchbay;

TEST_CASE("from_raw gives a C-order view", "[adapters]") {
    auto t = test::random_tensor({2, 3, 4, 5}, 1);
    const auto v = from_raw<4>(t.data(), {2, 3, 4, 5});
    CHECK(v.is_contiguous());
    CHECK(v.stride(0) == 60);
    CHECK(v.stride(3) == 1);
    CHECK(v(1, 2, 3, 4) == t[119]);
    CHECK_THROWS_AS(from_raw<4>(t.data(), {2, 0, 4, 5}), patchbay::error);
    CHECK_THROWS_AS(from_raw<4>(static_cast<float*>(nullptr), {2, 3, 4, 5}), patchbay::error);
}

TEST_CASE("from_ggml reverses ne/nb into (N, C, H, W) and converts byte strides", "[adapters]") {
    auto t = test::random_tensor({2, 3, 4, 5}, 2);
    const std::int64_t ne[4] = {5, 4, 3, 2};                 // W, H, C, N
    const std::size_t nb[4] = {4, 4 * 5, 4 * 20, 4 * 60};   // bytes
    const auto g = from_ggml<4>(t.data(), ne, nb);
    const auto r = from_raw<4>(t.data(), {2, 3, 4, 5});
    CHECK(g.extents() == r.extents());
    CHECK(g.strides() == r.strides());
    CHECK(g.data_handle() == r.data_handle());

    // a permuted ggml tensor (H and W swapped through nb) is a strided view of the same data
    const std::int64_t ne_t[4] = {4, 5, 3, 2};
    const std::size_t nb_t[4] = {4 * 5, 4, 4 * 20, 4 * 60};
    const auto gt = from_ggml<4>(t.data(), ne_t, nb_t);
    CHECK_FALSE(gt.is_contiguous());
    CHECK(gt(1, 2, 4, 3) == r(1, 2, 3, 4)); // h and w swap roles through nb
    double a[2] = {}, b[2] = {};
    kernels::sample_sum_sq(gt, a);
    kernels::sample_sum_sq(r, b);
    for (int i = 0; i < 2; ++i) CHECK(a[i] == Approx(b[i]).epsilon(1e-6));

    const std::size_t nb_bad[4] = {2, 4 * 5, 4 * 20, 4 * 60}; // half a float: not a float view
    CHECK_THROWS_AS(from_ggml<4>(t.data(), ne, nb_bad), patchbay::error);
}

TEST_CASE("ggml F16 tensors are f16 storage views (2-byte strides)", "[adapters][raw][half]") {
    // ggml_fp16_t is the IEEE binary16 bits: the buffer is viewed as patchbay::f16
    std::vector<std::uint16_t> buf(2 * 3 * 5);
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = to_f16(0.25f * static_cast<float>(i) - 2.0f).bits;
    const std::int64_t ne[3] = {5, 3, 2};
    const std::size_t nb[3] = {2, 10, 30};
    const view<f16, 3> v = from_ggml<3>(reinterpret_cast<f16*>(buf.data()), ne, nb);
    CHECK(v.extent(0) == 2);
    CHECK(v.stride(1) == 5);
    CHECK(to_float(v(1, 2, 4)) == 0.25f * 29.0f - 2.0f);
    const std::size_t bad_nb[3] = {2, 9, 30}; // not a multiple of the element size
    CHECK_THROWS_WITH(from_ggml<3>(reinterpret_cast<f16*>(buf.data()), ne, bad_nb), Catch::Contains("nb[1]"));
}

} // namespace test_adapters_raw
