// Tests of core/descriptor.hpp over the built-in patches: for the twelve guidance patches, the
// struct's default member values are the descriptor's defaults, validate() rejects each numeric
// input just outside its range and NaN with a message naming the class_type and the input, and
// to_string() round-trips the class_type through the importer; every node class the importer
// knows (the list grows with each patch) imports its defaults under its own class_type.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "patchbay/comfy/workflow.hpp"
#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "test_util.hpp"

namespace test_core_descriptor {

using namespace patchbay;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

template <class... P>
struct type_list {};

using builtin_patches =
    type_list<differential_diffusion, free_u, free_u_v2, fresca, apg, tcfg, rescale_cfg, renorm_cfg, cfg_norm, mahiro,
              self_attention_guidance, perturbed_attention_guidance>;

template <class F, class... P>
void for_each_patch(type_list<P...>, F&& f) {
    (f(static_cast<P*>(nullptr)), ...);
}

template <class M>
constexpr bool is_number = std::is_arithmetic_v<M> && !std::is_same_v<M, bool>;

/// Each input's member compared between two values of P (by the descriptor's own bindings).
template <class P>
void check_same_inputs(const P& a, const P& b) {
    P::descriptor().for_each_input([&](const auto& binding) {
        INFO(P::descriptor().class_type << " input '" << binding.info.name << "'");
        CHECK(a.*(binding.member) == b.*(binding.member));
    });
}

/// validate() on p with one input set to v: the message, or "<no error>".
template <class P, class B, class M>
std::string validate_with(const B& binding, M v) {
    P p = with_defaults<P>();
    p.*(binding.member) = v;
    return test::error_of([&] { patchbay::validate(p); });
}

/// A workflow with one node of class `class_type`, every ComfyUI input at its descriptor
/// default, between a loader and a KSampler.
nlohmann::json default_node_workflow(std::string_view class_type, std::span<const input_info> infos) {
    nlohmann::json inputs = {{"model", nlohmann::json::array({"1", 0})}};
    for (const input_info& i : infos) {
        const std::string name(i.name);
        switch (i.kind) {
        case input_kind::floating: inputs[name] = i.def; break;
        case input_kind::integer: inputs[name] = static_cast<long long>(i.def); break;
        case input_kind::boolean: inputs[name] = i.def != 0.0; break;
        case input_kind::combo:
        case input_kind::string: inputs[name] = std::string(i.def_text); break;
        default: break; // model facts come from the import options; links are left out
        }
    }
    return {{"1", {{"class_type", "CheckpointLoaderSimple"}, {"inputs", {{"ckpt_name", "m.safetensors"}}}}},
            {"2", {{"class_type", std::string(class_type)}, {"inputs", inputs}}},
            {"3",
             {{"class_type", "KSampler"},
              {"inputs",
               {{"seed", 1}, {"steps", 4}, {"cfg", 5.0}, {"sampler_name", "euler"}, {"scheduler", "simple"},
                {"denoise", 1.0}, {"model", nlohmann::json::array({"2", 0})},
                {"positive", nlohmann::json::array({"5", 0})}, {"negative", nlohmann::json::array({"6", 0})},
                {"latent_image", nlohmann::json::array({"7", 0})}}}}}};
}

/// The one patch a default_node_workflow imports to (a model-sampling node or another patch).
const comfy::workflow_patch& only_patch(const comfy::workflow& wf) {
    REQUIRE(wf.patches.size() + wf.sampling_nodes.size() == 1);
    return wf.patches.empty() ? wf.sampling_nodes.front() : wf.patches.front();
}

} // namespace

TEST_CASE("the twelve guidance patches are built-in node classes of the importer", "[descriptor]") {
    std::set<std::string> listed;
    for (const auto& c : comfy::builtin_node_classes()) {
        INFO(c.class_type);
        CHECK(listed.insert(c.class_type).second); // no class listed twice
        REQUIRE(c.patch != nullptr);
        REQUIRE(c.parse != nullptr);
        CHECK(c.patch->class_type == c.class_type); // the built-in classes use their descriptor's name
    }
    int found = 0;
    for_each_patch(builtin_patches{}, [&]<class P>(P*) {
        const std::string_view class_type = P::descriptor().class_type;
        INFO(class_type);
        for (const auto& c : comfy::builtin_node_classes())
            if (c.class_type == class_type) {
                CHECK(c.patch == &vtable_of<P>());
                ++found;
            }
    });
    CHECK(found == 12);
}

TEST_CASE("every built-in node class imports its descriptor defaults under its own class_type", "[descriptor]") {
    for (const auto& c : comfy::builtin_node_classes()) {
        INFO(c.class_type);
        bool needs_other_node = false; // a required link (LATENT_OPERATION, CONDITIONING): not a lone node
        for (const auto& i : c.patch->inputs) needs_other_node = needs_other_node || (i.kind == input_kind::link && !i.optional);
        if (needs_other_node || c.patch->declared_slot == hook_kind::multi_prompt) continue;
        const comfy::workflow wf = comfy::parse_workflow(default_node_workflow(c.class_type, c.patch->inputs));
        const comfy::workflow_patch& p = only_patch(wf);
        CHECK(p.class_type == c.class_type);
        CHECK(&p.config.vtable() == c.patch);
        CHECK(p.config.class_type() == c.class_type);
        const std::string text = comfy::to_string(p.config);
        CHECK(text.substr(0, text.find('(')) == c.class_type);
        CHECK(text.back() == ')');
        CHECK_NOTHROW(p.config.validate());
    }
}

TEST_CASE("every built-in patch's default member values are its descriptor's defaults", "[descriptor]") {
    for_each_patch(builtin_patches{}, [&]<class P>(P*) {
        constexpr auto d = P::descriptor();
        INFO(d.class_type);
        check_same_inputs(P{}, with_defaults<P>());
        CHECK(to_string(P{}) == to_string(with_defaults<P>()));
        CHECK_NOTHROW(patchbay::validate(P{}));
        CHECK_FALSE(d.display_name.empty());
        std::set<std::string_view> names;
        for (const input_info& i : d.infos()) {
            INFO("input '" << i.name << "'");
            CHECK(names.insert(i.name).second); // each ComfyUI input once
            if (i.kind == input_kind::floating || i.kind == input_kind::integer || i.kind == input_kind::model_fact) {
                CHECK(i.lo <= i.def);
                CHECK(i.def <= i.hi);
            }
        }
    });
    // the model facts are the defaults an importer uses when the engine gives none
    CHECK(free_u{}.model_channels == 320);
    CHECK(renorm_cfg{}.in_channels == 0);
}

TEST_CASE("validate rejects every numeric input just outside its range, and NaN", "[descriptor][errors]") {
    int checked = 0;
    for_each_patch(builtin_patches{}, [&]<class P>(P*) {
        constexpr auto d = P::descriptor();
        d.for_each_input([&](const auto& b) {
            using M = typename std::remove_cvref_t<decltype(b)>::member_type;
            if constexpr (is_number<M>) {
                const input_info& i = b.info;
                if (i.kind != input_kind::floating && i.kind != input_kind::integer && i.kind != input_kind::model_fact)
                    return;
                // "RescaleCFG: parameter 'multiplier' must be ..."
                const std::string named = std::string(d.class_type) + ": parameter '" + std::string(i.name) + "'";
                INFO(named << " in [" << i.lo << ", " << i.hi << "]");
                const M lo = static_cast<M>(i.lo), hi = static_cast<M>(i.hi);
                // the bounds themselves are accepted
                CHECK(validate_with<P>(b, lo) == "<no error>");
                CHECK(validate_with<P>(b, hi) == "<no error>");
                if constexpr (std::is_floating_point_v<M>) {
                    const M below = std::nextafter(lo, -std::numeric_limits<M>::infinity());
                    const M above = std::nextafter(hi, std::numeric_limits<M>::infinity());
                    CHECK_THAT(validate_with<P>(b, below), StartsWith(named) && Contains("must be a finite value in"));
                    CHECK_THAT(validate_with<P>(b, above), StartsWith(named) && Contains("must be a finite value in"));
                    CHECK_THAT(validate_with<P>(b, std::numeric_limits<M>::quiet_NaN()), StartsWith(named));
                    CHECK_THAT(validate_with<P>(b, std::numeric_limits<M>::infinity()), StartsWith(named));
                } else {
                    REQUIRE(static_cast<double>(lo) > static_cast<double>(std::numeric_limits<M>::lowest()));
                    REQUIRE(static_cast<double>(hi) < static_cast<double>(std::numeric_limits<M>::max()));
                    CHECK_THAT(validate_with<P>(b, static_cast<M>(lo - 1)), StartsWith(named));
                    CHECK_THAT(validate_with<P>(b, static_cast<M>(hi + 1)), StartsWith(named));
                }
                ++checked;
            }
        });
    });
    // APG 3, FreSca 3, FreeU and FreeU_V2 4 + model_channels, RescaleCFG 1, RenormCFG 2 +
    // in_channels, CFGNorm 1, DifferentialDiffusion 1, SAG 2, PAG 1
    CHECK(checked == 3 + 3 + 2 * 5 + 1 + 3 + 1 + 1 + 2 + 1);
}

TEST_CASE("to_string round-trips the class_type through the importer", "[descriptor]") {
    for_each_patch(builtin_patches{}, [&]<class P>(P*) {
        constexpr std::string_view class_type = P::descriptor().class_type;
        INFO(class_type);
        const P p = with_defaults<P>();
        const std::string text = to_string(p);
        // "RescaleCFG(multiplier=0.7)": the class_type, then the inputs in parentheses
        REQUIRE(text.find('(') != std::string::npos);
        CHECK(text.substr(0, text.find('(')) == class_type);
        CHECK(text.back() == ')');
        // the type-erased patch names and prints itself the same way
        const any_patch erased(p);
        CHECK(erased.class_type() == class_type);
        CHECK(erased.to_string() == text);
        CHECK(erased.holds<P>());
        CHECK(erased.slot() == detail::slot_of(p));
        // the class_type names the node class the importer turns back into the same patch
        const auto infos = P::descriptor().infos();
        const comfy::workflow wf = comfy::parse_workflow(default_node_workflow(class_type, infos));
        const comfy::workflow_patch& imported = only_patch(wf);
        CHECK(imported.class_type == class_type);
        REQUIRE(imported.config.holds<P>());
        CHECK(comfy::to_string(imported.config) == text);
        check_same_inputs(imported.config.as<P>(), p);
    });
    // what to_string prints: every descriptor input, model facts included
    CHECK(to_string(free_u_v2{}) == "FreeU_V2(b1=1.3, b2=1.4, s1=0.9, s2=0.2, model_channels=320)");
    CHECK(to_string(cfg_norm{0.5, true}) == "CFGNorm(strength=0.5, pre_cfg=True)");
    CHECK(to_string(fresca{}) == "FreSca(scale_low=1, scale_high=1.25, freq_cutoff=20)");
    CHECK(to_string(mahiro{}) == "Mahiro()");
    // a held type asked for as another is an error naming both
    CHECK_THAT(test::error_of([] { (void)any_patch(mahiro{}).as<tcfg>(); }), Contains("'Mahiro'") && Contains("'TCFG'"));
}

} // namespace test_core_descriptor
