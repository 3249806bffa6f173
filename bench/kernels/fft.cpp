// Benchmarks of kernels/fft.hpp beside FFTW3 (fftwf_plan_many_dft, FFTW_MEASURE) and libtorch's
// torch::fft::fft2, all single-threaded, forward complex-to-complex, out of place.
//
// BM_fft_compare/<shape> times the three back to back in every iteration and reports the best
// thread-CPU time per batch, ours_us / fftw_us / torch_us, and the ratios ours_over_fftw,
// ours_over_torch.
// BM_fft_ours / BM_fft_fftw / BM_fft_torch time each alone.
#include <benchmark/benchmark.h>

#include <ctime>
#include <complex>
#include <memory>
#include <random>
#include <vector>

#include "patchbay/kernels/fft.hpp"

#ifdef PATCHBAY_HAVE_FFTW
#include <fftw3.h>
#endif
#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using patchbay::index_t;
using cf = std::complex<float>;

struct fft_case {
    const char* name;
    index_t count, H, W;
};
const fft_case cases[] = {{"1280x32x32", 1280, 32, 32},
                          {"640x64x64", 640, 64, 64},
                          {"16x128x128", 16, 128, 128},
                          {"16x96x80", 16, 96, 80},
                          {"16x5x7", 16, 5, 7}};

std::vector<cf> random_input(index_t n) {
    std::mt19937 rng(42);
    std::normal_distribution<float> d;
    std::vector<cf> v(static_cast<std::size_t>(n));
    for (auto& z : v) {
        const float re = d(rng);
        z = {re, d(rng)};
    }
    return v;
}

struct ours_runner {
    std::shared_ptr<const patchbay::kernels::fft_plan_2d> plan;
    patchbay::workspace ws;
    std::vector<cf> in, out;
    index_t count;
    explicit ours_runner(const fft_case& c)
        : plan(patchbay::kernels::fft_plan<float>(c.H, c.W)),
          in(random_input(c.count * c.H * c.W)), out(in.size()), count(c.count) {}
    void run() {
        plan->execute(in.data(), out.data(), count, patchbay::kernels::fft_direction::forward, ws);
        benchmark::DoNotOptimize(out.data());
    }
};

#ifdef PATCHBAY_HAVE_FFTW
struct fftw_runner {
    fftwf_complex *in = nullptr, *out = nullptr;
    fftwf_plan plan = nullptr;
    explicit fftw_runner(const fft_case& c) {
        const index_t n = c.count * c.H * c.W;
        in = fftwf_alloc_complex(static_cast<std::size_t>(n));
        out = fftwf_alloc_complex(static_cast<std::size_t>(n));
        int dims[2] = {static_cast<int>(c.H), static_cast<int>(c.W)};
        const int dist = static_cast<int>(c.H * c.W);
        plan = fftwf_plan_many_dft(2, dims, static_cast<int>(c.count), in, nullptr, 1, dist, out,
                                   nullptr, 1, dist, FFTW_FORWARD, FFTW_MEASURE);
        const auto src = random_input(n); // after planning: MEASURE overwrites the arrays
        for (index_t i = 0; i < n; ++i) {
            in[i][0] = src[static_cast<std::size_t>(i)].real();
            in[i][1] = src[static_cast<std::size_t>(i)].imag();
        }
    }
    ~fftw_runner() {
        fftwf_destroy_plan(plan);
        fftwf_free(in);
        fftwf_free(out);
    }
    fftw_runner(const fftw_runner&) = delete;
    fftw_runner& operator=(const fftw_runner&) = delete;
    void run() {
        fftwf_execute(plan);
        benchmark::DoNotOptimize(out);
    }
};
#endif

#ifdef PATCHBAY_HAVE_TORCH
struct torch_runner {
    torch::Tensor in;
    explicit torch_runner(const fft_case& c) {
        torch::set_num_threads(1);
        torch::manual_seed(42);
        in = torch::randn({c.count, c.H, c.W}, torch::kComplexFloat);
    }
    void run() {
        auto out = torch::fft::fft2(in);
        benchmark::DoNotOptimize(out.data_ptr());
    }
};
#endif

template <class R>
void bm_alone(benchmark::State& state, const fft_case& c) {
    R r(c);
    r.run();
    for (auto _ : state) r.run();
    state.SetItemsProcessed(state.iterations() * c.count);
}

/// Thread CPU time in microseconds: the machine is shared, and wall time would count the
/// time slices other processes take.
double thread_cpu_us() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

/// CPU microseconds per call of r.run(), timing `reps` calls in a row.
template <class R>
double time_block(R& r, int reps) {
    const double t0 = thread_cpu_us();
    for (int i = 0; i < reps; ++i) r.run();
    return (thread_cpu_us() - t0) / reps;
}

void bm_compare(benchmark::State& state, const fft_case& c) {
    ours_runner ours(c);
    ours.run();
    // about 100 us of work per timed block, so tiny transforms are not timer-bound
    const int reps = static_cast<int>(std::max<index_t>(1, 20000 / (c.count * c.H * c.W)));
#ifdef PATCHBAY_HAVE_FFTW
    fftw_runner fftw(c);
    fftw.run();
#endif
#ifdef PATCHBAY_HAVE_TORCH
    torch_runner tr(c);
    tr.run();
#endif
    // best block per implementation (least disturbed by the other engineers' jobs)
    double t_ours = 1e300, t_fftw = 1e300, t_torch = 1e300;
    for (auto _ : state) {
        t_ours = std::min(t_ours, time_block(ours, reps));
#ifdef PATCHBAY_HAVE_FFTW
        t_fftw = std::min(t_fftw, time_block(fftw, reps));
#endif
#ifdef PATCHBAY_HAVE_TORCH
        t_torch = std::min(t_torch, time_block(tr, reps));
#endif
    }
    state.counters["ours_us"] = t_ours;
#ifdef PATCHBAY_HAVE_FFTW
    state.counters["fftw_us"] = t_fftw;
    state.counters["ours_over_fftw"] = t_ours / t_fftw;
#endif
#ifdef PATCHBAY_HAVE_TORCH
    state.counters["torch_us"] = t_torch;
    state.counters["ours_over_torch"] = t_ours / t_torch;
#endif
    (void)t_fftw;
    (void)t_torch;
}

const bool registered = [] {
    for (const fft_case& c : cases) {
        benchmark::RegisterBenchmark((std::string("BM_fft_compare/") + c.name).c_str(),
                                     [c](benchmark::State& s) { bm_compare(s, c); })
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark((std::string("BM_fft_ours/") + c.name).c_str(),
                                     [c](benchmark::State& s) { bm_alone<ours_runner>(s, c); })
            ->Unit(benchmark::kMicrosecond);
#ifdef PATCHBAY_HAVE_FFTW
        benchmark::RegisterBenchmark((std::string("BM_fft_fftw/") + c.name).c_str(),
                                     [c](benchmark::State& s) { bm_alone<fftw_runner>(s, c); })
            ->Unit(benchmark::kMicrosecond);
#endif
#ifdef PATCHBAY_HAVE_TORCH
        benchmark::RegisterBenchmark((std::string("BM_fft_torch/") + c.name).c_str(),
                                     [c](benchmark::State& s) { bm_alone<torch_runner>(s, c); })
            ->Unit(benchmark::kMicrosecond);
#endif
    }
    return true;
}();

} // namespace

BENCHMARK_MAIN();
