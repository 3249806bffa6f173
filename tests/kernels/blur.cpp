// Tests for kernels/blur.hpp: the separable blur against a direct 81-tap reflect-padded
// convolution in double, golden parity, sigma 0 identity, strided and in-place use, the
// masked blend (nearest upsampling as torch computes it), float and double, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "npy.hpp"
#include "patchbay/kernels/blur.hpp"
#include "test_util.hpp"

namespace test_kernels_blur {

using namespace patchbay;

namespace {

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

index_t reflect(index_t i, index_t n) { return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i; }

/// ComfyUI's blur as written: 9x9 kernel = outer(k, k), reflect padding 4, direct sums.
std::vector<double> reference_blur(const tensor<float>& img, double sigma) {
    double k[9], s = 0;
    for (int i = 0; i < 9; ++i) s += k[i] = std::exp(-0.5 * std::pow((i - 4) / sigma, 2));
    for (double& v : k) v /= s;
    const index_t B = img.extent(0), C = img.extent(1), H = img.extent(2), W = img.extent(3);
    std::vector<double> out(static_cast<std::size_t>(img.size()));
    for (index_t p = 0; p < B * C; ++p)
        for (index_t y = 0; y < H; ++y)
            for (index_t x = 0; x < W; ++x) {
                double acc = 0;
                for (int a = 0; a < 9; ++a)
                    for (int b = 0; b < 9; ++b)
                        acc += k[a] * k[b] * img[(p * H + reflect(y + a - 4, H)) * W + reflect(x + b - 4, W)];
                out[static_cast<std::size_t>((p * H + y) * W + x)] = acc;
            }
    return out;
}

template <class T>
double max_err(const tensor<T>& got, const std::vector<double>& want) {
    double m = 0;
    for (index_t i = 0; i < got.size(); ++i)
        m = std::max(m, std::fabs(double(got[i]) - want[static_cast<std::size_t>(i)]));
    return m;
}

} // namespace

TEST_CASE("blur: taps are a normalised symmetric Gaussian; sigma 0 is the unit impulse") {
    for (double sigma : {0.3, 1.0, 2.0, 10.0}) {
        const auto w = kernels::gaussian_taps<double>(sigma);
        double s = 0;
        for (double v : w) s += v;
        CHECK(s == Approx(1.0).epsilon(1e-15));
        for (int i = 0; i < 4; ++i) CHECK(w[static_cast<std::size_t>(i)] == w[static_cast<std::size_t>(8 - i)]);
        CHECK(w[4] > w[3]);
        CHECK(w[4] / w[3] == Approx(std::exp(0.5 / (sigma * sigma))).epsilon(1e-12));
    }
    const auto w0 = kernels::gaussian_taps<float>(0.0);
    for (std::size_t i = 0; i < 9; ++i) CHECK(w0[i] == (i == 4 ? 1.f : 0.f));
}

TEMPLATE_TEST_CASE("blur: matches the direct 81-tap reflect-padded convolution", "", float, double) {
    using T = TestType;
    const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
    struct shape { index_t b, c, h, w; };
    for (auto s : {shape{1, 1, 5, 5}, shape{2, 3, 7, 11}, shape{1, 4, 16, 16}, shape{1, 2, 9, 33},
                   shape{1, 1, 40, 5}}) {
        for (double sigma : {0.5, 2.0, 7.5}) {
            const auto src = test::random_tensor({s.b, s.c, s.h, s.w}, 11u + unsigned(s.w));
            const auto img = cast<T>(src);
            tensor<T> out(img.shape());
            kernels::gaussian_blur_2d<T>(img.template as<4>(), sigma, out.template as<4>());
            INFO("shape " << s.h << "x" << s.w << " sigma " << sigma);
            CHECK(max_err(out, reference_blur(src, sigma)) < tol);
        }
    }
}

TEST_CASE("blur: golden cases") {
    const std::string dir = std::string(PATCHBAY_GOLDEN_DIR) + "/SelfAttentionGuidance/";
    struct golden { const char* name; double sigma; double atol; };
    for (auto g : {golden{"blur-default-sigma2", 2.0, 1.4e-6}, golden{"blur-sigma05", 0.5, 4.7e-6},
                   golden{"blur-sigma5-real", 5.0, 1.7e-6}, golden{"blur-min-size-5x5", 2.0, 1.5e-6},
                   golden{"blur-ch16", 1.5, 2.3e-6}}) {
        const auto img = npy::load(dir + g.name + "/in_img.npy").to_tensor<float>();
        const auto want = npy::load(dir + g.name + "/out_blurred.npy").to_tensor<float>();
        tensor<float> got(img.shape());
        kernels::gaussian_blur_2d<float>(img.as<4>(), g.sigma, got.as<4>());
        INFO(g.name);
        for (index_t i = 0; i < got.size(); ++i)
            REQUIRE(std::fabs(got[i] - want[i]) <= g.atol + 1e-5 * std::fabs(want[i]));
    }
}

TEST_CASE("blur: sigma 0 returns the input bit for bit (ComfyUI: NaN)") {
    const auto img = test::random_tensor({2, 3, 8, 13}, 5);
    tensor<float> out(img.shape());
    kernels::gaussian_blur_2d<float>(img.as<4>(), 0.0, out.as<4>());
    CHECK(test::bit_equal(out, img));
}

TEST_CASE("blur: a constant plane stays constant") {
    tensor<float> img({1, 2, 6, 19});
    img.fill(3.25f);
    tensor<float> out(img.shape());
    kernels::gaussian_blur_2d<float>(img.as<4>(), 2.0, out.as<4>());
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(3.25f).epsilon(1e-6));
}

TEST_CASE("blur: strided input and output give the contiguous result; in place works") {
    const auto img = test::random_tensor({2, 3, 12, 21}, 7);
    tensor<float> want(img.shape());
    kernels::gaussian_blur_2d<float>(img.as<4>(), 1.7, want.as<4>());

    // input: every other column of a wider buffer, channels permuted in memory (C innermost
    // of the batch: layout N,H,W,C); output: a channel-last buffer too
    const index_t B = 2, C = 3, H = 12, W = 21;
    std::vector<float> wide(static_cast<std::size_t>(B * C * H * W * 2));
    view<float, 4> sv(wide.data(), {B, C, H, W}, {C * H * W * 2, 1, W * C * 2, C * 2});
    for (index_t b = 0; b < B; ++b)
        for (index_t c = 0; c < C; ++c)
            for (index_t y = 0; y < H; ++y)
                for (index_t x = 0; x < W; ++x) sv(b, c, y, x) = img.as<4>()(b, c, y, x);
    std::vector<float> nhwc(static_cast<std::size_t>(B * C * H * W));
    view<float, 4> ov(nhwc.data(), {B, C, H, W}, {C * H * W, 1, W * C, C});
    kernels::gaussian_blur_2d<float>(sv, 1.7, ov);
    double m = 0;
    for (index_t b = 0; b < B; ++b)
        for (index_t c = 0; c < C; ++c)
            for (index_t y = 0; y < H; ++y)
                for (index_t x = 0; x < W; ++x)
                    m = std::max(m, double(std::fabs(ov(b, c, y, x) - want.as<4>()(b, c, y, x))));
    CHECK(m < 1e-6);

    auto inplace = img;
    kernels::gaussian_blur_2d<float>(inplace.as<4>(), 1.7, inplace.as<4>());
    CHECK(test::max_abs_diff(inplace, want) < 1e-6);
}

TEST_CASE("blur: the masked blend takes the blur where the nearest-upsampled token is on") {
    const index_t B = 2, C = 2, H = 17, W = 24, rows = 3, cols = 5;
    const auto img = test::random_tensor({B, C, H, W}, 21);
    tensor<float> blurred(img.shape());
    kernels::gaussian_blur_2d<float>(img.as<4>(), 2.0, blurred.as<4>());
    std::vector<std::uint8_t> on(static_cast<std::size_t>(B * rows * cols));
    for (std::size_t i = 0; i < on.size(); ++i) on[i] = (i * 7 + 3) % 3 == 0;
    tensor<float> out(img.shape());
    kernels::blur_workspace<float> ws;
    kernels::masked_gaussian_blur_2d<float>(img.as<4>(), 2.0, {on.data(), rows, cols}, out.as<4>(), ws);
    index_t n_on = 0;
    for (index_t b = 0; b < B; ++b)
        for (index_t c = 0; c < C; ++c)
            for (index_t y = 0; y < H; ++y)
                for (index_t x = 0; x < W; ++x) {
                    // torch's nearest: floor(dst * float(in/out)), which here is exact math
                    const index_t r = (y * rows) / H, q = (x * cols) / W;
                    const bool m = on[static_cast<std::size_t>(b * rows * cols + r * cols + q)] != 0;
                    n_on += m;
                    const float want = m ? blurred.as<4>()(b, c, y, x) : img.as<4>()(b, c, y, x);
                    REQUIRE(out.as<4>()(b, c, y, x) == want);
                }
    CHECK(n_on > 0);
    CHECK(n_on < B * C * H * W);

    // all on = the plain blur, all off = a bit-exact copy
    std::vector<std::uint8_t> ones(on.size(), 1), zeros(on.size(), 0);
    kernels::masked_gaussian_blur_2d<float>(img.as<4>(), 2.0, {ones.data(), rows, cols}, out.as<4>(), ws);
    CHECK(test::bit_equal(out, blurred));
    kernels::masked_gaussian_blur_2d<float>(img.as<4>(), 2.0, {zeros.data(), rows, cols}, out.as<4>(), ws);
    CHECK(test::bit_equal(out, img));
}

TEST_CASE("blur: nearest source index follows torch's float scale") {
    using kernels::blur_detail::nearest_source;
    CHECK(nearest_source(5, 5, 5) == 5);
    CHECK(nearest_source(7, 4, 8) == 3);
    CHECK(nearest_source(39, 3, 40) == 2);
    CHECK(nearest_source(13, 3, 40) == 0); // 13 * 0.075f = 0.975
    CHECK(nearest_source(14, 3, 40) == 1); // 14 * 0.075f = 1.05
    CHECK(nearest_source(3, 8, 4) == 6); // downsampling keeps every other source
}

TEST_CASE("blur: bad input is rejected") {
    const auto img = test::random_tensor({1, 1, 4, 9}, 1);
    tensor<float> out(img.shape());
    CHECK_THROWS_AS(kernels::gaussian_blur_2d<float>(img.as<4>(), 2.0, out.as<4>()), error);
    const auto ok = test::random_tensor({1, 1, 6, 6}, 1);
    tensor<float> o6(ok.shape()), o7({1, 1, 6, 7});
    CHECK_THROWS_AS(kernels::gaussian_blur_2d<float>(ok.as<4>(), -1.0, o6.as<4>()), error);
    CHECK_THROWS_AS(kernels::gaussian_blur_2d<float>(ok.as<4>(), std::nan(""), o6.as<4>()), error);
    CHECK_THROWS_AS(kernels::gaussian_blur_2d<float>(ok.as<4>(), 1.0, o7.as<4>()), error);
    tensor<float> empty({1, 1, 0, 6});
    CHECK_THROWS_AS(kernels::gaussian_blur_2d<float>(empty.as<4>(), 1.0, empty.as<4>()), error);
    kernels::blur_workspace<float> ws;
    CHECK_THROWS_AS(kernels::masked_gaussian_blur_2d<float>(ok.as<4>(), 1.0, {nullptr, 2, 2}, o6.as<4>(), ws), error);
    try {
        kernels::gaussian_blur_2d<float>(img.as<4>(), 2.0, out.as<4>());
    } catch (const error& e) {
        CHECK(std::string(e.what()).find("at least 5x5") != std::string::npos);
    }
}

} // namespace test_kernels_blur
