// Tests for core/isa.hpp: the reported SIMD variant is the one the compiler flags select, and
// the kernels' lane count agrees with it. Prints the variant, so each build of the test
// matrix (scripts/test.sh) shows which one ran.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

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

TEST_CASE("simd_arch_name names the variant the build's flags select", "[core][isa]") {
    const std::string name(simd_arch_name());
    std::printf("simd: %s\n", name.c_str());
    CHECK(name == expected_arch_name());
}

TEST_CASE("the kernels' lane count matches the reported variant", "[core][isa]") {
    const std::string name(simd_arch_name());
    if (name == "scalar") {
        CHECK(simd::lanes<float> == 1);
        CHECK(simd::lanes<double> == 1);
    } else {
        const std::size_t bytes = name.rfind("avx512", 0) == 0 ? 64 : name.find("avx") != std::string::npos ? 32 : 16;
        CHECK(simd::lanes<float> == bytes / sizeof(float));
        CHECK(simd::lanes<double> == bytes / sizeof(double));
    }
}
