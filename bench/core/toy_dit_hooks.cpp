// Benchmark: what the DiT hook sites cost when nothing uses them. One guider step (cond and
// uncond in one batched call) of the toy DiT at the demo's size (examples/toy_dit.hpp default
// config, 1x3x32x32, 10 double + 10 single blocks), with no patch, and with every hook site
// registered but inactive: a patch that attaches a no-op attention-output hook to every
// double and single block and asks to skip a block the model does not have (so every block
// looks its skip up in a non-empty list), plus SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple
// and NAGuidance outside their windows. Counters: plain_us, hooks_us (thread CPU time, best of
// many) and overhead_pct = (hooks - plain) / plain, the target being under 2 %.
#include <algorithm>
#include <span>
#include <string>

#include "bench_util.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/patches/attention/nag.hpp"
#include "patchbay/patches/pass/skip_layer_guidance_dit_simple.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"
#include "../../examples/toy_dit.hpp"

using namespace patchbay;

namespace {

/// Registers a hook at every DiT site that does nothing, and one skip request that matches no block.
struct idle_hooks {
    static constexpr auto descriptor() { return describe<idle_hooks>("IdleHooks", "IdleHooks", hook_kind::model_hooks); }
    template <class T>
    void on_model_call(no_state&, pass_kind, call_overrides<T>& ov) const {
        const typename call_overrides<T>::attention_output_fn fn(
            [](void*, const attention_site&, view<T, 3>, std::span<const pass_kind>) {}, nullptr);
        ov.add_attention_output(dit::every(dit_block_site::kind::double_block), fn);
        ov.add_attention_output(dit::every(dit_block_site::kind::single_block), fn);
        ov.skip_block({dit_block_site::kind::single_block, 1000});
    }
};

constexpr float kSigma = 2.0f; // discrete eps: percent_to_sigma(0.9) is far below it

void toy_dit_step(benchmark::State& st) {
    examples::toy_dit model;
    const auto ms = model_sampling::discrete("eps");
    const auto& c = model.config();
    const auto pos = model.prompt(0), neg = model.negative_prompt();
    tensor<float> x = bench::random_tensor({1, c.channels, c.height, c.width}, 1), out(x.shape()), sigma({1});
    sigma.fill(kSigma);
    const step_inputs<float, 4> step{x.as<4>(), sigma.as<1>(), 5.0};
    const guider<examples::toy_dit> plain(model, ms);
    // windows [0.9, 1.0] of the schedule hold sigmas below 0.1: the patches are inactive at kSigma
    const guider<examples::toy_dit, idle_hooks, skip_layer_guidance_dit, skip_layer_guidance_dit_simple,
                 windowed<normalized_attention_guidance>>
        hooked(model, ms, idle_hooks{}, skip_layer_guidance_dit{"7, 8, 9", "7, 8, 9", 3.0, 0.9, 1.0},
               skip_layer_guidance_dit_simple{"7, 8, 9", "7, 8, 9", 0.9, 1.0},
               windowed<normalized_attention_guidance>{{}, {0.9, 1.0}});
    auto rp = plain.begin_run(&pos, &neg);
    auto rh = hooked.begin_run(&pos, &neg);
    auto plain_fn = [&] {
        plain.denoise(rp, step, out.as<4>());
        benchmark::DoNotOptimize(out.data());
    };
    auto hooked_fn = [&] {
        hooked.denoise(rh, step, out.as<4>());
        benchmark::DoNotOptimize(out.data());
    };
    for (auto _ : st) hooked_fn();
    model.counts = {};
    hooked_fn();
    st.counters["hook_runs_per_step"] = double(model.counts.attention_output_calls);
    // interleaved rounds, each the best of several calls: drifts of a shared machine hit both
    double tp = 1e30, th = 1e30;
    for (int round = 0; round < 6; ++round) {
        tp = std::min(tp, bench::best_time(plain_fn, 8));
        th = std::min(th, bench::best_time(hooked_fn, 8));
    }
    st.counters["plain_us"] = tp * 1e6;
    st.counters["hooks_us"] = th * 1e6;
    st.counters["overhead_pct"] = 100.0 * (th - tp) / tp;
}

} // namespace

BENCHMARK(toy_dit_step)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
