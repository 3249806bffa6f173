// Tests for patches/pre_cfg/fresca.hpp: direct and FFT paths against a plain complex DFT of
// ComfyUI's mask, 5-D behaviour, identities, strides, batch split, bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <complex>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"
#include "test_util.hpp"

namespace test_patches_pre_cfg_fresca {

using namespace patchbay;

namespace {

/// Independent reference for one H x W plane of g: Re(IDFT(mask * DFT(g))) in double, mask =
/// sl on fftshifted positions [n/2 - f, n/2 + f) of both axes (f = min(cutoff, n/2)), sh
/// elsewhere.
std::vector<double> dft_ref(const std::vector<double>& g, index_t H, index_t W, int cutoff, double sl,
                            double sh) {
    const double pi = 3.14159265358979323846;
    auto in_box = [cutoff](index_t k, index_t n) {
        const index_t s = (k + n / 2) % n, c = n / 2, f = std::min<index_t>(cutoff, c);
        return s >= c - f && s < c + f;
    };
    std::vector<std::complex<double>> X(static_cast<std::size_t>(H * W));
    for (index_t u = 0; u < H; ++u)
        for (index_t v = 0; v < W; ++v) {
            std::complex<double> acc = 0;
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w)
                    acc += g[std::size_t(h * W + w)] *
                           std::polar(1.0, -2 * pi * (double(u * h) / double(H) + double(v * w) / double(W)));
            X[std::size_t(u * W + v)] = acc * ((in_box(u, H) && in_box(v, W)) ? sl : sh);
        }
    std::vector<double> y(static_cast<std::size_t>(H * W));
    for (index_t h = 0; h < H; ++h)
        for (index_t w = 0; w < W; ++w) {
            std::complex<double> acc = 0;
            for (index_t u = 0; u < H; ++u)
                for (index_t v = 0; v < W; ++v)
                    acc += X[std::size_t(u * W + v)] *
                           std::polar(1.0, 2 * pi * (double(u * h) / double(H) + double(v * w) / double(W)));
            y[std::size_t(h * W + w)] = acc.real() / double(H * W);
        }
    return y;
}

template <std::size_t R>
void run(const fresca& p, tensor<float>& cond, tensor<float>& uncond, bool uncond_is_none = false) {
    guidance_inputs<float, R> in;
    in.cond_scale = 5.0;
    in.uncond_is_none = uncond_is_none;
    no_state st;
    p.pre_cfg<float, R>(st, in, cond.as<R>(), uncond.as<R>());
}

/// Max |ours - reference| over all planes of a 4-D or 5-D case (every plane, every frame of a
/// 5-D one included, gets the same H x W mask).
template <std::size_t R>
double error_vs_reference(const std::vector<index_t>& shape, const fresca& p, unsigned seed) {
    auto c = test::random_tensor(shape, seed);
    auto u = test::random_tensor(shape, seed + 1);
    const auto c0 = c, u0 = u;
    run<R>(p, c, u);
    REQUIRE(test::bit_equal(u, u0)); // uncond untouched
    const index_t H = shape[R - 2], W = shape[R - 1];
    const index_t planes = c.size() / (H * W);
    double worst = 0;
    for (index_t q = 0; q < planes; ++q) {
        std::vector<double> g(static_cast<std::size_t>(H * W));
        for (index_t i = 0; i < H * W; ++i) g[std::size_t(i)] = double(c0[q * H * W + i] - u0[q * H * W + i]);
        const auto y = dft_ref(g, H, W, p.freq_cutoff, p.scale_low, p.scale_high);
        for (index_t i = 0; i < H * W; ++i)
            worst = std::max(worst, std::fabs(double(c[q * H * W + i]) - (y[std::size_t(i)] + u0[q * H * W + i])));
    }
    return worst;
}

} // namespace

TEST_CASE("FreSca matches ComfyUI's golden cases", "[fresca][golden]") {
    for (const char* name : {"ch16", "cut1-5x7", "cut2-5x7", "cut3-9x12", "cut5-96x80", "default-64x64",
                             "default-small", "skip-cfg1", "video-5d", "video-5d-T1", "width1"}) {
        INFO(name);
        const std::string d = std::string(PATCHBAY_GOLDEN_DIR) + "/FreSca/" + name + "/";
        std::ifstream f(d + "case.json");
        const auto spec = nlohmann::json::parse(f);
        const auto& prm = spec.at("params");
        for (auto path : {fresca_path::direct, fresca_path::fft, fresca_path::automatic}) {
            const fresca p{prm.at("scale_low").get<double>(), prm.at("scale_high").get<double>(),
                           prm.at("freq_cutoff").get<int>(), path};
            auto c = npy::load(d + "in_cond_denoised.npy").to_tensor<float>();
            auto u = npy::load(d + "in_uncond_denoised.npy").to_tensor<float>();
            const bool none = spec.at("scalars").value("uncond_is_none", false);
            if (c.rank() == 4) run<4>(p, c, u, none);
            else run<5>(p, c, u, none);
            const auto want = npy::load(d + "out_cond_out.npy");
            const double atol = spec.at("tolerances").at("cond_out").at("atol").get<double>();
            double worst = 0;
            for (index_t i = 0; i < c.size(); ++i)
                worst = std::max(worst, std::fabs(c[i] - want.values[std::size_t(i)]) /
                                            (atol + 1e-5 * std::fabs(want.values[std::size_t(i)])));
            CHECK(worst <= 1.0);
        }
    }
}

TEST_CASE("direct and FFT paths equal a plain complex DFT of ComfyUI's mask", "[fresca][fourier]") {
    struct tc {
        index_t H, W;
        int cutoff;
    };
    for (const tc t : std::vector<tc>{{1, 1, 1}, {1, 9, 2}, {9, 1, 3}, {2, 2, 1}, {5, 7, 1}, {5, 7, 2}, {5, 7, 3},
                                      {9, 12, 3}, {13, 11, 4}, {16, 16, 20}, {17, 19, 8}, {12, 15, 5}, {20, 8, 7}}) {
        for (auto path : {fresca_path::direct, fresca_path::fft}) {
            INFO(t.H << "x" << t.W << " cutoff " << t.cutoff << " path " << int(path));
            const fresca p{0.7, 1.3, t.cutoff, path};
            CHECK(error_vs_reference<4>({2, 2, t.H, t.W}, p, unsigned(t.H * 100 + t.W)) < 3e-6);
        }
    }
}

TEST_CASE("direct path == FFT path on latent-sized planes", "[fresca][fourier]") {
    struct tc {
        index_t H, W;
        int cutoff;
    };
    for (const tc t : std::vector<tc>{{64, 64, 20}, {128, 128, 20}, {96, 80, 5}, {60, 104, 20}, {61, 67, 30},
                                      {128, 128, 3}, {64, 64, 31}, {37, 128, 64}}) {
        INFO(t.H << "x" << t.W << " cutoff " << t.cutoff);
        auto c = test::random_tensor({1, 3, t.H, t.W}, 21);
        auto u = test::random_tensor({1, 3, t.H, t.W}, 22);
        auto c2 = c, u2 = u;
        run<4>(fresca{0.8, 1.4, t.cutoff, fresca_path::direct}, c, u);
        run<4>(fresca{0.8, 1.4, t.cutoff, fresca_path::fft}, c2, u2);
        CHECK(test::max_abs_diff(c, c2) < 5e-6);
    }
}

TEST_CASE("5-D: FFT and box over H,W only, every frame alike (ComfyUI 593786e4)", "[fresca][5d]") {
    for (auto path : {fresca_path::direct, fresca_path::fft}) {
        CHECK(error_vs_reference<5>({1, 2, 5, 9, 8}, fresca{0.6, 1.3, 1, path}, 31) < 3e-6);
        CHECK(error_vs_reference<5>({2, 2, 4, 6, 7}, fresca{0.6, 1.3, 2, path}, 32) < 3e-6);
        CHECK(error_vs_reference<5>({1, 2, 3, 16, 16}, fresca{0.85, 1.3, 3, path}, 33) < 3e-6);
        CHECK(error_vs_reference<5>({1, 2, 1, 16, 16}, fresca{0.85, 1.3, 3, path}, 34) < 3e-6); // T = 1
    }
    // a (N, C, T, H, W) latent gives exactly the bits of its frames as 4-D planes (N, C*T, H, W),
    // the last frame (outside the old T box) included
    for (index_t T : {1, 3, 6}) {
        INFO("T = " << T);
        auto c5 = test::random_tensor({2, 3, T, 12, 10}, 35);
        auto u5 = test::random_tensor({2, 3, T, 12, 10}, 36);
        const auto c0 = c5;
        tensor<float> c4({2, 3 * T, 12, 10}), u4({2, 3 * T, 12, 10});
        std::copy(c5.data(), c5.data() + c5.size(), c4.data());
        std::copy(u5.data(), u5.data() + u5.size(), u4.data());
        const fresca p{0.85, 1.3, 2};
        run<5>(p, c5, u5);
        run<4>(p, c4, u4);
        CHECK(std::equal(c5.data(), c5.data() + c5.size(), c4.data()));
        CHECK(test::max_abs_diff(c5, c0) > 0.01); // every frame was filtered
        CHECK(c5[c5.size() - 1] != c0[c0.size() - 1]);
    }
}

TEST_CASE("identities: scale_low = scale_high = 1 and the cond_scale 1 skip are bit-exact", "[fresca]") {
    auto c = test::random_tensor({2, 4, 16, 16}, 41);
    auto u = test::random_tensor({2, 4, 16, 16}, 42);
    const auto c0 = c, u0 = u;
    run<4>(fresca{1.0, 1.0, 3}, c, u);
    CHECK(test::bit_equal(c, c0));
    run<4>(fresca{0.5, 2.0, 3}, c, u, /*uncond_is_none=*/true);
    CHECK(test::bit_equal(c, c0));
    CHECK(test::bit_equal(u, u0));
    // equal scales: a plain scaling of the guidance
    run<4>(fresca{1.7, 1.7, 3}, c, u);
    for (index_t i = 0; i < c.size(); ++i) CHECK(c[i] == Approx(u0[i] + (c0[i] - u0[i]) * 1.7).margin(3e-6));
}

TEST_CASE("strided views and batch split give the same result", "[fresca]") {
    // W = 20 and 21: rows with and without a SIMD tail on every vector width; both paths
    for (index_t W : {20, 21})
        for (auto path : {fresca_path::direct, fresca_path::fft}) {
            INFO("W = " << W << " path " << int(path));
            auto c = test::random_tensor({3, 4, 24, W}, 51);
            auto u = test::random_tensor({3, 4, 24, W}, 52);
            auto cr = c, ur = u;
            const fresca p{0.7, 1.2, 4, path};
            run<4>(p, cr, ur);
            // channels-last storage
            tensor<float> cl({3, 24, W, 4}), ul({3, 24, W, 4});
            view<float, 4> cv(cl.data(), {3, 4, 24, W}, {24 * W * 4, 1, W * 4, 4});
            view<float, 4> uv(ul.data(), {3, 4, 24, W}, {24 * W * 4, 1, W * 4, 4});
            kernels::copy<float, 4>(c.as<4>(), cv);
            kernels::copy<float, 4>(u.as<4>(), uv);
            no_state st;
            guidance_inputs<float, 4> in;
            in.cond_scale = 4.0;
            p.pre_cfg<float, 4>(st, in, cv, uv);
            CHECK(test::bit_equal(tensor<float>::copy_of(cv), cr));
            // batch split
            auto cb = c, ub = u;
            for (index_t b = 0; b < 3; ++b)
                p.pre_cfg<float, 4>(st, in, cb.as<4>().batch_slice(b, 1), ub.as<4>().batch_slice(b, 1));
            CHECK(test::bit_equal(cb, cr));
        }
}

TEST_CASE("FreSca rejects bad input with patchbay::error", "[fresca][errors]") {
    auto c = test::random_tensor({1, 4, 8, 8}, 61);
    auto u = test::random_tensor({1, 4, 8, 8}, 62);
    // parameters are checked by the checked standalone entry point (and at guider / chain construction)
    auto call = [&](const fresca& p) {
        guidance_inputs<float, 4> in;
        in.cond_scale = 5.0;
        no_state st;
        apply_pre_cfg(p, st, in, c.as<4>(), u.as<4>());
    };
    CHECK_THROWS_AS((call(fresca{1.0, 1.25, 0})), error);
    CHECK_THROWS_AS((call(fresca{1.0, 1.25, 10001})), error);
    CHECK_THROWS_AS((call(fresca{-0.5, 1.25, 20})), error);
    CHECK_THROWS_AS((call(fresca{1.0, 10.5, 20})), error);
    CHECK_THROWS_WITH(call(fresca{std::nan(""), 1.25, 20}), Catch::Contains("scale_low"));
    // the inputs too (a guided step checks them once, before any hook)
    auto u2 = test::random_tensor({1, 4, 8, 9}, 63);
    no_state st;
    guidance_inputs<float, 4> in;
    in.cond_scale = 5.0;
    CHECK_THROWS_AS((apply_pre_cfg(fresca{}, st, in, c.as<4>(), u2.as<4>())), error);
    // partial overlap of cond and uncond
    tensor<float> big({1, 4, 8, 9});
    view<float, 4> a(big.data(), {1, 4, 8, 8}), b(big.data() + 1, {1, 4, 8, 8});
    CHECK_THROWS_AS((apply_pre_cfg(fresca{}, st, in, a, b)), error);
    in.cond_scale = std::nan("");
    CHECK_THROWS_AS((apply_pre_cfg(fresca{}, st, in, c.as<4>(), u.as<4>())), error);
}

} // namespace test_patches_pre_cfg_fresca
