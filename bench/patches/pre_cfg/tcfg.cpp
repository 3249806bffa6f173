// Benchmark: TCFG (pre-CFG) vs a libtorch implementation written op for op as ComfyUI's
// nodes_tcfg.py (torch.linalg.svd of the 2 x N score matrix), single-threaded. Counters:
// torch_ms, x_vs_torch (torch time / ours), bytes (minimum traffic: read x, cond, uncond;
// write uncond), stream_ms (one streaming pass over those bytes), x_stream (ours / stream).
#include <ctime>
#include <cstring>
#include <functional>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"

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
    t = best_time([&] {
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
    const double t0 = thread_seconds();
    for (auto _ : st) {
        p.pre_cfg<float, R>(state, in, cv, uv);
        benchmark::DoNotOptimize(u.data());
        benchmark::ClobberMemory();
    }
    const double ours = (thread_seconds() - t0) / static_cast<double>(st.iterations());
    const index_t n = c.size();
    const double bytes = 4.0 * static_cast<double>(n) * sizeof(float);
    const double stream = stream_time(n, 3);
    st.SetBytesProcessed(static_cast<int64_t>(bytes) * static_cast<int64_t>(st.iterations()));
    st.counters["bytes"] = bytes;
    st.counters["stream_ms"] = stream * 1e3;
    st.counters["x_stream"] = ours / stream;
#ifdef PATCHBAY_HAVE_TORCH
    const double tt = torch_time(dims);
    st.counters["torch_ms"] = tt * 1e3;
    st.counters["x_vs_torch"] = tt / ours;
#endif
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
