// Benchmark: Mahiro (post-CFG) vs a libtorch implementation written op for op as ComfyUI's
// nodes_mahiro.py, single-threaded. Counters: ours_us, torch_us, x_vs_torch (torch / ours),
// bytes (minimum traffic: read cond, uncond, cfg; write the result), bound_us (one
// streaming pass over those bytes), x_bound (ours / bound), two_pass_us and
// x_two_pass (the floor of its two passes: plain loops in this binary, bench::two_pass_time),
// same_passes_us and x_same_passes (its own passes, per-pixel sums included, as plain loops).
#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's Mahiro, op for op.
torch::Tensor torch_mahiro(const torch::Tensor& cfg, const torch::Tensor& cond, const torch::Tensor& uncond,
                           double scale) {
    auto leap = cond * scale;
    auto u_leap = uncond * scale;
    auto merge = (leap + cfg) / 2;
    auto normu = torch::sqrt(u_leap.abs()) * u_leap.sign();
    auto normm = torch::sqrt(merge.abs()) * merge.sign();
    auto sim = torch::nn::functional::cosine_similarity(
        normu, normm, torch::nn::functional::CosineSimilarityFuncOptions().dim(1)).mean();
    auto simsc = 2 * (sim + 1);
    return (simsc * cfg + (4 - simsc) * leap) / 4;
}

double torch_time(const std::vector<index_t>& dims) {
    static std::map<std::vector<index_t>, double> memo;
    auto& t = memo[dims];
    if (t > 0) return t;
    torch::set_num_threads(1);
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto f = torch::randn(shape), c = torch::randn(shape), u = torch::randn(shape);
    t = bench::best_time([&] {
        auto r = torch_mahiro(f, c, u, 7.0);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 30);
    return t;
}
#endif

/// Mahiro's passes as plain loops, nothing of patchbay's kernels: per tile of 1024 pixels of each
/// item, the three per-pixel channel sums (one channel at a time, the sums in L1 arrays), then
/// each pixel's cosine summed; then the write pass over cfg, backward. The same passes as the
/// patch, so the same reads, roots and quotients, written plainly. Best of 20.
double same_passes_time(index_t items, index_t channels, index_t pixels) {
    using V = simd::vec<float>;
    constexpr index_t W = static_cast<index_t>(simd::lanes<float>), tile = 1024;
    const index_t n = items * channels * pixels;
    bench::stream_buffers<3, 1> b(n);
    const float* cond = b.in[0];
    const float* uncond = b.in[1];
    float* cfg = b.bufs[2].data();
    alignas(64) float s0[tile], s1[tile], s2[tile];
    const float s = 7.0f;
    auto once = [&] {
        double total = 0;
        for (index_t it = 0; it < items; ++it)
            for (index_t p0 = 0; p0 < pixels; p0 += tile) {
                const index_t len = std::min(tile, pixels - p0); // (a multiple of W in every shape)
                for (index_t j = 0; j < len; j += W) {
                    simd::store(s0 + j, V(0.f));
                    simd::store(s1 + j, V(0.f));
                    simd::store(s2 + j, V(0.f));
                }
                for (index_t ch = 0; ch < channels; ++ch) {
                    const index_t at = (it * channels + ch) * pixels + p0;
                    for (index_t j = 0; j < len; j += W) {
                        const V us = simd::load<V>(uncond + at + j) * s;
                        const V merge = (simd::load<V>(cond + at + j) * s + simd::load<V>(cfg + at + j)) * 0.5f;
                        simd::store(s0 + j, V(simd::load<V>(s0 + j) + simd::signed_sqrt(us * merge)));
                        simd::store(s1 + j, V(simd::load<V>(s1 + j) + simd::abs(us)));
                        simd::store(s2 + j, V(simd::load<V>(s2 + j) + simd::abs(merge)));
                    }
                }
                V acc(0.f);
                const V eps2(1e-16f);
                for (index_t j = 0; j < len; j += W)
                    acc = acc + simd::load<V>(s0 + j) / simd::sqrt(V(simd::max(simd::load<V>(s1 + j), eps2) *
                                                                    simd::max(simd::load<V>(s2 + j), eps2)));
                total += static_cast<double>(simd::hsum(acc));
            }
        const float w = static_cast<float>(2.0 * (total / static_cast<double>(items * pixels) + 1.0)), k = 4.0f - w;
        for (index_t i = n; i > 0;) {
            i -= W;
            simd::store(cfg + i, V((simd::load<V>(cfg + i) * w + (simd::load<V>(cond + i) * s) * k) * 0.25f));
        }
    };
    return bench::best_time([&] {
        once();
        benchmark::ClobberMemory();
    }, 20);
}

template <std::size_t R>
void run_ours(benchmark::State& st, const std::vector<index_t>& dims) {
    auto x = bench::random_tensor(dims, 1), c = bench::random_tensor(dims, 2),
         u = bench::random_tensor(dims, 3), f = bench::random_tensor(dims, 4);
    tensor<float> sigma({dims[0]});
    sigma.fill(1.0f);
    guidance_inputs<float, R> in;
    in.x = x.template as<R>();
    in.sigma = sigma.template as<1>();
    in.cond_scale = 7.0;
    no_state state;
    const mahiro p{};
    const auto cv = c.template as<R>();
    const auto uv = u.template as<R>();
    const auto fv = f.template as<R>();
    const double t0 = bench::thread_seconds();
    for (auto _ : st) {
        apply_post_cfg(p, state, in, cv, uv, fv);
        benchmark::DoNotOptimize(f.data());
        benchmark::ClobberMemory();
    }
    const double ours = (bench::thread_seconds() - t0) / static_cast<double>(st.iterations());
    const index_t n = c.size();
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    bench::report(st, ours, bench::stream_time<3>(n), tt, 4, n);
    // the similarity's terms (a signed root and two magnitudes per element, a quotient and a
    // root per pixel), then denoised rewritten
    bench::report_floor(st, ours, bench::two_pass_time<3, 2, true>(n, n / dims[1], [](auto cp, auto up, auto fp) {
        const auto us = up * 7.0f, merge = (cp * 7.0f + fp) * 0.5f;
        return std::array{simd::signed_sqrt(us * merge), simd::abs(us), simd::abs(merge)};
    }));
    // the same passes as plain loops, per-pixel channel sums included
    const double same = same_passes_time(dims[0], dims[1], n / (dims[0] * dims[1]));
    bench::report_same_passes(st, ours, same);
}

void register_all() {
    for (const auto& s : bench::latent_shapes()) {
        const std::string name = std::string("Mahiro/") + s.name;
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
