// ComfyUI's model-sampling nodes through their descriptors: workflow import, chains of nodes
// (noise scale kept by SD3 / AuraFlow), the replace rule, and the same objects through a guider.
#include <catch2/catch.hpp>

#include <string>

#include "patchbay/comfy/workflow.hpp"
#include "test_patches.hpp"

namespace test_comfy_model_sampling_nodes {

using namespace patchbay;

namespace {
std::string path(const std::string& nodes, const std::string& last) {
    return R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},)" + nodes +
           R"("3": {"class_type": "KSampler", "inputs": {"model": [")" + last + R"(", 0], "cfg": 5.0}}})";
}
} // namespace

TEST_CASE("model-sampling nodes import through their descriptors, applied in order", "[workflow][model_sampling]") {
    const auto wf = comfy::parse_workflow_text(path(
        R"("5": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["4", 0], "max_shift": 1.15, "base_shift": 0.5, "width": 768, "height": 1344}},)",
        "5"));
    REQUIRE(wf.sampling);
    CHECK(wf.sampling->node.id == "5");
    const model_sampling expect = model_sampling::flux(1.15, 0.5, 768, 1344);
    CHECK(wf.sampling->sampling.sigma(0.5) == expect.sigma(0.5));
    CHECK(wf.sampling->spec == "ModelSamplingFlux(max_shift=1.15, base_shift=0.5, width=768, height=1344)");
    const auto chained = comfy::parse_workflow_text(path(
        R"("5": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["4", 0], "shift": 3.0}},
           "6": {"class_type": "ModelNoiseScale", "inputs": {"model": ["5", 0], "noise_scale": 7.5}},
           "7": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["6", 0], "shift": 2.0}},)",
        "7"));
    CHECK(chained.sampling_nodes.size() == 3);
    CHECK(chained.patches.empty());
    const model_sampling direct = model_sampling::sd3(3.0).with_noise_scale(7.5);
    const model_sampling kept = model_sampling::sd3(2.0).inheriting_noise_scale(direct);
    tensor<float> noise{1}, latent{1}, a{1}, b{1}, sigma{1};
    noise[0] = 1.0f;
    latent[0] = 0.5f;
    sigma[0] = 0.5f;
    chained.sampling->sampling.noise_scaling<float, 1>(sigma.as<1>(), noise.as<1>(), latent.as<1>(), false, a.as<1>());
    kept.noise_scaling<float, 1>(sigma.as<1>(), noise.as<1>(), latent.as<1>(), false, b.as<1>());
    CHECK(a[0] == b[0]);
    CHECK(a[0] == Approx(0.5f * 7.5f + 0.25f));
}

TEST_CASE("a model-sampling node that would be silently replaced is refused", "[workflow][model_sampling]") {
    CHECK_THROWS_WITH(comfy::parse_workflow_text(path(
                          R"("5": {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["4", 0], "sampling": "eps", "zsnr": false}},
                             "6": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["5", 0], "max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 1024}},)",
                          "6")),
                      Catch::Contains("workflow node '5' (ModelSamplingDiscrete): a second model sampling on the model "
                                      "path: node '6' (ModelSamplingFlux) replaces it"));
    CHECK_THROWS_WITH(comfy::parse_workflow_text(path(
                          R"("5": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["4", 0], "max_shift": 1.15, "base_shift": 0.5, "width": 8, "height": 1024}},)",
                          "5")),
                      Catch::Contains("input 'width' must be in [16, 16384], got 8"));
}

TEST_CASE("ModelNoiseScale needs a flow model sampling; a linked LTXV latent needs its token count", "[workflow][model_sampling]") {
    const auto wf = comfy::parse_workflow_text(path(
        R"("6": {"class_type": "ModelNoiseScale", "inputs": {"model": ["4", 0], "noise_scale": 2.0}},)", "6"));
    CHECK(!wf.sampling); // it modifies the checkpoint's own object
    test::counting_model model;
    CHECK_THROWS_WITH(comfy::build_chain(wf, model, model_sampling::discrete()),
                      Catch::Contains("workflow node '6' (ModelNoiseScale)"));
    CHECK_NOTHROW(comfy::build_chain(wf, model, model_sampling::sd3(3.0)));
    const std::string ltxv = path(
        R"("8": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 768, "height": 512, "length": 97, "batch_size": 1}},
           "5": {"class_type": "ModelSamplingLTXV", "inputs": {"model": ["4", 0], "max_shift": 2.05, "base_shift": 0.95, "latent": ["8", 0]}},)",
        "5");
    CHECK_THROWS_WITH(comfy::parse_workflow_text(ltxv), Catch::Contains("model fact 'latent_tokens'"));
    comfy::import_options opts;
    opts.model_facts.push_back({"latent_tokens", 13.0 * 16 * 24});
    const auto with_tokens = comfy::parse_workflow_text(ltxv, opts);
    const std::array<index_t, 5> shape{1, 128, 13, 16, 24};
    CHECK(with_tokens.sampling->sampling.sigma(0.5) == model_sampling::ltxv(2.05, 0.95, shape).sigma(0.5));
}

TEST_CASE("model-sampling patches in a guider equal the factories", "[model_sampling]") {
    test::counting_model model;
    const guider<test::counting_model, model_sampling_continuous_edm> g(
        model, model_sampling::discrete(), model_sampling_continuous_edm{.sampling = "edm", .sigma_max = 80.0});
    const model_sampling expect = model_sampling::continuous_edm("edm", 80.0, 0.002);
    CHECK(g.sampling().sigma_max() == expect.sigma_max());
    CHECK(g.sampling().sigma(0.3) == expect.sigma(0.3));
    CHECK_THROWS_WITH((guider<test::counting_model, model_sampling_discrete>(model, model_sampling::discrete(),
                                                                              model_sampling_discrete{.sampling = "flow"})),
                      Catch::Contains("ModelSamplingDiscrete: parameter 'sampling' must be one of eps, v_prediction"));
}

} // namespace test_comfy_model_sampling_nodes
