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
    std::vector<T> horizontal; // the row-blurred plane (H x W)
    std::vector<T> column;     // one output row before it is written (W)
    std::vector<index_t> src_row, src_col; // nearest source token row/column of each pixel
    std::vector<std::uint8_t> row_on;      // does output row y contain a masked pixel
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

/// 9-tap weighted sum sum_t w[t] * src(t) over a contiguous row, SIMD where possible.
/// `at(t, x)` returns a pointer whose element x is tap t's input for output x.
template <class T, class Src>
void tap_row(const std::array<T, blur_taps>& w, index_t n, T* dst, Src&& src) {
    index_t x = 0;
    if constexpr (simd::enabled) {
        using B = simd::batch<T>;
        constexpr index_t L = static_cast<index_t>(B::size);
        for (; x + L <= n; x += L) {
            B acc = B::load_unaligned(src(0) + x) * B(w[0]);
            for (index_t t = 1; t < blur_taps; ++t)
                acc = xsimd::fma(B::load_unaligned(src(t) + x), B(w[static_cast<std::size_t>(t)]), acc);
            acc.store_unaligned(dst + x);
        }
    }
    for (; x < n; ++x) {
        T acc = src(0)[x] * w[0];
        for (index_t t = 1; t < blur_taps; ++t)
            acc = std::fma(src(t)[x], w[static_cast<std::size_t>(t)], acc);
        dst[x] = acc;
    }
}

template <class T>
void check_blur_args(const view<const T, 4>& img, const view<T, 4>& out, double sigma,
                     const char* where) {
    require_nonempty(img, where, "img");
    require_same_shape(img, out, where, "img", "out");
    require(!(sigma < 0.0) && std::isfinite(sigma), where,
            "parameter 'blur_sigma' must be finite and >= 0, got " + patchbay::detail::fmt_num(sigma));
    require(img.extent(2) > blur_radius && img.extent(3) > blur_radius, where,
            "tensor 'img' must be at least 5x5 for the reflect padding of 4, got " +
                shape_string(img));
    require_writable_layout(out, where, "out");
    require_no_partial_overlap(out, img, where, "out", "img");
}

/// Blur every plane of img into out; where `mask.on` is set, only masked pixels take the
/// blurred value and the rest copy img. out may be exactly img.
template <class T>
void blur_planes(view<const T, 4> img, double sigma, const token_mask* mask, view<T, 4> out,
                 blur_workspace<T>& ws) {
    const index_t B = img.extent(0), C = img.extent(1), H = img.extent(2), W = img.extent(3);
    const auto w = gaussian_taps<T>(sigma);
    const auto uW = static_cast<std::size_t>(W), uH = static_cast<std::size_t>(H);
    ws.padded.resize(uW + 2 * blur_radius);
    ws.horizontal.resize(uW * uH);
    ws.column.resize(uW);
    ws.row_on.resize(uH);
    if (mask) {
        ws.src_row.resize(uH);
        ws.src_col.resize(uW);
        for (index_t y = 0; y < H; ++y) ws.src_row[static_cast<std::size_t>(y)] = nearest_source(y, mask->rows, H);
        for (index_t x = 0; x < W; ++x) ws.src_col[static_cast<std::size_t>(x)] = nearest_source(x, mask->cols, W);
    }
    T* const pad = ws.padded.data();
    T* const hor = ws.horizontal.data();
    T* const col = ws.column.data();
    for (index_t b = 0; b < B; ++b) {
        // Which output rows hold a masked pixel (all of them without a mask).
        bool any = false;
        const std::uint8_t* on = mask ? mask->on + b * mask->rows * mask->cols : nullptr;
        for (index_t y = 0; y < H; ++y) {
            bool row = true;
            if (mask) {
                row = false;
                const std::uint8_t* tr = on + ws.src_row[static_cast<std::size_t>(y)] * mask->cols;
                for (index_t x = 0; x < W && !row; ++x) row = tr[ws.src_col[static_cast<std::size_t>(x)]] != 0;
            }
            ws.row_on[static_cast<std::size_t>(y)] = row;
            any = any || row;
        }
        for (index_t c = 0; c < C; ++c) {
            const T* ip = &img(b, c, 0, 0);
            T* op = &out(b, c, 0, 0);
            const index_t is_y = img.stride(2), is_x = img.stride(3);
            const index_t os_y = out.stride(2), os_x = out.stride(3);
            if (!any) { // nothing to blur in this item: copy (a no-op when out is img)
                if (static_cast<const T*>(op) != ip || os_y != is_y || os_x != is_x)
                    for (index_t y = 0; y < H; ++y)
                        for (index_t x = 0; x < W; ++x) op[y * os_y + x * os_x] = ip[y * is_y + x * is_x];
                continue;
            }
            // Rows: reflect-pad each input row, then the 9-tap pass.
            for (index_t y = 0; y < H; ++y) {
                const T* r = ip + y * is_y;
                for (index_t x = -blur_radius; x < W + blur_radius; ++x)
                    pad[x + blur_radius] = r[reflect_index(x, W) * is_x];
                tap_row(w, W, hor + y * W, [&](index_t t) -> const T* { return pad + t; });
            }
            // Columns: the 9-tap pass over reflected rows of the row-blurred plane, then the
            // blend with the input. Output rows are written only after every read of the
            // input (the rows pass above), so out may be img.
            for (index_t y = 0; y < H; ++y) {
                T* orow = op + y * os_y;
                const T* irow = ip + y * is_y;
                if (!ws.row_on[static_cast<std::size_t>(y)]) {
                    if (static_cast<const T*>(orow) != irow || os_x != is_x)
                        for (index_t x = 0; x < W; ++x) orow[x * os_x] = irow[x * is_x];
                    continue;
                }
                tap_row(w, W, col, [&](index_t t) -> const T* {
                    return hor + reflect_index(y + t - blur_radius, H) * W;
                });
                if (mask) {
                    const std::uint8_t* tr = on + ws.src_row[static_cast<std::size_t>(y)] * mask->cols;
                    for (index_t x = 0; x < W; ++x)
                        orow[x * os_x] = tr[ws.src_col[static_cast<std::size_t>(x)]] ? col[x] : irow[x * is_x];
                } else {
                    for (index_t x = 0; x < W; ++x) orow[x * os_x] = col[x];
                }
            }
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
    require(mask.on != nullptr && mask.rows >= 1 && mask.cols >= 1, where,
            "the token mask must be non-empty, got " + std::to_string(mask.rows) + "x" +
                std::to_string(mask.cols));
    blur_detail::blur_planes<T>(img, blur_sigma, &mask, out, ws);
}

} // namespace patchbay::kernels
