// patchbay: half-precision storage at the entry points. An engine that keeps its tensors in
// f16 or bf16 hands them to the checked hook calls (apply_pre_cfg, ...) and to the chains'
// combine() as views of those types; the dispatcher stages them: each input is widened to a
// float32 copy in the run's arena (exact), the float32 path runs unchanged (so the numbers are
// the ones that match ComfyUI, and nothing accumulates in half precision), and each output is
// rounded once to the storage type, to nearest even. The copies live under the arena's
// storage keys, so after the first step nothing allocates.
#pragma once

#include <array>
#include <cstddef>

#include "patchbay/core/error.hpp"
#include "patchbay/core/half.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/convert.hpp"

namespace patchbay::detail {

/// Hands out float32 buffers from the arena's storage keys, one key each.
class stager {
public:
    explicit stager(workspace& ws) noexcept : ws_(ws) {}

    /// An uninitialised contiguous float32 tensor of the given shape.
    template <std::size_t R>
    view<float, R> make(const std::array<index_t, R>& extents) {
        PATCHBAY_REQUIRE(next_ < workspace::storage_keys + 8, "half-precision staging", "too many staged tensors");
        index_t n = 1;
        for (index_t e : extents) n *= e;
        float* p = ws_.buffer<float>(next_++, static_cast<std::size_t>(n)).data();
        return view<float, R>(p, extents);
    }
    /// A float32 copy of v (exact); an empty view stays empty.
    template <class H, std::size_t R>
    view<float, R> widen(view<const H, R> v) {
        if (v.data_handle() == nullptr) return {};
        const view<float, R> f = make<R>(v.extents());
        kernels::widen<H, R>(v, f);
        return f;
    }

private:
    workspace& ws_;
    std::size_t next_ = workspace::storage_keys;
};

/// The float32 guidance inputs for half-storage ones: x, sigma and the third prediction widened,
/// the rest as given; scratch is the staging arena.
template <class H, std::size_t R>
guidance_inputs<float, R> widen_inputs(stager& s, workspace& ws, const guidance_inputs<H, R>& in) {
    guidance_inputs<float, R> g;
    g.x = s.widen<H, R>(in.x);
    g.sigma = s.widen<H, 1>(in.sigma);
    g.cond_scale = in.cond_scale;
    g.uncond_is_none = in.uncond_is_none;
    g.prediction = in.prediction;
    g.scratch = &ws;
    g.sampling = in.sampling;
    g.prediction_count = in.prediction_count;
    g.extra_denoised = s.widen<H, R>(in.extra_denoised);
    g.in_multi_prompt = in.in_multi_prompt;
    g.disable_cfg1_optimization = in.disable_cfg1_optimization;
    return g;
}

} // namespace patchbay::detail
