// Tests for adapters/eigen.hpp: RowMajor maps are the raw view; ColMajor maps keep Eigen's
// logical index order (a strided view), never a silent transpose.
#include <catch2/catch.hpp>

#include <cstdint>
#include <utility>

#include "patchbay/adapters/eigen.hpp"
#include "patchbay/adapters/raw.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "test_util.hpp"

namespace test_adapters_eigen {

using namespace patchbay;

TEST_CASE("RowMajor TensorMap gives the same view as raw", "[adapters][eigen]") {
    auto t = test::random_tensor({2, 3, 4, 5}, 3);
    Eigen::TensorMap<Eigen::Tensor<float, 4, Eigen::RowMajor>> map(t.data(), 2, 3, 4, 5);
    const auto e = from_eigen(map);
    const auto r = from_raw<4>(t.data(), {2, 3, 4, 5});
    CHECK(e.extents() == r.extents());
    CHECK(e.strides() == r.strides());
    CHECK(e.data_handle() == r.data_handle());
}

TEST_CASE("ColMajor tensors keep Eigen's logical indexing", "[adapters][eigen]") {
    Eigen::Tensor<float, 4, Eigen::ColMajor> cm(2, 3, 4, 5);
    cm.setRandom();
    const auto e = from_eigen(cm);
    CHECK_FALSE(e.is_contiguous());
    for (int n = 0; n < 2; ++n)
        for (int c = 0; c < 3; ++c)
            for (int h = 0; h < 4; ++h)
                for (int w = 0; w < 5; ++w) REQUIRE(e(n, c, h, w) == cm(n, c, h, w));
    // the same kernel result as a RowMajor copy of the same logical tensor
    Eigen::Tensor<float, 4, Eigen::RowMajor> rm = cm.swap_layout().shuffle(Eigen::array<int, 4>{3, 2, 1, 0});
    double a[2] = {}, b[2] = {};
    kernels::sample_sum_sq(e, a);
    kernels::sample_sum_sq(from_eigen(rm), b);
    for (int i = 0; i < 2; ++i) CHECK(a[i] == Approx(b[i]).epsilon(1e-6));
}

TEST_CASE("Eigen::half and Eigen::bfloat16 tensors are f16 / bf16 storage views", "[adapters][eigen][half]") {
    Eigen::Tensor<Eigen::half, 4, Eigen::RowMajor> h(1, 2, 3, 4);
    Eigen::Tensor<Eigen::bfloat16, 4> b(1, 2, 3, 4); // ColMajor: a strided view
    for (int c = 0; c < 2; ++c)
        for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 4; ++x) {
                const float f = 0.37f * static_cast<float>(c * 12 + y * 4 + x) - 3.1f;
                h(0, c, y, x) = Eigen::half(f);
                b(0, c, y, x) = Eigen::bfloat16(f);
            }
    const view<f16, 4> hv = from_eigen(h);
    const view<const bf16, 4> bv = from_eigen(std::as_const(b));
    CHECK(hv.is_contiguous());
    CHECK_FALSE(bv.is_contiguous());
    for (int c = 0; c < 2; ++c)
        for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 4; ++x) {
                CHECK(to_float(hv(0, c, y, x)) == static_cast<float>(h(0, c, y, x)));
                CHECK(to_float(bv(0, c, y, x)) == static_cast<float>(b(0, c, y, x)));
            }
    // Eigen rounds to nearest even as patchbay does
    CHECK(to_f16(0.1f).bits == Eigen::half(0.1f).x);
    CHECK(to_bf16(0.1f).bits == Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(0.1f)));
}

} // namespace test_adapters_eigen
