// patchbay: reductions over a whole sample or over the channels of each pixel.
//
// Terms are summed in float SIMD lanes over short blocks and the blocks in double, so long
// tensors keep float32 accuracy (the relative error does not grow with the length).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/rows.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::kernels {

/// Elements per SIMD lane summed in the input precision before a block goes to double.
inline constexpr index_t reduce_block = 16;

/// Sums K terms over every element of same-shaped views: f(a, b, ...) returns
/// std::array<X, K> where X is a batch or a scalar. Returns the K sums in double.
template <std::size_t K, std::size_t R, class F, class T0, class... Tn>
std::array<double, K> reduce(F&& f, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    using T = std::remove_const_t<T0>;
    static_assert((std::is_same_v<std::remove_const_t<Tn>, T> && ...),
                  "reduce: all views must share the element type.");
    constexpr std::size_t N = 1 + sizeof...(Tn);
    const std::array<std::array<index_t, R>, N> strides{v0.strides(), vn.strides()...};
    const std::array<const T*, N> src{v0.data_handle(), vn.data_handle()...};
    std::array<double, K> total{};
    detail::for_each_row<R, N>(
        v0.extents(), strides,
        [&](const std::array<index_t, N>& off, index_t len, const std::array<index_t, N>& st) {
            bool unit = true;
            for (std::size_t v = 0; v < N; ++v) unit = unit && st[v] == 1;
            index_t i = 0;
            if constexpr (simd::enabled) {
                if (unit) {
                    using B = simd::batch<T>;
                    constexpr index_t W = static_cast<index_t>(B::size);
                    while (i + W <= len) {
                        std::array<B, K> acc;
                        acc.fill(B(T(0)));
                        const index_t stop = std::min(len - W, i + W * (reduce_block - 1));
                        for (; i <= stop; i += W) {
                            std::array<B, N> x;
                            for (std::size_t v = 0; v < N; ++v)
                                x[v] = B::load_unaligned(src[v] + off[v] + i);
                            const auto terms = std::apply([&](const auto&... a) { return f(a...); }, x);
                            for (std::size_t k = 0; k < K; ++k) acc[k] += terms[k];
                        }
                        for (std::size_t k = 0; k < K; ++k) total[k] += simd::hsum(acc[k]);
                    }
                }
            }
            for (; i < len; ++i) {
                std::array<T, N> x;
                for (std::size_t v = 0; v < N; ++v) x[v] = src[v][off[v] + i * st[v]];
                const auto terms = std::apply([&](const auto&... a) { return f(a...); }, x);
                for (std::size_t k = 0; k < K; ++k) total[k] += static_cast<double>(terms[k]);
            }
        });
    return total;
}

// ---- whole-sample reductions (one value per batch item over dims 1..R-1) ----------------

/// Sum of each batch item.
template <class T, std::size_t R, class Out>
void sample_sum(const view<T, R>& x, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b)
        out[b] = reduce<1>([](auto a) { return std::array{a}; }, x.batch_slice(b, 1))[0];
}

/// Dot product of two same-shaped tensors per batch item.
template <class A, class B, std::size_t R, class Out>
void sample_dot(const view<A, R>& a, const view<B, R>& b, Out&& out) {
    for (index_t i = 0; i < a.extent(0); ++i)
        out[i] = reduce<1>([](auto x, auto y) { return std::array{x * y}; }, a.batch_slice(i, 1),
                           b.batch_slice(i, 1))[0];
}

/// Sum of squares per batch item.
template <class T, std::size_t R, class Out>
void sample_sum_sq(const view<T, R>& x, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b)
        out[b] = reduce<1>([](auto a) { return std::array{a * a}; }, x.batch_slice(b, 1))[0];
}

/// L2 norm per batch item.
template <class T, std::size_t R, class Out>
void sample_l2_norm(const view<T, R>& x, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b)
        out[b] = std::sqrt(
            reduce<1>([](auto a) { return std::array{a * a}; }, x.batch_slice(b, 1))[0]);
}

/// Mean and standard deviation from a sum and a sum of squares about a shift. `correction`
/// is 0 (population) or 1 (Bessel, torch.std's default). With one element and correction 1
/// torch gives NaN; the caller decides what to do with n <= correction (here: std = 0).
struct moments {
    double mean = 0, std = 0;
};

/// Mean and std (with correction) of each batch item. Two passes for accuracy: the mean
/// first, then squares about it (torch does the same).
template <class T, std::size_t R, class Out>
void sample_mean_std(const view<T, R>& x, int correction, Out&& out) {
    for (index_t b = 0; b < x.extent(0); ++b) {
        const auto xb = x.batch_slice(b, 1);
        const double n = static_cast<double>(xb.size());
        const double mean = reduce<1>([](auto a) { return std::array{a}; }, xb)[0] / n;
        const auto m = static_cast<std::remove_const_t<T>>(mean);
        const double ss = reduce<1>(
            [m](auto a) {
                auto d = a - m;
                return std::array{d * d};
            },
            xb)[0];
        const double denom = n - correction;
        out[b] = moments{mean, denom > 0 ? std::sqrt(ss / denom) : 0.0};
    }
}

// ---- per-pixel reductions over channels (dim 1), one value per (batch, pixel) -----------

/// Per-pixel accumulation over channels: for each batch item b and channel c,
/// acc[b*P + p] += term(v0[b,c,p], ...) where p runs over the flattened dims 2..R-1 in C order.
/// `acc` must hold N*P doubles (P = pixels per item) and is overwritten. Channels are the
/// outer loop so the pixel loop walks memory contiguously (and vectorises) for contiguous
/// inputs; strided inputs take the same loop with their strides.
template <std::size_t R, class F, class T0, class... Tn>
void channel_reduce(F&& term, double* acc, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    static_assert(R >= 3, "channel_reduce needs (N, C, spatial...) views.");
    constexpr std::size_t N = 1 + sizeof...(Tn);
    constexpr std::size_t S = R - 2; // spatial rank
    using T = std::remove_const_t<T0>;
    const index_t batch = v0.extent(0), channels = v0.extent(1);
    index_t pixels = 1;
    std::array<index_t, S> ext{};
    for (std::size_t r = 2; r < R; ++r) pixels *= (ext[r - 2] = v0.extent(r));
    std::array<std::array<index_t, S>, N> str{};
    {
        const std::array<const std::array<index_t, R>*, N> all{&v0.strides(), &vn.strides()...};
        for (std::size_t v = 0; v < N; ++v)
            for (std::size_t r = 2; r < R; ++r) str[v][r - 2] = (*all[v])[r];
    }
    const std::array<const T*, N> base{v0.data_handle(), vn.data_handle()...};
    const std::array<std::array<index_t, 2>, N> bc{{{v0.stride(0), v0.stride(1)}, {vn.stride(0), vn.stride(1)}...}};
    for (index_t i = 0; i < batch * pixels; ++i) acc[i] = 0.0;
    for (index_t b = 0; b < batch; ++b)
        for (index_t c = 0; c < channels; ++c) {
            double* a = acc + b * pixels;
            detail::for_each_row<S, N>(ext, str, [&](const std::array<index_t, N>& off, index_t len,
                                                     const std::array<index_t, N>& st) {
                std::array<const T*, N> p{};
                for (std::size_t v = 0; v < N; ++v) p[v] = base[v] + b * bc[v][0] + c * bc[v][1] + off[v];
                auto apply = [&](index_t k) {
                    return std::apply([&](auto... ptr) { return static_cast<double>(term(ptr[k]...)); }, p);
                };
                bool unit = true;
                for (std::size_t v = 0; v < N; ++v) unit = unit && st[v] == 1;
                if (unit) {
                    for (index_t k = 0; k < len; ++k) a[k] += apply(k);
                } else {
                    for (index_t k = 0; k < len; ++k) {
                        std::array<const T*, N> q = p;
                        for (std::size_t v = 0; v < N; ++v) q[v] = p[v] + k * st[v];
                        a[k] += std::apply([&](auto... ptr) { return static_cast<double>(term(*ptr...)); }, q);
                    }
                }
                a += len;
            });
        }
}

} // namespace patchbay::kernels
