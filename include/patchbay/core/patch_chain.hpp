// patchbay: patch_chain<Model>, the run-time front end of the dispatcher (core/dispatch.hpp),
// for engines that assemble patches from configuration (a ComfyUI workflow) or add patches of
// their own. Same step function, same order, same checks and the same errors as guider; the
// patches are held as any_patch (type-erased, shared, immutable).
//
// Value semantics: copying a chain copies its list. Adding a second patch to a single slot
// (cfg function, mask function, pass composition, multi-prompt guider) is a patchbay::error,
// never a silent replacement; a patch needing a capability the model lacks is an error when
// it is added (model without any declaration) or when a run begins (model answering at run
// time).
#pragma once

#include <any>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

template <class Model>
class patch_chain {
public:
    using model_type = Model;
    using conditioning_type = conditioning_t<Model>;

    /// Per-run state: one state per patch (type-erased), the prompts, the scratch arena.
    /// A copy is a clone of the run; reset() starts the patches' states afresh; release()
    /// frees the scratch.
    struct run_state : run_prompts<conditioning_type> {
        std::vector<std::any> patch_states;
        workspace scratch;
        std::vector<std::any> fresh; ///< the states begin_run made, kept for reset()
        std::vector<hook_entry> table; ///< rebuilt each step (states move when a run is copied)

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
        void release() { scratch.release(); }
    };

    /// The chain refers to the model (it must outlive the chain).
    patch_chain(Model& model, model_sampling sampling) : model_(&model), sampling_(std::move(sampling)) {}

    /// Append a patch (validated here). Its hooks run after those of earlier patches; a
    /// model-sampling patch is applied to the chain's model sampling now.
    template <patch P>
    patch_chain& add(P p) {
        return add(any_patch(std::move(p)));
    }

    /// Append a patch with a step window (it acts only inside the window).
    template <patch P>
    patch_chain& add(windowed<P> w) {
        return add(any_patch(std::move(w.patch)), w.window);
    }

    /// Append a type-erased patch (what the workflow importer returns), with an optional step
    /// window.
    patch_chain& add(any_patch p, step_window window = {}) {
        constexpr std::string_view where = "patch_chain::add";
        PATCHBAY_REQUIRE(static_cast<bool>(p), where, "the patch is empty");
        p.validate();
        const hook_kind slot = p.slot();
        detail::check_entry_slot(p.vtable(), slot, where);
        std::vector<hook_entry> table;
        table.reserve(patches_.size() + 1);
        for (std::size_t i = 0; i < patches_.size(); ++i)
            table.push_back({patches_[i].get(), &patches_[i].vtable(), slots_[i], nullptr});
        table.push_back({p.get(), &p.vtable(), slot, nullptr});
        detail::check_slot_set(table, where);
        const auto& vt = p.vtable();
        if (vt.needs_block_hooks && !block_hookable<Model> && !runtime_capabilities<Model>)
            fail(where, "cannot add '" + std::string(vt.class_type) +
                            "': it needs block hooks, which the model does not declare (calls_block_hooks)");
        if (vt.needs_attention_hooks && !attention_hookable<Model> && !runtime_capabilities<Model>)
            fail(where, "cannot add '" + std::string(vt.class_type) +
                            "': it needs attention hooks, which the model does not declare (calls_attention_hooks)");
        window.validate(vt.class_type);
        const step_window w = detail::effective_window(vt, p.get(), window, where);
        if (slot == hook_kind::model_sampling) sampling_ = vt.apply_sampling(p.get(), sampling_);
        windows_.push_back(window_bounds::of(w, sampling_));
        patches_.push_back(std::move(p));
        slots_.push_back(slot);
        return *this;
    }

    std::size_t size() const noexcept { return patches_.size(); }
    bool empty() const noexcept { return patches_.empty(); }
    hook_kind slot(std::size_t i) const { return slots_.at(i); }
    /// The ComfyUI class_type of patch i.
    std::string_view name(std::size_t i) const { return patches_.at(i).class_type(); }
    const any_patch& at(std::size_t i) const { return patches_.at(i); }
    /// The model sampling the run uses (after any model-sampling patches).
    const model_sampling& sampling() const noexcept { return sampling_; }
    Model& model() const noexcept { return *model_; }

    /// Start a run (checks the model's run-time capabilities against every patch).
    run_state begin_run(const conditioning_type* positive = nullptr, const conditioning_type* negative = nullptr,
                        const conditioning_type* extra = nullptr) const {
        for (const auto& p : patches_) detail::check_capabilities(*model_, p.vtable(), "patch_chain::begin_run");
        run_state run;
        run.patch_states.reserve(patches_.size());
        for (const auto& p : patches_) run.patch_states.push_back(p.vtable().make_state());
        run.fresh = run.patch_states;
        run.table.reserve(patches_.size());
        static_cast<run_prompts<conditioning_type>&>(run) = {positive, negative, extra};
        return run;
    }

    /// One model evaluation of the sampler (see guider::denoise).
    template <class T, std::size_t R>
    void denoise(run_state& run, const step_inputs<T, R>& step, view<T, R> denoised) const {
        bind(run, "patch_chain::denoise");
        detail::denoise_step<Model, conditioning_type, T, R>(
            *model_, sampling_, run.table, run.scratch,
            run, step, denoised,
            "patch_chain::denoise");
    }

    /// The cfg stage alone (see guider::combine). A patch that evaluates or hooks into the
    /// model is refused before anything is modified.
    template <class T, std::size_t R>
    void combine(run_state& run, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond,
                 view<T, R> denoised) const {
        combine<T, R>(run, in, cond, uncond, view<T, R>{}, denoised);
    }
    /// The cfg stage of a multi-prompt guider on its three prompts' predictions (see guider::combine).
    template <class T, std::size_t R>
    void combine(run_state& run, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond,
                 view<T, R> extra, view<T, R> denoised) const {
        bind(run, "patch_chain::combine");
        detail::combine_step<T, R>(run.table, run.scratch, in, cond, uncond, denoised, "patch_chain::combine", extra);
    }

private:
    void bind(run_state& run, std::string_view where) const {
        PATCHBAY_REQUIRE(run.patch_states.size() == patches_.size(), where,
                         "the run state was begun on a chain with a different number of patches");
        run.table.resize(patches_.size());
        for (std::size_t i = 0; i < patches_.size(); ++i)
            run.table[i] = {patches_[i].get(), &patches_[i].vtable(), slots_[i],
                            patches_[i].vtable().state_ptr(run.patch_states[i]), windows_[i]};
    }

    Model* model_;
    model_sampling sampling_;
    std::vector<any_patch> patches_;
    std::vector<hook_kind> slots_;
    std::vector<window_bounds> windows_;
};

} // namespace patchbay
