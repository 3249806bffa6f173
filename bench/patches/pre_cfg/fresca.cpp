// Benchmark: FreSca (pre-CFG, cond rewritten in place) vs libtorch written op for op as
// ComfyUI's nodes_fresca.py (complex fftn over the last two dims, fftshift, mask built with
// narrow per dim, ifftshift, ifftn, real, + uncond), single-threaded, default parameters
// (scale_low 1, scale_high 1.25, freq_cutoff 20). Also the direct and FFT paths forced.
// Counters: torch_ms, x_vs_torch (torch / ours), bytes (read cond, uncond; write cond),
// stream_ms (one streaming pass over those bytes), x_stream (ours / stream). Thread CPU time.
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

double thread_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

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
torch::Tensor torch_fresca_filter(const torch::Tensor& x, double scale_low, double scale_high, int64_t cutoff) {
    auto x_freq = torch::fft::fftn(x.to(torch::kFloat32), c10::nullopt, {-2, -1});
    x_freq = torch::fft::fftshift(x_freq, {-2, -1});
    auto mask = torch::ones(x_freq.sizes()) * scale_high;
    auto m = mask;
    for (int64_t d = 0; d < x_freq.dim() - 2; ++d) {
        const int64_t dim = d + 2, cc = x_freq.size(dim) / 2, f = std::min(cutoff, cc);
        m = m.narrow(dim, cc - f, f * 2);
    }
    m.fill_(scale_low);
    x_freq = x_freq * mask;
    x_freq = torch::fft::ifftshift(x_freq, {-2, -1});
    return torch::real(torch::fft::ifftn(x_freq, c10::nullopt, {-2, -1})).to(x.scalar_type());
}

double torch_time(const std::vector<index_t>& dims) {
    static std::map<std::vector<index_t>, double> memo;
    auto& t = memo[dims];
    if (t > 0) return t;
    torch::set_num_threads(1);
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto c = torch::randn(shape), u = torch::randn(shape);
    t = best_time([&] {
        auto g = c - u;
        auto r = torch_fresca_filter(g, 1.0, 1.25, 20) + u;
        benchmark::DoNotOptimize(r.data_ptr());
    }, 10);
    return t;
}
#endif

template <std::size_t R>
void run_ours(benchmark::State& st, const std::vector<index_t>& dims, fresca_path path) {
    const auto c0 = bench::random_tensor(dims, 1);
    auto c = c0, u = bench::random_tensor(dims, 2);
    guidance_inputs<float, R> in;
    in.cond_scale = 7.0;
    no_state state;
    const fresca p{1.0, 1.25, 20, path};
    double total = 0;
    for (auto _ : st) {
        std::memcpy(c.data(), c0.data(), sizeof(float) * static_cast<std::size_t>(c.size()));
        const double t0 = thread_seconds();
        p.pre_cfg<float, R>(state, in, c.template as<R>(), u.template as<R>());
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
        const double dt = thread_seconds() - t0;
        total += dt;
        st.SetIterationTime(dt);
    }
    const double ours = total / static_cast<double>(st.iterations());
    const index_t n = c.size();
    const double bytes = 3.0 * static_cast<double>(n) * sizeof(float);
    const double stream = stream_time(n, 2);
    st.SetBytesProcessed(static_cast<int64_t>(bytes) * static_cast<int64_t>(st.iterations()));
    st.counters["bytes"] = bytes;
    st.counters["stream_ms"] = stream * 1e3;
    st.counters["x_stream"] = ours / stream;
    st.counters["ours_ms"] = ours * 1e3;
#ifdef PATCHBAY_HAVE_TORCH
    const double tt = torch_time(dims);
    st.counters["torch_ms"] = tt * 1e3;
    st.counters["x_vs_torch"] = tt / ours;
#endif
}

const int registered = [] {
    const std::pair<const char*, fresca_path> paths[] = {
        {"auto", fresca_path::automatic}, {"direct", fresca_path::direct}, {"fft", fresca_path::fft}};
    for (const auto& s : bench::latent_shapes())
        for (const auto& [pname, path] : paths) {
            const auto dims = s.dims;
            const auto pa = path;
            benchmark::RegisterBenchmark((std::string("FreSca_") + pname + "/" + s.name).c_str(),
                                         [dims, pa](benchmark::State& st) {
                                             if (dims.size() == 4) run_ours<4>(st, dims, pa);
                                             else run_ours<5>(st, dims, pa);
                                         })
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond);
        }
    return 0;
}();

} // namespace

BENCHMARK_MAIN();
