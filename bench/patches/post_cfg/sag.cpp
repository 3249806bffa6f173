// Benchmark: SAG's degradation (attention mask + Gaussian blur + blend) and its whole
// post-cfg arithmetic beside libtorch written op for op as ComfyUI's create_blur_map /
// gaussian_blur_2d / post_cfg_function (single-threaded), at 1x4x128x128 and 1x16x128x128
// with the uncond attention of an SD1.x middle block (8 heads, 16x16 = 256 tokens); and the
// hook overhead of SAG + PAG + FreeU on a toy UNet step (examples/toy_unet.hpp).
// Counters: ours_us, torch_us, x_vs_torch (torch / ours); for the step: step_us, model_us
// (time inside the model's predict), overhead_pct (the rest, as % of the step).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../../../examples/toy_unet.hpp"
#include "bench_util.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/kernels/blur.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/post_cfg/sag.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

constexpr index_t heads = 8, grid = 16, tokens = grid * grid;

/// Softmax rows: attention probabilities (heads, tokens, tokens) of one uncond item.
tensor<float> probabilities(unsigned seed) {
    auto p = bench::random_tensor({heads, tokens, tokens}, seed);
    for (index_t r = 0; r < heads * tokens; ++r) {
        double z = 0;
        for (index_t j = 0; j < tokens; ++j) z += p[r * tokens + j] = std::exp(1.5f * p[r * tokens + j]);
        for (index_t j = 0; j < tokens; ++j) p[r * tokens + j] = static_cast<float>(p[r * tokens + j] / z);
    }
    return p;
}

#ifdef PATCHBAY_HAVE_TORCH
torch::Tensor to_torch(const tensor<float>& t) {
    std::vector<int64_t> s(t.shape().begin(), t.shape().end());
    return torch::from_blob(const_cast<float*>(t.data()), s, torch::kFloat32).clone();
}

// ComfyUI's gaussian_blur_2d, op for op.
torch::Tensor torch_blur(const torch::Tensor& img, int64_t ksize, double sigma) {
    const double half = (double(ksize) - 1) * 0.5;
    auto x = torch::linspace(-half, half, ksize);
    auto pdf = torch::exp(-0.5 * (x / sigma).pow(2));
    auto k1 = pdf / pdf.sum();
    auto k2 = torch::mm(k1.unsqueeze(1), k1.unsqueeze(0));
    k2 = k2.expand({img.size(-3), 1, ksize, ksize});
    auto padded = torch::nn::functional::pad(
        img, torch::nn::functional::PadFuncOptions({ksize / 2, ksize / 2, ksize / 2, ksize / 2}).mode(torch::kReflect));
    return torch::nn::functional::conv2d(padded, k2, torch::nn::functional::Conv2dFuncOptions().groups(img.size(-3)));
}

// ComfyUI's create_blur_map with its divisor search, op for op.
torch::Tensor torch_blur_map(const torch::Tensor& x0, const torch::Tensor& attn, double sigma, double threshold) {
    const auto hw1 = attn.size(1), hw2 = attn.size(2);
    const auto b = x0.size(0), lh = x0.size(2), lw = x0.size(3);
    auto a = attn.reshape({b, -1, hw1, hw2});
    auto mask = a.mean(1, false).sum(1, false) > threshold;
    const auto total = mask.size(-1);
    const auto x = sag::infer_token_grid(total, lh, lw); // same search as ComfyUI's Python loop
    mask = mask.reshape({b, x.rows, x.cols}).unsqueeze(1).to(attn.dtype());
    mask = torch::nn::functional::interpolate(
        mask, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{lh, lw}).mode(torch::kNearest));
    auto blurred = torch_blur(x0, 9, sigma);
    return blurred * mask + x0 * (1 - mask);
}
#endif

/// ours: key masses from the probabilities, then the masked blur.
void blur_map(benchmark::State& st, const std::vector<index_t>& dims) {
    const auto x0 = bench::random_tensor(dims, 1);
    const auto attn = probabilities(2);
    tensor<float> out(dims);
    std::vector<double> mass(static_cast<std::size_t>(tokens));
    sag::degrade_workspace<float> ws;
    auto ours = [&] {
        sag::key_mass_from_probabilities<float>(attn.as<3>(), 1, mass.data());
        sag::degrade_from_key_mass<float>(x0.as<4>(), mass.data(), {grid, grid}, 2.0, 1.0, out.as<4>(), ws);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours();
    const double t_ours = bench::best_time(ours, 15);
    st.counters["ours_us"] = t_ours * 1e6;
#ifdef PATCHBAY_HAVE_TORCH
    const auto tx = to_torch(x0), ta = to_torch(attn);
    const double t_torch = bench::best_time([&] {
        auto r = torch_blur_map(tx, ta, 2.0, 1.0);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 15);
    st.counters["torch_us"] = t_torch * 1e6;
    st.counters["x_vs_torch"] = t_torch / t_ours;
#endif
}

/// ours: the plain blur alone.
void blur_only(benchmark::State& st, const std::vector<index_t>& dims) {
    const auto x0 = bench::random_tensor(dims, 1);
    tensor<float> out(dims);
    kernels::blur_workspace<float> ws;
    auto ours = [&] {
        kernels::gaussian_blur_2d<float>(x0.as<4>(), 2.0, out.as<4>(), ws);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours();
    const double t_ours = bench::best_time(ours, 15);
    st.counters["ours_us"] = t_ours * 1e6;
#ifdef PATCHBAY_HAVE_TORCH
    const auto tx = to_torch(x0);
    const double t_torch = bench::best_time([&] {
        auto r = torch_blur(tx, 9, 2.0);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 15);
    st.counters["torch_us"] = t_torch * 1e6;
    st.counters["x_vs_torch"] = t_torch / t_ours;
#endif
}

/// ours: SAG's whole post-cfg arithmetic (the model's answer given), from recorded attention.
void post_cfg(benchmark::State& st, const std::vector<index_t>& dims) {
    const auto x = bench::random_tensor(dims, 1, 0.f, 3.f), u = bench::random_tensor(dims, 2),
               c = bench::random_tensor(dims, 3), sag_out = bench::random_tensor(dims, 4);
    const auto attn = probabilities(5);
    tensor<float> sigma({1}), cfg(dims);
    sigma.fill(2.f);
    const self_attention_guidance p{};
    state_t<self_attention_guidance> s{};
    sag::record<float>(s.attention, attention_site{unet_stage::middle, 0, 0, grid, grid}, attn.as<3>(), heads);
    const guidance_inputs<float, 4> in{x.as<4>(), sigma.as<1>(), 7.0, false, prediction_type::eps};
    // the model call is not timed (torch gets the answer for free too)
    auto model = [](view<const float, 4>, view<float, 4>) {};
    (void)sag_out;
    auto ours = [&] {
        kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), 7.0, cfg.as<4>());
        p.post_cfg_with(s, in, u.as<4>(), cfg.as<4>(), model);
        benchmark::DoNotOptimize(cfg.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours();
    const double t_ours = bench::best_time(ours, 15);
    st.counters["ours_us"] = t_ours * 1e6;
#ifdef PATCHBAY_HAVE_TORCH
    const auto tx = to_torch(x), tu = to_torch(u), tc = to_torch(c), ts = to_torch(sag_out), ta = to_torch(attn);
    const double t_torch = bench::best_time([&] {
        auto cfg_result = tu + (tc - tu) * 7.0;
        auto degraded = torch_blur_map(tu, ta, 2.0, 1.0);
        auto degraded_noised = degraded + tx - tu;
        auto r = cfg_result + (degraded - ts) * 0.5;
        benchmark::DoNotOptimize(degraded_noised.data_ptr());
        benchmark::DoNotOptimize(r.data_ptr());
    }, 15);
    st.counters["torch_us"] = t_torch * 1e6;
    st.counters["x_vs_torch"] = t_torch / t_ours;
#endif
}

/// The toy UNet behind a stopwatch: the time spent inside predict.
struct timed_model {
    using conditioning_type = examples::toy_unet_prompt;
    static constexpr bool calls_block_hooks = true;
    static constexpr bool calls_attention_hooks = true;
    examples::toy_unet* inner;
    double seconds = 0;
    template <class T>
    void predict(const model_call<conditioning_type, T, 4>& call, view<T, 4> out) {
        const double t0 = bench::thread_seconds();
        inner->predict(call, out);
        seconds += bench::thread_seconds() - t0;
    }
};

/// A guided step of the toy UNet with SAG + PAG + FreeU: everything outside predict is the
/// guider's and the patches' cost (cfg stage, SAG's mask and blur, the combinations).
void toy_step(benchmark::State& st, index_t size) {
    examples::toy_unet_config cfg;
    cfg.height = cfg.width = size;
    cfg.channels = 4;
    cfg.model_channels = 16;
    examples::toy_unet net(cfg);
    timed_model model{&net};
    guider<timed_model, self_attention_guidance, perturbed_attention_guidance, free_u> g(
        model, model_sampling::discrete("eps"), self_attention_guidance{}, perturbed_attention_guidance{},
        free_u{1.1, 1.2, 0.9, 0.2, cfg.model_channels});
    const auto pos = net.prompt(0), neg = net.negative_prompt();
    auto run = g.begin_run(&pos, &neg);
    const auto x = bench::random_tensor({1, cfg.channels, size, size}, 1, 0.f, 3.f);
    tensor<float> sigma({1}), out(x.shape());
    sigma.fill(3.f);
    const step_inputs<float, 4> step{x.as<4>(), sigma.as<1>(), 6.0};
    for (auto _ : st) g.denoise(run, step, out.as<4>());
    double best_step = 1e30, model_part = 0;
    for (int r = 0; r < 7; ++r) {
        model.seconds = 0;
        const double t0 = bench::thread_seconds();
        g.denoise(run, step, out.as<4>());
        const double t = bench::thread_seconds() - t0;
        if (t < best_step) best_step = t, model_part = model.seconds;
    }
    st.counters["step_us"] = best_step * 1e6;
    st.counters["model_us"] = model_part * 1e6;
    st.counters["overhead_pct"] = 100.0 * (best_step - model_part) / best_step;
}

void register_all() {
    for (const auto* name : {"1x4x128x128", "1x16x128x128"}) {
        const std::vector<index_t> dims = std::string(name) == "1x4x128x128" ? std::vector<index_t>{1, 4, 128, 128}
                                                                              : std::vector<index_t>{1, 16, 128, 128};
        benchmark::RegisterBenchmark((std::string("SAG_blur/") + name).c_str(),
                                     [dims](benchmark::State& st) { blur_only(st, dims); })
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark((std::string("SAG_blur_map/") + name).c_str(),
                                     [dims](benchmark::State& st) { blur_map(st, dims); })
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark((std::string("SAG_post_cfg/") + name).c_str(),
                                     [dims](benchmark::State& st) { post_cfg(st, dims); })
            ->Unit(benchmark::kMicrosecond);
    }
    for (index_t size : {32, 64})
        benchmark::RegisterBenchmark(("SAG+PAG+FreeU_toy_unet_step/" + std::to_string(size)).c_str(),
                                     [size](benchmark::State& st) { toy_step(st, size); })
            ->Unit(benchmark::kMillisecond);
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
