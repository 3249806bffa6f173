// Benchmark: RescaleCFG (v space for discrete models, x0 space for flow models) vs a libtorch
// implementation written op for op as ComfyUI's rescale_cfg (including the x - denoised
// arguments the sampler builds and the x - result it undoes), single-threaded. Counters:
// ours_us, torch_us, x_vs_torch (torch / ours), bytes (minimum traffic: read x, cond, uncond
// (flow: cond, uncond), write denoised), bound_us (one streaming pass over those bytes),
// x_bound (ours / bound), two_pass_us and
// x_two_pass (the floor of its two passes: plain loops in this binary, bench::two_pass_time),
// same_passes_us and x_same_passes (those loops with its shifted sums and squares).
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's RescaleCFG, op for op, plus the sampler's cfg_function glue around it.
torch::Tensor torch_rescale(const torch::Tensor& x, const torch::Tensor& sigma_in, const torch::Tensor& cond_den,
                            const torch::Tensor& uncond_den, double cond_scale, double multiplier, bool flow) {
    auto cond = x - cond_den; // args["cond"]
    auto uncond = x - uncond_den;
    torch::Tensor ret;
    if (flow) {
        std::vector<int64_t> dims;
        for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
        auto x_cfg = uncond_den + cond_scale * (cond_den - uncond_den);
        auto ro_pos = torch::std(cond_den, dims, /*unbiased=*/true, /*keepdim=*/true);
        auto ro_cfg = torch::std(x_cfg, dims, true, true).clamp_min(1e-8);
        auto x_rescaled = x_cfg * (ro_pos / ro_cfg);
        auto x_final = multiplier * x_rescaled + (1.0 - multiplier) * x_cfg;
        ret = x - x_final;
    } else {
        std::vector<int64_t> vs{sigma_in.size(0)};
        for (int64_t d = 1; d < x.dim(); ++d) vs.push_back(1);
        auto sigma = sigma_in.view(vs);
        auto xs = x / (sigma * sigma + 1.0);
        auto c = ((xs - (x - cond)) * (sigma.pow(2) + 1.0).pow(0.5)) / sigma;
        auto u = ((xs - (x - uncond)) * (sigma.pow(2) + 1.0).pow(0.5)) / sigma;
        auto x_cfg = u + cond_scale * (c - u);
        auto ro_pos = torch::std(c, {1, 2, 3}, true, true);
        auto ro_cfg = torch::std(x_cfg, {1, 2, 3}, true, true);
        auto x_rescaled = x_cfg * (ro_pos / ro_cfg);
        auto x_final = multiplier * x_rescaled + (1.0 - multiplier) * x_cfg;
        ret = x - (xs - x_final * sigma / (sigma * sigma + 1.0).pow(0.5));
    }
    return x - ret; // cfg_result
}

double torch_time(const std::vector<index_t>& dims, bool flow) {
    static std::map<std::pair<std::vector<index_t>, bool>, double> memo;
    auto& t = memo[{dims, flow}];
    if (t > 0) return t;
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape), c = torch::randn(shape), u = torch::randn(shape);
    auto sigma = torch::full({shape[0]}, 2.0f);
    t = bench::best_time([&] {
        auto r = torch_rescale(x, sigma, c, u, 7.0, 0.7, flow);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
    return t;
}
#endif

template <std::size_t R>
void run(benchmark::State& st, const std::vector<index_t>& dims, bool flow) {
    auto x = bench::random_tensor(dims, 1, 0.f, 2.f), c = bench::random_tensor(dims, 2),
         u = bench::random_tensor(dims, 3);
    tensor<float> sigma({dims[0]}), out(dims);
    sigma.fill(2.0f);
    const guidance_inputs<float, R> in{x.template as<R>(), sigma.template as<1>(), 7.0, false,
                                       flow ? prediction_type::flow : prediction_type::eps};
    no_state state;
    const rescale_cfg p{0.7};
    const auto cv = c.template as<R>();
    const auto uv = u.template as<R>();
    const auto ov = out.template as<R>();
    auto ours_fn = [&] {
        apply_cfg_function(p, state, in, cv, uv, ov);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours_fn();
    const index_t n = c.size();
    const double ours = bench::best_time(ours_fn, 20);
    const double bound = flow ? bench::stream_time<2>(n) : bench::stream_time<3>(n);
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, flow);
#endif
    bench::report(st, ours, bound, tt, flow ? 3 : 4, n);
    // two passes: the sums (flow: cond, uncond; v: x too), then the write
    bench::report_floor(st, ours, flow ? bench::two_pass_time<2, 2>(n) : bench::two_pass_time<3, 3>(n));
    // the same with its arithmetic: the shifted cond and cfg terms and their squares
    const float k = 7.0f, inv = 0.5f, kc = 0.1f, kg = 0.2f;
    bench::report_same_passes(st, ours, flow ? bench::two_pass_time<2, 2>(n, 0, [=](auto cp, auto up) {
        const auto dc = cp - kc, dg = (up + (cp - up) * k) - kg;
        return std::array{dc, dc * dc, dg, dg * dg};
    }) : bench::two_pass_time<3, 3>(n, 0, [=](auto xp, auto cp, auto up) {
        const auto xc = xp * inv;
        const auto dc = xc - cp - kc, dg = xc - (up + (cp - up) * k) - kg;
        return std::array{dc, dc * dc, dg, dg * dg};
    }));
}

void register_all() {
    for (bool flow : {false, true})
        for (const auto& s : bench::latent_shapes()) {
            const std::string name = std::string(flow ? "RescaleCFG_flow/" : "RescaleCFG_v/") + s.name;
            const auto dims = s.dims;
            benchmark::RegisterBenchmark(name.c_str(), [dims, flow](benchmark::State& st) {
                if (dims.size() == 4) run<4>(st, dims, flow);
                else run<5>(st, dims, flow);
            })->Unit(benchmark::kMicrosecond);
        }
}

} // namespace

int main(int argc, char** argv) {
#ifdef PATCHBAY_HAVE_TORCH
    torch::set_num_threads(1);
#endif
    register_all();
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
