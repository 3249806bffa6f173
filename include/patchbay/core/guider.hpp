// patchbay: guider<Model, Patches...>, the compile-time front end of the dispatcher
// (core/dispatch.hpp). It refuses at compile time what it can see in the types (a patch the
// model cannot host, two patches in a single slot, a patch with no hook for the element type
// and rank) and builds its hook table on the stack each step; the step itself is the same
// function patch_chain runs.
//
// The guider is immutable and holds no per-run data: begin_run() returns a run_state with each
// patch's state and the scratch arena. Copying a run_state clones the run; one guider serves any
// number of concurrent runs, each with its own run_state (the model's predict must then be safe
// to call concurrently). After the first step of a run a denoise call allocates nothing.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

namespace detail {

/// guider<Model, windowed<P>> holds a P with a step window: the traits look at P.
template <class P>
struct unwrap_window {
    using type = P;
    static const P& patch(const P& p) noexcept { return p; }
    static step_window window(const P&) noexcept { return {}; }
};
template <class P>
struct unwrap_window<windowed<P>> {
    using type = P;
    static const P& patch(const windowed<P>& w) noexcept { return w.patch; }
    static step_window window(const windowed<P>& w) noexcept { return w.window; }
};
template <class P>
using unwrap_t = typename unwrap_window<P>::type;

template <class P>
constexpr hook_kind declared_slot = unwrap_t<P>::descriptor().slot;

template <class W, class T, std::size_t R>
constexpr bool has_hook_for() {
    using P = unwrap_t<W>;
    switch (declared_slot<P>) {
    case hook_kind::pre_cfg: return has_pre_cfg<P, T, R>;
    case hook_kind::cfg_function: return has_cfg_function<P, T, R>;
    case hook_kind::post_cfg: return has_post_cfg<P, T, R>;
    case hook_kind::mask_function: return has_mask_function<P, T, R>;
    case hook_kind::pass_composition: return has_compose_passes<P, T, R>;
    case hook_kind::multi_prompt: return has_multi_prompt<P, T, R>;
    default: return true; // network hooks and model sampling do not depend on the latent rank
    }
}

template <class Model, class W>
constexpr bool model_can_host() {
    using P = unwrap_t<W>;
    constexpr bool runtime = runtime_capabilities<Model>;
    constexpr bool blocks = !(flag_needs_block_hooks<P> || has_output_block<P, float>) || block_hookable<Model>;
    constexpr bool attention = !flag_needs_attention_hooks<P> || attention_hookable<Model>;
    return runtime || (blocks && attention);
}

} // namespace detail

template <class Model, class... Patches>
class guider {
    static_assert((patch<detail::unwrap_t<Patches>> && ...),
                  "Every type after the model in guider<Model, Patches...> must be a patch: a copyable "
                  "struct with a static descriptor() (see core/descriptor.hpp).");
    static constexpr int count_in([[maybe_unused]] hook_kind k) {
        return ((detail::declared_slot<Patches> == k ? 1 : 0) + ... + 0);
    }
    static_assert(count_in(hook_kind::cfg_function) <= 1,
                  "A guider takes at most one cfg-function patch (RescaleCFG, RenormCFG, ...): ComfyUI "
                  "silently keeps the last one, patchbay refuses the ambiguity.");
    static_assert(count_in(hook_kind::mask_function) <= 1,
                  "A guider takes at most one mask-function patch (DifferentialDiffusion).");
    static_assert(count_in(hook_kind::pass_composition) <= 1,
                  "A guider takes at most one pass-composition patch (SkipLayerGuidanceDiTSimple).");
    static_assert(count_in(hook_kind::multi_prompt) <= 1, "A guider takes at most one multi-prompt guider patch.");
    static_assert((detail::model_can_host<Model, Patches>() && ...),
                  "A patch in this guider needs block hooks (FreeU) or attention hooks (SAG, PAG), but the "
                  "model neither declares them (`static constexpr bool calls_block_hooks = true`, "
                  "`calls_attention_hooks = true`) nor answers supports(capability) at run time.");

public:
    using model_type = Model;
    using conditioning_type = conditioning_t<Model>;
    static constexpr std::size_t patch_count = sizeof...(Patches);

    /// Everything one sampling run owns: each patch's state, the prompts, the scratch arena.
    /// A copy is a clone of the run; reset() starts the patches' states afresh; release()
    /// frees the scratch (the next step allocates it again).
    struct run_state : run_prompts<conditioning_type> {
        std::tuple<state_t<detail::unwrap_t<Patches>>...> patch_states{};
        workspace scratch;

        template <std::size_t I>
        auto& state() noexcept { return std::get<I>(patch_states); }
        void reset() { patch_states = std::tuple<state_t<detail::unwrap_t<Patches>>...>{}; }
        void release() { scratch.release(); }
    };

    /// The guider refers to the model (it must outlive the guider) and owns the patches. Every
    /// patch is validated here, once; model-sampling patches are applied to `sampling` in order.
    guider(Model& model, model_sampling sampling, Patches... patches)
        : model_(&model), sampling_(std::move(sampling)), patches_(std::move(patches)...) {
        std::apply([](const auto&... p) { (validate_one(p), ...); }, patches_);
        std::array<hook_entry, patch_count> table = entries(nullptr);
        for (const auto& e : table) detail::check_entry_slot(*e.vt, e.slot, "guider");
        detail::check_slot_set(table, "guider");
        // Model-sampling patches apply in order; each window is fixed with the sampling in
        // effect where its patch sits (ComfyUI computes it when the node is applied).
        for (std::size_t i = 0; i < patch_count; ++i) {
            const auto& e = table[i];
            if (e.slot == hook_kind::model_sampling) sampling_ = e.vt->apply_sampling(e.patch, sampling_);
            windows_[i] = window_bounds::of(detail::effective_window(*e.vt, e.patch, window_at(i), "guider"), sampling_);
        }
    }

    /// The model sampling the run uses (after any model-sampling patches).
    const model_sampling& sampling() const noexcept { return sampling_; }
    Model& model() const noexcept { return *model_; }
    template <std::size_t I>
    const auto& patch() const noexcept { return std::get<I>(patches_); }

    /// Start a run with the engine's conditioning (any may be null when the model needs none;
    /// `extra` is the third prompt of a multi-prompt guider). Checks run-time capabilities.
    run_state begin_run(const conditioning_type* positive = nullptr, const conditioning_type* negative = nullptr,
                        const conditioning_type* extra = nullptr) const {
        for (const auto& e : entries(nullptr)) detail::check_capabilities(*model_, *e.vt, "guider::begin_run");
        run_state run;
        static_cast<run_prompts<conditioning_type>&>(run) = {positive, negative, extra};
        return run;
    }

    /// One model evaluation of the sampler: writes the guided denoised prediction.
    template <class T, std::size_t R>
    void denoise(run_state& run, const step_inputs<T, R>& step, view<T, R> denoised) const {
        static_assert((detail::has_hook_for<Patches, T, R>() && ...),
                      "A patch in this guider has no hook member for this element type and rank.");
        auto table = entries(&run);
        detail::denoise_step<Model, conditioning_type, T, R>(
            *model_, sampling_, table, run.scratch, run,
            step, denoised, "guider::denoise");
    }

    /// The cfg stage alone, for engines that run the model themselves (a stable-diffusion.cpp
    /// style loop): pre-cfg hooks (which rewrite cond and uncond in place), the cfg function or
    /// default combine, post-cfg hooks. Patches that evaluate the model again (SAG, PAG) or hook
    /// into it (FreeU) cannot be used here: a compile-time error, never a silent skip.
    /// in.uncond_is_none must say whether the engine skipped the uncond pass (then uncond must
    /// be zeros, as ComfyUI hands it to hooks).
    template <class T, std::size_t R>
    void combine(run_state& run, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond,
                 view<T, R> denoised) const {
        combine<T, R>(run, in, cond, uncond, view<T, R>{}, denoised);
    }

    /// The cfg stage of a multi-prompt guider (PerpNegGuider, DualCFGGuider) on the predictions
    /// of its three prompts, evaluated by the engine: `extra` is the third one (begin_run's
    /// `extra` prompt; empty when the guider skips it at this step, as ComfyUI does), and
    /// in.uncond_is_none says whether the negative prompt was skipped (uncond then zeros). A
    /// skip the guider's rule does not make, or a prediction it needs and was not given, is
    /// refused. Half-precision storage is staged as in the two-prompt combine.
    template <class T, std::size_t R>
    void combine(run_state& run, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond,
                 view<T, R> extra, view<T, R> denoised) const {
        using C = compute_t<T>; // half-precision storage runs the float32 hooks
        static_assert(!(detail::needs_model_v<detail::unwrap_t<Patches>, C, R> || ...),
                      "guider::combine cannot run a patch that evaluates the model again (SAG, PAG); use "
                      "denoise() with a model instead.");
        static_assert(!((detail::has_output_block<detail::unwrap_t<Patches>, C> ||
                         detail::has_on_model_call<detail::unwrap_t<Patches>, C>) || ...),
                      "guider::combine cannot apply a patch that hooks into the model (FreeU, attention "
                      "hooks): it would be silently skipped; call the patch from your network or use denoise().");
        static_assert((detail::has_hook_for<Patches, C, R>() && ...),
                      "A patch in this guider has no hook member for this element type and rank.");
        auto table = entries(&run);
        detail::combine_step<T, R>(table, run.scratch, in, cond, uncond, denoised, "guider::combine", extra);
    }

private:
    template <class W>
    static void validate_one(const W& w) {
        using U = detail::unwrap_window<W>;
        patchbay::validate(U::patch(w));
        U::window(w).validate(U::type::descriptor().class_type);
    }
    step_window window_at(std::size_t i) const {
        step_window w;
        std::size_t k = 0;
        std::apply([&](const auto&... p) { ((k++ == i ? (w = detail::unwrap_window<std::remove_cvref_t<decltype(p)>>::window(p), 0) : 0), ...); },
                   patches_);
        return w;
    }

    /// The hook table bound to one run's states (null run: states unbound, for checks).
    std::array<hook_entry, patch_count> entries(run_state* run) const {
        return entries_impl(run, std::index_sequence_for<Patches...>{});
    }
    template <std::size_t... I>
    std::array<hook_entry, patch_count> entries_impl([[maybe_unused]] run_state* run, std::index_sequence<I...>) const {
        return {hook_entry{&detail::unwrap_window<Patches>::patch(std::get<I>(patches_)),
                           &vtable_of<detail::unwrap_t<Patches>>(),
                           detail::slot_of(detail::unwrap_window<Patches>::patch(std::get<I>(patches_))),
                           run ? static_cast<void*>(&std::get<I>(run->patch_states)) : nullptr, windows_[I]}...};
    }

    Model* model_;
    model_sampling sampling_;
    std::tuple<Patches...> patches_;
    std::array<window_bounds, patch_count> windows_{};
};

/// Anything the samplers can drive: guider and patch_chain.
template <class G, class T, std::size_t R>
concept guided_denoiser = requires(const G& g, typename G::run_state& run, const step_inputs<T, R>& st,
                                   view<T, R> out) {
    { g.sampling() } -> std::convertible_to<const model_sampling&>;
    g.denoise(run, st, out);
};

} // namespace patchbay
