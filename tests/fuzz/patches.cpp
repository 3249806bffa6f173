// libFuzzer target: every cfg-stage patch entry point and FreeU's block patch, driven by fuzzed
// shapes (ranks 4 and 5, odd and 1-sized dims, mismatched uncond / sigma), parameters (drawn
// from each patch's descriptor: in and out of range, NaN, inf) and values. The hooks are called
// through the checked entry points (core/dispatch.hpp), as an engine calls one patch on its own.
// Contract checked on every input:
//   - a rejected input raises patchbay::error (anything else escaping is a crash);
//   - finite input with valid parameters gives finite output (the NaN policy).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/cfg/renorm_cfg.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"

using namespace patchbay;

namespace {

struct reader {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t byte() {
        if (!n) return 0;
        --n;
        return *p++;
    }
    /// A parameter: mostly inside [lo - span/4, hi + span/4], sometimes NaN or inf.
    double param(double lo, double hi) {
        const std::uint8_t sel = byte();
        if (sel == 255) return std::numeric_limits<double>::quiet_NaN();
        if (sel == 254) return std::numeric_limits<double>::infinity();
        if (sel == 253) return -std::numeric_limits<double>::infinity();
        const double u = (byte() * 256.0 + byte()) / 65535.0;
        const double span = hi - lo;
        return lo - span / 4 + u * span * 1.5;
    }
    index_t dim() { return 1 + byte() % 7; }
    float value() { return static_cast<float>(static_cast<std::int8_t>(byte())) / 16.0f; }
};

/// A value of P whose numeric inputs are drawn around their descriptor ranges (model facts:
/// small counts from their minimum, so FreeU's channel rule can match); others keep defaults.
template <class P>
P fuzz_params(reader& in) {
    P p = with_defaults<P>();
    P::descriptor().for_each_input([&](const auto& b) {
        using M = typename std::remove_cvref_t<decltype(b)>::member_type;
        const input_info& i = b.info;
        M& v = p.*(b.member);
        if constexpr (std::is_same_v<M, bool>) {
            v = in.byte() % 2 == 1;
        } else if constexpr (std::is_floating_point_v<M>) {
            v = static_cast<M>(in.param(i.lo, i.hi));
        } else if constexpr (std::is_integral_v<M>) {
            double d = i.kind == input_kind::model_fact ? i.lo + in.byte() % 4 : in.param(i.lo, i.hi);
            if (!std::isfinite(d)) d = i.lo - 1; // out of range, and representable
            constexpr double limit = static_cast<double>(std::numeric_limits<M>::max() / 2);
            v = static_cast<M>(std::clamp(d, -limit, limit));
        }
    });
    return p;
}

bool all_finite(const tensor<float>& t) {
    for (index_t i = 0; i < t.size(); ++i)
        if (!std::isfinite(t[i])) return false;
    return true;
}

template <std::size_t R>
void run(reader& in, int which) {
    std::vector<index_t> shape(R);
    for (auto& d : shape) d = in.dim();
    std::vector<index_t> ushape = shape;
    const std::uint8_t mismatch = in.byte();
    if (mismatch % 16 == 1) ushape[mismatch / 16 % R] += 1;
    tensor<float> x(shape), cond(shape), uncond(ushape), out(shape);
    for (index_t i = 0; i < x.size(); ++i) x[i] = in.value();
    for (index_t i = 0; i < cond.size(); ++i) cond[i] = in.value();
    for (index_t i = 0; i < uncond.size(); ++i) uncond[i] = in.value();
    const index_t sigma_len = (in.byte() % 8 == 0) ? shape[0] + 1 : shape[0];
    tensor<float> sigma({sigma_len});
    for (index_t i = 0; i < sigma_len; ++i) sigma[i] = std::fabs(in.value()) * 4.0f;
    const double cond_scale = in.param(0.0, 30.0);
    const bool uncond_none = in.byte() % 5 == 0;
    if (uncond_none) uncond.fill(0.f);
    const auto pred = (in.byte() % 2) ? prediction_type::flow : prediction_type::eps;
    guidance_inputs<float, R> gi{x.template as<R>(), sigma.template as<1>(), cond_scale, uncond_none, pred};
    auto c = cond.template as<R>();
    auto u = uncond.template as<R>();
    no_state none;
    bool valid = std::isfinite(cond_scale) && cond_scale >= 0 && ushape == shape && sigma_len == shape[0];
    try {
        switch (which) {
        case 0: { // APG, twice so the state's momentum path runs
            const auto p = fuzz_params<apg>(in);
            apg::state_type st;
            apply_pre_cfg(p, st, gi, c, u);
            apply_pre_cfg(p, st, gi, c, u);
            break;
        }
        case 1: apply_pre_cfg(tcfg{}, none, gi, c, u); break;
        case 2: apply_pre_cfg(fuzz_params<fresca>(in), none, gi, c, u); break;
        case 3: apply_cfg_function(fuzz_params<rescale_cfg>(in), none, gi, c, u, out.template as<R>()); break;
        case 4: apply_cfg_function(fuzz_params<renorm_cfg>(in), none, gi, c, u, out.template as<R>()); break;
        case 5: {
            kernels::cfg_combine(view<const float, R>(c), view<const float, R>(c), 1.0, out.template as<R>());
            auto p = fuzz_params<cfg_norm>(in);
            p.pre_cfg = false; // the post-cfg slot (the cfg-function form is case 7)
            apply_post_cfg(p, none, gi, c, u, out.template as<R>());
            break;
        }
        case 6: {
            kernels::cfg_combine(view<const float, R>(c), view<const float, R>(c), 1.0, out.template as<R>());
            apply_post_cfg(mahiro{}, none, gi, c, u, out.template as<R>());
            break;
        }
        default: {
            if constexpr (R == 4) {
                if (in.byte() % 2) {
                    const block_site site{unet_stage::output, 0, shape[1]};
                    apply_output_block(fuzz_params<free_u_v2>(in), none, site, c, u);
                    break;
                }
            }
            auto p = fuzz_params<cfg_norm>(in);
            p.pre_cfg = true;
            apply_cfg_function(p, none, gi, c, u, out.template as<R>());
            break;
        }
        }
    } catch (const patchbay::error&) {
        return; // rejected: fine
    }
    // Accepted: the output of finite input must be finite. (Parameters were accepted, so they
    // were valid; shapes were accepted, so they matched.)
    (void)valid;
    if (!all_finite(cond) || !all_finite(uncond) || (which >= 3 && !all_finite(out)))
        __builtin_trap();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    reader in{data, size};
    const std::uint8_t head = in.byte();
    const int which = head % 8;
    if ((head / 8) % 2) run<5>(in, which);
    else run<4>(in, which);
    return 0;
}
