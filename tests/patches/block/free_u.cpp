// Tests for patches/block/free_u.hpp (FreeU, FreeU_V2) and the direct four-bin filter of
// kernels/fourier_mask.hpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <complex>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "test_util.hpp"

namespace test_patches_block_free_u {

using namespace patchbay;

namespace {

/// Independent reference: ComfyUI's Fourier_filter written as a plain complex DFT in double.
/// y = Re(IDFT(mask * DFT(x))), mask = s on fftshifted rows/cols [n/2-1, n/2+1) (n == 1: {0}).
std::vector<double> dft_filter_ref(const float* x, index_t H, index_t W, double s) {
    const double pi = 3.14159265358979323846;
    auto in_box = [](index_t k, index_t n) {
        const index_t shifted = (k + n / 2) % n; // fftshift position of natural bin k
        const index_t c = n / 2;
        return n == 1 ? shifted == 0 : (shifted >= c - 1 && shifted < c + 1);
    };
    std::vector<std::complex<double>> X(static_cast<std::size_t>(H * W));
    for (index_t u = 0; u < H; ++u)
        for (index_t v = 0; v < W; ++v) {
            std::complex<double> acc = 0;
            for (index_t h = 0; h < H; ++h)
                for (index_t w = 0; w < W; ++w)
                    acc += double(x[h * W + w]) *
                           std::polar(1.0, -2 * pi * (double(u * h) / double(H) + double(v * w) / double(W)));
            X[static_cast<std::size_t>(u * W + v)] = acc * ((in_box(u, H) && in_box(v, W)) ? s : 1.0);
        }
    std::vector<double> y(static_cast<std::size_t>(H * W));
    for (index_t h = 0; h < H; ++h)
        for (index_t w = 0; w < W; ++w) {
            std::complex<double> acc = 0;
            for (index_t u = 0; u < H; ++u)
                for (index_t v = 0; v < W; ++v)
                    acc += X[static_cast<std::size_t>(u * W + v)] *
                           std::polar(1.0, 2 * pi * (double(u * h) / double(H) + double(v * w) / double(W)));
            y[static_cast<std::size_t>(h * W + w)] = acc.real() / double(H * W);
        }
    return y;
}

template <class P>
void run_in_place(const P& p, tensor<float>& h, tensor<float>& hsp) {
    no_state st;
    p.output_block(st, block_site{unet_stage::output, 3, h.extent(1)}, h.as<4>(), hsp.as<4>());
}

double worst_ratio_vs_golden(const std::string& patch, const std::string& name, bool v2) {
    const std::string d = std::string(PATCHBAY_GOLDEN_DIR) + "/" + patch + "/" + name + "/";
    std::ifstream f(d + "case.json");
    const auto spec = nlohmann::json::parse(f);
    const auto& prm = spec.at("params");
    const index_t mc = spec.at("scalars").at("model_channels").get<index_t>();
    auto h = npy::load(d + "in_h.npy").to_tensor<float>();
    auto hsp = npy::load(d + "in_hsp.npy").to_tensor<float>();
    if (v2)
        run_in_place(free_u_v2{prm.at("b1").get<double>(), prm.at("b2").get<double>(), prm.at("s1").get<double>(),
                               prm.at("s2").get<double>(), mc},
                     h, hsp);
    else
        run_in_place(free_u{prm.at("b1").get<double>(), prm.at("b2").get<double>(), prm.at("s1").get<double>(),
                            prm.at("s2").get<double>(), mc},
                     h, hsp);
    double worst = 0;
    for (const char* o : {"h", "hsp"}) {
        const auto want = npy::load(d + "out_" + o + ".npy");
        const auto& got = std::string(o) == "h" ? h : hsp;
        const double atol = spec.at("tolerances").at(o).at("atol").get<double>();
        for (index_t i = 0; i < got.size(); ++i) {
            const double e = want.values[std::size_t(i)];
            if (std::isnan(e)) {
                REQUIRE(std::isfinite(got[i])); // NaN policy
                continue;
            }
            worst = std::max(worst, std::fabs(got[i] - e) / (atol + 1e-5 * std::fabs(e)));
        }
    }
    return worst;
}

} // namespace

TEST_CASE("FreeU / FreeU_V2 match ComfyUI's golden cases", "[free_u][golden]") {
    for (const char* name : {"sd-1280-1280-default", "sd-1280-640-alt", "sd-640-320-alt", "sd-320-noop",
                             "toy-ch8-stage1-5x7", "toy-ch16-1x1", "toy-ch8-2x3", "s-zero"}) {
        INFO(name);
        CHECK(worst_ratio_vs_golden("FreeU", name, false) <= 1.0);
        CHECK(worst_ratio_vs_golden("FreeU_V2", name, true) <= 1.0);
    }
    CHECK(worst_ratio_vs_golden("FreeU_V2", "nan-constant-channel-mean", true) <= 1.0);
}

TEST_CASE("the direct four-bin filter equals a plain complex DFT of ComfyUI's mask", "[free_u][fourier]") {
    for (auto [H, W] : std::vector<std::pair<index_t, index_t>>{
             {1, 1}, {1, 7}, {7, 1}, {2, 2}, {2, 3}, {3, 2}, {5, 7}, {9, 12}, {13, 17}, {16, 16}, {4, 31}}) {
        for (double s : {0.0, 0.2, 0.9, 2.5}) {
            INFO(H << "x" << W << " s=" << s);
            auto x = test::random_tensor({2, 3, H, W}, unsigned(H * 31 + W));
            tensor<float> y({2, 3, H, W});
            workspace ws;
            free_u_detail::fourier_filter<float>(x.as<4>(), y.as<4>(), s, ws);
            double worst = 0;
            for (index_t p = 0; p < 6; ++p) {
                const auto ref = dft_filter_ref(x.data() + p * H * W, H, W, s);
                for (index_t i = 0; i < H * W; ++i)
                    worst = std::max(worst, std::fabs(double(y[p * H * W + i]) - ref[std::size_t(i)]));
            }
            CHECK(worst < 2e-6);
        }
    }
}

TEST_CASE("direct path == FFT path (kernels/fft.hpp), including odd, prime and large sizes", "[free_u][fourier]") {
    for (auto [H, W] : std::vector<std::pair<index_t, index_t>>{
             {1, 1}, {2, 5}, {3, 3}, {11, 13}, {32, 32}, {64, 64}, {37, 41}, {96, 80}, {1, 64}}) {
        INFO(H << "x" << W);
        auto x = test::random_tensor({1, 4, H, W}, unsigned(H + 1000 * W));
        tensor<float> a({1, 4, H, W}), b({1, 4, H, W});
        workspace ws;
        free_u_detail::fourier_filter<float>(x.as<4>(), a.as<4>(), 0.35, ws);
        free_u_detail::fourier_filter_fft<float>(x.as<4>(), b.as<4>(), 0.35, ws);
        CHECK(test::max_abs_diff(a, b) < 3e-6);
    }
}

TEST_CASE("b = s = 1 is a bit-exact pass-through", "[free_u]") {
    auto h = test::random_tensor({2, 8, 9, 12}, 1);
    auto hsp = test::random_tensor({2, 8, 9, 12}, 2);
    const auto h0 = h, hsp0 = hsp;
    run_in_place(free_u{1.0, 1.0, 1.0, 1.0, 2}, h, hsp);
    CHECK(test::bit_equal(h, h0));
    CHECK(test::bit_equal(hsp, hsp0));
    run_in_place(free_u_v2{1.0, 1.0, 1.0, 1.0, 2}, h, hsp);
    CHECK(test::bit_equal(h, h0));
    CHECK(test::bit_equal(hsp, hsp0));
}

TEST_CASE("ComfyUI's channel rule picks (b1,s1), (b2,s2) or nothing", "[free_u]") {
    const free_u p{1.5, 1.25, 0.5, 0.25, 320};
    REQUIRE(p.factors_for(1280).has_value());
    CHECK(p.factors_for(1280)->b == 1.5);
    CHECK(p.factors_for(1280)->s == 0.5);
    CHECK(p.factors_for(640)->b == 1.25);
    CHECK(p.factors_for(640)->s == 0.25);
    CHECK_FALSE(p.factors_for(320).has_value());
    CHECK_FALSE(p.factors_for(960).has_value());

    // 2 x model_channels: first half of h scaled by b2 exactly; hsp (other channel count)
    // filtered with s2; a 3 x model_channels block is untouched.
    auto h = test::random_tensor({1, 8, 6, 6}, 3);
    auto hsp = test::random_tensor({1, 2, 6, 6}, 4);
    const auto h0 = h;
    const free_u q{1.5, 1.25, 0.5, 0.25, 4};
    run_in_place(q, h, hsp);
    for (index_t i = 0; i < h.size(); ++i)
        CHECK(h[i] == (i < 4 * 36 ? h0[i] * 1.25f : h0[i]));
    auto h3 = test::random_tensor({1, 12, 6, 6}, 5);
    auto s3 = test::random_tensor({1, 12, 6, 6}, 6);
    const auto h30 = h3, s30 = s3;
    run_in_place(q, h3, s3);
    CHECK(test::bit_equal(h3, h30));
    CHECK(test::bit_equal(s3, s30));
}

TEST_CASE("FreeU_V2 weights by the min-max normalised channel mean; constant maps get no weight", "[free_u]") {
    auto h = test::random_tensor({2, 4, 3, 5}, 7);
    auto hsp = test::random_tensor({2, 4, 3, 5}, 8);
    const auto h0 = h;
    const free_u_v2 p{1.5, 1.2, 1.0, 1.0, 1}; // 4 channels = 4 x 1 -> b1 = 1.5
    run_in_place(p, h, hsp);
    for (index_t n = 0; n < 2; ++n) {
        std::vector<double> m(15);
        for (index_t q = 0; q < 15; ++q) {
            double s = 0;
            for (index_t c = 0; c < 4; ++c) s += h0[(n * 4 + c) * 15 + q];
            m[std::size_t(q)] = s / 4;
        }
        const double mn = *std::min_element(m.begin(), m.end()), mx = *std::max_element(m.begin(), m.end());
        for (index_t c = 0; c < 4; ++c)
            for (index_t q = 0; q < 15; ++q) {
                const double wgt = c < 2 ? 0.5 * (m[std::size_t(q)] - mn) / (mx - mn) + 1 : 1.0;
                CHECK(h[(n * 4 + c) * 15 + q] == Approx(h0[(n * 4 + c) * 15 + q] * wgt).margin(1e-6));
            }
    }
    // 1x1 features: ComfyUI gives NaN (0/0); patchbay leaves h unweighted and finite.
    auto h1 = test::random_tensor({2, 4, 1, 1}, 9);
    auto s1 = test::random_tensor({2, 4, 1, 1}, 10);
    const auto h10 = h1, s10 = s1;
    run_in_place(free_u_v2{1.5, 1.2, 0.6, 0.3, 1}, h1, s1);
    CHECK(test::bit_equal(h1, h10));
    for (index_t i = 0; i < s1.size(); ++i) CHECK(s1[i] == s10[i] * 0.6f); // 1x1: whole spectrum in the box
}

TEST_CASE("strided views give the same result as contiguous copies", "[free_u]") {
    // rows read in place when contiguous (W a multiple of the SIMD width: 16, 32, 80: 80 is
    // five 16-lane vectors, so two column chunks at every width) or gathered (10, 21: with a
    // SIMD tail on every width); H = 2 takes the general direct path
    for (auto [H, W] : std::vector<std::pair<index_t, index_t>>{{7, 10}, {7, 16}, {7, 21}, {7, 32}, {5, 80}, {2, 13}}) {
        INFO(H << "x" << W);
        auto h = test::random_tensor({2, 8, H, W}, 11);
        auto hsp = test::random_tensor({2, 4, H, W}, 12);
        auto hc = h, sc = hsp;
        run_in_place(free_u_v2{1.3, 1.4, 0.9, 0.2, 2}, hc, sc);
        // channels-last storage (N,H,W,C) seen as (N,C,H,W) with strides
        tensor<float> hl({2, H, W, 8}), sl({2, H, W, 4});
        view<float, 4> hv(hl.data(), {2, 8, H, W}, {H * W * 8, 1, W * 8, 8});
        view<float, 4> sv(sl.data(), {2, 4, H, W}, {H * W * 4, 1, W * 4, 4});
        kernels::copy<float, 4>(h.as<4>(), hv);
        kernels::copy<float, 4>(hsp.as<4>(), sv);
        no_state st;
        free_u_v2{1.3, 1.4, 0.9, 0.2, 2}.output_block(st, block_site{unet_stage::output, 0, 8}, hv, sv);
        CHECK(test::bit_equal(tensor<float>::copy_of(hv), hc));
        CHECK(test::max_abs_diff(tensor<float>::copy_of(sv), sc) == 0.0);
    }
}

TEST_CASE("batch split and the non-mutating variant agree with the in-place call", "[free_u]") {
    auto h = test::random_tensor({3, 8, 12, 9}, 13);
    auto hsp = test::random_tensor({3, 8, 12, 9}, 14);
    const auto h0 = h, s0 = hsp;
    const free_u_v2 p{1.3, 1.4, 0.7, 0.2, 2};
    auto hw = h, sw = hsp;
    run_in_place(p, hw, sw);
    // per batch item
    auto hb = h, sb = hsp;
    no_state st;
    for (index_t b = 0; b < 3; ++b)
        p.output_block(st, block_site{unet_stage::output, 0, 8}, hb.as<4>().batch_slice(b, 1),
                       sb.as<4>().batch_slice(b, 1));
    CHECK(test::bit_equal(hb, hw));
    CHECK(test::bit_equal(sb, sw));
    // outputs elsewhere; inputs untouched
    tensor<float> ho({3, 8, 12, 9}), so({3, 8, 12, 9});
    p.output_block<float>(st, block_site{unet_stage::output, 0, 8}, h.as<4>(), hsp.as<4>(), ho.as<4>(), so.as<4>());
    CHECK(test::bit_equal(ho, hw));
    CHECK(test::bit_equal(so, sw));
    CHECK(test::bit_equal(h, h0));
    CHECK(test::bit_equal(hsp, s0));
}

TEST_CASE("double precision agrees with float", "[free_u]") {
    auto h = test::random_tensor({1, 4, 8, 6}, 15);
    auto hsp = test::random_tensor({1, 4, 8, 6}, 16);
    tensor<double> hd({1, 4, 8, 6}), sd({1, 4, 8, 6});
    for (index_t i = 0; i < h.size(); ++i) hd[i] = h[i], sd[i] = hsp[i];
    const free_u p{1.1, 1.2, 0.9, 0.2, 1};
    run_in_place(p, h, hsp);
    no_state st;
    p.output_block(st, block_site{unet_stage::output, 0, 4}, hd.as<4>(), sd.as<4>());
    for (index_t i = 0; i < h.size(); ++i) {
        CHECK(hd[i] == Approx(h[i]).margin(2e-6));
        CHECK(sd[i] == Approx(hsp[i]).margin(2e-6));
    }
}

TEST_CASE("FreeU rejects bad input with patchbay::error", "[free_u][errors]") {
    auto h = test::random_tensor({1, 8, 4, 4}, 17);
    auto hsp = test::random_tensor({1, 8, 4, 4}, 18);
    no_state st;
    const block_site site{unet_stage::output, 0, 8};
    // parameters are checked by the checked standalone entry point (and at guider / chain construction)
    auto call = [&](const free_u& p) { apply_output_block(p, st, site, h.as<4>(), hsp.as<4>()); };
    CHECK_THROWS_AS((call(free_u{-0.1, 1.2, 0.9, 0.2, 2})), error);
    CHECK_THROWS_AS((call(free_u{1.1, 10.5, 0.9, 0.2, 2})), error);
    CHECK_THROWS_AS((call(free_u{1.1, 1.2, std::nan(""), 0.2, 2})), error);
    CHECK_THROWS_AS((call(free_u{1.1, 1.2, 0.9, 0.2, 0})), error);
    CHECK_THROWS_WITH(call(free_u{1.1, 1.2, 0.9, 11.0, 2}), Catch::Contains("s2"));
    // rank 3 skip / rank 5 features
    tensor<float> s3({8, 4, 4}), h5({1, 8, 1, 4, 4});
    CHECK_THROWS_AS((free_u{}.output_block(st, site, h.as<4>(), s3.as<3>())), error);
    CHECK_THROWS_AS((free_u_v2{}.output_block(st, site, h5.as<5>(), h5.as<5>())), error);
    // batch mismatch, channel count in the site, empty
    auto s_b = test::random_tensor({2, 8, 4, 4}, 19);
    CHECK_THROWS_AS((free_u{.model_channels = 2}.output_block(st, site, h.as<4>(), s_b.as<4>())), error);
    CHECK_THROWS_AS((free_u{.model_channels = 2}.output_block(st, block_site{unet_stage::output, 0, 4}, h.as<4>(),
                                                              hsp.as<4>())),
                    error);
    tensor<float> e({1, 0, 4, 4});
    CHECK_THROWS_AS((free_u{.model_channels = 2}.output_block(st, site, e.as<4>(), hsp.as<4>())), error);
}

TEST_CASE("FreeU filters h and hsp separately: their spatial sizes may differ (Deep Shrink)", "[free_u]") {
    // Inside Deep Shrink's window h reaches an output block shrunk; with FreeU first in node
    // order its hook sees that h beside the full-size skip, as in ComfyUI, which never compares them.
    const auto h = test::random_tensor({2, 8, 4, 4}, 31);
    const auto hsp_big = test::random_tensor({2, 8, 8, 6}, 32), hsp_same = test::random_tensor({2, 8, 4, 4}, 33);
    for (const bool v2 : {false, true}) {
        auto h1 = h, h2 = h, s1 = hsp_big, s2 = hsp_same;
        no_state st;
        const block_site site{unet_stage::output, 0, 8};
        if (v2) {
            apply_output_block(free_u_v2{.model_channels = 2}, st, site, h1.as<4>(), s1.as<4>());
            apply_output_block(free_u_v2{.model_channels = 2}, st, site, h2.as<4>(), s2.as<4>());
        } else {
            apply_output_block(free_u{.model_channels = 2}, st, site, h1.as<4>(), s1.as<4>());
            apply_output_block(free_u{.model_channels = 2}, st, site, h2.as<4>(), s2.as<4>());
        }
        CHECK(test::bit_equal(h1, h2));        // h's result does not depend on the skip
        CHECK(!test::bit_equal(h1, h));        // and the backbone factor did act
        CHECK(!test::bit_equal(s1, hsp_big));  // the skip at its own size was filtered
    }
}

} // namespace test_patches_block_free_u
