// RescaleCFG: "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al. 2023,
// section 3.4, CFG rescale); matches ComfyUI's RescaleCFG node (comfy_extras/
// nodes_model_advanced.py), including the newest upstream branch for flow (CONST) models.
//
// With g = uncond + s*(cond - uncond) (plain CFG of the denoised predictions):
//  * non-flow models (v space): ComfyUI converts both predictions to v with sigma_data = 1,
//    v = (x/(sigma^2+1) - den) * sqrt(sigma^2+1)/sigma. Every v is the same affine map of its
//    denoised value, so with xc = x/(sigma^2+1):
//        r = std(xc - cond) / std(xc - g),  f = multiplier*r + 1 - multiplier,
//        denoised = xc + f*(g - xc)
//    which equals ComfyUI's result for sigma > 0 and stays finite at sigma = 0 (its limit).
//    std is Bessel-corrected over dims (1,2,3): the whole sample for 4-D, and per W column
//    (over C,T,H) for 5-D, as ComfyUI's torch.std(dim=(1,2,3)) does.
//  * flow models (x0 space): r = std(cond) / max(std(g), 1e-8) over all non-batch dims,
//    denoised = g * (multiplier*r + 1 - multiplier); sigma is not used.
// Where a std is undefined (one element) or, in v space, std(xc - g) is 0, r = 1 (no rescale)
// instead of ComfyUI's NaN/inf.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"

namespace patchbay {

struct rescale_cfg {
    double multiplier = 0.7; ///< ComfyUI "multiplier", default 0.7, range [0, 1]

    static constexpr auto descriptor() {
        return describe<rescale_cfg>("RescaleCFG", "RescaleCFG", hook_kind::cfg_function,
                                     floating("multiplier", &rescale_cfg::multiplier, 0.7, 0.0, 1.0, 0.01));
    }
    void validate() const { patchbay::validate(*this); }

    /// Writes the rescaled denoised result to `out` (which may be exactly `cond` or `uncond`).
    template <class T, std::size_t R>
    void cfg_function(no_state&, const guidance_inputs<T, R>& in,
                      std::type_identity_t<view<const T, R>> cond,
                      std::type_identity_t<view<const T, R>> uncond, view<T, R> out) const {
        static_assert(R == 4 || R == 5, "rescale_cfg works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        check(in, cond, uncond, out);
        const bool flow = is_flow(in.prediction);
        for (index_t b = 0; b < cond.extent(0); ++b) {
            const auto xb = in.x.batch_slice(b, 1);
            const auto cb = cond.batch_slice(b, 1), ub = uncond.batch_slice(b, 1);
            const auto ob = out.batch_slice(b, 1);
            if (flow) flow_item(in.cond_scale, cb, ub, ob);
            else if constexpr (R == 5) v_columns_item(in.cond_scale, static_cast<double>(in.sigma(b)), xb, cb, ub, ob);
            else v_item(in.cond_scale, static_cast<double>(in.sigma(b)), xb, cb, ub, ob);
        }
    }

private:
    static constexpr const char* where = "RescaleCFG";

    /// Bessel-corrected std from sums taken about a shift (s1 = sum(d - k), s2 = sum((d-k)^2)).
    static double shifted_std(double s1, double s2, double n) {
        const double var = (s2 - s1 * s1 / n) / (n - 1.0);
        return var > 0.0 ? std::sqrt(var) : 0.0;
    }

    /// The blend factor f = multiplier*r + 1 - multiplier from the shifted sums of the cond
    /// and cfg terms. v space: no rescale where std(cfg) is 0; flow: ComfyUI's 1e-8 floor.
    double blend(const std::array<double, 4>& s, double n, bool flow) const {
        double r = 1.0;
        if (n > 1.0) {
            const double sc = shifted_std(s[0], s[1], n), sg = shifted_std(s[2], s[3], n);
            if (flow) r = sc / std::max(sg, 1e-8);
            else if (sg > 0.0) r = sc / sg;
        }
        return multiplier * r + (1.0 - multiplier);
    }

    template <class T, std::size_t R>
    void v_item(double cond_scale, double sigma, const view<const T, R>& x, const view<const T, R>& c,
                const view<const T, R>& u, const view<T, R>& out) const {
        const T k = static_cast<T>(cond_scale);
        const T inv = static_cast<T>(1.0 / (sigma * sigma + 1.0));
        // Shift the sums by the first element's terms so the std does not lose precision
        // to a large mean (and a constant term gives exactly 0).
        const T c0 = first(c), u0 = first(u);
        const T xc0 = first(x) * inv;
        const T kc = xc0 - c0, kg = xc0 - (u0 + (c0 - u0) * k);
        const auto s = kernels::reduce<4>(
            [=](auto xv, auto cv, auto uv) {
                const auto xc = xv * inv;
                const auto dc = xc - cv - kc;
                const auto dg = xc - (uv + (cv - uv) * k) - kg;
                return std::array{dc, dc * dc, dg, dg * dg};
            },
            x, c, u);
        const T f = static_cast<T>(blend(s, static_cast<double>(c.size()), false));
        kernels::transform_backward(
            out,
            [=](auto xv, auto cv, auto uv) {
                const auto xc = xv * inv;
                return xc + ((uv + (cv - uv) * k) - xc) * f;
            },
            x, c, u);
    }

    template <class T, std::size_t R>
    void flow_item(double cond_scale, const view<const T, R>& c, const view<const T, R>& u,
                   const view<T, R>& out) const {
        const T k = static_cast<T>(cond_scale);
        const T c0 = first(c), u0 = first(u);
        const T kc = c0, kg = u0 + (c0 - u0) * k;
        const auto s = kernels::reduce<4>(
            [=](auto cv, auto uv) {
                const auto dc = cv - kc;
                const auto dg = (uv + (cv - uv) * k) - kg;
                return std::array{dc, dc * dc, dg, dg * dg};
            },
            c, u);
        const T f = static_cast<T>(blend(s, static_cast<double>(c.size()), true));
        kernels::transform_backward(out, [=](auto cv, auto uv) { return (uv + (cv - uv) * k) * f; }, c, u);
    }

    /// 5-D v space: one std per W column over (C, T, H). Each column's sums are shifted by its
    /// own first terms (row 0), computed for a chunk of columns and read through views that
    /// repeat them on every row.
    template <class T>
    void v_columns_item(double cond_scale, double sigma, const view<const T, 5>& x,
                        const view<const T, 5>& c, const view<const T, 5>& u,
                        const view<T, 5>& out) const {
        constexpr index_t chunk = 512;
        const T k = static_cast<T>(cond_scale);
        const T inv = static_cast<T>(1.0 / (sigma * sigma + 1.0));
        const index_t W = c.extent(4);
        const double n = static_cast<double>(c.extent(1) * c.extent(2) * c.extent(3));
        alignas(64) T shift_c[chunk], shift_g[chunk];
        for (index_t w0 = 0; w0 < W; w0 += chunk) {
            const index_t len = std::min(chunk, W - w0);
            auto columns = [&](const auto& v) { // columns w0 .. w0+len-1 of v
                auto e = v.extents();
                e[4] = len;
                return std::remove_cvref_t<decltype(v)>(v.data_handle() + w0 * v.stride(4), e, v.strides());
            };
            for (index_t j = 0; j < len; ++j) {
                const T xc = x(0, 0, 0, 0, w0 + j) * inv, cv = c(0, 0, 0, 0, w0 + j), uv = u(0, 0, 0, 0, w0 + j);
                shift_c[j] = xc - cv;
                shift_g[j] = xc - (uv + (cv - uv) * k);
            }
            const std::array<index_t, 5> ext{1, c.extent(1), c.extent(2), c.extent(3), len}, repeat{0, 0, 0, 0, 1};
            kernels::reduce_columns_map<4, 4>(
                columns(out),
                [=](auto xv, auto cv, auto uv, auto kc, auto kg) {
                    const auto xc = xv * inv;
                    const auto dc = xc - cv - kc;
                    const auto dg = xc - (uv + (cv - uv) * k) - kg;
                    return std::array{dc, dc * dc, dg, dg * dg};
                },
                [this, n](const std::array<double, 4>& s) { return static_cast<T>(blend(s, n, false)); },
                [=](auto f, auto xv, auto cv, auto uv, auto, auto) {
                    const auto xc = xv * inv;
                    return xc + ((uv + (cv - uv) * k) - xc) * f;
                },
                columns(x), columns(c), columns(u), view<const T, 5>(shift_c, ext, repeat),
                view<const T, 5>(shift_g, ext, repeat));
        }
    }

    template <class T, std::size_t R>
    static T first(const view<const T, R>& v) {
        return *v.data_handle();
    }

    /// Its own preconditions (the dispatcher has checked shapes, sigma values and layouts):
    /// RescaleCFG reads x and one sigma per item.
    template <class T, std::size_t R>
    static void check(const guidance_inputs<T, R>& in, const view<const T, R>& cond, const view<const T, R>&,
                      const view<T, R>&) {
        require_nonempty(in.x, where, "x");
        require_batch_vector(in.sigma, cond, where, "sigma");
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::rescale_cfg)
