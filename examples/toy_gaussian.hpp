// toy_gaussian: the smallest complete patchbay Model, and the one the end-to-end golden cases
// use. The "data" is Gaussian: every latent element is independent with mean mu (one mean per
// prompt, shape 1 x C x ... broadcast over the batch) and standard deviation s. For such data the
// exact denoiser (the posterior mean of x0 given the noisy x) has a closed form:
//   vp   (x = x0 + sigma*eps):           D = mu + s^2/(s^2 + sigma^2) * (x - mu)
//   flow (x = (1-sigma)*x0 + sigma*eps): D = mu + (1-sigma) s^2/((1-sigma)^2 s^2 + sigma^2)
//                                               * (x - (1-sigma)*mu)
// It is computed in the element type with the per-batch coefficient first, as torch evaluates
// the same expressions on float32 tensors. The model's conditioning (the engine's "prompt") is
// the mean: the cond pass gets the positive prompt's mu, the uncond pass the negative one's.
#pragma once

#include <cstddef>
#include <string_view>
#include <type_traits>
#include <vector>

#include <patchbay/core/error.hpp>
#include <patchbay/core/model.hpp>
#include <patchbay/core/tensor.hpp>
#include <patchbay/core/view.hpp>
#include <patchbay/kernels/elementwise.hpp>

namespace patchbay::examples {

/// How noise is added to the data: variance exploding (k-diffusion, eps/v models) or
/// rectified flow (SD3, AuraFlow).
enum class toy_kind { vp, flow };

inline toy_kind toy_kind_from(std::string_view name) {
    if (name == "vp") return toy_kind::vp;
    if (name == "flow") return toy_kind::flow;
    fail("toy_gaussian", "toy_kind must be \"vp\" or \"flow\", got \"" + std::string(name) + "\"");
}

/// A prompt of the toy model: the data mean of one batch item (shape 1 x C x ...).
class toy_prompt {
public:
    toy_prompt() = default;
    template <class U, std::size_t R>
        requires std::is_same_v<std::remove_const_t<U>, float>
    explicit toy_prompt(view<U, R> mu)
        : mu_f_(tensor<float>::copy_of(mu)), mu_d_(tensor<double>::copy_of(mu)) {
        require_nonempty(mu, "toy_prompt", "mu");

    }

    template <class T, std::size_t R>
    view<const T, R> mu() const {
        if constexpr (std::is_same_v<T, float>) return mu_f_.as<R>();
        else return mu_d_.as<R>();
    }

private:
    tensor<float> mu_f_;
    tensor<double> mu_d_;
};

class toy_gaussian {
public:
    using conditioning_type = toy_prompt;

    toy_gaussian(toy_kind kind, double data_std) : kind_(kind), data_std_(data_std) {
        require_range(data_std, 1e-6, 1e6, "toy_gaussian", "data_std");
    }

    toy_kind kind() const noexcept { return kind_; }
    double data_std() const noexcept { return data_std_; }

    /// D(x, sigma) for the prompt's mean. Safe to call from several threads at once.
    template <class T, std::size_t R>
    void predict(const model_call<toy_prompt, T, R>& call, view<T, R> out) const {
        constexpr std::string_view where = "toy_gaussian::predict";
        require(call.conditioning != nullptr, where, "the call has no prompt (conditioning is null)");
        const view<const T, R> mu = call.conditioning->template mu<T, R>();
        require_same_shape(call.x, out, where, "x", "out");
        require_batch_vector(call.sigma, call.x, where, "sigma");
        // mu is one item broadcast over the batch (1 x C x ...) or one mean per batch item
        if (mu.extent(0) != 1 && mu.extent(0) != call.x.extent(0))
            fail(where, "the prompt's mu must have batch size 1 or x's batch size");
        for (std::size_t r = 1; r < R; ++r)
            if (mu.extent(r) != call.x.extent(r))
                fail(where, "the prompt's mu has shape " + shape_string(mu) +
                                ", which does not broadcast over x " + shape_string(call.x));
        const T s2 = static_cast<T>(data_std_ * data_std_);
        for (index_t b = 0; b < call.x.extent(0); ++b) {
            const T sigma = call.sigma(b);
            const auto xb = call.x.batch_slice(b, 1);
            const auto ob = out.batch_slice(b, 1);
            const auto mb = mu.extent(0) == 1 ? mu : mu.batch_slice(b, 1);
            if (kind_ == toy_kind::vp) {
                const T coef = s2 / (s2 + sigma * sigma);
                kernels::transform(ob, [coef](auto xv, auto m) { return m + coef * (xv - m); }, xb,
                                   mb);
            } else {
                const T a = T(1) - sigma;
                const T coef = a * s2 / (a * a * s2 + sigma * sigma);
                kernels::transform(
                    ob, [coef, a](auto xv, auto m) { return m + coef * (xv - a * m); }, xb, mb);
            }
        }
    }

private:
    toy_kind kind_;
    double data_std_;
};

static_assert(diffusion_model<toy_gaussian, float, 4>);
static_assert(diffusion_model<toy_gaussian, double, 5>);

} // namespace patchbay::examples
