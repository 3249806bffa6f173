// Benchmark: Epsilon Scaling (post-CFG) vs a libtorch implementation written op for op as
// ComfyUI's epsilon_scaling_function (nodes_eps.py), single-threaded. Counters (bench::report):
// ours_us, torch_us, x_vs_torch (torch / ours), bytes (minimum traffic: read x and denoised,
// write denoised), bound_us (one streaming pass over those bytes), x_bound (ours / bound).
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/patches/post_cfg/epsilon_scaling.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's epsilon_scaling_function, op for op.
torch::Tensor torch_epsilon_scaling(const torch::Tensor& x, const torch::Tensor& denoised, double scaling_factor) {
    auto noise_pred = x - denoised;
    auto scaled_noise_pred = noise_pred / scaling_factor;
    return x - scaled_noise_pred;
}

double torch_time(const std::vector<index_t>& dims) {
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape) * 2.0, d = torch::randn(shape);
    return bench::best_time([&] {
        auto r = torch_epsilon_scaling(x, d, 1.005);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
}
#endif

void run(benchmark::State& st, const std::vector<index_t>& dims) {
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    // repeated calls move denoised toward x: it stays finite
    bench::wave::hook<2>(st, dims, epsilon_scaling{1.005}, tt);
}

} // namespace

int main(int argc, char** argv) {
    return bench::wave::main_with(argc, argv, [] {
        bench::wave::register_shapes("EpsilonScaling", run);
    });
}
