// patchbay: the non-owning strided view every kernel and patch works on.
//
// view<T, Rank> follows std::mdspan's names (extent(r), stride(r), data_handle()) without
// needing C++23. Strides count elements, not bytes. Latents are rank 4 (N,C,H,W) or rank 5
// (N,C,T,H,W); DiT token layouts map to (N,L,D,1).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "patchbay/core/error.hpp"
#include "patchbay/core/half.hpp"

namespace patchbay {

using index_t = std::ptrdiff_t;

template <class T, std::size_t Rank>
class view {
    static_assert(Rank >= 1 && Rank <= 5, "patchbay::view supports ranks 1 to 5.");
    static_assert(std::is_same_v<std::remove_const_t<T>, float> ||
                      std::is_same_v<std::remove_const_t<T>, double> || is_half_v<T>,
                  "patchbay::view holds float or double elements, or f16 / bf16 storage.");

public:
    using element_type = T;
    using value_type = std::remove_const_t<T>;
    using extents_type = std::array<index_t, Rank>;
    static constexpr std::size_t rank() noexcept { return Rank; }

    constexpr view() noexcept = default;

    /// Contiguous row-major (C order) view.
    constexpr view(T* data, const extents_type& extents) noexcept
        : data_(data), extents_(extents), strides_(row_major_strides(extents)) {}

    /// Strided view; strides in elements.
    constexpr view(T* data, const extents_type& extents, const extents_type& strides) noexcept
        : data_(data), extents_(extents), strides_(strides) {}

    /// A view of mutable elements converts to a view of const elements.
    template <class U, std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>, int> = 0>
    constexpr view(const view<U, Rank>& other) noexcept
        : data_(other.data_handle()), extents_(other.extents()), strides_(other.strides()) {}

    constexpr T* data_handle() const noexcept { return data_; }
    constexpr index_t extent(std::size_t r) const noexcept { return extents_[r]; }
    constexpr index_t stride(std::size_t r) const noexcept { return strides_[r]; }
    constexpr const extents_type& extents() const noexcept { return extents_; }
    constexpr const extents_type& strides() const noexcept { return strides_; }

    constexpr index_t size() const noexcept {
        index_t n = 1;
        for (auto e : extents_) n *= e;
        return n;
    }
    constexpr bool empty() const noexcept { return size() == 0; }

    /// True when the elements are packed in C order (so a flat pointer walk visits them all).
    constexpr bool is_contiguous() const noexcept {
        index_t expect = 1;
        for (std::size_t r = Rank; r-- > 0;) {
            if (extents_[r] != 1 && strides_[r] != expect) return false;
            expect *= extents_[r];
        }
        return true;
    }

    template <class... I>
    constexpr T& operator()(I... idx) const noexcept {
        static_assert(sizeof...(I) == Rank, "view::operator() takes one index per dimension.");
        const index_t ids[] = {static_cast<index_t>(idx)...};
        index_t off = 0;
        for (std::size_t r = 0; r < Rank; ++r) off += ids[r] * strides_[r];
        return data_[off];
    }

    /// Batch items [first, first + count) as a view of the same rank.
    constexpr view batch_slice(index_t first, index_t count) const noexcept {
        view v = *this;
        v.data_ = data_ + first * strides_[0];
        v.extents_[0] = count;
        return v;
    }

    /// Channels [first, first + count) as a view of the same rank.
    constexpr view channel_slice(index_t first, index_t count) const noexcept {
        static_assert(Rank >= 2, "channel_slice needs a channel dimension.");
        view v = *this;
        v.data_ = data_ + first * strides_[1];
        v.extents_[1] = count;
        return v;
    }

    static constexpr extents_type row_major_strides(const extents_type& e) noexcept {
        extents_type s{};
        index_t acc = 1;
        for (std::size_t r = Rank; r-- > 0;) {
            s[r] = acc;
            acc *= e[r];
        }
        return s;
    }

private:
    T* data_ = nullptr;
    extents_type extents_{};
    extents_type strides_{};
};

template <class T, std::size_t R>
using const_view = view<const T, R>;

// ----------------------------------------------------------------------------------------
// Shape helpers and checks. Each raises patchbay::error naming `where` and the argument.

template <std::size_t R>
std::string shape_string(const std::array<index_t, R>& e) {
    std::string s = "(";
    for (std::size_t r = 0; r < R; ++r) {
        if (r) s += ", ";
        s += std::to_string(e[r]);
    }
    return s + ")";
}

template <class T, std::size_t R>
std::string shape_string(const view<T, R>& v) {
    return shape_string(v.extents());
}

template <class A, class B, std::size_t R>
bool same_shape(const view<A, R>& a, const view<B, R>& b) noexcept {
    return a.extents() == b.extents();
}

/// Reject an empty view or a view with a null pointer.
template <class T, std::size_t R>
void require_nonempty(const view<T, R>& v, std::string_view where, std::string_view name) {
    if (v.empty() || v.data_handle() == nullptr)
        fail(where, std::string("tensor '") + std::string(name) + "' is empty, shape " +
                        shape_string(v));
    for (std::size_t r = 0; r < R; ++r)
        if (v.extent(r) < 0)
            fail(where, std::string("tensor '") + std::string(name) + "' has a negative extent");
}

/// Reject two views whose shapes differ.
template <class A, class B, std::size_t R>
void require_same_shape(const view<A, R>& a, const view<B, R>& b, std::string_view where,
                        std::string_view name_a, std::string_view name_b) {
    if (same_shape(a, b)) return;
    std::string m = "tensor '" + std::string(name_b) + "' has shape " + shape_string(b) +
                    " but must match '" + std::string(name_a) + "' " + shape_string(a);
    if (a.extent(0) != b.extent(0)) m += " (batch sizes differ)";
    fail(where, m);
}

/// Reject a per-batch-item vector (sigma) whose length is not the batch size.
template <class A, class T, std::size_t R>
void require_batch_vector(const view<A, 1>& vec, const view<T, R>& x, std::string_view where,
                          std::string_view name) {
    if (vec.extent(0) == x.extent(0) && vec.data_handle() != nullptr) return;
    fail(where, "tensor '" + std::string(name) + "' must hold one value per batch item (" +
                    std::to_string(x.extent(0)) + "), got " + std::to_string(vec.extent(0)));
}

/// Half-open byte range [lo, hi) a view may touch (for overlap checks).
template <class T, std::size_t R>
std::pair<const char*, const char*> byte_span(const view<T, R>& v) noexcept {
    if (v.empty()) return {nullptr, nullptr};
    index_t lo = 0, hi = 0;
    for (std::size_t r = 0; r < R; ++r) {
        const index_t reach = (v.extent(r) - 1) * v.stride(r);
        if (reach < 0) lo += reach; else hi += reach;
    }
    const auto* base = reinterpret_cast<const char*>(v.data_handle());
    return {base + lo * static_cast<index_t>(sizeof(T)),
            base + (hi + 1) * static_cast<index_t>(sizeof(T))};
}

/// True when the memory the two views may touch overlaps (conservative: by address range).
template <class A, class B, std::size_t RA, std::size_t RB>
bool may_overlap(const view<A, RA>& a, const view<B, RB>& b) noexcept {
    auto [alo, ahi] = byte_span(a);
    auto [blo, bhi] = byte_span(b);
    if (!alo || !blo) return false;
    return alo < bhi && blo < ahi;
}

/// True when two views address exactly the same elements in the same order.
template <class A, class B, std::size_t R>
bool same_elements(const view<A, R>& a, const view<B, R>& b) noexcept {
    return static_cast<const void*>(a.data_handle()) == static_cast<const void*>(b.data_handle()) &&
           a.extents() == b.extents() && a.strides() == b.strides();
}

/// Reject an output that overlaps an input, unless it is exactly the same view (elementwise
/// kernels read each element before writing it, so exact aliasing is allowed where documented).
template <class A, class B, std::size_t R>
void require_no_partial_overlap(const view<A, R>& out, const view<B, R>& in, std::string_view where,
                                std::string_view out_name, std::string_view in_name) {
    if (same_elements(out, in) || !may_overlap(out, in)) return;
    fail(where, "output '" + std::string(out_name) + "' overlaps input '" + std::string(in_name) +
                    "' (only exact aliasing is allowed)");
}

/// Reject an output whose own elements overlap each other (zero or aliasing strides).
template <class T, std::size_t R>
void require_writable_layout(const view<T, R>& out, std::string_view where, std::string_view name) {
    // A layout is non-self-overlapping if, sorted by |stride|, each stride exceeds the reach of
    // the smaller dims. Dims of extent 1 are ignored.
    std::array<index_t, R> s{}, e{};
    std::size_t n = 0;
    for (std::size_t r = 0; r < R; ++r)
        if (out.extent(r) > 1) {
            s[n] = out.stride(r) < 0 ? -out.stride(r) : out.stride(r);
            e[n] = out.extent(r);
            ++n;
        }
    for (std::size_t i = 1; i < n; ++i)
        for (std::size_t j = i; j > 0 && s[j - 1] > s[j]; --j) {
            std::swap(s[j - 1], s[j]);
            std::swap(e[j - 1], e[j]);
        }
    index_t reach = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (s[i] <= reach)
            fail(where, "output '" + std::string(name) +
                            "' has strides that make elements overlap; it cannot be written");
        reach += s[i] * (e[i] - 1);
    }
}

/// Make a contiguous view over raw memory.
template <class T, class... E>
constexpr auto make_view(T* data, E... extents) noexcept {
    return view<T, sizeof...(E)>(data, {static_cast<index_t>(extents)...});
}

} // namespace patchbay
