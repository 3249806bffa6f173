// libFuzzer target: the strict .npy reader. Any input must either parse or raise
// patchbay::error; crashes, sanitizer reports and other exceptions are failures.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto a = patchbay::npy::parse(std::string_view(reinterpret_cast<const char*>(data), size));
        // a parsed array re-serialises and parses to the same values
        const auto b = patchbay::npy::parse(patchbay::npy::serialize(a));
        if (b.values.size() != a.values.size()) __builtin_trap();
    } catch (const patchbay::error&) {
    }
    return 0;
}
