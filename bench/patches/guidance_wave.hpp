// patchbay benchmarks: pieces shared by the benchmarks of the cfg-stage patches of the
// guidance wave (CFGZeroStar, Epsilon Scaling, TemporalScoreRescaling, Video*CFGGuidance,
// LatentApplyOperationCFG): the call's data, a plain two-pass reference loop, registration.
#pragma once

#include <array>
#include <cstddef>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bench_util.hpp"
#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/kernels/elementwise.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace patchbay::bench::wave {

/// The inputs of one cfg-stage call on a latent shape: x ~ N(0, 2), cond and uncond ~ N(0, 1),
/// one sigma per item, and `out` holding the plain CFG result at cond_scale.
struct call_data {
    tensor<float> x, cond, uncond, sigma, out;
    double cond_scale;

    call_data(const std::vector<index_t>& dims, double scale, float sigma_value)
        : x(random_tensor(dims, 1, 0.f, 2.f)), cond(random_tensor(dims, 2)), uncond(random_tensor(dims, 3)),
          sigma({dims[0]}), out(dims), cond_scale(scale) {
        sigma.fill(sigma_value);
        reset_out();
    }
    /// out = uncond + cond_scale (cond - uncond).
    void reset_out() {
        const view<float, 1> o(out.data(), {out.size()});
        kernels::cfg_combine<float, 1>(view<const float, 1>(cond.data(), {out.size()}),
                                       view<const float, 1>(uncond.data(), {out.size()}), cond_scale, o);
    }
    template <std::size_t R>
    guidance_inputs<float, R> inputs(const model_sampling* sampling = nullptr, workspace* scratch = nullptr) const {
        guidance_inputs<float, R> in;
        in.x = x.as<R>();
        in.sigma = sigma.as<1>();
        in.cond_scale = cond_scale;
        in.scratch = scratch;
        in.sampling = sampling;
        return in;
    }
};

/// Runs `call` (one hook call on n-element tensors) in the benchmark loop, then reports its best
/// time of 20 (bench::report) against one streaming pass reading Reads tensors and writing one,
/// and the libtorch time torch_s (0: none). `prepare` runs before each call, outside the timing
/// of the loop (and once before the best-of-20): for hooks whose in-place result would drift.
template <int Reads, class Call, class Prepare = std::nullptr_t>
void measure(benchmark::State& st, Call&& call, index_t n, double torch_s, Prepare prepare = nullptr) {
    constexpr bool prepares = !std::is_same_v<Prepare, std::nullptr_t>;
    auto timed = [&] {
        call();
        benchmark::ClobberMemory();
    };
    for (auto _ : st) {
        if constexpr (prepares) {
            st.PauseTiming();
            prepare();
            st.ResumeTiming();
        }
        timed();
    }
    if constexpr (prepares) prepare();
    report(st, best_time(timed, 20), stream_time<Reads>(n), torch_s, Reads + 1, n);
}

/// Calls f.template operator()<R>() with R the rank of dims (4 or 5).
template <class F>
void by_rank(const std::vector<index_t>& dims, F&& f) {
    if (dims.size() == 4) f.template operator()<4>();
    else f.template operator()<5>();
}

/// Benchmarks the cfg function or post-CFG hook of P on a call_data of dims (the hook rewrites
/// `out`): measure<Reads> with the libtorch time torch_s.
template <int Reads, class P>
void hook(benchmark::State& st, const std::vector<index_t>& dims, const P& p, double torch_s, double cond_scale = 7.0,
          float sigma = 1.0f, const model_sampling* sampling = nullptr) {
    call_data data(dims, cond_scale, sigma);
    by_rank(dims, [&]<std::size_t R>() {
        const auto in = data.inputs<R>(sampling);
        no_state state;
        measure<Reads>(
            st,
            [&] {
                if constexpr (P::descriptor().slot == hook_kind::cfg_function)
                    apply_cfg_function(p, state, in, data.cond.as<R>(), data.uncond.as<R>(), data.out.as<R>());
                else
                    apply_post_cfg(p, state, in, data.cond.as<R>(), data.uncond.as<R>(), data.out.as<R>());
            },
            data.cond.size(), torch_s);
    });
}

/// Registers fn(state, dims) as "<name>/<shape>" for every latent shape of the benchmarks.
template <class F>
void register_shapes(const std::string& name, F fn) {
    for (const auto& s : latent_shapes()) {
        const auto dims = s.dims;
        benchmark::RegisterBenchmark((name + "/" + s.name).c_str(), [dims, fn](benchmark::State& st) { fn(st, dims); })
            ->Unit(benchmark::kMicrosecond);
    }
}

/// The benchmark's main: one thread for libtorch, register(), then Google Benchmark.
template <class Register>
int main_with(int argc, char** argv, Register register_all) {
#ifdef PATCHBAY_HAVE_TORCH
    torch::set_num_threads(1);
#endif
    register_all();
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}


} // namespace patchbay::bench::wave
