// Tests for patches/attention/nag.hpp: the per-token formula against a double reference, UNet
// sites (positive chunk only) and DiT sites (image tokens of both chunks), chunk order, the
// identities (alpha 0, scale 1, scale 0, zero rows, tau), the hook on per-item prompts equal to
// ComfyUI's chunk call, strided = contiguous bit for bit, bad input, and on the toy DiT:
// refused without batched evaluation, a loud error when no hook saw both prompts, the uncond
// pass kept at cond_scale 1, batched results independent of the batch bit for bit with NAG and
// SLG active, and the guider equal to a hand-assembled batched call.
#include <catch2/catch.hpp>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "../dit_support.hpp"
#include "counting_allocator.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/attention/nag.hpp"
#include "patchbay/patches/pass/skip_layer_guidance_dit_simple.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "test_util.hpp"

namespace test_patches_attention_nag {

using namespace patchbay;
using examples::toy_dit;

namespace {

/// z_final of one token in double: ComfyUI's formula.
std::vector<double> reference(const normalized_attention_guidance& p, const float* zp, const float* zn, index_t F,
                              index_t stride = 1) {
    const double s = p.nag_scale;
    std::vector<double> g(static_cast<std::size_t>(F));
    double np = 0, ng = 0;
    for (index_t f = 0; f < F; ++f) {
        g[std::size_t(f)] = double(zp[f * stride]) * s - double(zn[f * stride]) * (s - 1.0);
        np += std::fabs(double(zp[f * stride]));
        ng += std::fabs(g[std::size_t(f)]);
    }
    const double r = std::max(ng, 1e-6) / std::max(np, 1e-6), factor = std::min(r, p.nag_tau) / r;
    for (index_t f = 0; f < F; ++f)
        g[std::size_t(f)] = g[std::size_t(f)] * factor * p.nag_alpha + double(zp[f * stride]) * (1.0 - p.nag_alpha);
    return g;
}

/// Checks every guided token of `out` against the reference from `in` (pos / neg item ranges
/// and the first guided token), and that the rest is `in` unchanged (or z_final for the
/// negative chunk when `both`).
void check_guided(const normalized_attention_guidance& p, const tensor<float>& in, const tensor<float>& out,
                  index_t pos0, index_t neg0, index_t n, index_t first, bool both) {
    const auto iv = in.as<3>(), ov = out.as<3>();
    const index_t B = in.extent(0), N = in.extent(1), F = in.extent(2);
    for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < N; ++t) {
            const bool is_pos = b >= pos0 && b < pos0 + n, is_neg = b >= neg0 && b < neg0 + n;
            const bool guided = t >= first && (is_pos || (both && is_neg));
            if (!guided) {
                for (index_t f = 0; f < F; ++f) REQUIRE(ov(b, t, f) == iv(b, t, f));
                continue;
            }
            const index_t k = is_pos ? b - pos0 : b - neg0;
            const auto want = reference(p, &iv(pos0 + k, t, 0), &iv(neg0 + k, t, 0), F);
            for (index_t f = 0; f < F; ++f)
                REQUIRE(std::fabs(double(ov(b, t, f)) - want[std::size_t(f)]) <= 1e-5 * (1.0 + std::fabs(want[std::size_t(f)])));
        }
}

/// The patch's own hook, as a model calls it: attach it to a positive pass, call at `site`.
tensor<float> through_hook(const normalized_attention_guidance& p, const tensor<float>& attn, const attention_site& site,
                           const std::vector<pass_kind>& prompts, int* guided_sites = nullptr) {
    state_t<normalized_attention_guidance> st{};
    call_overrides<float> ov;
    p.on_model_call(st, pass_kind::cond, ov);
    tensor<float> out = attn;
    ov.apply_attention_output(site, out.as<3>(), prompts);
    if (guided_sites) *guided_sites = st.guided_sites;
    return out;
}

tensor<float> through_chunks(const normalized_attention_guidance& p, const tensor<float>& attn, std::vector<int> chunks,
                             std::optional<std::pair<index_t, index_t>> img = std::nullopt) {
    tensor<float> out = attn;
    nag::apply_chunks<float>(p, out.as<3>(), chunks, img);
    return out;
}

const normalized_attention_guidance defaults{};

/// One batched call of the toy DiT on one latent item with the positive and the negative
/// prompt, NAG's hook attached to the positive prompt as the dispatcher attaches it.
struct batched_pair {
    tensor<float> cond, uncond;
    int guided_sites = 0;
};
batched_pair batched_predict(toy_dit& m, const normalized_attention_guidance& p, const tensor<float>& x, float sigma,
                             const examples::toy_dit_prompt& pos, const examples::toy_dit_prompt& neg) {
    state_t<normalized_attention_guidance> st{};
    call_overrides<float> o_pos, o_neg;
    p.on_model_call(st, pass_kind::cond, o_pos);
    std::vector<index_t> shape = x.shape();
    shape[0] = 2;
    tensor<float> xx(shape), ss({2}), oo(shape);
    kernels::copy<float, 4>(x.as<4>(), xx.as<4>().batch_slice(0, 1));
    kernels::copy<float, 4>(x.as<4>(), xx.as<4>().batch_slice(1, 1));
    ss.fill(sigma);
    const prompt_items<examples::toy_dit_prompt, float> items[2] = {{pass_kind::cond, pass_kind::cond, &pos, 0, 1, &o_pos},
                                                                    {pass_kind::uncond, pass_kind::uncond, &neg, 1, 1, &o_neg}};
    m.predict_batch(batched_call<examples::toy_dit_prompt, float, 4>{xx.as<4>(), ss.as<1>(), items}, oo.as<4>());
    return {tensor<float>::copy_of(view<const float, 4>(oo.as<4>().batch_slice(0, 1))),
            tensor<float>::copy_of(view<const float, 4>(oo.as<4>().batch_slice(1, 1))), st.guided_sites};
}

/// A batched model that wrongly runs each prompt in its own forward pass.
struct split_batches {
    using conditioning_type = examples::toy_dit_prompt;
    static constexpr bool calls_attention_output_hooks = true;
    toy_dit* model;
    void predict(const model_call<conditioning_type, float, 4>& c, view<float, 4> out) { model->predict(c, out); }
    void predict_batch(const batched_call<conditioning_type, float, 4>& c, view<float, 4> out) {
        for (const auto& p : c.prompts)
            model->predict(model_call<conditioning_type, float, 4>{c.x.batch_slice(p.first, p.count),
                                                                   c.sigma.batch_slice(p.first, p.count), p.pass, p.prompt,
                                                                   p.conditioning, p.overrides},
                           out.batch_slice(p.first, p.count));
    }
};

} // namespace

TEST_CASE("nag: per token against a double reference; DiT sites guide the image tokens of both chunks", "[nag]") {
    const auto attn = test::random_tensor({4, 12, 40}, 1);
    SECTION("UNet-style chunks [1, 0] of two items: the positive chunk only") {
        const auto out = through_chunks(defaults, attn, {1, 0});
        check_guided(defaults, attn, out, 2, 0, 2, 0, false);
    }
    SECTION("Flux-style img_slice [5, 12) of [0, 1]: image tokens of both chunks, text untouched") {
        const normalized_attention_guidance p{3.0, 0.25, 2.5};
        const auto out = through_chunks(p, attn, {0, 1}, std::pair<index_t, index_t>{5, 12});
        check_guided(p, attn, out, 0, 2, 2, 5, true);
    }
    SECTION("the hook at a DiT site: the last rows*cols tokens are the image") {
        const normalized_attention_guidance p{6.0, 0.8, 1.2};
        int guided = 0;
        const auto out = through_hook(p, attn, dit::attention({dit_block_site::kind::single_block, 3}, 7, 1),
                                      {pass_kind::uncond, pass_kind::uncond, pass_kind::cond, pass_kind::cond}, &guided);
        check_guided(p, attn, out, 2, 0, 2, 5, true);
        CHECK(guided == 1);
        CHECK(test::bit_equal(out, through_chunks(p, attn, {1, 0}, std::pair<index_t, index_t>{5, 12})));
    }
}

TEST_CASE("nag: the hook on per-item prompts equals ComfyUI's chunk call", "[nag]") {
    const auto attn = test::random_tensor({3, 9, 17}, 2);
    const normalized_attention_guidance p{4.0, 0.8, 3.0};
    // three chunks [0, 1, 0]: only the first positive chunk is guided
    const auto chunks = through_chunks(p, attn, {0, 1, 0});
    check_guided(p, attn, chunks, 0, 1, 1, 0, false);
    // the hook only handles DiT sites; compare its core on the same items
    tensor<float> items = attn;
    nag::apply_items<float>(p, attention_site{unet_stage::middle, 0, 0}, items.as<3>(),
                            std::vector<pass_kind>{pass_kind::cond, pass_kind::uncond, pass_kind::cond});
    CHECK(test::bit_equal(items, chunks));
    // a call with one prompt only: untouched, and the hook reports it did nothing
    int guided = -1;
    const auto cond_only = through_hook(p, attn, dit::attention({dit_block_site::kind::double_block, 0}, 3, 3),
                                        {pass_kind::cond, pass_kind::cond, pass_kind::extra}, &guided);
    CHECK(test::bit_equal(cond_only, attn));
    CHECK(guided == 0);
    CHECK(test::bit_equal(through_chunks(p, attn, {1, 1, 1}), attn));
    // only the positive pass carries the hook (re-evaluations and the negative pass do not)
    state_t<normalized_attention_guidance> st{};
    for (auto pass : {pass_kind::uncond, pass_kind::reevaluation, pass_kind::extra}) {
        call_overrides<float> ov;
        p.on_model_call(st, pass, ov);
        CHECK_FALSE(ov.has_attention_output_hooks());
    }
}

TEST_CASE("nag: identities and limits", "[nag]") {
    const auto attn = test::random_tensor({2, 6, 24}, 3);
    // alpha 0: z_final = z_pos exactly
    CHECK(test::bit_equal(through_chunks(normalized_attention_guidance{5.0, 0.0, 1.5}, attn, {0, 1}), attn));
    // scale 1: g = z_pos, r = 1, z_final = alpha z_pos + (1 - alpha) z_pos
    const auto s1 = through_chunks(normalized_attention_guidance{1.0, 0.7, 1.5}, attn, {0, 1});
    CHECK(test::max_abs_diff(s1, attn) < 1e-6);
    // scale 0: g = z_neg, rescaled to at most tau times |z_pos|
    const normalized_attention_guidance p0{0.0, 1.0, 10.0};
    const auto s0 = through_chunks(p0, attn, {0, 1});
    check_guided(p0, attn, s0, 0, 1, 1, 0, false);
    // tau clips: with alpha 1 each token's L1 norm is at most tau * |z_pos|_1
    const normalized_attention_guidance clip{50.0, 1.0, 1.0};
    const auto c = through_chunks(clip, attn, {0, 1});
    for (index_t t = 0; t < 6; ++t) {
        double ng = 0, np = 0;
        for (index_t f = 0; f < 24; ++f) {
            ng += std::fabs(double(c.as<3>()(0, t, f)));
            np += std::fabs(double(attn.as<3>()(0, t, f)));
        }
        CHECK(ng == Approx(np).epsilon(1e-5));
    }
    // an all-zero positive row stays finite (ComfyUI's 1e-6 floors)
    tensor<float> z = attn;
    for (index_t f = 0; f < 24; ++f) z.as<3>()(0, 2, f) = 0.f;
    const auto zr = through_chunks(defaults, z, {0, 1});
    for (index_t f = 0; f < 24; ++f) CHECK(std::isfinite(zr.as<3>()(0, 2, f)));
    check_guided(defaults, z, zr, 0, 1, 1, 0, false);
}

TEST_CASE("nag: strided features give the contiguous result bit for bit", "[nag]") {
    const auto attn = test::random_tensor({2, 10, 33}, 4);
    const auto want = through_chunks(defaults, attn, {1, 0}, std::pair<index_t, index_t>{3, 10});
    // the same values with features at stride 2 (and tokens padded)
    tensor<float> storage({2, 10, 70});
    storage.fill(1e30f);
    const view<float, 3> sv(storage.data(), {2, 10, 33}, {700, 70, 2});
    kernels::copy<float, 3>(attn.as<3>(), sv);
    workspace arena;
    for (workspace* ws : {static_cast<workspace*>(nullptr), &arena}) {
        tensor<float> again = storage;
        const view<float, 3> av(again.data(), {2, 10, 33}, {700, 70, 2});
        const int chunks[] = {1, 0};
        nag::apply_chunks<float>(defaults, av, chunks, std::pair<index_t, index_t>{3, 10}, ws);
        CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 3>(av)), want));
        for (index_t i = 0; i < again.size(); ++i)
            if (i % 2 == 1 || (i % 70) >= 66) REQUIRE(again[i] == 1e30f); // padding never written
    }
}

TEST_CASE("nag: the hook allocates nothing, strided rows included (with the run's arena)", "[nag][alloc]") {
    tensor<float> storage({2, 8, 40});
    const view<float, 3> strided(storage.data(), {2, 8, 20}, {320, 40, 2});
    kernels::copy<float, 3>(test::random_tensor({2, 8, 20}, 7).as<3>(), strided);
    tensor<float> packed = test::random_tensor({2, 8, 20}, 8);
    state_t<normalized_attention_guidance> st{};
    workspace ws;
    call_overrides<float> ov;
    ov.set_scratch(&ws);
    defaults.on_model_call(st, pass_kind::cond, ov);
    const attention_site site = dit::attention({dit_block_site::kind::double_block, 2}, 2, 3);
    const pass_kind prompts[2] = {pass_kind::uncond, pass_kind::cond};
    ov.apply_attention_output(site, strided, prompts); // the arena grows once
    const test::allocation_counter counter;
    for (int i = 0; i < 3; ++i) {
        ov.apply_attention_output(site, strided, prompts);
        ov.apply_attention_output(site, packed.as<3>(), prompts);
    }
    CHECK(counter.count() == 0);
    CHECK(st.guided_sites == 7);
}

TEST_CASE("nag: bad input is refused, naming the patch", "[nag]") {
    tensor<float> attn = test::random_tensor({3, 4, 5}, 5);
    const int two[] = {0, 1}, bad[] = {0, 2};
    CHECK(test::error_of([&] { nag::apply_chunks<float>(defaults, attn.as<3>(), two, std::nullopt); }) ==
          "NAGuidance: the batch of 'attn' (3) does not divide into the 2 equal chunks of 'cond_or_uncond'");
    tensor<float> a2 = test::random_tensor({2, 4, 5}, 6);
    CHECK(test::error_of([&] { nag::apply_chunks<float>(defaults, a2.as<3>(), bad, std::nullopt); }).find("holds 0 (positive) or 1") !=
          std::string::npos);
    CHECK(test::error_of([&] {
              nag::apply_chunks<float>(defaults, a2.as<3>(), two, std::pair<index_t, index_t>{2, 9});
          }) == "NAGuidance: 'img_slice' [2, 9) is not a token range of 'attn' (4 tokens)");
    CHECK(test::error_of([&] {
              nag::apply_chunks<float>(normalized_attention_guidance{5.0, 1.5, 1.5}, a2.as<3>(), two, std::nullopt);
          }) == "NAGuidance: parameter 'nag_alpha' must be a finite value in [0, 1], got 1.5");
    CHECK(test::error_of([] { validate(normalized_attention_guidance{5.0, 0.5, 0.5}); }).find("'nag_tau'") != std::string::npos);
    // a DiT site must report its image grid
    CHECK(test::error_of([&] {
              through_hook(defaults, a2, dit::attention({dit_block_site::kind::double_block, 0}, 0, 0),
                           {pass_kind::cond, pass_kind::uncond});
          }).find("a DiT site must report its image token grid") != std::string::npos);
    const auto d = with_defaults<normalized_attention_guidance>();
    CHECK(d.nag_scale == 5.0);
    CHECK(d.nag_alpha == 0.5);
    CHECK(d.nag_tau == 1.5);
    CHECK(to_string(d) == "NAGuidance(nag_scale=5, nag_alpha=0.5, nag_tau=1.5)");
}

TEST_CASE("nag: refused without batched evaluation, never a silent no-op", "[nag][dit]") {
    toy_dit m(test::small_dit());
    test::per_prompt_dit single{&m};
    const auto ms = model_sampling::sd3(3.0);
    const auto pos = m.prompt(0), neg = m.negative_prompt();
    const guider<test::per_prompt_dit, normalized_attention_guidance> g(single, ms, normalized_attention_guidance{});
    CHECK(test::error_of([&] { (void)g.begin_run(&pos, &neg); }) ==
          "guider::begin_run: patch 'NAGuidance' needs batched evaluation of the prompts (predict_batch), which the "
          "model does not support");
    // a batched model that runs each prompt alone (its hooks never see both prompts): the step fails
    split_batches split{&m};
    patch_chain<split_batches> chain(split, ms);
    chain.add(normalized_attention_guidance{});
    auto run = chain.begin_run(&pos, &neg);
    const auto x = test::dit_latent(m, 1, 9);
    CHECK(test::error_of([&] { test::denoise_once(chain, run, x, 0.7f, 3.0); })
              .find("NAGuidance: no self-attention of this model call saw the positive and the negative prompt together") == 0);
}

TEST_CASE("nag: on the toy DiT: uncond kept at cond_scale 1, guidance changes the result; alpha 0 keeps cond",
          "[nag][dit]") {
    toy_dit m(test::small_dit());
    const auto ms = model_sampling::sd3(3.0);
    const auto pos = m.prompt(1), neg = m.prompt(4);
    const auto x = test::dit_latent(m, 1, 10);
    const guider<toy_dit> plain(m, ms);
    const guider<toy_dit, normalized_attention_guidance> g(m, ms, normalized_attention_guidance{});
    auto rp = plain.begin_run(&pos, &neg);
    auto rg = g.begin_run(&pos, &neg);
    m.counts = {};
    const auto guided = test::denoise_once(g, rg, x, 0.6f, 1.0);
    CHECK(m.counts.batched_calls == 1); // cond and uncond together, also at cond_scale 1
    CHECK(m.counts.uncond == 1);
    CHECK(m.counts.attention_output_calls == 8); // one hook run per block (4 double + 4 single)
    m.counts = {};
    const auto plain1 = test::denoise_once(plain, rp, x, 0.6f, 1.0);
    CHECK(m.counts.uncond == 0); // plain CFG skips the negative pass at cond_scale 1
    CHECK(test::max_abs_diff(guided, plain1) > 1e-3);

    // alpha 0: z_final = z_pos, so the positive prediction is the plain one bit for bit; on DiT
    // sites ComfyUI also writes z_final into the negative chunk's image tokens, so the negative
    // prediction changes
    const call_overrides<float> none;
    const auto off = batched_predict(m, normalized_attention_guidance{5.0, 0.0, 1.5}, x, 0.6f, pos, neg);
    CHECK(off.guided_sites == 8);
    CHECK(test::bit_equal(off.cond, test::dit_predict(m, x, 0.6f, pos, none)));
    CHECK(!test::bit_equal(off.uncond, test::dit_predict(m, x, 0.6f, neg, none, pass_kind::uncond)));
}

TEST_CASE("nag: batched results with NAG and SLG active do not depend on the batch, and equal a hand-built call",
          "[nag][dit][batched]") {
    toy_dit m(test::small_dit());
    const auto ms = model_sampling::discrete("eps");
    const normalized_attention_guidance nag{4.0, 0.6, 2.0};
    const skip_layer_guidance_dit slg{"1", "2", 2.0, 0.0, 1.0};
    const guider<toy_dit, normalized_attention_guidance, skip_layer_guidance_dit> g(m, ms, nag, slg);
    const auto pos = m.prompt(2), neg = m.negative_prompt();
    const auto x2 = test::dit_latent(m, 2, 11, 2.f);
    auto run = g.begin_run(&pos, &neg);
    const auto both = test::denoise_once(g, run, x2, 1.5f, 4.0);
    for (index_t b = 0; b < 2; ++b) {
        const auto xb = tensor<float>::copy_of(view<const float, 4>(x2.as<4>().batch_slice(b, 1)));
        auto r1 = g.begin_run(&pos, &neg);
        const auto alone = test::denoise_once(g, r1, xb, 1.5f, 4.0);
        CHECK(test::bit_equal(alone, tensor<float>::copy_of(view<const float, 4>(both.as<4>().batch_slice(b, 1)))));
    }
    // by hand: one batched call of both prompts with NAG's hook on the positive prompt, the
    // SLG re-run (one prompt: NAG does nothing there), then CFG and SLG's combine
    const auto xb = tensor<float>::copy_of(view<const float, 4>(x2.as<4>().batch_slice(0, 1)));
    const auto pair = batched_predict(m, nag, xb, 1.5f, pos, neg);
    CHECK(pair.guided_sites == 8);
    const auto& cond = pair.cond;
    call_overrides<float> skips;
    slg.skipped().request(skips);
    const auto rerun = test::dit_predict(m, xb, 1.5f, pos, skips);
    auto want = test::cfg_of(cond, pair.uncond, 4.0);
    slg::combine<float, 4>(cond.as<4>(), rerun.as<4>(), 2.0, 0.0, want.as<4>());
    auto r2 = g.begin_run(&pos, &neg);
    CHECK(test::same_arithmetic(test::denoise_once(g, r2, xb, 1.5f, 4.0), want));
}

TEST_CASE("nag: with SkipLayerGuidanceDiTSimple the negative items skip blocks and NAG guides where both run",
          "[nag][dit]") {
    toy_dit m(test::small_dit());
    const auto ms = model_sampling::sd3(3.0);
    const guider<toy_dit, normalized_attention_guidance, skip_layer_guidance_dit_simple> g(
        m, ms, normalized_attention_guidance{}, skip_layer_guidance_dit_simple{"0", "1"});
    const auto pos = m.prompt(2), neg = m.negative_prompt();
    auto run = g.begin_run(&pos, &neg);
    m.counts = {};
    const auto out = test::denoise_once(g, run, test::dit_latent(m, 1, 12), 0.5f, 3.0);
    CHECK(m.counts.batched_calls == 1);
    CHECK(m.counts.skipping == 1);
    CHECK(m.counts.attention_output_calls == 8); // at skipped blocks the hook sees only the positive items
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));
}

} // namespace test_patches_attention_nag
