// patchbay: 2-D complex FFT over the last two dims of a batch of planes (FreeU, FreSca).
//
// Any size: mixed radix 2/3/4/5/7/8 Stockham stages, Bluestein (chirp-z through a smooth length)
// for lengths with a prime factor above 7; sizes 1 work. The inverse is normalised by 1/(H*W)
// like numpy / torch ifft2. Storage is interleaved std::complex<float> or std::complex<double>,
// planes row-major and packed one after another.
//
// How it is fast: planes are processed in chunks of V (the SIMD width: 8 floats on AVX2). A
// chunk is transposed into "packs" (split real / imaginary SIMD vectors, one lane per plane), so
// every butterfly works on V planes at once with no shuffles and the same code serves rows and
// columns: the row pass strides by one pack, the column pass by W packs with W contiguous packs
// per twiddle. The inverse runs the forward transform on swapped real / imaginary parts
// (ifft(x) = swap(fft(swap(x))) / N), which costs nothing in split form.
//
// Threads: a plan is immutable after construction; several threads may run the same plan at
// once as long as each passes its own workspace (the overloads without one use a thread-local
// workspace). fft_plan_cache hands out plans built once per (H, W), guarded by a mutex.
//
// fftshift / ifftshift are index arithmetic, never copies: see natural_to_fftshift().
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <numbers>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "patchbay/core/config.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/detail/fft_impl.hpp"

namespace patchbay::kernels {

enum class fft_direction { forward, inverse };

// ----------------------------------------------------------------------------------------
// Shift helpers. numpy's fftshift rolls a length-n axis by n/2 (rounded down), so position s
// of the shifted array holds natural bin (s - n/2) mod n, i.e. signed frequency s - n/2;
// ifftshift is the inverse roll. A mask written in shifted coordinates (as FreeU and FreSca
// write theirs) is applied to a natural-order spectrum as
//     X[k] *= mask[natural_to_fftshift(k, n)]      // == ifftshift(fftshift(X) * mask)[k]
// so no shifted copy is ever made.

/// Position in fftshift(x) of natural bin k (0 <= k < n).
constexpr index_t natural_to_fftshift(index_t k, index_t n) noexcept { return (k + n / 2) % n; }
/// Natural bin stored at position s of fftshift(x) (0 <= s < n); inverse of the above.
constexpr index_t fftshift_to_natural(index_t s, index_t n) noexcept { return (s + n - n / 2) % n; }
/// Position in ifftshift(x) of natural index k: ifftshift rolls by -(n/2).
constexpr index_t natural_to_ifftshift(index_t k, index_t n) noexcept { return (k + n - n / 2) % n; }
/// Natural index stored at position s of ifftshift(x).
constexpr index_t ifftshift_to_natural(index_t s, index_t n) noexcept { return (s + n / 2) % n; }
/// Signed frequency of natural bin k: k for k < (n+1)/2, else k - n (numpy's fftfreq * n).
constexpr index_t fft_frequency(index_t k, index_t n) noexcept { return k < (n + 1) / 2 ? k : k - n; }

// ----------------------------------------------------------------------------------------

/// Per-call scratch memory (64-byte aligned). Grows to the largest request and is then reused,
/// so repeated calls do not allocate. Not thread-safe: one workspace per thread.
template <class T>
class basic_fft_workspace {
public:
    /// Pointer to at least n elements of T.
    T* get(std::size_t n) {
        if (n > capacity_) {
            data_.reset(static_cast<T*>(::operator new[](n * sizeof(T), std::align_val_t{64})));
            capacity_ = n;
        }
        return data_.get();
    }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    struct aligned_free {
        void operator()(T* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
    };
    std::unique_ptr<T, aligned_free> data_;
    std::size_t capacity_ = 0;
};
using fft_workspace = basic_fft_workspace<float>;

/// The workspace of the calling thread (used by the overloads that take none).
template <class T>
basic_fft_workspace<T>& thread_fft_workspace() {
    thread_local basic_fft_workspace<T> ws;
    return ws;
}

/// An immutable 2-D FFT plan for H x W planes. All members are const and thread-safe given a
/// workspace per thread.
template <class T>
class basic_fft_plan_2d {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "patchbay::fft works on float or double.");
    using impl = fft_detail::engine<T>;

public:
    using complex_type = std::complex<T>;

    basic_fft_plan_2d(index_t rows, index_t cols)
        : rows_(rows), cols_(cols), rowpass_(checked(cols, "W")), colpass_(checked(rows, "H")) {}

    index_t rows() const noexcept { return rows_; }
    index_t cols() const noexcept { return cols_; }

    /// Elements of T the workspace needs for one call (reserved automatically).
    std::size_t workspace_size() const noexcept {
        return impl::workspace_elems(rowpass_, colpass_, rows_, cols_);
    }

    /// In-place transform of `count` packed planes.
    void execute(complex_type* planes, index_t count, fft_direction dir,
                 basic_fft_workspace<T>& ws) const {
        execute(planes, planes, count, dir, ws);
    }
    void execute(complex_type* planes, index_t count, fft_direction dir) const {
        execute(planes, planes, count, dir, thread_fft_workspace<T>());
    }

    /// Out-of-place transform; `in` may equal `out` (exact aliasing), no other overlap.
    void execute(const complex_type* in, complex_type* out, index_t count, fft_direction dir,
                 basic_fft_workspace<T>& ws) const {
        check_count(count, in, out);
        if (count == 0) return;
        impl::run_complex(rowpass_, colpass_, rows_, cols_, reinterpret_cast<const T*>(in),
                          reinterpret_cast<T*>(out), count, dir == fft_direction::inverse,
                          ws.get(workspace_size()));
    }

    void forward(complex_type* planes, index_t count, basic_fft_workspace<T>& ws) const {
        execute(planes, count, fft_direction::forward, ws);
    }
    void inverse(complex_type* planes, index_t count, basic_fft_workspace<T>& ws) const {
        execute(planes, count, fft_direction::inverse, ws);
    }

    /// Forward transform of real planes given as a (count, H, W) view with any strides.
    void forward_real(view<const T, 3> in, complex_type* out, basic_fft_workspace<T>& ws) const {
        PATCHBAY_REQUIRE(in.extent(1) == rows_ && in.extent(2) == cols_, "fft2 (forward_real)",
                "input planes are " + std::to_string(in.extent(1)) + "x" +
                    std::to_string(in.extent(2)) + " but the plan is " + std::to_string(rows_) +
                    "x" + std::to_string(cols_));
        check_count(in.extent(0), in.data_handle(), out);
        if (in.extent(0) == 0) return;
        impl::run_real_in(rowpass_, colpass_, rows_, cols_, in, reinterpret_cast<T*>(out),
                          ws.get(workspace_size()));
    }
    /// Forward transform of `count` packed real planes.
    void forward_real(const T* in, complex_type* out, index_t count,
                      basic_fft_workspace<T>& ws) const {
        forward_real(view<const T, 3>(in, {count, rows_, cols_}), out, ws);
    }

    /// Real part of the inverse transform (ifft2(in).real), written to a (count, H, W) view
    /// with any strides. `in` is not modified.
    void inverse_real(const complex_type* in, view<T, 3> out, basic_fft_workspace<T>& ws) const {
        PATCHBAY_REQUIRE(out.extent(1) == rows_ && out.extent(2) == cols_, "fft2 (inverse_real)",
                "output planes are " + std::to_string(out.extent(1)) + "x" +
                    std::to_string(out.extent(2)) + " but the plan is " + std::to_string(rows_) +
                    "x" + std::to_string(cols_));
        check_count(out.extent(0), in, out.data_handle());
        if (out.extent(0) == 0) return;
        impl::run_real_out(rowpass_, colpass_, rows_, cols_, reinterpret_cast<const T*>(in), out,
                           ws.get(workspace_size()));
    }
    /// Real part of the inverse transform into `count` packed real planes.
    void inverse_real(const complex_type* in, T* out, index_t count,
                      basic_fft_workspace<T>& ws) const {
        inverse_real(in, view<T, 3>(out, {count, rows_, cols_}), ws);
    }

private:
    static index_t checked(index_t n, const char* name) {
        if (n < 1)
            fail("fft2", std::string("plane size ") + name + " must be >= 1, got " +
                             std::to_string(n));
        return n;
    }
    static void check_count(index_t count, const void* in, const void* out) {
        if (count < 0) fail("fft2", "plane count must be >= 0, got " + std::to_string(count));
        if (count > 0 && (in == nullptr || out == nullptr))
            fail("fft2", "null data pointer for " + std::to_string(count) + " planes");
    }

    index_t rows_, cols_;
    fft_detail::pass_plan<T> rowpass_; // length W, along each row
    fft_detail::pass_plan<T> colpass_; // length H, along each column
};
using fft_plan_2d = basic_fft_plan_2d<float>;

/// Plans keyed by (H, W), built once on first use. get() is thread-safe; the returned
/// reference stays valid for the cache's lifetime (plans are never evicted).
template <class T>
class basic_fft_plan_cache {
public:
    const basic_fft_plan_2d<T>& get(index_t rows, index_t cols) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = plans_.find({rows, cols});
        if (it == plans_.end())
            it = plans_.emplace(std::pair{rows, cols},
                                std::make_unique<const basic_fft_plan_2d<T>>(rows, cols))
                     .first;
        return *it->second;
    }
    std::size_t size() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return plans_.size();
    }
    /// The process-wide cache used by the free functions.
    static basic_fft_plan_cache& global() {
        static basic_fft_plan_cache cache;
        return cache;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::pair<index_t, index_t>, std::unique_ptr<const basic_fft_plan_2d<T>>> plans_;
};
using fft_plan_cache = basic_fft_plan_cache<float>;

// ----------------------------------------------------------------------------------------
// Free functions over the global plan cache.

/// In-place 2-D FFT of `count` packed H x W complex planes.
template <class T>
void fft2(std::complex<T>* planes, index_t count, index_t H, index_t W, fft_direction dir,
          basic_fft_workspace<T>& ws) {
    basic_fft_plan_cache<T>::global().get(H, W).execute(planes, count, dir, ws);
}
template <class T>
void fft2(std::complex<T>* planes, index_t count, index_t H, index_t W, fft_direction dir) {
    fft2(planes, count, H, W, dir, thread_fft_workspace<T>());
}

/// Out-of-place 2-D FFT (in may equal out).
template <class T>
void fft2(const std::complex<T>* in, std::complex<T>* out, index_t count, index_t H, index_t W,
          fft_direction dir, basic_fft_workspace<T>& ws) {
    basic_fft_plan_cache<T>::global().get(H, W).execute(in, out, count, dir, ws);
}

/// Forward FFT of real planes, a (count, H, W) view with any strides -> packed complex planes.
template <class T>
void fft2_real(std::type_identity_t<view<const T, 3>> in, std::complex<T>* out,
               basic_fft_workspace<T>& ws) {
    basic_fft_plan_cache<T>::global().get(in.extent(1), in.extent(2)).forward_real(in, out, ws);
}
template <class T>
void fft2_real(std::type_identity_t<view<const T, 3>> in, std::complex<T>* out) {
    fft2_real<T>(in, out, thread_fft_workspace<T>());
}

/// Real part of the inverse FFT of packed complex planes into a (count, H, W) view.
template <class T>
void ifft2_real(const std::complex<T>* in, std::type_identity_t<view<T, 3>> out,
                basic_fft_workspace<T>& ws) {
    basic_fft_plan_cache<T>::global().get(out.extent(1), out.extent(2)).inverse_real(in, out, ws);
}
template <class T>
void ifft2_real(const std::complex<T>* in, std::type_identity_t<view<T, 3>> out) {
    ifft2_real<T>(in, out, thread_fft_workspace<T>());
}

} // namespace patchbay::kernels
