// Schedules against ComfyUI's scheduler code re-expressed with libtorch ops (float32 tensors,
// torch.linspace, the model sampling's sigma()/timestep() as torch computes them), for the
// schedulers the golden cases do not cover: normal, sgm_uniform, karras, exponential.
// Built only when libtorch is found (the test name contains "torch").
#include <catch2/catch.hpp>

#ifdef PATCHBAY_HAVE_TORCH
#include <algorithm>
#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "patchbay/sampling/schedules.hpp"

namespace test_sampling_schedules_torch {

using namespace patchbay;

namespace {

/// ComfyUI's model sampling sigma()/timestep() over our float32 tables, with torch ops.
struct torch_sampling {
    const model_sampling& ms;
    torch::Tensor log_sigmas;

    explicit torch_sampling(const model_sampling& m) : ms(m) {
        if (!m.is_flow())
            log_sigmas = torch::from_blob(const_cast<float*>(m.log_sigmas().data()),
                                          {static_cast<int64_t>(m.log_sigmas().size())}, torch::kFloat)
                             .clone();
    }
    torch::Tensor sigma(torch::Tensor t) const {
        if (ms.is_flow()) {
            t = t.to(torch::kFloat) / ms.multiplier();
            if (ms.shift() == 1.0) return t;
            return ms.shift() * t / (1 + (ms.shift() - 1) * t);
        }
        const int64_t skip = ms.sigmas().size() == 50 ? 20 : 1;
        t = t.to(torch::kFloat);
        if (skip != 1) t = (t - (skip - 1)) / skip;
        t = torch::clamp(t, 0, log_sigmas.size(0) - 1);
        const auto lo = t.floor().to(torch::kLong), hi = t.ceil().to(torch::kLong);
        const auto w = t.frac();
        return ((1 - w) * log_sigmas.index({lo}) + w * log_sigmas.index({hi})).exp();
    }
    torch::Tensor timestep(torch::Tensor sigma) const {
        if (ms.is_flow()) return sigma * ms.multiplier();
        const int64_t skip = ms.sigmas().size() == 50 ? 20 : 1;
        const auto d = sigma.log() - log_sigmas.unsqueeze(1);
        return d.abs().argmin(0).view(sigma.sizes()) * skip + (skip - 1);
    }
};

std::vector<double> comfy_normal(const model_sampling& m, int steps, bool sgm) {
    const torch_sampling s(m);
    const auto start = s.timestep(torch::tensor(m.sigma_max()));
    const auto end = s.timestep(torch::tensor(m.sigma_min()));
    bool append_zero = true;
    torch::Tensor ts;
    if (sgm) {
        ts = torch::linspace(start.item(), end.item(), steps + 1).slice(0, 0, steps);
    } else {
        if (std::abs(s.sigma(end).item<float>()) <= 1e-5) {
            ++steps;
            append_zero = false;
        }
        ts = torch::linspace(start.item(), end.item(), steps);
    }
    std::vector<double> out;
    for (int64_t i = 0; i < ts.size(0); ++i) out.push_back(static_cast<double>(s.sigma(ts[i]).item<float>()));
    if (append_zero) out.push_back(0.0);
    return out;
}

std::size_t compared = 0, exact = 0;

double worst_rel = 0.0;

/// Equal to float rounding (relative 1e-5, far below any step spacing): torch evaluates
/// exp/log/pow with SLEEF's vectorised functions (error <= 1 ulp) where patchbay uses the C
/// library's, and torch's own build may fuse linspace's start + step * i into an FMA; an ulp
/// in a timestep or a pow base grows by the slope (rho = 7 for karras). Exact matches are
/// counted and must be the majority.
void require_same(const std::vector<double>& got, const std::vector<double>& want) {
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("index " << i << " got " << got[i] << " want " << want[i]);
        const float g = static_cast<float>(got[i]), w = static_cast<float>(want[i]);
        // (glog, pulled in by libtorch, defines its own CHECK: use REQUIRE here)
        const double rel = std::abs(double(g) - double(w)) / std::max(1e-30, std::abs(double(w)));
        worst_rel = std::max(worst_rel, rel);
        REQUIRE(rel <= 1e-5);
        ++compared;
        if (g == w) ++exact;
    }
}

} // namespace

TEST_CASE("normal and sgm_uniform equal ComfyUI's torch computation", "[schedules][torch]") {
    torch::set_num_threads(1);
    for (const auto& m : {model_sampling::discrete("eps"), model_sampling::discrete("eps", true),
                          model_sampling::discrete("lcm"), model_sampling::sd3(3.0),
                          model_sampling::aura_flow(1.73), model_sampling::sd3(1.0)}) {
        for (int steps : {1, 3, 10, 25, 64}) {
            INFO("steps " << steps << " table " << m.sigmas().size() << " flow " << m.is_flow());
            require_same(normal_schedule(steps, m), comfy_normal(m, steps, false));
            require_same(sgm_uniform_schedule(steps, m), comfy_normal(m, steps, true));
        }
    }
}

TEST_CASE("karras and exponential equal k-diffusion's torch computation", "[schedules][torch]") {
    torch::set_num_threads(1);
    for (auto [lo, hi] : {std::pair{0.0291675, 14.614642}, std::pair{0.002, 80.0}, std::pair{0.0292, 4518.76}}) {
        for (int n : {1, 4, 10, 33}) {
            for (double rho : {7.0, 3.0, 1.0}) {
                INFO("n " << n << " rho " << rho << " range " << lo << " " << hi);
                const auto ramp = torch::linspace(0, 1, n);
                const double min_inv = std::pow(lo, 1 / rho), max_inv = std::pow(hi, 1 / rho);
                const auto k = (max_inv + ramp * (min_inv - max_inv)).pow(rho);
                std::vector<double> want(k.data_ptr<float>(), k.data_ptr<float>() + n);
                want.push_back(0.0);
                require_same(karras_schedule(n, lo, hi, rho), want);
            }
            const auto e = torch::linspace(std::log(hi), std::log(lo), n).exp();
            std::vector<double> want(e.data_ptr<float>(), e.data_ptr<float>() + n);
            want.push_back(0.0);
            require_same(exponential_schedule(n, lo, hi), want);
        }
    }
}
TEST_CASE("most schedule entries are bit-identical to torch", "[schedules][torch]") {
    WARN("compared " << compared << " entries, " << exact << " bit-identical, worst relative difference " << worst_rel);
    REQUIRE(compared > 500);
    REQUIRE(static_cast<double>(exact) >= 0.5 * static_cast<double>(compared));
}
#else
TEST_CASE("libtorch not available", "[schedules][torch]") { SUCCEED("built without libtorch"); }
#endif

} // namespace test_sampling_schedules_torch
