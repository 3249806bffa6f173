// Benchmark: Deep Shrink's resizes, through PatchModelAddDownscale's input- and output-block hooks
// for every method, beside libtorch's interpolate as ComfyUI's common_upscale calls it
// (single-threaded; bislerp is ComfyUI's own Python on torch ops, with no interpolate mode: ours
// only). Shapes: the input-block patch shrinking SD's 320-channel 128x128 and 640-channel 64x64
// features by 2 ("down"), and the output-block patch restoring them ("up").
// Counters: ours_us, torch_us, x_vs_torch (torch / ours), bytes (one read of h and one write of
// the result), bound_us (a streaming pass moving those bytes), x_bound (ours / bound). ours_us is
// the best of 15 thread-CPU timings (the machine is shared).
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bench_util.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/resize.hpp"
#include "patchbay/patches/block/deep_shrink.hpp"

#ifdef PATCHBAY_HAVE_TORCH
#include <torch/torch.h>
#endif

namespace {

using namespace patchbay;
using kernels::resize_method;

#ifdef PATCHBAY_HAVE_TORCH
/// common_upscale's interpolate(size=(H', W'), mode) (align_corners left at its default, False).
double torch_time(const std::vector<index_t>& in, const std::vector<index_t>& out, resize_method m) {
    static std::map<std::tuple<std::vector<index_t>, std::vector<index_t>, int>, double> memo;
    auto& t = memo[{in, out, static_cast<int>(m)}];
    if (t > 0) return t;
    torch::set_num_threads(1);
    namespace F = torch::nn::functional;
    auto opts = F::InterpolateFuncOptions().size(std::vector<int64_t>{out[2], out[3]});
    switch (m) {
    case resize_method::bicubic: opts.mode(torch::kBicubic).align_corners(false); break;
    case resize_method::bilinear: opts.mode(torch::kBilinear).align_corners(false); break;
    case resize_method::nearest_exact: opts.mode(torch::kNearestExact); break;
    case resize_method::area: opts.mode(torch::kArea); break;
    case resize_method::bislerp: return -1.0; // no interpolate mode
    }
    const auto x = torch::randn(std::vector<int64_t>(in.begin(), in.end()));
    t = bench::best_time([&] {
        auto y = F::interpolate(x, opts);
        benchmark::DoNotOptimize(y.data_ptr());
    }, 10);
    return t;
}
#endif

void run(benchmark::State& st, const std::vector<index_t>& in, const std::vector<index_t>& out, resize_method m) {
    auto x = bench::random_tensor(in, 1); // (the hooks take mutable views; they do not write h)
    tensor<float> hsp(out); // the skip connection: only its size is read (the up-resize target)
    // The patch's hooks as a model call meets them: on_model_call through the patch's table (so
    // a default build with patchbay::dispatch runs the dispatched variant), then the input-block
    // hook at its block (down) or the output-block resize (up).
    const deep_shrink p{.block_number = 1, .downscale_factor = 2.0, .downscale_method = m, .upscale_method = m};
    state_t<deep_shrink> state{};
    call_overrides<float> ov;
    workspace ws; // the run's arena, as the dispatcher hands it to the hooks
    ov.set_scratch(&ws);
    vtable_of<deep_shrink>().model<float>().on_model_call(&p, &state, pass_kind::cond, ov);
    const bool down = out[2] < in[2];
    const block_site site{down ? unet_stage::input : unet_stage::output, 1, in[1], nullptr};
    view<float, 4> y;
    auto ours = [&] {
        y = down ? ov.apply_input_block_after_skip(site, x.as<4>()) : ov.apply_output_block(site, x.as<4>(), hsp.as<4>());
        benchmark::DoNotOptimize(y.data_handle());
        benchmark::ClobberMemory();
    };
    ours();
    if (y.extent(2) != out[2] || y.extent(3) != out[3]) {
        st.SkipWithError("Deep Shrink's hook did not resize to the expected shape");
        return;
    }
    for (auto _ : st) ours();
    const double t_ours = bench::best_time(ours, 15); // best of 15: the machine is shared
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(in, out, m);
#endif
    const index_t moved = x.size() + hsp.size(); // read h once, write the result once
    bench::report(st, t_ours, bench::stream_time<1>(moved / 2), tt, 1, moved);
}

struct shape_case {
    const char* name;
    std::vector<index_t> in, out;
};

const std::vector<shape_case> shapes{{"down/1x320x128x128", {1, 320, 128, 128}, {1, 320, 64, 64}},
                                     {"down/1x640x64x64", {1, 640, 64, 64}, {1, 640, 32, 32}},
                                     {"up/1x320x64x64", {1, 320, 64, 64}, {1, 320, 128, 128}},
                                     {"up/1x640x32x32", {1, 640, 32, 32}, {1, 640, 64, 64}}};

const int registered = [] {
    for (std::size_t k = 0; k < kernels::resize_method_names.size(); ++k)
        for (const auto& s : shapes) {
            const auto m = static_cast<resize_method>(k);
            benchmark::RegisterBenchmark(
                (std::string("DeepShrink/") + std::string(kernels::resize_method_names[k]) + "/" + s.name).c_str(),
                [in = s.in, out = s.out, m](benchmark::State& st) { run(st, in, out, m); })
                ->Unit(benchmark::kMicrosecond);
        }
    return 0;
}();

} // namespace

BENCHMARK_MAIN();
