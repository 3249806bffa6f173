// Helpers the model-sampling tests share: golden-case access with per-output tolerances, and
// small tensors of per-item sigmas.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "npy.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/sampling/model_sampling.hpp"

namespace patchbay::test {

inline const std::string golden = PATCHBAY_GOLDEN_DIR;

inline nlohmann::json load_case(const std::string& dir) {
    std::ifstream f(dir + "/case.json");
    return nlohmann::json::parse(f);
}

/// numpy.allclose against one recorded output with the case's per-output tolerance.
inline void require_close_to_golden(const std::string& dir, const std::string& name,
                                    const std::vector<double>& got) {
    const auto spec = load_case(dir);
    const auto want = npy::load(dir + "/" + spec.at("outputs").at(name).get<std::string>());
    const double rtol = spec.at("tolerances").at(name).at("rtol").get<double>();
    const double atol = spec.at("tolerances").at(name).at("atol").get<double>();
    REQUIRE(static_cast<std::size_t>(want.size()) == got.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO(dir << " " << name << "[" << i << "]");
        REQUIRE(std::abs(got[i] - want.values[i]) <= atol + rtol * std::abs(want.values[i]));
    }
}

inline std::vector<double> widen(std::span<const float> v) { return {v.begin(), v.end()}; }

inline std::vector<double> values_of(const tensor<float>& t) {
    return std::vector<double>(t.data(), t.data() + t.size());
}

/// A model_sampling.schedule case's table: its length, sigmas, sigma_min, sigma_max and
/// percent_to_sigma against the recorded outputs.
inline void require_table_matches_golden(const std::string& dir, const model_sampling& ms) {
    const auto spec = load_case(dir);
    REQUIRE(ms.sigmas().size() == spec.at("scalars").at("num_entries").get<std::size_t>());
    require_close_to_golden(dir, "sigmas", widen(ms.sigmas()));
    require_close_to_golden(dir, "sigma_min", {ms.sigma_min()});
    require_close_to_golden(dir, "sigma_max", {ms.sigma_max()});
    std::vector<double> p2s;
    for (double p : spec.at("scalars").at("percents")) p2s.push_back(ms.percent_to_sigma(p));
    require_close_to_golden(dir, "percent_to_sigma", p2s);
}

/// One sigma per batch item.
inline tensor<float> batch_sigma(std::initializer_list<float> v) {
    tensor<float> t({static_cast<index_t>(v.size())});
    index_t i = 0;
    for (float s : v) t[i++] = s;
    return t;
}

} // namespace patchbay::test
