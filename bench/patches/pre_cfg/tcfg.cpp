// Benchmark: TCFG (pre-CFG) vs a libtorch implementation written op for op as ComfyUI's
// nodes_tcfg.py (torch.linalg.svd of the 2 x N score matrix), single-threaded. Counters:
// ours_us, torch_us, x_vs_torch (torch / ours), bytes (minimum traffic: read x, cond, uncond;
// write uncond), bound_us (one streaming pass over those bytes), x_bound (ours / bound), two_pass_us and
// x_two_pass (the floor of its two passes: plain loops in this binary, bench::two_pass_time),
// same_passes_us and x_same_passes (those loops with the Gram matrix's products).
#include <cstring>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's TCFG, op for op.
torch::Tensor torch_tcfg(const torch::Tensor& x, const torch::Tensor& cond, const torch::Tensor& uncond) {
    auto cond_score = x - cond;
    auto uncond_score = x - uncond;
    const auto batch = cond_score.size(0);
    auto cond_flat = cond_score.reshape({batch, 1, -1}).to(torch::kFloat);
    auto uncond_flat = uncond_score.reshape({batch, 1, -1}).to(torch::kFloat);
    auto score_matrix = torch::cat({uncond_flat, cond_flat}, 1);
    auto svd = torch::linalg::svd(score_matrix, false, c10::nullopt);
    auto v1 = std::get<2>(svd).slice(1, 0, 1);
    auto uncond_td = torch::matmul(uncond_flat, v1.transpose(-2, -1)) * v1;
    return x - uncond_td.reshape_as(uncond_score).to(uncond_score.scalar_type());
}

double torch_time(const std::vector<index_t>& dims) {
    static std::map<std::vector<index_t>, double> memo;
    auto& t = memo[dims];
    if (t > 0) return t;
    torch::set_num_threads(1);
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape), c = torch::randn(shape), u = torch::randn(shape);
    t = bench::best_time([&] {
        auto r = torch_tcfg(x, c, u);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 10);
    return t;
}
#endif

template <std::size_t R>
void run_ours(benchmark::State& st, const std::vector<index_t>& dims) {
    auto x = bench::random_tensor(dims, 1), c = bench::random_tensor(dims, 2), u = bench::random_tensor(dims, 3);
    tensor<float> sigma({dims[0]});
    sigma.fill(1.0f);
    guidance_inputs<float, R> in;
    in.x = x.template as<R>();
    in.sigma = sigma.template as<1>();
    in.cond_scale = 7.0;
    no_state state;
    const tcfg p{};
    const auto cv = c.template as<R>();
    const auto uv = u.template as<R>();
    const double t0 = bench::thread_seconds();
    for (auto _ : st) {
        apply_pre_cfg(p, state, in, cv, uv);
        benchmark::DoNotOptimize(u.data());
        benchmark::ClobberMemory();
    }
    const double ours = (bench::thread_seconds() - t0) / static_cast<double>(st.iterations());
    const index_t n = c.size();
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    bench::report(st, ours, bench::stream_time<3>(n), tt, 4, n);
    bench::report_floor(st, ours, bench::two_pass_time<3, 3, true>(n)); // the Gram matrix, then uncond rewritten
    // the same with the Gram matrix's products: a = x - uncond, b = x - cond, sums of aa, ab, bb
    bench::report_same_passes(st, ours, bench::two_pass_time<3, 3, true>(n, 0, [](auto xp, auto up, auto cp) {
        const auto a = xp - up, b = xp - cp;
        return std::array{a * a, a * b, b * b};
    }));
}

void register_all() {
    for (const auto& s : bench::latent_shapes()) {
        const std::string name = std::string("TCFG/") + s.name;
        const auto dims = s.dims;
        benchmark::RegisterBenchmark(name.c_str(), [dims](benchmark::State& st) {
            if (dims.size() == 4) run_ours<4>(st, dims);
            else run_ours<5>(st, dims);
        })->Unit(benchmark::kMicrosecond);
    }
}

} // namespace

int main(int argc, char** argv) {
    register_all();
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
