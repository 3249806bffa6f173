// patchbay: FreSca (Huang et al., "FreSca: Scaling in Frequency Space Enhances Diffusion
// Models", 2025), matching ComfyUI's "FreSca" node (comfy_extras/nodes_fresca.py), a pre-CFG
// function.
//
// docs/patches/fresca.md (5-D as ComfyUI 593786e4: the box is cut on H and W, every frame alike):
// g = cond - uncond; cond' = uncond + F(g) with
//     F(g) = Re(ifft2(ifftshift(fftshift(fft2(g)) * mask))),
// mask = scale_high everywhere and scale_low on the centred box [n/2 - f, n/2 + f) of H and
// W, f = min(freq_cutoff, n/2) per dim. The FFT and the box cover the last two dims only: a
// 5-D (N,C,T,H,W) latent is filtered frame by frame, every frame alike. Skipped when the
// sampler dropped the uncond pass (cond_scale 1).
//
// F(g) = scale_high * g + (scale_low - scale_high) * L(g), L the real part of the box
// projection, computed by kernels::centred_box_filter (kernels/fourier_mask.hpp): directly (a
// separable partial DFT over the box's rows and columns, or over the complement when the box
// covers most of an axis; exact) or with the 2-D FFT, whichever costs fewer operations.
// Scratch comes from the run's workspace (guidance_inputs::scratch), or a local one when the
// hook is called on its own.
#pragma once

#include <cstddef>
#include <string>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/fourier_mask.hpp"

namespace patchbay {

/// Which implementation of the low-pass FreSca uses.
enum class fresca_path : unsigned char {
    automatic, ///< the cheaper of the two by an operation count
    direct,    ///< partial DFT over the box (kernels/fourier_mask.hpp)
    fft        ///< complex 2-D FFT, mask, inverse FFT, real part (kernels/fft.hpp)
};

namespace fresca_detail {

constexpr kernels::box_filter_method method_of(fresca_path p) noexcept {
    switch (p) {
    case fresca_path::direct: return kernels::box_filter_method::direct;
    case fresca_path::fft: return kernels::box_filter_method::fft;
    default: return kernels::box_filter_method::automatic;
    }
}

} // namespace fresca_detail

/// ComfyUI "FreSca".
struct fresca {
    static constexpr auto descriptor() {
        return describe<fresca>("FreSca", "FreSca", hook_kind::pre_cfg,
                                floating("scale_low", &fresca::scale_low, 1.0, 0.0, 10.0, 0.01),
                                floating("scale_high", &fresca::scale_high, 1.25, 0.0, 10.0, 0.01),
                                integer("freq_cutoff", &fresca::freq_cutoff, 20, 1, 10000, 1));
    }

    double scale_low = 1.0;  ///< factor on the low-frequency box, [0, 10]
    double scale_high = 1.25; ///< factor on every other frequency, [0, 10]
    int freq_cutoff = 20;    ///< half-width of the box in frequency bins, [1, 10000]
    fresca_path path = fresca_path::automatic; ///< implementation choice (not a ComfyUI input)

    void validate() const { patchbay::validate(*this); }

    /// Rewrites cond in place (uncond is left as is).
    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond) const {
        static_assert(R == 4 || R == 5, "FreSca works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        // no preconditions of its own: the dispatcher has checked the inputs
        if (in.uncond_is_none) return; // ComfyUI skips when the negative prompt was dropped
        if (scale_low == 1.0 && scale_high == 1.0) return; // the mask is all ones: exact identity
        if (in.scratch) {
            apply<T, R>(cond, uncond, *in.scratch);
        } else {
            workspace local; // a standalone call (no run): scratch for this call only
            apply<T, R>(cond, uncond, local);
        }
    }

    /// cond <- uncond + F(cond - uncond) with no skip check (the filter itself). Scratch from
    /// `ws` (the run's arena in a guided step).
    template <class T, std::size_t R>
    void apply(view<T, R> cond, std::type_identity_t<view<const T, R>> uncond, workspace& ws) const {
        constexpr std::size_t hd = R - 2, wd = R - 1;
        const auto rows = kernels::fresca_box(cond.extent(hd), freq_cutoff);
        const auto cols = kernels::fresca_box(cond.extent(wd), freq_cutoff);
        kernels::centred_box_filter<T, R>(cond, uncond, cond, rows, cols, scale_low, scale_high, ws,
                                          fresca_detail::method_of(path));
    }
    /// As above with a local workspace (allocates for the call).
    template <class T, std::size_t R>
    void apply(view<T, R> cond, std::type_identity_t<view<const T, R>> uncond) const {
        workspace local;
        apply<T, R>(cond, uncond, local);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::fresca)
