// patchbay: Deep Shrink, kohya-ss's hires fix for UNets (sd-scripts, 2023; there is no paper):
// during the first steps the UNet computes its deep features at a smaller resolution, so a large
// image keeps the composition the model learned at its training size. Matches ComfyUI's
// PatchModelAddDownscale node ("PatchModelAddDownscale (Kohya Deep Shrink)",
// comfy_extras/nodes_model_downscale.py), docs/patches/deep_shrink.md.
//
// Two network hooks (the window on sigma is the dispatcher's: start_percent / end_percent through
// percent_to_sigma, decided on the first batch item's sigma, both edges inside):
//   - after input block `block_number`: h is resized to round(H / f) x round(W / f) with
//     downscale_method (f = downscale_factor; Python's round of size * (1 / f), half to even;
//     f < 1 enlarges). With downscale_after_skip (ComfyUI's input_block_patch_after_skip) the
//     skip connection keeps the full-size h; without it (input_block_patch) the skip sees the
//     resized h.
//   - at every output block: if h's dim 2 differs from the skip feature's (H only: an equal H
//     with another W is left alone, as in ComfyUI), h is resized to hsp's H x W with
//     upscale_method; hsp is unchanged.
// The resizes are kernels::resize (ComfyUI's common_upscale: torch's interpolate for bicubic,
// bilinear, nearest-exact and area, ComfyUI's bislerp). A resized h lives in the patch's per-run
// state (one buffer per pass and hook, so batched prompts and several Deep Shrink patches never
// share one) until the same hook runs again in the same pass; the kernels' scratch is the run's
// arena.
//
// ComfyUI's output hook runs at every sigma. patchbay attaches both hooks only inside the window
// (outside it the input hook changes nothing, so the output hook finds equal sizes); the one
// difference is a chain where another patch resizes h outside this window, which this patch's
// output hook then does not resize back (the other patch's output hook must).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/resize.hpp"

namespace patchbay {

/// Deep Shrink (ComfyUI node PatchModelAddDownscale). Needs a model that calls input-block
/// hooks (`calls_input_block_hooks`) and output-block hooks (`calls_block_hooks`).
struct deep_shrink {
    int block_number = 3;            ///< [1, 32]: the input block whose output is resized
    double downscale_factor = 2.0;   ///< [0.1, 9]: h shrinks to round(size / factor)
    double start_percent = 0.0;      ///< window start (the dispatcher applies it)
    double end_percent = 0.35;       ///< window end
    bool downscale_after_skip = true; ///< the skip connection keeps the full-size h
    kernels::resize_method downscale_method = kernels::resize_method::bicubic;
    kernels::resize_method upscale_method = kernels::resize_method::bicubic;

    static constexpr auto descriptor() {
        using P = deep_shrink;
        return describe<P>("PatchModelAddDownscale", "PatchModelAddDownscale (Kohya Deep Shrink)",
                           hook_kind::model_hooks, integer("block_number", &P::block_number, 3, 1, 32, 1),
                           floating("downscale_factor", &P::downscale_factor, 2.0, 0.1, 9.0, 0.001),
                           floating("start_percent", &P::start_percent, 0.0, 0.0, 1.0, 0.001),
                           floating("end_percent", &P::end_percent, 0.35, 0.0, 1.0, 0.001),
                           boolean("downscale_after_skip", &P::downscale_after_skip, true),
                           combo("downscale_method", &P::downscale_method, kernels::resize_method_names, "bicubic"),
                           combo("upscale_method", &P::upscale_method, kernels::resize_method_names, "bicubic"));
    }
    static constexpr bool needs_block_hooks = true;
    static constexpr unsigned needs_capabilities = capability_bit(capability::input_block_hooks);

    /// Per run: the resized h of each pass, and the hooks' bindings for the current calls.
    struct state_type {
        struct binding {
            const deep_shrink* patch = nullptr;
            workspace* results = nullptr;
            std::size_t pass = 0;
        };
        std::array<binding, 4> bindings{}; ///< by pass_kind
        workspace results;                 ///< key = pass (input hook), 4 + pass (output hook)
    };

    /// The method named `text` (a ComfyUI combo value) for input `input`.
    static kernels::resize_method method_from(std::string_view text, std::string_view input) {
        for (std::size_t i = 0; i < kernels::resize_method_names.size(); ++i)
            if (kernels::resize_method_names[i] == text) return static_cast<kernels::resize_method>(i);
        fail(descriptor().class_type, "parameter '" + std::string(input) + "' must be one of " +
                                          detail::option_list(kernels::resize_method_names) + ", got '" +
                                          std::string(text) + "'");
    }

    /// ComfyUI's target size of a dim of n: Python's round(n * (1.0 / downscale_factor)), half
    /// to even. A size that rounds to 0 is refused (torch raises there).
    index_t shrunk_size(index_t n, std::string_view dim) const {
        const double s = std::nearbyint(static_cast<double>(n) * (1.0 / downscale_factor));
        PATCHBAY_REQUIRE(s >= 1.0, descriptor().class_type,
                         "parameter 'downscale_factor' " + detail::fmt_num(downscale_factor) + " shrinks h's " +
                             std::string(dim) + " " + std::to_string(n) + " to 0 (round(" + std::to_string(n) +
                             " / " + detail::fmt_num(downscale_factor) + "))");
        return static_cast<index_t>(s);
    }

    /// ComfyUI's input_block_patch inside the window: after input block `block_number` (site.index),
    /// h resized to shrunk_size(H) x shrunk_size(W) with downscale_method, stored in `results`
    /// under `key`; h itself at other blocks or when the size does not change. h is 4-D, or 5-D
    /// (B, C, T, H, W) with every frame resized (common_upscale's 5-D case). Scratch: the run's
    /// arena (site.scratch), else `results`.
    template <class T, std::size_t R>
    view<T, R> input_block_patch(const block_site& site, view<T, R> h, workspace& results, std::size_t key = 0) const {
        constexpr std::string_view where = descriptor().class_type;
        if constexpr (R != 4 && R != 5) {
            fail(where, "argument 'h' must be 4-D (B, C, H, W) or 5-D (B, C, T, H, W), got shape " + shape_string(h));
        } else {
            require_nonempty(h, where, "h");
            if (site.index != block_number) return h;
            auto ext = h.extents();
            ext[R - 2] = shrunk_size(h.extent(R - 2), "height");
            ext[R - 1] = shrunk_size(h.extent(R - 1), "width");
            if (ext == h.extents()) return h;
            return resized<T, R>(h, ext, downscale_method, site, results, key);
        }
    }

    /// ComfyUI's output_block_patch: h resized to hsp's H x W with upscale_method (stored in
    /// `results` under `key`) when dim 2 of h and hsp differ; h itself otherwise. hsp is not
    /// changed.
    template <class T>
    view<T, 4> output_block_patch(const block_site& site, view<T, 4> h, view<const T, 4> hsp, workspace& results,
                                  std::size_t key = 0) const {
        constexpr std::string_view where = descriptor().class_type;
        require_nonempty(h, where, "h");
        require_nonempty(hsp, where, "hsp");
        if (h.extent(2) == hsp.extent(2)) return h;
        return resized<T, 4>(h, {h.extent(0), h.extent(1), hsp.extent(2), hsp.extent(3)}, upscale_method, site,
                             results, key);
    }

    /// Attaches the input-block hook (before or after the skip, as downscale_after_skip says)
    /// and the resizing output-block hook to every model call inside the window.
    template <class T>
    void on_model_call(state_type& s, pass_kind pass, call_overrides<T>& ov) const {
        const auto p = static_cast<std::size_t>(pass);
        auto& b = s.bindings[p];
        b = {this, &s.results, p};
        ov.add_input_block(typename call_overrides<T>::input_block_fn(&input_hook<T>, &b),
                           downscale_after_skip ? input_block_point::after_skip : input_block_point::before_skip);
        ov.add_output_resize(typename call_overrides<T>::output_resize_fn(&output_hook<T>, &b));
    }

private:
    template <class T, std::size_t R>
    static view<T, R> resized(view<const T, R> h, const std::array<index_t, R>& ext, kernels::resize_method m,
                              const block_site& site, workspace& results, std::size_t key) {
        index_t n = 1;
        for (index_t e : ext) n *= e;
        const view<T, R> out(results.buffer<T>(key, static_cast<std::size_t>(n)).data(), ext);
        kernels::resize<T, R>(h, out, m, site.scratch ? *site.scratch : results);
        return out;
    }

    template <class T>
    static view<T, 4> input_hook(void* context, const block_site& site, view<T, 4> h) {
        const auto& b = *static_cast<const state_type::binding*>(context);
        return b.patch->input_block_patch<T, 4>(site, h, *b.results, b.pass);
    }
    template <class T>
    static view<T, 4> output_hook(void* context, const block_site& site, view<T, 4> h, view<T, 4> hsp) {
        const auto& b = *static_cast<const state_type::binding*>(context);
        return b.patch->output_block_patch<T>(site, h, hsp, *b.results, 4 + b.pass);
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::deep_shrink)
