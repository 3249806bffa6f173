// toy_unet: a small UNet that calls every patchbay model hook, built around an exact denoiser
// so its samples are pictures.
//
// The data is a Gaussian mixture: K procedurally drawn pictures mu_k (C x H x W, shapes on a
// gradient), each with isotropic noise of std s. A prompt is a weighting of the pictures
// (picture k strongly, the rest weakly; the negative prompt weights them evenly). For
// x = x0 + sigma*eps the posterior mean is exact:
//   r_k = softmax_k(log w_k - |x - mu_k|^2 / (2 (s^2 + sigma^2)))
//   D   = m + s^2/(s^2 + sigma^2) (x - m),   m = sum_k r_k mu_k
// On top of it runs a real UNet, scaled by `residual` (small), with deterministic weights from
// a seed: conv_in, input blocks at 1x, 2x, 4x model_channels (skip features saved), a middle
// block with multi-head self-attention (attention_site{middle, 0, 0}, reported with its token
// grid) and cross-attention to the prompt's context tokens, and four output blocks whose h has
// 4x, 2x, 1x, 1x model_channels (so FreeU's rule selects blocks 0 and 1, as in SD1.x/SDXL).
// At every output block it calls the block hooks on (h, hsp) before concatenating them; at
// the self-attention it honours replacements (PAG) and readers (SAG). After each input block
// (0: conv_in + time embedding, 1: the full-size residual conv, 2 and 3: the downsampling
// convs) it calls the input-block hooks before and after storing the skip connection (Deep
// Shrink): h may come back at another spatial size, the deeper blocks run at that size, the
// 2x upsampling follows h, and the output-block hooks must bring h back to each skip's size.
//
// predict_batch evaluates several prompts in one network run (ComfyUI's calc_cond_batch): the
// prompts' items follow each other along dim 0 and each prompt brings its own hooks, which
// see only that prompt's items: the block hooks get the prompt's slice of (h, hsp), the
// self-attention is replaced or read per prompt on its slice of q, k, v (probabilities
// (items * heads, N, N) of that prompt only), and each item cross-attends to its own prompt's
// context. Every layer computes each item on its own, so a batched call gives the per-prompt
// results bit for bit.
//
// This is example code: plain loops, per-call buffers; an engine's network replaces it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <patchbay/core/error.hpp>
#include <patchbay/core/hooks.hpp>
#include <patchbay/core/model.hpp>
#include <patchbay/core/tensor.hpp>
#include <patchbay/core/view.hpp>
#include <patchbay/kernels/attention.hpp>
#include <patchbay/sampling/samplers.hpp>

namespace patchbay::examples {

struct toy_unet_config {
    index_t channels = 3;        ///< latent channels (pictures are RGB-like)
    index_t height = 32;         ///< latent height (multiple of 4)
    index_t width = 32;          ///< latent width (multiple of 4)
    index_t model_channels = 8;  ///< base channel count (FreeU's model_channels)
    int heads = 2;               ///< heads of the middle block's attentions
    index_t pictures = 6;        ///< mixture components
    index_t context_tokens = 2;  ///< tokens of a prompt's cross-attention context
    index_t context_dim = 16;    ///< width of a context token
    double data_std = 0.12;      ///< std of each mixture component
    double residual = 0.2;       ///< weight of the UNet path on top of the exact denoiser
    double attention_gain = 4.0; ///< gain of the middle self-attention's output projection
    std::uint64_t seed = 1;      ///< pictures and weights
};

/// A prompt of the toy UNet: mixture weights over the pictures and cross-attention context.
struct toy_unet_prompt {
    std::vector<double> weights; ///< one per picture, positive
    std::vector<double> context; ///< context_tokens x context_dim
};

/// Prompts the model evaluated, by pass, its network runs, and what its hooks did (tests
/// count these). A prompt of a batched call counts as one evaluation of its pass.
struct toy_unet_counts {
    int cond = 0, uncond = 0, reevaluation = 0, extra = 0; ///< prompt evaluations, by pass
    int calls = 0;                  ///< network runs: predict and predict_batch calls
    int batched_calls = 0;          ///< ... of them predict_batch
    int attention_reads = 0;        ///< prompt evaluations whose self-attention probabilities were read
    int attention_reads_uncond = 0; ///< ... of them, uncond passes
    int attention_replaced = 0;     ///< prompt evaluations whose self-attention was replaced
    int block_hook_calls = 0;       ///< output blocks that ran hooks (once per prompt with hooks)
    int input_block_hook_calls = 0; ///< input-block hook points that ran hooks (once per prompt with hooks)
    int total() const noexcept { return cond + uncond + reevaluation + extra; }
};

class toy_unet {
public:
    using conditioning_type = toy_unet_prompt;
    static constexpr bool calls_block_hooks = true;
    static constexpr bool calls_input_block_hooks = true;
    static constexpr bool calls_attention_hooks = true;

    explicit toy_unet(toy_unet_config cfg = {}) : cfg_(cfg) {
        constexpr const char* where = "toy_unet";
        require(cfg.height % 4 == 0 && cfg.width % 4 == 0 && cfg.height >= 8 && cfg.width >= 8,
                where, "height and width must be multiples of 4, at least 8");
        require(cfg.channels >= 1 && cfg.model_channels >= 1 && cfg.heads >= 1 && cfg.pictures >= 1 &&
                    cfg.context_tokens >= 1 && cfg.context_dim >= 1,
                where, "sizes must be positive");
        require((4 * cfg.model_channels) % cfg.heads == 0, where, "4*model_channels must divide into heads");
        require_range(cfg.data_std, 1e-3, 10.0, where, "data_std");
        require_range(cfg.residual, 0.0, 10.0, where, "residual");
        normal_generator rng(cfg.seed);
        draw_pictures(rng);
        const index_t mc = cfg.model_channels, C = cfg.channels;
        conv_in_ = conv(rng, C, mc);
        time_ = linear(rng, time_features, mc);
        in1_ = conv(rng, mc, mc);
        in2_ = conv(rng, mc, 2 * mc);
        in3_ = conv(rng, 2 * mc, 4 * mc);
        const index_t d = 4 * mc;
        q1_ = linear(rng, d, d), k1_ = linear(rng, d, d), v1_ = linear(rng, d, d), o1_ = linear(rng, d, d);
        // a strong self-attention path, so perturbing it (PAG) shows in the picture
        for (auto& w : o1_.w) w *= float(cfg.attention_gain);
        q2_ = linear(rng, d, d), k2_ = linear(rng, cfg.context_dim, d), v2_ = linear(rng, cfg.context_dim, d),
        o2_ = linear(rng, d, d);
        mid_ = conv(rng, d, d);
        out0_ = conv(rng, 8 * mc, 2 * mc);
        out1_ = conv(rng, 4 * mc, mc);
        out2_ = conv(rng, 2 * mc, mc);
        out3_ = conv(rng, 2 * mc, mc);
        conv_out_ = conv(rng, mc, C);
        embed_.resize(static_cast<std::size_t>(cfg.context_tokens * cfg.context_dim * cfg.pictures));
        for (auto& e : embed_) e = rng.next();
    }

    const toy_unet_config& config() const noexcept { return cfg_; }

    /// The picture of component k as a (1, C, H, W) tensor.
    tensor<float> picture(index_t k) const {
        require(k >= 0 && k < cfg_.pictures, "toy_unet::picture", "no such picture");
        tensor<float> t({1, cfg_.channels, cfg_.height, cfg_.width});
        const index_t n = t.size();
        for (index_t i = 0; i < n; ++i) t[i] = static_cast<float>(pictures_[static_cast<std::size_t>(k * n + i)]);
        return t;
    }

    /// A prompt for picture k: weight `strength` on it, the rest shared by the others.
    toy_unet_prompt prompt(index_t k, double strength = 0.9) const {
        require(k >= 0 && k < cfg_.pictures, "toy_unet::prompt", "no such picture");
        require_range(strength, 0.0, 1.0, "toy_unet::prompt", "strength");
        std::vector<double> w(static_cast<std::size_t>(cfg_.pictures),
                              cfg_.pictures > 1 ? (1.0 - strength) / double(cfg_.pictures - 1) : 1.0);
        w[static_cast<std::size_t>(k)] = cfg_.pictures > 1 ? strength : 1.0;
        return make_prompt(std::move(w));
    }

    /// The negative prompt: every picture equally likely.
    toy_unet_prompt negative_prompt() const {
        return make_prompt(std::vector<double>(static_cast<std::size_t>(cfg_.pictures), 1.0 / double(cfg_.pictures)));
    }

    /// What the model has been asked so far (tests reset it by assignment).
    toy_unet_counts counts{};

    /// D(x, sigma): the exact mixture denoiser plus `residual` times the UNet.
    template <class T>
    void predict(const model_call<toy_unet_prompt, T, 4>& call, view<T, 4> out) {
        constexpr const char* where = "toy_unet::predict";
        require(call.conditioning != nullptr, where, "the call has no prompt");
        require(call.overrides != nullptr, where, "the call has no overrides");
        const group<T> g{call.conditioning, call.overrides, call.pass, 0, call.x.extent(0)};
        run<T>(call.x, call.sigma, std::span<const group<T>>(&g, 1), out, where);
        ++counts.calls;
    }

    /// Every prompt of one evaluation in one network run (the prompts' items in order along
    /// dim 0), each prompt's hooks on its own items.
    template <class T>
    void predict_batch(const batched_call<toy_unet_prompt, T, 4>& call, view<T, 4> out) {
        constexpr const char* where = "toy_unet::predict_batch";
        std::vector<group<T>> groups;
        index_t next = 0;
        for (const auto& p : call.prompts) {
            require(p.conditioning != nullptr && p.overrides != nullptr, where,
                    "a prompt has no conditioning or no overrides");
            require(p.first == next && p.count >= 0, where, "the prompts' items must follow each other along dim 0");
            groups.push_back({p.conditioning, p.overrides, p.pass, p.first, p.count});
            next += p.count;
        }
        require(next == call.x.extent(0), where, "the prompts' items must cover the batch");
        run<T>(call.x, call.sigma, std::span<const group<T>>(groups), out, where);
        ++counts.calls;
        ++counts.batched_calls;
    }

private:
    static constexpr index_t time_features = 8;

    /// One prompt's items [first, first + count) of a network run, with its hooks.
    template <class T>
    struct group {
        const toy_unet_prompt* prompt;
        const call_overrides<T>* overrides;
        pass_kind pass;
        index_t first, count;
    };

    /// Checks, counts each prompt's evaluation, runs the network once for all items, then the
    /// exact denoiser of each item's prompt.
    template <class T>
    void run(const view<const T, 4>& x, const view<const T, 1>& sigma, std::span<const group<T>> groups,
             const view<T, 4>& out, const char* where) {
        require_batch_vector(sigma, x, where, "sigma");
        require_same_shape(x, view<const T, 4>(out), where, "x", "out");
        require(x.extent(1) == cfg_.channels && x.extent(2) == cfg_.height && x.extent(3) == cfg_.width, where,
                "x must be (N, " + std::to_string(cfg_.channels) + ", " + std::to_string(cfg_.height) + ", " +
                    std::to_string(cfg_.width) + "), got " + shape_string(x));
        for (const auto& g : groups) {
            const auto& pr = *g.prompt;
            require(pr.weights.size() == static_cast<std::size_t>(cfg_.pictures) &&
                        pr.context.size() == static_cast<std::size_t>(cfg_.context_tokens * cfg_.context_dim),
                    where, "the prompt does not belong to this model");
        }
        for (const auto& g : groups)
            (g.pass == pass_kind::cond     ? counts.cond
             : g.pass == pass_kind::uncond ? counts.uncond
             : g.pass == pass_kind::extra  ? counts.extra
                                           : counts.reevaluation)++;
        const index_t B = x.extent(0), n = cfg_.channels * cfg_.height * cfg_.width;
        std::vector<T> unet(static_cast<std::size_t>(B * n));
        network<T>(x, sigma, groups, unet);
        for (const auto& g : groups)
            for (index_t b = g.first; b < g.first + g.count; ++b)
                exact(x, sigma, *g.prompt, b, unet.data() + b * n, out);
    }

    struct layer {
        index_t cin = 0, cout = 0;
        std::vector<float> w, bias;
    };

    static layer conv(normal_generator& rng, index_t cin, index_t cout) { return make_layer(rng, cin, cout, 9); }
    static layer linear(normal_generator& rng, index_t cin, index_t cout) { return make_layer(rng, cin, cout, 1); }
    static layer make_layer(normal_generator& rng, index_t cin, index_t cout, index_t taps) {
        layer l{cin, cout, std::vector<float>(static_cast<std::size_t>(cin * cout * taps)),
                std::vector<float>(static_cast<std::size_t>(cout))};
        const double scale = 1.0 / std::sqrt(double(cin * taps));
        for (auto& v : l.w) v = static_cast<float>(rng.next() * scale);
        for (auto& v : l.bias) v = static_cast<float>(0.1 * rng.next());
        return l;
    }

    toy_unet_prompt make_prompt(std::vector<double> w) const {
        toy_unet_prompt p;
        p.context.assign(static_cast<std::size_t>(cfg_.context_tokens * cfg_.context_dim), 0.0);
        for (std::size_t t = 0; t < p.context.size(); ++t)
            for (std::size_t k = 0; k < w.size(); ++k) p.context[t] += embed_[t * w.size() + k] * w[k];
        p.weights = std::move(w);
        return p;
    }

    /// Pictures: a two-colour gradient, a disc, a bar and a ring per picture.
    void draw_pictures(normal_generator& rng) {
        const index_t C = cfg_.channels, H = cfg_.height, W = cfg_.width, n = C * H * W;
        pictures_.assign(static_cast<std::size_t>(cfg_.pictures * n), 0.0);
        auto uni = [&] { return 0.5 + 0.5 * std::erf(rng.next() / std::sqrt(2.0)); }; // (0, 1)
        for (index_t k = 0; k < cfg_.pictures; ++k) {
            const auto uC = static_cast<std::size_t>(C);
            std::vector<double> top(uC), bottom(uC), disc(uC), bar(uC);
            for (index_t c = 0; c < C; ++c) {
                top[std::size_t(c)] = 1.6 * uni() - 0.8;
                bottom[std::size_t(c)] = 1.6 * uni() - 0.8;
                disc[std::size_t(c)] = 2.0 * uni() - 1.0;
                bar[std::size_t(c)] = 2.0 * uni() - 1.0;
            }
            const double cy = (0.25 + 0.5 * uni()) * double(H), cx = (0.25 + 0.5 * uni()) * double(W);
            const double rad = (0.12 + 0.15 * uni()) * double(std::min(H, W));
            const bool vertical = uni() < 0.5;
            const double bpos = (0.2 + 0.6 * uni()), bw = 0.08 + 0.06 * uni();
            for (index_t c = 0; c < C; ++c)
                for (index_t y = 0; y < H; ++y)
                    for (index_t x = 0; x < W; ++x) {
                        const double fy = double(y) / double(H - 1), fx = double(x) / double(W - 1);
                        double v = top[std::size_t(c)] * (1 - fy) + bottom[std::size_t(c)] * fy;
                        const double along = vertical ? fx : fy;
                        if (std::fabs(along - bpos) < bw) v = bar[std::size_t(c)];
                        const double r = std::hypot(double(y) + 0.5 - cy, double(x) + 0.5 - cx);
                        if (r < rad) v = disc[std::size_t(c)];
                        if (std::fabs(r - 1.4 * rad) < 0.8) v = -disc[std::size_t(c)];
                        pictures_[std::size_t(((k * C + c) * H + y) * W + x)] = v;
                    }
        }
    }

    /// The exact posterior mean for batch item b, plus the UNet residual.
    template <class T>
    void exact(const view<const T, 4>& xs, const view<const T, 1>& sigmas, const toy_unet_prompt& pr, index_t b,
               const T* unet, const view<T, 4>& out) const {
        const index_t C = cfg_.channels, H = cfg_.height, W = cfg_.width, n = C * H * W, K = cfg_.pictures;
        const double sigma = static_cast<double>(sigmas(b));
        const double s2 = cfg_.data_std * cfg_.data_std, var = s2 + sigma * sigma, a = s2 / var;
        std::vector<double> logit(static_cast<std::size_t>(K));
        double mx = -HUGE_VAL;
        for (index_t k = 0; k < K; ++k) {
            double d2 = 0;
            const double* mu = pictures_.data() + k * n;
            for (index_t c = 0, i = 0; c < C; ++c)
                for (index_t y = 0; y < H; ++y)
                    for (index_t x = 0; x < W; ++x, ++i) {
                        const double d = static_cast<double>(xs(b, c, y, x)) - mu[i];
                        d2 += d * d;
                    }
            logit[std::size_t(k)] = std::log(pr.weights[std::size_t(k)]) - d2 / (2.0 * var);
            mx = std::max(mx, logit[std::size_t(k)]);
        }
        double z = 0;
        for (auto& l : logit) z += l = std::exp(l - mx);
        for (index_t c = 0, i = 0; c < C; ++c)
            for (index_t y = 0; y < H; ++y)
                for (index_t x = 0; x < W; ++x, ++i) {
                    double m = 0;
                    for (index_t k = 0; k < K; ++k) m += logit[std::size_t(k)] / z * pictures_[std::size_t(k * n + i)];
                    const double xv = static_cast<double>(xs(b, c, y, x));
                    out(b, c, y, x) = static_cast<T>(m + a * (xv - m) + cfg_.residual * static_cast<double>(unet[i]));
                }
    }

    // ---- the UNet (batch-major, channel planes contiguous) --------------------------------

    template <class T>
    static void conv3x3(const layer& l, const std::vector<T>& in, index_t B, index_t H, index_t W,
                        std::vector<T>& out) {
        out.assign(static_cast<std::size_t>(B * l.cout * H * W), T(0));
        for (index_t b = 0; b < B; ++b)
            for (index_t co = 0; co < l.cout; ++co) {
                T* o = out.data() + (b * l.cout + co) * H * W;
                for (index_t i = 0; i < H * W; ++i) o[i] = static_cast<T>(l.bias[std::size_t(co)]);
                for (index_t ci = 0; ci < l.cin; ++ci) {
                    const T* p = in.data() + (b * l.cin + ci) * H * W;
                    for (index_t ky = 0; ky < 3; ++ky)
                        for (index_t kx = 0; kx < 3; ++kx) {
                            const T w = static_cast<T>(l.w[std::size_t(((co * l.cin + ci) * 3 + ky) * 3 + kx)]);
                            for (index_t y = 0; y < H; ++y) {
                                const index_t yy = y + ky - 1;
                                if (yy < 0 || yy >= H) continue;
                                const index_t x0 = kx == 0 ? 1 : 0, x1 = kx == 2 ? W - 1 : W;
                                for (index_t x = x0; x < x1; ++x) o[y * W + x] += w * p[yy * W + x + kx - 1];
                            }
                        }
                }
            }
    }

    template <class T>
    static void silu(std::vector<T>& v) {
        for (auto& e : v) e = e / (T(1) + std::exp(-e));
    }

    template <class T>
    static std::vector<T> avgpool2(const std::vector<T>& in, index_t BC, index_t H, index_t W) {
        std::vector<T> o(static_cast<std::size_t>(BC * (H / 2) * (W / 2)));
        for (index_t p = 0; p < BC; ++p)
            for (index_t y = 0; y < H / 2; ++y)
                for (index_t x = 0; x < W / 2; ++x) {
                    const T* s = in.data() + p * H * W;
                    o[std::size_t((p * (H / 2) + y) * (W / 2) + x)] =
                        T(0.25) * (s[2 * y * W + 2 * x] + s[2 * y * W + 2 * x + 1] + s[(2 * y + 1) * W + 2 * x] +
                                   s[(2 * y + 1) * W + 2 * x + 1]);
                }
        return o;
    }

    template <class T>
    static std::vector<T> upsample2(const std::vector<T>& in, index_t BC, index_t H, index_t W) {
        std::vector<T> o(static_cast<std::size_t>(BC * 4 * H * W));
        for (index_t p = 0; p < BC; ++p)
            for (index_t y = 0; y < 2 * H; ++y)
                for (index_t x = 0; x < 2 * W; ++x)
                    o[std::size_t((p * 2 * H + y) * 2 * W + x)] = in[std::size_t((p * H + y / 2) * W + x / 2)];
        return o;
    }

    /// tokens (B, N, cout) = linear(tokens (B, N, cin))
    template <class T>
    static void project(const layer& l, const T* in, index_t BN, T* out) {
        for (index_t t = 0; t < BN; ++t)
            for (index_t o = 0; o < l.cout; ++o) {
                double acc = l.bias[std::size_t(o)];
                for (index_t i = 0; i < l.cin; ++i)
                    acc += double(l.w[std::size_t(o * l.cin + i)]) * double(in[t * l.cin + i]);
                out[t * l.cout + o] = static_cast<T>(acc);
            }
    }

    /// A feature map of every item: B x c x H x w, channel planes contiguous.
    template <class T>
    struct feature {
        std::vector<T> v;
        index_t c = 0, H = 0, W = 0;
    };

    /// Input block `index`: each prompt's input-block hooks at `at` on its items of h (the
    /// before-skip hooks see the block's output, the after-skip ones what the skip stored); h
    /// continues at the size they return, which every prompt of the call must agree on.
    template <class T>
    void input_block(std::span<const group<T>> groups, int index, input_block_point at, feature<T>& h, index_t B) {
        const block_site site{unet_stage::input, index, h.c};
        const index_t per = h.c * h.H * h.W;
        index_t H = h.H, W = h.W;
        bool resized = false;
        std::vector<view<T, 4>> got(groups.size());
        for (std::size_t i = 0; i < groups.size(); ++i) {
            const auto& g = groups[i];
            const auto& ov = *g.overrides;
            if (!ov.has_input_block_hooks() || g.count == 0) continue;
            ++counts.input_block_hook_calls;
            const view<T, 4> hv(h.v.data() + g.first * per, {g.count, h.c, h.H, h.W});
            got[i] = at == input_block_point::before_skip ? ov.apply_input_block(site, hv)
                                                          : ov.apply_input_block_after_skip(site, hv);
            require(got[i].extent(0) == g.count && got[i].extent(1) == h.c, "toy_unet",
                    "an input-block hook changed h's batch or channels at input block " + std::to_string(index));
            if (got[i].extent(2) != h.H || got[i].extent(3) != h.W) {
                require(!resized || (got[i].extent(2) == H && got[i].extent(3) == W), "toy_unet",
                        "the prompts of one call resized h to different sizes at input block " + std::to_string(index));
                resized = true;
                H = got[i].extent(2), W = got[i].extent(3);
            }
        }
        if (!resized) { // in-place hooks, or hooks that returned another view of h's size
            for (std::size_t i = 0; i < groups.size(); ++i)
                if (got[i].data_handle() != nullptr)
                    copy_items(got[i], view<T, 4>(h.v.data() + groups[i].first * per, got[i].extents()));
            return;
        }
        std::vector<T> next(static_cast<std::size_t>(B * h.c * H * W));
        for (std::size_t i = 0; i < groups.size(); ++i) {
            if (groups[i].count == 0) continue;
            require(got[i].data_handle() != nullptr && got[i].extent(2) == H && got[i].extent(3) == W, "toy_unet",
                    "the prompts of one call resized h to different sizes at input block " + std::to_string(index));
            copy_items(got[i], view<T, 4>(next.data() + groups[i].first * h.c * H * W, {groups[i].count, h.c, H, W}));
        }
        h.v = std::move(next);
        h.H = H, h.W = W;
    }

    /// dst = src (same extents), unless src is dst.
    template <class T>
    static void copy_items(const view<T, 4>& src, const view<T, 4>& dst) {
        if (src.data_handle() == dst.data_handle() && src.strides() == dst.strides()) return;
        for (index_t b = 0; b < src.extent(0); ++b)
            for (index_t c = 0; c < src.extent(1); ++c)
                for (index_t y = 0; y < src.extent(2); ++y)
                    for (index_t x = 0; x < src.extent(3); ++x) dst(b, c, y, x) = src(b, c, y, x);
    }

    /// Output block i: each prompt's hooks on its items of (h, hsp), then conv of the
    /// concatenation at the skip's size. h continues with what the hooks return: in-place
    /// hooks (FreeU) return h itself, a resizing hook (Deep Shrink) h at the skip's size, which
    /// h must have by then.
    template <class T>
    void output_block(std::span<const group<T>> groups, int index, feature<T>& h, feature<T>& skip, index_t B,
                      const layer& l, std::vector<T>& out) {
        const index_t ch = h.c, cs = skip.c, H = skip.H, W = skip.W;
        const bool same = h.H == H && h.W == W;
        std::vector<T> back; // h at the skip's size when the hooks resize it
        if (!same) back.resize(static_cast<std::size_t>(B * ch * H * W));
        for (const auto& g : groups) {
            if (g.count == 0) continue;
            const auto& ov = *g.overrides;
            require(same || ov.has_output_block_hooks(), "toy_unet",
                    "h reaches output block " + std::to_string(index) + " at " + std::to_string(h.H) + "x" +
                        std::to_string(h.W) + " but its skip connection is " + std::to_string(H) + "x" +
                        std::to_string(W) + ", and no output-block hook resizes it");
            if (!ov.has_output_block_hooks()) continue;
            ++counts.block_hook_calls;
            const view<T, 4> hv(h.v.data() + g.first * ch * h.H * h.W, {g.count, ch, h.H, h.W});
            const view<T, 4> got = ov.apply_output_block(block_site{unet_stage::output, index, ch}, hv,
                                                         view<T, 4>(skip.v.data() + g.first * cs * H * W, {g.count, cs, H, W}));
            require(got.extent(0) == g.count && got.extent(1) == ch && got.extent(2) == H && got.extent(3) == W,
                    "toy_unet", "the output-block hooks must return h as (" + std::to_string(g.count) + ", " +
                                    std::to_string(ch) + ", " + std::to_string(H) + ", " + std::to_string(W) +
                                    ") at output block " + std::to_string(index) + ", got " + shape_string(got));
            copy_items(got, view<T, 4>((same ? h.v.data() : back.data()) + g.first * ch * H * W, {g.count, ch, H, W}));
        }
        if (!same) h.v = std::move(back), h.H = H, h.W = W;
        std::vector<T> cat(static_cast<std::size_t>(B * (ch + cs) * H * W));
        for (index_t b = 0; b < B; ++b) {
            std::copy_n(h.v.data() + b * ch * H * W, ch * H * W, cat.data() + b * (ch + cs) * H * W);
            std::copy_n(skip.v.data() + b * cs * H * W, cs * H * W, cat.data() + (b * (ch + cs) + ch) * H * W);
        }
        conv3x3(l, cat, B, H, W, out);
        silu(out);
    }

    /// The middle self-attention of each prompt's items (q, k, v, att: items x N x d): its
    /// replacement (PAG) if it has one, else softmax attention, read by its readers (SAG).
    template <class T>
    void self_attention(std::span<const group<T>> groups, const attention_site& site, index_t N, index_t d,
                        const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v, std::vector<T>& att) {
        std::vector<T> sim;
        for (const auto& g : groups) {
            if (g.count == 0) continue;
            const auto& ov = *g.overrides;
            const index_t off = g.first * N * d;
            const view<const T, 3> qv(q.data() + off, {g.count, N, d}), kv(k.data() + off, {g.count, N, d}),
                vv(v.data() + off, {g.count, N, d});
            const view<T, 3> av(att.data() + off, {g.count, N, d});
            if (const auto replace = ov.attention_replacement(site)) {
                ++counts.attention_replaced;
                replace(site, attention_tensors<T>{qv, kv, vv, cfg_.heads}, av);
                continue;
            }
            sim.resize(static_cast<std::size_t>(g.count * cfg_.heads * N * N));
            const view<T, 3> sv(sim.data(), {g.count * cfg_.heads, N, N});
            kernels::attention_basic_with_sim<T>(qv, kv, vv, cfg_.heads, av, sv);
            if (ov.reads_attention(site)) {
                ++counts.attention_reads;
                if (g.pass == pass_kind::uncond) ++counts.attention_reads_uncond;
                ov.on_attention_probabilities(site, view<const T, 3>(sv), cfg_.heads);
            }
        }
    }

    template <class T>
    void network(const view<const T, 4>& xs, const view<const T, 1>& sigma, std::span<const group<T>> groups,
                 std::vector<T>& result) {
        const index_t B = xs.extent(0), C = cfg_.channels, H = cfg_.height, W = cfg_.width;
        const index_t mc = cfg_.model_channels, d = 4 * mc;
        // network input: c_in-scaled x
        std::vector<T> x(static_cast<std::size_t>(B * C * H * W));
        for (index_t b = 0; b < B; ++b) {
            const double cin = 1.0 / std::sqrt(1.0 + double(sigma(b)) * double(sigma(b)));
            for (index_t c = 0; c < C; ++c)
                for (index_t y = 0; y < H; ++y)
                    for (index_t xx = 0; xx < W; ++xx)
                        x[std::size_t(((b * C + c) * H + y) * W + xx)] = static_cast<T>(double(xs(b, c, y, xx)) * cin);
        }
        // input blocks; after each, its hooks before the skip, the skip, its hooks after it
        feature<T> h{{}, mc, H, W}, s0, s1, s2, s3;
        std::vector<T> t;
        conv3x3(conv_in_, x, B, H, W, h.v);
        for (index_t b = 0; b < B; ++b) { // time embedding from log sigma
            const double ls = std::log(std::max(double(sigma(b)), 1e-4));
            double f[time_features];
            for (index_t j = 0; j < time_features / 2; ++j) {
                f[2 * j] = std::sin(double(j + 1) * ls * 0.5);
                f[2 * j + 1] = std::cos(double(j + 1) * ls * 0.5);
            }
            for (index_t c = 0; c < mc; ++c) {
                double e = time_.bias[std::size_t(c)];
                for (index_t j = 0; j < time_features; ++j) e += time_.w[std::size_t(c * time_features + j)] * f[j];
                for (index_t i = 0; i < H * W; ++i) h.v[std::size_t((b * mc + c) * H * W + i)] += static_cast<T>(e);
            }
        }
        const auto hooks_and_skip = [&](int index, feature<T>& skip) {
            input_block(groups, index, input_block_point::before_skip, h, B);
            skip = h;
            input_block(groups, index, input_block_point::after_skip, h, B);
        };
        hooks_and_skip(0, s0);
        require(s0.H == H && s0.W == W, "toy_unet", "an input-block hook must not resize h before the skip of block 0");
        conv3x3(in1_, h.v, B, h.H, h.W, t);
        silu(t);
        for (std::size_t i = 0; i < h.v.size(); ++i) h.v[i] += t[i];
        hooks_and_skip(1, s1);
        const auto down = [&](const layer& l) { // 2x average pool, conv, SiLU
            const index_t Hd = h.H / 2, Wd = h.W / 2;
            require(Hd >= 1 && Wd >= 1, "toy_unet", "an input-block hook shrank h below 2x2 before a downsampling block");
            conv3x3(l, avgpool2(h.v, B * h.c, h.H, h.W), B, Hd, Wd, t);
            silu(t);
            h = {std::move(t), l.cout, Hd, Wd};
        };
        down(in2_);
        hooks_and_skip(2, s2);
        down(in3_);
        hooks_and_skip(3, s3);

        // middle block: self-attention (the SAG / PAG site), cross-attention, conv; at h's size
        // (H/4 x W/4 unless an input-block hook resized it)
        const index_t Hm = h.H, Wm = h.W, N = Hm * Wm;
        std::vector<T> tok(static_cast<std::size_t>(B * N * d)), q(tok.size()), k(tok.size()), v(tok.size()),
            att(tok.size()), proj(tok.size());
        auto to_tokens = [&] {
            for (index_t b = 0; b < B; ++b)
                for (index_t c = 0; c < d; ++c)
                    for (index_t i = 0; i < N; ++i) tok[std::size_t((b * N + i) * d + c)] = h.v[std::size_t((b * d + c) * N + i)];
        };
        auto add_tokens = [&] {
            for (index_t b = 0; b < B; ++b)
                for (index_t c = 0; c < d; ++c)
                    for (index_t i = 0; i < N; ++i) h.v[std::size_t((b * d + c) * N + i)] += proj[std::size_t((b * N + i) * d + c)];
        };
        to_tokens();
        project(q1_, tok.data(), B * N, q.data());
        project(k1_, tok.data(), B * N, k.data());
        project(v1_, tok.data(), B * N, v.data());
        self_attention(groups, attention_site{unet_stage::middle, 0, 0, Hm, Wm}, N, d, q, k, v, att);
        project(o1_, att.data(), B * N, proj.data());
        add_tokens();

        to_tokens();
        const index_t nc = cfg_.context_tokens, cd = cfg_.context_dim;
        std::vector<T> ctx(static_cast<std::size_t>(B * nc * cd)), kc(static_cast<std::size_t>(B * nc * d)), vc(kc.size());
        for (const auto& g : groups) // each item attends to its own prompt's context
            for (index_t b = g.first; b < g.first + g.count; ++b)
                for (index_t i = 0; i < nc * cd; ++i)
                    ctx[std::size_t(b * nc * cd + i)] = static_cast<T>(g.prompt->context[std::size_t(i)]);
        project(q2_, tok.data(), B * N, q.data());
        project(k2_, ctx.data(), B * nc, kc.data());
        project(v2_, ctx.data(), B * nc, vc.data());
        {
            std::vector<T> sim(static_cast<std::size_t>(B * cfg_.heads * N * nc));
            kernels::attention_basic_with_sim<T>(view<const T, 3>(q.data(), {B, N, d}), view<const T, 3>(kc.data(), {B, nc, d}),
                                                 view<const T, 3>(vc.data(), {B, nc, d}), cfg_.heads,
                                                 view<T, 3>(att.data(), {B, N, d}),
                                                 view<T, 3>(sim.data(), {B * cfg_.heads, N, nc}));
        }
        project(o2_, att.data(), B * N, proj.data());
        add_tokens();
        conv3x3(mid_, h.v, B, Hm, Wm, t);
        silu(t);
        for (std::size_t i = 0; i < h.v.size(); ++i) h.v[i] += t[i];

        // output blocks: h has 4x, 2x, 1x, 1x model_channels; each block's output has its
        // skip's size, and the 2x upsampling doubles it
        std::vector<T> o;
        output_block(groups, 0, h, s3, B, out0_, o);
        h = {upsample2(o, B * 2 * mc, s3.H, s3.W), 2 * mc, 2 * s3.H, 2 * s3.W};
        output_block(groups, 1, h, s2, B, out1_, o);
        h = {upsample2(o, B * mc, s2.H, s2.W), mc, 2 * s2.H, 2 * s2.W};
        output_block(groups, 2, h, s1, B, out2_, o);
        h = {std::move(o), mc, s1.H, s1.W};
        output_block(groups, 3, h, s0, B, out3_, o);
        conv3x3(conv_out_, o, B, H, W, result);
    }

    toy_unet_config cfg_;
    std::vector<double> pictures_; // K x C x H x W
    std::vector<double> embed_;    // context_tokens*context_dim x K
    layer conv_in_, time_, in1_, in2_, in3_, q1_, k1_, v1_, o1_, q2_, k2_, v2_, o2_, mid_, out0_, out1_,
        out2_, out3_, conv_out_;
};

static_assert(diffusion_model<toy_unet, float, 4>);
static_assert(batched_model<toy_unet, float, 4>);

} // namespace patchbay::examples
