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
// once, each with its own scratch arena (patchbay::workspace; the overloads without one use a
// local arena for the call). Plans come from fourier_plan_cache, the process's one bounded
// cache of Fourier plans (FFT plans here, the Fourier-mask bases of kernels/fourier_mask.hpp).
//
// fftshift / ifftshift are index arithmetic, never copies: see natural_to_fftshift().
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "patchbay/core/config.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
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

/// The process's one cache of Fourier plans: 2-D FFT plans (basic_fft_plan_2d) and the
/// Fourier-mask plans of kernels/fourier_mask.hpp. Bounded: it keeps at most `capacity` plans
/// and drops the least recently used when full (a caller still holding a dropped plan keeps it
/// alive through its shared_ptr). Each plan is O(H + W) numbers (the mask plans O((H + W) K)
/// for K basis columns), so the cache stays small. get() is thread-safe (one mutex); a hit
/// neither allocates nor builds anything.
class fourier_plan_cache {
public:
    static constexpr std::size_t capacity = 64;
    /// What a plan is: its family (one per plan type and precision) and up to six sizes.
    struct key {
        int family = 0;
        std::array<index_t, 6> sizes{};
        friend bool operator==(const key&, const key&) = default;
    };

    fourier_plan_cache() { entries_.reserve(capacity); }

    /// The plan under `k`, built by make() (returning std::shared_ptr<const Plan>) on a miss.
    template <class Plan, class Make>
    std::shared_ptr<const Plan> get(const key& k, Make&& make) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++clock_;
        for (entry& e : entries_)
            if (e.k == k) {
                e.used = clock_;
                return std::static_pointer_cast<const Plan>(e.plan);
            }
        std::shared_ptr<const Plan> plan = make();
        if (entries_.size() < capacity) {
            entries_.push_back({k, plan, clock_});
        } else {
            auto lru = std::min_element(entries_.begin(), entries_.end(),
                                        [](const entry& a, const entry& b) { return a.used < b.used; });
            *lru = {k, plan, clock_};
        }
        return plan;
    }
    std::size_t size() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return entries_.size();
    }
    /// The process-wide cache.
    static fourier_plan_cache& global() {
        static fourier_plan_cache cache;
        return cache;
    }

private:
    struct entry {
        key k;
        std::shared_ptr<const void> plan;
        std::uint64_t used = 0;
    };
    mutable std::mutex mutex_;
    std::vector<entry> entries_;
    std::uint64_t clock_ = 0;
};

/// Key of the FFT's scratch in a workspace (kernel range; see core/workspace.hpp).
inline constexpr std::size_t fft_scratch_key = workspace::kernel_keys;

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

    /// Elements of T the scratch needs for one call (taken from the workspace automatically).
    std::size_t workspace_size() const noexcept {
        return impl::workspace_elems(rowpass_, colpass_, rows_, cols_);
    }

    /// In-place transform of `count` packed planes.
    void execute(complex_type* planes, index_t count, fft_direction dir, workspace& ws) const {
        execute(planes, planes, count, dir, ws);
    }

    /// Out-of-place transform; `in` may equal `out` (exact aliasing), no other overlap.
    void execute(const complex_type* in, complex_type* out, index_t count, fft_direction dir,
                 workspace& ws) const {
        check_count(count, in, out);
        if (count == 0) return;
        impl::run_complex(rowpass_, colpass_, rows_, cols_, reinterpret_cast<const T*>(in),
                          reinterpret_cast<T*>(out), count, dir == fft_direction::inverse, scratch(ws));
    }

    /// Forward transform of real planes given as a (count, H, W) view with any strides.
    void forward_real(view<const T, 3> in, complex_type* out, workspace& ws) const {
        PATCHBAY_REQUIRE(in.extent(1) == rows_ && in.extent(2) == cols_, "fft2 (forward_real)",
                "input planes are " + std::to_string(in.extent(1)) + "x" +
                    std::to_string(in.extent(2)) + " but the plan is " + std::to_string(rows_) +
                    "x" + std::to_string(cols_));
        check_count(in.extent(0), in.data_handle(), out);
        if (in.extent(0) == 0) return;
        impl::run_real_in(rowpass_, colpass_, rows_, cols_, in, reinterpret_cast<T*>(out), scratch(ws));
    }

    /// Real part of the inverse transform (ifft2(in).real), written to a (count, H, W) view
    /// with any strides. `in` is not modified.
    void inverse_real(const complex_type* in, view<T, 3> out, workspace& ws) const {
        PATCHBAY_REQUIRE(out.extent(1) == rows_ && out.extent(2) == cols_, "fft2 (inverse_real)",
                "output planes are " + std::to_string(out.extent(1)) + "x" +
                    std::to_string(out.extent(2)) + " but the plan is " + std::to_string(rows_) +
                    "x" + std::to_string(cols_));
        check_count(out.extent(0), in, out.data_handle());
        if (out.extent(0) == 0) return;
        impl::run_real_out(rowpass_, colpass_, rows_, cols_, reinterpret_cast<const T*>(in), out,
                           scratch(ws));
    }

private:
    T* scratch(workspace& ws) const { return ws.buffer<T>(fft_scratch_key, workspace_size()).data(); }
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

/// The plan for H x W planes from the plan cache (built on first use).
template <class T>
std::shared_ptr<const basic_fft_plan_2d<T>> fft_plan(index_t rows, index_t cols) {
    const fourier_plan_cache::key k{std::is_same_v<T, float> ? 0 : 1, {rows, cols}};
    return fourier_plan_cache::global().get<basic_fft_plan_2d<T>>(
        k, [&] { return std::make_shared<const basic_fft_plan_2d<T>>(rows, cols); });
}

// ----------------------------------------------------------------------------------------
// Free functions over the plan cache. Those without a workspace use a local one (one
// allocation per call): pass the run's arena on hot paths.

/// In-place 2-D FFT of `count` packed H x W complex planes.
template <class T>
void fft2(std::complex<T>* planes, index_t count, index_t H, index_t W, fft_direction dir,
          workspace& ws) {
    fft_plan<T>(H, W)->execute(planes, count, dir, ws);
}
template <class T>
void fft2(std::complex<T>* planes, index_t count, index_t H, index_t W, fft_direction dir) {
    workspace local;
    fft2(planes, count, H, W, dir, local);
}

/// Out-of-place 2-D FFT (in may equal out).
template <class T>
void fft2(const std::complex<T>* in, std::complex<T>* out, index_t count, index_t H, index_t W,
          fft_direction dir, workspace& ws) {
    fft_plan<T>(H, W)->execute(in, out, count, dir, ws);
}

/// Forward FFT of real planes, a (count, H, W) view with any strides -> packed complex planes.
template <class T>
void fft2_real(std::type_identity_t<view<const T, 3>> in, std::complex<T>* out, workspace& ws) {
    fft_plan<T>(in.extent(1), in.extent(2))->forward_real(in, out, ws);
}
template <class T>
void fft2_real(std::type_identity_t<view<const T, 3>> in, std::complex<T>* out) {
    workspace local;
    fft2_real<T>(in, out, local);
}

/// Real part of the inverse FFT of packed complex planes into a (count, H, W) view.
template <class T>
void ifft2_real(const std::complex<T>* in, std::type_identity_t<view<T, 3>> out, workspace& ws) {
    fft_plan<T>(out.extent(1), out.extent(2))->inverse_real(in, out, ws);
}
template <class T>
void ifft2_real(const std::complex<T>* in, std::type_identity_t<view<T, 3>> out) {
    workspace local;
    ifft2_real<T>(in, out, local);
}

} // namespace patchbay::kernels
