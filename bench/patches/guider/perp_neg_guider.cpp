// Benchmark: PerpNegGuider's combination (one model evaluation's work after the three passes,
// no other patch) vs a libtorch implementation written op for op as ComfyUI's
// Guider_PerpNeg.predict_noise after calc_cond_batch, single-threaded. Counters: ours_us,
// torch_us, x_vs_torch, bytes (read positive, negative, empty, write denoised), bound_us (one
// streaming pass over those bytes), x_bound. Two passes (bench/patches/cfg/perp_neg.cpp shows the
// plain two-pass floor).
#include <map>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "multi_prompt_bench.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
torch::Tensor torch_guider(const torch::Tensor& pos_pred, const torch::Tensor& neg_pred, const torch::Tensor& empty,
                           double neg_scale, double cfg) {
    auto pos = pos_pred - empty;
    auto neg = neg_pred - empty;
    auto scale = torch::mul(neg, pos).sum() / torch::norm(pos).pow(2);
    auto perp = neg - scale * pos;
    return empty + cfg * (pos - perp * neg_scale);
}

double torch_time(const std::vector<index_t>& dims) {
    static std::map<std::vector<index_t>, double> memo;
    auto& t = memo[dims];
    if (t > 0) return t;
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto p = torch::randn(shape), n = torch::randn(shape), e = torch::randn(shape);
    t = bench::best_time([&] {
        auto r = torch_guider(p, n, e, 1.0, 8.0);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
    return t;
}
#endif

template <std::size_t R>
void run(benchmark::State& st, const std::vector<index_t>& dims) {
    bench::guider_inputs<R> in(dims);
    const perp_neg_guider g{8.0, 1.0};
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    bench::measure_guider(st, in, g, tt);
    // Perp-Neg needs two sums over the sample before any write: the two-pass floor
    st.counters["two_pass_us"] = bench::two_pass_time<3, 3>(in.out.size()) * 1e6;
}

} // namespace

int main(int argc, char** argv) {
    bench::register_shapes("PerpNegGuider", [](benchmark::State& st, const std::vector<index_t>& dims) {
        if (dims.size() == 4) run<4>(st, dims);
        else run<5>(st, dims);
    });
    return bench::run_benchmarks(argc, argv);
}
