// Properties over random inputs for every cfg-stage patch, through the guider (issue 8):
//   - finite input with valid parameters gives finite output (odd, 1-sized, 4-D and 5-D shapes);
//   - what the API does not write (x, sigma, the prompts) is unchanged;
//   - a strided (non-contiguous) x gives the result of its contiguous copy;
//   - splitting the batch gives the same result for per-item patches (not Mahiro, which
//     couples the batch as ComfyUI does; its own tests document that).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "patchbay/patchbay.hpp"
#include "test_patches.hpp"

using namespace patchbay;
using test::toy_gaussian;
using test::toy_kind;
using test::toy_prompt;

namespace {

template <std::size_t R>
struct world {
    std::vector<index_t> shape;
    tensor<float> x, mu_c, mu_u, sigma;
    toy_prompt pos, neg;
    world(std::vector<index_t> s, unsigned seed)
        : shape(s), x(test::random_tensor(s, seed, 0.f, 2.f)),
          mu_c(test::random_tensor(one(s), seed + 1)), mu_u(test::random_tensor(one(s), seed + 2)),
          sigma({s[0]}), pos(mu_c.as<R>()), neg(mu_u.as<R>()) {
        std::mt19937 rng(seed);
        for (index_t b = 0; b < s[0]; ++b) sigma[b] = std::uniform_real_distribution<float>(0.05f, 14.f)(rng);
    }
    static std::vector<index_t> one(std::vector<index_t> s) {
        s[0] = 1;
        return s;
    }
};

template <std::size_t R, class G>
tensor<float> step(const G& g, const world<R>& w, view<const float, R> x, double scale) {
    auto run = g.begin_run(&w.pos, &w.neg);
    tensor<float> out(w.shape);
    g.denoise(run, step_inputs<float, R>{x, w.sigma.template as<1>(), scale, {}, nullptr}, out.template as<R>());
    return out;
}

template <std::size_t R, class... P>
void check_properties(const std::vector<index_t>& shape, unsigned seed, bool per_item, P... patches) {
    const world<R> w(shape, seed);
    const toy_gaussian model(toy_kind::vp, 0.7);
    const guider<const toy_gaussian, P...> g(model, model_sampling::discrete("eps"), patches...);
    const tensor<float> x_before = w.x, sigma_before = w.sigma, mu_before = w.mu_c;
    for (double scale : {1.0, 4.5, 12.0}) {
        const auto out = step<R>(g, w, w.x.template as<R>(), scale);
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));
        REQUIRE(test::bit_equal(w.x, x_before));
        REQUIRE(test::bit_equal(w.sigma, sigma_before));
        REQUIRE(test::bit_equal(w.mu_c, mu_before));

        // x laid out with its last two dims swapped in memory: same values, strided view
        std::vector<index_t> tshape = shape;
        std::swap(tshape[R - 1], tshape[R - 2]);
        tensor<float> xt(tshape);
        std::array<index_t, R> ext{}, str{};
        for (std::size_t r = 0; r < R; ++r) ext[r] = shape[r];
        const auto base = view<float, R>::row_major_strides(xt.template as<R>().extents());
        str = base;
        std::swap(str[R - 1], str[R - 2]);
        const view<float, R> xs(xt.data(), ext, str);
        kernels::copy<float, R>(w.x.template as<R>(), xs);
        const auto out_strided = step<R>(g, w, view<const float, R>(xs), scale);
        REQUIRE(test::max_abs_diff(out, out_strided) <= 1e-5 * (1.0 + scale));

        if (per_item && shape[0] > 1) { // batch item 1 alone gives item 1 of the batched run
            world<R> w1 = w;
            std::vector<index_t> s1 = shape;
            s1[0] = 1;
            w1.shape = s1;
            w1.x = tensor<float>::copy_of(w.x.template as<R>().batch_slice(1, 1));
            w1.sigma = tensor<float>({1});
            w1.sigma[0] = w.sigma[1];
            const auto out1 = step<R>(g, w1, w1.x.template as<R>(), scale);
            const auto item1 = tensor<float>::copy_of(out.template as<R>().batch_slice(1, 1));
            REQUIRE(test::max_abs_diff(out1, item1) <= 1e-5 * (1.0 + scale));
        }
    }
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
