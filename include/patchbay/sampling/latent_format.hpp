// patchbay: per-channel latent formats a model sampling can imply.
//
// ComfyUI's ModelSamplingContinuousEDM with sampling = edm_playground_v2.5 also replaces the
// model's latent format by SDXL_Playground_2_5 (comfy/latent_formats.py): the VAE latent is
// normalised per channel before sampling and restored after it. patchbay does not own the
// VAE step, so it exposes the constants and the two maps for the engine to apply:
//   process_in(z)  = (z - mean_c) * scale_factor / std_c   (VAE latent -> model space)
//   process_out(z) = z * std_c / scale_factor + mean_c     (model space -> VAE latent)
// computed in the element type with the float32 constants, in torch's operation order.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

#include "patchbay/core/error.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"

namespace patchbay {

/// A latent format with a per-channel mean and standard deviation (4 channels).
struct channel_latent_format {
    std::string_view name;        ///< ComfyUI's class name
    float scale_factor;
    std::array<float, 4> mean;    ///< float32, as ComfyUI stores them (torch.tensor)
    std::array<float, 4> std_dev;

    /// VAE latent -> model space. `latent` is (B, 4, ...) (rank 3-5); out may alias it.
    template <class T, std::size_t R>
    void process_in(std::type_identity_t<view<const T, R>> latent, view<T, R> out) const {
        per_channel<T, R>(latent, out, [](T m, T s, T k) {
            return [m, s, k](auto z) { return (z - m) * k / s; };
        });
    }

    /// Model space -> VAE latent (the inverse of process_in up to rounding). out may alias.
    template <class T, std::size_t R>
    void process_out(std::type_identity_t<view<const T, R>> latent, view<T, R> out) const {
        per_channel<T, R>(latent, out, [](T m, T s, T k) {
            return [m, s, k](auto z) { return z * s / k + m; };
        });
    }

private:
    /// Applies map(mean_c, std_c, scale_factor) to each channel c, after the checks.
    template <class T, std::size_t R, class Map>
    void per_channel(const view<const T, R>& latent, const view<T, R>& out, Map&& map) const {
        static_assert(R >= 3, "a latent format maps (B, C, ...) latents");
        const std::string_view where = name;
        require_nonempty(latent, where, "latent");
        require_same_shape(latent, out, where, "latent", "out");
        PATCHBAY_REQUIRE(latent.extent(1) == 4, where,
                         "tensor 'latent' must have 4 channels (dim 1), got shape " +
                             shape_string(latent));
        require_writable_layout(out, where, "out");
        require_no_partial_overlap(out, latent, where, "out", "latent");
        for (index_t c = 0; c < 4; ++c) {
            const auto i = static_cast<std::size_t>(c);
            const auto f = map(static_cast<T>(mean[i]), static_cast<T>(std_dev[i]), static_cast<T>(scale_factor));
            kernels::transform(out.channel_slice(c, 1), f, latent.channel_slice(c, 1));
        }
    }
};

/// SDXL_Playground_2_5 (comfy/latent_formats.py), installed by ModelSamplingContinuousEDM
/// with sampling = edm_playground_v2.5.
inline constexpr channel_latent_format sdxl_playground_2_5_latent_format{
    "SDXL_Playground_2_5", 0.5f, {-1.6574f, 1.886f, -1.383f, 2.5155f},
    {8.4927f, 5.9022f, 6.5498f, 5.2299f}};

} // namespace patchbay
