// A consumer of patchbay: includes the umbrella header and runs one CFG combine.
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
    std::printf("consumer: patchbay %d.%d.%d works\n", PATCHBAY_VERSION_MAJOR, PATCHBAY_VERSION_MINOR,
                PATCHBAY_VERSION_PATCH);
    return 0;
}
