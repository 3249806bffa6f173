// patchbay adapters: at::Tensor (libtorch) as views, without copying.
//
// The tensor must live on the CPU, hold T (float, double, or f16 / bf16 for at::kHalf /
// at::kBFloat16 storage) and have rank R; any strides
// (including transposes) are kept. Opt-in: the only patchbay header that includes libtorch.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>

#include <ATen/ATen.h>

#include "patchbay/core/view.hpp"

namespace patchbay {

/// from_torch<float, 4>(t): a view of t's elements (mutable when T is not const).
template <class T, std::size_t R>
view<T, R> from_torch(const at::Tensor& t) {
    using value_t = std::remove_const_t<T>;
    if (!t.defined()) fail("from_torch", "tensor is undefined");
    if (!t.device().is_cpu()) fail("from_torch", "tensor must be on the CPU, got " + t.device().str());
    const auto want = std::is_same_v<value_t, float>  ? at::kFloat
                      : std::is_same_v<value_t, double> ? at::kDouble
                      : std::is_same_v<value_t, f16>    ? at::kHalf
                                                        : at::kBFloat16;
    if (t.scalar_type() != want)
        fail("from_torch", std::string("tensor dtype must be ") + std::string(c10::toString(want)) + ", got " +
                               std::string(c10::toString(t.scalar_type())));
    if (t.dim() != static_cast<int64_t>(R))
        fail("from_torch", "expected a rank-" + std::to_string(R) + " tensor, got rank " + std::to_string(t.dim()));
    std::array<index_t, R> shape{}, strides{};
    for (std::size_t r = 0; r < R; ++r) {
        shape[r] = static_cast<index_t>(t.size(static_cast<int64_t>(r)));
        strides[r] = static_cast<index_t>(t.stride(static_cast<int64_t>(r)));
    }
    // (f16 / bf16 are the 16 bits of at::Half / at::BFloat16: the raw pointer is reinterpreted)
    const view<T, R> v(static_cast<T*>(t.data_ptr()), shape, strides);
    require_nonempty(v, "from_torch", "tensor");
    return v;
}

} // namespace patchbay
