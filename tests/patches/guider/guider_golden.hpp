// patchbay tests: a `guider.predict_noise` golden case as the guider unit tests use it (x,
// sigma, the three recorded predictions as lookup_model prompts, the params, the expected
// denoised), run through guider and patch_chain alike, and error helpers.
#pragma once

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "prompt_model.hpp"
#include "test_util.hpp"

namespace patchbay::test {

/// The message of the patchbay::error f raises ("" if none).
inline std::string error_of(const auto& f) {
    try {
        f();
    } catch (const error& e) {
        return e.what();
    }
    return "";
}

/// The message without the entry point that raised it ("guider: ..." / "patch_chain::add: ...").
inline std::string body(const std::string& m) {
    const auto at = m.find(": ");
    return at == std::string::npos ? m : m.substr(at + 2);
}

/// `Other` beside `Guider` is refused when the guider or chain is built (either order in the
/// chain), with the same message through both, naming both patches and the refused slot; the
/// chain keeps only what it had.
template <class Other, class Guider>
void check_refused(const Other& other, const Guider& g, const std::string& slot_name) {
    lookup_model model;
    const auto ms = model_sampling::discrete();
    const std::string via_guider = error_of([&] { guider<lookup_model, Other, Guider> gd(model, ms, other, g); });
    CHECK_THAT(via_guider, Catch::Contains(std::string(class_type_of<Guider>())) &&
                               Catch::Contains(std::string(class_type_of<Other>())) && Catch::Contains(slot_name));
    patch_chain<lookup_model> chain(model, ms);
    chain.add(other);
    CHECK(body(error_of([&] { chain.add(g); })) == body(via_guider));
    CHECK(chain.size() == 1);
    patch_chain<lookup_model> reverse(model, ms);
    reverse.add(g);
    CHECK(body(error_of([&] { reverse.add(other); })) == body(via_guider));
    CHECK(reverse.size() == 1);
}

struct guider_case {
    tensor<float> x, sigma;
    fixed_prompt positive, negative, extra; ///< begin_run's three prompts
    nlohmann::json params;
    tensor<float> want;
    double atol = 0;

    /// One step through `front` (a guider or patch_chain over lookup_model).
    template <std::size_t R, class G>
    tensor<float> denoise(const G& front) const {
        auto run = front.begin_run(&positive, &negative, &extra);
        tensor<float> out(x.shape());
        front.denoise(run, step_inputs<float, R>{x.template as<R>(), sigma.template as<1>()}, out.template as<R>());
        return out;
    }

    /// The step through guider and through patch_chain over `patch` (bit-identical).
    template <std::size_t R, class P>
    tensor<float> run_both(lookup_model& model, const P& patch) const {
        const auto ms = model_sampling::discrete();
        const auto a = denoise<R>(guider<lookup_model, P>(model, ms, patch));
        patch_chain<lookup_model> chain(model, ms);
        chain.add(patch);
        const auto b = denoise<R>(chain);
        REQUIRE(bit_equal(a, b));
        return a;
    }

    /// Through both front ends over `patch`: within the case's tolerance, each evaluated prompt
    /// once per front end, the skipped ones never.
    template <class P>
    void check(const P& patch) const {
        lookup_model model;
        const auto got = x.rank() == 4 ? run_both<4>(model, patch) : run_both<5>(model, patch);
        CHECK(worst(got) <= 1.0);
        for (const fixed_prompt* p : {&positive, &negative, &extra}) {
            INFO(p->name);
            CHECK(model.count(p->name) == (p->skipped ? 0 : 2));
        }
    }

    /// Largest |got - want| / (atol + 1e-5 |want|) (<= 1 passes).
    double worst(const tensor<float>& got) const {
        double w = 0;
        for (index_t i = 0; i < got.size(); ++i)
            w = std::max(w, std::fabs(double(got[i]) - want[i]) / (atol + 1e-5 * std::fabs(want[i])));
        return w;
    }
};

/// Loads golden/<node>/<name>: the predictions `<p>_denoised` of the run's positive, negative
/// and extra prompts, skipped where the case's `<p>_is_none` says so.
inline guider_case load_guider_case(const std::string& node, const std::string& name, const std::string& positive,
                                    const std::string& negative, const std::string& extra) {
    const std::string d = PATCHBAY_GOLDEN_DIR "/" + node + "/" + name + "/";
    std::ifstream f(d + "case.json");
    const auto spec = nlohmann::json::parse(f);
    auto ld = [&](const std::string& file) { return npy::load(d + file).to_tensor<float>(); };
    auto prompt = [&](const std::string& p) {
        return fixed_prompt{p, ld("in_" + p + "_denoised.npy"), spec.at("scalars").value(p + "_is_none", false)};
    };
    guider_case g;
    g.x = ld("in_x.npy");
    g.sigma = ld("in_sigma.npy");
    g.positive = prompt(positive);
    g.negative = prompt(negative);
    g.extra = prompt(extra);
    g.params = spec.at("params");
    g.want = ld("out_denoised.npy");
    g.atol = spec.at("tolerances").at("denoised").at("atol").get<double>();
    return g;
}

} // namespace patchbay::test
