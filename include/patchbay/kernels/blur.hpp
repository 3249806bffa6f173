// patchbay: the 9-tap Gaussian blur Self-Attention Guidance applies to its degraded image.
//
// ComfyUI (nodes_sag.py, gaussian_blur_2d) builds a 9x9 kernel as the outer product of
// k = exp(-0.5 (t/sigma)^2), t = -4..4, normalised to sum 1, pads each plane by 4 with
// *reflect* padding (the edge sample is not repeated) and convolves every channel on its own.
// The kernel is separable, so here it is two 9-tap passes (rows, then columns) instead of 81
// taps per pixel, SIMD along the row.
//
// blur_sigma 0: ComfyUI divides 0 by 0 and returns NaN everywhere. patchbay returns the limit
// of the kernel as sigma -> 0, a unit impulse, i.e. the input unchanged.
//
// `masked_gaussian_blur_2d` blends the blur with the input through a token mask (a coarse
// rows x cols grid of on/off, upsampled nearest-neighbour to H x W), which is what SAG's
// create_blur_map computes as blur(x)*mask + x*(1-mask); rows the mask never touches are
// copied without being blurred.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "patchbay/core/config.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::kernels {

/// Taps of SAG's blur kernel and its radius (reflect padding on each side).
inline constexpr index_t blur_taps = 9;
inline constexpr index_t blur_radius = 4;

/// The normalised 1-D Gaussian taps for t = -4..4. sigma 0 gives the unit impulse.
template <class T>
std::array<T, blur_taps> gaussian_taps(double sigma) {
    std::array<T, blur_taps> w{};
    if (sigma == 0.0) {
        w[blur_radius] = T(1);
        return w;
    }
    std::array<double, blur_taps> pdf{};
    double sum = 0.0;
    for (index_t i = 0; i < blur_taps; ++i) {
        const double t = static_cast<double>(i - blur_radius) / sigma;
        pdf[static_cast<std::size_t>(i)] = std::exp(-0.5 * t * t);
        sum += pdf[static_cast<std::size_t>(i)];
    }
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<T>(pdf[i] / sum);
    return w;
}

/// Scratch memory of the blur; reused between calls, it grows only when a larger plane comes.
template <class T>
struct blur_workspace {
    std::vector<T> padded;     // one input row with reflect padding (W + 8)
    std::vector<T> horizontal; // ring of the last 9 row-blurred rows (9 x W)
    std::vector<T> column;     // one output row before it is written (W)
    std::vector<index_t> src_row, src_col; // nearest source token row/column of each pixel
    std::vector<std::uint8_t> row_on;      // does output row y contain a masked pixel
    std::vector<T> pixel_mask;             // the upsampled mask of one batch item (H x W, 0 / 1)
};

/// A token mask for masked_gaussian_blur_2d: `on[b*rows*cols + r*cols + c]` is nonzero where
/// token (r, c) of batch item b selects the blurred value.
struct token_mask {
    const std::uint8_t* on = nullptr;
    index_t rows = 0;
    index_t cols = 0;
};

namespace blur_detail {

/// Reflect index i in [-4, n+3] into [0, n) without repeating the edge (needs n >= 5).
inline index_t reflect_index(index_t i, index_t n) noexcept {
    if (i < 0) return -i;
    if (i >= n) return 2 * (n - 1) - i;
    return i;
}

/// torch's nearest source index: floor(dst * (float(in) / out)), clamped to in - 1.
/// The scale is a float as in torch's upsample_nearest2d, so the indices are identical.
inline index_t nearest_source(index_t dst, index_t in, index_t out) noexcept {
    if (in == out) return dst;
    if (out == 2 * in) return dst >> 1;
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    const auto s = static_cast<index_t>(std::floor(static_cast<float>(dst) * scale));
    return std::min(s, in - 1);
}

/// sum_t w[t] tap(t) over the 9 taps, paired by symmetry (w[t] == w[8-t]): 5 multiplies instead
/// of 9, from the centre out (every row of the blur adds in this order).
template <class V, class Tap>
PATCHBAY_ALWAYS_INLINE V symmetric_taps(const std::array<V, 5>& w, Tap tap) noexcept {
    V acc = tap(4) * w[4];
    acc = simd::fma(tap(3) + tap(5), w[3], acc);
    acc = simd::fma(tap(2) + tap(6), w[2], acc);
    acc = simd::fma(tap(1) + tap(7), w[1], acc);
    return simd::fma(tap(0) + tap(8), w[0], acc);
}

/// The 9 taps over a contiguous row, SIMD where possible: dst[x] = sum_t w[t] r[t][x]. Masked:
/// the column pass fused with the blend, dst[x] = mask[x] != 0 ? the taps : input[x], where runs
/// of SIMD width with no masked pixel skip the taps; dst may then be input (in place). dst is
/// never a tap row.
template <bool Masked, class T>
void tap_row(const std::array<T, blur_taps>& w, index_t n, T* dst, const std::array<const T*, blur_taps>& taps_in,
             const T* mask = nullptr, const T* input = nullptr) {
    // a local copy of the row pointers: a store to dst cannot change them, so they stay in
    // registers (through the caller's array every store would force a reload)
    const std::array<const T*, blur_taps> r = taps_in;
    index_t x = 0;
    if constexpr (simd::enabled) {
        using B = simd::batch<T>;
        constexpr index_t L = static_cast<index_t>(B::size);
        const std::array<B, 5> wb{B(w[0]), B(w[1]), B(w[2]), B(w[3]), B(w[4])};
        for (; x + L <= n; x += L) {
            auto taps = [&] { return symmetric_taps(wb, [&](std::size_t t) { return B::load_unaligned(r[t] + x); }); };
            if constexpr (Masked) {
                const auto on = B::load_unaligned(mask + x) != B(T(0));
                const B in = B::load_unaligned(input + x);
                if (!simd::any(on)) in.store_unaligned(dst + x);
                else simd::select(on, taps(), in).store_unaligned(dst + x);
            } else {
                taps().store_unaligned(dst + x);
            }
        }
    }
    const std::array<T, 5> ws{w[0], w[1], w[2], w[3], w[4]};
    for (; x < n; ++x) {
        if constexpr (Masked)
            if (mask[x] == T(0)) {
                dst[x] = input[x];
                continue;
            }
        dst[x] = symmetric_taps(ws, [&](std::size_t t) { return r[t][x]; });
    }
}

template <class T>
void check_blur_args(const view<const T, 4>& img, const view<T, 4>& out, double sigma,
                     const char* where) {
    require_nonempty(img, where, "img");
    require_same_shape(img, out, where, "img", "out");
    PATCHBAY_REQUIRE(!(sigma < 0.0) && std::isfinite(sigma), where,
            "parameter 'blur_sigma' must be finite and >= 0, got " + patchbay::detail::fmt_num(sigma));
    PATCHBAY_REQUIRE(img.extent(2) > blur_radius && img.extent(3) > blur_radius, where,
            "tensor 'img' must be at least 5x5 for the reflect padding of 4, got " +
                shape_string(img));
    require_writable_layout(out, where, "out");
    require_no_partial_overlap(out, img, where, "out", "img");
}

/// Blur every plane of img into out; where `mask` is given, only masked pixels take the
/// blurred value and the rest copy img. out may be exactly img.
template <class T>
void blur_planes(view<const T, 4> img, double sigma, const token_mask* mask, view<T, 4> out,
                 blur_workspace<T>& ws) {
    const index_t B = img.extent(0), C = img.extent(1), H = img.extent(2), W = img.extent(3);
    const auto w = gaussian_taps<T>(sigma);
    const auto uW = static_cast<std::size_t>(W), uH = static_cast<std::size_t>(H);
    ws.padded.resize(uW + 2 * blur_radius);
    ws.horizontal.resize(uW * static_cast<std::size_t>(blur_taps));
    ws.column.resize(uW);
    ws.row_on.resize(uH);
    if (mask) {
        ws.src_row.resize(uH);
        ws.src_col.resize(uW);
        ws.pixel_mask.resize(uW * uH);
        for (index_t y = 0; y < H; ++y) ws.src_row[static_cast<std::size_t>(y)] = nearest_source(y, mask->rows, H);
        for (index_t x = 0; x < W; ++x) ws.src_col[static_cast<std::size_t>(x)] = nearest_source(x, mask->cols, W);
    }
    T* const pad = ws.padded.data();
    T* const hor = ws.horizontal.data();
    T* const col = ws.column.data();
    T* const pm = ws.pixel_mask.data();
    for (index_t b = 0; b < B; ++b) {
        // The item's pixel mask (nearest-upsampled tokens) and which rows hold a masked pixel.
        bool any = !mask;
        for (index_t y = 0; y < H; ++y) {
            bool row = !mask;
            if (mask) {
                T* pr = pm + y * W;
                const index_t src = ws.src_row[static_cast<std::size_t>(y)];
                if (y > 0 && src == ws.src_row[static_cast<std::size_t>(y - 1)]) { // same token row
                    std::copy_n(pr - W, W, pr);
                    row = ws.row_on[static_cast<std::size_t>(y - 1)] != 0;
                } else {
                    const std::uint8_t* tr = mask->on + (b * mask->rows + src) * mask->cols;
                    for (index_t x = 0; x < W; ++x) {
                        const bool on = tr[ws.src_col[static_cast<std::size_t>(x)]] != 0;
                        pr[x] = on ? T(1) : T(0);
                        row = row || on;
                    }
                }
            }
            ws.row_on[static_cast<std::size_t>(y)] = row;
            any = any || row;
        }
        for (index_t c = 0; c < C; ++c) {
            const T* ip = &img(b, c, 0, 0);
            T* op = &out(b, c, 0, 0);
            const index_t is_y = img.stride(2), is_x = img.stride(3);
            const index_t os_y = out.stride(2), os_x = out.stride(3);
            const bool in_place = static_cast<const T*>(op) == ip && os_y == is_y && os_x == is_x;
            auto copy_row = [&](index_t y) {
                if (in_place) return;
                const T* ir = ip + y * is_y;
                T* orow = op + y * os_y;
                for (index_t x = 0; x < W; ++x) orow[x * os_x] = ir[x * is_x];
            };
            if (!any) { // nothing to blur in this item: copy (nothing to do in place)
                for (index_t y = 0; y < H; ++y) copy_row(y);
                continue;
            }
            // One pass down the plane: input row y is reflect-padded and row-blurred into a
            // ring of the last 9 row-blurred rows; output row y - 4 is then complete (its taps
            // are rows y-8 .. y, reflected at the edges, all in the ring), so the intermediate
            // stays in L1. Output rows trail the input rows read by 4, so out may be img.
            auto row_blur = [&](index_t y) {
                const T* r = ip + y * is_y;
                if (is_x == 1) std::copy_n(r, W, pad + blur_radius);
                else
                    for (index_t x = 0; x < W; ++x) pad[x + blur_radius] = r[x * is_x];
                for (index_t k = 1; k <= blur_radius; ++k) { // reflect: the edge is not repeated
                    pad[blur_radius - k] = pad[blur_radius + k];
                    pad[blur_radius + W - 1 + k] = pad[blur_radius + W - 1 - k];
                }
                std::array<const T*, blur_taps> taps{};
                for (index_t t = 0; t < blur_taps; ++t) taps[static_cast<std::size_t>(t)] = pad + t;
                tap_row<false>(w, W, hor + (y % blur_taps) * W, taps);
            };
            auto column_blur = [&](index_t y) {
                if (!ws.row_on[static_cast<std::size_t>(y)]) {
                    copy_row(y);
                    return;
                }
                std::array<const T*, blur_taps> taps{};
                for (index_t t = 0; t < blur_taps; ++t)
                    taps[static_cast<std::size_t>(t)] =
                        hor + (reflect_index(y + t - blur_radius, H) % blur_taps) * W;
                T* orow = op + y * os_y;
                const T* irow = ip + y * is_y;
                if (mask && os_x == 1 && is_x == 1) {
                    tap_row<true>(w, W, orow, taps, pm + y * W, irow);
                    return;
                }
                const bool direct = os_x == 1 && !mask;
                tap_row<false>(w, W, direct ? orow : col, taps);
                if (direct) return;
                if (mask) {
                    const T* pr = pm + y * W;
                    for (index_t x = 0; x < W; ++x) orow[x * os_x] = pr[x] != T(0) ? col[x] : irow[x * is_x];
                } else {
                    for (index_t x = 0; x < W; ++x) orow[x * os_x] = col[x];
                }
            };
            for (index_t y = 0; y < H; ++y) {
                row_blur(y);
                if (y >= blur_radius) column_blur(y - blur_radius);
            }
            for (index_t y = std::max<index_t>(0, H - blur_radius); y < H; ++y) column_blur(y);
        }
    }
}

} // namespace blur_detail

/// out = 9-tap Gaussian blur of every (batch, channel) plane of img, reflect padding 4.
/// img must be at least 5x5; out may be exactly img. blur_sigma 0 copies img.
template <class T>
void gaussian_blur_2d(std::type_identity_t<view<const T, 4>> img, double blur_sigma, view<T, 4> out,
                      blur_workspace<T>& ws) {
    blur_detail::check_blur_args(img, out, blur_sigma, "gaussian_blur_2d");
    blur_detail::blur_planes<T>(img, blur_sigma, nullptr, out, ws);
}

/// As above with a temporary workspace.
template <class T>
void gaussian_blur_2d(std::type_identity_t<view<const T, 4>> img, double blur_sigma, view<T, 4> out) {
    blur_workspace<T> ws;
    gaussian_blur_2d<T>(img, blur_sigma, out, ws);
}

/// out = blur(img) where the nearest-upsampled token mask is on, img elsewhere (SAG's
/// blur(x0)*mask + x0*(1-mask), exact for finite input). The mask holds img.extent(0) items
/// of rows x cols tokens. out may be exactly img.
template <class T>
void masked_gaussian_blur_2d(std::type_identity_t<view<const T, 4>> img, double blur_sigma,
                             const token_mask& mask, view<T, 4> out, blur_workspace<T>& ws) {
    constexpr const char* where = "masked_gaussian_blur_2d";
    blur_detail::check_blur_args(img, out, blur_sigma, where);
    PATCHBAY_REQUIRE(mask.on != nullptr && mask.rows >= 1 && mask.cols >= 1, where,
            "the token mask must be non-empty, got " + std::to_string(mask.rows) + "x" +
                std::to_string(mask.cols));
    blur_detail::blur_planes<T>(img, blur_sigma, &mask, out, ws);
}

} // namespace patchbay::kernels
