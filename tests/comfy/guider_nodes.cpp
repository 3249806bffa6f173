// GUIDER nodes that combine several prompts import as multi-prompt patches.
#include <catch2/catch.hpp>

#include <string>

#include "patchbay/comfy/workflow.hpp"

namespace test_comfy_guider_nodes {

using namespace patchbay;

TEST_CASE("a PerpNegGuider node imports as the multi-prompt patch, after the model's patches", "[workflow][guider]") {
    const std::string t = R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
      "10": {"class_type": "APG", "inputs": {"model": ["4", 0], "eta": 1.0, "norm_threshold": 5.0, "momentum": 0.0}},
      "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
      "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["4", 1]}},
      "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
      "20": {"class_type": "PerpNegGuider", "inputs": {"model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0],
             "empty_conditioning": ["8", 0], "cfg": 7.0, "neg_scale": 1.5}},
      "3": {"class_type": "SamplerCustomAdvanced", "inputs": {"guider": ["20", 0], "noise": ["30", 0], "sampler": ["31", 0],
            "sigmas": ["32", 0], "latent_image": ["33", 0]}},
      "30": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
      "31": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
      "32": {"class_type": "BasicScheduler", "inputs": {"model": ["10", 0], "scheduler": "karras", "steps": 10, "denoise": 1.0}},
      "33": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}})";
    const auto wf = comfy::parse_workflow_text(t);
    REQUIRE(wf.patches.size() == 2);
    CHECK(wf.patches[0].class_type == "APG");
    CHECK(wf.patches[1].slot() == hook_kind::multi_prompt);
    const auto& g = wf.patches[1].config.as<perp_neg_guider>();
    CHECK(g.cfg == 7.0);
    CHECK(g.neg_scale == 1.5);
    CHECK(g.empty_conditioning.node_id == "8");
    CHECK(wf.sampler.cfg == 7.0);
    // a cfg function beside it would be silently skipped by ComfyUI: refused when the chain is built
    const std::string apg = R"("APG", "inputs": {"model": ["4", 0], "eta": 1.0, "norm_threshold": 5.0, "momentum": 0.0})";
    std::string with_rescale = t;
    with_rescale.replace(with_rescale.find(apg), apg.size(), R"("RescaleCFG", "inputs": {"model": ["4", 0], "multiplier": 0.7})");
    const auto wf2 = comfy::parse_workflow_text(with_rescale);
    CHECK_THROWS_WITH(comfy::build_cfg_chain(wf2, model_sampling::discrete()),
                      Catch::Contains("PerpNegGuider"));
}

} // namespace test_comfy_guider_nodes
