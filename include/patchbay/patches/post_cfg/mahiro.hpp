// patchbay: Mahiro - "Mahiro is so cute that she deserves a better guidance function!!
// (。・ω・。)" (an unpublished guidance tweak by the ComfyUI community), matching ComfyUI's
// "Mahiro" node (comfy_extras/nodes_mahiro.py), a post-CFG function without parameters.
//
// semantics.md section 13, with s = cond_scale and cfg the current CFG result:
//   leap = s * cond, merge = (leap + cfg) / 2,
//   sim = mean over batch and pixels of cos_channels(ssqrt(s * uncond), ssqrt(merge))
//   (ssqrt(v) = sign(v) sqrt|v|, cosine over dim 1 with torch's eps 1e-8),
//   w = 2 (sim + 1), result = (w cfg + (4 - w) leap) / 4.
// The similarity is ONE scalar for the whole batch, as in ComfyUI: batch items influence each
// other, so running items separately gives a different result (documented, tested).
//
// Two passes: per-pixel channel sums over pixel tiles (no heap memory), then one fused
// elementwise pass. The cosine needs no per-element square roots for the norms because
// |ssqrt(v)|^2 = |v|, and one square root per element for the dot: ssqrt(a) ssqrt(b) =
// sign(ab) sqrt|ab|.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/simd.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay {

namespace detail {

/// The three per-element terms of Mahiro's channel cosine: the dot product term
/// ssqrt(s u) ssqrt(merge) and the two squared-norm terms |s u| and |merge|.
template <class V, class T>
PATCHBAY_ALWAYS_INLINE std::array<V, 3> mahiro_terms(V c, V u, V cfg, T s) noexcept {
    using std::abs;
    using std::copysign;
    using std::sqrt;
    using xsimd::abs;
    using xsimd::copysign;
    using xsimd::sqrt;
    const V us = u * s;
    const V merge = (c * s + cfg) * T(0.5);
    const V aus = abs(us), am = abs(merge);
    return {copysign(sqrt(aus * am), us * merge), aus, am};
}

/// torch.cosine_similarity from the sums: dot / (max(|x|, eps) * max(|y|, eps)).
template <class V, class T>
PATCHBAY_ALWAYS_INLINE V mahiro_cosine(V dot, V nn, V mm) noexcept {
    using std::max;
    using std::sqrt;
    using xsimd::max;
    using xsimd::sqrt;
    const V eps(T(1e-8));
    return dot / (max(sqrt(nn), eps) * max(sqrt(mm), eps));
}

/// True when dims 2.. of v form one unit-stride run per (batch, channel).
template <class T, std::size_t R>
bool pixels_contiguous(const view<T, R>& v) noexcept {
    auto e = v.extents();
    e[0] = e[1] = 1;
    return view<T, R>(v.data_handle(), e, v.strides()).is_contiguous();
}

/// Sum over batch items and pixels of the channel cosine of Mahiro's two signed-root maps.
template <class T, std::size_t R>
double mahiro_cosine_sum(const view<const T, R>& cond, const view<const T, R>& uncond,
                         const view<const T, R>& cfg, T s) {
    const index_t batch = cond.extent(0), channels = cond.extent(1);
    index_t pixels = 1;
    for (std::size_t r = 2; r < R; ++r) pixels *= cond.extent(r);
    double total = 0.0;

    if (pixels_contiguous(cond) && pixels_contiguous(uncond) && pixels_contiguous(cfg)) {
        // Pixel tiles: channels are the outer loop so each load is a unit-stride run.
        constexpr index_t tile = 1024;
        alignas(64) T dot[tile], nn[tile], mm[tile];
        for (index_t b = 0; b < batch; ++b)
            for (index_t p0 = 0; p0 < pixels; p0 += tile) {
                const index_t len = std::min(tile, pixels - p0);
                std::fill_n(dot, len, T(0));
                std::fill_n(nn, len, T(0));
                std::fill_n(mm, len, T(0));
                // Channels in pairs: the tile sums are loaded and stored once per pair (measured
                // fastest on Zen 3; blocks of 4 keep too many streams in flight).
                constexpr index_t block = 2;
                for (index_t ch0 = 0; ch0 < channels; ch0 += block) {
                    const index_t nch = std::min(block, channels - ch0);
                    std::array<const T*, block> pc{}, pu{}, pf{};
                    for (index_t k = 0; k < nch; ++k) {
                        const index_t ch = ch0 + k;
                        pc[static_cast<std::size_t>(k)] = cond.data_handle() + b * cond.stride(0) + ch * cond.stride(1) + p0;
                        pu[static_cast<std::size_t>(k)] = uncond.data_handle() + b * uncond.stride(0) + ch * uncond.stride(1) + p0;
                        pf[static_cast<std::size_t>(k)] = cfg.data_handle() + b * cfg.stride(0) + ch * cfg.stride(1) + p0;
                    }
                    index_t i = 0;
                    if constexpr (simd::enabled) {
                        using B = simd::batch<T>;
                        constexpr index_t W = static_cast<index_t>(B::size);
                        auto accumulate = [&](auto channels_in_block) {
                            constexpr std::size_t K = decltype(channels_in_block)::value;
                            for (; i + W <= len; i += W) {
                                B d = B::load_aligned(dot + i), n1 = B::load_aligned(nn + i),
                                  n2 = B::load_aligned(mm + i);
                                for (std::size_t k = 0; k < K; ++k) {
                                    const auto t = mahiro_terms(B::load_unaligned(pc[k] + i), B::load_unaligned(pu[k] + i),
                                                                B::load_unaligned(pf[k] + i), s);
                                    d += t[0];
                                    n1 += t[1];
                                    n2 += t[2];
                                }
                                d.store_aligned(dot + i);
                                n1.store_aligned(nn + i);
                                n2.store_aligned(mm + i);
                            }
                        };
                        if (nch == block) accumulate(std::integral_constant<std::size_t, block>{});
                        else accumulate(std::integral_constant<std::size_t, 1>{});
                    }
                    for (; i < len; ++i)
                        for (std::size_t k = 0; k < static_cast<std::size_t>(nch); ++k) {
                            const auto t = mahiro_terms(pc[k][i], pu[k][i], pf[k][i], s);
                            dot[i] += t[0];
                            nn[i] += t[1];
                            mm[i] += t[2];
                        }
                }
                index_t i = 0;
                if constexpr (simd::enabled) {
                    using B = simd::batch<T>;
                    constexpr index_t W = static_cast<index_t>(B::size);
                    B acc(T(0));
                    for (; i + W <= len; i += W)
                        acc += mahiro_cosine<B, T>(B::load_aligned(dot + i), B::load_aligned(nn + i),
                                                   B::load_aligned(mm + i));
                    total += simd::hsum(acc);
                }
                for (; i < len; ++i) total += static_cast<double>(mahiro_cosine<T, T>(dot[i], nn[i], mm[i]));
            }
        return total;
    }

    // Strided layout: per pixel, a scalar walk over the channels (same terms, same order).
    std::array<index_t, R> idx{};
    auto pixel_offset = [&](const auto& v, index_t b) {
        index_t o = b * v.stride(0);
        for (std::size_t r = 2; r < R; ++r) o += idx[r] * v.stride(r);
        return o;
    };
    for (index_t b = 0; b < batch; ++b) {
        idx.fill(0);
        for (index_t p = 0; p < pixels; ++p) {
            const T* pc = cond.data_handle() + pixel_offset(cond, b);
            const T* pu = uncond.data_handle() + pixel_offset(uncond, b);
            const T* pf = cfg.data_handle() + pixel_offset(cfg, b);
            T dot = 0, nn = 0, mm = 0;
            for (index_t ch = 0; ch < channels; ++ch) {
                const auto t = mahiro_terms(pc[ch * cond.stride(1)], pu[ch * uncond.stride(1)],
                                            pf[ch * cfg.stride(1)], s);
                dot += t[0];
                nn += t[1];
                mm += t[2];
            }
            total += static_cast<double>(mahiro_cosine<T, T>(dot, nn, mm));
            for (std::size_t r = R; r-- > 2;) {
                if (++idx[r] < cond.extent(r)) break;
                idx[r] = 0;
            }
        }
    }
    return total;
}

} // namespace detail

/// ComfyUI "Mahiro" (no inputs besides the model).
struct mahiro {
    static constexpr auto descriptor() {
        return describe<mahiro>("Mahiro", "Mahiro CFG", hook_kind::post_cfg);
    }
    void validate() const { patchbay::validate(*this); }

    /// The batch-wide similarity weight w = 2 (sim + 1) in [0, 4] (exposed for tests).
    template <class T, std::size_t R>
    static double weight(std::type_identity_t<view<const T, R>> cond,
                         std::type_identity_t<view<const T, R>> uncond,
                         std::type_identity_t<view<const T, R>> cfg, double cond_scale) {
        const double sum = detail::mahiro_cosine_sum<T, R>(cond, uncond, cfg, static_cast<T>(cond_scale));
        const double count = static_cast<double>(cond.size() / cond.extent(1));
        return 2.0 * (sum / count + 1.0);
    }

    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, view<const T, R> cond,
                  view<const T, R> uncond, view<T, R> denoised) const {
        static_assert(R == 4 || R == 5, "Mahiro works on 4-D (N,C,H,W) or 5-D (N,C,T,H,W) latents");
        constexpr const char* where = "Mahiro";
        require_nonempty(cond, where, "cond");
        require_same_shape(cond, uncond, where, "cond", "uncond");
        require_same_shape(cond, denoised, where, "cond", "denoised");
        if (in.x.data_handle() != nullptr) require_same_shape(cond, in.x, where, "cond", "x");
        if (in.sigma.data_handle() != nullptr) {
            require_batch_vector(in.sigma, cond, where, "sigma");
            for (index_t b = 0; b < in.sigma.extent(0); ++b) require_finite(in.sigma(b), where, "sigma");
        }
        require_finite(in.cond_scale, where, "cond_scale");
        require_writable_layout(denoised, where, "denoised");
        require_no_partial_overlap(denoised, cond, where, "denoised", "cond");
        require_no_partial_overlap(denoised, uncond, where, "denoised", "uncond");

        const T s = static_cast<T>(in.cond_scale);
        const T w = static_cast<T>(weight<T, R>(cond, uncond, denoised, in.cond_scale));
        const T k = T(4) - w;
        kernels::transform(denoised, [=](auto cfg, auto c) { return (cfg * w + (c * s) * k) * T(0.25); },
                           denoised, cond);
    }
};

} // namespace patchbay
