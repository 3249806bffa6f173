// patchbay: fused elementwise kernels over same-shaped strided views.
//
// The operation is one generic callable used for both a SIMD batch and a scalar, so the
// contiguous SIMD path and the strided scalar path compute the same expression.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/rows.hpp"
#include "patchbay/kernels/detail/simd.hpp"

namespace patchbay::kernels {

/// out[i] = f(in0[i], in1[i], ...) for every element. `out` may be exactly one of the inputs
/// (each element is read before it is written); partial overlap is the caller's error.
template <class T, std::size_t R, class F, class... In>
void transform(view<T, R> out, F&& f, const view<In, R>&... in) {
    // (inputs may be views of T or of const T)
    static_assert((std::is_same_v<std::remove_const_t<In>, T> && ...),
                  "transform: inputs and output must share the element type.");
    constexpr std::size_t N = 1 + sizeof...(In);
    const std::array<std::array<index_t, R>, N> strides{out.strides(), in.strides()...};
    T* const o = out.data_handle();
    const std::array<const T*, N - 1> src{in.data_handle()...};
    detail::for_each_row<R, N>(
        out.extents(), strides,
        [&](const std::array<index_t, N>& off, index_t len, const std::array<index_t, N>& st) {
            T* op = o + off[0];
            bool unit = st[0] == 1;
            for (std::size_t v = 1; v < N; ++v) unit = unit && st[v] == 1;
            index_t i = 0;
            if constexpr (simd::enabled) {
                if (unit) {
                    using B = simd::batch<T>;
                    constexpr index_t W = static_cast<index_t>(B::size);
                    for (; i + W <= len; i += W) {
                        std::size_t k = 1;
                        auto load = [&](std::size_t) {
                            const T* p = src[k - 1] + off[k] + i;
                            ++k;
                            return B::load_unaligned(p);
                        };
                        // inputs are loaded left to right (braced init order is guaranteed)
                        const std::array<B, N - 1> vals{load(static_cast<std::size_t>(sizeof(In)))...};
                        B r = std::apply([&](const auto&... a) { return B(f(a...)); }, vals);
                        r.store_unaligned(op + i);
                    }
                }
            }
            for (; i < len; ++i) {
                std::size_t k = 1;
                auto at = [&](std::size_t) {
                    const T v = src[k - 1][off[k] + i * st[k]];
                    ++k;
                    return v;
                };
                const std::array<T, N - 1> vals{at(static_cast<std::size_t>(sizeof(In)))...};
                op[i * st[0]] = std::apply([&](const auto&... a) { return T(f(a...)); }, vals);
            }
        });
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
                                   T* p = dst.data_handle() + off[0];
                                   for (index_t i = 0; i < len; ++i) p[i * st[0]] = value;
                               });
}

/// Classifier-free guidance: out = uncond + scale * (cond - uncond), ComfyUI's default combine.
template <class T, std::size_t R>
void cfg_combine(std::type_identity_t<view<const T, R>> cond,
                 std::type_identity_t<view<const T, R>> uncond, double cond_scale, view<T, R> out) {
    const T s = static_cast<T>(cond_scale);
    transform(out, [s](auto c, auto u) { return u + (c - u) * s; }, cond, uncond);
}

} // namespace patchbay::kernels
