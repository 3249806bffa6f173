// patchbay: the flow-matching (rectified flow) time shift.
//
// Paper: Esser et al., "Scaling Rectified Flow Transformers for High-Resolution Image
// Synthesis" (SD3, 2024). Matches ComfyUI's time_snr_shift and ModelSamplingDiscreteFlow
// (comfy/model_sampling.py), installed by the ModelSamplingSD3 / ModelSamplingAuraFlow nodes.
#pragma once

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

} // namespace patchbay::sampling_detail
