// LatentApplyOperationCFG with the latent operations LatentOperationSharpen and
// LatentOperationTonemapReinhard; matches ComfyUI's nodes of those names
// (comfy_extras/nodes_latent.py), a pre-CFG function. No paper: ComfyUI's experimental nodes.
//
// The patch holds its operation as a value (ComfyUI links a LATENT_OPERATION node into its
// `operation` input; the workflow importer parses that node into the variant). With the two
// predictions of the sampler:  cond = op(cond - uncond) + uncond, uncond unchanged (at
// cond_scale 1 uncond is zeros, so cond = op(cond)). A guider with three predictions
// (Perp-Neg) calls the three-prediction overload: cond = op(cond), the others unchanged.
//
// Sharpen (an unsharp mask), d = cond - uncond, per batch item and frame:
//   lum = ||d||_channels + 1e-6 per pixel, n = d / lum;
//   G = gaussian_kernel(2r+1, sigma) on the grid linspace(-1, 1, 2r+1) (sigma relative to the
//       half-width r), normalised; the kernel is K = -10 alpha G with its centre raised so it sums
//       to 1, i.e. K = (1 + 10 alpha) delta - 10 alpha G;
//   op(d) = lum * (n (*) K) = lum * (n + 10 alpha (n - n (*) G)),
//   with n reflect-padded by r (the edge is not repeated). G is separable, so the blur is two
//   passes of 2r+1 taps (kernels/sharpen.hpp). H and W must exceed r (ComfyUI's reflect padding
//   raises otherwise). 5-D latents (B, C, T, H, W): each frame on its own (ComfyUI raises; the
//   golden cases record this per-frame generalisation). alpha 0: the identity (exactly).
// TonemapReinhard, d = cond - uncond, per batch item:
//   m = ||d||_channels + 1e-10 per pixel; top = (5 std(m) + mean(m)) * multiplier over the
//   item's pixels (std Bessel-corrected); m' = top (m/top) / ((m/top) + 1); op(d) = (d/m) m',
//   written as d * (m'/m) (one division per pixel instead of one per element).
//   Where ComfyUI gives NaN from finite input patchbay returns the limit: multiplier 0 (top 0)
//   -> m' = 0, so cond = uncond; one pixel per item (std of one value) -> std = 0.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <variant>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "patchbay/kernels/sharpen.hpp"

namespace patchbay {

namespace latent_operation_detail {

/// Keys of the operations' scratch (patch range of the workspace).
enum scratch : std::size_t { key_zeros = workspace::patch_keys, key_magnitude, key_factor };

/// Per-pixel L2 norm over the channels of cond - uncond, plus eps: out[b * P + p] for batch
/// item b and pixel p (P pixels per item, 5-D frames included). The squares are summed channel by
/// channel (in order, in T) into `out`, which stays in cache while the channels stream past.
template <class T, std::size_t R>
void channel_norms(const view<const T, R>& cond, const view<const T, R>& uncond, T eps, T* out) {
    std::array<index_t, R> e = cond.extents();
    e[1] = 1;
    const view<T, R> acc(out, e);
    kernels::transform(
        acc, [](auto c, auto u) { const auto d = c - u; return d * d; }, cond.channel_slice(0, 1),
        uncond.channel_slice(0, 1));
    for (index_t ch = 1; ch < cond.extent(1); ++ch)
        kernels::transform(
            acc, [](auto a, auto c, auto u) { const auto d = c - u; return a + d * d; }, view<const T, R>(acc),
            cond.channel_slice(ch, 1), uncond.channel_slice(ch, 1));
    kernels::transform(acc, [eps](auto a) { return simd::sqrt(a) + eps; }, view<const T, R>(acc));
}

/// A view of per-pixel values (P per item) broadcast over the channels of `like`.
template <class T, std::size_t R>
view<const T, R> per_pixel(const T* values, const std::array<index_t, R>& extents) {
    std::array<index_t, R> strides{};
    index_t s = 1;
    for (std::size_t r = R; r-- > 2;) {
        strides[r] = s;
        s *= extents[r];
    }
    strides[1] = 0;
    strides[0] = s;
    return view<const T, R>(values, extents, strides);
}

} // namespace latent_operation_detail

/// ComfyUI "LatentOperationSharpen": a LATENT_OPERATION value (never a patch of its own).
struct latent_operation_sharpen {
    int sharpen_radius = 9; ///< kernel radius r (2r+1 taps), [1, 31]
    double sigma = 1.0;     ///< Gaussian width relative to r, [0.1, 10]
    double alpha = 0.1;     ///< sharpening strength, [0, 5]; 0 = identity

    /// The slot is a placeholder: the operation is a value a patch holds.
    static constexpr auto descriptor() {
        return describe<latent_operation_sharpen>(
            "LatentOperationSharpen", "LatentOperationSharpen", hook_kind::pre_cfg,
            integer("sharpen_radius", &latent_operation_sharpen::sharpen_radius, 9, 1, 31, 1),
            floating("sigma", &latent_operation_sharpen::sigma, 1.0, 0.1, 10.0, 0.1),
            floating("alpha", &latent_operation_sharpen::alpha, 0.1, 0.0, 5.0, 0.01));
    }
    void validate() const { patchbay::validate(*this); }

    /// cond = sharpen(cond - uncond) + uncond, in place; 4-D, or 5-D frame by frame.
    template <class T, std::size_t R>
    void apply(view<T, R> cond, std::type_identity_t<view<const T, R>> uncond, workspace& ws) const {
        static_assert(R == 4 || R == 5, "LatentOperationSharpen works on 4-D or 5-D latents");
        const index_t r = sharpen_radius, H = cond.extent(R - 2), W = cond.extent(R - 1);
        PATCHBAY_REQUIRE(H > r && W > r, "LatentOperationSharpen",
                         "the latent must be larger than sharpen_radius (" + std::to_string(r) +
                             ") in height and width for the reflect padding, got " + shape_string(cond));
        if (alpha == 0.0) return; // the kernel is the unit impulse
        const index_t B = cond.extent(0), C = cond.extent(1), frames = R == 5 ? cond.extent(2) : 1;
        T* const lum = ws.buffer<T>(latent_operation_detail::key_magnitude, static_cast<std::size_t>(cond.size() / C))
                           .data();
        latent_operation_detail::channel_norms<T, R>(cond, uncond, T(1e-6), lum);

        std::array<T, kernels::reflect_blur_max_radius + 1> taps{};
        const std::span<T> half(taps.data(), static_cast<std::size_t>(r + 1));
        kernels::gaussian_half_taps<T>(r, sigma, half);
        const T gain = static_cast<T>(10.0 * alpha); // K = (1 + gain) delta - gain G
        // (frame f of 5-D latents is dim 2; rows and columns are the last two dims)
        const index_t cy = cond.stride(R - 2), cx = cond.stride(R - 1), uy = uncond.stride(R - 2),
                      ux = uncond.stride(R - 1), cc = cond.stride(1), uc = uncond.stride(1);
        for (index_t b = 0; b < B; ++b)
            for (index_t f = 0; f < frames; ++f) {
                T* const cf = cond.data_handle() + b * cond.stride(0) + (R == 5 ? f * cond.stride(2) : 0);
                const T* const uf = uncond.data_handle() + b * uncond.stride(0) + (R == 5 ? f * uncond.stride(2) : 0);
                const T* const lf = lum + (b * frames + f) * H * W;
                // row y of planes p0 .. p0+np-1 of cond, uncond and lum (broadcast over planes)
                const auto cond_row = [&](index_t y, index_t p0, index_t np) {
                    return view<T, 2>(cf + p0 * cc + y * cy, {np, W}, {cc, cx});
                };
                const auto uncond_row = [&](index_t y, index_t p0, index_t np) {
                    return view<const T, 2>(uf + p0 * uc + y * uy, {np, W}, {uc, ux});
                };
                const auto lum_row = [&](index_t y, index_t np) { return view<const T, 2>(lf + y * W, {np, W}, {0, 1}); };
                // input rows: n = d / lum
                const auto load = [&](index_t y, index_t p0, index_t np, T* dst, index_t stride) {
                    kernels::transform(view<T, 2>(dst, {np, W}, {stride, 1}),
                                       [](auto c, auto u, auto l) { return (c - u) / l; },
                                       view<const T, 2>(cond_row(y, p0, np)), uncond_row(y, p0, np), lum_row(y, np));
                };
                // output rows: cond = uncond + lum (n + 10 alpha (n - blur(n))), n as loaded; the
                // difference first, so a kernel close to the impulse (small sigma) cancels exactly
                const auto emit = [&](index_t y, index_t p0, index_t np, const T* blurred, index_t stride,
                                      const T* n, index_t n_stride) {
                    kernels::transform(
                        cond_row(y, p0, np),
                        [gain](auto u, auto l, auto nv, auto g) { return u + l * (nv + (nv - g) * gain); },
                        uncond_row(y, p0, np), lum_row(y, np), view<const T, 2>(n, {np, W}, {n_stride, 1}),
                        view<const T, 2>(blurred, {np, W}, {stride, 1}));
                };
                kernels::reflect_blur_rows<T>(H, W, C, std::span<const T>(half), load, emit, ws);
            }
    }
};

/// ComfyUI "LatentOperationTonemapReinhard": a LATENT_OPERATION value (never a patch of its own).
struct latent_operation_tonemap_reinhard {
    double multiplier = 1.0; ///< scales the Reinhard white point, [0, 100]; 0 maps d to 0

    /// The slot is a placeholder: the operation is a value a patch holds.
    static constexpr auto descriptor() {
        return describe<latent_operation_tonemap_reinhard>(
            "LatentOperationTonemapReinhard", "LatentOperationTonemapReinhard", hook_kind::pre_cfg,
            floating("multiplier", &latent_operation_tonemap_reinhard::multiplier, 1.0, 0.0, 100.0, 0.01));
    }
    void validate() const { patchbay::validate(*this); }

    /// The white point of a batch item whose pixel magnitudes have this mean and std.
    double top(double mean, double std) const { return (std * 5.0 + mean) * multiplier; }

    /// cond = tonemap(cond - uncond) + uncond, in place; 4-D or 5-D.
    template <class T, std::size_t R>
    void apply(view<T, R> cond, std::type_identity_t<view<const T, R>> uncond, workspace& ws) const {
        static_assert(R == 4 || R == 5, "LatentOperationTonemapReinhard works on 4-D or 5-D latents");
        using namespace latent_operation_detail;
        const index_t B = cond.extent(0), P = cond.size() / (B * cond.extent(1));
        const auto count = static_cast<std::size_t>(B * P);
        T* const m = ws.buffer<T>(key_magnitude, count).data();
        T* const factor = ws.buffer<T>(key_factor, count).data();
        channel_norms<T, R>(cond, uncond, T(1e-10), m);
        for (index_t b = 0; b < B; ++b) {
            const view<const T, 1> mb(m + b * P, {P});
            const view<T, 1> fb(factor + b * P, {P});
            // mean and Bessel std from sums about the first magnitude (fb is overwritten below)
            const T shift = m[b * P];
            const auto s = kernels::transform_reduce<2>(
                fb, [](auto v) { return v; },
                [shift](auto v, auto) {
                    const auto d = v - shift;
                    return std::array{d, d * d};
                },
                mb);
            const double n = static_cast<double>(P), mean = static_cast<double>(shift) + s[0] / n;
            const double var = n > 1.0 ? std::max(0.0, (s[1] - s[0] * s[0] / n) / (n - 1.0)) : 0.0; // 1 pixel: 0
            const double t = top(mean, std::sqrt(var));
            if (!(t > 0.0)) { // multiplier 0: ComfyUI's 1/top is inf (NaN); the limit is m' = 0
                kernels::fill(fb, T(0));
                continue;
            }
            // factor = m' / m, so the write is d * factor (one division per pixel, not per element)
            const T inv = static_cast<T>(1.0 / t), tt = static_cast<T>(t);
            kernels::transform(fb, [inv, tt](auto v) {
                const auto a = v * inv;
                return a / (a + T(1)) * tt / v;
            }, mb);
        }
        kernels::transform(
            cond, [](auto c, auto u, auto f) { return (c - u) * f + u; }, view<const T, R>(cond), uncond,
            per_pixel<T, R>(factor, cond.extents()));
    }
};

/// ComfyUI "LatentApplyOperationCFG".
struct latent_apply_operation_cfg {
    using operation_type = std::variant<latent_operation_sharpen, latent_operation_tonemap_reinhard>;
    operation_type operation{}; ///< the linked LATENT_OPERATION node

    static constexpr auto descriptor() {
        return describe<latent_apply_operation_cfg>(
            "LatentApplyOperationCFG", "LatentApplyOperationCFG", hook_kind::pre_cfg,
            link("operation", &latent_apply_operation_cfg::operation, "LATENT_OPERATION"));
    }
    void validate() const { patchbay::validate(*this); }

    /// ComfyUI's hook on conds_out, in place. Two predictions (the default cfg stage):
    /// cond = op(cond - uncond) + uncond. Three (in.prediction_count, inside PerpNegGuider):
    /// ComfyUI's other branch, cond = op(cond), the op on the raw positive prediction. uncond
    /// (and the third prediction) are unchanged.
    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond) const {
        workspace local; // a standalone call (no run): scratch for this call only
        workspace& ws = in.scratch ? *in.scratch : local;
        if (in.prediction_count == 2) {
            run<T, R>(cond, uncond, ws);
            return;
        }
        T* const zeros = ws.buffer<T>(latent_operation_detail::key_zeros, static_cast<std::size_t>(cond.size())).data();
        const view<T, R> none(zeros, cond.extents());
        kernels::fill(none, T(0)); // op(cond - 0) + 0 is op(cond)
        run<T, R>(cond, none, ws);
    }

private:
    template <class T, std::size_t R>
    void run(view<T, R> cond, view<const T, R> uncond, workspace& ws) const {
        std::visit([&](const auto& op) { op.template apply<T, R>(cond, uncond, ws); }, operation);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::latent_apply_operation_cfg)
