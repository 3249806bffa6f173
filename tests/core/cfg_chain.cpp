// cfg_chain: the cfg stage without a model gives patch_chain's combine results, refuses patches
// that need the model when they are added, and is built from a workflow like a chain.
#include <catch2/catch.hpp>

#include <string>

#include "patchbay/comfy/workflow.hpp"
#include "patchbay/core/cfg_chain.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "test_patches.hpp"

namespace test_core_cfg_chain {

using namespace patchbay;
using namespace patchbay::test;

TEST_CASE("cfg_chain's combine equals patch_chain's, step after step", "[cfg_chain]") {
    scene sc;
    counting_model model;
    const model_sampling ms = model_sampling::sd3(3.0); // flow: RescaleCFG takes its x0 branch
    cfg_chain free(ms);
    free.add(apg{.momentum = 0.5}).add(rescale_cfg{}).add(mahiro{});
    patch_chain<counting_model> chain(model, ms);
    chain.add(apg{.momentum = 0.5}).add(rescale_cfg{}).add(mahiro{});
    auto rf = free.begin_run();
    auto rc = chain.begin_run();
    guidance_inputs<float, 4> gi{sc.x.as<4>(), sc.sigma.as<1>(), 4.0};
    gi.prediction = prediction_type::flow; // what patch_chain's caller must say; cfg_chain knows it
    for (int i = 0; i < 3; ++i) {
        tensor<float> c1 = test::random_tensor({2, 4, 8, 8}, 1 + unsigned(i)), u1 = test::random_tensor({2, 4, 8, 8}, 9);
        tensor<float> c2 = tensor<float>::copy_of(c1.as<4>()), u2 = tensor<float>::copy_of(u1.as<4>());
        tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 8});
        guidance_inputs<float, 4> eps_gi = gi;
        eps_gi.prediction = prediction_type::eps; // ignored: the chain's sampling decides
        free.combine(rf, eps_gi, c1.as<4>(), u1.as<4>(), a.as<4>());
        chain.combine(rc, gi, c2.as<4>(), u2.as<4>(), b.as<4>());
        CHECK(test::bit_equal(a, b));
    }
    CHECK(model.cond_calls == 0); // nothing was evaluated
}

TEST_CASE("cfg_chain refuses patches that need the model when they are added", "[cfg_chain]") {
    cfg_chain chain(model_sampling::discrete("eps"));
    CHECK_THROWS_WITH(chain.add(perturbed_attention_guidance{}),
                      Catch::Contains("cfg_chain::add: cannot add 'PerturbedAttentionGuidance': it hooks into the "
                                      "model's network, and a cfg_chain has no model"));
    CHECK_THROWS_WITH(chain.add(free_u{}), Catch::Contains("cannot add 'FreeU'"));
    CHECK_THROWS_WITH(chain.add(rescale_cfg{.multiplier = 2.0}),
                      Catch::Contains("RescaleCFG: parameter 'multiplier' must be a finite value in [0, 1], got 2"));
    CHECK(chain.size() == 0);
}

TEST_CASE("a workflow's cfg stage as a cfg_chain", "[cfg_chain][workflow]") {
    const std::string text = R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
      "5": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["4", 0], "shift": 3.0}},
      "10": {"class_type": "RescaleCFG", "inputs": {"model": ["5", 0], "multiplier": 0.5, "end_percent": 0.5}},
      "3": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "cfg": 5.0}}})";
    const auto wf = comfy::parse_workflow_text(text);
    const cfg_chain chain = comfy::build_cfg_chain(wf, model_sampling::discrete("eps"));
    REQUIRE(chain.size() == 1);
    CHECK(chain.name(0) == "RescaleCFG");
    CHECK(chain.sampling().prediction() == prediction_type::flow); // the workflow's ModelSamplingSD3
    const std::string pag = R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
      "10": {"class_type": "PerturbedAttentionGuidance", "inputs": {"model": ["4", 0], "scale": 3.0}},
      "3": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "cfg": 5.0}}})";
    CHECK_THROWS_WITH(comfy::build_cfg_chain(comfy::parse_workflow_text(pag), model_sampling::discrete("eps")),
                      Catch::Contains("workflow node '10' (PerturbedAttentionGuidance)"));
}

} // namespace test_core_cfg_chain
