// patchbay: resizing the last two dims of a tensor as ComfyUI's common_upscale does (the
// resize methods Deep Shrink offers: PatchModelAddDownscale's downscale_method and
// upscale_method).
//
// torch.nn.functional.interpolate(size=(H', W'), align_corners=False), CPU, as torch computes it:
//   - bicubic: src = (o + 0.5) * in/out - 0.5 (not clamped), Keys' cubic with A = -0.75 at
//     floor(src) - 1 .. floor(src) + 2, tap indices clamped to the border;
//   - bilinear: the same src clamped at 0, taps floor(src) and min(floor(src) + 1, in - 1);
//     an unchanged size copies;
//   - nearest-exact: min(floor((o + 0.5) * in/out), in - 1) (the scale a float, as torch's);
//   - area: adaptive average pooling, bins [floor(o * in/out), ceil((o + 1) * in/out)).
// All four are separable: a pass along W (each input row to W' columns) and then a pass along H
// (each output row a weighted sum of pass-one rows, SIMD along the row). Summing W inside H is
// torch's own order (it nests the W taps inside the H taps), and the taps' scales and weights
// are computed in T exactly as torch computes them.
//   - bislerp (ComfyUI's own, comfy/utils.py): the same two passes, each an interpolation of
//     channel vectors (the C values at one pixel) by slerp between two source pixels c1, c2 with
//     ratio r. c1, c2 and r come from ComfyUI's float32 bilinear resize of index ramps, which is
//     reproduced in float32 (the truncation to an index must land where ComfyUI's does). The
//     slerp is written as res = a1 * b1 + a2 * b2 with the per-pixel coefficients a1, a2
//     computed in double from the channel sums |b1|^2, |b2|^2, b1.b2:
//         dot = b1.b2 / (|b1| |b2|) (0 if a norm is 0), omega = acos(dot),
//         a1 = sin((1-r) omega) / sin(omega) * m / |b1|,  a2 = sin(r omega) / sin(omega) * m / |b2|,
//         m = (1-r)|b1| + r|b2|;  dot > 1 - 1e-5: res = b1;  dot < -1 + 1e-5: res = (1-r) b1 + r b2,
//     the thresholds in T as ComfyUI compares them. ComfyUI computes it in float32 even for
//     float64 input; patchbay computes in T.
//
// 5-D tensors (N, C, T, H, W) resize every frame on its own (ComfyUI folds frames into the
// batch). A size that does not change copies. Rows along W that are contiguous take the SIMD
// path (gathers along W, loads along H); strided rows take a scalar path with the same
// operations in the same order, so both give the same bits. Scratch (tap tables, one plane of
// the W pass, bislerp's two source rows) comes from the workspace: nothing is allocated once it
// has grown to the largest call.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "patchbay/core/config.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay::kernels {

/// The resize methods PatchModelAddDownscale offers, in the order of its combos (ComfyUI's
/// common_upscale also has lanczos, through PIL on 8-bit images; the node does not offer it).
enum class resize_method : std::uint8_t { bicubic, nearest_exact, bilinear, area, bislerp };

/// ComfyUI's names of the resize methods, indexed by resize_method.
inline constexpr std::array<std::string_view, 5> resize_method_names{"bicubic", "nearest-exact", "bilinear", "area",
                                                                     "bislerp"};

namespace resize_detail {

/// Scratch keys (kernel range of the workspace).
enum scratch : std::size_t {
    key_index_w = workspace::kernel_keys + 24,
    key_weight_w,
    key_index_h,
    key_weight_h,
    key_rows,   ///< pass-one rows (linear: one plane, bislerp: two rows of every channel)
    key_pixels, ///< bislerp's per-pixel sums and coefficients
    key_used    ///< the rows of a plane the H pass reads
};

template <class T>
using index_type = simd::index_type<T>;

/// The taps of one axis, tap-major: output o reads index(t, o) with weight(t, o), t < taps.
/// For bislerp, taps 0 and 1 are c1 and c2 and weight(0, o) is the ratio r.
template <class T>
struct axis_taps {
    index_t in = 0, out = 0, taps = 0;
    index_type<T>* indices = nullptr;
    T* weights = nullptr;
    index_type<T>& index(index_t t, index_t o) const noexcept { return indices[t * out + o]; }
    T& weight(index_t t, index_t o) const noexcept { return weights[t * out + o]; }
};

inline index_t clamp_index(index_t i, index_t n) noexcept { return std::max<index_t>(0, std::min(i, n - 1)); }

/// Adaptive pooling bin of output o: [first, end).
inline std::pair<index_t, index_t> area_bin(index_t o, index_t in, index_t out) noexcept {
    return {(o * in) / out, ((o + 1) * in + out - 1) / out};
}

inline index_t taps_of(resize_method m, index_t in, index_t out) noexcept {
    switch (m) {
    case resize_method::bicubic: return 4;
    case resize_method::nearest_exact: return 1;
    case resize_method::area: {
        index_t k = 1;
        for (index_t o = 0; o < out; ++o) {
            const auto [b, e] = area_bin(o, in, out);
            k = std::max(k, e - b);
        }
        return k;
    }
    case resize_method::bilinear:
    case resize_method::bislerp: break;
    }
    return 2;
}

/// torch's source coordinate (area_pixel_compute_source_index, align_corners False):
/// scale * (o + 0.5) - 0.5 in T, with the multiply-add fused as g++ compiles torch's CPU kernels.
template <class T>
T source_coordinate(T scale, index_t o) noexcept {
    return std::fma(scale, static_cast<T>(o) + T(0.5), T(-0.5));
}

/// torch's bicubic weights (upsample_bicubic2d, align_corners False) in T: Keys' cubic with
/// A = -0.75, each polynomial in torch's Horner order with its multiply-adds fused.
template <class T>
void fill_bicubic(const axis_taps<T>& a) {
    const T scale = static_cast<T>(a.in) / static_cast<T>(a.out), A = T(-0.75);
    const auto near = [A](T x) { return std::fma(std::fma(A + T(2), x, -(A + T(3))) * x, x, T(1)); }; // |x| <= 1
    const auto far = [A](T x) { // 1 < |x| < 2
        return std::fma(std::fma(std::fma(A, x, -(T(5) * A)), x, T(8) * A), x, -(T(4) * A));
    };
    for (index_t o = 0; o < a.out; ++o) {
        const T src = source_coordinate(scale, o);
        const T fl = std::floor(src), t = src - fl;
        const auto i = static_cast<index_t>(fl);
        const T w[4] = {far(t + T(1)), near(t), near(T(1) - t), far((T(1) - t) + T(1))};
        for (index_t j = 0; j < 4; ++j) {
            a.index(j, o) = static_cast<index_type<T>>(clamp_index(i - 1 + j, a.in));
            a.weight(j, o) = w[j];
        }
    }
}

/// torch's bilinear weights (upsample_bilinear2d, align_corners False) in T.
template <class T>
void fill_bilinear(const axis_taps<T>& a) {
    const T scale = static_cast<T>(a.in) / static_cast<T>(a.out);
    for (index_t o = 0; o < a.out; ++o) {
        index_t i0 = o, i1 = o;
        T l0 = T(1), l1 = T(0);
        if (a.in != a.out) { // an unchanged size copies, as torch does
            const T src = std::max(source_coordinate(scale, o), T(0));
            i0 = static_cast<index_t>(src);
            i1 = i0 + (i0 < a.in - 1 ? 1 : 0);
            l1 = src - static_cast<T>(i0);
            l0 = T(1) - l1;
        }
        a.index(0, o) = static_cast<index_type<T>>(i0);
        a.index(1, o) = static_cast<index_type<T>>(i1);
        a.weight(0, o) = l0;
        a.weight(1, o) = l1;
    }
}

/// torch's nearest-exact source index: the scale is a float and (o + 0.5) * scale is rounded to
/// float before the floor (upsample_nearest_exact2d).
inline index_t nearest_exact_source(index_t o, index_t in, index_t out) noexcept {
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    const auto p = static_cast<float>((static_cast<double>(o) + 0.5) * static_cast<double>(scale));
    return std::min(static_cast<index_t>(std::floor(p)), in - 1);
}

template <class T>
void fill_nearest_exact(const axis_taps<T>& a) {
    for (index_t o = 0; o < a.out; ++o) {
        a.index(0, o) = static_cast<index_type<T>>(nearest_exact_source(o, a.in, a.out));
        a.weight(0, o) = T(1);
    }
}

/// Adaptive average pooling as weights 1/k over each bin; shorter bins are padded with
/// zero-weight taps at the bin's first index.
template <class T>
void fill_area(const axis_taps<T>& a) {
    for (index_t o = 0; o < a.out; ++o) {
        const auto [b, e] = area_bin(o, a.in, a.out);
        const T w = T(1) / static_cast<T>(e - b);
        for (index_t t = 0; t < a.taps; ++t) {
            a.index(t, o) = static_cast<index_type<T>>(t < e - b ? b + t : b);
            a.weight(t, o) = t < e - b ? w : T(0);
        }
    }
}

/// ComfyUI's bislerp coordinates: c1, c2 and r from a float32 bilinear resize of the ramps
/// 0..n-1 and 1..n-1, n-1 (torch's arithmetic: v = i0 * l0 + i1 * l1 in float, the first
/// product fused into the sum as g++ compiles it; the truncation to c1, c2 depends on it).
template <class T>
void fill_bislerp(const axis_taps<T>& a) {
    const index_t n = a.in;
    const float scale = static_cast<float>(n) / static_cast<float>(a.out);
    const auto ramp2 = [n](index_t i) { return static_cast<float>(i < n - 1 ? i + 1 : n - 1); };
    for (index_t o = 0; o < a.out; ++o) {
        index_t i0 = o, i1 = o;
        float l0 = 1.f, l1 = 0.f;
        if (n != a.out) {
            const float src = std::max(source_coordinate(scale, o), 0.f);
            i0 = static_cast<index_t>(src);
            i1 = i0 + (i0 < n - 1 ? 1 : 0);
            l1 = src - static_cast<float>(i0);
            l0 = 1.f - l1;
        }
        const float v = std::fma(static_cast<float>(i0), l0, static_cast<float>(i1) * l1);
        const float v2 = std::fma(ramp2(i0), l0, ramp2(i1) * l1);
        a.index(0, o) = static_cast<index_type<T>>(clamp_index(static_cast<index_t>(v), n));
        a.index(1, o) = static_cast<index_type<T>>(clamp_index(static_cast<index_t>(v2), n));
        a.weight(0, o) = static_cast<T>(v - std::floor(v));
        a.weight(1, o) = T(0);
    }
}

/// The taps of one axis for method m, in scratch under the given keys.
template <class T>
axis_taps<T> make_taps(resize_method m, index_t in, index_t out, workspace& ws, std::size_t key_index,
                       std::size_t key_weight) {
    axis_taps<T> a;
    a.in = in;
    a.out = out;
    a.taps = taps_of(m, in, out);
    const auto n = static_cast<std::size_t>(a.taps * out);
    a.indices = ws.buffer<index_type<T>>(key_index, n).data();
    a.weights = ws.buffer<T>(key_weight, n).data();
    switch (m) {
    case resize_method::bicubic: fill_bicubic(a); break;
    case resize_method::bilinear: fill_bilinear(a); break;
    case resize_method::nearest_exact: fill_nearest_exact(a); break;
    case resize_method::area: fill_area(a); break;
    case resize_method::bislerp: fill_bislerp(a); break;
    }
    return a;
}

// ---- the linear methods ------------------------------------------------------------------------

/// Asks for the cache lines of a row ahead of its use (the W pass reads rows of a plane that are
/// apart in memory; the hardware prefetcher alone leaves it waiting on memory).
template <class T>
PATCHBAY_ALWAYS_INLINE void prefetch_row(const T* row, index_t n, index_t stride) noexcept {
#if defined(__GNUC__)
    constexpr index_t line = 64 / static_cast<index_t>(sizeof(T));
    if (stride == 1)
        for (index_t x = 0; x < n; x += line) __builtin_prefetch(row + x);
#else
    (void)row, (void)n, (void)stride;
#endif
}

/// Lanes of the W pass: that many rows are resized at once, one per SIMD lane.
template <class T>
inline constexpr index_t row_lanes = static_cast<index_t>(simd::lanes<T>);

/// The W pass of row_lanes<T> rows at once: dst[l][o] = sum_t weight(t, o) * src[l][index(t, o) * sx].
/// The rows are packed transposed (cols[x * L + l] = src[l][x]: block transposes of contiguous
/// rows, element by element for strided ones), every output column is then one SIMD weighted
/// sum of packed columns (the same operations in the same order for every element, whatever
/// the layout), and the results are transposed back into the rows. `cols` holds W * L values,
/// `sums` a.out * L.
template <class T>
void pass_w(const std::array<const T*, simd::lanes<T>>& src, index_t sx, index_t W, const axis_taps<T>& a,
            const std::array<T*, simd::lanes<T>>& dst, index_t dx, T* cols, T* sums) {
    using V = simd::vec<T>;
    constexpr index_t L = row_lanes<T>;
    constexpr std::size_t N = simd::lanes<T>;
    index_t x = 0;
    if constexpr (simd::enabled) {
        if (sx == 1) {
            std::array<V, N> m;
            for (; x + L <= W; x += L) {
                for (std::size_t l = 0; l < N; ++l) m[l] = V::load_unaligned(src[l] + x);
                simd::transpose(m);
                for (std::size_t j = 0; j < N; ++j) m[j].store_unaligned(cols + (x + index_t(j)) * L);
            }
        }
    }
    for (; x < W; ++x)
        for (std::size_t l = 0; l < N; ++l) cols[x * L + index_t(l)] = src[l][x * sx];
    const index_t K = a.taps;
    for (index_t o = 0; o < a.out; ++o) {
        V acc = simd::load<V>(cols + a.index(0, o) * L) * V(a.weight(0, o));
        for (index_t t = 1; t < K; ++t) acc = simd::fma(simd::load<V>(cols + a.index(t, o) * L), V(a.weight(t, o)), acc);
        simd::store(sums + o * L, acc);
    }
    index_t o = 0;
    if constexpr (simd::enabled) {
        if (dx == 1) {
            std::array<V, N> m;
            for (; o + L <= a.out; o += L) {
                for (std::size_t j = 0; j < N; ++j) m[j] = V::load_unaligned(sums + (o + index_t(j)) * L);
                simd::transpose(m);
                for (std::size_t l = 0; l < N; ++l) m[l].store_unaligned(dst[l] + o);
            }
        }
    }
    for (; o < a.out; ++o)
        for (std::size_t l = 0; l < N; ++l) dst[l][o * dx] = sums[o * L + index_t(l)];
}

/// Output row o of the H pass: dst[x * dx] = sum_t weight(t, o) * src[index(t, o) * sy + x * sx]
/// for x < width, SIMD along contiguous rows.
template <class T>
void pass_h(const T* src, index_t sy, index_t sx, index_t width, const axis_taps<T>& a, index_t o, T* dst,
            index_t dx) {
    const index_t K = a.taps;
    index_t x = 0;
    if constexpr (simd::enabled) {
        if (dx == 1 && sx == 1) {
            using B = simd::batch<T>;
            constexpr auto L = static_cast<index_t>(B::size);
            for (; x + L <= width; x += L) {
                B acc = B::load_unaligned(src + a.index(0, o) * sy + x) * B(a.weight(0, o));
                for (index_t t = 1; t < K; ++t)
                    acc = simd::fma(B::load_unaligned(src + a.index(t, o) * sy + x), B(a.weight(t, o)), acc);
                acc.store_unaligned(dst + x);
            }
        }
    }
    for (; x < width; ++x) {
        T acc = src[a.index(0, o) * sy + x * sx] * a.weight(0, o);
        for (index_t t = 1; t < K; ++t) acc = simd::fma(src[a.index(t, o) * sy + x * sx], a.weight(t, o), acc);
        dst[x * dx] = acc;
    }
}

/// Calls f(in_offset, out_offset) for every plane (all dims but the last two).
template <std::size_t R, class F>
void for_each_plane(const std::array<index_t, R>& extents, const std::array<index_t, R>& in_strides,
                    const std::array<index_t, R>& out_strides, F&& f) {
    std::array<index_t, R> i{};
    index_t planes = 1;
    for (std::size_t r = 0; r + 2 < R; ++r) planes *= extents[r];
    for (index_t p = 0; p < planes; ++p) {
        index_t rest = p, oi = 0, oo = 0;
        for (std::size_t r = R - 2; r-- > 0;) {
            i[r] = rest % extents[r];
            rest /= extents[r];
            oi += i[r] * in_strides[r];
            oo += i[r] * out_strides[r];
        }
        f(oi, oo);
    }
}

/// The W pass of rows src + y * sy for the listed ys (ascending), into dst + y * dy (stride dx
/// along the row), row_lanes<T> rows at a time; `scratch` holds (W + Wo) * L values.
template <class T>
void pass_w_rows(const T* src, index_t sy, index_t sx, index_t W, const axis_taps<T>& a, const index_type<T>* ys,
                 index_t count, T* dst, index_t dy, index_t dx, T* scratch) {
    constexpr index_t L = row_lanes<T>;
    T* const cols = scratch;
    T* const sums = cols + W * L;
    std::array<const T*, simd::lanes<T>> from{};
    std::array<T*, simd::lanes<T>> to{};
    for (index_t k = 0; k < count; k += L) {
        for (index_t l = 0; l < L; ++l) { // a short last group repeats its first row (same values, same place)
            const index_t y = ys[k + l < count ? k + l : k];
            from[std::size_t(l)] = src + y * sy;
            to[std::size_t(l)] = dst + y * dy;
        }
        for (index_t l = k + L; l < std::min(k + 2 * L, count); ++l) prefetch_row(src + ys[l] * sy, W, sx);
        pass_w<T>(from, sx, W, a, to, dx, cols, sums);
    }
}

template <class T, std::size_t R>
void resize_linear(const view<const T, R>& in, const view<T, R>& out, resize_method m, workspace& ws) {
    constexpr index_t L = row_lanes<T>;
    const index_t H = in.extent(R - 2), W = in.extent(R - 1), Ho = out.extent(R - 2), Wo = out.extent(R - 1);
    const auto tw = make_taps<T>(m, W, Wo, ws, key_index_w, key_weight_w);
    const auto th = make_taps<T>(m, H, Ho, ws, key_index_h, key_weight_h);
    const index_t isy = in.stride(R - 2), isx = in.stride(R - 1), osy = out.stride(R - 2), osx = out.stride(R - 1);
    // The W pass transposes its rows, the H pass is plain SIMD along rows: shrinking H, the H
    // pass goes first (the W pass then has fewer rows); otherwise the W pass (torch's order).
    const bool h_first = Ho < H;
    const index_t mid_rows = h_first ? Ho : H, mid_width = h_first ? W : Wo;
    T* const mid = ws.buffer<T>(key_rows, static_cast<std::size_t>(mid_rows * mid_width + (W + Wo) * L)).data();
    T* const scratch = mid + mid_rows * mid_width;
    // the rows the W pass computes, ascending
    auto* const ys = ws.buffer<index_type<T>>(key_used, static_cast<std::size_t>(std::max(H, Ho))).data();
    index_t count = 0;
    if (h_first) {
        for (index_t o = 0; o < Ho; ++o) ys[count++] = static_cast<index_type<T>>(o);
    } else {
        for (index_t o = 0; o < Ho; ++o) // taps and bins only move forward
            for (index_t t = 0; t < th.taps; ++t) {
                const index_t y = th.index(t, o);
                if (count == 0 || y > ys[count - 1]) ys[count++] = static_cast<index_type<T>>(y);
            }
    }
    for_each_plane<R>(out.extents(), in.strides(), out.strides(), [&](index_t io, index_t oo) {
        const T* src = in.data_handle() + io;
        T* dst = out.data_handle() + oo;
        if (h_first) {
            for (index_t o = 0; o < Ho; ++o) {
                if (o + 1 < Ho) // the rows the next output row adds
                    for (index_t t = 0; t < th.taps; ++t)
                        if (th.index(t, o + 1) > th.index(th.taps - 1, o)) prefetch_row(src + th.index(t, o + 1) * isy, W, isx);
                pass_h<T>(src, isy, isx, W, th, o, mid + o * W, 1);
            }
            pass_w_rows<T>(mid, W, 1, W, tw, ys, count, dst, osy, osx, scratch);
        } else {
            pass_w_rows<T>(src, isy, isx, W, tw, ys, count, mid, Wo, 1, scratch);
            for (index_t o = 0; o < Ho; ++o) pass_h<T>(mid, Wo, 1, Wo, th, o, dst + o * osy, osx);
        }
    });
}

/// nearest-exact selects: out[o][p] = in[index_h(o)][index_w(p)], no arithmetic.
template <class T, std::size_t R>
void resize_nearest(const view<const T, R>& in, const view<T, R>& out, workspace& ws) {
    const index_t H = in.extent(R - 2), W = in.extent(R - 1), Ho = out.extent(R - 2), Wo = out.extent(R - 1);
    const auto tw = make_taps<T>(resize_method::nearest_exact, W, Wo, ws, key_index_w, key_weight_w);
    const auto th = make_taps<T>(resize_method::nearest_exact, H, Ho, ws, key_index_h, key_weight_h);
    const index_t isy = in.stride(R - 2), isx = in.stride(R - 1), osy = out.stride(R - 2), osx = out.stride(R - 1);
    for_each_plane<R>(out.extents(), in.strides(), out.strides(), [&](index_t io, index_t oo) {
        for (index_t o = 0; o < Ho; ++o) {
            const T* row = in.data_handle() + io + th.index(0, o) * isy;
            T* dst = out.data_handle() + oo + o * osy;
            if (o + 1 < Ho) prefetch_row(row + (th.index(0, o + 1) - th.index(0, o)) * isy, W, isx);
            for (index_t p = 0; p < Wo; ++p) dst[p * osx] = row[tw.index(0, p) * isx];
        }
    });
}

// ---- bislerp ------------------------------------------------------------------------------------

/// The slerp coefficients of one pixel from the channel sums |b1|^2, |b2|^2, b1.b2 and r.
template <class T>
void slerp_coefficients(T n1, T n2, T d, T r, T& a1, T& a2) {
    const T l1 = std::sqrt(n1), l2 = std::sqrt(n2);
    const double dot = l1 > T(0) && l2 > T(0) ? static_cast<double>(d) / (static_cast<double>(l1) * l2) : 0.0;
    constexpr double same = static_cast<double>(static_cast<T>(1.0 - 1e-5));
    constexpr double opposite = static_cast<double>(static_cast<T>(1e-5 - 1.0));
    if (dot > same) { // (nearly) the same direction: b1
        a1 = T(1);
        a2 = T(0);
        return;
    }
    if (dot < opposite) { // (nearly) opposite: linear
        a1 = T(1) - r;
        a2 = r;
        return;
    }
    const double rd = static_cast<double>(r), omega = std::acos(dot), so = std::sin(omega);
    const double m = std::fma(static_cast<double>(l1), 1.0 - rd, static_cast<double>(l2) * rd);
    a1 = l1 > T(0) ? static_cast<T>(std::sin((1.0 - rd) * omega) / so * m / static_cast<double>(l1)) : T(0);
    a2 = l2 > T(0) ? static_cast<T>(std::sin(rd * omega) / so * m / static_cast<double>(l2)) : T(0);
}

/// Per-pixel arrays of bislerp (each `width` long).
template <class T>
struct slerp_pixels {
    T *n1, *n2, *dot, *a1, *a2;
};

/// Adds b1^2, b2^2, b1 b2 of one channel to the sums of pixels [0, width); b1 and b2 are
/// fetched by get1(i) / get2(i) for a scalar and by gather1(o) / gather2(o) for a batch at o.
template <class T, class Scalar, class Batch>
void add_channel(const slerp_pixels<T>& px, index_t width, bool simd_ok, Scalar get, Batch get_batch) {
    index_t o = 0;
    if constexpr (simd::enabled) {
        if (simd_ok) {
            using B = simd::batch<T>;
            constexpr auto L = static_cast<index_t>(B::size);
            for (; o + L <= width; o += L) {
                const auto [b1, b2] = get_batch(o);
                simd::fma(b1, b1, B::load_unaligned(px.n1 + o)).store_unaligned(px.n1 + o);
                simd::fma(b2, b2, B::load_unaligned(px.n2 + o)).store_unaligned(px.n2 + o);
                simd::fma(b1, b2, B::load_unaligned(px.dot + o)).store_unaligned(px.dot + o);
            }
        }
    }
    for (; o < width; ++o) {
        const auto [b1, b2] = get(o);
        px.n1[o] = simd::fma(b1, b1, px.n1[o]);
        px.n2[o] = simd::fma(b2, b2, px.n2[o]);
        px.dot[o] = simd::fma(b1, b2, px.dot[o]);
    }
}

/// dst[o * dx] = a1[o] b1 + a2[o] b2 for one channel.
template <class T, class Scalar, class Batch>
void write_channel(const slerp_pixels<T>& px, index_t width, bool simd_ok, T* dst, index_t dx, Scalar get,
                   Batch get_batch) {
    index_t o = 0;
    if constexpr (simd::enabled) {
        if (simd_ok && dx == 1) {
            using B = simd::batch<T>;
            constexpr auto L = static_cast<index_t>(B::size);
            for (; o + L <= width; o += L) {
                const auto [b1, b2] = get_batch(o);
                simd::fma(B::load_unaligned(px.a2 + o), b2, B::load_unaligned(px.a1 + o) * b1).store_unaligned(dst + o);
            }
        }
    }
    for (; o < width; ++o) {
        const auto [b1, b2] = get(o);
        dst[o * dx] = simd::fma(px.a2[o], b2, px.a1[o] * b1);
    }
}

/// bislerp of one group (one batch item, one frame): C channels of H x W, channel stride cs.
template <class T>
class bislerp_group {
public:
    bislerp_group(const axis_taps<T>& tw, const axis_taps<T>& th, index_t C, T* rows, const slerp_pixels<T>& px) noexcept
        : tw_(tw), th_(th), C_(C), rows_(rows), px_(px) {}

    void run(const T* src, index_t cs, index_t sy, index_t sx, T* dst, index_t ocs, index_t osy, index_t osx) {
        held_ = {-1, -1};
        const index_t Wo = tw_.out;
        const std::array<T*, 2> buf{rows_, rows_ + C_ * Wo};
        // Pass one of source row y into a buffer not holding `keep`.
        const auto fetch = [&](index_t y, index_t keep) -> const T* {
            for (int s = 0; s < 2; ++s)
                if (held_[static_cast<std::size_t>(s)] == y) return buf[static_cast<std::size_t>(s)];
            const std::size_t s = held_[0] == keep ? 1 : 0;
            pass_one(src + y * sy, cs, sx, buf[s]);
            held_[s] = y;
            return buf[s];
        };
        for (index_t yo = 0; yo < th_.out; ++yo) {
            const index_t y1 = th_.index(0, yo), y2 = th_.index(1, yo);
            const T* r1 = fetch(y1, y2);
            const T* r2 = fetch(y2, y1);
            pass_two(r1, r2, th_.weight(0, yo), dst + yo * osy, ocs, osx);
        }
    }

private:
    void clear_sums(index_t width) const {
        std::fill_n(px_.n1, width, T(0));
        std::fill_n(px_.n2, width, T(0));
        std::fill_n(px_.dot, width, T(0));
    }

    /// Along W: one source row of every channel (channel stride cs) to out (C x Wo).
    void pass_one(const T* row, index_t cs, index_t sx, T* out) const {
        const index_t Wo = tw_.out;
        const auto* i1 = &tw_.index(0, 0);
        const auto* i2 = &tw_.index(1, 0);
        const bool simd_ok = sx == 1;
        clear_sums(Wo);
        for (index_t c = 0; c < C_; ++c) {
            const T* r = row + c * cs;
            if (c + 2 < C_) prefetch_row(r + 2 * cs, tw_.in, sx);
            add_channel<T>(px_, Wo, simd_ok, pair_at(r, sx, i1, i2), pair_gather(r, i1, i2));
        }
        for (index_t o = 0; o < Wo; ++o)
            slerp_coefficients<T>(px_.n1[o], px_.n2[o], px_.dot[o], tw_.weight(0, o), px_.a1[o], px_.a2[o]);
        for (index_t c = 0; c < C_; ++c) {
            const T* r = row + c * cs;
            write_channel<T>(px_, Wo, simd_ok, out + c * Wo, 1, pair_at(r, sx, i1, i2), pair_gather(r, i1, i2));
        }
    }

    /// Along H: output row from rows r1, r2 (C x Wo each) with ratio r.
    void pass_two(const T* r1, const T* r2, T r, T* dst, index_t ocs, index_t osx) const {
        const index_t Wo = tw_.out;
        clear_sums(Wo);
        for (index_t c = 0; c < C_; ++c)
            add_channel<T>(px_, Wo, true, pair_rows(r1 + c * Wo, r2 + c * Wo), pair_loads(r1 + c * Wo, r2 + c * Wo));
        for (index_t o = 0; o < Wo; ++o) slerp_coefficients<T>(px_.n1[o], px_.n2[o], px_.dot[o], r, px_.a1[o], px_.a2[o]);
        for (index_t c = 0; c < C_; ++c)
            write_channel<T>(px_, Wo, true, dst + c * ocs, osx, pair_rows(r1 + c * Wo, r2 + c * Wo),
                             pair_loads(r1 + c * Wo, r2 + c * Wo));
    }

    static auto pair_at(const T* r, index_t sx, const index_type<T>* i1, const index_type<T>* i2) {
        return [=](index_t o) { return std::array<T, 2>{r[i1[o] * sx], r[i2[o] * sx]}; };
    }
    static auto pair_gather(const T* r, const index_type<T>* i1, const index_type<T>* i2) {
        return [=](index_t o) {
            using B = simd::vec<T>;
            return std::array<B, 2>{simd::gather<B>(r, i1 + o), simd::gather<B>(r, i2 + o)};
        };
    }
    static auto pair_rows(const T* a, const T* b) {
        return [=](index_t o) { return std::array<T, 2>{a[o], b[o]}; };
    }
    static auto pair_loads(const T* a, const T* b) {
        return [=](index_t o) {
            using B = simd::vec<T>;
            return std::array<B, 2>{simd::load<B>(a + o), simd::load<B>(b + o)};
        };
    }

    const axis_taps<T>& tw_;
    const axis_taps<T>& th_;
    index_t C_;
    T* rows_;
    slerp_pixels<T> px_;
    std::array<index_t, 2> held_{-1, -1};
};

template <class T, std::size_t R>
void resize_bislerp(const view<const T, R>& in, const view<T, R>& out, workspace& ws) {
    const index_t C = in.extent(1), H = in.extent(R - 2), W = in.extent(R - 1), Ho = out.extent(R - 2),
                  Wo = out.extent(R - 1);
    const auto tw = make_taps<T>(resize_method::bislerp, W, Wo, ws, key_index_w, key_weight_w);
    const auto th = make_taps<T>(resize_method::bislerp, H, Ho, ws, key_index_h, key_weight_h);
    T* const rows = ws.buffer<T>(key_rows, static_cast<std::size_t>(2 * C * Wo)).data();
    T* const p = ws.buffer<T>(key_pixels, static_cast<std::size_t>(5 * Wo)).data();
    bislerp_group<T> g(tw, th, C, rows, slerp_pixels<T>{p, p + Wo, p + 2 * Wo, p + 3 * Wo, p + 4 * Wo});
    const index_t frames = R == 5 ? in.extent(2) : 1;
    for (index_t n = 0; n < in.extent(0); ++n)
        for (index_t f = 0; f < frames; ++f) {
            index_t io = n * in.stride(0), oo = n * out.stride(0);
            if constexpr (R == 5) {
                io += f * in.stride(2);
                oo += f * out.stride(2);
            }
            g.run(in.data_handle() + io, in.stride(1), in.stride(R - 2), in.stride(R - 1), out.data_handle() + oo,
                  out.stride(1), out.stride(R - 2), out.stride(R - 1));
        }
}

} // namespace resize_detail

/// out = in resized over its last two dims to out's (H', W'), as ComfyUI's
/// common_upscale(in, W', H', method, "disabled"): R = 4 is (N, C, H, W), R = 5 (N, C, T, H, W)
/// with every frame resized on its own. The other dims of in and out must agree; out must not
/// overlap in. A size that does not change copies in.
template <class T, std::size_t R>
void resize(std::type_identity_t<view<const T, R>> in, view<T, R> out, resize_method method, workspace& ws) {
    static_assert(R == 4 || R == 5, "kernels::resize takes 4-D (N, C, H, W) or 5-D (N, C, T, H, W) tensors");
    constexpr std::string_view where = "kernels::resize";
    require_nonempty(in, where, "in");
    require_nonempty(out, where, "out");
    for (std::size_t r = 0; r + 2 < R; ++r)
        PATCHBAY_REQUIRE(in.extent(r) == out.extent(r), where,
                         "tensor 'out' has shape " + shape_string(out) + "; all but its last two dims must match 'in' " +
                             shape_string(in));
    PATCHBAY_REQUIRE(static_cast<std::size_t>(method) < resize_method_names.size(), where,
                     "unknown resize method " + std::to_string(static_cast<int>(method)));
    require_writable_layout(out, where, "out");
    PATCHBAY_REQUIRE(!may_overlap(out, in), where, "output 'out' overlaps input 'in'");
    if (in.extents() == out.extents()) {
        kernels::copy<T, R>(in, out);
        return;
    }
    if (method == resize_method::bislerp) resize_detail::resize_bislerp<T, R>(in, out, ws);
    else if (method == resize_method::nearest_exact) resize_detail::resize_nearest<T, R>(in, out, ws);
    else resize_detail::resize_linear<T, R>(in, out, method, ws);
}

/// As above with a temporary workspace.
template <class T, std::size_t R>
void resize(std::type_identity_t<view<const T, R>> in, view<T, R> out, resize_method method) {
    workspace ws;
    resize<T, R>(in, out, method, ws);
}

} // namespace patchbay::kernels
