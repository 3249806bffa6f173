// patchbay: build configuration shared by every header.
#pragma once

#define PATCHBAY_VERSION_MAJOR 0
#define PATCHBAY_VERSION_MINOR 1
#define PATCHBAY_VERSION_PATCH 0

// Exceptions are on unless the consumer builds with -fno-exceptions or defines
// PATCHBAY_NO_EXCEPTIONS; then errors print their message and abort.
#if !defined(PATCHBAY_NO_EXCEPTIONS) && !defined(__cpp_exceptions) && !defined(__EXCEPTIONS)
#define PATCHBAY_NO_EXCEPTIONS 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PATCHBAY_RESTRICT __restrict__
#define PATCHBAY_ALWAYS_INLINE inline __attribute__((always_inline))
// after a lambda's parameter list: the body of a simd::unrolled step, inlined into each copy
#define PATCHBAY_INLINE_LAMBDA __attribute__((always_inline))
#else
#define PATCHBAY_RESTRICT
#define PATCHBAY_ALWAYS_INLINE inline
#define PATCHBAY_INLINE_LAMBDA
#endif
