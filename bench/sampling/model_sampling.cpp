// Benchmarks for sampling/model_sampling.hpp (calculate_input, calculate_denoised,
// noise_scaling, the table build and timestep() of every model sampling object) beside libtorch
// expressions written as ComfyUI writes them (when libtorch is installed). Counters: ours_us,
// torch_us, x_vs_torch (torch / ours).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
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

template <std::size_t R>
void denoised_edm(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    const auto ms = model_sampling::continuous_edm("edm", 80.0, 0.002);
    bench::run_with_baseline(
        st, [&] { ms.calculate_denoised<float, R>(d.sigma.as<1>(), d.mo.as<R>(), d.x.as<R>(), d.out.as<R>()); },
        PB_TORCH(d.tx * 0.25 / (d.tsigma * d.tsigma + 0.25) +
                 d.tmo * d.tsigma * 0.5 / (d.tsigma * d.tsigma + 0.25).pow(0.5)));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.x.size() * 12);
}

template <std::size_t R>
void noise_scaling_scaled(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    const auto ms = model_sampling::sd3(3.0).with_noise_scale(7.5);
    bench::run_with_baseline(
        st, [&] { ms.noise_scaling<float, R>(d.sigma.as<1>(), d.noise.as<R>(), d.latent.as<R>(), false, d.out.as<R>()); },
        PB_TORCH(d.tsigma * (7.5 * d.tnoise) + (1.0 - d.tsigma) * d.tlatent));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.x.size() * 12);
}

/// One object per schedule family at its node defaults.
struct object {
    const char* name;
    model_sampling (*build)();
};
const object objects[] = {
    {"discrete", [] { return model_sampling::discrete("eps"); }},
    {"discrete_zsnr", [] { return model_sampling::discrete("eps", true); }},
    {"sd3", [] { return model_sampling::sd3(); }},
    {"flux", [] { return model_sampling::flux(); }},
    {"ltxv", [] { return model_sampling::ltxv(); }},
    {"continuous_edm", [] { return model_sampling::continuous_edm(); }},
    {"continuous_v", [] { return model_sampling::continuous_v(); }},
    {"cosmos_rflow", [] { return model_sampling::continuous_edm("cosmos_rflow", 80.0, 0.0002); }},
    {"stable_cascade", [] { return model_sampling::stable_cascade(); }},
};

#ifdef PATCHBAY_HAVE_TORCH
/// ComfyUI's table construction for the objects that build it with one tensor expression.
torch::Tensor torch_table(const std::string& name) {
    if (name == "flux" || name == "ltxv") {
        const double mu = name == "flux" ? 1.15 : 2.05, e = std::exp(mu);
        const auto t = torch::arange(1, 10001, torch::kFloat) / 10000;
        return (1.0 / (e + (1.0 / t - 1.0))) * e;
    }
    if (name == "sd3") {
        const auto t = torch::arange(1, 1001, torch::kFloat) / 1000 * 1000.0 / 1000.0;
        return 3.0 * t / (1.0 + 2.0 * t);
    }
    if (name == "continuous_edm" || name == "continuous_v" || name == "cosmos_rflow")
        return torch::linspace(std::log(0.002), std::log(120.0), 1000).exp();
    return {};
}
#endif

void build_table(benchmark::State& st, const object* o) {
#ifdef PATCHBAY_HAVE_TORCH
    torch::set_num_threads(1);
    const bool has_torch = torch_table(o->name).defined();
    if (has_torch) {
        bench::run_with_baseline(st, [&] { benchmark::DoNotOptimize(o->build()); },
                                 [&] { benchmark::DoNotOptimize(torch_table(o->name)); });
        return;
    }
#endif
    bench::run_with_baseline(st, [&] { benchmark::DoNotOptimize(o->build()); }, nullptr);
}

/// timestep(sigma) per call, sweeping the table's range so a search cannot be cached.
void timestep_lookup(benchmark::State& st, const object* o) {
    const auto ms = o->build();
    const double lo = std::max<double>(ms.sigma_min(), 1e-4), hi = ms.sigma_max();
    const double grow = std::pow(hi / lo, 1.0 / 997.0);
    double s = lo;
    for (auto _ : st) {
        benchmark::DoNotOptimize(ms.timestep(s));
        s = s * grow > hi ? lo : s * grow;
    }
}

int register_all() {
    for (const auto& s : bench::latent_shapes()) {
        const std::string n = s.name;
        if (s.dims.size() == 4) {
            benchmark::RegisterBenchmark(("calculate_input_eps/" + n).c_str(), calc_input<4>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_eps/" + n).c_str(), denoised_eps<4>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_v/" + n).c_str(), denoised_v<4>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_edm/" + n).c_str(), denoised_edm<4>, s.dims);
            benchmark::RegisterBenchmark(("noise_scaling_flow/" + n).c_str(), noise_scaling_flow<4>, s.dims);
            benchmark::RegisterBenchmark(("noise_scaling_noise_scale/" + n).c_str(), noise_scaling_scaled<4>, s.dims);
        } else {
            benchmark::RegisterBenchmark(("calculate_input_eps/" + n).c_str(), calc_input<5>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_eps/" + n).c_str(), denoised_eps<5>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_v/" + n).c_str(), denoised_v<5>, s.dims);
            benchmark::RegisterBenchmark(("calculate_denoised_edm/" + n).c_str(), denoised_edm<5>, s.dims);
            benchmark::RegisterBenchmark(("noise_scaling_flow/" + n).c_str(), noise_scaling_flow<5>, s.dims);
            benchmark::RegisterBenchmark(("noise_scaling_noise_scale/" + n).c_str(), noise_scaling_scaled<5>, s.dims);
        }
    }
    for (const auto& o : objects) {
        benchmark::RegisterBenchmark((std::string("build_table/") + o.name).c_str(), build_table, &o);
        benchmark::RegisterBenchmark((std::string("timestep_of_sigma/") + o.name).c_str(), timestep_lookup, &o);
    }
    return 0;
}
const int registered = register_all();

} // namespace

BENCHMARK_MAIN();
