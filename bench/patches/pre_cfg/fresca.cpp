// Benchmark: FreSca (pre-CFG, cond rewritten in place) vs libtorch written op for op as
// ComfyUI's nodes_fresca.py (complex fftn over the last two dims, fftshift, mask built with
// narrow per dim, ifftshift, ifftn, real, + uncond), single-threaded, default parameters
// (scale_low 1, scale_high 1.25, freq_cutoff 20). Also the direct and FFT paths forced.
// Counters: ours_us, torch_us, x_vs_torch (torch / ours), bytes (read cond, uncond; write
// cond), bound_us (one streaming pass over those bytes), x_bound (ours / bound). Thread CPU
// time.
#include <cstring>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

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
    t = bench::best_time([&] {
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
    workspace scratch; // the run's arena, as the dispatcher hands it to pre-cfg hooks
    guidance_inputs<float, R> in;
    in.cond_scale = 7.0;
    in.scratch = &scratch;
    no_state state;
    const fresca p{1.0, 1.25, 20, path};
    double total = 0;
    for (auto _ : st) {
        std::memcpy(c.data(), c0.data(), sizeof(float) * static_cast<std::size_t>(c.size()));
        const double t0 = bench::thread_seconds();
        apply_pre_cfg(p, state, in, c.template as<R>(), u.template as<R>());
        benchmark::DoNotOptimize(c.data());
        benchmark::ClobberMemory();
        const double dt = bench::thread_seconds() - t0;
        total += dt;
        st.SetIterationTime(dt);
    }
    const double ours = total / static_cast<double>(st.iterations());
    const index_t n = c.size();
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    bench::report(st, ours, bench::stream_time<2>(n), tt, 3, n);
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
