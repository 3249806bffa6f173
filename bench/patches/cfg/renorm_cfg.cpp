// Benchmark: RenormCFG vs a libtorch implementation written op for op as ComfyUI's
// renorm_cfg_func (nodes_lumina2.py, plus the sampler's x - result), single-threaded, with
// cfg_trunc 100 and renorm_cfg 1 (the guided, renormalised branch). Counters: ours_us,
// torch_us, x_vs_torch (torch / ours), bytes (minimum traffic: read cond, uncond, write
// denoised), bound_us (one streaming pass over those bytes), x_bound (ours / bound).
#include <algorithm>
#include <array>
#include <ctime>
#include <functional>
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
    t = best_time([&] {
        auto r = torch_renorm(x, sigma, c, u, 4.0, 100.0, 1.0, shape[1]);
        benchmark::DoNotOptimize(r.data_ptr());
    });
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
        p.cfg_function<float, R>(state, in, cv, uv, ov);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours_fn();
    const index_t n = c.size();
    const double ours = best_time(ours_fn);
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    report(st, ours, stream_time<2>(n), tt, 3, n);
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
