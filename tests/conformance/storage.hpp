// patchbay conformance: the half-precision storage mode (`--storage f16|bf16`).
//
// In that mode every float32 input a case reads is first rounded to the storage format
// (golden_case::tensor_input), and so is every input a handler computes itself before the call. The handlers call the hook entry points through the wrappers
// below: each call runs the float32 path on the (rounded) inputs, as without the flag, and the
// same call again on f16 / bf16 copies of them through patchbay's half-storage path, from a copy
// of the patch's state. Every output of the half path must equal the float32 output rounded
// once to the storage format, within one unit in its last place. The runner then judges the
// case by those comparisons instead of the golden outputs (which were computed from unrounded
// inputs); a case whose handler makes no such call is skipped, with its function kind named.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/half.hpp"
#include "patchbay/kernels/attention.hpp"
#include "patchbay/kernels/convert.hpp"
#include "patchbay/patches/attention/nag.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "registry.hpp"

namespace patchbay::conformance {

/// What the storage mode found in the current case.
struct storage_report {
    int staged_calls = 0;   ///< hook calls compared on the half path
    int mismatches = 0;     ///< outputs beyond one unit in the last place
    std::string detail;     ///< the first mismatch, or why a call was not staged
};
inline storage_report& storage_findings() {
    static storage_report r;
    return r;
}

namespace storage_detail {

/// Half copies of float views whose values are already representable (exact).
template <class H, std::size_t R>
struct half_copy {
    std::vector<H> data;
    view<H, R> v;
    explicit half_copy(view<const float, R> f) : data(static_cast<std::size_t>(f.size())) {
        v = view<H, R>(data.data(), f.extents());
        if (f.data_handle()) kernels::narrow<H, R>(f, v);
        else v = view<H, R>();
    }
};

/// Distance in units of the last place between two values of H (same sign; NaN equal NaN).
template <class H>
int ulps(H a, H b) {
    const float fa = to_float(a), fb = to_float(b);
    if (fa != fa || fb != fb) return (fa != fa && fb != fb) ? 0 : 1 << 20;
    if ((a.bits ^ b.bits) & 0x8000u) return fa == fb ? 0 : 1 << 20; // +0 and -0 only
    return std::abs(static_cast<int>(a.bits) - static_cast<int>(b.bits));
}

/// Compares the half path's output (any layout; it may be a view the hook returned) with the
/// float32 output rounded once.
template <class H, std::size_t R>
void compare(const char* what, view<const float, R> reference, view<const H, R> got_view) {
    storage_report& rep = storage_findings();
    if (got_view.extents() != reference.extents()) {
        if (rep.mismatches++ == 0) rep.detail = std::string(what) + ": the half path returned another shape";
        return;
    }
    const auto n = static_cast<std::size_t>(reference.size());
    std::vector<H> want(n), got(n);
    kernels::narrow<H, R>(reference, view<H, R>(want.data(), reference.extents()));
    std::vector<float> wide(n); // the half values in order (widening and narrowing back is exact)
    kernels::widen<H, R>(got_view, view<float, R>(wide.data(), reference.extents()));
    kernels::narrow<H, R>(view<const float, R>(wide.data(), reference.extents()),
                          view<H, R>(got.data(), reference.extents()));
    for (std::size_t i = 0; i < n; ++i)
        if (ulps(want[i], got[i]) > 1) {
            if (rep.mismatches++ == 0)
                rep.detail = std::string(what) + " differs at " + std::to_string(i) + ": half path " +
                             std::to_string(to_float(got[i])) + ", float32 path rounded " +
                             std::to_string(to_float(want[i]));
            return;
        }
}
template <class H, std::size_t R>
void compare(const char* what, view<const float, R> reference, const half_copy<H, R>& got) {
    compare<H, R>(what, reference, view<const H, R>(got.v));
}

/// Rounds v's values in place to what storage H holds: a value the handler computed itself in
/// float32 (the cfg result a post-cfg case starts from) is held in f16 / bf16 by an engine too.
/// (Harness only: the const views here all point into the handler's own tensors.)
template <class H, std::size_t R>
void hold(view<const float, R> v) {
    if (!v.data_handle()) return;
    float* p = const_cast<float*>(v.data_handle());
    kernels::convert_detail::for_each_row<R>(v.extents(), v.strides(), v.strides(),
                                             [&](index_t o, index_t, index_t st, index_t, index_t n) {
                                                 for (index_t i = 0; i < n; ++i)
                                                     p[o + i * st] = rounded_through<H>(p[o + i * st]);
                                             });
}
template <class H, std::size_t R>
void hold_inputs(const guidance_inputs<float, R>& in) {
    hold<H, R>(in.x);
    hold<H, 1>(in.sigma);
    hold<H, R>(in.extra_denoised);
}

template <class H, std::size_t R>
guidance_inputs<H, R> half_inputs(const guidance_inputs<float, R>& in, const half_copy<H, R>& x,
                                  const half_copy<H, 1>& sigma, const half_copy<H, R>& extra) {
    guidance_inputs<H, R> h;
    h.x = x.v;
    h.sigma = sigma.v;
    h.cond_scale = in.cond_scale;
    h.uncond_is_none = in.uncond_is_none;
    h.prediction = in.prediction;
    h.sampling = in.sampling;
    h.prediction_count = in.prediction_count;
    h.extra_denoised = extra.v;
    h.in_multi_prompt = in.in_multi_prompt;
    h.disable_cfg1_optimization = in.disable_cfg1_optimization;
    return h;
}

/// An attention call's q, k and v rounded to H in place (hold) and copied to H.
template <class H>
struct half_qkv {
    half_copy<H, 3> q, k, v;
    half_qkv(view<const float, 3> qf, view<const float, 3> kf, view<const float, 3> vf)
        : q((hold<H, 3>(qf), qf)), k((hold<H, 3>(kf), kf)), v((hold<H, 3>(vf), vf)) {}
};

/// Runs the half path, then the float32 path (whose refusal is the case's verdict, as without
/// the flag), and records the call and any refusal the half path alone made.
template <class Half, class Float>
void both_paths(Half half, Float run_float) {
    std::string refused;
    try {
        half();
    } catch (const error& e) {
        refused = e.what();
    }
    run_float();
    storage_report& rep = storage_findings();
    ++rep.staged_calls;
    if (!refused.empty() && rep.mismatches++ == 0) rep.detail = "the half path refused: " + refused;
}

/// both_paths for a cfg-stage hook: `half` receives the guidance inputs on half copies.
template <class H, std::size_t R, class Half, class Float>
void both_paths(const guidance_inputs<float, R>& in, Half half, Float run_float) {
    const half_copy<H, R> x(in.x), extra(in.extra_denoised);
    const half_copy<H, 1> sigma(in.sigma);
    both_paths([&] { half(half_inputs<H, R>(in, x, sigma, extra)); }, run_float);
}

/// Records, in a storage mode, why the case's call is not staged (the first reason given).
inline void not_staged(const std::string& why) {
    if (storage_mode() != storage::f32 && storage_findings().detail.empty()) storage_findings().detail = why;
}

/// check(f16{}) or check(bf16{}) in a storage mode for float tensors, run_float() otherwise.
template <class T, class Check, class Float>
void in_storage_mode(Check check, Float run_float) {
    if constexpr (std::is_same_v<T, float>) {
        if (storage_mode() == storage::f16) return check(f16{});
        if (storage_mode() == storage::bf16) return check(bf16{});
    }
    run_float();
}

} // namespace storage_detail

using storage_detail::not_staged;

/// patchbay::apply_pre_cfg, checked on the storage format too in storage mode.
template <patch P, class T, std::size_t R>
void apply_pre_cfg(const P& p, state_t<P>& state, const guidance_inputs<T, R>& in, view<T, R> cond,
                   view<T, R> uncond) {
    auto run_float = [&] { patchbay::apply_pre_cfg<P, T, R>(p, state, in, cond, uncond); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold_inputs<H, R>(in);
        storage_detail::hold<H, R>(cond);
        storage_detail::hold<H, R>(uncond);
        storage_detail::half_copy<H, R> c{view<const float, R>(cond)}, u{view<const float, R>(uncond)};
        state_t<P> st = state;
        storage_detail::both_paths<H, R>(
            in, [&](const guidance_inputs<H, R>& h) { patchbay::apply_pre_cfg<P, H, R>(p, st, h, c.v, u.v); },
            run_float);
        storage_detail::compare<H, R>("cond", cond, c);
        storage_detail::compare<H, R>("uncond", uncond, u);
    };
    storage_detail::in_storage_mode<T>(check, run_float);
}

/// patchbay::apply_cfg_function, checked on the storage format too in storage mode.
template <patch P, class T, std::size_t R>
void apply_cfg_function(const P& p, state_t<P>& state, const guidance_inputs<T, R>& in,
                        std::type_identity_t<view<const T, R>> cond, std::type_identity_t<view<const T, R>> uncond,
                        view<T, R> out) {
    auto run_float = [&] { patchbay::apply_cfg_function<P, T, R>(p, state, in, cond, uncond, out); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold_inputs<H, R>(in);
        storage_detail::hold<H, R>(cond);
        storage_detail::hold<H, R>(uncond);
        const storage_detail::half_copy<H, R> c(cond), u(uncond);
        storage_detail::half_copy<H, R> o{view<const float, R>(out)};
        state_t<P> st = state;
        storage_detail::both_paths<H, R>(
            in,
            [&](const guidance_inputs<H, R>& h) { patchbay::apply_cfg_function<P, H, R>(p, st, h, c.v, u.v, o.v); },
            run_float);
        storage_detail::compare<H, R>("out", out, o);
    };
    storage_detail::in_storage_mode<T>(check, run_float);
}

/// patchbay::apply_post_cfg, checked on the storage format too in storage mode (patches that
/// evaluate the model run in float32 only: such a call is not staged).
template <patch P, class T, std::size_t R, class... Access>
void apply_post_cfg(const P& p, state_t<P>& state, const guidance_inputs<T, R>& in,
                    std::type_identity_t<view<const T, R>> cond, std::type_identity_t<view<const T, R>> uncond,
                    view<T, R> denoised, Access&... access) {
    auto run_float = [&] { patchbay::apply_post_cfg<P, T, R>(p, state, in, cond, uncond, denoised, access...); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold_inputs<H, R>(in);
        storage_detail::hold<H, R>(cond);
        storage_detail::hold<H, R>(uncond);
        storage_detail::hold<H, R>(denoised);
        const storage_detail::half_copy<H, R> c(cond), u(uncond);
        storage_detail::half_copy<H, R> d{view<const float, R>(denoised)};
        state_t<P> st = state;
        storage_detail::both_paths<H, R>(
            in, [&](const guidance_inputs<H, R>& h) { patchbay::apply_post_cfg<P, H, R>(p, st, h, c.v, u.v, d.v); },
            run_float);
        storage_detail::compare<H, R>("denoised", denoised, d);
    };
    if constexpr (sizeof...(Access) > 0) {
        storage_detail::not_staged("a post-cfg patch that evaluates the model runs in float32 only");
        run_float();
    } else {
        storage_detail::in_storage_mode<T>(check, run_float);
    }
}

/// A combination of three predictions, p.combine(in, cond, uncond, extra, out) (PerpNeg's cfg
/// function with its empty prediction given), checked on the storage format too in storage mode.
template <class P, std::size_t R>
void combine_three(const P& p, const guidance_inputs<float, R>& in, view<const float, R> cond,
                   view<const float, R> uncond, view<const float, R> extra, view<float, R> out) {
    auto run_float = [&] { p.template combine<float, R>(in, cond, uncond, extra, out); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold_inputs<H, R>(in);
        for (const auto& v : {cond, uncond, extra}) storage_detail::hold<H, R>(v);
        const storage_detail::half_copy<H, R> c(cond), u(uncond), e(extra);
        storage_detail::half_copy<H, R> o{view<const float, R>(out)};
        storage_detail::both_paths<H, R>(
            in, [&](const guidance_inputs<H, R>& h) { p.template combine<H, R>(h, c.v, u.v, e.v, o.v); }, run_float);
        storage_detail::compare<H, R>("out", out, o);
    };
    storage_detail::in_storage_mode<float>(check, run_float);
}

/// A multi-prompt guider's cfg stage on its three predictions, g.combine(run, in, cond, uncond,
/// extra, denoised) (guider::combine), checked on the storage format too in storage mode. Each
/// path runs on a run of its own.
template <class G, std::size_t R>
void guider_combine(const G& g, const guidance_inputs<float, R>& in, view<float, R> cond, view<float, R> uncond,
                    view<float, R> extra, view<float, R> denoised) {
    auto run_float = [&] {
        auto run = g.begin_run();
        g.template combine<float, R>(run, in, cond, uncond, extra, denoised);
    };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold_inputs<H, R>(in);
        for (const auto& v : {cond, uncond, extra}) storage_detail::hold<H, R>(view<const float, R>(v));
        storage_detail::half_copy<H, R> c{view<const float, R>(cond)}, u{view<const float, R>(uncond)},
            e{view<const float, R>(extra)}, d{view<const float, R>(denoised)};
        storage_detail::both_paths<H, R>(
            in,
            [&](const guidance_inputs<H, R>& h) {
                auto run = g.begin_run();
                g.template combine<H, R>(run, h, c.v, u.v, e.v, d.v);
            },
            run_float);
        storage_detail::compare<H, R>("denoised", denoised, d);
    };
    storage_detail::in_storage_mode<float>(check, run_float);
}

/// patchbay::apply_output_block (in place, or resizing h), checked on the storage format too in
/// storage mode; returns the float32 path's h.
template <patch P, class T>
view<T, 4> apply_output_block(const P& p, state_t<P>& state, const block_site& site, view<T, 4> h, view<T, 4> hsp) {
    view<T, 4> result;
    auto run_float = [&] { result = patchbay::apply_output_block<P, T>(p, state, site, h, hsp); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold<H, 4>(h);
        storage_detail::hold<H, 4>(hsp);
        storage_detail::half_copy<H, 4> hh{view<const float, 4>(h)}, hs{view<const float, 4>(hsp)};
        state_t<P> st = state;
        workspace arena; // the run's arena: holds a resized half h
        block_site hsite = site;
        hsite.scratch = &arena;
        view<H, 4> got;
        storage_detail::both_paths([&] { got = patchbay::apply_output_block<P, H>(p, st, hsite, hh.v, hs.v); },
                                   run_float);
        storage_detail::compare<H, 4>("h", result, got);
        storage_detail::compare<H, 4>("hsp", hsp, hs);
    };
    storage_detail::in_storage_mode<T>(check, run_float);
    return result;
}

/// patchbay::apply_input_block, checked on the storage format too in storage mode; returns the
/// float32 path's h.
template <patch P, class T>
view<T, 4> apply_input_block(const P& p, state_t<P>& state, const block_site& site, view<T, 4> h,
                             input_block_point at) {
    view<T, 4> result;
    auto run_float = [&] { result = patchbay::apply_input_block<P, T>(p, state, site, h, at); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold<H, 4>(h);
        storage_detail::half_copy<H, 4> hh{view<const float, 4>(h)};
        state_t<P> st = state;
        workspace arena;
        block_site hsite = site;
        hsite.scratch = &arena;
        view<H, 4> got;
        storage_detail::both_paths([&] { got = patchbay::apply_input_block<P, H>(p, st, hsite, hh.v, at); }, run_float);
        storage_detail::compare<H, 4>("h", result, got);
    };
    storage_detail::in_storage_mode<T>(check, run_float);
    return result;
}

/// patchbay::nag::apply_chunks (NAG's attention-output patch in ComfyUI's call form), checked on
/// the storage format too in storage mode.
template <class T>
bool nag_apply_chunks(const normalized_attention_guidance& p, view<T, 3> attn, std::span<const int> cond_or_uncond,
                      std::optional<std::pair<index_t, index_t>> img_slice) {
    bool guided = false;
    auto run_float = [&] { guided = nag::apply_chunks<T>(p, attn, cond_or_uncond, img_slice); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        storage_detail::hold<H, 3>(attn);
        storage_detail::half_copy<H, 3> a{view<const float, 3>(attn)};
        storage_detail::both_paths([&] { nag::apply_chunks<H>(p, a.v, cond_or_uncond, img_slice); }, run_float);
        storage_detail::compare<H, 3>("attn", attn, a);
    };
    storage_detail::in_storage_mode<T>(check, run_float);
    return guided;
}

/// patchbay::kernels::attention_basic_with_sim (SAG's attention), checked on the storage format
/// too in storage mode.
template <class T>
void attention_basic_with_sim(view<const T, 3> q, view<const T, 3> k, view<const T, 3> v, int heads, view<T, 3> out,
                              view<T, 3> sim) {
    auto run_float = [&] { kernels::attention_basic_with_sim<T>(q, k, v, heads, out, sim); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        const storage_detail::half_qkv<H> h(q, k, v);
        storage_detail::half_copy<H, 3> oh{view<const float, 3>(out)}, sh{view<const float, 3>(sim)};
        storage_detail::both_paths(
            [&] { kernels::attention_basic_with_sim<H>(h.q.v, h.k.v, h.v.v, heads, oh.v, sh.v); }, run_float);
        storage_detail::compare<H, 3>("out", out, oh);
        storage_detail::compare<H, 3>("sim", sim, sh);
    };
    storage_detail::in_storage_mode<T>(check, run_float);
}

/// patchbay::pag::perturbed_attention (PAG's replacement attention), checked on the storage
/// format too in storage mode.
template <class T>
void perturbed_attention(view<const T, 3> q, view<const T, 3> k, view<const T, 3> v, view<T, 3> out) {
    auto run_float = [&] { pag::perturbed_attention<T>(q, k, v, out); };
    auto check = [&](auto tag) {
        using H = decltype(tag);
        const storage_detail::half_qkv<H> h(q, k, v);
        storage_detail::half_copy<H, 3> oh{view<const float, 3>(out)};
        storage_detail::both_paths([&] { pag::perturbed_attention<H>(h.q.v, h.k.v, h.v.v, oh.v); }, run_float);
        storage_detail::compare<H, 3>("attn_out", out, oh);
    };
    storage_detail::in_storage_mode<T>(check, run_float);
}

} // namespace patchbay::conformance
