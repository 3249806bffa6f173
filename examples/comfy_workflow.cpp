// comfy_workflow: load a ComfyUI API-format workflow ("Save (API)"), print the patch stack it
// describes, build the patch_chain and sample the toy UNet (examples/toy_unet.hpp) with it,
// with the workflow's steps, cfg, sampler, scheduler and seed, beside plain CFG.
//
//   example_comfy_workflow [WORKFLOW.json] [--smoke] [--skip-unknown] [--sampler-node ID]
//
// Default workflow: examples/data/sd15_freeu_pag_rescale.json (LoraLoader, ModelSamplingDiscrete,
// FreeU_V2, PerturbedAttentionGuidance, RescaleCFG, KSampler). --smoke runs at most 3 steps.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <patchbay/comfy/workflow.hpp>
#include <patchbay/core/guider.hpp>
#include <patchbay/core/patch_chain.hpp>
#include <patchbay/sampling/samplers.hpp>
#include <patchbay/sampling/schedules.hpp>

#include "toy_unet.hpp"

using namespace patchbay;
using examples::toy_unet;

namespace {

std::filesystem::path default_workflow() {
    // The example's source folder (CMake compiles it by absolute path), else the repository root.
    const std::filesystem::path here = std::filesystem::path(__FILE__).parent_path();
    const std::filesystem::path name = "data/sd15_freeu_pag_rescale.json";
    if (std::filesystem::exists(here / name)) return here / name;
    return std::filesystem::path("examples") / name;
}

/// The workflow's scheduler, or "simple" (with a note) for one patchbay does not implement.
std::vector<double> schedule(const std::string& name, const model_sampling& ms, int steps) {
    if (name == "simple") return simple_schedule(steps, ms);
    if (name == "normal") return normal_schedule(steps, ms);
    if (name == "sgm_uniform") return sgm_uniform_schedule(steps, ms);
    if (name == "karras")
        return karras_schedule(steps, double(ms.sigma_min()), double(ms.sigma_max()));
    std::printf("note: scheduler '%s' is not in patchbay's examples; using 'simple'\n", name.c_str());
    return simple_schedule(steps, ms);
}

double rms(const tensor<float>& a, const tensor<float>& b) {
    double s = 0;
    for (index_t i = 0; i < a.size(); ++i) s += std::pow(double(a[i]) - double(b[i]), 2);
    return std::sqrt(s / double(a.size()));
}

} // namespace

int main(int argc, char** argv) {
    bool smoke = false;
    std::filesystem::path path;
    comfy::import_options options;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--smoke")) smoke = true;
        else if (!std::strcmp(argv[i], "--skip-unknown")) options.skip_unknown_patches = true;
        else if (!std::strcmp(argv[i], "--sampler-node") && i + 1 < argc) options.sampler_node = argv[++i];
        else if (argv[i][0] == '-') {
            std::fprintf(stderr, "usage: %s [WORKFLOW.json] [--smoke] [--skip-unknown] [--sampler-node ID]\n",
                         argv[0]);
            return 2;
        } else path = argv[i];
    }
    if (path.empty()) path = default_workflow();

    try {
        toy_unet model;
        const auto& cfg = model.config();
        // Facts the workflow does not carry come from the model: FreeU's base channel count
        // and RenormCFG's guided channels.
        options.model_channels = cfg.model_channels;
        options.in_channels = cfg.channels;

        const comfy::workflow wf = comfy::parse_workflow_file(path, options);
        std::printf("workflow %s\n%s", path.filename().string().c_str(), wf.describe().c_str());

        // The toy UNet is an eps model: that is its own model sampling unless the workflow
        // installs another one.
        const model_sampling own = model_sampling::discrete("eps");
        const patch_chain<toy_unet> chain = comfy::build_chain(wf, model, own);
        if (chain.sampling().prediction() != prediction_type::eps)
            std::printf("note: the workflow sets a %s model sampling; the toy UNet is an eps model, "
                        "so its samples below are only a smoke test\n",
                        chain.sampling().is_flow() ? "flow" : "non-eps");

        int steps = static_cast<int>(wf.sampler.steps.value_or(20));
        if (smoke) steps = std::min(steps, 3);
        const double cond_scale = wf.sampler.cfg.value_or(1.0);
        std::string sampler = wf.sampler.sampler_name.value_or("euler");
        if (sampler != "euler" && sampler != "euler_ancestral" && sampler != "dpmpp_2m" &&
            sampler != "euler_cfg_pp" && sampler != "euler_ancestral_cfg_pp") {
            std::printf("note: sampler '%s' is not in patchbay's examples; using 'euler'\n", sampler.c_str());
            sampler = "euler";
        }
        const std::vector<double> sigmas =
            schedule(wf.sampler.scheduler.value_or("simple"), chain.sampling(), steps);
        const std::uint64_t seed = wf.sampler.seed.value_or(0);

        tensor<float> noise({1, cfg.channels, cfg.height, cfg.width});
        normal_generator rng(seed);
        rng.fill(noise.as<4>());
        const index_t picture = 1;
        const auto pos = model.prompt(picture), neg = model.negative_prompt();
        sample_options<float, 4> sopt;
        sopt.seed = seed;
        sopt.eta = wf.sampler.eta.value_or(1.0); // SamplerEulerAncestralCFGPP's, when it is the sampler
        sopt.s_noise = wf.sampler.s_noise.value_or(1.0);
        const sample_inputs<float, 4> in{noise.as<4>(), {}, sigmas, cond_scale};

        auto run = chain.begin_run(&pos, &neg);
        tensor<float> patched(noise.shape());
        sample(sampler, chain, run, in, patched.as<4>(), sopt);

        // The same run with plain CFG (no patches), for comparison.
        toy_unet plain_model;
        const patch_chain<toy_unet> plain(plain_model, chain.sampling());
        auto plain_run = plain.begin_run(&pos, &neg);
        tensor<float> reference(noise.shape());
        sample(sampler, plain, plain_run, in, reference.as<4>(), sopt);

        const tensor<float> target = model.picture(picture);
        std::printf("sampled the toy UNet: %s, %d steps, cfg %g, seed %llu\n", sampler.c_str(), steps,
                    cond_scale, static_cast<unsigned long long>(seed));
        std::printf("  patched:    %3d prompt evaluations in %3d model calls, rms to picture %ld: %.4f\n",
                    model.counts.total(), model.counts.calls, long(picture), rms(patched, target));
        std::printf("  plain CFG:  %3d prompt evaluations in %3d model calls, rms to picture %ld: %.4f\n",
                    plain_model.counts.total(), plain_model.counts.calls, long(picture), rms(reference, target));
        std::printf("  rms change from the patches: %.4f\n", rms(patched, reference));
    } catch (const patchbay::error& e) {
        std::fprintf(stderr, "comfy_workflow: %s\n", e.what());
        return 1;
    }
    return 0;
}
