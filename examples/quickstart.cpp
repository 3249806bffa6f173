// quickstart: the smallest patchbay program. Two model predictions (cond, uncond) for a
// 1x4x8x8 latent are combined with classifier-free guidance at scale 7.
#include <cstdio>
#include <vector>

#include <patchbay/patchbay.hpp>

int main() {
    const int n = 1 * 4 * 8 * 8;
    std::vector<float> cond(n), uncond(n), denoised(n);
    for (int i = 0; i < n; ++i) {
        cond[static_cast<std::size_t>(i)] = 0.01f * static_cast<float>(i % 17);
        uncond[static_cast<std::size_t>(i)] = 0.02f * static_cast<float>(i % 5);
    }
    using namespace patchbay;
    const auto c = make_view(static_cast<const float*>(cond.data()), 1, 4, 8, 8);
    const auto u = make_view(static_cast<const float*>(uncond.data()), 1, 4, 8, 8);
    kernels::cfg_combine(c, u, 7.0, make_view(denoised.data(), 1, 4, 8, 8));
    std::printf("quickstart: denoised[5] = %.4f (uncond %.2f + 7 * (cond %.2f - uncond))\n",
                static_cast<double>(denoised[5]), static_cast<double>(uncond[5]),
                static_cast<double>(cond[5]));
    return 0;
}
