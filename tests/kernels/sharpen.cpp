// kernels/sharpen.hpp: ComfyUI's gaussian_kernel taps, and the row-streamed separable blur with
// reflect padding against a direct 2-D float64 reference (edges, the smallest planes a radius
// allows, several channel groups, in-place output).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/sharpen.hpp"
#include "../patches/guidance_wave.hpp"

namespace test_kernels_sharpen {

using namespace patchbay;

namespace {

/// The blur of planes x H x W (contiguous) in float64, straight from the 2-D kernel.
std::vector<double> direct_blur(const tensor<float>& img, index_t r, double sigma) {
    const index_t P = img.extent(0), H = img.extent(1), W = img.extent(2);
    const auto k = test::wave::comfy_gaussian_kernel(r, sigma);
    std::vector<double> out;
    for (index_t p = 0; p < P; ++p) {
        const auto plane = test::wave::correlate_reflect(
            [&](index_t y, index_t x) { return double(img[(p * H + y) * W + x]); }, H, W, k, r);
        out.insert(out.end(), plane.begin(), plane.end());
    }
    return out;
}

/// reflect_blur_rows over planes x H x W; `in_place` writes each emitted row over the input.
tensor<float> blur(const tensor<float>& img, index_t r, double sigma, bool in_place, workspace& ws) {
    const index_t H = img.extent(1), W = img.extent(2);
    tensor<float> src = img, out(img.shape());
    tensor<float>& dst = in_place ? src : out;
    std::vector<float> taps(static_cast<std::size_t>(r + 1));
    kernels::gaussian_half_taps<float>(r, sigma, taps);
    index_t next_load = 0, next_emit = 0;
    kernels::reflect_blur_rows<float>(
        H, W, img.extent(0), std::span<const float>(taps),
        [&](index_t y, index_t p0, index_t np, float* d, index_t stride) {
            if (p0 == 0) REQUIRE(y == next_load++);
            for (index_t i = 0; i < np; ++i)
                for (index_t x = 0; x < W; ++x) d[i * stride + x] = src[((p0 + i) * H + y) * W + x];
        },
        [&](index_t y, index_t p0, index_t np, const float* s, index_t stride, const float* in, index_t in_stride) {
            if (p0 == 0) {
                REQUIRE(y == next_emit++);
                REQUIRE(next_load <= std::min(y + r + 1, H)); // never reads past y + r first
            }
            for (index_t i = 0; i < np; ++i)
                for (index_t x = 0; x < W; ++x) {
                    REQUIRE(in[i * in_stride + x] == img[((p0 + i) * H + y) * W + x]); // the row as loaded
                    dst[((p0 + i) * H + y) * W + x] = s[i * stride + x];
                }
        },
        ws);
    return dst;
}

} // namespace

TEST_CASE("gaussian_half_taps are ComfyUI's normalised 2-D kernel factored", "[sharpen]") {
    for (const auto& [r, sigma] : {std::pair{1L, 0.1}, std::pair{9L, 1.0}, std::pair{31L, 10.0}, std::pair{4L, 0.7}}) {
        std::vector<double> w(static_cast<std::size_t>(r + 1));
        kernels::gaussian_half_taps<double>(r, sigma, w);
        const auto k = test::wave::comfy_gaussian_kernel(r, sigma);
        const index_t K = 2 * r + 1;
        for (index_t i = 0; i < K; ++i)
            for (index_t j = 0; j < K; ++j)
                REQUIRE(w[static_cast<std::size_t>(std::abs(i - r))] * w[static_cast<std::size_t>(std::abs(j - r))] ==
                        Approx(k[static_cast<std::size_t>(i * K + j)]).epsilon(1e-12).margin(1e-300));
    }
}

TEST_CASE("reflect_blur_rows matches the direct 2-D blur with reflect padding", "[sharpen]") {
    workspace ws;
    struct shape_case {
        index_t planes, H, W, r;
        double sigma;
    };
    for (const auto& s : {shape_case{2, 16, 16, 9, 1.0}, shape_case{3, 11, 13, 5, 1.5}, shape_case{1, 2, 2, 1, 0.3},
                          shape_case{1, 32, 33, 31, 10.0}, shape_case{2, 7, 40, 6, 0.5},
                          shape_case{20, 40, 64, 31, 2.0}}) { // the last one needs two channel groups
        const auto img = test::random_tensor({s.planes, s.H, s.W}, static_cast<unsigned>(s.H * 7 + s.r));
        const auto want = direct_blur(img, s.r, s.sigma);
        for (bool in_place : {false, true}) {
            const auto got = blur(img, s.r, s.sigma, in_place, ws);
            double worst = 0;
            for (index_t i = 0; i < got.size(); ++i)
                worst = std::max(worst, std::fabs(double(got[i]) - want[static_cast<std::size_t>(i)]));
            CHECK(worst < 2e-6);
        }
    }
    CHECK(kernels::reflect_blur_group<float>(31, 64, 20) < 20);
}

TEST_CASE("reflect_blur_rows rejects a plane not larger than the radius", "[sharpen]") {
    workspace ws;
    const std::vector<float> taps(4, 0.25f);
    auto none = [](auto...) {};
    CHECK_THROWS_WITH(kernels::reflect_blur_rows<float>(3, 8, 1, taps, none, none, ws), Catch::Contains("radius"));
}

} // namespace test_kernels_sharpen
