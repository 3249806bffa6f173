// Tests for include/patchbay/comfy/workflow.hpp: ComfyUI API-format workflow import.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "../../examples/toy_unet.hpp"
#include "patchbay/comfy/workflow.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "patchbay/sampling/schedules.hpp"

namespace test_comfy_workflow {

using namespace patchbay;
using namespace patchbay::comfy;
using json = nlohmann::json;

namespace {

std::filesystem::path fixture(const std::string& name) {
    return std::filesystem::path(PATCHBAY_GOLDEN_DIR).parent_path() / "workflows" / name;
}

/// The message of the patchbay::error `f` throws (the test fails when it throws nothing).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const patchbay::error& e) {
        return e.what();
    }
    FAIL("expected a patchbay::error");
    return {};
}

bool has(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

/// A minimal KSampler graph: loader "1" -> the given patch nodes (in order) -> KSampler "9".
json chain_of(std::vector<std::pair<std::string, json>> patches) {
    json wf;
    wf["1"] = {{"class_type", "CheckpointLoaderSimple"}, {"inputs", {{"ckpt_name", "m.safetensors"}}}};
    std::string prev = "1";
    for (auto& [id, n] : patches) {
        n["inputs"]["model"] = json::array({prev, 0});
        wf[id] = n;
        prev = id;
    }
    wf["9"] = {{"class_type", "KSampler"},
               {"inputs",
                {{"seed", 1}, {"steps", 4}, {"cfg", 5.0}, {"sampler_name", "euler"},
                 {"scheduler", "simple"}, {"denoise", 1.0}, {"model", json::array({prev, 0})},
                 {"positive", json::array({"5", 0})}, {"negative", json::array({"6", 0})},
                 {"latent_image", json::array({"7", 0})}}}};
    return wf;
}

json node(const std::string& cls, json inputs = json::object()) {
    return {{"class_type", cls}, {"inputs", inputs}};
}

/// A model for the cfg stage alone (combine never calls it); no block or attention hooks.
struct plain_model {
    using conditioning_type = int;
    template <class T, std::size_t R>
    void predict(const model_call<int, T, R>&, view<T, R> out) const {
        kernels::fill(out, T(0));
    }
};

/// An engine's own patch with an INT, an optional BOOLEAN and a COMBO input: denoised is
/// scaled by (or offset by) amount, `repeats` times, when enabled.
struct engine_scale {
    enum class mode_kind { multiply, add };
    static constexpr std::array<std::string_view, 2> modes{"multiply", "add"};
    double amount = 1.0;
    int repeats = 1;
    bool enabled = true;
    mode_kind mode = mode_kind::multiply;

    static constexpr auto descriptor() {
        return describe<engine_scale>("EngineScale", "Engine Scale", hook_kind::post_cfg,
                                      floating("amount", &engine_scale::amount, 1.0, 0.0, 4.0, 0.1),
                                      integer("repeats", &engine_scale::repeats, 1, 1, 8),
                                      optional(boolean("enabled", &engine_scale::enabled, true)),
                                      combo("mode", &engine_scale::mode, modes, "multiply"));
    }
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>&, view<const T, R>, view<const T, R>,
                  view<T, R> denoised) const {
        if (!enabled) return;
        const T a = static_cast<T>(amount);
        for (int k = 0; k < repeats; ++k) {
            if (mode == mode_kind::add) kernels::transform(denoised, [a](auto d) { return d + a; }, denoised);
            else kernels::transform(denoised, [a](auto d) { return d * a; }, denoised);
        }
    }
};

tensor<float> random_tensor(std::vector<index_t> shape, std::uint64_t seed, double scale = 1.0) {
    tensor<float> t(std::move(shape));
    normal_generator rng(seed);
    for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(scale * rng.next());
    return t;
}

double max_abs_diff(const tensor<float>& a, const tensor<float>& b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (index_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

} // namespace

TEST_CASE("KSampler workflow: CheckpointLoaderSimple -> FreeU_V2 -> RescaleCFG -> KSampler") {
    import_options opts;
    opts.model_channels = 64;
    const workflow wf = parse_workflow_file(fixture("ksampler_freeu_rescale.json"), opts);

    REQUIRE(wf.patches.size() == 2);
    CHECK(wf.patches[0].node_id == "10");
    CHECK(wf.patches[0].class_type == "FreeU_V2");
    CHECK(wf.patches[0].slot() == hook_kind::output_block);
    const auto& fu = wf.patches[0].config.as<free_u_v2>();
    CHECK(fu.b1 == 1.3);
    CHECK(fu.b2 == 1.4);
    CHECK(fu.s1 == 0.9);
    CHECK(fu.s2 == 0.2);
    CHECK(fu.model_channels == 64); // from the options, not the workflow

    CHECK(wf.patches[1].node_id == "11");
    CHECK(wf.patches[1].slot() == hook_kind::cfg_function);
    CHECK(wf.patches[1].config.as<rescale_cfg>().multiplier == 0.7);

    CHECK_FALSE(wf.sampling.has_value());
    CHECK(wf.loader.id == "4");
    CHECK(wf.loader.class_type == "CheckpointLoaderSimple");
    CHECK(wf.pass_through.empty());
    CHECK(wf.skipped.empty());

    CHECK(wf.sampler.node.id == "3");
    CHECK(wf.sampler.node.class_type == "KSampler");
    CHECK(wf.sampler.cfg == 8.0);
    CHECK(wf.sampler.steps == 20);
    CHECK(wf.sampler.sampler_name == "euler");
    CHECK(wf.sampler.scheduler == "normal");
    CHECK(wf.sampler.seed == std::uint64_t{156680208700286});
    CHECK(wf.sampler.denoise == 1.0);

    const std::string text = wf.describe();
    INFO(text);
    CHECK(has(text, "FreeU_V2(b1=1.3, b2=1.4, s1=0.9, s2=0.2, model_channels=64)"));
    CHECK(has(text, "RescaleCFG(multiplier=0.7)"));
    CHECK(text.find("FreeU_V2(") < text.find("RescaleCFG("));
    CHECK(has(text, "cfg 8"));
    CHECK(has(text, "CheckpointLoaderSimple (node 4"));
}

TEST_CASE("SamplerCustomAdvanced + CFGGuider: stacked patches, Reroutes, ModelSamplingSD3, ids like 57:11") {
    const workflow wf = parse_workflow_file(fixture("custom_advanced_stack.json"));

    REQUIRE(wf.patches.size() == 4);
    CHECK(wf.patches[0].node_id == "20");
    CHECK(wf.patches[1].node_id == "21");
    CHECK(wf.patches[2].node_id == "57:22");
    CHECK(wf.patches[3].node_id == "23");

    const auto& fr = wf.patches[0].config.as<fresca>();
    CHECK(fr.scale_low == 1.0);
    CHECK(fr.scale_high == 1.25);
    CHECK(fr.freq_cutoff == 20);
    const auto& a = wf.patches[1].config.as<apg>();
    CHECK(a.eta == 0.8);
    CHECK(a.norm_threshold == 15.0);
    CHECK(a.momentum == -0.5);
    const auto& cn = wf.patches[2].config.as<cfg_norm>();
    CHECK(cn.strength == 0.9);
    CHECK_FALSE(cn.pre_cfg); // omitted optional input takes its default
    CHECK(wf.patches[2].slot() == hook_kind::post_cfg);
    CHECK(wf.patches[3].config.holds<mahiro>());
    CHECK(wf.patches[3].title.find("Mahiro is so cute") == 0);

    REQUIRE(wf.sampling.has_value());
    CHECK(wf.sampling->node.id == "13");
    CHECK(wf.sampling->sampling.is_flow());
    CHECK(wf.sampling->sampling.shift() == 3.0);
    CHECK(wf.sampling->sampling.multiplier() == 1000.0);
    CHECK(wf.sampling->spec == "ModelSamplingSD3(shift=3)");
    const model_sampling round_trip = model_sampling::from_comfy(wf.sampling->spec);
    CHECK(round_trip.sigma(500.0) == wf.sampling->sampling.sigma(500.0));

    REQUIRE(wf.pass_through.size() == 1);
    CHECK(wf.pass_through[0].id == "57:11");
    CHECK(wf.loader.id == "12");
    CHECK(wf.loader.class_type == "UNETLoader");

    CHECK(wf.sampler.node.class_type == "SamplerCustomAdvanced");
    CHECK(wf.sampler.guider.id == "30");
    CHECK(wf.sampler.guider.class_type == "CFGGuider");
    CHECK(wf.sampler.cfg == 4.5);
    CHECK(wf.sampler.seed == std::uint64_t{42});
    CHECK(wf.sampler.sampler_name == "dpmpp_2m");
    CHECK(wf.sampler.scheduler == "sgm_uniform"); // through the Reroute "52"
    CHECK(wf.sampler.steps == 28);
    CHECK(wf.sampler.denoise == 1.0);

    const std::string text = wf.describe();
    INFO(text);
    CHECK(has(text, "ModelSamplingSD3(shift=3)"));
    CHECK(has(text, "pass-through: LoraLoaderModelOnly (node 57:11)"));
    CHECK(text.find("FreSca(") < text.find("APG("));
    CHECK(text.find("APG(") < text.find("CFGNorm("));
    CHECK(text.find("CFGNorm(") < text.find("Mahiro("));
}

TEST_CASE("KSamplerAdvanced inpainting: LoraLoader, ModelSamplingDiscrete, DifferentialDiffusion defaults") {
    import_options opts;
    opts.in_channels = 4;
    const workflow wf = parse_workflow_file(fixture("inpaint_differential.json"), opts);
    REQUIRE(wf.patches.size() == 3);
    CHECK(wf.patches[0].slot() == hook_kind::mask_function);
    CHECK(wf.patches[0].config.as<differential_diffusion>().strength == 1.0); // omitted
    CHECK(wf.patches[1].config.holds<tcfg>());
    const auto& rn = wf.patches[2].config.as<renorm_cfg>();
    CHECK(rn.cfg_trunc == 50.0);
    CHECK(rn.renorm_cfg == 1.5);
    CHECK(rn.in_channels == 4);

    REQUIRE(wf.sampling.has_value());
    const model_sampling expect = model_sampling::discrete("v_prediction", true);
    CHECK(wf.sampling->sampling.prediction() == prediction_type::v_prediction);
    CHECK(wf.sampling->sampling.zsnr());
    CHECK(wf.sampling->sampling.sigma_max() == expect.sigma_max());
    CHECK(wf.sampling->spec == "ModelSamplingDiscrete(sampling=v_prediction, zsnr=True)");
    REQUIRE(wf.pass_through.size() == 1);
    CHECK(wf.pass_through[0].class_type == "LoraLoader");
    CHECK(wf.loader.id == "1");

    CHECK(wf.sampler.node.class_type == "KSamplerAdvanced");
    CHECK(wf.sampler.seed == std::uint64_t{18446744073709551615ull}); // full 64-bit seed range
    CHECK(wf.sampler.cfg == 6.5);
    CHECK(wf.sampler.steps == 30);
    CHECK(wf.sampler.scheduler == "karras");
    CHECK_FALSE(wf.sampler.denoise.has_value());
}

TEST_CASE("Every known node with explicit values, and the defaults of optional inputs") {
    const json wf = chain_of({
        {"2", node("DifferentialDiffusion", {{"strength", 0.25}})},
        {"3", node("FreeU", {{"b1", 1.0}, {"b2", 2}, {"s1", 0}, {"s2", 10}})},
        {"4", node("SelfAttentionGuidance", {{"scale", -2}, {"blur_sigma", 0.5}})},
        {"5", node("PerturbedAttentionGuidance", {{"scale", 100}})},
        {"6", node("TCFG")},
        {"7", node("CFGNorm", {{"strength", 100}, {"pre_cfg", true}})},
        {"8", node("ModelSamplingAuraFlow", {{"shift", 1.73}})},
    });
    const workflow w = parse_workflow(wf);
    REQUIRE(w.patches.size() == 6);
    CHECK(w.patches[0].config.as<differential_diffusion>().strength == 0.25);
    const auto& fu = w.patches[1].config.as<free_u>();
    CHECK((fu.b1 == 1.0 && fu.b2 == 2.0 && fu.s1 == 0.0 && fu.s2 == 10.0));
    CHECK(fu.model_channels == 320); // default option
    const auto& sag = w.patches[2].config.as<self_attention_guidance>();
    CHECK((sag.scale == -2.0 && sag.blur_sigma == 0.5));
    CHECK(w.patches[3].config.as<perturbed_attention_guidance>().scale == 100.0);
    CHECK(w.patches[4].config.holds<tcfg>());
    CHECK(w.patches[5].config.as<cfg_norm>().pre_cfg);
    CHECK(w.patches[5].slot() == hook_kind::cfg_function); // CFGNorm pre_cfg takes the cfg slot
    REQUIRE(w.sampling.has_value());
    CHECK(w.sampling->sampling.multiplier() == 1.0);
    CHECK(w.sampling->sampling.shift() == 1.73);
    CHECK(w.sampler.cfg == 5.0);
    CHECK(to_string(w.patches[0].config) == "DifferentialDiffusion(strength=0.25)");
    CHECK(to_string(w.patches[4].config) == "TCFG()");
}

TEST_CASE("Accepted variants: posted {prompt: ...}, numeric link ids, Primitive and Reroute values, BasicGuider, SamplerCustom") {
    SECTION("posted form and numeric link source ids") {
        json wf = chain_of({{"2", node("RescaleCFG", {{"multiplier", 0.5}})}});
        wf["9"]["inputs"]["model"] = json::array({2, 0});
        const workflow w = parse_workflow(json{{"prompt", wf}, {"client_id", "abc"}});
        REQUIRE(w.patches.size() == 1);
        CHECK(w.patches[0].config.as<rescale_cfg>().multiplier == 0.5);
    }
    SECTION("a parameter linked to a PrimitiveFloat through a Reroute") {
        json wf = chain_of({{"2", node("RescaleCFG", {{"multiplier", json::array({"20", 0})}})}});
        wf["20"] = node("Reroute", {{"", json::array({"21", 0})}});
        wf["21"] = node("PrimitiveFloat", {{"value", 0.25}});
        const workflow w = parse_workflow(wf);
        CHECK(w.patches[0].config.as<rescale_cfg>().multiplier == 0.25);
    }
    SECTION("SamplerCustom with KSamplerSelect and BasicScheduler") {
        json wf = chain_of({{"2", node("Mahiro")}});
        wf["9"] = node("SamplerCustom",
                       {{"model", json::array({"2", 0})}, {"add_noise", true}, {"noise_seed", 7},
                        {"cfg", 3.5}, {"sampler", json::array({"10", 0})},
                        {"sigmas", json::array({"11", 0})}, {"positive", json::array({"5", 0})},
                        {"negative", json::array({"6", 0})}, {"latent_image", json::array({"7", 0})}});
        wf["10"] = node("KSamplerSelect", {{"sampler_name", "euler_ancestral"}});
        wf["11"] = node("KarrasScheduler", {{"steps", 12}, {"sigma_max", 14.6}, {"sigma_min", 0.03}, {"rho", 7}});
        const workflow w = parse_workflow(wf);
        CHECK(w.sampler.cfg == 3.5);
        CHECK(w.sampler.seed == std::uint64_t{7});
        CHECK(w.sampler.sampler_name == "euler_ancestral");
        CHECK(w.sampler.steps == 12);
        CHECK_FALSE(w.sampler.scheduler.has_value());
        REQUIRE(w.patches.size() == 1);
        CHECK_FALSE(w.sampler.eta.has_value());

        // the CFG++ SAMPLER nodes name their sampler; the ancestral one carries eta and s_noise
        wf["10"] = node("SamplerEulerAncestralCFGPP", {{"eta", 0.6}, {"s_noise", 0.8}});
        const workflow a = parse_workflow(wf);
        CHECK(a.sampler.sampler_name == "euler_ancestral_cfg_pp");
        CHECK(a.sampler.eta == 0.6);
        CHECK(a.sampler.s_noise == 0.8);
        CHECK_THAT(a.describe(), Catch::Contains("sampler euler_ancestral_cfg_pp eta 0.6 s_noise 0.8"));
        wf["10"] = node("SamplerEulerAncestralCFGPP", {{"eta", 1.5}, {"s_noise", 1.0}});
        CHECK_THROWS_WITH(parse_workflow(wf), Catch::Contains("SamplerEulerAncestralCFGPP") &&
                                                  Catch::Contains("'eta' must be in [0, 1], got 1.5"));
        wf["10"] = node("SamplerEulerCFGpp", {{"version", "regular"}});
        const workflow e = parse_workflow(wf);
        CHECK(e.sampler.sampler_name == "euler_cfg_pp");
        CHECK_FALSE(e.sampler.eta.has_value());
        wf["10"] = node("SamplerEulerCFGpp", {{"version", "alternative"}});
        CHECK_THROWS_WITH(parse_workflow(wf), Catch::Contains("'version' is 'alternative'"));
    }
    SECTION("SamplerCustomAdvanced with BasicGuider: cfg 1; DualCFGGuider: cfg_conds") {
        json wf = chain_of({{"2", node("APG", {{"eta", 1}, {"norm_threshold", 0}, {"momentum", 0}})}});
        wf["9"] = node("SamplerCustomAdvanced", {{"noise", json::array({"12", 0})},
                                                 {"guider", json::array({"10", 0})},
                                                 {"sampler", json::array({"13", 0})},
                                                 {"sigmas", json::array({"14", 0})},
                                                 {"latent_image", json::array({"7", 0})}});
        wf["10"] = node("BasicGuider", {{"model", json::array({"2", 0})}, {"conditioning", json::array({"5", 0})}});
        wf["12"] = node("DisableNoise");
        wf["13"] = node("KSamplerSelect", {{"sampler_name", "euler"}});
        wf["14"] = node("BasicScheduler", {{"scheduler", "simple"}, {"steps", 9}, {"denoise", 0.5}, {"model", json::array({"2", 0})}});
        workflow w = parse_workflow(wf);
        CHECK(w.sampler.cfg == 1.0);
        CHECK(w.sampler.guider.class_type == "BasicGuider");
        CHECK_FALSE(w.sampler.seed.has_value());
        CHECK(w.sampler.denoise == 0.5);
        REQUIRE(w.patches.size() == 1);

        // a multi-prompt guider is a patch of its own (its prompts are links the engine resolves)
        wf["5"] = node("CLIPTextEncode", {{"text", "a cat"}, {"clip", json::array({"1", 1})}});
        wf["6"] = node("CLIPTextEncode", {{"text", "blurry"}, {"clip", json::array({"1", 1})}});
        wf["10"] = node("DualCFGGuider", {{"model", json::array({"2", 0})}, {"cond1", json::array({"5", 0})},
                                          {"cond2", json::array({"5", 0})}, {"negative", json::array({"6", 0})},
                                          {"cfg_conds", 8.0}, {"cfg_cond2_negative", 2.0}, {"style", "regular"}});
        w = parse_workflow(wf);
        CHECK(w.sampler.cfg == 8.0);
        CHECK(w.sampler.cfg_cond2_negative == 2.0);
        REQUIRE(w.patches.size() == 2); // APG, then the guider after the model's patches
        CHECK(w.patches[1].class_type == "DualCFGGuider");
        CHECK(w.patches[1].slot() == hook_kind::multi_prompt);
    }
    SECTION("several samplers: one chosen by id") {
        json wf = chain_of({{"2", node("Mahiro")}});
        wf["19"] = wf["9"];
        wf["19"]["inputs"]["model"] = json::array({"1", 0});
        CHECK(has(error_of([&] { parse_workflow(wf); }), "several sampler nodes"));
        import_options o;
        o.sampler_node = "19";
        CHECK(parse_workflow(wf, o).patches.empty());
        o.sampler_node = "9";
        CHECK(parse_workflow(wf, o).patches.size() == 1);
        o.sampler_node = "2";
        CHECK(has(error_of([&] { parse_workflow(wf, o); }), "not a sampler node"));
    }
    SECTION("unknown inputs are rejected unless allowed") {
        const json wf = chain_of({{"2", node("RescaleCFG", {{"multiplier", 0.5}, {"extra", 1}})}});
        const std::string msg = error_of([&] { parse_workflow(wf); });
        CHECK(has(msg, "node '2' (RescaleCFG)"));
        CHECK(has(msg, "'extra'"));
        import_options o;
        o.allow_unknown_inputs = true;
        CHECK(parse_workflow(wf, o).patches.size() == 1);
    }
}

TEST_CASE("Malformed workflows are patchbay::errors naming the node and input") {
    SECTION("malformed JSON text") {
        const std::string msg = error_of([] { parse_workflow_text("{\"3\": {\"class_type\": \"KSampler\",}"); });
        CHECK(has(msg, "malformed JSON"));
        CHECK(has(error_of([] { parse_workflow_text(""); }), "malformed JSON"));
        CHECK(has(error_of([] { parse_workflow_file(fixture("no_such_file.json")); }), "cannot open"));
    }
    SECTION("not an API workflow") {
        CHECK(has(error_of([] { parse_workflow(json::array({1, 2})); }), "JSON object keyed by node id"));
        CHECK(has(error_of([] { parse_workflow(json{{"nodes", json::array()}, {"links", json::array()}}); }),
                  "UI-format"));
        CHECK(has(error_of([] { parse_workflow(json::object()); }), "no sampler node"));
        CHECK(has(error_of([] { parse_workflow(json{{"3", 5}}); }), "workflow node '3'"));
        CHECK(has(error_of([] { parse_workflow(json{{"3", {{"inputs", json::object()}}}}); }), "no 'class_type'"));
        CHECK(has(error_of([] { parse_workflow(json{{"3", {{"class_type", "KSampler"}}}}); }), "no 'inputs'"));
    }
    SECTION("a string where a number is expected") {
        const json wf = chain_of({{"2", node("RescaleCFG", {{"multiplier", "0.7"}})}});
        const std::string msg = error_of([&] { parse_workflow(wf); });
        CHECK(has(msg, "workflow node '2' (RescaleCFG)"));
        CHECK(has(msg, "'multiplier' must be a number"));
        CHECK(has(msg, "string"));
    }
    SECTION("a boolean where a number is expected, a string where a boolean is expected") {
        CHECK(has(error_of([] { parse_workflow(chain_of({{"2", node("PerturbedAttentionGuidance", {{"scale", true}})}})); }),
                  "'scale' must be a number"));
        CHECK(has(error_of([] { parse_workflow(chain_of({{"2", node("CFGNorm", {{"strength", 1}, {"pre_cfg", "true"}})}})); }),
                  "'pre_cfg' must be a boolean"));
        CHECK(has(error_of([] { parse_workflow(chain_of({{"2", node("ModelSamplingDiscrete", {{"sampling", "eps"}, {"zsnr", 0}})}})); }),
                  "'zsnr' must be a boolean"));
    }
    SECTION("out-of-range values, exactly at the nodes.md bounds") {
        auto msg_of = [](const std::string& cls, json inputs) {
            return error_of([&] { parse_workflow(chain_of({{"2", node(cls, inputs)}})); });
        };
        CHECK(has(msg_of("RescaleCFG", {{"multiplier", 1.01}}), "'multiplier' must be in [0, 1], got 1.01"));
        CHECK(has(msg_of("APG", {{"eta", 1}, {"norm_threshold", 5}, {"momentum", -5.01}}), "'momentum' must be in [-5, 1]"));
        CHECK(has(msg_of("APG", {{"eta", 10.5}, {"norm_threshold", 5}, {"momentum", 0}}), "'eta' must be in [-10, 10]"));
        CHECK(has(msg_of("APG", {{"eta", 1}, {"norm_threshold", 50.1}, {"momentum", 0}}), "'norm_threshold' must be in [0, 50]"));
        CHECK(has(msg_of("FreSca", {{"scale_low", 1}, {"scale_high", 1}, {"freq_cutoff", 0}}), "'freq_cutoff' must be in [1, 10000]"));
        CHECK(has(msg_of("FreSca", {{"scale_low", 1}, {"scale_high", 1}, {"freq_cutoff", 20.5}}), "'freq_cutoff' must be an integer"));
        CHECK(has(msg_of("FreSca", {{"scale_low", 1}, {"scale_high", 10.01}, {"freq_cutoff", 20}}), "'scale_high' must be in [0, 10]"));
        CHECK(has(msg_of("FreeU", {{"b1", 1}, {"b2", 1}, {"s1", -0.01}, {"s2", 1}}), "'s1' must be in [0, 10]"));
        CHECK(has(msg_of("RenormCFG", {{"cfg_trunc", 100.5}, {"renorm_cfg", 1}}), "'cfg_trunc' must be in [0, 100]"));
        CHECK(has(msg_of("CFGNorm", {{"strength", -1}}), "'strength' must be in [0, 100]"));
        CHECK(has(msg_of("DifferentialDiffusion", {{"strength", 1.5}}), "'strength' must be in [0, 1]"));
        CHECK(has(msg_of("SelfAttentionGuidance", {{"scale", 5.5}, {"blur_sigma", 2}}), "'scale' must be in [-2, 5]"));
        CHECK(has(msg_of("SelfAttentionGuidance", {{"scale", 0.5}, {"blur_sigma", 11}}), "'blur_sigma' must be in [0, 10]"));
        CHECK(has(msg_of("PerturbedAttentionGuidance", {{"scale", -0.1}}), "'scale' must be in [0, 100]"));
        CHECK(has(msg_of("ModelSamplingSD3", {{"shift", 101}}), "'shift' must be in [0, 100]"));
        CHECK(has(msg_of("ModelSamplingDiscrete", {{"sampling", "v_pred"}, {"zsnr", false}}),
                  "'sampling' must be one of eps, v_prediction, lcm, x0, img_to_img, img_to_img_flow, got 'v_pred'"));
        // the bounds themselves are accepted
        CHECK_NOTHROW(parse_workflow(chain_of({{"2", node("APG", {{"eta", -10}, {"norm_threshold", 50}, {"momentum", -5}})}})));
        CHECK_NOTHROW(parse_workflow(chain_of({{"2", node("FreSca", {{"scale_low", 0}, {"scale_high", 10}, {"freq_cutoff", 10000}})}})));
        CHECK_NOTHROW(parse_workflow(chain_of({{"2", node("ModelSamplingSD3", {{"shift", 0}})}})));
    }
    SECTION("a missing required input") {
        const std::string msg = error_of([] {
            parse_workflow(chain_of({{"2", node("FreeU_V2", {{"b1", 1.3}, {"s1", 0.9}, {"s2", 0.2}})}}));
        });
        CHECK(has(msg, "workflow node '2' (FreeU_V2)"));
        CHECK(has(msg, "required input 'b2' is missing"));
        json wf = chain_of({{"2", node("Mahiro")}});
        wf["2"]["inputs"].erase("model");
        CHECK(has(error_of([&] { parse_workflow(wf); }), "node '2' (Mahiro): required input 'model' is missing"));
    }
    SECTION("a dangling link") {
        json wf = chain_of({{"2", node("Mahiro")}});
        wf["2"]["inputs"]["model"] = json::array({"99", 0});
        const std::string msg = error_of([&] { parse_workflow(wf); });
        CHECK(has(msg, "workflow node '2' (Mahiro): input 'model' links to node '99'"));
        CHECK(has(msg, "dangling"));
    }
    SECTION("malformed links and a model given as a value") {
        json wf = chain_of({{"2", node("Mahiro")}});
        wf["2"]["inputs"]["model"] = json::array({"1"});
        CHECK(has(error_of([&] { parse_workflow(wf); }), "input 'model' is a malformed link"));
        wf["2"]["inputs"]["model"] = json::array({"1", -1});
        CHECK(has(error_of([&] { parse_workflow(wf); }), "malformed link"));
        wf["2"]["inputs"]["model"] = "1";
        CHECK(has(error_of([&] { parse_workflow(wf); }), "input 'model' must be a link"));
    }
    SECTION("a link to a non-MODEL output of a patch node") {
        json wf = chain_of({{"2", node("Mahiro")}});
        wf["9"]["inputs"]["model"] = json::array({"2", 1});
        CHECK(has(error_of([&] { parse_workflow(wf); }), "links to output 1 of node '2' (Mahiro)"));
    }
    SECTION("link cycles") {
        json wf = chain_of({{"2", node("Mahiro")}, {"3", node("TCFG")}});
        wf["2"]["inputs"]["model"] = json::array({"3", 0});
        const std::string msg = error_of([&] { parse_workflow(wf); });
        CHECK(has(msg, "link cycle"));
        CHECK(has(msg, "3 -> 2 -> 3"));
        json back = chain_of({{"2", node("Mahiro")}});
        back["2"]["inputs"]["model"] = json::array({"9", 0}); // back to the sampler
        CHECK(has(error_of([&] { parse_workflow(back); }), "9 -> 2 -> 9"));
        json self = chain_of({{"2", node("Mahiro")}});
        self["2"]["inputs"]["model"] = json::array({"2", 0});
        CHECK(has(error_of([&] { parse_workflow(self); }), "link cycle"));
        json reroute = chain_of({{"2", node("Mahiro")}});
        reroute["2"]["inputs"]["model"] = json::array({"20", 0});
        reroute["20"] = node("Reroute", {{"", json::array({"21", 0})}});
        reroute["21"] = node("Reroute", {{"", json::array({"20", 0})}});
        CHECK(has(error_of([&] { parse_workflow(reroute); }), "link cycle"));
    }
    SECTION("a parameter linked to a node patchbay cannot evaluate") {
        json wf = chain_of({{"2", node("RescaleCFG", {{"multiplier", json::array({"20", 0})}})}});
        wf["20"] = node("SomeMathNode", {{"a", 1}});
        const std::string msg = error_of([&] { parse_workflow(wf); });
        CHECK(has(msg, "node '2' (RescaleCFG): input 'multiplier' is linked to node '20' (SomeMathNode)"));
    }
    SECTION("a bad sampler setting and an unsupported guider") {
        json wf = chain_of({{"2", node("Mahiro")}});
        wf["9"]["inputs"]["cfg"] = "7";
        CHECK(has(error_of([&] { parse_workflow(wf); }), "node '9' (KSampler): input 'cfg' must be a number"));
        wf["9"]["inputs"]["cfg"] = 7;
        wf["9"]["inputs"]["steps"] = 0;
        CHECK(has(error_of([&] { parse_workflow(wf); }), "'steps' must be in [1, 10000]"));
        wf["9"] = node("SamplerCustomAdvanced", {{"guider", json::array({"10", 0})}});
        wf["10"] = node("SomeEngineGuider", {{"model", json::array({"2", 0})}});
        CHECK(has(error_of([&] { parse_workflow(wf); }), "node '10' (SomeEngineGuider): unsupported guider"));
    }
}

TEST_CASE("Unknown patch nodes: an error by default, skipped on request; pass-through classes") {
    // (class names patchbay does not implement)
    const json wf = chain_of({{"2", node("SomeCustomGuidance")}, {"3", node("RescaleCFG", {{"multiplier", 0.3}})},
                              {"4", node("SomeCustomLayerSkip", {{"double_layers", "7, 8, 9"}, {"scale", 3.0}})}});
    const std::string msg = error_of([&] { parse_workflow(wf); });
    // The walk starts at the sampler: the node nearest to it is reported first.
    CHECK(has(msg, "workflow node '4' (SomeCustomLayerSkip): unknown patch node"));

    import_options skip;
    skip.skip_unknown_patches = true;
    const workflow w = parse_workflow(wf, skip);
    REQUIRE(w.patches.size() == 1);
    CHECK(w.patches[0].config.as<rescale_cfg>().multiplier == 0.3);
    REQUIRE(w.skipped.size() == 2);
    CHECK(w.skipped[0].class_type == "SomeCustomGuidance");
    CHECK(w.skipped[1].class_type == "SomeCustomLayerSkip");
    CHECK(w.loader.id == "1");
    CHECK(has(w.describe(), "skipped (unknown patch node): SomeCustomGuidance (node 2)"));

    // A node declared pass-through is followed without being reported.
    json hyper = chain_of({{"2", node("HypernetworkLoader", {{"hypernetwork_name", "h.pt"}, {"strength", 1}})}});
    CHECK(has(error_of([&] { parse_workflow(hyper); }), "unknown patch node"));
    import_options pass;
    pass.pass_through_classes = {"HypernetworkLoader"};
    const workflow wp = parse_workflow(hyper, pass);
    CHECK(wp.patches.empty());
    REQUIRE(wp.pass_through.size() == 1);
    CHECK(wp.pass_through[0].id == "2");

    // A loader whose model_name is linked is still a loader.
    json named = chain_of({{"2", node("Mahiro")}});
    named["1"]["inputs"]["model_name"] = json::array({"30", 0});
    named["30"] = node("StringSelector", {{"choice", "a"}});
    CHECK(parse_workflow(named).loader.id == "1");

    // A node with two model inputs cannot be skipped.
    json merge = chain_of({});
    merge["2"] = node("ModelMergeSimple", {{"model1", json::array({"1", 0})}, {"model2", json::array({"1", 0})}, {"ratio", 0.5}});
    merge["9"]["inputs"]["model"] = json::array({"2", 0});
    CHECK(has(error_of([&] { parse_workflow(merge, skip); }), "several model inputs"));
}

TEST_CASE("Engine node classes: add_node maps a class_type to the engine's patch through its descriptor") {
    const json wf = chain_of({{"2", node("EngineScale", {{"amount", 2}, {"repeats", 3}, {"mode", "add"}})},
                              {"3", node("Mahiro")}});
    CHECK(has(error_of([&] { parse_workflow(wf); }), "workflow node '2' (EngineScale): unknown patch node"));

    import_options opts;
    opts.add_node<engine_scale>();
    const workflow w = parse_workflow(wf, opts);
    REQUIRE(w.patches.size() == 2);
    REQUIRE(w.patches[0].config.holds<engine_scale>());
    const auto& e = w.patches[0].config.as<engine_scale>();
    CHECK(e.amount == 2.0);
    CHECK(e.repeats == 3);
    CHECK(e.enabled); // optional input omitted: the descriptor's default
    CHECK(e.mode == engine_scale::mode_kind::add);
    CHECK(w.patches[0].slot() == hook_kind::post_cfg);
    CHECK(to_string(w.patches[0].config) == "EngineScale(amount=2, repeats=3, enabled=True, mode=add)");
    CHECK(has(w.describe(), "EngineScale(amount=2, repeats=3, enabled=True, mode=add)  [post-cfg]"));
    CHECK_THAT(error_of([&] { (void)w.patches[0].config.as<mahiro>(); }), Catch::Matchers::Contains("'EngineScale'"));

    // the descriptor's kinds and ranges are enforced with the node named
    auto msg_of = [&](json inputs) { return error_of([&] { parse_workflow(chain_of({{"2", node("EngineScale", inputs)}}), opts); }); };
    CHECK(has(msg_of({{"amount", 4.5}, {"repeats", 1}, {"mode", "add"}}), "node '2' (EngineScale): input 'amount' must be in [0, 4], got 4.5"));
    CHECK(has(msg_of({{"amount", 1}, {"repeats", 9}, {"mode", "add"}}), "'repeats' must be in [1, 8]"));
    CHECK(has(msg_of({{"amount", 1}, {"repeats", 1.5}, {"mode", "add"}}), "'repeats' must be an integer"));
    CHECK(has(msg_of({{"amount", 1}, {"repeats", 1}, {"mode", "divide"}}), "'mode' must be one of multiply, add, got 'divide'"));
    CHECK(has(msg_of({{"amount", 1}, {"repeats", 1}, {"mode", "add"}, {"enabled", 1}}), "'enabled' must be a boolean"));
    CHECK(has(msg_of({{"amount", 1}, {"repeats", 1}}), "required input 'mode' is missing"));
    CHECK(has(msg_of({{"amount", 1}, {"repeats", 1}, {"mode", "add"}, {"strength", 1}}), "unknown input 'strength'"));

    // a class_type of the engine's choosing, and precedence over a built-in class of that name
    import_options renamed;
    renamed.add_node<engine_scale>("RescaleCFG");
    const workflow r = parse_workflow(
        chain_of({{"2", node("RescaleCFG", {{"amount", 0.5}, {"repeats", 2}, {"enabled", false}, {"mode", "multiply"}})}}),
        renamed);
    REQUIRE(r.patches.size() == 1);
    CHECK(r.patches[0].class_type == "RescaleCFG");
    CHECK(r.patches[0].config.holds<engine_scale>());
    CHECK_FALSE(r.patches[0].config.as<engine_scale>().enabled);

    // the imported chain runs the engine's hook after the built-in one, in workflow order
    plain_model model;
    const patch_chain<plain_model> chain = build_chain(w, model, model_sampling::discrete());
    REQUIRE(chain.size() == 2);
    CHECK(chain.name(0) == "EngineScale");
    const std::vector<index_t> shape{1, 4, 8, 8};
    const tensor<float> x = random_tensor(shape, 3), c = random_tensor(shape, 4), u = random_tensor(shape, 5);
    const float sig[1] = {0.5f};
    const guidance_inputs<float, 4> gi{x.as<4>(), make_view(sig, 1), 4.0, false, prediction_type::eps};
    auto run = chain.begin_run();
    tensor<float> c1 = c, u1 = u, got(shape), want(shape);
    chain.combine(run, gi, c1.as<4>(), u1.as<4>(), got.as<4>());
    kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), 4.0, want.as<4>());
    no_state none;
    e.post_cfg(none, gi, c.as<4>(), u.as<4>(), want.as<4>());
    apply_post_cfg(mahiro{}, none, gi, c.as<4>(), u.as<4>(), want.as<4>()); // (the chain's ISA variant)
    CHECK(max_abs_diff(got, want) == 0.0);
    tensor<float> without(shape); // the same chain without the engine's patch differs
    kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), 4.0, without.as<4>());
    apply_post_cfg(mahiro{}, none, gi, c.as<4>(), u.as<4>(), without.as<4>());
    CHECK(max_abs_diff(got, without) > 1e-3);
}

TEST_CASE("One cfg function, one mask function, one model sampling: a second is an error naming both") {
    const std::string two_cfg = error_of([] {
        parse_workflow(chain_of({{"2", node("RescaleCFG", {{"multiplier", 0.7}})},
                                 {"3", node("RenormCFG", {{"cfg_trunc", 100}, {"renorm_cfg", 1}})}}));
    });
    CHECK(has(two_cfg, "workflow node '3' (RenormCFG)"));
    CHECK(has(two_cfg, "node '2' (RescaleCFG)"));
    CHECK(has(two_cfg, "cfg function"));

    const std::string cfgnorm = error_of([] {
        parse_workflow(chain_of({{"2", node("CFGNorm", {{"strength", 1}, {"pre_cfg", true}})},
                                 {"3", node("RescaleCFG", {{"multiplier", 0.7}})}}));
    });
    CHECK(has(cfgnorm, "node '3' (RescaleCFG)"));
    CHECK(has(cfgnorm, "node '2' (CFGNorm)"));
    // CFGNorm as a post-cfg hook beside RescaleCFG is fine.
    CHECK(parse_workflow(chain_of({{"2", node("CFGNorm", {{"strength", 1}})},
                                   {"3", node("RescaleCFG", {{"multiplier", 0.7}})}}))
              .patches.size() == 2);

    const std::string two_masks = error_of([] {
        parse_workflow(chain_of({{"2", node("DifferentialDiffusion")}, {"3", node("DifferentialDiffusion")}}));
    });
    CHECK(has(two_masks, "node '3' (DifferentialDiffusion)"));
    CHECK(has(two_masks, "node '2'"));
    CHECK(has(two_masks, "mask function"));

    // a node that builds its model sampling from scratch hides the one before it
    const std::string two_ms = error_of([] {
        parse_workflow(chain_of({{"2", node("ModelSamplingSD3", {{"shift", 3}})},
                                 {"3", node("ModelSamplingDiscrete", {{"sampling", "eps"}, {"zsnr", false}})}}));
    });
    CHECK(has(two_ms, "node '2' (ModelSamplingSD3)"));
    CHECK(has(two_ms, "node '3' (ModelSamplingDiscrete)"));
    CHECK(has(two_ms, "second model sampling"));

    // Several pre/post-cfg and block patches stack in order.
    const workflow w = parse_workflow(chain_of({{"2", node("Mahiro")},
                                                {"3", node("FreeU", {{"b1", 1}, {"b2", 1}, {"s1", 1}, {"s2", 1}})},
                                                {"4", node("FreeU_V2", {{"b1", 1}, {"b2", 1}, {"s1", 1}, {"s2", 1}})},
                                                {"5", node("Mahiro")}}));
    REQUIRE(w.patches.size() == 4);
    CHECK(w.patches[0].node_id == "2");
    CHECK(w.patches[3].node_id == "5");
}

// (the patches called through the checked entry points: the same tables, so the same ISA
// variant, as the chain)
TEST_CASE("build_chain: the chain's combine step equals the patches called directly, in workflow order") {
    const workflow wf = parse_workflow_file(fixture("custom_advanced_stack.json"));
    plain_model model;
    const patch_chain<plain_model> chain = build_chain(wf, model);
    REQUIRE(chain.size() == 4);
    CHECK(chain.slot(0) == hook_kind::pre_cfg);  // FreSca
    CHECK(chain.slot(1) == hook_kind::pre_cfg);  // APG
    CHECK(chain.slot(2) == hook_kind::post_cfg); // CFGNorm
    CHECK(chain.slot(3) == hook_kind::post_cfg); // Mahiro
    CHECK(chain.sampling().is_flow());
    CHECK(chain.sampling().shift() == 3.0);

    const auto& fr = wf.patches[0].config.as<fresca>();
    const auto& ap = wf.patches[1].config.as<apg>();
    const auto& cn = wf.patches[2].config.as<cfg_norm>();
    const auto& mh = wf.patches[3].config.as<mahiro>();
    REQUIRE(ap.momentum != 0.0); // the run state (APG's running average) matters over steps

    // Large enough that FreSca's cutoff (20 bins) leaves high frequencies to scale.
    const std::vector<index_t> shape{2, 4, 48, 50};
    const tensor<float> x = random_tensor(shape, 1);
    auto run = chain.begin_run();
    apg::state_type apg_state;
    no_state none;
    const double cond_scale = *wf.sampler.cfg;
    const float sigmas[] = {0.9f, 0.6f, 0.3f};
    for (int step = 0; step < 3; ++step) {
        const tensor<float> c0 = random_tensor(shape, 10 + std::uint64_t(step), 0.8);
        const tensor<float> u0 = random_tensor(shape, 20 + std::uint64_t(step), 0.8);
        const float sig[2] = {sigmas[step], sigmas[step]};
        const guidance_inputs<float, 4> gi{x.as<4>(), make_view(sig, 2), cond_scale, false,
                                           prediction_type::flow};

        tensor<float> c1 = c0, u1 = u0, got(shape);
        chain.combine(run, gi, c1.as<4>(), u1.as<4>(), got.as<4>());

        tensor<float> c2 = c0, u2 = u0, want(shape);
        apply_pre_cfg(fr, none, gi, c2.as<4>(), u2.as<4>());
        apply_pre_cfg(ap, apg_state, gi, c2.as<4>(), u2.as<4>());
        kernels::cfg_combine<float, 4>(c2.as<4>(), u2.as<4>(), cond_scale, want.as<4>());
        apply_post_cfg(cn, none, gi, c2.as<4>(), u2.as<4>(), want.as<4>());
        apply_post_cfg(mh, none, gi, c2.as<4>(), u2.as<4>(), want.as<4>());

        INFO("step " << step);
        CHECK(max_abs_diff(got, want) == 0.0);
        // The order matters (so the comparison above checks it): FreSca after APG differs.
        tensor<float> c3 = c0, u3 = u0, swapped(shape);
        apg::state_type fresh_apg;
        apply_pre_cfg(ap, fresh_apg, gi, c3.as<4>(), u3.as<4>());
        apply_pre_cfg(fr, none, gi, c3.as<4>(), u3.as<4>());
        kernels::cfg_combine<float, 4>(c3.as<4>(), u3.as<4>(), cond_scale, swapped.as<4>());
        apply_post_cfg(cn, none, gi, c3.as<4>(), u3.as<4>(), swapped.as<4>());
        apply_post_cfg(mh, none, gi, c3.as<4>(), u3.as<4>(), swapped.as<4>());
        if (step == 0) CHECK(max_abs_diff(got, swapped) > 1e-4);
        // and the patches did something: the result is not plain CFG
        tensor<float> plain(shape);
        kernels::cfg_combine<float, 4>(c0.as<4>(), u0.as<4>(), cond_scale, plain.as<4>());
        CHECK(max_abs_diff(got, plain) > 1e-3);
    }
}

TEST_CASE("build_chain: a workflow's chain samples exactly like the static guider with the same patches") {
    using examples::toy_unet;
    toy_unet probe;
    import_options opts;
    opts.model_channels = probe.config().model_channels;
    const json wf_json = chain_of({{"2", node("ModelSamplingDiscrete", {{"sampling", "eps"}, {"zsnr", false}})},
                                   {"3", node("FreeU_V2", {{"b1", 1.3}, {"b2", 1.4}, {"s1", 0.9}, {"s2", 0.2}})},
                                   {"4", node("SelfAttentionGuidance", {{"scale", 0.8}, {"blur_sigma", 2.0}})},
                                   {"5", node("RescaleCFG", {{"multiplier", 0.7}})}});
    const workflow wf = parse_workflow(wf_json, opts);
    REQUIRE(wf.patches.size() == 3);

    const auto& c = probe.config();
    tensor<float> noise({1, c.channels, c.height, c.width});
    normal_generator rng(5);
    rng.fill(noise.as<4>());
    const auto sigmas = simple_schedule(3, wf.sampling->sampling);

    toy_unet m1;
    const auto pos = m1.prompt(1), neg = m1.negative_prompt();
    const patch_chain<toy_unet> chain = build_chain(wf, m1, model_sampling::discrete("v_prediction"));
    CHECK(chain.sampling().prediction() == prediction_type::eps); // the workflow's node wins
    auto run1 = chain.begin_run(&pos, &neg);
    tensor<float> out1(noise.shape());
    sample_euler(chain, run1, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, *wf.sampler.cfg}, out1.as<4>());

    toy_unet m2;
    guider<toy_unet, free_u_v2, self_attention_guidance, rescale_cfg> g(
        m2, model_sampling::discrete("eps"), free_u_v2{1.3, 1.4, 0.9, 0.2, c.model_channels},
        self_attention_guidance{0.8, 2.0}, rescale_cfg{0.7});
    auto run2 = g.begin_run(&pos, &neg);
    tensor<float> out2(noise.shape());
    sample_euler(g, run2, sample_inputs<float, 4>{noise.as<4>(), {}, sigmas, 5.0}, out2.as<4>());

    CHECK(*wf.sampler.cfg == 5.0);
    CHECK(max_abs_diff(out1, out2) == 0.0);
    CHECK(m1.counts.total() == m2.counts.total());
    CHECK(m1.counts.reevaluation > 0); // SAG ran its extra pass
    CHECK(m1.counts.block_hook_calls > 0);

    REQUIRE(chain.size() == 3);
    CHECK(chain.slot(0) == hook_kind::output_block);
    CHECK(chain.slot(1) == hook_kind::post_cfg);
    CHECK(chain.slot(2) == hook_kind::cfg_function);
}

TEST_CASE("build_chain errors name the node") {
    plain_model model;
    const workflow freeu = parse_workflow(chain_of({{"2", node("FreeU", {{"b1", 1.1}, {"b2", 1.2}, {"s1", 0.9}, {"s2", 0.2}})}}));
    const std::string msg = error_of([&] { build_chain(freeu, model, model_sampling::discrete()); });
    CHECK(has(msg, "workflow node '2' (FreeU)"));
    CHECK(has(msg, "block hooks"));

    const workflow pag = parse_workflow(chain_of({{"3", node("PerturbedAttentionGuidance", {{"scale", 3}})}}));
    CHECK(has(error_of([&] { build_chain(pag, model, model_sampling::discrete()); }),
              "workflow node '3' (PerturbedAttentionGuidance)"));

    const workflow no_sampling = parse_workflow(chain_of({{"2", node("Mahiro")}}));
    CHECK(has(error_of([&] { build_chain(no_sampling, model); }), "no ModelSampling node"));
    const auto chain = build_chain(no_sampling, model, model_sampling::discrete("v_prediction"));
    CHECK(chain.sampling().prediction() == prediction_type::v_prediction); // the checkpoint's own
    CHECK(chain.size() == 1);
}

TEST_CASE("build_chain: inpainting workflow (DifferentialDiffusion, TCFG, RenormCFG, v_prediction zsnr) equals the static guider") {
    using examples::toy_unet;
    toy_unet m1, m2;
    const auto& c = m1.config();
    import_options opts;
    opts.in_channels = 2; // guide only the first two of the toy's three channels
    const workflow wf = parse_workflow_file(fixture("inpaint_differential.json"), opts);
    REQUIRE(wf.patches.size() == 3);

    const std::vector<index_t> shape{1, c.channels, c.height, c.width};
    tensor<float> noise(shape), mask(shape);
    normal_generator rng(9);
    rng.fill(noise.as<4>());
    for (index_t i = 0; i < mask.size(); ++i) mask[i] = float(i % 7) / 6.0f; // soft mask
    const tensor<float> latent = m1.picture(3);
    const auto sigmas = simple_schedule(4, wf.sampling->sampling);
    const double cfg = *wf.sampler.cfg;
    const sample_inputs<float, 4> in{noise.as<4>(), latent.as<4>(), sigmas, cfg, mask.as<4>()};
    const auto pos = m1.prompt(0), neg = m1.negative_prompt();

    const patch_chain<toy_unet> chain = build_chain(wf, m1);
    auto run1 = chain.begin_run(&pos, &neg);
    tensor<float> out1(shape);
    sample_euler(chain, run1, in, out1.as<4>());

    guider<toy_unet, differential_diffusion, tcfg, renorm_cfg> g(
        m2, model_sampling::discrete("v_prediction", true), differential_diffusion{1.0}, tcfg{},
        renorm_cfg{50.0, 1.5, 2});
    auto run2 = g.begin_run(&pos, &neg);
    tensor<float> out2(shape);
    sample_euler(g, run2, in, out2.as<4>());

    CHECK(max_abs_diff(out1, out2) == 0.0);

    // Without DifferentialDiffusion the soft mask is used as is: another result.
    toy_unet m3;
    guider<toy_unet, tcfg, renorm_cfg> g3(m3, model_sampling::discrete("v_prediction", true), tcfg{},
                                          renorm_cfg{50.0, 1.5, 2});
    auto run3 = g3.begin_run(&pos, &neg);
    tensor<float> out3(shape);
    sample_euler(g3, run3, in, out3.as<4>());
    CHECK(max_abs_diff(out1, out3) > 1e-4);
}

} // namespace test_comfy_workflow
