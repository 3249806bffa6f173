// patches/pre_cfg/latent_apply_operation_cfg.hpp: Sharpen and TonemapReinhard against float64
// references written from the semantics (Sharpen with ComfyUI's full 2-D kernel), Sharpen on
// 5-D = frame by frame, alpha 0 as a bit-exact identity, the finite limits where ComfyUI gives
// NaN (Tonemap multiplier 0, one pixel per item), the three-prediction overload, strided =
// contiguous bit for bit, no allocation after the first call, bad input through apply_pre_cfg.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "counting_allocator.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/patches/pre_cfg/latent_apply_operation_cfg.hpp"

namespace test_patches_pre_cfg_latent_apply_operation_cfg {

using namespace patchbay;
using test::wave::cfg_call;
using test::wave::random_call;

namespace {

/// The patch's pre-cfg hook through the checked entry; returns (cond, uncond) after it.
template <std::size_t R>
cfg_call<float> run(const latent_apply_operation_cfg& p, cfg_call<float> c, workspace* ws = nullptr) {
    no_state st;
    apply_pre_cfg(p, st, c.inputs<R>(nullptr, ws), c.cond.as<R>(), c.uncond.as<R>());
    return c;
}

latent_apply_operation_cfg sharpen(int r, double sigma, double alpha) {
    return {latent_operation_sharpen{r, sigma, alpha}};
}
latent_apply_operation_cfg tonemap(double multiplier) { return {latent_operation_tonemap_reinhard{multiplier}}; }

/// semantics-guidance.md section 5, Sharpen, in float64 on a 4-D (N, C, H, W) call: ComfyUI's
/// 2-D kernel (grid linspace(-1, 1), normalised, times -10 alpha, centre raised to sum 1).
tensor<double> sharpen_reference(const cfg_call<float>& c, index_t r, double sigma, double alpha) {
    const index_t N = c.cond.extent(0), C = c.cond.extent(1), H = c.cond.extent(2), W = c.cond.extent(3);
    const index_t K = 2 * r + 1;
    std::vector<double> k = test::wave::comfy_gaussian_kernel(r, sigma);
    double ksum = 0;
    for (auto& v : k) ksum += v *= -10.0 * alpha;
    k[static_cast<std::size_t>(r * K + r)] += 1.0 - ksum;
    auto at = [&](index_t n, index_t ch, index_t y, index_t x) { return ((n * C + ch) * H + y) * W + x; };
    tensor<double> out(c.cond.shape()), nrm(c.cond.shape()), lum({N, H, W});
    for (index_t n = 0; n < N; ++n)
        for (index_t y = 0; y < H; ++y)
            for (index_t x = 0; x < W; ++x) {
                double s = 0;
                for (index_t ch = 0; ch < C; ++ch) {
                    const double d = double(c.cond[at(n, ch, y, x)]) - double(c.uncond[at(n, ch, y, x)]);
                    s += d * d;
                }
                lum[(n * H + y) * W + x] = std::sqrt(s) + 1e-6;
                for (index_t ch = 0; ch < C; ++ch)
                    nrm[at(n, ch, y, x)] =
                        (double(c.cond[at(n, ch, y, x)]) - double(c.uncond[at(n, ch, y, x)])) / lum[(n * H + y) * W + x];
            }
    for (index_t n = 0; n < N; ++n)
        for (index_t ch = 0; ch < C; ++ch) {
            const auto conv = test::wave::correlate_reflect(
                [&](index_t y, index_t x) { return nrm[at(n, ch, y, x)]; }, H, W, k, r);
            for (index_t y = 0; y < H; ++y)
                for (index_t x = 0; x < W; ++x)
                    out[at(n, ch, y, x)] = double(c.uncond[at(n, ch, y, x)]) +
                                           lum[(n * H + y) * W + x] * conv[static_cast<std::size_t>(y * W + x)];
        }
    return out;
}

/// Section 5, TonemapReinhard, in float64 (any rank: pixels are everything after the channels).
tensor<double> tonemap_reference(const cfg_call<float>& c, double multiplier) {
    const index_t N = c.cond.extent(0), C = c.cond.extent(1), P = c.cond.size() / (N * C);
    tensor<double> out(c.cond.shape());
    for (index_t n = 0; n < N; ++n) {
        std::vector<double> m(static_cast<std::size_t>(P));
        double mean = 0;
        for (index_t p = 0; p < P; ++p) {
            double s = 0;
            for (index_t ch = 0; ch < C; ++ch) {
                const index_t i = (n * C + ch) * P + p;
                s += (double(c.cond[i]) - double(c.uncond[i])) * (double(c.cond[i]) - double(c.uncond[i]));
            }
            mean += m[static_cast<std::size_t>(p)] = std::sqrt(s) + 1e-10;
        }
        mean /= double(P);
        double var = 0;
        for (double v : m) var += (v - mean) * (v - mean);
        const double top = (std::sqrt(var / double(P - 1)) * 5 + mean) * multiplier;
        for (index_t p = 0; p < P; ++p) {
            const double mv = m[static_cast<std::size_t>(p)], a = mv / top, m_new = a / (a + 1) * top;
            for (index_t ch = 0; ch < C; ++ch) {
                const index_t i = (n * C + ch) * P + p;
                out[i] = (double(c.cond[i]) - double(c.uncond[i])) / mv * m_new + double(c.uncond[i]);
            }
        }
    }
    return out;
}

} // namespace

TEST_CASE("LatentApplyOperationCFG descriptors: the operation is a linked, described value",
          "[latent_operation]") {
    constexpr auto d = latent_apply_operation_cfg::descriptor();
    CHECK(d.class_type == "LatentApplyOperationCFG");
    CHECK(d.slot == hook_kind::pre_cfg);
    const auto in = d.infos();
    REQUIRE(in.size() == 1);
    CHECK(in[0].kind == input_kind::link);
    CHECK(in[0].link_type == "LATENT_OPERATION");
    CHECK(latent_operation_sharpen::descriptor().class_type == "LatentOperationSharpen");
    CHECK(latent_operation_tonemap_reinhard::descriptor().class_type == "LatentOperationTonemapReinhard");
    CHECK(to_string(latent_apply_operation_cfg{}) ==
          "LatentApplyOperationCFG(operation=LatentOperationSharpen(sharpen_radius=9, sigma=1, alpha=0.1))");
    CHECK(to_string(tonemap(0.5)) == "LatentApplyOperationCFG(operation=LatentOperationTonemapReinhard(multiplier=0.5))");
}

TEST_CASE("Sharpen matches ComfyUI's 2-D kernel in float64", "[latent_operation][sharpen]") {
    struct sharpen_case {
        std::vector<index_t> shape;
        int r;
        double sigma, alpha;
    };
    for (const auto& s : {sharpen_case{{2, 4, 16, 16}, 9, 1.0, 0.1}, sharpen_case{{1, 3, 11, 13}, 5, 1.5, 0.3},
                          sharpen_case{{2, 4, 16, 16}, 1, 0.1, 5.0}, sharpen_case{{1, 2, 40, 36}, 31, 10.0, 0.5},
                          sharpen_case{{1, 16, 12, 10}, 3, 2.0, 1.0}}) {
        const auto c = random_call(s.shape, 10 + static_cast<unsigned>(s.r), 6.0);
        const auto got = run<4>(sharpen(s.r, s.sigma, s.alpha), c);
        CHECK(test::wave::max_rel_diff(got.cond, sharpen_reference(c, s.r, s.sigma, s.alpha)) < 2e-5);
        CHECK(test::bit_equal(got.uncond, c.uncond));
    }
}

TEST_CASE("Sharpen on 5-D latents works frame by frame", "[latent_operation][sharpen]") {
    const auto c = random_call({2, 4, 3, 12, 12}, 20, 5.0);
    const auto five = run<5>(sharpen(3, 1.0, 0.2), c);
    // the same frames as a (B*T, C, H, W) batch
    auto frames = [](const tensor<float>& t) {
        tensor<float> f({6, 4, 12, 12});
        for (index_t b = 0; b < 2; ++b)
            for (index_t ch = 0; ch < 4; ++ch)
                for (index_t t3 = 0; t3 < 3; ++t3)
                    std::copy_n(t.data() + ((b * 4 + ch) * 3 + t3) * 144, 144, f.data() + ((b * 3 + t3) * 4 + ch) * 144);
        return f;
    };
    cfg_call<float> flat = c;
    flat.cond = frames(c.cond), flat.uncond = frames(c.uncond), flat.x = frames(c.x);
    flat.sigma = tensor<float>({6});
    flat.sigma.fill(1.f);
    CHECK(test::bit_equal(frames(five.cond), run<4>(sharpen(3, 1.0, 0.2), flat).cond));
}

TEST_CASE("Sharpen at alpha 0 is the identity, bit for bit", "[latent_operation][sharpen]") {
    const auto c = random_call({2, 4, 16, 16}, 30);
    CHECK(test::bit_equal(run<4>(sharpen(4, 1.0, 0.0), c).cond, c.cond));
}

TEST_CASE("TonemapReinhard matches the float64 reference", "[latent_operation][tonemap]") {
    for (double mult : {1.0, 0.25, 100.0}) {
        const auto c = random_call({3, 4, 9, 11}, 40, 6.0);
        CHECK(test::wave::max_rel_diff(run<4>(tonemap(mult), c).cond, tonemap_reference(c, mult)) < 2e-5);
    }
    const auto v = random_call({1, 4, 3, 16, 16}, 50, 5.0);
    CHECK(test::wave::max_rel_diff(run<5>(tonemap(0.7), v).cond, tonemap_reference(v, 0.7)) < 2e-5);
}

TEST_CASE("TonemapReinhard returns the finite limits where ComfyUI gives NaN", "[latent_operation][tonemap]") {
    SECTION("multiplier 0: top = 0, m' -> 0, cond = uncond") {
        const auto c = random_call({1, 4, 8, 8}, 60, 5.0);
        const auto out = run<4>(tonemap(0.0), c);
        CHECK(test::bit_equal(out.cond, c.uncond));
    }
    SECTION("one pixel per item: std = 0, top = m * multiplier, cond = uncond + d * mult / (1 + mult)") {
        const auto c = random_call({2, 4, 1, 1}, 70, 5.0);
        for (double mult : {1.0, 3.0}) {
            const auto out = run<4>(tonemap(mult), c);
            for (index_t i = 0; i < out.cond.size(); ++i) {
                const double d = double(c.cond[i]) - double(c.uncond[i]);
                REQUIRE(std::isfinite(out.cond[i]));
                REQUIRE(out.cond[i] == Approx(double(c.uncond[i]) + d * mult / (1 + mult)).margin(1e-6));
            }
        }
    }
}

TEST_CASE("LatentApplyOperationCFG at cond_scale 1 (uncond zeros) applies the operation to cond",
          "[latent_operation]") {
    auto c = random_call({1, 4, 12, 12}, 80, 1.0);
    c.uncond.fill(0.f);
    c.uncond_is_none = true;
    const auto out = run<4>(sharpen(3, 1.0, 0.5), c);
    CHECK(test::wave::max_rel_diff(out.cond, sharpen_reference(c, 3, 1.0, 0.5)) < 2e-5);
}

TEST_CASE("LatentApplyOperationCFG with three predictions transforms cond alone", "[latent_operation]") {
    // inside PerpNegGuider the pre-cfg hooks see prediction_count 3 (ComfyUI's len(conds_out)):
    // cond = op(cond), not op(cond - uncond) + uncond
    const auto c = random_call({2, 4, 12, 12}, 90, 5.0);
    const auto extra = test::random_tensor({2, 4, 12, 12}, 95);
    for (const auto& p : {sharpen(3, 1.0, 0.3), tonemap(0.8)}) {
        auto three = c;
        auto in = three.inputs<4>();
        in.prediction_count = 3;
        in.extra_denoised = extra.as<4>();
        no_state st;
        apply_pre_cfg(p, st, in, three.cond.as<4>(), three.uncond.as<4>());
        auto zero = c; // op(cond) is the two-prediction result with a zero uncond
        zero.uncond.fill(0.f);
        CHECK(test::bit_equal(three.cond, run<4>(p, zero).cond));
        CHECK(!test::bit_equal(three.cond, run<4>(p, c).cond)); // the two-prediction form differs
        CHECK(test::bit_equal(three.uncond, c.uncond));
    }
}

TEST_CASE("LatentApplyOperationCFG: strided inputs give the contiguous result bit for bit", "[latent_operation]") {
    const auto c = random_call({2, 3, 11, 13}, 100, 6.0);
    for (const auto& p : {sharpen(4, 1.5, 0.4), tonemap(0.9)}) {
        const auto want = run<4>(p, c);
        test::wave::strided<float> x(c.x), cond(c.cond), uncond(c.uncond);
        auto in = c.inputs<4>();
        in.x = x.as<4>();
        no_state st;
        apply_pre_cfg(p, st, in, cond.as<4>(), uncond.as<4>());
        CHECK(test::bit_equal(cond.values(), want.cond));
        CHECK(test::bit_equal(uncond.values(), c.uncond));
    }
}

TEST_CASE("LatentApplyOperationCFG allocates nothing after the first call with a run's scratch",
          "[latent_operation]") {
    workspace ws;
    for (const auto& p : {sharpen(9, 1.0, 0.1), tonemap(1.0)}) {
        auto c = random_call({1, 4, 32, 32}, 110, 6.0);
        no_state st;
        const auto in = c.inputs<4>(nullptr, &ws);
        apply_pre_cfg(p, st, in, c.cond.as<4>(), c.uncond.as<4>());
        const test::allocation_counter count;
        apply_pre_cfg(p, st, in, c.cond.as<4>(), c.uncond.as<4>());
        CHECK(count.count() == 0);
    }
}

TEST_CASE("LatentApplyOperationCFG rejects bad input through apply_pre_cfg", "[latent_operation]") {
    auto c = random_call({1, 4, 8, 8}, 120, 5.0);
    no_state st;
    CHECK_THROWS_WITH(apply_pre_cfg(sharpen(9, 1.0, 0.1), st, c.inputs<4>(), c.cond.as<4>(), c.uncond.as<4>()),
                      Catch::Contains("LatentOperationSharpen") && Catch::Contains("sharpen_radius"));
    CHECK_THROWS_WITH(apply_pre_cfg(sharpen(0, 1.0, 0.1), st, c.inputs<4>(), c.cond.as<4>(), c.uncond.as<4>()),
                      Catch::Contains("LatentOperationSharpen") && Catch::Contains("sharpen_radius"));
    CHECK_THROWS_WITH(apply_pre_cfg(sharpen(3, 0.0, 0.1), st, c.inputs<4>(), c.cond.as<4>(), c.uncond.as<4>()),
                      Catch::Contains("sigma"));
    CHECK_THROWS_WITH(apply_pre_cfg(tonemap(-1.0), st, c.inputs<4>(), c.cond.as<4>(), c.uncond.as<4>()),
                      Catch::Contains("LatentOperationTonemapReinhard") && Catch::Contains("multiplier"));
    CHECK_THROWS_WITH(apply_pre_cfg(tonemap(1.0), st, c.inputs<4>(), c.cond.as<4>(), c.cond.as<4>()),
                      Catch::Contains("LatentApplyOperationCFG") && Catch::Contains("overlap"));
}

} // namespace test_patches_pre_cfg_latent_apply_operation_cfg
