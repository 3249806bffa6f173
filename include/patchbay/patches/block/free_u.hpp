// patchbay: FreeU and FreeU_V2 (Si et al., "FreeU: Free Lunch in Diffusion U-Net", CVPR 2024),
// matching ComfyUI's "FreeU" and "FreeU_V2" nodes (comfy_extras/nodes_freelunch.py), output
// block patches.
//
// At each UNet output block (docs/patches/free_u.md), with (b, s) chosen by h's channel count
// (4 x model_channels -> (b1, s1), 2 x model_channels -> (b2, s2), otherwise nothing):
//   FreeU:    h[:, :C/2] *= b
//   FreeU_V2: m = channel mean of h, min-max normalised per batch item over the pixels;
//             h[:, :C/2] *= (b - 1) m + 1
//   both:     hsp = Re(ifft2(ifftshift(fftshift(fft2(hsp)) * mask))), mask = s on the 2x2 box
//             of frequencies {-1, 0} x {-1, 0}, 1 elsewhere.
// The box touches four bins, so the filter is computed directly (kernels/fourier_mask.hpp):
// hsp + (s - 1) L(hsp) with L the real part of the four-bin projection, exact and one read
// per element instead of two complex FFTs. fourier_filter_fft() is the FFT path (tests).
// Scratch comes from the run's workspace (block_site::scratch), or a local one when the hook
// is called on its own.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <string>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/fourier_mask.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

/// The (b, s) pair ComfyUI's FreeU rule picks for an output block.
struct free_u_factors {
    double b = 1.0, s = 1.0;
};

namespace free_u_detail {

/// ComfyUI's rule: by h's channel count only.
inline std::optional<free_u_factors> rule(index_t h_channels, index_t model_channels, double b1,
                                          double b2, double s1, double s2) {
    if (h_channels == 4 * model_channels) return free_u_factors{b1, s1};
    if (h_channels == 2 * model_channels) return free_u_factors{b2, s2};
    return std::nullopt;
}

/// FreeU and FreeU_V2 share their inputs; only the defaults and the class_type differ.
template <class P>
constexpr auto describe_free_u(std::string_view class_type, double b1, double b2) {
    return describe<P>(class_type, class_type, hook_kind::output_block,
                       floating("b1", &P::b1, b1, 0.0, 10.0, 0.01), floating("b2", &P::b2, b2, 0.0, 10.0, 0.01),
                       floating("s1", &P::s1, 0.9, 0.0, 10.0, 0.01), floating("s2", &P::s2, 0.2, 0.0, 10.0, 0.01),
                       // read from the model config in ComfyUI (320 for SD1.x / SDXL)
                       model_fact("model_channels", &P::model_channels, 320, 1, 1e9));
}

/// hsp_out = hsp + (s - 1) L(hsp), plane by plane (the direct four-bin path of
/// kernels/fourier_mask.hpp). hsp_out may be exactly hsp.
template <class T>
void fourier_filter(view<const T, 4> hsp, view<T, 4> out, double s, workspace& ws) {
    const index_t H = hsp.extent(2), W = hsp.extent(3);
    kernels::centred_box_filter<T, 4>(hsp, {}, out, kernels::freeu_box(H), kernels::freeu_box(W), s,
                                      1.0, ws, kernels::box_filter_method::direct);
}

/// The same filter through the general 2-D FFT (kernels/fft.hpp), as ComfyUI computes it:
/// complex FFT, mask in shifted coordinates, inverse FFT, real part. For tests and for
/// comparison; the direct path above is exact and cheaper.
template <class T>
void fourier_filter_fft(view<const T, 4> hsp, view<T, 4> out, double s, workspace& ws) {
    const index_t H = hsp.extent(2), W = hsp.extent(3);
    kernels::centred_box_filter<T, 4>(hsp, {}, out, kernels::freeu_box(H), kernels::freeu_box(W), s,
                                      1.0, ws, kernels::box_filter_method::fft);
}

/// Keys of FreeU_V2's scratch (patch range of the workspace).
enum scratch : std::size_t { key_mean_sums = workspace::patch_keys, key_weight };

/// h_out = h with the first C/2 channels scaled (FreeU: by b; FreeU_V2: by (b-1) m + 1).
template <bool V2, class T>
void scale_backbone(view<const T, 4> h, view<T, 4> out, double b, workspace& ws) {
    const index_t N = h.extent(0), C = h.extent(1), H = h.extent(2), W = h.extent(3);
    const index_t half = C / 2;
    if (!same_elements(view<const T, 4>(out), h))
        kernels::copy<T, 4>(h.channel_slice(half, C - half), out.channel_slice(half, C - half));
    if (half == 0) return;
    if constexpr (!V2) {
        const T bv = static_cast<T>(b);
        kernels::transform(out.channel_slice(0, half), [bv](auto a) { return a * bv; },
                           h.channel_slice(0, half));
    } else {
        // Per-pixel channel mean, min-max normalised per batch item: the channel sums of every
        // pixel in one pass over h (kernels::reduce_channels' engine with double blocks).
        const index_t P = H * W;
        const std::span<double> acc = ws.buffer<double>(key_mean_sums, static_cast<std::size_t>(N * P));
        const std::span<T> weight = ws.buffer<T>(key_weight, static_cast<std::size_t>(P));
        kernels::reduce_columns<1, 2>([](auto a) { return std::array{a}; },
                                      [&](index_t n, index_t c0, index_t len, const std::array<const double*, 1>& sums) {
                                          std::copy(sums[0], sums[0] + len, acc.data() + n * P + c0);
                                      },
                                      h);
        const T bm1 = static_cast<T>(b - 1.0);
        for (index_t n = 0; n < N; ++n) {
            const double* a = acc.data() + n * P;
            T mn = static_cast<T>(a[0] / double(C)), mx = mn;
            for (index_t p = 0; p < P; ++p) {
                const T m = static_cast<T>(a[p] / double(C));
                weight[static_cast<std::size_t>(p)] = m;
                mn = std::min(mn, m);
                mx = std::max(mx, m);
            }
            const T range = mx - mn;
            const auto hn = h.batch_slice(n, 1).channel_slice(0, half);
            const auto on = out.batch_slice(n, 1).channel_slice(0, half);
            if (!(range > T(0))) {
                // Constant mean map (e.g. 1x1 features): ComfyUI computes 0/0 = NaN here;
                // patchbay applies no weighting (the weight of a constant map is undefined).
                if (!same_elements(view<const T, 4>(on), hn)) kernels::copy<T, 4>(hn, on);
                continue;
            }
            for (auto& m : weight) m = bm1 * ((m - mn) / range) + T(1);
            // out[c, p] = h[c, p] * weight[p], the weight broadcast over the channels
            const view<const T, 4> wv(weight.data(), {1, half, H, W}, {0, 0, W, 1});
            kernels::transform(on, [](auto x, auto wt) { return x * wt; }, hn, wv);
        }
    }
}

template <bool V2, class T>
void apply(const char* where, std::optional<free_u_factors> f, const block_site& site,
           view<const T, 4> h, view<const T, 4> hsp, view<T, 4> h_out, view<T, 4> hsp_out) {
    require_nonempty(h, where, "h");
    require_nonempty(hsp, where, "hsp");
    PATCHBAY_REQUIRE(site.channels == 0 || site.channels == h.extent(1), where,
            "block_site.channels (" + std::to_string(site.channels) +
                ") must be h's channel count " + std::to_string(h.extent(1)));
    // Only the batch must agree: h and hsp are filtered separately, as in ComfyUI, and their
    // sizes differ where Deep Shrink's output-block hook runs after this one (ComfyUI's node
    // order) and only then resizes h to the skip's size.
    PATCHBAY_REQUIRE(h.extent(0) == hsp.extent(0), where,
            "tensor 'hsp' has shape " + shape_string(hsp) + "; its batch must match 'h' " + shape_string(h));
    require_same_shape(h, view<const T, 4>(h_out), where, "h", "h_out");
    require_same_shape(hsp, view<const T, 4>(hsp_out), where, "hsp", "hsp_out");
    require_writable_layout(h_out, where, "h_out");
    require_writable_layout(hsp_out, where, "hsp_out");
    require_no_partial_overlap(h_out, h, where, "h_out", "h");
    require_no_partial_overlap(hsp_out, hsp, where, "hsp_out", "hsp");
    PATCHBAY_REQUIRE(!may_overlap(h_out, hsp) && !may_overlap(hsp_out, h), where,
            "the outputs must not overlap the other input (h / hsp are separate tensors)");
    workspace local; // a standalone call (no run): scratch for this call only
    workspace& ws = site.scratch ? *site.scratch : local;
    if (!f || site.stage != unet_stage::output) { // not a FreeU block: untouched
        if (!same_elements(view<const T, 4>(h_out), h)) kernels::copy<T, 4>(h, h_out);
        if (!same_elements(view<const T, 4>(hsp_out), hsp)) kernels::copy<T, 4>(hsp, hsp_out);
        return;
    }
    if (f->b == 1.0) { // exact pass-through (x * 1 and (1-1) m + 1 are identities)
        if (!same_elements(view<const T, 4>(h_out), h)) kernels::copy<T, 4>(h, h_out);
    } else {
        scale_backbone<V2, T>(h, h_out, f->b, ws);
    }
    if (f->s == 1.0) { // the mask is all ones: skipped, exact
        if (!same_elements(view<const T, 4>(hsp_out), hsp)) kernels::copy<T, 4>(hsp, hsp_out);
    } else {
        fourier_filter<T>(hsp, hsp_out, f->s, ws);
    }
}

template <class P, class T>
void apply_patch(const P& p, const block_site& site, view<const T, 4> h, view<const T, 4> hsp,
                 view<T, 4> h_out, view<T, 4> hsp_out) {
    apply<P::is_v2, T>(P::descriptor().class_type.data(), p.factors_for(h.extent(1)), site, h, hsp, h_out, hsp_out);
}

} // namespace free_u_detail

/// ComfyUI "FreeU" (V2 = false) and "FreeU_V2" (V2 = true): the same block patch with other
/// defaults, V2 weighting the backbone factor by the normalised channel mean. Where that mean
/// is spatially constant (1x1 features) ComfyUI's FreeU_V2 gives NaN; patchbay applies no
/// weighting there. `model_channels` is the UNet's base channel count (320 for SD1.x and SDXL),
/// which ComfyUI reads from the model config; patchbay takes it as a field.
template <bool V2>
struct basic_free_u {
    static constexpr auto descriptor() {
        return free_u_detail::describe_free_u<basic_free_u>(V2 ? "FreeU_V2" : "FreeU", V2 ? 1.3 : 1.1,
                                                            V2 ? 1.4 : 1.2);
    }
    static constexpr bool is_v2 = V2;

    double b1 = V2 ? 1.3 : 1.1; ///< backbone factor for blocks with 4 x model_channels channels
    double b2 = V2 ? 1.4 : 1.2; ///< backbone factor for blocks with 2 x model_channels channels
    double s1 = 0.9;            ///< skip low-frequency factor for 4 x model_channels blocks
    double s2 = 0.2;            ///< skip low-frequency factor for 2 x model_channels blocks
    index_t model_channels = 320;

    void validate() const { patchbay::validate(*this); }

    /// ComfyUI's rule: (b1, s1) when h has 4 x model_channels channels, (b2, s2) for
    /// 2 x model_channels, none otherwise (the block is left untouched).
    std::optional<free_u_factors> factors_for(index_t h_channels) const {
        return free_u_detail::rule(h_channels, model_channels, b1, b2, s1, s2);
    }

    /// Rewrites h and hsp IN PLACE (as ComfyUI does). hsp's channel count may differ from h's.
    template <class T>
    void output_block(no_state&, const block_site& site, view<T, 4> h, view<T, 4> hsp) const {
        free_u_detail::apply_patch<basic_free_u, T>(*this, site, h, hsp, h, hsp);
    }

    /// Non-mutating variant: reads h and hsp, writes h_out and hsp_out (each may be exactly
    /// its input, nothing else may overlap).
    template <class T>
    void output_block(no_state&, const block_site& site, std::type_identity_t<view<const T, 4>> h,
                      std::type_identity_t<view<const T, 4>> hsp, view<T, 4> h_out,
                      view<T, 4> hsp_out) const {
        free_u_detail::apply_patch<basic_free_u, T>(*this, site, h, hsp, h_out, hsp_out);
    }

    /// FreeU is defined for 4-D (N,C,H,W) features only, as in ComfyUI.
    template <class T, std::size_t RH, std::size_t RS>
        requires(RH != 4 || RS != 4)
    void output_block(no_state&, const block_site&, view<T, RH>, view<T, RS>) const {
        fail(descriptor().class_type, "h and hsp must be 4-D (N,C,H,W) features, got ranks " + std::to_string(RH) +
                       " and " + std::to_string(RS));
    }
};

using free_u = basic_free_u<false>;   ///< ComfyUI "FreeU"
using free_u_v2 = basic_free_u<true>; ///< ComfyUI "FreeU_V2"

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::free_u)
PATCHBAY_DECLARE_BUILTIN(patchbay::free_u_v2)
