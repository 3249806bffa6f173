// Benchmark: the cfg stage on half-precision storage (core/storage.hpp) beside float32. A
// cfg_chain (the engine-driven cfg stage) runs RescaleCFG, CFGNorm or APG on cond / uncond
// stored as float32, f16 or bf16, single-threaded, at the latent shapes of the other benchmarks.
// The half paths widen the inputs to float32 copies, run the float32 path and round the outputs
// once, so they cost the float32 stage plus the conversions. Counters: ours_us, bytes (the
// minimum traffic of a fused half kernel: read x, cond, uncond in the storage type, write
// denoised), bound_us (a float32 streaming pass over as many bytes), x_bound (ours / bound).
// Also the conversions alone (widen / narrow of one latent).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "bench_util.hpp"
#include "patchbay/core/cfg_chain.hpp"
#include "patchbay/kernels/convert.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"

namespace {

using namespace patchbay;

template <class S>
std::vector<S> stored(const tensor<float>& t) {
    std::vector<S> v(static_cast<std::size_t>(t.size()));
    if constexpr (std::is_same_v<S, float>) std::copy(t.data(), t.data() + t.size(), v.begin());
    else kernels::narrow<S, 1>(view<const float, 1>(t.data(), {t.size()}), view<S, 1>(v.data(), {t.size()}));
    return v;
}

template <class S, class P>
void cfg_stage(benchmark::State& st, std::vector<index_t> dims, P patch) {
    const index_t n = [&] {
        index_t k = 1;
        for (auto d : dims) k *= d;
        return k;
    }();
    std::array<index_t, 4> ext{};
    for (std::size_t i = 0; i < 4; ++i) ext[i] = dims[i];
    std::vector<S> x = stored<S>(bench::random_tensor(dims, 1)), c = stored<S>(bench::random_tensor(dims, 2)),
                   u = stored<S>(bench::random_tensor(dims, 3)), d(static_cast<std::size_t>(n));
    tensor<float> sig({dims[0]});
    for (index_t b = 0; b < dims[0]; ++b) sig[b] = 2.5f;
    const std::vector<S> sigma = stored<S>(sig);
    cfg_chain chain(model_sampling::discrete("eps"));
    chain.add(std::move(patch));
    auto run = chain.begin_run();
    const guidance_inputs<S, 4> in{view<const S, 4>(x.data(), ext), view<const S, 1>(sigma.data(), {dims[0]}), 6.0};
    auto once = [&] {
        chain.combine(run, in, view<S, 4>(c.data(), ext), view<S, 4>(u.data(), ext), view<S, 4>(d.data(), ext));
        benchmark::DoNotOptimize(d.data());
    };
    for (auto _ : st) once();
    const double ours = bench::best_time(once, 10);
    // a fused kernel reads x, cond, uncond and writes denoised once, in the storage type
    const int moved_floats = static_cast<int>((4 * sizeof(S) + sizeof(float) - 1) / sizeof(float));
    const double bound = bench::stream_time<3>(n) * static_cast<double>(4 * sizeof(S)) / (4.0 * sizeof(float));
    bench::report(st, ours, bound, 0.0, moved_floats, n);
}

template <class S>
void conversions(benchmark::State& st, std::vector<index_t> dims, bool widen) {
    const tensor<float> t = bench::random_tensor(dims, 4);
    const index_t n = t.size();
    std::vector<S> h = stored<S>(t);
    std::vector<float> f(static_cast<std::size_t>(n));
    const view<const S, 1> hv(h.data(), {n});
    const view<float, 1> fv(f.data(), {n});
    for (auto _ : st) {
        if (widen) kernels::widen<S, 1>(hv, fv);
        else kernels::narrow<S, 1>(view<const float, 1>(fv), view<S, 1>(h.data(), {n}));
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<int64_t>(n) * static_cast<int64_t>(sizeof(S) + sizeof(float)) * st.iterations());
}

template <class S>
const char* name_of() {
    if constexpr (std::is_same_v<S, f16>) return "f16";
    else if constexpr (std::is_same_v<S, bf16>) return "bf16";
    else return "f32";
}

template <class S>
void register_storage(const std::vector<index_t>& dims, const std::string& shape) {
    const std::string s = name_of<S>();
    benchmark::RegisterBenchmark(("RescaleCFG/" + s + "/" + shape).c_str(), [dims](benchmark::State& st) {
        cfg_stage<S>(st, dims, rescale_cfg{.multiplier = 0.7});
    })->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("CFGNorm/" + s + "/" + shape).c_str(), [dims](benchmark::State& st) {
        cfg_stage<S>(st, dims, cfg_norm{.strength = 1.0});
    })->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("APG/" + s + "/" + shape).c_str(), [dims](benchmark::State& st) {
        cfg_stage<S>(st, dims, apg{.eta = 0.5, .norm_threshold = 5.0, .momentum = -0.5});
    })->Unit(benchmark::kMicrosecond);
    if constexpr (!std::is_same_v<S, float>) {
        benchmark::RegisterBenchmark(("widen/" + s + "/" + shape).c_str(), [dims](benchmark::State& st) {
            conversions<S>(st, dims, true);
        })->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("narrow/" + s + "/" + shape).c_str(), [dims](benchmark::State& st) {
            conversions<S>(st, dims, false);
        })->Unit(benchmark::kMicrosecond);
    }
}

} // namespace

int main(int argc, char** argv) {
    for (const auto& [dims, shape] : {std::pair{std::vector<index_t>{2, 4, 128, 128}, std::string("2x4x128x128")},
                                      std::pair{std::vector<index_t>{2, 16, 128, 128}, std::string("2x16x128x128")}}) {
        register_storage<float>(dims, shape);
        register_storage<f16>(dims, shape);
        register_storage<bf16>(dims, shape);
    }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
