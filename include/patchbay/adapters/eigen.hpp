// patchbay adapters: Eigen::Tensor / Eigen::TensorMap as views, without copying.
//
// The view keeps Eigen's logical index order: view(i0, i1, ...) is tensor(i0, i1, ...). A
// RowMajor tensor gives a contiguous view; a ColMajor tensor gives a strided view (first index
// fastest) that every kernel handles on its strided path. Nothing is transposed silently.
// Eigen::half and Eigen::bfloat16 tensors give f16 / bf16 storage views (core/half.hpp).
#pragma once

#include <array>
#include <cstddef>

#include <unsupported/Eigen/CXX11/Tensor>

#include "patchbay/core/view.hpp"

namespace patchbay {

namespace detail {
/// The view element for an Eigen scalar: Eigen::half and Eigen::bfloat16 are patchbay's f16 and
/// bf16 storage (same 16 bits), float and double themselves; constness kept.
template <class S>
struct eigen_element {
    using type = S;
};
template <class S>
struct eigen_element<const S> {
    using type = const typename eigen_element<S>::type;
};
template <>
struct eigen_element<Eigen::half> {
    using type = f16;
};
template <>
struct eigen_element<Eigen::bfloat16> {
    using type = bf16;
};
template <class S>
using eigen_element_t = typename eigen_element<S>::type;
static_assert(sizeof(Eigen::half) == sizeof(f16) && sizeof(Eigen::bfloat16) == sizeof(bf16));

template <std::size_t R, class Dims>
std::array<index_t, R> eigen_strides(const Dims& dims, bool row_major) {
    std::array<index_t, R> s{};
    index_t acc = 1;
    if (row_major) {
        for (std::size_t r = R; r-- > 0;) {
            s[r] = acc;
            acc *= static_cast<index_t>(dims[r]);
        }
    } else {
        for (std::size_t r = 0; r < R; ++r) {
            s[r] = acc;
            acc *= static_cast<index_t>(dims[r]);
        }
    }
    return s;
}
} // namespace detail

/// View of an Eigen::TensorMap (RowMajor: contiguous; ColMajor: strided, same logical order).
template <class Scalar, int R, int Options, class IndexType, int MapOptions>
auto from_eigen(const Eigen::TensorMap<Eigen::Tensor<Scalar, R, Options, IndexType>, MapOptions>& map) {
    constexpr std::size_t rank = static_cast<std::size_t>(R);
    const bool row_major = (Options & Eigen::RowMajor) != 0;
    std::array<index_t, rank> shape{};
    for (std::size_t r = 0; r < rank; ++r)
        shape[r] = static_cast<index_t>(map.dimension(static_cast<Eigen::Index>(r)));
    using E = detail::eigen_element_t<Scalar>;
    const view<E, rank> v(reinterpret_cast<E*>(map.data()), shape,
                          detail::eigen_strides<rank>(map.dimensions(), row_major));
    require_nonempty(v, "from_eigen", "tensor");
    return v;
}

/// View of an owning Eigen::Tensor (mutable when the tensor is, const otherwise).
template <class Scalar, int R, int Options, class IndexType>
auto from_eigen(Eigen::Tensor<Scalar, R, Options, IndexType>& t) {
    return from_eigen(Eigen::TensorMap<Eigen::Tensor<Scalar, R, Options, IndexType>>(t.data(), t.dimensions()));
}
template <class Scalar, int R, int Options, class IndexType>
auto from_eigen(const Eigen::Tensor<Scalar, R, Options, IndexType>& t) {
    using map_t = Eigen::TensorMap<Eigen::Tensor<const Scalar, R, Options, IndexType>>;
    constexpr std::size_t rank = static_cast<std::size_t>(R);
    const map_t m(t.data(), t.dimensions());
    std::array<index_t, rank> shape{};
    for (std::size_t r = 0; r < rank; ++r)
        shape[r] = static_cast<index_t>(m.dimension(static_cast<Eigen::Index>(r)));
    using E = detail::eigen_element_t<const Scalar>;
    const view<E, rank> v(reinterpret_cast<E*>(t.data()), shape,
                          detail::eigen_strides<rank>(t.dimensions(), (Options & Eigen::RowMajor) != 0));
    require_nonempty(v, "from_eigen", "tensor");
    return v;
}

} // namespace patchbay
