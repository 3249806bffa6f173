// Helpers the sampler tests share: a toy model that counts its calls, a geometric schedule,
// and the noise and two prompts of a 2x4x8x8 run.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "patchbay/core/model.hpp"
#include "patchbay/core/tensor.hpp"
#include "test_util.hpp"
#include "toy_gaussian.hpp"

namespace patchbay::test {

/// The toy Gaussian model, counting its calls.
struct counting_toy {
    using conditioning_type = examples::toy_prompt;
    examples::toy_gaussian toy;
    int calls = 0;
    template <class T, std::size_t R>
    void predict(const model_call<examples::toy_prompt, T, R>& c, view<T, R> out) {
        ++calls;
        toy.predict(c, out);
    }
};

/// `steps` sigmas from hi to lo, geometric and rounded to float32, then 0.
inline std::vector<double> geometric(double hi, double lo, int steps) {
    std::vector<double> s;
    for (int i = 0; i < steps; ++i)
        s.push_back(static_cast<double>(static_cast<float>(hi * std::pow(lo / hi, double(i) / (steps - 1)))));
    s.push_back(0.0);
    return s;
}

/// A run's noise (2x4x8x8) and the means of its two prompts.
struct sampler_setup {
    tensor<float> noise = random_tensor({2, 4, 8, 8}, 31);
    tensor<float> mu_c = random_tensor({1, 4, 8, 8}, 32, 0.5f, 0.5f);
    tensor<float> mu_u = random_tensor({1, 4, 8, 8}, 33, -0.5f, 0.5f);
    examples::toy_prompt pos{mu_c.as<4>()}, neg{mu_u.as<4>()};
};

} // namespace patchbay::test
