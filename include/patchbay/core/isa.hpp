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

#include <string_view>
#include <type_traits>

#include "patchbay/kernels/detail/simd.hpp"

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
