// Benchmark: NAG's attention-output patch on a positive and a negative chunk of a Flux-sized
// attention output (2 x 4096 tokens x 3072 features), through the hook a model calls, vs a
// libtorch implementation written op for op as ComfyUI's nag_attention_output_patch,
// single-threaded. Two sites: a UNet-style one (the positive chunk is replaced) and a DiT one
// (every token is an image token; both chunks are written, ComfyUI's img_slice branch). The
// patch rewrites its input in place, so each timed call guides the previous call's output
// (the cost does not depend on the values). Counters: ours_us, torch_us, x_vs_torch (torch / ours), bytes (minimum traffic:
// read both chunks, write one or two), bound_us (one streaming pass over those bytes),
// x_bound (ours / bound).
#include <map>
#include <span>
#include <string>
#include <vector>

#include "../guidance_wave.hpp"
#include "bench_util.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/patches/attention/nag.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;

constexpr index_t kTokens = 4096, kFeatures = 3072;
const normalized_attention_guidance kNag{5.0, 0.5, 1.5};

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's nag_attention_output_patch, op for op (cond_or_uncond [0, 1]).
torch::Tensor torch_nag(torch::Tensor out, bool img_slice, double s, double alpha, double tau) {
    const int64_t half = out.size(0) / 2;
    auto z_pos = out.narrow(0, 0, half), z_neg = out.narrow(0, half, half);
    auto guided = z_pos * s - z_neg * (s - 1.0);
    auto norm_pos = torch::norm(z_pos, 1, {-1}, true).clamp_min(1e-6);
    auto norm_guided = torch::norm(guided, 1, {-1}, true).clamp_min(1e-6);
    auto ratio = norm_guided / norm_pos;
    auto scale_factor = torch::minimum(ratio, torch::full_like(ratio, tau)) / ratio;
    auto z_final = guided * scale_factor * alpha + z_pos * (1.0 - alpha);
    if (img_slice) z_neg.copy_(z_final);
    z_pos.copy_(z_final);
    return out;
}

double torch_time(bool dit) {
    static std::map<bool, double> memo;
    auto& t = memo[dit];
    if (t > 0) return t;
    auto work = torch::randn({2, kTokens, kFeatures});
    t = bench::best_time([&] {
        auto r = torch_nag(work, dit, kNag.nag_scale, kNag.nag_alpha, kNag.nag_tau);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 5);
    return t;
}
#endif

void run(benchmark::State& st, bool dit) {
    tensor<float> work = bench::random_tensor({2, kTokens, kFeatures}, 1);
    const attention_site site = dit ? dit::attention({dit_block_site::kind::double_block, 0}, 64, 64)
                                    : attention_site{unet_stage::middle, 0, 0};
    const pass_kind prompts[2] = {pass_kind::cond, pass_kind::uncond};
    state_t<normalized_attention_guidance> state{};
    call_overrides<float> ov;
    workspace ws;
    ov.set_scratch(&ws);
    // what the dispatcher does for the positive pass, through the patch's table (the dispatched
    // variant in a default build with patchbay::dispatch)
    vtable_of<normalized_attention_guidance>().model<float>().on_model_call(&kNag, &state, pass_kind::cond, ov);
    const view<float, 3> wv = work.as<3>();
    // the hook at a UNet site is not registered (NAG attaches to DiT sites): call its core
    // (compiled in this file: not dispatched)
    auto ours_fn = [&] {
        if (dit) ov.apply_attention_output(site, wv, prompts);
        else nag::apply_items<float>(kNag, site, wv, prompts, &ws);
        benchmark::DoNotOptimize(work.data());
        benchmark::ClobberMemory();
    };
    for (auto _ : st) ours_fn();
    const index_t n = kTokens * kFeatures; // one chunk
    const double ours = bench::best_time(ours_fn, 5);
    // read both chunks, write one (UNet) or both (DiT)
    const double bound = dit ? bench::stream_time<3>(n) : bench::stream_time<2>(n); // same bytes moved
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dit);
#endif
    bench::report(st, ours, bound, tt, dit ? 4 : 3, n);
}

} // namespace

int main(int argc, char** argv) {
    return bench::wave::main_with(argc, argv, [] {
        for (bool dit : {false, true})
            benchmark::RegisterBenchmark(dit ? "NAG_dit_site/2x4096x3072" : "NAG_unet_site/2x4096x3072",
                                         [dit](benchmark::State& st) { run(st, dit); })
                ->Unit(benchmark::kMicrosecond);
    });
}
