// patchbay benchmarks: shared shapes, data, thread-CPU timing, the bandwidth-bound reference
// and the counters every benchmark reports (ours_us, torch_us, x_vs_torch; patches also bytes,
// bound_us, x_bound).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "patchbay/core/config.hpp"
#include "patchbay/core/isa.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::bench {

/// The SIMD variants in every benchmark's context (its console header and JSON "context"):
/// what the built-in patches run ("simd", the dispatched one in a build with
/// patchbay::dispatch) and what the benchmark's own code is compiled for ("simd_compiled").
inline const bool simd_in_context = [] {
    benchmark::AddCustomContext("simd", std::string(simd_arch_name()));
    benchmark::AddCustomContext("simd_compiled", std::string(compiled_simd_name()));
    return true;
}();

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

/// CPU time of the calling thread in seconds (the machine is shared; wall time would count
/// other processes' work).
inline double thread_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Best of `reps` thread-CPU timings of fn (after one untimed warm-up call), in seconds.
inline double best_time(const std::function<void()>& fn, int reps) {
    fn();
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const double t0 = thread_seconds();
        fn();
        best = std::min(best, thread_seconds() - t0);
    }
    return best;
}

/// One streaming pass: read K buffers of n floats, write the sum to O (the bandwidth bound of
/// a patch that must read K tensors and write O). K and O are compile-time constants so the
/// loop is vectorised like the patch kernels. Backward: last element first.
template <int K, int O = 1, bool Backward = false>
void stream_pass(const std::array<const float*, K>& in, const std::array<float*, O>& out, index_t n) {
    static_assert(K >= 1 && O >= 1, "stream_pass reads and writes at least one buffer");
    auto one = [&](index_t i) {
        float s = in[0][i];
        for (int k = 1; k < K; ++k) s += in[static_cast<std::size_t>(k)][i];
        for (int o = 0; o < O; ++o) out[static_cast<std::size_t>(o)][i] = s;
    };
    if constexpr (Backward)
        for (index_t i = n; i-- > 0;) one(i);
    else
        for (index_t i = 0; i < n; ++i) one(i);
}
template <int K>
void stream_pass(const std::array<const float*, K>& in, float* PATCHBAY_RESTRICT out, index_t n) {
    stream_pass<K, 1>(in, std::array<float*, 1>{out}, n);
}

/// K input buffers and O output buffers of n floats (deterministic data).
template <int K, int O>
struct stream_buffers {
    std::vector<tensor<float>> bufs;
    std::array<const float*, K> in{};
    std::array<float*, O> out{};
    explicit stream_buffers(index_t n) {
        for (int i = 0; i < K + O; ++i) bufs.push_back(random_tensor({n}, 100u + static_cast<unsigned>(i)));
        for (int i = 0; i < K; ++i) in[static_cast<std::size_t>(i)] = bufs[static_cast<std::size_t>(i)].data();
        for (int i = 0; i < O; ++i) out[static_cast<std::size_t>(i)] = bufs[static_cast<std::size_t>(K + i)].data();
    }
};

/// Best time of stream_pass<K, O> over n floats, memoised per n (best of 20).
template <int K, int O = 1>
double stream_time(index_t n) {
    static std::map<index_t, double> memo;
    auto& t = memo[n];
    if (t > 0) return t;
    stream_buffers<K, O> b(n);
    t = best_time(
        [&] {
            stream_pass<K, O>(b.in, b.out, n);
            benchmark::DoNotOptimize(b.out[0]);
            benchmark::ClobberMemory();
        },
        20);
    return t;
}

template <class Terms, class V, std::size_t... I>
auto terms_result(std::index_sequence<I...>) -> decltype(std::declval<Terms&>()((static_cast<void>(I), std::declval<V>())...));

/// A patch's first pass as a plain loop: over Read buffers of n floats, terms(v0, v1, ...)
/// returns K per-element terms (batches, or floats in the tail) and each is summed, in U
/// independent sets of register sums. The arithmetic a two-pass patch's statistic needs, with
/// no patchbay kernel around it.
template <int Read, index_t U = 2, class Terms>
float terms_pass(const std::array<const float*, Read>& in, index_t n, Terms terms) {
    using V = simd::vec<float>;
    constexpr index_t W = static_cast<index_t>(simd::lanes<float>);
    auto element = [&](auto load, auto& acc) {
        const auto t = [&]<std::size_t... I>(std::index_sequence<I...>) {
            return terms(load(in[I])...);
        }(std::make_index_sequence<static_cast<std::size_t>(Read)>{});
        for (std::size_t k = 0; k < t.size(); ++k) acc[k] += t[k];
    };
    constexpr std::size_t K = std::tuple_size_v<decltype(terms_result<Terms, V>(std::make_index_sequence<Read>{}))>;
    std::array<std::array<V, K>, U> acc;
    for (auto& a : acc) a.fill(V(0.f));
    index_t i = 0;
    for (; i + U * W <= n; i += U * W)
        for (index_t u = 0; u < U; ++u)
            element([&](const float* p) { return simd::load<V>(p + i + u * W); }, acc[static_cast<std::size_t>(u)]);
    std::array<float, K> rest{};
    for (; i < n; ++i) element([&](const float* p) { return p[i]; }, rest);
    double total = 0;
    for (const auto& a : acc)
        for (const V& v : a) total += simd::hsum(v);
    for (float r : rest) total += r;
    return static_cast<float>(total);
}

/// A plain SIMD reduction over K buffers of n floats (four independent batch sums, no patchbay
/// kernel): the first pass of a patch that needs a whole-tensor statistic before it writes.
template <int K>
float reduce_pass(const std::array<const float*, K>& in, index_t n) {
    return terms_pass<K, 4>(in, n, [](auto... v) { return std::array{(... + v)}; });
}

/// two_pass_time's default first pass: reduce_pass, the plain sum of the inputs (a floor that
/// only reads).
struct plain_sum {};

/// The floor of a two-pass patch, measured in the same binary: best time over n floats of a
/// plain reduction reading Read buffers (reduce_pass; given `terms`, terms_pass: the patch's
/// own per-element arithmetic) followed by a streaming pass reading Write buffers (the first
/// Write of the Read ones) and writing one
/// (InPlace: the first input, as a patch that rewrites one of its inputs), the second pass run
/// forward or backward, whichever is faster here (patchbay's two-pass patches run it backward).
/// pixels > 0: the first pass also takes a quotient and a square root per pixel over three
/// cached per-pixel sums, d / sqrt(a b) (Mahiro's channel cosine, computed per column tile).
/// Memoised per n, pixels and terms type.
template <int Read, int Write, bool InPlace = false, class Terms = plain_sum>
double two_pass_time(index_t n, index_t pixels = 0, Terms terms = {}) {
    static std::map<std::pair<index_t, index_t>, double> memo;
    auto& t = memo[{n, pixels}];
    if (t > 0) return t;
    // the per-pixel sums of one column tile (L1-resident, as the kernel's)
    constexpr index_t tile = 640;
    std::vector<float> sums(3 * tile);
    for (std::size_t i = 0; i < sums.size(); ++i) sums[i] = 1.0f + 0.001f * static_cast<float>(i % 97);
    auto per_pixel = [&] {
        using V = simd::vec<float>;
        constexpr index_t W = static_cast<index_t>(simd::lanes<float>);
        V acc(0.f);
        for (index_t p0 = 0; p0 < pixels; p0 += tile)
            for (index_t j = 0; j + W <= std::min(tile, pixels - p0); j += W)
                acc = acc + simd::load<V>(sums.data() + j) /
                                simd::sqrt(V(simd::load<V>(sums.data() + tile + j) * simd::load<V>(sums.data() + 2 * tile + j)));
        return simd::hsum(acc);
    };
    stream_buffers<(Read > Write ? Read : Write), 1> b(n);
    std::array<const float*, Read> first{};
    std::array<const float*, Write> second{};
    for (int i = 0; i < Read; ++i) first[static_cast<std::size_t>(i)] = b.in[static_cast<std::size_t>(i)];
    for (int i = 0; i < Write; ++i) second[static_cast<std::size_t>(i)] = b.in[static_cast<std::size_t>(i)];
    const std::array<float*, 1> out{InPlace ? b.bufs[0].data() : b.out[0]};
    auto both = [&](auto backward) {
        return best_time(
            [&] {
                if constexpr (std::is_same_v<Terms, plain_sum>) benchmark::DoNotOptimize(reduce_pass<Read>(first, n));
                else benchmark::DoNotOptimize(terms_pass<Read>(first, n, terms));
                if (pixels > 0) benchmark::DoNotOptimize(per_pixel());
                stream_pass<Write, 1, decltype(backward)::value>(second, out, n);
                benchmark::DoNotOptimize(out[0]);
                benchmark::ClobberMemory();
            },
            20);
    };
    t = std::min(both(std::false_type{}), both(std::true_type{}));
    return t;
}

/// The floor of a per-pixel channel statistic (CFGNorm's), measured in the same binary: plain
/// loops over Read tensors of shape (channels, pixels) and one output making the passes of
/// patchbay's channel map. Up to kernels' few_rows channels (8): one pass over batches of
/// pixels, summing every channel row of every input, then writing every channel row; the
/// channel rows sit pixels * 4 bytes apart, often a multiple of 4 KiB, so they share L1 sets,
/// which this floor pays as the patch does. More channels: tiles of `tile` pixels (the
/// kernel's 192 KiB map tiles), summed channel by channel, then mapped channel by channel
/// from the cache. Memoised per shape.
template <int Read>
double channel_map_time(index_t channels, index_t pixels, index_t tile) {
    static std::map<std::pair<index_t, index_t>, double> memo;
    auto& t = memo[{channels, pixels}];
    if (t > 0) return t;
    const index_t n = channels * pixels;
    stream_buffers<Read, 1> b(n);
    using V = simd::vec<float>;
    constexpr index_t W = static_cast<index_t>(simd::lanes<float>);
    std::vector<float> sums(static_cast<std::size_t>(tile) + W);
    auto element = [&](index_t i) {
        V s = simd::load<V>(b.in[0] + i);
        for (int k = 1; k < Read; ++k) s = s + simd::load<V>(b.in[static_cast<std::size_t>(k)] + i);
        return s;
    };
    // (pixels a multiple of the lanes: every benchmark shape is)
    // (the one pass keeps what it loaded for the write, as the kernel does)
    auto one_pass = [&] {
        std::array<V, 8> held;
        for (index_t j = 0; j + W <= pixels; j += W) {
            V acc(0.f);
            for (index_t c = 0; c < channels; ++c) acc = acc + (held[static_cast<std::size_t>(c)] = element(c * pixels + j));
            for (index_t c = 0; c < channels; ++c) simd::store(b.out[0] + c * pixels + j, V(acc * held[static_cast<std::size_t>(c)]));
        }
    };
    auto tiled = [&] {
        for (index_t j0 = 0; j0 < pixels; j0 += tile) {
            const index_t len = std::min(tile, pixels - j0);
            for (index_t j = 0; j + W <= len; j += W) simd::store(sums.data() + j, V(0.f));
            // two channels per sweep over the sums, as the kernel's packed sweeps
            for (index_t c = 0; c < channels; c += 2)
                for (index_t j = 0; j + W <= len; j += W) {
                    V add = element(c * pixels + j0 + j);
                    if (c + 1 < channels) add = add + element((c + 1) * pixels + j0 + j);
                    simd::store(sums.data() + j, V(simd::load<V>(sums.data() + j) + add));
                }
            for (index_t c = 0; c < channels; ++c)
                for (index_t j = 0; j + W <= len; j += W)
                    simd::store(b.out[0] + c * pixels + j0 + j, V(simd::load<V>(sums.data() + j) * element(c * pixels + j0 + j)));
        }
    };
    t = best_time(
        [&] {
            if (channels <= 8) one_pass();
            else tiled();
            benchmark::DoNotOptimize(b.out[0]);
            benchmark::ClobberMemory();
        },
        20);
    return t;
}

/// Reports the two-pass floor beside the bound: two_pass_us and x_two_pass (ours / floor).
inline void report_floor(benchmark::State& st, double ours, double floor) {
    st.counters["two_pass_us"] = floor * 1e6;
    st.counters["x_two_pass"] = ours / floor;
}

/// Reports the patch's own passes written as plain loops, its arithmetic included (a second
/// floor where the read-only one misses): same_passes_us and x_same_passes (ours / it).
inline void report_same_passes(benchmark::State& st, double ours, double same) {
    st.counters["same_passes_us"] = same * 1e6;
    st.counters["x_same_passes"] = ours / same;
}

/// Fills the counters every patch benchmark reports (times in seconds; torch_s <= 0 = no
/// baseline): bytes (minimum traffic: tensors_moved tensors of n floats), ours_us, bound_us
/// (streaming pass over those bytes), x_bound (ours / bound), torch_us, x_vs_torch
/// (torch / ours, the speed-up over libtorch).
inline void report(benchmark::State& st, double ours, double bound, double torch_s, int tensors_moved,
                   index_t n) {
    const double bytes = static_cast<double>(tensors_moved) * static_cast<double>(n) * sizeof(float);
    st.SetBytesProcessed(static_cast<int64_t>(bytes) * static_cast<int64_t>(st.iterations()));
    st.counters["bytes"] = bytes;
    st.counters["ours_us"] = ours * 1e6;
    st.counters["bound_us"] = bound * 1e6;
    st.counters["x_bound"] = ours / bound; // target <= 2
    if (torch_s > 0) {
        st.counters["torch_us"] = torch_s * 1e6;
        st.counters["x_vs_torch"] = torch_s / ours;
    }
}


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
/// the baseline's (when given), and the speed-up x_vs_torch (baseline / ours).
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
        state.counters["x_vs_torch"] = base_s / ours_s;
    }
}

} // namespace patchbay::bench
