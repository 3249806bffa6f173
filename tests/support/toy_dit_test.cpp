// Tests of the toy DiT (examples/toy_dit.hpp): its exact denoiser (vp and flow), determinism,
// block skipping (identity blocks, per prompt), the attention-output hooks (sites, tokens,
// prompts, once per prompt over the whole batch, only for the items that run the block),
// predict_batch equal to per-prompt predict bit for bit, and samples that look like the
// prompt's picture through the guider.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "../../examples/toy_dit.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "patchbay/sampling/schedules.hpp"
#include "test_util.hpp"

namespace test_support_toy_dit_test {

using namespace patchbay;
using examples::toy_dit;
using examples::toy_dit_config;

namespace {

/// A small DiT for fast tests: 16x16 latent, 16 image tokens, 3 + 3 blocks.
toy_dit_config small(double residual = 0.5) {
    toy_dit_config c;
    c.height = c.width = 16;
    c.double_blocks = c.single_blocks = 3;
    c.hidden = 16;
    c.residual = residual;
    return c;
}

tensor<float> latent(const toy_dit& m, index_t batch, unsigned seed, float stddev = 1.f) {
    const auto& c = m.config();
    return test::random_tensor({batch, c.channels, c.height, c.width}, seed, 0.f, stddev);
}

tensor<float> sigmas_of(index_t batch, float s) {
    tensor<float> t({batch});
    t.fill(s);
    return t;
}

tensor<float> predict(toy_dit& m, const tensor<float>& x, const tensor<float>& sigma, const examples::toy_dit_prompt& p,
                      const call_overrides<float>& ov, pass_kind pass = pass_kind::cond) {
    tensor<float> out(x.shape());
    m.predict(model_call<examples::toy_dit_prompt, float, 4>{x.as<4>(), sigma.as<1>(), pass, pass, &p, &ov}, out.as<4>());
    return out;
}

/// Records every attention-output hook call.
struct hook_log {
    struct entry {
        attention_site site;
        index_t items, tokens, features;
        std::vector<pass_kind> prompts;
    };
    std::vector<entry> calls;
    void operator()(const attention_site& s, view<float, 3> out, std::span<const pass_kind> prompts) {
        calls.push_back({s, out.extent(0), out.extent(1), out.extent(2), {prompts.begin(), prompts.end()}});
    }
};

double distance(const tensor<float>& a, const tensor<float>& b) {
    double d = 0;
    for (index_t i = 0; i < a.size(); ++i) d += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    return std::sqrt(d / double(a.size()));
}

} // namespace

TEST_CASE("toy_dit: with residual 0 it is the exact mixture denoiser") {
    SECTION("vp: a picture at tiny sigma denoises to itself") {
        toy_dit m(small(0.0));
        const auto pic = m.picture(2);
        const auto p = m.prompt(2);
        const call_overrides<float> none;
        const auto d = predict(m, pic, sigmas_of(1, 1e-3f), p, none);
        CHECK(test::max_abs_diff(d, pic) < 1e-4);
    }
    SECTION("flow: at sigma 1 the latent says nothing and D is the prior mean") {
        auto c = small(0.0);
        c.kind = examples::toy_kind::flow;
        toy_dit m(c);
        const auto p = m.prompt(1, 0.7);
        const call_overrides<float> none;
        const auto d1 = predict(m, latent(m, 1, 3), sigmas_of(1, 1.0f), p, none);
        const auto d2 = predict(m, latent(m, 1, 4), sigmas_of(1, 1.0f), p, none);
        CHECK(test::bit_equal(d1, d2));
        tensor<float> prior(d1.shape());
        for (index_t k = 0; k < c.pictures; ++k) {
            const auto pic = m.picture(k);
            for (index_t i = 0; i < prior.size(); ++i) prior[i] += static_cast<float>(p.weights[std::size_t(k)]) * pic[i];
        }
        CHECK(test::max_abs_diff(d1, prior) < 1e-5);
        // and at small sigma, x = (1 - sigma) * picture denoises to the picture
        const auto pic = m.picture(1);
        tensor<float> x(pic.shape());
        for (index_t i = 0; i < x.size(); ++i) x[i] = 0.999f * pic[i];
        CHECK(test::max_abs_diff(predict(m, x, sigmas_of(1, 1e-3f), p, none), pic) < 1e-3);
    }
}

TEST_CASE("toy_dit: the network adds residual times its output, deterministically") {
    toy_dit with(small(0.5)), without(small(0.0));
    const auto x = latent(with, 2, 5, 2.f);
    const auto sg = sigmas_of(2, 2.0f);
    const auto p = with.prompt(0);
    const call_overrides<float> none;
    const auto a = predict(with, x, sg, p, none), b = predict(with, x, sg, p, none);
    CHECK(test::bit_equal(a, b));
    const double diff = test::max_abs_diff(a, predict(without, x, sg, p, none));
    CHECK(diff > 1e-2); // the DiT is visible
    CHECK(diff < 5.0);  // and bounded
    // the prompt reaches the network through its text tokens
    toy_dit_config c0 = small(0.5);
    toy_dit other(c0);
    CHECK(!test::bit_equal(a, predict(other, x, sg, other.prompt(1), none)));
}

TEST_CASE("toy_dit: a skipped block is the identity; skipping is per call and per block") {
    toy_dit m(small());
    const auto x = latent(m, 1, 7, 2.f);
    const auto sg = sigmas_of(1, 1.5f);
    const auto p = m.prompt(0);
    const call_overrides<float> none;
    const auto plain = predict(m, x, sg, p, none);
    m.counts = {};
    std::vector<tensor<float>> seen;
    for (auto kind : {dit_block_site::kind::double_block, dit_block_site::kind::single_block})
        for (int i = 0; i < 3; ++i) {
            call_overrides<float> ov;
            ov.skip_block({kind, i});
            const auto s = predict(m, x, sg, p, ov);
            CHECK(!test::bit_equal(s, plain));
            for (const auto& o : seen) CHECK(!test::bit_equal(s, o)); // each block matters differently
            seen.push_back(s);
        }
    CHECK(m.counts.skipping == 6);
    CHECK(m.counts.blocks_skipped == 6);
    call_overrides<float> absent; // a block the model does not have: nothing changes
    absent.skip_block({dit_block_site::kind::double_block, 3});
    CHECK(test::bit_equal(predict(m, x, sg, p, absent), plain));
    // skipping every block leaves only the embedding and the final projection
    call_overrides<float> all;
    for (int i = 0; i < 3; ++i) {
        all.skip_block({dit_block_site::kind::double_block, i});
        all.skip_block({dit_block_site::kind::single_block, i});
    }
    CHECK(!test::bit_equal(predict(m, x, sg, p, all), plain));
}

TEST_CASE("toy_dit: attention-output hooks see every block's joint attention, with its site and prompts") {
    toy_dit m(small());
    const auto& c = m.config();
    const auto x = latent(m, 2, 9);
    const auto sg = sigmas_of(2, 1.0f);
    const auto p = m.prompt(0);
    hook_log log;
    call_overrides<float> ov;
    ov.add_attention_output(dit::every(dit_block_site::kind::double_block), call_overrides<float>::attention_output_fn::to(log));
    ov.add_attention_output(dit::every(dit_block_site::kind::single_block), call_overrides<float>::attention_output_fn::to(log));
    const auto out = predict(m, x, sg, p, ov, pass_kind::uncond);
    REQUIRE(log.calls.size() == 6);
    const index_t N = c.text_tokens + m.image_tokens();
    for (std::size_t i = 0; i < 6; ++i) {
        const auto& e = log.calls[i];
        CHECK(dit::is_dit(e.site));
        CHECK(e.site.block == (i < 3 ? 0 : 1));
        CHECK(e.site.transformer == int(i % 3));
        CHECK(e.site.rows == 4);
        CHECK(e.site.cols == 4);
        CHECK(dit::image_tokens(e.site) == m.image_tokens());
        CHECK(e.items == 2);
        CHECK(e.tokens == N);
        CHECK(e.features == c.hidden);
        CHECK(e.prompts == std::vector<pass_kind>{pass_kind::uncond, pass_kind::uncond});
    }
    CHECK(m.counts.attention_output_calls == 6);
    // a hook that rewrites the attention output changes the prediction
    struct zero_image {
        void operator()(const attention_site&, view<float, 3> o, std::span<const pass_kind>) const {
            for (index_t b = 0; b < o.extent(0); ++b)
                for (index_t t = 0; t < o.extent(1); ++t)
                    for (index_t f = 0; f < o.extent(2); ++f) o(b, t, f) = 0.f;
        }
    } zero;
    call_overrides<float> z;
    z.add_attention_output({dit::stage, 1, 2, 0, 0}, call_overrides<float>::attention_output_fn::to(zero));
    CHECK(!test::bit_equal(predict(m, x, sg, p, z), predict(m, x, sg, p, call_overrides<float>{})));
    (void)out;
}

TEST_CASE("toy_dit: predict_batch equals one predict per prompt bit for bit, hooks per prompt") {
    toy_dit m(small());
    const auto x = latent(m, 2, 11, 1.5f);
    const auto sg = sigmas_of(2, 0.8f);
    const auto pos = m.prompt(0), neg = m.negative_prompt(), extra = m.prompt(3);
    call_overrides<float> o_pos, o_neg, o_extra;
    o_neg.skip_block({dit_block_site::kind::double_block, 1}); // SLG-simple style: the negative pass skips
    o_neg.skip_block({dit_block_site::kind::single_block, 2});
    hook_log log;
    o_pos.add_attention_output(dit::every(dit_block_site::kind::double_block), call_overrides<float>::attention_output_fn::to(log));
    o_pos.add_attention_output(dit::every(dit_block_site::kind::single_block), call_overrides<float>::attention_output_fn::to(log));

    const auto a = predict(m, x, sg, pos, o_pos), b = predict(m, x, sg, neg, o_neg, pass_kind::uncond),
               e = predict(m, x, sg, extra, o_extra, pass_kind::extra);
    log.calls.clear();

    tensor<float> xb({6, 3, 16, 16}), sb({6}), ob({6, 3, 16, 16});
    for (index_t k = 0; k < 3; ++k) {
        kernels::copy<float, 4>(x.as<4>(), xb.as<4>().batch_slice(2 * k, 2));
        sb[2 * k] = sb[2 * k + 1] = 0.8f;
    }
    const prompt_items<examples::toy_dit_prompt, float> items[3] = {
        {pass_kind::cond, pass_kind::cond, &pos, 0, 2, &o_pos},
        {pass_kind::uncond, pass_kind::uncond, &neg, 2, 2, &o_neg},
        {pass_kind::extra, pass_kind::extra, &extra, 4, 2, &o_extra}};
    m.counts = {};
    m.predict_batch(batched_call<examples::toy_dit_prompt, float, 4>{xb.as<4>(), sb.as<1>(), items}, ob.as<4>());
    CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(ob.as<4>().batch_slice(0, 2))), a));
    CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(ob.as<4>().batch_slice(2, 2))), b));
    CHECK(test::bit_equal(tensor<float>::copy_of(view<const float, 4>(ob.as<4>().batch_slice(4, 2))), e));
    CHECK(m.counts.batched_calls == 1);
    CHECK(m.counts.cond == 1);
    CHECK(m.counts.uncond == 1);
    CHECK(m.counts.extra == 1);
    CHECK(m.counts.skipping == 1);
    // the positive prompt's hooks ran once per site over every item that runs the block
    REQUIRE(log.calls.size() == 6);
    const std::vector<pass_kind> all{pass_kind::cond, pass_kind::cond, pass_kind::uncond,
                                     pass_kind::uncond, pass_kind::extra, pass_kind::extra};
    const std::vector<pass_kind> no_neg{pass_kind::cond, pass_kind::cond, pass_kind::extra, pass_kind::extra};
    for (std::size_t i = 0; i < 6; ++i) {
        const bool negative_skips = (i == 1) || (i == 5); // double 1, single 2
        CHECK(log.calls[i].prompts == (negative_skips ? no_neg : all));
        CHECK(log.calls[i].items == (negative_skips ? 4 : 6));
    }
}

TEST_CASE("toy_dit: samples through the guider look like the prompt's picture; the guider batches") {
    for (auto kind : {examples::toy_kind::vp, examples::toy_kind::flow}) {
        auto c = small(0.3);
        c.kind = kind;
        toy_dit m(c);
        const auto ms = kind == examples::toy_kind::vp ? model_sampling::discrete("eps") : model_sampling::sd3(3.0);
        const guider<toy_dit> g(m, ms);
        const auto pos = m.prompt(2), neg = m.negative_prompt();
        auto run = g.begin_run(&pos, &neg);
        const auto noise = latent(m, 1, 21);
        const auto sigmas = simple_schedule(8, g.sampling());
        tensor<float> out(noise.shape());
        sample_euler(g, run, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 4.0}, out.as<4>());
        const double to_target = distance(out, m.picture(2));
        for (index_t k = 0; k < c.pictures; ++k)
            if (k != 2) CHECK(to_target < distance(out, m.picture(k)));
        CHECK(m.counts.batched_calls == 8); // cond and uncond in one call per step
        CHECK(m.counts.cond == 8);
        CHECK(m.counts.uncond == 8);
    }
}

} // namespace test_support_toy_dit_test
