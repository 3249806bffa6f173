// Tests for patches/post_cfg/sag.hpp and kernels/attention.hpp: attention against a double
// reference, ComfyUI's token-grid search (and its failures as errors), the reported grid, the
// post-cfg formula with a counted fake model, the uncond-only recording, skip on small
// latents, scale 0, state reset/clone, strided views, float and double, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/attention.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/post_cfg/sag.hpp"
#include "test_util.hpp"

namespace test_patches_post_cfg_sag {

using namespace patchbay;

namespace {

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

/// Softmax attention in double, written from the formula.
void reference_attention(const tensor<float>& q, const tensor<float>& k, const tensor<float>& v,
                         index_t heads, std::vector<double>& out, std::vector<double>& sim) {
    const index_t B = q.extent(0), Nq = q.extent(1), Nk = k.extent(1);
    const index_t dh = q.extent(2) / heads, dv = v.extent(2) / heads;
    out.assign(static_cast<std::size_t>(B * Nq * v.extent(2)), 0.0);
    sim.assign(static_cast<std::size_t>(B * heads * Nq * Nk), 0.0);
    for (index_t b = 0; b < B; ++b)
        for (index_t h = 0; h < heads; ++h)
            for (index_t i = 0; i < Nq; ++i) {
                std::vector<double> s(static_cast<std::size_t>(Nk));
                double mx = -1e300, z = 0;
                for (index_t j = 0; j < Nk; ++j) {
                    double d = 0;
                    for (index_t e = 0; e < dh; ++e)
                        d += double(q.as<3>()(b, i, h * dh + e)) * k.as<3>()(b, j, h * dh + e);
                    s[std::size_t(j)] = d / std::sqrt(double(dh));
                    mx = std::max(mx, s[std::size_t(j)]);
                }
                for (auto& x : s) z += x = std::exp(x - mx);
                for (index_t j = 0; j < Nk; ++j)
                    sim[std::size_t(((b * heads + h) * Nq + i) * Nk + j)] = s[std::size_t(j)] / z;
                for (index_t e = 0; e < dv; ++e) {
                    double acc = 0;
                    for (index_t j = 0; j < Nk; ++j)
                        acc += s[std::size_t(j)] / z * v.as<3>()(b, j, h * dv + e);
                    out[std::size_t((b * Nq + i) * v.extent(2) + h * dv + e)] = acc;
                }
            }
}

/// A fake uncond model: counts calls, checks the prompt, remembers its input, and answers
/// with a fixed function of the input so the formula can be checked.
template <class T>
struct fake_model {
    int calls = 0;
    pass_kind last_prompt = pass_kind::cond;
    tensor<T> last_input;
    void operator()(pass_kind prompt, view<const T, 4> x, view<T, 4> out, const call_overrides<T>*) {
        ++calls;
        last_prompt = prompt;
        last_input = tensor<T>::copy_of(x);
        kernels::transform(out, [](auto a) { return a * T(0.5) + T(0.25); }, x);
    }
};

/// Probabilities (batch*heads, N, N) whose key masses favour the keys in `hot`.
tensor<float> probabilities(index_t batch, index_t heads, index_t tokens, unsigned seed) {
    auto p = test::random_tensor({batch * heads, tokens, tokens}, seed);
    for (index_t r = 0; r < batch * heads * tokens; ++r) {
        double z = 0;
        for (index_t j = 0; j < tokens; ++j) z += p[r * tokens + j] = std::exp(2.f * p[r * tokens + j]);
        for (index_t j = 0; j < tokens; ++j) p[r * tokens + j] = float(p[r * tokens + j] / z);
    }
    return p;
}

/// Runs SAG's hooks as a model would: the uncond pass reports `probs` at `at`.
template <class T>
void record_uncond(const self_attention_guidance& p, state_t<self_attention_guidance>& st,
                   const attention_site& at, const tensor<float>& probs, index_t heads) {
    call_overrides<T> ov;
    p.on_model_call(st, pass_kind::uncond, ov);
    REQUIRE(ov.reads_attention(at));
    const auto pt = cast<T>(probs);
    ov.on_attention_probabilities(at, pt.template as<3>(), heads);
}

} // namespace

TEST_CASE("attention: output and probabilities match a double reference") {
    for (index_t heads : {1, 3, 8}) {
        const auto q = test::random_tensor({2, 7, heads * 5}, 1), k = test::random_tensor({2, 9, heads * 5}, 2),
                   v = test::random_tensor({2, 9, heads * 4}, 3);
        tensor<float> out({2, 7, heads * 4}), sim({2 * heads, 7, 9});
        kernels::attention_basic_with_sim<float>(q.as<3>(), k.as<3>(), v.as<3>(), int(heads), out.as<3>(), sim.as<3>());
        std::vector<double> ro, rs;
        reference_attention(q, k, v, heads, ro, rs);
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(ro[std::size_t(i)]).margin(2e-6));
        for (index_t i = 0; i < sim.size(); ++i) REQUIRE(sim[i] == Approx(rs[std::size_t(i)]).margin(1e-7));

        // the key-mass variant gives the same output and the per-key sums of the probabilities
        tensor<float> out2(out.shape());
        std::vector<double> mass(2 * 9), mass_ref(2 * 9);
        std::vector<float> row(9);
        kernels::attention_with_key_mass<float>(q.as<3>(), k.as<3>(), v.as<3>(), int(heads), out2.as<3>(),
                                                mass.data(), row.data());
        CHECK(test::bit_equal(out2, out));
        sag::key_mass_from_probabilities<float>(sim.as<3>(), 2, mass_ref.data());
        // (the second sums blocks of 16 queries in float, the first all in double)
        for (std::size_t i = 0; i < mass.size(); ++i) CHECK(mass[i] == Approx(mass_ref[i]).epsilon(1e-6));
        double total = 0;
        for (double m : mass) total += m;
        CHECK(total == Approx(2 * 7).epsilon(1e-6)); // every query row sums to 1
    }
}

TEST_CASE("attention: bad shapes are rejected") {
    const auto q = test::random_tensor({1, 4, 6}, 1);
    tensor<float> out({1, 4, 6}), sim({4, 4, 4});
    CHECK_THROWS_AS(kernels::attention_basic_with_sim<float>(q.as<3>(), q.as<3>(), q.as<3>(), 4, out.as<3>(), sim.as<3>()),
                    error); // 6 not divisible by 4
    tensor<float> sim2({2, 4, 4});
    CHECK_THROWS_AS(kernels::attention_basic_with_sim<float>(q.as<3>(), q.as<3>(), q.as<3>(), 3, out.as<3>(), sim2.as<3>()),
                    error); // sim has the wrong batch*heads
    const auto k5 = test::random_tensor({1, 4, 5}, 2);
    tensor<float> sim3({2, 4, 4});
    CHECK_THROWS_AS(kernels::attention_basic_with_sim<float>(q.as<3>(), k5.as<3>(), q.as<3>(), 2, out.as<3>(), sim3.as<3>()),
                    error);
}

TEST_CASE("sag: the token grid search reproduces ComfyUI and fails where it crashes") {
    using sag::infer_token_grid;
    CHECK(infer_token_grid(4, 16, 16) == sag::token_grid{2, 2});
    CHECK(infer_token_grid(6, 16, 24) == sag::token_grid{2, 3});
    CHECK(infer_token_grid(6, 24, 16) == sag::token_grid{3, 2});
    CHECK(infer_token_grid(15, 40, 24) == sag::token_grid{5, 3});
    CHECK(infer_token_grid(64, 64, 64) == sag::token_grid{8, 8});
    CHECK(infer_token_grid(96, 64, 96) == sag::token_grid{8, 12});
    CHECK(infer_token_grid(12, 16, 16) == sag::token_grid{3, 4}); // a 4x3 map is guessed as 3x4
    // Python's round() is half-to-even: 25/16 * 4 = 6.25, sqrt 2.5 -> 2 rows
    CHECK(infer_token_grid(4, 25, 16) == sag::token_grid{2, 2});
    CHECK(sag::detail::round_half_even(2.5) == 2.0);
    CHECK(sag::detail::round_half_even(3.5) == 4.0);
    CHECK(sag::detail::round_half_even(2.4999) == 2.0);
    // round(sqrt(16/256 * 4)) = round(0.5) = 0 rows: ComfyUI divides by zero
    CHECK_THROWS_AS(infer_token_grid(4, 16, 256), error);
    for (index_t bad : {1, 2, 3, 7}) {
        INFO(bad << " tokens");
        CHECK_THROWS_AS(infer_token_grid(bad, 16, 16), error);
    }
    try {
        infer_token_grid(7, 16, 16);
    } catch (const error& e) {
        CHECK(std::string(e.what()).find("SelfAttentionGuidance") != std::string::npos);
        CHECK(std::string(e.what()).find("rows x cols") != std::string::npos);
    }
}

TEST_CASE("sag: create_blur_map blurs exactly where keys get more than average attention") {
    const index_t B = 2, heads = 2, rows = 3, cols = 4, H = 12, W = 16;
    const auto x0 = test::random_tensor({B, 4, H, W}, 3);
    const auto attn = probabilities(B, heads, rows * cols, 4);
    tensor<float> got(x0.shape()), blurred(x0.shape());
    sag::create_blur_map<float>(x0.as<4>(), attn.as<3>(), 1.5, 1.0, {rows, cols}, got.as<4>());
    kernels::gaussian_blur_2d<float>(x0.as<4>(), 1.5, blurred.as<4>());
    index_t n_on = 0;
    for (index_t b = 0; b < B; ++b)
        for (index_t r = 0; r < rows; ++r)
            for (index_t c = 0; c < cols; ++c) {
                double mass = 0;
                for (index_t h = 0; h < heads; ++h)
                    for (index_t i = 0; i < rows * cols; ++i)
                        mass += attn.as<3>()(b * heads + h, i, r * cols + c) / double(heads);
                const bool on = mass > 1.0;
                n_on += on;
                for (index_t ch = 0; ch < 4; ++ch)
                    for (index_t y = r * 4; y < r * 4 + 4; ++y)
                        for (index_t x = c * 4; x < c * 4 + 4; ++x)
                            REQUIRE(got.as<4>()(b, ch, y, x) ==
                                    (on ? blurred : x0).as<4>()(b, ch, y, x));
            }
    CHECK(n_on > 0);
    CHECK(n_on < B * rows * cols);

    // the reported grid matters: the guess for 12 tokens on a square latent is 3x4
    const auto sq = test::random_tensor({B, 4, 16, 16}, 5);
    tensor<float> guessed(sq.shape()), reported_3x4(sq.shape());
    sag::create_blur_map<float>(sq.as<4>(), attn.as<3>(), 1.5, 1.0, {}, guessed.as<4>());
    sag::create_blur_map<float>(sq.as<4>(), attn.as<3>(), 1.5, 1.0, {3, 4}, reported_3x4.as<4>());
    CHECK(test::bit_equal(guessed, reported_3x4));
    tensor<float> reported_4x3(sq.shape());
    sag::create_blur_map<float>(sq.as<4>(), attn.as<3>(), 1.5, 1.0, {4, 3}, reported_4x3.as<4>());
    CHECK_FALSE(test::bit_equal(guessed, reported_4x3));
    CHECK_THROWS_AS(sag::create_blur_map<float>(sq.as<4>(), attn.as<3>(), 1.5, 1.0, {5, 3}, guessed.as<4>()), error);
}

TEST_CASE("sag: parameters are validated with ComfyUI's ranges") {
    using Catch::Matchers::Contains;
    CHECK_NOTHROW(patchbay::validate(self_attention_guidance{}));
    CHECK_NOTHROW(patchbay::validate(self_attention_guidance{-2.0, 0.0}));
    CHECK_NOTHROW(patchbay::validate(self_attention_guidance{5.0, 10.0}));
    auto rejects = [](const self_attention_guidance& p, const std::string& word) {
        CHECK_THAT(test::error_of([&] { patchbay::validate(p); }), Contains("SelfAttentionGuidance: ") && Contains(word));
    };
    rejects({5.01, 2.0}, "parameter 'scale' must be a finite value in [-2, 5], got 5.01");
    rejects({-2.01, 2.0}, "'scale'");
    rejects({0.5, 10.5}, "parameter 'blur_sigma' must be a finite value in [0, 10], got 10.5");
    rejects({0.5, -0.1}, "'blur_sigma'");
    rejects({std::nan(""), 2.0}, "'scale'");
    static_assert(self_attention_guidance::disable_cfg1_optimization);
    static_assert(self_attention_guidance::needs_attention_hooks);
    static_assert(patch<self_attention_guidance>);
}

TEST_CASE("sag: records only the uncond pass, only at middle/0/0") {
    const self_attention_guidance p{};
    state_t<self_attention_guidance> st{};
    for (auto pass : {pass_kind::cond, pass_kind::reevaluation}) {
        call_overrides<float> ov;
        p.on_model_call(st, pass, ov);
        CHECK(ov.empty());
    }
    call_overrides<float> ov;
    p.on_model_call(st, pass_kind::uncond, ov);
    CHECK(ov.reads_attention(attention_site{unet_stage::middle, 0, 0}));
    CHECK_FALSE(ov.reads_attention(attention_site{unet_stage::middle, 0, 1}));
    CHECK_FALSE(ov.reads_attention(attention_site{unet_stage::input, 0, 0}));
    CHECK_FALSE(ov.reads_attention(attention_site{unet_stage::output, 0, 0}));
    CHECK_FALSE(st.attention.valid);
    const auto probs = probabilities(1, 2, 16, 9);
    ov.on_attention_probabilities(attention_site{unet_stage::middle, 0, 0, 4, 4}, probs.as<3>(), 2);
    CHECK(st.attention.valid);
    CHECK(st.attention.batch == 1);
    CHECK(st.attention.tokens == 16);
    CHECK(st.attention.grid == sag::token_grid{4, 4});
    // a new uncond pass invalidates the old record until the model reports again
    call_overrides<float> ov2;
    p.on_model_call(st, pass_kind::uncond, ov2);
    CHECK_FALSE(st.attention.valid);
}

TEMPLATE_TEST_CASE("sag: post-cfg = cfg + scale * (degraded - model(degraded + x - uncond))", "", float, double) {
    using T = TestType;
    const self_attention_guidance p{0.8, 1.5};
    const index_t B = 2, C = 3, H = 16, W = 12, heads = 2;
    const auto x = cast<T>(test::random_tensor({B, C, H, W}, 1, 0.f, 3.f));
    const auto uncond = cast<T>(test::random_tensor({B, C, H, W}, 2));
    const auto cfg0 = cast<T>(test::random_tensor({B, C, H, W}, 3));
    tensor<T> sigma({B});
    sigma.fill(T(2.5));
    const auto probs = probabilities(B, heads, 12, 4);
    state_t<self_attention_guidance> st{};
    record_uncond<T>(p, st, attention_site{unet_stage::middle, 0, 0, 4, 3}, probs, heads);

    fake_model<T> fm;
    model_access<T, 4> model(model_access<T, 4>::evaluate_fn::to(fm));
    guidance_inputs<T, 4> in{x.template as<4>(), sigma.template as<1>(), 5.0, false, prediction_type::eps};
    auto cfg = cfg0;
    p.post_cfg(st, in, uncond.template as<4>(), uncond.template as<4>(), cfg.template as<4>(), model);
    CHECK(fm.calls == 1);
    CHECK(fm.last_prompt == pass_kind::uncond);

    // independent composition from the pieces
    tensor<T> degraded(x.shape());
    sag::create_blur_map<T>(uncond.template as<4>(), cast<T>(probs).template as<3>(), 1.5, 1.0, {4, 3},
                            degraded.template as<4>());
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    for (index_t i = 0; i < x.size(); ++i) {
        const double noised = double(degraded[i]) + x[i] - uncond[i];
        REQUIRE(fm.last_input[i] == Approx(noised).margin(tol));
        const double want = cfg0[i] + (degraded[i] - (noised * 0.5 + 0.25)) * 0.8;
        REQUIRE(cfg[i] == Approx(want).margin(tol));
    }

    SECTION("a copy of the state (clone) gives the same result; a fresh state (reset) refuses") {
        auto clone = st;
        auto cfg2 = cfg0;
        p.post_cfg(clone, in, uncond.template as<4>(), uncond.template as<4>(), cfg2.template as<4>(), model);
        CHECK(test::bit_equal(cfg2, cfg));
        state_t<self_attention_guidance> fresh{};
        auto cfg3 = cfg0;
        CHECK_THROWS_AS(p.post_cfg(fresh, in, uncond.template as<4>(), uncond.template as<4>(), cfg3.template as<4>(), model),
                        error);
        CHECK(fm.calls == 2);
    }
    SECTION("scale 0 returns the cfg result unchanged") {
        const self_attention_guidance p0{0.0, 1.5};
        auto cfg2 = cfg0;
        p0.post_cfg(st, in, uncond.template as<4>(), uncond.template as<4>(), cfg2.template as<4>(), model);
        CHECK(test::bit_equal(cfg2, cfg0));
    }
}

TEST_CASE("sag: strided views give the contiguous result") {
    const self_attention_guidance p{};
    const index_t B = 2, C = 4, H = 8, W = 8;
    const auto x = test::random_tensor({B, C, H, W}, 1), u = test::random_tensor({B, C, H, W}, 2),
               cfg0 = test::random_tensor({B, C, H, W}, 3);
    tensor<float> sigma({B});
    sigma.fill(1.f);
    const auto probs = probabilities(B, 2, 4, 8);
    state_t<self_attention_guidance> st{};
    record_uncond<float>(p, st, sag::site, probs, 2);
    fake_model<float> fm;
    model_access<float, 4> model(model_access<float, 4>::evaluate_fn::to(fm));
    guidance_inputs<float, 4> in{x.as<4>(), sigma.as<1>(), 3.0, false, prediction_type::eps};
    auto want = cfg0;
    p.post_cfg(st, in, u.as<4>(), u.as<4>(), want.as<4>(), model);

    // the same values in channel-last memory
    auto to_nhwc = [&](const tensor<float>& t, std::vector<float>& buf) {
        buf.resize(std::size_t(t.size()));
        view<float, 4> v(buf.data(), {B, C, H, W}, {C * H * W, 1, W * C, C});
        for (index_t b = 0; b < B; ++b)
            for (index_t c = 0; c < C; ++c)
                for (index_t y = 0; y < H; ++y)
                    for (index_t xx = 0; xx < W; ++xx) v(b, c, y, xx) = t.as<4>()(b, c, y, xx);
        return v;
    };
    std::vector<float> bx, bu, bc;
    const auto vx = to_nhwc(x, bx), vu = to_nhwc(u, bu), vc = to_nhwc(cfg0, bc);
    guidance_inputs<float, 4> in2{vx, sigma.as<1>(), 3.0, false, prediction_type::eps};
    p.post_cfg(st, in2, vu, vu, vc, model);
    double m = 0;
    for (index_t b = 0; b < B; ++b)
        for (index_t c = 0; c < C; ++c)
            for (index_t y = 0; y < H; ++y)
                for (index_t xx = 0; xx < W; ++xx)
                    m = std::max(m, double(std::fabs(vc(b, c, y, xx) - want.as<4>()(b, c, y, xx))));
    CHECK(m < 1e-6);
}

TEST_CASE("sag: latents with a side <= 4 are returned unchanged without a model call") {
    const self_attention_guidance p{};
    const auto x = test::random_tensor({1, 4, 4, 8}, 1), u = test::random_tensor({1, 4, 4, 8}, 2),
               cfg0 = test::random_tensor({1, 4, 4, 8}, 3);
    tensor<float> sigma({1});
    sigma.fill(1.f);
    state_t<self_attention_guidance> st{}; // nothing recorded: not needed when skipping
    fake_model<float> fm;
    model_access<float, 4> model(model_access<float, 4>::evaluate_fn::to(fm));
    guidance_inputs<float, 4> in{x.as<4>(), sigma.as<1>(), 3.0, false, prediction_type::eps};
    auto cfg = cfg0;
    p.post_cfg(st, in, u.as<4>(), u.as<4>(), cfg.as<4>(), model);
    CHECK(test::bit_equal(cfg, cfg0));
    CHECK(fm.calls == 0);
}

TEST_CASE("sag: bad input is rejected before the model runs") {
    const self_attention_guidance p{};
    const auto x = test::random_tensor({2, 4, 8, 8}, 1), u = test::random_tensor({2, 4, 8, 8}, 2);
    tensor<float> sigma({2});
    sigma.fill(1.f);
    fake_model<float> fm;
    model_access<float, 4> model(model_access<float, 4>::evaluate_fn::to(fm));
    guidance_inputs<float, 4> in{x.as<4>(), sigma.as<1>(), 3.0, false, prediction_type::eps};

    state_t<self_attention_guidance> st{};
    auto cfg = x;
    // the recorded attention belongs to a batch of 1
    record_uncond<float>(p, st, sag::site, probabilities(1, 2, 4, 3), 2);
    CHECK_THROWS_AS(p.post_cfg(st, in, u.as<4>(), u.as<4>(), cfg.as<4>(), model), error);
    // 7 tokens, no grid reported: ComfyUI's guess fails
    record_uncond<float>(p, st, sag::site, probabilities(2, 2, 7, 3), 2);
    CHECK_THROWS_AS(p.post_cfg(st, in, u.as<4>(), u.as<4>(), cfg.as<4>(), model), error);
    // a reported grid that does not hold the tokens
    record_uncond<float>(p, st, attention_site{unet_stage::middle, 0, 0, 2, 3}, probabilities(2, 2, 7, 3), 2);
    CHECK_THROWS_AS(p.post_cfg(st, in, u.as<4>(), u.as<4>(), cfg.as<4>(), model), error);
    // ... but the reported grid rescues a token count ComfyUI cannot place
    record_uncond<float>(p, st, attention_site{unet_stage::middle, 0, 0, 7, 1}, probabilities(2, 2, 7, 3), 2);
    CHECK_NOTHROW(p.post_cfg(st, in, u.as<4>(), u.as<4>(), cfg.as<4>(), model));
    CHECK(fm.calls == 1);

    // shape mismatch, bad sigma, bad parameters (the checked entry point), 5-D
    const auto u_small = test::random_tensor({2, 4, 8, 7}, 2);
    CHECK_THROWS_AS(apply_post_cfg(p, st, in, u_small.as<4>(), u_small.as<4>(), cfg.as<4>(), model), error);
    tensor<float> sigma1({1});
    guidance_inputs<float, 4> bad_sigma{x.as<4>(), sigma1.as<1>(), 3.0, false, prediction_type::eps};
    CHECK_THROWS_AS(apply_post_cfg(p, st, bad_sigma, u.as<4>(), u.as<4>(), cfg.as<4>(), model), error);
    const self_attention_guidance bad{7.0, 2.0};
    CHECK_THROWS_AS(apply_post_cfg(bad, st, in, u.as<4>(), u.as<4>(), cfg.as<4>(), model), error);
    CHECK(fm.calls == 1);
    CHECK_NOTHROW(apply_post_cfg(p, st, in, u.as<4>(), u.as<4>(), cfg.as<4>(), model));
    CHECK(fm.calls == 2);

    const auto x5 = test::random_tensor({1, 4, 3, 8, 8}, 1);
    tensor<float> s5({1});
    s5.fill(1.f);
    auto c5 = x5;
    model_access<float, 5> model5(model_access<float, 5>::evaluate_fn(
        [](void*, pass_kind, view<const float, 5>, view<float, 5>, const call_overrides<float>*) {}, nullptr));
    guidance_inputs<float, 5> in5{x5.as<5>(), s5.as<1>(), 3.0, false, prediction_type::eps};
    try {
        p.post_cfg(st, in5, x5.as<5>(), x5.as<5>(), c5.as<5>(), model5);
        FAIL("5-D latent accepted");
    } catch (const error& e) {
        CHECK(std::string(e.what()).find("4-D") != std::string::npos);
    }
}

TEST_CASE("attention: strided q, k, v give the contiguous result") {
    const index_t heads = 2, B = 2, N = 6, D = 8;
    const auto q = test::random_tensor({B, N, D}, 1), k = test::random_tensor({B, N, D}, 2),
               v = test::random_tensor({B, N, D}, 3);
    tensor<float> out({B, N, D}), sim({B * heads, N, N});
    kernels::attention_basic_with_sim<float>(q.as<3>(), k.as<3>(), v.as<3>(), int(heads), out.as<3>(), sim.as<3>());
    // token-major -> feature-major storage: (B, N, D) viewed with strides (N*D, 1, N)
    auto transpose = [&](const tensor<float>& t, std::vector<float>& buf) {
        buf.resize(std::size_t(t.size()));
        view<float, 3> s(buf.data(), {B, N, D}, {N * D, 1, N});
        for (index_t b = 0; b < B; ++b)
            for (index_t n = 0; n < N; ++n)
                for (index_t d = 0; d < D; ++d) s(b, n, d) = t.as<3>()(b, n, d);
        return s;
    };
    std::vector<float> bq, bk, bv, bo, bs;
    const auto sq = transpose(q, bq), sk = transpose(k, bk), sv = transpose(v, bv);
    tensor<float> zo({B, N, D}), zs({B * heads, N, N});
    const auto so = transpose(zo, bo);
    bs.resize(std::size_t(sim.size()));
    view<float, 3> ss(bs.data(), {B * heads, N, N}, {N * N, 1, N});
    kernels::attention_basic_with_sim<float>(sq, sk, sv, int(heads), so, ss);
    for (index_t b = 0; b < B; ++b)
        for (index_t n = 0; n < N; ++n)
            for (index_t d = 0; d < D; ++d) REQUIRE(so(b, n, d) == out.as<3>()(b, n, d));
    for (index_t r = 0; r < B * heads; ++r)
        for (index_t i = 0; i < N; ++i)
            for (index_t j = 0; j < N; ++j) REQUIRE(ss(r, i, j) == sim.as<3>()(r, i, j));
}

TEST_CASE("sag: a batch gives the same result as its items run one at a time") {
    const self_attention_guidance p{0.7, 1.5};
    const index_t B = 3, C = 4, H = 12, W = 12, heads = 2;
    const auto x = test::random_tensor({B, C, H, W}, 1), u = test::random_tensor({B, C, H, W}, 2),
               cfg0 = test::random_tensor({B, C, H, W}, 3);
    tensor<float> sigma({B});
    for (index_t b = 0; b < B; ++b) sigma[b] = 1.f + float(b);
    const auto probs = probabilities(B, heads, 9, 6);
    fake_model<float> fm;
    model_access<float, 4> model(model_access<float, 4>::evaluate_fn::to(fm));
    state_t<self_attention_guidance> st{};
    record_uncond<float>(p, st, sag::site, probs, heads);
    auto whole = cfg0;
    guidance_inputs<float, 4> in{x.as<4>(), sigma.as<1>(), 4.0, false, prediction_type::eps};
    p.post_cfg(st, in, u.as<4>(), u.as<4>(), whole.as<4>(), model);
    for (index_t b = 0; b < B; ++b) {
        state_t<self_attention_guidance> sb{};
        tensor<float> pb({heads, 9, 9});
        for (index_t i = 0; i < pb.size(); ++i) pb[i] = probs[b * pb.size() + i];
        record_uncond<float>(p, sb, sag::site, pb, heads);
        auto item = tensor<float>::copy_of(cfg0.as<4>().batch_slice(b, 1));
        guidance_inputs<float, 4> ib{x.as<4>().batch_slice(b, 1), sigma.as<1>().batch_slice(b, 1), 4.0, false,
                                     prediction_type::eps};
        p.post_cfg(sb, ib, u.as<4>().batch_slice(b, 1), u.as<4>().batch_slice(b, 1), item.as<4>(), model);
        const auto want = tensor<float>::copy_of(whole.as<4>().batch_slice(b, 1));
        CHECK(test::bit_equal(item, want));
    }
}

} // namespace test_patches_post_cfg_sag
