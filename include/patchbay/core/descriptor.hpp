// patchbay: the patch descriptor, the one place a patch's metadata lives.
//
// Every patch type P declares
//     static constexpr auto descriptor() { return patchbay::describe<P>(...); }
// with ComfyUI's class_type (the one spelling every message uses), its display name, the hook
// slot, and each ComfyUI input as {input name, member, kind, default, range}. Validation,
// error messages, workflow import, printing, the docs' parameter tables and the fuzzer's
// parameter generator all iterate the descriptor; nothing else restates it. A patch adds only
// the preconditions a range cannot say in an optional `check_params()` member.
//
// Input kinds follow ComfyUI's widget types: FLOAT and INT (min/max are validated; `step` is
// UI metadata, recorded and never validated), BOOLEAN, COMBO (a fixed list of strings),
// STRING, a LINK to another node (a LATENT_OPERATION, CONDITIONING or LATENT output), and a
// MODEL FACT: a value the node reads from the loaded model (FreeU's model_channels), which an
// importer takes from its options rather than from the workflow.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"

namespace patchbay {

/// ComfyUI's input types, as a descriptor records them.
enum class input_kind : std::uint8_t { floating, integer, boolean, combo, string, link, model_fact };

inline constexpr std::string_view to_string(input_kind k) noexcept {
    constexpr std::string_view names[] = {"FLOAT", "INT", "BOOLEAN", "COMBO", "STRING", "LINK", "MODEL_FACT"};
    return names[static_cast<std::size_t>(k)];
}

/// The type-independent part of one input: what docs, printing and fuzzing read.
struct input_info {
    std::string_view name;   ///< ComfyUI's input name
    input_kind kind = input_kind::floating;
    double def = 0.0;        ///< FLOAT / INT / BOOLEAN (0 or 1) / MODEL_FACT default
    double lo = -std::numeric_limits<double>::infinity(); ///< FLOAT / INT minimum (inclusive)
    double hi = std::numeric_limits<double>::infinity();  ///< FLOAT / INT maximum (inclusive)
    double step = 0.0;       ///< ComfyUI's UI step (metadata only, never validated)
    std::span<const std::string_view> options{}; ///< COMBO: the allowed strings
    std::string_view def_text{};  ///< COMBO / STRING default
    std::string_view link_type{}; ///< LINK: the ComfyUI type of the linked output
    bool optional = false;   ///< ComfyUI's "optional" inputs: may be absent (then the default)
};

/// A node linked from an input that patchbay records but cannot evaluate (a CONDITIONING, a
/// LATENT): the engine resolves it.
struct node_link {
    std::string node_id;
    std::string class_type;
    friend bool operator==(const node_link&, const node_link&) = default;
};

/// One input bound to the patch member that holds it.
template <class P, class M>
struct input_binding {
    using patch_type = P;
    using member_type = M;
    input_info info;
    M P::*member;
};

// ---- builders ------------------------------------------------------------------------------

/// FLOAT input (member: a floating-point type).
template <class P, class M>
constexpr input_binding<P, M> floating(std::string_view name, M P::*member, double def, double lo,
                                       double hi, double step = 0.0) {
    static_assert(std::is_floating_point_v<M>, "a FLOAT input binds a floating-point member");
    input_info i{name, input_kind::floating, def, lo, hi, step};
    return {i, member};
}

/// INT input (member: an integer type).
template <class P, class M>
constexpr input_binding<P, M> integer(std::string_view name, M P::*member, double def, double lo,
                                      double hi, double step = 1.0) {
    static_assert(std::is_integral_v<M> && !std::is_same_v<M, bool>, "an INT input binds an integer member");
    input_info i{name, input_kind::integer, def, lo, hi, step};
    return {i, member};
}

/// BOOLEAN input.
template <class P>
constexpr input_binding<P, bool> boolean(std::string_view name, bool P::*member, bool def) {
    input_info i{name, input_kind::boolean, def ? 1.0 : 0.0, 0.0, 1.0};
    return {i, member};
}

/// COMBO input: the member is std::string (the chosen text) or an enum whose values are the
/// option indices.
template <class P, class M, std::size_t N>
constexpr input_binding<P, M> combo(std::string_view name, M P::*member,
                                    const std::array<std::string_view, N>& options,
                                    std::string_view def) {
    static_assert(std::is_enum_v<M> || std::is_same_v<M, std::string>,
                  "a COMBO input binds a std::string or an enum member");
    input_info i{name, input_kind::combo};
    i.options = std::span<const std::string_view>(options);
    i.def_text = def;
    return {i, member};
}

/// STRING input (member: std::string).
template <class P>
constexpr input_binding<P, std::string> text(std::string_view name, std::string P::*member,
                                             std::string_view def) {
    input_info i{name, input_kind::string};
    i.def_text = def;
    return {i, member};
}

/// LINK input of ComfyUI type `type`. The member is either a node_link (recorded for the
/// engine), or a value type / std::variant of value types that have descriptors themselves
/// (the importer parses the linked node into it, e.g. a LATENT_OPERATION node).
template <class P, class M>
constexpr input_binding<P, M> link(std::string_view name, M P::*member, std::string_view type,
                                   bool optional = false) {
    input_info i{name, input_kind::link};
    i.link_type = type;
    i.optional = optional;
    return {i, member};
}

/// A value the node reads from the loaded model, not from the workflow (FreeU's
/// model_channels). Importers take it from their options by this name.
template <class P, class M>
constexpr input_binding<P, M> model_fact(std::string_view name, M P::*member, double def, double lo,
                                         double hi) {
    static_assert(std::is_arithmetic_v<M>, "a model fact binds a number");
    input_info i{name, input_kind::model_fact, def, lo, hi};
    return {i, member};
}

/// Mark an input optional (ComfyUI's "optional" section): absent means the default.
template <class B>
constexpr B optional(B b) {
    b.info.optional = true;
    return b;
}

// ---- the descriptor --------------------------------------------------------------------------

template <class P, class... Inputs>
struct patch_descriptor {
    using patch_type = P;
    std::string_view class_type;   ///< ComfyUI's class_type: the one name in every message
    std::string_view display_name; ///< ComfyUI's display name
    hook_kind slot;                ///< the hook slot (a patch may override it per value: slot())
    std::tuple<Inputs...> inputs;

    static constexpr std::size_t input_count = sizeof...(Inputs);

    /// Calls f(binding) for every input, in declaration order.
    template <class F>
    constexpr void for_each_input(F&& f) const {
        std::apply([&](const auto&... b) { (f(b), ...); }, inputs);
    }
    /// The type-independent infos, in order.
    constexpr std::array<input_info, sizeof...(Inputs)> infos() const {
        return std::apply([](const auto&... b) { return std::array<input_info, sizeof...(Inputs)>{b.info...}; },
                          inputs);
    }
};

/// Build a descriptor: describe<P>("APG", "Adaptive Projected Guidance", hook_kind::pre_cfg,
/// floating("eta", &apg::eta, 1.0, -10, 10, 0.01), ...).
template <class P, class... Inputs>
constexpr patch_descriptor<P, Inputs...> describe(std::string_view class_type, std::string_view display_name,
                                                  hook_kind slot, Inputs... inputs) {
    static_assert((std::is_same_v<typename Inputs::patch_type, P> && ...),
                  "every input of describe<P> must bind a member of P");
    return {class_type, display_name, slot, std::tuple<Inputs...>(inputs...)};
}

/// A type with a descriptor (patches, and values linked from patches such as latent operations).
template <class P>
concept described = requires {
    { P::descriptor().class_type } -> std::convertible_to<std::string_view>;
    { P::descriptor().slot } -> std::convertible_to<hook_kind>;
};

/// ComfyUI's class_type of a described type.
template <described P>
constexpr std::string_view class_type_of() noexcept {
    return P::descriptor().class_type;
}

namespace detail {

template <class M>
struct is_variant : std::false_type {};
template <class... A>
struct is_variant<std::variant<A...>> : std::true_type {};

template <class M>
std::string combo_text(const M& v, std::span<const std::string_view> options) {
    if constexpr (std::is_enum_v<M>) {
        const auto i = static_cast<std::size_t>(v);
        return i < options.size() ? std::string(options[i]) : "<invalid " + std::to_string(i) + ">";
    } else {
        return v;
    }
}

/// The option index of a COMBO value, or npos.
template <class M>
std::size_t combo_index(const M& v, std::span<const std::string_view> options) {
    if constexpr (std::is_enum_v<M>) {
        const auto i = static_cast<std::size_t>(v);
        return i < options.size() ? i : std::string_view::npos;
    } else {
        for (std::size_t i = 0; i < options.size(); ++i)
            if (options[i] == v) return i;
        return std::string_view::npos;
    }
}

inline std::string option_list(std::span<const std::string_view> options) {
    std::string s;
    for (auto o : options) s += (s.empty() ? "" : ", ") + std::string(o);
    return s;
}

} // namespace detail

/// Check every input of p against its descriptor (ComfyUI's declared ranges and options),
/// then the patch's own check_params() if it has one. Raises "<class_type>: parameter ...".
template <described P>
void validate(const P& p) {
    constexpr auto d = P::descriptor();
    d.for_each_input([&](const auto& b) {
        using M = typename std::remove_cvref_t<decltype(b)>::member_type;
        const M& v = p.*(b.member);
        const input_info& i = b.info;
        switch (i.kind) {
        case input_kind::floating:
        case input_kind::integer:
        case input_kind::model_fact:
            if constexpr (std::is_arithmetic_v<M>) require_range(static_cast<double>(v), i.lo, i.hi, d.class_type, i.name);
            break;
        case input_kind::combo:
            if constexpr (std::is_enum_v<M> || std::is_same_v<M, std::string>)
                if (detail::combo_index(v, i.options) == std::string_view::npos)
                    fail(d.class_type, "parameter '" + std::string(i.name) + "' must be one of " +
                                           detail::option_list(i.options) + ", got '" +
                                           detail::combo_text(v, std::span<const std::string_view>(i.options)) + "'");
            break;
        case input_kind::link:
            if constexpr (described<M>) validate(v);
            else if constexpr (detail::is_variant<M>::value)
                std::visit([](const auto& alt) {
                    if constexpr (described<std::remove_cvref_t<decltype(alt)>>) validate(alt);
                }, v);
            break;
        default: break;
        }
    });
    if constexpr (requires { p.check_params(); }) p.check_params();
}

namespace detail {
inline std::string python_number(double v, bool integral) {
    if (integral) return std::to_string(static_cast<long long>(v));
    return fmt_num(v);
}
} // namespace detail

/// The value as text in ComfyUI's terms: "RescaleCFG(multiplier=0.7)".
template <described P>
std::string to_string(const P& p) {
    constexpr auto d = P::descriptor();
    std::string s(d.class_type);
    s += '(';
    bool first = true;
    d.for_each_input([&](const auto& b) {
        using M = typename std::remove_cvref_t<decltype(b)>::member_type;
        const M& v = p.*(b.member);
        if (!first) s += ", ";
        first = false;
        s += b.info.name;
        s += '=';
        if constexpr (std::is_same_v<M, bool>) s += v ? "True" : "False";
        else if constexpr (std::is_arithmetic_v<M>) s += detail::python_number(static_cast<double>(v), std::is_integral_v<M>);
        else if constexpr (std::is_enum_v<M> || std::is_same_v<M, std::string>) {
            if (b.info.kind == input_kind::combo)
                s += detail::combo_text(v, std::span<const std::string_view>(b.info.options));
            else if constexpr (std::is_same_v<M, std::string>) s += "'" + v + "'";
        } else if constexpr (std::is_same_v<M, node_link>) s += v.node_id.empty() ? "None" : "<node " + v.node_id + ">";
        else if constexpr (described<M>) s += to_string(v);
        else if constexpr (detail::is_variant<M>::value)
            s += std::visit([](const auto& alt) -> std::string {
                if constexpr (described<std::remove_cvref_t<decltype(alt)>>) return to_string(alt);
                else return "?";
            }, v);
        else s += "?";
    });
    s += ')';
    return s;
}

/// A value of P with every input at its descriptor default (model facts included).
template <described P>
P with_defaults() {
    P p{};
    constexpr auto d = P::descriptor();
    d.for_each_input([&](const auto& b) {
        using M = typename std::remove_cvref_t<decltype(b)>::member_type;
        M& v = p.*(b.member);
        if constexpr (std::is_same_v<M, bool>) v = b.info.def != 0.0;
        else if constexpr (std::is_arithmetic_v<M>) v = static_cast<M>(b.info.def);
        else if constexpr (std::is_enum_v<M> || std::is_same_v<M, std::string>) {
            if (b.info.kind == input_kind::combo) {
                for (std::size_t k = 0; k < b.info.options.size(); ++k)
                    if (b.info.options[k] == b.info.def_text) {
                        if constexpr (std::is_enum_v<M>) v = static_cast<M>(k);
                        else v = std::string(b.info.def_text);
                    }
            } else if constexpr (std::is_same_v<M, std::string>) {
                v = std::string(b.info.def_text);
            }
        }
    });
    return p;
}

} // namespace patchbay
