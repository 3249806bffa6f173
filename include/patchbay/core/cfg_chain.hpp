// patchbay: cfg_chain, the cfg stage without a model, for engines that run their own network
// and loop (a stable-diffusion.cpp-style engine) and want only ComfyUI's guidance math on the
// predictions they computed. Built like patch_chain (from patches or a workflow, same
// dispatcher, same checks and results), it takes the model sampling (patches read its
// prediction type and percent_to_sigma) but no model: a patch that needs the model — an extra
// pass (SAG, PAG, Perp-Neg), a network hook (FreeU), a multi-prompt guider or a pass
// composition — is refused with a clear error when it is added.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

namespace detail {
/// The model type of a model-free chain: it hosts no hooks and is never called.
struct no_model {
    using conditioning_type = void;
};
} // namespace detail

class cfg_chain {
public:
    using run_state = patch_chain<detail::no_model>::run_state;

    explicit cfg_chain(model_sampling sampling) : chain_(no_model(), std::move(sampling)) {}

    /// Append a patch, a windowed<P> or an any_patch (validated here); refused when it needs
    /// the model.
    template <class P>
    cfg_chain& add(P p) {
        if constexpr (is_windowed_v<P>) return add(any_patch(std::move(p.patch)), p.window);
        else return add(any_patch(std::move(p)), step_window{});
    }
    cfg_chain& add(any_patch p, step_window window) {
        constexpr std::string_view where = "cfg_chain::add";
        PATCHBAY_REQUIRE(static_cast<bool>(p), where, "the patch is empty");
        const patch_vtable& vt = p.vtable();
        const hook_kind k = p.slot();
        const std::string name(vt.class_type);
        if (vt.hooks_model() || k == hook_kind::output_block || k == hook_kind::attention ||
            k == hook_kind::model_hooks)
            fail(where, "cannot add '" + name +
                            "': it hooks into the model's network, and a cfg_chain has no model (use patch_chain "
                            "or guider with your model, or call the patch from your network)");
        if (vt.f4.needs_model || k == hook_kind::multi_prompt || k == hook_kind::pass_composition)
            fail(where, "cannot add '" + name +
                            "': it evaluates the model, and a cfg_chain has no model (use patch_chain or guider)");
        chain_.add(std::move(p), window);
        return *this;
    }

    std::size_t size() const noexcept { return chain_.size(); }
    hook_kind slot(std::size_t i) const { return chain_.slot(i); }
    std::string_view name(std::size_t i) const { return chain_.name(i); }
    const model_sampling& sampling() const noexcept { return chain_.sampling(); }

    run_state begin_run() const { return chain_.begin_run(); }

    /// The cfg stage on the engine's denoised predictions: pre-cfg hooks (rewriting cond and
    /// uncond in place), the cfg function or uncond + s*(cond - uncond), post-cfg hooks.
    /// in.uncond_is_none says whether the engine skipped the uncond pass (uncond then zeros).
    /// The prediction type and model sampling the hooks see are the chain's.
    template <class T, std::size_t R>
    void combine(run_state& run, const guidance_inputs<T, R>& in, view<T, R> cond, view<T, R> uncond,
                 view<T, R> denoised) const {
        guidance_inputs<T, R> gi = in;
        gi.sampling = &chain_.sampling();
        gi.prediction = chain_.sampling().prediction();
        chain_.combine(run, gi, cond, uncond, denoised);
    }

private:
    static detail::no_model& no_model() {
        static detail::no_model m; // never called: only the chain's reference needs an object
        return m;
    }
    patch_chain<detail::no_model> chain_;
};

} // namespace patchbay
