// patchbay: guider<Model, Patches...> runs one denoise call in ComfyUI's order
// (comfy/samplers.py: KSamplerX0Inpaint, sampling_function, cfg_function):
//   1. mask function (DifferentialDiffusion) and inpainting blend of x, when a mask is given;
//   2. model passes: cond, then uncond (skipped when cond_scale == 1 unless a patch keeps it;
//      hooks then see an all-zero uncond and uncond_is_none);
//   3. pre-cfg hooks in order; 4. the cfg function or uncond + s*(cond - uncond);
//   5. post-cfg hooks in order (they may evaluate the model again through model_access);
//   6. inpainting blend of the result.
// The guider is immutable and holds no per-run data: begin_run() returns a run_state with each
// patch's state and the scratch buffers. Copying a run_state clones the run; one guider serves
// any number of concurrent runs, each with its own run_state (the model's predict must then be
// safe to call concurrently). After the first step of a run a denoise call allocates nothing.
#pragma once

#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

/// Inpainting inputs of a run (ComfyUI's denoise_mask, latent_image and the original noise).
/// All have the latent's shape; mask 1 = regenerate, 0 = keep the latent image.
template <class T, std::size_t R>
struct inpaint_inputs {
    view<const T, R> denoise_mask;
    view<const T, R> latent_image; ///< in model space
    view<const T, R> noise;        ///< the unscaled noise the run started from
};

/// What a sampler hands the guider for one model evaluation.
template <class T, std::size_t R>
struct step_inputs {
    view<const T, R> x;     ///< the current noisy latent
    view<const T, 1> sigma; ///< one noise level per batch item
    double cond_scale = 1.0;
    std::span<const double> step_sigmas{}; ///< the run's whole schedule (read by a mask function)
    const inpaint_inputs<T, R>* inpaint = nullptr; ///< null: no inpainting
};

namespace detail {

// ---- patch traits (what a patch declares; see core/model.hpp) -------------------------------

template <class P>
constexpr bool has_slot = requires(const P& p) {
    { p.slot() } -> std::convertible_to<hook_kind>;
};

template <class P>
hook_kind slot_of(const P& p) {
    if constexpr (has_slot<P>) return static_cast<hook_kind>(p.slot());
    else return P::hook;
}

template <class P>
constexpr bool flag_needs_block_hooks = requires { requires static_cast<bool>(P::needs_block_hooks); };
template <class P>
constexpr bool flag_needs_attention_hooks =
    requires { requires static_cast<bool>(P::needs_attention_hooks); };
template <class P>
constexpr bool flag_disable_cfg1 =
    requires { requires static_cast<bool>(P::disable_cfg1_optimization); };

template <class P>
constexpr bool needs_block_hooks = flag_needs_block_hooks<P> || P::hook == hook_kind::output_block;
template <class P>
constexpr bool needs_attention_hooks = flag_needs_attention_hooks<P> || P::hook == hook_kind::attention;

template <class P, class T, std::size_t R>
concept has_pre_cfg = requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in,
                               view<T, R> c, view<T, R> u) { p.pre_cfg(s, in, c, u); };
template <class P, class T, std::size_t R>
concept has_cfg_function =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, view<const T, R> c,
             view<const T, R> u, view<T, R> o) { p.cfg_function(s, in, c, u, o); };
template <class P, class T, std::size_t R>
concept has_post_cfg_access =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, view<const T, R> c,
             view<const T, R> u, view<T, R> d, model_access<T, R>& a) {
        p.post_cfg(s, in, c, u, d, a);
    };
template <class P, class T, std::size_t R>
concept has_post_cfg_plain =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, view<const T, R> c,
             view<const T, R> u, view<T, R> d) { p.post_cfg(s, in, c, u, d); };
template <class P, class T, std::size_t R>
concept has_post_cfg = has_post_cfg_access<P, T, R> || has_post_cfg_plain<P, T, R>;
template <class P, class T, std::size_t R>
concept has_mask_function =
    requires(const P& p, state_t<P>& s, const mask_inputs& mi, view<const T, R> m, view<T, R> o) {
        p.mask(s, mi, m, o);
    };
template <class P, class T>
concept has_output_block =
    requires(const P& p, state_t<P>& s, const block_site& site, view<T, 4> h, view<T, 4> hsp) {
        p.output_block(s, site, h, hsp);
    };
template <class P, class T>
concept has_on_model_call =
    requires(const P& p, state_t<P>& s, pass_kind k, call_overrides<T>& o) { p.on_model_call(s, k, o); };

/// The type's name for messages: P::name when the patch declares one, else the C++ name.
template <class P>
std::string_view type_name() {
    if constexpr (requires { std::string_view(P::name); }) {
        return std::string_view(P::name);
    } else {
#if defined(__clang__) || defined(__GNUC__)
        std::string_view f = __PRETTY_FUNCTION__;
        const auto at = f.find("P = ");
        if (at == std::string_view::npos) return "patch";
        f.remove_prefix(at + 4);
        const auto end = f.find_first_of(";]");
        return f.substr(0, end);
#else
        return "patch";
#endif
    }
}

/// Checks that a patch's (possibly run-time) slot has the member function it needs.
template <class P>
void check_slot(const P& p, std::string_view where) {
    const hook_kind k = slot_of(p);
    bool ok = true;
    switch (k) {
    case hook_kind::pre_cfg: ok = has_pre_cfg<P, float, 4>; break;
    case hook_kind::cfg_function: ok = has_cfg_function<P, float, 4>; break;
    case hook_kind::post_cfg: ok = has_post_cfg<P, float, 4>; break;
    case hook_kind::mask_function: ok = has_mask_function<P, float, 4>; break;
    case hook_kind::output_block: ok = has_output_block<P, float>; break;
    case hook_kind::attention: ok = has_post_cfg<P, float, 4> || has_on_model_call<P, float>; break;
    case hook_kind::model_sampling:
        fail(where, "patch '" + std::string(type_name<P>()) +
                        "' occupies the model-sampling slot; pass a model_sampling to the guider "
                        "instead of a patch");
    }
    if (!ok)
        fail(where, "patch '" + std::string(type_name<P>()) +
                        "' occupies a hook slot it has no member function for");
}

inline bool cond_scale_is_one(double s) noexcept {
    // Python's math.isclose(s, 1.0) with its default rel_tol 1e-9 (ComfyUI's cfg1 test)
    return std::fabs(s - 1.0) <= 1e-9 * std::max(std::fabs(s), 1.0);
}

enum workspace_slot : std::size_t { ws_cond = 0, ws_uncond, ws_x, ws_mask, ws_scaled };

template <class T, std::size_t R>
void validate_step(const step_inputs<T, R>& st, const view<T, R>& denoised, bool has_mask_fn,
                   std::string_view where) {
    require_nonempty(st.x, where, "x");
    require_batch_vector(st.sigma, st.x, where, "sigma");
    for (index_t b = 0; b < st.sigma.extent(0); ++b)
        require_finite(static_cast<double>(st.sigma(b)), where, "sigma");
    require_finite(st.cond_scale, where, "cond_scale");
    require_same_shape(st.x, denoised, where, "x", "denoised");
    require_writable_layout(denoised, where, "denoised");
    if (may_overlap(denoised, st.x))
        fail(where, "output 'denoised' overlaps input 'x' (hooks read x while denoised is written)");
    if (st.inpaint) {
        require_same_shape(st.x, st.inpaint->denoise_mask, where, "x", "denoise_mask");
        require_same_shape(st.x, st.inpaint->latent_image, where, "x", "latent_image");
        require_same_shape(st.x, st.inpaint->noise, where, "x", "noise");
        if (has_mask_fn && st.step_sigmas.empty())
            fail(where, "argument 'step_sigmas' is empty, but the mask function needs the run's "
                        "whole schedule");
    }
}

/// The step shared by guider and patch_chain. Hooks supplies: keeps_uncond(), has_mask(),
/// mask(mi, m, out), prepare_call(pass, overrides), guidance(gi, c, u, d, access*).
template <class Model, class Cond, class T, std::size_t R, class Hooks>
void denoise_step(Model& model, const model_sampling& ms, Hooks& hooks, workspace& ws,
                  const Cond* positive, const Cond* negative, const step_inputs<T, R>& st,
                  view<T, R> denoised, std::string_view where) {
    validate_step(st, denoised, hooks.has_mask(), where);
    const auto& ext = st.x.extents();

    view<const T, R> x = st.x;
    view<const T, R> mask{};
    if (st.inpaint) {
        const auto& ip = *st.inpaint;
        mask = ip.denoise_mask;
        if (hooks.has_mask()) {
            const mask_inputs mi{static_cast<double>(st.sigma(0)), st.step_sigmas, &ms};
            view<T, R> m = ws.get<T, R>(ws_mask, ext);
            hooks.mask(mi, ip.denoise_mask, m);
            mask = m;
        }
        // x*m + noise_scaling(sigma, noise, latent)*(1 - m), as KSamplerX0Inpaint
        view<T, R> scaled = ws.get<T, R>(ws_scaled, ext);
        ms.noise_scaling<T, R>(st.sigma, ip.noise, ip.latent_image, false, scaled);
        view<T, R> xin = ws.get<T, R>(ws_x, ext);
        kernels::transform(
            xin, [](auto xv, auto mv, auto sv) { return xv * mv + sv * (T(1) - mv); }, st.x, mask,
            view<const T, R>(scaled));
        x = xin;
    }

    view<T, R> cond = ws.get<T, R>(ws_cond, ext);
    view<T, R> uncond = ws.get<T, R>(ws_uncond, ext);
    auto call_model = [&](pass_kind pass, pass_kind prompt, view<const T, R> xv, view<T, R> out,
                          const call_overrides<T>* extra) {
        call_overrides<T> overrides;
        hooks.prepare_call(pass, overrides);
        if (extra) overrides.append(*extra);
        const model_call<Cond, T, R> call{xv,   st.sigma,
                                          pass, prompt,
                                          prompt == pass_kind::cond ? positive : negative,
                                          &overrides};
        model.predict(call, out);
    };

    const bool skip_uncond = cond_scale_is_one(st.cond_scale) && !hooks.keeps_uncond();
    call_model(pass_kind::cond, pass_kind::cond, x, cond, nullptr);
    if (skip_uncond) kernels::fill(uncond, T(0)); // ComfyUI's None entry is an all-zero tensor
    else call_model(pass_kind::uncond, pass_kind::uncond, x, uncond, nullptr);

    auto reevaluate = [&](pass_kind prompt, view<const T, R> xr, view<T, R> out,
                          const call_overrides<T>* extra) {
        require_same_shape(x, xr, "model_access::evaluate", "x of the step", "x");
        require_same_shape(x, out, "model_access::evaluate", "x of the step", "out");
        call_model(pass_kind::reevaluation, prompt, xr, out, extra);
    };
    model_access<T, R> access(model_access<T, R>::evaluate_fn::to(reevaluate));

    const guidance_inputs<T, R> gi{x, st.sigma, st.cond_scale, skip_uncond, ms.prediction()};
    hooks.guidance(gi, cond, uncond, denoised, &access);

    if (st.inpaint) // out*m + latent*(1 - m)
        kernels::transform(
            denoised, [](auto d, auto mv, auto l) { return d * mv + l * (T(1) - mv); }, denoised,
            mask, st.inpaint->latent_image);
}

template <class T, std::size_t R>
void validate_combine(const guidance_inputs<T, R>& in, const view<T, R>& cond,
                      const view<T, R>& uncond, const view<T, R>& denoised, std::string_view where) {
    require_nonempty(in.x, where, "x");
    require_batch_vector(in.sigma, in.x, where, "sigma");
    require_finite(in.cond_scale, where, "cond_scale");
    require_same_shape(in.x, cond, where, "x", "cond");
    require_same_shape(in.x, uncond, where, "x", "uncond");
    require_same_shape(in.x, denoised, where, "x", "denoised");
    require_writable_layout(denoised, where, "denoised");
    if (may_overlap(denoised, cond) || may_overlap(denoised, uncond) || may_overlap(denoised, in.x))
        fail(where, "output 'denoised' overlaps an input (x, cond or uncond)");
}

} // namespace detail

// =============================================================================================

template <class Model, class... Patches>
class guider {
    static_assert((patch<Patches> && ...),
                  "Every type after the model in guider<Model, Patches...> must be a patch: a "
                  "struct with a static hook_kind `hook` and a validate() member function.");
    static_assert(((Patches::hook == hook_kind::cfg_function ? 1 : 0) + ... + 0) <= 1,
                  "A guider takes at most one cfg-function patch (RescaleCFG, RenormCFG): "
                  "ComfyUI silently keeps the last one, patchbay refuses the ambiguity.");
    static_assert(((Patches::hook == hook_kind::mask_function ? 1 : 0) + ... + 0) <= 1,
                  "A guider takes at most one mask-function patch (DifferentialDiffusion).");
    static_assert(((!detail::needs_block_hooks<Patches> || block_hookable<Model> ||
                    runtime_capabilities<Model>) &&
                   ...),
                  "A patch in this guider needs block hooks (FreeU), but the model neither "
                  "declares `static constexpr bool calls_block_hooks = true` nor answers "
                  "supports(capability) at run time.");
    static_assert(((!detail::needs_attention_hooks<Patches> || attention_hookable<Model> ||
                    runtime_capabilities<Model>) &&
                   ...),
                  "A patch in this guider needs attention hooks (SAG, PAG), but the model neither "
                  "declares `static constexpr bool calls_attention_hooks = true` nor answers "
                  "supports(capability) at run time.");

public:
    using model_type = Model;
    using conditioning_type = conditioning_t<Model>;
    static constexpr std::size_t patch_count = sizeof...(Patches);

    /// Everything one sampling run owns: each patch's state, the prompts, scratch buffers.
    /// A copy is a clone of the run; reset() starts the patches' states afresh.
    struct run_state {
        std::tuple<state_t<Patches>...> patch_states{};
        const conditioning_type* positive = nullptr;
        const conditioning_type* negative = nullptr;
        workspace scratch;

        template <std::size_t I>
        auto& state() noexcept { return std::get<I>(patch_states); }
        void reset() { patch_states = std::tuple<state_t<Patches>...>{}; }
    };

    /// The guider refers to the model (it must outlive the guider) and owns the patches.
    /// Every patch is validated here.
    guider(Model& model, model_sampling sampling, Patches... patches)
        : model_(&model), sampling_(std::move(sampling)), patches_(std::move(patches)...) {
        std::size_t cfg = 0, mask = 0;
        std::apply(
            [&](const auto&... p) {
                ((p.validate(), detail::check_slot(p, "guider"),
                  cfg += detail::slot_of(p) == hook_kind::cfg_function,
                  mask += detail::slot_of(p) == hook_kind::mask_function),
                 ...);
            },
            patches_);
        PATCHBAY_REQUIRE(cfg <= 1, "guider", "more than one patch occupies the cfg-function slot");
        PATCHBAY_REQUIRE(mask <= 1, "guider", "more than one patch occupies the mask-function slot");
    }

    const model_sampling& sampling() const noexcept { return sampling_; }
    Model& model() const noexcept { return *model_; }
    template <std::size_t I>
    const auto& patch() const noexcept { return std::get<I>(patches_); }

    /// Start a run with the engine's positive and negative conditioning (either may be null
    /// when the model needs none). Checks run-time capabilities of the model.
    run_state begin_run(const conditioning_type* positive = nullptr,
                        const conditioning_type* negative = nullptr) const {
        std::apply([&](const auto&... p) { (check_capabilities(p), ...); }, patches_);
        run_state run;
        run.positive = positive;
        run.negative = negative;
        return run;
    }

    /// One model evaluation of the sampler: writes the guided denoised prediction.
    template <class T, std::size_t R>
    void denoise(run_state& run, const step_inputs<T, R>& step, view<T, R> denoised) const {
        static_assert(diffusion_model<Model, T, R>,
                      "The guider's model has no predict(const model_call<Cond, T, R>&, "
                      "view<T, R>) for this element type and rank.");
        step_hooks<T, R> hooks{*this, run};
        detail::denoise_step<Model, conditioning_type, T, R>(*model_, sampling_, hooks,
                                                              run.scratch, run.positive,
                                                              run.negative, step, denoised,
                                                              "guider::denoise");
    }

    /// The cfg stage alone, for engines that run the model themselves (a stable-diffusion.cpp
    /// style loop): pre-cfg hooks (which rewrite cond and uncond in place), the cfg function
    /// or default combine, post-cfg hooks. Patches that evaluate the model again (SAG, PAG)
    /// or hook into it (FreeU) cannot be used here: a compile-time error, never a silent
    /// skip. in.uncond_is_none must say whether the engine skipped the uncond pass (then
    /// uncond must be zeros, as ComfyUI hands it to hooks).
    template <class T, std::size_t R>
    void combine(run_state& run, const guidance_inputs<T, R>& in, view<T, R> cond,
                 view<T, R> uncond, view<T, R> denoised) const {
        static_assert(!(detail::has_post_cfg_access<Patches, T, R> || ...),
                      "guider::combine cannot run a post-cfg patch that evaluates the model "
                      "again (SAG, PAG); use denoise() with a model instead.");
        static_assert(!((detail::has_output_block<Patches, T> || detail::has_on_model_call<Patches, T>) || ...),
                      "guider::combine cannot apply a patch that hooks into the model (FreeU, "
                      "attention hooks): it would be silently skipped; call the patch from your "
                      "network or use denoise().");
        detail::validate_combine(in, cond, uncond, denoised, "guider::combine");
        step_hooks<T, R> hooks{*this, run};
        hooks.guidance(in, cond, uncond, denoised, nullptr);
    }

private:
    template <class P>
    void check_capabilities(const P&) const {
        if constexpr (detail::needs_block_hooks<P>)
            if (!model_supports(*model_, capability::block_hooks))
                fail("guider::begin_run", "patch '" + std::string(detail::type_name<P>()) +
                                              "' needs block hooks, which the model does not support");
        if constexpr (detail::needs_attention_hooks<P>)
            if (!model_supports(*model_, capability::attention_hooks))
                fail("guider::begin_run", "patch '" + std::string(detail::type_name<P>()) +
                                              "' needs attention hooks, which the model does not "
                                              "support");
    }

    /// The patches' hooks for one step, bound to one run's states.
    template <class T, std::size_t R>
    struct step_hooks {
        const guider& g;
        run_state& run;
        using seq = std::index_sequence_for<Patches...>;

        static constexpr bool keeps_uncond_v = (detail::flag_disable_cfg1<Patches> || ...);
        bool keeps_uncond() const noexcept { return keeps_uncond_v; }
        bool has_mask() const {
            bool any = false;
            for_each([&](const auto& p, auto&) {
                using P = std::remove_cvref_t<decltype(p)>;
                if constexpr (detail::has_mask_function<P, T, R>)
                    any = any || detail::slot_of(p) == hook_kind::mask_function;
            });
            return any;
        }
        void mask(const mask_inputs& mi, view<const T, R> m, view<T, R> out) {
            for_each([&](const auto& p, [[maybe_unused]] auto& s) {
                using P = std::remove_cvref_t<decltype(p)>;
                if constexpr (detail::has_mask_function<P, T, R>)
                    if (detail::slot_of(p) == hook_kind::mask_function) p.mask(s, mi, m, out);
            });
        }

        template <std::size_t I>
        static void output_block_thunk(void* ctx, const block_site& site, view<T, 4> h,
                                       view<T, 4> hsp) {
            auto* self = static_cast<step_hooks*>(ctx);
            std::get<I>(self->g.patches_).output_block(std::get<I>(self->run.patch_states), site,
                                                       h, hsp);
        }
        void prepare_call(pass_kind pass, call_overrides<T>& ov) {
            add_block_hooks(ov, seq{});
            for_each([&](const auto& p, [[maybe_unused]] auto& s) {
                using P = std::remove_cvref_t<decltype(p)>;
                if constexpr (detail::has_on_model_call<P, T>) p.on_model_call(s, pass, ov);
            });
        }
        template <std::size_t... I>
        void add_block_hooks(call_overrides<T>& ov, std::index_sequence<I...>) {
            (
                [&] {
                    using P = std::tuple_element_t<I, std::tuple<Patches...>>;
                    if constexpr (R == 4 && detail::has_output_block<P, T>)
                        ov.add_output_block(typename call_overrides<T>::output_block_fn(
                            &output_block_thunk<I>, this));
                }(),
                ...);
        }

        void guidance(const guidance_inputs<T, R>& gi, view<T, R> c, view<T, R> u, view<T, R> d,
                      model_access<T, R>* access) {
            for_each([&](const auto& p, [[maybe_unused]] auto& s) {
                using P = std::remove_cvref_t<decltype(p)>;
                if constexpr (detail::has_pre_cfg<P, T, R>)
                    if (detail::slot_of(p) == hook_kind::pre_cfg) p.pre_cfg(s, gi, c, u);
            });
            const view<const T, R> cc = c, cu = u;
            bool replaced = false;
            for_each([&](const auto& p, [[maybe_unused]] auto& s) {
                using P = std::remove_cvref_t<decltype(p)>;
                if constexpr (detail::has_cfg_function<P, T, R>)
                    if (detail::slot_of(p) == hook_kind::cfg_function) {
                        p.cfg_function(s, gi, cc, cu, d);
                        replaced = true;
                    }
            });
            if (!replaced) kernels::cfg_combine<T, R>(cc, cu, gi.cond_scale, d);
            for_each([&](const auto& p, [[maybe_unused]] auto& s) {
                using P = std::remove_cvref_t<decltype(p)>;
                const hook_kind k = detail::slot_of(p);
                if (k != hook_kind::post_cfg && k != hook_kind::attention) return;
                if constexpr (detail::has_post_cfg_access<P, T, R>) {
                    if (!access)
                        fail("guider::combine", "patch '" + std::string(detail::type_name<P>()) +
                                                    "' evaluates the model again; use denoise()");
                    p.post_cfg(s, gi, cc, cu, d, *access);
                } else if constexpr (detail::has_post_cfg_plain<P, T, R>) {
                    p.post_cfg(s, gi, cc, cu, d);
                }
            });
        }

        template <class F>
        void for_each(F&& f) const {
            for_each_impl(f, seq{});
        }
        template <class F, std::size_t... I>
        void for_each_impl(F& f, std::index_sequence<I...>) const {
            (f(std::get<I>(g.patches_), std::get<I>(run.patch_states)), ...);
        }
    };

    Model* model_;
    model_sampling sampling_;
    std::tuple<Patches...> patches_;
};

/// Anything the samplers can drive: guider and patch_chain.
template <class G, class T, std::size_t R>
concept guided_denoiser = requires(const G& g, typename G::run_state& run,
                                   const step_inputs<T, R>& st, view<T, R> out) {
    { g.sampling() } -> std::convertible_to<const model_sampling&>;
    g.denoise(run, st, out);
};

} // namespace patchbay
