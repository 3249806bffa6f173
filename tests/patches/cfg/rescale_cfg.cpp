// Tests for patches/cfg/rescale_cfg.hpp: golden parity, ComfyUI's formula (independent
// double reference), identities, finiteness at sigma 0 / zero std, stride and batch-split
// invariance, float and double, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "test_util.hpp"

namespace test_patches_cfg_rescale_cfg {

using namespace patchbay;

namespace {

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

/// Runs the patch on contiguous tensors and returns denoised.
template <std::size_t R, class T>
tensor<T> run(const rescale_cfg& p, const tensor<T>& x, const tensor<T>& sigma, const tensor<T>& c,
              const tensor<T>& u, double scale, prediction_type pred = prediction_type::eps) {
    guidance_inputs<T, R> in{x.template as<R>(), sigma.template as<1>(), scale, false, pred};
    tensor<T> out(c.shape());
    no_state st;
    p.cfg_function(st, in, c.template as<R>(), u.template as<R>(), out.template as<R>());
    return out;
}

/// ComfyUI's RescaleCFG written op for op in double (v space needs sigma > 0).
template <std::size_t R>
std::vector<double> reference(double m, const tensor<float>& x, const tensor<float>& sigma, const tensor<float>& c,
                              const tensor<float>& u, double k, bool flow) {
    const index_t B = c.extent(0), n = c.size() / B;
    const index_t W = c.extent(R - 1);
    // group of element i within its item: v space 5-D is per W column, otherwise one group
    const bool columns = !flow && R == 5;
    const index_t groups = columns ? W : 1;
    std::vector<double> out(static_cast<std::size_t>(c.size()));
    for (index_t b = 0; b < B; ++b) {
        const double s = sigma[b], a = std::sqrt(s * s + 1);
        std::vector<double> vc(static_cast<std::size_t>(n)), vg(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) {
            const index_t e = b * n + i;
            if (flow) {
                vc[std::size_t(i)] = c[e];
                vg[std::size_t(i)] = u[e] + k * (double(c[e]) - u[e]);
            } else {
                const double xc = x[e] / (s * s + 1);
                const double v_c = (xc - (x[e] - (x[e] - double(c[e])))) * a / s;
                const double v_u = (xc - (x[e] - (x[e] - double(u[e])))) * a / s;
                vc[std::size_t(i)] = v_c;
                vg[std::size_t(i)] = v_u + k * (v_c - v_u);
            }
        }
        for (index_t g = 0; g < groups; ++g) {
            double mc = 0, mg = 0, cnt = 0;
            for (index_t i = 0; i < n; ++i)
                if (!columns || i % W == g) mc += vc[std::size_t(i)], mg += vg[std::size_t(i)], cnt += 1;
            mc /= cnt, mg /= cnt;
            double sc = 0, sg = 0;
            for (index_t i = 0; i < n; ++i)
                if (!columns || i % W == g) {
                    sc += (vc[std::size_t(i)] - mc) * (vc[std::size_t(i)] - mc);
                    sg += (vg[std::size_t(i)] - mg) * (vg[std::size_t(i)] - mg);
                }
            double ro_pos = std::sqrt(sc / (cnt - 1)), ro_cfg = std::sqrt(sg / (cnt - 1));
            if (flow) ro_cfg = std::max(ro_cfg, 1e-8);
            for (index_t i = 0; i < n; ++i)
                if (!columns || i % W == g) {
                    const double vf = m * vg[std::size_t(i)] * ro_pos / ro_cfg + (1 - m) * vg[std::size_t(i)];
                    const index_t e = b * n + i;
                    out[std::size_t(e)] = flow ? vf : x[e] / (s * s + 1) - vf * s / a;
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

/// A tensor stored inside a larger buffer (every dim padded), so its view is non-contiguous.
template <class T, std::size_t R>
struct strided_copy {
    tensor<T> storage;
    view<T, R> v;
    explicit strided_copy(const tensor<T>& src) {
        std::vector<index_t> big(src.shape());
        for (auto& e : big) e += 1;
        storage = tensor<T>(big);
        storage.fill(T(1e30)); // poison: never read
        std::array<index_t, R> ext{}, str{};
        for (std::size_t r = 0; r < R; ++r) ext[r] = src.extent(r);
        str = view<T, R>::row_major_strides([&] {
            std::array<index_t, R> e{};
            for (std::size_t r = 0; r < R; ++r) e[r] = big[r];
            return e;
        }());
        v = view<T, R>(storage.data(), ext, str);
        kernels::copy<T, R>(src.template as<R>(), v);
    }
};

struct inputs {
    tensor<float> x, sigma, c, u;
};

inputs make(std::vector<index_t> shape, std::vector<float> sigmas, unsigned seed) {
    inputs in;
    in.x = test::random_tensor(shape, seed, 0.f, 3.f);
    in.c = test::random_tensor(shape, seed + 1, 0.2f, 1.f);
    in.u = test::random_tensor(shape, seed + 2, -0.1f, 0.8f);
    in.sigma = tensor<float>({static_cast<index_t>(sigmas.size())});
    for (std::size_t i = 0; i < sigmas.size(); ++i) in.sigma[index_t(i)] = sigmas[i];
    return in;
}

} // namespace

TEST_CASE("rescale_cfg matches ComfyUI's golden cases", "[rescale_cfg][golden]") {
    const std::string dir = PATCHBAY_GOLDEN_DIR "/RescaleCFG/";
    for (const char* name : {"default", "video-5d", "sigma-per-batch", "latest-flow-default", "latest-flow-video-5d"}) {
        INFO(name);
        const std::string d = dir + name + "/";
        auto x = npy::load(d + "in_x.npy").to_tensor<float>();
        auto s = npy::load(d + "in_sigma.npy").to_tensor<float>();
        auto c = npy::load(d + "in_cond_denoised.npy").to_tensor<float>();
        auto u = npy::load(d + "in_uncond_denoised.npy").to_tensor<float>();
        auto want = npy::load(d + "out_denoised.npy");
        std::ifstream f(d + "case.json");
        const auto spec = nlohmann::json::parse(f);
        const bool flow = spec.at("scalars").contains("model_sampling");
        const double scale = spec.at("scalars").at("cond_scale").get<double>();
        const double mult = spec.at("params").at("multiplier").get<double>();
        const double atol = spec.at("tolerances").at("denoised").at("atol").get<double>();
        const auto pred = flow ? prediction_type::flow : prediction_type::eps;
        tensor<float> got = c.rank() == 4 ? run<4>(rescale_cfg{mult}, x, s, c, u, scale, pred)
                                          : run<5>(rescale_cfg{mult}, x, s, c, u, scale, pred);
        double worst = 0;
        for (index_t i = 0; i < got.size(); ++i)
            worst = std::max(worst, std::fabs(got[i] - want.values[std::size_t(i)]) /
                                        (atol + 1e-5 * std::fabs(want.values[std::size_t(i)])));
        CHECK(worst <= 1.0);
    }
}

TEST_CASE("rescale_cfg follows ComfyUI's formula (double reference), 4-D and 5-D, both branches", "[rescale_cfg]") {
    const double m = 0.65, k = 6.0;
    for (bool flow : {false, true}) {
        auto a = make({2, 4, 9, 11}, {3.5f, 0.3f}, 11);
        auto got = run<4>(rescale_cfg{m}, cast<double>(a.x), cast<double>(a.sigma), cast<double>(a.c),
                          cast<double>(a.u), k, flow ? prediction_type::flow : prediction_type::eps);
        CHECK(max_err(got, reference<4>(m, a.x, a.sigma, a.c, a.u, k, flow)) < 1e-9);
        auto f = run<4>(rescale_cfg{m}, a.x, a.sigma, a.c, a.u, k, flow ? prediction_type::flow : prediction_type::eps);
        CHECK(max_err(f, reference<4>(m, a.x, a.sigma, a.c, a.u, k, flow)) < 2e-5);

        // 5-D: per W column in v space (W = 37 spans SIMD blocks and a tail), all dims for flow
        auto v = make({2, 3, 4, 5, 37}, {2.0f, 0.7f}, 21);
        auto g5 = run<5>(rescale_cfg{m}, cast<double>(v.x), cast<double>(v.sigma), cast<double>(v.c),
                         cast<double>(v.u), k, flow ? prediction_type::flow : prediction_type::v_prediction);
        CHECK(max_err(g5, reference<5>(m, v.x, v.sigma, v.c, v.u, k, flow)) < 1e-9);
        auto f5 = run<5>(rescale_cfg{m}, v.x, v.sigma, v.c, v.u, k, flow ? prediction_type::flow : prediction_type::eps);
        CHECK(max_err(f5, reference<5>(m, v.x, v.sigma, v.c, v.u, k, flow)) < 2e-5);
    }
}

TEST_CASE("rescale_cfg: 5-D v space uses one std per W column", "[rescale_cfg]") {
    // Scale one column of cond and uncond far up: a whole-sample std would change every column;
    // a per-column std leaves the other columns' results unchanged.
    auto a = make({1, 4, 3, 6, 10}, {1.5f}, 5);
    auto base = run<5>(rescale_cfg{0.7}, a.x, a.sigma, a.c, a.u, 5.0);
    for (index_t i = 0; i < a.c.size(); i += 10) a.c[i] *= 9.f, a.u[i] *= 9.f, a.x[i] *= 9.f;
    auto changed = run<5>(rescale_cfg{0.7}, a.x, a.sigma, a.c, a.u, 5.0);
    for (index_t i = 0; i < a.c.size(); ++i)
        if (i % 10 != 0) CHECK(changed[i] == Approx(base[i]).margin(1e-6));
}

TEST_CASE("rescale_cfg identities: multiplier 0 is plain CFG, cond_scale 1 with zero uncond is cond", "[rescale_cfg]") {
    auto a = make({2, 4, 16, 16}, {5.0f, 0.9f}, 31);
    tensor<float> cfg(a.c.shape());
    kernels::cfg_combine<float, 4>(a.c.as<4>(), a.u.as<4>(), 4.0, cfg.as<4>());
    // v space: xc + (g - xc) differs from g by rounding of the intermediate only
    CHECK(test::max_abs_diff(run<4>(rescale_cfg{0.0}, a.x, a.sigma, a.c, a.u, 4.0), cfg) < 4e-6);
    // flow: g * 1 is g exactly
    CHECK(test::bit_equal(run<4>(rescale_cfg{0.0}, a.x, a.sigma, a.c, a.u, 4.0, prediction_type::flow), cfg));

    tensor<float> zeros(a.c.shape());
    CHECK(test::max_abs_diff(run<4>(rescale_cfg{0.7}, a.x, a.sigma, a.c, zeros, 1.0), a.c) < 4e-6);
    CHECK(test::bit_equal(run<4>(rescale_cfg{0.7}, a.x, a.sigma, a.c, zeros, 1.0, prediction_type::flow), a.c));
    auto v = make({1, 4, 3, 8, 8}, {2.f}, 3);
    tensor<float> z5(v.c.shape());
    CHECK(test::max_abs_diff(run<5>(rescale_cfg{1.0}, v.x, v.sigma, v.c, z5, 1.0), v.c) < 4e-6);
}

TEST_CASE("rescale_cfg is finite at sigma 0 (its limit) and where the cfg std is 0", "[rescale_cfg]") {
    auto a = make({1, 4, 8, 8}, {0.f}, 41);
    auto at0 = run<4>(rescale_cfg{0.7}, a.x, a.sigma, a.c, a.u, 5.0);
    for (index_t i = 0; i < at0.size(); ++i) REQUIRE(std::isfinite(at0[i]));
    // the limit: continuous in sigma, so a tiny sigma gives (nearly) the same result
    a.sigma[0] = 1e-4f;
    auto near0 = run<4>(rescale_cfg{0.7}, a.x, a.sigma, a.c, a.u, 5.0);
    CHECK(test::max_abs_diff(at0, near0) < 1e-5);

    // constant x - g: std 0 -> no rescale: the result is plain CFG
    tensor<float> x(a.c.shape()), c(a.c.shape()), u(a.c.shape());
    x.fill(0.f), c.fill(0.5f), u.fill(0.5f);
    a.sigma[0] = 2.f;
    auto flat = run<4>(rescale_cfg{0.7}, x, a.sigma, c, u, 5.0);
    for (index_t i = 0; i < flat.size(); ++i) REQUIRE(flat[i] == Approx(0.5f).epsilon(1e-6));
    // one element per item: Bessel std undefined -> no rescale (ComfyUI: NaN)
    tensor<float> x1({2, 1, 1, 1}), c1({2, 1, 1, 1}), u1({2, 1, 1, 1}), s1({2});
    x1[0] = 1, x1[1] = -2, c1[0] = 0.3f, c1[1] = 0.1f, u1[0] = -0.2f, u1[1] = 0.4f, s1[0] = 1, s1[1] = 3;
    for (auto pred : {prediction_type::eps, prediction_type::flow}) {
        auto one = run<4>(rescale_cfg{0.7}, x1, s1, c1, u1, 3.0, pred);
        CHECK(one[0] == Approx(-0.2f + 3.f * 0.5f));
        CHECK(one[1] == Approx(0.4f + 3.f * -0.3f));
    }
}

TEST_CASE("rescale_cfg: strided views give the same result as contiguous copies", "[rescale_cfg]") {
    for (auto pred : {prediction_type::eps, prediction_type::flow}) {
        auto a = make({2, 4, 10, 13}, {3.f, 1.f}, 51);
        auto want = run<4>(rescale_cfg{0.7}, a.x, a.sigma, a.c, a.u, 6.0, pred);
        strided_copy<float, 4> x(a.x), c(a.c), u(a.u), o(tensor<float>(a.c.shape()));
        guidance_inputs<float, 4> in{x.v, a.sigma.as<1>(), 6.0, false, pred};
        no_state st;
        rescale_cfg{0.7}.cfg_function(st, in, c.v, u.v, o.v);
        CHECK(test::max_abs_diff(tensor<float>::copy_of(o.v), want) < 1e-6);

        auto v = make({1, 4, 3, 5, 19}, {2.f}, 52);
        auto want5 = run<5>(rescale_cfg{0.7}, v.x, v.sigma, v.c, v.u, 6.0, pred);
        strided_copy<float, 5> x5(v.x), c5(v.c), u5(v.u), o5(tensor<float>(v.c.shape()));
        guidance_inputs<float, 5> in5{x5.v, v.sigma.as<1>(), 6.0, false, pred};
        rescale_cfg{0.7}.cfg_function(st, in5, c5.v, u5.v, o5.v);
        CHECK(test::max_abs_diff(tensor<float>::copy_of(o5.v), want5) < 1e-6);
    }
}

TEST_CASE("rescale_cfg: a batch gives the same result as its items one by one", "[rescale_cfg]") {
    for (auto pred : {prediction_type::eps, prediction_type::flow}) {
        auto a = make({3, 4, 8, 12}, {4.f, 1.f, 0.2f}, 61);
        auto whole = run<4>(rescale_cfg{0.6}, a.x, a.sigma, a.c, a.u, 5.0, pred);
        guidance_inputs<float, 4> in{a.x.as<4>(), a.sigma.as<1>(), 5.0, false, pred};
        for (index_t b = 0; b < 3; ++b) {
            tensor<float> o({1, 4, 8, 12});
            guidance_inputs<float, 4> one{in.x.batch_slice(b, 1), view<const float, 1>(a.sigma.data() + b, {1}), 5.0,
                                          false, pred};
            no_state st;
            rescale_cfg{0.6}.cfg_function(st, one, a.c.as<4>().batch_slice(b, 1), a.u.as<4>().batch_slice(b, 1),
                                          o.as<4>());
            for (index_t i = 0; i < o.size(); ++i) REQUIRE(o[i] == whole[b * o.size() + i]);
        }
    }
}

TEST_CASE("rescale_cfg: out may be exactly cond", "[rescale_cfg]") {
    auto a = make({1, 4, 8, 8}, {2.f}, 71);
    auto want = run<4>(rescale_cfg{0.7}, a.x, a.sigma, a.c, a.u, 5.0);
    guidance_inputs<float, 4> in{a.x.as<4>(), a.sigma.as<1>(), 5.0, false, prediction_type::eps};
    no_state st;
    rescale_cfg{0.7}.cfg_function(st, in, a.c.as<4>(), a.u.as<4>(), a.c.as<4>());
    CHECK(test::bit_equal(a.c, want));
}

TEST_CASE("rescale_cfg rejects bad input", "[rescale_cfg][errors]") {
    using Catch::Matchers::Contains;
    auto a = make({2, 4, 8, 8}, {2.f, 2.f}, 81);
    tensor<float> out(a.c.shape());
    no_state st;
    // through the checked entry point, which validates the parameters and the inputs once
    auto call = [&](const rescale_cfg& p, const tensor<float>& x, const tensor<float>& s, const tensor<float>& c,
                    const tensor<float>& u, double k) {
        guidance_inputs<float, 4> in{x.as<4>(), s.as<1>(), k, false, prediction_type::eps};
        apply_cfg_function(p, st, in, c.as<4>(), u.as<4>(), out.as<4>());
    };
    // every message names the node by its class_type and the argument
    auto rejects = [&](const rescale_cfg& p, const tensor<float>& x, const tensor<float>& s, const tensor<float>& u,
                       double k, const std::string& word) {
        CHECK_THAT(test::error_of([&] { call(p, x, s, a.c, u, k); }), Contains("RescaleCFG: ") && Contains(word));
    };
    CHECK_NOTHROW(call(rescale_cfg{}, a.x, a.sigma, a.c, a.u, 5.0));
    rejects(rescale_cfg{1.5}, a.x, a.sigma, a.u, 5.0, "parameter 'multiplier' must be a finite value in [0, 1], got 1.5");
    rejects(rescale_cfg{-0.1}, a.x, a.sigma, a.u, 5.0, "'multiplier'");
    rejects(rescale_cfg{std::nan("")}, a.x, a.sigma, a.u, 5.0, "'multiplier'");
    rejects(rescale_cfg{}, a.x, a.sigma, a.u, std::nan(""), "cond_scale");
    rejects(rescale_cfg{}, a.x, a.sigma, a.u, INFINITY, "cond_scale");
    tensor<float> bad_sigma = a.sigma;
    bad_sigma[1] = INFINITY;
    rejects(rescale_cfg{}, a.x, bad_sigma, a.u, 5.0, "sigma");
    tensor<float> sigma3({3});
    rejects(rescale_cfg{}, a.x, sigma3, a.u, 5.0, "sigma");
    tensor<float> u_small({1, 4, 8, 8});
    rejects(rescale_cfg{}, a.x, a.sigma, u_small, 5.0, "uncond");
    tensor<float> x_wide({2, 4, 8, 9});
    rejects(rescale_cfg{}, x_wide, a.sigma, a.u, 5.0, "'x'");
    // output overlapping an input by half an item
    guidance_inputs<float, 4> in{a.x.as<4>(), a.sigma.as<1>(), 5.0, false, prediction_type::eps};
    tensor<float> big({2 * 4 * 8 * 8 + 5});
    view<float, 4> shifted(big.data() + 5, {2, 4, 8, 8});
    CHECK_THAT(test::error_of([&] {
                   apply_cfg_function(rescale_cfg{}, st, in, view<const float, 4>(big.data(), {2, 4, 8, 8}),
                                      a.u.as<4>(), shifted);
               }),
               Contains("RescaleCFG: ") && Contains("overlap"));
}

TEST_CASE("rescale_cfg: 5-D with a non-unit W stride (scalar column path) matches the packed result",
          "[rescale_cfg]") {
    auto v = make({1, 3, 2, 5, 11}, {1.7f}, 91);
    auto want = run<5>(rescale_cfg{0.7}, v.x, v.sigma, v.c, v.u, 5.0);
    // storage (B, C, T, W, H), viewed as (B, C, T, H, W): W stride is H
    auto transposed = [](const tensor<float>& t, tensor<float>& store) {
        store = tensor<float>({1, 3, 2, 11, 5});
        view<float, 5> v5(store.data(), {1, 3, 2, 5, 11}, {3 * 2 * 55, 2 * 55, 55, 1, 5});
        kernels::copy<float, 5>(t.as<5>(), v5);
        return v5;
    };
    tensor<float> xs, cs, us, os;
    auto xv = transposed(v.x, xs), cv = transposed(v.c, cs), uv = transposed(v.u, us);
    auto ov = transposed(tensor<float>(v.c.shape()), os);
    REQUIRE(xv.stride(4) != 1);
    guidance_inputs<float, 5> in{xv, v.sigma.as<1>(), 5.0, false, prediction_type::eps};
    no_state st;
    rescale_cfg{0.7}.cfg_function(st, in, cv, uv, ov);
    CHECK(test::max_abs_diff(tensor<float>::copy_of(ov), want) < 1e-6);
}

} // namespace test_patches_cfg_rescale_cfg
