// Tests for adapters/xtensor.hpp: xt::xtensor and xt::adapt give the raw view.
#include <catch2/catch.hpp>

#include <xtensor/xadapt.hpp>
#include <xtensor/xtensor.hpp>

#include "patchbay/adapters/raw.hpp"
#include "patchbay/adapters/xtensor.hpp"
#include "test_util.hpp"

namespace test_adapters_xtensor {

using namespace patchbay;

TEST_CASE("xt::xtensor and xt::adapt give the same view as raw", "[adapters][xtensor]") {
    auto t = test::random_tensor({2, 3, 4, 5}, 4);
    const auto r = from_raw<4>(t.data(), {2, 3, 4, 5});
    std::array<std::size_t, 4> shape{2, 3, 4, 5};
    auto adapted = xt::adapt(t.data(), static_cast<std::size_t>(t.size()), xt::no_ownership(), shape);
    const auto a = from_xtensor<4>(adapted);
    CHECK(a.data_handle() == r.data_handle());
    CHECK(a.extents() == r.extents());
    CHECK(a(1, 2, 3, 4) == r(1, 2, 3, 4));

    xt::xtensor<float, 4> owned = adapted;
    const auto o = from_xtensor<4>(owned);
    CHECK(o.extents() == r.extents());
    for (index_t i = 0; i < 2; ++i)
        for (index_t w = 0; w < 5; ++w) CHECK(o(i, 1, 2, w) == r(i, 1, 2, w));
    // a single-channel tensor: xtensor gives the size-1 dim stride 0, which the view accepts
    xt::xtensor<float, 4> one = xt::zeros<float>({1, 1, 3, 3});
    CHECK(from_xtensor<4>(one).is_contiguous());
    CHECK_THROWS_AS(from_xtensor<3>(owned), patchbay::error);
}

} // namespace test_adapters_xtensor
