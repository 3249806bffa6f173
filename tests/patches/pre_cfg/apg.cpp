// patches/pre_cfg/apg.hpp: golden parity, the CFG-at-(scale+1) identity, momentum state
// (reset on sigma increase, fresh state, clone), 5-D per-channel projection, stride and
// batch-split invariance, zero inputs, float/double, bad inputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "npy.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "test_util.hpp"

namespace test_patches_pre_cfg_apg {

using namespace patchbay;
using test::random_tensor;

namespace {

/// Holds x, sigma, cond, uncond for one call and runs APG on copies of cond/uncond.
template <class T>
struct call {
    tensor<T> x, sigma, cond, uncond;
    double cond_scale = 5.0;
    bool uncond_is_none = false;

    template <std::size_t R>
    guidance_inputs<T, R> inputs() const {
        guidance_inputs<T, R> in;
        in.x = x.template as<R>();
        in.sigma = sigma.template as<1>();
        in.cond_scale = cond_scale;
        in.uncond_is_none = uncond_is_none;
        return in;
    }
    /// Returns the rewritten cond (uncond is checked unchanged). `checked`: through
    /// apply_pre_cfg, which validates the parameters and inputs before the member runs.
    template <std::size_t R>
    tensor<T> run(const apg& p, apg::state_type& st, bool checked = false) const {
        tensor<T> c = cond, u = uncond;
        if (checked) apply_pre_cfg(p, st, inputs<R>(), c.template as<R>(), u.template as<R>());
        else p.pre_cfg<T, R>(st, inputs<R>(), c.template as<R>(), u.template as<R>());
        REQUIRE(test::bit_equal(u, uncond));
        return c;
    }
};

template <class T = float>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

template <class T = float>
call<T> random_call(std::vector<index_t> shape, unsigned seed, float sigma = 3.0f) {
    call<T> c;
    c.x = cast<T>(random_tensor(shape, seed, 0.f, 2.f));
    c.cond = cast<T>(random_tensor(shape, seed + 1));
    c.uncond = cast<T>(random_tensor(shape, seed + 2, 0.1f, 0.9f));
    c.sigma = tensor<T>({shape[0]});
    c.sigma.fill(static_cast<T>(sigma));
    return c;
}

bool all_finite(const tensor<float>& t) {
    for (index_t i = 0; i < t.size(); ++i)
        if (!std::isfinite(t[i])) return false;
    return true;
}

/// allclose against a golden output
void check_close(const tensor<float>& got, const npy::array& want, double rtol, double atol) {
    REQUIRE(got.size() == want.size());
    for (index_t i = 0; i < got.size(); ++i) {
        const double e = want.values[static_cast<std::size_t>(i)];
        if (!(std::fabs(static_cast<double>(got[i]) - e) <= atol + rtol * std::fabs(e)))
            FAIL("element " << i << ": got " << got[i] << ", expected " << e);
    }
}

const std::string golden = PATCHBAY_GOLDEN_DIR;

} // namespace

TEST_CASE("APG golden parity: default case (single call)", "[apg][golden]") {
    const std::string dir = golden + "/APG/default/";
    call<float> c;
    c.x = npy::load(dir + "in_x.npy").to_tensor<float>();
    c.sigma = npy::load(dir + "in_sigma.npy").to_tensor<float>();
    c.cond = npy::load(dir + "in_cond_denoised.npy").to_tensor<float>();
    c.uncond = npy::load(dir + "in_uncond_denoised.npy").to_tensor<float>();
    c.cond_scale = 7.0;
    apg::state_type st;
    const auto out = c.run<4>(apg{}, st);
    check_close(out, npy::load(dir + "out_cond_out.npy"), 1e-5, 3.5e-6);

    SECTION("double inputs agree with the float32 golden") {
        call<double> d{cast<double>(c.x), cast<double>(c.sigma), cast<double>(c.cond), cast<double>(c.uncond), 7.0, false};
        apg::state_type sd;
        const auto outd = d.run<4>(apg{}, sd);
        tensor<float> f(outd.shape());
        for (index_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(outd[i]);
        check_close(f, npy::load(dir + "out_cond_out.npy"), 1e-5, 3.5e-6);
    }
}

TEST_CASE("APG golden parity: momentum reset sequence (one state across steps)", "[apg][golden]") {
    const std::string dir = golden + "/APG/momentum-reset-seq/";
    const auto sigmas = npy::load(dir + "in_sigmas.npy").to_tensor<float>();
    auto cond = npy::load(dir + "in_cond_denoised.npy").to_tensor<float>();
    auto uncond = npy::load(dir + "in_uncond_denoised.npy").to_tensor<float>();
    const auto x = npy::load(dir + "in_x.npy").to_tensor<float>();
    const apg p{.eta = 1.0, .norm_threshold = 8.0, .momentum = 0.75};
    const index_t steps = cond.extent(0);
    const std::array<index_t, 4> ext{cond.extent(1), cond.extent(2), cond.extent(3), cond.extent(4)};
    const index_t per = cond.size() / steps;
    tensor<float> sig({ext[0]});
    apg::state_type st;
    for (index_t s = 0; s < steps; ++s) {
        sig.fill(sigmas[s]);
        guidance_inputs<float, 4> in{view<const float, 4>(x.data() + s * per, ext), sig.as<1>(), 4.0};
        p.pre_cfg<float, 4>(st, in, view<float, 4>(cond.data() + s * per, ext), view<float, 4>(uncond.data() + s * per, ext));
    }
    check_close(cond, npy::load(dir + "out_cond_out.npy"), 1e-5, 3.5e-6);
}

TEST_CASE("APG with eta 1, no clipping, no momentum is CFG at cond_scale + 1", "[apg]") {
    for (double cs : {1.5, 5.0, 7.5}) {
        auto c = random_call({2, 4, 16, 16}, 10);
        c.cond_scale = cs;
        apg::state_type st;
        const auto out = c.run<4>(apg{.eta = 1.0, .norm_threshold = 0.0, .momentum = 0.0}, st);
        tensor<float> denoised(out.shape()), expected(out.shape());
        kernels::cfg_combine<float, 4>(out.as<4>(), c.uncond.as<4>(), cs, denoised.as<4>());
        kernels::cfg_combine<float, 4>(c.cond.as<4>(), c.uncond.as<4>(), cs + 1.0, expected.as<4>());
        CHECK(test::max_abs_diff(denoised, expected) < 1e-5);
    }
}

TEST_CASE("APG at cond_scale 1 with the skipped (zero) uncond still guides: 2 * cond", "[apg]") {
    auto c = random_call({2, 4, 8, 8}, 20);
    c.cond_scale = 1.0;
    c.uncond_is_none = true;
    c.uncond.fill(0.f);
    apg::state_type st;
    const auto out = c.run<4>(apg{.eta = 1.0, .norm_threshold = 0.0, .momentum = 0.0}, st);
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(2.f * c.cond[i]).margin(1e-6));
}

TEST_CASE("APG clipping bounds the guidance norm; eta 0 removes the parallel part", "[apg]") {
    // With eta 0 and cond_scale huge, cond' - uncond ~ g_orth, orthogonal to cond per item
    auto c = random_call({2, 4, 8, 8}, 30);
    c.cond_scale = 1e6;
    apg::state_type st;
    const auto out = c.run<4>(apg{.eta = 0.0, .norm_threshold = 2.0, .momentum = 0.0}, st);
    for (index_t b = 0; b < 2; ++b) {
        double dot = 0, n2 = 0, cn = 0;
        for (index_t i = b * 256; i < (b + 1) * 256; ++i) {
            const double g = double(out[i]) - double(c.uncond[i]);
            dot += g * c.cond[i];
            n2 += g * g;
            cn += double(c.cond[i]) * c.cond[i];
        }
        CHECK(std::fabs(dot) / std::sqrt(cn) < 1e-4);
        CHECK(std::sqrt(n2) <= 2.0 + 1e-4);
    }
}

TEST_CASE("APG momentum: sigma increase resets, equal or lower sigma keeps the average", "[apg][state]") {
    const apg p{.eta = 1.0, .norm_threshold = 5.0, .momentum = 0.5};
    const auto first = random_call({1, 4, 8, 8}, 40, 10.f);
    auto second = random_call({1, 4, 8, 8}, 50, 12.f);
    apg::state_type fresh;
    const auto alone = second.run<4>(p, fresh);

    SECTION("strictly higher sigma: same as a fresh state") {
        apg::state_type st;
        first.run<4>(p, st);
        CHECK(test::bit_equal(second.run<4>(p, st), alone));
    }
    SECTION("equal sigma: no reset") {
        second.sigma.fill(10.f);
        apg::state_type st, f2;
        first.run<4>(p, st);
        const auto fresh_eq = second.run<4>(p, f2);
        CHECK(test::max_abs_diff(second.run<4>(p, st), fresh_eq) > 1e-3);
    }
    SECTION("lower sigma: no reset") {
        second.sigma.fill(5.f);
        apg::state_type st, f2;
        first.run<4>(p, st);
        const auto fresh_lo = second.run<4>(p, f2);
        CHECK(test::max_abs_diff(second.run<4>(p, st), fresh_lo) > 1e-3);
    }
    SECTION("a fresh state is a reset") {
        apg::state_type st;
        first.run<4>(p, st);
        second.sigma.fill(5.f);
        st = apg::state_type{};
        apg::state_type f2;
        CHECK(test::bit_equal(second.run<4>(p, st), second.run<4>(p, f2)));
    }
}

TEST_CASE("APG state: a copy is an independent clone; the buffer is reused", "[apg][state]") {
    const apg p{.eta = 0.8, .norm_threshold = 4.0, .momentum = -0.5};
    auto a = random_call({1, 4, 8, 8}, 60, 10.f), b = random_call({1, 4, 8, 8}, 70, 8.f),
         c = random_call({1, 4, 8, 8}, 80, 8.f);
    apg::state_type st;
    a.run<4>(p, st);
    const float* buffer = st.running_avg_f.data();
    apg::state_type clone = st;
    // same inputs: identical results
    CHECK(test::bit_equal(b.run<4>(p, st), b.run<4>(p, clone)));
    // the runs diverge independently: st sees c, the clone sees b again
    const auto st_next = c.run<4>(p, st);
    const auto clone_next = c.run<4>(p, clone);
    CHECK(test::max_abs_diff(st_next, clone_next) == 0.0); // both saw a, b, then c
    b.sigma.fill(6.f);
    const auto st_b = b.run<4>(p, st);
    c.sigma.fill(6.f);
    const auto clone_c = c.run<4>(p, clone);
    // replay of the clone's history on a new state gives the clone's result
    apg::state_type replay;
    a.run<4>(p, replay);
    b.sigma.fill(8.f);
    b.run<4>(p, replay);
    c.sigma.fill(8.f);
    c.run<4>(p, replay);
    c.sigma.fill(6.f);
    CHECK(test::bit_equal(c.run<4>(p, replay), clone_c));
    CHECK(test::max_abs_diff(st_b, clone_c) > 1e-3);
    CHECK(st.running_avg_f.data() == buffer); // no reallocation after the first call
}

TEST_CASE("APG 5-D latents project per channel over (T,H,W)", "[apg]") {
    const apg p{.eta = 0.5, .norm_threshold = 4.0, .momentum = 0.0};
    auto c5 = random_call({2, 3, 3, 8, 8}, 90);
    apg::state_type st;
    const auto out5 = c5.run<5>(p, st);
    // each (b, c) block equals APG on a 4-D tensor whose last three dims are that block
    const index_t block = 3 * 8 * 8;
    for (index_t g = 0; g < 6; ++g) {
        call<float> c4;
        c4.cond = tensor<float>({1, 3, 8, 8});
        c4.uncond = tensor<float>({1, 3, 8, 8});
        c4.x = tensor<float>({1, 3, 8, 8});
        c4.sigma = tensor<float>({1});
        c4.sigma.fill(3.f);
        c4.cond_scale = c5.cond_scale;
        std::copy(c5.cond.data() + g * block, c5.cond.data() + (g + 1) * block, c4.cond.data());
        std::copy(c5.uncond.data() + g * block, c5.uncond.data() + (g + 1) * block, c4.uncond.data());
        apg::state_type s4;
        const auto out4 = c4.run<4>(p, s4);
        for (index_t i = 0; i < block; ++i) REQUIRE(out4[i] == out5[g * block + i]);
    }
}

TEST_CASE("APG: strided views give the contiguous result", "[apg]") {
    for (double momentum : {0.0, 0.5}) {
        const apg p{.eta = 0.7, .norm_threshold = 3.0, .momentum = momentum};
        auto c = random_call({2, 4, 8, 8}, 100);
        apg::state_type st;
        c.run<4>(p, st);
        const auto expected = c.run<4>(p, st);
        // cond and uncond inside padded buffers (W padded to 11): non-unit row stride
        const std::array<index_t, 4> ext{2, 4, 8, 8}, str{4 * 8 * 11, 8 * 11, 11, 1};
        tensor<float> cp({2 * 4 * 8 * 11}), up({2 * 4 * 8 * 11});
        cp.fill(-7.f);
        up.fill(-7.f);
        view<float, 4> cv(cp.data(), ext, str), uv(up.data(), ext, str);
        kernels::copy<float, 4>(c.cond.as<4>(), cv);
        kernels::copy<float, 4>(c.uncond.as<4>(), uv);
        apg::state_type s2;
        {
            tensor<float> c0 = c.cond, u0 = c.uncond;
            p.pre_cfg<float, 4>(s2, c.inputs<4>(), c0.as<4>(), u0.as<4>());
        }
        p.pre_cfg<float, 4>(s2, c.inputs<4>(), cv, uv);
        const auto got = tensor<float>::copy_of(view<const float, 4>(cv));
        CHECK(test::max_abs_diff(got, expected) <= 2e-6);
        CHECK(cp[8] == -7.f); // padding untouched
    }
}

TEST_CASE("APG: a batch gives the same result as its items one at a time", "[apg]") {
    const apg p{.eta = 1.2, .norm_threshold = 6.0, .momentum = 0.25};
    auto c = random_call({3, 4, 8, 8}, 110);
    apg::state_type st;
    const auto whole = c.run<4>(p, st);
    const index_t item = 4 * 8 * 8;
    for (index_t b = 0; b < 3; ++b) {
        call<float> one;
        one.x = tensor<float>({1, 4, 8, 8});
        one.cond = tensor<float>({1, 4, 8, 8});
        one.uncond = tensor<float>({1, 4, 8, 8});
        one.sigma = tensor<float>({1});
        one.sigma.fill(3.f);
        one.cond_scale = c.cond_scale;
        std::copy(c.cond.data() + b * item, c.cond.data() + (b + 1) * item, one.cond.data());
        std::copy(c.uncond.data() + b * item, c.uncond.data() + (b + 1) * item, one.uncond.data());
        apg::state_type s1;
        const auto part = one.run<4>(p, s1);
        for (index_t i = 0; i < item; ++i) REQUIRE(part[i] == whole[b * item + i]);
    }
}

TEST_CASE("APG on zero inputs stays finite", "[apg]") {
    auto c = random_call({1, 4, 8, 8}, 120);
    apg::state_type st;
    SECTION("cond = uncond = 0") {
        c.cond.fill(0.f);
        c.uncond.fill(0.f);
        const auto out = c.run<4>(apg{}, st);
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == 0.f);
    }
    SECTION("cond = 0 (normalize's eps), uncond random") {
        c.cond.fill(0.f);
        CHECK(all_finite(c.run<4>(apg{.eta = 2.0, .norm_threshold = 1.0, .momentum = 0.5}, st)));
    }
    SECTION("cond = uncond (zero guidance, clipping on)") {
        c.uncond = c.cond;
        const auto out = c.run<4>(apg{}, st);
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(c.cond[i]).margin(1e-6));
    }
}

TEST_CASE("APG float and double agree", "[apg]") {
    const apg p{.eta = 0.6, .norm_threshold = 5.0, .momentum = 0.5};
    auto cf = random_call<float>({2, 4, 8, 8}, 130);
    call<double> cd{cast<double>(cf.x), cast<double>(cf.sigma), cast<double>(cf.cond), cast<double>(cf.uncond), cf.cond_scale, false};
    apg::state_type sf, sd;
    const auto of = cf.run<4>(p, sf);
    const auto od = cd.run<4>(p, sd);
    for (index_t i = 0; i < of.size(); ++i) REQUIRE(double(of[i]) == Approx(od[i]).margin(1e-5));
    CHECK(sd.running_avg_d.size() == od.size());
}

TEST_CASE("APG rejects bad parameters and inputs", "[apg][errors]") {
    auto c = random_call({2, 4, 8, 8}, 140);
    apg::state_type st;
    auto rejects = [&](const apg& p, const std::string& word) {
        try {
            c.run<4>(p, st, true);
            FAIL("no error");
        } catch (const patchbay::error& e) {
            const std::string m = e.what();
            CHECK(m.find("APG: ") == 0);
            CHECK(m.find(word) != std::string::npos);
        }
    };
    CHECK_NOTHROW(c.run<4>(apg{}, st, true));
    rejects(apg{.momentum = 1.5}, "parameter 'momentum' must be a finite value in [-5, 1], got 1.5");
    rejects(apg{.momentum = -5.5}, "momentum");
    rejects(apg{.eta = 10.5}, "eta");
    rejects(apg{.eta = std::nan("")}, "eta");
    rejects(apg{.norm_threshold = -0.1}, "norm_threshold");
    rejects(apg{.norm_threshold = 51.0}, "norm_threshold");
    CHECK_NOTHROW(patchbay::validate(apg{.eta = -10.0, .norm_threshold = 50.0, .momentum = -5.0}));
    c.cond_scale = 0.0;
    rejects(apg{}, "cond_scale");
    c.cond_scale = std::nan("");
    rejects(apg{}, "cond_scale");
    c.cond_scale = 5.0;
    c.sigma = tensor<float>({3});
    rejects(apg{}, "sigma");
    c.sigma = tensor<float>({2});
    c.sigma.fill(std::numeric_limits<float>::infinity());
    rejects(apg{}, "sigma");
    c.sigma.fill(1.f);
    c.uncond = tensor<float>({2, 4, 8, 9});
    rejects(apg{}, "uncond");
    // cond and uncond sharing memory
    tensor<float> buf({2 * 4 * 8 * 8 + 8});
    view<float, 4> cv(buf.data(), {2, 4, 8, 8}), uv(buf.data() + 8, {2, 4, 8, 8});
    const auto in = c.inputs<4>();
    CHECK_THROWS_AS(apply_pre_cfg(apg{}, st, in, cv, uv), patchbay::error);
}

} // namespace test_patches_pre_cfg_apg
