// patchbay tests: a model that answers each prompt with a fixed prediction, as the
// guider.predict_noise golden cases replace ComfyUI's calc_cond_batch by recorded outputs. A
// prompt marked skipped fails when asked for (the guider must reach ComfyUI's skip decision
// itself); every call is recorded (pass and prompt name). Shared by the guider unit tests and
// the conformance handlers.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay::test {

/// One prompt of the lookup model: its name and the prediction it answers with.
struct fixed_prompt {
    std::string name;
    tensor<float> prediction;
    bool skipped = false; ///< the case says the guider never evaluates it
};

struct lookup_model {
    using conditioning_type = fixed_prompt;
    std::vector<std::pair<pass_kind, std::string>> calls;

    template <class T, std::size_t R>
    void predict(const model_call<fixed_prompt, T, R>& c, view<T, R> out) {
        constexpr std::string_view where = "lookup_model";
        require(c.conditioning != nullptr, where, "a pass without a prompt (begin_run was given none)");
        const fixed_prompt& p = *c.conditioning;
        PATCHBAY_REQUIRE(!p.skipped, where,
                         "asked for prompt '" + p.name + "', which ComfyUI skips for these parameters");
        calls.emplace_back(c.pass, p.name);
        const view<const float, R> src = p.prediction.template as<R>();
        require_same_shape(out, src, where, "x", p.name + " prediction");
        if constexpr (std::is_same_v<T, float>) kernels::copy<T, R>(src, out);
        else kernels::copy<T, R>(tensor<T>::copy_of(src).template as<R>(), out);
    }

    /// How often the prompt was evaluated.
    int count(const std::string& name) const {
        int n = 0;
        for (const auto& c : calls) n += c.second == name ? 1 : 0;
        return n;
    }
};

} // namespace patchbay::test
