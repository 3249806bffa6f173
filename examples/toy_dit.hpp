// toy_dit: a small diffusion transformer (MMDiT / Flux layout) that calls the DiT hooks, built
// around an exact denoiser so its samples are pictures and its results can be checked.
//
// The data is a Gaussian mixture: K procedurally drawn pictures mu_k (C x H x W: a tilted
// two-colour ramp, a square and a ring per picture), each with isotropic noise of std s. A
// prompt weights the pictures. For vp noise (x = x0 + sigma*eps) the posterior mean is exact:
//   r_k = softmax_k(log w_k - |x - mu_k|^2 / (2 (s^2 + sigma^2))),  m = sum_k r_k mu_k
//   D   = m + s^2/(s^2 + sigma^2) (x - m)
// and for flow noise (x = (1-sigma) x0 + sigma*eps) the same at x/(1-sigma), sigma/(1-sigma)
// (at sigma >= 1, D is the prior mean). On top of it runs a real DiT, scaled by `residual`:
// patch embedding of the latent plus a time embedding, text tokens from the prompt, double
// blocks (text and image streams with their own weights and one joint self-attention over
// text-then-image tokens), single blocks (one stream, attention and MLP in parallel), and a
// final projection of the image tokens back to pixels.
//
// Hooks: before each block it asks the call's overrides whether to skip it
// (dit_block_site{double_block | single_block, i}: the block is then the identity), and after
// each block's self-attention it runs the attention-output hooks at dit::attention(block,
// grid rows, grid cols) on the attention output (items, text + image tokens, hidden), with the
// prompt of each item. predict_batch evaluates several prompts in one call (each prompt's
// items with its own overrides): blocks run for the items whose prompt does not skip them,
// and at each self-attention every prompt's attention-output hooks run once over all those
// items together (so NAG, attached to the positive prompt, sees both prompts). Every item is
// computed alone, so a batched call gives the per-prompt results bit for bit.
//
// This is example code: plain loops over small sizes; an engine's network replaces it. The
// counts and the per-call scratch are members: one model serves one run at a time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <patchbay/core/config.hpp>
#include <patchbay/core/error.hpp>
#include <patchbay/core/hooks.hpp>
#include <patchbay/core/model.hpp>
#include <patchbay/core/tensor.hpp>
#include <patchbay/core/view.hpp>
#include <patchbay/patches/attention/dit_sites.hpp>
#include <patchbay/sampling/samplers.hpp>

#include "toy_gaussian.hpp"

namespace patchbay::examples {

struct toy_dit_config {
    index_t channels = 3;      ///< latent channels
    index_t height = 32;       ///< latent height (multiple of patch)
    index_t width = 32;        ///< latent width (multiple of patch)
    index_t patch = 4;         ///< patch size: (height/patch) x (width/patch) image tokens
    index_t hidden = 24;       ///< token width
    int heads = 2;             ///< attention heads (hidden must divide into them)
    int double_blocks = 10;    ///< SkipLayerGuidance's default layers 7, 8, 9 exist in both kinds
    int single_blocks = 10;
    index_t text_tokens = 4;   ///< tokens of a prompt
    index_t pictures = 5;      ///< mixture components
    double data_std = 0.12;    ///< std of each mixture component
    double residual = 0.3;     ///< weight of the DiT on top of the exact denoiser
    toy_kind kind = toy_kind::vp; ///< vp (x0 + sigma eps) or flow ((1-sigma) x0 + sigma eps)
    std::uint64_t seed = 7;    ///< pictures and weights
};

/// A prompt of the toy DiT: mixture weights over the pictures and its text tokens.
struct toy_dit_prompt {
    std::vector<double> weights; ///< one per picture, positive
    std::vector<float> text;     ///< text_tokens x hidden
};

/// What the model was asked (tests count these).
struct toy_dit_counts {
    int cond = 0, uncond = 0, reevaluation = 0, extra = 0; ///< prompt groups evaluated, by pass
    int calls = 0;          ///< predict and predict_batch calls
    int batched_calls = 0;  ///< ... of them predict_batch
    int skipping = 0;       ///< prompt groups that skipped at least one block
    int blocks_skipped = 0; ///< blocks skipped, summed over prompt groups
    int attention_output_calls = 0; ///< attention-output hook runs (one per prompt's overrides per site)
    int total() const noexcept { return cond + uncond + reevaluation + extra; }
};

class toy_dit {
public:
    using conditioning_type = toy_dit_prompt;
    static constexpr bool skips_blocks = true;
    static constexpr bool calls_attention_output_hooks = true;

    explicit toy_dit(toy_dit_config cfg = {}) : cfg_(cfg) {
        constexpr const char* where = "toy_dit";
        require(cfg.patch >= 1 && cfg.height % cfg.patch == 0 && cfg.width % cfg.patch == 0, where,
                "height and width must be multiples of patch");
        require(cfg.channels >= 1 && cfg.hidden >= 1 && cfg.heads >= 1 && cfg.pictures >= 1 && cfg.text_tokens >= 1 &&
                    cfg.double_blocks >= 0 && cfg.single_blocks >= 0,
                where, "sizes must be positive");
        require(cfg.hidden % cfg.heads == 0, where, "hidden must divide into heads");
        require_range(cfg.data_std, 1e-3, 10.0, where, "data_std");
        require_range(cfg.residual, 0.0, 10.0, where, "residual");
        normal_generator rng(cfg.seed);
        draw_pictures(rng);
        const index_t d = cfg.hidden, m = 2 * d, pd = cfg.patch * cfg.patch * cfg.channels;
        const double gain = 1.0 / std::sqrt(double(2 * (cfg.double_blocks + cfg.single_blocks) + 1));
        patch_in_ = dense(rng, pd, d);
        time_ = dense(rng, time_features, d);
        position_.resize(static_cast<std::size_t>(image_tokens() * d));
        for (auto& p : position_) p = static_cast<float>(0.5 * rng.next());
        for (int i = 0; i < cfg.double_blocks; ++i) {
            double_block b;
            for (auto* s : {&b.text, &b.image}) {
                s->qkv = dense(rng, d, 3 * d);
                s->out = dense(rng, d, d, gain);
                s->mlp_in = dense(rng, d, m);
                s->mlp_out = dense(rng, m, d, gain);
            }
            doubles_.push_back(std::move(b));
        }
        for (int i = 0; i < cfg.single_blocks; ++i) {
            stream s;
            s.qkv = dense(rng, d, 3 * d);
            s.out = dense(rng, d, d, gain);
            s.mlp_in = dense(rng, d, m);
            s.mlp_out = dense(rng, m, d, gain);
            singles_.push_back(std::move(s));
        }
        final_ = dense(rng, d, pd);
        embed_.resize(static_cast<std::size_t>(cfg.pictures * cfg.text_tokens * d));
        for (auto& e : embed_) e = rng.next();
    }

    const toy_dit_config& config() const noexcept { return cfg_; }
    index_t image_tokens() const noexcept { return grid_rows() * grid_cols(); }
    index_t grid_rows() const noexcept { return cfg_.height / cfg_.patch; }
    index_t grid_cols() const noexcept { return cfg_.width / cfg_.patch; }

    /// The picture of component k as a (1, C, H, W) tensor.
    tensor<float> picture(index_t k) const {
        require(k >= 0 && k < cfg_.pictures, "toy_dit::picture", "no such picture");
        tensor<float> t({1, cfg_.channels, cfg_.height, cfg_.width});
        const index_t n = t.size();
        for (index_t i = 0; i < n; ++i) t[i] = static_cast<float>(pictures_[static_cast<std::size_t>(k * n + i)]);
        return t;
    }

    /// A prompt for picture k: weight `strength` on it, the rest shared by the others.
    toy_dit_prompt prompt(index_t k, double strength = 0.9) const {
        require(k >= 0 && k < cfg_.pictures, "toy_dit::prompt", "no such picture");
        require_range(strength, 0.0, 1.0, "toy_dit::prompt", "strength");
        const auto K = static_cast<std::size_t>(cfg_.pictures);
        std::vector<double> w(K, K > 1 ? (1.0 - strength) / double(K - 1) : 1.0);
        w[static_cast<std::size_t>(k)] = K > 1 ? strength : 1.0;
        return make_prompt(std::move(w));
    }

    /// The negative prompt: every picture equally likely.
    toy_dit_prompt negative_prompt() const {
        return make_prompt(std::vector<double>(static_cast<std::size_t>(cfg_.pictures), 1.0 / double(cfg_.pictures)));
    }

    /// What the model has been asked so far (tests reset it by assignment).
    toy_dit_counts counts{};

    /// D(x, sigma) for one prompt: the exact mixture denoiser plus `residual` times the DiT.
    template <class T>
    void predict(const model_call<toy_dit_prompt, T, 4>& call, view<T, 4> out) {
        constexpr const char* where = "toy_dit::predict";
        require(call.conditioning != nullptr && call.overrides != nullptr, where, "the call has no prompt or no overrides");
        check_latent(call.x, call.sigma, out, where);
        const group<T> g{call.conditioning, call.overrides, call.pass, call.prompt, 0, call.x.extent(0)};
        ++counts.calls;
        run<T>(call.x, call.sigma, std::span<const group<T>>(&g, 1), out);
    }

    /// Every prompt of one evaluation in one call (the prompts' items in order along dim 0).
    template <class T>
    void predict_batch(const batched_call<toy_dit_prompt, T, 4>& call, view<T, 4> out) {
        constexpr const char* where = "toy_dit::predict_batch";
        check_latent(call.x, call.sigma, out, where);
        std::vector<group<T>> groups;
        index_t next = 0;
        for (const auto& p : call.prompts) {
            require(p.conditioning != nullptr && p.overrides != nullptr, where, "a prompt has no conditioning or no overrides");
            require(p.first == next && p.count >= 0, where, "the prompts' items must follow each other along dim 0");
            groups.push_back({p.conditioning, p.overrides, p.pass, p.prompt, p.first, p.count});
            next += p.count;
        }
        require(next == call.x.extent(0), where, "the prompts' items must cover the batch");
        ++counts.calls;
        ++counts.batched_calls;
        run<T>(call.x, call.sigma, std::span<const group<T>>(groups), out);
    }

private:
    static constexpr index_t time_features = 8;

    template <class T>
    struct group {
        const toy_dit_prompt* prompt;
        const call_overrides<T>* overrides;
        pass_kind pass, prompt_kind;
        index_t first, count;
    };

    /// A linear layer with its weight stored input-major (in x out), so y += x_i * W[i, :]
    /// runs over contiguous outputs.
    struct dense {
        index_t in = 0, out = 0;
        std::vector<float> w, bias;
        dense() = default;
        dense(normal_generator& rng, index_t i, index_t o, double gain = 1.0)
            : in(i), out(o), w(static_cast<std::size_t>(i * o)), bias(static_cast<std::size_t>(o)) {
            const double scale = gain / std::sqrt(double(i));
            for (auto& v : w) v = static_cast<float>(rng.next() * scale);
            for (auto& v : bias) v = static_cast<float>(0.05 * rng.next());
        }
        /// y (rows x out, row stride ys) = [y +] bias + x (rows x in, row stride xs) W
        template <class T>
        void apply(const T* x, index_t xs, index_t rows, T* y, index_t ys, bool accumulate) const {
            const float* PATCHBAY_RESTRICT bs = bias.data();
            for (index_t r = 0; r < rows; ++r) {
                T* PATCHBAY_RESTRICT yr = y + r * ys;
                const T* xr = x + r * xs;
                for (index_t o = 0; o < out; ++o) yr[o] = (accumulate ? yr[o] : T(0)) + static_cast<T>(bs[o]);
                for (index_t i = 0; i < in; ++i) {
                    const T xi = xr[i];
                    const float* PATCHBAY_RESTRICT wi = w.data() + i * out;
                    for (index_t o = 0; o < out; ++o) yr[o] += xi * static_cast<T>(wi[o]);
                }
            }
        }
    };

    struct stream {
        dense qkv, out, mlp_in, mlp_out;
    };
    struct double_block {
        stream text, image;
    };

    /// Per-call scratch of one element type (grows only).
    template <class T>
    struct scratch {
        std::vector<T> tokens, normed, qkv, att, hidden, keys, scores, net, compact;
        std::vector<pass_kind> prompts;
        std::vector<index_t> active;
        std::vector<char> runs; ///< per prompt group: runs the current block
    };
    scratch<float>& scratch_of(float) { return scratch_f_; }
    scratch<double>& scratch_of(double) { return scratch_d_; }

    template <class T>
    void check_latent(const view<const T, 4>& x, const view<const T, 1>& sigma, const view<T, 4>& out,
                      const char* where) const {
        require_batch_vector(sigma, x, where, "sigma");
        require_same_shape(x, view<const T, 4>(out), where, "x", "out");
        require(x.extent(1) == cfg_.channels && x.extent(2) == cfg_.height && x.extent(3) == cfg_.width, where,
                "x must be (N, " + std::to_string(cfg_.channels) + ", " + std::to_string(cfg_.height) + ", " +
                    std::to_string(cfg_.width) + "), got " + shape_string(x));
    }

    toy_dit_prompt make_prompt(std::vector<double> w) const {
        toy_dit_prompt p;
        const index_t d = cfg_.hidden, n = cfg_.text_tokens * d;
        p.text.assign(static_cast<std::size_t>(n), 0.f);
        for (std::size_t k = 0; k < w.size(); ++k)
            for (index_t i = 0; i < n; ++i)
                p.text[static_cast<std::size_t>(i)] += static_cast<float>(w[k] * embed_[k * static_cast<std::size_t>(n) + static_cast<std::size_t>(i)]);
        p.weights = std::move(w);
        return p;
    }

    /// Pictures: a ramp between two colours along a random direction, a square and a ring.
    void draw_pictures(normal_generator& rng) {
        const index_t C = cfg_.channels, H = cfg_.height, W = cfg_.width, n = C * H * W;
        pictures_.assign(static_cast<std::size_t>(cfg_.pictures * n), 0.0);
        const auto unit = [&] { return 0.5 + 0.5 * std::tanh(rng.next()); }; // in (0, 1)
        for (index_t k = 0; k < cfg_.pictures; ++k) {
            std::vector<double> from(static_cast<std::size_t>(C)), to(from), square(from), ring(from);
            for (index_t c = 0; c < C; ++c) {
                const auto u = static_cast<std::size_t>(c);
                from[u] = 1.4 * unit() - 0.7, to[u] = 1.4 * unit() - 0.7;
                square[u] = 2.0 * unit() - 1.0, ring[u] = 2.0 * unit() - 1.0;
            }
            const double angle = 6.283185307179586 * unit();
            const double sy = (0.2 + 0.6 * unit()) * double(H), sx = (0.2 + 0.6 * unit()) * double(W);
            const double half = (0.08 + 0.1 * unit()) * double(std::min(H, W));
            const double ry = (0.25 + 0.5 * unit()) * double(H), rx = (0.25 + 0.5 * unit()) * double(W);
            const double radius = (0.15 + 0.12 * unit()) * double(std::min(H, W));
            for (index_t y = 0; y < H; ++y)
                for (index_t x = 0; x < W; ++x) {
                    const double fy = double(y) / double(H - 1 > 0 ? H - 1 : 1), fx = double(x) / double(W - 1 > 0 ? W - 1 : 1);
                    const double t = 0.5 + 0.5 * ((fx - 0.5) * std::cos(angle) + (fy - 0.5) * std::sin(angle));
                    const bool in_square = std::fabs(double(y) + 0.5 - sy) < half && std::fabs(double(x) + 0.5 - sx) < half;
                    const bool on_ring = std::fabs(std::hypot(double(y) + 0.5 - ry, double(x) + 0.5 - rx) - radius) < 1.0;
                    for (index_t c = 0; c < C; ++c) {
                        const auto u = static_cast<std::size_t>(c);
                        double v = from[u] * (1.0 - t) + to[u] * t;
                        if (in_square) v = square[u];
                        if (on_ring) v = ring[u];
                        pictures_[static_cast<std::size_t>(((k * C + c) * H + y) * W + x)] = v;
                    }
                }
        }
    }

    /// The exact posterior mean of item b plus `residual` times the network's output.
    template <class T>
    void exact(const view<const T, 4>& x, double sigma, const toy_dit_prompt& pr, index_t b, const T* net,
               const view<T, 4>& out) const {
        const index_t C = cfg_.channels, H = cfg_.height, W = cfg_.width, n = C * H * W, K = cfg_.pictures;
        const double s2 = cfg_.data_std * cfg_.data_std;
        // flow: the vp posterior at x / (1 - sigma), sigma / (1 - sigma); at sigma >= 1 x says nothing
        double xscale = 1.0, sig = sigma;
        const bool informative = cfg_.kind == toy_kind::vp || sigma < 1.0;
        if (cfg_.kind == toy_kind::flow && informative) {
            xscale = 1.0 / (1.0 - sigma);
            sig = sigma * xscale;
        }
        const double var = s2 + sig * sig, a = informative ? s2 / var : 0.0;
        std::vector<double> r(static_cast<std::size_t>(K));
        double top = -HUGE_VAL;
        for (index_t k = 0; k < K; ++k) {
            double d2 = 0;
            if (informative) {
                const double* mu = pictures_.data() + k * n;
                for (index_t c = 0, i = 0; c < C; ++c)
                    for (index_t y = 0; y < H; ++y)
                        for (index_t xx = 0; xx < W; ++xx, ++i) {
                            const double dv = double(x(b, c, y, xx)) * xscale - mu[i];
                            d2 += dv * dv;
                        }
            }
            r[std::size_t(k)] = std::log(pr.weights[std::size_t(k)]) - d2 / (2.0 * var);
            top = std::max(top, r[std::size_t(k)]);
        }
        double z = 0;
        for (auto& v : r) z += v = std::exp(v - top);
        for (auto& v : r) v /= z;
        for (index_t c = 0, i = 0; c < C; ++c)
            for (index_t y = 0; y < H; ++y)
                for (index_t xx = 0; xx < W; ++xx, ++i) {
                    double m = 0;
                    for (index_t k = 0; k < K; ++k) m += r[std::size_t(k)] * pictures_[std::size_t(k * n + i)];
                    const double xv = double(x(b, c, y, xx)) * xscale;
                    out(b, c, y, xx) = static_cast<T>(m + a * (xv - m) + cfg_.residual * double(net[i]));
                }
    }

    // ---- the network (tokens: items x (text + image) x hidden, text first) ---------------

    template <class T>
    static void rms_norm(const T* x, index_t rows, index_t d, T* y) {
        for (index_t r = 0; r < rows; ++r) {
            T ss = 0;
            for (index_t i = 0; i < d; ++i) ss += x[r * d + i] * x[r * d + i];
            const T inv = T(1) / std::sqrt(ss / static_cast<T>(d) + T(1e-6));
            for (index_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * inv;
        }
    }

    /// A cheap smooth gate (no exp): x * (0.5 + 0.5 x / (1 + |x|)).
    template <class T>
    static void gate(T* v, index_t n) {
        for (index_t i = 0; i < n; ++i) v[i] = v[i] * (T(0.5) + T(0.5) * v[i] / (T(1) + std::fabs(v[i])));
    }

    /// Joint multi-head self-attention of one item: qkv (N x 3d: q, k, v) -> att (N x d).
    template <class T>
    void attention(const T* qkv, index_t N, T* att, scratch<T>& s) const {
        const index_t d = cfg_.hidden, H = cfg_.heads, dh = d / H;
        const T scale = static_cast<T>(1.0 / std::sqrt(double(dh)));
        s.keys.resize(static_cast<std::size_t>(dh * N));
        s.scores.resize(static_cast<std::size_t>(N));
        T* PATCHBAY_RESTRICT kt = s.keys.data();
        T* PATCHBAY_RESTRICT p = s.scores.data();
        for (index_t i = 0; i < N * d; ++i) att[i] = T(0);
        for (index_t h = 0; h < H; ++h) {
            for (index_t j = 0; j < N; ++j) // keys of this head, transposed (dh x N)
                for (index_t e = 0; e < dh; ++e) kt[e * N + j] = qkv[j * 3 * d + d + h * dh + e];
            for (index_t i = 0; i < N; ++i) {
                const T* q = qkv + i * 3 * d + h * dh;
                for (index_t j = 0; j < N; ++j) p[j] = T(0);
                for (index_t e = 0; e < dh; ++e) {
                    const T qe = q[e] * scale;
                    const T* PATCHBAY_RESTRICT ke = kt + e * N;
                    for (index_t j = 0; j < N; ++j) p[j] += qe * ke[j];
                }
                T top = p[0];
                for (index_t j = 1; j < N; ++j) top = std::max(top, p[j]);
                T z = 0;
                for (index_t j = 0; j < N; ++j) z += p[j] = std::exp(p[j] - top);
                const T inv = T(1) / z;
                T* o = att + i * d + h * dh;
                for (index_t j = 0; j < N; ++j) {
                    const T w = p[j] * inv;
                    const T* v = qkv + j * 3 * d + 2 * d + h * dh;
                    for (index_t e = 0; e < dh; ++e) o[e] += w * v[e];
                }
            }
        }
    }

    /// The attention-output hooks of every prompt whose items ran this block's attention, each
    /// prompt's once, over all those items together (with their prompts).
    template <class T>
    void attention_hooks(std::span<const group<T>> groups, const attention_site& site, index_t B, index_t N,
                         scratch<T>& s) {
        const std::vector<char>& runs = s.runs;
        const index_t d = cfg_.hidden, per_item = N * d;
        bool any = false;
        for (std::size_t g = 0; g < groups.size(); ++g)
            any = any || (runs[g] && groups[g].overrides->has_attention_output_hooks());
        if (!any) return;
        const index_t n = static_cast<index_t>(s.active.size());
        const bool all = n == B;
        T* base = s.att.data();
        if (!all) { // gather the running items into one batch
            s.compact.resize(static_cast<std::size_t>(n * per_item));
            for (index_t k = 0; k < n; ++k)
                std::copy_n(s.att.data() + s.active[std::size_t(k)] * per_item, per_item, s.compact.data() + k * per_item);
            base = s.compact.data();
        }
        const view<T, 3> att(base, {n, N, d});
        const std::span<const pass_kind> prompts(s.prompts.data(), static_cast<std::size_t>(n));
        for (std::size_t g = 0; g < groups.size(); ++g)
            if (runs[g] && groups[g].overrides->has_attention_output_hooks()) {
                ++counts.attention_output_calls;
                groups[g].overrides->apply_attention_output(site, att, prompts);
            }
        if (!all)
            for (index_t k = 0; k < n; ++k)
                std::copy_n(s.compact.data() + k * per_item, per_item, s.att.data() + s.active[std::size_t(k)] * per_item);
    }

    /// Which items run the block (their prompt does not skip it): fills s.runs, s.active and
    /// s.prompts.
    template <class T>
    void running(std::span<const group<T>> groups, const dit_block_site& block, scratch<T>& s) const {
        s.runs.assign(groups.size(), 0);
        s.active.clear();
        s.prompts.clear();
        for (std::size_t g = 0; g < groups.size(); ++g) {
            if (groups[g].overrides->skips(block)) continue;
            s.runs[g] = 1;
            for (index_t b = groups[g].first; b < groups[g].first + groups[g].count; ++b) {
                s.active.push_back(b);
                s.prompts.push_back(groups[g].prompt_kind);
            }
        }
    }

    template <class T>
    void run(const view<const T, 4>& x, const view<const T, 1>& sigma, std::span<const group<T>> groups,
             const view<T, 4>& out) {
        const index_t B = x.extent(0), C = cfg_.channels, P = cfg_.patch, gr = grid_rows(), gc = grid_cols();
        const index_t Nt = cfg_.text_tokens, Ni = image_tokens(), N = Nt + Ni, d = cfg_.hidden, m = 2 * d;
        const index_t pd = P * P * C, per_item = N * d;
        auto& s = scratch_of(T{});
        for (const auto& g : groups) {
            const auto& pr = *g.prompt;
            require(pr.weights.size() == static_cast<std::size_t>(cfg_.pictures) &&
                        pr.text.size() == static_cast<std::size_t>(Nt * d),
                    "toy_dit", "the prompt does not belong to this model");
            (g.pass == pass_kind::cond ? counts.cond
             : g.pass == pass_kind::uncond ? counts.uncond
             : g.pass == pass_kind::extra ? counts.extra
                                          : counts.reevaluation)++;
        }
        s.tokens.resize(static_cast<std::size_t>(B * per_item));
        s.normed.resize(s.tokens.size());
        s.att.resize(s.tokens.size());
        s.qkv.resize(static_cast<std::size_t>(B * N * 3 * d));
        s.hidden.resize(static_cast<std::size_t>(B * N * m));
        std::vector<T> patch_row(static_cast<std::size_t>(pd)), temb(static_cast<std::size_t>(d));

        // embedding: text tokens of the item's prompt, patches of c_in * x, a time embedding
        for (const auto& g : groups)
            for (index_t b = g.first; b < g.first + g.count; ++b) {
                T* tok = s.tokens.data() + b * per_item;
                const double sg = double(sigma(b));
                const double ls = std::log(std::max(sg, 1e-4));
                T f[time_features];
                for (index_t j = 0; j < time_features / 2; ++j) {
                    f[2 * j] = static_cast<T>(std::sin(double(j + 1) * ls * 0.5));
                    f[2 * j + 1] = static_cast<T>(std::cos(double(j + 1) * ls * 0.5));
                }
                time_.apply(f, time_features, 1, temb.data(), d, false);
                for (index_t i = 0; i < Nt * d; ++i) tok[i] = static_cast<T>(g.prompt->text[std::size_t(i)]) + temb[std::size_t(i % d)];
                const double c_in = cfg_.kind == toy_kind::vp ? 1.0 / std::sqrt(1.0 + sg * sg) : 1.0;
                for (index_t ty = 0; ty < gr; ++ty)
                    for (index_t tx = 0; tx < gc; ++tx) {
                        index_t k = 0;
                        for (index_t c = 0; c < C; ++c)
                            for (index_t py = 0; py < P; ++py)
                                for (index_t px = 0; px < P; ++px)
                                    patch_row[std::size_t(k++)] = static_cast<T>(double(x(b, c, ty * P + py, tx * P + px)) * c_in);
                        T* row = tok + (Nt + ty * gc + tx) * d;
                        patch_in_.apply(patch_row.data(), pd, 1, row, d, false);
                        for (index_t i = 0; i < d; ++i)
                            row[i] += temb[std::size_t(i)] + static_cast<T>(position_[std::size_t((ty * gc + tx) * d + i)]);
                    }
            }

        // double blocks: own weights per stream, one joint attention
        for (int bi = 0; bi < cfg_.double_blocks; ++bi) {
            const dit_block_site block{dit_block_site::kind::double_block, bi};
            running(groups, block, s);
            if (s.active.empty()) continue;
            const auto& w = doubles_[std::size_t(bi)];
            for (index_t b : s.active) {
                T* tok = s.tokens.data() + b * per_item;
                T* nrm = s.normed.data() + b * per_item;
                T* qkv = s.qkv.data() + b * N * 3 * d;
                rms_norm(tok, N, d, nrm);
                w.text.qkv.apply(nrm, d, Nt, qkv, 3 * d, false);
                w.image.qkv.apply(nrm + Nt * d, d, Ni, qkv + Nt * 3 * d, 3 * d, false);
                attention(qkv, N, s.att.data() + b * per_item, s);
            }
            attention_hooks(groups, dit::attention(block, gr, gc), B, N, s);
            for (index_t b : s.active) {
                T* tok = s.tokens.data() + b * per_item;
                T* nrm = s.normed.data() + b * per_item;
                T* hid = s.hidden.data() + b * N * m;
                const T* att = s.att.data() + b * per_item;
                w.text.out.apply(att, d, Nt, tok, d, true);
                w.image.out.apply(att + Nt * d, d, Ni, tok + Nt * d, d, true);
                rms_norm(tok, N, d, nrm);
                w.text.mlp_in.apply(nrm, d, Nt, hid, m, false);
                w.image.mlp_in.apply(nrm + Nt * d, d, Ni, hid + Nt * m, m, false);
                gate(hid, N * m);
                w.text.mlp_out.apply(hid, m, Nt, tok, d, true);
                w.image.mlp_out.apply(hid + Nt * m, m, Ni, tok + Nt * d, d, true);
            }
        }

        // single blocks: one stream, attention and MLP side by side
        for (int bi = 0; bi < cfg_.single_blocks; ++bi) {
            const dit_block_site block{dit_block_site::kind::single_block, bi};
            running(groups, block, s);
            if (s.active.empty()) continue;
            const auto& w = singles_[std::size_t(bi)];
            for (index_t b : s.active) {
                T* nrm = s.normed.data() + b * per_item;
                T* qkv = s.qkv.data() + b * N * 3 * d;
                T* hid = s.hidden.data() + b * N * m;
                rms_norm(s.tokens.data() + b * per_item, N, d, nrm);
                w.qkv.apply(nrm, d, N, qkv, 3 * d, false);
                attention(qkv, N, s.att.data() + b * per_item, s);
                w.mlp_in.apply(nrm, d, N, hid, m, false);
                gate(hid, N * m);
            }
            attention_hooks(groups, dit::attention(block, gr, gc), B, N, s);
            for (index_t b : s.active) {
                T* tok = s.tokens.data() + b * per_item;
                w.out.apply(s.att.data() + b * per_item, d, N, tok, d, true);
                w.mlp_out.apply(s.hidden.data() + b * N * m, m, N, tok, d, true);
            }
        }

        for (const auto& g : groups) {
            int skipped = 0;
            for (int i = 0; i < cfg_.double_blocks; ++i)
                skipped += g.overrides->skips({dit_block_site::kind::double_block, i}) ? 1 : 0;
            for (int i = 0; i < cfg_.single_blocks; ++i)
                skipped += g.overrides->skips({dit_block_site::kind::single_block, i}) ? 1 : 0;
            counts.blocks_skipped += skipped;
            counts.skipping += skipped > 0 ? 1 : 0;
        }

        // final projection of the image tokens to pixels, then the exact denoiser on top
        s.net.resize(static_cast<std::size_t>(C * cfg_.height * cfg_.width));
        for (const auto& g : groups)
            for (index_t b = g.first; b < g.first + g.count; ++b) {
                T* tok = s.tokens.data() + b * per_item + Nt * d;
                T* nrm = s.normed.data() + b * per_item;
                rms_norm(tok, Ni, d, nrm);
                for (index_t t = 0; t < Ni; ++t) {
                    final_.apply(nrm + t * d, d, 1, patch_row.data(), pd, false);
                    const index_t ty = t / gc, tx = t % gc;
                    index_t k = 0;
                    for (index_t c = 0; c < C; ++c)
                        for (index_t py = 0; py < P; ++py)
                            for (index_t px = 0; px < P; ++px)
                                s.net[std::size_t((c * cfg_.height + ty * P + py) * cfg_.width + tx * P + px)] =
                                    patch_row[std::size_t(k++)];
                }
                exact(x, double(sigma(b)), *g.prompt, b, s.net.data(), out);
            }
    }

    toy_dit_config cfg_;
    std::vector<double> pictures_; // K x C x H x W
    std::vector<double> embed_;    // K x text_tokens x hidden
    std::vector<float> position_;  // image tokens x hidden
    dense patch_in_, time_, final_;
    std::vector<double_block> doubles_;
    std::vector<stream> singles_;
    scratch<float> scratch_f_;
    scratch<double> scratch_d_;
};

static_assert(diffusion_model<toy_dit, float, 4>);
static_assert(batched_model<toy_dit, float, 4>);

} // namespace patchbay::examples
