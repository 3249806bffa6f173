// Tests for patches/cfg/renorm_cfg.hpp: golden parity, ComfyUI's formula (double reference),
// truncation at sigma == cfg_trunc, in_channels, identities, per-item renorm for batch > 1,
// stride invariance, float and double, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/cfg/renorm_cfg.hpp"
#include "test_util.hpp"

namespace test_patches_cfg_renorm_cfg {

using namespace patchbay;

namespace {

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

template <std::size_t R, class T>
tensor<T> run(const renorm_cfg& p, const tensor<T>& sigma, const tensor<T>& c, const tensor<T>& u, double k) {
    tensor<T> x(c.shape());
    guidance_inputs<T, R> in{x.template as<R>(), sigma.template as<1>(), k, false, prediction_type::flow};
    tensor<T> out(c.shape());
    no_state st;
    // the checked entry point: parameters and inputs are validated there, then the member runs
    apply_cfg_function(p, st, in, c.template as<R>(), u.template as<R>(), out.template as<R>());
    return out;
}

/// ComfyUI's RenormCFG in double for one batch item (batch 1).
std::vector<double> reference(const renorm_cfg& p, double sigma, const tensor<float>& c, const tensor<float>& u,
                              double k) {
    const index_t C = c.extent(1), n = c.size() / C;
    const index_t in = p.in_channels == 0 ? C : std::min(p.in_channels, C);
    std::vector<double> out(static_cast<std::size_t>(c.size()));
    for (index_t i = 0; i < c.size(); ++i) out[std::size_t(i)] = c[i];
    if (!(sigma < p.cfg_trunc)) return out;
    double nc = 0, nh = 0;
    for (index_t i = 0; i < in * n; ++i) {
        const double h = u[i] + k * (double(c[i]) - u[i]);
        out[std::size_t(i)] = h;
        nc += double(c[i]) * c[i], nh += h * h;
    }
    nc = std::sqrt(nc), nh = std::sqrt(nh);
    const double limit = nc * p.renorm_cfg;
    if (p.renorm_cfg > 0 && nh >= limit)
        for (index_t i = 0; i < in * n; ++i) out[std::size_t(i)] *= limit / nh;
    return out;
}

template <class T>
double max_err(const tensor<T>& got, const std::vector<double>& want) {
    double e = 0;
    for (index_t i = 0; i < got.size(); ++i) e = std::max(e, std::fabs(double(got[i]) - want[std::size_t(i)]));
    return e;
}

tensor<float> sigmas(std::vector<float> v) {
    tensor<float> s({static_cast<index_t>(v.size())});
    for (std::size_t i = 0; i < v.size(); ++i) s[index_t(i)] = v[i];
    return s;
}

} // namespace

TEST_CASE("renorm_cfg matches ComfyUI's golden cases", "[renorm_cfg][golden]") {
    for (const char* name : {"default", "renorm-tight", "in-ch-less-than-c", "trunc-boundary-equal", "video-5d"}) {
        INFO(name);
        const std::string d = std::string(PATCHBAY_GOLDEN_DIR "/RenormCFG/") + name + "/";
        std::ifstream f(d + "case.json");
        const auto spec = nlohmann::json::parse(f);
        const renorm_cfg p{spec.at("params").at("cfg_trunc").get<double>(), spec.at("params").at("renorm_cfg").get<double>(),
                           spec.at("scalars").at("in_channels").get<index_t>()};
        const double k = spec.at("scalars").at("cond_scale").get<double>();
        const double atol = spec.at("tolerances").at("denoised").at("atol").get<double>();
        auto s = npy::load(d + "in_sigma.npy").to_tensor<float>();
        auto c = npy::load(d + "in_cond_denoised.npy").to_tensor<float>();
        auto u = npy::load(d + "in_uncond_denoised.npy").to_tensor<float>();
        auto want = npy::load(d + "out_denoised.npy");
        auto got = c.rank() == 4 ? run<4>(p, s, c, u, k) : run<5>(p, s, c, u, k);
        double worst = 0;
        for (index_t i = 0; i < got.size(); ++i)
            worst = std::max(worst, std::fabs(got[i] - want.values[std::size_t(i)]) /
                                        (atol + 1e-5 * std::fabs(want.values[std::size_t(i)])));
        CHECK(worst <= 1.0);
    }
}

TEST_CASE("renorm_cfg follows ComfyUI's formula (double reference)", "[renorm_cfg]") {
    const auto c = test::random_tensor({1, 6, 7, 9}, 1, 0.1f, 1.f), u = test::random_tensor({1, 6, 7, 9}, 2);
    for (const renorm_cfg p : {renorm_cfg{}, renorm_cfg{100, 1.3, 4}, renorm_cfg{100, 20, 0}, renorm_cfg{0.5, 1, 4},
                               renorm_cfg{100, 0, 3}, renorm_cfg{100, 1, 9}}) {
        INFO("cfg_trunc " << p.cfg_trunc << " renorm " << p.renorm_cfg << " in " << p.in_channels);
        const auto s = sigmas({0.5f});
        CHECK(max_err(run<4>(p, cast<double>(s), cast<double>(c), cast<double>(u), 5.0), reference(p, 0.5, c, u, 5.0)) < 1e-12);
        CHECK(max_err(run<4>(p, s, c, u, 5.0), reference(p, 0.5, c, u, 5.0)) < 1e-5);
    }
    const auto c5 = test::random_tensor({1, 5, 3, 4, 11}, 3), u5 = test::random_tensor({1, 5, 3, 4, 11}, 4);
    const renorm_cfg p5{100, 1.1, 3};
    CHECK(max_err(run<5>(p5, sigmas({0.7f}), c5, u5, 4.0), reference(p5, 0.7, c5, u5, 4.0)) < 1e-5);
}

TEST_CASE("renorm_cfg: truncation compares sigma of item 0 strictly; in_channels splits guided channels",
          "[renorm_cfg]") {
    const auto c = test::random_tensor({2, 8, 5, 5}, 5), u = test::random_tensor({2, 8, 5, 5}, 6);
    // sigma == cfg_trunc: cond only, bit for bit, for every item (item 1's sigma is ignored)
    CHECK(test::bit_equal(run<4>(renorm_cfg{0.5, 1.0, 4}, sigmas({0.5f, 0.1f}), c, u, 5.0), c));
    // just below: guided
    CHECK_FALSE(test::bit_equal(run<4>(renorm_cfg{0.5, 1.0, 4}, sigmas({0.4999f, 0.9f}), c, u, 5.0), c));
    // channels >= in_channels are cond's, bit for bit
    auto got = run<4>(renorm_cfg{100, 1.0, 3}, sigmas({0.5f, 0.5f}), c, u, 5.0);
    for (index_t b = 0; b < 2; ++b)
        for (index_t i = 3 * 25; i < 8 * 25; ++i) REQUIRE(got[b * 200 + i] == c[b * 200 + i]);
}

TEST_CASE("renorm_cfg identities", "[renorm_cfg]") {
    const auto c = test::random_tensor({2, 4, 8, 8}, 7), u = test::random_tensor({2, 4, 8, 8}, 8);
    const auto s = sigmas({0.5f, 0.5f});
    // renorm_cfg 0: plain CFG, bit for bit
    tensor<float> cfg(c.shape());
    kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), 6.0, cfg.as<4>());
    CHECK(test::same_arithmetic(run<4>(renorm_cfg{100, 0.0, 0}, s, c, u, 6.0), cfg));
    // cond_scale 1 with zero uncond: cond (the limit equals ||cond||, scale exactly 1)
    tensor<float> zeros(c.shape());
    CHECK(test::max_abs_diff(run<4>(renorm_cfg{}, s, c, zeros, 1.0), c) < 1e-6);
    // all-zero predictions stay zero (ComfyUI: 0/0)
    auto z = run<4>(renorm_cfg{}, s, zeros, zeros, 5.0);
    for (index_t i = 0; i < z.size(); ++i) REQUIRE(z[i] == 0.f);
    // renorm_cfg large enough never clips
    CHECK(test::bit_equal(run<4>(renorm_cfg{100, 100.0, 0}, s, c, u, 2.0), [&] {
        tensor<float> t(c.shape());
        kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), 2.0, t.as<4>());
        return t;
    }()));
}

TEST_CASE("renorm_cfg renormalises each batch item on its own (ComfyUI raises for batch > 1)", "[renorm_cfg]") {
    auto c = test::random_tensor({3, 4, 6, 6}, 9), u = test::random_tensor({3, 4, 6, 6}, 10);
    for (index_t i = 0; i < 144; ++i) c[144 + i] *= 5.f; // items with different norms
    const renorm_cfg p{100, 1.0, 0};
    auto whole = run<4>(p, sigmas({0.5f, 0.5f, 0.5f}), c, u, 5.0);
    for (index_t b = 0; b < 3; ++b) {
        tensor<float> cb({1, 4, 6, 6}), ub({1, 4, 6, 6});
        for (index_t i = 0; i < 144; ++i) cb[i] = c[b * 144 + i], ub[i] = u[b * 144 + i];
        auto one = run<4>(p, sigmas({0.5f}), cb, ub, 5.0);
        for (index_t i = 0; i < 144; ++i) REQUIRE(one[i] == whole[b * 144 + i]);
    }
}

TEST_CASE("renorm_cfg: strided views and exact aliasing give the contiguous result", "[renorm_cfg]") {
    const auto c = test::random_tensor({2, 6, 7, 10}, 11), u = test::random_tensor({2, 6, 7, 10}, 12);
    const auto s = sigmas({0.5f, 0.5f});
    const renorm_cfg p{100, 1.0, 4};
    auto want = run<4>(p, s, c, u, 5.0);
    // views into (2, 6, 7, 12) buffers: W padded
    tensor<float> cs({2, 6, 7, 12}), us({2, 6, 7, 12}), os({2, 6, 7, 12}), x({2, 6, 7, 10});
    const std::array<index_t, 4> ext{2, 6, 7, 10}, str{6 * 7 * 12, 7 * 12, 12, 1};
    view<float, 4> cv(cs.data(), ext, str), uv(us.data(), ext, str), ov(os.data(), ext, str);
    kernels::copy<float, 4>(c.as<4>(), cv);
    kernels::copy<float, 4>(u.as<4>(), uv);
    guidance_inputs<float, 4> in{x.as<4>(), s.as<1>(), 5.0, false, prediction_type::flow};
    no_state st;
    p.cfg_function(st, in, cv, uv, ov);
    CHECK(test::max_abs_diff(tensor<float>::copy_of(ov), want) < 1e-6);
    p.cfg_function(st, in, cv, uv, cv); // out == cond exactly
    CHECK(test::max_abs_diff(tensor<float>::copy_of(cv), want) < 1e-6);
}

TEST_CASE("renorm_cfg rejects bad input", "[renorm_cfg][errors]") {
    using Catch::Matchers::Contains;
    const auto c = test::random_tensor({2, 4, 8, 8}, 13), u = test::random_tensor({2, 4, 8, 8}, 14);
    const auto s = sigmas({0.5f, 0.5f});
    // every message names the node (ComfyUI's class_type) and the argument
    auto rejects = [&](const renorm_cfg& p, const tensor<float>& sig, const tensor<float>& uc, double k,
                       const std::string& word) {
        CHECK_THAT(test::error_of([&] { run<4>(p, sig, c, uc, k); }), Contains("RenormCFG: ") && Contains(word));
    };
    CHECK_NOTHROW(run<4>(renorm_cfg{}, s, c, u, 5.0));
    rejects(renorm_cfg{100.5, 1.0, 0}, s, u, 5.0, "'cfg_trunc' must be a finite value in [0, 100], got 100.5");
    rejects(renorm_cfg{-1, 1.0, 0}, s, u, 5.0, "'cfg_trunc'");
    rejects(renorm_cfg{100, 101.0, 0}, s, u, 5.0, "'renorm_cfg' must be a finite value in [0, 100]");
    rejects(renorm_cfg{100, -0.5, 0}, s, u, 5.0, "'renorm_cfg'");
    rejects(renorm_cfg{100, std::nan(""), 0}, s, u, 5.0, "'renorm_cfg'");
    rejects(renorm_cfg{100, 1.0, -2}, s, u, 5.0, "'in_channels'");
    rejects(renorm_cfg{}, s, u, std::nan(""), "cond_scale");
    rejects(renorm_cfg{}, sigmas({NAN, 0.5f}), u, 5.0, "sigma");
    rejects(renorm_cfg{}, sigmas({0.5f}), u, 5.0, "sigma");
    rejects(renorm_cfg{}, s, test::random_tensor({2, 3, 8, 8}, 1), 5.0, "uncond");
    rejects(renorm_cfg{}, s, test::random_tensor({1, 4, 8, 8}, 1), 5.0, "uncond");
}

} // namespace test_patches_cfg_renorm_cfg
