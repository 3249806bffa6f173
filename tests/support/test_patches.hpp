// patchbay tests: small patches that record what the guider calls (order, slots, state,
// re-evaluation) and the models they run on, shared by the guider and patch_chain tests.
#pragma once

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "patchbay/core/guider.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "test_util.hpp"
#include "toy_gaussian.hpp"

namespace patchbay::test {

using examples::toy_gaussian;
using examples::toy_kind;
using examples::toy_prompt;

using event_log = std::vector<std::string>;

/// The toy model, counting its calls per pass.
struct counting_model {
    using conditioning_type = toy_prompt;
    toy_gaussian toy{toy_kind::vp, 0.8};
    int cond_calls = 0, uncond_calls = 0, reeval_calls = 0;
    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& c, view<T, R> out) {
        (c.pass == pass_kind::cond ? cond_calls : c.pass == pass_kind::uncond ? uncond_calls : reeval_calls)++;
        toy.predict(c, out);
    }
};

/// A model with block and attention hooks: the prediction is the toy's, passed through one
/// "output block" (h = the prediction, hsp = a scratch copy) and one attention site whose
/// output (v by default, or the replacement) is added to element 0.
struct hooked_model {
    using conditioning_type = toy_prompt;
    static constexpr bool calls_block_hooks = true;
    static constexpr bool calls_attention_hooks = true;
    toy_gaussian toy{toy_kind::vp, 0.8};
    std::vector<pass_kind> attention_reads; // pass of every call whose attention was read
    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& c, view<T, R> out) {
        toy.predict(c, out);
        const call_overrides<T>& ov = *c.overrides;
        if constexpr (R == 4) {
            tensor<T> hsp = tensor<T>::copy_of(out);
            ov.apply_output_block(block_site{unet_stage::output, 0, out.extent(1)}, out, hsp.template as<4>());
        }
        const attention_site site{unet_stage::middle, 0, 0};
        tensor<T> q({1, 2, 2}), k({1, 2, 2}), v({1, 2, 2}), a({1, 2, 2});
        v.fill(T(0.25));
        if (auto rep = ov.attention_replacement(site)) {
            rep(site, attention_tensors<T>{q.template as<3>(), k.template as<3>(), v.template as<3>(), 1}, a.template as<3>());
        } else {
            a.fill(T(0)); // "normal" attention output of this fake block
            if (ov.reads_attention(site)) {
                tensor<T> p({1, 2, 2});
                p.fill(T(0.5));
                ov.on_attention_probabilities(site, p.template as<3>(), 1);
                attention_reads.push_back(c.pass);
            }
        }
        out.data_handle()[0] += a[0];
    }
};

struct log_pre {
    event_log* log;
    std::string tag;
    float cond_scale_by = 1.f;
    static constexpr auto descriptor() { return describe<log_pre>("log_pre", "log_pre", hook_kind::pre_cfg); }
    void validate() const {}
    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>&, view<T, R> cond, view<T, R>) const {
        log->push_back("pre:" + tag);
        const T f = static_cast<T>(cond_scale_by);
        kernels::transform(cond, [f](auto c) { return c * f; }, cond);
    }
};

struct log_cfg {
    event_log* log;
    static constexpr auto descriptor() { return describe<log_cfg>("log_cfg", "log_cfg", hook_kind::cfg_function); }
    void validate() const {}
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>&, view<const T, R> cond, view<const T, R>,
                      view<T, R> out) const {
        log->push_back("cfg");
        kernels::copy<T, R>(cond, out); // "guidance" = the cond prediction
    }
};

struct log_post {
    event_log* log;
    std::string tag;
    float add = 0.f;
    static constexpr auto descriptor() { return describe<log_post>("log_post", "log_post", hook_kind::post_cfg); }
    void validate() const {}
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, view<const T, R>, view<const T, R>,
                  view<T, R> denoised) const {
        log->push_back("post:" + tag + (in.uncond_is_none ? ":none" : ""));
        const T a = static_cast<T>(add);
        kernels::transform(denoised, [a](auto d) { return d + a; }, denoised);
    }
};

struct log_mask {
    event_log* log;
    static constexpr auto descriptor() { return describe<log_mask>("log_mask", "log_mask", hook_kind::mask_function); }
    void validate() const {}
    template <class T, std::size_t R>
    void mask(no_state&, const mask_inputs& mi, view<const T, R> m, view<T, R> out) const {
        log->push_back("mask");
        REQUIRE(mi.sampling != nullptr);
        REQUIRE(!mi.step_sigmas.empty());
        kernels::transform(out, [](auto v) { return v * T(0) + T(1); }, m); // regenerate everything
    }
};

/// Moves between the pre-cfg and post-cfg slot at run time (like CFGNorm's pre_cfg flag).
struct movable {
    event_log* log;
    bool pre = false;
    static constexpr auto descriptor() { return describe<movable>("movable", "movable", hook_kind::post_cfg); }
    hook_kind slot() const { return pre ? hook_kind::pre_cfg : hook_kind::post_cfg; }
    void validate() const {}
    template <class T, std::size_t R>
    void pre_cfg(no_state&, const guidance_inputs<T, R>&, view<T, R>, view<T, R>) const {
        log->push_back("movable:pre");
    }
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>&, view<const T, R>, view<const T, R>, view<T, R>) const {
        log->push_back("movable:post");
    }
};

/// Stateful pre-cfg patch: cond += 0.1 * (number of earlier calls in this run).
struct counter_patch {
    static constexpr auto descriptor() { return describe<counter_patch>("counter_patch", "counter_patch", hook_kind::pre_cfg); }
    struct state_type {
        int calls = 0;
    };
    void validate() const {}
    template <class T, std::size_t R>
    void pre_cfg(state_type& s, const guidance_inputs<T, R>&, view<T, R> cond, view<T, R>) const {
        const T add = static_cast<T>(0.1 * s.calls);
        kernels::transform(cond, [add](auto c) { return c + add; }, cond);
        ++s.calls;
    }
};

struct bad_param_patch {
    double strength = 2.0;
    static constexpr auto descriptor() {
        return describe<bad_param_patch>("bad_param_patch", "bad_param_patch", hook_kind::post_cfg,
                                         floating("strength", &bad_param_patch::strength, 1.0, 0.0, 1.0));
    }
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>&, view<const T, R>, view<const T, R>, view<T, R>) const {}
};

/// Keeps the uncond pass at cond_scale 1 (as SAG) and records what it saw.
struct keeps_uncond {
    event_log* log;
    static constexpr auto descriptor() { return describe<keeps_uncond>("keeps_uncond", "keeps_uncond", hook_kind::post_cfg); }
    static constexpr bool disable_cfg1_optimization = true;
    void validate() const {}
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, view<const T, R>, view<const T, R>, view<T, R>) const {
        log->push_back(in.uncond_is_none ? "none" : "uncond");
    }
};

/// PAG-like: re-evaluates the cond prompt on x with the attention replaced by v, and adds
/// scale * (cond - that) to the result. Records the uncond pass's attention (SAG-like).
struct reeval_patch {
    float scale = 1.f;
    static constexpr auto descriptor() { return describe<reeval_patch>("reeval_patch", "reeval_patch", hook_kind::post_cfg); }
    static constexpr bool needs_attention_hooks = true;
    struct state_type {
        tensor<float> extra;
        int reads = 0;
    };
    void validate() const {}
    template <class T>
    void on_model_call(state_type& s, pass_kind pass, call_overrides<T>& ov) const {
        if (pass != pass_kind::uncond) return;
        ov.read_attention({unet_stage::middle, 0, 0},
                          typename call_overrides<T>::attention_read_fn(
                              [](void* ctx, const attention_site&, view<const T, 3>, index_t) {
                                  ++static_cast<state_type*>(ctx)->reads;
                              },
                              &s));
    }
    template <std::size_t R>
    void post_cfg(state_type& s, const guidance_inputs<float, R>& in, view<const float, R> cond,
                  view<const float, R>, view<float, R> denoised, model_access<float, R>& model) const {
        if (s.extra.rank() != R || s.extra.size() != cond.size())
            s.extra.resize(std::vector<index_t>(cond.extents().begin(), cond.extents().end()));
        call_overrides<float> extra;
        extra.replace_attention({unet_stage::middle, 0, -1},
                                call_overrides<float>::attention_replace_fn(
                                    [](void*, const attention_site&, const attention_tensors<float>& t,
                                       view<float, 3> out) { kernels::copy<float, 3>(t.v, out); },
                                    nullptr));
        const view<float, R> e = s.extra.template as<R>();
        model.evaluate(pass_kind::cond, in.x, e, &extra);
        const float sc = scale;
        kernels::transform(denoised, [sc](auto d, auto c, auto p) { return d + (c - p) * sc; }, denoised,
                           cond, view<const float, R>(e));
    }
};

struct block_doubler {
    static constexpr auto descriptor() { return describe<block_doubler>("block_doubler", "block_doubler", hook_kind::output_block); }
    void validate() const {}
    template <class T>
    void output_block(no_state&, const block_site&, view<T, 4> h, view<T, 4>) const {
        kernels::transform(h, [](auto v) { return v * T(2); }, h);
    }
};

struct runtime_caps_model {
    using conditioning_type = toy_prompt;
    bool blocks = false;
    toy_gaussian toy{toy_kind::vp, 0.8};
    bool supports(capability c) const { return c == capability::block_hooks && blocks; }
    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& c, view<T, R> out) const {
        toy.predict(c, out);
        if constexpr (R == 4) {
            tensor<T> hsp = tensor<T>::copy_of(out);
            c.overrides->apply_output_block(block_site{}, out, hsp.template as<4>());
        }
    }
};

struct scene {
    tensor<float> x = test::random_tensor({2, 4, 8, 8}, 11);
    tensor<float> mu_c = test::random_tensor({1, 4, 8, 8}, 12);
    tensor<float> mu_u = test::random_tensor({1, 4, 8, 8}, 13);
    tensor<float> sigma{2};
    toy_prompt pos{mu_c.as<4>()}, neg{mu_u.as<4>()};
    model_sampling ms = model_sampling::discrete("eps");
    scene() {
        sigma[0] = 1.5f;
        sigma[1] = 0.7f;
    }
    step_inputs<float, 4> step(double cond_scale) const {
        return {x.as<4>(), sigma.as<1>(), cond_scale, {}, nullptr};
    }
    /// The toy's prediction for a prompt (direct call, no guider).
    tensor<float> predict(const toy_prompt& p, const view<const float, 4>& xv) const {
        tensor<float> out({2, 4, 8, 8});
        call_overrides<float> none;
        toy_gaussian{toy_kind::vp, 0.8}.predict(
            model_call<toy_prompt, float, 4>{xv, sigma.as<1>(), pass_kind::cond, pass_kind::cond, &p, &none},
            out.as<4>());
        return out;
    }
};

} // namespace patchbay::test
