// The patchbay::dispatch component's selection, compiled with the engine's own flags: which ISA
// variant (isa_variant.cpp) this process runs, decided once from the CPU and PATCHBAY_ISA.
#include <cstdlib>
#include <string>
#include <string_view>

#include <cpuid.h>

#include "patchbay/core/error.hpp"
#include "patchbay/core/isa.hpp"

using patchbay::detail::isa_variant_table;

extern "C" const isa_variant_table* patchbay_isa_variant_x86_64_v3() noexcept;
extern "C" const isa_variant_table* patchbay_isa_variant_x86_64_v4() noexcept;

namespace patchbay::detail {
namespace {

/// x86-64 micro-architecture levels: 1 = baseline (SSE2), 3 = v3 (AVX2, FMA, BMI1/2, F16C,
/// LZCNT, MOVBE), 4 = v4 (v3 + AVX-512 F/BW/CD/DQ/VL).
int cpu_level() noexcept {
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

/// The level this unit (and so the engine's own copy of every table) is compiled for.
constexpr int compiled_level() noexcept {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512CD__) && defined(__AVX512DQ__) &&    \
    defined(__AVX512VL__)
    return 4;
#elif defined(__AVX2__) && defined(__FMA__)
    return 3;
#else
    return 1;
#endif
}

/// The cap PATCHBAY_ISA sets (no cap when unset or empty).
int level_cap() {
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

const isa_variant_table* chosen_variant() {
    static const isa_variant_table* const chosen = []() -> const isa_variant_table* {
        int level = cpu_level();
        const int cap = level_cap();
        if (cap < level) level = cap;
        if (level <= compiled_level()) return nullptr; // the engine's own compilation is as wide
        return level >= 4 ? patchbay_isa_variant_x86_64_v4() : patchbay_isa_variant_x86_64_v3();
    }();
    return chosen;
}

const patch_vtable* find_table(const isa_variant_table* v, std::string_view key) {
    if (v == nullptr) return nullptr;
    for (unsigned i = 0; i < v->count; ++i)
        if (key == v->keys[i]) return &v->tables[i]();
    return nullptr;
}

} // namespace

const patch_vtable* dispatched_vtable(std::string_view key) { return find_table(chosen_variant(), key); }

const patch_vtable* variant_vtable(int level, std::string_view key) {
    static const int cpu = cpu_level();
    if (level > cpu) return nullptr;
    if (level == 3) return find_table(patchbay_isa_variant_x86_64_v3(), key);
    if (level == 4) return find_table(patchbay_isa_variant_x86_64_v4(), key);
    return nullptr;
}

std::string_view dispatched_simd_name() {
    const isa_variant_table* v = chosen_variant();
    return v ? std::string_view(v->name) : compiled_simd_name();
}

} // namespace patchbay::detail
