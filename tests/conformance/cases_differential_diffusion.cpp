// Conformance handlers: DifferentialDiffusion (denoise_mask_function.sequence, and the
// e2e.sample_euler inpainting runs through the e2e harness).
#include <string>
#include <vector>

#include "patchbay/patches/mask/differential_diffusion.hpp"
#include "e2e.hpp"
#include "registry.hpp"

namespace conformance_cases_differential_diffusion {

namespace {

using namespace patchbay;
using namespace patchbay::conformance;

/// The optional `strength` input (default 1); a non-number is bad input.
double strength_of(const golden_case& gc) {
    if (!gc.params().contains("strength")) return 1.0;
    const auto& v = gc.params().at("strength");
    if (!v.is_number()) fail("DifferentialDiffusion", "parameter 'strength' must be a number, got " + v.dump());
    return v.get<double>();
}

template <std::size_t R>
void sequence(const golden_case& gc, results& out) {
    const differential_diffusion dd{strength_of(gc)};
    patchbay::validate(dd); // the guider validates at construction; the mask call does not
    const model_sampling ms =
        model_sampling::from_comfy(gc.scalar<std::string>("model_sampling", "ModelSamplingDiscrete(eps)"));
    if (gc.input("sigmas").shape.size() != 1)
        fail("DifferentialDiffusion", "tensor 'sigmas' must be 1-D (the step schedule)");
    const tensor<float> sig = gc.tensor_input<float>("sigmas");
    const tensor<float> mask = gc.tensor_input<float>("denoise_mask");
    std::vector<double> sigmas(static_cast<std::size_t>(sig.size()));
    for (index_t i = 0; i < sig.size(); ++i) sigmas[static_cast<std::size_t>(i)] = sig[i];
    require(sigmas.size() >= 2, "DifferentialDiffusion", "tensor 'sigmas' needs at least two entries");
    const index_t steps = static_cast<index_t>(sigmas.size()) - 1;
    // The stacked result has rank R + 1 (6 for video masks), beyond tensor<>'s rank limit,
    // so it is assembled as an npy array directly.
    npy::array masks;
    masks.type = npy::dtype::f4;
    masks.shape = {steps};
    masks.shape.insert(masks.shape.end(), mask.shape().begin(), mask.shape().end());
    tensor<float> step_mask(mask.shape());
    no_state st;
    for (index_t i = 0; i < steps; ++i) {
        const mask_inputs in{sigmas[static_cast<std::size_t>(i)], sigmas, &ms};
        dd.mask<float, R>(st, in, mask.as<R>(), step_mask.as<R>());
        masks.values.insert(masks.values.end(), step_mask.data(), step_mask.data() + step_mask.size());
    }
    out["masks"] = std::move(masks);
}

} // namespace

// Inpainting runs: the guider's sampler applies the patch's mask every step, blending with
// the noised latent image as ComfyUI's KSamplerX0Inpaint does.
PATCHBAY_CONFORMANCE("DifferentialDiffusion", "e2e.sample_euler") {
    e2e::run(gc, out, differential_diffusion{strength_of(gc)});
}

PATCHBAY_CONFORMANCE("DifferentialDiffusion", "denoise_mask_function.sequence") {
    const auto rank = gc.input("denoise_mask").shape.size();
    if (rank == 4) sequence<4>(gc, out);
    else if (rank == 5) sequence<5>(gc, out);
    else fail("DifferentialDiffusion", "tensor 'denoise_mask' must have rank 4 or 5");
}

} // namespace conformance_cases_differential_diffusion
