// Tests for patches/post_cfg/cfg_norm.hpp: golden parity, ComfyUI's formulas (double
// reference) for the post-CFG node and the newest pre_cfg variant, slot(), identities, zero
// cond, strength > 1 overflow, many channels, strides, batch split, float and double, errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "test_util.hpp"

namespace test_patches_post_cfg_cfg_norm {

using namespace patchbay;

namespace {

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

template <class T>
tensor<T> ones_sigma(index_t batch) {
    tensor<T> s({batch});
    s.fill(T(1));
    return s;
}

/// Post-CFG on contiguous tensors: denoised = plain CFG, then the patch (through the checked
/// entry point, which validates the parameters and inputs before the member runs).
template <std::size_t R, class T>
tensor<T> run_post(const cfg_norm& p, const tensor<T>& c, const tensor<T>& u, double k) {
    tensor<T> d(c.shape()), x(c.shape());
    kernels::cfg_combine<T, R>(c.template as<R>(), u.template as<R>(), k, d.template as<R>());
    const auto s = ones_sigma<T>(c.extent(0));
    guidance_inputs<T, R> in{x.template as<R>(), s.template as<1>(), k, false, prediction_type::eps};
    no_state st;
    apply_post_cfg(p, st, in, c.template as<R>(), u.template as<R>(), d.template as<R>());
    return d;
}

template <std::size_t R, class T>
tensor<T> run_pre(const cfg_norm& p, const tensor<T>& x, const tensor<T>& c, const tensor<T>& u, double k) {
    tensor<T> out(c.shape());
    const auto s = ones_sigma<T>(c.extent(0));
    guidance_inputs<T, R> in{x.template as<R>(), s.template as<1>(), k, false, prediction_type::eps};
    no_state st;
    apply_cfg_function(p, st, in, c.template as<R>(), u.template as<R>(), out.template as<R>());
    return out;
}

/// ComfyUI's two CFGNorm functions in double. pixel p of item b, channel ch at
/// (b*C + ch)*P + p.
std::vector<double> reference(const cfg_norm& p, const tensor<float>& x, const tensor<float>& c,
                              const tensor<float>& u, double k) {
    const index_t B = c.extent(0), C = c.extent(1), P = c.size() / (B * C);
    std::vector<double> out(static_cast<std::size_t>(c.size()));
    for (index_t b = 0; b < B; ++b)
        for (index_t q = 0; q < P; ++q) {
            double n1 = 0, n2 = 0;
            auto at = [&](index_t ch) { return (b * C + ch) * P + q; };
            for (index_t ch = 0; ch < C; ++ch) {
                const index_t e = at(ch);
                const double g = u[e] + k * (double(c[e]) - u[e]);
                const double a = p.pre_cfg ? x[e] - double(c[e]) : double(c[e]);
                const double h = p.pre_cfg ? x[e] - g : g;
                n1 += a * a, n2 += h * h;
            }
            n1 = std::sqrt(n1), n2 = std::sqrt(n2);
            for (index_t ch = 0; ch < C; ++ch) {
                const index_t e = at(ch);
                const double g = u[e] + k * (double(c[e]) - u[e]);
                if (p.pre_cfg) {
                    const double comb = x[e] - g;
                    const double r = n2 > 0 ? n1 / std::max(n2, 1e-12) : 1.0;
                    double res = comb * r;
                    if (p.strength != 1.0) res = p.strength * res + (1 - p.strength) * comb;
                    out[std::size_t(e)] = x[e] - res;
                } else {
                    const double sc = std::clamp(n1 / (n2 + 1e-8), 0.0, 1.0);
                    out[std::size_t(e)] = g * sc * p.strength;
                }
            }
        }
    return out;
}

template <class T>
double max_err(const tensor<T>& got, const std::vector<double>& want) {
    double e = 0;
    for (index_t i = 0; i < got.size(); ++i) e = std::max(e, std::fabs(double(got[i]) - want[std::size_t(i)]));
    return e;
}

} // namespace

TEST_CASE("cfg_norm matches ComfyUI's golden cases", "[cfg_norm][golden]") {
    for (const char* name : {"default", "ch16", "strength05", "strength2", "video-5d", "zero-cond"}) {
        INFO(name);
        const std::string d = std::string(PATCHBAY_GOLDEN_DIR "/CFGNorm/") + name + "/";
        std::ifstream f(d + "case.json");
        const auto spec = nlohmann::json::parse(f);
        const cfg_norm p{spec.at("params").at("strength").get<double>()};
        const double k = spec.at("scalars").at("cond_scale").get<double>();
        const double atol = spec.at("tolerances").at("result").at("atol").get<double>();
        auto c = npy::load(d + "in_cond_denoised.npy").to_tensor<float>();
        auto u = npy::load(d + "in_uncond_denoised.npy").to_tensor<float>();
        auto want = npy::load(d + "out_result.npy");
        auto got = c.rank() == 4 ? run_post<4>(p, c, u, k) : run_post<5>(p, c, u, k);
        double worst = 0;
        for (index_t i = 0; i < got.size(); ++i)
            worst = std::max(worst, std::fabs(got[i] - want.values[std::size_t(i)]) /
                                        (atol + 1e-5 * std::fabs(want.values[std::size_t(i)])));
        CHECK(worst <= 1.0);
    }
}

TEST_CASE("cfg_norm slot follows pre_cfg (newest ComfyUI installs a cfg function)", "[cfg_norm]") {
    STATIC_REQUIRE(cfg_norm::descriptor().slot == hook_kind::post_cfg);
    STATIC_REQUIRE(cfg_norm::descriptor().class_type == "CFGNorm");
    CHECK(cfg_norm{}.slot() == hook_kind::post_cfg);
    CHECK(cfg_norm{1.0, true}.slot() == hook_kind::cfg_function);
}

TEST_CASE("cfg_norm follows ComfyUI's formulas (double reference), tails and many channels", "[cfg_norm]") {
    // 13x11 pixels: SIMD blocks plus a tail; 40 channels: the two-level channel sum;
    // 1x3x700 pixels: more than one tile.
    for (auto shape : {std::vector<index_t>{2, 4, 13, 11}, std::vector<index_t>{1, 40, 9, 9},
                       std::vector<index_t>{1, 3, 1, 700}}) {
        const auto x = test::random_tensor(shape, 1, 0.f, 3.f), c = test::random_tensor(shape, 2),
                   u = test::random_tensor(shape, 3, 0.3f, 1.2f);
        for (const cfg_norm p : {cfg_norm{1.0, false}, cfg_norm{0.4, false}, cfg_norm{3.0, false}, cfg_norm{1.0, true},
                                 cfg_norm{0.3, true}, cfg_norm{2.5, true}}) {
            INFO("strength " << p.strength << " pre_cfg " << p.pre_cfg << " C " << shape[1]);
            const auto want = reference(p, x, c, u, 5.0);
            const auto gd = p.pre_cfg ? run_pre<4>(p, cast<double>(x), cast<double>(c), cast<double>(u), 5.0)
                                      : run_post<4>(p, cast<double>(c), cast<double>(u), 5.0);
            CHECK(max_err(gd, want) < 1e-10);
            const auto gf = p.pre_cfg ? run_pre<4>(p, x, c, u, 5.0) : run_post<4>(p, c, u, 5.0);
            CHECK(max_err(gf, want) < 5e-5);
        }
    }
    // 5-D: norms over channels per (t, h, w)
    const auto x5 = test::random_tensor({1, 4, 3, 5, 7}, 4), c5 = test::random_tensor({1, 4, 3, 5, 7}, 5),
               u5 = test::random_tensor({1, 4, 3, 5, 7}, 6);
    CHECK(max_err(run_post<5>(cfg_norm{}, c5, u5, 4.0), reference(cfg_norm{}, x5, c5, u5, 4.0)) < 2e-5);
    CHECK(max_err(run_pre<5>(cfg_norm{1.0, true}, x5, c5, u5, 4.0), reference(cfg_norm{1.0, true}, x5, c5, u5, 4.0)) <
          5e-5);
}

TEST_CASE("cfg_norm identities and limits", "[cfg_norm]") {
    const auto x = test::random_tensor({2, 4, 8, 8}, 7), c = test::random_tensor({2, 4, 8, 8}, 8),
               u = test::random_tensor({2, 4, 8, 8}, 9);
    tensor<float> zeros(c.shape());
    // strength 0 zeroes the post-CFG result
    auto s0 = run_post<4>(cfg_norm{0.0}, c, u, 5.0);
    for (index_t i = 0; i < s0.size(); ++i) REQUIRE(s0[i] == 0.f);
    // zero cond -> k = 0 -> 0
    auto zc = run_post<4>(cfg_norm{}, zeros, u, 5.0);
    for (index_t i = 0; i < zc.size(); ++i) REQUIRE(zc[i] == 0.f);
    // cond_scale 1 with zero uncond: denoised == cond, k = |c|/(|c| + 1e-8) ~ 1
    CHECK(test::max_abs_diff(run_post<4>(cfg_norm{}, c, zeros, 1.0), c) < 1e-6);
    // pre_cfg, strength 0: plain CFG up to the x - (x - g) rounding
    tensor<float> cfg(c.shape());
    kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), 5.0, cfg.as<4>());
    CHECK(test::max_abs_diff(run_pre<4>(cfg_norm{0.0, true}, x, c, u, 5.0), cfg) < 4e-6);
    // pre_cfg, cond_scale 1 with zero uncond: comb == x - cond, ratio 1: cond
    CHECK(test::max_abs_diff(run_pre<4>(cfg_norm{1.0, true}, x, c, zeros, 1.0), c) < 4e-6);
    // pre_cfg where x - g is 0 at a pixel: ratio 1 there, finite. (x = g bit for bit needs g
    // computed here as the patch computes it: only where the patches run this file's variant.)
    if (test::patches_run_this_variant()) {
        auto pre0 = run_pre<4>(cfg_norm{1.0, true}, cfg, c, u, 5.0);
        for (index_t i = 0; i < pre0.size(); ++i) REQUIRE(std::isfinite(pre0[i]));
        CHECK(test::max_abs_diff(pre0, cfg) < 1e-6);
    }
}

TEST_CASE("cfg_norm pre_cfg: ratios whose square overflows float stay finite (ComfyUI's value)", "[cfg_norm]") {
    // x - cond = 1e7 per element (|dc|^2 = 4e14 over 4 channels) while x - cfg is 1e-20: that
    // norm is floored at 1e-12, the ratio is 2e19 and its square (4e38) overflows float; the
    // one-root fast path must fall back to two roots there, and stay on it elsewhere.
    const index_t P = 40;
    tensor<float> x({1, 4, 1, P}), c({1, 4, 1, P}), u({1, 4, 1, P});
    for (index_t ch = 0; ch < 4; ++ch)
        for (index_t q = 0; q < P; ++q) {
            const index_t e = ch * P + q;
            const bool huge = q % 3 == 0; // mixed lanes in every SIMD batch
            c[e] = huge ? -1e7f : 0.25f * float(ch + 1);
            u[e] = huge ? -1.5e7f : c[e]; // cfg = 3 c - 2 u: exactly 0 (huge), else cond
            x[e] = huge ? 1e-20f : 2.0f;
        }
    const auto out = run_pre<4>(cfg_norm{1.0, true}, x, c, u, 3.0);
    const auto want = reference(cfg_norm{1.0, true}, x, c, u, 3.0);
    for (index_t i = 0; i < out.size(); ++i) {
        REQUIRE(std::isfinite(out[i]));
        REQUIRE(double(out[i]) == Approx(want[std::size_t(i)]).epsilon(1e-6));
    }
}

TEST_CASE("cfg_norm: strength > 1 with a non-finite result is an error, as in ComfyUI", "[cfg_norm][errors]") {
    // float32 cannot overflow from finite input here (|result| <= 100*|denoised|, while the
    // norm overflows first), so feed a non-finite denoised as an upstream overflow would
    auto c = test::random_tensor({1, 4, 4, 4}, 10);
    tensor<float> d = c, x(c.shape());
    d[5] = INFINITY;
    const auto s = ones_sigma<float>(1);
    guidance_inputs<float, 4> in{x.as<4>(), s.as<1>(), 1.0, true, prediction_type::eps};
    no_state st;
    tensor<float> zeros(c.shape());
    tensor<float> d1 = d;
    CHECK_NOTHROW(cfg_norm{1.0}.post_cfg(st, in, c.as<4>(), zeros.as<4>(), d1.as<4>()));
    CHECK_THROWS_AS(cfg_norm{50.0}.post_cfg(st, in, c.as<4>(), zeros.as<4>(), d.as<4>()), patchbay::error);
}

TEST_CASE("cfg_norm: strided views and batch split give the contiguous result", "[cfg_norm]") {
    const auto x = test::random_tensor({3, 5, 6, 9}, 11), c = test::random_tensor({3, 5, 6, 9}, 12),
               u = test::random_tensor({3, 5, 6, 9}, 13);
    for (bool pre : {false, true}) {
        const cfg_norm p{0.8, pre};
        const auto want = pre ? run_pre<4>(p, x, c, u, 5.0) : run_post<4>(p, c, u, 5.0);
        // (a) channels-last storage: pixels are not packed, the scalar path runs
        tensor<float> xs({3, 6, 9, 5}), cs({3, 6, 9, 5}), us({3, 6, 9, 5}), os({3, 6, 9, 5});
        const std::array<index_t, 4> ext{3, 5, 6, 9}, str{6 * 9 * 5, 1, 9 * 5, 5};
        view<float, 4> xv(xs.data(), ext, str), cv(cs.data(), ext, str), uv(us.data(), ext, str), ov(os.data(), ext, str);
        kernels::copy<float, 4>(x.as<4>(), xv);
        kernels::copy<float, 4>(c.as<4>(), cv);
        kernels::copy<float, 4>(u.as<4>(), uv);
        const auto s = ones_sigma<float>(3);
        guidance_inputs<float, 4> in{xv, s.as<1>(), 5.0, false, prediction_type::eps};
        no_state st;
        if (pre) p.cfg_function(st, in, cv, uv, ov);
        else {
            kernels::cfg_combine<float, 4>(cv, uv, 5.0, ov);
            p.post_cfg(st, in, cv, uv, ov);
        }
        CHECK(test::max_abs_diff(tensor<float>::copy_of(ov), want) < 1e-6);
        // (b) one item at a time
        for (index_t b = 0; b < 3; ++b) {
            tensor<float> xb({1, 5, 6, 9}), cb({1, 5, 6, 9}), ub({1, 5, 6, 9});
            for (index_t i = 0; i < 270; ++i) xb[i] = x[b * 270 + i], cb[i] = c[b * 270 + i], ub[i] = u[b * 270 + i];
            const auto one = pre ? run_pre<4>(p, xb, cb, ub, 5.0) : run_post<4>(p, cb, ub, 5.0);
            for (index_t i = 0; i < 270; ++i) REQUIRE(one[i] == want[b * 270 + i]);
        }
    }
}

TEST_CASE("cfg_norm rejects bad input", "[cfg_norm][errors]") {
    using Catch::Matchers::Contains;
    const auto c = test::random_tensor({2, 4, 8, 8}, 14), u = test::random_tensor({2, 4, 8, 8}, 15);
    // every message names the node by its class_type and the argument
    auto rejects = [](auto&& fn, const std::string& word) {
        CHECK_THAT(test::error_of(fn), Contains("CFGNorm: ") && Contains(word));
    };
    CHECK_NOTHROW(run_post<4>(cfg_norm{}, c, u, 5.0));
    rejects([&] { run_post<4>(cfg_norm{-0.5}, c, u, 5.0); }, "parameter 'strength' must be a finite value in [0, 100], got -0.5");
    rejects([&] { run_post<4>(cfg_norm{100.5}, c, u, 5.0); }, "'strength'");
    rejects([&] { run_post<4>(cfg_norm{std::nan("")}, c, u, 5.0); }, "'strength'");
    rejects([&] { run_post<4>(cfg_norm{}, c, u, INFINITY); }, "cond_scale");
    rejects([&] { run_pre<4>(cfg_norm{1.0, true}, c, c, u, std::nan("")); }, "cond_scale");
    // the wrong slot for the flag
    rejects([&] { run_post<4>(cfg_norm{1.0, true}, c, u, 5.0); }, "pre_cfg");
    rejects([&] { run_pre<4>(cfg_norm{1.0, false}, c, c, u, 5.0); }, "pre_cfg");
    // shape and batch mismatches
    tensor<float> d(c.shape()), x(c.shape());
    const auto s = ones_sigma<float>(2);
    no_state st;
    const cfg_norm p{};
    guidance_inputs<float, 4> in{x.as<4>(), s.as<1>(), 5.0, false, prediction_type::eps};
    const auto u1 = test::random_tensor({1, 4, 8, 8}, 16);
    rejects([&] { apply_post_cfg(p, st, in, c.as<4>(), u1.as<4>(), d.as<4>()); }, "uncond");
    tensor<float> d_wide({2, 4, 8, 9});
    rejects([&] { apply_post_cfg(p, st, in, c.as<4>(), u.as<4>(), d_wide.as<4>()); }, "denoised");
    const auto s3 = ones_sigma<float>(3);
    guidance_inputs<float, 4> in3{x.as<4>(), s3.as<1>(), 5.0, false, prediction_type::eps};
    rejects([&] { apply_post_cfg(p, st, in3, c.as<4>(), u.as<4>(), d.as<4>()); }, "sigma");
    tensor<float> snan = s;
    snan[0] = NAN;
    guidance_inputs<float, 4> inn{x.as<4>(), snan.as<1>(), 5.0, false, prediction_type::eps};
    rejects([&] { apply_post_cfg(p, st, inn, c.as<4>(), u.as<4>(), d.as<4>()); }, "sigma");
    tensor<float> x_small({2, 4, 4, 8});
    rejects([&] { run_pre<4>(cfg_norm{1.0, true}, x_small, c, u, 5.0); }, "'x'");
}

} // namespace test_patches_post_cfg_cfg_norm
