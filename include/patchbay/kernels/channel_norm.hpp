// patchbay: fused per-pixel reductions over channels (dim 1) and the map that uses them.
//
// CFGNorm-style patches need, for every pixel, a few sums over the channels (squared norms)
// and then rewrite every channel of that pixel with a factor derived from those sums. Doing
// it tile by tile (a run of pixels, all channels) keeps the tile in cache between the
// reduction and the map, so memory is effectively read once and written once. Channels are
// the outer loop of each tile so the pixel loop is contiguous (SIMD) for packed layouts.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay::kernels {

/// Number of pixels per batch item: the product of dims 2..R-1.
template <class T, std::size_t R>
index_t pixel_count(const view<T, R>& v) noexcept {
    index_t n = 1;
    for (std::size_t r = 2; r < R; ++r) n *= v.extent(r);
    return n;
}

/// True when dims 2..R-1 are packed in C order with unit inner stride, so the pixels of one
/// (batch, channel) are one contiguous run.
template <class T, std::size_t R>
bool pixels_packed(const view<T, R>& v) noexcept {
    index_t expect = 1;
    for (std::size_t r = R; r-- > 2;) {
        if (v.extent(r) != 1 && v.stride(r) != expect) return false;
        expect *= v.extent(r);
    }
    return true;
}

/// Element offset of flat pixel p (C order over dims 2..R-1) inside one (batch, channel).
template <class T, std::size_t R>
index_t pixel_offset(const view<T, R>& v, index_t p) noexcept {
    index_t off = 0;
    for (std::size_t r = R; r-- > 2;) {
        const index_t e = v.extent(r);
        off += (p % e) * v.stride(r);
        p /= e;
    }
    return off;
}

/// Pixels per tile on the strided path, and the largest tile of the packed path.
inline constexpr index_t channel_tile = 512;
inline constexpr index_t channel_tile_max = 2048;
/// Bytes of input a packed tile may span: it must stay in L2 between the reduction and the
/// map, while long per-channel runs let the hardware prefetcher stream each row.
inline constexpr index_t channel_tile_bytes = 192 * 1024;
/// Channels summed in registers before the partial sums are added to the tile's sums; the
/// two-level sum keeps the rounding error small for many channels.
inline constexpr index_t channel_block = 16;

/// For every batch item b and pixel p:
///   S[k] = sum over channels c of terms(in0[b,c,p], in1[b,c,p], ...)[k]   (k < K)
///   f    = factor(S)                      (S as std::array of K batches or scalars)
///   out[b,c,p] = apply(f, in0[b,c,p], ...) for every channel c.
/// `terms`, `factor` and `apply` are generic: they run on SIMD batches for packed pixels and
/// on scalars otherwise, so both paths compute the same expression. `out` may be exactly one
/// of the inputs (a tile is fully reduced before any of it is written).
template <std::size_t K, class T, std::size_t R, class Terms, class Factor, class Apply, class... In>
void channel_reduce_map(view<T, R> out, Terms&& terms, Factor&& factor, Apply&& apply,
                        const view<In, R>&... in) {
    static_assert(R >= 3, "channel_reduce_map needs (N, C, spatial...) views.");
    static_assert((std::is_same_v<std::remove_const_t<In>, T> && ...),
                  "channel_reduce_map: inputs and output must share the element type.");
    constexpr std::size_t N = sizeof...(In);
    const index_t batch = out.extent(0), channels = out.extent(1), pixels = pixel_count(out);
    if (batch == 0 || channels == 0 || pixels == 0) return;
    const std::array<const T*, N> src{in.data_handle()...};
    const std::array<std::array<index_t, R>, N> in_strides{in.strides()...};
    const std::array<const view<const T, R>, N> in_views{view<const T, R>(in)...};

    bool packed = pixels_packed(out);
    for (const auto& v : in_views) packed = packed && pixels_packed(v);

    // Packed tiles: as long as the tile's inputs fit the cache budget, in whole SIMD vectors.
    index_t tile = channel_tile;
    if (packed) {
        const index_t per_pixel = channels * static_cast<index_t>(N * sizeof(T));
        tile = std::clamp<index_t>(channel_tile_bytes / std::max<index_t>(per_pixel, 1), 64, channel_tile_max);
        tile -= tile % 64;
    }

    // (C arrays: indexed with signed pixel indices)
    alignas(64) T sums[K][channel_tile_max];
    alignas(64) T fac[channel_tile_max];
    // Offsets of the tile's pixels in each view (strided path only).
    index_t poff[N + 1][channel_tile];

    for (index_t b = 0; b < batch; ++b) {
        std::array<const T*, N> item;
        for (std::size_t v = 0; v < N; ++v) item[v] = src[v] + b * in_strides[v][0];
        for (index_t p0 = 0; p0 < pixels; p0 += tile) {
            const index_t len = std::min(tile, pixels - p0);
            if (!packed) {
                for (index_t i = 0; i < len; ++i) {
                    for (std::size_t v = 0; v < N; ++v) poff[v][i] = pixel_offset(in_views[v], p0 + i);
                    poff[N][i] = pixel_offset(out, p0 + i);
                }
            }
            // ---- reduction over channels: a few pixel vectors at a time, channels inner,
            // partial sums in registers for up to channel_block channels
            index_t px = 0;
            if (packed) {
                if constexpr (simd::enabled) {
                    using B = simd::batch<T>;
                    constexpr index_t W = static_cast<index_t>(B::size);
                    constexpr index_t U = K <= 2 ? 2 : 1; // vectors per step (registers permitting)
                    auto step = [&](index_t at, auto unroll) {
                        constexpr index_t UU = decltype(unroll)::value;
                        for (index_t c0 = 0; c0 < channels; c0 += channel_block) {
                            const index_t c1 = std::min(channels, c0 + channel_block);
                            std::array<std::array<B, K>, UU> a;
                            for (auto& q : a) q.fill(B(T(0)));
                            for (index_t c = c0; c < c1; ++c) {
                                for (index_t uu = 0; uu < UU; ++uu) {
                                    std::array<B, N> x;
                                    for (std::size_t v = 0; v < N; ++v)
                                        x[v] = B::load_unaligned(item[v] + c * in_strides[v][1] + p0 + at + uu * W);
                                    const auto t = std::apply([&](const auto&... e) { return terms(e...); }, x);
                                    for (std::size_t k = 0; k < K; ++k) a[std::size_t(uu)][k] += t[k];
                                }
                            }
                            for (index_t uu = 0; uu < UU; ++uu)
                                for (std::size_t k = 0; k < K; ++k) {
                                    T* dst = sums[k] + at + uu * W;
                                    (c0 == 0 ? a[std::size_t(uu)][k] : B::load_aligned(dst) + a[std::size_t(uu)][k])
                                        .store_aligned(dst);
                                }
                        }
                    };
                    for (; px + U * W <= len; px += U * W) step(px, std::integral_constant<index_t, U>{});
                    for (; px + W <= len; px += W) step(px, std::integral_constant<index_t, 1>{});
                }
            }
            // scalar tail (packed) or the whole tile (strided): per pixel, channels inner
            for (; px < len; ++px) {
                std::array<T, K> total{};
                for (index_t c0 = 0; c0 < channels; c0 += channel_block) {
                    const index_t c1 = std::min(channels, c0 + channel_block);
                    std::array<T, K> part{};
                    for (index_t c = c0; c < c1; ++c) {
                        std::array<T, N> x;
                        for (std::size_t v = 0; v < N; ++v)
                            x[v] = item[v][c * in_strides[v][1] + (packed ? p0 + px : poff[v][px])];
                        const auto t = std::apply([&](const auto&... e) { return terms(e...); }, x);
                        for (std::size_t k = 0; k < K; ++k) part[k] += T(t[k]);
                    }
                    for (std::size_t k = 0; k < K; ++k) total[k] = c0 == 0 ? part[k] : total[k] + part[k];
                }
                for (std::size_t k = 0; k < K; ++k) sums[k][px] = total[k];
            }
            // ---- per-pixel factor
            {
                index_t i = 0;
                if constexpr (simd::enabled) {
                    using B = simd::batch<T>;
                    constexpr index_t W = static_cast<index_t>(B::size);
                    for (; i + W <= len; i += W) {
                        std::array<B, K> s;
                        for (std::size_t k = 0; k < K; ++k) s[k] = B::load_aligned(sums[k] + i);
                        B(factor(s)).store_aligned(fac + i);
                    }
                }
                for (; i < len; ++i) {
                    std::array<T, K> s;
                    for (std::size_t k = 0; k < K; ++k) s[k] = sums[k][i];
                    fac[i] = T(factor(s));
                }
            }
            // ---- map: rewrite every channel of the tile
            for (index_t c = 0; c < channels; ++c) {
                std::array<const T*, N> row;
                for (std::size_t v = 0; v < N; ++v)
                    row[v] = src[v] + b * in_strides[v][0] + c * in_strides[v][1];
                T* orow = out.data_handle() + b * out.stride(0) + c * out.stride(1);
                index_t i = 0;
                if (packed) {
                    for (std::size_t v = 0; v < N; ++v) row[v] += p0;
                    orow += p0;
                    if constexpr (simd::enabled) {
                        using B = simd::batch<T>;
                        constexpr index_t W = static_cast<index_t>(B::size);
                        for (; i + W <= len; i += W) {
                            std::array<B, N> x;
                            for (std::size_t v = 0; v < N; ++v) x[v] = B::load_unaligned(row[v] + i);
                            const B f = B::load_aligned(fac + i);
                            const B r = std::apply([&](const auto&... a) { return B(apply(f, a...)); }, x);
                            r.store_unaligned(orow + i);
                        }
                    }
                    for (; i < len; ++i) {
                        std::array<T, N> x;
                        for (std::size_t v = 0; v < N; ++v) x[v] = row[v][i];
                        orow[i] = std::apply([&](const auto&... a) { return T(apply(fac[i], a...)); }, x);
                    }
                } else {
                    for (; i < len; ++i) {
                        std::array<T, N> x;
                        for (std::size_t v = 0; v < N; ++v) x[v] = row[v][poff[v][i]];
                        orow[poff[N][i]] =
                            std::apply([&](const auto&... a) { return T(apply(fac[i], a...)); }, x);
                    }
                }
            }
        }
    }
}

/// Sums K terms over every element of same-shaped views, like reduce<K>, but faster on
/// contiguous views: several independent accumulator sets hide the latency of the adds that
/// bounds reduce<K>'s single chain per sum. Same blocking (reduce_block terms per lane in the
/// input precision, blocks in double), so the accuracy is reduce's. Strided views fall back
/// to reduce<K>.
template <std::size_t K, std::size_t R, class F, class T0, class... Tn>
std::array<double, K> reduce_unrolled(F&& f, const view<T0, R>& v0, const view<Tn, R>&... vn) {
    using T = std::remove_const_t<T0>;
    if constexpr (!simd::enabled) {
        return reduce<K>(f, v0, vn...);
    } else {
        if (!v0.is_contiguous() || !(vn.is_contiguous() && ...)) return reduce<K>(f, v0, vn...);
        constexpr std::size_t N = 1 + sizeof...(Tn);
        using B = simd::batch<T>;
        constexpr index_t W = static_cast<index_t>(B::size);
        constexpr index_t U = K <= 2 ? 4 : 2; // accumulator sets (registers permitting)
        const std::array<const T*, N> src{v0.data_handle(), vn.data_handle()...};
        const index_t n = v0.size();
        std::array<double, K> total{};
        index_t i = 0;
        while (i + U * W <= n) {
            std::array<std::array<B, K>, U> acc;
            for (auto& a : acc) a.fill(B(T(0)));
            const index_t stop = std::min(n - U * W, i + U * W * (reduce_block - 1));
            for (; i <= stop; i += U * W)
                for (index_t u = 0; u < U; ++u) {
                    std::array<B, N> x;
                    for (std::size_t v = 0; v < N; ++v) x[v] = B::load_unaligned(src[v] + i + u * W);
                    const auto t = std::apply([&](const auto&... a) { return f(a...); }, x);
                    for (std::size_t k = 0; k < K; ++k) acc[std::size_t(u)][k] += t[k];
                }
            for (std::size_t k = 0; k < K; ++k) {
                B s = acc[0][k];
                for (index_t u = 1; u < U; ++u) s += acc[std::size_t(u)][k];
                total[k] += simd::hsum(s);
            }
        }
        for (; i < n; ++i) {
            std::array<T, N> x;
            for (std::size_t v = 0; v < N; ++v) x[v] = src[v][i];
            const auto t = std::apply([&](const auto&... a) { return f(a...); }, x);
            for (std::size_t k = 0; k < K; ++k) total[k] += static_cast<double>(t[k]);
        }
        return total;
    }
}

} // namespace patchbay::kernels
