// Benchmark: PerpNeg's combination (the cfg function after its extra model pass) vs a libtorch
// implementation written op for op as ComfyUI's PerpNeg cfg function (including the x - denoised
// it returns and the sampler undoes), single-threaded. Counters: ours_us, torch_us, x_vs_torch,
// bytes (minimum traffic: read cond, uncond, empty, write denoised), bound_us (one streaming pass
// over those bytes), x_bound (ours / bound), and two_pass_us / x_two_pass: a plain two-pass loop
// in the same binary (a reduction over the three inputs, then the streaming pass), the floor of
// any patch that must finish a whole-tensor sum before it writes.
#include <map>
#include <string>
#include <vector>

#include "../guider/multi_prompt_bench.hpp"
#include "bench_util.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"

namespace {

using namespace patchbay;

#ifdef PATCHBAY_HAVE_TORCH
// ComfyUI's PerpNeg cfg function after its calc_cond_batch, op for op, with the sampler's glue.
torch::Tensor torch_perp_neg(const torch::Tensor& x, const torch::Tensor& cond, const torch::Tensor& uncond,
                             const torch::Tensor& empty, double neg_scale, double cond_scale) {
    auto pos = cond - empty;
    auto neg = uncond - empty;
    auto scale = torch::mul(neg, pos).sum() / torch::norm(pos).pow(2);
    auto perp = neg - scale * pos;
    auto perp_neg = perp * neg_scale;
    auto cfg_result = x - (empty + cond_scale * (pos - perp_neg)); // the hook's return
    return x - cfg_result;                                          // the sampler's denoised
}

double torch_time(const std::vector<index_t>& dims) {
    static std::map<std::vector<index_t>, double> memo;
    auto& t = memo[dims];
    if (t > 0) return t;
    std::vector<int64_t> shape(dims.begin(), dims.end());
    auto x = torch::randn(shape), c = torch::randn(shape), u = torch::randn(shape), e = torch::randn(shape);
    t = bench::best_time([&] {
        auto r = torch_perp_neg(x, c, u, e, 1.0, 7.0);
        benchmark::DoNotOptimize(r.data_ptr());
    }, 20);
    return t;
}
#endif

template <std::size_t R>
void run(benchmark::State& st, const std::vector<index_t>& dims) {
    const auto x = bench::random_tensor(dims, 1, 0.f, 2.f), c = bench::random_tensor(dims, 2),
               u = bench::random_tensor(dims, 3), e = bench::random_tensor(dims, 4);
    tensor<float> sigma({dims[0]}), out(dims);
    sigma.fill(2.0f);
    const guidance_inputs<float, R> in{x.template as<R>(), sigma.template as<1>(), 7.0};
    const perp_neg p{1.0};
    double tt = 0;
#ifdef PATCHBAY_HAVE_TORCH
    tt = torch_time(dims);
#endif
    const double ours = bench::measure_three_inputs(
        st, [&] { p.combine<float, R>(in, c.template as<R>(), u.template as<R>(), e.template as<R>(), out.template as<R>()); },
        out.data(), c.size(), tt);
    const double two = bench::two_pass_time<3, 3>(c.size());
    st.counters["two_pass_us"] = two * 1e6;
    st.counters["x_two_pass"] = ours / two;
}

} // namespace

int main(int argc, char** argv) {
    bench::register_shapes("PerpNeg", [](benchmark::State& st, const std::vector<index_t>& dims) {
        if (dims.size() == 4) run<4>(st, dims);
        else run<5>(st, dims);
    });
    return bench::run_benchmarks(argc, argv);
}
