// patchbay: owning, 64-byte aligned, contiguous tensor for results, workspaces and tests.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <vector>

#include "patchbay/core/view.hpp"

namespace patchbay {

namespace detail {
struct aligned_free {
    void operator()(void* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
};
} // namespace detail

/// Owning C-order tensor of float or double with a run-time rank (1 to 5).
template <class T>
class tensor {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "patchbay::tensor holds float or double elements.");

public:
    using value_type = T;

    tensor() = default;
    explicit tensor(std::vector<index_t> shape) { resize(std::move(shape)); }
    tensor(std::initializer_list<index_t> shape) : tensor(std::vector<index_t>(shape)) {}

    /// Copy of any view's elements (strided or not) into a new contiguous tensor.
    template <class U, std::size_t R>
    static tensor copy_of(const view<U, R>& v) {
        tensor t(std::vector<index_t>(v.extents().begin(), v.extents().end()));
        copy_into(v, t.template as<R>());
        return t;
    }

    // (a default-constructed tensor has no shape; copying one gives another empty tensor)
    tensor(const tensor& o) {
        if (o.shape_.empty()) return;
        resize(o.shape_);
        if (size_) std::memcpy(data_.get(), o.data_.get(), bytes());
    }
    tensor& operator=(const tensor& o) {
        if (this != &o) {
            if (o.shape_.empty()) { shape_.clear(); size_ = 0; return *this; }
            if (o.size_ != capacity_) resize(o.shape_);
            else shape_ = o.shape_, size_ = o.size_;
            if (size_) std::memcpy(data_.get(), o.data_.get(), bytes());
        }
        return *this;
    }
    tensor(tensor&&) noexcept = default;
    tensor& operator=(tensor&&) noexcept = default;

    /// Reshape, reallocating only when the element count grows past the capacity.
    /// New elements are zero; kept storage is not cleared.
    void resize(std::vector<index_t> shape) {
        PATCHBAY_REQUIRE(!shape.empty() && shape.size() <= 5, "tensor",
                "rank must be 1 to 5, got " + std::to_string(shape.size()));
        index_t n = 1;
        for (auto e : shape) {
            PATCHBAY_REQUIRE(e >= 0, "tensor", "extents must be non-negative");
            n *= e;
        }
        shape_ = std::move(shape);
        size_ = n;
        if (n > capacity_) {
            auto* p = static_cast<T*>(::operator new[](static_cast<std::size_t>(n) * sizeof(T),
                                                       std::align_val_t{64}));
            std::memset(static_cast<void*>(p), 0, static_cast<std::size_t>(n) * sizeof(T));
            data_.reset(p);
            capacity_ = n;
        }
    }

    /// Resize to the shape of a view.
    template <class U, std::size_t R>
    void resize_like(const view<U, R>& v) {
        resize(std::vector<index_t>(v.extents().begin(), v.extents().end()));
    }

    void fill(T value) noexcept { std::fill_n(data_.get(), size_, value); }

    T* data() noexcept { return data_.get(); }
    const T* data() const noexcept { return data_.get(); }
    index_t size() const noexcept { return size_; }
    std::size_t rank() const noexcept { return shape_.size(); }
    const std::vector<index_t>& shape() const noexcept { return shape_; }
    index_t extent(std::size_t r) const noexcept { return shape_[r]; }
    T& operator[](index_t i) noexcept { return data_.get()[i]; }
    const T& operator[](index_t i) const noexcept { return data_.get()[i]; }

    /// View of the whole tensor with a static rank (must equal rank()).
    template <std::size_t R>
    view<T, R> as() {
        return view<T, R>(data(), extents_for<R>());
    }
    template <std::size_t R>
    view<const T, R> as() const {
        return view<const T, R>(data(), extents_for<R>());
    }

private:
    template <std::size_t R>
    std::array<index_t, R> extents_for() const {
        if (shape_.size() != R) // (message built only on failure: as<R>() must not allocate)
            fail("tensor", "view of rank " + std::to_string(R) + " requested from a tensor of rank " +
                               std::to_string(shape_.size()));
        std::array<index_t, R> e{};
        std::copy(shape_.begin(), shape_.end(), e.begin());
        return e;
    }
    std::size_t bytes() const noexcept { return static_cast<std::size_t>(size_) * sizeof(T); }

    template <class U, std::size_t R>
    static void copy_into(const view<U, R>& src, view<T, R> dst) {
        std::array<index_t, R> idx{};
        const index_t n = src.size();
        for (index_t k = 0; k < n; ++k) {
            index_t so = 0, dof = 0;
            for (std::size_t r = 0; r < R; ++r) {
                so += idx[r] * src.stride(r);
                dof += idx[r] * dst.stride(r);
            }
            dst.data_handle()[dof] = static_cast<T>(src.data_handle()[so]);
            for (std::size_t r = R; r-- > 0;) {
                if (++idx[r] < src.extent(r)) break;
                idx[r] = 0;
            }
        }
    }

    std::vector<index_t> shape_;
    index_t size_ = 0;
    index_t capacity_ = 0;
    std::unique_ptr<T[], detail::aligned_free> data_;
};

} // namespace patchbay
