// patchbay: the flow-matching (rectified flow) time shifts.
//
// Papers: Esser et al., "Scaling Rectified Flow Transformers for High-Resolution Image
// Synthesis" (SD3, 2024); Black Forest Labs' Flux (resolution-dependent shift mu). Matches
// ComfyUI's time_snr_shift (ModelSamplingDiscreteFlow: ModelSamplingSD3 / AuraFlow nodes) and
// flux_time_shift (ModelSamplingFlux: ModelSamplingFlux / ModelSamplingLTXV nodes) in
// comfy/model_sampling.py.
#pragma once

#include <cmath>
#include <limits>

namespace patchbay::sampling_detail {

/// Returns v unchanged but hides it from the optimiser, so a product is rounded before it is
/// added: compilers may otherwise fuse a*b + c into one FMA (GCC does so by default with
/// -march=native), which differs from torch's separate float32 operations by an ulp, enough
/// to change a table entry or a snapped timestep. Used in the scalar (non-hot) code only.
template <class Real>
inline Real rounded(Real v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    asm volatile("" : "+m"(v));
#endif
    return v;
}

/// shift * t / (1 + (shift - 1) * t), with ComfyUI's exact `shift == 1` shortcut (returns t
/// untouched, so no rounding happens). Computed in Real; for float the scalar coefficients
/// are rounded to float first, as torch does with a Python scalar and a float32 tensor.
/// The only 0/0 of the formula, shift 0 at t 1, returns its limit 0 (shift 0 collapses every
/// sigma to 0; ComfyUI gives NaN for that one entry).
template <class Real>
inline Real time_snr_shift(double shift, Real t) {
    if (shift == 1.0) return t;
    const Real a = static_cast<Real>(shift);
    const Real am1 = static_cast<Real>(shift - 1.0);
    const Real num = a * t;
    const Real den = Real(1) + rounded(am1 * t);
    if (den == Real(0) && num == Real(0)) return Real(0);
    return num / den;
}

/// Flux's time shift sigma(t) = e^mu / (e^mu + (1/t - 1)) on a float32 t, as torch evaluates
/// it with e^mu a Python double rounded to float32 (e_mu): Python-scalar / tensor is the
/// tensor's reciprocal times the scalar. Needs 0 < e_mu < inf (see flux_time_shift64).
inline float flux_time_shift32(float e_mu, float t) {
    const float d = 1.0f / t - 1.0f;
    return (1.0f / (e_mu + d)) * e_mu;
}

/// The same shift in double (ComfyUI's percent_to_sigma). Where e^mu overflows or underflows
/// (|mu| > ~709; in float32 already for mu > 88.72, where ComfyUI's table turns to inf/inf =
/// NaN) it returns the limit of the same expression, 1 / (1 + e^-mu (1/t - 1)): 1 for t > 0
/// and huge mu, 0 for t < 1 and very negative mu, and sigma(0) = 0, sigma(1) = 1 for every mu.
inline double flux_time_shift64(double mu, double t) {
    if (t == 0.0) return 0.0;
    const double d = 1.0 / t - 1.0;
    const double e = std::exp(mu);
    if (e > 0.0 && e < std::numeric_limits<double>::infinity()) return e / (e + d);
    if (d == 0.0) return 1.0;
    return 1.0 / (1.0 + std::exp(-mu) * d);
}

} // namespace patchbay::sampling_detail
