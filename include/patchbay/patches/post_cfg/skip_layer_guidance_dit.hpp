// Skip Layer Guidance for DiT models. Matches ComfyUI's SkipLayerGuidanceDiT node
// (comfy_extras/nodes_slg.py) and its SD3 wrapper SkipLayerGuidanceSD3 (nodes_sd3.py).
//
// Inside its window (start_percent / end_percent, applied by the dispatcher on the first batch
// item's sigma, both edges inside) and with scale > 0, the model is evaluated once more on the
// positive prompt with the listed double and single blocks replaced by the identity, and the
// cfg result is pushed away from that prediction:
//     result = cfg + (cond - slg) * scale
//     if rescaling_scale != 0: result *= rescaling_scale * std(cond) / std(result) + 1 - rescaling_scale
// where std is taken over the whole tensor (every batch item together, as ComfyUI's
// torch.std()). Where std(result) is 0 or the tensor has one element ComfyUI gets inf or NaN;
// patchbay does not rescale there (factor 1).
//
// Layer strings are read as ComfyUI's re.findall(r'\d+'): every run of ASCII digits is an index,
// anything else separates (a minus sign is dropped), duplicates collapse. With both lists empty
// the patch does nothing (ComfyUI returns the model unpatched).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay::slg {

/// Most blocks one model call may skip (call_overrides holds 64 skip requests).
inline constexpr std::size_t max_skipped_blocks = 64;

/// The block indices of one layer string, first-seen order, duplicates removed. Fixed
/// capacity: parsing never allocates, so hooks parse their strings on every call.
struct layer_list {
    std::array<int, max_skipped_blocks> index{};
    std::size_t count = 0;
    std::span<const int> indices() const noexcept { return {index.data(), count}; }
    bool empty() const noexcept { return count == 0; }
};

/// Parse a layer string as ComfyUI's re.findall(r'\d+', text). `where` / `name` name the patch
/// and the input in errors (an index above INT_MAX, more than 64 distinct indices).
inline layer_list parse_layers(std::string_view text, std::string_view where, std::string_view name) {
    layer_list l;
    std::size_t i = 0;
    while (i < text.size()) {
        if (text[i] < '0' || text[i] > '9') {
            ++i;
            continue;
        }
        long long v = 0;
        for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
            v = v * 10 + (text[i] - '0');
            PATCHBAY_REQUIRE(v <= std::numeric_limits<int>::max(), where,
                             "parameter '" + std::string(name) + "' names a block index above " +
                                 std::to_string(std::numeric_limits<int>::max()) + " in '" + std::string(text) + "'");
        }
        const int b = static_cast<int>(v);
        bool seen = false;
        for (std::size_t k = 0; k < l.count; ++k) seen = seen || l.index[k] == b;
        if (seen) continue;
        PATCHBAY_REQUIRE(l.count < l.index.size(), where,
                         "parameter '" + std::string(name) + "' names more than " +
                             std::to_string(max_skipped_blocks) + " distinct blocks");
        l.index[l.count++] = b;
    }
    return l;
}

/// Both lists, checked together against the 64 skips one call can carry.
struct skipped_layers {
    layer_list double_blocks, single_blocks;
    bool empty() const noexcept { return double_blocks.empty() && single_blocks.empty(); }

    static skipped_layers parse(std::string_view double_text, std::string_view single_text, std::string_view where,
                                std::string_view double_name, std::string_view single_name) {
        skipped_layers s{parse_layers(double_text, where, double_name), parse_layers(single_text, where, single_name)};
        PATCHBAY_REQUIRE(s.double_blocks.count + s.single_blocks.count <= max_skipped_blocks, where,
                         "parameters '" + std::string(double_name) + "' and '" + std::string(single_name) +
                             "' together name more than " + std::to_string(max_skipped_blocks) +
                             " blocks, more than one model call can skip");
        return s;
    }

    /// Ask a model call to skip every listed block (ComfyUI's ("dit", "double_block", i) and
    /// ("dit", "single_block", i) replacements by the identity).
    template <class T>
    void request(call_overrides<T>& ov) const {
        for (int b : double_blocks.indices()) ov.skip_block({dit_block_site::kind::double_block, b});
        for (int b : single_blocks.indices()) ov.skip_block({dit_block_site::kind::single_block, b});
    }
};

/// describe<P> for a node with ComfyUI's double_layers / single_layers STRING inputs first (both
/// SkipLayerGuidanceDiT nodes), then `more`.
template <class P, class... More>
constexpr auto describe_with_layers(std::string_view class_type, hook_kind slot, More... more) {
    return describe<P>(class_type, class_type, slot, text("double_layers", &P::double_layers, "7, 8, 9"),
                       text("single_layers", &P::single_layers, "7, 8, 9"), more...);
}

/// The lists of a patch with ComfyUI's double_layers / single_layers inputs.
template <class P>
skipped_layers skipped_of(const P& p) {
    return skipped_layers::parse(p.double_layers, p.single_layers, P::descriptor().class_type, "double_layers",
                                 "single_layers");
}

namespace detail {

template <class T, std::size_t R>
bool all_contiguous(const view<T, R>& a) noexcept {
    return a.is_contiguous();
}
template <class T, std::size_t R, class... V>
bool all_contiguous(const view<T, R>& a, const V&... rest) noexcept {
    return a.is_contiguous() && all_contiguous(rest...);
}

/// Bessel-corrected std from sums about a shift (s1 = sum(v - k), s2 = sum((v - k)^2)).
inline double shifted_std(double s1, double s2, double n) {
    const double var = (s2 - s1 * s1 / n) / (n - 1.0);
    return var > 0.0 ? std::sqrt(var) : 0.0;
}

/// The combine on contiguous views (one fused pass, then the rescale pass).
template <class T, std::size_t R>
void combine_packed(const view<const T, R>& cond, const view<const T, R>& rerun, double scale, double rescaling,
                    const view<T, R>& denoised) {
    const T k = static_cast<T>(scale);
    const auto push = [k](auto d, auto c, auto s) { return d + (c - s) * k; };
    if (rescaling == 0.0) {
        kernels::transform(denoised, push, view<const T, R>(denoised), cond, rerun);
        return;
    }
    // sums shifted by the first element's terms: a large mean costs no precision and a
    // constant tensor gives exactly 0
    const T c0 = *cond.data_handle();
    const T y0 = push(*denoised.data_handle(), c0, *rerun.data_handle());
    const auto s = kernels::transform_reduce<4>(
        denoised, push,
        [y0, c0](auto y, auto, auto c, auto) {
            const auto dy = y - y0, dc = c - c0;
            return std::array{dy, dy * dy, dc, dc * dc};
        },
        view<const T, R>(denoised), cond, rerun);
    const double n = static_cast<double>(cond.size());
    const double std_result = n > 1.0 ? shifted_std(s[0], s[1], n) : 0.0;
    if (std_result == 0.0) return; // ComfyUI: inf or NaN; the finite limit is no rescale
    const double ratio = shifted_std(s[2], s[3], n) / std_result;
    const T factor = static_cast<T>(rescaling * ratio + (1.0 - rescaling));
    kernels::transform(denoised, [factor](auto y) { return y * factor; }, view<const T, R>(denoised));
}

} // namespace detail

/// Scratch keys: the re-run's prediction must survive the model call (model_call_keys), the
/// packed copies of strided inputs only the combine.
inline constexpr std::size_t rerun_key = workspace::model_call_keys + 1;
inline constexpr std::size_t packed_key = workspace::patch_keys + 4;

/// denoised = denoised + (cond - rerun) * scale, then the optional whole-tensor rescale, in
/// place. Strided views are packed into scratch first, so any layout gives the contiguous
/// result bit for bit.
template <class T, std::size_t R>
void combine(std::type_identity_t<view<const T, R>> cond, std::type_identity_t<view<const T, R>> rerun, double scale,
             double rescaling_scale, view<T, R> denoised, workspace* scratch = nullptr) {
    if (detail::all_contiguous(cond, rerun, denoised)) {
        detail::combine_packed<T, R>(cond, rerun, scale, rescaling_scale, denoised);
        return;
    }
    workspace local;
    workspace& ws = scratch ? *scratch : local;
    const auto n = static_cast<std::size_t>(cond.size());
    const std::span<T> buf = ws.buffer<T>(packed_key, 3 * n);
    const view<T, R> c(buf.data(), cond.extents()), r(buf.data() + n, cond.extents()), d(buf.data() + 2 * n, cond.extents());
    kernels::copy<T, R>(cond, c);
    kernels::copy<T, R>(rerun, r);
    kernels::copy<T, R>(view<const T, R>(denoised), d);
    detail::combine_packed<T, R>(c, r, scale, rescaling_scale, d);
    kernels::copy<T, R>(view<const T, R>(d), denoised);
}

/// The post-cfg step shared by SkipLayerGuidanceDiT and SkipLayerGuidanceSD3. `rerun(skips,
/// buffer)` evaluates the positive prompt at this step's x and sigma with the blocks `skips`
/// asks for skipped, and returns the prediction (normally `buffer`, which it fills).
template <class T, std::size_t R, class Rerun>
void guide(std::string_view where, const skipped_layers& layers, double scale, double rescaling_scale,
           const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond, view<T, R> denoised,
           Rerun&& rerun) {
    if (scale <= 0.0 || layers.empty()) return; // ComfyUI: no re-run at scale 0 or without layers
    call_overrides<T> skips;
    layers.request(skips);
    workspace local; // a standalone call (no run): scratch for this call only
    workspace& ws = in.scratch ? *in.scratch : local;
    const view<T, R> buffer(ws.buffer<T>(rerun_key, static_cast<std::size_t>(denoised.size())).data(),
                            denoised.extents());
    const view<const T, R> prediction = rerun(static_cast<const call_overrides<T>&>(skips), buffer);
    require_same_shape(cond, prediction, where, "cond", "the re-run's prediction");
    combine<T, R>(cond, prediction, scale, rescaling_scale, denoised, &ws);
}

/// The re-run through the dispatcher's model access: the positive prompt at the step's x.
template <class T, std::size_t R>
auto model_rerun(model_access<T, R>& model, const guidance_inputs<T, R>& in) {
    return [&model, &in](const call_overrides<T>& skips, view<T, R> buffer) -> view<const T, R> {
        model.evaluate(pass_kind::cond, in.x, buffer, &skips);
        return buffer;
    };
}

} // namespace patchbay::slg

namespace patchbay {

/// Skip Layer Guidance (ComfyUI node SkipLayerGuidanceDiT). Needs a model that skips DiT blocks
/// on request (`skips_blocks`); one extra model call per step inside the window.
struct skip_layer_guidance_dit {
    std::string double_layers = "7, 8, 9"; ///< double (MMDiT joint) block indices
    std::string single_layers = "7, 8, 9"; ///< single block indices
    double scale = 3.0;                    ///< [0, 10]
    double start_percent = 0.01;           ///< window start (the dispatcher applies it)
    double end_percent = 0.15;             ///< window end
    double rescaling_scale = 0.0;          ///< [0, 10]; 0 = no rescale

    static constexpr auto descriptor() {
        using P = skip_layer_guidance_dit;
        return slg::describe_with_layers<P>("SkipLayerGuidanceDiT", hook_kind::post_cfg,
                                            floating("scale", &P::scale, 3.0, 0.0, 10.0, 0.1),
                                            floating("start_percent", &P::start_percent, 0.01, 0.0, 1.0, 0.001),
                                            floating("end_percent", &P::end_percent, 0.15, 0.0, 1.0, 0.001),
                                            floating("rescaling_scale", &P::rescaling_scale, 0.0, 0.0, 10.0, 0.01));
    }
    static constexpr unsigned needs_capabilities = capability_bit(capability::block_skipping);

    void check_params() const { (void)skipped(); }
    /// The parsed layer lists (no allocation).
    slg::skipped_layers skipped() const { return slg::skipped_of(*this); }

    template <class T, std::size_t R>
    void post_cfg(no_state& st, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                  std::type_identity_t<view<const T, R>> uncond, view<T, R> denoised, model_access<T, R>& model) const {
        (void)uncond;
        post_cfg_with(st, in, cond, denoised, slg::model_rerun(model, in));
    }

    /// The post-cfg step with the re-run supplied by the caller: `rerun(skips, buffer)` returns
    /// the model's prediction for the positive prompt with the blocks in `skips` skipped.
    template <class T, std::size_t R, class Rerun>
    void post_cfg_with(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                       view<T, R> denoised, Rerun&& rerun) const {
        slg::guide<T, R>(descriptor().class_type, skipped(), scale, rescaling_scale, in, cond, denoised, rerun);
    }
};

/// ComfyUI node SkipLayerGuidanceSD3: SkipLayerGuidanceDiT with `layers` as the double (MMDiT
/// joint) blocks, no single blocks and no rescaling.
struct skip_layer_guidance_sd3 {
    std::string layers = "7, 8, 9"; ///< MMDiT joint block indices (the double blocks)
    double scale = 3.0;
    double start_percent = 0.01;
    double end_percent = 0.15;

    static constexpr auto descriptor() {
        using P = skip_layer_guidance_sd3;
        return describe<P>("SkipLayerGuidanceSD3", "SkipLayerGuidanceSD3", hook_kind::post_cfg,
                           text("layers", &P::layers, "7, 8, 9"),
                           floating("scale", &P::scale, 3.0, 0.0, 10.0, 0.1),
                           floating("start_percent", &P::start_percent, 0.01, 0.0, 1.0, 0.001),
                           floating("end_percent", &P::end_percent, 0.15, 0.0, 1.0, 0.001));
    }
    static constexpr unsigned needs_capabilities = capability_bit(capability::block_skipping);

    void check_params() const { (void)skipped(); }
    slg::skipped_layers skipped() const {
        return slg::skipped_layers::parse(layers, {}, descriptor().class_type, "layers", "layers");
    }
    /// The equivalent SkipLayerGuidanceDiT (what ComfyUI's node builds).
    skip_layer_guidance_dit as_dit() const { return {layers, "", scale, start_percent, end_percent, 0.0}; }

    /// Engines with their own loop use as_dit().post_cfg_with(...).
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>> cond,
                  std::type_identity_t<view<const T, R>>, view<T, R> denoised, model_access<T, R>& model) const {
        slg::guide<T, R>(descriptor().class_type, skipped(), scale, 0.0, in, cond, denoised, slg::model_rerun(model, in));
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::skip_layer_guidance_dit)
PATCHBAY_DECLARE_BUILTIN(patchbay::skip_layer_guidance_sd3)
