// patches/post_cfg/temporal_score_rescaling.hpp: float64 references for eps and flow models
// (the model kind read from guidance_inputs::sampling at call time), per-item sigmas and batch
// split, the no-op cases (tsr_k 1, sigma 0, flow sigma 1) bit for bit, snr overflow (r = k),
// strided = contiguous bit for bit, bad input (no model sampling, flow sigma > 1, ranges).
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/post_cfg/temporal_score_rescaling.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace test_patches_post_cfg_temporal_score_rescaling {

using namespace patchbay;
using test::wave::cfg_call;
using test::wave::random_call;

namespace {

const model_sampling eps_model = model_sampling::discrete("eps");
const model_sampling vpred_model = model_sampling::discrete("v_prediction");
const model_sampling flow_model = model_sampling::sd3(3.0);

template <std::size_t R, class T>
tensor<T> run(const temporal_score_rescaling& p, const cfg_call<T>& c, const model_sampling* ms) {
    tensor<T> d = c.template cfg<R>();
    no_state st;
    apply_post_cfg(p, st, c.template inputs<R>(ms), c.cond.template as<R>(), c.uncond.template as<R>(),
                   d.template as<R>());
    return d;
}

/// semantics-guidance.md section 3 in float64, per batch item.
template <class T>
tensor<double> reference(const temporal_score_rescaling& p, const cfg_call<T>& c, const tensor<T>& den, bool flow) {
    const index_t B = c.cond.extent(0), n = c.cond.size() / B;
    tensor<double> out(c.cond.shape());
    for (index_t i = 0; i < out.size(); ++i) out[i] = double(den[i]);
    for (index_t b = 0; b < B; ++b) {
        const double s = double(c.sigma[b]);
        if (p.tsr_k == 1 || s == 0) continue;
        const double lambda = flow ? std::log((1 - s) / s) : -std::log(s);
        const double snr = std::exp(2 * lambda);
        if (snr == 0) continue;
        const double v = p.tsr_sigma * p.tsr_sigma;
        const double r = (snr * v + 1) / (snr * v / p.tsr_k + 1);
        const double alpha = s * std::exp(lambda);
        for (index_t i = b * n; i < (b + 1) * n; ++i) {
            const double start = double(c.x[i]) / alpha;
            out[i] = start + r * (double(den[i]) - start);
        }
    }
    return out;
}

} // namespace

TEST_CASE("TemporalScoreRescaling descriptor", "[tsr]") {
    constexpr auto d = temporal_score_rescaling::descriptor();
    CHECK(d.class_type == "TemporalScoreRescaling");
    CHECK(d.display_name == "TSR - Temporal Score Rescaling");
    CHECK(d.slot == hook_kind::post_cfg);
    CHECK(to_string(temporal_score_rescaling{}) == "TemporalScoreRescaling(tsr_k=0.95, tsr_sigma=1)");
}

TEMPLATE_TEST_CASE("TemporalScoreRescaling matches the float64 reference", "[tsr]", float, double) {
    const double tol = std::is_same_v<TestType, float> ? 2e-5 : 1e-12;
    SECTION("eps model, one sigma per item (batch 3)") {
        auto c = random_call<TestType>({3, 4, 8, 8}, 10, 6.0);
        c.sigma[0] = TestType(14.6), c.sigma[1] = TestType(1.0), c.sigma[2] = TestType(0.03);
        const temporal_score_rescaling p{0.9, 1.0};
        CHECK(test::wave::max_rel_diff(run<4>(p, c, &eps_model), reference(p, c, c.template cfg<4>(), false)) < tol);
        // v-prediction is not a flow model either: the same result
        CHECK(test::bit_equal(run<4>(p, c, &vpred_model), run<4>(p, c, &eps_model)));
    }
    SECTION("flow model, k > 1, 5-D") {
        auto c = random_call<TestType>({2, 4, 3, 7, 9}, 20, 4.0);
        c.sigma[0] = TestType(0.8), c.sigma[1] = TestType(0.05);
        const temporal_score_rescaling p{1.3, 0.5};
        CHECK(test::wave::max_rel_diff(run<5>(p, c, &flow_model), reference(p, c, c.template cfg<5>(), true)) < tol);
    }
    SECTION("parameter extremes") {
        auto c = random_call<TestType>({1, 4, 8, 8}, 30, 5.0);
        c.sigma[0] = TestType(0.4);
        for (const temporal_score_rescaling p : {temporal_score_rescaling{0.01, 100.0}, temporal_score_rescaling{100.0, 0.01}})
            for (const bool flow : {false, true})
                CHECK(test::wave::max_rel_diff(run<4>(p, c, flow ? &flow_model : &eps_model),
                                               reference(p, c, c.template cfg<4>(), flow)) < tol);
    }
}

TEST_CASE("TemporalScoreRescaling leaves denoised unchanged where ComfyUI returns it", "[tsr]") {
    auto c = random_call({3, 4, 8, 8}, 40, 5.0);
    const auto d = c.cfg<4>();
    SECTION("tsr_k 1: no model sampling needed") {
        CHECK(test::bit_equal(run<4>(temporal_score_rescaling{1.0, 1.0}, c, nullptr), d));
    }
    SECTION("sigma 0 (eps and flow) and flow sigma 1 (snr 0), item by item") {
        c.sigma[0] = 0.f, c.sigma[1] = 0.5f, c.sigma[2] = 1.f;
        const auto eps = run<4>(temporal_score_rescaling{}, c, &eps_model);
        CHECK(test::bit_equal(test::wave::item(eps, 0), test::wave::item(d, 0)));
        CHECK_FALSE(test::bit_equal(test::wave::item(eps, 1), test::wave::item(d, 1)));
        const auto flow = run<4>(temporal_score_rescaling{}, c, &flow_model);
        CHECK(test::bit_equal(test::wave::item(flow, 0), test::wave::item(d, 0)));
        CHECK(test::bit_equal(test::wave::item(flow, 2), test::wave::item(d, 2)));
        CHECK_FALSE(test::bit_equal(test::wave::item(flow, 1), test::wave::item(d, 1)));
    }
}

TEST_CASE("TemporalScoreRescaling: snr overflowing float32 gives r = tsr_k", "[tsr]") {
    auto c = random_call({1, 4, 8, 8}, 50, 5.0);
    c.sigma[0] = 1e-25f; // exp(2 ln(1e25)) = 1e50 overflows float32
    const temporal_score_rescaling p{0.8, 1.0};
    const auto d = c.cfg<4>();
    const auto out = run<4>(p, c, &eps_model);
    for (index_t i = 0; i < out.size(); ++i) // lerp(x / 1, d, 0.8)
        REQUIRE(out[i] == Approx(c.x[i] + 0.8f * (d[i] - c.x[i])).margin(1e-6));
}

TEST_CASE("TemporalScoreRescaling works per item: batch split is exact", "[tsr]") {
    auto c = random_call({3, 4, 8, 8}, 60, 6.0);
    c.sigma[0] = 0.9f, c.sigma[1] = 0.f, c.sigma[2] = 0.2f;
    for (const model_sampling* ms : {&eps_model, &flow_model}) {
        const auto whole = run<4>(temporal_score_rescaling{0.9, 1.2}, c, ms);
        for (index_t b = 0; b < 3; ++b)
            CHECK(test::bit_equal(test::wave::item(whole, b), run<4>(temporal_score_rescaling{0.9, 1.2}, c.item(b), ms)));
    }
}

TEST_CASE("TemporalScoreRescaling: strided inputs give the contiguous result bit for bit", "[tsr]") {
    auto c = random_call({2, 3, 5, 11}, 70, 7.0);
    c.sigma[1] = 0.3f;
    const temporal_score_rescaling p{0.7, 2.0};
    for (const model_sampling* ms : {&eps_model, &flow_model})
        CHECK(test::bit_equal(test::wave::post_cfg_strided<4>(p, c, ms), run<4>(p, c, ms)));
}

TEST_CASE("TemporalScoreRescaling rejects bad input", "[tsr]") {
    auto c = random_call({1, 4, 8, 8}, 80);
    auto d = c.cfg<4>();
    no_state st;
    const temporal_score_rescaling p;
    SECTION("no model sampling") {
        CHECK_THROWS_WITH(apply_post_cfg(p, st, c.inputs<4>(nullptr), c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                          Catch::Contains("TemporalScoreRescaling") && Catch::Contains("model sampling"));
    }
    SECTION("flow sigma above 1") {
        c.sigma[0] = 1.5f;
        CHECK_THROWS_WITH(apply_post_cfg(p, st, c.inputs<4>(&flow_model), c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                          Catch::Contains("TemporalScoreRescaling") && Catch::Contains("sigma"));
    }
    SECTION("parameters out of range, NaN sigma") {
        CHECK_THROWS_WITH(apply_post_cfg(temporal_score_rescaling{0.0, 1.0}, st, c.inputs<4>(&eps_model),
                                         c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                          Catch::Contains("tsr_k"));
        CHECK_THROWS_WITH(apply_post_cfg(temporal_score_rescaling{0.95, 200.0}, st, c.inputs<4>(&eps_model),
                                         c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                          Catch::Contains("tsr_sigma"));
        c.sigma[0] = std::nanf("");
        CHECK_THROWS_WITH(apply_post_cfg(p, st, c.inputs<4>(&eps_model), c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()),
                          Catch::Contains("sigma"));
    }
}

} // namespace test_patches_post_cfg_temporal_score_rescaling
