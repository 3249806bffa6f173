// patchbay: the Gaussian blur of ComfyUI's latent sharpen (LatentOperationSharpen), as a
// separable filter with reflect padding, streamed row by row.
//
// ComfyUI builds gaussian_kernel(2r+1, sigma) on the grid linspace(-1, 1, 2r+1) (so sigma is
// relative to the kernel's half-width r, not in pixels), normalises it to sum 1 and convolves
// every channel of the reflect-padded plane with it. That 2-D kernel is the outer product of the
// 1-D taps w_k = exp(-(k/r)^2 / (2 sigma^2)) / Z, k = -r .. r, so here it is two passes of 2r+1
// taps (rows, then columns) instead of (2r+1)^2 taps per pixel, with the taps paired by symmetry.
//
// reflect_blur_rows() streams a plane: load(y, ...) supplies input row y, emit(y, ...) receives
// blurred output row y (and input row y as loaded) as soon as the input rows it needs (up to
// y + r) are loaded, and no row above y + r is loaded before row y is emitted, so a caller may
// write its output in place. The intermediates are rings of the last 2r+1 row-blurred rows and
// the last r+1 input rows, kept small enough (channels in groups) to stay in cache.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "patchbay/core/config.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::kernels {

/// The largest radius reflect_blur_rows takes (LatentOperationSharpen's sharpen_radius <= 31).
inline constexpr index_t reflect_blur_max_radius = 31;

/// The taps w_0 .. w_r (w_{-k} = w_k) of ComfyUI's gaussian_kernel(2r+1, sigma), whose 2-D
/// kernel is w_i * w_j. `taps` holds radius + 1 values. sigma > 0, radius >= 1.
template <class T>
void gaussian_half_taps(index_t radius, double sigma, std::span<T> taps) {
    double g[reflect_blur_max_radius + 1];
    double sum = 0.0;
    for (index_t k = 0; k <= radius; ++k) {
        const double t = static_cast<double>(k) / static_cast<double>(radius); // the grid point
        g[k] = std::exp(-(t * t) / (2.0 * sigma * sigma));
        sum += k == 0 ? g[k] : 2.0 * g[k];
    }
    for (index_t k = 0; k <= radius; ++k) taps[static_cast<std::size_t>(k)] = static_cast<T>(g[k] / sum);
}

namespace sharpen_detail {

/// Scratch keys of reflect_blur_rows (kernel range of the workspace).
enum scratch : std::size_t { key_padded = workspace::kernel_keys + 20, key_ring, key_row };

/// Ring bytes a channel group may use: it stays in L2 between the row and column passes.
inline constexpr std::size_t ring_budget_bytes = 64 * 1024;

/// dst[x] = w_0 c[x] + sum_k w_k (lo_k[x] + hi_k[x]) for x < n, where lo_k = lo(k), hi_k = hi(k)
/// are row pointers. Four SIMD batches per step share each tap's pointers and weight; every
/// element (SIMD or scalar) sees the same sequence of operations, so the result does not depend
/// on where the SIMD body ends.
template <class T, class Lo, class Hi>
PATCHBAY_ALWAYS_INLINE void symmetric_taps(const T* w, index_t radius, const T* centre, Lo lo, Hi hi, index_t n,
                                           T* PATCHBAY_RESTRICT dst) {
    index_t x = 0;
    if constexpr (simd::enabled) {
        using B = simd::batch<T>;
        constexpr index_t L = static_cast<index_t>(B::size);
        constexpr std::size_t U = 4;
        for (; x + index_t(U) * L <= n; x += index_t(U) * L) {
            const B w0(w[0]);
            std::array<B, U> acc;
            simd::unrolled<U>([&](auto u) PATCHBAY_INLINE_LAMBDA { acc[u] = B::load_unaligned(centre + x + index_t(u) * L) * w0; });
            for (index_t k = 1; k <= radius; ++k) {
                const B wk(w[k]);
                const T* const a = lo(k) + x;
                const T* const b = hi(k) + x;
                simd::unrolled<U>([&](auto u) PATCHBAY_INLINE_LAMBDA {
                    acc[u] = simd::fma(B::load_unaligned(a + index_t(u) * L) + B::load_unaligned(b + index_t(u) * L), wk, acc[u]);
                });
            }
            simd::unrolled<U>([&](auto u) PATCHBAY_INLINE_LAMBDA { acc[u].store_unaligned(dst + x + index_t(u) * L); });
        }
        for (; x + L <= n; x += L) {
            B acc = B::load_unaligned(centre + x) * B(w[0]);
            for (index_t k = 1; k <= radius; ++k)
                acc = simd::fma(B::load_unaligned(lo(k) + x) + B::load_unaligned(hi(k) + x), B(w[k]), acc);
            acc.store_unaligned(dst + x);
        }
    }
    for (; x < n; ++x) {
        T acc = centre[x] * w[0];
        for (index_t k = 1; k <= radius; ++k) acc = simd::fma(lo(k)[x] + hi(k)[x], w[k], acc);
        dst[x] = acc;
    }
}

/// Reflect an index in [-r, n-1+r] into [0, n) without repeating the edge (needs n > r).
inline index_t reflect(index_t i, index_t n) noexcept {
    if (i < 0) return -i;
    if (i >= n) return 2 * (n - 1) - i;
    return i;
}

} // namespace sharpen_detail

/// Channels per group for reflect_blur_rows: the ring of 2r+1 rows of the group stays within
/// the ring budget.
template <class T>
index_t reflect_blur_group(index_t radius, index_t width, index_t planes) {
    const auto per_plane = static_cast<std::size_t>((2 * radius + 1) * width) * sizeof(T);
    const auto fit = static_cast<index_t>(sharpen_detail::ring_budget_bytes / std::max<std::size_t>(per_plane, 1));
    return std::clamp<index_t>(fit, 1, std::max<index_t>(planes, 1));
}

/// Blur `planes` planes of H x W with the separable kernel half_taps (w_0 .. w_r) and reflect
/// padding by r, in groups of channels. For each group [p0, p0 + np) and row y:
///   load(y, p0, np, dst, stride) writes input row y of plane p0 + i to dst + i*stride (W values);
///   emit(y, p0, np, blurred, stride, input, input_stride) reads blurred row y of plane p0 + i
///   from blurred + i*stride, and the input row y it loaded from input + i*input_stride.
/// Rows are loaded and emitted in increasing y; row y is emitted before row y + r + 1 is loaded.
/// Needs 1 <= r <= reflect_blur_max_radius, H > r and W > r (the caller checks). Scratch from `ws`.
template <class T, class Load, class Emit>
void reflect_blur_rows(index_t H, index_t W, index_t planes, std::span<const T> half_taps, Load&& load, Emit&& emit,
                       workspace& ws) {
    using namespace sharpen_detail;
    const index_t r = static_cast<index_t>(half_taps.size()) - 1;
    PATCHBAY_REQUIRE(r >= 1 && r <= reflect_blur_max_radius && H > r && W > r, "reflect_blur_rows",
                     "needs 1 <= radius <= 31 and a plane larger than the radius, got radius " + std::to_string(r) +
                         " on " + std::to_string(H) + "x" + std::to_string(W));
    const index_t K = 2 * r + 1;
    const index_t group = reflect_blur_group<T>(r, W, planes);
    const index_t padded = W + 2 * r;
    const auto size = [](index_t n) { return static_cast<std::size_t>(n); };
    // the last r+1 input rows, reflect-padded (emit hands row y back r rows after its load)
    T* const pads = ws.buffer<T>(key_padded, size((r + 1) * group * padded)).data();
    T* const ring = ws.buffer<T>(key_ring, size(K * group * W)).data();
    T* const row = ws.buffer<T>(key_row, size(group * W)).data();
    const T* const w = half_taps.data();

    for (index_t p0 = 0; p0 < planes; p0 += group) {
        const index_t np = std::min(group, planes - p0);
        const index_t ring_row = np * W;
        auto ring_of = [&](index_t y) { return ring + (y % K) * ring_row; };
        auto pad_of = [&](index_t y) { return pads + (y % (r + 1)) * np * padded; };
        auto emit_row = [&](index_t y) {
            const T* lo[reflect_blur_max_radius + 1];
            const T* hi[reflect_blur_max_radius + 1];
            for (index_t k = 1; k <= r; ++k) {
                lo[k] = ring_of(reflect(y - k, H));
                hi[k] = ring_of(reflect(y + k, H));
            }
            symmetric_taps<T>(w, r, ring_of(y), [&](index_t k) { return lo[k]; },
                              [&](index_t k) { return hi[k]; }, ring_row, row);
            emit(y, p0, np, static_cast<const T*>(row), W, static_cast<const T*>(pad_of(y) + r), padded);
        };
        for (index_t y = 0; y < H; ++y) {
            T* const pad = pad_of(y);
            load(y, p0, np, pad + r, padded);
            T* const h = ring_of(y);
            for (index_t i = 0; i < np; ++i) {
                T* const seg = pad + i * padded + r; // the row, reflect-padded in place
                for (index_t k = 1; k <= r; ++k) {
                    seg[-k] = seg[k];
                    seg[W - 1 + k] = seg[W - 1 - k];
                }
                symmetric_taps<T>(w, r, seg, [seg](index_t k) { return seg - k; },
                                  [seg](index_t k) { return seg + k; }, W, h + i * W);
            }
            if (y >= r) emit_row(y - r);
        }
        for (index_t y = H - r; y < H; ++y) emit_row(y);
    }
}

} // namespace patchbay::kernels
