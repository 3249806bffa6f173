// patches/pre_cfg/tcfg.hpp: golden parity, an Eigen-SVD reference, the uncond == cond
// identity, the cond_scale 1 skip, stride and batch-split invariance, zero inputs,
// float/double, bad inputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/SVD>

#include "npy.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"
#include "test_util.hpp"

namespace test_patches_pre_cfg_tcfg {

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
    bool uncond_is_none = false;

    template <std::size_t R>
    guidance_inputs<T, R> inputs() const {
        return guidance_inputs<T, R>{x.template as<R>(), sigma.template as<1>(), cond_scale, uncond_is_none};
    }
    /// Returns the rewritten uncond (cond is checked unchanged). `checked`: through
    /// apply_pre_cfg, which validates the inputs before the member runs.
    template <std::size_t R>
    tensor<T> run(bool checked = false) const {
        tensor<T> c = cond, u = uncond;
        no_state st;
        if (checked) apply_pre_cfg(tcfg{}, st, inputs<R>(), c.template as<R>(), u.template as<R>());
        else tcfg{}.pre_cfg<T, R>(st, inputs<R>(), c.template as<R>(), u.template as<R>());
        REQUIRE(test::bit_equal(c, cond));
        return u;
    }
};

template <class T = float>
call<T> random_call(std::vector<index_t> shape, unsigned seed) {
    call<T> c;
    // scores x - cond and x - uncond correlated, as a model's are
    const auto x = random_tensor(shape, seed, 0.f, 2.f);
    auto cond = random_tensor(shape, seed + 1);
    auto noise = random_tensor(shape, seed + 2, 0.f, 0.3f);
    tensor<float> uncond(shape);
    for (index_t i = 0; i < x.size(); ++i) uncond[i] = 0.7f * cond[i] + noise[i];
    c.x = cast<T>(x);
    c.cond = cast<T>(cond);
    c.uncond = cast<T>(uncond);
    c.sigma = tensor<T>({shape[0]});
    c.sigma.fill(T(2));
    return c;
}

/// Reference: per batch item, v1 from Eigen's JacobiSVD (double) of [x - uncond; x - cond],
/// uncond' = x - ((x - uncond) . v1) v1.
template <class T>
tensor<double> reference(const call<T>& c) {
    const index_t batch = c.cond.extent(0), n = c.cond.size() / batch;
    tensor<double> out(c.cond.shape());
    for (index_t b = 0; b < batch; ++b) {
        Eigen::MatrixXd m(2, n);
        for (index_t i = 0; i < n; ++i) {
            const index_t k = b * n + i;
            m(0, i) = double(c.x[k]) - double(c.uncond[k]);
            m(1, i) = double(c.x[k]) - double(c.cond[k]);
        }
        Eigen::JacobiSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinV);
        const Eigen::VectorXd v1 = svd.matrixV().col(0);
        const double proj = m.row(0).dot(v1);
        for (index_t i = 0; i < n; ++i) out[b * n + i] = double(c.x[b * n + i]) - proj * v1(i);
    }
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

TEST_CASE("TCFG golden parity (small, video16-5d)", "[tcfg][golden]") {
    for (const char* name : {"small", "video16-5d"}) {
        const std::string dir = golden + "/TCFG/" + name + "/";
        call<float> c;
        c.x = npy::load(dir + "in_x.npy").to_tensor<float>();
        c.sigma = npy::load(dir + "in_sigma.npy").to_tensor<float>();
        c.cond = npy::load(dir + "in_cond_denoised.npy").to_tensor<float>();
        c.uncond = npy::load(dir + "in_uncond_denoised.npy").to_tensor<float>();
        const auto want = npy::load(dir + "out_uncond_out.npy");
        const double atol = std::string(name) == "small" ? 0.0039 : 0.0061;
        c.cond_scale = std::string(name) == "small" ? 7.0 : 4.5;
        const auto got = c.x.rank() == 4 ? c.run<4>() : c.run<5>();
        REQUIRE(got.size() == want.size());
        for (index_t i = 0; i < got.size(); ++i) {
            const double e = want.values[static_cast<std::size_t>(i)];
            REQUIRE(std::fabs(got[i] - e) <= atol + 1e-5 * std::fabs(e));
        }
    }
}

TEMPLATE_TEST_CASE("TCFG matches the Eigen SVD reference", "[tcfg]", float, double) {
    const double tol = std::is_same_v<TestType, float> ? 2e-5 : 1e-10;
    SECTION("4-D, batch 3") {
        const auto c = random_call<TestType>({3, 4, 16, 16}, 10);
        CHECK(max_diff(c.template run<4>(), reference(c)) < tol);
    }
    SECTION("5-D: one projection per batch item over all of (C,T,H,W)") {
        const auto c = random_call<TestType>({2, 4, 3, 8, 8}, 20);
        CHECK(max_diff(c.template run<5>(), reference(c)) < tol);
    }
    SECTION("odd sizes (SIMD tails)") {
        const auto c = random_call<TestType>({2, 3, 9, 13}, 30);
        CHECK(max_diff(c.template run<4>(), reference(c)) < tol);
    }
}

TEST_CASE("TCFG with uncond == cond leaves uncond unchanged", "[tcfg]") {
    auto c = random_call({2, 4, 8, 8}, 40);
    c.uncond = c.cond;
    const auto out = c.run<4>();
    // rank one: v1 is along x - uncond, whose projection is itself
    for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(c.uncond[i]).margin(2e-6));
}

TEST_CASE("TCFG skips when the uncond pass was dropped (cond_scale 1)", "[tcfg]") {
    auto c = random_call({2, 4, 8, 8}, 50);
    c.cond_scale = 1.0;
    c.uncond_is_none = true;
    c.uncond.fill(0.f);
    CHECK(test::bit_equal(c.run<4>(), c.uncond));
}

TEST_CASE("TCFG: strided views give the contiguous result", "[tcfg]") {
    const auto c = random_call({2, 4, 8, 8}, 60);
    const auto expected = c.run<4>();
    // x and cond channel-last in memory (N,H,W,C storage), uncond with padded rows
    tensor<float> xs({2 * 8 * 8 * 4}), cs({2 * 8 * 8 * 4}), us({2 * 4 * 8 * 10});
    const std::array<index_t, 4> ext{2, 4, 8, 8}, nhwc{256, 1, 32, 4}, padded{320, 80, 10, 1};
    view<float, 4> xv(xs.data(), ext, nhwc), cv(cs.data(), ext, nhwc), uv(us.data(), ext, padded);
    kernels::copy<float, 4>(c.x.as<4>(), xv);
    kernels::copy<float, 4>(c.cond.as<4>(), cv);
    kernels::copy<float, 4>(c.uncond.as<4>(), uv);
    no_state st;
    tcfg{}.pre_cfg<float, 4>(st, guidance_inputs<float, 4>{xv, c.sigma.as<1>(), 5.0, false}, cv, uv);
    CHECK(test::max_abs_diff(tensor<float>::copy_of(view<const float, 4>(uv)), expected) < 2e-6);
}

TEST_CASE("TCFG: a batch gives the same result as its items one at a time", "[tcfg]") {
    const auto c = random_call({3, 4, 8, 8}, 70);
    const auto whole = c.run<4>();
    const index_t item = 4 * 8 * 8;
    for (index_t b = 0; b < 3; ++b) {
        call<float> one;
        for (auto* t : {&one.x, &one.cond, &one.uncond}) *t = tensor<float>({1, 4, 8, 8});
        std::copy(c.x.data() + b * item, c.x.data() + (b + 1) * item, one.x.data());
        std::copy(c.cond.data() + b * item, c.cond.data() + (b + 1) * item, one.cond.data());
        std::copy(c.uncond.data() + b * item, c.uncond.data() + (b + 1) * item, one.uncond.data());
        one.sigma = tensor<float>({1});
        const auto part = one.run<4>();
        for (index_t i = 0; i < item; ++i) REQUIRE(part[i] == whole[b * item + i]);
    }
}

TEST_CASE("TCFG on zero and degenerate inputs stays finite", "[tcfg]") {
    auto c = random_call({1, 4, 8, 8}, 80);
    SECTION("all zero") {
        c.x.fill(0.f);
        c.cond.fill(0.f);
        c.uncond.fill(0.f);
        const auto out = c.run<4>();
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == 0.f);
    }
    SECTION("x == cond == uncond: nothing to damp") {
        c.cond = c.x;
        c.uncond = c.x;
        CHECK(test::bit_equal(c.run<4>(), c.x));
    }
    SECTION("x == uncond (zero uncond score): uncond unchanged") {
        c.uncond = c.x;
        const auto out = c.run<4>();
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(c.x[i]).margin(1e-6));
    }
    SECTION("equal singular values (orthogonal scores of equal norm): documented v1 = a/|a|") {
        c.x.fill(0.f);
        c.cond.fill(0.f);
        c.uncond.fill(0.f);
        for (index_t i = 0; i < 128; ++i) c.uncond[i] = -1.f;       // a = x - uncond on the first half
        for (index_t i = 128; i < 256; ++i) c.cond[i] = -1.f;       // b on the second half
        const auto out = c.run<4>();
        // a projects onto itself: uncond unchanged
        for (index_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(c.uncond[i]).margin(1e-6));
    }
}

TEST_CASE("TCFG rejects bad inputs", "[tcfg][errors]") {
    auto c = random_call({2, 4, 8, 8}, 90);
    CHECK_NOTHROW(c.run<4>(true));
    auto rejects = [&](const std::string& word) {
        try {
            c.run<4>(true);
            FAIL("no error");
        } catch (const patchbay::error& e) {
            const std::string m = e.what();
            CHECK(m.find("TCFG: ") == 0);
            CHECK(m.find(word) != std::string::npos);
        }
    };
    {
        auto saved = c.x;
        c.x = tensor<float>({2, 4, 8, 7});
        rejects("x");
        c.x = saved;
    }
    {
        auto saved = c.uncond;
        c.uncond = tensor<float>({1, 4, 8, 8});
        rejects("batch");
        c.uncond = saved;
    }
    c.sigma = tensor<float>({1});
    rejects("sigma");
    c.sigma = tensor<float>({2});
    c.sigma[1] = std::numeric_limits<float>::quiet_NaN();
    rejects("sigma");
    c.sigma[1] = 1.f;
    c.cond_scale = std::numeric_limits<double>::infinity();
    rejects("cond_scale");
    c.cond_scale = 5.0;
    tensor<float> empty_c({0, 4, 8, 8}), empty_u({0, 4, 8, 8});
    no_state st;
    const auto in = c.inputs<4>();
    CHECK_THROWS_AS(apply_pre_cfg(tcfg{}, st, in, empty_c.as<4>(), empty_u.as<4>()), patchbay::error);
    // uncond written over x
    tensor<float> cc = c.cond;
    CHECK_THROWS_AS(apply_pre_cfg(tcfg{}, st, in, cc.as<4>(), view<float, 4>(c.x.data(), {2, 4, 8, 8})),
                    patchbay::error);
}

} // namespace test_patches_pre_cfg_tcfg
