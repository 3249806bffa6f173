// Tests for patchbay/sampling/latent_format.hpp: SDXL_Playground_2_5's per-channel
// normalisation (installed by ModelSamplingContinuousEDM edm_playground_v2.5).
#include <catch2/catch.hpp>

#include <string>

#include "patchbay/sampling/latent_format.hpp"
#include "test_util.hpp"

namespace test_sampling_latent_format {

using namespace patchbay;

TEST_CASE("SDXL_Playground_2_5 constants", "[latent_format]") {
    constexpr const auto& f = sdxl_playground_2_5_latent_format;
    static_assert(f.scale_factor == 0.5f);
    static_assert(f.mean[1] == 1.886f && f.std_dev[3] == 5.2299f);
    CHECK(f.name == "SDXL_Playground_2_5");
}

TEST_CASE("process_in normalises each channel, process_out restores it", "[latent_format]") {
    const auto& f = sdxl_playground_2_5_latent_format;
    // z = mean -> 0; z = mean + std -> scale_factor
    tensor<float> z({2, 4, 3, 2}), out(z.shape());
    for (index_t b = 0; b < 2; ++b)
        for (index_t c = 0; c < 4; ++c)
            for (index_t i = 0; i < 6; ++i)
                z.as<4>()(b, c, i / 2, i % 2) = f.mean[std::size_t(c)] + (i % 2 ? f.std_dev[std::size_t(c)] : 0.0f);
    f.process_in<float, 4>(z.as<4>(), out.as<4>());
    for (index_t b = 0; b < 2; ++b)
        for (index_t c = 0; c < 4; ++c)
            for (index_t i = 0; i < 6; ++i)
                REQUIRE(out.as<4>()(b, c, i / 2, i % 2) == Approx(i % 2 ? 0.5 : 0.0).margin(1e-6));
    // round trip on random data, 5-D, in place, double
    const auto x = test::random_tensor({1, 4, 2, 3, 3}, 91, 0.5f, 6.0f);
    tensor<float> y = x;
    f.process_in<float, 5>(y.as<5>(), y.as<5>());
    CHECK(test::max_abs_diff(y, x) > 0.5);
    f.process_out<float, 5>(y.as<5>(), y.as<5>());
    CHECK(test::max_abs_diff(y, x) < 1e-5);
    tensor<double> xd(x.shape()), yd(x.shape());
    for (index_t i = 0; i < x.size(); ++i) xd[i] = x[i];
    f.process_in<double, 5>(xd.as<5>(), yd.as<5>());
    for (index_t i = 0; i < x.size(); ++i) {
        const index_t c = (i / 18) % 4;
        REQUIRE(yd[i] == Approx((xd[i] - double(f.mean[std::size_t(c)])) * 0.5 / double(f.std_dev[std::size_t(c)])).epsilon(1e-12));
    }
}

TEST_CASE("latent format bad input", "[latent_format]") {
    const auto& f = sdxl_playground_2_5_latent_format;
    tensor<float> three({1, 3, 4, 4}), four({1, 4, 4, 4}), other({1, 4, 4, 5});
    const std::string msg = test::error_of([&] { f.process_in<float, 4>(three.as<4>(), three.as<4>()); });
    CHECK(msg.find("SDXL_Playground_2_5") != std::string::npos);
    CHECK(msg.find("4 channels") != std::string::npos);
    CHECK_THROWS_AS(([&] { f.process_out<float, 4>(four.as<4>(), other.as<4>()); }()), patchbay::error);
}

} // namespace test_sampling_latent_format
