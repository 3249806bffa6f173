// custom_patch: an engine adds a patch of its own, in one file, and patchbay treats it like a
// built-in one: validated from its descriptor, run by the same dispatcher in a guider or a
// patch_chain, printed, and imported from a ComfyUI workflow under the engine's own
// class_type. docs/writing_a_patch.md walks through it.
//
// The patch here clamps the guided prediction per pixel to a multiple of the cond
// prediction's channel-norm range — a stand-in for whatever an engine's users ask for.
//
//   example_custom_patch [--smoke]
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <patchbay/comfy/workflow.hpp>
#include <patchbay/patchbay.hpp>

#include "toy_gaussian.hpp"

using namespace patchbay;

namespace my_engine {

/// "DenoisedClamp": a post-cfg patch that clamps denoised into [-limit, limit] and blends the
/// clamped value in with `strength`. One struct, its descriptor, its hook: nothing else.
struct denoised_clamp {
    double limit = 1.0;    ///< input "limit", default 1.0, range [0.01, 100]
    double strength = 1.0; ///< input "strength", default 1.0, range [0, 1]
    bool per_channel = false; ///< input "per_channel" (unused by this toy; shows a BOOLEAN)

    static constexpr auto descriptor() {
        return describe<denoised_clamp>("DenoisedClamp", "Denoised Clamp", hook_kind::post_cfg,
                                        floating("limit", &denoised_clamp::limit, 1.0, 0.01, 100.0, 0.01),
                                        floating("strength", &denoised_clamp::strength, 1.0, 0.0, 1.0, 0.01),
                                        optional(boolean("per_channel", &denoised_clamp::per_channel, false)));
    }

    /// Post-cfg hook: the dispatcher has checked shapes and sigma; only the math is here.
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>&, view<const T, R>, view<const T, R>,
                  view<T, R> denoised) const {
        const T lim = static_cast<T>(limit), s = static_cast<T>(strength);
        // one generic lambda: SIMD batches on contiguous rows, scalars on strided ones
        kernels::transform(
            denoised,
            [lim, s](auto d) {
                const auto c = simd::min(simd::max(d, decltype(d)(-lim)), decltype(d)(lim));
                return d + (c - d) * s;
            },
            view<const T, R>(denoised));
    }
};

} // namespace my_engine

namespace {

int failures = 0;
void expect(bool ok, const char* what) {
    if (!ok) {
        std::printf("FAILED: %s\n", what);
        ++failures;
    }
}

// An API workflow that uses the engine's patch under its own class_type, after a FreeU-free
// built-in patch, between the checkpoint loader and the sampler.
constexpr const char* workflow_json = R"({
  "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toy.safetensors"}},
  "10": {"class_type": "RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.5}},
  "11": {"class_type": "MyEngine.DenoisedClamp", "inputs": {"model": ["10", 0], "limit": 0.4, "strength": 1.0}},
  "3": {"class_type": "KSampler", "inputs": {"model": ["11", 0], "seed": 7, "steps": 8, "cfg": 6.0,
        "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}}
})";

} // namespace

int main(int argc, char** argv) {
    const bool smoke = argc > 1 && std::string(argv[1]) == "--smoke";
    using examples::toy_gaussian;
    using examples::toy_kind;
    using examples::toy_prompt;

    // 1. Validation and printing come from the descriptor.
    const my_engine::denoised_clamp clamp{.limit = 0.4};
    std::printf("patch: %s\n", to_string(clamp).c_str());
    bool refused = false;
    try {
        patchbay::validate(my_engine::denoised_clamp{.limit = 0.0});
    } catch (const error& e) {
        refused = true;
        std::printf("refused: %s\n", e.what());
    }
    expect(refused, "limit 0 is outside [0.01, 100]");

    // 2. The same patch in a static guider and in a run-time chain: identical results.
    toy_gaussian model(toy_kind::vp, 0.8);
    const model_sampling ms = model_sampling::discrete("eps");
    tensor<float> mu_pos({1, 4, 16, 16}), mu_neg({1, 4, 16, 16});
    for (index_t i = 0; i < mu_pos.size(); ++i) mu_pos[i] = static_cast<float>(0.9 * std::sin(0.1 * double(i)));
    const toy_prompt pos{mu_pos.as<4>()}, neg{mu_neg.as<4>()};
    const int steps = smoke ? 4 : 20;
    const auto sigmas = karras_schedule(steps, ms.sigma_min(), ms.sigma_max());
    tensor<float> noise({1, 4, 16, 16});
    for (index_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<float>(std::cos(1.7 * double(i)));

    const guider<toy_gaussian, rescale_cfg, my_engine::denoised_clamp> g(model, ms, rescale_cfg{.multiplier = 0.5},
                                                                         clamp);
    auto run_g = g.begin_run(&pos, &neg);
    tensor<float> out_g(noise.shape());
    sample_euler(g, run_g, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 6.0}, out_g.as<4>());

    // 3. The workflow importer maps the engine's class_type to the patch type.
    comfy::import_options opts;
    opts.add_node<my_engine::denoised_clamp>("MyEngine.DenoisedClamp");
    const comfy::workflow wf = comfy::parse_workflow_text(workflow_json, opts);
    std::printf("%s", wf.describe().c_str());
    expect(wf.patches.size() == 2 && wf.patches[1].config.holds<my_engine::denoised_clamp>(),
           "the workflow's second patch is the engine's DenoisedClamp");
    expect(wf.patches[1].config.as<my_engine::denoised_clamp>().limit == 0.4, "limit read from the workflow");

    patch_chain<toy_gaussian> chain = comfy::build_chain(wf, model, ms);
    auto run_c = chain.begin_run(&pos, &neg);
    tensor<float> out_c(noise.shape());
    sample_euler(chain, run_c, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 6.0}, out_c.as<4>());

    bool same = true;
    float peak = 0.f;
    for (index_t i = 0; i < out_g.size(); ++i) {
        same = same && out_g[i] == out_c[i];
        peak = std::max(peak, std::fabs(out_g[i]));
    }
    expect(same, "guider and imported chain give bit-identical samples");
    expect(peak <= 0.4f + 1e-6f, "the last step's denoised prediction is clamped to the limit");
    std::printf("samples: guider == chain: %s, max |sample| = %.4f (limit 0.4)\n", same ? "yes" : "no", double(peak));

    // 4. Bad workflow values are refused with the node named.
    try {
        (void)comfy::parse_workflow_text(std::string(workflow_json).replace(std::string(workflow_json).find("0.4"), 3, "200"), opts);
        expect(false, "limit 200 must be refused");
    } catch (const error& e) {
        std::printf("refused: %s\n", e.what());
    }
    std::printf(failures ? "custom_patch: %d FAILED\n" : "custom_patch: ok\n", failures);
    return failures ? 1 : 0;
}
