// Benchmark: APG (pre-CFG) vs a libtorch implementation written op for op as ComfyUI's
// nodes_apg.py, single-threaded. Counters: torch_ms, x_vs_torch (torch time / ours),
// bytes (minimum traffic: read cond, uncond; write cond), stream_ms (one streaming pass over
// those bytes) and x_stream (ours / stream, the distance from the bandwidth bound).
#include <ctime>
#include <cstring>
#include <functional>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

/// CPU time of the calling thread in seconds: the machine is shared, so wall time would
/// count other processes' work.
double thread_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Best of `reps` timings of fn, in seconds.
double best_time(const std::function<void()>& fn, int reps = 30) {
    fn();
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const double t0 = thread_seconds();
        fn();
        best = std::min(best, thread_seconds() - t0);
    }
    return best;
}

double stream_time(index_t n, int reads) {
    static std::map<std::pair<index_t, int>, double> memo;
    auto& t = memo[{n, reads}];
    if (t > 0) return t;
    std::vector<tensor<float>> bufs;
    std::vector<const float*> in;
    for (int i = 0; i < reads; ++i) bufs.push_back(bench::random_tensor({n}, 100u + static_cast<unsigned>(i)));
    for (auto& b : bufs) in.push_back(b.data());
    tensor<float> out({n});
    t = best_time([&] {
        bench::stream_pass(in, out.data(), n);
        benchmark::DoNotOptimize(out.data());
    });
    return t;
}

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
    t = best_time([&] {
        auto r = f(c, u, 7.0);
        benchmark::DoNotOptimize(r[0].data_ptr());
    });
    return t;
}
#endif

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
    p.pre_cfg<float, R>(state, in, cv, uv); // first call allocates the momentum buffer
    const double t0 = thread_seconds();
    for (auto _ : st) {
        p.pre_cfg<float, R>(state, in, cv, uv);
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
    }
    const double ours = (thread_seconds() - t0) / static_cast<double>(st.iterations());
    const index_t n = c.size();
    const double bytes = 3.0 * static_cast<double>(n) * sizeof(float);
    const double stream = stream_time(n, 2);
    st.SetBytesProcessed(static_cast<int64_t>(bytes) * static_cast<int64_t>(st.iterations()));
    st.counters["bytes"] = bytes;
    st.counters["stream_ms"] = stream * 1e3;
    st.counters["x_stream"] = ours / stream;
#ifdef PATCHBAY_HAVE_TORCH
    const double tt = torch_time(dims, p);
    st.counters["torch_ms"] = tt * 1e3;
    st.counters["x_vs_torch"] = tt / ours;
#endif
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
