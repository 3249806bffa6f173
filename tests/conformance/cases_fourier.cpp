// Conformance handlers: FreeU / FreeU_V2 (output block patch) and FreSca (pre-CFG).
#include <cstddef>
#include <string>

#include "e2e.hpp"
#include "registry.hpp"
#include "storage.hpp"

#include "patchbay/core/dispatch.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"

namespace conformance_cases_fourier {

namespace {

using namespace patchbay;
using conformance::golden_case;
using conformance::results;

template <std::size_t RH, std::size_t RS, class P>
void run_block(const P& patch, tensor<float>& h, tensor<float>& hsp) {
    no_state st;
    const block_site site{unet_stage::output, 0, h.extent(1)};
    // 4-D features go through the checked entry point (parameters and inputs validated as the
    // step does); other ranks reach the patch's own rank error.
    if constexpr (RH == 4 && RS == 4) conformance::apply_output_block(patch, st, site, h.as<4>(), hsp.as<4>());
    else patch.output_block(st, site, h.template as<RH>(), hsp.template as<RS>());
}

/// Dispatches on the runtime ranks (the patch rejects anything but 4-D with patchbay::error).
template <std::size_t RH, class P>
void run_block_rs(const P& patch, tensor<float>& h, tensor<float>& hsp) {
    switch (hsp.rank()) {
    case 3: run_block<RH, 3>(patch, h, hsp); break;
    case 4: run_block<RH, 4>(patch, h, hsp); break;
    case 5: run_block<RH, 5>(patch, h, hsp); break;
    default: fail(P::descriptor().class_type, "hsp has unsupported rank " + std::to_string(hsp.rank()));
    }
}

template <class P>
void free_u_case(const golden_case& gc, results& out, P patch) {
    patch.b1 = gc.param<double>("b1", patch.b1);
    patch.b2 = gc.param<double>("b2", patch.b2);
    patch.s1 = gc.param<double>("s1", patch.s1);
    patch.s2 = gc.param<double>("s2", patch.s2);
    patch.model_channels = gc.scalar<index_t>("model_channels", 320);
    auto h = gc.tensor_input<float>("h");
    auto hsp = gc.tensor_input<float>("hsp");
    switch (h.rank()) {
    case 3: run_block_rs<3>(patch, h, hsp); break;
    case 4: run_block_rs<4>(patch, h, hsp); break;
    case 5: run_block_rs<5>(patch, h, hsp); break;
    default: fail(P::descriptor().class_type, "h has unsupported rank " + std::to_string(h.rank()));
    }
    conformance::put(out, "h", h);
    conformance::put(out, "hsp", hsp);
}

template <std::size_t R>
void fresca_case(const golden_case& gc, results& out, const fresca& patch) {
    auto x = gc.tensor_input<float>("x");
    auto sigma = gc.tensor_input<float>("sigma");
    auto cond = gc.tensor_input<float>("cond_denoised");
    auto uncond = gc.tensor_input<float>("uncond_denoised");
    guidance_inputs<float, R> in;
    in.x = x.as<R>();
    in.sigma = sigma.as<1>();
    in.cond_scale = gc.scalar<double>("cond_scale", 1.0);
    in.uncond_is_none = gc.scalar<bool>("uncond_is_none", false);
    no_state st;
    conformance::apply_pre_cfg(patch, st, in, cond.as<R>(), uncond.as<R>());
    tensor<float> denoised(cond.shape());
    kernels::cfg_combine<float, R>(cond.as<R>(), uncond.as<R>(), in.cond_scale, denoised.as<R>());
    conformance::put(out, "cond_out", cond);
    conformance::put(out, "uncond_out", uncond);
    conformance::put(out, "denoised", denoised);
}

fresca fresca_from(const golden_case& gc) {
    return fresca{.scale_low = gc.param<double>("scale_low", 1.0),
                  .scale_high = gc.param<double>("scale_high", 1.25),
                  .freq_cutoff = gc.param<int>("freq_cutoff", 20)};
}

} // namespace

PATCHBAY_CONFORMANCE("FreSca", "sampler_pre_cfg_function") {
    const auto patch = fresca_from(gc);
    const auto rank = gc.tensor_input<float>("cond_denoised").rank();
    if (rank == 4) fresca_case<4>(gc, out, patch);
    else if (rank == 5) fresca_case<5>(gc, out, patch);
    else fail("FreSca", "cond must be 4-D or 5-D, got rank " + std::to_string(rank));
}

PATCHBAY_CONFORMANCE("FreeU", "output_block_patch") { free_u_case(gc, out, free_u{}); }
PATCHBAY_CONFORMANCE("FreeU_V2", "output_block_patch") { free_u_case(gc, out, free_u_v2{}); }

PATCHBAY_CONFORMANCE("FreSca", "e2e.sample_euler") { e2e::run(gc, out, fresca_from(gc)); }

} // namespace conformance_cases_fourier
