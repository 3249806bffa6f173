// Properties over random inputs for every cfg-stage patch, the multi-prompt guiders and the
// network patches, through the guider (issues 8, 14, 15):
//   - finite input with valid parameters gives finite output (odd, 1-sized, 4-D and 5-D shapes;
//     the inputs where ComfyUI gives NaN included: the patches return the finite limit);
//   - what the API does not write (x, sigma, the prompts) is unchanged;
//   - a strided (non-contiguous) x gives the result of its contiguous copy;
//   - splitting the batch gives the same result for per-item patches. A patch that couples the
//     batch as ComfyUI does is checked with per_item = false, its reason next to the call (its
//     own tests document the coupling).
// The cfg-stage patches run on the toy Gaussian model (vp noise with eps sampling, and flow noise
// with SD3 sampling where the patch reads the sampling kind), with a third prompt for Perp-Neg
// and the multi-prompt guiders; Deep Shrink runs on that model wrapped in two UNet levels that
// call the input- and output-block hooks; NAG and Skip Layer Guidance run on the toy DiT. The
// CFG++ samplers (euler_cfg_pp, euler_ancestral_cfg_pp) keep the same properties over a whole
// sampling run on the toy Gaussian model: finite samples, noise and latent unchanged, a strided
// noise tensor gives the contiguous result bit for bit, and an item sampled alone equals that
// item of the batch (the ancestral noise given per item through the engine's noise source).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "../patches/dit_support.hpp"
#include "patchbay/patchbay.hpp"
#include "test_patches.hpp"

namespace test_core_properties {

using namespace patchbay;
using test::toy_gaussian;
using test::toy_kind;
using test::toy_prompt;

namespace {

/// The noise of the toy data, the model sampling the guider reports, and the sigmas drawn.
struct toy_setup {
    toy_kind kind = toy_kind::vp;
    model_sampling sampling = model_sampling::discrete("eps");
    float sigma_lo = 0.05f, sigma_hi = 14.f;
    bool empty_is_positive = false; ///< the extra prompt equals the positive one (Perp-Neg's 0/0)
};

toy_setup flow_setup() { return {toy_kind::flow, model_sampling::sd3(3.0), 0.02f, 0.98f, false}; }

toy_setup empty_is_positive() {
    toy_setup s;
    s.empty_is_positive = true;
    return s;
}

/// A step's inputs: x and one sigma per batch item.
struct inputs {
    std::vector<index_t> shape;
    tensor<float> x, sigma;
    inputs(std::vector<index_t> s, unsigned seed, float sigma_lo, float sigma_hi)
        : shape(s), x(test::random_tensor(s, seed, 0.f, 2.f)), sigma({s[0]}) {
        std::mt19937 rng(seed);
        for (index_t b = 0; b < s[0]; ++b) sigma[b] = std::uniform_real_distribution<float>(sigma_lo, sigma_hi)(rng);
    }
};

/// The run's prompts: positive, negative and the extra one (Perp-Neg's empty, Dual CFG's middle).
template <class Cond>
struct prompt_set {
    const Cond* pos;
    const Cond* neg;
    const Cond* extra;
};

/// A copy of a tensor laid out with its last two dims swapped in memory: the same values through
/// a strided (non-contiguous) view.
template <std::size_t R>
struct transposed {
    tensor<float> storage;
    view<float, R> v;
    explicit transposed(const tensor<float>& src) {
        std::vector<index_t> tshape = src.shape();
        std::swap(tshape[R - 1], tshape[R - 2]);
        storage = tensor<float>(tshape);
        auto str = view<float, R>::row_major_strides(storage.template as<R>().extents());
        std::swap(str[R - 1], str[R - 2]);
        v = view<float, R>(storage.data(), src.template as<R>().extents(), str);
        kernels::copy<float, R>(src.template as<R>(), v);
    }
    view<const float, R> as_view() const { return v; }
};

template <std::size_t R, class G, class Cond>
tensor<float> step(const G& g, const prompt_set<Cond>& p, const std::vector<index_t>& shape, view<const float, R> x,
                   const tensor<float>& sigma, double scale) {
    auto run = g.begin_run(p.pos, p.neg, p.extra);
    tensor<float> out(shape);
    g.denoise(run, step_inputs<float, R>{x, sigma.as<1>(), scale, {}, nullptr}, out.template as<R>());
    return out;
}

/// The four properties of one guider on one input, at cond_scale 1 (the uncond pass skipped),
/// 4.5 and 12.
template <std::size_t R, class G, class Cond>
void check_guider(const G& g, const prompt_set<Cond>& p, const inputs& w, bool per_item) {
    const auto& shape = w.shape;
    const tensor<float> x_before = w.x, sigma_before = w.sigma;
    for (double scale : {1.0, 4.5, 12.0}) {
        INFO("cond_scale " << scale);
        const auto out = step<R>(g, p, shape, w.x.template as<R>(), w.sigma, scale);
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));
        REQUIRE(test::bit_equal(w.x, x_before));
        REQUIRE(test::bit_equal(w.sigma, sigma_before));

        const transposed<R> xs(w.x);
        const auto out_strided = step<R>(g, p, shape, xs.as_view(), w.sigma, scale);
        REQUIRE(test::max_abs_diff(out, out_strided) <= 1e-5 * (1.0 + scale));

        if (per_item && shape[0] > 1) { // batch item 1 alone gives item 1 of the batched run
            std::vector<index_t> s1 = shape;
            s1[0] = 1;
            const auto x1 = tensor<float>::copy_of(w.x.template as<R>().batch_slice(1, 1));
            tensor<float> sigma1({1});
            sigma1[0] = w.sigma[1];
            const auto out1 = step<R>(g, p, s1, x1.template as<R>(), sigma1, scale);
            const auto item1 = tensor<float>::copy_of(out.template as<R>().batch_slice(1, 1));
            REQUIRE(test::max_abs_diff(out1, item1) <= 1e-5 * (1.0 + scale));
        }
    }
}

std::vector<index_t> one(std::vector<index_t> s) {
    s[0] = 1;
    return s;
}

/// The properties of guider<Model, P...> on the toy Gaussian data (Model is toy_gaussian or a
/// network around it, constructed from the noise kind and the data std).
template <std::size_t R, class Model = const toy_gaussian, class... P>
void check_properties_with(const toy_setup& setup, const std::vector<index_t>& shape, unsigned seed, bool per_item,
                           P... patches) {
    const inputs w(shape, seed, setup.sigma_lo, setup.sigma_hi);
    const tensor<float> mu_c = test::random_tensor(one(shape), seed + 1), mu_u = test::random_tensor(one(shape), seed + 2),
                        mu_e = setup.empty_is_positive ? mu_c : test::random_tensor(one(shape), seed + 3);
    const toy_prompt pos(mu_c.as<R>()), neg(mu_u.as<R>()), extra(mu_e.as<R>());
    Model model(setup.kind, 0.7);
    const guider<Model, P...> g(model, setup.sampling, patches...);
    check_guider<R>(g, prompt_set<toy_prompt>{&pos, &neg, &extra}, w, per_item);
    REQUIRE(test::bit_equal(tensor<float>::copy_of(pos.mu<float, R>()), mu_c)); // the prompts are unchanged
    REQUIRE(test::bit_equal(tensor<float>::copy_of(neg.mu<float, R>()), mu_u));
    REQUIRE(test::bit_equal(tensor<float>::copy_of(extra.mu<float, R>()), mu_e));
}

template <std::size_t R, class... P>
void check_properties(const std::vector<index_t>& shape, unsigned seed, bool per_item, P... patches) {
    check_properties_with<R>(toy_setup{}, shape, seed, per_item, patches...);
}

/// The toy Gaussian model inside two UNet levels that call the block hooks as a UNet does
/// (Deep Shrink's sites): h = the toy's prediction; input blocks 2 and 3 each run the
/// before-skip hooks, store the skip and run the after-skip hooks; output blocks 8 (with skip 3)
/// and 9 (with skip 2) run the output-block hooks, which must bring h back to the skip's size,
/// and average h with the skip. Every size change shows in the answer.
struct shrink_gaussian {
    using conditioning_type = toy_prompt;
    static constexpr bool calls_block_hooks = true;
    static constexpr bool calls_input_block_hooks = true;
    toy_gaussian toy;
    shrink_gaussian(toy_kind kind, double data_std) : toy(kind, data_std) {}

    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& c, view<T, R> out) const {
        toy.predict(c, out);
        if constexpr (R == 4) {
            const call_overrides<T>& ov = *c.overrides;
            const index_t C = out.extent(1);
            view<T, 4> h = out;
            std::array<view<T, 4>, 2> skips{};
            for (int level = 0; level < 2; ++level) {
                const block_site site{unet_stage::input, 2 + level, C};
                h = ov.apply_input_block(site, h);
                skips[std::size_t(level)] = h;
                h = ov.apply_input_block_after_skip(site, h);
            }
            tensor<T> level_out[2];
            for (int level = 1; level >= 0; --level) {
                const view<T, 4> skip = skips[std::size_t(level)];
                h = ov.apply_output_block(block_site{unet_stage::output, 9 - level, C}, h, skip);
                REQUIRE(h.extents() == skip.extents());
                tensor<T>& o = level_out[level];
                o = tensor<T>(std::vector<index_t>(skip.extents().begin(), skip.extents().end()));
                kernels::transform(o.template as<4>(), [](auto a, auto b) { return (a + b) * T(0.5); },
                                   view<const T, 4>(h), view<const T, 4>(skip));
                h = o.template as<4>();
            }
            kernels::copy<T, 4>(view<const T, 4>(h), out);
        }
    }
};

/// Sharpen's radius for a latent: as large as the reflect padding allows (at most 3), 0 if none.
index_t sharpen_radius(const std::vector<index_t>& shape) {
    const index_t r = std::min(shape[shape.size() - 2], shape[shape.size() - 1]) - 1;
    return std::min<index_t>(r, 3);
}

latent_apply_operation_cfg sharpen(index_t r, double sigma = 1.0, double alpha = 0.5) {
    return {latent_operation_sharpen{static_cast<int>(r), sigma, alpha}};
}

latent_apply_operation_cfg tonemap(double multiplier = 1.0) { return {latent_operation_tonemap_reinhard{multiplier}}; }

/// The cfg-stage patches of issue 14 and the multi-prompt guiders, on one shape.
template <std::size_t R>
void check_guidance_wave(const std::vector<index_t>& shape, unsigned seed) {
    check_properties<R>(shape, seed++, true, cfg_zero_star{});
    check_properties<R>(shape, seed++, true, epsilon_scaling{});
    check_properties<R>(shape, seed++, true, epsilon_scaling{.scaling_factor = 0.5});
    check_properties<R>(shape, seed++, true, temporal_score_rescaling{});
    check_properties<R>(shape, seed++, true, temporal_score_rescaling{.tsr_k = 3.0, .tsr_sigma = 0.2});
    // the sampling kind decides TSR's log-SNR: a flow model (sigma in (0, 1))
    check_properties_with<R>(flow_setup(), shape, seed++, true, temporal_score_rescaling{});
    check_properties_with<R>(flow_setup(), shape, seed++, true, temporal_score_rescaling{.tsr_k = 40.0, .tsr_sigma = 5.0});
    check_properties_with<R>(flow_setup(), shape, seed++, true, cfg_zero_star{});
    // the scale varies over the batch axis (the frames): an item alone is frame 0 of 1
    check_properties<R>(shape, seed++, false, video_linear_cfg_guidance{.min_cfg = 2.0});
    check_properties<R>(shape, seed++, false, video_triangle_cfg_guidance{.min_cfg = 0.5});
    if (const index_t r = sharpen_radius(shape); r >= 1) { // per item (5-D: per frame)
        check_properties<R>(shape, seed++, true, sharpen(r));
        check_properties<R>(shape, seed++, true, sharpen(1, 0.1, 5.0));
    }
    check_properties<R>(shape, seed++, true, tonemap());
    check_properties<R>(shape, seed++, true, tonemap(0.0)); // ComfyUI: NaN; the limit cond = uncond
    // Perp-Neg projects with one coefficient over the whole batch (semantics-guidance.md 6)
    check_properties<R>(shape, seed++, false, perp_neg{});
    check_properties<R>(shape, seed++, false, perp_neg{.neg_scale = 3.0}, epsilon_scaling{});
    check_properties_with<R>(empty_is_positive(), shape, seed++, false, perp_neg{}); // 0/0: the limit
    check_properties<R>(shape, seed++, true, perp_neg{.neg_scale = 0.0}); // no projection: per item
    // PerpNegGuider: the same whole-batch projection (section 7)
    check_properties<R>(shape, seed++, false, perp_neg_guider{});
    check_properties<R>(shape, seed++, false, perp_neg_guider{.cfg = 5.0, .neg_scale = 2.0}, tonemap(), cfg_zero_star{});
    check_properties_with<R>(empty_is_positive(), shape, seed++, false, perp_neg_guider{});
    check_properties<R>(shape, seed++, true, perp_neg_guider{.cfg = 1.0, .neg_scale = 0.0}); // skips both
    check_properties<R>(shape, seed++, true, perp_neg_guider{.cfg = 6.0, .neg_scale = 0.0}, epsilon_scaling{});
    // DualCFGGuider: element-wise mixes of three predictions
    check_properties<R>(shape, seed++, true, dual_cfg_guider{});
    check_properties<R>(shape, seed++, true, dual_cfg_guider{.cfg_conds = 3.0, .cfg_cond2_negative = 1.0});
    check_properties<R>(shape, seed++, true, dual_cfg_guider{.style = dual_cfg_style::nested}, rescale_cfg{},
                        cfg_zero_star{});
    check_properties<R>(shape, seed++, false, dual_cfg_guider{.cfg_conds = 2.0}, video_linear_cfg_guidance{}); // frames
    // chains of the new patches with the first wave
    check_properties<R>(shape, seed++, true, tonemap(), rescale_cfg{}, cfg_zero_star{}, epsilon_scaling{});
    check_properties<R>(shape, seed++, true, apg{}, temporal_score_rescaling{}, cfg_norm{});
}

} // namespace

TEST_CASE("every cfg-stage patch keeps the properties on random 4-D inputs", "[properties]") {
    for (const auto& shape : std::vector<std::vector<index_t>>{{2, 4, 9, 7}, {3, 1, 5, 1}, {2, 16, 12, 10}}) {
        unsigned seed = 10;
        check_properties<4>(shape, seed++, true, apg{.momentum = 0.5});
        check_properties<4>(shape, seed++, true, tcfg{});
        check_properties<4>(shape, seed++, true, fresca{.scale_low = 0.7, .scale_high = 1.4, .freq_cutoff = 2});
        check_properties<4>(shape, seed++, true, rescale_cfg{});
        check_properties<4>(shape, seed++, true, renorm_cfg{.cfg_trunc = 100, .renorm_cfg = 0.8});
        check_properties<4>(shape, seed++, true, cfg_norm{});
        check_properties<4>(shape, seed++, true, cfg_norm{.strength = 0.8, .pre_cfg = true});
        check_properties<4>(shape, seed++, false, mahiro{});
        check_properties<4>(shape, seed++, true, fresca{}, apg{}, rescale_cfg{}, cfg_norm{});
    }
}

TEST_CASE("every cfg-stage patch keeps the properties on random 5-D inputs", "[properties]") {
    for (const auto& shape : std::vector<std::vector<index_t>>{{2, 4, 3, 6, 5}, {2, 3, 1, 4, 4}}) {
        unsigned seed = 40;
        check_properties<5>(shape, seed++, true, apg{.momentum = -0.5});
        check_properties<5>(shape, seed++, true, tcfg{});
        check_properties<5>(shape, seed++, true, fresca{.scale_low = 0.7, .scale_high = 1.4, .freq_cutoff = 1});
        check_properties<5>(shape, seed++, true, rescale_cfg{});
        check_properties<5>(shape, seed++, true, renorm_cfg{});
        check_properties<5>(shape, seed++, true, cfg_norm{});
        check_properties<5>(shape, seed++, false, mahiro{});
    }
}

TEST_CASE("the issue-14 patches and the multi-prompt guiders keep the properties on 4-D inputs", "[properties]") {
    for (const auto& shape : std::vector<std::vector<index_t>>{{2, 4, 9, 7}, {3, 1, 5, 1}, {3, 16, 12, 10}}) {
        INFO("shape " << shape[0] << "x" << shape[1] << "x" << shape[2] << "x" << shape[3]);
        check_guidance_wave<4>(shape, 70);
    }
    // one pixel per item: ComfyUI's Bessel std is NaN there, Tonemap returns the limit (std 0)
    check_properties<4>({3, 4, 1, 1}, 90, true, tonemap());
}

TEST_CASE("the issue-14 patches and the multi-prompt guiders keep the properties on 5-D inputs", "[properties]") {
    for (const auto& shape : std::vector<std::vector<index_t>>{{2, 4, 3, 6, 5}, {3, 3, 1, 4, 4}}) {
        INFO("shape " << shape[0] << "x" << shape[1] << "x" << shape[2] << "x" << shape[3] << "x" << shape[4]);
        check_guidance_wave<5>(shape, 100);
    }
    check_properties<5>({2, 4, 1, 1, 1}, 130, true, tonemap());
}

TEST_CASE("Deep Shrink keeps the properties through the input- and output-block hooks", "[properties][deep_shrink]") {
    using kernels::resize_method;
    const toy_setup eps{};
    for (const auto& shape : std::vector<std::vector<index_t>>{{2, 4, 9, 7}, {3, 1, 5, 3}, {2, 16, 12, 10}}) {
        unsigned seed = 150;
        // the whole schedule inside the window: resizes are per item
        const deep_shrink always{.block_number = 3, .downscale_factor = 2.0, .end_percent = 1.0};
        check_properties_with<4, shrink_gaussian>(eps, shape, seed++, true, always);
        for (auto m : {resize_method::bilinear, resize_method::nearest_exact, resize_method::area, resize_method::bislerp}) {
            deep_shrink p = always;
            p.downscale_method = p.upscale_method = m;
            p.downscale_factor = 1.5;
            check_properties_with<4, shrink_gaussian>(eps, shape, seed++, true, p);
        }
        deep_shrink before_skip = always; // skip 3 is the shrunk h; output block 9 resizes back
        before_skip.downscale_after_skip = false;
        check_properties_with<4, shrink_gaussian>(eps, shape, seed++, true, before_skip);
        deep_shrink enlarge = always; // after input block 2: block 3 and its skip at the new size
        enlarge.block_number = 2;
        enlarge.downscale_factor = 0.7;
        check_properties_with<4, shrink_gaussian>(eps, shape, seed++, true, enlarge, cfg_zero_star{});
        // the window is decided on the first item's sigma, so an item alone may fall outside it
        check_properties_with<4, shrink_gaussian>(eps, shape, seed++, false, deep_shrink{}, tonemap());
    }
}

// FreeU beside Deep Shrink, in both orders: the output-block hooks run in the patches' order
// (ComfyUI's node order), and FreeU filters h and hsp separately, so with FreeU first it meets
// the shrunk h beside the full-size skip before Deep Shrink resizes h back.
TEST_CASE("Deep Shrink beside FreeU_V2 keeps the properties, in either order", "[properties][deep_shrink]") {
    const deep_shrink always{.block_number = 3, .downscale_factor = 2.0, .end_percent = 1.0};
    check_properties_with<4, shrink_gaussian>(toy_setup{}, {2, 4, 9, 7}, 160, true, always, free_u_v2{});
    check_properties_with<4, shrink_gaussian>(toy_setup{}, {2, 4, 9, 7}, 161, true, free_u_v2{}, always);
}

namespace {

/// One sampling run of a CFG++ sampler on guider<toy_gaussian, P...>. The ancestral noise of
/// step k is steps_noise[k] (items [first, first + batch) of it), so a batch item sampled alone
/// draws the noise it draws in the batch.
template <std::size_t R, class... P>
tensor<float> cfg_pp_run(const char* sampler, const toy_setup& setup, const prompt_set<toy_prompt>& p,
                         view<const float, R> noise, view<const float, R> latent, const std::vector<double>& sigmas,
                         const std::vector<tensor<float>>& steps_noise, index_t first, double scale, P... patches) {
    const toy_gaussian model(setup.kind, 0.7);
    const guider<const toy_gaussian, P...> g(model, setup.sampling, patches...);
    auto run = g.begin_run(p.pos, p.neg);
    std::size_t step = 0;
    auto source = [&](double, double, view<float, R> n) {
        const tensor<float>& all = steps_noise.at(step++);
        kernels::copy<float, R>(all.template as<R>().batch_slice(first, n.extent(0)), n);
    };
    sample_options<float, R> opt;
    opt.eta = 0.8;
    opt.s_noise = 1.3;
    opt.noise_source = callback<void(double, double, view<float, R>)>::to(source);
    tensor<float> out(std::vector<index_t>(noise.extents().begin(), noise.extents().end()));
    REQUIRE(sample(sampler, g, run, sample_inputs<float, R>{noise, latent, sigmas, scale}, out.template as<R>(), opt) ==
            sample_status::completed);
    return out;
}

/// The properties of both CFG++ samplers with the patches P... on one shape: txt2img and img2img
/// (a latent image), cond_scale 1 (the uncond pass still runs) and 5.
template <std::size_t R, class... P>
void check_cfg_pp(const toy_setup& setup, const std::vector<index_t>& shape, unsigned seed, P... patches) {
    const std::vector<double> sigmas = setup.kind == toy_kind::flow ? std::vector<double>{1.0, 0.8, 0.55, 0.3, 0.1, 0.0}
                                                                    : std::vector<double>{14.6, 6.0, 2.5, 1.0, 0.3, 0.0};
    const tensor<float> mu_c = test::random_tensor(one(shape), seed + 1), mu_u = test::random_tensor(one(shape), seed + 2);
    const toy_prompt pos(mu_c.as<R>()), neg(mu_u.as<R>());
    const prompt_set<toy_prompt> prompts{&pos, &neg, nullptr};
    const tensor<float> noise = test::random_tensor(shape, seed + 3), image = test::random_tensor(shape, seed + 4, 0.5f);
    std::vector<tensor<float>> steps_noise;
    for (unsigned k = 0; k < sigmas.size(); ++k) steps_noise.push_back(test::random_tensor(shape, seed + 10 + k));
    const tensor<float> noise_before = noise, image_before = image;

    const transposed<R> strided(noise);

    for (const char* sampler : {"euler_cfg_pp", "euler_ancestral_cfg_pp"})
        for (const bool img2img : {false, true})
            for (const double scale : {1.0, 5.0}) {
                INFO(sampler << (img2img ? ", img2img" : ", txt2img") << ", cond_scale " << scale);
                const view<const float, R> latent = img2img ? image.template as<R>() : view<const float, R>{};
                const auto out = cfg_pp_run<R>(sampler, setup, prompts, noise.template as<R>(), latent, sigmas,
                                               steps_noise, 0, scale, patches...);
                for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));
                REQUIRE(test::bit_equal(noise, noise_before));
                REQUIRE(test::bit_equal(image, image_before));
                REQUIRE(test::bit_equal(out, cfg_pp_run<R>(sampler, setup, prompts, strided.as_view(), latent,
                                                           sigmas, steps_noise, 0, scale, patches...)));
                // batch item 1 alone (its noise, latent and ancestral noise) gives item 1 of the batch
                const auto item = [](const tensor<float>& t) {
                    return tensor<float>::copy_of(t.template as<R>().batch_slice(1, 1));
                };
                const tensor<float> noise1 = item(noise), image1 = item(image);
                const auto out1 = cfg_pp_run<R>(sampler, setup, prompts, noise1.template as<R>(),
                                                 img2img ? image1.template as<R>() : view<const float, R>{}, sigmas,
                                                 steps_noise, 1, scale, patches...);
                REQUIRE(test::max_abs_diff(out1, item(out)) <= 1e-5 * (1.0 + scale));
            }
}

} // namespace

TEST_CASE("the CFG++ samplers keep the properties over a sampling run", "[properties][cfgpp]") {
    for (const auto& shape : std::vector<std::vector<index_t>>{{2, 4, 9, 7}, {3, 1, 5, 1}}) {
        INFO("shape " << shape[0] << "x" << shape[1] << "x" << shape[2] << "x" << shape[3]);
        check_cfg_pp<4>(toy_setup{}, shape, 200);
        check_cfg_pp<4>(flow_setup(), shape, 210); // alpha = 1 - sigma, from sigma 1
        check_cfg_pp<4>(toy_setup{}, shape, 220, rescale_cfg{}, cfg_zero_star{});
        check_cfg_pp<4>(flow_setup(), shape, 230, temporal_score_rescaling{});
    }
    check_cfg_pp<5>(toy_setup{}, {2, 4, 3, 6, 5}, 240, epsilon_scaling{});
    check_cfg_pp<5>(flow_setup(), {2, 3, 1, 4, 4}, 250);
}

TEST_CASE("NAG and Skip Layer Guidance keep the properties on the toy DiT", "[properties][dit]") {
    examples::toy_dit m(test::small_dit());
    const auto pos = m.prompt(1), neg = m.negative_prompt(), extra = m.prompt(3);
    const prompt_set<examples::toy_dit_prompt> prompts{&pos, &neg, &extra};
    const model_sampling ms = model_sampling::discrete("eps");
    const auto& cfg = m.config();
    unsigned seed = 170;
    for (index_t batch : {2, 3}) {
        const inputs w({batch, cfg.channels, cfg.height, cfg.width}, seed++, 0.05f, 14.f);
        const normalized_attention_guidance nag{4.0, 0.6, 2.0};
        // per item: NAG pairs each positive item with its own negative item
        check_guider<4>(guider<examples::toy_dit, normalized_attention_guidance>(m, ms, nag), prompts, w, true);
        check_guider<4>(guider<examples::toy_dit, normalized_attention_guidance, cfg_zero_star>(
                            m, ms, normalized_attention_guidance{50.0, 1.0, 10.0}, cfg_zero_star{}),
                        prompts, w, true);
        // SLG inside its window (the whole schedule) without rescaling: per item
        const skip_layer_guidance_dit slg{"1", "2", 2.0, 0.0, 1.0};
        check_guider<4>(guider<examples::toy_dit, skip_layer_guidance_dit>(m, ms, slg), prompts, w, true);
        check_guider<4>(guider<examples::toy_dit, skip_layer_guidance_dit_simple>(
                            m, ms, skip_layer_guidance_dit_simple{"0, 3", "1", 0.0, 1.0}),
                        prompts, w, true);
        check_guider<4>(guider<examples::toy_dit, skip_layer_guidance_sd3>(m, ms, skip_layer_guidance_sd3{"2", 3.0, 0.0, 1.0}),
                        prompts, w, true);
        check_guider<4>(guider<examples::toy_dit, normalized_attention_guidance, skip_layer_guidance_dit>(m, ms, nag, slg),
                        prompts, w, true);
        // the rescale takes one std over the whole batch (semantics-network.md), and the default
        // window is decided on the first item's sigma: both couple the batch
        const skip_layer_guidance_dit rescaled{"1", "2", 2.0, 0.0, 1.0, 0.7};
        check_guider<4>(guider<examples::toy_dit, skip_layer_guidance_dit>(m, ms, rescaled), prompts, w, false);
        check_guider<4>(guider<examples::toy_dit, skip_layer_guidance_dit>(m, ms, skip_layer_guidance_dit{"1", "3"}),
                        prompts, w, false);
    }
}

} // namespace test_core_properties
