// patchbay: multi-head softmax attention that also hands back its probabilities.
//
// Matches ComfyUI's attention_basic_with_sim (comfy/ldm/modules/attention.py), which
// Self-Attention Guidance uses to see where the middle block looks. Heads are split from the
// last dimension ((batch, tokens, heads*dim) -> batch*heads rows, head-minor), scores are
// q.k * dim_head^-0.5, the softmax runs over keys, and out = probabilities @ v is merged back
// to (batch, tokens, heads*dim_v).
//
// Scores, softmax normaliser and the weighted sum of v are accumulated in double: the result
// is closer to the exact value than torch's float einsum, which is what the golden tolerances
// (derived from float32-vs-float64) reward. Token counts are small where this runs (a UNet
// middle block), so the plain loops are not a bottleneck.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>

#include "patchbay/core/half.hpp"
#include "patchbay/core/storage.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/convert.hpp"

namespace patchbay::kernels {

namespace attention_detail {

template <class Q, class K, class V>
void check_attention_inputs(const view<Q, 3>& q, const view<K, 3>& k, const view<V, 3>& v,
                            int heads, const char* where) {
    require_nonempty(q, where, "q");
    require_nonempty(k, where, "k");
    require_nonempty(v, where, "v");
    PATCHBAY_REQUIRE(heads >= 1, where, "argument 'heads' must be >= 1, got " + std::to_string(heads));
    const index_t h = heads;
    PATCHBAY_REQUIRE(q.extent(2) % h == 0, where,
            "q's last dimension (" + std::to_string(q.extent(2)) +
                ") must be a multiple of heads (" + std::to_string(heads) + ")");
    PATCHBAY_REQUIRE(k.extent(2) == q.extent(2), where,
            "k's last dimension (" + std::to_string(k.extent(2)) + ") must equal q's (" +
                std::to_string(q.extent(2)) + ")");
    PATCHBAY_REQUIRE(v.extent(2) % h == 0, where,
            "v's last dimension (" + std::to_string(v.extent(2)) +
                ") must be a multiple of heads (" + std::to_string(heads) + ")");
    PATCHBAY_REQUIRE(k.extent(0) == q.extent(0) && v.extent(0) == q.extent(0), where,
            "q, k and v must have the same batch size, got " + shape_string(q) + ", " +
                shape_string(k) + ", " + shape_string(v));
    PATCHBAY_REQUIRE(v.extent(1) == k.extent(1), where,
            "v must have one token per key: k " + shape_string(k) + ", v " + shape_string(v));
}

/// The inputs' checks, and 'out' of shape (B, Nq, v's last dimension), writable, overlapping
/// none of q, k, v.
template <class T>
void check_attention_call(const view<const T, 3>& q, const view<const T, 3>& k, const view<const T, 3>& v,
                          int heads, const view<T, 3>& out, const char* where) {
    check_attention_inputs(q, k, v, heads, where);
    PATCHBAY_REQUIRE(out.extent(0) == q.extent(0) && out.extent(1) == q.extent(1) && out.extent(2) == v.extent(2),
            where, "output 'out' must have shape " +
                shape_string(std::array<index_t, 3>{q.extent(0), q.extent(1), v.extent(2)}) + ", got " +
                shape_string(out));
    require_writable_layout(out, where, "out");
    PATCHBAY_REQUIRE(!(may_overlap(out, q) || may_overlap(out, k) || may_overlap(out, v)), where,
            "output 'out' must not overlap q, k or v");
}

/// One query row of one head: probabilities into p (stride ps), the weighted sum of v into
/// out(b, i, h*dv ...). Scores are rounded to T before the softmax as torch stores its float
/// scores; the probabilities are rounded to T before they weight v, as torch's einsum does.
template <class T>
void attention_row(const view<const T, 3>& q, const view<const T, 3>& k, const view<const T, 3>& v,
                   index_t b, index_t h, index_t i, index_t dh, index_t dv, double scale, T* p,
                   index_t ps, const view<T, 3>& out) {
    const index_t Nk = k.extent(1);
    double mx = -HUGE_VAL;
    for (index_t j = 0; j < Nk; ++j) {
        double s = 0.0;
        for (index_t d = 0; d < dh; ++d)
            s += static_cast<double>(q(b, i, h * dh + d)) * static_cast<double>(k(b, j, h * dh + d));
        p[j * ps] = static_cast<T>(s * scale);
        mx = std::max(mx, static_cast<double>(p[j * ps]));
    }
    // exp relative to the row maximum: the stable softmax torch uses
    double denom = 0.0;
    for (index_t j = 0; j < Nk; ++j) denom += std::exp(static_cast<double>(p[j * ps]) - mx);
    const double inv = 1.0 / denom;
    for (index_t j = 0; j < Nk; ++j)
        p[j * ps] = static_cast<T>(std::exp(static_cast<double>(p[j * ps]) - mx) * inv);
    for (index_t d = 0; d < dv; ++d) {
        double acc = 0.0;
        for (index_t j = 0; j < Nk; ++j)
            acc += static_cast<double>(p[j * ps]) * static_cast<double>(v(b, j, h * dv + d));
        out(b, i, h * dv + d) = static_cast<T>(acc);
    }
}

} // namespace attention_detail

/// Softmax attention returning the output and the probabilities.
///   q (B, Nq, heads*dh), k (B, Nk, heads*dh), v (B, Nk, heads*dv)
///   out (B, Nq, heads*dv), sim (B*heads, Nq, Nk) with row b*heads + h.
/// `sim` must not overlap q, k or v; `out` must not overlap anything.
/// Half-precision storage (T = f16, bf16): q, k and v are widened to float32 in `scratch` (null:
/// a local arena), the float32 kernel runs, and out and sim are each rounded once.
template <class T>
void attention_basic_with_sim(std::type_identity_t<view<const T, 3>> q,
                              std::type_identity_t<view<const T, 3>> k,
                              std::type_identity_t<view<const T, 3>> v, int heads,
                              view<T, 3> out, view<T, 3> sim, workspace* scratch = nullptr) {
    constexpr const char* where = "attention_basic_with_sim";
    attention_detail::check_attention_call(q, k, v, heads, out, where);
    const index_t B = q.extent(0), Nq = q.extent(1), Nk = k.extent(1), H = heads;
    PATCHBAY_REQUIRE(sim.extent(0) == B * H && sim.extent(1) == Nq && sim.extent(2) == Nk, where,
            "output 'sim' must have shape " + shape_string(std::array<index_t, 3>{B * H, Nq, Nk}) +
                ", got " + shape_string(sim));
    require_writable_layout(sim, where, "sim");
    const bool overlap = may_overlap(sim, q) || may_overlap(sim, k) || may_overlap(sim, v) || may_overlap(out, sim);
    PATCHBAY_REQUIRE(!overlap, where, "output 'sim' must not overlap 'out', q, k or v");

    if constexpr (is_half_v<T>) {
        workspace local;
        patchbay::detail::stager s(scratch ? *scratch : local);
        const view<float, 3> qf = s.widen<T, 3>(q), kf = s.widen<T, 3>(k), vf = s.widen<T, 3>(v);
        const view<float, 3> of = s.make<3>(out.extents()), sf = s.make<3>(sim.extents());
        attention_basic_with_sim<float>(qf, kf, vf, heads, of, sf);
        narrow<T, 3>(of, out);
        narrow<T, 3>(sf, sim);
    } else {
        (void)scratch;
        const index_t dh = q.extent(2) / H, dv = v.extent(2) / H;
        const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
        for (index_t b = 0; b < B; ++b)
            for (index_t h = 0; h < H; ++h)
                for (index_t i = 0; i < Nq; ++i)
                    attention_detail::attention_row(q, k, v, b, h, i, dh, dv, scale, &sim(b * H + h, i, 0),
                                          sim.stride(2), out);
    }
}

/// Softmax attention that keeps, instead of the probabilities, each key's share of the
/// attention: key_mass[b*Nk + j] += (1/heads) * sum over heads and queries of p[b,h,i,j]
/// (SAG's "mean over heads, sum over queries"). `key_mass` holds B*Nk doubles and is
/// overwritten. `row` is scratch of at least Nk elements. Same out as attention_basic_with_sim.
template <class T>
void attention_with_key_mass(std::type_identity_t<view<const T, 3>> q,
                             std::type_identity_t<view<const T, 3>> k,
                             std::type_identity_t<view<const T, 3>> v, int heads, view<T, 3> out,
                             double* key_mass, T* row) {
    constexpr const char* where = "attention_with_key_mass";
    attention_detail::check_attention_call(q, k, v, heads, out, where);
    const index_t B = q.extent(0), Nq = q.extent(1), Nk = k.extent(1), H = heads;
    const index_t dh = q.extent(2) / H, dv = v.extent(2) / H;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
    const double inv_heads = 1.0 / static_cast<double>(H);
    for (index_t j = 0; j < B * Nk; ++j) key_mass[j] = 0.0;
    for (index_t b = 0; b < B; ++b)
        for (index_t h = 0; h < H; ++h)
            for (index_t i = 0; i < Nq; ++i) {
                attention_detail::attention_row(q, k, v, b, h, i, dh, dv, scale, row, 1, out);
                double* km = key_mass + b * Nk;
                for (index_t j = 0; j < Nk; ++j) km[j] += static_cast<double>(row[j]) * inv_heads;
            }
}

} // namespace patchbay::kernels
