// patchbay: the model contract. An engine's model is anything with
//     void predict(const model_call<Cond, T, R>& call, view<T, R> out);
// that writes the denoised (x0-space) prediction for call.x at call.sigma into out, as
// k-diffusion's D(x, sigma). The model wraps its own network: it turns x into the network input
// and the raw output into denoised (model_sampling::calculate_input / calculate_denoised, or
// scalings_at for engines that keep their own arithmetic).
//
// Capabilities are opt-in and separate from the base contract:
//   - block hooks (FreeU): the model calls call.overrides->apply_output_block(site, h, hsp) in
//     its decoder, for every output block, just before h and the skip feature are concatenated.
//     Declare it with `static constexpr bool calls_block_hooks = true;`.
//   - input-block hooks (Deep Shrink): after input block `id` the model continues with
//         h = ov.apply_input_block(site, h);              // ComfyUI's input_block_patch
//         skips.push_back(h);                              // the skip connection
//         h = ov.apply_input_block_after_skip(site, h);   // input_block_patch_after_skip
//     (h may come back at another spatial size). Declare `calls_input_block_hooks = true`.
//   - attention hooks (SAG reads self-attention probabilities, PAG replaces the self-attention
//     output): at every self-attention site the model asks call.overrides for a replacement
//     and for readers (see call_overrides). Declare `static constexpr bool calls_attention_hooks
//     = true;`.
//   - engines that only know at run time (a network loaded from a file) declare
//     `bool supports(capability) const`; it is checked once when a run begins, never mid-step.
//
// What a patch declares so the guider can wire it (all optional):
//   static constexpr bool needs_block_hooks = true;       // implied by hook == output_block
//   static constexpr bool needs_attention_hooks = true;   // SAG, PAG
//   static constexpr bool disable_cfg1_optimization = true; // SAG: keep the uncond pass at scale 1
//   hook_kind slot() const;                                // overrides the static `hook` at run time
//   template <class T> void output_block(state_t<P>&, const block_site&, view<T, 4> h,
//                                        view<T, 4> hsp) const;      // in place on h and hsp
//   template <class T> void on_model_call(state_t<P>&, pass_kind, call_overrides<T>&) const;
//       // called before every model evaluation of a step (cond, uncond, re-evaluations):
//       // attach attention readers / replacements to that call (SAG reads the uncond pass)
//   post_cfg(..., view<T, R> denoised, model_access<T, R>& model) const;
//       // a post-cfg hook with this extra last parameter may evaluate the model again
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>

#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/view.hpp"

namespace patchbay {

// ------------------------------------------------------------------------------------------
// callback: a non-owning, allocation-free callable reference (a function pointer plus a
// context pointer). Hooks handed to a model are callbacks, so a model needs no template per
// patch and attaching hooks to a call never allocates.

template <class Sig>
class callback;

template <class Ret, class... Args>
class callback<Ret(Args...)> {
public:
    using function_type = Ret (*)(void* context, Args...);

    constexpr callback() noexcept = default;
    /// A plain function with a context pointer (the context may be null).
    constexpr callback(function_type fn, void* context) noexcept : fn_(fn), ctx_(context) {}

    /// Refer to a callable object. The object must outlive every call through the callback.
    template <class F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, callback> &&
                 std::is_invocable_r_v<Ret, F&, Args...>)
    static callback to(F& f) noexcept {
        return callback(
            [](void* c, Args... a) -> Ret {
                return (*static_cast<F*>(c))(std::forward<Args>(a)...);
            },
            const_cast<void*>(static_cast<const void*>(&f)));
    }

    Ret operator()(Args... a) const { return fn_(ctx_, std::forward<Args>(a)...); }
    explicit operator bool() const noexcept { return fn_ != nullptr; }
    void* context() const noexcept { return ctx_; }

private:
    function_type fn_ = nullptr;
    void* ctx_ = nullptr;
};

// ------------------------------------------------------------------------------------------
// Capabilities.

/// A capability a patch may need from the model.
enum class capability : std::uint8_t {
    block_hooks,     ///< calls output-block hooks with an explicit block_site (FreeU)
    attention_hooks, ///< lets hooks read / replace self-attention at an attention_site (SAG, PAG)
    input_block_hooks,      ///< calls input-block hooks that may resize h (Deep Shrink)
    attention_output_hooks, ///< calls hooks on each self-attention output (NAG)
    block_skipping,         ///< honours per-pass requests to skip DiT blocks (SLG)
    batched_passes          ///< evaluates the prompts of one evaluation in one call (predict_batch)
};

inline const char* capability_name(capability c) noexcept {
    switch (c) {
    case capability::block_hooks: return "block hooks";
    case capability::attention_hooks: return "attention hooks";
    case capability::input_block_hooks: return "input-block hooks";
    case capability::attention_output_hooks: return "attention-output hooks";
    case capability::block_skipping: return "block skipping";
    case capability::batched_passes: return "batched evaluation of the prompts (predict_batch)";
    }
    return "?";
}

/// The model calls output-block hooks (compile-time declaration).
template <class M>
concept block_hookable = requires {
    requires static_cast<bool>(std::remove_cvref_t<M>::calls_block_hooks);
};

/// The model calls attention hooks (compile-time declaration).
template <class M>
concept attention_hookable = requires {
    requires static_cast<bool>(std::remove_cvref_t<M>::calls_attention_hooks);
};

/// The model calls input-block hooks (compile-time declaration).
template <class M>
concept input_block_hookable = requires {
    requires static_cast<bool>(std::remove_cvref_t<M>::calls_input_block_hooks);
};

/// The model calls attention-output hooks (compile-time declaration).
template <class M>
concept attention_output_hookable = requires {
    requires static_cast<bool>(std::remove_cvref_t<M>::calls_attention_output_hooks);
};

/// The model honours block-skip requests (compile-time declaration).
template <class M>
concept block_skipping_model = requires {
    requires static_cast<bool>(std::remove_cvref_t<M>::skips_blocks);
};

/// The model answers supports(capability) at run time.
template <class M>
concept runtime_capabilities = requires(const M& m, capability c) {
    { m.supports(c) } -> std::convertible_to<bool>;
};

// ------------------------------------------------------------------------------------------
// Attention tensors as an engine's self-attention sees them.

/// Self-attention inputs at one site: q, k, v are (batch, tokens, heads * dim_head), the
/// projections before heads are split (ComfyUI's attn1 replacement arguments).
template <class T>
struct attention_tensors {
    view<const T, 3> q;
    view<const T, 3> k;
    view<const T, 3> v;
    index_t heads = 1;
};

/// Does `pattern` name `site`? A pattern whose transformer index is negative matches every
/// transformer block of its block (ComfyUI's two-part attn1 key, e.g. PAG's ("middle", 0)).
inline bool site_matches(const attention_site& pattern, const attention_site& site) noexcept {
    return pattern.stage == site.stage && pattern.block == site.block &&
           (pattern.transformer < 0 || pattern.transformer == site.transformer);
}

// ------------------------------------------------------------------------------------------
// call_overrides: the hooks attached to one model call. Fixed capacity, never allocates.

/// Where an input-block hook runs: before the block's output is stored as the skip connection
/// (ComfyUI's input_block_patch: the skip sees the hooked h) or after it
/// (input_block_patch_after_skip: the skip keeps the block's own output).
enum class input_block_point : std::uint8_t { before_skip, after_skip };

template <class T>
class call_overrides {
public:
    /// FreeU-style output-block patch: modifies h and hsp in place.
    using output_block_fn = callback<void(const block_site&, view<T, 4> h, view<T, 4> hsp)>;
    /// Reads the softmax probabilities of a self-attention: (batch * heads, queries, keys),
    /// batch-major (ComfyUI's `sim` layout), with the number of heads.
    using attention_read_fn =
        callback<void(const attention_site&, view<const T, 3> probabilities, index_t heads)>;
    /// Replaces a self-attention: writes (batch, queries, heads * dim_head), the value that
    /// would go into the output projection (to_out).
    using attention_replace_fn =
        callback<void(const attention_site&, const attention_tensors<T>&, view<T, 3> out)>;
    /// Input-block patch (Deep Shrink): returns h, possibly a new view of another spatial size
    /// held by the run's scratch arena (valid until the model call returns).
    using input_block_fn = callback<view<T, 4>(const block_site&, view<T, 4> h)>;
    /// Resizing output-block patch (Deep Shrink): returns h resized to hsp's spatial size.
    using output_resize_fn = callback<view<T, 4>(const block_site&, view<T, 4> h, view<T, 4> hsp)>;
    /// Self-attention output patch (NAG): rewrites the attention output (batch, tokens, dim)
    /// in place, before the output projection. `prompts` says which prompt each batch item is.
    using attention_output_fn =
        callback<void(const attention_site&, view<T, 3> out, std::span<const pass_kind> prompts)>;

    static constexpr std::size_t capacity = 8;

    // --- what patches (and the guider) attach -----------------------------------------------

    /// Append an output-block hook; hooks run in the order added.
    void add_output_block(output_block_fn fn) {
        PATCHBAY_REQUIRE(static_cast<bool>(fn), "call_overrides::add_output_block", "the hook is empty");
        PATCHBAY_REQUIRE(n_block_ < capacity, "call_overrides::add_output_block",
                "more than 8 output-block hooks on one model call");
        resize_[n_block_] = {};
        block_[n_block_++] = fn;
    }

    /// Ask for the attention probabilities at `site` (transformer < 0: every transformer).
    void read_attention(const attention_site& site, attention_read_fn fn) {
        PATCHBAY_REQUIRE(static_cast<bool>(fn), "call_overrides::read_attention", "the hook is empty");
        PATCHBAY_REQUIRE(n_read_ < capacity, "call_overrides::read_attention",
                "more than 8 attention readers on one model call");
        read_[n_read_++] = {site, fn};
    }

    /// Replace the self-attention at `site`. A second replacement for the same site pattern
    /// replaces the first (ComfyUI's set_model_options_patch_replace overwrites its key).
    void replace_attention(const attention_site& site, attention_replace_fn fn) {
        PATCHBAY_REQUIRE(static_cast<bool>(fn), "call_overrides::replace_attention", "the hook is empty");
        for (std::size_t i = 0; i < n_replace_; ++i)
            if (replace_[i].site == site) {
                replace_[i].fn = fn;
                return;
            }
        PATCHBAY_REQUIRE(n_replace_ < capacity, "call_overrides::replace_attention",
                "more than 8 attention replacements on one model call");
        replace_[n_replace_++] = {site, fn};
    }

    /// Append an input-block hook running before or after the skip connection is stored; the
    /// hooks of each point run in the order added, each on the previous one's h.
    void add_input_block(input_block_fn fn, input_block_point at = input_block_point::before_skip) {
        PATCHBAY_REQUIRE(static_cast<bool>(fn), "call_overrides::add_input_block", "the hook is empty");
        PATCHBAY_REQUIRE(n_input_ < capacity, "call_overrides::add_input_block",
                "more than 8 input-block hooks on one model call");
        input_at_[n_input_] = at;
        input_[n_input_++] = fn;
    }

    /// Append a resizing output-block hook (runs in order with the in-place ones).
    void add_output_resize(output_resize_fn fn) {
        PATCHBAY_REQUIRE(static_cast<bool>(fn), "call_overrides::add_output_resize", "the hook is empty");
        PATCHBAY_REQUIRE(n_block_ < capacity, "call_overrides::add_output_resize",
                "more than 8 output-block hooks on one model call");
        block_[n_block_] = {};
        resize_[n_block_++] = fn;
    }

    /// Patch every self-attention output at sites matching `site` (transformer < 0: all).
    void add_attention_output(const attention_site& site, attention_output_fn fn) {
        PATCHBAY_REQUIRE(static_cast<bool>(fn), "call_overrides::add_attention_output", "the hook is empty");
        PATCHBAY_REQUIRE(n_attn_out_ < capacity, "call_overrides::add_attention_output",
                "more than 8 attention-output hooks on one model call");
        attn_out_[n_attn_out_++] = {site, fn};
    }

    /// Ask the model to skip a transformer block in this call (SLG).
    void skip_block(const dit_block_site& site) {
        if (skips(site)) return;
        PATCHBAY_REQUIRE(n_skip_ < skip_.size(), "call_overrides::skip_block",
                "more than 64 skipped blocks on one model call");
        skip_[n_skip_++] = site;
    }

    /// Append every hook of another override set (used for re-evaluations with extra hooks).
    void append(const call_overrides& other) {
        if (!scratch_) scratch_ = other.scratch_;
        for (std::size_t i = 0; i < other.n_input_; ++i) add_input_block(other.input_[i], other.input_at_[i]);
        for (std::size_t i = 0; i < other.n_attn_out_; ++i)
            add_attention_output(other.attn_out_[i].site, other.attn_out_[i].fn);
        for (std::size_t i = 0; i < other.n_skip_; ++i) skip_block(other.skip_[i]);
        for (std::size_t i = 0; i < other.n_block_; ++i) {
            if (other.resize_[i]) add_output_resize(other.resize_[i]);
            else add_output_block(other.block_[i]);
        }
        for (std::size_t i = 0; i < other.n_read_; ++i)
            read_attention(other.read_[i].site, other.read_[i].fn);
        for (std::size_t i = 0; i < other.n_replace_; ++i)
            replace_attention(other.replace_[i].site, other.replace_[i].fn);
    }

    void clear() noexcept { n_block_ = n_read_ = n_replace_ = n_input_ = n_attn_out_ = n_skip_ = 0; }
    bool empty() const noexcept {
        return n_block_ == 0 && n_read_ == 0 && n_replace_ == 0 && n_input_ == 0 && n_attn_out_ == 0 &&
               n_skip_ == 0;
    }

    // --- what the model (engine) calls -------------------------------------------------------

    bool has_output_block_hooks() const noexcept { return n_block_ != 0; }
    bool has_attention_hooks() const noexcept { return n_read_ != 0 || n_replace_ != 0; }

    bool has_input_block_hooks() const noexcept { return n_input_ != 0; }
    bool has_attention_output_hooks() const noexcept { return n_attn_out_ != 0; }

    /// Run the output-block hooks in order on (h, hsp). Call it in the decoder for every
    /// output block, just before h and hsp are concatenated, and continue with the h it
    /// returns: in-place hooks (FreeU) keep h, a resizing hook (Deep Shrink) returns h at
    /// hsp's spatial size, held by the run's scratch until the model call returns.
    view<T, 4> apply_output_block(const block_site& site, view<T, 4> h, view<T, 4> hsp) const {
        block_site s = site;
        s.scratch = scratch_;
        for (std::size_t i = 0; i < n_block_; ++i) {
            if (resize_[i]) h = resize_[i](s, h, hsp);
            else block_[i](s, h, hsp);
        }
        return h;
    }

    /// Run the before-skip input-block hooks in order on h, after each input block and before
    /// h is stored as the skip connection; continue with the h it returns (its spatial size
    /// may differ).
    view<T, 4> apply_input_block(const block_site& site, view<T, 4> h) const {
        return run_input_block(site, h, input_block_point::before_skip);
    }

    /// Run the after-skip input-block hooks in order on h, after the skip connection is stored.
    view<T, 4> apply_input_block_after_skip(const block_site& site, view<T, 4> h) const {
        return run_input_block(site, h, input_block_point::after_skip);
    }

    /// The run's scratch arena, which block hooks receive in block_site::scratch (set by the
    /// dispatcher; null for overrides an engine builds itself).
    workspace* scratch() const noexcept { return scratch_; }
    void set_scratch(workspace* ws) noexcept { scratch_ = ws; }

    /// Run the attention-output hooks matching `site` on a self-attention output, in place.
    void apply_attention_output(const attention_site& site, view<T, 3> out,
                                std::span<const pass_kind> prompts) const {
        for (std::size_t i = 0; i < n_attn_out_; ++i)
            if (site_matches(attn_out_[i].site, site)) attn_out_[i].fn(site, out, prompts);
    }

    /// Does this call ask the model to skip the block?
    bool skips(const dit_block_site& site) const noexcept {
        for (std::size_t i = 0; i < n_skip_; ++i)
            if (skip_[i] == site) return true;
        return false;
    }

    /// The replacement for a site, or an empty callback. An exact site beats a pattern that
    /// matches every transformer (ComfyUI looks up the three-part key first).
    attention_replace_fn attention_replacement(const attention_site& site) const noexcept {
        for (std::size_t i = 0; i < n_replace_; ++i)
            if (replace_[i].site == site) return replace_[i].fn;
        for (std::size_t i = 0; i < n_replace_; ++i)
            if (site_matches(replace_[i].site, site)) return replace_[i].fn;
        return {};
    }

    /// True when some hook wants the probabilities at this site: the engine must then compute
    /// the attention explicitly (softmax(q k^T / sqrt(dim_head))) and call
    /// on_attention_probabilities before using them.
    bool reads_attention(const attention_site& site) const noexcept {
        for (std::size_t i = 0; i < n_read_; ++i)
            if (site_matches(read_[i].site, site)) return true;
        return false;
    }

    /// Hand the probabilities at a site to every reader that asked for it.
    void on_attention_probabilities(const attention_site& site, view<const T, 3> probabilities,
                                    index_t heads) const {
        for (std::size_t i = 0; i < n_read_; ++i)
            if (site_matches(read_[i].site, site)) read_[i].fn(site, probabilities, heads);
    }

private:
    view<T, 4> run_input_block(const block_site& site, view<T, 4> h, input_block_point at) const {
        block_site s = site;
        s.scratch = scratch_;
        for (std::size_t i = 0; i < n_input_; ++i)
            if (input_at_[i] == at) h = input_[i](s, h);
        return h;
    }

    struct read_entry {
        attention_site site;
        attention_read_fn fn;
    };
    struct replace_entry {
        attention_site site;
        attention_replace_fn fn;
    };
    struct attention_output_entry {
        attention_site site;
        attention_output_fn fn;
    };
    std::array<output_block_fn, capacity> block_{};
    std::array<output_resize_fn, capacity> resize_{}; ///< set where block_ holds a resizing hook
    std::array<input_block_fn, capacity> input_{};
    std::array<input_block_point, capacity> input_at_{};
    std::array<read_entry, capacity> read_{};
    std::array<replace_entry, capacity> replace_{};
    std::array<attention_output_entry, capacity> attn_out_{};
    std::array<dit_block_site, 64> skip_{};
    std::size_t n_block_ = 0, n_read_ = 0, n_replace_ = 0, n_input_ = 0, n_attn_out_ = 0, n_skip_ = 0;
    workspace* scratch_ = nullptr;
};

// ------------------------------------------------------------------------------------------
// model_call and the Model concept.

namespace detail {
template <class M>
struct conditioning_of {
    using type = void;
};
template <class M>
    requires requires { typename M::conditioning_type; }
struct conditioning_of<M> {
    using type = typename M::conditioning_type;
};
} // namespace detail

/// The engine's own conditioning type (Model::conditioning_type; void if it declares none).
template <class M>
using conditioning_t = typename detail::conditioning_of<std::remove_cvref_t<M>>::type;

/// One model evaluation.
template <class Cond, class T, std::size_t R>
struct model_call {
    view<const T, R> x;     ///< the noisy latent (already inpainting-blended by the guider)
    view<const T, 1> sigma; ///< one noise level per batch item
    pass_kind pass = pass_kind::cond;   ///< cond, uncond, or a re-evaluation by a post-cfg hook
    pass_kind prompt = pass_kind::cond; ///< which prompt `conditioning` is: cond, uncond or extra
    const Cond* conditioning = nullptr; ///< the engine's conditioning for that prompt
    const call_overrides<T>* overrides = nullptr; ///< hooks for this call (never null from the guider)
};

/// One prompt's items in a batched model call: items [first, first + count) of the call's
/// batch are this prompt, evaluated with these hooks.
template <class Cond, class T>
struct prompt_items {
    pass_kind pass = pass_kind::cond;
    pass_kind prompt = pass_kind::cond;
    const Cond* conditioning = nullptr;
    index_t first = 0;
    index_t count = 0;
    const call_overrides<T>* overrides = nullptr;
};

/// The prompts of one model evaluation as one call (ComfyUI's calc_cond_batch): the latent
/// repeated once per prompt along dim 0, prompt after prompt, and one sigma per item. The model
/// writes every item's denoised prediction and applies each prompt's hooks to its items only
/// (block hooks on the batch slice; attention-output hooks see which prompt each item is).
template <class Cond, class T, std::size_t R>
struct batched_call {
    view<const T, R> x;
    view<const T, 1> sigma;
    std::span<const prompt_items<Cond, T>> prompts;
};

/// Optional capability: the model evaluates the prompts of one evaluation in one call. The
/// guider uses it when present (results must equal one predict() per prompt) and falls back to
/// one call per prompt otherwise.
template <class M, class T = float, std::size_t R = 4>
concept batched_model =
    requires(M& m, const batched_call<conditioning_t<M>, T, R>& call, view<T, R> out) { m.predict_batch(call, out); };

/// The Model concept: predict(call, out) writes the denoised prediction.
template <class M, class T = float, std::size_t R = 4>
concept diffusion_model =
    requires(M& m, const model_call<conditioning_t<M>, T, R>& call, view<T, R> out) {
        m.predict(call, out);
    };

/// Does model M provide capability c? Compile-time declarations first; otherwise ask the
/// model at run time; a model that declares neither lacks it.
template <class M>
bool model_supports(const M& m, capability c) {
    if (c == capability::block_hooks && block_hookable<M>) return true;
    if (c == capability::attention_hooks && attention_hookable<M>) return true;
    if (c == capability::input_block_hooks && input_block_hookable<M>) return true;
    if (c == capability::attention_output_hooks && attention_output_hookable<M>) return true;
    if (c == capability::block_skipping && block_skipping_model<M>) return true;
    if (c == capability::batched_passes && batched_model<M, float, 4>) return true;
    if constexpr (runtime_capabilities<M>) return static_cast<bool>(m.supports(c));
    else return false;
}

// ------------------------------------------------------------------------------------------
// model_access: what a post-cfg hook receives to evaluate the model again (SAG, PAG).

template <class T, std::size_t R>
class model_access {
public:
    using evaluate_fn = callback<void(pass_kind prompt, view<const T, R> x, view<T, R> out,
                                      const call_overrides<T>* extra)>;

    explicit model_access(evaluate_fn fn) noexcept : fn_(fn) {}

    /// Evaluate the model once more (pass_kind::reevaluation) at this step's sigma, on `x`
    /// with the cond or uncond prompt, writing the denoised prediction to `out`. The step's
    /// block hooks and other patches' on_model_call hooks apply as to any call; `extra` adds
    /// hooks for this call only (a replacement here overrides one for the same site).
    void evaluate(pass_kind prompt, std::type_identity_t<view<const T, R>> x, view<T, R> out,
                  const call_overrides<T>* extra = nullptr) const {
        PATCHBAY_REQUIRE(prompt == pass_kind::cond || prompt == pass_kind::uncond || prompt == pass_kind::extra,
                "model_access::evaluate", "argument 'prompt' must be pass_kind::cond, uncond or extra");
        fn_(prompt, x, out, extra);
    }

private:
    evaluate_fn fn_;
};

} // namespace patchbay
