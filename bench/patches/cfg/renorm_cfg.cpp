// Benchmark: RenormCFG vs a libtorch implementation written op for op as ComfyUI's
// renorm_cfg_func (nodes_lumina2.py, plus the sampler's x - result), single-threaded, with
// cfg_trunc 100 and renorm_cfg 1 (the guided, renormalised branch). Counters: ours_us,
// torch_us, x_vs_torch (torch / ours), bytes (minimum traffic: read cond, uncond, write
// denoised), bound_us (one streaming pass over those bytes), x_bound (ours / bound), two_pass_us and
// x_two_pass (the floor of its two passes: plain loops in this binary, bench::two_pass_time).
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/patches/cfg/renorm_cfg.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's RenormCFG, op for op (batch 1, as ComfyUI requires with renorm_cfg > 0).
torch::Tensor torch_renorm(const torch::Tensor& x, const torch::Tensor& timestep, const torch::Tensor& cond_denoised,
                           const torch::Tensor& uncond_denoised, double cond_scale, double cfg_trunc,
                           double renorm, int64_t in_channels) {
    torch::Tensor half_eps, half_rest;
    using torch::indexing::Slice;
    if (timestep[0].item<double>() < cfg_trunc) {
        auto cond_eps = cond_denoised.index({Slice(), Slice(0, in_channels)});
        auto uncond_eps = uncond_denoised.index({Slice(), Slice(0, in_channels)});
        auto cond_rest = cond_denoised.index({Slice(), Slice(in_channels)});
        half_eps = uncond_eps + cond_scale * (cond_eps - uncond_eps);
        half_rest = cond_rest;
        if (renorm > 0.0) {
            std::vector<int64_t> dims;
            for (int64_t d = 1; d < cond_eps.dim(); ++d) dims.push_back(d);
            auto ori_pos_norm = torch::linalg::vector_norm(cond_eps, 2, dims, true, c10::nullopt);
            auto max_new_norm = ori_pos_norm * renorm;
            auto new_pos_norm = torch::linalg::vector_norm(half_eps, 2, dims, true, c10::nullopt);
            if ((new_pos_norm >= max_new_norm).item<bool>()) half_eps = half_eps * (max_new_norm / new_pos_norm);
        }
    } else {
        half_eps = cond_denoised.index({Slice(), Slice(0, in_channels)});
        half_rest = cond_denoised.index({Slice(), Slice(in_channels)});
    }
    auto output = torch::cat({half_eps, half_rest}, 1);
    auto ret = x - output;
    return x - ret; // cfg_result
}

double torch_time(const std::vector<index_t>& dims) {
    static std::map<std::vector<index_t>, double> memo;
    auto& t = memo[dims];
    if (t > 0) return t;
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape), c = torch::randn(shape), u = torch::randn(shape);
    auto sigma = torch::full({shape[0]}, 0.5f);
    t = bench::best_time([&] {
        auto r = torch_renorm(x, sigma, c, u, 4.0, 100.0, 1.0, shape[1]);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
    return t;
}
#endif

template <std::size_t R>
void run(benchmark::State& st, const std::vector<index_t>& dims) {
    auto x = bench::random_tensor(dims, 1, 0.f, 2.f), c = bench::random_tensor(dims, 2),
         u = bench::random_tensor(dims, 3);
    tensor<float> sigma({dims[0]}), out(dims);
    sigma.fill(0.5f);
    const guidance_inputs<float, R> in{x.template as<R>(), sigma.template as<1>(), 4.0, false, prediction_type::flow};
    no_state state;
    const renorm_cfg p{100.0, 1.0, 0};
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
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    bench::report(st, ours, bench::stream_time<2>(n), tt, 3, n);
    bench::report_floor(st, ours, bench::two_pass_time<2, 2>(n)); // the norms, then the write
}

void register_all() {
    for (const auto& s : bench::latent_shapes()) {
        const std::string name = std::string("RenormCFG/") + s.name;
        const auto dims = s.dims;
        benchmark::RegisterBenchmark(name.c_str(), [dims](benchmark::State& st) {
            if (dims.size() == 4) run<4>(st, dims);
            else run<5>(st, dims);
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
