// Benchmark: TemporalScoreRescaling (post-CFG) on an eps and a flow model vs a libtorch
// implementation written op for op as ComfyUI's temporal_score_rescaling (nodes_eps.py, with
// sigma_to_half_log_snr and compute_tsr_rescaling_factor), single-threaded; the shapes have
// batch 1, the case ComfyUI supports. Counters (bench::report): ours_us, torch_us, x_vs_torch
// (torch / ours), bytes (minimum traffic: read x and denoised, write denoised), bound_us (one
// streaming pass over those bytes), x_bound (ours / bound).
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "patchbay/patches/post_cfg/temporal_score_rescaling.hpp"
#include "patchbay/sampling/model_sampling.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's temporal_score_rescaling, op for op (tsr_variance = tsr_sigma^2 as the node computes it).
torch::Tensor torch_tsr(const torch::Tensor& x, const torch::Tensor& sigmas, const torch::Tensor& denoised,
                        double tsr_k, double tsr_variance, bool flow) {
    auto sigma = sigmas[0];
    if (tsr_k == 1 || sigma.item<float>() == 0) return denoised;
    auto half_log_snr = flow ? sigma.logit().neg() : sigma.log().neg();
    auto snr = (2 * half_log_snr).exp();
    if (snr.item<float>() == 0) return denoised;
    auto posinf_mask = torch::isposinf(snr);
    auto rescaling_factor = (snr * tsr_variance + 1) / (snr * tsr_variance / tsr_k + 1);
    auto rescaling_r = torch::where(posinf_mask, torch::full_like(snr, tsr_k), rescaling_factor);
    auto alpha = sigma * half_log_snr.exp();
    return torch::lerp(x / alpha, denoised, rescaling_r);
}

double torch_time(const std::vector<index_t>& dims, bool flow) {
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape) * 2.0, d = torch::randn(shape);
    auto sigma = torch::full({shape[0]}, flow ? 0.5f : 1.0f);
    return bench::best_time([&] {
        auto r = torch_tsr(x, sigma, d, 0.95, 1.0, flow);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
}
#endif

void run(benchmark::State& st, const std::vector<index_t>& dims, bool flow) {
    const model_sampling ms = flow ? model_sampling::sd3(3.0) : model_sampling::discrete("eps");
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, flow);
#endif
    // repeated calls pull denoised toward x / alpha: it stays finite
    bench::wave::hook<2>(st, dims, temporal_score_rescaling{0.95, 1.0}, tt, 7.0, flow ? 0.5f : 1.0f, &ms);
}

} // namespace

int main(int argc, char** argv) {
    return bench::wave::main_with(argc, argv, [] {
        bench::wave::register_shapes("TemporalScoreRescaling_eps",
                                     [](benchmark::State& st, const std::vector<index_t>& d) { run(st, d, false); });
        bench::wave::register_shapes("TemporalScoreRescaling_flow",
                                     [](benchmark::State& st, const std::vector<index_t>& d) { run(st, d, true); });
    });
}
