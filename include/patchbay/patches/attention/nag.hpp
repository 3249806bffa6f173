// Normalized Attention Guidance: Chen et al., "Normalized Attention Guidance: Universal
// Negative Guidance for Diffusion Models" (2025). Matches ComfyUI's NAGuidance node
// (comfy_extras/nodes_nag.py).
//
// After the self-attention of every DiT block, the positive prompt's attention output z_pos is
// pushed away from the negative prompt's z_neg, per token (sums over the feature dim only):
//     g = s*z_pos - (s-1)*z_neg
//     r = max(|g|_1, 1e-6) / max(|z_pos|_1, 1e-6);   g *= min(r, tau) / r
//     z_final = alpha*g + (1-alpha)*z_pos
// On DiT sites (text tokens, then image tokens) only the image tokens are guided and both the
// positive and the negative chunk's image tokens become z_final (ComfyUI's img_slice branch);
// on a UNet site the positive chunk alone is replaced. The negative branch is the run's own
// negative prompt, so the uncond pass runs also at cond_scale 1 (where cfg = cond is then the
// NAG-guided positive prediction).
//
// NAG needs both prompts of an evaluation in one model call. ComfyUI silently does nothing
// when they run as separate forwards; patchbay refuses a model without batched evaluation when
// the run begins, and fails the step if no attention-output hook saw both prompts together.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "patchbay/patches/attention/dit_sites.hpp"

namespace patchbay {

struct normalized_attention_guidance;

namespace nag {

inline constexpr const char* where = "NAGuidance";
/// Scratch for packing strided token rows (two rows of features).
inline constexpr std::size_t packed_key = workspace::patch_keys + 5;

/// The guidance's constants in the element type.
template <class T>
struct coefficients {
    T scale, scale_minus_one, alpha, one_minus_alpha;
    double tau;
};

/// One token, rows of contiguous features: z_pos becomes z_final in place.
template <class T>
void guide_token(const coefficients<T>& k, const view<T, 1>& z_pos, const view<const T, 1>& z_neg) {
    const T s = k.scale, s1 = k.scale_minus_one;
    const auto sums = kernels::reduce<2>(
        [s, s1](auto p, auto n) {
            using simd::abs;
            return std::array{abs(p), abs(p * s - n * s1)};
        },
        view<const T, 1>(z_pos), z_neg);
    const double ratio = std::max(sums[1], 1e-6) / std::max(sums[0], 1e-6);
    const T f = static_cast<T>(std::min(ratio, k.tau) / ratio);
    const T a = k.alpha, b = k.one_minus_alpha;
    kernels::transform(z_pos, [s, s1, f, a, b](auto p, auto n) { return (p * s - n * s1) * f * a + p * b; },
                       view<const T, 1>(z_pos), z_neg);
}

/// Guides tokens [first, end) of every item of one positive and one negative chunk (n, tokens,
/// features) in place; `write_negative` also stores z_final in the negative chunk. Token rows
/// with strided features are packed into scratch first, so any layout gives the contiguous
/// result bit for bit.
template <class T>
void guide(const coefficients<T>& k, const view<T, 3>& pos, const view<T, 3>& neg, index_t first, index_t end,
           bool write_negative, workspace* scratch) {
    const index_t F = pos.extent(2);
    const bool packed = pos.stride(2) == 1 && neg.stride(2) == 1;
    workspace local;
    T* rows = nullptr;
    if (!packed) rows = (scratch ? *scratch : local).template buffer<T>(packed_key, 2 * static_cast<std::size_t>(F)).data();
    for (index_t b = 0; b < pos.extent(0); ++b)
        for (index_t t = first; t < end; ++t) {
            const view<T, 1> zp(&pos(b, t, 0), {F}, {pos.stride(2)});
            const view<T, 1> zn(&neg(b, t, 0), {F}, {neg.stride(2)});
            if (packed) {
                guide_token<T>(k, zp, zn);
            } else {
                const view<T, 1> p(rows, {F}), n(rows + F, {F});
                kernels::copy<T, 1>(zp, p);
                kernels::copy<T, 1>(zn, n);
                guide_token<T>(k, p, n);
                kernels::copy<T, 1>(p, zp);
            }
            if (write_negative) kernels::copy<T, 1>(zp, zn);
        }
}

template <class T>
coefficients<T> coefficients_of(const normalized_attention_guidance& p);

/// The hook on one model call's attention output, `prompts` naming each item's prompt (the
/// patch's attention-output hook). Guides the first run of positive items against the first
/// run of negative items (chunks of the shorter run's length, as ComfyUI's equal chunks);
/// returns false, leaving `out` as it was, when the call lacks either prompt.
template <class T>
bool apply_items(const normalized_attention_guidance& p, const attention_site& site, const view<T, 3>& out,
                 std::span<const pass_kind> prompts, workspace* scratch = nullptr) {
    const index_t B = out.extent(0), N = out.extent(1);
    PATCHBAY_REQUIRE(static_cast<index_t>(prompts.size()) == B, where,
                     "the attention output has " + std::to_string(B) + " items but the call names the prompt of " +
                         std::to_string(prompts.size()));
    const auto first_of = [&](pass_kind k) {
        return static_cast<index_t>(std::find(prompts.begin(), prompts.end(), k) - prompts.begin());
    };
    const index_t i_pos = first_of(pass_kind::cond), i_neg = first_of(pass_kind::uncond);
    if (i_pos == B || i_neg == B || out.extent(2) == 0 || N == 0) return false;
    const auto run_from = [&](index_t i) {
        index_t e = i;
        while (e < B && prompts[static_cast<std::size_t>(e)] == prompts[static_cast<std::size_t>(i)]) ++e;
        return e - i;
    };
    const index_t n = std::min(run_from(i_pos), run_from(i_neg));
    index_t first = 0;
    if (dit::is_dit(site)) {
        const index_t img = dit::image_tokens(site);
        PATCHBAY_REQUIRE(img > 0 && img <= N, where,
                         "a DiT site must report its image token grid (rows x cols, at most the " + std::to_string(N) +
                             " tokens of its output), got " + std::to_string(site.rows) + " x " +
                             std::to_string(site.cols));
        first = N - img;
    }
    guide<T>(coefficients_of<T>(p), out.batch_slice(i_pos, n), out.batch_slice(i_neg, n), first, N, dit::is_dit(site),
             scratch);
    return true;
}

/// ComfyUI's attn1_output_patch call: `attn` is len(cond_or_uncond) equal chunks (0 = positive,
/// 1 = negative prompt) and `img_slice` the image tokens [first, end) of Flux blocks (none for
/// a UNet block). Guides the first positive chunk against the first negative one; returns
/// false, leaving `attn` as it was, when either is missing. Checks the patch and the inputs.
/// T = f16 / bf16 (half-precision storage): staged through float32 in `scratch` (null: a local
/// arena), the guided result rounded once (core/storage.hpp).
template <class T>
bool apply_chunks(const normalized_attention_guidance& p, const view<T, 3>& attn, std::span<const int> cond_or_uncond,
                  std::optional<std::pair<index_t, index_t>> img_slice, workspace* scratch = nullptr);

} // namespace nag

/// NAG (ComfyUI node NAGuidance). Needs a model that evaluates both prompts of a step in one
/// call (predict_batch) and calls attention-output hooks at its DiT blocks (dit::attention).
struct normalized_attention_guidance {
    double nag_scale = 5.0; ///< [0, 50]
    double nag_alpha = 0.5; ///< [0, 1]
    double nag_tau = 1.5;   ///< [1, 10]

    static constexpr auto descriptor() {
        using P = normalized_attention_guidance;
        return describe<P>("NAGuidance", "Normalized Attention Guidance", hook_kind::attention,
                           floating("nag_scale", &P::nag_scale, 5.0, 0.0, 50.0, 0.1),
                           floating("nag_alpha", &P::nag_alpha, 0.5, 0.0, 1.0, 0.01),
                           floating("nag_tau", &P::nag_tau, 1.5, 1.0, 10.0, 0.01));
    }
    /// The negative prompt's pass also runs at cond_scale 1 (ComfyUI's disable_cfg1_optimization).
    static constexpr bool disable_cfg1_optimization = true;
    static constexpr unsigned needs_capabilities =
        capability_bit(capability::attention_output_hooks) | capability_bit(capability::batched_passes);

    /// What the hook needs during a model call, and whether it saw both prompts.
    struct state_type {
        const normalized_attention_guidance* patch = nullptr;
        workspace* scratch = nullptr;
        bool positive_pass = false; ///< this evaluation's positive pass carried the hook
        int guided_sites = 0;       ///< hook calls that saw both prompts
    };

    /// Attaches the hook to the positive prompt's pass only: a batched model runs each prompt's
    /// attention-output hooks once over the whole batch, so NAG runs once per site. (In a
    /// re-evaluation, which holds one prompt, NAG does nothing, as in ComfyUI.)
    template <class T>
    void on_model_call(state_type& s, pass_kind pass, call_overrides<T>& ov) const {
        if (pass != pass_kind::cond) return;
        s = {this, ov.scratch(), true, 0};
        const typename call_overrides<T>::attention_output_fn fn(&hook<T>, &s);
        ov.add_attention_output(dit::every(dit_block_site::kind::double_block), fn);
        ov.add_attention_output(dit::every(dit_block_site::kind::single_block), fn);
    }

    /// Never a silent no-op: after the passes, the hook must have seen both prompts together.
    template <class T, std::size_t R>
    void post_cfg(state_type& s, const guidance_inputs<T, R>&, std::type_identity_t<view<const T, R>>,
                  std::type_identity_t<view<const T, R>>, view<T, R>) const {
        if (!s.positive_pass) return;
        s.positive_pass = false;
        PATCHBAY_REQUIRE(s.guided_sites > 0, nag::where,
                         "no self-attention of this model call saw the positive and the negative prompt together, "
                         "so NAG would do nothing (ComfyUI silently does nothing here); the model must evaluate "
                         "both prompts in one predict_batch call and run the positive prompt's attention-output "
                         "hooks on the whole batch at its DiT blocks (patchbay::dit::attention sites)");
    }

private:
    template <class T>
    static void hook(void* context, const attention_site& site, view<T, 3> out, std::span<const pass_kind> prompts) {
        auto& s = *static_cast<state_type*>(context);
        if (nag::apply_items<T>(*s.patch, site, out, prompts, s.scratch)) ++s.guided_sites;
    }
};

namespace nag {

template <class T>
coefficients<T> coefficients_of(const normalized_attention_guidance& p) {
    return {static_cast<T>(p.nag_scale), static_cast<T>(p.nag_scale - 1.0), static_cast<T>(p.nag_alpha),
            static_cast<T>(1.0 - p.nag_alpha), p.nag_tau};
}

template <class T>
bool apply_chunks(const normalized_attention_guidance& p, const view<T, 3>& attn, std::span<const int> cond_or_uncond,
                  std::optional<std::pair<index_t, index_t>> img_slice, workspace* scratch) {
    if constexpr (is_half_v<T>) { // half-precision storage: staged through float32 (core/storage.hpp)
        require_writable_layout(attn, where, "attn");
        bool guided = false;
        detail::staged_call<T>(scratch, [&](detail::stager& s, workspace& ws) {
            const view<float, 3> f = s.widen<T, 3>(attn);
            guided = apply_chunks<float>(p, f, cond_or_uncond, img_slice, &ws);
            if (guided) kernels::narrow<T, 3>(f, attn);
        });
        return guided;
    } else {
        validate(p);
        require_nonempty(attn, where, "attn");
        require_writable_layout(attn, where, "attn");
        const auto chunks = static_cast<index_t>(cond_or_uncond.size());
        PATCHBAY_REQUIRE(chunks > 0, where, "argument 'cond_or_uncond' is empty");
        const index_t B = attn.extent(0), N = attn.extent(1);
        PATCHBAY_REQUIRE(B % chunks == 0, where,
                         "the batch of 'attn' (" + std::to_string(B) + ") does not divide into the " +
                             std::to_string(chunks) + " equal chunks of 'cond_or_uncond'");
        for (int c : cond_or_uncond)
            PATCHBAY_REQUIRE(c == 0 || c == 1, where,
                             "'cond_or_uncond' holds 0 (positive) or 1 (negative) per chunk, got " + std::to_string(c));
        index_t first = 0, end = N;
        if (img_slice) {
            first = img_slice->first;
            end = img_slice->second;
            PATCHBAY_REQUIRE(0 <= first && first <= end && end <= N, where,
                             "'img_slice' [" + std::to_string(first) + ", " + std::to_string(end) +
                                 ") is not a token range of 'attn' (" + std::to_string(N) + " tokens)");
        }
        const auto index_of = [&](int c) {
            const auto it = std::find(cond_or_uncond.begin(), cond_or_uncond.end(), c);
            return static_cast<index_t>(it - cond_or_uncond.begin());
        };
        const index_t c_pos = index_of(0), c_neg = index_of(1);
        if (c_pos == chunks || c_neg == chunks) return false;
        const index_t n = B / chunks;
        guide<T>(coefficients_of<T>(p), attn.batch_slice(c_pos * n, n), attn.batch_slice(c_neg * n, n), first, end,
                 img_slice.has_value(), scratch);
        return true;
    }
}

} // namespace nag

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::normalized_attention_guidance)
