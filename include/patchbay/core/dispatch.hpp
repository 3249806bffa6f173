// patchbay: the one hook dispatcher. guider<Model, Patches...> builds its table of hook entries
// at compile time, patch_chain<Model> at run time; both run a step through denoise_step() and
// the cfg stage through run_guidance() below, so they cannot drift. A hook entry is a patch
// (type-erased), its per-run state and its slot; the function table of a patch type is built
// once from what the type declares (descriptor, hook members, flags).
//
// Order of one model evaluation (ComfyUI's comfy/samplers.py):
//   1. mask function and inpainting blend of x (when a mask is given);
//   2. the passes: cond, uncond (skipped at cond_scale 1 unless a patch keeps it), the third
//      prompt of a multi-prompt guider; a pass-composition patch may add per-pass hooks first;
//   3. pre-cfg hooks in order; 4. the cfg function or uncond + s*(cond - uncond), or the
//      multi-prompt guider, which runs the pre- and post-cfg hooks where ComfyUI does;
//   5. post-cfg hooks in order (they may evaluate the model again); 6. the inpainting blend.
// Inputs are checked once per evaluation here; patches check only their own preconditions.
#pragma once

#include <any>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/isa.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/storage.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

// ---- what the step hands the passes and hooks ------------------------------------------------

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
    /// A multi-prompt guider's second scale (Dual CFG's cfg_cond2_negative, Perp-Neg's
    /// neg_scale live in the patch; this is for guiders that take it per step). Unused otherwise.
    double cond_scale2 = 1.0;
    /// Optional output, the latent's shape: the uncond prediction the cfg stage handed its
    /// post-cfg hooks (after the pre-cfg hooks), copied here after them, as ComfyUI's CFG++
    /// samplers record args["uncond_denoised"] with a post-cfg function appended last. Asking
    /// for it keeps the uncond pass at cond_scale 1 (those samplers set
    /// disable_cfg1_optimization). Empty (the default): not written.
    view<T, R> uncond_denoised{};
};

/// The predictions a multi-prompt guider combines (denoised space); a prompt that was not
/// evaluated is an empty view.
template <class T, std::size_t R>
struct prompt_predictions {
    view<T, R> cond;
    view<T, R> uncond;
    view<T, R> extra;

    /// The extra prediction, or (that prompt not evaluated) a read-only all-zero view of
    /// cond's shape: ComfyUI hands a skipped prompt to the hooks as zeros.
    view<const T, R> extra_or_zeros() const noexcept {
        if (extra.data_handle() != nullptr) return extra;
        static constexpr T zero{};
        return view<const T, R>(&zero, cond.extents(), std::array<index_t, R>{}); // every stride 0
    }
};

/// Per-prompt hooks a pass-composition patch adds to this evaluation's passes.
template <class T>
struct pass_plan {
    call_overrides<T> cond;
    call_overrides<T> uncond;
    call_overrides<T> extra;
    call_overrides<T>& for_prompt(pass_kind p) noexcept {
        return p == pass_kind::uncond ? uncond : p == pass_kind::extra ? extra : cond;
    }
};

template <class T, std::size_t R>
class stage_runner;

/// The prompts of a run (the engine's conditioning; any may be null when the model needs none).
template <class Cond>
struct run_prompts {
    const Cond* positive = nullptr;
    const Cond* negative = nullptr;
    const Cond* extra = nullptr; ///< Perp-Neg's empty prompt, Dual CFG's middle prompt
    const Cond* of(pass_kind p) const noexcept {
        return p == pass_kind::uncond ? negative : p == pass_kind::extra ? extra : positive;
    }
};

namespace detail {

template <class P>
hook_kind slot_of(const P& p) {
    if constexpr (requires { { p.slot() } -> std::convertible_to<hook_kind>; })
        return static_cast<hook_kind>(p.slot());
    else
        return P::descriptor().slot;
}

template <class P>
constexpr bool flag_needs_block_hooks = requires { requires static_cast<bool>(P::needs_block_hooks); };
template <class P>
constexpr bool flag_needs_attention_hooks = requires { requires static_cast<bool>(P::needs_attention_hooks); };
template <class P>
constexpr bool flag_disable_cfg1 = requires { requires static_cast<bool>(P::disable_cfg1_optimization); };
/// The patch runs the model on the run's extra prompt itself (PerpNeg's empty prompt).
template <class P>
constexpr bool flag_evaluates_extra_prompt = requires { requires static_cast<bool>(P::evaluates_extra_prompt); };

template <class P, class T, std::size_t R>
concept has_pre_cfg = requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in,
                               view<T, R> c, view<T, R> u) { p.pre_cfg(s, in, c, u); };
template <class P, class T, std::size_t R>
concept has_cfg_function_plain =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, view<const T, R> c,
             view<const T, R> u, view<T, R> o) { p.cfg_function(s, in, c, u, o); };
template <class P, class T, std::size_t R>
concept has_cfg_function_access =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, view<const T, R> c,
             view<const T, R> u, view<T, R> o, model_access<T, R>& a) { p.cfg_function(s, in, c, u, o, a); };
template <class P, class T, std::size_t R>
concept has_cfg_function = has_cfg_function_plain<P, T, R> || has_cfg_function_access<P, T, R>;
template <class P, class T, std::size_t R>
concept has_post_cfg_access =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, view<const T, R> c,
             view<const T, R> u, view<T, R> d, model_access<T, R>& a) { p.post_cfg(s, in, c, u, d, a); };
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
template <class P, class T, std::size_t R>
concept has_compose_passes =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, pass_plan<T>& plan) {
        p.compose_passes(s, in, plan);
    };
template <class P, class T, std::size_t R>
concept has_multi_prompt =
    requires(const P& p, state_t<P>& s, const guidance_inputs<T, R>& in, const prompt_predictions<T, R>& preds,
             view<T, R> out, stage_runner<T, R>& stages) {
        { p.prompts(in) } -> std::convertible_to<unsigned>;
        p.combine_prompts(s, in, preds, out, stages);
    };
template <class P>
concept has_sampling_patch = requires(const P& p, const model_sampling& ms) {
    { p.apply_sampling(ms) } -> std::convertible_to<model_sampling>;
};

template <class P, class T, std::size_t R>
constexpr bool needs_model_v = has_post_cfg_access<P, T, R> || has_cfg_function_access<P, T, R>;

/// The hook slots a multi-prompt guider never runs (ComfyUI silently ignores them; we refuse).
template <class P>
constexpr unsigned refused_slots() {
    if constexpr (requires { { P::refuses_slots } -> std::convertible_to<unsigned>; }) return P::refuses_slots;
    else return 0u;
}

constexpr unsigned slot_bit(hook_kind k) noexcept { return 1u << static_cast<unsigned>(k); }

} // namespace detail

/// Prompt bits a multi-prompt guider returns from prompts(): which passes to evaluate.
inline constexpr unsigned prompt_cond = 1u, prompt_uncond = 2u, prompt_extra = 4u;

// ---- the function table ------------------------------------------------------------------------

namespace detail {

template <class T, std::size_t R>
struct cfg_ops {
    void (*pre_cfg)(const void*, void*, const guidance_inputs<T, R>&, view<T, R>, view<T, R>) = nullptr;
    void (*cfg_function)(const void*, void*, const guidance_inputs<T, R>&, view<const T, R>,
                         view<const T, R>, view<T, R>, model_access<T, R>*) = nullptr;
    void (*post_cfg)(const void*, void*, const guidance_inputs<T, R>&, view<const T, R>,
                     view<const T, R>, view<T, R>, model_access<T, R>*) = nullptr;
    void (*mask)(const void*, void*, const mask_inputs&, view<const T, R>, view<T, R>) = nullptr;
    void (*compose)(const void*, void*, const guidance_inputs<T, R>&, pass_plan<T>&) = nullptr;
    unsigned (*prompts)(const void*, const guidance_inputs<T, R>&) = nullptr;
    void (*combine_prompts)(const void*, void*, const guidance_inputs<T, R>&, const prompt_predictions<T, R>&,
                            view<T, R>, stage_runner<T, R>&) = nullptr;
    bool needs_model = false; ///< a cfg-stage hook evaluates the model again
};

template <class T>
struct model_ops {
    void (*on_model_call)(const void*, void*, pass_kind, call_overrides<T>&) = nullptr;
    void (*output_block)(const void*, void*, const block_site&, view<T, 4>, view<T, 4>) = nullptr;
};

} // namespace detail

/// A step window: the patch acts only while sigma of the first batch item lies in
/// [percent_to_sigma(end_percent), percent_to_sigma(start_percent)], both edges inside (ComfyUI's
/// start_percent / end_percent inputs, e.g. SkipLayerGuidanceDiT). The default is always on.
/// Outside it the patch does nothing: no hook runs, no extra pass, and its per-run state is
/// frozen (not reset).
struct step_window {
    double start_percent = 0.0;
    double end_percent = 1.0;
    bool is_full() const noexcept { return start_percent <= 0.0 && end_percent >= 1.0; }
    void validate(std::string_view where) const {
        require_range(start_percent, 0.0, 1.0, where, "start_percent");
        require_range(end_percent, 0.0, 1.0, where, "end_percent");
    }
};

constexpr unsigned capability_bit(capability c) noexcept { return 1u << static_cast<unsigned>(c); }

/// Everything the dispatcher knows about a patch type, built once per type.
struct patch_vtable {
    detail::cfg_ops<float, 4> f4;
    detail::cfg_ops<float, 5> f5;
    detail::cfg_ops<double, 4> d4;
    detail::cfg_ops<double, 5> d5;
    detail::model_ops<float> mf;
    detail::model_ops<double> md;
    std::any (*make_state)() = nullptr;
    void* (*state_ptr)(std::any&) = nullptr; ///< the state inside make_state()'s any
    std::string (*print)(const void*) = nullptr;
    void (*validate)(const void*) = nullptr;
    hook_kind (*slot)(const void*) = nullptr;
    model_sampling (*apply_sampling)(const void*, const model_sampling&) = nullptr;
    std::string_view class_type;
    std::string_view display_name;
    hook_kind declared_slot = hook_kind::pre_cfg; ///< the descriptor's slot (slot() may differ per value)
    std::span<const input_info> inputs;           ///< the descriptor's inputs, type-erased
    bool needs_block_hooks = false;
    bool needs_attention_hooks = false;
    bool disable_cfg1 = false;
    bool evaluates_extra_prompt = false; ///< runs the model on the run's extra prompt (PerpNeg)
    unsigned refused_slots = 0;
    unsigned capabilities = 0; ///< capability_bit()s the model must provide
    bool reads_previous_sampling = false; ///< a model-sampling patch that reads the object before it
    bool builds_sampling_object = true;   ///< false: it only modifies the object before it (ModelNoiseScale)
    /// The window a patch's own start_percent / end_percent inputs give (SLG, Deep Shrink); null
    /// when the descriptor declares no such inputs.
    step_window (*own_window)(const void*) = nullptr;

    template <class T, std::size_t R>
    const detail::cfg_ops<T, R>& ops() const noexcept {
        if constexpr (std::is_same_v<T, float>) {
            if constexpr (R == 4) return f4;
            else return f5;
        } else {
            if constexpr (R == 4) return d4;
            else return d5;
        }
    }
    template <class T>
    const detail::model_ops<T>& model() const noexcept {
        if constexpr (std::is_same_v<T, float>) return mf;
        else return md;
    }
    /// The patch hooks into the network (block, attention or other model-call hooks).
    bool hooks_model() const noexcept {
        return mf.on_model_call || mf.output_block || needs_block_hooks || needs_attention_hooks;
    }
};

namespace detail {

template <class P>
state_t<P>& state_cast(void* s) noexcept {
    return *static_cast<state_t<P>*>(s);
}
template <class P>
const P& patch_cast(const void* p) noexcept {
    return *static_cast<const P*>(p);
}

template <class P, class T, std::size_t R>
cfg_ops<T, R> make_cfg_ops() {
    cfg_ops<T, R> o;
    if constexpr (has_pre_cfg<P, T, R>)
        o.pre_cfg = [](const void* p, void* s, const guidance_inputs<T, R>& in, view<T, R> c, view<T, R> u) {
            patch_cast<P>(p).pre_cfg(state_cast<P>(s), in, c, u);
        };
    if constexpr (has_cfg_function_access<P, T, R>)
        o.cfg_function = [](const void* p, void* s, const guidance_inputs<T, R>& in, view<const T, R> c,
                            view<const T, R> u, view<T, R> out, model_access<T, R>* a) {
            patch_cast<P>(p).cfg_function(state_cast<P>(s), in, c, u, out, *a);
        };
    else if constexpr (has_cfg_function_plain<P, T, R>)
        o.cfg_function = [](const void* p, void* s, const guidance_inputs<T, R>& in, view<const T, R> c,
                            view<const T, R> u, view<T, R> out, model_access<T, R>*) {
            patch_cast<P>(p).cfg_function(state_cast<P>(s), in, c, u, out);
        };
    if constexpr (has_post_cfg_access<P, T, R>)
        o.post_cfg = [](const void* p, void* s, const guidance_inputs<T, R>& in, view<const T, R> c,
                        view<const T, R> u, view<T, R> d, model_access<T, R>* a) {
            patch_cast<P>(p).post_cfg(state_cast<P>(s), in, c, u, d, *a);
        };
    else if constexpr (has_post_cfg_plain<P, T, R>)
        o.post_cfg = [](const void* p, void* s, const guidance_inputs<T, R>& in, view<const T, R> c,
                        view<const T, R> u, view<T, R> d, model_access<T, R>*) {
            patch_cast<P>(p).post_cfg(state_cast<P>(s), in, c, u, d);
        };
    if constexpr (has_mask_function<P, T, R>)
        o.mask = [](const void* p, void* s, const mask_inputs& mi, view<const T, R> m, view<T, R> out) {
            patch_cast<P>(p).mask(state_cast<P>(s), mi, m, out);
        };
    if constexpr (has_compose_passes<P, T, R>)
        o.compose = [](const void* p, void* s, const guidance_inputs<T, R>& in, pass_plan<T>& plan) {
            patch_cast<P>(p).compose_passes(state_cast<P>(s), in, plan);
        };
    if constexpr (has_multi_prompt<P, T, R>) {
        o.prompts = [](const void* p, const guidance_inputs<T, R>& in) {
            return static_cast<unsigned>(patch_cast<P>(p).prompts(in));
        };
        o.combine_prompts = [](const void* p, void* s, const guidance_inputs<T, R>& in,
                               const prompt_predictions<T, R>& preds, view<T, R> out, stage_runner<T, R>& st) {
            patch_cast<P>(p).combine_prompts(state_cast<P>(s), in, preds, out, st);
        };
    }
    o.needs_model = needs_model_v<P, T, R>;
    return o;
}

template <class P, class T>
model_ops<T> make_model_ops() {
    model_ops<T> o;
    if constexpr (has_on_model_call<P, T>)
        o.on_model_call = [](const void* p, void* s, pass_kind k, call_overrides<T>& ov) {
            patch_cast<P>(p).on_model_call(state_cast<P>(s), k, ov);
        };
    if constexpr (has_output_block<P, T>)
        o.output_block = [](const void* p, void* s, const block_site& site, view<T, 4> h, view<T, 4> hsp) {
            patch_cast<P>(p).output_block(state_cast<P>(s), site, h, hsp);
        };
    return o;
}

} // namespace detail

namespace detail {
template <class P>
constexpr unsigned needed_capabilities() {
    unsigned m = 0;
    if (flag_needs_block_hooks<P> || has_output_block<P, float>) m |= capability_bit(capability::block_hooks);
    if (flag_needs_attention_hooks<P>) m |= capability_bit(capability::attention_hooks);
    if constexpr (requires { { P::needs_capabilities } -> std::convertible_to<unsigned>; }) m |= P::needs_capabilities;
    return m;
}

/// Does the descriptor declare FLOAT inputs start_percent and end_percent?
template <class P>
constexpr bool has_own_window() {
    bool start = false, end = false;
    P::descriptor().for_each_input([&](const auto& b) {
        if (b.info.kind != input_kind::floating) return;
        start = start || b.info.name == "start_percent";
        end = end || b.info.name == "end_percent";
    });
    return start && end;
}

template <class P>
step_window own_window_of(const P& p) {
    step_window w;
    P::descriptor().for_each_input([&](const auto& b) {
        using M = typename std::remove_cvref_t<decltype(b)>::member_type;
        if constexpr (std::is_floating_point_v<M>) {
            if (b.info.name == "start_percent") w.start_percent = static_cast<double>(p.*(b.member));
            if (b.info.name == "end_percent") w.end_percent = static_cast<double>(p.*(b.member));
        }
    });
    return w;
}

/// The window an entry runs with: the patch's own inputs, or the one given beside it (not both).
inline step_window effective_window(const patch_vtable& vt, const void* patch, const step_window& given,
                                    std::string_view where) {
    if (!vt.own_window) return given;
    if (!given.is_full()) {
        std::string m(1, '\'');
        m += vt.class_type;
        m += "' has start_percent / end_percent inputs of its own; set those instead of a second window";
        fail(where, m);
    }
    return vt.own_window(patch);
}

template <class P>
inline constexpr auto input_infos_storage = P::descriptor().infos();
template <class P>
inline constexpr std::span<const input_info> input_infos{input_infos_storage<P>};
} // namespace detail

namespace detail {
/// A built-in patch type's name ("patchbay::free_u"), empty for every other type: the key of its
/// table in a run-time ISA variant (patchbay::dispatch, core/isa.hpp). Set by
/// PATCHBAY_DECLARE_BUILTIN at the end of each built-in patch's header.
template <class P>
inline constexpr std::string_view builtin_key{};
} // namespace detail

namespace detail {
/// P's function table compiled with the flags of the unit that instantiates it.
template <patch P>
const patch_vtable& compiled_vtable() {
    static const patch_vtable vt = [] {
        patch_vtable v;
        v.f4 = detail::make_cfg_ops<P, float, 4>();
        v.f5 = detail::make_cfg_ops<P, float, 5>();
        v.d4 = detail::make_cfg_ops<P, double, 4>();
        v.d5 = detail::make_cfg_ops<P, double, 5>();
        v.mf = detail::make_model_ops<P, float>();
        v.md = detail::make_model_ops<P, double>();
        v.make_state = [] { return std::any(state_t<P>{}); };
        v.state_ptr = [](std::any& a) -> void* { return std::any_cast<state_t<P>>(&a); };
        v.print = [](const void* p) { return to_string(detail::patch_cast<P>(p)); };
        v.validate = [](const void* p) { patchbay::validate(detail::patch_cast<P>(p)); };
        v.slot = [](const void* p) { return detail::slot_of(detail::patch_cast<P>(p)); };
        if constexpr (detail::has_sampling_patch<P>)
            v.apply_sampling = [](const void* p, const model_sampling& ms) {
                return model_sampling(detail::patch_cast<P>(p).apply_sampling(ms));
            };
        v.class_type = P::descriptor().class_type;
        v.display_name = P::descriptor().display_name;
        v.declared_slot = P::descriptor().slot;
        v.inputs = detail::input_infos<P>;
        v.needs_block_hooks = detail::flag_needs_block_hooks<P> || detail::has_output_block<P, float>;
        v.needs_attention_hooks = detail::flag_needs_attention_hooks<P>;
        v.disable_cfg1 = detail::flag_disable_cfg1<P>;
        v.evaluates_extra_prompt = detail::flag_evaluates_extra_prompt<P>;
        v.refused_slots = detail::refused_slots<P>();
        v.capabilities = detail::needed_capabilities<P>();
        if constexpr (requires { requires static_cast<bool>(P::reads_previous_sampling); })
            v.reads_previous_sampling = true;
        if constexpr (requires { requires !static_cast<bool>(P::builds_sampling_object); })
            v.builds_sampling_object = false;
        if constexpr (detail::has_own_window<P>())
            v.own_window = [](const void* p) { return detail::own_window_of(detail::patch_cast<P>(p)); };
        return v;
    }();
    return vt;
}
} // namespace detail

/// The function table of patch type P. With the patchbay::dispatch component linked
/// (PATCHBAY_DISPATCH), a built-in patch's table is the one compiled for the widest instruction
/// set the CPU has (core/isa.hpp); every other type's is compiled here, with this unit's flags.
template <patch P>
const patch_vtable& vtable_of() {
#if defined(PATCHBAY_DISPATCH) && !defined(PATCHBAY_ISA_VARIANT)
    if constexpr (!detail::builtin_key<P>.empty()) {
        static const patch_vtable* const variant = detail::dispatched_vtable(detail::builtin_key<P>);
        if (variant) return *variant;
    }
#endif
    return detail::compiled_vtable<P>();
}

/// Each built-in patch's header names its types here (written `patchbay::name`), so this
/// precedes every use:
///   - its key in the run-time ISA variants (detail::builtin_key);
///   - separate compilation of its table (patchbay/builtins.hpp): with PATCHBAY_EXTERN_BUILTINS
///     defined, a translation unit only declares it, and the one that includes builtins.hpp
///     under PATCHBAY_INSTANTIATE_BUILTINS defines it.
#define PATCHBAY_BUILTIN_KEY_(P)                                                                        \
    namespace patchbay::detail {                                                                        \
    template <>                                                                                         \
    inline constexpr std::string_view builtin_key<P>{#P};                                               \
    }
#if defined(PATCHBAY_EXTERN_BUILTINS) && !defined(PATCHBAY_INSTANTIATE_BUILTINS)
#define PATCHBAY_DECLARE_BUILTIN(P)                                                                     \
    PATCHBAY_BUILTIN_KEY_(P)                                                                            \
    namespace patchbay {                                                                                \
    extern template const patch_vtable& vtable_of<P>();                                                 \
    }
#else
#define PATCHBAY_DECLARE_BUILTIN(P) PATCHBAY_BUILTIN_KEY_(P)
#endif

/// A patch of any type with its function table: what a chain holds and a workflow importer
/// returns. Immutable; copies share the patch.
class any_patch {
public:
    any_patch() = default;
    template <patch P>
        requires(!std::is_same_v<std::remove_cvref_t<P>, any_patch>)
    any_patch(P p) : ptr_(std::make_shared<const P>(std::move(p))), vt_(&vtable_of<P>()) {}

    explicit operator bool() const noexcept { return vt_ != nullptr; }
    const patch_vtable& vtable() const noexcept { return *vt_; }
    const void* get() const noexcept { return ptr_.get(); }
    std::string_view class_type() const noexcept { return vt_ ? vt_->class_type : std::string_view{}; }
    hook_kind slot() const { return vt_->slot(ptr_.get()); }
    std::string to_string() const { return vt_ ? vt_->print(ptr_.get()) : "<empty>"; }
    void validate() const { vt_->validate(ptr_.get()); }

    /// Does it hold a P?
    template <patch P>
    bool holds() const noexcept { return vt_ == &vtable_of<P>(); }
    /// The P it holds (a patchbay::error if it holds another type).
    template <patch P>
    const P& as() const {
        if (!holds<P>())
            fail("any_patch", "holds a '" + std::string(class_type()) + "', not a '" +
                                  std::string(P::descriptor().class_type) + "'");
        return *static_cast<const P*>(ptr_.get());
    }

private:
    std::shared_ptr<const void> ptr_;
    const patch_vtable* vt_ = nullptr;
};

/// A patch with a step window, for guider<Model, windowed<P>...> and patch_chain::add.
template <patch P>
struct windowed {
    P patch;
    step_window window;
};
template <class P>
inline constexpr bool is_windowed_v = false;
template <class P>
inline constexpr bool is_windowed_v<windowed<P>> = true;

/// The window's sigma bounds, computed once with the model sampling in effect where the patch
/// is applied (as ComfyUI computes them when the node is applied).
struct window_bounds {
    bool on = false;                ///< false: always active
    double sigma_start = 0.0, sigma_end = 0.0;
    static window_bounds of(const step_window& w, const model_sampling& ms) {
        if (w.is_full()) return {};
        return {true, ms.percent_to_sigma(w.start_percent), ms.percent_to_sigma(w.end_percent)};
    }
    bool contains(double sigma) const noexcept { return !on || (sigma <= sigma_start && sigma >= sigma_end); }
};

/// One entry of a step's hook table: a patch, its slot, and the run's state for it.
struct hook_entry {
    const void* patch = nullptr;
    const patch_vtable* vt = nullptr;
    hook_kind slot = hook_kind::pre_cfg;
    void* state = nullptr;
    window_bounds window{};
};

namespace detail {

/// Moves the entries active at this sigma (first batch item's) to the front, in order, and
/// returns them: inactive patches are invisible to the rest of the step.
inline std::span<hook_entry> active_entries(std::span<hook_entry> entries, double sigma0) noexcept {
    std::size_t n = 0;
    for (std::size_t i = 0; i < entries.size(); ++i)
        if (entries[i].window.contains(sigma0)) entries[n++] = entries[i];
    return entries.first(n);
}

inline bool cond_scale_is_one(double s) noexcept {
    // Python's math.isclose(s, 1.0) with its default rel_tol 1e-9 (ComfyUI's cfg1 test)
    return std::fabs(s - 1.0) <= 1e-9 * std::max(std::fabs(s), 1.0);
}

/// A message from pieces (appended, not built with operator+: g++ 12 reports a false
/// -Wrestrict on "'" + std::string(...) at -O3).
inline std::string cat(std::initializer_list<std::string_view> parts) {
    std::string m;
    for (auto p : parts) m.append(p);
    return m;
}

/// Checks a patch can sit in its slot with the members it has; names it by class_type.
inline void check_entry_slot(const patch_vtable& vt, hook_kind k, std::string_view where) {
    const auto& o = vt.f4;
    bool ok = true;
    switch (k) {
    case hook_kind::pre_cfg: ok = o.pre_cfg != nullptr; break;
    case hook_kind::cfg_function: ok = o.cfg_function != nullptr; break;
    case hook_kind::post_cfg: ok = o.post_cfg != nullptr; break;
    case hook_kind::mask_function: ok = o.mask != nullptr; break;
    case hook_kind::output_block: ok = vt.mf.output_block != nullptr; break;
    case hook_kind::attention: ok = o.post_cfg != nullptr || vt.mf.on_model_call != nullptr; break;
    case hook_kind::model_hooks: ok = vt.mf.on_model_call != nullptr || vt.mf.output_block != nullptr; break;
    case hook_kind::pass_composition: ok = o.compose != nullptr; break;
    case hook_kind::multi_prompt: ok = o.combine_prompts != nullptr; break;
    case hook_kind::model_sampling: ok = vt.apply_sampling != nullptr; break;
    }
    if (!ok)
        fail(where, "patch '" + std::string(vt.class_type) + "' occupies the " + std::string(to_string(k)) +
                        " slot but has no member function for it");
}

/// The slot rules of a whole patch list, checked the same way by guider and chain: at most one
/// cfg function, mask function, pass composition and multi-prompt guider; a multi-prompt
/// guider refuses the slots it would silently skip.
inline void check_slot_set(std::span<const hook_entry> entries, std::string_view where) {
    const hook_kind single[] = {hook_kind::cfg_function, hook_kind::mask_function, hook_kind::pass_composition,
                                hook_kind::multi_prompt};
    for (hook_kind k : single) {
        const hook_entry* first = nullptr;
        for (const auto& e : entries)
            if (e.slot == k) {
                if (first)
                    fail(where, cat({"'", e.vt->class_type, "' and '", first->vt->class_type, "' both occupy the ",
                                     to_string(k),
                                     " slot; at most one is allowed (ComfyUI would silently keep the last)"}));
                first = &e;
            }
    }
    for (const auto& g : entries) {
        if (g.vt->refused_slots == 0) continue;
        for (const auto& e : entries)
            if (&e != &g && (g.vt->refused_slots & slot_bit(e.slot)))
                fail(where, cat({"'", g.vt->class_type, "' never runs ", to_string(e.slot), " hooks, so '",
                                 e.vt->class_type, "' would be silently skipped; patchbay refuses the combination"}));
    }
    for (const auto& g : entries) {
        if (g.slot != hook_kind::multi_prompt) continue;
        for (const auto& e : entries)
            if (e.vt->evaluates_extra_prompt)
                fail(where, cat({"'", e.vt->class_type, "' runs the model on the run's extra prompt itself, but '",
                                 g.vt->class_type, "' (a multi-prompt guider) takes that prompt as its own; "
                                 "patchbay refuses the combination"}));
    }
}

template <class M>
void check_capabilities(const M& model, const patch_vtable& vt, std::string_view where) {
    for (unsigned c = 0; c < 32; ++c)
        if ((vt.capabilities >> c) & 1u)
            if (!model_supports(model, static_cast<capability>(c)))
                fail(where, "patch '" + std::string(vt.class_type) + "' needs " +
                                capability_name(static_cast<capability>(c)) + ", which the model does not support");
}

enum workspace_slot : std::size_t { ws_cond = 0, ws_uncond, ws_x, ws_mask, ws_scaled, ws_extra, ws_batch_x, ws_batch_out };
/// The batched call's per-item sigma lives through the model call: the last buffer key.
inline constexpr std::size_t ws_key_batch_sigma = workspace::model_call_keys + 15;

template <class T, std::size_t R>
void validate_step(const step_inputs<T, R>& st, const view<T, R>& denoised, bool has_mask_fn,
                   std::string_view where) {
    require_nonempty(st.x, where, "x");
    require_batch_vector(st.sigma, st.x, where, "sigma");
    for (index_t b = 0; b < st.sigma.extent(0); ++b) {
        const double s = static_cast<double>(st.sigma(b));
        if (!(s >= 0.0) || !(s - s == 0.0))
            fail(where, "argument 'sigma' must be finite and non-negative, got " + fmt_num(s) +
                            " for batch item " + std::to_string(b));
    }
    require_finite(st.cond_scale, where, "cond_scale");
    require_finite(st.cond_scale2, where, "cond_scale2");
    require_same_shape(st.x, denoised, where, "x", "denoised");
    require_writable_layout(denoised, where, "denoised");
    if (may_overlap(denoised, st.x))
        fail(where, "output 'denoised' overlaps input 'x' (hooks read x while denoised is written)");
    if (!st.uncond_denoised.empty()) {
        require_same_shape(st.x, st.uncond_denoised, where, "x", "uncond_denoised");
        require_writable_layout(st.uncond_denoised, where, "uncond_denoised");
        if (may_overlap(st.uncond_denoised, st.x) || may_overlap(st.uncond_denoised, denoised))
            fail(where, "output 'uncond_denoised' overlaps 'x' or 'denoised'");
    }
    if (st.inpaint) {
        require_same_shape(st.x, st.inpaint->denoise_mask, where, "x", "denoise_mask");
        require_same_shape(st.x, st.inpaint->latent_image, where, "x", "latent_image");
        require_same_shape(st.x, st.inpaint->noise, where, "x", "noise");
        if (has_mask_fn && st.step_sigmas.empty())
            fail(where, "argument 'step_sigmas' is empty, but the mask function needs the run's whole schedule");
    }
}

/// The cfg-stage inputs an engine hands combine() (or a standalone hook call), checked once.
/// `out` may be exactly cond or uncond (the default combine and most hooks allow it) but must
/// not partly overlap them, nor overlap x.
template <class T, std::size_t R>
void validate_cfg_inputs(const guidance_inputs<T, R>& in, const view<const T, R>& cond,
                         const view<const T, R>& uncond, const view<T, R>& out, std::string_view where,
                         std::string_view out_name = "denoised", bool out_may_alias = false) {
    require_nonempty(cond, where, "cond");
    require_same_shape(cond, uncond, where, "cond", "uncond");
    require_same_shape(cond, out, where, "cond", out_name);
    if (in.x.data_handle() != nullptr || in.x.extents() != std::array<index_t, R>{})
        require_same_shape(cond, in.x, where, "cond", "x");
    if (in.sigma.data_handle() != nullptr || in.sigma.extent(0) != 0) {
        require_batch_vector(in.sigma, cond, where, "sigma");
        for (index_t b = 0; b < in.sigma.extent(0); ++b) {
            const double s = static_cast<double>(in.sigma(b));
            if (!(s >= 0.0) || !(s - s == 0.0))
                fail(where, "argument 'sigma' must be finite and non-negative, got " + fmt_num(s) +
                                " for batch item " + std::to_string(b));
        }
    }
    require_finite(in.cond_scale, where, "cond_scale");
    require_writable_layout(out, where, out_name);
    if (out_may_alias) {
        require_no_partial_overlap(out, cond, where, out_name, "cond");
        require_no_partial_overlap(out, uncond, where, out_name, "uncond");
    } else if (may_overlap(out, cond) || may_overlap(out, uncond)) {
        fail(where, "output '" + std::string(out_name) + "' overlaps an input (cond or uncond)");
    }
    if (in.x.data_handle() != nullptr && may_overlap(out, in.x))
        fail(where, "output '" + std::string(out_name) + "' overlaps input 'x'");
}

[[noreturn]] inline void no_overload(const hook_entry& e, std::string_view what) {
    fail(e.vt->class_type, std::string("has no ") + std::string(what) + " for this element type and rank");
}

} // namespace detail

// ---- the cfg stage -------------------------------------------------------------------------------

/// Runs the pre- and post-cfg hooks of a step's table; a multi-prompt guider calls it at the
/// points where ComfyUI runs them.
template <class T, std::size_t R>
class stage_runner {
public:
    stage_runner(std::span<const hook_entry> entries, model_access<T, R>* access) noexcept
        : entries_(entries), access_(access) {}
    stage_runner(const stage_runner&) = delete; // routed_ refers to this runner
    stage_runner& operator=(const stage_runner&) = delete;

    /// Route the hooks' re-evaluations of the cond / uncond prompt to other prompts of the run:
    /// a multi-prompt guider that hands its hooks another pair (DualCFGGuider regular: middle
    /// and negative) routes cond to pass_kind::extra, so a hook that evaluates "its" cond prompt
    /// again (PAG) gets the middle one, as ComfyUI's args["cond"] is.
    void route_prompts(pass_kind as_cond, pass_kind as_uncond) noexcept {
        as_cond_ = as_cond;
        as_uncond_ = as_uncond;
    }

    /// After the post-cfg hooks, copy the uncond prediction post_cfg() was handed to `to`
    /// (step_inputs::uncond_denoised: ComfyUI's CFG++ samplers record it with a post-cfg
    /// function appended last). An empty view stops the capture.
    void capture_uncond(view<T, R> to) noexcept { capture_ = to; }
    /// Did post_cfg() run with a capture target set?
    bool captured_uncond() const noexcept { return captured_; }

    /// Would pre_cfg / cfg_function / post_cfg run anything (a guider fuses its passes when
    /// not)? Attention-slot patches count for post_cfg when they have a post-cfg hook, and so
    /// does a capture of the uncond prediction.
    bool runs(hook_kind k) const noexcept {
        if (k == hook_kind::post_cfg && !capture_.empty()) return true;
        for (const auto& e : entries_) {
            if (e.slot == k) return true;
            if (k == hook_kind::post_cfg && e.slot == hook_kind::attention && e.vt->template ops<T, R>().post_cfg)
                return true;
        }
        return false;
    }

    /// Every pre-cfg hook in order, in place on (cond, uncond).
    void pre_cfg(const guidance_inputs<T, R>& gi, view<T, R> cond, view<T, R> uncond) const {
        for (const auto& e : entries_) {
            if (e.slot != hook_kind::pre_cfg) continue;
            const auto fn = e.vt->template ops<T, R>().pre_cfg;
            if (!fn) detail::no_overload(e, "pre-cfg hook");
            fn(e.patch, e.state, gi, cond, uncond);
        }
    }
    /// The cfg function if the table has one (returns true), else nothing (returns false).
    bool cfg_function(const guidance_inputs<T, R>& gi, view<const T, R> cond, view<const T, R> uncond,
                      view<T, R> out) const {
        for (const auto& e : entries_) {
            if (e.slot != hook_kind::cfg_function) continue;
            const auto fn = e.vt->template ops<T, R>().cfg_function;
            if (!fn) detail::no_overload(e, "cfg function");
            fn(e.patch, e.state, gi, cond, uncond, out, hook_access());
            return true;
        }
        return false;
    }
    /// Every post-cfg hook in order, in place on denoised.
    void post_cfg(const guidance_inputs<T, R>& gi, view<const T, R> cond, view<const T, R> uncond,
                  view<T, R> denoised) const {
        for (const auto& e : entries_) {
            if (e.slot != hook_kind::post_cfg && e.slot != hook_kind::attention) continue;
            const auto fn = e.vt->template ops<T, R>().post_cfg;
            if (!fn) {
                if (e.slot == hook_kind::attention) continue; // an attention-only patch
                detail::no_overload(e, "post-cfg hook");
            }
            fn(e.patch, e.state, gi, cond, uncond, denoised, hook_access());
        }
        if (!capture_.empty()) {
            kernels::copy<T, R>(uncond, capture_);
            captured_ = true;
        }
    }

private:
    model_access<T, R>* hook_access() const noexcept {
        const bool routed = as_cond_ != pass_kind::cond || as_uncond_ != pass_kind::uncond;
        return routed && access_ ? &routed_ : access_;
    }
    static void evaluate_routed(void* self, pass_kind prompt, view<const T, R> x, view<T, R> out,
                                const call_overrides<T>* extra) {
        const auto& s = *static_cast<const stage_runner*>(self);
        const pass_kind to = prompt == pass_kind::cond ? s.as_cond_ : prompt == pass_kind::uncond ? s.as_uncond_ : prompt;
        s.access_->evaluate(to, x, out, extra);
    }

    std::span<const hook_entry> entries_;
    model_access<T, R>* access_;
    view<T, R> capture_{};
    mutable bool captured_ = false;
    pass_kind as_cond_ = pass_kind::cond, as_uncond_ = pass_kind::uncond;
    mutable model_access<T, R> routed_{typename model_access<T, R>::evaluate_fn(&evaluate_routed, this)};
};

namespace detail {

/// Refuses, before anything runs, a table the engine-driven cfg stage (combine) cannot run:
/// hooks that evaluate or hook into the model would be skipped or fail half-way. (A multi-prompt
/// guider runs: the engine hands it the predictions of its prompts.)
template <class T, std::size_t R>
void check_combine_table(std::span<const hook_entry> entries, std::string_view where) {
    for (const auto& e : entries) {
        const auto& o = e.vt->template ops<T, R>();
        if (o.needs_model || e.slot == hook_kind::pass_composition)
            fail(where, "patch '" + std::string(e.vt->class_type) +
                            "' evaluates the model; use denoise() with a model instead");
        if (e.vt->hooks_model())
            fail(where, "patch '" + std::string(e.vt->class_type) +
                            "' hooks into the model; call it from your network or use denoise()");
    }
}

/// The default two-prompt cfg stage: pre-cfg, cfg function or default combine, post-cfg
/// (then, when `uncond_out` is not empty, the uncond prediction the post-cfg hooks saw).
template <class T, std::size_t R>
void run_guidance(std::span<const hook_entry> entries, const guidance_inputs<T, R>& gi, view<T, R> cond,
                  view<T, R> uncond, view<T, R> denoised, model_access<T, R>* access,
                  view<T, R> uncond_out = {}) {
    stage_runner<T, R> stages(entries, access);
    stages.capture_uncond(uncond_out);
    stages.pre_cfg(gi, cond, uncond);
    const view<const T, R> cc = cond, cu = uncond;
    if (!stages.cfg_function(gi, cc, cu, denoised)) kernels::cfg_combine<T, R>(cc, cu, gi.cond_scale, denoised);
    stages.post_cfg(gi, cc, cu, denoised);
}

/// Binds each block-hook patch of a step to its state and the run's arena.
template <class T>
struct block_binding {
    const hook_entry* entry = nullptr;
    workspace* scratch = nullptr;
    static void thunk(void* ctx, const block_site& site, view<T, 4> h, view<T, 4> hsp) {
        auto* b = static_cast<block_binding*>(ctx);
        block_site s = site;
        s.scratch = b->scratch;
        b->entry->vt->template model<T>().output_block(b->entry->patch, b->entry->state, s, h, hsp);
    }
};

/// One model evaluation, shared by guider and patch_chain.
template <class Model, class Cond, class T, std::size_t R>
void denoise_step(Model& model, const model_sampling& ms, std::span<hook_entry> all_entries, workspace& ws,
                  const run_prompts<Cond>& prompts, const step_inputs<T, R>& st, view<T, R> denoised,
                  std::string_view where) {
    static_assert(diffusion_model<Model, T, R>,
                  "The model of this guider or chain has no predict(const model_call<Cond, T, R>&, view<T, R>) "
                  "for this element type and rank.");
    validate_step(st, denoised, false, where);
    const std::span<const hook_entry> entries = active_entries(all_entries, static_cast<double>(st.sigma(0)));
    const hook_entry* mask_fn = nullptr;
    const hook_entry* composer = nullptr;
    const hook_entry* multi = nullptr;
    bool keeps_uncond = false;
    std::array<block_binding<T>, call_overrides<T>::capacity> blocks{};
    std::size_t n_blocks = 0;
    for (const auto& e : entries) {
        if (e.slot == hook_kind::mask_function) mask_fn = &e;
        if (e.slot == hook_kind::pass_composition) composer = &e;
        if (e.slot == hook_kind::multi_prompt) multi = &e;
        keeps_uncond = keeps_uncond || e.vt->disable_cfg1;
        if constexpr (R == 4)
            if (e.vt->template model<T>().output_block) {
                PATCHBAY_REQUIRE(n_blocks < blocks.size(), where, "more than 8 block-hook patches");
                blocks[n_blocks++] = {&e, &ws};
            }
    }
    if (st.inpaint && mask_fn && st.step_sigmas.empty())
        fail(where, "argument 'step_sigmas' is empty, but the mask function needs the run's whole schedule");
    const auto& ext = st.x.extents();

    view<const T, R> x = st.x;
    view<const T, R> mask{};
    if (st.inpaint) {
        const auto& ip = *st.inpaint;
        mask = ip.denoise_mask;
        if (mask_fn) {
            const mask_inputs mi{static_cast<double>(st.sigma(0)), st.step_sigmas, &ms};
            view<T, R> m = ws.get<T, R>(ws_mask, ext);
            const auto fn = mask_fn->vt->template ops<T, R>().mask;
            if (!fn) no_overload(*mask_fn, "mask function");
            fn(mask_fn->patch, mask_fn->state, mi, ip.denoise_mask, m);
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

    guidance_inputs<T, R> gi{x, st.sigma, st.cond_scale, false, ms.prediction(), &ws, &ms};

    pass_plan<T>* plan = nullptr;
    pass_plan<T> composed; // only filled when a pass-composition patch is present
    if (composer) {
        const auto fn = composer->vt->template ops<T, R>().compose;
        if (!fn) no_overload(*composer, "pass composition");
        fn(composer->patch, composer->state, gi, composed);
        plan = &composed;
    }

    // The hooks of one model call: each patch's block binding and on_model_call hooks in the
    // patches' order (ComfyUI's node order: FreeU before or after Deep Shrink's resize), the
    // pass plan's hooks for this prompt, and a re-evaluation's extra hooks.
    auto hooks_for = [&](call_overrides<T>& overrides, pass_kind pass, pass_kind prompt,
                         const call_overrides<T>* extra) {
        std::size_t k = 0;
        for (const auto& e : entries) {
            if (k < n_blocks && blocks[k].entry == &e)
                overrides.add_output_block(
                    typename call_overrides<T>::output_block_fn(&block_binding<T>::thunk, &blocks[k++]));
            if (const auto fn = e.vt->template model<T>().on_model_call) fn(e.patch, e.state, pass, overrides);
        }
        if (plan && pass != pass_kind::reevaluation) overrides.append(plan->for_prompt(prompt));
        if (extra) overrides.append(*extra);
    };
    auto call_model = [&](pass_kind pass, pass_kind prompt, view<const T, R> xv, view<T, R> out,
                          const call_overrides<T>* extra) {
        call_overrides<T> overrides;
        overrides.set_scratch(&ws);
        hooks_for(overrides, pass, prompt, extra);
        const model_call<Cond, T, R> call{xv, st.sigma, pass, prompt, prompts.of(prompt), &overrides};
        model.predict(call, out);
    };

    view<T, R> cond = ws.get<T, R>(ws_cond, ext);
    view<T, R> uncond = ws.get<T, R>(ws_uncond, ext);
    const bool hand_out_uncond = !st.uncond_denoised.empty(); // a CFG++ sampler asks for it
    keeps_uncond = keeps_uncond || hand_out_uncond;
    unsigned wanted = prompt_cond | prompt_uncond;
    if (multi) {
        const auto fn = multi->vt->template ops<T, R>().prompts;
        if (!fn) no_overload(*multi, "multi-prompt guider");
        gi.disable_cfg1_optimization = keeps_uncond; // a patch keeping the uncond pass (SAG) stops the skips
        wanted = fn(multi->patch, gi);
    } else if (cond_scale_is_one(st.cond_scale) && !keeps_uncond) {
        wanted = prompt_cond;
    }
    gi.uncond_is_none = !(wanted & prompt_uncond);
    view<T, R> extra{};
    if (wanted & prompt_extra) extra = ws.get<T, R>(ws_extra, ext);
    const pass_kind order[3] = {pass_kind::cond, pass_kind::uncond, pass_kind::extra};
    const unsigned bits[3] = {prompt_cond, prompt_uncond, prompt_extra};
    view<T, R>* outs[3] = {&cond, &uncond, &extra};
    bool batched = false;
    if constexpr (batched_model<Model, T, R>) {
        const int n = int((wanted & prompt_cond) != 0) + int((wanted & prompt_uncond) != 0) + int((wanted & prompt_extra) != 0);
        if (n >= 2) { // one call for every wanted prompt; cond / uncond / extra become its slices
            batched = true;
            const index_t B = ext[0];
            auto bext = ext;
            bext[0] = B * n;
            view<T, R> xb = ws.get<T, R>(ws_batch_x, bext), ob = ws.get<T, R>(ws_batch_out, bext);
            const std::span<T> sb = ws.buffer<T>(ws_key_batch_sigma, static_cast<std::size_t>(B * n));
            std::array<call_overrides<T>, 3> ovs;
            std::array<prompt_items<Cond, T>, 3> items;
            index_t k = 0;
            for (int p = 0; p < 3; ++p) {
                if (!(wanted & bits[p])) continue;
                kernels::copy<T, R>(x, xb.batch_slice(k * B, B));
                for (index_t b = 0; b < B; ++b) sb[static_cast<std::size_t>(k * B + b)] = st.sigma(b);
                ovs[static_cast<std::size_t>(k)].set_scratch(&ws);
                hooks_for(ovs[static_cast<std::size_t>(k)], order[p], order[p], nullptr);
                items[static_cast<std::size_t>(k)] = {order[p], order[p], prompts.of(order[p]), k * B, B,
                                                      &ovs[static_cast<std::size_t>(k)]};
                *outs[p] = ob.batch_slice(k * B, B);
                ++k;
            }
            const batched_call<Cond, T, R> call{xb, view<const T, 1>(sb.data(), {B * n}),
                                                std::span<const prompt_items<Cond, T>>(items.data(), std::size_t(n))};
            model.predict_batch(call, ob);
        }
    }
    for (int p = 0; p < 3; ++p) {
        if (!(wanted & bits[p])) {
            if (p < 2) kernels::fill(*outs[p], T(0)); // ComfyUI's None entry is an all-zero tensor
        } else if (!batched) {
            call_model(order[p], order[p], x, *outs[p], nullptr);
        }
    }

    auto reevaluate = [&](pass_kind prompt, view<const T, R> xr, view<T, R> out, const call_overrides<T>* ov) {
        require_same_shape(x, xr, "model_access::evaluate", "x of the step", "x");
        require_same_shape(x, out, "model_access::evaluate", "x of the step", "out");
        call_model(pass_kind::reevaluation, prompt, xr, out, ov);
    };
    model_access<T, R> access(model_access<T, R>::evaluate_fn::to(reevaluate));

    if (multi) {
        stage_runner<T, R> stages(entries, &access);
        stages.capture_uncond(st.uncond_denoised);
        multi->vt->template ops<T, R>().combine_prompts(multi->patch, multi->state, gi,
                                                        prompt_predictions<T, R>{cond, uncond, extra}, denoised,
                                                        stages);
        if (hand_out_uncond && !stages.captured_uncond())
            fail(where, cat({"the multi-prompt guider '", multi->vt->class_type,
                             "' ran no post-cfg stage, so there is no uncond prediction to hand out "
                             "(step_inputs::uncond_denoised, asked for by the CFG++ samplers)"}));
    } else {
        run_guidance<T, R>(entries, gi, cond, uncond, denoised, &access, st.uncond_denoised);
    }

    if (st.inpaint) // out*m + latent*(1 - m)
        kernels::transform(
            denoised, [](auto d, auto mv, auto l) { return d * mv + l * (T(1) - mv); }, denoised, mask,
            st.inpaint->latent_image);
}

/// The engine-driven cfg stage (combine), shared by guider and patch_chain. With a multi-prompt
/// guider in the table, `extra` is the prediction of the run's third prompt (empty: that prompt
/// was not evaluated, zeros as ComfyUI hands it on) and in.uncond_is_none says whether the
/// negative one was; the guider's own rule (its prompts()) must agree with what the engine
/// evaluated. Without one, `extra` must be empty.
template <class T, std::size_t R>
void combine_step(std::span<hook_entry> all_entries, workspace& ws, const guidance_inputs<T, R>& in,
                  view<T, R> cond, view<T, R> uncond, view<T, R> denoised, std::string_view where,
                  view<T, R> extra = {}) {
    if constexpr (is_half_v<T>) { // half-precision storage: staged through float32 (core/storage.hpp)
        bool rewrites = false;    // a pre-cfg hook rewrites cond and uncond: they go back too
        for (const auto& e : all_entries) rewrites = rewrites || e.slot == hook_kind::pre_cfg;
        if (rewrites && may_overlap(cond, uncond))
            fail(where, "'cond' and 'uncond' overlap, but pre-cfg patches rewrite them in place");
        stager s(ws);
        const guidance_inputs<float, R> gi = widen_inputs<T, R>(s, ws, in);
        const view<float, R> c = s.widen<T, R>(cond), u = s.widen<T, R>(uncond), d = s.make<R>(denoised.extents());
        combine_step<float, R>(all_entries, ws, gi, c, u, d, where, s.widen<T, R>(extra));
        if (rewrites) {
            kernels::narrow<T, R>(c, cond);
            kernels::narrow<T, R>(u, uncond);
        }
        kernels::narrow<T, R>(d, denoised);
    } else {
        validate_cfg_inputs<T, R>(in, cond, uncond, denoised, where);
        require_nonempty(in.x, where, "x");
        require_batch_vector(in.sigma, in.x, where, "sigma");
        check_combine_table<T, R>(all_entries, where); // refused whether or not the window is open
        const std::span<const hook_entry> entries = active_entries(all_entries, static_cast<double>(in.sigma(0)));
        const hook_entry* multi = nullptr;
        for (const auto& e : entries) { // pre-cfg hooks rewrite cond and uncond in place
            if (e.slot == hook_kind::pre_cfg && may_overlap(cond, uncond))
                fail(where, "'cond' and 'uncond' overlap, but pre-cfg patches rewrite them in place");
            if (e.slot == hook_kind::multi_prompt) multi = &e;
        }
        guidance_inputs<T, R> gi = in;
        if (!gi.scratch) gi.scratch = &ws;
        if (!multi) {
            if (extra.data_handle() != nullptr)
                fail(where, "argument 'extra' (a third prediction) is given, but no multi-prompt guider "
                            "(PerpNegGuider, DualCFGGuider) combines it");
            run_guidance<T, R>(entries, gi, cond, uncond, denoised, nullptr);
            return;
        }
        const auto& ops = multi->vt->template ops<T, R>();
        if (!ops.prompts || !ops.combine_prompts) no_overload(*multi, "multi-prompt guider");
        for (const auto& e : entries) // a patch keeping the uncond pass (SAG) stops the skips
            gi.disable_cfg1_optimization = gi.disable_cfg1_optimization || e.vt->disable_cfg1;
        const unsigned wanted = ops.prompts(multi->patch, gi);
        const std::string guider_name(multi->vt->class_type);
        if (((wanted & prompt_uncond) != 0) == in.uncond_is_none)
            fail(where, guider_name + (in.uncond_is_none ? " evaluates the negative prompt at this step, but "
                                                           "'uncond_is_none' says it was skipped"
                                                         : " skips the negative prompt at this step: pass zeros "
                                                           "as 'uncond' with 'uncond_is_none' set"));
        if (wanted & prompt_extra) {
            if (extra.data_handle() == nullptr)
                fail(where, guider_name + " evaluates its third prompt at this step: pass its prediction as 'extra'");
            require_same_shape(view<const T, R>(cond), view<const T, R>(extra), where, "cond", "extra");
            if (may_overlap(extra, denoised)) fail(where, "output 'denoised' overlaps input 'extra'");
        }
        stage_runner<T, R> stages(entries, nullptr);
        ops.combine_prompts(multi->patch, multi->state, gi,
                            prompt_predictions<T, R>{cond, uncond, (wanted & prompt_extra) ? extra : view<T, R>{}},
                            denoised, stages);
    }
}

/// Runs body(stager, arena) with the call's arena (or a local one for a standalone call).
template <class T, class Body>
void staged_call(workspace* scratch, Body body) {
    workspace local;
    workspace& ws = scratch ? *scratch : local;
    stager s(ws);
    body(s, ws);
}
} // namespace detail

// ---- checked standalone hook calls ---------------------------------------------------------------
// For engines and tests that call one patch's hook outside a guider: the patch's parameters and
// the inputs are checked here, once, exactly as the step checks them. Views of f16 / bf16
// storage are staged through float32 (core/storage.hpp). The hook runs through the patch's
// table, so a built-in patch runs the dispatched ISA variant as in a guider (core/isa.hpp).

/// Run P's pre-cfg hook on (cond, uncond) in place.
template <patch P, class T, std::size_t R>
void apply_pre_cfg(const P& p, state_t<P>& state, const guidance_inputs<T, R>& in, view<T, R> cond,
                   view<T, R> uncond) {
    constexpr std::string_view where = P::descriptor().class_type;
    if constexpr (is_half_v<T>) {
        if (may_overlap(cond, uncond)) fail(where, "'cond' and 'uncond' overlap (both are rewritten in place)");
        detail::staged_call<T>(in.scratch, [&](detail::stager& s, workspace& ws) {
            const view<float, R> c = s.widen<T, R>(cond), u = s.widen<T, R>(uncond);
            apply_pre_cfg<P, float, R>(p, state, detail::widen_inputs<T, R>(s, ws, in), c, u);
            kernels::narrow<T, R>(c, cond);
            kernels::narrow<T, R>(u, uncond);
        });
    } else {
        validate(p);
        detail::validate_cfg_inputs<T, R>(in, cond, uncond, cond, where, "cond", true);
        if (may_overlap(cond, uncond)) fail(where, "'cond' and 'uncond' overlap (both are rewritten in place)");
        static_assert(detail::has_pre_cfg<P, T, R>, "apply_pre_cfg: the patch has no pre-cfg hook");
        vtable_of<P>().template ops<T, R>().pre_cfg(&p, &state, in, cond, uncond);
    }
}

/// Run P's cfg function; `out` may be exactly cond or uncond.
template <patch P, class T, std::size_t R>
void apply_cfg_function(const P& p, state_t<P>& state, const guidance_inputs<T, R>& in,
                        std::type_identity_t<view<const T, R>> cond, std::type_identity_t<view<const T, R>> uncond,
                        view<T, R> out) {
    if constexpr (is_half_v<T>) {
        detail::staged_call<T>(in.scratch, [&](detail::stager& s, workspace& ws) {
            const auto gi = detail::widen_inputs<T, R>(s, ws, in);
            const view<float, R> c = s.widen<T, R>(cond), u = s.widen<T, R>(uncond), o = s.make<R>(out.extents());
            apply_cfg_function<P, float, R>(p, state, gi, c, u, o);
            kernels::narrow<T, R>(o, out);
        });
    } else {
        constexpr std::string_view where = P::descriptor().class_type;
        validate(p);
        detail::validate_cfg_inputs<T, R>(in, cond, uncond, out, where, "out", true);
        static_assert(detail::has_cfg_function_plain<P, T, R>,
                      "apply_cfg_function: the patch has no cfg function that runs without the model");
        vtable_of<P>().template ops<T, R>().cfg_function(&p, &state, in, cond, uncond, out, nullptr);
    }
}

/// Run P's post-cfg hook on denoised in place (with a model_access when the patch needs one).
template <patch P, class T, std::size_t R, class... Access>
void apply_post_cfg(const P& p, state_t<P>& state, const guidance_inputs<T, R>& in,
                    std::type_identity_t<view<const T, R>> cond, std::type_identity_t<view<const T, R>> uncond,
                    view<T, R> denoised, Access&... access) {
    if constexpr (is_half_v<T>) {
        static_assert(sizeof...(Access) == 0,
                      "A post-cfg patch that evaluates the model (SAG, PAG) runs in float32: half-precision "
                      "storage is staged for the cfg stage only.");
        detail::staged_call<T>(in.scratch, [&](detail::stager& s, workspace& ws) {
            const auto gi = detail::widen_inputs<T, R>(s, ws, in);
            const view<float, R> c = s.widen<T, R>(cond), u = s.widen<T, R>(uncond), d = s.widen<T, R>(denoised);
            apply_post_cfg<P, float, R>(p, state, gi, c, u, d);
            kernels::narrow<T, R>(d, denoised);
        });
    } else {
        constexpr std::string_view where = P::descriptor().class_type;
        validate(p);
        detail::validate_cfg_inputs<T, R>(in, cond, uncond, denoised, where);
        if constexpr (sizeof...(Access) == 0) {
            static_assert(detail::has_post_cfg_plain<P, T, R>,
                          "apply_post_cfg: this patch evaluates the model again; pass a model_access");
            vtable_of<P>().template ops<T, R>().post_cfg(&p, &state, in, cond, uncond, denoised, nullptr);
        } else {
            static_assert(sizeof...(Access) == 1 && detail::has_post_cfg_access<P, T, R>,
                          "apply_post_cfg: pass one model_access, and only to a patch that uses it");
            model_access<T, R>* const a = (&access, ...);
            vtable_of<P>().template ops<T, R>().post_cfg(&p, &state, in, cond, uncond, denoised, a);
        }
    }
}

namespace detail {
/// P's model-call hooks for prompt `pass` (what on_model_call attaches), with the arena `scratch`.
template <patch P, class T>
call_overrides<T> overrides_of(const P& p, state_t<P>& state, pass_kind pass, workspace* scratch) {
    static_assert(has_on_model_call<P, T>, "the patch attaches no model-call hooks");
    call_overrides<T> ov;
    ov.set_scratch(scratch);
    vtable_of<P>().template model<T>().on_model_call(&p, &state, pass, ov);
    return ov;
}

/// A block-hook call on half storage: h widened, run(stager, site with the staging arena, h as
/// float32) runs the float32 hook and returns its h, which comes back rounded once
/// (narrow_result: h itself, or a copy in site.scratch under `key` for a resized h).
template <class T, class Run>
view<T, 4> staged_block_call(const block_site& site, view<T, 4> h, std::size_t key, std::string_view where, Run run) {
    view<T, 4> result;
    staged_call<T>(site.scratch, [&](stager& s, workspace& ws) {
        const view<float, 4> hf = s.widen<T, 4>(h);
        block_site fs = site;
        fs.scratch = &ws;
        result = narrow_result<T, 4>(run(s, fs, hf), hf, h, site.scratch, key, where);
    });
    return result;
}
} // namespace detail

/// Run P's output-block hook on (h, hsp) and return the h to continue with: h itself for an
/// in-place hook (FreeU rewrites h and hsp), or the h a resizing hook returns at hsp's spatial
/// size (Deep Shrink: held by the patch's per-run state, for half storage by the arena in
/// site.scratch, until the hook runs again for prompt `pass`).
template <patch P, class T>
view<T, 4> apply_output_block(const P& p, state_t<P>& state, const block_site& site, view<T, 4> h, view<T, 4> hsp,
                              pass_kind pass = pass_kind::cond) {
    constexpr std::string_view where = P::descriptor().class_type;
    if constexpr (is_half_v<T>) {
        if (may_overlap(h, hsp)) fail(where, "'h' and 'hsp' overlap");
        return detail::staged_block_call<T>(
            site, h, detail::output_block_result_key + static_cast<std::size_t>(pass), where,
            [&](detail::stager& s, const block_site& fs, view<float, 4> hf) {
                const view<float, 4> hspf = s.widen<T, 4>(hsp);
                const view<float, 4> r = apply_output_block<P, float>(p, state, fs, hf, hspf, pass);
                kernels::narrow<T, 4>(hspf, hsp);
                return r;
            });
    } else {
        validate(p);
        require_nonempty(h, where, "h");
        if (may_overlap(h, hsp)) fail(where, "'h' and 'hsp' overlap");
        if constexpr (detail::has_output_block<P, T>) {
            require_writable_layout(h, where, "h");
            require_writable_layout(hsp, where, "hsp");
            vtable_of<P>().template model<T>().output_block(&p, &state, site, h, hsp);
            return h;
        } else {
            return detail::overrides_of<P, T>(p, state, pass, site.scratch).apply_output_block(site, h, hsp);
        }
    }
}

/// Run P's input-block hooks of point `at` (before or after the skip connection is stored) on h
/// after input block site.index, as prompt `pass`'s model call runs them, and return the h to
/// continue with: h itself, or a resized h (Deep Shrink: held by the patch's per-run state, for
/// half storage by the arena in site.scratch, until the hook runs again for that prompt).
template <patch P, class T>
view<T, 4> apply_input_block(const P& p, state_t<P>& state, const block_site& site, view<T, 4> h,
                             input_block_point at = input_block_point::before_skip, pass_kind pass = pass_kind::cond) {
    constexpr std::string_view where = P::descriptor().class_type;
    if constexpr (is_half_v<T>) {
        return detail::staged_block_call<T>(site, h, detail::input_block_result_key + static_cast<std::size_t>(pass),
                                            where, [&](detail::stager&, const block_site& fs, view<float, 4> hf) {
                                                return apply_input_block<P, float>(p, state, fs, hf, at, pass);
                                            });
    } else {
        validate(p);
        require_nonempty(h, where, "h");
        const call_overrides<T> ov = detail::overrides_of<P, T>(p, state, pass, site.scratch);
        return at == input_block_point::before_skip ? ov.apply_input_block(site, h)
                                                    : ov.apply_input_block_after_skip(site, h);
    }
}

/// Run the attention-output hooks prompt `pass`'s model call attaches (NAG: the positive
/// prompt's) on a self-attention output (batch, tokens, dim) at `site`, in place; `prompts`
/// names each batch item's prompt. `scratch`: the run's arena (null: a local one).
template <patch P, class T>
void apply_attention_output(const P& p, state_t<P>& state, const attention_site& site, view<T, 3> out,
                            std::span<const pass_kind> prompts, workspace* scratch = nullptr,
                            pass_kind pass = pass_kind::cond) {
    if constexpr (is_half_v<T>) {
        detail::staged_call<T>(scratch, [&](detail::stager& s, workspace& ws) {
            const view<float, 3> of = s.widen<T, 3>(out);
            apply_attention_output<P, float>(p, state, site, of, prompts, &ws, pass);
            kernels::narrow<T, 3>(of, out);
        });
    } else {
        constexpr std::string_view where = P::descriptor().class_type;
        validate(p);
        require_nonempty(out, where, "out");
        require_writable_layout(out, where, "out");
        detail::overrides_of<P, T>(p, state, pass, scratch).apply_attention_output(site, out, prompts);
    }
}

} // namespace patchbay
