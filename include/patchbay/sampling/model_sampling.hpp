// patchbay: model sampling = prediction type x sigma table (ComfyUI's model_sampling object).
//
// Papers: Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models"
// (2022, the sigma parameterisation and c_skip/c_out/c_in); Salimans & Ho, "Progressive
// Distillation" (2022, v-prediction); Luo et al., "Latent Consistency Models" (2023); Esser et
// al., "Scaling Rectified Flow Transformers" (2024, SD3 flow shift). Matches ComfyUI's nodes
// ModelSamplingDiscrete (eps, v_prediction, lcm, x0, img_to_img; zsnr), ModelSamplingSD3 and
// ModelSamplingAuraFlow (comfy/model_sampling.py, comfy_extras/nodes_model_advanced.py).
//
// Numbers follow ComfyUI's float32 arithmetic: the discrete table is built in float64 and
// rounded once, sigma <-> timestep conversions run in float32 on the float32 tables, and the
// tensor operations compute their per-batch scalars (sqrt(sigma^2 + 1), 1 - sigma) in the
// element type, in torch's operation order (x / sqrt(...) is a division, not a multiply by a
// reciprocal).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/sampling/discrete.hpp"
#include "patchbay/sampling/flow.hpp"

namespace patchbay {

/// A model sampling object: the prediction type and the noise table of a model.
/// A plain value (copyable); build it with discrete(), sd3(), aura_flow(), flow() or
/// from_comfy(). Discrete tables have 1000 entries (50 for lcm), flow tables 1000.
class model_sampling {
public:
    /// ModelSamplingDiscrete. sampling: "eps", "v_prediction", "lcm", "x0", "img_to_img".
    static model_sampling discrete(std::string_view sampling = "eps", bool zsnr = false);
    /// ModelSamplingSD3: CONST (flow) with multiplier 1000. shift in [0, 100].
    static model_sampling sd3(double shift = 3.0) { return flow(shift, 1000.0, "ModelSamplingSD3"); }
    /// ModelSamplingAuraFlow: CONST (flow) with multiplier 1. shift in [0, 100].
    static model_sampling aura_flow(double shift = 1.73) {
        return flow(shift, 1.0, "ModelSamplingAuraFlow");
    }
    /// Any flow model sampling: shift in [0, 100], multiplier finite and > 0.
    static model_sampling flow(double shift, double multiplier) {
        return flow(shift, multiplier, "model_sampling::flow");
    }
    /// Parse ComfyUI-style names: "ModelSamplingDiscrete(eps)",
    /// "ModelSamplingDiscrete(v_prediction, zsnr=True)", "ModelSamplingDiscrete(sampling=lcm)",
    /// "ModelSamplingSD3(shift=3.0)", "ModelSamplingSD3(3.0)", "ModelSamplingAuraFlow",
    /// "ModelSamplingFlow(shift=1.0, multiplier=1000)". Arguments left out take the node
    /// defaults. Anything else is a patchbay::error.
    static model_sampling from_comfy(std::string_view text);

    prediction_type prediction() const noexcept { return prediction_; }
    bool is_flow() const noexcept { return prediction_ == prediction_type::flow; }
    bool zsnr() const noexcept { return zsnr_; }
    double shift() const noexcept { return shift_; }           ///< flow only (1 otherwise)
    double multiplier() const noexcept { return multiplier_; } ///< flow only (1 otherwise)

    /// The float32 noise table, index 0 = least noise.
    std::span<const float> sigmas() const noexcept { return sigmas_; }
    /// float32 log of the table (discrete only; empty for flow). For the 1000-entry tables the
    /// log is of the float64 values; for lcm of the float32 subsampled values (as ComfyUI).
    std::span<const float> log_sigmas() const noexcept { return log_sigmas_; }
    float sigma_min() const noexcept { return sigmas_.front(); }
    float sigma_max() const noexcept { return sigmas_.back(); }

    /// Model timestep of a noise level. Discrete: the integer table index nearest in log sigma
    /// (first on ties), computed in float32 on float32(sigma); lcm: 20*index + 19. Flow:
    /// float32(sigma) * multiplier in float32 (continuous).
    double timestep(double sigma) const;
    /// Noise level of a (possibly fractional) timestep. Discrete: clamped to the table and
    /// log-linearly interpolated in float32. Flow: shift_fn(shift, t / multiplier) in float32.
    double sigma(double timestep) const;
    /// ComfyUI's percent_to_sigma: 0 -> the largest noise (discrete 999999999.9, flow 1),
    /// 1 -> 0. NaN is an error.
    double percent_to_sigma(double percent) const;

    /// Network input for x at sigma (one sigma per batch item). out may alias x.
    template <class T, std::size_t R>
    void calculate_input(std::type_identity_t<view<const T, 1>> sigma,
                         std::type_identity_t<view<const T, R>> x, view<T, R> out) const;
    /// Denoised (x0) estimate from the raw network output. out may alias x or model_output.
    template <class T, std::size_t R>
    void calculate_denoised(std::type_identity_t<view<const T, 1>> sigma,
                            std::type_identity_t<view<const T, R>> model_output,
                            std::type_identity_t<view<const T, R>> x, view<T, R> out) const;
    /// Initial noisy latent from noise and the (model-space) latent image. max_denoise
    /// ("start from pure noise") scales the noise by sqrt(1 + sigma^2) for discrete models;
    /// flow models ignore it, as ComfyUI's CONST does. out may alias noise or latent_image.
    template <class T, std::size_t R>
    void noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                       std::type_identity_t<view<const T, R>> noise,
                       std::type_identity_t<view<const T, R>> latent_image, bool max_denoise,
                       view<T, R> out) const;
    /// Undo the noise scaling at the end of sampling (applied with the last sigma, normally 0).
    /// Discrete: identity. Flow: latent / (1 - sigma); sigma == 1 exactly is rejected with a
    /// patchbay::error (ComfyUI divides by zero there: the latent holds no image at sigma 1).
    template <class T, std::size_t R>
    void inverse_noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                               std::type_identity_t<view<const T, R>> latent, view<T, R> out) const;

    /// Coefficients with denoised = c_skip * x + c_out * raw_output and network input =
    /// c_in * x, in double. For lcm, c_skip and c_out depend on the timestep snapped to the
    /// 50-entry table (20*index + 19), so they jump where sigma crosses a table midpoint.
    struct scalings {
        double c_skip, c_out, c_in;
    };
    scalings scalings_at(double sigma) const;

private:
    model_sampling() = default;
    static model_sampling flow(double shift, double multiplier, std::string_view where);
    const char* where() const noexcept;
    enum class op : int { calculate_input, calculate_denoised, noise_scaling, inverse_noise_scaling };
    /// "<node>.<op>" as a string literal: the hot path builds no strings (no allocation).
    const char* where(op o) const noexcept;
    template <class T, std::size_t R>
    void check_op(const view<const T, 1>& sigma, const view<const T, R>& a,
                  const view<T, R>& out, const char* w, std::string_view name_a) const;

    prediction_type prediction_ = prediction_type::eps;
    bool zsnr_ = false;
    double shift_ = 1.0;
    double multiplier_ = 1.0;
    int skip_steps_ = 1;  ///< 20 for lcm (1000 / 50), 1 otherwise
    std::vector<float> sigmas_;
    std::vector<float> log_sigmas_;
};

/// What a denoise-mask function (DifferentialDiffusion) sees at one model evaluation.
struct mask_inputs {
    double sigma = 0.0;                  ///< batch item 0's sigma (the only one ComfyUI reads)
    std::span<const double> step_sigmas; ///< the whole schedule the sampler runs, incl. final 0
    const model_sampling* sampling = nullptr; ///< the model's sampling object (required)
};

// ------------------------------------------------------------------------------------------
// Implementation

inline model_sampling model_sampling::discrete(std::string_view sampling, bool zsnr) {
    model_sampling ms;
    if (sampling == "eps") ms.prediction_ = prediction_type::eps;
    else if (sampling == "v_prediction") ms.prediction_ = prediction_type::v_prediction;
    else if (sampling == "lcm") ms.prediction_ = prediction_type::lcm;
    else if (sampling == "x0") ms.prediction_ = prediction_type::x0;
    else if (sampling == "img_to_img") ms.prediction_ = prediction_type::img_to_img;
    else
        fail("ModelSamplingDiscrete",
             "parameter 'sampling' must be one of eps, v_prediction, lcm, x0, img_to_img, got '" +
                 std::string(sampling) + "'");
    ms.zsnr_ = zsnr;
    const std::vector<double> s64 = sampling_detail::linear_schedule_sigmas64(zsnr);
    if (ms.prediction_ != prediction_type::lcm) {
        ms.sigmas_.resize(s64.size());
        ms.log_sigmas_.resize(s64.size());
        for (std::size_t i = 0; i < s64.size(); ++i) {
            ms.sigmas_[i] = static_cast<float>(s64[i]);
            ms.log_sigmas_[i] = static_cast<float>(std::log(s64[i])); // log before rounding
        }
    } else {
        // LCM keeps every 20th entry of the rounded (and, with zsnr, rescaled) table, ending
        // at the last one; its log table is the float32 log of those float32 values.
        constexpr int n = sampling_detail::lcm_original_timesteps;
        const int total = static_cast<int>(s64.size());
        ms.skip_steps_ = total / n;
        ms.sigmas_.resize(n);
        ms.log_sigmas_.resize(n);
        for (int k = 0; k < n; ++k) {
            const float s = static_cast<float>(s64[static_cast<std::size_t>(total - 1 - k * ms.skip_steps_)]);
            ms.sigmas_[static_cast<std::size_t>(n - 1 - k)] = s;
        }
        for (int k = 0; k < n; ++k)
            ms.log_sigmas_[static_cast<std::size_t>(k)] = std::log(ms.sigmas_[static_cast<std::size_t>(k)]);
    }
    return ms;
}

inline model_sampling model_sampling::flow(double shift, double multiplier, std::string_view where) {
    require_range(shift, 0.0, 100.0, where, "shift");
    if (!(multiplier > 0.0 && multiplier - multiplier == 0.0))
        fail(where, "parameter 'multiplier' must be finite and > 0, got " +
                        detail::fmt_num(multiplier));
    model_sampling ms;
    ms.prediction_ = prediction_type::flow;
    ms.shift_ = shift;
    ms.multiplier_ = multiplier;
    constexpr int n = 1000;
    ms.sigmas_.resize(n);
    const float mult = static_cast<float>(multiplier);
    for (int k = 1; k <= n; ++k) {
        // arange(1, n+1) / n in float32, times the multiplier, then sigma(t) divides it out
        // again: both roundings are kept, as ComfyUI builds the table through sigma().
        const float t = static_cast<float>(k) / static_cast<float>(n) * mult;
        ms.sigmas_[static_cast<std::size_t>(k - 1)] =
            sampling_detail::time_snr_shift<float>(shift, t / mult);
    }
    return ms;
}

inline const char* model_sampling::where() const noexcept {
    if (!is_flow()) return "ModelSamplingDiscrete";
    if (multiplier_ == 1000.0) return "ModelSamplingSD3";
    if (multiplier_ == 1.0) return "ModelSamplingAuraFlow";
    return "model_sampling(flow)";
}

inline const char* model_sampling::where(op o) const noexcept {
    static constexpr const char* names[4][4] = {
        {"ModelSamplingDiscrete.calculate_input", "ModelSamplingDiscrete.calculate_denoised",
         "ModelSamplingDiscrete.noise_scaling", "ModelSamplingDiscrete.inverse_noise_scaling"},
        {"ModelSamplingSD3.calculate_input", "ModelSamplingSD3.calculate_denoised",
         "ModelSamplingSD3.noise_scaling", "ModelSamplingSD3.inverse_noise_scaling"},
        {"ModelSamplingAuraFlow.calculate_input", "ModelSamplingAuraFlow.calculate_denoised",
         "ModelSamplingAuraFlow.noise_scaling", "ModelSamplingAuraFlow.inverse_noise_scaling"},
        {"model_sampling(flow).calculate_input", "model_sampling(flow).calculate_denoised",
         "model_sampling(flow).noise_scaling", "model_sampling(flow).inverse_noise_scaling"}};
    const int kind = !is_flow() ? 0 : multiplier_ == 1000.0 ? 1 : multiplier_ == 1.0 ? 2 : 3;
    return names[kind][static_cast<int>(o)];
}

inline double model_sampling::timestep(double sigma) const {
    if (sigma != sigma) fail(where(), "timestep: argument 'sigma' is NaN");
    const float s = static_cast<float>(sigma);
    if (is_flow()) return static_cast<double>(s * static_cast<float>(multiplier_));
    const float ls = std::log(s);
    // ComfyUI: argmin_i |ls - log_sigmas[i]| in float32, first index on ties. The table is
    // increasing, so the float32 distances fall up to the insertion point k and rise after it:
    // the minimum is at k-1 or k, and on the falling side equal (rounded) distances can form a
    // plateau whose first index is the answer. NaN (negative sigma) gives index 0, as torch.
    std::size_t best = 0;
    if (ls == ls) {
        const auto& L = log_sigmas_;
        const std::size_t k =
            static_cast<std::size_t>(std::lower_bound(L.begin(), L.end(), ls) - L.begin());
        auto dist = [&](std::size_t i) { return std::abs(ls - L[i]); };
        if (k == 0) best = 0;
        else if (k == L.size() || dist(k - 1) <= dist(k)) {
            best = k - 1;
            while (best > 0 && dist(best - 1) == dist(best)) --best;
        } else best = k;
    }
    return static_cast<double>(static_cast<long long>(best) * skip_steps_ + (skip_steps_ - 1));
}

inline double model_sampling::sigma(double timestep) const {
    if (timestep != timestep) fail(where(), "sigma: argument 'timestep' is NaN");
    if (is_flow()) {
        const float t = static_cast<float>(timestep) / static_cast<float>(multiplier_);
        return static_cast<double>(sampling_detail::time_snr_shift<float>(shift_, t));
    }
    float t = static_cast<float>(timestep);
    if (skip_steps_ != 1)
        t = (t - static_cast<float>(skip_steps_ - 1)) / static_cast<float>(skip_steps_);
    const float top = static_cast<float>(sigmas_.size() - 1);
    t = std::clamp(t, 0.0f, top);
    const float lo = std::floor(t);
    const float hi = std::ceil(t);
    const float w = t - lo;
    const float log_sigma = sampling_detail::rounded((1.0f - w) * log_sigmas_[static_cast<std::size_t>(lo)]) +
                            sampling_detail::rounded(w * log_sigmas_[static_cast<std::size_t>(hi)]);
    return static_cast<double>(std::exp(log_sigma));
}

inline double model_sampling::percent_to_sigma(double percent) const {
    if (percent != percent) fail(where(), "percent_to_sigma: argument 'percent' is NaN");
    if (is_flow()) {
        if (percent <= 0.0) return 1.0;
        if (percent >= 1.0) return 0.0;
        return sampling_detail::time_snr_shift<double>(shift_, 1.0 - percent);
    }
    if (percent <= 0.0) return 999999999.9;
    if (percent >= 1.0) return 0.0;
    // torch.tensor(python float) is float32: the timestep is rounded before sigma().
    return sigma(static_cast<double>(static_cast<float>((1.0 - percent) * 999.0)));
}

inline model_sampling::scalings model_sampling::scalings_at(double sigma) const {
    require_finite(sigma, where(), "sigma");
    const double c_in = 1.0 / std::sqrt(sigma * sigma + 1.0);
    switch (prediction_) {
    case prediction_type::eps: return {1.0, -sigma, c_in};
    case prediction_type::v_prediction:
        return {1.0 / (sigma * sigma + 1.0), -sigma * c_in, c_in};
    case prediction_type::x0: return {0.0, 1.0, c_in};
    case prediction_type::img_to_img: return {0.0, 1.0, 1.0};
    case prediction_type::lcm: {
        // denoised = c_out_l * (x - out*sigma) + c_skip_l * x with the snapped timestep.
        const double s = timestep(sigma) * 10.0;
        const double skip = 0.25 / (s * s + 0.25);
        const double outc = s / std::sqrt(s * s + 0.25);
        return {outc + skip, -outc * sigma, c_in};
    }
    case prediction_type::flow: return {1.0, -sigma, 1.0};
    }
    return {1.0, -sigma, c_in};
}

template <class T, std::size_t R>
void model_sampling::check_op(const view<const T, 1>& sigma, const view<const T, R>& a,
                              const view<T, R>& out, const char* w,
                              std::string_view name_a) const {
    require_nonempty(a, w, name_a);
    require_same_shape(a, out, w, name_a, "out");
    require_batch_vector(sigma, a, w, "sigma");
    require_writable_layout(out, w, "out");
    require_no_partial_overlap(out, a, w, "out", name_a);
    for (index_t b = 0; b < sigma.extent(0); ++b)
        require_finite(static_cast<double>(sigma(b)), w, "sigma");
}

template <class T, std::size_t R>
void model_sampling::calculate_input(std::type_identity_t<view<const T, 1>> sigma,
                                     std::type_identity_t<view<const T, R>> x,
                                     view<T, R> out) const {
    check_op<T, R>(sigma, x, out, where(op::calculate_input), "x");
    for (index_t b = 0; b < x.extent(0); ++b) {
        auto xb = x.batch_slice(b, 1);
        auto ob = out.batch_slice(b, 1);
        if (prediction_ == prediction_type::flow || prediction_ == prediction_type::img_to_img) {
            if (!same_elements(ob, xb)) kernels::copy<T, R>(xb, ob);
            continue;
        }
        const T s = sigma(b);
        const T q = std::sqrt(sampling_detail::rounded(s * s) + T(1));
        kernels::transform(ob, [q](auto v) { return v / q; }, xb);
    }
}

template <class T, std::size_t R>
void model_sampling::calculate_denoised(std::type_identity_t<view<const T, 1>> sigma,
                                        std::type_identity_t<view<const T, R>> model_output,
                                        std::type_identity_t<view<const T, R>> x,
                                        view<T, R> out) const {
    const char* w = where(op::calculate_denoised);
    require_same_shape(x, model_output, w, "x", "model_output"); // inputs first: clearer message
    check_op<T, R>(sigma, x, out, w, "x");
    require_no_partial_overlap(out, model_output, w, "out", "model_output");
    for (index_t b = 0; b < x.extent(0); ++b) {
        auto xb = x.batch_slice(b, 1);
        auto mb = model_output.batch_slice(b, 1);
        auto ob = out.batch_slice(b, 1);
        const T s = sigma(b);
        switch (prediction_) {
        case prediction_type::eps:
        case prediction_type::flow:
            kernels::transform(ob, [s](auto xv, auto mv) { return xv - mv * s; }, xb, mb);
            break;
        case prediction_type::x0:
        case prediction_type::img_to_img:
            if (!same_elements(ob, mb)) kernels::copy<T, R>(mb, ob);
            break;
        case prediction_type::v_prediction: {
            const T a = sampling_detail::rounded(s * s) + T(1);
            const T q = std::sqrt(a);
            kernels::transform(ob, [s, a, q](auto xv, auto mv) { return xv / a - mv * s / q; },
                               xb, mb);
            break;
        }
        case prediction_type::lcm: {
            // ComfyUI: scaled = 10 * snapped timestep; c_skip = 0.25 / (scaled^2 + 0.25)
            // (torch evaluates scalar / tensor as reciprocal * scalar); c_out = scaled /
            // sqrt(scaled^2 + 0.25); result c_out * (x - out*sigma) + c_skip * x.
            const T st = static_cast<T>(timestep(static_cast<double>(s))) * T(10);
            const T d = sampling_detail::rounded(st * st) + T(0.25);
            const T c_skip = (T(1) / d) * T(0.25);
            const T c_out = st / std::sqrt(d);
            kernels::transform(
                ob, [s, c_skip, c_out](auto xv, auto mv) { return c_out * (xv - mv * s) + c_skip * xv; },
                xb, mb);
            break;
        }
        }
    }
}

template <class T, std::size_t R>
void model_sampling::noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                                   std::type_identity_t<view<const T, R>> noise,
                                   std::type_identity_t<view<const T, R>> latent_image,
                                   bool max_denoise, view<T, R> out) const {
    const char* w = where(op::noise_scaling);
    require_same_shape(noise, latent_image, w, "noise", "latent_image");
    check_op<T, R>(sigma, noise, out, w, "noise");
    require_no_partial_overlap(out, latent_image, w, "out", "latent_image");
    for (index_t b = 0; b < noise.extent(0); ++b) {
        auto nb = noise.batch_slice(b, 1);
        auto lb = latent_image.batch_slice(b, 1);
        auto ob = out.batch_slice(b, 1);
        const T s = sigma(b);
        if (is_flow()) {
            const T keep = T(1) - s;
            kernels::transform(ob, [s, keep](auto n, auto l) { return s * n + keep * l; }, nb, lb);
        } else {
            const T scale = max_denoise ? std::sqrt(T(1) + sampling_detail::rounded(s * s)) : s;
            kernels::transform(ob, [scale](auto n, auto l) { return n * scale + l; }, nb, lb);
        }
    }
}

template <class T, std::size_t R>
void model_sampling::inverse_noise_scaling(std::type_identity_t<view<const T, 1>> sigma,
                                           std::type_identity_t<view<const T, R>> latent,
                                           view<T, R> out) const {
    check_op<T, R>(sigma, latent, out, where(op::inverse_noise_scaling), "latent");
    for (index_t b = 0; b < latent.extent(0); ++b) {
        auto lb = latent.batch_slice(b, 1);
        auto ob = out.batch_slice(b, 1);
        if (!is_flow()) {
            if (!same_elements(ob, lb)) kernels::copy<T, R>(lb, ob);
            continue;
        }
        const T keep = T(1) - sigma(b);
        if (keep == T(0))
            fail(where(op::inverse_noise_scaling),
                 "argument 'sigma' is 1: a flow latent at sigma 1 is pure noise and cannot be "
                 "unscaled (latent / (1 - sigma) divides by zero)");
        kernels::transform(ob, [keep](auto v) { return v / keep; }, lb);
    }
}

// ------------------------------------------------------------------------------------------
// from_comfy: "Name" or "Name(arg, key=value, ...)".

namespace sampling_detail {

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

inline std::string_view unquote(std::string_view s) {
    s = trim(s);
    if (s.size() >= 2 && (s.front() == '\'' || s.front() == '"') && s.back() == s.front())
        s = s.substr(1, s.size() - 2);
    return s;
}

inline double parse_double(std::string_view s, std::string_view where, std::string_view name) {
    const std::string str(trim(s));
    char* end = nullptr;
    const double v = std::strtod(str.c_str(), &end);
    if (str.empty() || end != str.c_str() + str.size())
        fail(where, "parameter '" + std::string(name) + "' is not a number: '" + str + "'");
    return v;
}

inline bool parse_bool(std::string_view s, std::string_view where, std::string_view name) {
    s = unquote(s);
    if (s == "True" || s == "true" || s == "1") return true;
    if (s == "False" || s == "false" || s == "0") return false;
    fail(where, "parameter '" + std::string(name) + "' must be True or False, got '" +
                    std::string(s) + "'");
}

} // namespace sampling_detail

inline model_sampling model_sampling::from_comfy(std::string_view text) {
    using namespace sampling_detail;
    constexpr std::string_view where = "model_sampling::from_comfy";
    std::string_view s = trim(text);
    std::string_view name = s, args;
    if (const auto open = s.find('('); open != std::string_view::npos) {
        if (s.back() != ')')
            fail(where, "missing ')' in '" + std::string(text) + "'");
        name = trim(s.substr(0, open));
        args = s.substr(open + 1, s.size() - open - 2);
    }
    // Split the argument list into positional values and key=value pairs.
    std::vector<std::string_view> positional;
    std::vector<std::pair<std::string_view, std::string_view>> named;
    while (!trim(args).empty()) {
        const auto comma = args.find(',');
        std::string_view item = trim(args.substr(0, comma));
        args = comma == std::string_view::npos ? std::string_view{} : args.substr(comma + 1);
        if (item.empty()) fail(where, "empty argument in '" + std::string(text) + "'");
        if (const auto eq = item.find('='); eq != std::string_view::npos)
            named.emplace_back(trim(item.substr(0, eq)), trim(item.substr(eq + 1)));
        else if (!named.empty())
            fail(where, "positional argument after a named one in '" + std::string(text) + "'");
        else
            positional.push_back(item);
    }
    auto too_many = [&](std::size_t max_positional) {
        if (positional.size() > max_positional)
            fail(where, "too many arguments in '" + std::string(text) + "'");
    };
    auto unknown = [&](std::string_view key) {
        fail(where, "unknown argument '" + std::string(key) + "' for " + std::string(name));
    };

    if (name == "ModelSamplingDiscrete") {
        too_many(2);
        std::string sampling = "eps";
        bool zsnr = false;
        if (positional.size() > 0) sampling = std::string(unquote(positional[0]));
        if (positional.size() > 1) zsnr = parse_bool(positional[1], where, "zsnr");
        for (auto [k, v] : named) {
            if (k == "sampling") sampling = std::string(unquote(v));
            else if (k == "zsnr") zsnr = parse_bool(v, where, "zsnr");
            else unknown(k);
        }
        return discrete(sampling, zsnr);
    }
    if (name == "ModelSamplingSD3" || name == "ModelSamplingAuraFlow" ||
        name == "ModelSamplingFlow") {
        const bool generic = name == "ModelSamplingFlow";
        double shift = name == "ModelSamplingSD3" ? 3.0 : name == "ModelSamplingAuraFlow" ? 1.73 : 1.0;
        double multiplier = name == "ModelSamplingAuraFlow" ? 1.0 : 1000.0;
        too_many(generic ? 2 : 1);
        if (positional.size() > 0) shift = parse_double(positional[0], where, "shift");
        if (positional.size() > 1) multiplier = parse_double(positional[1], where, "multiplier");
        for (auto [k, v] : named) {
            if (k == "shift") shift = parse_double(v, where, "shift");
            else if (generic && k == "multiplier") multiplier = parse_double(v, where, "multiplier");
            else unknown(k);
        }
        if (name == "ModelSamplingSD3") return sd3(shift);
        if (name == "ModelSamplingAuraFlow") return aura_flow(shift);
        return flow(shift, multiplier);
    }
    fail(where, "unknown model sampling '" + std::string(name) +
                    "' (expected ModelSamplingDiscrete, ModelSamplingSD3, ModelSamplingAuraFlow "
                    "or ModelSamplingFlow)");
}

} // namespace patchbay
