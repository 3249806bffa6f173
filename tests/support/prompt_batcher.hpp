// patchbay tests: any per-prompt model given predict_batch. The guider then hands it every
// prompt of a model evaluation in one call (the core's batched path: the latent once per
// prompt, one sigma per item, each prompt's hooks), and it answers each prompt's items with the
// wrapped model's own prediction for that prompt, with that prompt's hooks. Used where a test
// or the conformance runner (--batched-passes) runs a model batched.
#pragma once

#include <cstddef>

#include "patchbay/core/model.hpp"
#include "patchbay/core/view.hpp"

namespace patchbay::test {

template <class M>
struct prompt_batcher {
    using conditioning_type = conditioning_t<M>;
    M* model;
    int* batched_calls = nullptr; ///< counts predict_batch calls when set

    template <class T, std::size_t R>
    void predict(const model_call<conditioning_type, T, R>& c, view<T, R> out) const {
        model->predict(c, out);
    }

    template <class T, std::size_t R>
    void predict_batch(const batched_call<conditioning_type, T, R>& c, view<T, R> out) const {
        if (batched_calls) ++*batched_calls;
        for (const auto& p : c.prompts) {
            const model_call<conditioning_type, T, R> one{c.x.batch_slice(p.first, p.count),
                                                          c.sigma.batch_slice(p.first, p.count), p.pass, p.prompt,
                                                          p.conditioning, p.overrides};
            model->predict(one, out.batch_slice(p.first, p.count));
        }
    }
};

} // namespace patchbay::test
