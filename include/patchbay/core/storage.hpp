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
#include <string_view>

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

/// Arena keys of the half-precision results that outlive a staged hook call (a resized h): one
/// per prompt (pass_kind) for the input-block and for the output-block hooks, after the
/// stager's keys, so a resized h stays valid while the hooks of another prompt or block run.
inline constexpr std::size_t input_block_result_key = workspace::storage_keys + 8;
inline constexpr std::size_t output_block_result_key = workspace::storage_keys + 12;

/// The storage-type result of a staged hook that returned r for its widened input f: h itself,
/// with f rounded back into it, when r is f (the hook worked in place); otherwise a rounded copy
/// of r in `arena` under `key` (h left as given). A hook that returns a new tensor needs the
/// run's arena to hold it.
template <class H, std::size_t R>
view<H, R> narrow_result(view<const float, R> r, view<const float, R> f, view<H, R> h, workspace* arena,
                         std::size_t key, std::string_view where) {
    if (r.data_handle() == f.data_handle() && r.extents() == f.extents() && r.strides() == f.strides()) {
        kernels::narrow<H, R>(f, h);
        return h;
    }
    PATCHBAY_REQUIRE(arena != nullptr, where,
                     "the hook returns a new h (a resize) and half-precision storage holds it in the run's arena: "
                     "pass one in block_site::scratch");
    index_t n = 1;
    for (index_t e : r.extents()) n *= e;
    const view<H, R> out(arena->buffer<H>(key, static_cast<std::size_t>(n)).data(), r.extents());
    kernels::narrow<H, R>(r, out);
    return out;
}

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
