// patchbay benchmarks: shared shapes, data and the bandwidth-bound reference.
#pragma once

#include <array>
#include <cstring>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "patchbay/core/tensor.hpp"

namespace patchbay::bench {

/// A deterministic tensor of normal values.
inline tensor<float> random_tensor(std::vector<index_t> shape, unsigned seed, float mean = 0.f,
                                   float stddev = 1.f) {
    tensor<float> t(std::move(shape));
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(mean, stddev);
    for (index_t i = 0; i < t.size(); ++i) t[i] = d(rng);
    return t;
}

/// Latent shapes of the kernel and patch benchmarks (4-D as 5-D with T = 1 is not used:
/// 4-D shapes have a zero T entry).
struct latent_shape {
    const char* name;
    std::vector<index_t> dims;
};
inline const std::vector<latent_shape>& latent_shapes() {
    static const std::vector<latent_shape> s{{"1x4x64x64", {1, 4, 64, 64}},
                                             {"1x4x128x128", {1, 4, 128, 128}},
                                             {"1x16x128x128", {1, 16, 128, 128}},
                                             {"1x16x21x60x104", {1, 16, 21, 60, 104}}};
    return s;
}

/// The streaming reference: read `reads` buffers of n floats and write one, once.
inline void stream_pass(const std::vector<const float*>& in, float* out, index_t n) {
    if (in.empty()) {
        std::memset(out, 0, static_cast<std::size_t>(n) * sizeof(float));
        return;
    }
    for (index_t i = 0; i < n; ++i) {
        float s = 0.f;
        for (const float* p : in) s += p[i];
        out[i] = s;
    }
}

} // namespace patchbay::bench

#include <algorithm>
#include <chrono>

namespace patchbay::bench {

/// Median seconds per call of fn over a few timed batches (for the baseline column that
/// runs beside a Google Benchmark loop in the same binary).
template <class F>
double seconds_per_call(F&& fn, double min_seconds = 0.05) {
    using clock = std::chrono::steady_clock;
    fn(); // warm up
    int reps = 1;
    for (;;) {
        const auto t0 = clock::now();
        for (int i = 0; i < reps; ++i) fn();
        const double dt = std::chrono::duration<double>(clock::now() - t0).count();
        if (dt > min_seconds / 5 || reps > (1 << 20)) break;
        reps *= 2;
    }
    std::vector<double> samples;
    for (int k = 0; k < 5; ++k) {
        const auto t0 = clock::now();
        for (int i = 0; i < reps; ++i) fn();
        samples.push_back(std::chrono::duration<double>(clock::now() - t0).count() / reps);
    }
    std::sort(samples.begin(), samples.end());
    return samples[2];
}

/// Runs `ours` in the benchmark loop and reports, as counters, our microseconds per call,
/// the baseline's (when given), and the speed-up (baseline / ours).
template <class Ours, class Baseline>
void run_with_baseline(benchmark::State& state, Ours&& ours, Baseline&& baseline) {
    for (auto _ : state) {
        ours();
        benchmark::ClobberMemory();
    }
    const double ours_s = seconds_per_call(ours);
    state.counters["ours_us"] = ours_s * 1e6;
    if constexpr (!std::is_same_v<std::decay_t<Baseline>, std::nullptr_t>) {
        const double base_s = seconds_per_call(baseline);
        state.counters["torch_us"] = base_s * 1e6;
        state.counters["speedup"] = base_s / ours_s;
    }
}

} // namespace patchbay::bench
