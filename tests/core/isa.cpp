// Tests for core/isa.hpp: the compiled SIMD variant is the one the compiler flags select, and
// the kernels' lane count agrees with it; with patchbay::dispatch linked, the variant the
// built-in patches run is the widest the CPU has under the PATCHBAY_ISA cap, and every built-in
// patch's table comes from it. Prints the variant that ran, so each build and each capped run
// of the test matrix (scripts/test.sh) shows it.
#include <catch2/catch.hpp>

#include <any>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "patchbay/builtins.hpp"
#include "patchbay/core/isa.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "test_util.hpp"

namespace test_core_isa {

using namespace patchbay;

namespace {

// What the predefined macros of this build say the variant must be.
std::string expected_arch_name() {
#if defined(PATCHBAY_DISABLE_SIMD)
    return "scalar";
#elif defined(__AVX512BW__)
    return "avx512bw";
#elif defined(__AVX2__) && defined(__FMA__)
    return "fma3+avx2";
#elif defined(__AVX2__)
    return "avx2";
#elif defined(__SSE4_2__)
    return "sse4.2";
#elif defined(__SSE2__)
    return "sse2";
#elif defined(__aarch64__) && defined(__ARM_NEON)
    return "arm64+neon";
#else
    return "scalar";
#endif
}

} // namespace

TEST_CASE("compiled_simd_name names the variant the build's flags select", "[core][isa]") {
    const std::string name(simd_arch_name());
    std::printf("simd: %s\n", name.c_str());
    CHECK(std::string(compiled_simd_name()) == expected_arch_name());
    if constexpr (!isa_dispatch) CHECK(name == expected_arch_name());
}

TEST_CASE("the kernels' lane count matches the compiled variant", "[core][isa]") {
    const std::string name(compiled_simd_name());
    if (name == "scalar") {
        CHECK(simd::lanes<float> == 1);
        CHECK(simd::lanes<double> == 1);
    } else {
        const std::size_t bytes = name.rfind("avx512", 0) == 0 ? 64 : name.find("avx") != std::string::npos ? 32 : 16;
        CHECK(simd::lanes<float> == bytes / sizeof(float));
        CHECK(simd::lanes<double> == bytes / sizeof(double));
    }
}

#if defined(PATCHBAY_DISPATCH)
namespace {

/// What the CPU and PATCHBAY_ISA allow, as the dispatch component decides it (the test's own
/// reading of the CPU through the compiler's builtins, not the component's cpuid code).
std::string expected_dispatched_name() {
    __builtin_cpu_init();
    const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
    const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                    __builtin_cpu_supports("avx512cd");
    int level = v4 ? 4 : v3 ? 3 : 1;
    const char* cap = std::getenv("PATCHBAY_ISA");
    const std::string c = cap ? cap : "";
    if (c == "x86-64" || c == "sse2" || c == "baseline") level = 1;
    else if ((c == "x86-64-v3" || c == "avx2") && level > 3) level = 3;
    const std::string compiled(compiled_simd_name());
    const int compiled_level = compiled.rfind("avx512", 0) == 0 ? 4 : compiled == "fma3+avx2" ? 3 : 1;
    if (level <= compiled_level) return compiled;
    return level == 4 ? "avx512bw" : "fma3+avx2";
}

} // namespace

TEST_CASE("dispatch runs the widest variant the CPU has, under the PATCHBAY_ISA cap", "[core][isa]") {
    CHECK(std::string(simd_arch_name()) == expected_dispatched_name());
}

TEST_CASE("every built-in patch runs the dispatched variant's table", "[core][isa]") {
    const bool variant = std::string(simd_arch_name()) != std::string(compiled_simd_name());
    // A built-in's table comes from the variant exactly when one runs; the key each patch header
    // declares is the name the variant exports it under.
#define PATCHBAY_CHECK_BUILTIN_(P)                                                                      \
    CHECK(detail::builtin_key<patchbay::P> == "patchbay::" #P);                                       \
    CHECK((detail::dispatched_vtable(detail::builtin_key<patchbay::P>) == &vtable_of<patchbay::P>()) == variant); \
    CHECK(vtable_of<patchbay::P>().class_type == patchbay::P::descriptor().class_type);
    PATCHBAY_FOR_EACH_BUILTIN(PATCHBAY_CHECK_BUILTIN_)
#undef PATCHBAY_CHECK_BUILTIN_
}
#endif

#if defined(PATCHBAY_DISPATCH)
namespace {

/// One patch's hook through table `vt` on fixed random inputs (B=2, C=8, 16x12): the output
/// (cond and uncond after a pre-cfg hook, h after an output block, else the hook's output).
template <class P>
tensor<float> run_table(const patch_vtable& vt, const P& p) {
    const std::vector<index_t> shape{2, 8, 16, 12};
    const tensor<float> x = test::random_tensor(shape, 1), c0 = test::random_tensor(shape, 2),
                        u0 = test::random_tensor(shape, 3);
    tensor<float> sigma({2});
    sigma[0] = 0.8f, sigma[1] = 5.5f;
    workspace ws;
    guidance_inputs<float, 4> in;
    in.x = x.as<4>(), in.sigma = sigma.as<1>(), in.cond_scale = 6.0, in.scratch = &ws;
    std::any state = vt.make_state();
    void* st = vt.state_ptr(state);
    tensor<float> c = c0, u = u0, out(shape);
    if (vt.model<float>().output_block) {
        tensor<float> h = c0, hsp = u0;
        vt.model<float>().output_block(&p, st, block_site{unet_stage::output, 0, 8, &ws}, h.as<4>(), hsp.as<4>());
        return h;
    }
    const auto& ops = vt.ops<float, 4>();
    const hook_kind slot = vt.slot(&p);
    for (int step = 0; step < 2; ++step) { // twice: the second sees the state the first left (APG)
        if (slot == hook_kind::pre_cfg) {
            ops.pre_cfg(&p, st, in, c.as<4>(), u.as<4>());
            kernels::cfg_combine<float, 4>(c.as<4>(), u.as<4>(), in.cond_scale, out.as<4>());
        } else if (slot == hook_kind::cfg_function) {
            ops.cfg_function(&p, st, in, c0.as<4>(), u0.as<4>(), out.as<4>(), nullptr);
        } else {
            kernels::cfg_combine<float, 4>(c0.as<4>(), u0.as<4>(), in.cond_scale, out.as<4>());
            ops.post_cfg(&p, st, in, c0.as<4>(), u0.as<4>(), out.as<4>(), nullptr);
        }
    }
    return out;
}

/// The x86-64-v3 and -v4 variants of P (those this CPU has) agree with the table compiled in
/// this file within float32 rounding: not bit for bit (FMA, wider reductions), as documented.
template <class P>
void check_variants_agree(const P& p) {
    const tensor<float> ref = run_table(detail::compiled_vtable<P>(), p);
    double scale = 0;
    for (index_t i = 0; i < ref.size(); ++i) scale = std::max(scale, std::fabs(double(ref[i])));
    REQUIRE(scale > 0);
    int compared = 0;
    for (int level : {3, 4}) {
        const patch_vtable* vt = detail::variant_vtable(level, detail::builtin_key<P>);
        if (!vt) continue;
        CHECK(vt != &detail::compiled_vtable<P>());
        const tensor<float> got = run_table(*vt, p);
        INFO(P::descriptor().class_type << " at x86-64-v" << level);
        CHECK(test::max_abs_diff(ref, got) <= 2e-5 * scale);
        CHECK(test::bit_equal(got, run_table(*vt, p))); // each variant is deterministic
        ++compared;
    }
    if (compared == 0) WARN("this CPU has no x86-64-v3 or -v4: nothing to compare");
}

} // namespace

TEST_CASE("the ISA variants of the built-in patches agree within float32 rounding", "[core][isa]") {
    check_variants_agree(rescale_cfg{});
    check_variants_agree(renorm_cfg{.renorm_cfg = 0.8});
    check_variants_agree(cfg_norm{});
    check_variants_agree(mahiro{});
    check_variants_agree(apg{.momentum = -0.5});
    check_variants_agree(tcfg{});
    check_variants_agree(fresca{.scale_low = 0.8, .scale_high = 1.3, .freq_cutoff = 3});
    check_variants_agree(cfg_zero_star{});
    check_variants_agree(free_u{1.3, 1.4, 0.9, 0.2, 2});
    check_variants_agree(free_u_v2{1.3, 1.4, 0.9, 0.2, 2});
}
#endif

} // namespace test_core_isa
