// Self-Attention Guidance: Hong, Lee, Jang, Kim, "Improving Sample Quality of Diffusion Models
// Using Self-Attention Guidance" (ICCV 2023). Matches ComfyUI's SelfAttentionGuidance node
// (comfy_extras/nodes_sag.py).
//
// During the uncond pass the middle block's first self-attention (site middle/0/0) is computed
// with its probabilities, and each key's share of attention (mean over heads, sum over
// queries) is kept. After CFG, the uncond prediction is blurred where keys got more than the
// average attention, re-noised to the current x, and the model is run once more on it with the
// uncond conditioning; result = cfg + scale * (degraded - model(degraded_noised)).
//
// Differences from ComfyUI (see docs/patches/sag.md): the token grid comes from the site's
// reported rows x cols when the model gives it (ComfyUI guesses it from the latent's aspect
// ratio, and crashes when no divisor is found: here an error); blur_sigma 0 means no blur
// (ComfyUI: NaN); only the per-key attention mass is stored, not the probabilities.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/attention.hpp"
#include "patchbay/kernels/blur.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay::sag {

/// The attention site SAG reads (ComfyUI: attn1 replacement at ("middle", 0, 0)).
inline constexpr attention_site site{unet_stage::middle, 0, 0, 0, 0};

/// SAG's fixed threshold on a key's attention mass (nodes_sag.py: sag_threshold = 1.0).
inline constexpr double default_threshold = 1.0;

/// Rows x cols of the attention tokens of a site.
struct token_grid {
    index_t rows = 0;
    index_t cols = 0;
    friend bool operator==(const token_grid&, const token_grid&) = default;
};

namespace detail {
/// Python's round() of a non-negative double: half to even.
inline double round_half_even(double v) {
    const double f = std::floor(v);
    const double d = v - f;
    if (d > 0.5) return f + 1.0;
    if (d < 0.5) return f;
    return std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}
} // namespace detail

/// ComfyUI's guess of the token grid of an attention map with `tokens` keys over a latent of
/// height x width: start at round(sqrt(height/width * tokens)) rows and search outwards
/// (x+i, then max(1, x-i), for i < floor(sqrt(tokens)/2)) for a divisor of `tokens`.
/// Where ComfyUI finds none (tokens < 4, a prime such as 7, ...) it crashes; here a
/// patchbay::error asks for the grid the model should report.
inline token_grid infer_token_grid(index_t tokens, index_t height, index_t width) {
    constexpr const char* where = "SelfAttentionGuidance";
    PATCHBAY_REQUIRE(tokens >= 1 && height >= 1 && width >= 1, where,
            "cannot infer the attention token grid from " + std::to_string(tokens) +
                " tokens over a " + std::to_string(height) + "x" + std::to_string(width) + " latent");
    const double start =
        detail::round_half_even(std::sqrt(static_cast<double>(height) / static_cast<double>(width) *
                                          static_cast<double>(tokens)));
    const auto x = static_cast<index_t>(start);
    const auto tries = static_cast<index_t>(std::floor(std::sqrt(static_cast<double>(tokens)) / 2.0));
    for (index_t i = 0; i < tries; ++i) {
        for (const index_t j : {x + i, std::max<index_t>(1, x - i)}) {
            if (j == 0) // ComfyUI divides by zero here (a very wide latent with few tokens)
                fail(where, "cannot infer the attention token grid: " + std::to_string(tokens) +
                                " tokens over a " + std::to_string(height) + "x" + std::to_string(width) +
                                " latent (ComfyUI fails too); the model must report the site's rows x cols");
            if (tokens % j == 0) return {j, tokens / j};
        }
    }
    fail(where, "cannot infer the attention token grid: " + std::to_string(tokens) +
                    " tokens over a " + std::to_string(height) + "x" + std::to_string(width) +
                    " latent have no divisor near the latent's aspect ratio (ComfyUI fails here "
                    "too); the model must report the site's rows x cols");
}

/// Each key's attention mass from probabilities (B*heads, Nq, Nk), batch-major: mass[b*Nk+j]
/// = mean over heads of the sum over queries. `mass` holds B*Nk doubles.
template <class T>
void key_mass_from_probabilities(std::type_identity_t<view<const T, 3>> probs, index_t batch,
                                 double* mass) {
    constexpr const char* where = "SelfAttentionGuidance";
    require_nonempty(probs, where, "attn");
    PATCHBAY_REQUIRE(batch >= 1 && probs.extent(0) % batch == 0, where,
            "attention probabilities " + shape_string(probs) +
                " must hold batch*heads rows for a batch of " + std::to_string(batch));
    const index_t heads = probs.extent(0) / batch, Nq = probs.extent(1), Nk = probs.extent(2);
    const double inv_heads = 1.0 / static_cast<double>(heads);
    // As (batch, heads, queries, keys), a key's mass is a column sum over (heads, queries).
    const view<const T, 4> by_item(probs.data_handle(), {batch, heads, Nq, Nk},
                                   {heads * probs.stride(0), probs.stride(0), probs.stride(1), probs.stride(2)});
    kernels::reduce_columns<1, 3>(
        [](auto p) { return std::array{p}; },
        [mass, Nk, inv_heads](index_t b, index_t j0, index_t len, const std::array<const double*, 1>& sums) {
            double* m = mass + b * Nk + j0;
            for (index_t j = 0; j < len; ++j) m[j] = sums[0][j] * inv_heads; // the mean over heads
        },
        by_item);
}

/// Scratch of the degradation step; reused between calls.
template <class T>
struct degrade_workspace {
    std::vector<std::uint8_t> mask;
    kernels::blur_workspace<T> blur;
};

/// SAG's degraded prediction from per-key attention masses (B x grid.rows*grid.cols):
/// x0 blurred where a key's mass exceeds `threshold`, x0 elsewhere. out may be exactly x0.
template <class T>
void degrade_from_key_mass(std::type_identity_t<view<const T, 4>> x0, const double* mass,
                           token_grid grid, double blur_sigma, double threshold, view<T, 4> out,
                           degrade_workspace<T>& ws) {
    const index_t tokens = grid.rows * grid.cols;
    PATCHBAY_REQUIRE(grid.rows >= 1 && grid.cols >= 1, "SelfAttentionGuidance",
            "the token grid must be at least 1x1");
    ws.mask.resize(static_cast<std::size_t>(x0.extent(0) * tokens));
    for (index_t i = 0; i < x0.extent(0) * tokens; ++i)
        ws.mask[static_cast<std::size_t>(i)] = mass[i] > threshold;
    kernels::masked_gaussian_blur_2d<T>(x0, blur_sigma, kernels::token_mask{ws.mask.data(), grid.rows, grid.cols},
                                        out, ws.blur);
}

/// ComfyUI's create_blur_map: attn (B*heads, Nq, Nk) probabilities of the uncond pass, x0 the
/// uncond prediction (B, C, H, W). grid {0, 0} = infer it as ComfyUI does.
template <class T>
void create_blur_map(std::type_identity_t<view<const T, 4>> x0,
                     std::type_identity_t<view<const T, 3>> attn, double blur_sigma,
                     double threshold, token_grid grid, view<T, 4> out) {
    constexpr const char* where = "SelfAttentionGuidance";
    require_nonempty(x0, where, "x0");
    require_nonempty(attn, where, "attn");
    const index_t B = x0.extent(0), Nk = attn.extent(2);
    if (grid.rows == 0 && grid.cols == 0) grid = infer_token_grid(Nk, x0.extent(2), x0.extent(3));
    PATCHBAY_REQUIRE(grid.rows * grid.cols == Nk, where,
            "the token grid " + std::to_string(grid.rows) + "x" + std::to_string(grid.cols) +
                " does not match the " + std::to_string(Nk) + " attention keys");
    std::vector<double> mass(static_cast<std::size_t>(B * Nk));
    key_mass_from_probabilities<T>(attn, B, mass.data());
    degrade_workspace<T> ws;
    degrade_from_key_mass<T>(x0, mass.data(), grid, blur_sigma, threshold, out, ws);
}

/// What SAG feeds the model: degraded + x - uncond (ComfyUI's order of operations).
template <class T, std::size_t R>
void renoise(std::type_identity_t<view<const T, R>> degraded, std::type_identity_t<view<const T, R>> x,
             std::type_identity_t<view<const T, R>> uncond, view<T, R> out) {
    kernels::transform(out, [](auto d, auto xx, auto u) { return d + xx - u; }, degraded, x, uncond);
}

namespace detail {
/// Resize t to the view's shape without touching the heap when the shape is unchanged.
template <class T, class U, std::size_t R>
view<T, R> shaped_like(tensor<T>& t, const view<U, R>& like) {
    bool same = t.rank() == R;
    for (std::size_t r = 0; same && r < R; ++r) same = t.extent(r) == like.extent(r);
    if (!same) t.resize_like(like);
    return t.template as<R>();
}

/// Per-precision scratch of the post-cfg step.
template <class T>
struct buffers {
    tensor<T> degraded, noised, model_out;
    degrade_workspace<T> degrade;
};
} // namespace detail

/// What SAG keeps between the uncond pass and its post-cfg step: each key's attention mass
/// (batch x tokens) from the uncond pass, and the token grid the model reported.
struct recorded_attention {
    std::vector<double> key_mass;
    index_t batch = 0;
    index_t tokens = 0;
    token_grid grid{}; ///< {0, 0} when the model did not report it
    bool valid = false;
};

/// Record the probabilities (batch*heads, Nq, Nk) of the uncond pass at SAG's site.
template <class T>
void record(recorded_attention& rec, const attention_site& at,
            std::type_identity_t<view<const T, 3>> probabilities, index_t heads) {
    constexpr const char* where = "SelfAttentionGuidance";
    require_nonempty(probabilities, where, "attention probabilities");
    PATCHBAY_REQUIRE(heads >= 1 && probabilities.extent(0) % heads == 0, where,
            "attention probabilities " + shape_string(probabilities) +
                " must hold batch*heads rows with heads = " + std::to_string(heads));
    rec.batch = probabilities.extent(0) / heads;
    rec.tokens = probabilities.extent(2);
    rec.key_mass.resize(static_cast<std::size_t>(rec.batch * rec.tokens));
    key_mass_from_probabilities<T>(probabilities, rec.batch, rec.key_mass.data());
    rec.grid = {at.rows, at.cols};
    rec.valid = true;
}

} // namespace patchbay::sag

namespace patchbay {

/// SAG (ComfyUI node SelfAttentionGuidance). Needs a model that calls attention hooks at
/// attention_site{middle, 0, 0}; keeps the uncond pass at cond_scale 1.
struct self_attention_guidance {
    double scale = 0.5;      ///< ComfyUI "scale", [-2, 5]
    double blur_sigma = 2.0; ///< ComfyUI "blur_sigma", [0, 10]; 0 = no blur (ComfyUI: NaN)

    static constexpr auto descriptor() {
        return describe<self_attention_guidance>(
            "SelfAttentionGuidance", "Self-Attention Guidance", hook_kind::post_cfg,
            floating("scale", &self_attention_guidance::scale, 0.5, -2.0, 5.0, 0.01),
            floating("blur_sigma", &self_attention_guidance::blur_sigma, 2.0, 0.0, 10.0, 0.1));
    }
    static constexpr bool needs_attention_hooks = true;
    static constexpr bool disable_cfg1_optimization = true;

    struct state_type {
        sag::recorded_attention attention;
        sag::detail::buffers<float> f32;
        sag::detail::buffers<double> f64;

        template <class T>
        sag::detail::buffers<T>& scratch() noexcept {
            if constexpr (std::is_same_v<T, float>) return f32;
            else return f64;
        }
    };

    void validate() const { patchbay::validate(*this); }

    /// Before each model call: on the uncond pass, read the middle block's attention into
    /// the state. Other passes (cond, re-evaluations) record nothing, as in ComfyUI.
    template <class T>
    void on_model_call(state_type& st, pass_kind pass, call_overrides<T>& overrides) const {
        if (pass != pass_kind::uncond) return;
        st.attention.valid = false; // a stale map from an earlier step must not be used
        overrides.read_attention(
            sag::site, typename call_overrides<T>::attention_read_fn(
                           [](void* ctx, const attention_site& at, view<const T, 3> probs, index_t heads) {
                               sag::record<T>(*static_cast<sag::recorded_attention*>(ctx), at, probs, heads);
                           },
                           &st.attention));
    }

    /// The post-cfg step, evaluating the model through the guider's model access.
    template <class T, std::size_t R>
    void post_cfg(state_type& st, const guidance_inputs<T, R>& in,
                  std::type_identity_t<view<const T, R>> cond,
                  std::type_identity_t<view<const T, R>> uncond, view<T, R> denoised,
                  model_access<T, R>& model) const {
        (void)cond;
        post_cfg_with(st, in, uncond, denoised,
                      [&model](view<const T, R> input, view<T, R> prediction) {
                          model.evaluate(pass_kind::uncond, input, prediction);
                      });
    }

    /// The post-cfg step with the extra model evaluation supplied by the caller:
    /// `uncond_model(input, prediction)` writes the model's denoised prediction for `input`
    /// with the uncond conditioning at this step's sigma (for engines with their own loop).
    /// `denoised` is the cfg result, updated in place.
    template <class T, std::size_t R, class UncondModel>
    void post_cfg_with(state_type& st, const guidance_inputs<T, R>& in,
                       std::type_identity_t<view<const T, R>> uncond, view<T, R> denoised,
                       UncondModel&& uncond_model) const {
        constexpr const char* where = "SelfAttentionGuidance";
        if constexpr (R != 4) {
            (void)st, (void)in, (void)uncond, (void)denoised, (void)uncond_model;
            fail(where, "SAG works on 4-D latents (N, C, H, W); got a 5-D latent (ComfyUI fails too)");
        } else {
            // its own preconditions (the dispatcher has checked shapes and values): x and sigma
            require_nonempty(in.x, where, "x");
            require_batch_vector(in.sigma, in.x, where, "sigma");
            // Too small for the blur's reflect padding: ComfyUI returns the cfg result.
            if (std::min(denoised.extent(2), denoised.extent(3)) <= 4) return;

            const auto& rec = st.attention;
            PATCHBAY_REQUIRE(rec.valid, where,
                    "no attention was recorded at the middle block's first self-attention "
                    "during this step's uncond pass; the model must call the attention hooks "
                    "at attention_site{middle, 0, 0} and the uncond pass must run");
            PATCHBAY_REQUIRE(rec.batch == denoised.extent(0), where,
                    "the recorded attention has batch " + std::to_string(rec.batch) +
                        " but the latent has batch " + std::to_string(denoised.extent(0)));
            sag::token_grid grid = rec.grid;
            if (grid.rows == 0 && grid.cols == 0)
                grid = sag::infer_token_grid(rec.tokens, denoised.extent(2), denoised.extent(3));
            PATCHBAY_REQUIRE(grid.rows * grid.cols == rec.tokens, where,
                    "the reported token grid " + std::to_string(grid.rows) + "x" +
                        std::to_string(grid.cols) + " does not match the " +
                        std::to_string(rec.tokens) + " attention tokens");

            auto& buf = st.template scratch<T>();
            const auto degraded = sag::detail::shaped_like(buf.degraded, denoised);
            const auto noised = sag::detail::shaped_like(buf.noised, denoised);
            const auto model_out = sag::detail::shaped_like(buf.model_out, denoised);
            sag::degrade_from_key_mass<T>(uncond, rec.key_mass.data(), grid, blur_sigma,
                                          sag::default_threshold, degraded, buf.degrade);
            sag::renoise<T, R>(degraded, in.x, uncond, noised);
            uncond_model(view<const T, R>(noised), model_out);
            kernels::add_scaled_difference<T, R>(degraded, model_out, scale, denoised);
        }
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::self_attention_guidance)
