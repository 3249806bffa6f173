// Benchmarks for patches/mask/differential_diffusion.hpp (validate + threshold + binary or
// blended mask in one call) beside ComfyUI's torch expression (when libtorch is installed).
// Counters: ours_us, torch_us, x_vs_torch (torch / ours).
#include <benchmark/benchmark.h>

#include <cmath>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/mask/differential_diffusion.hpp"
#include "patchbay/sampling/schedules.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

using namespace patchbay;

namespace {

template <std::size_t R>
void dd_mask(benchmark::State& st, std::vector<index_t> shape, double strength) {
    tensor<float> m = bench::random_tensor(shape, 5);
    for (index_t i = 0; i < m.size(); ++i) m[i] = 0.5f + 0.5f * std::tanh(m[i]);
    tensor<float> out(shape);
    const auto ms = model_sampling::discrete("eps");
    const auto sig = simple_schedule(20, ms);
    const mask_inputs in{sig[7], sig, &ms};
    const differential_diffusion dd{strength};
    no_state ns;
#ifdef PATCHBAY_HAVE_TORCH
    torch::set_num_threads(1);
    const torch::Tensor tm = torch::from_blob(m.data(), std::vector<int64_t>(shape.begin(), shape.end()), torch::kFloat);
    const torch::Tensor th = torch::tensor(differential_diffusion::threshold(in));
    auto torch_fn = [&] {
        auto b = (tm >= th).to(tm.dtype());
        if (strength != 0.0 && strength < 1.0) b = strength * b + (1 - strength) * tm;
        benchmark::DoNotOptimize(b);
    };
#else
    auto torch_fn = nullptr;
#endif
    bench::run_with_baseline(st, [&] { dd.mask<float, R>(ns, in, m.as<R>(), out.as<R>()); }, torch_fn);
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * m.size() * 8);
}

int register_all() {
    for (const auto& s : bench::latent_shapes()) {
        for (double strength : {1.0, 0.5}) {
            const std::string n = std::string(strength == 1.0 ? "dd_binary/" : "dd_blend05/") + s.name;
            if (s.dims.size() == 4) benchmark::RegisterBenchmark(n.c_str(), dd_mask<4>, s.dims, strength);
            else benchmark::RegisterBenchmark(n.c_str(), dd_mask<5>, s.dims, strength);
        }
    }
    return 0;
}
const int registered = register_all();

} // namespace

BENCHMARK_MAIN();
