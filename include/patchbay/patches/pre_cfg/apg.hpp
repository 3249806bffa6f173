// patchbay: APG - Adaptive Projected Guidance (Sadat et al., "Eliminating Oversaturation and
// Artifacts of High Guidance Scales in Diffusion Models", 2024), matching ComfyUI's "APG" node
// (comfy_extras/nodes_apg.py), a pre-CFG function.
//
// Per call (docs/patches/apg.md): g = cond - uncond; with momentum the running average
// becomes momentum * avg + g (or g after a reset) and replaces g; g is clipped to L2 norm
// norm_threshold; g is split into the part parallel to cond and the rest; the cond prediction
// becomes uncond + (g_orth + eta * g_par) + (cond - uncond) / cond_scale. Norms and the
// projection are over the LAST THREE dims: (C,H,W) per batch item for 4-D latents, (T,H,W)
// per (batch item, channel) for 5-D latents, as ComfyUI.
//
// Two passes per group: one reduction (|g|^2, g.cond, |cond|^2; with momentum it writes the
// new running average in the same pass) and one fused elementwise pass that rewrites cond.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <vector>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

namespace detail {

/// Calls f(offsets...) once per group of the last three dims: the leading R-3 dims are
/// walked and each view is offset to the group's first element. Groups keep rank R with
/// the leading extents set to 1.
template <std::size_t R, class F, class... V>
void for_each_last3_group(F&& f, const V&... views) {
    static_assert(R >= 3, "the last three dims need rank >= 3");
    const auto& first = std::get<0>(std::tie(views...));
    constexpr std::size_t lead = R - 3;
    std::array<index_t, R> idx{};
    index_t groups = 1;
    for (std::size_t r = 0; r < lead; ++r) groups *= first.extent(r);
    for (index_t gidx = 0; gidx < groups; ++gidx) {
        auto sub = [&](const auto& v) {
            auto e = v.extents();
            index_t off = 0;
            for (std::size_t r = 0; r < lead; ++r) {
                off += idx[r] * v.stride(r);
                e[r] = 1;
            }
            using VT = std::remove_cvref_t<decltype(v)>;
            return VT(v.data_handle() + off, e, v.strides());
        };
        f(sub(views)...);
        for (std::size_t r = lead; r-- > 0;) {
            if (++idx[r] < first.extent(r)) break;
            idx[r] = 0;
        }
    }
}

} // namespace detail

/// ComfyUI "APG". Fields carry the node's input names and defaults.
struct apg {
    double eta = 1.0;            ///< weight of the guidance part parallel to cond, [-10, 10]
    double norm_threshold = 5.0; ///< clip the guidance to this L2 norm; 0 = no clipping, [0, 50]
    double momentum = 0.0;       ///< running-average decay of the guidance, [-5, 1]; 0 = off

    static constexpr auto descriptor() {
        return describe<apg>("APG", "Adaptive Projected Guidance", hook_kind::pre_cfg,
                             floating("eta", &apg::eta, 1.0, -10.0, 10.0, 0.01),
                             floating("norm_threshold", &apg::norm_threshold, 5.0, 0.0, 50.0, 0.1),
                             floating("momentum", &apg::momentum, 0.0, -5.0, 1.0, 0.01));
    }

    /// Per-run state: the running average of the guidance and the previous call's sigma.
    /// A fresh value is a reset (begin_run); a copy is an independent clone. The buffer is
    /// allocated on the first call with momentum and reused afterwards.
    struct state_type {
        tensor<float> running_avg_f;  ///< running average (float inputs), shape of cond
        tensor<double> running_avg_d; ///< running average (double inputs), shape of cond
        bool has_avg = false;         ///< false: the next call starts the average afresh
        bool has_prev_sigma = false;
        double prev_sigma = 0.0;

        template <class T>
        tensor<T>& running_avg() noexcept {
            if constexpr (std::is_same_v<T, float>) return running_avg_f;
            else return running_avg_d;
        }
    };

    void validate() const { patchbay::validate(*this); }

    template <class T, std::size_t R>
    void pre_cfg(state_type& state, const guidance_inputs<T, R>& in, view<T, R> cond,
                 view<T, R> uncond) const {
        static_assert(R == 4 || R == 5, "APG works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        // Its own preconditions (the dispatcher has checked shapes, values and overlaps).
        constexpr const char* where = "APG";
        require_batch_vector(in.sigma, cond, where, "sigma");
        PATCHBAY_REQUIRE(in.cond_scale != 0.0, where,
                "argument 'cond_scale' must be non-zero (APG divides by it), got 0");
        const double sigma = static_cast<double>(in.sigma(0)); // ComfyUI reads sigma[0]

        // ComfyUI resets the running average only when sigma strictly increases.
        if (state.has_prev_sigma && sigma > state.prev_sigma) state.has_avg = false;
        state.has_prev_sigma = true;
        state.prev_sigma = sigma;
        // (uncond_is_none needs no branch: ComfyUI's APG guides with the all-zero uncond.)

        const T inv_cs = static_cast<T>(1.0 / in.cond_scale);
        const double thr = norm_threshold;
        const double eta_m1 = eta - 1.0;
        // Coefficients from the group's sums: g_s = g * scale, g_par = alpha * cond,
        // cond' = uncond + g_s + (eta - 1) * g_par + (cond - uncond) / cond_scale.
        auto coefficients = [&](const std::array<double, 3>& s, T& scale_t, T& par_t) {
            const double gnorm = std::sqrt(s[0]);
            double scale = 1.0;
            if (thr > 0 && gnorm > 0) scale = std::min(1.0, thr / gnorm); // |g| = 0: factor 1
            const double cnorm = std::max(std::sqrt(s[2]), 1e-12);        // F.normalize's eps
            const double alpha = scale * s[1] / (cnorm * cnorm);
            scale_t = static_cast<T>(scale);
            par_t = static_cast<T>(eta_m1 * alpha);
        };

        if (momentum == 0.0) {
            detail::for_each_last3_group<R>(
                [&](view<T, R> c, view<T, R> u) {
                    const auto s = kernels::reduce<3>(
                        [](auto cv, auto uv) {
                            const auto g = cv - uv;
                            return std::array{g * g, g * cv, cv * cv};
                        },
                        c, u);
                    T scale, par;
                    coefficients(s, scale, par);
                    kernels::transform_backward(
                        c,
                        [=](auto cv, auto uv) {
                            const auto g = cv - uv;
                            return uv + g * scale + cv * par + g * inv_cs;
                        },
                        c, u);
                },
                cond, uncond);
            return;
        }

        tensor<T>& avg_buf = state.template running_avg<T>();
        const bool same_shape = avg_buf.rank() == R &&
                                std::equal(avg_buf.shape().begin(), avg_buf.shape().end(),
                                           cond.extents().begin());
        if (!same_shape) { // first call, or the latent changed: start afresh
            avg_buf.resize(std::vector<index_t>(cond.extents().begin(), cond.extents().end()));
            state.has_avg = false;
        }
        const view<T, R> avg = avg_buf.template as<R>();
        const bool continue_avg = state.has_avg;
        const T m = static_cast<T>(momentum);
        detail::for_each_last3_group<R>(
            [&](view<T, R> c, view<T, R> u, view<T, R> a) {
                // the new running average is written and summed in one pass
                auto terms = [](auto g, auto cv, auto...) { return std::array{g * g, g * cv, cv * cv}; };
                const auto s =
                    continue_avg
                        ? kernels::transform_reduce<3>(
                              a, [m](auto cv, auto uv, auto av) { return m * av + (cv - uv); }, terms, c, u, a)
                        : kernels::transform_reduce<3>(a, [](auto cv, auto uv) { return cv - uv; }, terms, c, u);
                T scale, par;
                coefficients(s, scale, par);
                kernels::transform_backward(
                    c,
                    [=](auto cv, auto uv, auto g) {
                        return uv + g * scale + cv * par + (cv - uv) * inv_cs;
                    },
                    c, u, a);
            },
            cond, uncond, avg);
        state.has_avg = true;
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::apg)
