// Benchmark: APG (pre-CFG) vs a libtorch implementation written op for op as ComfyUI's
// nodes_apg.py, single-threaded. Counters (bench::report): ours_us, torch_us, x_vs_torch
// (torch / ours), bytes (minimum traffic: read cond, uncond; write cond; with momentum also
// read and write the running average), bound_us (one streaming pass over those bytes), x_bound
// (ours / bound, the distance from the bandwidth bound), two_pass_us and x_two_pass (the floor
// of the passes APG must make, plain loops in this binary).
#include <cstring>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's APG, op for op (momentum path included).
struct torch_apg {
    double eta, norm_threshold, momentum;
    torch::Tensor running_avg;
    bool has_avg = false;
    std::vector<torch::Tensor> operator()(const torch::Tensor& cond, const torch::Tensor& uncond,
                                          double cond_scale) {
        auto guidance = cond - uncond;
        if (momentum != 0) {
            running_avg = has_avg ? momentum * running_avg + guidance : guidance;
            has_avg = true;
            guidance = running_avg;
        }
        if (norm_threshold > 0) {
            auto guidance_norm = guidance.norm(2, {-1, -2, -3}, true);
            auto scale = torch::minimum(torch::ones_like(guidance_norm), norm_threshold / guidance_norm);
            guidance = guidance * scale;
        }
        // F.normalize(cond, dim=[-1,-2,-3]): divide by the norm clamped at 1e-12
        auto v1 = cond / cond.norm(2, {-1, -2, -3}, true).clamp_min(1e-12).expand_as(cond);
        auto parallel = (guidance * v1).sum({-1, -2, -3}, true) * v1;
        auto orthogonal = guidance - parallel;
        auto modified = orthogonal + eta * parallel;
        auto modified_cond = (uncond + modified) + (cond - uncond) / cond_scale;
        return {modified_cond, uncond};
    }
};

double torch_time(const std::vector<index_t>& dims, const apg& p) {
    static std::map<std::string, double> memo;
    std::string key;
    for (auto d : dims) key += std::to_string(d) + "x";
    key += std::to_string(p.momentum);
    auto& t = memo[key];
    if (t > 0) return t;
    torch::set_num_threads(1);
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto c = torch::randn(shape), u = torch::randn(shape);
    torch_apg f{p.eta, p.norm_threshold, p.momentum, {}, false};
    t = bench::best_time([&] {
        auto r = f(c, u, 7.0);
        benchmark::DoNotOptimize(r[0].data_ptr());
    }, 30);
    return t;
}
#endif

/// The floor of APG with momentum, plain loops: a pass reading cond, uncond and the running
/// average and rewriting the average, then one reading the three and rewriting cond, each
/// forward or backward as is faster (best of 20, memoised).
double momentum_floor_time(index_t n) {
    static std::map<index_t, double> memo;
    auto& t = memo[n];
    if (t > 0) return t;
    bench::stream_buffers<3, 1> b(n);
    float* const cond = b.bufs[0].data();
    float* const avg = b.bufs[2].data();
    auto both = [&](auto backward) {
        return bench::best_time(
            [&] {
                bench::stream_pass<3, 1>(b.in, std::array<float*, 1>{avg}, n);
                bench::stream_pass<3, 1, decltype(backward)::value>(b.in, std::array<float*, 1>{cond}, n);
                benchmark::DoNotOptimize(cond);
                benchmark::ClobberMemory();
            },
            20);
    };
    t = std::min(both(std::false_type{}), both(std::true_type{}));
    return t;
}

template <std::size_t R>
void run_ours(benchmark::State& st, const std::vector<index_t>& dims, const apg& p) {
    auto x = bench::random_tensor(dims, 1), c = bench::random_tensor(dims, 2), u = bench::random_tensor(dims, 3);
    tensor<float> sigma({dims[0]});
    sigma.fill(1.0f);
    guidance_inputs<float, R> in;
    in.x = x.template as<R>();
    in.sigma = sigma.template as<1>();
    in.cond_scale = 7.0;
    apg::state_type state{};
    const auto cv = c.template as<R>();
    const auto uv = u.template as<R>();
    apply_pre_cfg(p, state, in, cv, uv); // first call allocates the momentum buffer
    const double t0 = bench::thread_seconds();
    for (auto _ : st) {
        apply_pre_cfg(p, state, in, cv, uv);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    const double ours = (bench::thread_seconds() - t0) / static_cast<double>(st.iterations());
    const index_t n = c.size();
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, p);
#endif
    if (p.momentum == 0.0) {
        bench::report(st, ours, bench::stream_time<2>(n), tt, 3, n);
        bench::report_floor(st, ours, bench::two_pass_time<2, 2, true>(n)); // the norms, then cond rewritten
    } else {
        // the running average is read and written too: one pass reading 3 tensors, writing 2
        bench::report(st, ours, bench::stream_time<3, 2>(n), tt, 5, n);
        // ...and the norms of the new average come before the write: two passes reading cond,
        // uncond and the average, the first rewriting the average, the second cond
        bench::report_floor(st, ours, momentum_floor_time(n));
    }
}

void register_all() {
    for (const auto& s : bench::latent_shapes()) {
        for (double momentum : {0.0, 0.5}) {
            const apg p{.eta = 1.0, .norm_threshold = 5.0, .momentum = momentum};
            const std::string name = std::string("APG/") + s.name + (momentum != 0 ? "/momentum0.5" : "");
            const auto dims = s.dims;
            benchmark::RegisterBenchmark(name.c_str(), [dims, p](benchmark::State& st) {
                if (dims.size() == 4) run_ours<4>(st, dims, p);
                else run_ours<5>(st, dims, p);
            })->Unit(benchmark::kMicrosecond);
        }
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
