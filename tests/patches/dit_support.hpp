// patchbay tests: what the DiT patch tests share (SkipLayerGuidance*, NAGuidance): a small toy
// DiT, the same network seen as a per-prompt model (no predict_batch), a step helper, and a
// model that skips blocks without allocating.
#pragma once

#include <cmath>
#include <vector>

#include "../../examples/toy_dit.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "test_util.hpp"

namespace patchbay::test {

/// A small DiT for fast tests: 16x16 latent (16 image tokens), 4 double and 4 single blocks.
inline examples::toy_dit_config small_dit(double residual = 0.6) {
    examples::toy_dit_config c;
    c.height = c.width = 16;
    c.double_blocks = c.single_blocks = 4;
    c.hidden = 16;
    c.residual = residual;
    return c;
}

/// The toy DiT without predict_batch: every prompt in its own call.
struct per_prompt_dit {
    using conditioning_type = examples::toy_dit_prompt;
    static constexpr bool skips_blocks = true;
    static constexpr bool calls_attention_output_hooks = true;
    examples::toy_dit* model;
    template <class T>
    void predict(const model_call<examples::toy_dit_prompt, T, 4>& c, view<T, 4> out) {
        model->predict(c, out);
    }
};

/// A latent for the toy DiT.
inline tensor<float> dit_latent(const examples::toy_dit& m, index_t batch, unsigned seed, float stddev = 1.f) {
    const auto& c = m.config();
    return random_tensor({batch, c.channels, c.height, c.width}, seed, 0.f, stddev);
}

/// One denoise call of a guider or chain on a fresh run: the guided prediction.
template <class G>
tensor<float> denoise_once(const G& g, typename G::run_state& run, const tensor<float>& x, float sigma0,
                           double cond_scale, float sigma_rest = -1.f) {
    tensor<float> sigma({x.extent(0)}), out(x.shape());
    sigma.fill(sigma_rest < 0 ? sigma0 : sigma_rest);
    sigma[0] = sigma0;
    const step_inputs<float, 4> st{x.as<4>(), sigma.as<1>(), cond_scale};
    g.denoise(run, st, out.as<4>());
    return out;
}

/// The toy DiT's answer for one prompt (optionally with blocks skipped).
inline tensor<float> dit_predict(examples::toy_dit& m, const tensor<float>& x, float sigma,
                                 const examples::toy_dit_prompt& p, const call_overrides<float>& ov,
                                 pass_kind pass = pass_kind::cond) {
    tensor<float> s({x.extent(0)}), out(x.shape());
    s.fill(sigma);
    m.predict(model_call<examples::toy_dit_prompt, float, 4>{x.as<4>(), s.as<1>(), pass, pass, &p, &ov}, out.as<4>());
    return out;
}

/// uncond + (cond - uncond) * scale, as the guider combines.
inline tensor<float> cfg_of(const tensor<float>& cond, const tensor<float>& uncond, double scale) {
    tensor<float> out(cond.shape());
    kernels::cfg_combine<float, 4>(cond.as<4>(), uncond.as<4>(), scale, out.as<4>());
    return out;
}

/// A model that skips blocks and allocates nothing: the answer is a * x + b per prompt, with
/// other coefficients when any block is skipped. Counts calls and skipping calls.
struct skip_affine_model {
    struct prompt {
        float a = 0.5f, b = 0.1f;
    };
    using conditioning_type = prompt;
    static constexpr bool skips_blocks = true;
    int calls = 0, skipping = 0;
    template <class T, std::size_t R>
    void predict(const model_call<prompt, T, R>& c, view<T, R> out) {
        ++calls;
        bool skipped = false;
        for (int i = 0; i < 16; ++i)
            skipped = skipped || c.overrides->skips({dit_block_site::kind::double_block, i}) ||
                      c.overrides->skips({dit_block_site::kind::single_block, i});
        skipping += skipped ? 1 : 0;
        const T a = static_cast<T>(skipped ? c.conditioning->a * 0.5f : c.conditioning->a);
        const T b = static_cast<T>(skipped ? -c.conditioning->b : c.conditioning->b);
        kernels::transform(out, [a, b](auto x) { return x * a + b; }, c.x);
    }
};

/// A model with no capability at all (the identity on x).
struct plain_model {
    using conditioning_type = int;
    template <class T, std::size_t R>
    void predict(const model_call<int, T, R>& c, view<T, R> out) {
        kernels::copy<T, R>(c.x, out);
    }
};

} // namespace patchbay::test
