// patchbay: patch_chain<Model>, the run-time counterpart of guider<Model, Patches...>, for
// engines that assemble patches from configuration (a ComfyUI workflow). Same step, same
// order, same per-run state model; the patches are type-erased behind a small table of
// function pointers, one per hook and element type / rank.
//
// Value semantics: copying a chain copies its list (the patches themselves are immutable and
// shared). Adding a second cfg-function or mask-function patch is a patchbay::error, never a
// silent replacement; a patch needing a capability the model lacks is an error when it is
// added (model without any declaration) or when a run begins (model answering at run time).
#pragma once

#include <any>
#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

namespace detail {

template <class T, std::size_t R>
struct chain_ops {
    void (*pre_cfg)(const void*, std::any&, const guidance_inputs<T, R>&, view<T, R>,
                    view<T, R>) = nullptr;
    void (*cfg_function)(const void*, std::any&, const guidance_inputs<T, R>&, view<const T, R>,
                         view<const T, R>, view<T, R>) = nullptr;
    void (*post_cfg)(const void*, std::any&, const guidance_inputs<T, R>&, view<const T, R>,
                     view<const T, R>, view<T, R>, model_access<T, R>*) = nullptr;
    void (*mask)(const void*, std::any&, const mask_inputs&, view<const T, R>, view<T, R>) = nullptr;
    bool post_cfg_needs_model = false;
};

template <class T>
struct chain_model_ops {
    void (*on_model_call)(const void*, std::any&, pass_kind, call_overrides<T>&) = nullptr;
    void (*output_block)(const void*, std::any&, const block_site&, view<T, 4>, view<T, 4>) = nullptr;
};

struct chain_vtable {
    chain_ops<float, 4> f4;
    chain_ops<float, 5> f5;
    chain_ops<double, 4> d4;
    chain_ops<double, 5> d5;
    chain_model_ops<float> mf;
    chain_model_ops<double> md;
    std::any (*make_state)() = nullptr;
    std::string_view name;
    bool needs_block_hooks = false;
    bool needs_attention_hooks = false;
    bool disable_cfg1 = false;

    template <class T, std::size_t R>
    const chain_ops<T, R>& ops() const noexcept {
        if constexpr (std::is_same_v<T, float>) {
            if constexpr (R == 4) return f4;
            else return f5;
        } else {
            if constexpr (R == 4) return d4;
            else return d5;
        }
    }
    template <class T>
    const chain_model_ops<T>& model_ops() const noexcept {
        if constexpr (std::is_same_v<T, float>) return mf;
        else return md;
    }
};

template <class P>
state_t<P>& chain_state(std::any& s) {
    return *std::any_cast<state_t<P>>(&s);
}

template <class P, class T, std::size_t R>
chain_ops<T, R> make_chain_ops() {
    chain_ops<T, R> o;
    if constexpr (has_pre_cfg<P, T, R>)
        o.pre_cfg = [](const void* p, std::any& s, const guidance_inputs<T, R>& in, view<T, R> c,
                       view<T, R> u) { static_cast<const P*>(p)->pre_cfg(chain_state<P>(s), in, c, u); };
    if constexpr (has_cfg_function<P, T, R>)
        o.cfg_function = [](const void* p, std::any& s, const guidance_inputs<T, R>& in,
                            view<const T, R> c, view<const T, R> u, view<T, R> out) {
            static_cast<const P*>(p)->cfg_function(chain_state<P>(s), in, c, u, out);
        };
    if constexpr (has_post_cfg_access<P, T, R>) {
        o.post_cfg = [](const void* p, std::any& s, const guidance_inputs<T, R>& in,
                        view<const T, R> c, view<const T, R> u, view<T, R> d,
                        model_access<T, R>* access) {
            if (!access)
                fail("patch_chain::combine", "patch '" + std::string(type_name<P>()) +
                                                 "' evaluates the model again; use denoise()");
            static_cast<const P*>(p)->post_cfg(chain_state<P>(s), in, c, u, d, *access);
        };
        o.post_cfg_needs_model = true;
    } else if constexpr (has_post_cfg_plain<P, T, R>) {
        o.post_cfg = [](const void* p, std::any& s, const guidance_inputs<T, R>& in,
                        view<const T, R> c, view<const T, R> u, view<T, R> d, model_access<T, R>*) {
            static_cast<const P*>(p)->post_cfg(chain_state<P>(s), in, c, u, d);
        };
    }
    if constexpr (has_mask_function<P, T, R>)
        o.mask = [](const void* p, std::any& s, const mask_inputs& mi, view<const T, R> m,
                    view<T, R> out) { static_cast<const P*>(p)->mask(chain_state<P>(s), mi, m, out); };
    return o;
}

template <class P, class T>
chain_model_ops<T> make_chain_model_ops() {
    chain_model_ops<T> o;
    if constexpr (has_on_model_call<P, T>)
        o.on_model_call = [](const void* p, std::any& s, pass_kind k, call_overrides<T>& ov) {
            static_cast<const P*>(p)->on_model_call(chain_state<P>(s), k, ov);
        };
    if constexpr (has_output_block<P, T>)
        o.output_block = [](const void* p, std::any& s, const block_site& site, view<T, 4> h,
                            view<T, 4> hsp) {
            static_cast<const P*>(p)->output_block(chain_state<P>(s), site, h, hsp);
        };
    return o;
}

template <class P>
const chain_vtable& chain_vtable_for() {
    static const chain_vtable vt = [] {
        chain_vtable v;
        v.f4 = make_chain_ops<P, float, 4>();
        v.f5 = make_chain_ops<P, float, 5>();
        v.d4 = make_chain_ops<P, double, 4>();
        v.d5 = make_chain_ops<P, double, 5>();
        v.mf = make_chain_model_ops<P, float>();
        v.md = make_chain_model_ops<P, double>();
        v.make_state = [] { return std::any(state_t<P>{}); };
        v.name = type_name<P>();
        v.needs_block_hooks = needs_block_hooks<P>;
        v.needs_attention_hooks = needs_attention_hooks<P>;
        v.disable_cfg1 = flag_disable_cfg1<P>;
        return v;
    }();
    return vt;
}

} // namespace detail

template <class Model>
class patch_chain {
public:
    using model_type = Model;
    using conditioning_type = conditioning_t<Model>;

    /// Per-run state: one state per patch (type-erased), the prompts, scratch buffers.
    /// A copy is a clone of the run; reset() starts the patches' states afresh.
    struct run_state {
        std::vector<std::any> patch_states;
        const conditioning_type* positive = nullptr;
        const conditioning_type* negative = nullptr;
        workspace scratch;
        std::vector<std::any> fresh; ///< the states begin_run made, kept for reset()

        /// The state of patch i, which must be of type S (state_t of that patch).
        template <class S>
        S& state(std::size_t i) {
            PATCHBAY_REQUIRE(i < patch_states.size(), "patch_chain::run_state::state", "index out of range");
            S* s = std::any_cast<S>(&patch_states[i]);
            PATCHBAY_REQUIRE(s != nullptr, "patch_chain::run_state::state",
                    "the requested type is not that patch's state type");
            return *s;
        }
        void reset() { patch_states = fresh; }
    };

    /// The chain refers to the model (it must outlive the chain).
    patch_chain(Model& model, model_sampling sampling)
        : model_(&model), sampling_(std::move(sampling)) {}

    /// Append a patch (validated here). Its hooks run after those of earlier patches.
    template <class P>
    patch_chain& add(P p) {
        static_assert(patch<P>, "patch_chain::add takes a patch: a struct with a static hook_kind "
                                "`hook` and a validate() member function.");
        constexpr std::string_view where = "patch_chain::add";
        p.validate();
        detail::check_slot(p, where);
        const hook_kind slot = detail::slot_of(p);
        const std::string name(detail::type_name<P>());
        for (const auto& e : entries_) {
            if (slot == hook_kind::cfg_function && e.slot == hook_kind::cfg_function)
                fail(where, "cannot add '" + name + "': the chain already has a cfg-function patch ('" +
                                std::string(e.vt->name) + "'); at most one is allowed");
            if (slot == hook_kind::mask_function && e.slot == hook_kind::mask_function)
                fail(where, "cannot add '" + name + "': the chain already has a mask-function patch ('" +
                                std::string(e.vt->name) + "'); at most one is allowed");
        }
        if (detail::needs_block_hooks<P> && !block_hookable<Model> && !runtime_capabilities<Model>)
            fail(where, "cannot add '" + name + "': it needs block hooks, which the model does not "
                                                 "declare (calls_block_hooks)");
        if (detail::needs_attention_hooks<P> && !attention_hookable<Model> &&
            !runtime_capabilities<Model>)
            fail(where, "cannot add '" + name + "': it needs attention hooks, which the model does "
                                                 "not declare (calls_attention_hooks)");
        entries_.push_back({std::make_shared<const P>(std::move(p)), &detail::chain_vtable_for<P>(), slot});
        return *this;
    }

    std::size_t size() const noexcept { return entries_.size(); }
    bool empty() const noexcept { return entries_.empty(); }
    hook_kind slot(std::size_t i) const { return entries_.at(i).slot; }
    std::string_view name(std::size_t i) const { return entries_.at(i).vt->name; }
    const model_sampling& sampling() const noexcept { return sampling_; }
    Model& model() const noexcept { return *model_; }

    /// Start a run (checks the model's run-time capabilities against every patch).
    run_state begin_run(const conditioning_type* positive = nullptr,
                        const conditioning_type* negative = nullptr) const {
        for (const auto& e : entries_) {
            if (e.vt->needs_block_hooks && !model_supports(*model_, capability::block_hooks))
                fail("patch_chain::begin_run", "patch '" + std::string(e.vt->name) +
                                                   "' needs block hooks, which the model does not support");
            if (e.vt->needs_attention_hooks && !model_supports(*model_, capability::attention_hooks))
                fail("patch_chain::begin_run", "patch '" + std::string(e.vt->name) +
                                                   "' needs attention hooks, which the model does not "
                                                   "support");
        }
        run_state run;
        run.patch_states.reserve(entries_.size());
        for (const auto& e : entries_) run.patch_states.push_back(e.vt->make_state());
        run.fresh = run.patch_states;
        run.positive = positive;
        run.negative = negative;
        return run;
    }

    /// One model evaluation of the sampler (see guider::denoise).
    template <class T, std::size_t R>
    void denoise(run_state& run, const step_inputs<T, R>& step, view<T, R> denoised) const {
        static_assert(diffusion_model<Model, T, R>,
                      "The chain's model has no predict(const model_call<Cond, T, R>&, "
                      "view<T, R>) for this element type and rank.");
        check_run(run, "patch_chain::denoise");
        step_hooks<T, R> hooks(*this, run);
        detail::denoise_step<Model, conditioning_type, T, R>(*model_, sampling_, hooks,
                                                              run.scratch, run.positive,
                                                              run.negative, step, denoised,
                                                              "patch_chain::denoise");
    }

    /// The cfg stage alone (see guider::combine).
    template <class T, std::size_t R>
    void combine(run_state& run, const guidance_inputs<T, R>& in, view<T, R> cond,
                 view<T, R> uncond, view<T, R> denoised) const {
        check_run(run, "patch_chain::combine");
        detail::validate_combine(in, cond, uncond, denoised, "patch_chain::combine");
        for (const auto& e : entries_) // a model hook would be silently skipped: refuse
            if (e.vt->template model_ops<T>().output_block || e.vt->template model_ops<T>().on_model_call)
                fail("patch_chain::combine", "patch '" + std::string(e.vt->name) +
                                                 "' hooks into the model; call it from your network "
                                                 "or use denoise()");
        step_hooks<T, R> hooks(*this, run);
        hooks.guidance(in, cond, uncond, denoised, nullptr);
    }

private:
    struct entry {
        std::shared_ptr<const void> patch;
        const detail::chain_vtable* vt;
        hook_kind slot;
    };

    void check_run(const run_state& run, std::string_view where) const {
        PATCHBAY_REQUIRE(run.patch_states.size() == entries_.size(), where,
                "the run state was begun on a chain with a different number of patches");
    }

    template <class T, std::size_t R>
    struct step_hooks {
        struct binder {
            const entry* e = nullptr;
            std::any* state = nullptr;
        };
        const patch_chain& c;
        run_state& run;
        std::array<binder, call_overrides<T>::capacity> blocks{};
        std::size_t n_blocks = 0;
        bool keeps = false;
        int mask_index = -1;

        step_hooks(const patch_chain& chain, run_state& r) : c(chain), run(r) {
            for (std::size_t i = 0; i < c.entries_.size(); ++i) {
                const entry& e = c.entries_[i];
                keeps = keeps || e.vt->disable_cfg1;
                if (e.slot == hook_kind::mask_function) mask_index = static_cast<int>(i);
                if constexpr (R == 4) {
                    if (e.vt->template model_ops<T>().output_block) {
                        PATCHBAY_REQUIRE(n_blocks < blocks.size(), "patch_chain", "more than 8 block-hook patches");
                        blocks[n_blocks++] = {&e, &run.patch_states[i]};
                    }
                }
            }
        }

        bool keeps_uncond() const noexcept { return keeps; }
        bool has_mask() const noexcept { return mask_index >= 0; }
        void mask(const mask_inputs& mi, view<const T, R> m, view<T, R> out) {
            const auto i = static_cast<std::size_t>(mask_index);
            const entry& e = c.entries_[i];
            const auto fn = e.vt->template ops<T, R>().mask;
            if (!fn) unsupported(e, "mask function");
            fn(e.patch.get(), run.patch_states[i], mi, m, out);
        }

        static void block_thunk(void* ctx, const block_site& site, view<T, 4> h, view<T, 4> hsp) {
            auto* b = static_cast<binder*>(ctx);
            b->e->vt->template model_ops<T>().output_block(b->e->patch.get(), *b->state, site, h, hsp);
        }
        void prepare_call(pass_kind pass, call_overrides<T>& ov) {
            for (std::size_t k = 0; k < n_blocks; ++k)
                ov.add_output_block(typename call_overrides<T>::output_block_fn(&block_thunk, &blocks[k]));
            for (std::size_t i = 0; i < c.entries_.size(); ++i) {
                const entry& e = c.entries_[i];
                if (const auto fn = e.vt->template model_ops<T>().on_model_call)
                    fn(e.patch.get(), run.patch_states[i], pass, ov);
            }
        }

        void guidance(const guidance_inputs<T, R>& gi, view<T, R> cnd, view<T, R> unc,
                      view<T, R> d, model_access<T, R>* access) {
            const auto n = c.entries_.size();
            for (std::size_t i = 0; i < n; ++i) {
                const entry& e = c.entries_[i];
                if (e.slot != hook_kind::pre_cfg) continue;
                const auto fn = e.vt->template ops<T, R>().pre_cfg;
                if (!fn) unsupported(e, "pre-cfg hook");
                fn(e.patch.get(), run.patch_states[i], gi, cnd, unc);
            }
            const view<const T, R> cc = cnd, cu = unc;
            bool replaced = false;
            for (std::size_t i = 0; i < n; ++i) {
                const entry& e = c.entries_[i];
                if (e.slot != hook_kind::cfg_function) continue;
                const auto fn = e.vt->template ops<T, R>().cfg_function;
                if (!fn) unsupported(e, "cfg function");
                fn(e.patch.get(), run.patch_states[i], gi, cc, cu, d);
                replaced = true;
            }
            if (!replaced) kernels::cfg_combine<T, R>(cc, cu, gi.cond_scale, d);
            for (std::size_t i = 0; i < n; ++i) {
                const entry& e = c.entries_[i];
                if (e.slot != hook_kind::post_cfg && e.slot != hook_kind::attention) continue;
                const auto fn = e.vt->template ops<T, R>().post_cfg;
                if (!fn) {
                    if (e.slot == hook_kind::attention) continue; // an attention-only patch
                    unsupported(e, "post-cfg hook");
                }
                fn(e.patch.get(), run.patch_states[i], gi, cc, cu, d, access);
            }
        }

        [[noreturn]] static void unsupported(const entry& e, std::string_view what) {
            fail("patch_chain", "patch '" + std::string(e.vt->name) + "' has no " + std::string(what) +
                                    " for this element type and rank");
        }
    };

    Model* model_;
    model_sampling sampling_;
    std::vector<entry> entries_;
};

} // namespace patchbay
