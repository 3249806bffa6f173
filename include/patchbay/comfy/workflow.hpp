// patchbay: import the model patches of a ComfyUI API-format workflow (optional header; needs
// nlohmann-json). Not a paper: it reads the JSON ComfyUI posts to /prompt ("Save (API)"), the
// format of script_examples/basic_api_example.py.
//
// A workflow is an object keyed by node id ("3", "57:11", ...), each node
// {"class_type", "inputs", "_meta"}; a linked input is ["<source id>", <output index>]. The
// importer starts at the sampler node (KSampler, KSamplerAdvanced, SamplerCustom, or
// SamplerCustomAdvanced through its CFGGuider / BasicGuider / DualCFGGuider), follows the
// `model` links back to the loader and turns every patch node on the way into a patchbay patch
// config, validated against the node's declared range. ComfyUI applies the node nearest the
// loader first, so `workflow::patches` lists them in that order (pre/post-cfg and block hooks
// run in that order). Where ComfyUI lets a later node silently replace an earlier one (a second
// cfg function, mask function or model sampling), patchbay rejects the workflow and names both.
//
// Two steps: parse_workflow() -> `workflow` (a plain description: patch configs, the model
// sampling, the sampler's settings), then build_chain<Model>() -> patch_chain<Model>.
// docs/workflow_import.md lists the nodes, the options and the errors.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "patchbay/core/cfg_chain.hpp"
#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/builtins.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay::comfy {

/// One patch node's configuration: a patchbay patch of any type (built-in or registered by
/// the engine) with the node's inputs.
using patch_config = any_patch;

class node_reader;
/// Parses one workflow node into a patch (patch_parser<P> for a described P).
using node_parse_fn = any_patch (*)(node_reader&);

/// A node class patchbay turns into a patch: its ComfyUI class_type and the parser.
struct node_class {
    std::string class_type;
    node_parse_fn parse = nullptr;
    const patch_vtable* patch = nullptr; ///< the patch type's table (descriptor inputs, slot, ...)
};

/// A node of the workflow, as the description names it.
struct node_info {
    std::string id;         ///< the workflow's key ("12", "57:11")
    std::string class_type; ///< ComfyUI's node class
    std::string title;      ///< _meta.title when present
};

/// A patch node on the model path.
struct workflow_patch {
    std::string node_id;
    std::string class_type;
    std::string title;
    patch_config config;
    /// patchbay's own optional inputs start_percent / end_percent on a guidance node that does
    /// not declare them (ComfyUI's edge rules; see step_window).
    step_window window;

    /// The hook slot the patch occupies (CFGNorm with pre_cfg = true: the cfg function).
    hook_kind slot() const;
};

/// The model sampling the workflow's ModelSampling* / ModelNoiseScale nodes install, applied
/// in order (the last object node and what follows it).
struct workflow_sampling {
    node_info node;           ///< the model-sampling node nearest the sampler
    model_sampling sampling;  ///< the nodes applied in order
    std::string spec;         ///< the same, in model_sampling::from_comfy syntax ("A -> B")
};

/// What the sampler node says about the run. Values that are links patchbay cannot evaluate
/// (e.g. a seed from a custom node) stay empty.
struct sampler_settings {
    node_info node;  ///< KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced
    node_info guider; ///< SamplerCustomAdvanced only: the CFGGuider / BasicGuider / DualCFGGuider
    std::optional<double> cfg; ///< cond_scale (BasicGuider: 1; DualCFGGuider: cfg_conds)
    std::optional<double> cfg_cond2_negative; ///< DualCFGGuider only
    std::optional<std::int64_t> steps;
    /// KSamplerSelect's for the custom samplers; a SamplerEulerCFGpp node gives "euler_cfg_pp",
    /// a SamplerEulerAncestralCFGPP node "euler_ancestral_cfg_pp"
    std::optional<std::string> sampler_name;
    std::optional<double> eta;     ///< SamplerEulerAncestralCFGPP's eta (sample_options::eta)
    std::optional<double> s_noise; ///< SamplerEulerAncestralCFGPP's s_noise (sample_options::s_noise)
    std::optional<std::string> scheduler;    ///< BasicScheduler's for the custom samplers
    std::optional<std::uint64_t> seed;       ///< seed / noise_seed / RandomNoise's noise_seed
    std::optional<double> denoise;
};

/// The model patches a workflow describes, in the order ComfyUI applies them.
struct workflow {
    std::vector<workflow_patch> patches;     ///< nearest the loader first
    std::vector<workflow_patch> sampling_nodes; ///< the model-sampling nodes, nearest the loader first
    std::optional<workflow_sampling> sampling; ///< none: the checkpoint's own model sampling
    sampler_settings sampler;
    node_info loader;                        ///< the node that ends the model path
    std::vector<node_info> pass_through;     ///< LoraLoader, ... on the path (loader side first)
    std::vector<node_info> skipped;          ///< unknown patch nodes skipped on request

    /// A readable listing of the patch stack (one line per item).
    std::string describe() const;
};

/// Import choices, and the model facts some patches need but a workflow does not carry.
struct import_options {
    /// Id of the sampler node to follow when the workflow has more than one (hires fix,
    /// refiner); empty = the workflow must have exactly one sampler node.
    std::string sampler_node;
    /// Unknown patch nodes (a node with a `model` link that patchbay does not implement, e.g.
    /// CFGZeroStar) are an error; true skips them (listed in workflow::skipped).
    bool skip_unknown_patches = false;
    /// Inputs of a patch node that the node does not declare are an error; true ignores them.
    bool allow_unknown_inputs = false;
    /// Node classes (besides LoraLoader, LoraLoaderModelOnly) that pass the model through
    /// without patching it: followed through their `model` input.
    std::vector<std::string> pass_through_classes;
    /// FreeU / FreeU_V2: the UNet's base channel count (320 for SD1.x and SDXL).
    index_t model_channels = 320;
    /// RenormCFG: the model's in_channels (0 = every channel).
    index_t in_channels = 0;
    /// Further model facts by name (a descriptor's model_fact inputs), for engine patches.
    std::vector<std::pair<std::string, double>> model_facts;
    /// Node classes of the engine's own: a class_type mapped to a patch type with a
    /// descriptor (add_node<P>()). They take precedence over the built-in classes.
    std::vector<node_class> custom_nodes;

    /// Map `class_type` (default: P's descriptor class_type) to the engine's patch type P.
    template <described P>
    import_options& add_node(std::string class_type = std::string(P::descriptor().class_type));

    /// The value of a model fact: model_channels, in_channels, model_facts, else `fallback`.
    double model_fact(std::string_view name, double fallback) const {
        if (name == "model_channels") return static_cast<double>(model_channels);
        if (name == "in_channels") return static_cast<double>(in_channels);
        for (const auto& [k, v] : model_facts)
            if (k == name) return v;
        return fallback;
    }
};

/// Nodes that take a model and return it unpatched (as far as guidance is concerned).
inline constexpr std::string_view builtin_pass_through_classes[] = {"LoraLoader",
                                                                    "LoraLoaderModelOnly"};
/// The sampler nodes a workflow may end in.
inline constexpr std::string_view sampler_classes[] = {"KSampler", "KSamplerAdvanced",
                                                       "SamplerCustom", "SamplerCustomAdvanced"};

/// The built-in node classes (the patches above), for listing and for engines that extend them.
std::span<const node_class> builtin_node_classes();

/// What a node parser reads: one node's inputs, checked against a descriptor's kinds and
/// ranges, with errors naming the node. The importer implements it.
class node_reader {
public:
    virtual ~node_reader() = default;
    virtual const std::string& class_type() const = 0;
    /// "workflow node '12' (APG)", for messages.
    virtual std::string where() const = 0;
    /// Every input the node has must be "model" or in `declared` (unless the options allow it).
    virtual void only_inputs(std::span<const std::string_view> declared) const = 0;
    virtual bool has(std::string_view name) const = 0;
    virtual double number(std::string_view name, double lo, double hi, std::optional<double> fallback) const = 0;
    virtual std::int64_t integer(std::string_view name, double lo, double hi, std::optional<double> fallback) const = 0;
    virtual bool boolean(std::string_view name, std::optional<bool> fallback) const = 0;
    virtual std::string choice(std::string_view name, std::span<const std::string_view> options,
                               std::optional<std::string_view> fallback) const = 0;
    virtual std::string text(std::string_view name, std::optional<std::string_view> fallback) const = 0;
    /// The node a LINK input points to (through Reroutes); empty when an optional link is absent.
    virtual node_link linked(std::string_view name, bool optional) const = 0;
    /// A reader for the node a LINK input points to (a LATENT_OPERATION node, ...).
    virtual std::unique_ptr<node_reader> follow(std::string_view name) const = 0;
    virtual double model_fact(std::string_view name, double fallback) const = 0;
};

/// Parse a node into P through its descriptor (the importer's only per-patch code).
template <described P>
P parse_node(node_reader& r);

/// Read a parsed API-format workflow (also accepted: the posted form {"prompt": {...}}).
workflow parse_workflow(const nlohmann::json& prompt, const import_options& options = {});
/// Parse JSON text, then parse_workflow. Malformed JSON is a patchbay::error.
workflow parse_workflow_text(std::string_view text, const import_options& options = {});
/// Read a file, then parse_workflow_text.
workflow parse_workflow_file(const std::filesystem::path& path, const import_options& options = {});

/// The patch_chain the workflow describes, over `model`: its patches in ComfyUI's order, with
/// the workflow's model sampling, or `checkpoint_sampling` when the workflow has no
/// ModelSampling* node (the model's own). A patch the model cannot host (FreeU without block
/// hooks, SAG/PAG without attention hooks) is a patchbay::error naming the node.
template <class Model>
patch_chain<Model> build_chain(const workflow& wf, Model& model, const model_sampling& checkpoint_sampling);
/// The same for a workflow that has a ModelSampling* node (an error otherwise).
template <class Model>
patch_chain<Model> build_chain(const workflow& wf, Model& model);

/// The node class a patch config comes from ("RescaleCFG", ...).
std::string_view class_of(const patch_config& config);
/// The config as text: "RescaleCFG(multiplier=0.7)".
std::string to_string(const patch_config& config);

// ------------------------------------------------------------------------------------------
// Implementation

namespace workflow_detail {

using json = nlohmann::json;

inline std::string num(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

inline bool in_list(std::string_view s, std::initializer_list<std::string_view> list) {
    for (auto v : list)
        if (v == s) return true;
    return false;
}
template <std::size_t N>
bool in_list(std::string_view s, const std::string_view (&list)[N]) {
    for (auto v : list)
        if (v == s) return true;
    return false;
}

/// A JSON value as it appears in a message: its type and (shortened) text.
inline std::string show(const json& j) {
    std::string text = j.dump();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    return std::string(j.type_name()) + " " + text;
}

inline std::string quote(std::string_view s) {
    std::string q;
    q.reserve(s.size() + 2);
    q += '\'';
    q.append(s);
    q += '\'';
    return q;
}

struct link {
    std::string source;
    std::int64_t output = 0;
};

/// One workflow node with its id, for reading inputs and naming it in errors.
struct node_ref {
    const std::string* id = nullptr;
    const json* node = nullptr;
    std::string class_type;
    std::string title;

    const json& inputs() const { return node->at("inputs"); }
    const json* input(std::string_view name) const {
        const json& in = inputs();
        const auto it = in.find(std::string(name));
        return it == in.end() ? nullptr : &*it;
    }
    std::string where() const { return "workflow node " + quote(*id) + " (" + class_type + ")"; }
    node_info info() const { return {*id, class_type, title}; }
};

inline bool is_link(const json& v) { return v.is_array(); }

class importer {
public:
    importer(const json& prompt, const import_options& opts) : prompt_(prompt), opts_(opts) {}

    workflow run() {
        check_nodes();
        workflow wf;
        const node_ref sampler = find_sampler();
        wf.sampler.node = sampler.info();
        const auto [model_owner, model_link] = read_sampler(sampler, wf.sampler);
        walk(model_owner, model_link, wf);
        if (guider_patch_) wf.patches.push_back(std::move(*guider_patch_));
        return wf;
    }

private:
    const json& prompt_;
    const import_options& opts_;
    mutable std::optional<workflow_patch> guider_patch_; ///< a multi-prompt GUIDER node, if any

    // ---- nodes and links ------------------------------------------------------------------

    void check_nodes() const {
        if (!prompt_.is_object())
            fail("workflow", "the workflow must be a JSON object keyed by node id, got " +
                                 std::string(prompt_.type_name()));
        if (prompt_.contains("nodes") && prompt_.contains("links") && prompt_["nodes"].is_array())
            fail("workflow", "this is a UI-format workflow (\"nodes\"/\"links\" arrays); export "
                             "it with \"Save (API)\" / \"Export (API)\" to get the API format");
        for (const auto& [id, node] : prompt_.items()) {
            const std::string where = "workflow node " + quote(id);
            if (!node.is_object())
                fail(where, "must be an object {\"class_type\", \"inputs\"}, got " + show(node));
            const auto ct = node.find("class_type");
            if (ct == node.end()) fail(where, "has no 'class_type'");
            if (!ct->is_string()) fail(where, "'class_type' must be a string, got " + show(*ct));
            const auto in = node.find("inputs");
            if (in == node.end()) fail(where + " (" + ct->get<std::string>() + ")", "has no 'inputs'");
            if (!in->is_object())
                fail(where + " (" + ct->get<std::string>() + ")",
                     "'inputs' must be an object, got " + show(*in));
        }
    }

    node_ref ref(const std::string& id) const {
        const auto it = prompt_.find(id);
        node_ref r;
        r.id = &it.key();
        r.node = &*it;
        r.class_type = it->at("class_type").get<std::string>();
        if (const auto meta = it->find("_meta"); meta != it->end() && meta->is_object())
            if (const auto t = meta->find("title"); t != meta->end() && t->is_string())
                r.title = t->get<std::string>();
        return r;
    }

    link parse_link(const node_ref& owner, std::string_view input, const json& v) const {
        const auto whole = [](const json& e) {
            return e.is_number_integer() && (e.is_number_unsigned() || e.get<std::int64_t>() >= 0);
        };
        const bool ok_shape = v.is_array() && v.size() == 2 && (v[0].is_string() || whole(v[0])) &&
                              whole(v[1]) && v[1].get<std::uint64_t>() < (1u << 30);
        if (!ok_shape)
            fail(owner.where(), "input " + quote(input) +
                                    " is a malformed link (expected [\"<node id>\", <output index>]), got " +
                                    show(v));
        link l;
        l.source = v[0].is_string() ? v[0].get<std::string>() : std::to_string(v[0].get<std::uint64_t>());
        l.output = static_cast<std::int64_t>(v[1].get<std::uint64_t>());
        if (!prompt_.contains(l.source))
            fail(owner.where(), "input " + quote(input) + " links to node " + quote(l.source) +
                                    ", which is not in the workflow (dangling link)");
        return l;
    }

    /// A Reroute's one input (named "", "input", ... depending on the exporter) and its link.
    std::pair<std::string, link> reroute_input(const node_ref& n) const {
        const json& in = n.inputs();
        if (in.size() != 1 || !is_link(in.begin().value()))
            fail(n.where(), "a Reroute needs exactly one linked input, got " + show(in));
        return {in.begin().key(), parse_link(n, in.begin().key(), in.begin().value())};
    }

    /// Follow a link through Reroute nodes to the node that produces the value.
    std::pair<node_ref, link> through_reroutes(const node_ref& owner, std::string_view input,
                                               link l) const {
        std::set<std::string> seen;
        node_ref cur_owner = owner;
        std::string cur_input(input);
        for (;;) {
            node_ref n = ref(l.source);
            if (n.class_type != "Reroute") return {n, l};
            if (!seen.insert(l.source).second)
                fail(cur_owner.where(), "input " + quote(cur_input) +
                                            ": link cycle through Reroute node " + quote(l.source));
            std::tie(cur_input, l) = reroute_input(n);
            cur_owner = n;
        }
    }

    // ---- reading input values ------------------------------------------------------------

    /// The constant behind an input: inline, or a link (through Reroutes) to a Primitive* node.
    /// nullptr when absent. A link to anything else is an error when `required_constant`,
    /// else nullptr.
    const json* constant(const node_ref& n, std::string_view name, bool required_constant) const {
        const json* v = n.input(name);
        if (v == nullptr || !is_link(*v)) return v;
        const node_ref src = through_reroutes(n, name, parse_link(n, name, *v)).first;
        if (in_list(src.class_type, {"PrimitiveFloat", "PrimitiveInt", "PrimitiveBoolean",
                                     "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveNode"})) {
            if (const json* pv = src.input("value"); pv != nullptr && !is_link(*pv)) return pv;
        }
        if (!required_constant) return nullptr;
        fail(n.where(), "input " + quote(name) + " is linked to node " + quote(*src.id) + " (" +
                            src.class_type + "), whose value patchbay cannot evaluate; use a "
                            "constant (widget) value");
    }

    const json* need(const node_ref& n, std::string_view name, bool optional) const {
        const json* v = constant(n, name, true);
        if (v == nullptr && !optional) fail(n.where(), "required input " + quote(name) + " is missing");
        return v;
    }

    double number(const node_ref& n, std::string_view name, double lo, double hi,
                  std::optional<double> fallback = std::nullopt) const {
        const json* v = need(n, name, fallback.has_value());
        if (v == nullptr) return *fallback;
        if (!v->is_number())
            fail(n.where(), "input " + quote(name) + " must be a number, got " + show(*v));
        const double d = v->get<double>();
        if (!(d >= lo && d <= hi))
            fail(n.where(), "input " + quote(name) + " must be in [" + num(lo) + ", " + num(hi) +
                                "], got " + num(d));
        return d;
    }

    std::int64_t integer(const node_ref& n, std::string_view name, std::int64_t lo, std::int64_t hi) const {
        const json* v = need(n, name, false);
        const bool integral = v->is_number_integer() ||
                              (v->is_number_float() && std::isfinite(v->get<double>()) &&
                               v->get<double>() == std::floor(v->get<double>()));
        if (!integral) fail(n.where(), "input " + quote(name) + " must be an integer, got " + show(*v));
        const double d = v->get<double>();
        if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
            fail(n.where(), "input " + quote(name) + " must be in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "], got " + v->dump());
        if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)))
            fail(n.where(), "input " + quote(name) + " must be in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "], got " + v->dump());
        return v->is_number_integer() ? v->get<std::int64_t>() : static_cast<std::int64_t>(d);
    }

    bool boolean(const node_ref& n, std::string_view name, std::optional<bool> fallback) const {
        const json* v = need(n, name, fallback.has_value());
        if (v == nullptr) return *fallback;
        if (!v->is_boolean())
            fail(n.where(), "input " + quote(name) + " must be a boolean (true/false), got " + show(*v));
        return v->get<bool>();
    }

    std::string choice(const node_ref& n, std::string_view name,
                       std::initializer_list<std::string_view> options) const {
        return choice(n, name, std::span<const std::string_view>(options.begin(), options.size()));
    }
    std::string choice(const node_ref& n, std::string_view name, std::span<const std::string_view> options) const {
        const json* v = need(n, name, false);
        std::string list;
        for (auto o : options) list += (list.empty() ? "" : ", ") + std::string(o);
        if (!v->is_string())
            fail(n.where(), "input " + quote(name) + " must be one of " + list + ", got " + show(*v));
        const std::string s = v->get<std::string>();
        bool found = false;
        for (auto o : options) found = found || o == s;
        if (!found)
            fail(n.where(), "input " + quote(name) + " must be one of " + list + ", got '" + s + "'");
        return s;
    }

    /// Every input of a patch node must be one the node declares (unless allowed).
    void only_inputs(const node_ref& n, std::initializer_list<std::string_view> declared) const {
        only_inputs(n, std::span<const std::string_view>(declared.begin(), declared.size()));
    }
    void only_inputs(const node_ref& n, std::span<const std::string_view> declared) const {
        if (opts_.allow_unknown_inputs) return;
        for (const auto& [key, value] : n.inputs().items()) {
            bool known = key == "model";
            for (auto d : declared) known = known || d == key;
            if (known) continue;
            std::string list = "model";
            for (auto d : declared) list += ", " + std::string(d);
            fail(n.where(), "unknown input " + quote(key) + " (the node declares " + list +
                                "; set import_options::allow_unknown_inputs to ignore it)");
        }
    }

    // ---- patch nodes -----------------------------------------------------------------------

    /// The node class for a class_type: the engine's own first, then the built-in ones.
    const node_class* class_of(std::string_view class_type) const {
        for (const auto& c : opts_.custom_nodes)
            if (c.class_type == class_type) return &c;
        for (const auto& c : builtin_node_classes())
            if (c.class_type == class_type) return &c;
        return nullptr;
    }

    class reader final : public node_reader {
    public:
        reader(const importer& imp, node_ref n, bool window_inputs = false)
            : imp_(imp), n_(std::move(n)), window_inputs_(window_inputs) {}
        const std::string& class_type() const override { return n_.class_type; }
        std::string where() const override { return n_.where(); }
        void only_inputs(std::span<const std::string_view> declared) const override {
            if (!window_inputs_) return imp_.only_inputs(n_, declared);
            std::vector<std::string_view> with_window(declared.begin(), declared.end());
            with_window.push_back("start_percent");
            with_window.push_back("end_percent");
            imp_.only_inputs(n_, with_window);
        }
        bool has(std::string_view name) const override { return n_.input(name) != nullptr; }
        double number(std::string_view name, double lo, double hi, std::optional<double> fallback) const override {
            return imp_.number(n_, name, lo, hi, fallback);
        }
        std::int64_t integer(std::string_view name, double lo, double hi, std::optional<double> fallback) const override {
            if (fallback && imp_.constant(n_, name, true) == nullptr) return static_cast<std::int64_t>(*fallback);
            return imp_.integer(n_, name, static_cast<std::int64_t>(lo), static_cast<std::int64_t>(std::min(hi, 9.2e18)));
        }
        bool boolean(std::string_view name, std::optional<bool> fallback) const override {
            return imp_.boolean(n_, name, fallback);
        }
        std::string choice(std::string_view name, std::span<const std::string_view> options,
                           std::optional<std::string_view> fallback) const override {
            if (fallback && imp_.constant(n_, name, true) == nullptr) return std::string(*fallback);
            return imp_.choice(n_, name, options);
        }
        std::string text(std::string_view name, std::optional<std::string_view> fallback) const override {
            const json* v = imp_.need(n_, name, fallback.has_value());
            if (v == nullptr) return std::string(*fallback);
            if (!v->is_string()) fail(n_.where(), "input " + quote(name) + " must be a string, got " + show(*v));
            return v->get<std::string>();
        }
        node_link linked(std::string_view name, bool optional) const override {
            const json* v = n_.input(name);
            if (v == nullptr) {
                if (optional) return {};
                fail(n_.where(), "required input " + quote(name) + " is missing");
            }
            if (!is_link(*v))
                fail(n_.where(), "input " + quote(name) + " must be a link [\"<node id>\", <output index>], got " + show(*v));
            const node_ref src = imp_.through_reroutes(n_, name, imp_.parse_link(n_, name, *v)).first;
            return {*src.id, src.class_type};
        }
        std::unique_ptr<node_reader> follow(std::string_view name) const override {
            const node_link l = linked(name, false);
            return std::make_unique<reader>(imp_, imp_.ref(l.node_id));
        }
        double model_fact(std::string_view name, double fallback) const override {
            return imp_.opts_.model_fact(name, fallback);
        }

    private:
        const importer& imp_;
        node_ref n_;
        bool window_inputs_ = false;
    };

    /// A patch node: its patch, and patchbay's own window inputs where the node has no
    /// start/end inputs of its own (guidance slots only, not model sampling or the mask).
    std::pair<any_patch, step_window> patch_of(const node_ref& n, const node_class& c) const {
        bool own = false;
        for (const auto& i : c.patch->inputs) own = own || i.name == "start_percent" || i.name == "end_percent";
        const hook_kind k = c.patch->declared_slot;
        const bool windowable = !own && k != hook_kind::model_sampling && k != hook_kind::mask_function;
        reader r(*this, n, windowable);
        any_patch p = c.parse(r);
        step_window w;
        if (windowable) {
            w.start_percent = number(n, "start_percent", 0.0, 1.0, 0.0);
            w.end_percent = number(n, "end_percent", 0.0, 1.0, 1.0);
        }
        return {std::move(p), w};
    }

    /// Model-sampling nodes apply in order. A node that builds a new object from scratch
    /// hides every earlier one (ComfyUI silently replaces it): refused. ModelNoiseScale and the
    /// SD3 / AuraFlow nodes read the object before them, so they may follow another.
    static void read_sampling(workflow& wf) {
        const workflow_patch* previous = nullptr;
        for (const auto& p : wf.sampling_nodes) {
            if (previous && !p.config.vtable().reads_previous_sampling)
                fail("workflow node " + quote(previous->node_id) + " (" + previous->class_type + ")",
                     "a second model sampling on the model path: node " + quote(p.node_id) + " (" + p.class_type +
                         ") replaces it in ComfyUI; patchbay rejects the workflow rather than ignore a node "
                         "(remove one of them)");
            previous = &p;
        }
        if (wf.sampling_nodes.empty() || !wf.sampling_nodes.front().config.vtable().builds_sampling_object)
            return; // the checkpoint's own object (ModelNoiseScale modifies it): build_chain applies them
        workflow_sampling ws{{}, model_sampling::discrete(), {}};
        for (const auto& p : wf.sampling_nodes) {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
            try {
                ws.sampling = p.config.vtable().apply_sampling(p.config.get(), ws.sampling);
            } catch (const error& e) {
                fail("workflow node " + quote(p.node_id) + " (" + p.class_type + ")", e.what());
            }
#else
            ws.sampling = p.config.vtable().apply_sampling(p.config.get(), ws.sampling);
#endif
            ws.spec += (ws.spec.empty() ? "" : " -> ") + p.config.to_string();
            ws.node = {p.node_id, p.class_type, p.title};
        }
        wf.sampling = std::move(ws);
    }

    // ---- sampler ----------------------------------------------------------------------------

    node_ref find_sampler() const {
        if (!opts_.sampler_node.empty()) {
            if (!prompt_.contains(opts_.sampler_node))
                fail("workflow", "import_options::sampler_node " + quote(opts_.sampler_node) +
                                     " is not a node of the workflow");
            node_ref n = ref(opts_.sampler_node);
            if (!in_list(n.class_type, sampler_classes))
                fail(n.where(), "is not a sampler node (KSampler, KSamplerAdvanced, SamplerCustom, "
                                "SamplerCustomAdvanced)");
            return n;
        }
        std::vector<node_ref> found;
        for (auto it = prompt_.begin(); it != prompt_.end(); ++it)
            if (in_list(it->at("class_type").get<std::string>(), sampler_classes))
                found.push_back(ref(it.key()));
        if (found.empty())
            fail("workflow", "no sampler node (KSampler, KSamplerAdvanced, SamplerCustom or "
                             "SamplerCustomAdvanced) to start from");
        if (found.size() > 1) {
            std::string list;
            for (const auto& f : found) list += (list.empty() ? "" : ", ") + quote(*f.id) + " (" + f.class_type + ")";
            fail("workflow", "several sampler nodes (" + list +
                                 "); choose one with import_options::sampler_node");
        }
        return found.front();
    }

    /// Optional settings: absent or an unevaluable link -> empty; a wrong type -> error.
    std::optional<double> opt_number(const node_ref& n, std::string_view name, double lo, double hi) const {
        const json* v = constant(n, name, false);
        if (v == nullptr) return std::nullopt;
        if (!v->is_number()) fail(n.where(), "input " + quote(name) + " must be a number, got " + show(*v));
        const double d = v->get<double>();
        if (!(d >= lo && d <= hi))
            fail(n.where(), "input " + quote(name) + " must be in [" + num(lo) + ", " + num(hi) +
                                "], got " + num(d));
        return d;
    }
    std::optional<std::int64_t> opt_steps(const node_ref& n) const {
        if (constant(n, "steps", false) == nullptr) return std::nullopt;
        return integer(n, "steps", 1, 10000);
    }
    std::optional<std::uint64_t> opt_seed(const node_ref& n, std::string_view name) const {
        const json* v = constant(n, name, false);
        if (v == nullptr) return std::nullopt;
        if (v->is_number_unsigned()) return v->get<std::uint64_t>();
        if (v->is_number_integer() && v->get<std::int64_t>() >= 0)
            return static_cast<std::uint64_t>(v->get<std::int64_t>());
        if (v->is_number_float() && v->get<double>() >= 0 && v->get<double>() < 1.8446744073709552e19 &&
            v->get<double>() == std::floor(v->get<double>()))
            return static_cast<std::uint64_t>(v->get<double>());
        fail(n.where(), "input " + quote(name) + " must be an integer in [0, 2^64 - 1], got " + show(*v));
    }
    std::optional<std::string> opt_string(const node_ref& n, std::string_view name) const {
        const json* v = constant(n, name, false);
        if (v == nullptr) return std::nullopt;
        if (!v->is_string()) fail(n.where(), "input " + quote(name) + " must be a string, got " + show(*v));
        return v->get<std::string>();
    }

    /// The node behind a non-model input of the sampler (sampler, sigmas, noise), if linked.
    std::optional<node_ref> linked(const node_ref& n, std::string_view name) const {
        const json* v = n.input(name);
        if (v == nullptr || !is_link(*v)) return std::nullopt;
        return through_reroutes(n, name, parse_link(n, name, *v)).first;
    }

    /// The model link's owner and the link itself.
    std::pair<node_ref, link> model_input(const node_ref& n) const {
        const json* v = n.input("model");
        if (v == nullptr) fail(n.where(), "required input 'model' is missing");
        if (!is_link(*v))
            fail(n.where(), "input 'model' must be a link [\"<node id>\", <output index>], got " + show(*v));
        return {n, parse_link(n, "model", *v)};
    }

    /// The SAMPLER node of a custom sampler: KSamplerSelect (sampler_name), or the CFG++ nodes
    /// SamplerEulerCFGpp (version "regular": euler_cfg_pp) and SamplerEulerAncestralCFGPP
    /// (eta [0, 1], s_noise [0, 10]: euler_ancestral_cfg_pp). Another node: its sampler_name
    /// input if it has one.
    void read_sampler_node(const node_ref& k, sampler_settings& out) const {
        if (k.class_type == "SamplerEulerCFGpp") {
            const std::string version = opt_string(k, "version").value_or("regular");
            if (version != "regular")
                fail(k.where(), "input 'version' is " + quote(version) +
                                    "; patchbay implements only 'regular' (sampler euler_cfg_pp)");
            out.sampler_name = "euler_cfg_pp";
        } else if (k.class_type == "SamplerEulerAncestralCFGPP") {
            out.sampler_name = "euler_ancestral_cfg_pp";
            out.eta = opt_number(k, "eta", 0, 1);
            out.s_noise = opt_number(k, "s_noise", 0, 10);
        } else {
            out.sampler_name = opt_string(k, "sampler_name");
        }
    }

    std::pair<node_ref, link> read_sampler(const node_ref& s, sampler_settings& out) const {
        const std::string& c = s.class_type;
        if (c == "KSampler" || c == "KSamplerAdvanced") {
            out.cfg = opt_number(s, "cfg", 0, 100);
            out.steps = opt_steps(s);
            out.sampler_name = opt_string(s, "sampler_name");
            out.scheduler = opt_string(s, "scheduler");
            out.seed = opt_seed(s, c == "KSampler" ? "seed" : "noise_seed");
            if (c == "KSampler") out.denoise = opt_number(s, "denoise", 0, 1);
            return model_input(s);
        }
        // SamplerCustom / SamplerCustomAdvanced: sampler and sigmas come from linked nodes.
        if (auto k = linked(s, "sampler")) read_sampler_node(*k, out);
        if (auto sig = linked(s, "sigmas")) {
            out.steps = opt_steps(*sig);
            out.scheduler = opt_string(*sig, "scheduler");
            out.denoise = opt_number(*sig, "denoise", 0, 1);
        }
        if (c == "SamplerCustom") {
            out.cfg = opt_number(s, "cfg", 0, 100);
            out.seed = opt_seed(s, "noise_seed");
            return model_input(s);
        }
        if (auto noise = linked(s, "noise"); noise && noise->class_type == "RandomNoise")
            out.seed = opt_seed(*noise, "noise_seed");
        const json* gv = s.input("guider");
        if (gv == nullptr) fail(s.where(), "required input 'guider' is missing");
        if (!is_link(*gv))
            fail(s.where(), "input 'guider' must be a link [\"<node id>\", <output index>], got " + show(*gv));
        const node_ref g = through_reroutes(s, "guider", parse_link(s, "guider", *gv)).first;
        out.guider = g.info();
        if (g.class_type == "CFGGuider") {
            out.cfg = opt_number(g, "cfg", 0, 100);
        } else if (g.class_type == "BasicGuider") {
            out.cfg = 1.0; // no negative prompt: ComfyUI's guider default cfg
        } else if (const node_class* gc = class_of(g.class_type);
                   gc && gc->patch->declared_slot == hook_kind::multi_prompt) {
            // a GUIDER node that combines several prompts (PerpNegGuider, DualCFGGuider): a patch
            // of the multi-prompt slot, applied after the model's patches
            if (g.class_type == "DualCFGGuider") {
                out.cfg = opt_number(g, "cfg_conds", 0, 100);
                out.cfg_cond2_negative = opt_number(g, "cfg_cond2_negative", 0, 100);
            } else {
                out.cfg = opt_number(g, "cfg", 0, 100);
            }
            auto [p, w] = patch_of(g, *gc);
            guider_patch_ = workflow_patch{*g.id, g.class_type, g.title, std::move(p), w};
        } else {
            fail(g.where(), "unsupported guider for SamplerCustomAdvanced (patchbay follows "
                            "CFGGuider, BasicGuider, PerpNegGuider and DualCFGGuider)");
        }
        return model_input(g);
    }

    // ---- the model path ---------------------------------------------------------------------

    bool is_pass_through(std::string_view c) const {
        if (in_list(c, builtin_pass_through_classes)) return true;
        for (const auto& p : opts_.pass_through_classes)
            if (p == c) return true;
        return false;
    }

    static std::string slot_name(hook_kind k) {
        return k == hook_kind::mask_function ? "denoise mask function" : std::string(to_string(k));
    }

    /// "model", or "model1", "model2", ... (merge nodes); not "model_name".
    static bool is_model_input(std::string_view key) {
        if (key.rfind("model", 0) != 0) return false;
        for (char ch : key.substr(5))
            if (ch < '0' || ch > '9') return false;
        return true;
    }

    void walk(node_ref owner, link l, workflow& wf) const {
        std::vector<std::string> path{*owner.id}; // ids visited, sampler (or guider) first
        std::string input = "model";
        std::vector<workflow_patch> patches; // sampler side first
        std::vector<workflow_patch> sampling_nodes; // sampler side first
        std::vector<node_info> pass; // sampler side first
        std::vector<node_info> skipped;
        for (;;) {
            node_ref n = ref(l.source);
            for (const auto& p : path)
                if (p == *n.id) {
                    std::string chain;
                    for (const auto& q : path) chain += q + " -> ";
                    fail(owner.where(), "input " + quote(input) + ": link cycle on the model path (" +
                                            chain + *n.id + ")");
                }
            path.push_back(*n.id);
            const std::string& c = n.class_type;
            auto single_output = [&] {
                if (l.output != 0)
                    fail(owner.where(), "input " + quote(input) + " links to output " +
                                            std::to_string(l.output) + " of node " + quote(*n.id) + " (" + c +
                                            "), which has only output 0 (MODEL)");
            };
            if (c == "Reroute") {
                single_output();
                std::tie(input, l) = reroute_input(n);
                owner = n;
                continue;
            }
            const node_class* patch_class = class_of(c);
            const bool is_patch = patch_class != nullptr;
            if (is_patch || is_pass_through(c)) {
                if (is_patch) single_output();
                else if (l.output != 0)
                    fail(owner.where(), "input " + quote(input) + " links to output " +
                                            std::to_string(l.output) + " of node " + quote(*n.id) +
                                            " (" + c + "), which is not its MODEL output (0)");
                if (is_patch) {
                    auto [p, w] = patch_of(n, *patch_class);
                    (patch_class->patch->declared_slot == hook_kind::model_sampling ? sampling_nodes : patches)
                        .push_back({*n.id, c, n.title, std::move(p), w});
                } else {
                    pass.push_back(n.info());
                }
                std::tie(owner, l) = model_input(n);
                input = "model";
                continue;
            }
            // Unknown node: a patch node if it takes a model, else the loader.
            std::vector<std::pair<std::string, const json*>> model_links;
            for (const auto& [key, value] : n.inputs().items())
                if (is_model_input(key) && is_link(value)) model_links.emplace_back(key, &value);
            if (model_links.empty()) {
                wf.loader = n.info();
                break;
            }
            if (!opts_.skip_unknown_patches)
                fail(n.where(), "unknown patch node: patchbay does not implement " + c +
                                    " (set import_options::skip_unknown_patches to ignore it, or "
                                    "import_options::pass_through_classes if it does not patch "
                                    "the model)");
            if (model_links.size() != 1)
                fail(n.where(), "unknown node with several model inputs (" + model_links[0].first +
                                    ", " + model_links[1].first + "): cannot skip it");
            skipped.push_back(n.info());
            input = model_links[0].first;
            l = parse_link(n, input, *model_links[0].second);
            owner = n;
        }
        // ComfyUI applies the node nearest the loader first.
        wf.patches.assign(patches.rbegin(), patches.rend());
        wf.sampling_nodes.assign(sampling_nodes.rbegin(), sampling_nodes.rend());
        read_sampling(wf);
        wf.pass_through.assign(pass.rbegin(), pass.rend());
        wf.skipped.assign(skipped.rbegin(), skipped.rend());
        // One cfg function and one mask function: a later node would silently replace an
        // earlier one in ComfyUI.
        for (hook_kind single : {hook_kind::cfg_function, hook_kind::mask_function, hook_kind::pass_composition,
                                 hook_kind::multi_prompt}) {
            const workflow_patch* first = nullptr;
            for (const auto& p : wf.patches) {
                if (p.slot() != single) continue;
                if (first == nullptr) {
                    first = &p;
                    continue;
                }
                fail("workflow node " + quote(p.node_id) + " (" + p.class_type + ")",
                     "sets the " + slot_name(single) + " already set by node " + quote(first->node_id) +
                         " (" + first->class_type + "); ComfyUI would keep only node " +
                         quote(p.node_id) + "'s, patchbay allows one " + slot_name(single) +
                         " per chain: remove one of the two nodes");
            }
        }
    }
};

} // namespace workflow_detail

inline hook_kind workflow_patch::slot() const { return config.slot(); }

inline std::string_view class_of(const patch_config& config) { return config.class_type(); }

inline std::string to_string(const patch_config& config) { return config.to_string(); }

namespace workflow_detail {

template <class P>
void read_input(node_reader& r, P& p, const auto& b) {
    using M = typename std::remove_cvref_t<decltype(b)>::member_type;
    const input_info& i = b.info;
    M& v = p.*(b.member);
    const auto fallback = [&]<class D>(D def) { return i.optional ? std::optional<D>(def) : std::nullopt; };
    switch (i.kind) {
    case input_kind::floating:
        if constexpr (std::is_floating_point_v<M>) v = static_cast<M>(r.number(i.name, i.lo, i.hi, fallback(i.def)));
        break;
    case input_kind::integer:
        if constexpr (std::is_integral_v<M>) v = static_cast<M>(r.integer(i.name, i.lo, i.hi, fallback(i.def)));
        break;
    case input_kind::boolean:
        if constexpr (std::is_same_v<M, bool>) v = r.boolean(i.name, fallback(i.def != 0.0));
        break;
    case input_kind::combo:
        if constexpr (std::is_enum_v<M> || std::is_same_v<M, std::string>) {
            const std::string c = r.choice(i.name, i.options, fallback(i.def_text));
            if constexpr (std::is_same_v<M, std::string>) v = c;
            else
                for (std::size_t k = 0; k < i.options.size(); ++k)
                    if (i.options[k] == c) v = static_cast<M>(k);
        }
        break;
    case input_kind::string:
        if constexpr (std::is_same_v<M, std::string>) v = r.text(i.name, fallback(i.def_text));
        break;
    case input_kind::link:
        if constexpr (std::is_same_v<M, node_link>) {
            v = r.linked(i.name, i.optional);
        } else if constexpr (described<M>) {
            const node_link l = r.linked(i.name, false);
            if (l.class_type != M::descriptor().class_type)
                fail(r.where(), "input " + quote(i.name) + " must link to a " + std::string(M::descriptor().class_type) +
                                    " node, got " + l.class_type);
            auto sub = r.follow(i.name);
            v = parse_node<M>(*sub);
        } else if constexpr (detail::is_variant<M>::value) {
            const node_link l = r.linked(i.name, false);
            bool found = false;
            std::string names;
            [&]<class... A>(std::variant<A...>*) {
                ([&] {
                    if constexpr (described<A>) {
                        names += (names.empty() ? "" : ", ") + std::string(A::descriptor().class_type);
                        if (!found && l.class_type == A::descriptor().class_type) {
                            auto sub = r.follow(i.name);
                            v = parse_node<A>(*sub);
                            found = true;
                        }
                    }
                }(), ...);
            }(static_cast<M*>(nullptr));
            if (!found)
                fail(r.where(), "input " + quote(i.name) + " (" + std::string(i.link_type) + ") links to a " +
                                    l.class_type + " node; patchbay reads " + names);
        }
        break;
    case input_kind::model_fact:
        if constexpr (std::is_arithmetic_v<M>) v = static_cast<M>(r.model_fact(i.name, i.def));
        break;
    }
}

template <described P>
any_patch parse_any(node_reader& r) {
    return any_patch(parse_node<P>(r));
}

/// The workflow's model-sampling nodes applied in order to the checkpoint's own object.
inline model_sampling sampling_of(const workflow& wf, const model_sampling& checkpoint) {
    model_sampling ms = checkpoint;
    for (const auto& p : wf.sampling_nodes) {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
        try {
            ms = p.config.vtable().apply_sampling(p.config.get(), ms);
        } catch (const error& e) {
            fail("workflow node " + quote(p.node_id) + " (" + p.class_type + ")", e.what());
        }
#else
        ms = p.config.vtable().apply_sampling(p.config.get(), ms);
#endif
    }
    return ms;
}

} // namespace workflow_detail

template <described P>
P parse_node(node_reader& r) {
    constexpr auto d = P::descriptor();
    constexpr auto infos = d.infos();
    std::array<std::string_view, infos.size()> names{};
    std::size_t n = 0;
    for (const auto& i : infos)
        if (i.kind != input_kind::model_fact) names[n++] = i.name;
    r.only_inputs(std::span<const std::string_view>(names.data(), n));
    P p = with_defaults<P>();
    d.for_each_input([&](const auto& b) { workflow_detail::read_input(r, p, b); });
    // The patch's own checks, with the node named in the message.
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
        patchbay::validate(p);
    } catch (const error& e) {
        fail(r.where(), e.what());
    }
#else
    patchbay::validate(p);
#endif
    return p;
}

template <described P>
import_options& import_options::add_node(std::string class_type) {
    custom_nodes.push_back({std::move(class_type), &workflow_detail::parse_any<P>, &vtable_of<P>()});
    return *this;
}

inline std::span<const node_class> builtin_node_classes() {
    using workflow_detail::parse_any;
#define PATCHBAY_NODE_CLASS_(P) {std::string(P::descriptor().class_type), &parse_any<P>, &vtable_of<P>()},
    static const node_class classes[] = {PATCHBAY_FOR_EACH_BUILTIN(PATCHBAY_NODE_CLASS_)};
#undef PATCHBAY_NODE_CLASS_
    return classes;
}

/// One input as the docs' node tables show it: "eta 1 [-10, 10]", "pre_cfg BOOL False optional".
inline std::string describe_input(const input_info& i) {
    using detail::fmt_num;
    std::string s(i.name);
    switch (i.kind) {
    case input_kind::floating: s += " " + fmt_num(i.def) + " [" + fmt_num(i.lo) + ", " + fmt_num(i.hi) + "]"; break;
    case input_kind::integer: s += " INT " + fmt_num(i.def) + " [" + fmt_num(i.lo) + ", " + fmt_num(i.hi) + "]"; break;
    case input_kind::boolean: s += std::string(" BOOL ") + (i.def != 0.0 ? "True" : "False"); break;
    case input_kind::combo: s += ": " + detail::option_list(i.options) + " (default " + std::string(i.def_text) + ")"; break;
    case input_kind::string: s += " STRING '" + std::string(i.def_text) + "'"; break;
    case input_kind::link: s += " (link to " + std::string(i.link_type) + ")"; break;
    case input_kind::model_fact: return "(+ model fact `" + s + "`, default " + fmt_num(i.def) + ")";
    }
    if (i.optional) s += " optional";
    return s;
}

/// A markdown table of node classes (class_type, display name, inputs, slot), generated from
/// their descriptors: docs/workflow_import.md holds the built-in one (a test keeps it current).
inline std::string node_table_markdown(std::span<const node_class> classes) {
    std::string t = "| class_type | display name | inputs: default [min, max] | slot |\n|---|---|---|---|\n";
    for (const auto& c : classes) {
        std::string in;
        for (const auto& i : c.patch->inputs) in += (in.empty() ? "" : "; ") + describe_input(i);
        if (in.empty()) in = "(model only)";
        t += "| " + c.class_type + " | " + std::string(c.patch->display_name) + " | " + in + " | " +
             std::string(to_string(c.patch->declared_slot)) + " |\n";
    }
    return t;
}

inline std::string workflow::describe() const {
    auto name = [](const node_info& n) {
        std::string s = n.class_type + " (node " + n.id;
        if (!n.title.empty() && n.title != n.class_type) s += ", \"" + n.title + "\"";
        return s + ")";
    };
    auto slot_text = [](hook_kind k) { return to_string(k); };
    std::ostringstream os;
    os << "sampler: " << name(sampler.node);
    if (!sampler.guider.id.empty()) os << " with " << name(sampler.guider);
    os << "\n ";
    if (sampler.cfg) os << " cfg " << workflow_detail::num(*sampler.cfg);
    if (sampler.cfg_cond2_negative) os << " cfg_cond2_negative " << workflow_detail::num(*sampler.cfg_cond2_negative);
    if (sampler.steps) os << " steps " << *sampler.steps;
    if (sampler.sampler_name) os << " sampler " << *sampler.sampler_name;
    if (sampler.eta) os << " eta " << workflow_detail::num(*sampler.eta);
    if (sampler.s_noise) os << " s_noise " << workflow_detail::num(*sampler.s_noise);
    if (sampler.scheduler) os << " scheduler " << *sampler.scheduler;
    if (sampler.seed) os << " seed " << *sampler.seed;
    if (sampler.denoise) os << " denoise " << workflow_detail::num(*sampler.denoise);
    os << "\nmodel: " << name(loader) << "\n";
    os << "model sampling: ";
    if (sampling) os << sampling->spec << " from " << name(sampling->node) << "\n";
    else os << "the checkpoint's own\n";
    os << "patches (in the order ComfyUI applies them):";
    if (patches.empty()) os << " none";
    os << "\n";
    for (std::size_t i = 0; i < patches.size(); ++i)
        os << "  " << i + 1 << ". " << patches[i].config.to_string()
           << (patches[i].window.is_full() ? std::string()
                                           : " window " + workflow_detail::num(patches[i].window.start_percent) +
                                                 ".." + workflow_detail::num(patches[i].window.end_percent))
           << "  ["
           << slot_text(patches[i].slot()) << "]  from "
           << name({patches[i].node_id, patches[i].class_type, patches[i].title}) << "\n";
    for (const auto& p : pass_through) os << "pass-through: " << name(p) << "\n";
    for (const auto& s : skipped) os << "skipped (unknown patch node): " << name(s) << "\n";
    return os.str();
}

template <class Model>
patch_chain<Model> build_chain(const workflow& wf, Model& model, const model_sampling& checkpoint_sampling) {
    patch_chain<Model> chain(model, workflow_detail::sampling_of(wf, checkpoint_sampling));
    for (const auto& p : wf.patches) {
        const auto add = [&] { chain.add(p.config, p.window); };
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
        try {
            add();
        } catch (const error& e) {
            fail("workflow node " + workflow_detail::quote(p.node_id) + " (" + p.class_type + ")", e.what());
        }
#else
        add();
#endif
    }
    return chain;
}

/// The model-free cfg stage the workflow describes (core/cfg_chain.hpp), with the workflow's
/// model sampling or `checkpoint_sampling`. A patch that needs the model is an error naming the
/// node.
inline cfg_chain build_cfg_chain(const workflow& wf, const model_sampling& checkpoint_sampling) {
    cfg_chain chain(workflow_detail::sampling_of(wf, checkpoint_sampling));
    for (const auto& p : wf.patches) {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
        try {
            chain.add(p.config, p.window);
        } catch (const error& e) {
            fail("workflow node " + workflow_detail::quote(p.node_id) + " (" + p.class_type + ")", e.what());
        }
#else
        chain.add(p.config, p.window);
#endif
    }
    return chain;
}

template <class Model>
patch_chain<Model> build_chain(const workflow& wf, Model& model) {
    if (!wf.sampling)
        fail("build_chain", "the workflow has no ModelSampling node; pass the checkpoint's model "
                            "sampling (build_chain(wf, model, sampling))");
    return build_chain(wf, model, model_sampling::discrete()); // the nodes build it from scratch
}

inline workflow parse_workflow(const nlohmann::json& prompt, const import_options& options) {
    // The body posted to /prompt wraps the workflow: {"prompt": {...}, "client_id": ...}.
    if (prompt.is_object()) {
        const auto it = prompt.find("prompt");
        if (it != prompt.end() && it->is_object() && !it->contains("class_type"))
            return workflow_detail::importer(*it, options).run();
    }
    return workflow_detail::importer(prompt, options).run();
}

inline workflow parse_workflow_text(std::string_view text, const import_options& options) {
    nlohmann::json j;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
        j = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
        fail("workflow", std::string("malformed JSON: ") + e.what());
    }
#else
    j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded()) fail("workflow", "malformed JSON");
#endif
    return parse_workflow(j, options);
}

inline workflow parse_workflow_file(const std::filesystem::path& path, const import_options& options) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("workflow", "cannot open '" + path.string() + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
        return parse_workflow_text(ss.str(), options);
    } catch (const error& e) {
        throw error(path.string() + ": " + e.what());
    }
#else
    return parse_workflow_text(ss.str(), options);
#endif
}

} // namespace patchbay::comfy
