// Tests of SAG, PAG and FreeU on the toy UNet through the guider and a real sampler: model
// calls per step (counted), SAG reads only the uncond pass, PAG replaces only in its own
// call, scale 0 equals plain CFG bit for bit, runs are deterministic for a seed, FreeU
// changes (h, hsp) only at the blocks its rule selects, samples look like the prompt's
// picture, a model without attention hooks is refused before sampling, batched prompts
// (predict_batch) give the per-prompt results bit for bit with SAG, PAG and FreeU active, and
// Deep Shrink's input-block hooks shrink the deeper blocks and its output-block hook brings h
// back to each skip's size.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../../examples/toy_unet.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/block/deep_shrink.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/post_cfg/sag.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "test_util.hpp"

namespace test_support_toy_unet_test {

using namespace patchbay;
using examples::toy_unet;

namespace {

constexpr index_t B = 2;

/// ComfyUI's "simple" schedule: `steps` sigmas taken evenly from the model's table, then 0.
std::vector<double> simple_sigmas(const model_sampling& ms, int steps) {
    const auto table = ms.sigmas();
    std::vector<double> s;
    const double stride = double(table.size()) / steps;
    for (int k = 0; k < steps; ++k)
        s.push_back(double(table[table.size() - 1 - static_cast<std::size_t>(k * stride)]));
    s.push_back(0.0);
    return s;
}

struct run_result {
    tensor<float> samples;
    examples::toy_unet_counts counts;
};

/// Sample `steps` Euler steps of a guider over `model` (the toy UNet `net` or a wrapper of it)
/// with the given patches; the run's prompts are net's prompt 1 and its negative prompt.
template <class Model, class... P>
tensor<float> sample_on(Model& model, const toy_unet& net, int steps, double cond_scale, std::uint64_t noise_seed,
                        P... patches) {
    const auto& c = net.config();
    guider<Model, P...> g(model, model_sampling::discrete("eps"), patches...);
    const auto pos = net.prompt(1), neg = net.negative_prompt();
    auto run = g.begin_run(&pos, &neg);
    const auto noise = test::random_tensor({B, c.channels, c.height, c.width}, unsigned(noise_seed));
    tensor<float> samples(noise.shape());
    sample_euler(g, run, sample_inputs<float, 4>{noise.as<4>(), {}, simple_sigmas(g.sampling(), steps), cond_scale},
                 samples.as<4>());
    return samples;
}

/// Sample `steps` Euler steps with the given patches on a fresh model.
template <class... P>
run_result sample_with(int steps, double cond_scale, std::uint64_t noise_seed, P... patches) {
    toy_unet model;
    run_result r{sample_on(model, model, steps, cond_scale, noise_seed, patches...), {}};
    r.counts = model.counts;
    return r;
}

/// The toy UNet without predict_batch: every prompt in its own call.
struct per_prompt_unet {
    using conditioning_type = examples::toy_unet_prompt;
    static constexpr bool calls_block_hooks = true;
    static constexpr bool calls_attention_hooks = true;
    static constexpr bool calls_input_block_hooks = true;
    toy_unet* model;
    template <class T>
    void predict(const model_call<conditioning_type, T, 4>& call, view<T, 4> out) {
        model->predict(call, out);
    }
};
static_assert(!batched_model<per_prompt_unet, float, 4>);

} // namespace

TEST_CASE("toy_unet: plain CFG makes two calls a step; SAG and PAG one more each") {
    const int n = 3;
    const auto plain = sample_with(n, 5.0, 1);
    CHECK(plain.counts.cond == n);
    CHECK(plain.counts.uncond == n);
    CHECK(plain.counts.reevaluation == 0);
    CHECK(plain.counts.attention_reads == 0);
    CHECK(plain.counts.attention_replaced == 0);

    const auto sag = sample_with(n, 5.0, 1, self_attention_guidance{});
    CHECK(sag.counts.total() == 3 * n);
    CHECK(sag.counts.reevaluation == n);
    // SAG reads the attention of the uncond passes only (not cond, not its own re-run)
    CHECK(sag.counts.attention_reads == n);
    CHECK(sag.counts.attention_reads_uncond == n);
    CHECK(sag.counts.attention_replaced == 0);

    const auto pag = sample_with(n, 5.0, 1, perturbed_attention_guidance{});
    CHECK(pag.counts.total() == 3 * n);
    CHECK(pag.counts.reevaluation == n);
    CHECK(pag.counts.attention_replaced == n); // only its own call is perturbed
    CHECK(pag.counts.attention_reads == 0);

    // cond_scale 1: SAG keeps the uncond pass, PAG does not
    const auto sag1 = sample_with(n, 1.0, 1, self_attention_guidance{});
    CHECK(sag1.counts.cond == n);
    CHECK(sag1.counts.uncond == n);
    CHECK(sag1.counts.reevaluation == n);
    const auto pag1 = sample_with(n, 1.0, 1, perturbed_attention_guidance{});
    CHECK(pag1.counts.cond == n);
    CHECK(pag1.counts.uncond == 0);
    CHECK(pag1.counts.reevaluation == n);

    // both: one extra call each; PAG's call is not recorded by SAG
    const auto both = sample_with(n, 5.0, 1, self_attention_guidance{}, perturbed_attention_guidance{});
    CHECK(both.counts.total() == 4 * n);
    CHECK(both.counts.attention_reads == n);
    CHECK(both.counts.attention_reads_uncond == n);
    CHECK(both.counts.attention_replaced == n);
}

TEST_CASE("toy_unet: scale 0 equals plain CFG; nonzero scales change the sample") {
    const int n = 4;
    const auto plain = sample_with(n, 4.0, 2);
    const auto sag0 = sample_with(n, 4.0, 2, self_attention_guidance{0.0, 2.0});
    const auto pag0 = sample_with(n, 4.0, 2, perturbed_attention_guidance{0.0});
    CHECK(test::bit_equal(sag0.samples, plain.samples));
    CHECK(test::bit_equal(pag0.samples, plain.samples));
    CHECK(pag0.counts.reevaluation == 0);

    const auto sag = sample_with(n, 4.0, 2, self_attention_guidance{1.0, 2.0});
    const auto pag = sample_with(n, 4.0, 2, perturbed_attention_guidance{3.0});
    const auto fu = sample_with(n, 4.0, 2, free_u{1.3, 1.4, 0.9, 0.2, 8});
    CHECK(test::max_abs_diff(sag.samples, plain.samples) > 1e-3);
    CHECK(test::max_abs_diff(pag.samples, plain.samples) > 1e-3);
    CHECK(test::max_abs_diff(fu.samples, plain.samples) > 1e-3);
}

TEST_CASE("toy_unet: a run is deterministic for a seed") {
    const auto a = sample_with(3, 5.0, 7, self_attention_guidance{}, perturbed_attention_guidance{},
                               free_u{1.1, 1.2, 0.9, 0.2, 8});
    const auto b = sample_with(3, 5.0, 7, self_attention_guidance{}, perturbed_attention_guidance{},
                               free_u{1.1, 1.2, 0.9, 0.2, 8});
    CHECK(test::bit_equal(a.samples, b.samples));
    const auto c = sample_with(3, 5.0, 8, self_attention_guidance{}, perturbed_attention_guidance{},
                               free_u{1.1, 1.2, 0.9, 0.2, 8});
    CHECK_FALSE(test::bit_equal(a.samples, c.samples));

    examples::toy_unet_config other;
    other.seed = 2;
    CHECK_FALSE(test::bit_equal(toy_unet(other).picture(0), toy_unet().picture(0)));
    CHECK(test::bit_equal(toy_unet().picture(0), toy_unet().picture(0)));
}

TEST_CASE("toy_unet: FreeU changes (h, hsp) only at the output blocks its rule selects") {
    toy_unet model;
    const auto& c = model.config();
    const free_u fu{1.3, 1.4, 0.9, 0.2, c.model_channels};
    const auto x = test::random_tensor({1, c.channels, c.height, c.width}, 3, 0.f, 2.f);
    tensor<float> sigma({1});
    sigma.fill(2.f);
    const auto pos = model.prompt(0);

    struct snapshot {
        std::vector<tensor<float>> h, hsp;
        std::vector<block_site> sites;
    };
    snapshot before, after;
    auto record = [](snapshot& s) {
        return [&s](const block_site& site, view<float, 4> h, view<float, 4> hsp) {
            s.sites.push_back(site);
            s.h.push_back(tensor<float>::copy_of(h));
            s.hsp.push_back(tensor<float>::copy_of(hsp));
        };
    };
    auto rec_before = record(before);
    auto rec_after = record(after);
    no_state ns;
    auto apply_free_u = [&](const block_site& site, view<float, 4> h, view<float, 4> hsp) {
        fu.output_block(ns, site, h, hsp);
    };
    using fn = call_overrides<float>::output_block_fn;
    call_overrides<float> ov;
    ov.add_output_block(fn::to(rec_before));
    ov.add_output_block(fn::to(apply_free_u));
    ov.add_output_block(fn::to(rec_after));
    tensor<float> out(x.shape());
    model.predict(model_call<examples::toy_unet_prompt, float, 4>{x.as<4>(), sigma.as<1>(), pass_kind::cond,
                                                                  pass_kind::cond, &pos, &ov},
                  out.as<4>());
    REQUIRE(before.sites.size() == 4);
    const index_t mc = c.model_channels;
    CHECK(before.sites[0].channels == 4 * mc);
    CHECK(before.sites[1].channels == 2 * mc);
    CHECK(before.sites[2].channels == mc);
    CHECK(before.sites[3].channels == mc);
    for (std::size_t i = 0; i < 4; ++i) {
        INFO("output block " << i);
        CHECK(before.sites[i].index == int(i));
        const bool selected = i < 2;
        CHECK(test::bit_equal(before.h[i], after.h[i]) == !selected);
        CHECK(test::bit_equal(before.hsp[i], after.hsp[i]) == !selected);
    }
}

TEST_CASE("toy_unet: samples look like the prompt's picture") {
    toy_unet model;
    const auto& c = model.config();
    guider<toy_unet, self_attention_guidance, perturbed_attention_guidance> g(
        model, model_sampling::discrete("eps"), self_attention_guidance{}, perturbed_attention_guidance{1.0});
    const auto sigmas = simple_sigmas(g.sampling(), 12);
    for (index_t k : {0, 3}) {
        const auto pos = model.prompt(k), neg = model.negative_prompt();
        auto run = g.begin_run(&pos, &neg);
        const auto noise = test::random_tensor({1, c.channels, c.height, c.width}, unsigned(10 + k));
        tensor<float> out(noise.shape());
        sample_euler(g, run, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 5.0}, out.as<4>());
        index_t best = -1;
        double best_d = 1e300;
        for (index_t j = 0; j < c.pictures; ++j) {
            const auto pic = model.picture(j);
            double l2 = 0;
            for (index_t i = 0; i < out.size(); ++i) l2 += double(out[i] - pic[i]) * double(out[i] - pic[i]);
            if (l2 < best_d) best_d = l2, best = j;
        }
        INFO("prompt " << k);
        CHECK(best == k);
        CHECK(std::sqrt(best_d / double(out.size())) < 0.5); // RMS distance to the picture
    }
}

namespace {
/// The toy UNet behind an engine that only knows at run time whether it has attention hooks.
struct runtime_model {
    using conditioning_type = examples::toy_unet_prompt;
    toy_unet* inner;
    bool attention = false;
    bool supports(capability c) const { return c == capability::block_hooks || attention; }
    template <class T>
    void predict(const model_call<conditioning_type, T, 4>& call, view<T, 4> out) {
        inner->predict(call, out);
    }
};
} // namespace

TEST_CASE("toy_unet: a model without attention hooks is refused before sampling") {
    toy_unet model;
    runtime_model no_attention{&model, false}, with_attention{&model, true};
    const auto pos = model.prompt(0), neg = model.negative_prompt();
    guider<runtime_model, self_attention_guidance> g1(no_attention, model_sampling::discrete("eps"),
                                                      self_attention_guidance{});
    CHECK_THROWS_AS(g1.begin_run(&pos, &neg), error);
    guider<runtime_model, perturbed_attention_guidance> g2(no_attention, model_sampling::discrete("eps"),
                                                           perturbed_attention_guidance{});
    CHECK_THROWS_AS(g2.begin_run(&pos, &neg), error);
    CHECK(model.counts.total() == 0);
    guider<runtime_model, self_attention_guidance> g3(with_attention, model_sampling::discrete("eps"),
                                                      self_attention_guidance{});
    CHECK_NOTHROW(g3.begin_run(&pos, &neg));
    // (a model that declares neither calls_attention_hooks nor supports() is a compile-time
    // error in guider<Model, SAG>: see the static_assert in core/guider.hpp)
}

TEST_CASE("toy_unet: a guided step in double agrees with float") {
    toy_unet model;
    const auto& c = model.config();
    guider<toy_unet, self_attention_guidance, perturbed_attention_guidance, free_u> g(
        model, model_sampling::discrete("eps"), self_attention_guidance{}, perturbed_attention_guidance{},
        free_u{1.1, 1.2, 0.9, 0.2, c.model_channels});
    const auto pos = model.prompt(4), neg = model.negative_prompt();
    auto run_f = g.begin_run(&pos, &neg);
    auto run_d = g.begin_run(&pos, &neg);
    const auto xf = test::random_tensor({B, c.channels, c.height, c.width}, 5, 0.f, 2.f);
    tensor<double> xd(xf.shape());
    for (index_t i = 0; i < xf.size(); ++i) xd[i] = xf[i];
    tensor<float> sf({B}), of(xf.shape());
    tensor<double> sd({B}), od(xf.shape());
    sf.fill(2.f);
    sd.fill(2.0);
    g.denoise(run_f, step_inputs<float, 4>{xf.as<4>(), sf.as<1>(), 5.0}, of.as<4>());
    g.denoise(run_d, step_inputs<double, 4>{xd.as<4>(), sd.as<1>(), 5.0}, od.as<4>());
    double m = 0;
    for (index_t i = 0; i < of.size(); ++i) m = std::max(m, std::fabs(double(of[i]) - od[i]));
    CHECK(m < 1e-4);
    CHECK(model.counts.total() == 8);
}

TEST_CASE("toy_unet: the run-time patch_chain gives the static guider's result") {
    toy_unet m1, m2;
    const auto& c = m1.config();
    guider<toy_unet, self_attention_guidance, perturbed_attention_guidance> g(
        m1, model_sampling::discrete("eps"), self_attention_guidance{0.8, 1.0}, perturbed_attention_guidance{2.0});
    patch_chain<toy_unet> chain(m2, model_sampling::discrete("eps"));
    chain.add(self_attention_guidance{0.8, 1.0}).add(perturbed_attention_guidance{2.0});
    const auto pos = m1.prompt(2), neg = m1.negative_prompt();
    auto rg = g.begin_run(&pos, &neg);
    auto rc = chain.begin_run(&pos, &neg);
    const auto noise = test::random_tensor({1, c.channels, c.height, c.width}, 9);
    const auto sigmas = simple_sigmas(g.sampling(), 3);
    tensor<float> a(noise.shape()), b(noise.shape());
    sample_euler(g, rg, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 4.0}, a.as<4>());
    sample_euler(chain, rc, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 4.0}, b.as<4>());
    CHECK(test::bit_equal(a, b));
    CHECK(m2.counts.total() == 4 * 3);
    CHECK(m2.counts.attention_reads_uncond == 3);

    // a run-time model without attention hooks: refused when the run begins
    runtime_model no_attention{&m2, false};
    patch_chain<runtime_model> bad(no_attention, model_sampling::discrete("eps"));
    bad.add(perturbed_attention_guidance{});
    CHECK_THROWS_AS(bad.begin_run(&pos, &neg), error);
}

TEST_CASE("toy_unet: predict_batch equals one predict per prompt bit for bit, each prompt's hooks on its own items",
          "[batched]") {
    toy_unet batched, single;
    const auto& c = batched.config();
    const index_t n = 2;
    const auto x = test::random_tensor({n, c.channels, c.height, c.width}, 21, 0.f, 2.f);
    tensor<float> sigma({n});
    sigma[0] = 2.5f;
    sigma[1] = 0.6f;
    const auto pos = batched.prompt(1), neg = batched.negative_prompt(), ext = batched.prompt(4);
    const free_u fu{1.3, 1.4, 0.9, 0.2, c.model_channels};
    no_state ns;
    auto apply_free_u = [&](const block_site& site, view<float, 4> h, view<float, 4> hsp) {
        fu.output_block(ns, site, h, hsp);
    };
    // each prompt its own hooks: FreeU on the positive, SAG's reader on the negative, PAG's
    // perturbation on the third
    struct prompt_hooks {
        call_overrides<float> pos, neg, ext;
        self_attention_guidance::state_type sag;
    };
    const auto attach = [&](prompt_hooks& k) {
        k.pos.add_output_block(call_overrides<float>::output_block_fn::to(apply_free_u));
        self_attention_guidance{}.on_model_call(k.sag, pass_kind::uncond, k.neg);
        k.ext = perturbed_attention_guidance::perturbation<float>();
    };
    prompt_hooks hb, hs;
    attach(hb);
    attach(hs);

    // batched: the latent once per prompt along dim 0
    tensor<float> xb({3 * n, c.channels, c.height, c.width}), sb({3 * n}), ob(xb.shape());
    for (index_t k = 0; k < 3; ++k) {
        kernels::copy<float, 4>(x.as<4>(), xb.as<4>().batch_slice(k * n, n));
        for (index_t b = 0; b < n; ++b) sb[k * n + b] = sigma[b];
    }
    using items = prompt_items<examples::toy_unet_prompt, float>;
    const items prompts[3] = {{pass_kind::cond, pass_kind::cond, &pos, 0, n, &hb.pos},
                              {pass_kind::uncond, pass_kind::uncond, &neg, n, n, &hb.neg},
                              {pass_kind::extra, pass_kind::extra, &ext, 2 * n, n, &hb.ext}};
    batched.predict_batch(batched_call<examples::toy_unet_prompt, float, 4>{xb.as<4>(), sb.as<1>(), prompts}, ob.as<4>());

    const auto predict = [&](toy_unet& m, pass_kind pass, const examples::toy_unet_prompt& p,
                             const call_overrides<float>& ov) {
        tensor<float> out(x.shape());
        m.predict(model_call<examples::toy_unet_prompt, float, 4>{x.as<4>(), sigma.as<1>(), pass, pass, &p, &ov}, out.as<4>());
        return out;
    };
    const tensor<float> want[3] = {predict(single, pass_kind::cond, pos, hs.pos),
                                   predict(single, pass_kind::uncond, neg, hs.neg),
                                   predict(single, pass_kind::extra, ext, hs.ext)};
    for (index_t k = 0; k < 3; ++k) {
        INFO("prompt " << k);
        CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(ob.as<4>().batch_slice(k * n, n))), want[k]));
    }
    // SAG recorded the same attention, of the negative prompt's items only
    REQUIRE(hb.sag.attention.valid);
    REQUIRE(hs.sag.attention.valid);
    CHECK(hb.sag.attention.batch == n);
    CHECK(hb.sag.attention.key_mass == hs.sag.attention.key_mass);
    // the hooks acted, and only on their own prompt's items
    toy_unet plain;
    const call_overrides<float> none;
    CHECK(test::max_abs_diff(want[0], predict(plain, pass_kind::cond, pos, none)) > 1e-4);  // FreeU
    CHECK(test::max_abs_diff(want[2], predict(plain, pass_kind::extra, ext, none)) > 1e-4); // PAG
    CHECK(test::bit_equal(want[1], predict(plain, pass_kind::uncond, neg, none)));         // SAG only reads

    CHECK(batched.counts.calls == 1);
    CHECK(batched.counts.batched_calls == 1);
    CHECK(single.counts.calls == 3);
    CHECK(single.counts.batched_calls == 0);
    for (const auto* m : {&batched, &single}) {
        CHECK(m->counts.cond == 1);
        CHECK(m->counts.uncond == 1);
        CHECK(m->counts.extra == 1);
        CHECK(m->counts.block_hook_calls == 4); // the positive prompt's four output blocks
        CHECK(m->counts.attention_reads == 1);
        CHECK(m->counts.attention_reads_uncond == 1);
        CHECK(m->counts.attention_replaced == 1);
    }

    // the batch layout is checked
    const items gap[2] = {{pass_kind::cond, pass_kind::cond, &pos, 0, n, &hb.pos},
                          {pass_kind::uncond, pass_kind::uncond, &neg, n + 1, n - 1, &hb.neg}};
    CHECK_THROWS_WITH(batched.predict_batch(batched_call<examples::toy_unet_prompt, float, 4>{
                                                view<const float, 4>(xb.as<4>().batch_slice(0, 2 * n)),
                                                view<const float, 1>(sb.as<1>().batch_slice(0, 2 * n)), gap},
                                            ob.as<4>().batch_slice(0, 2 * n)),
                      Catch::Contains("toy_unet::predict_batch") && Catch::Contains("follow each other"));
}

TEST_CASE("toy_unet: the guider and the chain batch the prompts; samples equal per-prompt calls bit for bit "
          "with SAG, PAG and FreeU active",
          "[batched]") {
    const int steps = 4;
    const free_u fu{1.3, 1.4, 0.9, 0.2, 8};
    const self_attention_guidance sag{1.0, 2.0};
    const perturbed_attention_guidance pag{2.0};
    for (const double scale : {5.0, 1.0}) { // at cond_scale 1 SAG keeps the uncond pass: still two prompts
        INFO("cond_scale " << scale);
        toy_unet batched, single, plain;
        per_prompt_unet per{&single};
        const auto a = sample_on(batched, batched, steps, scale, 3, sag, pag, fu);
        const auto b = sample_on(per, single, steps, scale, 3, sag, pag, fu);
        CHECK(test::bit_equal(a, b));
        CHECK(test::max_abs_diff(a, sample_on(plain, plain, steps, scale, 3)) > 1e-3); // the patches act
        // one batched call for cond and uncond a step, SAG's and PAG's passes their own calls
        CHECK(batched.counts.batched_calls == steps);
        CHECK(batched.counts.calls == 3 * steps);
        CHECK(single.counts.batched_calls == 0);
        CHECK(single.counts.calls == 4 * steps);
        CHECK(batched.counts.total() == single.counts.total());
        CHECK(batched.counts.attention_reads_uncond == steps);
        CHECK(single.counts.attention_reads_uncond == steps);
        CHECK(batched.counts.attention_replaced == steps);
        CHECK(batched.counts.block_hook_calls == single.counts.block_hook_calls);
        CHECK(batched.counts.block_hook_calls == 4 * 4 * steps); // FreeU at every prompt evaluation

        // the run-time chain batches the same way
        toy_unet chained;
        patch_chain<toy_unet> chain(chained, model_sampling::discrete("eps"));
        chain.add(sag).add(pag).add(fu);
        const auto& c = chained.config();
        const auto pos = chained.prompt(1), neg = chained.negative_prompt();
        auto run = chain.begin_run(&pos, &neg);
        const auto noise = test::random_tensor({B, c.channels, c.height, c.width}, 3);
        tensor<float> out(noise.shape());
        sample_euler(chain, run, sample_inputs<float, 4>{noise.as<4>(), {}, simple_sigmas(chain.sampling(), steps), scale},
                     out.as<4>());
        CHECK(test::bit_equal(out, a));
        CHECK(chained.counts.batched_calls == steps);
    }
    // one prompt an evaluation (cond_scale 1, nothing keeps the uncond pass): no batched call
    toy_unet lone;
    sample_on(lone, lone, steps, 1.0, 3, pag, fu);
    CHECK(lone.counts.batched_calls == 0);
    CHECK(lone.counts.calls == 2 * steps);
    CHECK(lone.counts.uncond == 0);
}

TEST_CASE("toy_unet: three prompts (DualCFGGuider) in one call equal per-prompt calls bit for bit with FreeU and SAG",
          "[batched]") {
    const int steps = 3;
    toy_unet batched, single;
    per_prompt_unet per{&single};
    const auto& c = batched.config();
    const dual_cfg_guider dual{5.0, 2.0, dual_cfg_style::nested};
    const free_u fu{1.2, 1.3, 0.8, 0.3, c.model_channels};
    const self_attention_guidance sag{0.8, 1.5};
    const auto pos = batched.prompt(1), neg = batched.negative_prompt(), mid = batched.prompt(3, 0.6);
    const auto noise = test::random_tensor({B, c.channels, c.height, c.width}, 44);
    const auto sample = [&](auto& model) {
        guider<std::remove_cvref_t<decltype(model)>, dual_cfg_guider, free_u, self_attention_guidance> g(
            model, model_sampling::discrete("eps"), dual, fu, sag);
        auto run = g.begin_run(&pos, &neg, &mid);
        tensor<float> out(noise.shape());
        sample_euler(g, run, sample_inputs<float, 4>{noise.as<4>(), {}, simple_sigmas(g.sampling(), steps), 1.0},
                     out.as<4>());
        return out;
    };
    CHECK(test::bit_equal(sample(batched), sample(per)));
    CHECK(batched.counts.batched_calls == steps); // the three prompts of a step in one call
    CHECK(batched.counts.extra == steps);
    CHECK(batched.counts.calls == 2 * steps);     // plus SAG's pass
    CHECK(single.counts.calls == 4 * steps);
    CHECK(batched.counts.attention_reads_uncond == steps);
    CHECK(batched.counts.block_hook_calls == single.counts.block_hook_calls);
}

TEST_CASE("toy_unet: Deep Shrink runs the deeper blocks at the shrunk size and resizes h back to each skip") {
    toy_unet m;
    const auto& c = m.config();
    const auto x = test::random_tensor({1, c.channels, c.height, c.width}, 31, 0.f, 2.f);
    tensor<float> sigma({1});
    sigma[0] = 3.f;
    const auto pos = m.prompt(2);
    // the middle self-attention reports its token grid: H/4 x W/4 unless a hook resized h
    index_t rows = 0, cols = 0;
    auto grid = [&](const attention_site& site, view<const float, 3>, index_t) { rows = site.rows, cols = site.cols; };
    const auto predict = [&](const deep_shrink* p) {
        state_t<deep_shrink> st;
        call_overrides<float> ov;
        if (p) p->on_model_call(st, pass_kind::cond, ov);
        ov.read_attention(attention_site{unet_stage::middle, 0, 0}, call_overrides<float>::attention_read_fn::to(grid));
        tensor<float> out(x.shape());
        m.predict(model_call<examples::toy_unet_prompt, float, 4>{x.as<4>(), sigma.as<1>(), pass_kind::cond,
                                                                  pass_kind::cond, &pos, &ov},
                  out.as<4>());
        return out;
    };
    const auto plain = predict(nullptr);
    CHECK(rows == c.height / 4);
    CHECK(cols == c.width / 4);
    CHECK(m.counts.input_block_hook_calls == 0);
    // factor 2 halves the middle block whichever input block shrinks; 1.5 gives 21 -> 10 -> 5
    // at block 1, and before the skip the skip is 21 wide, so h (20 after upsampling) is
    // resized at output blocks 2 and 3
    struct expect {
        int block;
        double factor;
        bool after_skip;
        index_t middle;
    };
    std::vector<tensor<float>> outs;
    for (const expect e : {expect{1, 2.0, true, 4}, expect{2, 2.0, true, 4}, expect{3, 2.0, true, 4},
                           expect{3, 2.0, false, 4}, expect{1, 1.5, true, 5}, expect{1, 1.5, false, 5}}) {
        INFO("block " << e.block << " factor " << e.factor << " after_skip " << e.after_skip);
        deep_shrink p;
        p.block_number = e.block;
        p.downscale_factor = e.factor;
        p.downscale_after_skip = e.after_skip;
        m.counts = {};
        outs.push_back(predict(&p));
        CHECK(rows == e.middle);
        CHECK(cols == e.middle);
        CHECK(m.counts.input_block_hook_calls == 8); // 4 input blocks, before and after the skip
        CHECK(test::max_abs_diff(outs.back(), plain) > 1e-4);
        for (std::size_t k = 0; k + 1 < outs.size(); ++k) CHECK(!test::bit_equal(outs[k], outs.back()));
    }
    // a block past the toy's last input block: h passes through, the result is the plain one
    deep_shrink none;
    none.block_number = 4;
    CHECK(test::bit_equal(predict(&none), plain));
    CHECK(rows == c.height / 4);
}

TEST_CASE("toy_unet: Deep Shrink through the guider: inside its window only; batched equals per-prompt bit for bit",
          "[batched]") {
    const int steps = 6;
    for (const bool after_skip : {true, false}) {
        INFO("after_skip " << after_skip);
        deep_shrink p;
        p.block_number = 1;
        p.end_percent = 0.5;
        p.downscale_after_skip = after_skip;
        toy_unet batched, single, plain;
        per_prompt_unet per{&single};
        const auto a = sample_on(batched, batched, steps, 5.0, 4, p);
        CHECK(test::bit_equal(a, sample_on(per, single, steps, 5.0, 4, p)));
        CHECK(test::max_abs_diff(a, sample_on(plain, plain, steps, 5.0, 4)) > 1e-3);
        // hooks on some steps (both prompts, 8 hook points each), not all
        CHECK(batched.counts.input_block_hook_calls == single.counts.input_block_hook_calls);
        CHECK(batched.counts.input_block_hook_calls % 16 == 0);
        CHECK(batched.counts.input_block_hook_calls > 0);
        CHECK(batched.counts.input_block_hook_calls < 16 * steps);
        CHECK(batched.counts.batched_calls == steps);
    }
    // an empty window (only sigma 0, never evaluated): the plain sample bit for bit
    deep_shrink idle;
    idle.start_percent = idle.end_percent = 1.0;
    toy_unet m1, m2;
    CHECK(test::bit_equal(sample_on(m1, m1, steps, 5.0, 4, idle), sample_on(m2, m2, steps, 5.0, 4)));
    CHECK(m1.counts.input_block_hook_calls == 0);
}

} // namespace test_support_toy_unet_test
