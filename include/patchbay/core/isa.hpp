// patchbay: which SIMD instruction set the kernels run with, and the run-time ISA dispatch.
//
// Every kernel is chosen at compile time from the flags of the unit that includes it. An engine
// that ships one binary to many CPUs builds with its default flags (x86-64: SSE2) and links the
// optional component patchbay::dispatch (one CMake line; docs/integration.md "Instruction
// sets"). The component holds every built-in patch's function table compiled again for
// x86-64-v3 (AVX2+FMA) and x86-64-v4 (AVX-512), with all of their code private to it; at the
// first use of a built-in patch, vtable_of() takes the table of the widest variant the CPU
// (and the environment variable PATCHBAY_ISA, a cap) allows. Everything that runs through a
// patch's table dispatches: the guider, patch_chain, cfg_chain, the apply_* entry points.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>

#include "patchbay/core/error.hpp"
#include "patchbay/kernels/detail/simd.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace patchbay {

struct patch_vtable;

/// The SIMD variant this translation unit's kernels are compiled for: xsimd's name of the
/// compile-time architecture (e.g. "sse2", "fma3+avx2", "avx512bw", "arm64+neon"), or
/// "scalar" when SIMD is off (PATCHBAY_DISABLE_SIMD, or no SIMD instruction set enabled).
inline std::string_view compiled_simd_name() noexcept {
    if constexpr (simd::enabled) {
        return xsimd::default_arch::name();
    } else {
        return "scalar";
    }
}

namespace detail {

/// The x86-64 level the environment variable PATCHBAY_ISA caps run-time choices at: 1 for
/// x86-64 (or sse2, baseline), 3 for x86-64-v3 (or avx2), 4 for x86-64-v4 (or avx512); 4 when
/// unset or empty. Throws patchbay::error for any other value. Read by the dispatch component
/// and by the half-precision conversions (kernels/convert.hpp).
inline int isa_level_cap() {
    const char* env = std::getenv("PATCHBAY_ISA");
    if (env == nullptr || *env == '\0') return 4;
    const std::string_view v(env);
    if (v == "x86-64" || v == "sse2" || v == "baseline") return 1;
    if (v == "x86-64-v3" || v == "avx2") return 3;
    if (v == "x86-64-v4" || v == "avx512") return 4;
    fail("PATCHBAY_ISA", "is '" + std::string(v) +
                             "'; expected one of x86-64 (or sse2, baseline), x86-64-v3 (or avx2), "
                             "x86-64-v4 (or avx512), or unset for the widest the CPU has");
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/// x86-64 micro-architecture levels: 1 = baseline (SSE2), 3 = v3 (AVX2, FMA, BMI1/2, F16C,
/// LZCNT, MOVBE), 4 = v4 (v3 + AVX-512 F/BW/CD/DQ/VL).
inline int x86_cpu_level() noexcept {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 1;
    const unsigned ecx1 = c;
    const bool osxsave = ecx1 & (1u << 27);
    if (!osxsave) return 1;
    unsigned xcr0_lo = 0, xcr0_hi = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    const bool os_avx = (xcr0_lo & 0x6u) == 0x6u;     // SSE and AVX state
    const bool os_avx512 = (xcr0_lo & 0xE6u) == 0xE6u; // + opmask, ZMM0-15 high, ZMM16-31
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 1;
    const unsigned ebx7 = b;
    unsigned ecx_ext = 0;
    if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) ecx_ext = c;
    const auto has = [](unsigned reg, int bit) { return (reg >> bit) & 1u; };
    const bool v3 = os_avx && has(ecx1, 12) /*fma*/ && has(ecx1, 22) /*movbe*/ && has(ecx1, 28) /*avx*/ &&
                    has(ecx1, 29) /*f16c*/ && has(ebx7, 3) /*bmi1*/ && has(ebx7, 5) /*avx2*/ &&
                    has(ebx7, 8) /*bmi2*/ && has(ecx_ext, 5) /*lzcnt*/;
    if (!v3) return 1;
    const bool v4 = os_avx512 && has(ebx7, 16) /*avx512f*/ && has(ebx7, 17) /*dq*/ && has(ebx7, 28) /*cd*/ &&
                    has(ebx7, 30) /*bw*/ && has(ebx7, 31) /*vl*/;
    return v4 ? 4 : 3;
}
#endif

/// What one ISA variant of the dispatch component exports (src/dispatch/isa_variant.cpp).
struct isa_variant_table {
    const char* name;                       ///< its compiled_simd_name()
    unsigned count;                         ///< number of built-in patch tables
    const char* const* keys;                ///< builtin_key of each
    const patch_vtable& (*const* tables)(); ///< vtable_of<P> of each, compiled for the variant
};

#if defined(PATCHBAY_DISPATCH) && !defined(PATCHBAY_ISA_VARIANT)
// Defined by the dispatch component (src/dispatch/select.cpp), compiled with the engine's flags.

/// The table of the built-in patch named `key` in the variant this process runs, or null
/// when it runs the engine's own compilation (no wider variant, or capped by PATCHBAY_ISA).
/// Throws patchbay::error when PATCHBAY_ISA holds no known level.
const patch_vtable* dispatched_vtable(std::string_view key);
/// compiled_simd_name() of the variant this process runs.
std::string_view dispatched_simd_name();
/// The table of the built-in patch `key` in the x86-64-v`level` variant (3 or 4), whatever
/// PATCHBAY_ISA says; null when this CPU lacks that level. For tests comparing the variants.
const patch_vtable* variant_vtable(int level, std::string_view key);
#endif

} // namespace detail

/// True when the built-in patches' instruction set is chosen at run time (patchbay::dispatch).
inline constexpr bool isa_dispatch =
#if defined(PATCHBAY_DISPATCH)
    true;
#else
    false;
#endif

/// The SIMD variant the built-in patches run with: with patchbay::dispatch linked, the variant
/// chosen for this CPU (and PATCHBAY_ISA); otherwise compiled_simd_name().
inline std::string_view simd_arch_name() {
#if defined(PATCHBAY_DISPATCH) && !defined(PATCHBAY_ISA_VARIANT)
    return detail::dispatched_simd_name();
#else
    return compiled_simd_name();
#endif
}

} // namespace patchbay
