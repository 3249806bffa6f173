// libFuzzer target: ComfyUI workflow import. Any text must either import or raise
// patchbay::error naming what is wrong; nlohmann's own exceptions, crashes and sanitizer
// reports are failures. An imported workflow must describe itself.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "patchbay/comfy/workflow.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const bool skip : {false, true}) {
        patchbay::comfy::import_options opt;
        opt.skip_unknown_patches = skip;
        try {
            const auto wf = patchbay::comfy::parse_workflow_text(text, opt);
            (void)wf.describe();
        } catch (const patchbay::error&) {
        }
    }
    return 0;
}
