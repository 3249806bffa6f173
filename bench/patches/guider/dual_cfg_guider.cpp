// Benchmark: DualCFGGuider's combination (one model evaluation's work after the three passes,
// no other patch: one fused pass) vs a libtorch implementation written op for op as ComfyUI's
// Guider_DualCFG.predict_noise after calc_cond_batch (cfg_function's default combine and the
// outer term), single-threaded, regular and nested. Counters: ours_us, torch_us, x_vs_torch,
// bytes (read positive, middle, negative, write denoised), bound_us (one streaming pass over
// those bytes), x_bound.
#include <map>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "multi_prompt_bench.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
torch::Tensor torch_guider(const torch::Tensor& pos, const torch::Tensor& mid, const torch::Tensor& neg, double cfg1,
                           double cfg2, bool nested) {
    if (nested) {
        auto pred_text = mid + (pos - mid) * cfg1;
        return neg + cfg2 * (pred_text - neg);
    }
    return (neg + (mid - neg) * cfg2) + (pos - mid) * cfg1;
}

double torch_time(const std::vector<index_t>& dims, bool nested) {
    static std::map<std::pair<std::vector<index_t>, bool>, double> memo;
    auto& t = memo[{dims, nested}];
    if (t > 0) return t;
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto p = torch::randn(shape), m = torch::randn(shape), n = torch::randn(shape);
    t = bench::best_time([&] {
        auto r = torch_guider(p, m, n, 8.0, 6.0, nested);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
    return t;
}
#endif

template <std::size_t R>
void run(benchmark::State& st, const std::vector<index_t>& dims, dual_cfg_style style) {
    bench::guider_inputs<R> in(dims);
    const dual_cfg_guider g{8.0, 6.0, style};
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims, style == dual_cfg_style::nested);
#endif
    bench::measure_guider(st, in, g, tt);
}

} // namespace

int main(int argc, char** argv) {
    for (auto style : {dual_cfg_style::regular, dual_cfg_style::nested})
        bench::register_shapes("DualCFGGuider_" + std::string(dual_cfg_styles[static_cast<std::size_t>(style)]),
                               [style](benchmark::State& st, const std::vector<index_t>& dims) {
                                   if (dims.size() == 4) run<4>(st, dims, style);
                                   else run<5>(st, dims, style);
                               });
    return bench::run_benchmarks(argc, argv);
}
