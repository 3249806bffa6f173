// patchbay: joint iteration over the rows of several same-shaped strided views.
//
// Dims are coalesced where every view allows it, so contiguous tensors become one long row
// (the SIMD path) and strided ones become the fewest rows with a fixed inner stride.
#pragma once

#include <array>
#include <cstddef>

#include "patchbay/core/view.hpp"

namespace patchbay::detail {

template <std::size_t R, std::size_t N>
struct joint_layout {
    std::size_t dims = 0;                          // dims kept after coalescing (>= 1)
    std::array<index_t, R> extent{};               // innermost last
    std::array<std::array<index_t, R>, N> stride{}; // per view
};

template <std::size_t R, std::size_t N>
joint_layout<R, N> coalesce(const std::array<index_t, R>& extents,
                            const std::array<std::array<index_t, R>, N>& strides) noexcept {
    joint_layout<R, N> L;
    // Drop dims of extent 1 (their stride is irrelevant), then merge neighbours.
    for (std::size_t r = 0; r < R; ++r) {
        if (extents[r] == 1) continue;
        const std::size_t d = L.dims;
        bool merge = d > 0;
        for (std::size_t v = 0; v < N && merge; ++v)
            merge = L.stride[v][d - 1] == strides[v][r] * extents[r];
        if (merge) {
            L.extent[d - 1] *= extents[r];
            for (std::size_t v = 0; v < N; ++v) L.stride[v][d - 1] = strides[v][r];
        } else {
            L.extent[d] = extents[r];
            for (std::size_t v = 0; v < N; ++v) L.stride[v][d] = strides[v][r];
            ++L.dims;
        }
    }
    if (L.dims == 0) { // every extent is 1 (or the view is empty)
        L.dims = 1;
        L.extent[0] = 1;
        for (std::size_t v = 0; v < N; ++v) L.stride[v][0] = 1;
        for (std::size_t r = 0; r < R; ++r)
            if (extents[r] == 0) L.extent[0] = 0;
    }
    return L;
}

/// Calls f(offsets, len, inner_strides) for every row; offsets are per view, in elements.
template <std::size_t R, std::size_t N, class F>
void for_each_row(const std::array<index_t, R>& extents,
                  const std::array<std::array<index_t, R>, N>& strides, F&& f) {
    const auto L = coalesce<R, N>(extents, strides);
    const std::size_t inner = L.dims - 1;
    const index_t len = L.extent[inner];
    if (len == 0) return;
    std::array<index_t, N> inner_stride{};
    for (std::size_t v = 0; v < N; ++v) inner_stride[v] = L.stride[v][inner];
    index_t rows = 1;
    for (std::size_t d = 0; d < inner; ++d) rows *= L.extent[d];
    if (rows == 0) return;
    std::array<index_t, R> idx{};
    std::array<index_t, N> off{};
    for (index_t row = 0; row < rows; ++row) {
        f(off, len, inner_stride);
        // advance the outer multi-index (dims 0 .. inner-1)
        for (std::size_t d = inner; d-- > 0;) {
            if (++idx[d] < L.extent[d]) {
                for (std::size_t v = 0; v < N; ++v) off[v] += L.stride[v][d];
                break;
            }
            for (std::size_t v = 0; v < N; ++v) off[v] -= (L.extent[d] - 1) * L.stride[v][d];
            idx[d] = 0;
        }
    }
}

} // namespace patchbay::detail
