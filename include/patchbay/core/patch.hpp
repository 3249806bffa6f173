// patchbay: what makes a type a patch, and its per-run state.
//
// A patch is an immutable configuration struct with ComfyUI's input names and defaults and a
// descriptor (core/descriptor.hpp) stating its class_type, hook slot and inputs. When it keeps
// anything between steps it declares a `state_type`: a plain value (reset = a fresh one, clone =
// a copy). Its hooks are const member functions taking that state first; the dispatcher
// (core/dispatch.hpp) finds them. docs/writing_a_patch.md walks through one.
#pragma once

#include <concepts>
#include <type_traits>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/hooks.hpp"

namespace patchbay {

namespace detail {
template <class P>
constexpr auto state_type_of() {
    if constexpr (requires { typename P::state_type; }) return std::type_identity<typename P::state_type>{};
    else return std::type_identity<no_state>{};
}
} // namespace detail

/// The per-run state of patch P (no_state when it keeps none).
template <class P>
using state_t = typename decltype(detail::state_type_of<P>())::type;

/// A patch: a described, copyable type.
template <class P>
concept patch = described<P> && std::copy_constructible<P>;

} // namespace patchbay
