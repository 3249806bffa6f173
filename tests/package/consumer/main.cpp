// A consumer of patchbay: includes the umbrella header and runs one CFG combine.
#include <cmath>
#include <cstdio>
#include <string>

#include <patchbay/patchbay.hpp>

int main() {
    float cond[8], uncond[8], out[8];
    for (int i = 0; i < 8; ++i) cond[i] = 1.0f + static_cast<float>(i), uncond[i] = 0.5f;
    auto c = patchbay::make_view(static_cast<const float*>(cond), 1, 2, 2, 2);
    auto u = patchbay::make_view(static_cast<const float*>(uncond), 1, 2, 2, 2);
    patchbay::kernels::cfg_combine(c, u, 2.0, patchbay::make_view(out, 1, 2, 2, 2));
    // uncond + 2 * (cond - uncond) at element 3: 0.5 + 2 * 3.5 = 7.5
    if (out[3] != 7.5f) {
        std::printf("consumer: wrong result %g\n", static_cast<double>(out[3]));
        return 1;
    }
    // a patch's descriptor (core/descriptor.hpp) reaches the consumer through the umbrella header
    const auto text = patchbay::to_string(patchbay::rescale_cfg{});
    if (text != "RescaleCFG(multiplier=0.7)") {
        std::printf("consumer: wrong patch text %s\n", text.c_str());
        return 1;
    }
    // a built-in patch through its table: the dispatched variant when patchbay::dispatch is linked
    float x[8], rescaled[8];
    const float sigma[1] = {1.0f};
    for (float& v : x) v = 0.25f;
    patchbay::guidance_inputs<float, 4> in;
    in.x = patchbay::make_view(static_cast<const float*>(x), 1, 2, 2, 2);
    in.sigma = patchbay::make_view(sigma, 1);
    in.cond_scale = 2.0;
    patchbay::no_state state;
    patchbay::apply_cfg_function(patchbay::rescale_cfg{.multiplier = 0.0}, state, in, c, u,
                                 patchbay::make_view(rescaled, 1, 2, 2, 2));
    if (std::fabs(rescaled[3] - 7.5f) > 1e-4f) { // multiplier 0: the plain cfg result
        std::printf("consumer: wrong RescaleCFG result %g\n", static_cast<double>(rescaled[3]));
        return 1;
    }
    std::printf("consumer: patchbay %d.%d.%d works (patches run %s%s)\n", PATCHBAY_VERSION_MAJOR,
                PATCHBAY_VERSION_MINOR, PATCHBAY_VERSION_PATCH, std::string(patchbay::simd_arch_name()).c_str(),
                patchbay::isa_dispatch ? ", dispatched at run time" : "");
    return 0;
}
