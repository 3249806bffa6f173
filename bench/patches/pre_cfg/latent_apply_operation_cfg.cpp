// Benchmark: LatentApplyOperationCFG (pre-CFG) with LatentOperationSharpen (default radius 9)
// and LatentOperationTonemapReinhard vs a libtorch implementation written op for op as
// ComfyUI's nodes_latent.py (gaussian_kernel of nodes_post_processing.py, reflect pad, the
// depthwise conv2d), single-threaded; 5-D latents run frame by frame (the torch mirror on the
// (B*T, C, H, W) view, as the golden cases record). Counters (bench::report): ours_us, torch_us,
// x_vs_torch (torch / ours), bytes (minimum traffic: read cond, uncond, write cond), bound_us
// (one streaming pass over those bytes), x_bound (ours / bound); two_pass_us: a plain two-pass
// loop in this binary (a reduction reading two tensors, then a pass reading two and writing
// one): both operations need a per-pixel or per-item statistic before they write.
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/patches/pre_cfg/latent_apply_operation_cfg.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
namespace F = torch::nn::functional;

// ComfyUI's sharpen operation, op for op (4-D).
torch::Tensor torch_sharpen(const torch::Tensor& latent, int64_t sharpen_radius, double sigma, double alpha) {
    auto luminance = (torch::linalg::vector_norm(latent, 2, {1}, false, c10::nullopt) + 1e-6).unsqueeze(1);
    auto normalized_latent = latent / luminance;
    const int64_t channels = latent.size(1);
    const int64_t kernel_size = sharpen_radius * 2 + 1;
    auto grid = torch::meshgrid({torch::linspace(-1, 1, kernel_size), torch::linspace(-1, 1, kernel_size)}, "ij");
    auto d = torch::sqrt(grid[0] * grid[0] + grid[1] * grid[1]);
    auto g = torch::exp(-(d * d) / (2.0 * sigma * sigma));
    auto kernel = g / g.sum();
    const int64_t center = kernel_size / 2;
    kernel *= alpha * -10;
    kernel.index_put_({center, center}, kernel.index({center, center}) - kernel.sum() + 1.0);
    const int64_t r = sharpen_radius;
    auto padded_image = F::pad(normalized_latent, F::PadFuncOptions({r, r, r, r}).mode(torch::kReflect));
    auto sharpened = F::conv2d(padded_image, kernel.repeat({channels, 1, 1}).unsqueeze(1),
                               F::Conv2dFuncOptions().padding(kernel_size / 2).groups(channels))
                         .narrow(2, r, latent.size(2))
                         .narrow(3, r, latent.size(3));
    return luminance * sharpened;
}

// ComfyUI's tonemap_reinhard operation, op for op.
torch::Tensor torch_tonemap(const torch::Tensor& latent, double multiplier) {
    auto latent_vector_magnitude = (torch::linalg::vector_norm(latent, 2, {1}, false, c10::nullopt) + 0.0000000001).unsqueeze(1);
    auto normalized_latent = latent / latent_vector_magnitude;
    std::vector<int64_t> dims;
    for (int64_t k = 1; k < latent_vector_magnitude.dim(); ++k) dims.push_back(k);
    auto mean = torch::mean(latent_vector_magnitude, dims, true);
    auto std = torch::std(latent_vector_magnitude, dims, /*unbiased=*/true, /*keepdim=*/true);
    auto top = (std * 5 + mean) * multiplier;
    latent_vector_magnitude *= (1.0 / top);
    auto new_magnitude = latent_vector_magnitude / (latent_vector_magnitude + 1.0);
    new_magnitude *= top;
    return normalized_latent * new_magnitude;
}

// The pre-CFG function with two predictions: cond = op(cond - uncond) + uncond.
torch::Tensor torch_apply(const torch::Tensor& cond, const torch::Tensor& uncond, bool sharpen) {
    auto d = cond - uncond;
    if (!sharpen) return torch_tonemap(d, 1.0) + uncond;
    if (d.dim() == 4) return torch_sharpen(d, 9, 1.0, 0.1) + uncond;
    const auto s = d.sizes(); // 5-D: frame by frame on the (B*T, C, H, W) view
    auto frames = d.permute({0, 2, 1, 3, 4}).reshape({s[0] * s[2], s[1], s[3], s[4]});
    auto out = torch_sharpen(frames, 9, 1.0, 0.1).reshape({s[0], s[2], s[1], s[3], s[4]}).permute({0, 2, 1, 3, 4});
    return out + uncond;
}

double torch_time(const std::vector<index_t>& dims, bool sharpen) {
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto c = torch::randn(shape), u = torch::randn(shape);
    return bench::best_time([&] {
        auto r = torch_apply(c, u, sharpen);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 10);
}
#endif

void run(benchmark::State& st, const std::vector<index_t>& dims, const latent_apply_operation_cfg& p) {
    bench::wave::call_data data(dims, 7.0, 1.0f);
    const tensor<float> pristine = data.cond;
    workspace ws; // the run's scratch: allocated by the first call, reused after
    bench::wave::by_rank(dims, [&]<std::size_t R>() {
        const auto in = data.inputs<R>(nullptr, &ws);
        no_state state;
        double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
        tt = torch_time(dims, std::holds_alternative<latent_operation_sharpen>(p.operation));
#endif
        // cond is rewritten in place and each sharpen amplifies cond - uncond (at most 2x at
        // alpha 0.1): restored before every call of the loop and before the 21 timed ones
        bench::wave::measure<2>(
            st, [&] { apply_pre_cfg(p, state, in, data.cond.as<R>(), data.uncond.as<R>()); }, data.cond.size(), tt,
            [&] { data.cond = pristine; });
        st.counters["two_pass_us"] = bench::two_pass_time<2, 2>(data.cond.size()) * 1e6;
    });
}

} // namespace

int main(int argc, char** argv) {
    return bench::wave::main_with(argc, argv, [] {
        bench::wave::register_shapes("LatentApplyOperationCFG_sharpen_r9", [](benchmark::State& st, const std::vector<index_t>& d) {
            run(st, d, latent_apply_operation_cfg{latent_operation_sharpen{}});
        });
        bench::wave::register_shapes("LatentApplyOperationCFG_tonemap", [](benchmark::State& st, const std::vector<index_t>& d) {
            run(st, d, latent_apply_operation_cfg{latent_operation_tonemap_reinhard{}});
        });
    });
}
