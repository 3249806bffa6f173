// Tests for patchbay/patches/mask/differential_diffusion.hpp: the threshold schedule, binary
// and blended masks, strength 0 == 1, 4-D/5-D, strides, float/double, the documented limit
// for an empty timestep range, and rejection of bad masks and parameters.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "counting_allocator.hpp"
#include "patchbay/patches/mask/differential_diffusion.hpp"
#include "patchbay/sampling/schedules.hpp"
#include "test_util.hpp"

namespace test_patches_mask_differential_diffusion {

using namespace patchbay;

#define REQUIRE_BAD(...) CHECK_THROWS_AS(([&] { __VA_ARGS__; }()), patchbay::error)

namespace {

/// A graded mask with values k / (n - 1), k = 0 .. n-1, in shape (1, 1, 1, n).
tensor<float> ramp_mask(index_t n) {
    tensor<float> m({1, 1, 1, n});
    for (index_t k = 0; k < n; ++k) m[k] = static_cast<float>(k) / static_cast<float>(n - 1);
    return m;
}

tensor<float> uniform_mask(std::vector<index_t> shape, unsigned seed) {
    auto t = test::random_tensor(std::move(shape), seed);
    for (index_t i = 0; i < t.size(); ++i) t[i] = 0.5f + 0.5f * std::tanh(t[i]); // in (0, 1)
    return t;
}

} // namespace

TEST_CASE("threshold falls from 1 at the first step towards 0", "[differential_diffusion]") {
    const auto ms = model_sampling::discrete("eps");
    const auto sig = simple_schedule(10, ms);
    float prev = 2.0f;
    for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
        const float th = differential_diffusion::threshold({sig[i], sig, &ms});
        CHECK(th < prev);
        CHECK(th >= 0.0f);
        prev = th;
    }
    CHECK(differential_diffusion::threshold({sig[0], sig, &ms}) == 1.0f);
    // integer timesteps: (t_cur - t_to) / (t_from - t_to) with t_to = timestep(sigma_min) = 0
    const float t1 = static_cast<float>(ms.timestep(sig[1]));
    CHECK(differential_diffusion::threshold({sig[1], sig, &ms}) == t1 / 999.0f);
    CHECK(differential_diffusion::threshold({ms.sigma_min(), sig, &ms}) == 0.0f);

    // a schedule that stops above sigma_min (split sigmas) uses its last sigma as the end
    const std::vector<double> split(sig.begin(), sig.begin() + 6);
    CHECK(differential_diffusion::threshold({split.back(), split, &ms}) == 0.0f);
    CHECK(differential_diffusion::threshold({split.front(), split, &ms}) == 1.0f);

    // flow: continuous timesteps sigma * 1000; t_to = 1000 * sigma_min
    const auto f = model_sampling::sd3(3.0);
    const std::vector<double> fs{1.0, 0.5, 0.0};
    const float to = f.sigma_min() * 1000.0f;
    CHECK(differential_diffusion::threshold({0.5, fs, &f}) == (500.0f - to) / (1000.0f - to));
}

TEST_CASE("binary mask per step and strength blending", "[differential_diffusion]") {
    const auto ms = model_sampling::discrete("eps");
    const auto sig = simple_schedule(8, ms);
    const auto m = ramp_mask(101);
    tensor<float> out(m.shape()), out0(m.shape()), out5(m.shape());
    no_state st;
    for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
        const mask_inputs in{sig[i], sig, &ms};
        const float th = differential_diffusion::threshold(in);
        differential_diffusion{1.0}.mask<float, 4>(st, in, m.as<4>(), out.as<4>());
        for (index_t k = 0; k < m.size(); ++k) REQUIRE(out[k] == (m[k] >= th ? 1.0f : 0.0f));
        // strength 0 is treated as 1 (ComfyUI's falsy check)
        differential_diffusion{0.0}.mask<float, 4>(st, in, m.as<4>(), out0.as<4>());
        CHECK(test::bit_equal(out, out0));
        differential_diffusion{0.5}.mask<float, 4>(st, in, m.as<4>(), out5.as<4>());
        for (index_t k = 0; k < m.size(); ++k)
            REQUIRE(out5[k] == Approx(0.5f * out[k] + 0.5f * m[k]).epsilon(1e-6).margin(1e-7));
    }
    // first step regenerates only mask == 1; the last step's low threshold keeps nearly all
    differential_diffusion{}.mask<float, 4>(st, {sig[0], sig, &ms}, m.as<4>(), out.as<4>());
    CHECK(out[100] == 1.0f);
    CHECK(out[99] == 0.0f);
    differential_diffusion{}.mask<float, 4>(st, {sig[sig.size() - 2], sig, &ms}, m.as<4>(), out.as<4>());
    CHECK(out[100] == 1.0f);
    CHECK(out[50] == 1.0f);
}

TEST_CASE("one-step schedule at the lowest noise: finite documented threshold", "[differential_diffusion]") {
    // t_from == t_to: ComfyUI divides 0 by 0; patchbay uses threshold 1 (first-step value).
    const auto ms = model_sampling::discrete("eps");
    const std::vector<double> sig{ms.sigma_min(), 0.0};
    CHECK(differential_diffusion::threshold({sig[0], sig, &ms}) == 1.0f);
    const auto m = ramp_mask(11);
    tensor<float> out(m.shape());
    no_state st;
    differential_diffusion{}.mask<float, 4>(st, {sig[0], sig, &ms}, m.as<4>(), out.as<4>());
    for (index_t k = 0; k < m.size(); ++k) CHECK(out[k] == (k == 10 ? 1.0f : 0.0f));
}

TEST_CASE("5-D, strided, double and in-place masks", "[differential_diffusion]") {
    const auto ms = model_sampling::sd3(3.0);
    const auto sig = simple_schedule(6, ms);
    const mask_inputs in{sig[2], sig, &ms};
    const differential_diffusion dd{0.7};
    no_state st;
    const auto m5 = uniform_mask({2, 1, 3, 4, 5}, 11);
    tensor<float> o5(m5.shape()), o4(m5.shape());
    dd.mask<float, 5>(st, in, m5.as<5>(), o5.as<5>());
    dd.mask<float, 4>(st, in, view<const float, 4>(m5.data(), {2, 3, 4, 5}), view<float, 4>(o4.data(), {2, 3, 4, 5}));
    CHECK(test::bit_equal(o5, o4));
    // strided input and output (transposed H/W) give the contiguous result
    const index_t B = 2, H = 7, W = 9;
    const auto base = uniform_mask({B, 1, W, H}, 12);
    const view<const float, 4> ms_view(base.data(), {B, 1, H, W}, {H * W, H * W, 1, H});
    const tensor<float> mc = tensor<float>::copy_of(ms_view);
    tensor<float> want(mc.shape()), buf({B, 1, W, H});
    dd.mask<float, 4>(st, in, mc.as<4>(), want.as<4>());
    const view<float, 4> os(buf.data(), {B, 1, H, W}, {H * W, H * W, 1, H});
    dd.mask<float, 4>(st, in, ms_view, os);
    CHECK(test::max_abs_diff(tensor<float>::copy_of(view<const float, 4>(os)), want) <= 1e-7);
    // double follows the float threshold; blend in double
    tensor<double> md(mc.shape()), od(mc.shape());
    for (index_t i = 0; i < mc.size(); ++i) md[i] = mc[i];
    dd.mask<double, 4>(st, in, md.as<4>(), od.as<4>());
    for (index_t i = 0; i < mc.size(); ++i) REQUIRE(od[i] == Approx(want[i]).epsilon(1e-6).margin(1e-7));
    // in place
    tensor<float> inplace = mc;
    dd.mask<float, 4>(st, in, inplace.as<4>(), inplace.as<4>());
    CHECK(test::max_abs_diff(inplace, want) <= 1e-7);
    // the input is untouched
    CHECK(test::bit_equal(mc, tensor<float>::copy_of(ms_view)));
}

TEST_CASE("bad masks, inputs and parameters are rejected", "[differential_diffusion]") {
    const auto ms = model_sampling::discrete("eps");
    const auto sig = simple_schedule(4, ms);
    const mask_inputs in{sig[1], sig, &ms};
    no_state st;
    const differential_diffusion dd{};
    auto m = ramp_mask(9);
    tensor<float> out(m.shape()), wrong({1, 1, 1, 8});
    for (float bad : {std::nanf(""), -0.01f, 1.01f, INFINITY}) {
        tensor<float> b = m;
        b[3] = bad;
        REQUIRE_BAD(dd.mask<float, 4>(st, in, b.as<4>(), out.as<4>()));
    }
    REQUIRE_BAD(dd.mask<float, 4>(st, in, m.as<4>(), wrong.as<4>()));
    REQUIRE_BAD(dd.mask<float, 4>(st, mask_inputs{sig[1], sig, nullptr}, m.as<4>(), out.as<4>()));
    REQUIRE_BAD(dd.mask<float, 4>(st, mask_inputs{sig[1], {}, &ms}, m.as<4>(), out.as<4>()));
    REQUIRE_BAD(dd.mask<float, 4>(st, mask_inputs{std::nan(""), sig, &ms}, m.as<4>(), out.as<4>()));
    const view<float, 4> empty(out.data(), {0, 1, 1, 9});
    REQUIRE_BAD(dd.mask<float, 4>(st, in, view<const float, 4>(empty), empty));
    // parameters are validated once (guider construction, chain add, patchbay::validate), not
    // per mask call
    for (double s : {-0.1, 1.5, std::nan("")}) {
        const std::string m_s = test::error_of([&] { patchbay::validate(differential_diffusion{s}); });
        CHECK(m_s.find("DifferentialDiffusion: parameter 'strength' must be a finite value in [0, 1]") == 0);
    }
    CHECK_NOTHROW(patchbay::validate(differential_diffusion{0.0}));
    CHECK_NOTHROW(patchbay::validate(differential_diffusion{1.0}));
    // the error names the patch and the argument
    tensor<float> b = m;
    b[0] = -1.0f;
    try {
        dd.mask<float, 4>(st, in, b.as<4>(), out.as<4>());
        FAIL("no error");
    } catch (const patchbay::error& e) {
        CHECK(std::string(e.what()).find("DifferentialDiffusion") != std::string::npos);
        CHECK(std::string(e.what()).find("denoise_mask") != std::string::npos);
    }
    static_assert(patch<differential_diffusion>);
    static_assert(differential_diffusion::descriptor().slot == hook_kind::mask_function);
    static_assert(differential_diffusion::descriptor().class_type == "DifferentialDiffusion");
}

TEST_CASE("mask does not allocate", "[differential_diffusion]") {
    const auto ms = model_sampling::discrete("eps");
    const auto sig = simple_schedule(10, ms);
    const auto m = ramp_mask(64);
    tensor<float> out(m.shape());
    no_state st;
    const test::allocation_counter counter;
    for (std::size_t i = 0; i + 1 < sig.size(); ++i) {
        differential_diffusion{1.0}.mask<float, 4>(st, {sig[i], sig, &ms}, m.as<4>(), out.as<4>());
        differential_diffusion{0.3}.mask<float, 4>(st, {sig[i], sig, &ms}, m.as<4>(), out.as<4>());
    }
    CHECK(counter.count() == 0);
}

#undef REQUIRE_BAD

} // namespace test_patches_mask_differential_diffusion
