// patchbay adapters: xtensor containers and xt::adapt results as views, without copying.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include <xtensor/xtensor.hpp>

#include "patchbay/core/view.hpp"

namespace patchbay {

/// View of an xtensor container with contiguous storage (xt::xtensor, xt::xarray,
/// xt::adapt(...)). xtensor's strides count elements; dims of extent 1 may carry stride 0.
/// R is the rank: from_xtensor<4>(t).
template <std::size_t R, class E>
auto from_xtensor(E&& e) {
    using raw_value = std::remove_reference_t<decltype(*e.data())>;
    if (e.dimension() != R)
        fail("from_xtensor", "expected a rank-" + std::to_string(R) + " tensor, got rank " +
                                 std::to_string(e.dimension()));
    std::array<index_t, R> shape{}, strides{};
    for (std::size_t r = 0; r < R; ++r) {
        shape[r] = static_cast<index_t>(e.shape()[r]);
        strides[r] = static_cast<index_t>(e.strides()[r]);
    }
    // data() points at the storage begin; data_offset() is where element (0, ..., 0) lives.
    const view<raw_value, R> v(e.data() + e.data_offset(), shape, strides);
    require_nonempty(v, "from_xtensor", "tensor");
    return v;
}

} // namespace patchbay
