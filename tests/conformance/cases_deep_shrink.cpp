// Conformance handlers of PatchModelAddDownscale (Deep Shrink): the input-block patch (4-D and
// 5-D h, with the window the dispatcher applies) and the output-block patch, through the checked
// hook entry points (so --storage checks them on f16 / bf16).
#include <cstddef>
#include <string>

#include "registry.hpp"
#include "storage.hpp"

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/patches/block/deep_shrink.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace conformance_cases_deep_shrink {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

deep_shrink deep_shrink_from(const golden_case& gc) {
    deep_shrink p;
    p.block_number = gc.param<int>("block_number", p.block_number);
    p.downscale_factor = gc.param<double>("downscale_factor", p.downscale_factor);
    p.start_percent = gc.param<double>("start_percent", p.start_percent);
    p.end_percent = gc.param<double>("end_percent", p.end_percent);
    p.downscale_after_skip = gc.param<bool>("downscale_after_skip", p.downscale_after_skip);
    p.downscale_method = deep_shrink::method_from(gc.param<std::string>("downscale_method", "bicubic"), "downscale_method");
    p.upscale_method = deep_shrink::method_from(gc.param<std::string>("upscale_method", "bicubic"), "upscale_method");
    validate(p);
    return p;
}

/// The input-block patch as a step applies it: inside the window (the patch's own start/end
/// percent through the case's model sampling, on sigma[0]) at site (input, block_index).
template <std::size_t R>
void run_input(const golden_case& gc, results& out, const deep_shrink& p) {
    tensor<float> h = gc.tensor_input<float>("h");
    const tensor<float> sigma = gc.tensor_input<float>("sigma");
    const model_sampling ms =
        model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete(eps)"));
    const auto window = window_bounds::of(detail::own_window_of(p), ms);
    const bool storage_run = conformance::storage_mode() != conformance::storage::f32;
    if (!window.contains(static_cast<double>(sigma[0]))) {
        if (storage_run)
            conformance::storage_findings().detail = "outside the window: no hook is attached, no call to check";
        conformance::put(out, "h", h);
        return;
    }
    const block_site site{unet_stage::input, gc.scalar<int>("block_index", 0), h.extent(1)};
    if constexpr (R == 4) { // the hook as a model call runs it, through the checked entry point
        state_t<deep_shrink> st;
        const auto at = p.downscale_after_skip ? input_block_point::after_skip : input_block_point::before_skip;
        const view<float, 4> r = conformance::apply_input_block(p, st, site, h.template as<4>(), at);
        conformance::put(out, "h", tensor<float>::copy_of(r));
    } else { // the patch's own function: model hooks take 4-D h
        if (storage_run)
            conformance::storage_findings().detail =
                "rank-" + std::to_string(R) + " h: block hooks take 4-D h (call_overrides::input_block_fn), so this is "
                "Deep Shrink's own function, not a hook call";
        workspace store;
        const view<float, R> r = p.input_block_patch<float, R>(site, h.template as<R>(), store);
        conformance::put(out, "h", tensor<float>::copy_of(r));
    }
}

} // namespace

PATCHBAY_CONFORMANCE("PatchModelAddDownscale", "input_block_patch") {
    const auto p = deep_shrink_from(gc);
    switch (gc.input("h").shape.size()) {
    case 4: run_input<4>(gc, out, p); break;
    case 5: run_input<5>(gc, out, p); break;
    default: run_input<3>(gc, out, p); break; // the patch refuses other ranks
    }
}

PATCHBAY_CONFORMANCE("PatchModelAddDownscale", "output_block_patch") {
    const auto p = deep_shrink_from(gc);
    tensor<float> h = gc.tensor_input<float>("h");
    tensor<float> hsp = gc.tensor_input<float>("hsp");
    state_t<deep_shrink> st;
    const view<float, 4> r = conformance::apply_output_block(p, st, block_site{unet_stage::output, 0, h.extent(1)},
                                                             h.as<4>(), hsp.as<4>());
    conformance::put(out, "h", tensor<float>::copy_of(r));
    conformance::put(out, "hsp", hsp);
}

} // namespace conformance_cases_deep_shrink
