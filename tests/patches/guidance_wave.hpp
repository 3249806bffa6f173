// patchbay tests: helpers shared by the unit tests of the cfg-stage patches of the guidance
// wave (CFGZeroStar, Epsilon Scaling, TemporalScoreRescaling, Video*CFGGuidance,
// LatentApplyOperationCFG): random calls, float64 copies, strided layouts and batch items.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <vector>

#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "test_util.hpp"

namespace patchbay::test::wave {

template <class T>
tensor<T> cast(const tensor<float>& t) {
    tensor<T> r(t.shape());
    for (index_t i = 0; i < t.size(); ++i) r[i] = static_cast<T>(t[i]);
    return r;
}

/// Batch item b of a tensor, as a tensor of batch 1.
template <class T>
tensor<T> item(const tensor<T>& t, index_t b) {
    std::vector<index_t> shape = t.shape();
    shape[0] = 1;
    tensor<T> r(shape);
    const index_t n = r.size();
    for (index_t i = 0; i < n; ++i) r[i] = t[b * n + i];
    return r;
}

/// A copy of `t` in a strided layout: every element sits at twice its offset, so no dim has
/// unit stride and kernels take their strided scalar path.
template <class T>
struct strided {
    tensor<T> storage;
    std::vector<index_t> shape;

    explicit strided(const tensor<T>& t) : storage({2 * t.size()}), shape(t.shape()) {
        storage.fill(T(-7)); // the gaps must never be read
        for (index_t i = 0; i < t.size(); ++i) storage[2 * i] = t[i];
    }
    template <std::size_t R>
    view<T, R> as() {
        std::array<index_t, R> e{}, s{};
        index_t stride = 2;
        for (std::size_t r = R; r-- > 0;) {
            e[r] = shape[r];
            s[r] = stride;
            stride *= shape[r];
        }
        return view<T, R>(storage.data(), e, s);
    }
    /// The values back in a contiguous tensor.
    tensor<T> values() const {
        tensor<T> r(shape);
        for (index_t i = 0; i < r.size(); ++i) r[i] = storage[2 * i];
        return r;
    }
};

/// The inputs of one cfg-stage hook call.
template <class T = float>
struct cfg_call {
    tensor<T> x, sigma, cond, uncond;
    double cond_scale = 5.0;
    bool uncond_is_none = false;

    template <std::size_t R>
    guidance_inputs<T, R> inputs(const model_sampling* sampling = nullptr, workspace* scratch = nullptr) const {
        guidance_inputs<T, R> in;
        in.x = x.template as<R>();
        in.sigma = sigma.template as<1>();
        in.cond_scale = cond_scale;
        in.uncond_is_none = uncond_is_none;
        in.scratch = scratch;
        in.sampling = sampling;
        return in;
    }
    /// The plain CFG combination uncond + s (cond - uncond).
    template <std::size_t R>
    tensor<T> cfg() const {
        tensor<T> d(cond.shape());
        kernels::cfg_combine<T, R>(cond.template as<R>(), uncond.template as<R>(), cond_scale, d.template as<R>());
        return d;
    }
    /// Batch item b as a call of its own.
    cfg_call item(index_t b) const {
        cfg_call c = *this;
        c.x = wave::item(x, b);
        c.cond = wave::item(cond, b);
        c.uncond = wave::item(uncond, b);
        c.sigma = tensor<T>({1});
        c.sigma[0] = sigma[b];
        return c;
    }
};

/// A random call: x ~ N(0, 2), cond ~ N(0, 1), uncond correlated with cond, sigma = 1.
template <class T = float>
cfg_call<T> random_call(std::vector<index_t> shape, unsigned seed, double cond_scale = 5.0) {
    cfg_call<T> c;
    c.x = cast<T>(random_tensor(shape, seed, 0.f, 2.f));
    c.cond = cast<T>(random_tensor(shape, seed + 1));
    auto u = random_tensor(shape, seed + 2, 0.f, 0.5f);
    const auto cf = random_tensor(shape, seed + 1);
    for (index_t i = 0; i < u.size(); ++i) u[i] += 0.6f * cf[i];
    c.uncond = cast<T>(u);
    c.sigma = tensor<T>({shape[0]});
    c.sigma.fill(T(1));
    c.cond_scale = cond_scale;
    return c;
}

/// P's post-CFG hook on the plain CFG result, every input in the strided layout (the scalar
/// path) through apply_post_cfg; returns the result.
template <std::size_t R, class P>
tensor<float> post_cfg_strided(const P& p, const cfg_call<float>& c, const model_sampling* sampling = nullptr) {
    strided<float> x(c.x), cond(c.cond), uncond(c.uncond), d(c.cfg<R>());
    auto in = c.inputs<R>(sampling);
    in.x = x.as<R>();
    no_state st;
    apply_post_cfg(p, st, in, cond.as<R>(), uncond.as<R>(), d.as<R>());
    return d.values();
}

/// ComfyUI's gaussian_kernel(2r+1, sigma) in float64: the grid linspace(-1, 1) in both
/// directions, normalised to sum 1 (row-major, (2r+1)^2 values).
inline std::vector<double> comfy_gaussian_kernel(index_t r, double sigma) {
    const index_t K = 2 * r + 1;
    std::vector<double> g(static_cast<std::size_t>(K * K));
    double sum = 0;
    for (index_t i = 0; i < K; ++i)
        for (index_t j = 0; j < K; ++j) {
            const double x = -1.0 + 2.0 * double(i) / double(K - 1), y = -1.0 + 2.0 * double(j) / double(K - 1);
            sum += g[static_cast<std::size_t>(i * K + j)] = std::exp(-(x * x + y * y) / (2 * sigma * sigma));
        }
    for (auto& v : g) v /= sum;
    return g;
}

/// torch's reflect padding index: i in [-r, n-1+r] into [0, n), the edge not repeated.
inline index_t reflect(index_t i, index_t n) { return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i; }

/// The H x W plane at(y, x) reflect-padded by r and cross-correlated with the (2r+1)^2 kernel k
/// (torch's pad(..., 'reflect') then conv2d), in float64; row-major result.
template <class At>
std::vector<double> correlate_reflect(At at, index_t H, index_t W, const std::vector<double>& k, index_t r) {
    const index_t K = 2 * r + 1;
    std::vector<double> out(static_cast<std::size_t>(H * W));
    for (index_t y = 0; y < H; ++y)
        for (index_t x = 0; x < W; ++x) {
            double s = 0;
            for (index_t i = 0; i < K; ++i)
                for (index_t j = 0; j < K; ++j)
                    s += k[static_cast<std::size_t>(i * K + j)] * at(reflect(y + i - r, H), reflect(x + j - r, W));
            out[static_cast<std::size_t>(y * W + x)] = s;
        }
    return out;
}

/// Largest |a - b| relative to max(1, |b|) over a result and its float64 reference.
template <class T>
double max_rel_diff(const tensor<T>& a, const tensor<double>& b) {
    double m = 0;
    for (index_t i = 0; i < a.size(); ++i)
        m = std::max(m, std::fabs(double(a[i]) - b[i]) / std::max(1.0, std::fabs(b[i])));
    return m;
}

} // namespace patchbay::test::wave
