// One ISA variant of the patchbay::dispatch component: every built-in patch's function table,
// compiled with this variant's -march (cmake/dispatch.cmake compiles this file once per
// variant). The build then makes every symbol of the object local except PATCHBAY_ISA_ENTRY
// (ld -r, objcopy --keep-global-symbol): the inline functions and templates compiled here with
// wider instructions can never be merged with the engine's own copies, which must run on any
// CPU. Nothing here may run before select.cpp has checked the CPU: no dynamic initialisation
// (the build checks the object has no .init_array).
#if !defined(PATCHBAY_ISA_VARIANT) || !defined(PATCHBAY_ISA_ENTRY)
#error "compiled by cmake/dispatch.cmake only, with PATCHBAY_ISA_VARIANT and PATCHBAY_ISA_ENTRY"
#endif

#include <iterator>

#include "patchbay/builtins.hpp"
#include "patchbay/core/isa.hpp"

namespace {

using patchbay::detail::isa_variant_table;

#define PATCHBAY_VARIANT_KEY_(P) "patchbay::" #P,
constexpr const char* keys[] = {PATCHBAY_FOR_EACH_BUILTIN(PATCHBAY_VARIANT_KEY_)};
#undef PATCHBAY_VARIANT_KEY_

#define PATCHBAY_VARIANT_TABLE_(P) &patchbay::vtable_of<patchbay::P>,
constexpr const patchbay::patch_vtable& (*tables[])() = {PATCHBAY_FOR_EACH_BUILTIN(PATCHBAY_VARIANT_TABLE_)};
#undef PATCHBAY_VARIANT_TABLE_

static_assert(std::size(keys) == std::size(tables));

constexpr isa_variant_table variant{xsimd::default_arch::name(), static_cast<unsigned>(std::size(keys)), keys,
                                    tables};

} // namespace

extern "C" const isa_variant_table* PATCHBAY_ISA_ENTRY() noexcept { return &variant; }
