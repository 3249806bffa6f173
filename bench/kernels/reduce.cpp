// Benchmarks for kernels/reduce.hpp and kernels/elementwise.hpp beside the libtorch ops on the
// same data (when libtorch is installed). Counters: ours_us, torch_us, x_vs_torch (torch / ours).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>

#include "bench_util.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

using namespace patchbay;

namespace {

const std::vector<bench::latent_shape> kShapes{{"1x4x128x128", {1, 4, 128, 128}},
                                               {"1x16x128x128", {1, 16, 128, 128}},
                                               {"1x16x21x60x104", {1, 16, 21, 60, 104}}};

struct data {
    tensor<float> a, b, out;
#ifdef PATCHBAY_HAVE_TORCH
    torch::Tensor ta, tb;
#endif
    explicit data(const std::vector<index_t>& shape)
        : a(bench::random_tensor(shape, 1)), b(bench::random_tensor(shape, 2)), out(shape) {
#ifdef PATCHBAY_HAVE_TORCH
        torch::set_num_threads(1);
        std::vector<int64_t> s(shape.begin(), shape.end());
        ta = torch::from_blob(a.data(), s, torch::kFloat);
        tb = torch::from_blob(b.data(), s, torch::kFloat);
#endif
    }
    // kernels take (N, rest) views: the reductions are over everything but the batch
    view<const float, 2> flat_a() const { return view<const float, 2>(a.data(), {a.extent(0), a.size() / a.extent(0)}); }
    view<const float, 2> flat_b() const { return view<const float, 2>(b.data(), {b.extent(0), b.size() / b.extent(0)}); }
    view<float, 2> flat_out() { return view<float, 2>(out.data(), {out.extent(0), out.size() / out.extent(0)}); }
};

#ifdef PATCHBAY_HAVE_TORCH
#define PB_TORCH(expr) [&] { benchmark::DoNotOptimize(expr); }
#else
#define PB_TORCH(expr) nullptr
#endif

void sum_sq(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    double r[1] = {};
    bench::run_with_baseline(st, [&] { kernels::sample_sum_sq(d.flat_a(), r); benchmark::DoNotOptimize(r); },
                             PB_TORCH(d.ta.pow(2).sum()));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.a.size() * 4);
}

void mean_std(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    kernels::moments m[1];
    bench::run_with_baseline(st, [&] { kernels::sample_mean_std(d.flat_a(), 1, m); benchmark::DoNotOptimize(m); },
                             PB_TORCH(d.ta.std()));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.a.size() * 4 * 2);
}

void dot(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    double r[1] = {};
    bench::run_with_baseline(st, [&] { kernels::sample_dot(d.flat_a(), d.flat_b(), r); benchmark::DoNotOptimize(r); },
                             PB_TORCH((d.ta * d.tb).sum()));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.a.size() * 8);
}

void combine(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    bench::run_with_baseline(st, [&] { kernels::cfg_combine(d.flat_a(), d.flat_b(), 7.0, d.flat_out()); },
                             PB_TORCH(d.tb + (d.ta - d.tb) * 7.0));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.a.size() * 12);
}

void channel_norm(benchmark::State& st, std::vector<index_t> shape) {
    data d(shape);
    const index_t pixels = d.a.size() / (shape[0] * shape[1]);
    std::vector<float> acc(static_cast<std::size_t>(shape[0] * pixels));
    const view<const float, 3> v(d.a.data(), {shape[0], shape[1], pixels});
    auto keep = [&](index_t b, index_t p0, index_t len, const std::array<const float*, 1>& s) {
        std::copy_n(s[0], len, acc.data() + b * pixels + p0);
    };
    bench::run_with_baseline(st, [&] { kernels::reduce_channels<1>([](auto x) { return std::array{x * x}; }, keep, v); benchmark::DoNotOptimize(acc.data()); },
                             PB_TORCH(torch::norm(d.ta, 2, {1}, true)));
    st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * d.a.size() * 4);
}

int register_all() {
    for (const auto& s : kShapes) {
        benchmark::RegisterBenchmark((std::string("sample_sum_sq/") + s.name).c_str(), sum_sq, s.dims);
        benchmark::RegisterBenchmark((std::string("sample_mean_std/") + s.name).c_str(), mean_std, s.dims);
        benchmark::RegisterBenchmark((std::string("sample_dot/") + s.name).c_str(), dot, s.dims);
        benchmark::RegisterBenchmark((std::string("cfg_combine/") + s.name).c_str(), combine, s.dims);
        benchmark::RegisterBenchmark((std::string("channel_l2_sq/") + s.name).c_str(), channel_norm, s.dims);
    }
    return 0;
}
const int registered = register_all();

} // namespace

BENCHMARK_MAIN();
