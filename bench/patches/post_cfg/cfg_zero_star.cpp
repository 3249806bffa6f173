// Benchmark: CFGZeroStar (post-CFG) vs a libtorch implementation written op for op as ComfyUI's
// nodes_cfg.py (optimized_scale and the hook), single-threaded. Counters (bench::report):
// ours_us, torch_us, x_vs_torch (torch / ours), bytes (minimum traffic: read x, cond, uncond,
// denoised; write denoised), bound_us (one streaming pass over those bytes), x_bound (ours /
// bound); two_pass_us: a plain two-pass loop in this binary (a reduction reading x, cond,
// uncond, then a pass reading two tensors and writing one), the least a patch that needs a
// per-item statistic before writing can cost.
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/patches/post_cfg/cfg_zero_star.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's optimized_scale and cfg_zero_star, op for op.
torch::Tensor torch_optimized_scale(const torch::Tensor& positive, const torch::Tensor& negative) {
    auto positive_flat = positive.reshape({positive.size(0), -1});
    auto negative_flat = negative.reshape({negative.size(0), -1});
    auto dot_product = torch::sum(positive_flat * negative_flat, {1}, true);
    auto squared_norm = torch::sum(negative_flat.pow(2), {1}, true) + 1e-8;
    auto st_star = dot_product / squared_norm;
    std::vector<int64_t> shape{positive.size(0)};
    for (int64_t d = 1; d < positive.dim(); ++d) shape.push_back(1);
    return st_star.reshape(shape);
}

torch::Tensor torch_cfg_zero_star(const torch::Tensor& x, const torch::Tensor& cond_p, const torch::Tensor& uncond_p,
                                  const torch::Tensor& out, double guidance_scale) {
    auto alpha = torch_optimized_scale(x - cond_p, x - uncond_p);
    return out + uncond_p * (alpha - 1.0) + guidance_scale * uncond_p * (1.0 - alpha);
}

double torch_time(const std::vector<index_t>& dims) {
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape) * 2.0, c = torch::randn(shape), u = torch::randn(shape);
    auto d = u + 7.0 * (c - u);
    return bench::best_time([&] {
        auto r = torch_cfg_zero_star(x, c, u, d, 7.0);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
}
#endif

void run(benchmark::State& st, const std::vector<index_t>& dims) {
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    // each call shifts denoised by uncond (alpha - 1)(1 - s): finite over any run
    bench::wave::hook<4>(st, dims, cfg_zero_star{}, tt);
    index_t n = 1;
    for (auto d : dims) n *= d;
    st.counters["two_pass_us"] = bench::two_pass_time<3, 2>(n) * 1e6;
}

} // namespace

int main(int argc, char** argv) {
    return bench::wave::main_with(argc, argv, [] {
        bench::wave::register_shapes("CFGZeroStar", run);
    });
}
