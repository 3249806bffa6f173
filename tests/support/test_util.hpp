// patchbay tests: small helpers shared by the test files.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "patchbay/core/error.hpp"
#include "patchbay/core/isa.hpp"
#include "patchbay/core/tensor.hpp"

namespace patchbay::test {

/// Deterministic normal values.
inline tensor<float> random_tensor(std::vector<index_t> shape, unsigned seed, float mean = 0.f,
                                   float stddev = 1.f) {
    tensor<float> t(std::move(shape));
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(mean, stddev);
    for (index_t i = 0; i < t.size(); ++i) t[i] = d(rng);
    return t;
}

/// Largest |a - b| over two same-sized tensors.
template <class T>
double max_abs_diff(const tensor<T>& a, const tensor<T>& b) {
    double m = 0;
    for (index_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
    return m;
}

/// True when two tensors are bit-identical.
template <class T>
bool bit_equal(const tensor<T>& a, const tensor<T>& b) {
    if (a.shape() != b.shape()) return false;
    for (index_t i = 0; i < a.size(); ++i)
        if (!(a[i] == b[i]) && !(std::isnan(a[i]) && std::isnan(b[i]))) return false;
    return true;
}

/// True when the built-in patches run the SIMD variant this file is compiled for: then a patch
/// run by a guider and the same arithmetic written here agree bit for bit. Under
/// patchbay::dispatch they may run a wider variant, which rounds differently (FMA, reduction
/// order; docs/integration.md "Instruction sets").
inline bool patches_run_this_variant() { return simd_arch_name() == compiled_simd_name(); }

/// a and b bit for bit where the patches run this file's variant, else within rounding of a
/// float32 computation (2e-6 of the largest magnitude).
template <class T>
bool same_arithmetic(const tensor<T>& a, const tensor<T>& b) {
    if (patches_run_this_variant()) return bit_equal(a, b);
    if (a.shape() != b.shape()) return false;
    double scale = 0;
    for (index_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::fabs(double(a[i])));
    return max_abs_diff(a, b) <= 2e-6 * std::max(scale, 1e-30);
}

/// One value: equal where the patches run this file's variant, else within float32 rounding.
inline bool same_value(double got, double want) {
    if (patches_run_this_variant()) return got == want;
    return std::fabs(got - want) <= 4e-6 * std::max(1.0, std::fabs(want));
}

/// The message of the patchbay::error that f() raises, or "<no error>" when it returns.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const error& e) {
        return e.what();
    }
    return "<no error>";
}

} // namespace patchbay::test
