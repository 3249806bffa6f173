// TemporalScoreRescaling: TSR (Xu et al., "Temporal Score Rescaling for Temperature Sampling in
// Diffusion and Flow Models", arXiv 2510.01184); matches ComfyUI's TemporalScoreRescaling node
// ("TSR - Temporal Score Rescaling", comfy_extras/nodes_eps.py), a post-CFG function.
//
// Per batch item with its own sigma, v = tsr_sigma^2:
//   lambda = ln((1 - sigma)/sigma) for a flow (CONST) model, -ln(sigma) otherwise (the half
//            log-SNR of the model sampling the hook reads at call time), snr = exp(2 lambda);
//   r = (snr v + 1) / (snr v / tsr_k + 1), and r = tsr_k where snr overflows to +inf;
//   alpha = sigma exp(lambda) (1 - sigma for flow, 1 otherwise);
//   denoised = lerp(x / alpha, denoised, r) = x/alpha + r (denoised - x/alpha).
// Nothing changes when tsr_k == 1, sigma == 0, or snr == 0 (a flow model at sigma 1).
// ComfyUI raises for batch > 1 (its checks compare a whole sigma vector); patchbay runs the hook
// on each item with that item's sigma, which is what the golden cases record.
// The model kind comes from guidance_inputs::sampling: a call without it is an error.
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

/// ComfyUI "TemporalScoreRescaling".
struct temporal_score_rescaling {
    double tsr_k = 0.95;     ///< rescaling strength near the data; 1 = off, [0.01, 100]
    double tsr_sigma = 1.0;  ///< how early the rescaling takes effect, [0.01, 100]

    static constexpr auto descriptor() {
        return describe<temporal_score_rescaling>(
            "TemporalScoreRescaling", "TSR - Temporal Score Rescaling", hook_kind::post_cfg,
            floating("tsr_k", &temporal_score_rescaling::tsr_k, 0.95, 0.01, 100.0, 0.001),
            floating("tsr_sigma", &temporal_score_rescaling::tsr_sigma, 1.0, 0.01, 100.0, 0.001));
    }
    void validate() const { patchbay::validate(*this); }

    /// The rescaling of one batch item at noise level sigma (per the header comment).
    struct item_factors {
        bool active = false; ///< false: the item is left unchanged
        double r = 1.0;      ///< the lerp weight toward denoised
        double alpha = 1.0;  ///< x is divided by it
    };

    /// The factors for one item; `T` is the input precision, in which ComfyUI decides whether
    /// snr is 0 or +inf.
    template <class T>
    item_factors factors(double sigma, bool flow) const {
        item_factors f;
        if (tsr_k == 1.0 || sigma == 0.0) return f;
        if (flow && sigma > 1.0)
            fail("TemporalScoreRescaling", "argument 'sigma' must be in [0, 1] for a flow model, got " +
                                               detail::fmt_num(sigma));
        const double lambda = flow ? std::log((1.0 - sigma) / sigma) : -std::log(sigma);
        const double snr = std::exp(2.0 * lambda);
        if (static_cast<T>(snr) == T(0)) return f;
        const double v = tsr_sigma * tsr_sigma;
        f.active = true;
        f.r = std::isinf(static_cast<T>(snr)) ? tsr_k : (snr * v + 1.0) / (snr * v / tsr_k + 1.0);
        f.alpha = sigma * std::exp(lambda);
        return f;
    }

    /// Rewrites `denoised` in place. Reads x and the model sampling, which must be given.
    template <class T, std::size_t R>
    void post_cfg(no_state&, const guidance_inputs<T, R>& in, std::type_identity_t<view<const T, R>>,
                  std::type_identity_t<view<const T, R>>, view<T, R> denoised) const {
        constexpr const char* where = "TemporalScoreRescaling";
        if (tsr_k == 1.0) return; // r = 1 everywhere; ComfyUI does not read the model either
        PATCHBAY_REQUIRE(in.sampling != nullptr, where,
                         "needs the model sampling (guidance_inputs::sampling): the log-SNR of sigma "
                         "depends on whether the model is a flow (CONST) model");
        require_nonempty(in.x, where, "x");
        require_batch_vector(in.sigma, denoised, where, "sigma"); // read per item
        const bool flow = in.sampling->is_flow();
        for (index_t b = 0; b < denoised.extent(0); ++b) {
            const item_factors f = factors<T>(static_cast<double>(in.sigma(b)), flow);
            if (!f.active) continue;
            const T alpha = static_cast<T>(f.alpha), w = static_cast<T>(f.r), one_m_w = T(1) - w;
            const auto db = denoised.batch_slice(b, 1);
            const view<const T, R> xb = in.x.batch_slice(b, 1);
            // torch.lerp's two forms (from the start for small weights, from the end otherwise)
            if (std::fabs(f.r) < 0.5)
                kernels::transform(
                    db, [=](auto x, auto d) { const auto s = x / alpha; return s + w * (d - s); }, xb,
                    view<const T, R>(db));
            else
                kernels::transform(
                    db, [=](auto x, auto d) { const auto s = x / alpha; return d - (d - s) * one_m_w; }, xb,
                    view<const T, R>(db));
        }
    }
};

} // namespace patchbay

PATCHBAY_DECLARE_BUILTIN(patchbay::temporal_score_rescaling)
