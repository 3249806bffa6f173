// Benchmark of one full guider step with no patches on the toy Gaussian model: the cond and
// uncond model passes plus the CFG combine (what a sampler calls once per step), beside the
// same computation in libtorch eager ops (ComfyUI's way). Counters: ours_us, torch_us, x_vs_torch (torch / ours).
#include <benchmark/benchmark.h>

#include "bench_util.hpp"
#include "patchbay/core/guider.hpp"
#include "../../examples/toy_gaussian.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

using namespace patchbay;

namespace {

const std::vector<bench::latent_shape> kShapes{{"1x4x128x128", {1, 4, 128, 128}},
                                               {"1x16x128x128", {1, 16, 128, 128}},
                                               {"1x16x21x60x104", {1, 16, 21, 60, 104}}};

constexpr double kScale = 7.0;
constexpr float kSigma = 2.5f;
constexpr double kStd = 0.8;

template <std::size_t R>
void guider_step(benchmark::State& st, std::vector<index_t> shape) {
    std::vector<index_t> mu_shape = shape;
    mu_shape[0] = 1;
    tensor<float> x = bench::random_tensor(shape, 1), out(shape), sigma({shape[0]});
    const tensor<float> mu_c = bench::random_tensor(mu_shape, 2), mu_u = bench::random_tensor(mu_shape, 3);
    sigma.fill(kSigma);
    const examples::toy_gaussian model(examples::toy_kind::vp, kStd);
    const examples::toy_prompt pos(mu_c.as<R>()), neg(mu_u.as<R>());
    const guider<const examples::toy_gaussian> g(model, model_sampling::discrete("eps"));
    auto run = g.begin_run(&pos, &neg);
    const step_inputs<float, R> step{x.as<R>(), sigma.as<1>(), kScale, {}, nullptr};
    auto ours = [&] {
        g.denoise(run, step, out.as<R>());
        benchmark::DoNotOptimize(out.data());
    };
#ifdef PATCHBAY_HAVE_TORCH
    torch::set_num_threads(1);
    torch::NoGradGuard no_grad;
    const std::vector<int64_t> s(shape.begin(), shape.end()), ms(mu_shape.begin(), mu_shape.end());
    const torch::Tensor tx = torch::from_blob(x.data(), s, torch::kFloat);
    const torch::Tensor tmc = torch::from_blob(const_cast<float*>(mu_c.data()), ms, torch::kFloat);
    const torch::Tensor tmu = torch::from_blob(const_cast<float*>(mu_u.data()), ms, torch::kFloat);
    std::vector<int64_t> sig_shape(R, 1); // one sigma per batch item, broadcast as ComfyUI
    sig_shape[0] = shape[0];
    const torch::Tensor tsig = torch::full(sig_shape, kSigma);
    auto baseline = [&] {
        const double s2 = kStd * kStd;
        const torch::Tensor coef = s2 / (s2 + tsig * tsig);
        const torch::Tensor c = tmc + coef * (tx - tmc);
        const torch::Tensor u = tmu + coef * (tx - tmu);
        benchmark::DoNotOptimize(u + (c - u) * kScale);
    };
#else
    auto baseline = nullptr;
#endif
    bench::run_with_baseline(st, ours, baseline);
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * x.size() * 4 * 4);
}

int register_all() {
    for (const auto& s : kShapes) {
        const std::string name = std::string("guider_step/") + s.name;
        if (s.dims.size() == 4) benchmark::RegisterBenchmark(name.c_str(), guider_step<4>, s.dims);
        else benchmark::RegisterBenchmark(name.c_str(), guider_step<5>, s.dims);
    }
    return 0;
}
const int registered = register_all();

} // namespace

BENCHMARK_MAIN();
