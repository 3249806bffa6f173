// patchbay: the scratch arena of one sampling run.
//
// Everything a run needs as scratch lives here, so memory follows the run (not a thread) and
// release() frees all of it:
// - tensor slots, get<T, R>(slot, extents): latent-sized buffers the guider keeps for a step
//   (cond and uncond predictions, the inpainting input, the mask);
// - transient buffers, buffer<T>(key, count): what a hook or a kernel needs during one call
//   (FFT and Fourier-mask scratch, FreeU_V2's channel mean, PAG's perturbed prediction).
// Both only grow, so after the first step of a run nothing allocates. The dispatcher hands the
// arena to every hook (guidance_inputs::scratch, block_site::scratch); a standalone hook call
// without one uses a local arena for the call.
//
// Keys of buffer() are small integers in three ranges. A key's contents are valid until the
// next buffer() call with that key, so code that runs inside another's call must not share its
// keys: kernels use [kernel_keys, patch_keys) (a kernel's buffers live for one kernel call),
// patches their own logic [patch_keys, model_call_keys) (one hook call: patches may share
// keys), and a hook whose buffers must survive a model evaluation (PAG's extra call runs the
// block hooks) uses keys [model_call_keys, storage_keys). Keys from storage_keys on hold the
// float32 copies of half-precision inputs for the whole staged call (core/storage.hpp).
//
// Copying a workspace copies its tensor slots (a cloned run owns its own scratch); transient
// buffers are not copied (their contents never outlive a call).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/view.hpp"

namespace patchbay {

class workspace {
public:
    static constexpr std::size_t slots = 8;
    /// First key of each range of buffer() keys (see the header comment).
    static constexpr std::size_t kernel_keys = 0, patch_keys = 32, model_call_keys = 48, storage_keys = 64;
    /// Alignment of every slot and buffer (a cache line; enough for any SIMD width).
    static constexpr std::size_t alignment = 64;

    workspace() = default;
    workspace(const workspace& o) : slots_(o.slots_) {}
    workspace& operator=(const workspace& o) {
        if (this != &o) {
            slots_ = o.slots_;
            buffers_.clear();
        }
        return *this;
    }
    workspace(workspace&&) noexcept = default;
    workspace& operator=(workspace&&) noexcept = default;

    /// A contiguous buffer of the given shape in slot `slot` (float and double slots are
    /// separate). Reallocates only when the slot must grow; the contents are whatever the slot
    /// held before (callers overwrite them).
    template <class T, std::size_t R>
    view<T, R> get(std::size_t slot, const std::array<index_t, R>& extents) {
        static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                      "workspace slots hold float or double elements");
        PATCHBAY_REQUIRE(slot < slots, "workspace::get", "slot index out of range");
        index_t n = 1;
        for (index_t e : extents) n *= e;
        block& b = slots_.of<T>()[slot];
        b.reserve(static_cast<std::size_t>(n) * sizeof(T), true);
        return view<T, R>(reinterpret_cast<T*>(b.data()), extents);
    }

    /// `count` elements of scratch under `key` (64-byte aligned). Grows only; the contents are
    /// unspecified and valid until the next call with the same key.
    template <class T>
    std::span<T> buffer(std::size_t key, std::size_t count) {
        static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T> &&
                          alignof(T) <= alignment,
                      "workspace buffers hold trivially copyable values");
        if (key >= buffers_.size()) buffers_.resize(key + 1);
        block& b = buffers_[key];
        b.reserve(count * sizeof(T), false);
        return {reinterpret_cast<T*>(b.data()), count};
    }

    /// Bytes the arena holds (slots and buffers).
    std::size_t bytes() const noexcept {
        std::size_t n = 0;
        for (const block& b : slots_.f) n += b.capacity();
        for (const block& b : slots_.d) n += b.capacity();
        for (const block& b : buffers_) n += b.capacity();
        return n;
    }

    /// Free everything (bytes() becomes 0; the next step allocates again).
    void release() noexcept {
        slots_ = slot_set{};
        std::vector<block>().swap(buffers_);
    }

private:
    /// Grow-only aligned storage.
    class block {
    public:
        block() = default;
        block(const block& o) {
            if (o.capacity_ == 0) return;
            reserve(o.capacity_, false);
            std::memcpy(data_.get(), o.data_.get(), o.capacity_);
        }
        block& operator=(const block& o) {
            if (this != &o) {
                reserve(o.capacity_, false);
                if (o.capacity_) std::memcpy(data_.get(), o.data_.get(), o.capacity_);
            }
            return *this;
        }
        block(block&&) noexcept = default;
        block& operator=(block&&) noexcept = default;

        /// At least `bytes` bytes; new storage is zeroed when `zero` (slots start as zeros,
        /// as the tensors they replace did).
        void reserve(std::size_t bytes, bool zero) {
            if (bytes <= capacity_) return;
            auto* p = static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{alignment}));
            if (zero) std::memset(p, 0, bytes);
            data_.reset(p);
            capacity_ = bytes;
        }
        std::byte* data() const noexcept { return data_.get(); }
        std::size_t capacity() const noexcept { return capacity_; }

    private:
        struct aligned_free {
            void operator()(std::byte* p) const noexcept {
                ::operator delete[](p, std::align_val_t{alignment});
            }
        };
        std::unique_ptr<std::byte[], aligned_free> data_;
        std::size_t capacity_ = 0;
    };

    struct slot_set {
        std::array<block, slots> f, d;
        template <class T>
        std::array<block, slots>& of() noexcept {
            if constexpr (std::is_same_v<T, float>) return f;
            else return d;
        }
    };

    slot_set slots_;
    std::vector<block> buffers_;
};

} // namespace patchbay
