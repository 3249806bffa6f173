// Benchmark: RescaleCFG (v space for discrete models, x0 space for flow models) vs a libtorch
// implementation written op for op as ComfyUI's rescale_cfg (including the x - denoised
// arguments the sampler builds and the x - result it undoes), single-threaded. Counters:
// ours_us, torch_us, x_vs_torch (torch / ours), bytes (minimum traffic: read x, cond, uncond
// (flow: cond, uncond), write denoised), bound_us (one streaming pass over those bytes),
// x_bound (ours / bound).
#include <algorithm>
#include <array>
#include <ctime>
#include <functional>
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

/// CPU time of the calling thread in seconds (the machine is shared; wall time would count
/// other processes' work).
double thread_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Best of `reps` timings of fn, in seconds.
double best_time(const std::function<void()>& fn, int reps = 20) {
    fn();
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const double t0 = thread_seconds();
        fn();
        best = std::min(best, thread_seconds() - t0);
    }
    return best;
}

/// One streaming pass: read K buffers of n floats, write one (the bandwidth bound of a patch
/// that must read K tensors and write one). K is a compile-time constant so the loop is
/// vectorised like the patch kernels.
template <int K>
void stream_pass(const std::array<const float*, K>& in, float* PATCHBAY_RESTRICT out, index_t n) {
    for (index_t i = 0; i < n; ++i) {
        float s = in[0][i];
        for (int k = 1; k < K; ++k) s += in[static_cast<std::size_t>(k)][i];
        out[i] = s;
    }
}

template <int K>
double stream_time(index_t n) {
    static std::map<index_t, double> memo;
    auto& t = memo[n];
    if (t > 0) return t;
    std::vector<tensor<float>> bufs;
    std::array<const float*, K> in{};
    for (int i = 0; i < K; ++i) bufs.push_back(bench::random_tensor({n}, 100u + static_cast<unsigned>(i)));
    for (int i = 0; i < K; ++i) in[static_cast<std::size_t>(i)] = bufs[static_cast<std::size_t>(i)].data();
    tensor<float> out({n});
    t = best_time([&] {
        stream_pass<K>(in, out.data(), n);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    });
    return t;
}

/// Fills the counters every patch benchmark reports.
void report(benchmark::State& st, double ours, double bound, double torch_s, int tensors_moved, index_t n) {
    const double bytes = static_cast<double>(tensors_moved) * static_cast<double>(n) * sizeof(float);
    st.SetBytesProcessed(static_cast<int64_t>(bytes) * static_cast<int64_t>(st.iterations()));
    st.counters["bytes"] = bytes;
    st.counters["ours_us"] = ours * 1e6;
    st.counters["bound_us"] = bound * 1e6;
    st.counters["x_bound"] = ours / bound; // target <= 2
    if (torch_s > 0) {
        st.counters["torch_us"] = torch_s * 1e6;
        st.counters["x_vs_torch"] = torch_s / ours; // speed-up over libtorch
    }
}

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
    t = best_time([&] {
        auto r = torch_rescale(x, sigma, c, u, 7.0, 0.7, flow);
        benchmark::DoNotOptimize(r.data_ptr());
    });
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
        p.cfg_function<float, R>(state, in, cv, uv, ov);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours_fn();
    const index_t n = c.size();
    const double ours = best_time(ours_fn);
    const double bound = flow ? stream_time<2>(n) : stream_time<3>(n);
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, flow);
#endif
    report(st, ours, bound, tt, flow ? 3 : 4, n);
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
