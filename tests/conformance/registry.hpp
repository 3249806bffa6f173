// patchbay conformance: one golden case, the handlers that compute its outputs, and the
// registry the runner dispatches through. Each patch family registers its handlers in its own
// cases_<family>.cpp with PATCHBAY_CONFORMANCE(patch, function).
#pragma once

#include <functional>
#include <map>
#include <type_traits>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/half.hpp"
#include "patchbay/core/tensor.hpp"

namespace patchbay::conformance {

/// The runner's --storage mode (storage.hpp): f32 runs the golden cases as recorded.
enum class storage { f32, f16, bf16 };
inline storage& storage_mode_setting() {
    static storage s = storage::f32;
    return s;
}
inline storage storage_mode() { return storage_mode_setting(); }

/// A loaded golden case: its case.json and lazy access to its input files.
struct golden_case {
    std::string dir;
    nlohmann::json spec;

    const nlohmann::json& params() const { return spec.at("params"); }
    const nlohmann::json& scalars() const { return spec.at("scalars"); }

    /// Input array by its case.json name (e.g. "cond_denoised").
    npy::array input(const std::string& name) const {
        const auto& in = spec.at("inputs");
        if (!in.contains(name)) fail("conformance", "case has no input '" + name + "'");
        return npy::load(dir + "/" + in.at(name).get<std::string>());
    }
    /// Input array as a tensor. In a --storage mode, float inputs arrive rounded to the
    /// storage format (what an engine storing them in f16 / bf16 holds).
    template <class T = float>
    tensor<T> tensor_input(const std::string& name) const {
        tensor<T> t = input(name).template to_tensor<T>();
        if constexpr (std::is_same_v<T, float>) {
            const storage s = storage_mode();
            for (index_t i = 0; s != storage::f32 && i < t.size(); ++i)
                t.data()[i] = s == storage::f16 ? rounded_through<f16>(t.data()[i]) : rounded_through<bf16>(t.data()[i]);
        }
        return t;
    }
    bool has_input(const std::string& name) const { return spec.at("inputs").contains(name); }

    template <class V>
    V param(const std::string& name, V fallback) const {
        const auto& p = params();
        return p.contains(name) ? p.at(name).get<V>() : fallback;
    }
    template <class V>
    V scalar(const std::string& name, V fallback) const {
        const auto& s = scalars();
        return s.contains(name) && !s.at(name).is_null() ? s.at(name).get<V>() : fallback;
    }
};

/// Options of the whole run that handlers read (set by the runner from its arguments).
struct run_options {
    /// --batched-passes: the end-to-end models evaluate the prompts of a step in one call
    /// (predict_batch); without it they are evaluated one call per prompt.
    bool batched_passes = false;
    /// Batched model calls the current case made (the runner resets it before each case).
    int batched_calls = 0;
};

inline run_options& options() {
    static run_options o;
    return o;
}

/// What a handler computed: output name -> array.
using results = std::map<std::string, npy::array>;

using handler = std::function<void(const golden_case&, results&)>;

inline std::map<std::pair<std::string, std::string>, handler>& registry() {
    static std::map<std::pair<std::string, std::string>, handler> r;
    return r;
}

struct registrar {
    registrar(const char* patch, const char* function, handler h) {
        registry()[{patch, function}] = std::move(h);
    }
};

#define PATCHBAY_CONF_CAT2(a, b) a##b
#define PATCHBAY_CONF_CAT(a, b) PATCHBAY_CONF_CAT2(a, b)
/// Register a handler: PATCHBAY_CONFORMANCE("APG", "sampler_pre_cfg_function") { ... }
/// The body sees `const golden_case& gc` and `results& out`. Its names are made from __LINE__:
/// each cases_*.cpp keeps its code in a namespace of its own (the files may be one translation
/// unit, tests/CMakeLists.txt).
#define PATCHBAY_CONFORMANCE(patch, function)                                                   \
    static void PATCHBAY_CONF_CAT(conf_fn_, __LINE__)(const ::patchbay::conformance::golden_case&, \
                                                      ::patchbay::conformance::results&);        \
    static ::patchbay::conformance::registrar PATCHBAY_CONF_CAT(conf_reg_, __LINE__){            \
        patch, function, &PATCHBAY_CONF_CAT(conf_fn_, __LINE__)};                                \
    static void PATCHBAY_CONF_CAT(conf_fn_, __LINE__)(                                          \
        [[maybe_unused]] const ::patchbay::conformance::golden_case& gc,                         \
        [[maybe_unused]] ::patchbay::conformance::results& out)

/// Store a float/double tensor result under a name.
template <class T>
void put(results& out, const std::string& name, const tensor<T>& t) {
    out[name] = npy::from_tensor(t);
}

} // namespace patchbay::conformance
