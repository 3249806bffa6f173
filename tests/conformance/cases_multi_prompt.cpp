// Conformance handlers of the three-prompt patches: PerpNeg (a cfg function whose extra model
// pass is the case's `empty_denoised`), and the GUIDER nodes PerpNegGuider and DualCFGGuider
// (`guider.predict_noise`: one denoise step of the library's guider over a model that answers
// each prompt with the recorded prediction and fails when asked for a prompt the case marks
// `*_is_none`), plus their end-to-end runs. Under --batched-passes the guider evaluates the
// prompts of a step in one call (e2e::with_model).
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "../patches/guider/prompt_model.hpp"
#include "e2e_multi_prompt.hpp"
#include "registry.hpp"
#include "storage.hpp"

#include "patchbay/core/guider.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"

namespace conformance_cases_multi_prompt {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

perp_neg perp_neg_from(const golden_case& gc) { return perp_neg{.neg_scale = gc.param<double>("neg_scale", 1.0)}; }

perp_neg_guider perp_neg_guider_from(const golden_case& gc) {
    return perp_neg_guider{.cfg = gc.param<double>("cfg", 8.0), .neg_scale = gc.param<double>("neg_scale", 1.0)};
}

/// DualCFGGuider's style from the case text, checked against the descriptor's options.
dual_cfg_style style_from(const golden_case& gc) {
    const std::string text = gc.param<std::string>("style", "regular");
    for (std::size_t i = 0; i < dual_cfg_styles.size(); ++i)
        if (dual_cfg_styles[i] == text) return static_cast<dual_cfg_style>(i);
    fail(class_type_of<dual_cfg_guider>(), "parameter 'style' must be one of regular, nested, got '" + text + "'");
}

dual_cfg_guider dual_cfg_from(const golden_case& gc) {
    return dual_cfg_guider{.cfg_conds = gc.param<double>("cfg_conds", 8.0),
                           .cfg_cond2_negative = gc.param<double>("cfg_cond2_negative", 8.0),
                           .style = style_from(gc)};
}

template <std::size_t R>
void run_perp_neg(const golden_case& gc, results& out) {
    const tensor<float> x = gc.tensor_input<float>("x"), sigma = gc.tensor_input<float>("sigma"),
                        cond = gc.tensor_input<float>("cond_denoised"), uncond = gc.tensor_input<float>("uncond_denoised"),
                        empty = gc.tensor_input<float>("empty_denoised");
    guidance_inputs<float, R> in{x.as<R>(), sigma.as<1>(), gc.scalar<double>("cond_scale", 1.0)};
    in.uncond_is_none = gc.scalar<bool>("uncond_is_none", false);
    tensor<float> denoised(cond.shape());
    conformance::combine_three(perp_neg_from(gc), in, cond.as<R>(), uncond.as<R>(), empty.as<R>(), denoised.as<R>());
    tensor<float> ret(cond.shape()); // what ComfyUI's hook returns: x - denoised
    kernels::transform(ret.as<R>(), [](auto xv, auto d) { return xv - d; }, x.as<R>(), view<const float, R>(denoised.as<R>()));
    conformance::put(out, "denoised", denoised);
    conformance::put(out, "cfg_function_return", ret);
}

/// One guider step over the recorded predictions; `names` are the case's prediction inputs for
/// the run's positive, negative and extra prompts, with their `<name>_is_none` scalars.
template <std::size_t R, class G>
void run_guider(const golden_case& gc, results& out, const G& patch, const char* positive, const char* negative,
                const char* extra) {
    auto prompt = [&](const char* name) {
        const std::string n(name);
        return test::fixed_prompt{n, gc.tensor_input<float>(n + "_denoised"), gc.scalar<bool>(n + "_is_none", false)};
    };
    const test::fixed_prompt pos = prompt(positive), neg = prompt(negative), ext = prompt(extra);
    const tensor<float> x = gc.tensor_input<float>("x"), sigma = gc.tensor_input<float>("sigma");
    test::lookup_model model;
    const model_sampling ms = model_sampling::discrete();
    tensor<float> denoised(x.shape());
    e2e::with_model(model, [&](auto& m) { // the prompts in one call under --batched-passes
        const guider<std::remove_reference_t<decltype(m)>, G> g(m, ms, patch);
        auto run = g.begin_run(&pos, &neg, &ext);
        g.denoise(run, step_inputs<float, R>{x.as<R>(), sigma.as<1>()}, denoised.as<R>());
    });
    for (const auto* p : {&pos, &neg, &ext}) // the other direction of the skip rule
        if (!p->skipped && model.count(p->name) != 1)
            fail("conformance", "prompt '" + p->name + "' was evaluated " + std::to_string(model.count(p->name)) +
                                    " times; ComfyUI evaluates it once");
    // The same cfg stage from the engine's side: guider::combine on the three predictions as the
    // engine evaluated them (a skipped prompt: zeros, or no extra prediction). It must give the
    // step's bits exactly; under --storage it is the call checked on the storage format.
    const guider<test::lookup_model, G> g(model, ms, patch);
    tensor<float> c = pos.prediction, u = neg.skipped ? tensor<float>(x.shape()) : neg.prediction, e = ext.prediction,
                  combined(x.shape());
    guidance_inputs<float, R> in{x.as<R>(), sigma.as<1>(), 1.0, neg.skipped, ms.prediction()};
    in.sampling = &ms;
    conformance::guider_combine(g, in, c.as<R>(), u.as<R>(), ext.skipped ? view<float, R>{} : e.as<R>(),
                                combined.as<R>());
    for (index_t i = 0; i < x.size(); ++i)
        if (std::bit_cast<std::uint32_t>(combined.data()[i]) != std::bit_cast<std::uint32_t>(denoised.data()[i]))
            fail("conformance", "guider::combine on the step's predictions differs from denoise at element " +
                                    std::to_string(i));
    conformance::put(out, "denoised", denoised);
}

template <class G>
void guider_case(const golden_case& gc, results& out, const G& patch, const char* positive, const char* negative,
                 const char* extra) {
    const auto rank = gc.input("x").shape.size();
    if (rank == 4) run_guider<4>(gc, out, patch, positive, negative, extra);
    else if (rank == 5) run_guider<5>(gc, out, patch, positive, negative, extra);
    else fail("conformance", "x must be 4-D or 5-D, got rank " + std::to_string(rank));
}

} // namespace

PATCHBAY_CONFORMANCE("PerpNeg", "sampler_cfg_function") {
    const auto rank = gc.input("cond_denoised").shape.size();
    if (rank == 4) run_perp_neg<4>(gc, out);
    else if (rank == 5) run_perp_neg<5>(gc, out);
    else fail("conformance", "cond_denoised must be 4-D or 5-D, got rank " + std::to_string(rank));
}

PATCHBAY_CONFORMANCE("PerpNeg", "e2e.sample_euler") { e2e::run_three_prompts(gc, out, "mu_empty", perp_neg_from(gc)); }

PATCHBAY_CONFORMANCE("PerpNegGuider", "guider.predict_noise") {
    guider_case(gc, out, perp_neg_guider_from(gc), "positive", "negative", "empty");
}

PATCHBAY_CONFORMANCE("PerpNegGuider", "e2e.sample_euler") {
    e2e::run_three_prompts(gc, out, "mu_empty", perp_neg_guider_from(gc));
}

// cond1 is the run's positive prompt, cond2 (the middle) its extra prompt.
PATCHBAY_CONFORMANCE("DualCFGGuider", "guider.predict_noise") {
    guider_case(gc, out, dual_cfg_from(gc), "positive", "negative", "middle");
}

PATCHBAY_CONFORMANCE("DualCFGGuider", "e2e.sample_euler") {
    e2e::run_three_prompts(gc, out, "mu_middle", dual_cfg_from(gc));
}

} // namespace conformance_cases_multi_prompt
