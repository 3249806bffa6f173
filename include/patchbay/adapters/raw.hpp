// patchbay adapters: raw buffers and ggml-style tensors as views, without copying.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "patchbay/core/view.hpp"

namespace patchbay {

/// A contiguous C-order view over a raw buffer: from_raw<4>(ptr, {N, C, H, W}).
template <std::size_t R, class T>
view<T, R> from_raw(T* data, const std::array<index_t, R>& shape) {
    const view<T, R> v(data, shape);
    require_nonempty(v, "from_raw", "data");
    return v;
}

/// A strided view over a raw buffer; strides count elements, dims in (N, C, H, W) order.
template <std::size_t R, class T>
view<T, R> from_raw(T* data, const std::array<index_t, R>& shape,
                    const std::array<index_t, R>& strides) {
    const view<T, R> v(data, shape, strides);
    require_nonempty(v, "from_raw", "data");
    return v;
}

/// A ggml-style tensor: `ne[i]` extents and `nb[i]` byte strides, innermost dim first
/// (ne[0] is W). The view has the dims reversed, (ne[R-1], ..., ne[0]) = (N, C, H, W), and the
/// byte strides converted to elements; a byte stride that is not a multiple of sizeof(T) is an
/// error (ggml's quantised types are not float views).
template <std::size_t R, class T>
view<T, R> from_ggml(T* data, const std::int64_t* ne, const std::size_t* nb) {
    std::array<index_t, R> shape{}, strides{};
    for (std::size_t i = 0; i < R; ++i) {
        if (nb[i] % sizeof(T) != 0)
            fail("from_ggml", "byte stride nb[" + std::to_string(i) + "] = " + std::to_string(nb[i]) +
                                  " is not a multiple of the element size " + std::to_string(sizeof(T)));
        shape[R - 1 - i] = static_cast<index_t>(ne[i]);
        strides[R - 1 - i] = static_cast<index_t>(nb[i] / sizeof(T));
    }
    const view<T, R> v(data, shape, strides);
    require_nonempty(v, "from_ggml", "data");
    return v;
}

} // namespace patchbay
