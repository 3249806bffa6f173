// patchbay: the single error type and the helpers that raise it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "patchbay/core/config.hpp"

namespace patchbay {

/// Every rejection of bad input (shape, rank, parameter, capability) is a patchbay::error.
/// Its message names the patch or function, the argument, and what was expected.
class error : public std::invalid_argument {
public:
    explicit error(const std::string& what) : std::invalid_argument(what) {}
};

namespace detail {

[[noreturn]] inline void raise(const std::string& message) {
#ifdef PATCHBAY_NO_EXCEPTIONS
    std::fprintf(stderr, "patchbay::error: %s\n", message.c_str());
    std::fflush(stderr);
    std::abort();
#else
    throw error(message);
#endif
}

inline std::string fmt_num(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

} // namespace detail

/// Raise a patchbay::error with "<where>: <message>".
[[noreturn]] inline void fail(std::string_view where, std::string_view message) {
    std::string m(where);
    m += ": ";
    m += message;
    detail::raise(m);
}

/// Check a condition; on failure raise "<where>: <message>". The message is evaluated only on
/// failure, so checks in the per-step path build no strings and allocate nothing.
#define PATCHBAY_REQUIRE(condition, where, ...)                                                 \
    do {                                                                                        \
        if (!(condition)) ::patchbay::fail((where), (__VA_ARGS__));                             \
    } while (0)

/// Check a condition; on failure raise "<where>: <message>". Prefer PATCHBAY_REQUIRE when the
/// message is built from strings (this function receives it already built).
inline void require(bool ok, std::string_view where, std::string_view message) {
    if (!ok) fail(where, message);
}

/// Check that a parameter is finite and inside [lo, hi] (ComfyUI's declared range).
inline void require_range(double value, double lo, double hi, std::string_view where,
                          std::string_view name) {
    if (!(value >= lo && value <= hi)) { // also rejects NaN
        std::string m = "parameter '";
        m += name;
        m += "' must be a finite value in [" + detail::fmt_num(lo) + ", " + detail::fmt_num(hi) +
             "], got " + detail::fmt_num(value);
        fail(where, m);
    }
}

/// Check that a scalar argument is finite.
inline void require_finite(double value, std::string_view where, std::string_view name) {
    if (!(value - value == 0.0)) {
        std::string m = "argument '";
        m += name;
        m += "' must be finite, got " + detail::fmt_num(value);
        fail(where, m);
    }
}

} // namespace patchbay
