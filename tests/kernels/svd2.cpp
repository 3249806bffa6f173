// kernels/svd2.hpp: the closed-form first singular triplet of a 2 x N matrix, checked against
// Eigen's JacobiSVD (double) on random, near-degenerate and degenerate inputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

// Eigen's AVX-512 reductions reach g++ 12's _mm512_extractf64x4_pd, whose self-initialised
// "undefined" operand -Wmaybe-uninitialized reports inside the compiler's own header (GCC PR
// 105593); the warning is silenced for Eigen's code only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/SVD>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "patchbay/kernels/svd2.hpp"
#include "test_util.hpp"

namespace test_kernels_svd2 {

using namespace patchbay;

namespace {

struct oracle {
    double sigma1, sigma2;
    std::vector<double> v1;
};

template <class T>
oracle eigen_svd(const std::vector<T>& a, const std::vector<T>& b) {
    const auto n = static_cast<Eigen::Index>(a.size());
    Eigen::MatrixXd m(2, n);
    for (Eigen::Index i = 0; i < n; ++i) {
        m(0, i) = static_cast<double>(a[static_cast<std::size_t>(i)]);
        m(1, i) = static_cast<double>(b[static_cast<std::size_t>(i)]);
    }
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinV);
    oracle o{svd.singularValues()(0), n > 1 ? svd.singularValues()(1) : 0.0, {}};
    for (Eigen::Index i = 0; i < n; ++i) o.v1.push_back(svd.matrixV()(i, 0));
    return o;
}

/// |v1 - sign * oracle| for the sign that matches (singular vectors are defined up to sign).
template <class T>
double v1_error(const std::vector<T>& v1, const std::vector<double>& ref) {
    double plus = 0, minus = 0;
    for (std::size_t i = 0; i < v1.size(); ++i) {
        plus = std::max(plus, std::fabs(static_cast<double>(v1[i]) - ref[i]));
        minus = std::max(minus, std::fabs(static_cast<double>(v1[i]) + ref[i]));
    }
    return std::min(plus, minus);
}

template <class T>
kernels::svd2_top run(const std::vector<T>& a, const std::vector<T>& b, std::vector<T>& v1) {
    v1.assign(a.size(), T(0));
    const auto n = static_cast<index_t>(a.size());
    return kernels::first_right_singular_vector<T, 1>(view<const T, 1>(a.data(), {n}),
                                                      view<const T, 1>(b.data(), {n}),
                                                      view<T, 1>(v1.data(), {n}));
}

template <class T>
std::vector<T> normal(std::size_t n, unsigned seed, double scale = 1.0) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> d(0.0, scale);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(d(rng));
    return v;
}

} // namespace

TEMPLATE_TEST_CASE("svd2 matches Eigen JacobiSVD on random 2xN matrices", "[svd2]", float, double) {
    const double tol = std::is_same_v<TestType, float> ? 2e-5 : 1e-12;
    for (std::size_t n : {2u, 3u, 7u, 64u, 1000u, 16384u}) {
        for (unsigned seed = 1; seed <= 4; ++seed) {
            const auto a = normal<TestType>(n, seed);
            // b correlated with a, as cond/uncond scores are
            auto b = normal<TestType>(n, seed + 100, 0.5);
            for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<TestType>(b[i] + 0.8 * a[i]);
            std::vector<TestType> v1;
            const auto t = run(a, b, v1);
            const auto o = eigen_svd(a, b);
            INFO("n = " << n << " seed = " << seed);
            CHECK(t.sigma1 == Approx(o.sigma1).epsilon(tol));
            CHECK(t.sigma2 == Approx(o.sigma2).epsilon(std::max(tol, 1e-6 * o.sigma1 / o.sigma2 * tol)));
            CHECK(v1_error(v1, o.v1) < tol * 10 / std::sqrt(double(n)) + tol * 0.1);
            // the left vector is unit length with e1 >= 0
            CHECK(t.e1 * t.e1 + t.e2 * t.e2 == Approx(1.0).epsilon(1e-12));
            CHECK(t.e1 >= 0);
        }
    }
}

TEMPLATE_TEST_CASE("svd2 on near-degenerate matrices", "[svd2]", float, double) {
    const bool is_float = std::is_same_v<TestType, float>;
    const std::size_t n = 4096;
    SECTION("nearly parallel rows (sigma2 << sigma1)") {
        const auto a = normal<TestType>(n, 7);
        auto b = normal<TestType>(n, 8, 1e-3);
        for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<TestType>(b[i] + 1.5 * a[i]);
        std::vector<TestType> v1;
        const auto t = run(a, b, v1);
        const auto o = eigen_svd(a, b);
        CHECK(t.sigma1 == Approx(o.sigma1).epsilon(is_float ? 1e-5 : 1e-12));
        // sigma2 from the Gram matrix: lambda2 carries an error ~ eps * lambda1, so sigma2's
        // error is ~ eps * sigma1^2 / sigma2 (TCFG needs only v1, which stays accurate)
        CHECK(std::fabs(t.sigma2 - o.sigma2) < (is_float ? 1e-6 : 1e-13) * o.sigma1 * o.sigma1 / o.sigma2);
        CHECK(v1_error(v1, o.v1) < (is_float ? 1e-6 : 1e-13));
    }
    SECTION("nearly equal singular values (small gap)") {
        // orthogonal rows with norms differing by 1 part in 100: v1 is a / |a| up to ~eps / gap
        std::vector<TestType> a(n, TestType(0)), b(n, TestType(0));
        auto r = normal<TestType>(n, 9);
        for (std::size_t i = 0; i < n / 2; ++i) a[i] = r[i];
        for (std::size_t i = n / 2; i < n; ++i) b[i] = static_cast<TestType>(r[i] * 0.99);
        std::vector<TestType> v1;
        run(a, b, v1);
        const auto o = eigen_svd(a, b);
        CHECK(v1_error(v1, o.v1) < (is_float ? 1e-4 : 1e-12));
    }
}

TEMPLATE_TEST_CASE("svd2 degenerate inputs give the documented finite result", "[svd2]", float, double) {
    using T = TestType;
    const std::size_t n = 100;
    auto a = normal<T>(n, 3);
    std::vector<T> v1;
    SECTION("equal singular values: v1 = a / |a|") {
        // b = a rotated into the orthogonal complement with the same norm: swap halves
        std::vector<T> aa(2 * n, T(0)), bb(2 * n, T(0));
        for (std::size_t i = 0; i < n; ++i) aa[i] = a[i], bb[n + i] = a[i];
        const auto t = run(aa, bb, v1);
        CHECK(t.sigma1 == Approx(t.sigma2));
        CHECK(t.e1 == 1.0);
        CHECK(t.e2 == 0.0);
        const double norm = t.sigma1;
        for (std::size_t i = 0; i < 2 * n; ++i) CHECK(static_cast<double>(v1[i]) == Approx(aa[i] / norm).margin(1e-6));
    }
    SECTION("zero first row: v1 = b / |b|") {
        const std::vector<T> zero(n, T(0));
        const auto t = run(zero, a, v1);
        CHECK(t.e1 == 0.0);
        CHECK(t.e2 == 1.0);
        CHECK(t.sigma2 == 0.0);
        for (std::size_t i = 0; i < n; ++i) CHECK(static_cast<double>(v1[i]) == Approx(a[i] / t.sigma1).margin(1e-6));
    }
    SECTION("zero second row: v1 = a / |a|") {
        const std::vector<T> zero(n, T(0));
        const auto t = run(a, zero, v1);
        CHECK(t.e1 == 1.0);
        CHECK(t.e2 == 0.0);
        for (std::size_t i = 0; i < n; ++i) CHECK(static_cast<double>(v1[i]) == Approx(a[i] / t.sigma1).margin(1e-6));
    }
    SECTION("both rows zero: sigma 0 and v1 = 0") {
        const std::vector<T> zero(n, T(0));
        const auto t = run(zero, zero, v1);
        CHECK(t.sigma1 == 0.0);
        CHECK(t.sigma2 == 0.0);
        for (auto v : v1) CHECK(v == T(0));
    }
    SECTION("identical rows (rank one): v1 = a / |a|, sigma2 = 0") {
        const auto t = run(a, a, v1);
        CHECK(t.sigma2 == Approx(0.0).margin(1e-3 * t.sigma1));
        CHECK(t.e1 == Approx(std::sqrt(0.5)));
        const double norm = t.sigma1 / std::sqrt(2.0);
        for (std::size_t i = 0; i < n; ++i) CHECK(static_cast<double>(v1[i]) == Approx(a[i] / norm).margin(1e-6));
    }
    for (auto v : v1) CHECK(std::isfinite(v));
}

TEST_CASE("svd2_from_gram closed form on diagonal and rotated Gram matrices", "[svd2]") {
    auto t = kernels::svd2_from_gram({4.0, 0.0, 1.0});
    CHECK(t.sigma1 == Approx(2.0));
    CHECK(t.sigma2 == Approx(1.0));
    CHECK(t.e1 == 1.0);
    CHECK(t.e2 == 0.0);
    t = kernels::svd2_from_gram({1.0, 0.0, 4.0});
    CHECK(t.e1 == 0.0);
    CHECK(t.e2 == 1.0);
    // G = R diag(9, 1) R^T with R a rotation by 30 degrees
    const double th = 0.5235987755982988, c = std::cos(th), s = std::sin(th);
    t = kernels::svd2_from_gram({9 * c * c + s * s, (9 - 1) * c * s, 9 * s * s + c * c});
    CHECK(t.sigma1 == Approx(3.0));
    CHECK(t.sigma2 == Approx(1.0));
    CHECK(t.e1 == Approx(c));
    CHECK(t.e2 == Approx(s));
    // negative correlation: e2 < 0 while e1 >= 0
    t = kernels::svd2_from_gram({1.0, -0.9, 2.0});
    CHECK(t.e1 > 0);
    CHECK(t.e2 < 0);
}

TEST_CASE("svd2 on strided rows equals the contiguous rows", "[svd2]") {
    const index_t n = 257;
    auto a = normal<float>(static_cast<std::size_t>(n), 11), b = normal<float>(static_cast<std::size_t>(n), 12);
    std::vector<float> inter(static_cast<std::size_t>(2 * n));
    for (index_t i = 0; i < n; ++i) inter[static_cast<std::size_t>(2 * i)] = a[static_cast<std::size_t>(i)],
                                    inter[static_cast<std::size_t>(2 * i + 1)] = b[static_cast<std::size_t>(i)];
    const view<const float, 1> as(inter.data(), {n}, {2}), bs(inter.data() + 1, {n}, {2});
    const auto strided = kernels::svd2<float, 1>(as, bs);
    const auto contiguous = kernels::svd2<float, 1>(view<const float, 1>(a.data(), {n}), view<const float, 1>(b.data(), {n}));
    CHECK(strided.sigma1 == Approx(contiguous.sigma1).epsilon(1e-6));
    CHECK(strided.e1 == Approx(contiguous.e1).epsilon(1e-6));
    CHECK(strided.e2 == Approx(contiguous.e2).epsilon(1e-6));
}

} // namespace test_kernels_svd2
