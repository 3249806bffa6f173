// libFuzzer target: every cfg-stage patch entry point, the multi-prompt guiders, and the network
// patches' hooks, driven by fuzzed shapes (ranks 4 and 5, odd and 1-sized dims, mismatched
// uncond / sigma), parameters (drawn from each patch's descriptor: in and out of range, NaN, inf)
// and values. Single-prompt hooks are called through the checked entry points
// (core/dispatch.hpp), as an engine calls one patch on its own; Perp-Neg's combination through
// its checked perp_neg::combine; PerpNeg's model pass, PerpNegGuider and DualCFGGuider through a
// guider on a model that answers each prompt with a fuzzed prediction; Deep Shrink's input- and
// output-block hooks as its unit tests call them (validate, then input_block_patch /
// output_block_patch); NAG's attention-output hook through its checked nag::apply_chunks; Skip
// Layer Guidance's post-cfg step through apply_post_cfg with a model_access that answers the
// re-run with a fuzzed prediction (or, after validate, through post_cfg_with with a re-run answer
// of any shape and a strided cond), and SkipLayerGuidanceDiT / DiTSimple / SD3 through a guider on
// a model that skips blocks (fuzzed layer strings: lists, garbage, huge or out-of-range indices,
// empty; the window on sigma); the CFG++ samplers euler_cfg_pp and euler_ancestral_cfg_pp for a few
// steps (fuzzed schedules: decreasing, zeros, equal neighbours, out of order; eta, s_noise, seed)
// through sample() on a guider whose model answers with fuzzed predictions.
// Contract checked on every input:
//   - a rejected input raises patchbay::error (anything else escaping is a crash);
//   - finite input with valid parameters gives finite output (the NaN policy: where ComfyUI gives
//     NaN from finite input, Tonemap at multiplier 0 or one pixel, Perp-Neg with cond == empty,
//     the patches return the finite limit, so no input is excluded).
// The first byte selects the case (head % cases) and the rank (the next bit).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/patches/attention/nag.hpp"
#include "patchbay/patches/block/deep_shrink.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"
#include "patchbay/patches/cfg/renorm_cfg.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/cfg/video_cfg_guidance.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"
#include "patchbay/patches/pass/skip_layer_guidance_dit_simple.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/post_cfg/cfg_zero_star.hpp"
#include "patchbay/patches/post_cfg/epsilon_scaling.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/post_cfg/skip_layer_guidance_dit.hpp"
#include "patchbay/patches/post_cfg/temporal_score_rescaling.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"
#include "patchbay/patches/pre_cfg/latent_apply_operation_cfg.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"

using namespace patchbay;

namespace {

struct reader {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t byte() {
        if (!n) return 0;
        --n;
        return *p++;
    }
    /// A parameter: mostly inside [lo - span/4, hi + span/4], sometimes NaN or inf.
    double param(double lo, double hi) {
        const std::uint8_t sel = byte();
        if (sel == 255) return std::numeric_limits<double>::quiet_NaN();
        if (sel == 254) return std::numeric_limits<double>::infinity();
        if (sel == 253) return -std::numeric_limits<double>::infinity();
        const double u = (byte() * 256.0 + byte()) / 65535.0;
        const double span = hi - lo;
        return lo - span / 4 + u * span * 1.5;
    }
    index_t dim() { return 1 + byte() % 7; }
    float value() { return static_cast<float>(static_cast<std::int8_t>(byte())) / 16.0f; }
    /// A tensor's values: value() times a power of two (mostly 1; sometimes down to 2^-62, where
    /// squares underflow float32, or up to 2^20), one byte for the power, one per element.
    void fill(tensor<float>& t) {
        const std::uint8_t b = byte();
        const int e = b % 8 == 0 ? -2 * (b / 8) : b % 8 == 1 ? (b / 8) % 21 : 0;
        for (index_t i = 0; i < t.size(); ++i) t[i] = std::ldexp(value(), e);
    }
    /// A noise level: mostly |value| * 4 (multiples of 1/4 up to 32), sometimes tiny (down to
    /// 2^-120) or just below 1 (a flow model's end).
    float sigma() {
        const std::uint8_t b = byte();
        if (b % 16 == 0) return std::ldexp(1.0f, -8 * (b / 16));
        if (b % 16 == 1) return 1.0f - std::ldexp(1.0f, -1 - b / 16);
        return std::fabs(value()) * 4.0f;
    }
    /// A layer string (SLG): an index list, garbage bytes, a huge index, many indices, or empty.
    std::string layers() {
        std::string t;
        const std::uint8_t sel = byte();
        switch (sel % 6) {
        case 0: break; // empty
        case 1: {      // a list of small indices (some beyond a model's blocks), mixed separators
            for (int k = 0, m = 1 + byte() % 4; k < m; ++k) t += std::to_string(byte() % 16) + (byte() % 3 ? ", " : ";-");
            break;
        }
        case 2:
            for (int k = 0, m = byte() % 12; k < m; ++k) t += static_cast<char>(byte()); // anything
            break;
        case 3: t = sel & 8 ? "2147483647, 1" : "2147483648"; break; // INT_MAX, and one above it
        case 4:
            for (int k = 0, m = 50 + byte() % 24; k < m; ++k) t += std::to_string(k) + " "; // about 64
            break;
        default: t = sel & 8 ? "007,x7 7" : " , "; break; // duplicates; separators only
        }
        return t;
    }
    /// A sampling schedule of 1 to 6 noise levels: mostly sorted decreasing (zeros and equal
    /// neighbours come from the draws), sometimes unsorted (rising steps, as FlipSigmas makes),
    /// rarely with a negative, NaN or inf. A level is |value| * 4, or 2^-k for k up to 15, or
    /// just below 1. (Not as small as sigma() goes: k-diffusion's step divides x - uncond by the
    /// level it starts from, which leaves float32 range below about 2^-100 for large latents,
    /// in ComfyUI as here.)
    std::vector<double> schedule() {
        std::vector<double> s(static_cast<std::size_t>(1 + byte() % 6));
        for (auto& v : s) {
            const std::uint8_t b = byte();
            v = b % 16 == 0 ? std::ldexp(1.0, -(b / 16)) : b % 16 == 1 ? 1.0 - std::ldexp(1.0, -1 - b / 16)
                                                                        : std::fabs(value()) * 4.0;
        }
        const std::uint8_t sel = byte();
        if (sel % 4 != 0) std::sort(s.begin(), s.end(), [](double a, double b) { return a > b; });
        if (sel % 8 == 1) s.back() = 0.0;
        if (sel % 16 == 2 && s.size() > 1) s[1] = s[0];
        if (sel == 255) s[s.size() / 2] = -1.0;
        if (sel == 254) s.back() = std::numeric_limits<double>::quiet_NaN();
        if (sel == 253) s.front() = std::numeric_limits<double>::infinity();
        return s;
    }
};

/// A value of P whose numeric inputs are drawn around their descriptor ranges (model facts:
/// small counts from their minimum, so FreeU's channel rule can match) and whose strings are
/// layer strings (SLG's, the only string inputs); others keep defaults.
template <class P>
P fuzz_params(reader& in) {
    P p = with_defaults<P>();
    P::descriptor().for_each_input([&](const auto& b) {
        using M = typename std::remove_cvref_t<decltype(b)>::member_type;
        const input_info& i = b.info;
        M& v = p.*(b.member);
        if constexpr (std::is_same_v<M, bool>) {
            v = in.byte() % 2 == 1;
        } else if constexpr (std::is_floating_point_v<M>) {
            v = static_cast<M>(in.param(i.lo, i.hi));
        } else if constexpr (std::is_integral_v<M>) {
            double d = i.kind == input_kind::model_fact ? i.lo + in.byte() % 4 : in.param(i.lo, i.hi);
            if (!std::isfinite(d)) d = i.lo - 1; // out of range, and representable
            constexpr double limit = static_cast<double>(std::numeric_limits<M>::max() / 2);
            v = static_cast<M>(std::clamp(d, -limit, limit));
        } else if constexpr (std::is_same_v<M, std::string>) {
            v = in.layers();
        }
    });
    return p;
}

bool all_finite(const tensor<float>& t) {
    for (index_t i = 0; i < t.size(); ++i)
        if (!std::isfinite(t[i])) return false;
    return true;
}

template <std::size_t R>
bool all_finite(view<const float, R> v) {
    return all_finite(tensor<float>::copy_of(v));
}

/// A model that answers each prompt with a fixed prediction (the prompt is that tensor), as the
/// guider golden cases replace ComfyUI's model by recorded outputs.
struct fixed_model {
    using conditioning_type = tensor<float>;
    template <std::size_t R>
    void predict(const model_call<tensor<float>, float, R>& c, view<float, R> out) const {
        require(c.conditioning != nullptr, "fixed_model", "a pass without a prompt");
        const view<const float, R> p = c.conditioning->template as<R>();
        require_same_shape(p, view<const float, R>(out), "fixed_model", "prompt", "out");
        kernels::copy<float, R>(p, out);
    }
};

/// The model samplings a hook may read: none, eps, v-prediction, a flow model.
const model_sampling* sampling_of(std::uint8_t sel) {
    static const model_sampling eps = model_sampling::discrete("eps");
    static const model_sampling v = model_sampling::discrete("v_prediction");
    static const model_sampling flow = model_sampling::sd3(3.0);
    switch (sel % 4) {
    case 0: return nullptr;
    case 1: return &eps;
    case 2: return &v;
    default: return &flow;
    }
}

/// A DiT that skips blocks on request (SLG's capability) with fixed answers: each prompt is a
/// prediction for the normal pass and one for a pass that skips any of its 12 double or 12
/// single blocks (requests for other indices change nothing, as in ComfyUI).
struct skipping_model {
    struct prompt {
        const tensor<float>* normal;
        const tensor<float>* skipped;
    };
    using conditioning_type = prompt;
    static constexpr bool skips_blocks = true;
    template <std::size_t R>
    void predict(const model_call<prompt, float, R>& c, view<float, R> out) const {
        require(c.conditioning != nullptr, "skipping_model", "a pass without a prompt");
        bool skipped = false;
        for (int b = 0; b < 12; ++b)
            skipped = skipped || c.overrides->skips({dit_block_site::kind::double_block, b}) ||
                      c.overrides->skips({dit_block_site::kind::single_block, b});
        const tensor<float>& answer = skipped ? *c.conditioning->skipped : *c.conditioning->normal;
        const fixed_model fixed;
        fixed.predict(model_call<tensor<float>, float, R>{c.x, c.sigma, c.pass, c.prompt, &answer, c.overrides}, out);
    }
};

/// One step of guider<Model, P...> on the prompts (pos, neg, extra).
template <std::size_t R, class Model, class... P>
void guided_on(const model_sampling& ms, const tensor<float>& x, const tensor<float>& sigma, double cond_scale,
               const std::array<const typename Model::conditioning_type*, 3>& prompts, tensor<float>& out,
               P... patches) {
    const Model model;
    const guider<const Model, P...> g(model, ms, patches...);
    auto run = g.begin_run(prompts[0], prompts[1], prompts[2]);
    g.denoise(run, step_inputs<float, R>{x.template as<R>(), sigma.template as<1>(), cond_scale},
              out.template as<R>());
}

/// One step of guider<fixed_model, P...> with the fuzzed predictions as the prompts' answers.
template <std::size_t R, class... P>
void guided(const model_sampling& ms, const tensor<float>& x, const tensor<float>& sigma, double cond_scale,
            const tensor<float>& cond, const tensor<float>& uncond, const tensor<float>& extra, tensor<float>& out,
            P... patches) {
    guided_on<R, fixed_model>(ms, x, sigma, cond_scale, {&cond, &uncond, &extra}, out, patches...);
}

/// Skip Layer Guidance's post-cfg step on a CFG result in `out`. Through apply_post_cfg with a
/// model_access that answers the re-run with `rerun` (SkipLayerGuidanceDiT or the SD3 wrapper),
/// or, after the dispatcher's parameter check, through post_cfg_with with `rerun` as the answer
/// (any shape) and cond read through a strided view (the packed path).
template <std::size_t R>
void slg_post_cfg(reader& in, guidance_inputs<float, R> gi, const tensor<float>& cond, view<const float, R> uncond,
                  const tensor<float>& rerun, tensor<float>& out) {
    workspace ws;
    if (in.byte() % 2) gi.scratch = &ws;
    auto answer = [&rerun](pass_kind prompt, view<const float, R>, view<float, R> o, const call_overrides<float>* skips) {
        if (prompt != pass_kind::cond || skips == nullptr || skips->empty()) __builtin_trap(); // not SLG's re-run
        require_same_shape(rerun.template as<R>(), view<const float, R>(o), "slg fuzz", "rerun", "out");
        kernels::copy<float, R>(rerun.template as<R>(), o);
    };
    model_access<float, R> access(model_access<float, R>::evaluate_fn::to(answer));
    no_state none;
    const view<const float, R> c = cond.template as<R>();
    switch (in.byte() % 3) {
    case 0: apply_post_cfg(fuzz_params<skip_layer_guidance_dit>(in), none, gi, c, uncond, out.template as<R>(), access); break;
    case 1: apply_post_cfg(fuzz_params<skip_layer_guidance_sd3>(in), none, gi, c, uncond, out.template as<R>(), access); break;
    default: {
        const auto p = fuzz_params<skip_layer_guidance_dit>(in);
        validate(p);
        // cond with its last two dims swapped in memory
        std::vector<index_t> tshape(cond.shape().begin(), cond.shape().end());
        std::swap(tshape[R - 1], tshape[R - 2]);
        tensor<float> ct(tshape);
        auto str = view<float, R>::row_major_strides(ct.template as<R>().extents());
        std::swap(str[R - 1], str[R - 2]);
        const view<float, R> cs(ct.data(), c.extents(), str);
        kernels::copy<float, R>(c, cs);
        p.post_cfg_with(none, gi, view<const float, R>(cs), out.template as<R>(),
                        [&rerun](const call_overrides<float>&, view<float, R>) { return rerun.template as<R>(); });
        break;
    }
    }
}

/// The three SLG nodes through a guider on skipping_model: cond and uncond answer the normal
/// passes, `skipped` every pass that skips a block. SkipLayerGuidanceDiT, its SD3 wrapper,
/// DiTSimple, or DiTSimple on the uncond pass beside DiT's re-run on cond.
template <std::size_t R>
void slg_guided(reader& in, const model_sampling& ms, const tensor<float>& x, const tensor<float>& sigma,
                double cond_scale, const tensor<float>& cond, const tensor<float>& uncond, const tensor<float>& skipped,
                tensor<float>& out) {
    const skipping_model::prompt pos{&cond, &skipped}, neg{&uncond, &skipped};
    const std::array<const skipping_model::prompt*, 3> prompts{&pos, &neg, nullptr};
    switch (in.byte() % 4) {
    case 0: guided_on<R, skipping_model>(ms, x, sigma, cond_scale, prompts, out, fuzz_params<skip_layer_guidance_dit>(in)); break;
    case 1: guided_on<R, skipping_model>(ms, x, sigma, cond_scale, prompts, out, fuzz_params<skip_layer_guidance_sd3>(in)); break;
    case 2:
        guided_on<R, skipping_model>(ms, x, sigma, cond_scale, prompts, out, fuzz_params<skip_layer_guidance_dit_simple>(in));
        break;
    default:
        guided_on<R, skipping_model>(ms, x, sigma, cond_scale, prompts, out, fuzz_params<skip_layer_guidance_dit_simple>(in),
                                     fuzz_params<skip_layer_guidance_dit>(in), cfg_zero_star{});
        break;
    }
}

/// A few steps of a CFG++ sampler through sample() on guider<fixed_model, P...>: x is the noise,
/// the latent image empty or `latent`, a fuzzed schedule, eta / s_noise / seed, and the engine's
/// noise source or the built-in generator.
template <std::size_t R, class... P>
void cfg_pp_sample(reader& in, const model_sampling& ms, const tensor<float>& noise, double cond_scale,
                   const tensor<float>& cond, const tensor<float>& uncond, const tensor<float>& latent,
                   tensor<float>& out, P... patches) {
    const fixed_model model;
    const guider<const fixed_model, P...> g(model, ms, patches...);
    auto run = g.begin_run(&cond, &uncond, &latent);
    const std::vector<double> sigmas = in.schedule();
    sample_inputs<float, R> si{noise.template as<R>(), {}, sigmas, cond_scale};
    if (in.byte() % 3 == 0) si.latent_image = latent.template as<R>();
    sample_options<float, R> opt;
    const bool ancestral = in.byte() % 2;
    if (ancestral) {
        opt.eta = in.param(0.0, 1.0);
        opt.s_noise = in.param(0.0, 10.0);
        opt.seed = in.byte();
    }
    const float z = in.value();
    auto source = [z](double, double, view<float, R> n) { kernels::fill(n, z); };
    if (in.byte() % 2) opt.noise_source = callback<void(double, double, view<float, R>)>::to(source);
    sample(ancestral ? "euler_ancestral_cfg_pp" : "euler_cfg_pp", g, run, si, out.template as<R>(), opt);
}

template <class T>
T fuzz_method(reader& in) {
    return static_cast<T>(in.byte() % kernels::resize_method_names.size());
}

/// Deep Shrink's two hooks as a UNet calls them: input block `site` on h (4-D or 5-D), then, for
/// 4-D, the output block with the skip feature `hsp`. Returns whether every result is finite.
template <std::size_t R>
bool deep_shrink_hooks(reader& in, const tensor<float>& h, const tensor<float>& hsp) {
    auto p = fuzz_params<deep_shrink>(in);
    p.downscale_method = fuzz_method<kernels::resize_method>(in);
    p.upscale_method = fuzz_method<kernels::resize_method>(in);
    validate(p); // the dispatcher's check when the patch joins a guider or chain
    workspace results, arena;
    const bool with_arena = in.byte() % 2;
    const int block = in.byte() % 4 ? p.block_number : p.block_number + 1;
    block_site site{unet_stage::input, block, h.shape()[1]};
    site.scratch = with_arena ? &arena : nullptr;
    tensor<float> h_copy = h;
    const view<float, R> deep = p.input_block_patch<float, R>(site, h_copy.template as<R>(), results, 0);
    if (!all_finite<R>(deep)) return false;
    if constexpr (R == 4) {
        site.stage = unet_stage::output;
        const view<float, 4> back = p.output_block_patch<float>(site, deep, hsp.template as<4>(), results, 4);
        if (!all_finite<4>(back)) return false;
        if (back.extent(2) != hsp.shape()[2]) return false; // back at the skip's height
    }
    return true;
}

/// NAG's attention-output hook on fuzzed chunks: (items, tokens, features), the chunks'
/// prompts (0 positive, 1 negative; 2 is refused) and an optional image-token slice.
bool nag_hook(reader& in) {
    const index_t chunks = 1 + in.byte() % 3;
    std::vector<int> cond_or_uncond(static_cast<std::size_t>(chunks));
    for (auto& c : cond_or_uncond) c = in.byte() % 7 == 0 ? 2 : in.byte() % 2;
    const index_t per_chunk = in.byte() % 8 == 0 ? 0 : in.dim() % 3 + 1;
    const index_t B = chunks * per_chunk + (in.byte() % 8 == 0 ? 1 : 0), N = in.dim() + 2, F = in.dim() * 3;
    std::optional<std::pair<index_t, index_t>> img;
    if (in.byte() % 2) img = std::pair<index_t, index_t>{in.byte() % (N + 2), in.byte() % (N + 2)};
    const auto p = fuzz_params<normalized_attention_guidance>(in);
    tensor<float> attn({B, N, F});
    in.fill(attn);
    workspace ws;
    nag::apply_chunks<float>(p, attn.as<3>(), std::span<const int>(cond_or_uncond), img,
                             in.byte() % 2 ? &ws : nullptr);
    return all_finite(attn);
}

constexpr int cases = 24;

/// PATCHBAY_FUZZ_TRACE=1 prints each input's case and whether it was accepted (to check seeds).
bool trace() {
    static const bool on = std::getenv("PATCHBAY_FUZZ_TRACE") != nullptr;
    return on;
}

template <std::size_t R>
void run(reader& in, int which) {
    std::vector<index_t> shape(R);
    for (auto& d : shape) d = in.dim();
    std::vector<index_t> ushape = shape;
    const std::uint8_t mismatch = in.byte();
    if (mismatch % 16 == 1) ushape[mismatch / 16 % R] += 1;
    tensor<float> x(shape), cond(shape), uncond(ushape), out(shape);
    in.fill(x);
    in.fill(cond);
    in.fill(uncond);
    const index_t sigma_len = (in.byte() % 8 == 0) ? shape[0] + 1 : shape[0];
    tensor<float> sigma({sigma_len});
    for (index_t i = 0; i < sigma_len; ++i) sigma[i] = in.sigma();
    const double cond_scale = in.param(0.0, 30.0);
    const bool uncond_none = in.byte() % 5 == 0;
    if (uncond_none) uncond.fill(0.f);
    const model_sampling* ms = sampling_of(in.byte());
    const auto pred = ms ? ms->prediction() : (in.byte() % 2) ? prediction_type::flow : prediction_type::eps;
    guidance_inputs<float, R> gi{x.template as<R>(), sigma.template as<1>(), cond_scale, uncond_none, pred};
    gi.sampling = ms;
    // the third prediction (Perp-Neg's empty prompt, Dual CFG's middle one); sometimes equal to
    // cond, where ComfyUI's projection is 0/0
    tensor<float> extra(shape);
    if (which >= 15 && which <= 18) {
        if (in.byte() % 4 == 0) extra = cond;
        else
            in.fill(extra);
    }
    auto c = cond.template as<R>();
    auto u = uncond.template as<R>();
    auto o = out.template as<R>();
    const model_sampling& guider_sampling = ms ? *ms : *sampling_of(1);
    no_state none;
    bool checks_out = which >= 3; // pre-cfg hooks write cond and uncond only
    bool finite = true;
    try {
        switch (which) {
        case 0: { // APG, twice so the state's momentum path runs
            const auto p = fuzz_params<apg>(in);
            apg::state_type st;
            apply_pre_cfg(p, st, gi, c, u);
            apply_pre_cfg(p, st, gi, c, u);
            break;
        }
        case 1: apply_pre_cfg(tcfg{}, none, gi, c, u); break;
        case 2: apply_pre_cfg(fuzz_params<fresca>(in), none, gi, c, u); break;
        case 3: apply_cfg_function(fuzz_params<rescale_cfg>(in), none, gi, c, u, o); break;
        case 4: apply_cfg_function(fuzz_params<renorm_cfg>(in), none, gi, c, u, o); break;
        case 5: {
            kernels::cfg_combine(view<const float, R>(c), view<const float, R>(c), 1.0, o);
            auto p = fuzz_params<cfg_norm>(in);
            p.pre_cfg = false; // the post-cfg slot (the cfg-function form is case 7)
            apply_post_cfg(p, none, gi, c, u, o);
            break;
        }
        case 6: {
            kernels::cfg_combine(view<const float, R>(c), view<const float, R>(c), 1.0, o);
            apply_post_cfg(mahiro{}, none, gi, c, u, o);
            break;
        }
        case 7: {
            if constexpr (R == 4) {
                if (in.byte() % 2) {
                    const block_site site{unet_stage::output, 0, shape[1]};
                    apply_output_block(fuzz_params<free_u_v2>(in), none, site, c, u);
                    break;
                }
            }
            auto p = fuzz_params<cfg_norm>(in);
            p.pre_cfg = true;
            apply_cfg_function(p, none, gi, c, u, o);
            break;
        }
        // post-cfg hooks of issue 14, on a plain CFG result
        case 8:
        case 9:
        case 10: {
            kernels::cfg_combine(view<const float, R>(c), view<const float, R>(c), 1.0, o);
            if (which == 8) apply_post_cfg(cfg_zero_star{}, none, gi, c, u, o);
            else if (which == 9) apply_post_cfg(fuzz_params<epsilon_scaling>(in), none, gi, c, u, o);
            else apply_post_cfg(fuzz_params<temporal_score_rescaling>(in), none, gi, c, u, o);
            break;
        }
        case 11: apply_cfg_function(fuzz_params<video_linear_cfg_guidance>(in), none, gi, c, u, o); break;
        case 12: apply_cfg_function(fuzz_params<video_triangle_cfg_guidance>(in), none, gi, c, u, o); break;
        case 13:
        case 14: {
            checks_out = false;
            workspace ws;
            if (in.byte() % 2) gi.scratch = &ws;
            const latent_apply_operation_cfg p{
                which == 13 ? latent_apply_operation_cfg::operation_type(fuzz_params<latent_operation_sharpen>(in))
                            : latent_apply_operation_cfg::operation_type(fuzz_params<latent_operation_tonemap_reinhard>(in))};
            apply_pre_cfg(p, none, gi, c, u);
            break;
        }
        case 15: { // Perp-Neg's combination, the empty prediction given (out may be one of the inputs)
            const auto p = fuzz_params<perp_neg>(in);
            const std::uint8_t alias = in.byte() % 4;
            if (alias == 0) {
                p.combine(gi, c, u, extra.template as<R>(), o);
            } else {
                tensor<float>& target = alias == 1 ? cond : alias == 2 ? uncond : extra;
                p.combine(gi, c, u, extra.template as<R>(), target.template as<R>());
                out = target;
            }
            break;
        }
        case 16: { // PerpNeg as the cfg function, its extra pass on the model
            const auto p = fuzz_params<perp_neg>(in);
            if (in.byte() % 2) guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p);
            else guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p, cfg_zero_star{});
            break;
        }
        case 17: { // PerpNegGuider, alone or with the hooks it runs (pre-cfg on three predictions)
            const auto p = fuzz_params<perp_neg_guider>(in);
            switch (in.byte() % 3) {
            case 0: guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p); break;
            case 1: {
                const latent_apply_operation_cfg op{fuzz_params<latent_operation_tonemap_reinhard>(in)};
                guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p, op, cfg_zero_star{});
                break;
            }
            default: {
                const latent_apply_operation_cfg op{fuzz_params<latent_operation_sharpen>(in)};
                guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p, op,
                          fuzz_params<temporal_score_rescaling>(in));
                break;
            }
            }
            break;
        }
        case 18: { // DualCFGGuider, alone or with a cfg function and post-cfg hooks inside
            auto p = fuzz_params<dual_cfg_guider>(in);
            p.style = in.byte() % 2 ? dual_cfg_style::nested : dual_cfg_style::regular;
            switch (in.byte() % 3) {
            case 0: guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p); break;
            case 1:
                guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p,
                          fuzz_params<video_triangle_cfg_guidance>(in), fuzz_params<epsilon_scaling>(in));
                break;
            default:
                guided<R>(guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out, p,
                          fuzz_params<rescale_cfg>(in), cfg_zero_star{});
                break;
            }
            break;
        }
        case 19:
            checks_out = false;
            finite = deep_shrink_hooks<R>(in, cond, uncond);
            break;
        case 20:
            checks_out = false;
            finite = nag_hook(in);
            break;
        case 21: { // SLG's post-cfg step on a plain CFG result, the re-run answering `extra`
            kernels::cfg_combine(view<const float, R>(c), view<const float, R>(c), 1.0, o);
            if (in.byte() % 4 == 0) extra = uncond; // sometimes of another shape
            else
                in.fill(extra);
            slg_post_cfg<R>(in, gi, cond, u, extra, out);
            break;
        }
        case 22: // the SLG nodes through a guider, the skipping passes answering `extra`
            in.fill(extra);
            slg_guided<R>(in, guider_sampling, x, sigma, cond_scale, cond, uncond, extra, out);
            break;
        default: { // the CFG++ samplers, alone or with a cfg function / post-cfg hook
            in.fill(extra);
            switch (in.byte() % 3) {
            case 0: cfg_pp_sample<R>(in, guider_sampling, x, cond_scale, cond, uncond, extra, out); break;
            case 1: cfg_pp_sample<R>(in, guider_sampling, x, cond_scale, cond, uncond, extra, out, fuzz_params<rescale_cfg>(in)); break;
            default: cfg_pp_sample<R>(in, guider_sampling, x, cond_scale, cond, uncond, extra, out, cfg_zero_star{}); break;
            }
            break;
        }
        }
    } catch (const patchbay::error& e) {
        if (trace()) std::fprintf(stderr, "case %d, rank %zu: rejected: %s\n", which, R, e.what());
        return; // rejected: fine
    }
    if (trace()) std::fprintf(stderr, "case %d, rank %zu: accepted\n", which, R);
    // Accepted: the output of finite input must be finite. (Parameters were accepted, so they
    // were valid; shapes were accepted, so they matched.)
    if (!finite || !all_finite(cond) || !all_finite(uncond) || (checks_out && !all_finite(out))) __builtin_trap();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    reader in{data, size};
    const std::uint8_t head = in.byte();
    const int which = head % cases;
    if ((head / cases) % 2) run<5>(in, which);
    else run<4>(in, which);
    return 0;
}
