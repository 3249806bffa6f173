// patchbay benchmarks: what the three-prediction benchmarks (PerpNeg, PerpNegGuider,
// DualCFGGuider) share: each reads three latents and writes one, so its bound is one streaming
// pass over four tensors; every latent shape is registered; libtorch runs single-threaded.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "patchbay/core/dispatch.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace patchbay::bench {

/// A guider's step inputs: x, sigma, three random predictions (cond, uncond, extra), the
/// output, and a stage_runner with no other patch.
template <std::size_t R>
struct guider_inputs {
    tensor<float> x, cond, uncond, extra, sigma, out;
    guidance_inputs<float, R> gi;
    prompt_predictions<float, R> preds;
    stage_runner<float, R> stages{std::span<const hook_entry>{}, nullptr};
    explicit guider_inputs(const std::vector<index_t>& dims)
        : x(random_tensor(dims, 1, 0.f, 2.f)), cond(random_tensor(dims, 2)), uncond(random_tensor(dims, 3)),
          extra(random_tensor(dims, 4)), sigma({dims[0]}), out(dims) {
        sigma.fill(2.0f);
        gi = {x.template as<R>(), sigma.template as<1>()};
        preds = {cond.template as<R>(), uncond.template as<R>(), extra.template as<R>()};
    }
};

/// Runs `ours` in the benchmark loop, then reports its best time against the streaming bound
/// (read 3, write 1, n floats each) and libtorch's `torch_s` (<= 0: none). Returns our time.
template <class F>
double measure_three_inputs(benchmark::State& st, F&& ours, const float* out, index_t n, double torch_s) {
    auto call = [&] {
        ours();
        benchmark::DoNotOptimize(out);
        benchmark::ClobberMemory();
    };
    for (auto _ : st) call();
    const double t = best_time(call, 20);
    report(st, t, stream_time<3>(n), torch_s, 4, n);
    return t;
}

/// measure_three_inputs for a multi-prompt guider's combination over `in` (no other patch).
template <std::size_t R, class G>
void measure_guider(benchmark::State& st, guider_inputs<R>& in, const G& g, double torch_s) {
    no_state state;
    measure_three_inputs(
        st,
        [&] {
            // through the guider's function table (the dispatched variant), as a run calls it
            vtable_of<G>().template ops<float, R>().combine_prompts(&g, &state, in.gi, in.preds,
                                                                     in.out.template as<R>(), in.stages);
        },
        in.out.data(), in.out.size(), torch_s);
}

/// Registers run<4>(state, dims) / run<5>(...) as "<prefix>/<shape>" for every latent shape.
template <class Run>
void register_shapes(const std::string& prefix, Run run) {
    for (const auto& s : latent_shapes()) {
        const auto dims = s.dims;
        benchmark::RegisterBenchmark((prefix + "/" + s.name).c_str(), [dims, run](benchmark::State& st) {
            run(st, dims);
        })->Unit(benchmark::kMicrosecond);
    }
}

/// main() of a benchmark whose registrations are done.
inline int run_benchmarks(int argc, char** argv) {
#ifdef PATCHBAY_HAVE_TORCH
    torch::set_num_threads(1);
#endif
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

} // namespace patchbay::bench
