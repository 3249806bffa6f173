// Benchmarks for sampling/model_sampling.hpp (calculate_input, calculate_denoised,
// noise_scaling, the discrete table build) beside libtorch expressions written as ComfyUI
// writes them (when libtorch is installed). Counters: ours_us, torch_us, x_vs_torch (torch / ours).
#include <benchmark/benchmark.h>

#include <string>

#include "bench_util.hpp"
#include "patchbay/sampling/model_sampling.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

using namespace patchbay;

namespace {

struct data {
    tensor<float> x, mo, noise, latent, sigma, out;
#ifdef PATCHBAY_HAVE_TORCH
    torch::Tensor tx, tmo, tnoise, tlatent, tsigma;
#endif
    explicit data(const std::vector<index_t>& shape)
        : x(bench::random_tensor(shape, 1)), mo(bench::random_tensor(shape, 2)),
          noise(bench::random_tensor(shape, 3)), latent(bench::random_tensor(shape, 4)),
          sigma({shape[0]}), out(shape) {
        sigma.fill(0.6f); // valid for discrete and flow
#ifdef PATCHBAY_HAVE_TORCH
        torch::set_num_threads(1);
        std::vector<int64_t> s(shape.begin(), shape.end());
        tx = torch::from_blob(x.data(), s, torch::kFloat);
        tmo = torch::from_blob(mo.data(), s, torch::kFloat);
        tnoise = torch::from_blob(noise.data(), s, torch::kFloat);
        tlatent = torch::from_blob(latent.data(), s, torch::kFloat);
        std::vector<int64_t> bs(s.size(), 1);
        bs[0] = s[0];
        tsigma = torch::from_blob(sigma.data(), {s[0]}, torch::kFloat).view(bs);
#endif
    }
};

#ifdef PATCHBAY_HAVE_TORCH
#define PB_TORCH(expr) [&] { benchmark::DoNotOptimize(expr); }
#else
#define PB_TORCH(expr) nullptr
#endif

template <std::size_t R>
void calc_input(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    const auto ms = model_sampling::discrete("eps");
    bench::run_with_baseline(
        st, [&] { ms.calculate_input<float, R>(d.sigma.as<1>(), d.x.as<R>(), d.out.as<R>()); },
        PB_TORCH(d.tx / (d.tsigma * d.tsigma + 1.0).pow(0.5)));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.x.size() * 8);
}

template <std::size_t R>
void denoised_eps(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    const auto ms = model_sampling::discrete("eps");
    bench::run_with_baseline(
        st, [&] { ms.calculate_denoised<float, R>(d.sigma.as<1>(), d.mo.as<R>(), d.x.as<R>(), d.out.as<R>()); },
        PB_TORCH(d.tx - d.tmo * d.tsigma));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.x.size() * 12);
}

template <std::size_t R>
void denoised_v(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    const auto ms = model_sampling::discrete("v_prediction");
    bench::run_with_baseline(
        st, [&] { ms.calculate_denoised<float, R>(d.sigma.as<1>(), d.mo.as<R>(), d.x.as<R>(), d.out.as<R>()); },
        PB_TORCH(d.tx * 1.0 / (d.tsigma * d.tsigma + 1.0) -
                 d.tmo * d.tsigma * 1.0 / (d.tsigma * d.tsigma + 1.0).pow(0.5)));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.x.size() * 12);
}

template <std::size_t R>
void noise_scaling_flow(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    const auto ms = model_sampling::sd3(3.0);
    bench::run_with_baseline(
        st, [&] { ms.noise_scaling<float, R>(d.sigma.as<1>(), d.noise.as<R>(), d.latent.as<R>(), false, d.out.as<R>()); },
        PB_TORCH(d.tsigma * d.tnoise + (1.0 - d.tsigma) * d.tlatent));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.x.size() * 12);
}

void build_discrete(benchmark::State& st, bool zsnr) {
    for (auto _ : st) benchmark::DoNotOptimize(model_sampling::discrete("eps", zsnr));
}

void timestep_lookup(benchmark::State& st) {
    const auto ms = model_sampling::discrete("eps");
    double s = 0.03;
    for (auto _ : st) {
        benchmark::DoNotOptimize(ms.timestep(s));
        s = s > 14.0 ? 0.03 : s * 1.01;
    }
}

int register_all() {
    for (const auto& s : bench::latent_shapes()) {
        const std::string n = s.name;
        if (s.dims.size() == 4) {
            benchmark::RegisterBenchmark(("calculate_input_eps/" + n).c_str(), calc_input<4>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_eps/" + n).c_str(), denoised_eps<4>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_v/" + n).c_str(), denoised_v<4>, s.dims);
            benchmark::RegisterBenchmark(("noise_scaling_flow/" + n).c_str(), noise_scaling_flow<4>, s.dims);
        } else {
            benchmark::RegisterBenchmark(("calculate_input_eps/" + n).c_str(), calc_input<5>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_eps/" + n).c_str(), denoised_eps<5>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_v/" + n).c_str(), denoised_v<5>, s.dims);
            benchmark::RegisterBenchmark(("noise_scaling_flow/" + n).c_str(), noise_scaling_flow<5>, s.dims);
        }
    }
    benchmark::RegisterBenchmark("build_discrete_table", build_discrete, false);
    benchmark::RegisterBenchmark("build_discrete_table_zsnr", build_discrete, true);
    benchmark::RegisterBenchmark("timestep_of_sigma", timestep_lookup);
    return 0;
}
const int registered = register_all();

} // namespace

BENCHMARK_MAIN();
