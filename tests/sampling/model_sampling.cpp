// Tests for patchbay/sampling/model_sampling.hpp: tables against the golden ComfyUI values,
// sigma <-> timestep conversions, prediction identities, strides, float/double, validation.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "counting_allocator.hpp"
#include "golden_util.hpp"
#include "npy.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "test_util.hpp"

namespace test_sampling_model_sampling {

using namespace patchbay;

// Template argument lists contain commas, so wrap the call in a lambda for Catch's macros.
#define REQUIRE_BAD(...) CHECK_THROWS_AS(([&] { __VA_ARGS__; }()), patchbay::error)
#define REQUIRE_OK(...) CHECK_NOTHROW(([&] { __VA_ARGS__; }()))

namespace {

using test::batch_sigma;
using test::golden;
using test::load_case;
using test::require_close_to_golden;
using test::widen;

model_sampling by_name(const std::string& n) {
    if (n == "sd3") return model_sampling::sd3(3.0);
    if (n == "aura") return model_sampling::aura_flow(1.73);
    if (n == "velocity") return model_sampling::aura_flow(1.73, "img_to_img_velocity");
    if (n == "flux") return model_sampling::flux();
    if (n == "ltxv") return model_sampling::ltxv();
    if (n == "edm") return model_sampling::continuous_edm("edm", 80.0, 0.002);
    if (n == "edm_eps") return model_sampling::continuous_edm("eps", 14.6146, 0.0292);
    if (n == "edm_v") return model_sampling::continuous_edm();
    if (n == "cosmos") return model_sampling::continuous_edm("cosmos_rflow", 80.0, 0.0002);
    if (n == "cont_v") return model_sampling::continuous_v();
    if (n == "cascade") return model_sampling::stable_cascade();
    if (n == "noise_scaled") return model_sampling::sd3(3.0).with_noise_scale(7.5);
    return model_sampling::discrete(n, false);
}

/// Every kind of object: each sampling type at least once, each schedule family at least once.
const char* const all_kinds[] = {"eps", "v_prediction", "lcm", "x0", "img_to_img", "img_to_img_flow",
                                 "sd3", "aura", "velocity", "flux", "ltxv", "edm", "edm_eps", "edm_v",
                                 "cosmos", "cont_v", "cascade", "noise_scaled"};

} // namespace

TEST_CASE("discrete tables match ComfyUI's golden tables", "[model_sampling]") {
    for (const char* c : {"eps-zsnr0-a", "eps-zsnr1-b", "v_prediction-zsnr1-a", "lcm-zsnr0-a",
                          "lcm-zsnr1-b"}) {
        const std::string dir = golden + "/ModelSamplingDiscrete/" + c + "-schedule";
        const auto spec = load_case(dir);
        const auto ms = model_sampling::discrete(spec["params"]["sampling"].get<std::string>(),
                                                 spec["params"]["zsnr"].get<bool>());
        require_close_to_golden(dir, "sigmas", widen(ms.sigmas()));
        require_close_to_golden(dir, "log_sigmas", widen(ms.log_sigmas()));
        require_close_to_golden(dir, "sigma_min", {ms.sigma_min()});
        require_close_to_golden(dir, "sigma_max", {ms.sigma_max()});
    }
}

TEST_CASE("discrete table landmarks", "[model_sampling]") {
    const auto eps = model_sampling::discrete("eps");
    REQUIRE(eps.sigmas().size() == 1000);
    CHECK(eps.sigma_min() == Approx(0.02916716).epsilon(1e-6));
    CHECK(eps.sigma_max() == Approx(14.614641).epsilon(1e-6));
    // zsnr keeps the first sigma, pins the last alpha_bar: sigma_max ~ 4518.76.
    const auto z = model_sampling::discrete("eps", true);
    CHECK(z.sigma_min() == eps.sigma_min());
    CHECK(z.sigma_max() == Approx(4518.76).epsilon(1e-5));
    // log table is the float64 log rounded, not the log of the rounded sigma, for 1000 entries.
    for (std::size_t i = 0; i < 1000; i += 111)
        CHECK(std::abs(eps.log_sigmas()[i] - std::log(eps.sigmas()[i])) <= 1e-6f);
    // LCM: 50 entries = every 20th of the full table, ending at the last.
    const auto lcm = model_sampling::discrete("lcm");
    REQUIRE(lcm.sigmas().size() == 50);
    for (std::size_t k = 0; k < 50; ++k) CHECK(lcm.sigmas()[k] == eps.sigmas()[19 + 20 * k]);
    // zsnr applies before the subsampling: LCM+zsnr's last entry is the zsnr sigma_max.
    CHECK(model_sampling::discrete("lcm", true).sigma_max() == z.sigma_max());
}

TEST_CASE("discrete timestep and sigma conversions", "[model_sampling]") {
    const auto ms = model_sampling::discrete("eps");
    for (int t : {0, 1, 17, 500, 998, 999}) {
        CHECK(ms.timestep(ms.sigmas()[static_cast<std::size_t>(t)]) == t);
        CHECK(static_cast<float>(ms.sigma(t)) == Approx(ms.sigmas()[static_cast<std::size_t>(t)]).epsilon(2e-6));
    }
    // clamped outside [0, 999]
    CHECK(ms.sigma(-5.0) == ms.sigma(0.0));
    CHECK(ms.sigma(1e6) == ms.sigma(999.0));
    // fractional timesteps interpolate log-linearly
    const double mid = ms.sigma(500.5);
    CHECK(mid == Approx(std::sqrt(ms.sigma(500.0) * ms.sigma(501.0))).epsilon(1e-5));
    // far outside the table the nearest end wins
    CHECK(ms.timestep(1e-6) == 0);
    CHECK(ms.timestep(1e6) == 999);
    CHECK_THROWS_AS(ms.timestep(std::nan("")), patchbay::error);

    const auto lcm = model_sampling::discrete("lcm");
    for (std::size_t k = 0; k < 50; ++k) CHECK(lcm.timestep(lcm.sigmas()[k]) == 20.0 * double(k) + 19.0);
    CHECK(lcm.sigma(19.0) == Approx(lcm.sigmas()[0]).epsilon(2e-6));
    CHECK(lcm.sigma(0.0) == lcm.sigma(19.0)); // (t - 19) / 20 clamps at 0
    CHECK(lcm.sigma(999.0) == Approx(lcm.sigma_max()).epsilon(2e-6));
}

TEST_CASE("timestep(sigma) equals ComfyUI's full argmin scan", "[model_sampling]") {
    // Reference: argmin over every entry of |log(sigma) - log_sigmas[i]| in float32, first on
    // ties (torch.argmin), against the library's search.
    for (const auto& ms : {model_sampling::discrete("eps"), model_sampling::discrete("eps", true),
                           model_sampling::discrete("lcm"), model_sampling::discrete("lcm", true)}) {
        const auto L = ms.log_sigmas();
        const int skip = L.size() == 50 ? 20 : 1;
        auto scan = [&](float s) {
            const float ls = std::log(s);
            std::size_t best = 0;
            for (std::size_t i = 1; i < L.size(); ++i)
                if (std::abs(ls - L[i]) < std::abs(ls - L[best])) best = i;
            return static_cast<double>(best) * skip + (skip - 1);
        };
        std::vector<float> queries{1e-30f, 1e-3f, 0.0f, -1.0f, 1e30f, INFINITY};
        for (std::size_t i = 0; i < ms.sigmas().size(); ++i) {
            const float a = ms.sigmas()[i];
            queries.push_back(a);
            queries.push_back(std::nextafter(a, 0.0f));
            queries.push_back(std::nextafter(a, INFINITY));
            if (i + 1 < ms.sigmas().size()) {
                // around the geometric midpoint, where the answer switches
                const float mid = static_cast<float>(std::sqrt(double(a) * double(ms.sigmas()[i + 1])));
                for (float q = mid, k = 0; k < 4; ++k, q = std::nextafter(q, 0.0f)) queries.push_back(q);
                for (float q = mid, k = 0; k < 4; ++k, q = std::nextafter(q, INFINITY)) queries.push_back(q);
            }
        }
        for (float q : queries) {
            INFO("sigma " << q);
            const double want = q > 0.0f ? scan(q) : (skip - 1); // log(<=0): -inf or NaN -> index 0
            REQUIRE(ms.timestep(q) == want);
        }
    }
}

TEST_CASE("percent_to_sigma edge cases", "[model_sampling]") {
    const auto ms = model_sampling::discrete("eps");
    CHECK(ms.percent_to_sigma(0.0) == 999999999.9);
    CHECK(ms.percent_to_sigma(-1.0) == 999999999.9);
    CHECK(ms.percent_to_sigma(1.0) == 0.0);
    CHECK(ms.percent_to_sigma(2.0) == 0.0);
    CHECK(ms.percent_to_sigma(1e-9) == Approx(ms.sigma_max()).epsilon(1e-5));
    CHECK(ms.percent_to_sigma(0.25) > ms.percent_to_sigma(0.75));
    CHECK_THROWS_AS(ms.percent_to_sigma(std::nan("")), patchbay::error);

    const auto f = model_sampling::sd3(3.0);
    CHECK(f.percent_to_sigma(0.0) == 1.0);
    CHECK(f.percent_to_sigma(1.0) == 0.0);
    // flow uses the double-precision shift of 1 - p
    CHECK(f.percent_to_sigma(0.5) == 3.0 * 0.5 / (1.0 + 2.0 * 0.5));
    for (const char* c : {"ModelSamplingDiscrete/eps-zsnr0-a-schedule", "ModelSamplingSD3/shift3.0-schedule",
                          "ModelSamplingAuraFlow/shift1.73-schedule", "ModelSamplingDiscrete/lcm-zsnr1-b-schedule"}) {
        const std::string dir = golden + "/" + c;
        const auto spec = load_case(dir);
        const auto m = spec["patch"] == "ModelSamplingDiscrete"
                           ? model_sampling::discrete(spec["params"]["sampling"].get<std::string>(),
                                                      spec["params"]["zsnr"].get<bool>())
                           : model_sampling::from_comfy(spec["patch"].get<std::string>() + "(shift=" +
                                                        std::to_string(spec["params"]["shift"].get<double>()) + ")");
        std::vector<double> got;
        for (double p : spec["scalars"]["percents"]) got.push_back(m.percent_to_sigma(p));
        require_close_to_golden(dir, "percent_to_sigma", got);
    }
}

TEST_CASE("flow tables: shift 1 is the identity, shift follows the SD3 formula", "[model_sampling]") {
    const auto one = model_sampling::sd3(1.0);
    const auto aura1 = model_sampling::aura_flow(1.0);
    for (std::size_t k = 0; k < 1000; ++k) {
        const float t = static_cast<float>(k + 1) / 1000.0f;
        CHECK(aura1.sigmas()[k] == t); // exact: no arithmetic when shift == 1
        CHECK(one.sigmas()[k] == (t * 1000.0f) / 1000.0f);
    }
    CHECK(one.sigma(250.0) == 0.25);
    CHECK(one.timestep(0.25) == 250.0);
    CHECK(aura1.timestep(0.25) == 0.25);
    const auto s3 = model_sampling::sd3(3.0);
    CHECK(s3.sigma_max() == 1.0f);
    CHECK(s3.sigma(500.0) == Approx(0.75).epsilon(1e-7));
    CHECK(s3.sigmas()[499] > one.sigmas()[499]); // shift > 1 raises every noise level
    for (const char* c : {"ModelSamplingSD3/shift0.5-schedule", "ModelSamplingSD3/shift6.0-schedule",
                          "ModelSamplingAuraFlow/shift4.0-schedule"}) {
        const std::string dir = golden + "/" + c;
        const auto spec = load_case(dir);
        const double shift = spec["params"]["shift"].get<double>();
        const auto m = spec["patch"] == "ModelSamplingSD3" ? model_sampling::sd3(shift)
                                                           : model_sampling::aura_flow(shift);
        require_close_to_golden(dir, "sigmas", widen(m.sigmas()));
    }
    // shift 0 collapses every sigma to 0, including the 0/0 entry at t = 1 (NaN in ComfyUI).
    const auto zero = model_sampling::sd3(0.0);
    for (float s : zero.sigmas()) CHECK(s == 0.0f);
}

TEST_CASE("validation and from_comfy", "[model_sampling]") {
    CHECK_THROWS_AS(model_sampling::discrete("epsilon_v2"), patchbay::error);
    CHECK_THROWS_AS(model_sampling::sd3(-1.0), patchbay::error);
    CHECK_THROWS_AS(model_sampling::sd3(std::nan("")), patchbay::error);
    CHECK_THROWS_AS(model_sampling::aura_flow(100.5), patchbay::error);
    CHECK_THROWS_AS(model_sampling::flow(1.0, 0.0), patchbay::error);
    CHECK_THROWS_AS(model_sampling::flow(1.0, std::numeric_limits<double>::infinity()), patchbay::error);
    CHECK_NOTHROW(model_sampling::sd3(100.0));
    try {
        model_sampling::sd3(-1.0);
    } catch (const patchbay::error& e) {
        CHECK(std::string(e.what()).find("ModelSamplingSD3") != std::string::npos);
        CHECK(std::string(e.what()).find("shift") != std::string::npos);
    }

    auto a = model_sampling::from_comfy("ModelSamplingDiscrete(eps)");
    CHECK(a.prediction() == prediction_type::eps);
    CHECK(!a.zsnr());
    auto b = model_sampling::from_comfy(" ModelSamplingDiscrete( v_prediction , zsnr=True ) ");
    CHECK(b.prediction() == prediction_type::v_prediction);
    CHECK(b.zsnr());
    CHECK(model_sampling::from_comfy("ModelSamplingDiscrete(sampling='lcm')").sigmas().size() == 50);
    CHECK(model_sampling::from_comfy("ModelSamplingDiscrete").prediction() == prediction_type::eps);
    auto c = model_sampling::from_comfy("ModelSamplingSD3(shift=3.0)");
    CHECK(c.is_flow());
    CHECK(c.shift() == 3.0);
    CHECK(c.multiplier() == 1000.0);
    auto d = model_sampling::from_comfy("ModelSamplingAuraFlow");
    CHECK(d.shift() == 1.73);
    CHECK(d.multiplier() == 1.0);
    CHECK(model_sampling::from_comfy("ModelSamplingFlow(shift=2, multiplier=1)").multiplier() == 1.0);
    for (const char* bad : {"ModelSamplingFoo(eps)", "ModelSamplingDiscrete(eps", "ModelSamplingDiscrete(zsnr=maybe)",
                            "ModelSamplingSD3(shift=abc)", "ModelSamplingSD3(shift=-2)", "ModelSamplingSD3(1, 2)",
                            "ModelSamplingSD3(sampling=eps)", "ModelSamplingDiscrete(x0,,)", ""})
        CHECK_THROWS_AS(model_sampling::from_comfy(bad), patchbay::error);
}

TEST_CASE("prediction ops match the golden ComfyUI outputs", "[model_sampling]") {
    for (const char* c : {"ModelSamplingDiscrete/eps-zsnr0-a", "ModelSamplingDiscrete/v_prediction-zsnr1-a",
                          "ModelSamplingDiscrete/lcm-zsnr1-b", "ModelSamplingDiscrete/x0-zsnr0-b",
                          "ModelSamplingDiscrete/img_to_img-zsnr1-b", "ModelSamplingSD3/shift3.0",
                          "ModelSamplingAuraFlow/shift1.73"}) {
        const std::string dir = golden + "/" + c + "-prediction";
        const auto spec = load_case(dir);
        const auto m = spec["patch"] == "ModelSamplingDiscrete"
                           ? model_sampling::discrete(spec["params"]["sampling"].get<std::string>(),
                                                      spec["params"]["zsnr"].get<bool>())
                           : model_sampling::flow(spec["params"]["shift"].get<double>(),
                                                  spec["patch"] == "ModelSamplingSD3" ? 1000.0 : 1.0);
        auto in = [&](const char* n) { return npy::load(dir + "/in_" + std::string(n) + ".npy").to_tensor<float>(); };
        const auto sigma = in("sigma"), x = in("x"), mo = in("model_output"), noise = in("noise"),
                   latent = in("latent_image");
        REQUIRE(x.rank() == 4);
        tensor<float> r(x.shape());
        auto vec = [&] { return std::vector<double>(r.data(), r.data() + r.size()); };
        m.calculate_input<float, 4>(sigma.as<1>(), x.as<4>(), r.as<4>());
        require_close_to_golden(dir, "calculate_input", vec());
        m.calculate_denoised<float, 4>(sigma.as<1>(), mo.as<4>(), x.as<4>(), r.as<4>());
        require_close_to_golden(dir, "calculate_denoised", vec());
        m.noise_scaling<float, 4>(sigma.as<1>(), noise.as<4>(), latent.as<4>(), true, r.as<4>());
        require_close_to_golden(dir, "noise_scaling_max_denoise", vec());
    }
}

TEST_CASE("scalings reproduce calculate_input / calculate_denoised", "[model_sampling]") {
    const auto x = test::random_tensor({2, 3, 4, 5}, 1);
    const auto mo = test::random_tensor({2, 3, 4, 5}, 2);
    for (const char* n : all_kinds) {
        INFO(n);
        const auto m = by_name(n);
        const bool unit_range = m.is_flow() || m.base() == sampling_base::flux;
        const auto sigma = unit_range ? batch_sigma({0.3f, 0.85f}) : batch_sigma({0.7f, 9.0f});
        tensor<double> xd(x.shape()), od(x.shape()), sd({2}), den(x.shape()), inp(x.shape());
        for (index_t i = 0; i < x.size(); ++i) xd[i] = x[i], od[i] = mo[i];
        sd[0] = sigma[0], sd[1] = sigma[1];
        m.calculate_denoised<double, 4>(sd.as<1>(), od.as<4>(), xd.as<4>(), den.as<4>());
        m.calculate_input<double, 4>(sd.as<1>(), xd.as<4>(), inp.as<4>());
        const index_t per = x.size() / 2;
        for (index_t i = 0; i < x.size(); ++i) {
            const auto sc = m.scalings_at(sd[i / per]);
            REQUIRE(den[i] == Approx(sc.c_skip * xd[i] + sc.c_out * od[i]).margin(1e-10));
            REQUIRE(inp[i] == Approx(sc.c_in * xd[i]).margin(1e-12));
        }
        // Round trip: pick the raw output that yields a target denoised, check we get it back.
        if (m.scalings_at(1.0).c_out != 0.0) { // x0-type outputs ignore x: nothing to invert
            tensor<double> raw(x.shape()), back(x.shape());
            for (index_t i = 0; i < x.size(); ++i) {
                const auto sc = m.scalings_at(sd[i / per]);
                raw[i] = (od[i] - sc.c_skip * xd[i]) / sc.c_out; // target denoised = od
            }
            m.calculate_denoised<double, 4>(sd.as<1>(), raw.as<4>(), xd.as<4>(), back.as<4>());
            CHECK(test::max_abs_diff(back, od) < 1e-9);
        }
    }
    // LCM's coefficients jump where sigma crosses a table midpoint (snapped timestep).
    const auto lcm = model_sampling::discrete("lcm");
    const double a = lcm.sigmas()[10], b = lcm.sigmas()[11];
    const double mid = std::sqrt(a * b);
    CHECK(lcm.scalings_at(mid * 0.999).c_skip != lcm.scalings_at(mid * 1.001).c_skip);
    CHECK(lcm.scalings_at(a * 1.0001).c_skip == lcm.scalings_at(a * 0.9999).c_skip);
}

TEST_CASE("prediction ops: flow and discrete formulas, float vs double, aliasing", "[model_sampling]") {
    const auto x = test::random_tensor({2, 4, 3, 3}, 3);
    const auto n = test::random_tensor({2, 4, 3, 3}, 4);
    const auto l = test::random_tensor({2, 4, 3, 3}, 5);
    const index_t per = x.size() / 2;
    // flow noise_scaling ignores max_denoise; inverse divides by 1 - sigma.
    const auto f = model_sampling::sd3(3.0);
    const auto s = batch_sigma({0.25f, 0.5f});
    tensor<float> a(x.shape()), b(x.shape());
    f.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), false, a.as<4>());
    f.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, b.as<4>());
    CHECK(test::bit_equal(a, b));
    for (index_t i = 0; i < x.size(); ++i) {
        const float sg = s[i / per];
        REQUIRE(a[i] == Approx(sg * n[i] + (1.0f - sg) * l[i]).epsilon(1e-6).margin(1e-7));
    }
    f.inverse_noise_scaling<float, 4>(s.as<1>(), a.as<4>(), b.as<4>());
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(b[i] == Approx(a[i] / (1.0f - s[i / per])).epsilon(1e-6));
    // sigma exactly 1: documented error instead of a division by zero
    REQUIRE_BAD(f.inverse_noise_scaling<float, 4>(batch_sigma({1.0f, 0.0f}).as<1>(), a.as<4>(), b.as<4>()));
    // discrete inverse is the identity, max_denoise scales by sqrt(1 + sigma^2)
    const auto e = model_sampling::discrete("eps");
    e.inverse_noise_scaling<float, 4>(s.as<1>(), x.as<4>(), b.as<4>());
    CHECK(test::bit_equal(b, x));
    e.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), true, a.as<4>());
    for (index_t i = 0; i < x.size(); ++i) {
        const float sg = s[i / per];
        REQUIRE(a[i] == Approx(n[i] * std::sqrt(1.0f + sg * sg) + l[i]).epsilon(1e-6).margin(1e-7));
    }
    // in place (out aliases x) gives the same bits
    tensor<float> inplace = x;
    e.calculate_input<float, 4>(s.as<1>(), inplace.as<4>(), inplace.as<4>());
    e.calculate_input<float, 4>(s.as<1>(), x.as<4>(), a.as<4>());
    CHECK(test::bit_equal(inplace, a));
    // double follows the same formulas
    tensor<double> xd(x.shape()), sd({2}), od(x.shape());
    for (index_t i = 0; i < x.size(); ++i) xd[i] = x[i];
    sd[0] = 0.25, sd[1] = 0.5;
    e.calculate_input<double, 4>(sd.as<1>(), xd.as<4>(), od.as<4>());
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(od[i] == Approx(a[i]).epsilon(1e-6));
}

TEST_CASE("strided views give the contiguous result", "[model_sampling]") {
    // x lives inside a larger buffer with channel-last strides; out is strided too.
    const index_t B = 2, C = 3, H = 4, W = 5;
    const auto base = test::random_tensor({B, H, W, C}, 7); // NHWC storage
    const auto mo = test::random_tensor({B, C, H, W}, 8);
    const view<const float, 4> xs(base.data(), {B, C, H, W}, {H * W * C, 1, W * C, C});
    const tensor<float> xc = tensor<float>::copy_of(xs);
    const auto s = batch_sigma({0.5f, 3.0f});
    for (const char* n : all_kinds) {
        INFO(n);
        const auto m = by_name(n);
        tensor<float> want(xc.shape()), out_buf({B, H, W, C});
        m.calculate_denoised<float, 4>(s.as<1>(), mo.as<4>(), xc.as<4>(), want.as<4>());
        const view<float, 4> os(out_buf.data(), {B, C, H, W}, {H * W * C, 1, W * C, C});
        m.calculate_denoised<float, 4>(s.as<1>(), mo.as<4>(), xs, os);
        // Equal up to float rounding: the compiler may contract a*b + c into an FMA
        // differently in the SIMD body and the strided scalar path.
        CHECK(test::max_abs_diff(tensor<float>::copy_of(view<const float, 4>(os)), want) <= 1e-5);
        m.calculate_input<float, 4>(s.as<1>(), xc.as<4>(), want.as<4>());
        m.calculate_input<float, 4>(s.as<1>(), xs, os);
        CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(os)), want));
    }
    // 5-D works and equals the 4-D result on the same memory
    const auto m = model_sampling::discrete("v_prediction");
    const auto x5 = test::random_tensor({2, 3, 2, 4, 5}, 9);
    tensor<float> o5(x5.shape()), o4(x5.shape());
    m.calculate_denoised<float, 5>(s.as<1>(), x5.as<5>(), x5.as<5>(), o5.as<5>());
    const view<const float, 4> x4(x5.data(), {2, 6, 4, 5});
    m.calculate_denoised<float, 4>(s.as<1>(), x4, x4, view<float, 4>(o4.data(), {2, 6, 4, 5}));
    CHECK(test::bit_equal(o5, o4));
}

TEST_CASE("tensor op argument checks", "[model_sampling]") {
    const auto m = model_sampling::discrete("eps");
    const auto x = test::random_tensor({2, 3, 4, 4}, 1);
    tensor<float> out(x.shape()), small({2, 3, 4, 3}), b3({3, 3, 4, 4});
    const auto s = batch_sigma({1.0f, 2.0f});
    REQUIRE_BAD(m.calculate_input<float, 4>(batch_sigma({1.0f}).as<1>(), x.as<4>(), out.as<4>()));
    REQUIRE_BAD(m.calculate_input<float, 4>(s.as<1>(), x.as<4>(), small.as<4>()));
    REQUIRE_BAD(m.calculate_denoised<float, 4>(s.as<1>(), b3.as<4>(), x.as<4>(), out.as<4>()));
    REQUIRE_BAD(m.noise_scaling<float, 4>(s.as<1>(), x.as<4>(), small.as<4>(), false, out.as<4>()));
    REQUIRE_BAD(m.calculate_input<float, 4>(batch_sigma({1.0f, NAN}).as<1>(), x.as<4>(), out.as<4>()));
    const view<float, 4> empty(out.data(), {0, 3, 4, 4});
    REQUIRE_BAD(m.calculate_input<float, 4>(s.as<1>(), view<const float, 4>(empty), empty));
    // partial overlap of out and x is rejected (exact aliasing is fine)
    tensor<float> buf({2 * 3 * 4 * 4 + 1});
    const view<float, 4> v0(buf.data(), {2, 3, 4, 4}), v1(buf.data() + 1, {2, 3, 4, 4});
    REQUIRE_BAD(m.calculate_input<float, 4>(s.as<1>(), v0, v1));
    REQUIRE_OK(m.calculate_input<float, 4>(s.as<1>(), v0, v0));
}

TEST_CASE("tensor ops do not allocate", "[model_sampling]") {
    const auto x = test::random_tensor({2, 4, 8, 8}, 21);
    tensor<float> out(x.shape());
    const auto s = batch_sigma({0.5f, 0.25f});
    for (const char* n : all_kinds) {
        INFO(n);
        const auto m = by_name(n);
        const test::allocation_counter counter;
        m.calculate_input<float, 4>(s.as<1>(), x.as<4>(), out.as<4>());
        m.calculate_denoised<float, 4>(s.as<1>(), x.as<4>(), x.as<4>(), out.as<4>());
        m.noise_scaling<float, 4>(s.as<1>(), x.as<4>(), x.as<4>(), true, out.as<4>());
        m.inverse_noise_scaling<float, 4>(s.as<1>(), x.as<4>(), out.as<4>());
        (void)m.timestep(0.5);
        (void)m.sigma(300.5);
        (void)m.scalings_at(0.5);
        CHECK(counter.count() == 0);
    }
    // the counter does see allocations (building a table allocates)
    const test::allocation_counter counter;
    const auto built = model_sampling::discrete("x0");
    CHECK(counter.count() > 0);
    CHECK(built.sigmas().size() == 1000);
}

TEST_CASE("discrete from a prediction type or a sampling type equals the string form", "[model_sampling]") {
    for (auto [p, name] : {std::pair{prediction_type::eps, "eps"}, std::pair{prediction_type::v_prediction, "v_prediction"},
                           std::pair{prediction_type::lcm, "lcm"}, std::pair{prediction_type::x0, "x0"},
                           std::pair{prediction_type::img_to_img, "img_to_img"}}) {
        INFO(name);
        for (bool zsnr : {false, true}) {
            const auto a = model_sampling::discrete(p, zsnr);
            const auto b = model_sampling::discrete(name, zsnr);
            CHECK(a.prediction() == p);
            CHECK(a.zsnr() == zsnr);
            CHECK(std::equal(a.sigmas().begin(), a.sigmas().end(), b.sigmas().begin(), b.sigmas().end()));
            CHECK(a.type() == b.type());
        }
    }
    const std::string msg = test::error_of([] { (void)model_sampling::discrete(prediction_type::flow, false); });
    CHECK(msg.find("ModelSamplingDiscrete") != std::string::npos);
    CHECK(msg.find("img_to_img_flow") != std::string::npos);
    CHECK_THROWS_AS(model_sampling::discrete(sampling_type::edm, false), patchbay::error);
    CHECK_THROWS_AS(model_sampling::discrete(sampling_type::flow, false), patchbay::error);
    const auto f = model_sampling::discrete(sampling_type::img_to_img_flow, true);
    CHECK(f.type() == sampling_type::img_to_img_flow);
    CHECK(f.base() == sampling_base::discrete);
    CHECK(std::string(f.class_type()) == "ModelSamplingDiscrete");
}

TEST_CASE("img_to_img_flow: discrete table, CONST-family prediction without noise", "[model_sampling]") {
    const auto m = model_sampling::discrete("img_to_img_flow", false);
    const auto eps = model_sampling::discrete("eps", false);
    // the eps table and timesteps
    CHECK(std::equal(m.sigmas().begin(), m.sigmas().end(), eps.sigmas().begin(), eps.sigmas().end()));
    CHECK(m.timestep(1.0) == eps.timestep(1.0));
    CHECK(m.percent_to_sigma(0.3) == eps.percent_to_sigma(0.3));
    // a CONST subclass in ComfyUI: the flow samplers and hooks treat it as flow
    CHECK(m.is_flow());
    CHECK(m.prediction() == prediction_type::flow);
    const auto x = test::random_tensor({2, 3, 4, 4}, 31), mo = test::random_tensor({2, 3, 4, 4}, 32),
               n = test::random_tensor({2, 3, 4, 4}, 33), l = test::random_tensor({2, 3, 4, 4}, 34);
    const auto s = batch_sigma({0.5f, 7.0f});
    tensor<float> r(x.shape());
    m.calculate_input<float, 4>(s.as<1>(), x.as<4>(), r.as<4>());
    CHECK(test::bit_equal(r, x));
    m.calculate_denoised<float, 4>(s.as<1>(), mo.as<4>(), x.as<4>(), r.as<4>());
    CHECK(test::bit_equal(r, mo));
    for (bool max_denoise : {false, true}) {
        m.noise_scaling<float, 4>(s.as<1>(), n.as<4>(), l.as<4>(), max_denoise, r.as<4>());
        CHECK(test::bit_equal(r, l)); // the latent image, no noise
    }
    m.inverse_noise_scaling<float, 4>(s.as<1>(), x.as<4>(), r.as<4>());
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(r[i] == 1.0f - x[i]);
    // in place
    tensor<float> inplace = x;
    m.inverse_noise_scaling<float, 4>(s.as<1>(), inplace.as<4>(), inplace.as<4>());
    CHECK(test::bit_equal(inplace, r));
}

TEST_CASE("every object computes each batch item from its own sigma alone", "[model_sampling]") {
    // A batch of three with different sigmas equals three single-item calls, bit for bit
    // (ComfyUI reshapes sigma to (B, 1, ...) and broadcasts per item).
    const auto x = test::random_tensor({3, 4, 3, 5}, 41), mo = test::random_tensor({3, 4, 3, 5}, 42),
               n = test::random_tensor({3, 4, 3, 5}, 43), l = test::random_tensor({3, 4, 3, 5}, 44);
    for (const char* name : all_kinds) {
        INFO(name);
        const auto m = by_name(name);
        const bool unit_range = m.is_flow() || m.base() == sampling_base::flux;
        const auto s = unit_range ? batch_sigma({0.0f, 0.35f, 0.9f}) : batch_sigma({0.05f, 1.3f, 40.0f});
        auto run = [&](int which, auto&& op) {
            tensor<float> batch(x.shape());
            op(s.as<1>(), x.as<4>(), mo.as<4>(), n.as<4>(), l.as<4>(), batch.as<4>());
            for (index_t b = 0; b < 3; ++b) {
                tensor<float> one({1, 4, 3, 5});
                const auto sb = s.as<1>().batch_slice(b, 1);
                op(sb, x.as<4>().batch_slice(b, 1), mo.as<4>().batch_slice(b, 1), n.as<4>().batch_slice(b, 1),
                   l.as<4>().batch_slice(b, 1), one.as<4>());
                const tensor<float> got = tensor<float>::copy_of(view<const float, 4>(batch.as<4>().batch_slice(b, 1)));
                INFO("op " << which << " item " << b);
                CHECK(test::bit_equal(got, one));
            }
            return batch;
        };
        using V1 = view<const float, 1>;
        using V4 = view<const float, 4>;
        const auto in = run(0, [&](V1 sg, V4 xv, V4, V4, V4, view<float, 4> o) { m.calculate_input<float, 4>(sg, xv, o); });
        const auto den = run(1, [&](V1 sg, V4 xv, V4 mv, V4, V4, view<float, 4> o) {
            m.calculate_denoised<float, 4>(sg, mv, xv, o);
        });
        const auto ns = run(2, [&](V1 sg, V4, V4, V4 nv, V4 lv, view<float, 4> o) {
            m.noise_scaling<float, 4>(sg, nv, lv, true, o);
        });
        // the items really differ: item 2 is not item 1 computed with item 2's data
        CHECK(test::max_abs_diff(in, x) + test::max_abs_diff(den, x) + test::max_abs_diff(ns, l) > 0.0);
    }
}

TEST_CASE("from_comfy reads every model-sampling node and chains of them", "[model_sampling]") {
    const auto flux = model_sampling::from_comfy("ModelSamplingFlux(max_shift=1.15, base_shift=0.5, width=1920, height=1088)");
    CHECK(flux.base() == sampling_base::flux);
    CHECK(flux.shift() == Approx(1.8379166666666666).epsilon(1e-14));
    CHECK(model_sampling::from_comfy("ModelSamplingFlux").shift() == Approx(1.15).epsilon(1e-14));
    CHECK(model_sampling::from_comfy("ModelSamplingFlux(1.15, 0.5, 16, 16)").shift() == Approx(0.4568359375).epsilon(1e-14));

    const auto ltx = model_sampling::from_comfy("ModelSamplingLTXV(max_shift=2.05, base_shift=0.95, latent_shape=[1, 128, 8, 16, 24])");
    CHECK(ltx.shift() == Approx(1.6833333333333331).epsilon(1e-14));
    CHECK(std::string(ltx.class_type()) == "ModelSamplingLTXV");
    // the golden cases' prose form, tokens=N, and no latent (4096 tokens: mu = max_shift)
    CHECK(model_sampling::from_comfy("ModelSamplingLTXV(max_shift=2.05, base_shift=0.95, latent of shape [1, 4, 3, 6, 8])")
              .shift() == Approx(0.6348958333333332).epsilon(1e-14));
    CHECK(model_sampling::from_comfy("ModelSamplingLTXV(2.05, 0.95, tokens=3072)").shift() == ltx.shift());
    CHECK(model_sampling::from_comfy("ModelSamplingLTXV(max_shift=1.5, base_shift=0.5)").shift() == Approx(1.5).epsilon(1e-14));

    const auto edm = model_sampling::from_comfy("ModelSamplingContinuousEDM(edm, sigma_max=80.0, sigma_min=0.002)");
    CHECK(edm.type() == sampling_type::edm);
    CHECK(edm.sigma_data() == 0.5);
    CHECK(edm.sigma_max() == Approx(80.0).epsilon(1e-6));
    const auto pg = model_sampling::from_comfy("ModelSamplingContinuousEDM(sampling=edm_playground_v2.5)");
    CHECK(pg.latent_format() == &sdxl_playground_2_5_latent_format);
    CHECK(pg.sigma_max() == Approx(120.0).epsilon(1e-6)); // node default
    CHECK(model_sampling::from_comfy("ModelSamplingContinuousEDM(cosmos_rflow, 80, 0.0002)").base() == sampling_base::cosmos_rflow);
    const auto v = model_sampling::from_comfy("ModelSamplingContinuousV(v_prediction, sigma_max=500.0, sigma_min=0.03)");
    CHECK(v.base() == sampling_base::continuous_v);
    CHECK(v.prediction() == prediction_type::v_prediction);
    CHECK(model_sampling::from_comfy("ModelSamplingStableCascade(shift=7.5)").shift() == 7.5);
    CHECK(model_sampling::from_comfy("ModelSamplingStableCascade").shift() == 2.0);
    const auto vel = model_sampling::from_comfy("ModelSamplingAuraFlow(1.0, sampling='img_to_img_velocity')");
    CHECK(vel.type() == sampling_type::img_to_img_velocity);
    CHECK(model_sampling::from_comfy("ModelSamplingDiscrete(img_to_img_flow, zsnr=True)").type() == sampling_type::img_to_img_flow);

    // chains: ModelNoiseScale modifies the object before it; SD3/AuraFlow keep its noise scale
    const auto a = model_sampling::from_comfy("ModelSamplingSD3(shift=3.0) -> ModelNoiseScale(noise_scale=7.5) -> ModelSamplingSD3(shift=2.0)");
    CHECK(a.shift() == 2.0);
    CHECK(a.noise_scale() == 7.5);
    const auto b = model_sampling::from_comfy("ModelSamplingSD3(shift=3.0)->ModelNoiseScale(4.0)->ModelNoiseScale(noise_scale=2.0)");
    CHECK(b.noise_scale() == 2.0);
    CHECK(b.shift() == 3.0);
    // Flux does not carry a noise scale: a node after a scaled SD3 starts over
    CHECK(model_sampling::from_comfy("ModelSamplingSD3 -> ModelNoiseScale(3) -> ModelSamplingFlux").noise_scale() == 1.0);
    CHECK(model_sampling::from_comfy("ModelSamplingAuraFlow -> ModelNoiseScale(0.5) -> ModelSamplingAuraFlow(2.5)").noise_scale() == 0.5);

    for (const char* bad : {"ModelNoiseScale(2.0)", "ModelSamplingDiscrete -> ModelNoiseScale(2.0)",
                            "ModelSamplingFlux -> ModelNoiseScale(2.0)", "ModelSamplingSD3 -> ModelNoiseScale(65)",
                            "ModelSamplingSD3 -> ", "ModelSamplingFlux(width=1024.5)", "ModelSamplingFlux(width=8)",
                            "ModelSamplingFlux(1, 2, 3, 4, 5)", "ModelSamplingLTXV(tokens=10, latent_shape=[1,2,3])",
                            "ModelSamplingLTXV(latent_shape=1x2)", "ModelSamplingLTXV(latent_shape=[1, -4, 8, 8])",
                            "ModelSamplingContinuousEDM(edm_v3)", "ModelSamplingContinuousEDM(edm, sigma_min=0)",
                            "ModelSamplingContinuousV(eps)", "ModelSamplingStableCascade(shift=-1)",
                            "ModelSamplingAuraFlow(sampling=img_to_img_flow)", "ModelSamplingSD3(sampling=img_to_img_velocity)"}) {
        INFO(bad);
        CHECK_THROWS_AS(model_sampling::from_comfy(bad), patchbay::error);
    }
}

TEST_CASE("class_type and names", "[model_sampling]") {
    CHECK(std::string(model_sampling::sd3().class_type()) == "ModelSamplingSD3");
    CHECK(std::string(model_sampling::aura_flow().class_type()) == "ModelSamplingAuraFlow");
    CHECK(std::string(model_sampling::flow(2.0, 10.0).class_type()) == "ModelSamplingFlow");
    CHECK(std::string(model_sampling::flux().class_type()) == "ModelSamplingFlux");
    CHECK(std::string(model_sampling::continuous_edm().class_type()) == "ModelSamplingContinuousEDM");
    CHECK(std::string(model_sampling::continuous_v().class_type()) == "ModelSamplingContinuousV");
    CHECK(std::string(model_sampling::stable_cascade().class_type()) == "ModelSamplingStableCascade");
    CHECK(to_string(sampling_type::img_to_img_velocity) == "img_to_img_velocity");
    CHECK(to_string(sampling_base::stable_cascade) == "stable_cascade");
    // errors of the tensor ops name the node and the op
    const auto f = model_sampling::flux();
    tensor<float> x({2, 2, 2, 2}), out({2, 2, 2, 2});
    const std::string msg = test::error_of([&] {
        f.calculate_input<float, 4>(batch_sigma({0.5f}).as<1>(), x.as<4>(), out.as<4>());
    });
    CHECK(msg.find("ModelSamplingFlux.calculate_input") != std::string::npos);
}

#undef REQUIRE_BAD
#undef REQUIRE_OK

} // namespace test_sampling_model_sampling
