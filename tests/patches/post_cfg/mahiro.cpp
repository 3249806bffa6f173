// patches/post_cfg/mahiro.hpp: golden parity, a float64 reference written from the
// semantics, the cond_scale 1 identity, uncond == cond, the documented batch coupling
// (no batch-split invariance), stride invariance (the strided scalar path), zero inputs,
// float/double, bad inputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "npy.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "test_util.hpp"

namespace test_patches_post_cfg_mahiro {

using namespace patchbay;
using test::random_tensor;

namespace {

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

template <class T>
struct call {
    tensor<T> x, sigma, cond, uncond;
    double cond_scale = 5.0;

    template <std::size_t R>
    tensor<T> cfg() const {
        tensor<T> d(cond.shape());
        kernels::cfg_combine<T, R>(cond.template as<R>(), uncond.template as<R>(), cond_scale, d.template as<R>());
        return d;
    }
    /// Mahiro applied to the plain CFG result.
    template <std::size_t R>
    tensor<T> run() const {
        tensor<T> d = cfg<R>();
        no_state st;
        mahiro{}.post_cfg<T, R>(st, guidance_inputs<T, R>{x.template as<R>(), sigma.template as<1>(), cond_scale, false},
                                cond.template as<R>(), uncond.template as<R>(), d.template as<R>());
        return d;
    }
};

template <class T = float>
call<T> random_call(std::vector<index_t> shape, unsigned seed, double cond_scale = 5.0) {
    call<T> c;
    c.x = cast<T>(random_tensor(shape, seed, 0.f, 2.f));
    c.cond = cast<T>(random_tensor(shape, seed + 1));
    auto u = random_tensor(shape, seed + 2, 0.f, 0.5f);
    for (index_t i = 0; i < u.size(); ++i) u[i] += 0.6f * float(c.cond[i]);
    c.uncond = cast<T>(u);
    c.sigma = tensor<T>({shape[0]});
    c.sigma.fill(T(1));
    c.cond_scale = cond_scale;
    return c;
}

/// float64 reference from semantics.md section 13 (signed square roots taken separately,
/// torch's cosine_similarity with its eps, one mean over batch and pixels).
template <class T>
tensor<double> reference(const call<T>& c) {
    const index_t batch = c.cond.extent(0), ch = c.cond.extent(1);
    const index_t pix = c.cond.size() / (batch * ch);
    const double s = c.cond_scale;
    std::vector<double> cfg(static_cast<std::size_t>(c.cond.size()));
    for (index_t i = 0; i < c.cond.size(); ++i)
        cfg[static_cast<std::size_t>(i)] = double(c.uncond[i]) + (double(c.cond[i]) - double(c.uncond[i])) * s;
    auto ssqrt = [](double v) { return v == 0 ? 0.0 : std::copysign(std::sqrt(std::fabs(v)), v); };
    double sum = 0;
    for (index_t b = 0; b < batch; ++b)
        for (index_t p = 0; p < pix; ++p) {
            double dot = 0, n1 = 0, n2 = 0;
            for (index_t k = 0; k < ch; ++k) {
                const index_t i = (b * ch + k) * pix + p;
                const double nu = ssqrt(double(c.uncond[i]) * s);
                const double nm = ssqrt((double(c.cond[i]) * s + cfg[static_cast<std::size_t>(i)]) / 2);
                dot += nu * nm;
                n1 += nu * nu;
                n2 += nm * nm;
            }
            sum += dot / (std::max(std::sqrt(n1), 1e-8) * std::max(std::sqrt(n2), 1e-8));
        }
    const double w = 2 * (sum / double(batch * pix) + 1);
    tensor<double> out(c.cond.shape());
    for (index_t i = 0; i < out.size(); ++i)
        out[i] = (w * cfg[static_cast<std::size_t>(i)] + (4 - w) * double(c.cond[i]) * s) / 4;
    return out;
}

template <class T>
double max_diff(const tensor<T>& a, const tensor<double>& b) {
    double m = 0;
    for (index_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
    return m;
}

const std::string golden = PATCHBAY_GOLDEN_DIR;

} // namespace

TEST_CASE("Mahiro golden parity (small, video-5d)", "[mahiro][golden]") {
    for (const char* name : {"small", "video-5d"}) {
        const std::string dir = golden + "/Mahiro/" + name + "/";
        call<float> c;
        c.x = npy::load(dir + "in_x.npy").to_tensor<float>();
        c.sigma = npy::load(dir + "in_sigma.npy").to_tensor<float>();
        c.cond = npy::load(dir + "in_cond_denoised.npy").to_tensor<float>();
        c.uncond = npy::load(dir + "in_uncond_denoised.npy").to_tensor<float>();
        c.cond_scale = std::string(name) == "small" ? 7.0 : 5.0;
        const double atol = std::string(name) == "small" ? 1.7e-5 : 1.3e-5;
        const auto got = c.x.rank() == 4 ? c.run<4>() : c.run<5>();
        const auto want = npy::load(dir + "out_result.npy");
        REQUIRE(got.size() == want.size());
        for (index_t i = 0; i < got.size(); ++i) {
            const double e = want.values[static_cast<std::size_t>(i)];
            REQUIRE(std::fabs(got[i] - e) <= atol + 1e-5 * std::fabs(e));
        }
    }
}

TEMPLATE_TEST_CASE("Mahiro matches the float64 reference", "[mahiro]", float, double) {
    const double tol = std::is_same_v<TestType, float> ? 2e-5 : 1e-11;
    SECTION("4-D batch 2") {
        const auto c = random_call<TestType>({2, 4, 16, 16}, 10, 6.0);
        CHECK(max_diff(c.template run<4>(), reference(c)) < tol);
    }
    SECTION("5-D, odd pixel count (SIMD tails), more pixels than a tile") {
        const auto c = random_call<TestType>({1, 16, 3, 23, 21}, 20, 3.5);
        CHECK(max_diff(c.template run<5>(), reference(c)) < tol);
    }
    SECTION("odd channel count (a channel left over after the pairs), two tiles, batch 2") {
        const auto c = random_call<TestType>({2, 3, 40, 33}, 25, 7.0);
        CHECK(max_diff(c.template run<4>(), reference(c)) < tol);
    }
}

TEST_CASE("Mahiro at cond_scale 1 (zero uncond) gives (cfg + leap) / 2", "[mahiro]") {
    auto c = random_call({2, 4, 8, 8}, 30, 1.0);
    c.uncond.fill(0.f);
    const auto cfg = c.cfg<4>();
    const auto out = c.run<4>();
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx((cfg[i] + c.cond[i]) / 2).margin(1e-6));
}

TEST_CASE("Mahiro with uncond == cond returns the cfg result (similarity 1, w = 4)", "[mahiro]") {
    auto c = random_call({2, 4, 8, 8}, 40, 4.0);
    c.uncond = c.cond;
    const double w = mahiro::weight<float, 4>(c.cond.as<4>(), c.uncond.as<4>(), c.cfg<4>().as<4>(), 4.0);
    CHECK(w == Approx(4.0).epsilon(1e-6));
    const auto cfg = c.cfg<4>();
    const auto out = c.run<4>();
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(cfg[i]).margin(1e-5));
}

TEST_CASE("Mahiro couples the batch: items run alone give a different result (documented)", "[mahiro]") {
    // item 0 strongly agrees (uncond == cond), item 1 disagrees (uncond == -cond)
    auto c = random_call({2, 4, 8, 8}, 50, 5.0);
    const index_t item = 4 * 8 * 8;
    for (index_t i = 0; i < item; ++i) c.uncond[i] = c.cond[i];
    for (index_t i = item; i < 2 * item; ++i) c.uncond[i] = -c.cond[i];
    const auto whole = c.run<4>();
    CHECK(max_diff(whole, reference(c)) < 2e-5); // the joint mean is ComfyUI's semantics
    call<float> first;
    for (auto* t : {&first.x, &first.cond, &first.uncond}) *t = tensor<float>({1, 4, 8, 8});
    std::copy(c.cond.data(), c.cond.data() + item, first.cond.data());
    std::copy(c.uncond.data(), c.uncond.data() + item, first.uncond.data());
    first.sigma = tensor<float>({1});
    first.cond_scale = 5.0;
    const auto alone = first.run<4>();
    double diff = 0;
    for (index_t i = 0; i < item; ++i) diff = std::max(diff, std::fabs(double(alone[i]) - whole[i]));
    CHECK(diff > 0.1);
}

TEST_CASE("Mahiro: strided views give the contiguous result", "[mahiro]") {
    const auto c = random_call({2, 4, 8, 8}, 60, 5.0);
    const auto expected = c.run<4>();
    // channel-last storage for cond and uncond (strided scalar path), padded rows for denoised
    const std::array<index_t, 4> ext{2, 4, 8, 8}, nhwc{256, 1, 32, 4}, padded{320, 80, 10, 1};
    tensor<float> cs({512}), us({512}), ds({640});
    view<float, 4> cv(cs.data(), ext, nhwc), uv(us.data(), ext, nhwc), dv(ds.data(), ext, padded);
    kernels::copy<float, 4>(c.cond.as<4>(), cv);
    kernels::copy<float, 4>(c.uncond.as<4>(), uv);
    kernels::copy<float, 4>(c.cfg<4>().as<4>(), dv);
    no_state st;
    mahiro{}.post_cfg<float, 4>(st, guidance_inputs<float, 4>{c.x.as<4>(), c.sigma.as<1>(), 5.0, false}, cv, uv, dv);
    CHECK(test::max_abs_diff(tensor<float>::copy_of(view<const float, 4>(dv)), expected) < 2e-6);
}

TEST_CASE("Mahiro on zero inputs stays finite", "[mahiro]") {
    auto c = random_call({1, 4, 8, 8}, 70);
    SECTION("all zero") {
        c.cond.fill(0.f);
        c.uncond.fill(0.f);
        const auto out = c.run<4>();
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == 0.f);
    }
    SECTION("zero uncond, zero merge on some pixels") {
        c.uncond.fill(0.f);
        for (index_t i = 0; i < 64; ++i) c.cond[i] = 0.f;
        const auto out = c.run<4>();
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(std::isfinite(out[i]));
    }
}

TEST_CASE("Mahiro rejects bad inputs", "[mahiro][errors]") {
    auto c = random_call({2, 4, 8, 8}, 80);
    no_state st;
    auto d = c.cfg<4>();
    // through the checked entry point (the step checks these once; the member does not)
    auto rejects = [&](auto&& fn, const std::string& word) {
        try {
            fn();
            FAIL("no error");
        } catch (const patchbay::error& e) {
            const std::string m = e.what();
            CHECK(m.find("Mahiro: ") == 0);
            CHECK(m.find(word) != std::string::npos);
        }
    };
    const auto in = guidance_inputs<float, 4>{c.x.as<4>(), c.sigma.as<1>(), 5.0, false};
    tensor<float> wrong({2, 4, 8, 9});
    rejects([&] { apply_post_cfg(mahiro{}, st, in, c.cond.as<4>(), wrong.as<4>(), d.as<4>()); }, "uncond");
    rejects([&] { apply_post_cfg(mahiro{}, st, in, c.cond.as<4>(), c.uncond.as<4>(), wrong.as<4>()); }, "denoised");
    auto bad_scale = in;
    bad_scale.cond_scale = std::nan("");
    rejects([&] { apply_post_cfg(mahiro{}, st, bad_scale, c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()); }, "cond_scale");
    tensor<float> nan_sigma({2});
    nan_sigma[0] = std::numeric_limits<float>::infinity();
    auto bad_sigma = in;
    bad_sigma.sigma = nan_sigma.as<1>();
    rejects([&] { apply_post_cfg(mahiro{}, st, bad_sigma, c.cond.as<4>(), c.uncond.as<4>(), d.as<4>()); }, "sigma");
    tensor<float> e1({0, 4, 8, 8}), e2({0, 4, 8, 8}), e3({0, 4, 8, 8});
    rejects([&] { apply_post_cfg(mahiro{}, st, in, e1.as<4>(), e2.as<4>(), e3.as<4>()); }, "empty");
    // denoised partly over cond
    tensor<float> buf({2 * 256 + 4});
    view<float, 4> cv(buf.data(), {2, 4, 8, 8}), dv(buf.data() + 4, {2, 4, 8, 8});
    rejects([&] { apply_post_cfg(mahiro{}, st, in, cv, c.uncond.as<4>(), dv); }, "overlaps");
}

} // namespace test_patches_post_cfg_mahiro
