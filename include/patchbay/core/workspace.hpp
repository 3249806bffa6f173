// patchbay: scratch buffers owned by one sampling run.
//
// A guider needs a few latent-sized buffers per step (the cond and uncond predictions, the
// inpainting-blended input, the mask). They live in the run's state, grow on the first step
// and are reused afterwards, so a denoise call allocates nothing once a run has started.
// Copying a workspace copies its buffers (a cloned run owns its own scratch).
#pragma once

#include <array>
#include <cstddef>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"

namespace patchbay {

class workspace {
public:
    static constexpr std::size_t slots = 8;

    /// A contiguous buffer of the given shape in slot `slot`. Reallocates only when the shape
    /// changes; the contents are whatever the slot held before (callers overwrite them).
    template <class T, std::size_t R>
    view<T, R> get(std::size_t slot, const std::array<index_t, R>& extents) {
        PATCHBAY_REQUIRE(slot < slots, "workspace::get", "slot index out of range");
        tensor<T>& t = store<T>()[slot];
        if (!has_shape(t, extents))
            t.resize(std::vector<index_t>(extents.begin(), extents.end()));
        return t.template as<R>();
    }

    /// Free every buffer (the next step allocates again).
    void release() {
        for (auto& t : f_) t = tensor<float>();
        for (auto& t : d_) t = tensor<double>();
    }

private:
    template <class T>
    std::array<tensor<T>, slots>& store() noexcept {
        if constexpr (std::is_same_v<T, float>) return f_;
        else return d_;
    }
    template <class T, std::size_t R>
    static bool has_shape(const tensor<T>& t, const std::array<index_t, R>& extents) noexcept {
        if (t.rank() != R) return false;
        for (std::size_t r = 0; r < R; ++r)
            if (t.extent(r) != extents[r]) return false;
        return true;
    }

    std::array<tensor<float>, slots> f_;
    std::array<tensor<double>, slots> d_;
};

} // namespace patchbay
