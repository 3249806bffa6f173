// patchbay: a few k-diffusion samplers (Karras et al. 2022, "Elucidating the Design Space of
// Diffusion-Based Generative Models"; Lu et al. 2022, "DPM-Solver++") driving a guider or a
// patch_chain, as ComfyUI's KSampler runs them (comfy/samplers.py KSAMPLER.sample,
// comfy/k_diffusion/sampling.py): euler, euler_ancestral (with the rectified-flow variant
// ComfyUI switches to for flow models), dpmpp_2m, and the CFG++ samplers euler_cfg_pp and
// euler_ancestral_cfg_pp (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free
// Guidance for Diffusion Models"; ComfyUI nodes SamplerEulerCFGpp, SamplerEulerAncestralCFGPP).
//
// A run: x = noise_scaling(sigmas[0], noise, latent_image, max_denoise) with max_denoise =
// isclose(sigma_max, sigmas[0], rel 1e-5) or sigmas[0] > sigma_max; then one guided denoise per
// step (inpainting is applied by the guider when a denoise mask is given); finally
// inverse_noise_scaling(sigmas[-1], x). Step arithmetic runs in the element type on the sigmas
// rounded to it, as torch does on float32 sigma tensors.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay {

/// The inputs of one sampling run.
template <class T, std::size_t R>
struct sample_inputs {
    view<const T, R> noise;          ///< standard normal noise, the latent's shape
    view<const T, R> latent_image{}; ///< model space; an empty view means zeros (txt2img)
    std::span<const double> sigmas;  ///< the schedule, including the final sigma (usually 0)
    double cond_scale = 1.0;
    view<const T, R> denoise_mask{}; ///< empty: no inpainting; 1 = regenerate, 0 = keep latent
};

/// What the progress callback sees. It is called at every step after the model evaluation
/// and before the update (k-diffusion's callback: x is the latent the step started from),
/// then once more after the last step with step == steps, x the final latent (before the
/// inverse noise scaling) and denoised empty.
template <class T, std::size_t R>
struct step_report {
    int step = 0;
    int steps = 0;
    double sigma = 0.0;
    double sigma_next = 0.0;
    view<const T, R> x;
    view<const T, R> denoised;
};

/// Options of a sampling run.
template <class T, std::size_t R>
struct sample_options {
    callback<void(const step_report<T, R>&)> progress{};
    /// Checked before every step; when it reads true the run stops, `out` holds the current
    /// latent (not inverse-scaled) and the sampler returns sample_status::cancelled.
    const std::atomic<bool>* cancel = nullptr;
    // euler_ancestral
    double eta = 1.0;
    double s_noise = 1.0;
    std::uint64_t seed = 0; ///< seeds the built-in noise generator (deterministic for a seed)
    /// The engine's own noise: fill `out` with standard normal noise for the step from sigma
    /// to sigma_next. When empty the built-in generator seeded with `seed` is used.
    callback<void(double sigma, double sigma_next, view<T, R> out)> noise_source{};
};

enum class sample_status { completed, cancelled };

/// A small deterministic standard-normal generator (splitmix64 + Box-Muller), identical on
/// every platform, for the ancestral samplers when the engine passes only a seed.
class normal_generator {
public:
    explicit normal_generator(std::uint64_t seed) noexcept : state_(seed) {}
    double next() noexcept {
        if (has_spare_) {
            has_spare_ = false;
            return spare_;
        }
        double u1 = 0.0;
        do u1 = uniform(); while (u1 <= 0.0);
        const double u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        const double a = 6.283185307179586 * u2;
        spare_ = r * std::sin(a);
        has_spare_ = true;
        return r * std::cos(a);
    }
    template <class T, std::size_t R>
    void fill(view<T, R> out) noexcept {
        std::array<index_t, R> idx{};
        const index_t n = out.size();
        for (index_t k = 0; k < n; ++k) {
            index_t off = 0;
            for (std::size_t r = 0; r < R; ++r) off += idx[r] * out.stride(r);
            out.data_handle()[off] = static_cast<T>(next());
            for (std::size_t r = R; r-- > 0;) {
                if (++idx[r] < out.extent(r)) break;
                idx[r] = 0;
            }
        }
    }

private:
    double uniform() noexcept {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        return static_cast<double>(z >> 11) * 0x1.0p-53;
    }
    std::uint64_t state_;
    double spare_ = 0.0;
    bool has_spare_ = false;
};

namespace detail {

/// An ancestral sampler's eta and s_noise, each in [0, its maximum] (the node's range).
inline void check_ancestral(double eta, double s_noise, double eta_max, double s_noise_max, std::string_view where) {
    require_range(eta, 0.0, eta_max, where, "eta");
    require_range(s_noise, 0.0, s_noise_max, where, "s_noise");
}

/// What every sampler shares: validation, initial noise scaling, the per-step guided
/// denoise, progress, cancellation and the final inverse scaling.
template <class G, class T, std::size_t R>
class sampler_run {
public:
    sampler_run(const G& g, typename G::run_state& run, const sample_inputs<T, R>& in,
                view<T, R> out, const sample_options<T, R>& opt, std::string_view where)
        : g_(g), run_(run), in_(in), out_(out), opt_(opt), where_(where) {
        require_nonempty(in.noise, where, "noise");
        require_same_shape(in.noise, out, where, "noise", "out");
        require_writable_layout(out, where, "out");
        if (!in.latent_image.empty())
            require_same_shape(in.noise, in.latent_image, where, "noise", "latent_image");
        if (!in.denoise_mask.empty())
            require_same_shape(in.noise, in.denoise_mask, where, "noise", "denoise_mask");
        PATCHBAY_REQUIRE(in.sigmas.size() >= 2, where,
                "argument 'sigmas' must hold at least two noise levels (one step), got " +
                    std::to_string(in.sigmas.size()));
        for (double s : in.sigmas) {
            require_finite(s, where, "sigmas");
            PATCHBAY_REQUIRE(s >= 0.0, where, "argument 'sigmas' must not be negative");
        }
        // every step divides by the noise level it starts from: at 0 the sample is clean and
        // there is nothing to step from (k-diffusion gives inf or NaN)
        for (std::size_t i = 0; i + 1 < in.sigmas.size(); ++i)
            PATCHBAY_REQUIRE(in.sigmas[i] != 0.0 || in.sigmas[i + 1] == 0.0, where,
                             "argument 'sigmas' must not rise from 0 (step " + std::to_string(i) + " goes from 0 to " +
                                 detail::fmt_num(in.sigmas[i + 1]) + "); only the end of a schedule may be 0");
        require_finite(in.cond_scale, where, "cond_scale");
        if (may_overlap(out, in.noise) || (!in.latent_image.empty() && may_overlap(out, in.latent_image)) ||
            (!in.denoise_mask.empty() && may_overlap(out, in.denoise_mask)))
            fail(where, "output 'out' overlaps an input (noise, latent_image or denoise_mask)");

        const auto& ext = out.extents();
        denoised_.resize(std::vector<index_t>(ext.begin(), ext.end()));
        sigma_.resize({out.extent(0)});
        latent_ = in.latent_image;
        if (latent_.empty()) {
            zeros_.resize(std::vector<index_t>(ext.begin(), ext.end()));
            zeros_.fill(T(0));
            latent_ = zeros_.template as<R>();
        }
        if (!in.denoise_mask.empty()) {
            inpaint_ = {in.denoise_mask, latent_, in.noise};
            use_inpaint_ = true;
        }

        // x = noise_scaling(sigmas[0], noise, latent_image, max_denoise)
        const model_sampling& ms = g.sampling();
        const double s0 = static_cast<double>(static_cast<T>(in.sigmas[0]));
        const double smax = static_cast<double>(ms.sigma_max());
        const bool max_denoise =
            std::fabs(smax - s0) <= 1e-5 * std::max(std::fabs(smax), std::fabs(s0)) || s0 > smax;
        set_sigma(in.sigmas[0]);
        ms.noise_scaling<T, R>(sigma_view(), in.noise, latent_, max_denoise, out);
    }

    int steps() const noexcept { return static_cast<int>(in_.sigmas.size()) - 1; }
    double sigma(int i) const noexcept { return in_.sigmas[static_cast<std::size_t>(i)]; }
    /// sigmas[i] rounded to the element type (torch's float32 sigma tensor).
    T sigma_t(int i) const noexcept { return static_cast<T>(sigma(i)); }
    view<T, R> x() const noexcept { return out_; }
    view<T, R> denoised() noexcept { return denoised_.template as<R>(); }

    bool cancelled() const noexcept { return opt_.cancel && opt_.cancel->load(); }

    /// The guided denoise at sigmas[i] for the current x; with `uncond` not empty also the
    /// uncond prediction of the cfg stage (step_inputs::uncond_denoised).
    void denoise(int i, view<T, R> uncond = {}) {
        set_sigma(sigma(i));
        step_inputs<T, R> st{out_, sigma_view(), in_.cond_scale, in_.sigmas,
                             use_inpaint_ ? &inpaint_ : nullptr};
        st.uncond_denoised = uncond;
        g_.denoise(run_, st, denoised());
    }

    void report(int i) {
        if (!opt_.progress) return;
        const bool last = i == steps();
        const step_report<T, R> r{i, steps(), sigma(i), last ? sigma(i) : sigma(i + 1), out_,
                                  last ? view<const T, R>{} : view<const T, R>(denoised())};
        opt_.progress(r);
    }

    sample_status finish() {
        report(steps());
        set_sigma(in_.sigmas.back());
        g_.sampling().template inverse_noise_scaling<T, R>(sigma_view(), out_, out_);
        return sample_status::completed;
    }

private:
    void set_sigma(double s) noexcept { sigma_.fill(static_cast<T>(s)); }
    view<const T, 1> sigma_view() const noexcept { return sigma_.template as<1>(); }

    const G& g_;
    typename G::run_state& run_;
    const sample_inputs<T, R>& in_;
    view<T, R> out_;
    const sample_options<T, R>& opt_;
    std::string_view where_;
    tensor<T> denoised_, sigma_, zeros_;
    view<const T, R> latent_;
    inpaint_inputs<T, R> inpaint_{};
    bool use_inpaint_ = false;
};

/// The ancestral samplers' per-step noise: opt.noise_source, or the built-in generator seeded
/// with opt.seed. One latent-sized buffer per run.
template <class T, std::size_t R>
class step_noise {
public:
    step_noise(view<const T, R> like, const sample_options<T, R>& opt)
        : buf_(std::vector<index_t>(like.extents().begin(), like.extents().end())), opt_(opt), gen_(opt.seed) {}
    /// Fills the buffer with the noise of the step from sigma to sigma_next and returns it.
    view<const T, R> draw(double sigma, double sigma_next) {
        const view<T, R> n = buf_.template as<R>();
        if (opt_.noise_source) opt_.noise_source(sigma, sigma_next, n);
        else gen_.fill(n);
        return n;
    }

private:
    tensor<T> buf_;
    const sample_options<T, R>& opt_;
    normal_generator gen_;
};

/// The CFG++ Euler step (k-diffusion's sample_euler_ancestral_cfg_pp), ComfyUI's arithmetic:
/// float32 on the float32 sigmas, alpha(sigma) = sigma * exp(half log-SNR), which is 1 for
/// VP models (up to rounding) and 1 - sigma for flow models. Each step takes the guided
/// prediction and the uncond one of the same model evaluation (step_inputs::uncond_denoised; the
/// uncond pass runs even at cond_scale 1) and re-noises along the uncond prediction's noise:
///   d = (x - a_s*uncond)/s,  x = a_t*denoised + a_t*sigma_down*d  (+ a_t*noise*s_noise*sigma_up)
/// with (sigma_down, sigma_up) the ancestral split of s/a_s -> s'/a_t with eta (0: no noise); the
/// last step (to sigma 0) returns the prediction. s_noise is scaled by the model's noise_scale.
template <class G, class T, std::size_t R>
sample_status euler_cfg_pp_loop(const G& g, typename G::run_state& run, const sample_inputs<T, R>& in,
                                view<T, R> out, const sample_options<T, R>& opt, double eta_d,
                                double s_noise_d, std::string_view where) {
    sampler_run<G, T, R> s(g, run, in, out, opt, where);
    const bool flow = g.sampling().is_flow();
    // A flow model's alpha(sigma) = 1 - sigma: above 1 the log-SNR is the log of a negative
    // number, and a step to sigma 1 scales by alpha 0 what it divided by it (k-diffusion gives
    // NaN for both). Only the start may be 1.
    if (flow)
        for (std::size_t i = 0; i < in.sigmas.size(); ++i)
            PATCHBAY_REQUIRE(in.sigmas[i] < 1.0 || (i == 0 && in.sigmas[i] == 1.0), where,
                             "argument 'sigmas' must be below 1 for a flow model (alpha = 1 - sigma; only the first "
                             "may be 1), got " + detail::fmt_num(in.sigmas[i]) + " at index " + std::to_string(i));
    tensor<T> uncond_buf(std::vector<index_t>(out.extents().begin(), out.extents().end()));
    const view<T, R> uncond = uncond_buf.template as<R>();
    step_noise<T, R> noise(out, opt);
    // ComfyUI scales s_noise by the model's noise_scale (ModelNoiseScale; 1 otherwise)
    const double ns_d = s_noise_d * g.sampling().noise_scale();
    const T eta = static_cast<T>(eta_d), ns = static_cast<T>(ns_d);
    // alpha(sigma) = sigma * exp(lambda(sigma)); lambda = -log(sigma) (VP), -logit(sigma) (flow).
    // At sigma 1 a flow model gives alpha 0 (logit 1 = inf), as torch does.
    auto alpha = [flow](T sig) {
        const T lambda = flow ? -std::log(sig / (T(1) - sig)) : -std::log(sig);
        return sig * std::exp(lambda);
    };
    for (int i = 0; i < s.steps(); ++i) {
        if (s.cancelled()) return sample_status::cancelled;
        s.denoise(i, uncond);
        s.report(i);
        const view<const T, R> den = s.denoised();
        const T from = s.sigma_t(i), to = s.sigma_t(i + 1);
        if (to == T(0)) { // the last step: the denoised prediction
            kernels::copy<T, R>(den, out);
            continue;
        }
        const T a_s = alpha(from), a_t = alpha(to);
        // k-diffusion's get_ancestral_step(from / a_s, to / a_t, eta). With a flow model at
        // sigma 1, from / a_s is inf and the formula gives NaN; Python's min(t, nan) is t, and
        // so is std::min: the step then only re-noises (sigma_down 0).
        const T f = from / a_s, t = to / a_t;
        T up = T(0), down = t;
        if (eta_d != 0.0) {
            up = std::min(t, eta * std::sqrt(t * t * (f * f - t * t) / (f * f)));
            down = std::sqrt(t * t - up * up);
        }
        const T sigma_down = a_t * down;
        // d = (x - a_s * uncond) / sigma: the noise the unconditional prediction implies
        kernels::transform(
            out,
            [a_s, a_t, from, sigma_down](auto x, auto d, auto u) {
                return a_t * d + sigma_down * ((x - a_s * u) / from);
            },
            out, den, view<const T, R>(uncond));
        if (eta_d > 0.0 && ns_d > 0.0) {
            const view<const T, R> n = noise.draw(s.sigma(i), s.sigma(i + 1));
            kernels::transform(
                out, [a_t, ns, up](auto x, auto z) { return x + ((a_t * z) * ns) * up; }, out, n);
        }
    }
    return s.finish();
}

} // namespace detail

/// k-diffusion sample_euler (no churn): x += (x - denoised)/sigma_i * (sigma_{i+1} - sigma_i).
template <class G, class T, std::size_t R>
    requires guided_denoiser<G, T, R>
sample_status sample_euler(const G& g, typename G::run_state& run, const sample_inputs<T, R>& in,
                           view<T, R> out, const sample_options<T, R>& opt = {}) {
    detail::sampler_run<G, T, R> s(g, run, in, out, opt, "sample_euler");
    for (int i = 0; i < s.steps(); ++i) {
        if (s.cancelled()) return sample_status::cancelled;
        s.denoise(i);
        s.report(i);
        const T sig = s.sigma_t(i);
        const T dt = static_cast<T>(s.sigma_t(i + 1) - sig);
        kernels::transform(
            out, [sig, dt](auto x, auto d) { return x + ((x - d) / sig) * dt; }, out,
            view<const T, R>(s.denoised()));
    }
    return s.finish();
}

/// k-diffusion sample_euler_ancestral; for flow (CONST) models ComfyUI's
/// sample_euler_ancestral_RF, as ComfyUI dispatches. Noise comes from opt.noise_source or the
/// built-in generator seeded with opt.seed.
template <class G, class T, std::size_t R>
    requires guided_denoiser<G, T, R>
sample_status sample_euler_ancestral(const G& g, typename G::run_state& run,
                                     const sample_inputs<T, R>& in, view<T, R> out,
                                     const sample_options<T, R>& opt = {}) {
    constexpr std::string_view where = "sample_euler_ancestral";
    detail::check_ancestral(opt.eta, opt.s_noise, 100.0, 100.0, where);
    detail::sampler_run<G, T, R> s(g, run, in, out, opt, where);
    detail::step_noise<T, R> noise(out, opt);
    const bool flow = g.sampling().is_flow();
    const T eta = static_cast<T>(opt.eta), s_noise = static_cast<T>(opt.s_noise);
    for (int i = 0; i < s.steps(); ++i) {
        if (s.cancelled()) return sample_status::cancelled;
        s.denoise(i);
        s.report(i);
        const view<const T, R> den = s.denoised();
        const T from = s.sigma_t(i), to = s.sigma_t(i + 1);
        if (!flow) {
            T up = T(0), down = to;
            if (opt.eta != 0.0) {
                up = std::min(to, eta * std::sqrt(to * to * (from * from - to * to) / (from * from)));
                down = std::sqrt(to * to - up * up);
            }
            if (down == T(0)) {
                kernels::copy<T, R>(den, out);
                continue;
            }
            const view<const T, R> n = noise.draw(s.sigma(i), s.sigma(i + 1));
            const T dt = down - from, ns = s_noise, su = up;
            kernels::transform(
                out,
                [from, dt, ns, su](auto x, auto d, auto z) {
                    return (x + ((x - d) / from) * dt) + (z * ns) * su;
                },
                out, den, n);
        } else {
            if (to == T(0)) {
                kernels::copy<T, R>(den, out);
                continue;
            }
            const T down = to * (T(1) + (to / from - T(1)) * eta);
            const T alpha_next = T(1) - to, alpha_down = T(1) - down;
            const T renoise =
                std::sqrt(to * to - down * down * alpha_next * alpha_next / (alpha_down * alpha_down));
            const T ratio = down / from;
            kernels::transform(
                out, [ratio](auto x, auto d) { return ratio * x + (T(1) - ratio) * d; }, out, den);
            if (opt.eta > 0.0) {
                const view<const T, R> n = noise.draw(s.sigma(i), s.sigma(i + 1));
                const T scale = alpha_next / alpha_down, ns = s_noise;
                kernels::transform(
                    out, [scale, ns, renoise](auto x, auto z) { return scale * x + (z * ns) * renoise; },
                    out, n);
            }
        }
    }
    return s.finish();
}

/// k-diffusion sample_dpmpp_2m (DPM-Solver++(2M)).
template <class G, class T, std::size_t R>
    requires guided_denoiser<G, T, R>
sample_status sample_dpmpp_2m(const G& g, typename G::run_state& run, const sample_inputs<T, R>& in,
                              view<T, R> out, const sample_options<T, R>& opt = {}) {
    detail::sampler_run<G, T, R> s(g, run, in, out, opt, "sample_dpmpp_2m");
    tensor<T> old_buf(std::vector<index_t>(out.extents().begin(), out.extents().end()));
    const view<T, R> old = old_buf.template as<R>();
    auto t_of = [](T sigma) { return -std::log(sigma); }; // t = -log(sigma); inf at sigma 0
    for (int i = 0; i < s.steps(); ++i) {
        if (s.cancelled()) return sample_status::cancelled;
        s.denoise(i);
        s.report(i);
        const view<const T, R> den = s.denoised();
        const T t = t_of(s.sigma_t(i)), t_next = t_of(s.sigma_t(i + 1));
        const T h = t_next - t;
        const T ratio = std::exp(-t_next) / std::exp(-t);
        const T em1 = std::expm1(-h);
        if (i == 0 || s.sigma(i + 1) == 0.0) {
            kernels::transform(
                out, [ratio, em1](auto x, auto d) { return ratio * x - em1 * d; }, out, den);
        } else {
            const T h_last = t - t_of(s.sigma_t(i - 1));
            const T r = h_last / h;
            const T a = T(1) + T(1) / (T(2) * r), b = T(1) / (T(2) * r);
            kernels::transform(
                out, [ratio, em1, a, b](auto x, auto d, auto o) { return ratio * x - em1 * (a * d - b * o); },
                out, den, view<const T, R>(old));
        }
        kernels::copy<T, R>(den, old);
    }
    return s.finish();
}

/// CFG++ ancestral Euler (k-diffusion's sample_euler_ancestral_cfg_pp, ComfyUI sampler
/// `euler_ancestral_cfg_pp`): detail::euler_cfg_pp_loop with opt.eta in [0, 1], s_noise in [0, 10].
template <class G, class T, std::size_t R>
    requires guided_denoiser<G, T, R>
sample_status sample_euler_ancestral_cfg_pp(const G& g, typename G::run_state& run, const sample_inputs<T, R>& in,
                                            view<T, R> out, const sample_options<T, R>& opt = {}) {
    detail::check_ancestral(opt.eta, opt.s_noise, 1.0, 10.0, "sample_euler_ancestral_cfg_pp");
    return detail::euler_cfg_pp_loop(g, run, in, out, opt, opt.eta, opt.s_noise, "sample_euler_ancestral_cfg_pp");
}

/// CFG++ Euler: k-diffusion's sample_euler_cfg_pp (ComfyUI sampler `euler_cfg_pp`, node
/// SamplerEulerCFGpp with version "regular"), the ancestral sampler above with eta 0: for a VP
/// model x = denoised + (x - uncond) * s'/s. Deterministic (opt.eta, s_noise, seed unused).
template <class G, class T, std::size_t R>
    requires guided_denoiser<G, T, R>
sample_status sample_euler_cfg_pp(const G& g, typename G::run_state& run, const sample_inputs<T, R>& in,
                                  view<T, R> out, const sample_options<T, R>& opt = {}) {
    return detail::euler_cfg_pp_loop(g, run, in, out, opt, 0.0, 0.0, "sample_euler_cfg_pp");
}

/// Run a sampler by its ComfyUI name: "euler", "euler_ancestral", "dpmpp_2m", "euler_cfg_pp",
/// "euler_ancestral_cfg_pp".
template <class G, class T, std::size_t R>
    requires guided_denoiser<G, T, R>
sample_status sample(std::string_view sampler, const G& g, typename G::run_state& run,
                     const sample_inputs<T, R>& in, view<T, R> out,
                     const sample_options<T, R>& opt = {}) {
    if (sampler == "euler") return sample_euler(g, run, in, out, opt);
    if (sampler == "euler_ancestral") return sample_euler_ancestral(g, run, in, out, opt);
    if (sampler == "dpmpp_2m") return sample_dpmpp_2m(g, run, in, out, opt);
    if (sampler == "euler_cfg_pp") return sample_euler_cfg_pp(g, run, in, out, opt);
    if (sampler == "euler_ancestral_cfg_pp") return sample_euler_ancestral_cfg_pp(g, run, in, out, opt);
    fail("sample", "unknown sampler \"" + std::string(sampler) +
                       "\" (expected euler, euler_ancestral, dpmpp_2m, euler_cfg_pp or euler_ancestral_cfg_pp)");
}

} // namespace patchbay
