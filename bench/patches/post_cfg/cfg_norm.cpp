// Benchmark: CFGNorm vs a libtorch implementation written op for op as ComfyUI's cfg_norm
// (post-CFG) and cfg_norm_pre (pre_cfg = true, a sampler cfg function; plus the sampler's
// x - cond arguments and x - result), single-threaded. Counters: ours_us, torch_us,
// x_vs_torch (torch / ours), bytes (minimum traffic; post: read cond and denoised, write
// denoised; pre: read x, cond, uncond, write denoised), bound_us (one streaming pass over
// those bytes), x_bound (ours / bound); pre_cfg also two_pass_us and x_two_pass (the floor of
// its passes: plain loops in this binary, bench::channel_map_time), and up to 8 channels
// same_passes_us and x_same_passes (its own passes and arithmetic as plain loops).
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's cfg_norm (post-CFG), op for op.
torch::Tensor torch_cfg_norm(const torch::Tensor& cond_p, const torch::Tensor& pred_text_, double strength) {
    auto norm_full_cond = torch::norm(cond_p, 2, {1}, true);
    auto norm_pred_text = torch::norm(pred_text_, 2, {1}, true);
    auto scale = (norm_full_cond / (norm_pred_text + 1e-8)).clamp(0.0, 1.0);
    return pred_text_ * scale * strength;
}

// ComfyUI's cfg_norm_pre (cfg function), op for op, with the sampler's glue.
torch::Tensor torch_cfg_norm_pre(const torch::Tensor& x, const torch::Tensor& cond_den, const torch::Tensor& uncond_den,
                                 double cond_scale, double strength) {
    auto cond = x - cond_den;
    auto uncond = x - uncond_den;
    auto comb = uncond + cond_scale * (cond - uncond);
    auto cond_norm = torch::linalg::vector_norm(cond, 2, {1}, true, c10::nullopt);
    auto comb_norm = torch::linalg::vector_norm(comb, 2, {1}, true, c10::nullopt);
    auto rescale = torch::where(comb_norm > 0, cond_norm / comb_norm.clamp_min(1e-12), torch::ones_like(comb_norm));
    auto rescaled = comb * rescale;
    if (strength != 1.0) rescaled = strength * rescaled + (1.0 - strength) * comb;
    return x - rescaled;
}

double torch_time(const std::vector<index_t>& dims, bool pre) {
    static std::map<std::pair<std::vector<index_t>, bool>, double> memo;
    auto& t = memo[{dims, pre}];
    if (t > 0) return t;
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape), c = torch::randn(shape), u = torch::randn(shape);
    auto d = u + 7.0 * (c - u);
    t = bench::best_time([&] {
        auto r = pre ? torch_cfg_norm_pre(x, c, u, 7.0, 1.0) : torch_cfg_norm(c, d, 1.0);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
    return t;
}
#endif

/// CFGNorm pre_cfg's passes as plain loops, its arithmetic included, for at most 8 channels:
/// per batch of pixels, every channel's x, cond and uncond loaded once and held, the two
/// squared channel norms summed (|x - cond|^2 and |x - cfg|^2), one quotient and one root for
/// the factor, then every channel written. Best of 20, memoised.
double same_passes_time(index_t channels, index_t pixels) {
    static std::map<std::pair<index_t, index_t>, double> memo;
    auto& t = memo[{channels, pixels}];
    if (t > 0) return t;
    using V = simd::vec<float>;
    constexpr index_t W = static_cast<index_t>(simd::lanes<float>);
    bench::stream_buffers<3, 1> b(channels * pixels);
    const float s = 7.0f;
    const V tiny2(1e-24f);
    t = bench::best_time(
        [&] {
            for (index_t j = 0; j + W <= pixels; j += W) { // (pixels a multiple of the lanes)
                std::array<V, 8> hx, hc, hu;
                V n0(0.f), n1(0.f);
                for (index_t ch = 0; ch < channels; ++ch) {
                    const auto k = static_cast<std::size_t>(ch);
                    const index_t at = ch * pixels + j;
                    hx[k] = simd::load<V>(b.in[0] + at);
                    hc[k] = simd::load<V>(b.in[1] + at);
                    hu[k] = simd::load<V>(b.in[2] + at);
                    const V dc = hx[k] - hc[k], dg = hx[k] - (hu[k] + (hc[k] - hu[k]) * s);
                    n0 = n0 + dc * dc;
                    n1 = n1 + dg * dg;
                }
                const V f = simd::sqrt(V(n0 / simd::max(n1, tiny2)));
                for (index_t ch = 0; ch < channels; ++ch) {
                    const auto k = static_cast<std::size_t>(ch);
                    simd::store(b.out[0] + ch * pixels + j, V(hx[k] - (hx[k] - (hu[k] + (hc[k] - hu[k]) * s)) * f));
                }
            }
            benchmark::DoNotOptimize(b.out[0]);
            benchmark::ClobberMemory();
        },
        20);
    return t;
}

template <std::size_t R>
void run(benchmark::State& st, const std::vector<index_t>& dims, bool pre) {
    auto x = bench::random_tensor(dims, 1, 0.f, 2.f), c = bench::random_tensor(dims, 2),
         u = bench::random_tensor(dims, 3);
    tensor<float> sigma({dims[0]}), out(dims);
    sigma.fill(1.0f);
    kernels::cfg_combine<float, R>(c.template as<R>(), u.template as<R>(), 7.0, out.template as<R>());
    const guidance_inputs<float, R> in{x.template as<R>(), sigma.template as<1>(), 7.0, false, prediction_type::eps};
    no_state state;
    const cfg_norm p{1.0, pre};
    const auto cv = c.template as<R>();
    const auto uv = u.template as<R>();
    const auto ov = out.template as<R>();
    // post-CFG rewrites denoised in place; with strength 1 repeated calls stay in range
    auto ours_fn = [&] {
        if (pre) apply_cfg_function(p, state, in, cv, uv, ov);
        else apply_post_cfg(p, state, in, cv, uv, ov);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours_fn();
    const index_t n = c.size();
    const double ours = bench::best_time(ours_fn, 20);
    const double bound = pre ? bench::stream_time<3>(n) : bench::stream_time<2>(n);
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, pre);
#endif
    bench::report(st, ours, bound, tt, pre ? 4 : 3, n);
    if (pre) {
        // the floor of its passes: the channel map over x, cond, uncond (tiles as the kernel's:
        // 192 KiB of input, at most 1024 pixels, a multiple of 64)
        const index_t channels = dims[1], pixels = n / (dims[0] * channels);
        const index_t tile = std::max<index_t>(std::min<index_t>(196608 / (channels * 3 * 4), 1024) / 64 * 64, 64);
        bench::report_floor(st, ours, bench::channel_map_time<3>(channels, pixels, tile));
        if (channels <= 8) bench::report_same_passes(st, ours, same_passes_time(channels, pixels));
    }
}

void register_all() {
    for (bool pre : {false, true})
        for (const auto& s : bench::latent_shapes()) {
            const std::string name = std::string(pre ? "CFGNorm_pre_cfg/" : "CFGNorm/") + s.name;
            const auto dims = s.dims;
            benchmark::RegisterBenchmark(name.c_str(), [dims, pre](benchmark::State& st) {
                if (dims.size() == 4) run<4>(st, dims, pre);
                else run<5>(st, dims, pre);
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
