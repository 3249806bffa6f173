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

/// Walks the first `dims` dims of a joint layout in C order, keeping each view's element
/// offset of the current position.
template <std::size_t R, std::size_t N>
struct layout_walker {
    const joint_layout<R, N>* layout;
    std::size_t dims;
    std::array<index_t, R> idx{};
    std::array<index_t, N> off{};

    layout_walker(const joint_layout<R, N>& L, std::size_t walked_dims) noexcept
        : layout(&L), dims(walked_dims) {}

    /// Moves to flat position `pos` of the walked dims.
    void seek(index_t pos) noexcept {
        off = {};
        for (std::size_t d = dims; d-- > 0;) {
            const index_t e = layout->extent[d];
            idx[d] = pos % e;
            pos /= e;
            for (std::size_t v = 0; v < N; ++v) off[v] += idx[d] * layout->stride[v][d];
        }
    }

    /// Moves to the next position (wrapping to the first after the last).
    void next() noexcept {
        for (std::size_t d = dims; d-- > 0;) {
            if (++idx[d] < layout->extent[d]) {
                for (std::size_t v = 0; v < N; ++v) off[v] += layout->stride[v][d];
                return;
            }
            for (std::size_t v = 0; v < N; ++v) off[v] -= (layout->extent[d] - 1) * layout->stride[v][d];
            idx[d] = 0;
        }
    }

    /// Moves to the previous position (wrapping to the last before the first).
    void prev() noexcept {
        for (std::size_t d = dims; d-- > 0;) {
            if (idx[d] > 0) {
                --idx[d];
                for (std::size_t v = 0; v < N; ++v) off[v] -= layout->stride[v][d];
                return;
            }
            idx[d] = layout->extent[d] - 1;
            for (std::size_t v = 0; v < N; ++v) off[v] += idx[d] * layout->stride[v][d];
        }
    }
};

/// Calls f(offsets, len, inner_strides) for every row; offsets are per view, in elements.
/// Reversed: the last row first.
template <std::size_t R, std::size_t N, bool Reversed = false, class F>
void for_each_row(const std::array<index_t, R>& extents,
                  const std::array<std::array<index_t, R>, N>& strides, F&& f) {
    const auto L = coalesce<R, N>(extents, strides);
    const std::size_t inner = L.dims - 1;
    const index_t len = L.extent[inner];
    if (len == 0) return;
    std::array<index_t, N> inner_stride{};
    for (std::size_t v = 0; v < N; ++v) inner_stride[v] = L.stride[v][inner];
    index_t rows = 1;
    if constexpr (R > 1) // (with one dim there is one row; g++ 12 at -march=x86-64-v4 mistakes
                         // the empty loop for a read of uninitialised data)
        for (std::size_t d = 0; d < inner; ++d) rows *= L.extent[d];
    if (rows == 0) return;
    layout_walker<R, N> walk(L, inner); // the outer dims 0 .. inner-1
    if constexpr (Reversed) {
        walk.seek(rows - 1);
        for (index_t row = 0; row < rows; ++row) {
            f(walk.off, len, inner_stride);
            walk.prev();
        }
    } else {
        for (index_t row = 0; row < rows; ++row) {
            f(walk.off, len, inner_stride);
            walk.next();
        }
    }
}

/// for_each_row over an output and M inputs, with each view's row start resolved: calls
/// f(out_row, out_stride, in_rows, in_strides, len) for every row (Reversed: the last first).
template <class T, std::size_t R, std::size_t M, bool Reversed = false, class F>
void for_each_output_row(T* out, const std::array<index_t, R>& extents,
                         const std::array<std::array<index_t, R>, M + 1>& strides,
                         const std::array<const T*, M>& src, F&& f) {
    for_each_row<R, M + 1, Reversed>(
        extents, strides,
        [&](const std::array<index_t, M + 1>& off, index_t len, const std::array<index_t, M + 1>& st) {
            std::array<const T*, M> p{};
            std::array<index_t, M> ps{};
            for (std::size_t v = 0; v < M; ++v) {
                p[v] = src[v] + off[v + 1];
                ps[v] = st[v + 1];
            }
            f(out + off[0], st[0], p, ps, len);
        });
}

} // namespace patchbay::detail
