// patchbay: fused elementwise kernels over same-shaped strided views.
//
// The operation is one generic callable used for both a SIMD batch and a scalar, so the
// contiguous SIMD path and the strided scalar path compute the same expression.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "patchbay/core/config.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/rows.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::kernels {

namespace elementwise_detail {

/// One row of transform (Reversed: last element first). The functor and the pointers arrive
/// by value: as locals the compiler keeps them in registers, while through references it must
/// reload them after every float store (the store might have changed them).
template <class T, bool Reversed, class F, std::size_t M, std::size_t... I>
PATCHBAY_ALWAYS_INLINE void transform_row(F f, T* out, index_t out_stride, std::array<const T*, M> in,
                                          std::array<index_t, M> in_stride, index_t len,
                                          std::index_sequence<I...>) {
    auto one = [&](index_t i) { out[i * out_stride] = T(f(in[I][i * in_stride[I]]...)); };
    if constexpr (simd::enabled) {
        if (out_stride == 1 && ((in_stride[I] == 1) && ...)) {
            using B = simd::batch<T>;
            constexpr index_t W = static_cast<index_t>(B::size);
            auto batch = [&](index_t i) { simd::store(out + i, B(f(B::load_unaligned(in[I] + i)...))); };
            const index_t full = len - len % W;
            if constexpr (Reversed) {
                for (index_t i = len; i-- > full;) one(i);
                for (index_t i = full; i > 0;) batch(i -= W);
            } else {
                for (index_t i = 0; i < full; i += W) batch(i);
                for (index_t i = full; i < len; ++i) one(i);
            }
            return;
        }
    }
    if constexpr (Reversed)
        for (index_t i = len; i-- > 0;) one(i);
    else
        for (index_t i = 0; i < len; ++i) one(i);
}

template <bool Reversed, class T, std::size_t R, class F, class... In>
void transform_in_order(view<T, R> out, F& f, const view<In, R>&... in) {
    // (inputs may be views of T or of const T)
    static_assert((std::is_same_v<std::remove_const_t<In>, T> && ...),
                  "transform: inputs and output must share the element type.");
    constexpr std::size_t M = sizeof...(In);
    detail::for_each_output_row<T, R, M, Reversed>(
        out.data_handle(), out.extents(), {out.strides(), in.strides()...}, {in.data_handle()...},
        [&](T* o, index_t so, const std::array<const T*, M>& p, const std::array<index_t, M>& ps, index_t len) {
            transform_row<T, Reversed>(f, o, so, p, ps, len, std::make_index_sequence<M>{});
        });
}

} // namespace elementwise_detail

/// out[i] = f(in0[i], in1[i], ...) for every element. `out` may be exactly one of the inputs
/// (each element is read before it is written); partial overlap is the caller's error.
template <class T, std::size_t R, class F, class... In>
void transform(view<T, R> out, F&& f, const view<In, R>&... in) {
    elementwise_detail::transform_in_order<false>(out, f, in...);
}

/// transform visiting the elements last to first (same results, bit for bit). The second pass
/// of a two-pass patch uses it: the first pass read the inputs front to back, so their ends
/// are still in cache and a backward pass starts on them instead of on the evicted fronts.
template <class T, std::size_t R, class F, class... In>
void transform_backward(view<T, R> out, F&& f, const view<In, R>&... in) {
    elementwise_detail::transform_in_order<true>(out, f, in...);
}

/// Copy any strided view into another of the same shape.
template <class T, std::size_t R>
void copy(std::type_identity_t<view<const T, R>> src, view<T, R> dst) {
    transform(dst, [](auto a) { return a; }, src);
}

/// Fill a view with a value.
template <class T, std::size_t R>
void fill(view<T, R> dst, T value) {
    const std::array<std::array<index_t, R>, 1> strides{dst.strides()};
    detail::for_each_row<R, 1>(dst.extents(), strides,
                               [&](const std::array<index_t, 1>& off, index_t len,
                                   const std::array<index_t, 1>& st) {
                                   T* const p = dst.data_handle() + off[0];
                                   const T v = value; // a local: not reloaded after each store
                                   const index_t s = st[0];
                                   for (index_t i = 0; i < len; ++i) p[i * s] = v;
                               });
}

/// Classifier-free guidance: out = uncond + scale * (cond - uncond), ComfyUI's default combine.
template <class T, std::size_t R>
void cfg_combine(std::type_identity_t<view<const T, R>> cond,
                 std::type_identity_t<view<const T, R>> uncond, double cond_scale, view<T, R> out) {
    const T s = static_cast<T>(cond_scale);
    transform(out, [s](auto c, auto u) { return u + (c - u) * s; }, cond, uncond);
}

/// result += (a - b) * scale, in place: the guidance term PAG (a = cond, b = perturbed) and SAG
/// (a = degraded, b = the model on it) add to the cfg result.
template <class T, std::size_t R>
void add_scaled_difference(std::type_identity_t<view<const T, R>> a, std::type_identity_t<view<const T, R>> b,
                           double scale, view<T, R> result) {
    const T s = static_cast<T>(scale);
    transform(result, [s](auto r, auto x, auto y) { return r + (x - y) * s; }, view<const T, R>(result), a, b);
}

} // namespace patchbay::kernels
