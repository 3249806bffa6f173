// patchbay: half-precision storage types, f16 (IEEE 754 binary16: ggml's F16, at::kHalf) and
// bf16 (bfloat16: at::kBFloat16), and their scalar conversions to and from float.
//
// patchbay never computes in half precision: a view over f16 or bf16 elements is storage. The
// checked hook entry points and the chains' cfg stage widen such inputs to float32 (exactly),
// run the float32 path and round each output once, to nearest even (core/storage.hpp).
// kernels/convert.hpp holds the SIMD bulk conversions.
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>

namespace patchbay {

/// An IEEE 754 binary16 value (1 sign, 5 exponent, 10 mantissa bits), stored as its bits.
struct f16 {
    std::uint16_t bits = 0;
    explicit operator float() const noexcept;
    friend constexpr bool operator==(f16 a, f16 b) noexcept { return a.bits == b.bits; }
};

/// A bfloat16 value (the upper half of a float32), stored as its bits.
struct bf16 {
    std::uint16_t bits = 0;
    explicit operator float() const noexcept;
    friend constexpr bool operator==(bf16 a, bf16 b) noexcept { return a.bits == b.bits; }
};

static_assert(sizeof(f16) == 2 && sizeof(bf16) == 2 && std::is_trivially_copyable_v<f16>);

/// True for the half-precision storage types.
template <class T>
inline constexpr bool is_half_v = std::is_same_v<std::remove_const_t<T>, f16> || std::is_same_v<std::remove_const_t<T>, bf16>;

/// The type a kernel computes in for storage type T: float for the half types, T otherwise.
template <class T>
using compute_t = std::conditional_t<is_half_v<T>, float, std::remove_const_t<T>>;

/// Exact widening of a binary16 value (subnormals and infinities kept; a NaN keeps its payload
/// and comes out quiet, as F16C's vcvtph2ps gives it).
constexpr float to_float(f16 h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
    const std::uint32_t exp = (h.bits >> 10) & 0x1Fu, man = h.bits & 0x3FFu;
    std::uint32_t bits;
    if (exp == 0x1Fu) { // infinity or NaN
        bits = sign | 0x7F800000u | (man << 13) | (man != 0 ? 0x00400000u : 0u);
    } else if (exp != 0) { // normal: rebias 15 -> 127
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) { // signed zero
        bits = sign;
    } else { // subnormal: man * 2^-24, normalised
        int e = -1;
        std::uint32_t m = man;
        do {
            ++e;
            m <<= 1;
        } while ((m & 0x400u) == 0);
        bits = sign | ((112u - static_cast<std::uint32_t>(e)) << 23) | ((m & 0x3FFu) << 13);
    }
    return std::bit_cast<float>(bits);
}

/// Exact widening of a bfloat16 value.
constexpr float to_float(bf16 h) noexcept { return std::bit_cast<float>(static_cast<std::uint32_t>(h.bits) << 16); }

/// float -> binary16, rounded to nearest even; overflow gives infinity, NaN stays a (quiet) NaN.
constexpr f16 to_f16(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    const std::uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) // NaN: keep the top payload bits, force quiet
        return f16{static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu))};
    if (ax >= 0x477FF000u) // rounds to 65520 or beyond: infinity
        return f16{static_cast<std::uint16_t>(sign | 0x7C00u)};
    if (ax < 0x38800000u) { // below the smallest normal 2^-14: a subnormal (or zero)
        const std::uint32_t shift = 126u - (ax >> 23); // 14 + (127 - 1 - exp) for the implicit bit
        if (shift > 24u) return f16{sign};            // below half the smallest subnormal: zero
        const std::uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        const std::uint32_t q = m >> shift, rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        const std::uint32_t r = q + ((rest > half || (rest == half && (q & 1u))) ? 1u : 0u);
        return f16{static_cast<std::uint16_t>(sign | r)};
    }
    // normal: rebias, round the 13 dropped mantissa bits to nearest even (a carry may bump the
    // exponent, up to infinity, which is the right result)
    const std::uint32_t r = ax - 0x38000000u; // exponent 127 -> 15
    const std::uint32_t rounded = (r + 0x0FFFu + ((r >> 13) & 1u)) >> 13;
    return f16{static_cast<std::uint16_t>(sign | rounded)};
}

/// float -> bfloat16, rounded to nearest even; NaN stays a (quiet) NaN.
constexpr bf16 to_bf16(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return bf16{static_cast<std::uint16_t>((x >> 16) | 0x0040u)};
    return bf16{static_cast<std::uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16)};
}

inline f16::operator float() const noexcept { return to_float(*this); }
inline bf16::operator float() const noexcept { return to_float(*this); }

/// float -> storage type S (float: itself), rounded to nearest even.
template <class S>
constexpr S round_to(float f) noexcept {
    if constexpr (std::is_same_v<S, f16>) return to_f16(f);
    else if constexpr (std::is_same_v<S, bf16>) return to_bf16(f);
    else return static_cast<S>(f);
}

/// f rounded to storage type S and widened back (the value S stores for f).
template <class S>
constexpr float rounded_through(float f) noexcept {
    if constexpr (is_half_v<S>) return to_float(round_to<S>(f));
    else return f;
}

} // namespace patchbay
