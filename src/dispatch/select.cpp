// The patchbay::dispatch component's selection, compiled with the engine's own flags: which ISA
// variant (isa_variant.cpp) this process runs, decided once from the CPU and PATCHBAY_ISA.
#include <string_view>

#include "patchbay/core/isa.hpp"

using patchbay::detail::isa_variant_table;

extern "C" const isa_variant_table* patchbay_isa_variant_x86_64_v3() noexcept;
extern "C" const isa_variant_table* patchbay_isa_variant_x86_64_v4() noexcept;

namespace patchbay::detail {
namespace {

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

const isa_variant_table* chosen_variant() {
    static const isa_variant_table* const chosen = []() -> const isa_variant_table* {
        int level = x86_cpu_level();
        const int cap = isa_level_cap();
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
    static const int cpu = x86_cpu_level();
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
