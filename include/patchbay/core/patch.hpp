// patchbay: what makes a type a patch, and its per-run state.
//
// A patch is an immutable configuration struct with ComfyUI's input names and defaults. It
// declares its hook slot (`static constexpr hook_kind hook`), rejects bad parameters in
// `validate()`, and, when it keeps anything between steps, a `state_type` (a plain value:
// reset = a fresh one, clone = a copy).
#pragma once

#include <concepts>
#include <type_traits>

#include "patchbay/core/hooks.hpp"

namespace patchbay {

template <class P>
concept patch = requires(const P& p) {
    { P::hook } -> std::convertible_to<hook_kind>;
    p.validate();
};

namespace detail {
template <class P>
struct state_of {
    using type = no_state;
};
template <class P>
    requires requires { typename P::state_type; }
struct state_of<P> {
    using type = typename P::state_type;
};
} // namespace detail

/// The per-run state of patch P (no_state when it keeps none).
template <class P>
using state_t = typename detail::state_of<P>::type;

} // namespace patchbay
