// Conformance handlers: the CFG++ samplers (SamplerEulerCFGpp, SamplerEulerAncestralCFGPP), end
// to end through e2e::run: the case's sampler (euler_cfg_pp / euler_ancestral_cfg_pp) drives a
// guider over the toy Gaussian model, with RescaleCFG on the model when the case names it.
#include <string>

#include "e2e.hpp"
#include "registry.hpp"

#include "patchbay/patches/cfg/rescale_cfg.hpp"

namespace conformance_cases_cfgpp {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

/// The sampler node's own inputs are in the scalars (sampler, eta, s_noise); a model patch
/// applied beside it is named in params as "RescaleCFG.multiplier".
void cfgpp_case(const golden_case& gc, results& out) {
    const std::string version = gc.param<std::string>("version", "regular");
    if (version != "regular")
        fail("SamplerEulerCFGpp", "version \"" + version + "\" is not implemented (only \"regular\", sampler euler_cfg_pp)");
    if (gc.params().contains("RescaleCFG.multiplier"))
        e2e::run(gc, out, rescale_cfg{.multiplier = gc.param<double>("RescaleCFG.multiplier", 0.7)});
    else
        e2e::run(gc, out);
}

} // namespace

PATCHBAY_CONFORMANCE("SamplerEulerCFGpp", "e2e.sample_euler_cfg_pp") { cfgpp_case(gc, out); }

PATCHBAY_CONFORMANCE("SamplerEulerAncestralCFGPP", "e2e.sample_euler_ancestral_cfg_pp") { cfgpp_case(gc, out); }

} // namespace conformance_cases_cfgpp
