// patchbay: the first singular triplet of a 2 x N matrix [a; b] without a general SVD.
//
// TCFG needs only the top right-singular vector v1 of two long rows. With the 2x2 Gram
// matrix G = [[a.a, a.b], [a.b, b.b]] (one pass over memory, double accumulation), the top
// eigenvector e of G is the first left-singular vector, sigma1^2 is its eigenvalue and
// v1 = (e1 a + e2 b) / sigma1. Eigen's JacobiSVD is the test oracle (tests/kernels/svd2.cpp).
//
// Degenerate inputs get a fixed, finite answer (a general SVD picks an arbitrary one):
//   - equal singular values (G = lambda I, e.g. a orthogonal to b with |a| = |b|, within the
//     rounding of the Gram sums, svd2_tie_rtol): e = (1, 0), so v1 = a / |a|;
//   - a zero row: the other row's direction (e = (0, 1) when a = 0, e = (1, 0) when b = 0);
//   - both rows zero: sigma1 = 0, e = (1, 0) and v1 = 0 (no direction to project on).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay::kernels {

/// The Gram matrix of two rows: [[aa, ab], [ab, bb]].
struct gram2 {
    double aa = 0, ab = 0, bb = 0;
};

/// First singular triplet of [a; b] (and the second singular value).
struct svd2_top {
    double sigma1 = 0; ///< largest singular value
    double sigma2 = 0; ///< smallest singular value (>= 0)
    double e1 = 1;     ///< unit left-singular vector (e1, e2) of sigma1, with e1 >= 0
    double e2 = 0;
};

/// Relative eigenvalue gap, (lambda1 - lambda2) / (lambda1 + lambda2), below which the
/// singular values count as equal: the rounding of a Gram matrix summed from elements of type
/// T (float products summed in blocks, see reduce.hpp) cannot resolve a smaller gap, so the
/// documented choice e = (1, 0) is taken instead of a direction set by rounding noise.
template <class T>
inline constexpr double svd2_tie_rtol = std::is_same_v<T, float> ? 4e-6 : 1e-13;

/// Top eigenpair of a 2x2 symmetric positive semi-definite Gram matrix, in closed form.
/// Written with half-angle identities so neither component loses precision to cancellation.
/// A relative gap at or below `tie_rtol` is a tie (e = (1, 0)).
inline svd2_top svd2_from_gram(const gram2& g, double tie_rtol = 0.0) noexcept {
    svd2_top t;
    const double d = g.aa - g.bb;
    const double r = std::hypot(d, 2.0 * g.ab); // lambda1 - lambda2
    const double mean = 0.5 * (g.aa + g.bb);
    const double lambda1 = std::max(mean + 0.5 * r, 0.0);
    // lambda2 = det / lambda1 avoids the cancellation of mean - r/2 when lambda2 << lambda1
    const double det = g.aa * g.bb - g.ab * g.ab;
    const double lambda2 = lambda1 > 0 ? std::clamp(det / lambda1, 0.0, lambda1) : 0.0;
    t.sigma1 = std::sqrt(lambda1);
    t.sigma2 = std::sqrt(lambda2);
    if (!(r > tie_rtol * (g.aa + g.bb)) || !(r > 0))
        return t; // G = lambda I (or zero): documented choice e = (1, 0)
    // e = (cos th, sin th) with tan(2 th) = 2 ab / d; the larger component first.
    if (d >= 0) {
        t.e1 = std::sqrt(0.5 * (r + d) / r);
        t.e2 = g.ab / (r * t.e1);
    } else {
        const double e2 = std::sqrt(0.5 * (r - d) / r);
        t.e2 = g.ab < 0 ? -e2 : e2;
        t.e1 = g.ab / (r * t.e2); // >= 0 by the choice of the sign of e2
    }
    return t;
}

/// Gram matrix of the two rows that `rows(elements...)` forms from each element position of
/// the given same-shaped views (it returns std::array{a_i, b_i}, for SIMD batches and
/// scalars alike). One pass over memory; sums in double (float blocks, see reduce.hpp).
template <std::size_t R, class F, class T0, class... Tn>
gram2 gram2_of(F&& rows, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    const auto s = reduce<3>(
        [&](const auto&... e) {
            const auto ab = rows(e...);
            return std::array{ab[0] * ab[0], ab[0] * ab[1], ab[1] * ab[1]};
        },
        v0, vn...);
    return gram2{s[0], s[1], s[2]};
}

/// Gram matrix of two rows stored as same-shaped views.
template <class T, std::size_t R>
gram2 gram2_rows(std::type_identity_t<view<const T, R>> a, std::type_identity_t<view<const T, R>> b) {
    return gram2_of<R>([](auto x, auto y) { return std::array{x, y}; }, a, b);
}

/// First singular triplet of the 2 x N matrix whose rows are the views a and b.
template <class T, std::size_t R>
svd2_top svd2(std::type_identity_t<view<const T, R>> a, std::type_identity_t<view<const T, R>> b) {
    return svd2_from_gram(gram2_rows<T, R>(a, b), svd2_tie_rtol<T>);
}

/// Writes the first right-singular vector v1 = (e1 a + e2 b) / sigma1 (same shape as a and
/// b); zero when both rows are zero. Its sign follows e1 >= 0. Returns the triplet.
template <class T, std::size_t R>
svd2_top first_right_singular_vector(std::type_identity_t<view<const T, R>> a,
                                     std::type_identity_t<view<const T, R>> b, view<T, R> v1) {
    require_same_shape(a, b, "svd2", "a", "b");
    require_same_shape(a, v1, "svd2", "a", "v1");
    const svd2_top t = svd2<T, R>(a, b);
    const double inv = t.sigma1 > 0 ? 1.0 / t.sigma1 : 0.0;
    const T ca = static_cast<T>(t.e1 * inv), cb = static_cast<T>(t.e2 * inv);
    transform(v1, [ca, cb](auto x, auto y) { return x * ca + y * cb; }, a, b);
    return t;
}

} // namespace patchbay::kernels
