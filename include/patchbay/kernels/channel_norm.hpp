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

/// Pixels handled per tile. With 16 channels and three float inputs a tile is 96 KiB, which
/// stays in L2 between the reduction and the map.
inline constexpr index_t channel_tile = 512;
/// Channels summed in the first-level accumulator before it is folded into the second; the
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

    alignas(64) std::array<std::array<T, channel_tile>, K> acc1;
    alignas(64) std::array<std::array<T, channel_tile>, K> acc2;
    alignas(64) std::array<T, channel_tile> fac;
    const bool two_level = channels > channel_block;

    // Offsets of the tile's pixels in each view (strided path only).
    std::array<std::array<index_t, channel_tile>, N + 1> poff;

    for (index_t b = 0; b < batch; ++b) {
        for (index_t p0 = 0; p0 < pixels; p0 += channel_tile) {
            const index_t len = std::min(channel_tile, pixels - p0);
            if (!packed) {
                for (index_t i = 0; i < len; ++i) {
                    for (std::size_t v = 0; v < N; ++v) poff[v][i] = pixel_offset(in_views[v], p0 + i);
                    poff[N][i] = pixel_offset(out, p0 + i);
                }
            }
            for (std::size_t k = 0; k < K; ++k) {
                std::fill_n(acc1[k].data(), len, T(0));
                if (two_level) std::fill_n(acc2[k].data(), len, T(0));
            }
            // ---- reduction over channels
            for (index_t c = 0; c < channels; ++c) {
                std::array<const T*, N> row;
                for (std::size_t v = 0; v < N; ++v)
                    row[v] = src[v] + b * in_strides[v][0] + c * in_strides[v][1];
                index_t i = 0;
                if (packed) {
                    for (std::size_t v = 0; v < N; ++v) row[v] += p0;
                    if constexpr (simd::enabled) {
                        using B = simd::batch<T>;
                        constexpr index_t W = static_cast<index_t>(B::size);
                        for (; i + W <= len; i += W) {
                            std::array<B, N> x;
                            for (std::size_t v = 0; v < N; ++v) x[v] = B::load_unaligned(row[v] + i);
                            const auto t = std::apply([&](const auto&... a) { return terms(a...); }, x);
                            for (std::size_t k = 0; k < K; ++k)
                                (B::load_aligned(acc1[k].data() + i) + t[k]).store_aligned(acc1[k].data() + i);
                        }
                    }
                    for (; i < len; ++i) {
                        std::array<T, N> x;
                        for (std::size_t v = 0; v < N; ++v) x[v] = row[v][i];
                        const auto t = std::apply([&](const auto&... a) { return terms(a...); }, x);
                        for (std::size_t k = 0; k < K; ++k) acc1[k][i] += T(t[k]);
                    }
                } else {
                    for (; i < len; ++i) {
                        std::array<T, N> x;
                        for (std::size_t v = 0; v < N; ++v) x[v] = row[v][poff[v][i]];
                        const auto t = std::apply([&](const auto&... a) { return terms(a...); }, x);
                        for (std::size_t k = 0; k < K; ++k) acc1[k][i] += T(t[k]);
                    }
                }
                if (two_level && ((c + 1) % channel_block == 0 || c + 1 == channels)) {
                    for (std::size_t k = 0; k < K; ++k)
                        for (index_t j = 0; j < len; ++j) {
                            acc2[k][j] += acc1[k][j];
                            acc1[k][j] = T(0);
                        }
                }
            }
            auto& sums = two_level ? acc2 : acc1;
            // ---- per-pixel factor
            {
                index_t i = 0;
                if constexpr (simd::enabled) {
                    using B = simd::batch<T>;
                    constexpr index_t W = static_cast<index_t>(B::size);
                    for (; i + W <= len; i += W) {
                        std::array<B, K> s;
                        for (std::size_t k = 0; k < K; ++k) s[k] = B::load_aligned(sums[k].data() + i);
                        B(factor(s)).store_aligned(fac.data() + i);
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
                            const B f = B::load_aligned(fac.data() + i);
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

} // namespace patchbay::kernels
