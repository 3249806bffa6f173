// Benchmark: FreeU / FreeU_V2 output block patch (in place on h and hsp) vs libtorch written op
// for op as ComfyUI's nodes_freelunch.py (complex fftn, fftshift, mask, ifftshift, ifftn,
// real), single-threaded, at SD's 1280-channel 32x32 and 640-channel 64x64 blocks (h and hsp
// both that shape, model_channels 320). Counters: ours_us, torch_us, x_vs_torch (torch / ours),
// bytes (minimum traffic: FreeU reads and writes the first half of h, V2 also reads the second
// half for the channel mean; hsp read and written once), bound_us (streaming passes moving
// those bytes), x_bound (ours / bound), two_pass_us and x_two_pass (the floor of FreeU's passes:
// plain loops in this binary, floor_time), same_passes_us and x_same_passes (FreeU's own passes
// and arithmetic as plain loops, same_passes_time). Times are thread CPU time (the machine is
// shared).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "patchbay/patches/block/free_u.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
torch::Tensor torch_fourier_filter(const torch::Tensor& x, int64_t threshold, double scale) {
    auto x_freq = torch::fft::fftn(x.to(torch::kFloat), c10::nullopt, {-2, -1});
    x_freq = torch::fft::fftshift(x_freq, {-2, -1});
    const auto B = x_freq.size(0), C = x_freq.size(1), H = x_freq.size(2), W = x_freq.size(3);
    auto mask = torch::ones({B, C, H, W});
    const auto crow = H / 2, ccol = W / 2;
    mask.slice(2, crow - threshold, crow + threshold).slice(3, ccol - threshold, ccol + threshold).fill_(scale);
    x_freq = x_freq * mask;
    x_freq = torch::fft::ifftshift(x_freq, {-2, -1});
    auto x_filtered = torch::real(torch::fft::ifftn(x_freq, c10::nullopt, {-2, -1}));
    return x_filtered.to(x.scalar_type());
}

// ComfyUI's output_block_patch for one block whose channel count selects (b, s).
void torch_free_u(torch::Tensor& h, torch::Tensor& hsp, double b, double s, bool v2) {
    const auto half = h.size(1) / 2;
    if (!v2) {
        h.slice(1, 0, half).copy_(h.slice(1, 0, half) * b);
    } else {
        auto hidden_mean = h.mean(1).unsqueeze(1);
        const auto B = hidden_mean.size(0);
        auto hidden_max = std::get<0>(torch::max(hidden_mean.view({B, -1}), -1, true));
        auto hidden_min = std::get<0>(torch::min(hidden_mean.view({B, -1}), -1, true));
        hidden_mean = (hidden_mean - hidden_min.unsqueeze(2).unsqueeze(3)) /
                      (hidden_max - hidden_min).unsqueeze(2).unsqueeze(3);
        h.slice(1, 0, half).copy_(h.slice(1, 0, half) * ((b - 1) * hidden_mean + 1));
    }
    hsp = torch_fourier_filter(hsp, 1, s);
}

double torch_time(const std::vector<index_t>& dims, bool v2) {
    static std::map<std::pair<std::vector<index_t>, bool>, double> memo;
    auto& t = memo[{dims, v2}];
    if (t > 0) return t;
    torch::set_num_threads(1);
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto h0 = torch::randn(shape), hsp0 = torch::randn(shape);
    auto h = h0.clone(), hsp = hsp0.clone();
    t = bench::best_time([&] {
        torch_free_u(h, hsp, v2 ? 1.3 : 1.1, 0.9, v2);
        benchmark::DoNotOptimize(hsp.data_ptr());
    }, 10);
    return t;
}
#endif

double floor_time(index_t n, index_t plane, bool v2);
double same_passes_time(index_t channels, index_t rows, index_t cols, bool v2);

template <class P>
void run_ours(benchmark::State& st, const std::vector<index_t>& dims, bool restore_inputs) {
    constexpr bool v2 = P::is_v2;
    const auto h0 = bench::random_tensor(dims, 1), hsp0 = bench::random_tensor(dims, 2);
    auto h = h0, hsp = hsp0;
    const P p{};
    no_state state;
    workspace scratch; // the run's arena, as the dispatcher hands it to block hooks
    const block_site site{unet_stage::output, 0, dims[1], &scratch};
    double total = 0;
    for (auto _ : st) {
        // Same conditions as the libtorch baseline: repeated in place on the same buffers (values
        // drift, which costs nothing in float SIMD). With restore_inputs the buffers are reset
        // before each call (untimed), which also evicts them from the cache.
        if (restore_inputs) {
            std::memcpy(h.data(), h0.data(), sizeof(float) * static_cast<std::size_t>(h.size()));
            std::memcpy(hsp.data(), hsp0.data(), sizeof(float) * static_cast<std::size_t>(hsp.size()));
        }
        const double t0 = bench::thread_seconds();
        apply_output_block(p, state, site, h.template as<4>(), hsp.template as<4>());
        benchmark::DoNotOptimize(hsp.data());
        benchmark::ClobberMemory();
        const double dt = bench::thread_seconds() - t0;
        total += dt;
        st.SetIterationTime(dt);
    }
    const double ours = total / static_cast<double>(st.iterations());
    const index_t n = h.size();
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, v2);
#endif
    const double bound =
        (v2 ? bench::stream_time<2>(n / 2) : bench::stream_time<1>(n / 2)) + bench::stream_time<1>(n);
    bench::report(st, ours, bound, tt, v2 ? 4 : 3, n);
    bench::report_floor(st, ours, floor_time(n, dims[2] * dims[3], v2));
    bench::report_same_passes(st, ours, same_passes_time(dims[1], dims[2], dims[3], v2));
}

/// The floor of the passes FreeU makes, plain loops over buffers of the same sizes: h's scaled
/// half read and written in place (V2: after a reduction over all of h for the channel mean),
/// and each hsp plane reduced (the filter's four coefficients) and then read and written in
/// place. Best of 10, memoised.
double floor_time(index_t n, index_t plane, bool v2) {
    static std::map<std::pair<index_t, bool>, double> memo;
    auto& t = memo[{n, v2}];
    if (t > 0) return t;
    auto h = bench::random_tensor({n}, 4), hsp = bench::random_tensor({n}, 5);
    t = bench::best_time(
        [&] {
            if (v2) benchmark::DoNotOptimize(bench::reduce_pass<1>({h.data()}, n));
            bench::stream_pass<1, 1>({h.data()}, {h.data()}, n / 2);
            for (index_t p0 = 0; p0 < n; p0 += plane) {
                float* q = hsp.data() + p0;
                benchmark::DoNotOptimize(bench::reduce_pass<1>({q}, plane));
                bench::stream_pass<1, 1>({q}, {q}, plane);
            }
            benchmark::DoNotOptimize(hsp.data());
            benchmark::ClobberMemory();
        },
        10);
    return t;
}

/// FreeU's passes as plain loops with its arithmetic, on one item of `channels` planes of
/// rows x cols (cols a multiple of the lanes):
/// - V2: the channel mean (a running per-pixel sum, a channel at a time), its min and max, the
///   per-pixel weight (b - 1) m + 1;
/// - h's first half scaled in place (V2: by the weight; FreeU: by b);
/// - per hsp plane, as patchbay's direct filter: three weighted column sums (1, cos, sin of the
///   row's angle: one add and two multiply-adds per element), folded into rows A, B, C, then
///   hsp + A(w) + cos B(w) + sin C(w) written in place (one add and two multiply-adds).
/// The fold is a few operations per column and stands in for the real coefficients. Best of
/// 10, memoised.
double same_passes_time(index_t channels, index_t rows, index_t cols, bool v2) {
    static std::map<std::pair<std::array<index_t, 3>, bool>, double> memo;
    auto& t = memo[{{channels, rows, cols}, v2}];
    if (t > 0) return t;
    using V = simd::vec<float>;
    constexpr index_t W = static_cast<index_t>(simd::lanes<float>);
    const index_t plane = rows * cols, n = channels * plane;
    auto h = bench::random_tensor({n}, 4), hsp = bench::random_tensor({n}, 5);
    std::vector<float> mean(static_cast<std::size_t>(plane)), cr(static_cast<std::size_t>(rows)),
        sr(static_cast<std::size_t>(rows)), col(static_cast<std::size_t>(6 * cols));
    for (index_t r = 0; r < rows; ++r) {
        cr[static_cast<std::size_t>(r)] = static_cast<float>(std::cos(6.283185307179586 * static_cast<double>(r) / static_cast<double>(rows)));
        sr[static_cast<std::size_t>(r)] = static_cast<float>(std::sin(6.283185307179586 * static_cast<double>(r) / static_cast<double>(rows)));
    }
    float* s0 = col.data();
    float* s1 = s0 + cols;
    float* s2 = s1 + cols;
    float* ra = s2 + cols;
    float* rb = ra + cols;
    float* rc = rb + cols;
    const float b = v2 ? 1.3f : 1.1f, sc = 0.9f - 1.0f;
    t = bench::best_time(
        [&] {
            float* hp = h.data();
            float* xp = hsp.data();
            if (v2) {
                std::fill(mean.begin(), mean.end(), 0.0f);
                for (index_t c = 0; c < channels; ++c)
                    for (index_t p = 0; p < plane; p += W)
                        simd::store(mean.data() + p, V(simd::load<V>(mean.data() + p) + simd::load<V>(hp + c * plane + p)));
                const auto [lo, hi] = std::minmax_element(mean.begin(), mean.end());
                const float k = (b - 1.0f) / (*hi - *lo), k0 = 1.0f - k * *lo;
                for (index_t p = 0; p < plane; p += W)
                    simd::store(mean.data() + p, V(simd::load<V>(mean.data() + p) * k + k0));
                for (index_t c = 0; c < channels / 2; ++c)
                    for (index_t p = 0; p < plane; p += W)
                        simd::store(hp + c * plane + p, V(simd::load<V>(hp + c * plane + p) * simd::load<V>(mean.data() + p)));
            } else {
                for (index_t i = 0; i < n / 2; i += W) simd::store(hp + i, V(simd::load<V>(hp + i) * b));
            }
            for (index_t c = 0; c < channels; ++c) {
                float* q = xp + c * plane;
                // (a batch of columns down the plane, its sums in registers: faster here than
                // row by row with the sums in L1)
                for (index_t w = 0; w < cols; w += W) {
                    V a0(0.f), a1(0.f), a2(0.f);
                    for (index_t r = 0; r < rows; ++r) {
                        const V x = simd::load<V>(q + r * cols + w);
                        a0 = a0 + x;
                        a1 = simd::fma(x, V(cr[static_cast<std::size_t>(r)]), a1);
                        a2 = simd::fma(x, V(sr[static_cast<std::size_t>(r)]), a2);
                    }
                    simd::store(s0 + w, a0);
                    simd::store(s1 + w, a1);
                    simd::store(s2 + w, a2);
                }
                for (index_t w = 0; w < cols; w += W) {
                    const V a0 = simd::load<V>(s0 + w), a1 = simd::load<V>(s1 + w), a2 = simd::load<V>(s2 + w);
                    simd::store(ra + w, V(a0 * sc));
                    simd::store(rb + w, V((a1 + a2) * sc));
                    simd::store(rc + w, V((a2 - a1) * sc));
                }
                for (index_t r = 0; r < rows; ++r) {
                    const V cv(cr[static_cast<std::size_t>(r)]), sv(sr[static_cast<std::size_t>(r)]);
                    for (index_t w = 0; w < cols; w += W) {
                        V y = simd::load<V>(q + r * cols + w) + simd::load<V>(ra + w);
                        y = simd::fma(cv, simd::load<V>(rb + w), y);
                        y = simd::fma(sv, simd::load<V>(rc + w), y);
                        simd::store(q + r * cols + w, y);
                    }
                }
            }
            benchmark::DoNotOptimize(hp);
            benchmark::DoNotOptimize(xp);
            benchmark::ClobberMemory();
        },
        10);
    return t;
}

/// The skip filter alone: direct four-bin path vs the FFT path (kernels/fft.hpp).
void run_filter(benchmark::State& st, const std::vector<index_t>& dims, bool fft) {
    const auto x = bench::random_tensor(dims, 3);
    tensor<float> y(dims);
    workspace ws;
    for (auto _ : st) {
        if (fft) free_u_detail::fourier_filter_fft<float>(x.as<4>(), y.as<4>(), 0.9, ws);
        else free_u_detail::fourier_filter<float>(x.as<4>(), y.as<4>(), 0.9, ws);
        benchmark::DoNotOptimize(y.data());
    }
}

const std::vector<std::pair<const char*, std::vector<index_t>>> shapes{{"1x1280x32x32", {1, 1280, 32, 32}},
                                                                       {"1x640x64x64", {1, 640, 64, 64}}};

const int registered = [] {
    for (const auto& [name, dims] : shapes) {
        for (bool restore : {false, true}) {
            const std::string suffix = restore ? "/restored" : "";
            benchmark::RegisterBenchmark((std::string("FreeU/") + name + suffix).c_str(),
                                         [d = dims, restore](benchmark::State& s) { run_ours<free_u>(s, d, restore); })
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond);
            benchmark::RegisterBenchmark((std::string("FreeU_V2/") + name + suffix).c_str(),
                                         [d = dims, restore](benchmark::State& s) { run_ours<free_u_v2>(s, d, restore); })
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond);
        }
        benchmark::RegisterBenchmark((std::string("FreeU_filter_direct/") + name).c_str(),
                                     [d = dims](benchmark::State& s) { run_filter(s, d, false); })
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark((std::string("FreeU_filter_fft/") + name).c_str(),
                                     [d = dims](benchmark::State& s) { run_filter(s, d, true); })
            ->Unit(benchmark::kMicrosecond);
    }
    return 0;
}();

} // namespace

BENCHMARK_MAIN();
