// Tests for core/isa.hpp: the compiled SIMD variant is the one the compiler flags select, and
// the kernels' lane count agrees with it; with patchbay::dispatch linked, the variant the
// built-in patches run is the widest the CPU has under the PATCHBAY_ISA cap, and every built-in
// patch's table comes from it. Prints the variant that ran, so each build and each capped run
// of the test matrix (scripts/test.sh) shows it.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "patchbay/builtins.hpp"
#include "patchbay/core/isa.hpp"
#include "patchbay/kernels/detail/simd.hpp"

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
