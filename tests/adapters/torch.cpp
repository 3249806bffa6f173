// Tests for adapters/torch.hpp (built only when libtorch is found). REQUIRE, not CHECK:
// libtorch defines its own CHECK macro.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "patchbay/adapters/raw.hpp"
#include "patchbay/adapters/torch.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace test_adapters_torch {

using namespace patchbay;

TEST_CASE("at::Tensor gives the raw view, strides kept", "[adapters][torch]") {
    torch::manual_seed(0);
    auto t = torch::randn({2, 3, 4, 5});
    const auto v = from_torch<const float, 4>(t);
    const auto r = from_raw<4>(static_cast<const float*>(t.data_ptr<float>()), {2, 3, 4, 5});
    REQUIRE(v.extents() == r.extents());
    REQUIRE(v.strides() == r.strides());
    auto tt = t.transpose(2, 3);
    const auto vt = from_torch<const float, 4>(tt);
    CHECK_FALSE(vt.is_contiguous());
    REQUIRE(vt(1, 2, 3, 1) == tt[1][2][3][1].item<float>());
    double a[2] = {}, b[2] = {};
    kernels::sample_sum_sq(vt, a);
    kernels::sample_sum_sq(v, b);
    for (int i = 0; i < 2; ++i) REQUIRE(a[i] == Approx(b[i]).epsilon(1e-6));
    CHECK_THROWS_AS((from_torch<const float, 4>(t.to(torch::kDouble))), patchbay::error);
    CHECK_THROWS_AS((from_torch<const float, 3>(t)), patchbay::error);
}

} // namespace test_adapters_torch
