// patchbay: sums for projections (APG's norms and dot products, TCFG's Gram matrix).
//
// lane_sums<K> has reduce<K>'s contract and accuracy (float SIMD blocks of reduce_block
// vectors, blocks summed in double) but adds each finished block into per-lane double
// accumulators instead of a serial horizontal sum, so the block hand-off is a vector
// conversion and add rather than a chain of dependent scalar additions; the horizontal sum
// happens once per row. On a 1 MB tensor this makes a reduction as fast as a streaming copy.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/rows.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay::kernels {

/// Sums K terms over every element of same-shaped views (see reduce): f(a, b, ...) returns
/// std::array<X, K> for X a SIMD batch or a scalar. Returns the K sums in double.
template <std::size_t K, std::size_t R, class F, class T0, class... Tn>
std::array<double, K> lane_sums(F&& f, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    using T = std::remove_const_t<T0>;
    static_assert((std::is_same_v<std::remove_const_t<Tn>, T> && ...),
                  "lane_sums: all views must share the element type.");
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
                using B = simd::batch<T>;
                constexpr std::size_t W = B::size;
                constexpr index_t Wi = static_cast<index_t>(W);
                if (unit && len >= Wi) {
                    alignas(64) double lanes[K][W] = {};
                    alignas(64) T block[W];
                    // U independent accumulator sets hide the add latency (a single set
                    // makes the loop latency-bound, not bandwidth-bound).
                    constexpr index_t U = 4;
                    auto load_terms = [&](index_t at) {
                        std::array<B, N> x;
                        for (std::size_t v = 0; v < N; ++v) x[v] = B::load_unaligned(src[v] + off[v] + at);
                        return std::apply([&](const auto&... a) { return f(a...); }, x);
                    };
                    auto flush = [&](const std::array<B, K>& acc) {
                        for (std::size_t k = 0; k < K; ++k) {
                            acc[k].store_aligned(block);
                            for (std::size_t j = 0; j < W; ++j) lanes[k][j] += static_cast<double>(block[j]);
                        }
                    };
                    while (i + U * Wi <= len) {
                        std::array<std::array<B, K>, U> acc;
                        for (auto& a : acc) a.fill(B(T(0)));
                        const index_t stop = std::min(len - U * Wi, i + U * Wi * (reduce_block - 1));
                        for (; i <= stop; i += U * Wi)
                            for (index_t u = 0; u < U; ++u) {
                                const auto terms = load_terms(i + u * Wi);
                                for (std::size_t k = 0; k < K; ++k) acc[static_cast<std::size_t>(u)][k] += terms[k];
                            }
                        for (const auto& a : acc) flush(a);
                    }
                    {
                        std::array<B, K> acc;
                        acc.fill(B(T(0)));
                        for (; i + Wi <= len; i += Wi) {
                            const auto terms = load_terms(i);
                            for (std::size_t k = 0; k < K; ++k) acc[k] += terms[k];
                        }
                        flush(acc);
                    }
                    for (std::size_t k = 0; k < K; ++k)
                        for (std::size_t j = 0; j < W; ++j) total[k] += lanes[k][j];
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

/// Fused write-and-reduce: out[i] = f(in...[i]) for every element, and the K sums of
/// g(out[i], in...[i]) (same blocking and accuracy as lane_sums) from the same pass. `out`
/// may be exactly one of the inputs (each element is read before it is written).
template <std::size_t K, class T, std::size_t R, class F, class G, class... In>
std::array<double, K> transform_lane_sums(view<T, R> out, F&& f, G&& g, const view<In, R>&... in) {
    static_assert((std::is_same_v<std::remove_const_t<In>, T> && ...),
                  "transform_lane_sums: inputs and output must share the element type.");
    constexpr std::size_t N = 1 + sizeof...(In);
    const std::array<std::array<index_t, R>, N> strides{out.strides(), in.strides()...};
    T* const o = out.data_handle();
    const std::array<const T*, N - 1> src{in.data_handle()...};
    std::array<double, K> total{};
    detail::for_each_row<R, N>(
        out.extents(), strides,
        [&](const std::array<index_t, N>& off, index_t len, const std::array<index_t, N>& st) {
            bool unit = true;
            for (std::size_t v = 0; v < N; ++v) unit = unit && st[v] == 1;
            index_t i = 0;
            if constexpr (simd::enabled) {
                using B = simd::batch<T>;
                constexpr std::size_t W = B::size;
                constexpr index_t Wi = static_cast<index_t>(W);
                if (unit && len >= Wi) {
                    alignas(64) double lanes[K][W] = {};
                    alignas(64) T block[W];
                    auto step = [&](index_t at) {
                        std::array<B, N - 1> x;
                        for (std::size_t v = 0; v + 1 < N; ++v) x[v] = B::load_unaligned(src[v] + off[v + 1] + at);
                        const B y = std::apply([&](const auto&... a) { return B(f(a...)); }, x);
                        y.store_unaligned(o + off[0] + at);
                        return std::apply([&](const auto&... a) { return g(y, a...); }, x);
                    };
                    auto flush = [&](const std::array<B, K>& acc) {
                        for (std::size_t k = 0; k < K; ++k) {
                            acc[k].store_aligned(block);
                            for (std::size_t j = 0; j < W; ++j) lanes[k][j] += static_cast<double>(block[j]);
                        }
                    };
                    constexpr index_t U = 4;
                    while (i + U * Wi <= len) {
                        std::array<std::array<B, K>, U> acc;
                        for (auto& a : acc) a.fill(B(T(0)));
                        const index_t stop = std::min(len - U * Wi, i + U * Wi * (reduce_block - 1));
                        for (; i <= stop; i += U * Wi)
                            for (index_t u = 0; u < U; ++u) {
                                const auto terms = step(i + u * Wi);
                                for (std::size_t k = 0; k < K; ++k) acc[static_cast<std::size_t>(u)][k] += terms[k];
                            }
                        for (const auto& a : acc) flush(a);
                    }
                    std::array<B, K> acc;
                    acc.fill(B(T(0)));
                    for (; i + Wi <= len; i += Wi) {
                        const auto terms = step(i);
                        for (std::size_t k = 0; k < K; ++k) acc[k] += terms[k];
                    }
                    flush(acc);
                    for (std::size_t k = 0; k < K; ++k)
                        for (std::size_t j = 0; j < W; ++j) total[k] += lanes[k][j];
                }
            }
            for (; i < len; ++i) {
                std::array<T, N - 1> x;
                for (std::size_t v = 0; v + 1 < N; ++v) x[v] = src[v][off[v + 1] + i * st[v + 1]];
                const T y = std::apply([&](const auto&... a) { return T(f(a...)); }, x);
                o[off[0] + i * st[0]] = y;
                const auto terms = std::apply([&](const auto&... a) { return g(y, a...); }, x);
                for (std::size_t k = 0; k < K; ++k) total[k] += static_cast<double>(terms[k]);
            }
        });
    return total;
}

} // namespace patchbay::kernels
