// Benchmark: VideoLinearCFGGuidance and VideoTriangleCFGGuidance (cfg functions) vs a libtorch
// implementation written op for op as ComfyUI's nodes_video_model.py, plus the sampler's
// x - denoised arguments and the x - result it undoes, single-threaded. Besides the shared
// latent shapes (batch 1: one scale), SVD's layout: 14 frames on the batch axis (14x4x72x128).
// Counters (bench::report): ours_us, torch_us, x_vs_torch (torch / ours), bytes (minimum
// traffic: read x, cond, uncond, write denoised), bound_us (one streaming pass over those
// bytes), x_bound (ours / bound).
#include <string>
#include <type_traits>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/patches/cfg/video_cfg_guidance.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's linear_cfg of both nodes, op for op, inside the sampler's cfg_function glue.
torch::Tensor torch_video_cfg(const torch::Tensor& x, const torch::Tensor& cond_den, const torch::Tensor& uncond_den,
                              double cond_scale, double min_cfg, bool triangle) {
    auto cond = x - cond_den;
    auto uncond = x - uncond_den;
    const int64_t b = cond.size(0);
    torch::Tensor scale;
    if (triangle) {
        const double period = 1.0;
        auto values = torch::linspace(0, 1, b);
        values = 2 * (values / period - torch::floor(values / period + 0.5)).abs();
        scale = (values * (cond_scale - min_cfg) + min_cfg).reshape({b, 1, 1, 1});
    } else {
        scale = torch::linspace(min_cfg, cond_scale, b).reshape({b, 1, 1, 1});
    }
    return x - (uncond + scale * (cond - uncond));
}

double torch_time(const std::vector<index_t>& dims, bool triangle) {
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape) * 2.0, c = torch::randn(shape), u = torch::randn(shape);
    return bench::best_time([&] {
        auto r = torch_video_cfg(x, c, u, 3.0, 1.0, triangle);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
}
#endif

template <class P>
void run(benchmark::State& st, const std::vector<index_t>& dims, const P& p) {
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, std::is_same_v<P, video_triangle_cfg_guidance>);
#endif
    bench::wave::hook<3>(st, dims, p, tt, 3.0);
}

} // namespace

int main(int argc, char** argv) {
    return bench::wave::main_with(argc, argv, [] {
        bench::wave::register_shapes("VideoLinearCFGGuidance", [](benchmark::State& st, const std::vector<index_t>& d) {
            run(st, d, video_linear_cfg_guidance{1.0});
        });
        bench::wave::register_shapes("VideoTriangleCFGGuidance", [](benchmark::State& st, const std::vector<index_t>& d) {
            run(st, d, video_triangle_cfg_guidance{1.0});
        });
        const std::vector<index_t> svd{14, 4, 72, 128};
        benchmark::RegisterBenchmark("VideoLinearCFGGuidance/svd-14x4x72x128", [svd](benchmark::State& st) {
            run(st, svd, video_linear_cfg_guidance{1.0});
        })->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark("VideoTriangleCFGGuidance/svd-14x4x72x128", [svd](benchmark::State& st) {
            run(st, svd, video_triangle_cfg_guidance{1.0});
        })->Unit(benchmark::kMicrosecond);
    });
}
