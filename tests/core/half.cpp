// Half-precision storage: the f16 / bf16 conversions (exhaustive over every bit pattern, and
// round to nearest even at every midpoint), the SIMD bulk conversions against the scalar ones,
// and the staged entry points: a cfg stage on f16 / bf16 views gives exactly the float32 path
// on the widened inputs, rounded once, and allocates nothing after the first step; so do the
// block hooks (Deep Shrink's resizing input and output hooks), the attention-output hook (NAG)
// and the attention functions (SAG's, PAG's replacement).
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "../patches/guider/prompt_model.hpp"
#include "counting_allocator.hpp"
#include "patchbay/core/cfg_chain.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/half.hpp"
#include "patchbay/core/isa.hpp"
#include "patchbay/kernels/attention.hpp"
#include "patchbay/kernels/convert.hpp"
#include "patchbay/patches/attention/dit_sites.hpp"
#include "patchbay/patches/attention/nag.hpp"
#include "patchbay/patches/block/deep_shrink.hpp"
#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/cfg/perp_neg.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/guider/dual_cfg_guider.hpp"
#include "patchbay/patches/guider/perp_neg_guider.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "test_util.hpp"

namespace test_core_half {

using namespace patchbay;

namespace {

template <class H>
H from_bits(std::uint32_t b) {
    return H{static_cast<std::uint16_t>(b)};
}

/// The finite non-negative values of H in increasing order (bit order is value order there).
template <class H>
std::vector<float> positive_finite_values() {
    std::vector<float> v;
    for (std::uint32_t b = 0; b < 0x8000u; ++b) {
        const float f = to_float(from_bits<H>(b));
        if (!std::isfinite(f)) break;
        v.push_back(f);
    }
    return v;
}

/// float32 tensors of random values, rounded to H (so that widening them is exact).
template <class H>
tensor<float> rounded_random(std::vector<index_t> shape, unsigned seed) {
    tensor<float> t = test::random_tensor(std::move(shape), seed);
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = rounded_through<H>(t.data()[i]);
    return t;
}

template <class H, std::size_t R>
void require_same_bits(view<const H, R> got, const std::vector<H>& want) {
    REQUIRE(got.size() == static_cast<index_t>(want.size()));
    std::vector<float> wide(want.size());
    kernels::widen<H, R>(got, view<float, R>(wide.data(), got.extents()));
    for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(round_to<H>(wide[i]).bits == want[i].bits);
}

template <class H, std::size_t R>
std::vector<H> narrowed(view<const float, R> v) {
    std::vector<H> out(static_cast<std::size_t>(v.size()));
    kernels::narrow<H, R>(v, view<H, R>(out.data(), v.extents()));
    return out;
}

/// The floats narrowing must round like the scalar conversion: every edge (zeros, subnormal
/// and normal limits, overflow, infinities, quiet and signalling NaNs), every tie and its
/// neighbours at the rounding bit of f16 and bf16, and random bit patterns.
std::vector<float> narrowing_probe() {
    std::vector<std::uint32_t> bits = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00001u,
                                       0x7F800001u, 0xFFBFFFFFu, 0x00000001u, 0x807FFFFFu, 0x33000000u, 0x33000001u,
                                       0x387FE000u, 0x38800000u, 0x477FE000u, 0x477FEFFFu, 0x477FF000u, 0x7F7FFFFFu};
    for (std::uint32_t e = 0; e < 256; ++e)
        for (std::uint32_t m : {0x1000u, 0x3000u, 0x8000u, 0x18000u, 0x7FFFFFu})
            for (std::uint32_t d : {0u, 1u, 0xFFFFFFFFu}) // the tie and either side of it
                for (std::uint32_t sign : {0u, 0x80000000u}) bits.push_back(sign | (e << 23) | ((m + d) & 0x7FFFFFu));
    std::uint32_t r = 12345u;
    for (int i = 0; i < 200000; ++i) bits.push_back(r = r * 1664525u + 1013904223u);
    std::vector<float> v;
    for (std::uint32_t b : bits) v.push_back(std::bit_cast<float>(b));
    return v;
}

/// Half storage holding the contiguous values `c` at every other element: a strided view.
template <class H>
struct gapped {
    std::vector<H> buf;
    view<H, 4> v;
    gapped(const std::vector<H>& c, const std::array<index_t, 4>& e) : buf(2 * c.size()) {
        v = view<H, 4>(buf.data(), e, {2 * e[1] * e[2] * e[3], 2 * e[2] * e[3], 2 * e[3], 2});
        for (std::size_t i = 0; i < c.size(); ++i) buf[2 * i] = c[i];
    }
    std::vector<H> values() const {
        std::vector<H> out(buf.size() / 2);
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = buf[2 * i];
        return out;
    }
};

template <class H>
bool same_bits(const std::vector<H>& a, const std::vector<H>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](H p, H q) { return p.bits == q.bits; });
}

} // namespace

TEST_CASE("contiguous rows (F16C / AVX2 where this process has them) convert as the scalar code", "[half][convert]") {
    // what this process runs: eight lanes when the build has F16C and AVX2, or (x86-64, GCC or
    // clang) the CPU has them and PATCHBAY_ISA does not cap below x86-64-v3; scalar otherwise
    const std::string_view path = kernels::half_conversion_path();
    INFO("conversion path: " << path);
#if defined(__F16C__) && defined(__AVX2__)
    CHECK(path == "f16c+avx2");
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    CHECK(path == (detail::x86_cpu_level() >= 3 && detail::isa_level_cap() >= 3 ? "f16c+avx2" : "scalar"));
#else
    CHECK(path == "scalar");
#endif
    auto check = [](auto tag) {
        using H = decltype(tag);
        // every bit pattern, in one contiguous row whose length is no multiple of 8 (5 more)
        std::vector<H> all;
        for (std::uint32_t b = 0; b < 0x10005u; ++b) all.push_back(from_bits<H>(b & 0xFFFFu));
        const auto n = static_cast<index_t>(all.size());
        std::vector<float> wide(all.size());
        kernels::widen<H, 1>(view<const H, 1>(all.data(), {n}), view<float, 1>(wide.data(), {n}));
        for (std::size_t i = 0; i < all.size(); ++i)
            REQUIRE(std::bit_cast<std::uint32_t>(wide[i]) == std::bit_cast<std::uint32_t>(to_float(all[i])));
        // narrowing: bit for bit, NaNs included (quiet, payload kept as far as it fits)
        const std::vector<float> probe = narrowing_probe();
        REQUIRE(probe.size() % 8 != 0);
        const std::vector<H> got = narrowed<H, 1>(view<const float, 1>(probe.data(), {static_cast<index_t>(probe.size())}));
        for (std::size_t i = 0; i < probe.size(); ++i) {
            INFO("float bits " << std::bit_cast<std::uint32_t>(probe[i]));
            REQUIRE(got[i].bits == round_to<H>(probe[i]).bits);
        }
    };
    check(f16{});
    check(bf16{});
    CHECK(std::bit_cast<std::uint32_t>(to_float(from_bits<f16>(0x7C01u))) == 0x7FC02000u); // signalling: quiet
    CHECK(to_f16(std::bit_cast<float>(0x7F800001u)).bits == 0x7E00u);
    CHECK(to_bf16(std::bit_cast<float>(0x7F800001u)).bits == 0x7FC0u);
    CHECK(to_f16(65520.0f).bits == 0x7C00u);                 // overflow: the tie rounds up to infinity
    CHECK(to_f16(std::ldexp(1.0f, -25)).bits == 0x0000u);     // half the smallest subnormal: even, 0
    CHECK(to_f16(-std::ldexp(1.5f, -25)).bits == 0x8001u);    // above it: the smallest, sign kept
}


TEST_CASE("f16 widening is exact and narrowing it back is the identity", "[half]") {
    for (std::uint32_t b = 0; b < 0x10000u; ++b) {
        const f16 h = from_bits<f16>(b);
        const float f = to_float(h);
        if (std::isnan(f)) {
            REQUIRE((b & 0x7C00u) == 0x7C00u);
            REQUIRE(std::isnan(to_float(to_f16(f))));
            continue;
        }
        REQUIRE(to_f16(f).bits == h.bits);
#if defined(__F16C__)
        REQUIRE(std::bit_cast<std::uint32_t>(_cvtsh_ss(static_cast<unsigned short>(b))) ==
                std::bit_cast<std::uint32_t>(f));
#endif
    }
    CHECK(to_float(from_bits<f16>(0x3C00u)) == 1.0f);
    CHECK(to_float(from_bits<f16>(0x0001u)) == std::ldexp(1.0f, -24)); // smallest subnormal
    CHECK(to_float(from_bits<f16>(0x7BFFu)) == 65504.0f);              // largest finite
}

TEST_CASE("bf16 widening is exact and narrowing it back is the identity", "[half]") {
    for (std::uint32_t b = 0; b < 0x10000u; ++b) {
        const bf16 h = from_bits<bf16>(b);
        const float f = to_float(h);
        REQUIRE(std::bit_cast<std::uint32_t>(f) == b << 16);
        if (std::isnan(f)) REQUIRE(std::isnan(to_float(to_bf16(f))));
        else REQUIRE(to_bf16(f).bits == h.bits);
    }
}

TEST_CASE("narrowing rounds to nearest even at every midpoint", "[half]") {
    auto check = [](auto tag) {
        using H = decltype(tag);
        const std::vector<float> v = positive_finite_values<H>();
        for (std::size_t i = 0; i + 1 < v.size(); ++i) {
            const float lo = v[i], hi = v[i + 1];
            const float mid = lo + (hi - lo) / 2; // exact: one more bit than H has
            const auto even = (i % 2 == 0) ? i : i + 1;
            REQUIRE(to_float(round_to<H>(mid)) == v[even]);
            REQUIRE(to_float(round_to<H>(-mid)) == -v[even]);
            REQUIRE(to_float(round_to<H>(std::nextafter(mid, 0.0f))) == lo);
            REQUIRE(to_float(round_to<H>(std::nextafter(mid, std::numeric_limits<float>::infinity()))) == hi);
        }
        // past the largest finite value: up to the midpoint to infinity stays finite
        const float top = v.back(), mid = top + (top - v[v.size() - 2]) / 2;
        CHECK(to_float(round_to<H>(std::nextafter(mid, 0.0f))) == top);
        CHECK(std::isinf(to_float(round_to<H>(mid))));
        CHECK(std::isinf(to_float(round_to<H>(std::numeric_limits<float>::max()))));
        CHECK(std::isinf(to_float(round_to<H>(-std::numeric_limits<float>::infinity()))));
    };
    check(f16{});
    check(bf16{});
    CHECK(to_f16(std::ldexp(1.0f, -25)).bits == 0);                      // a tie to even: zero
    CHECK(to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)).bits == 1); // above it: the smallest
    CHECK(to_f16(std::numeric_limits<float>::denorm_min()).bits == 0);
    CHECK(to_f16(-0.0f).bits == 0x8000u);
}

TEST_CASE("bulk conversions: SIMD rows equal the scalar conversions, strided views too", "[half]") {
    std::vector<float> src;
    for (std::uint32_t i = 0; i < 4099; ++i) { // every kind of value, SIMD body and tail
        const std::uint32_t bits = (i * 2654435761u) ^ (i << 7);
        src.push_back(std::bit_cast<float>(bits));
    }
    src[3] = std::numeric_limits<float>::quiet_NaN();
    src[5] = std::numeric_limits<float>::infinity();
    src[7] = 65519.0f;
    src[9] = std::ldexp(1.0f, -25);
    auto check = [&](auto tag) {
        using H = decltype(tag);
        const index_t n = static_cast<index_t>(src.size());
        const view<const float, 1> sv(src.data(), {n});
        const std::vector<H> fast = narrowed<H, 1>(sv);
        for (std::size_t i = 0; i < src.size(); ++i) {
            const H want = round_to<H>(src[i]);
            if (std::isnan(src[i])) REQUIRE(std::isnan(to_float(fast[i])));
            else REQUIRE(fast[i].bits == want.bits);
        }
        std::vector<float> back(src.size());
        kernels::widen<H, 1>(view<const H, 1>(fast.data(), {n}), view<float, 1>(back.data(), {n}));
        for (std::size_t i = 0; i < src.size(); ++i)
            REQUIRE(std::bit_cast<std::uint32_t>(back[i]) == std::bit_cast<std::uint32_t>(to_float(fast[i])));
        // a transposed (strided) view of the same values converts to the same bits
        const index_t rows = 17, cols = 241;
        const view<const float, 2> t(src.data(), {cols, rows}, {1, cols});
        std::vector<H> strided(static_cast<std::size_t>(rows * cols));
        kernels::narrow<H, 2>(t, view<H, 2>(strided.data(), {cols, rows}));
        for (index_t c = 0; c < cols; ++c)
            for (index_t r = 0; r < rows; ++r) {
                const float f = src[static_cast<std::size_t>(r * cols + c)];
                const H got = strided[static_cast<std::size_t>(c * rows + r)];
                if (std::isnan(f)) REQUIRE(std::isnan(to_float(got)));
                else REQUIRE(got.bits == round_to<H>(f).bits);
            }
    };
    check(f16{});
    check(bf16{});
}

TEMPLATE_TEST_CASE("a cfg stage on half storage is the float32 path on the widened inputs, rounded once",
                   "[half]", f16, bf16) {
    using H = TestType;
    const std::vector<index_t> shape{2, 4, 16, 12};
    const tensor<float> x = rounded_random<H>(shape, 1), cond = rounded_random<H>(shape, 2),
                        uncond = rounded_random<H>(shape, 3);
    tensor<float> sigma({2});
    sigma[0] = rounded_through<H>(3.7f);
    sigma[1] = rounded_through<H>(0.45f);
    const auto n = static_cast<std::size_t>(x.size());
    std::vector<H> xh = narrowed<H, 4>(x.as<4>()), ch = narrowed<H, 4>(cond.as<4>()), uh = narrowed<H, 4>(uncond.as<4>()),
                   sh = narrowed<H, 1>(sigma.as<1>()), dh(n);
    const std::array<index_t, 4> ext{2, 4, 16, 12};
    const view<H, 4> xv(xh.data(), ext), cv(ch.data(), ext), uv(uh.data(), ext), dv(dh.data(), ext);
    const view<H, 1> sv(sh.data(), {2});

    cfg_chain chain(model_sampling::discrete("eps"));
    chain.add(apg{.eta = 0.5, .norm_threshold = 4.0, .momentum = 0.3})
        .add(rescale_cfg{.multiplier = 0.7})
        .add(cfg_norm{.strength = 0.8});
    auto run_f = chain.begin_run();
    auto run_h = chain.begin_run();
    tensor<float> cf = cond, uf = uncond, df(shape);
    for (int step = 0; step < 3; ++step) { // APG's momentum carries over: the state is the float path's
        chain.combine(run_f, guidance_inputs<float, 4>{x.as<4>(), sigma.as<1>(), 5.0}, cf.as<4>(), uf.as<4>(),
                      df.as<4>());
        chain.combine(run_h, guidance_inputs<H, 4>{xv, sv, 5.0}, cv, uv, dv);
        const std::vector<H> want = narrowed<H, 4>(df.as<4>()), want_c = narrowed<H, 4>(cf.as<4>());
        for (std::size_t i = 0; i < n; ++i) {
            REQUIRE(dh[i].bits == want[i].bits);
            REQUIRE(ch[i].bits == want_c[i].bits); // APG rewrote cond in place: rounded back
        }
        // the next step starts from the stored (rounded) predictions on both paths
        kernels::widen<H, 4>(view<const H, 4>(cv), cf.as<4>());
        kernels::widen<H, 4>(view<const H, 4>(uv), uf.as<4>());
    }
    // after the first step the staged cfg stage allocates nothing
    test::allocation_counter counter;
    chain.combine(run_h, guidance_inputs<H, 4>{xv, sv, 5.0}, cv, uv, dv);
    CHECK(counter.count() == 0);
}

TEMPLATE_TEST_CASE("half-storage hook calls: cfg function and output block staged exactly", "[half]", f16, bf16) {
    using H = TestType;
    const std::vector<index_t> shape{1, 4, 8, 8};
    const tensor<float> x = rounded_random<H>(shape, 4), cond = rounded_random<H>(shape, 5),
                        uncond = rounded_random<H>(shape, 6);
    tensor<float> sigma({1});
    sigma[0] = rounded_through<H>(2.0f);
    const std::array<index_t, 4> ext{1, 4, 8, 8};
    std::vector<H> xh = narrowed<H, 4>(x.as<4>()), ch = narrowed<H, 4>(cond.as<4>()), uh = narrowed<H, 4>(uncond.as<4>()),
                   sh = narrowed<H, 1>(sigma.as<1>()), oh(static_cast<std::size_t>(x.size()));
    const rescale_cfg p{.multiplier = 0.6};
    no_state st;
    tensor<float> of(shape);
    apply_cfg_function<rescale_cfg, float, 4>(p, st, {x.as<4>(), sigma.as<1>(), 7.0}, cond.as<4>(), uncond.as<4>(),
                                              of.as<4>());
    apply_cfg_function<rescale_cfg, H, 4>(
        p, st, {view<const H, 4>(xh.data(), ext), view<const H, 1>(sh.data(), {1}), 7.0},
        view<const H, 4>(ch.data(), ext), view<const H, 4>(uh.data(), ext), view<H, 4>(oh.data(), ext));
    const std::vector<H> want = narrowed<H, 4>(of.as<4>());
    for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(oh[i].bits == want[i].bits);

    // FreeU on an output block with 2 x model_channels channels, in place on both tensors
    const free_u fu{.b1 = 1.3, .b2 = 1.4, .s1 = 0.9, .s2 = 0.2, .model_channels = 2};
    tensor<float> hf = rounded_random<H>(shape, 7), hspf = rounded_random<H>({1, 2, 8, 8}, 8);
    std::vector<H> hh = narrowed<H, 4>(hf.as<4>()), hsph = narrowed<H, 4>(hspf.as<4>());
    const block_site site{unet_stage::output, 3, 4};
    apply_output_block<free_u, float>(fu, st, site, hf.as<4>(), hspf.as<4>());
    apply_output_block<free_u, H>(fu, st, site, view<H, 4>(hh.data(), ext), view<H, 4>(hsph.data(), {1, 2, 8, 8}));
    const std::vector<H> want_h = narrowed<H, 4>(hf.as<4>()), want_hsp = narrowed<H, 4>(hspf.as<4>());
    for (std::size_t i = 0; i < want_h.size(); ++i) REQUIRE(hh[i].bits == want_h[i].bits);
    for (std::size_t i = 0; i < want_hsp.size(); ++i) REQUIRE(hsph[i].bits == want_hsp[i].bits);
    CHECK_FALSE(std::equal(want_h.begin(), want_h.end(), narrowed<H, 4>(rounded_random<H>(shape, 7).template as<4>()).begin(),
                           [](H a, H b) { return a.bits == b.bits; })); // FreeU did change h
}

TEST_CASE("half storage: bad inputs are refused naming the patch", "[half]") {
    std::vector<f16> buf(64);
    const std::array<index_t, 4> ext{1, 1, 8, 8};
    const view<f16, 4> a(buf.data(), ext);
    std::vector<f16> sbuf(1, to_f16(1.0f));
    no_state st;
    // cond and uncond the same memory: rewritten in place by a pre-cfg hook
    apg::state_type ast{};
    CHECK_THROWS_WITH((apply_pre_cfg<apg, f16, 4>(apg{}, ast, {a, view<const f16, 1>(sbuf.data(), {1}), 3.0}, a, a)),
                      Catch::Contains("APG") && Catch::Contains("overlap"));
    // a shape mismatch is found by the float32 path's checks, with the same message
    std::vector<f16> small(16);
    CHECK_THROWS_WITH((apply_cfg_function<rescale_cfg, f16, 4>(
                          rescale_cfg{}, st, {a, view<const f16, 1>(sbuf.data(), {1}), 3.0}, a,
                          view<const f16, 4>(small.data(), {1, 1, 4, 4}), a)),
                      Catch::Contains("RescaleCFG") && Catch::Contains("shape"));
}

TEMPLATE_TEST_CASE("half-storage block hooks: Deep Shrink's resizing input and output hooks staged exactly",
                   "[half]", f16, bf16) {
    using H = TestType;
    const deep_shrink p{.block_number = 2, .downscale_factor = 1.7};
    const std::array<index_t, 4> ext{2, 3, 11, 9};
    const tensor<float> h = rounded_random<H>({2, 3, 11, 9}, 11);
    const std::vector<H> hh = narrowed<H, 4>(h.as<4>());
    workspace arena_f, arena_h;
    for (const auto at : {input_block_point::before_skip, input_block_point::after_skip}) {
        deep_shrink q = p;
        q.downscale_after_skip = at == input_block_point::after_skip;
        state_t<deep_shrink> sf, sh;
        const block_site site{unet_stage::input, 2, 3, nullptr};
        block_site site_f = site, site_h = site;
        site_f.scratch = &arena_f;
        site_h.scratch = &arena_h;
        tensor<float> hf = h;
        std::vector<H> hcopy = hh;
        const view<float, 4> rf = apply_input_block<deep_shrink, float>(q, sf, site_f, hf.as<4>(), at);
        const view<H, 4> rh = apply_input_block<deep_shrink, H>(q, sh, site_h, view<H, 4>(hcopy.data(), ext), at);
        REQUIRE(rf.extents() == std::array<index_t, 4>{2, 3, 6, 5}); // round(11 / 1.7), round(9 / 1.7)
        REQUIRE(rh.extents() == rf.extents());
        require_same_bits<H, 4>(rh, narrowed<H, 4>(rf));
        for (std::size_t i = 0; i < hh.size(); ++i) REQUIRE(hcopy[i].bits == hh[i].bits); // h itself untouched

        // a strided (channels-last) half view of the same values gives the same bits
        std::vector<H> cl(hh.size());
        const view<H, 4> strided(cl.data(), ext, {3 * 11 * 9, 1, 9 * 3, 3});
        kernels::narrow<H, 4>(h.as<4>(), strided);
        state_t<deep_shrink> s2;
        require_same_bits<H, 4>(apply_input_block<deep_shrink, H>(q, s2, site_h, strided, at), narrowed<H, 4>(rf));

        // the other point's hooks, or another block: h itself comes back, as given
        const auto other =
            at == input_block_point::before_skip ? input_block_point::after_skip : input_block_point::before_skip;
        const view<H, 4> same = apply_input_block<deep_shrink, H>(q, sh, site_h, view<H, 4>(hcopy.data(), ext), other);
        CHECK(same.data_handle() == hcopy.data());
        const block_site site3{unet_stage::input, 3, 3, &arena_h};
        CHECK(apply_input_block<deep_shrink, H>(q, sh, site3, view<H, 4>(hcopy.data(), ext), at).data_handle() ==
              hcopy.data());
    }

    // output block: h (6 x 5) resized up to hsp's 11 x 9; hsp unchanged
    const tensor<float> small = rounded_random<H>({2, 3, 6, 5}, 12);
    tensor<float> hsp = rounded_random<H>({2, 3, 11, 9}, 13);
    std::vector<H> smallh = narrowed<H, 4>(small.as<4>()), hsph = narrowed<H, 4>(hsp.as<4>());
    const std::vector<H> hsp_before = hsph;
    state_t<deep_shrink> sf, sh;
    tensor<float> smallf = small;
    const block_site site{unet_stage::output, 4, 3, nullptr};
    block_site site_f = site, site_h = site;
    site_f.scratch = &arena_f;
    site_h.scratch = &arena_h;
    const view<float, 4> rf = apply_output_block<deep_shrink, float>(p, sf, site_f, smallf.as<4>(), hsp.as<4>());
    const view<H, 4> small_v(smallh.data(), {2, 3, 6, 5}), hsp_v(hsph.data(), ext);
    const view<H, 4> rh = apply_output_block<deep_shrink, H>(p, sh, site_h, small_v, hsp_v);
    REQUIRE(rf.extents() == ext);
    require_same_bits<H, 4>(rh, narrowed<H, 4>(rf));
    for (std::size_t i = 0; i < hsph.size(); ++i) REQUIRE(hsph[i].bits == hsp_before[i].bits);

    // after the first call nothing allocates; a resize on half storage needs the run's arena
    {
        test::allocation_counter counter;
        apply_output_block<deep_shrink, H>(p, sh, site_h, small_v, hsp_v);
        CHECK(counter.count() == 0);
    }
    CHECK_THROWS_WITH((apply_output_block<deep_shrink, H>(p, sh, site, small_v, hsp_v)),
                      Catch::Contains("PatchModelAddDownscale") && Catch::Contains("block_site::scratch"));
}

TEMPLATE_TEST_CASE("half-storage attention hooks: NAG and the attention functions staged exactly", "[half]", f16,
                   bf16) {
    using H = TestType;
    const normalized_attention_guidance p{.nag_scale = 3.0, .nag_alpha = 0.4, .nag_tau = 1.2};
    const std::array<index_t, 3> ext{2, 7, 24}; // items: positive, negative; 3 text + 2 x 2 image tokens
    const tensor<float> a = rounded_random<H>({2, 7, 24}, 21);
    const std::array<pass_kind, 2> prompts{pass_kind::cond, pass_kind::uncond};
    const attention_site site = dit::attention({dit_block_site::kind::double_block, 0}, 2, 2);
    state_t<normalized_attention_guidance> sf, sh;
    tensor<float> af = a;
    apply_attention_output<normalized_attention_guidance, float>(p, sf, site, af.as<3>(), prompts);
    std::vector<H> ah = narrowed<H, 3>(a.as<3>());
    apply_attention_output<normalized_attention_guidance, H>(p, sh, site, view<H, 3>(ah.data(), ext), prompts);
    const std::vector<H> want = narrowed<H, 3>(af.as<3>());
    for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(ah[i].bits == want[i].bits);
    CHECK(sh.guided_sites == 1);
    CHECK_FALSE(std::equal(want.begin(), want.end(), narrowed<H, 3>(a.as<3>()).begin(),
                           [](H x, H y) { return x.bits == y.bits; })); // NAG did change the output

    // a strided (feature-major) half view gives the same bits, through the arena
    std::vector<H> fm(want.size());
    const view<H, 3> strided(fm.data(), ext, {7 * 24, 1, 7});
    kernels::narrow<H, 3>(a.as<3>(), strided);
    workspace arena;
    apply_attention_output<normalized_attention_guidance, H>(p, sh, site, strided, prompts, &arena);
    require_same_bits<H, 3>(strided, want);
    {
        test::allocation_counter counter;
        kernels::narrow<H, 3>(a.as<3>(), strided);
        apply_attention_output<normalized_attention_guidance, H>(p, sh, site, strided, prompts, &arena);
        CHECK(counter.count() == 0);
    }
    require_same_bits<H, 3>(strided, want);

    // ComfyUI's call form (chunks, image slice) on half storage
    std::vector<H> ch = narrowed<H, 3>(a.as<3>());
    const std::array<int, 2> chunks{0, 1};
    CHECK(nag::apply_chunks<H>(p, view<H, 3>(ch.data(), ext), chunks, std::pair<index_t, index_t>{3, 7}));
    for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(ch[i].bits == want[i].bits);

    // SAG's attention with probabilities: out and sim each rounded once
    const tensor<float> q = rounded_random<H>({2, 6, 8}, 22), k = rounded_random<H>({2, 5, 8}, 23),
                        v = rounded_random<H>({2, 5, 8}, 24);
    tensor<float> of({2, 6, 8}), simf({4, 6, 5});
    kernels::attention_basic_with_sim<float>(q.as<3>(), k.as<3>(), v.as<3>(), 2, of.as<3>(), simf.as<3>());
    const std::vector<H> qh = narrowed<H, 3>(q.as<3>()), kh = narrowed<H, 3>(k.as<3>()), vh = narrowed<H, 3>(v.as<3>());
    std::vector<H> oh(96), simh(120);
    kernels::attention_basic_with_sim<H>(view<const H, 3>(qh.data(), {2, 6, 8}), view<const H, 3>(kh.data(), {2, 5, 8}),
                                         view<const H, 3>(vh.data(), {2, 5, 8}), 2, view<H, 3>(oh.data(), {2, 6, 8}),
                                         view<H, 3>(simh.data(), {4, 6, 5}));
    require_same_bits<H, 3>(view<const H, 3>(oh.data(), {2, 6, 8}), narrowed<H, 3>(of.as<3>()));
    require_same_bits<H, 3>(view<const H, 3>(simh.data(), {4, 6, 5}), narrowed<H, 3>(simf.as<3>()));
    // PAG's identity attention: out = v, exactly
    std::vector<H> ph(80);
    pag::perturbed_attention<H>(view<const H, 3>(qh.data(), {2, 5, 8}), view<const H, 3>(kh.data(), {2, 5, 8}),
                                view<const H, 3>(vh.data(), {2, 5, 8}), view<H, 3>(ph.data(), {2, 5, 8}));
    for (std::size_t i = 0; i < ph.size(); ++i) REQUIRE(ph[i].bits == vh[i].bits);
}

TEMPLATE_TEST_CASE("half-storage NAG computes in float32: a cancellation half precision would get wrong", "[half]",
                   f16, bf16) {
    using H = TestType;
    // u: one unit in the last place of H at 1. z_pos = 1 + u, z_neg = 1, scale 5:
    // g = 5 z_pos - 4 z_neg = 1 + 5u exactly in float32, but 5 z_pos rounded to H is 5 + 4u, so a
    // half computation gets g = 1 + 4u. With alpha 0.5 (|g| / |z_pos| < tau: no clipping)
    // z_final = (g + z_pos) / 2 = 1 + 3u, representable; the half computation gives 1 + 2u.
    const float u = std::is_same_v<H, f16> ? std::ldexp(1.0f, -10) : std::ldexp(1.0f, -7);
    const float pos = 1.0f + u;
    REQUIRE(rounded_through<H>(pos) == pos);
    const float g_half = rounded_through<H>(rounded_through<H>(5.0f * pos) - 4.0f);
    const float z_half = rounded_through<H>(rounded_through<H>(0.5f * g_half) + rounded_through<H>(0.5f * pos));
    REQUIRE(z_half != 1.0f + 3.0f * u); // the test fails an implementation that computes in H
    const normalized_attention_guidance p{.nag_scale = 5.0, .nag_alpha = 0.5, .nag_tau = 2.0};
    std::vector<H> out(2 * 16);
    for (std::size_t i = 0; i < 16; ++i) out[i] = round_to<H>(pos), out[16 + i] = round_to<H>(1.0f);
    const std::array<pass_kind, 2> prompts{pass_kind::cond, pass_kind::uncond};
    state_t<normalized_attention_guidance> st;
    apply_attention_output<normalized_attention_guidance, H>(
        p, st, dit::attention({dit_block_site::kind::single_block, 0}, 1, 1), view<H, 3>(out.data(), {2, 1, 16}),
        prompts);
    for (const H& z : out) REQUIRE(to_float(z) == 1.0f + 3.0f * u); // positive and negative items
}

TEMPLATE_TEST_CASE("three-prompt cfg stages on half storage: the float32 path on the rounded inputs, rounded once",
                   "[half]", f16, bf16) {
    using H = TestType;
    const std::vector<index_t> shape{2, 3, 8, 6};
    const std::array<index_t, 4> ext{2, 3, 8, 6};
    const tensor<float> x = rounded_random<H>(shape, 11), cond = rounded_random<H>(shape, 12),
                        uncond = rounded_random<H>(shape, 13), extra = rounded_random<H>(shape, 14);
    tensor<float> sigma({2});
    sigma[0] = rounded_through<H>(1.3f);
    sigma[1] = rounded_through<H>(0.2f);
    const auto n = static_cast<std::size_t>(x.size());
    const std::vector<H> xh = narrowed<H, 4>(x.as<4>()), ch = narrowed<H, 4>(cond.as<4>()),
                         uh = narrowed<H, 4>(uncond.as<4>()), eh = narrowed<H, 4>(extra.as<4>()),
                         sh = narrowed<H, 1>(sigma.as<1>());
    const guidance_inputs<H, 4> hin{view<const H, 4>(xh.data(), ext), view<const H, 1>(sh.data(), {2}), 1.0};
    const guidance_inputs<float, 4> fin{x.as<4>(), sigma.as<1>(), 1.0};

    // run(cond, uncond, extra, out) on half storage: contiguous, then every view strided
    auto check = [&](const char* what, auto run_float, auto run_half) {
        INFO(what);
        tensor<float> cf = cond, uf = uncond, ef = extra, df(shape);
        run_float(cf.as<4>(), uf.as<4>(), ef.as<4>(), df.as<4>());
        const std::vector<H> want = narrowed<H, 4>(df.as<4>());
        std::vector<H> c = ch, u = uh, e = eh, d(n);
        run_half(view<H, 4>(c.data(), ext), view<H, 4>(u.data(), ext), view<H, 4>(e.data(), ext), view<H, 4>(d.data(), ext));
        REQUIRE(same_bits(d, want));
        CHECK_FALSE(same_bits(d, ch)); // it computed something
        gapped<H> cs(ch, ext), us(uh, ext), es(eh, ext), ds(std::vector<H>(n), ext);
        run_half(cs.v, us.v, es.v, ds.v);
        REQUIRE(same_bits(ds.values(), d));
    };
    auto check_guider = [&](const char* what, auto patch) {
        using G = decltype(patch);
        test::lookup_model model;
        const guider<test::lookup_model, G> g(model, model_sampling::discrete(), patch);
        check(
            what,
            [&](view<float, 4> c, view<float, 4> u, view<float, 4> e, view<float, 4> d) {
                auto run = g.begin_run();
                g.combine(run, fin, c, u, e, d);
            },
            [&](view<H, 4> c, view<H, 4> u, view<H, 4> e, view<H, 4> d) {
                auto run = g.begin_run();
                g.combine(run, hin, c, u, e, d);
            });
    };
    check_guider("PerpNegGuider", perp_neg_guider{.cfg = 6.0, .neg_scale = 0.8});
    check_guider("DualCFGGuider regular", dual_cfg_guider{.cfg_conds = 5.0, .cfg_cond2_negative = 3.0});
    check_guider("DualCFGGuider nested",
                 dual_cfg_guider{.cfg_conds = 4.0, .cfg_cond2_negative = 2.5, .style = dual_cfg_style::nested});
    const perp_neg pn{.neg_scale = 1.3};
    const guidance_inputs<float, 4> fin7{x.as<4>(), sigma.as<1>(), 7.0};
    const guidance_inputs<H, 4> hin7{hin.x, hin.sigma, 7.0};
    check(
        "PerpNeg",
        [&](view<float, 4> c, view<float, 4> u, view<float, 4> e, view<float, 4> d) { pn.combine<float, 4>(fin7, c, u, e, d); },
        [&](view<H, 4> c, view<H, 4> u, view<H, 4> e, view<H, 4> d) { pn.combine<H, 4>(hin7, c, u, e, d); });
}

TEST_CASE("guider::combine with three prompts refuses what the guider's rule does not allow", "[half]") {
    const std::array<index_t, 4> ext{1, 1, 4, 4};
    std::vector<float> a(16, 1.0f), b(16, 0.5f), c(16, 0.25f), d(16), s(1, 1.0f);
    const guidance_inputs<float, 4> in{view<const float, 4>(a.data(), ext), view<const float, 1>(s.data(), {1}), 1.0};
    const view<float, 4> av(a.data(), ext), bv(b.data(), ext), cv(c.data(), ext), dv(d.data(), ext);
    test::lookup_model model;
    const guider<test::lookup_model, perp_neg_guider> pg(model, model_sampling::discrete(), perp_neg_guider{});
    auto run = pg.begin_run();
    CHECK_THROWS_WITH(pg.combine(run, in, av, bv, dv), Catch::Contains("PerpNegGuider") && Catch::Contains("'extra'"));
    guidance_inputs<float, 4> skipped = in;
    skipped.uncond_is_none = true; // neg_scale 1: the negative prompt is evaluated
    CHECK_THROWS_WITH(pg.combine(run, skipped, av, bv, cv, dv), Catch::Contains("uncond_is_none"));
    const guider<test::lookup_model, rescale_cfg> rg(model, model_sampling::discrete(), rescale_cfg{});
    auto run2 = rg.begin_run();
    CHECK_THROWS_WITH(rg.combine(run2, in, av, bv, cv, dv), Catch::Contains("no multi-prompt guider"));
}

} // namespace test_core_half
