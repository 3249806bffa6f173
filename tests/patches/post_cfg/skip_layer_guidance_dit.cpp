// Tests for patches/post_cfg/skip_layer_guidance_dit.hpp (SkipLayerGuidanceDiT and its SD3
// wrapper): ComfyUI's layer-string parsing, the combination and the whole-tensor rescale
// against double references, scale 0 / no layers = no re-run, strided = contiguous bit for bit,
// the window through the dispatcher (re-run only inside, exact edges on the first item's
// sigma), the re-run itself on the toy DiT (positive prompt, listed blocks skipped), batched =
// per-prompt bit for bit (single steps and a sampler run of the chain), the capability check, and no allocation per step.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../dit_support.hpp"
#include "counting_allocator.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "patchbay/sampling/schedules.hpp"
#include "test_util.hpp"

namespace test_patches_post_cfg_skip_layer_guidance_dit {

using namespace patchbay;
using examples::toy_dit;

namespace {

std::vector<int> parsed(const std::string& s) {
    const auto l = slg::parse_layers(s, "SkipLayerGuidanceDiT", "double_layers");
    return {l.indices().begin(), l.indices().end()};
}

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

/// A tensor stored inside a larger buffer (every dim padded): a non-contiguous view of it.
struct padded {
    tensor<float> storage;
    view<float, 4> v;
    explicit padded(const tensor<float>& src) {
        storage = tensor<float>({src.extent(0) + 1, src.extent(1) + 1, src.extent(2) + 1, src.extent(3) + 2});
        storage.fill(1e30f);
        v = view<float, 4>(storage.data(), {src.extent(0), src.extent(1), src.extent(2), src.extent(3)},
                           storage.as<4>().strides());
        kernels::copy<float, 4>(src.as<4>(), v);
    }
};

/// Runs the patch's post-cfg step with a recorded re-run answer; returns the result.
struct rerun_record {
    int calls = 0;
    std::vector<dit_block_site> skipped;
};

template <class P, class T>
tensor<T> post_cfg_with_answer(const P& p, const tensor<T>& x, const tensor<T>& cond, const tensor<T>& cfg,
                               const tensor<T>& answer, rerun_record& rec) {
    tensor<T> sigma({x.extent(0)}), out = cfg;
    sigma.fill(T(0.5));
    guidance_inputs<T, 4> in{x.template as<4>(), sigma.template as<1>(), 5.0};
    no_state st;
    p.post_cfg_with(st, in, cond.template as<4>(), out.template as<4>(),
                    [&](const call_overrides<T>& skips, view<T, 4>) -> view<const T, 4> {
                        ++rec.calls;
                        for (int i = 0; i < 64; ++i)
                            for (auto k : {dit_block_site::kind::double_block, dit_block_site::kind::single_block})
                                if (skips.skips({k, i})) rec.skipped.push_back({k, i});
                        return answer.template as<4>();
                    });
    return out;
}

} // namespace

TEST_CASE("slg: layer strings parse as ComfyUI's re.findall(r'\\d+')", "[slg]") {
    CHECK(parsed("7, 8, 9") == std::vector<int>{7, 8, 9});
    CHECK(parsed("3,12;0 x7") == std::vector<int>{3, 12, 0, 7}); // any non-digit separates
    CHECK(parsed("1 -5") == std::vector<int>{1, 5});             // the minus sign is dropped
    CHECK(parsed("2,2,3,2") == std::vector<int>{2, 3});          // duplicates collapse, first-seen order
    CHECK(parsed("007,10") == std::vector<int>{7, 10});
    CHECK(parsed("").empty());
    CHECK(parsed(" , ").empty());
    CHECK(parsed("layer4block") == std::vector<int>{4});
    CHECK(test::error_of([] { parsed("99999999999"); }).find("SkipLayerGuidanceDiT: parameter 'double_layers' names a block index above") == 0);
    std::string many;
    for (int i = 0; i < 65; ++i) many += std::to_string(i) + ",";
    CHECK(test::error_of([&] { parsed(many); }).find("names more than 64 distinct blocks") != std::string::npos);
    std::string half;
    for (int i = 0; i < 40; ++i) half += std::to_string(i) + " ";
    const skip_layer_guidance_dit both{half, half};
    CHECK(test::error_of([&] { validate(both); }) ==
          "SkipLayerGuidanceDiT: parameters 'double_layers' and 'single_layers' together name more than 64 blocks, "
          "more than one model call can skip");
}

TEST_CASE("slg: descriptors, defaults and parameter ranges", "[slg]") {
    const auto d = with_defaults<skip_layer_guidance_dit>();
    const skip_layer_guidance_dit m{};
    CHECK(d.double_layers == m.double_layers);
    CHECK(d.single_layers == m.single_layers);
    CHECK(d.scale == m.scale);
    CHECK(d.start_percent == m.start_percent);
    CHECK(d.end_percent == m.end_percent);
    CHECK(d.rescaling_scale == m.rescaling_scale);
    CHECK(to_string(m) == "SkipLayerGuidanceDiT(double_layers='7, 8, 9', single_layers='7, 8, 9', scale=3, "
                          "start_percent=0.01, end_percent=0.15, rescaling_scale=0)");
    const auto s = with_defaults<skip_layer_guidance_sd3>();
    CHECK(s.layers == skip_layer_guidance_sd3{}.layers);
    CHECK(s.scale == 3.0);
    CHECK(to_string(s) == "SkipLayerGuidanceSD3(layers='7, 8, 9', scale=3, start_percent=0.01, end_percent=0.15)");
    CHECK(test::error_of([] { validate(skip_layer_guidance_dit{.scale = 10.5}); }) ==
          "SkipLayerGuidanceDiT: parameter 'scale' must be a finite value in [0, 10], got 10.5");
    CHECK(test::error_of([] { validate(skip_layer_guidance_dit{.rescaling_scale = -1}); }).find("'rescaling_scale'") !=
          std::string::npos);
    CHECK(test::error_of([] { validate(skip_layer_guidance_sd3{.end_percent = std::nan("")}); }) ==
          "SkipLayerGuidanceSD3: parameter 'end_percent' must be a finite value in [0, 1], got nan");
    const auto sd3 = skip_layer_guidance_sd3{.layers = "3,5", .scale = 1.7}.as_dit();
    CHECK(sd3.double_layers == "3,5");
    CHECK(sd3.single_layers.empty());
    CHECK(sd3.rescaling_scale == 0.0);
}

TEMPLATE_TEST_CASE("slg: result = cfg + (cond - rerun) * scale from one re-run with the listed blocks skipped", "[slg]",
                   float, double) {
    using T = TestType;
    const auto x = cast<T>(test::random_tensor({2, 4, 5, 6}, 1)), c = cast<T>(test::random_tensor({2, 4, 5, 6}, 2)),
               cfg = cast<T>(test::random_tensor({2, 4, 5, 6}, 3)), r = cast<T>(test::random_tensor({2, 4, 5, 6}, 4));
    rerun_record rec;
    const skip_layer_guidance_dit p{"3,12;0 x7", "1 -5", 2.5};
    const auto out = post_cfg_with_answer(p, x, c, cfg, r, rec);
    CHECK(rec.calls == 1);
    const std::vector<dit_block_site> want{{dit_block_site::kind::double_block, 0}, {dit_block_site::kind::single_block, 1},
                                           {dit_block_site::kind::double_block, 3}, {dit_block_site::kind::single_block, 5},
                                           {dit_block_site::kind::double_block, 7}, {dit_block_site::kind::double_block, 12}};
    CHECK(rec.skipped == want);
    const T k = T(2.5);
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == cfg[i] + (c[i] - r[i]) * k); // bit for bit
    // scale 0 and empty lists: no re-run, denoised untouched
    for (const auto& q : {skip_layer_guidance_dit{.scale = 0.0}, skip_layer_guidance_dit{"", " , "}}) {
        rerun_record none;
        CHECK(test::bit_equal(post_cfg_with_answer(q, x, c, cfg, r, none), cfg));
        CHECK(none.calls == 0);
    }
    // a re-run answer of another shape is refused, naming the patch
    rerun_record bad;
    const auto wrong = cast<T>(test::random_tensor({1, 4, 5, 6}, 5));
    CHECK(test::error_of([&] { post_cfg_with_answer(p, x, c, cfg, wrong, bad); }) ==
          "SkipLayerGuidanceDiT: tensor 'the re-run's prediction' has shape (1, 4, 5, 6) but must match 'cond' "
          "(2, 4, 5, 6) (batch sizes differ)");
}

TEST_CASE("slg: rescaling takes the std of the whole tensor (every batch item); none where std(result) is 0", "[slg]") {
    const auto x = test::random_tensor({2, 3, 4, 5}, 11), c = test::random_tensor({2, 3, 4, 5}, 12, 0.3f, 1.2f),
               cfg = test::random_tensor({2, 3, 4, 5}, 13, -0.2f), r = test::random_tensor({2, 3, 4, 5}, 14);
    for (double rs : {0.5, 1.0, 10.0}) {
        rerun_record rec;
        const auto out = post_cfg_with_answer(skip_layer_guidance_dit{.scale = 3.0, .rescaling_scale = rs}, x, c, cfg, r, rec);
        // float64 reference of ComfyUI's formula
        const double n = double(c.size());
        std::vector<double> y(static_cast<std::size_t>(c.size()));
        double my = 0, mc = 0;
        for (index_t i = 0; i < c.size(); ++i) {
            y[std::size_t(i)] = double(cfg[i]) + (double(c[i]) - double(r[i])) * 3.0;
            my += y[std::size_t(i)] / n;
            mc += double(c[i]) / n;
        }
        double vy = 0, vc = 0;
        for (index_t i = 0; i < c.size(); ++i) {
            vy += (y[std::size_t(i)] - my) * (y[std::size_t(i)] - my);
            vc += (double(c[i]) - mc) * (double(c[i]) - mc);
        }
        const double factor = rs * std::sqrt(vc / vy) + (1.0 - rs);
        for (index_t i = 0; i < c.size(); ++i)
            REQUIRE(std::fabs(double(out[i]) - y[std::size_t(i)] * factor) <= 2e-6 * (1.0 + std::fabs(y[std::size_t(i)] * factor)));
        // batch items influence each other: item 0 alone rescales differently
        rerun_record one;
        const auto first = [](const tensor<float>& t) { return tensor<float>::copy_of(view<const float, 4>(t.as<4>().batch_slice(0, 1))); };
        const auto alone = post_cfg_with_answer(skip_layer_guidance_dit{.scale = 3.0, .rescaling_scale = rs}, first(x),
                                                first(c), first(cfg), first(r), one);
        CHECK(test::max_abs_diff(alone, first(out)) > 1e-4);
    }
    // the result is constant: ComfyUI divides by std 0; patchbay does not rescale
    tensor<float> flat({1, 2, 2, 2}), zero({1, 2, 2, 2});
    flat.fill(0.25f);
    rerun_record rec;
    const auto out = post_cfg_with_answer(skip_layer_guidance_dit{.scale = 2.0, .rescaling_scale = 0.5}, flat, flat, flat, zero, rec);
    for (index_t i = 0; i < out.size(); ++i) CHECK(out[i] == 0.25f + 0.25f * 2.0f);
    // one element: no std at all
    tensor<float> one({1, 1, 1, 1}), o2({1, 1, 1, 1});
    one[0] = 2.f;
    o2[0] = 1.f;
    rerun_record rec1;
    const auto single = post_cfg_with_answer(skip_layer_guidance_dit{.scale = 1.0, .rescaling_scale = 3.0}, one, one, one, o2, rec1);
    CHECK(single[0] == 3.f);
}

TEST_CASE("slg: strided views give the contiguous result bit for bit", "[slg]") {
    const auto c = test::random_tensor({2, 3, 7, 9}, 21), cfg = test::random_tensor({2, 3, 7, 9}, 22),
               r = test::random_tensor({2, 3, 7, 9}, 23);
    for (double rs : {0.0, 0.7}) {
        tensor<float> want = cfg;
        slg::combine<float, 4>(c.as<4>(), r.as<4>(), 2.0, rs, want.as<4>());
        padded pc(c), pr(r), pd(cfg);
        workspace ws;
        slg::combine<float, 4>(pc.v, pr.v, 2.0, rs, pd.v, &ws);
        CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(pd.v)), want));
        padded pd2(cfg); // without an arena (standalone)
        slg::combine<float, 4>(c.as<4>(), r.as<4>(), 2.0, rs, pd2.v);
        CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(pd2.v)), want));
    }
}

TEST_CASE("slg: through the guider, the re-run happens only inside the window, decided on sigma[0]", "[slg][window]") {
    // eps schedule: percent_to_sigma is a float32 value, so the edges are exact
    const auto ms = model_sampling::discrete("eps");
    const skip_layer_guidance_dit p{"1", "2", 3.0, 0.2, 0.6};
    const auto s_start = static_cast<float>(ms.percent_to_sigma(0.2)), s_end = static_cast<float>(ms.percent_to_sigma(0.6));
    REQUIRE(double(s_start) == ms.percent_to_sigma(0.2));
    test::skip_affine_model model;
    const guider<test::skip_affine_model, skip_layer_guidance_dit> g(model, ms, p);
    const test::skip_affine_model::prompt pos{0.5f, 0.1f}, neg{0.8f, -0.2f};
    auto run = g.begin_run(&pos, &neg);
    const auto x = test::random_tensor({2, 2, 3, 3}, 31);
    struct probe {
        float sigma0, rest;
        bool rerun;
    };
    const float inf = std::numeric_limits<float>::infinity();
    for (const auto& pr : {probe{s_start, s_start, true}, probe{std::nextafter(s_start, inf), s_start, false},
                           probe{s_end, s_end, true}, probe{std::nextafter(s_end, 0.f), s_end, false},
                           probe{0.5f * (s_start + s_end), 100.f, true}, // sigma[0] inside, the rest outside
                           probe{100.f, 0.5f * (s_start + s_end), false}}) {
        model.calls = model.skipping = 0;
        const auto out = test::denoise_once(g, run, x, pr.sigma0, 5.0, pr.rest);
        INFO("sigma[0] = " << pr.sigma0);
        CHECK(model.calls == (pr.rerun ? 3 : 2));
        CHECK(model.skipping == (pr.rerun ? 1 : 0));
        // the result: cfg, plus (cond - skipped cond) * 3 inside the window
        const float c0 = 0.5f, u0 = 0.8f, cs = 0.25f;
        for (index_t i = 0; i < out.size(); ++i) {
            const float xv = x[i], cond = xv * c0 + 0.1f, uncond = xv * u0 - 0.2f;
            float want = uncond + (cond - uncond) * 5.0f;
            if (pr.rerun) want = want + (cond - (xv * cs - 0.1f)) * 3.0f;
            REQUIRE(test::same_value(out[i], want));
        }
    }
    // scale 0: never re-runs, whatever the sigma
    const guider<test::skip_affine_model, skip_layer_guidance_dit> g0(model, ms, skip_layer_guidance_dit{"1", "2", 0.0, 0.0, 1.0});
    auto run0 = g0.begin_run(&pos, &neg);
    model.calls = 0;
    test::denoise_once(g0, run0, x, s_start, 5.0);
    CHECK(model.calls == 2);
}

TEST_CASE("slg: on the toy DiT the re-run is the positive prompt with the listed blocks skipped", "[slg]") {
    toy_dit m(test::small_dit());
    const auto ms = model_sampling::discrete("eps");
    const skip_layer_guidance_dit p{"1, 3", "0", 2.0, 0.0, 1.0, 0.0};
    const guider<toy_dit, skip_layer_guidance_dit> g(m, ms, p);
    const auto pos = m.prompt(1), neg = m.negative_prompt();
    auto run = g.begin_run(&pos, &neg);
    const auto x = test::dit_latent(m, 1, 41, 2.f);
    m.counts = {};
    const auto out = test::denoise_once(g, run, x, 2.0f, 4.0);
    CHECK(m.counts.batched_calls == 1);
    CHECK(m.counts.reevaluation == 1);
    CHECK(m.counts.skipping == 1);
    CHECK(m.counts.blocks_skipped == 3);
    // by hand: the three predictions of the toy DiT, combined as ComfyUI does
    call_overrides<float> none, skips;
    p.skipped().request(skips);
    const auto cond = test::dit_predict(m, x, 2.0f, pos, none), uncond = test::dit_predict(m, x, 2.0f, neg, none),
               slg_out = test::dit_predict(m, x, 2.0f, pos, skips);
    auto want = test::cfg_of(cond, uncond, 4.0);
    slg::combine<float, 4>(cond.as<4>(), slg_out.as<4>(), 2.0, 0.0, want.as<4>());
    CHECK(test::bit_equal(out, want));
    CHECK(!test::bit_equal(out, test::cfg_of(cond, uncond, 4.0)));
}

TEST_CASE("slg: batched evaluation equals one call per prompt bit for bit with SLG active", "[slg][batched]") {
    toy_dit a(test::small_dit()), b(test::small_dit());
    test::per_prompt_dit single{&b};
    const auto ms = model_sampling::sd3(3.0);
    const skip_layer_guidance_dit p{"0,2", "1", 3.0, 0.0, 0.8, 0.5};
    const guider<toy_dit, skip_layer_guidance_dit> g1(a, ms, p);
    const guider<test::per_prompt_dit, skip_layer_guidance_dit> g2(single, ms, p);
    const auto pos = a.prompt(2), neg = a.negative_prompt();
    auto r1 = g1.begin_run(&pos, &neg);
    auto r2 = g2.begin_run(&pos, &neg);
    const auto x = test::dit_latent(a, 2, 51);
    for (float s : {0.95f, 0.6f, 0.1f}) {
        const auto o1 = test::denoise_once(g1, r1, x, s, 3.5), o2 = test::denoise_once(g2, r2, x, s, 3.5);
        CHECK(test::bit_equal(o1, o2));
    }
    CHECK(a.counts.batched_calls == 3);
    CHECK(b.counts.batched_calls == 0);
    CHECK(a.counts.reevaluation == 2); // sigma 0.1 is below the window's end
    CHECK(b.counts.reevaluation == 2);

    // over a whole sampler run of the run-time chain: the same samples, the window's re-runs
    // only inside it, cond and uncond in one call every step
    a.counts = {};
    b.counts = {};
    patch_chain<toy_dit> c1(a, ms);
    patch_chain<test::per_prompt_dit> c2(single, ms);
    c1.add(p);
    c2.add(p);
    const auto noise = test::dit_latent(a, 2, 52);
    const auto sigmas = simple_schedule(6, ms);
    tensor<float> s1(noise.shape()), s2(noise.shape());
    auto q1 = c1.begin_run(&pos, &neg);
    auto q2 = c2.begin_run(&pos, &neg);
    sample_euler(c1, q1, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 3.5}, s1.as<4>());
    sample_euler(c2, q2, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 3.5}, s2.as<4>());
    CHECK(test::bit_equal(s1, s2));
    CHECK(a.counts.batched_calls == 6);
    CHECK(a.counts.calls == 6 + a.counts.reevaluation);
    CHECK(b.counts.batched_calls == 0);
    CHECK(b.counts.calls == 12 + b.counts.reevaluation);
    CHECK(a.counts.reevaluation == b.counts.reevaluation);
    CHECK(a.counts.reevaluation > 0);
    CHECK(a.counts.reevaluation < 6); // the window [0.8, 0.5] leaves steps out
}

TEST_CASE("slg: SkipLayerGuidanceSD3 is SkipLayerGuidanceDiT on double blocks, without rescaling", "[slg]") {
    toy_dit m(test::small_dit());
    const auto ms = model_sampling::sd3(3.0);
    const skip_layer_guidance_sd3 sd3{"1,3", 2.5, 0.0, 0.5};
    const guider<toy_dit, skip_layer_guidance_sd3> g1(m, ms, sd3);
    const guider<toy_dit, skip_layer_guidance_dit> g2(m, ms, sd3.as_dit());
    const auto pos = m.prompt(0), neg = m.negative_prompt();
    auto r1 = g1.begin_run(&pos, &neg);
    auto r2 = g2.begin_run(&pos, &neg);
    const auto x = test::dit_latent(m, 1, 61);
    m.counts = {};
    CHECK(test::bit_equal(test::denoise_once(g1, r1, x, 0.9f, 4.0), test::denoise_once(g2, r2, x, 0.9f, 4.0)));
    CHECK(m.counts.blocks_skipped == 4); // two double blocks, in each guider's re-run
}

TEST_CASE("slg: a model that cannot skip blocks is refused when the run begins", "[slg]") {
    test::plain_model model;
    const auto ms = model_sampling::discrete("eps");
    const guider<test::plain_model, skip_layer_guidance_dit> g(model, ms, skip_layer_guidance_dit{});
    CHECK(test::error_of([&] { (void)g.begin_run(); }) ==
          "guider::begin_run: patch 'SkipLayerGuidanceDiT' needs block skipping, which the model does not support");
    patch_chain<test::plain_model> chain(model, ms);
    chain.add(skip_layer_guidance_sd3{});
    CHECK(test::error_of([&] { (void)chain.begin_run(); }).find("'SkipLayerGuidanceSD3' needs block skipping") !=
          std::string::npos);
    // its own start/end inputs are its window: a second one is refused
    CHECK(test::error_of([&] { patch_chain<test::plain_model>(model, ms).add(skip_layer_guidance_dit{}, {0.1, 0.9}); })
              .find("'SkipLayerGuidanceDiT' has start_percent / end_percent inputs of its own") != std::string::npos);
}

TEST_CASE("slg: no allocation per step after the first, with rescaling", "[slg][alloc]") {
    test::skip_affine_model model;
    const auto ms = model_sampling::discrete("eps");
    patch_chain<test::skip_affine_model> chain(model, ms);
    chain.add(skip_layer_guidance_dit{"7, 8, 9", "1,2", 3.0, 0.0, 1.0, 0.5});
    const test::skip_affine_model::prompt pos{0.5f, 0.1f}, neg{0.8f, -0.2f};
    auto run = chain.begin_run(&pos, &neg);
    const auto x = test::random_tensor({2, 4, 8, 8}, 71);
    tensor<float> sigma({2}), out(x.shape());
    sigma.fill(3.f);
    const step_inputs<float, 4> st{x.as<4>(), sigma.as<1>(), 5.0};
    chain.denoise(run, st, out.as<4>());
    const test::allocation_counter counter;
    for (int i = 0; i < 3; ++i) chain.denoise(run, st, out.as<4>());
    CHECK(counter.count() == 0);
    CHECK(model.skipping == 4);
}

} // namespace test_patches_post_cfg_skip_layer_guidance_dit
