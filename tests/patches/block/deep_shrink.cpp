// Tests for patches/block/deep_shrink.hpp and kernels/resize.hpp: each resize method against
// hand-computed values (and bislerp's same / opposite / zero-vector branches), strided =
// contiguous bit for bit (4-D and 5-D), 5-D = frame by frame, the half-to-even sizes, the
// identities (other blocks, factor 1, outside the window: bit-exact pass-through), the window
// edges through a chain, the before / after skip hook points, separate results per pass and
// per patch, no allocation after the first step, and bad input naming the patch and argument.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "counting_allocator.hpp"
#include "patchbay/comfy/workflow.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/kernels/resize.hpp"
#include "patchbay/patches/block/deep_shrink.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "test_util.hpp"

namespace test_patches_block_deep_shrink {

using namespace patchbay;
using kernels::resize_method;

namespace {

constexpr std::array<resize_method, 5> all_methods{resize_method::bicubic, resize_method::nearest_exact,
                                                   resize_method::bilinear, resize_method::area,
                                                   resize_method::bislerp};

/// A (1, C, 1, W) tensor from channel rows.
tensor<float> rows_tensor(const std::vector<std::vector<float>>& channels) {
    const auto C = static_cast<index_t>(channels.size()), W = static_cast<index_t>(channels[0].size());
    tensor<float> t({1, C, 1, W});
    for (index_t c = 0; c < C; ++c)
        for (index_t x = 0; x < W; ++x) t.as<4>()(0, c, 0, x) = channels[std::size_t(c)][std::size_t(x)];
    return t;
}

template <std::size_t R>
tensor<float> resized(const tensor<float>& in, std::vector<index_t> shape, resize_method m) {
    tensor<float> out(std::move(shape));
    workspace ws;
    kernels::resize<float, R>(in.as<R>(), out.as<R>(), m, ws);
    return out;
}

/// A view of `storage` with the last two dims' layout swapped (W not contiguous), holding in's values.
template <std::size_t R>
view<float, R> transposed_copy(const tensor<float>& in, tensor<float>& storage) {
    auto e = in.as<R>().extents();
    std::vector<index_t> shape(e.begin(), e.end());
    std::swap(shape[R - 1], shape[R - 2]);
    storage = tensor<float>(shape);
    auto s = storage.as<R>().strides();
    std::swap(s[R - 1], s[R - 2]);
    const view<float, R> v(storage.data(), e, s);
    kernels::copy<float, R>(in.as<R>(), v);
    return v;
}

/// A model with one UNet level: input block `block` (h = x), the skip, the deeper h, and the
/// output block of that level; it answers the h leaving the output block (zeros when that is
/// not x's size) and records the heights it saw. Buffers are allocated once.
struct shrink_model {
    static constexpr bool calls_block_hooks = true;
    static constexpr bool calls_input_block_hooks = true;
    int block = 3;
    index_t skip_h = 0, deep_h = 0, out_h = 0;
    tensor<float> h;
    explicit shrink_model(std::vector<index_t> shape) : h(std::move(shape)) {}
    template <class T, std::size_t R>
    void predict(const model_call<void, T, R>& c, view<T, R> out) {
        if constexpr (std::is_same_v<T, float> && R == 4) {
            kernels::copy<float, 4>(c.x, h.as<4>());
            const call_overrides<float>& ov = *c.overrides;
            const block_site in_site{unet_stage::input, block, h.extent(1)};
            const view<float, 4> skip = ov.apply_input_block(in_site, h.as<4>());
            const view<float, 4> deep = ov.apply_input_block_after_skip(in_site, skip);
            const view<float, 4> back = ov.apply_output_block(block_site{unet_stage::output, 8, h.extent(1)}, deep, skip);
            skip_h = skip.extent(2);
            deep_h = deep.extent(2);
            out_h = back.extent(2);
            if (back.extents() == out.extents()) kernels::copy<float, 4>(back, out);
            else kernels::fill(out, 0.f);
        } else {
            fail("shrink_model", "float 4-D only");
        }
    }
};

struct no_input_hooks_model {
    static constexpr bool calls_block_hooks = true;
    template <class T, std::size_t R>
    void predict(const model_call<void, T, R>& c, view<T, R> out) {
        kernels::copy<T, R>(c.x, out);
    }
};

} // namespace

TEST_CASE("resize: each method against hand-computed values", "[deep_shrink][resize]") {
    const tensor<float> x = rows_tensor({{1.f, 2.f, 4.f, 8.f, 16.f, 32.f}});
    SECTION("nearest-exact: floor((o + 0.5) * in / out)") {
        const auto y = resized<4>(x, {1, 1, 1, 4}, resize_method::nearest_exact); // scale 1.5: 0, 2, 3, 5
        CHECK(y[0] == 1.f);
        CHECK(y[1] == 4.f);
        CHECK(y[2] == 8.f);
        CHECK(y[3] == 32.f);
        const auto z = resized<4>(rows_tensor({{1.f, 2.f}}), {1, 1, 1, 3}, resize_method::nearest_exact);
        CHECK((z[0] == 1.f && z[1] == 2.f && z[2] == 2.f)); // (1.5 * 2/3) rounds to 1 in float
    }
    SECTION("bilinear: src = (o + 0.5) * in / out - 0.5, clamped at 0") {
        const auto y = resized<4>(x, {1, 1, 1, 3}, resize_method::bilinear); // src 0.5, 2.5, 4.5
        CHECK(y[0] == 1.5f);
        CHECK(y[1] == 6.f);
        CHECK(y[2] == 24.f);
        const auto z = resized<4>(rows_tensor({{1.f, 3.f}}), {1, 1, 1, 4}, resize_method::bilinear); // -0.25 -> 0, 0.25, 0.75, 1.25
        CHECK(z[0] == 1.f);
        CHECK(z[1] == 1.5f);
        CHECK(z[2] == 2.5f);
        CHECK(z[3] == 3.f); // the last source index is clamped: both taps are x[1]
    }
    SECTION("area: the mean over [floor(o * in / out), ceil((o + 1) * in / out))") {
        const auto y = resized<4>(x, {1, 1, 1, 4}, resize_method::area); // bins [0,2) [1,3) [3,5) [4,6)
        CHECK(y[0] == 1.5f);
        CHECK(y[1] == 3.f);
        CHECK(y[2] == 12.f);
        CHECK(y[3] == 24.f);
    }
    SECTION("bicubic: Keys' cubic with A = -0.75, taps clamped to the border") {
        // t = 0.5: weights -0.09375, 0.59375, 0.59375, -0.09375 (exact in float)
        const auto y = resized<4>(x, {1, 1, 1, 3}, resize_method::bicubic); // src 0.5, 2.5, 4.5
        CHECK(y[0] == Approx(-0.09375 * 1 + 0.59375 * 1 + 0.59375 * 2 - 0.09375 * 4).epsilon(1e-6));
        CHECK(y[1] == Approx(-0.09375 * 2 + 0.59375 * 4 + 0.59375 * 8 - 0.09375 * 16).epsilon(1e-6));
        CHECK(y[2] == Approx(-0.09375 * 8 + 0.59375 * 16 + 0.59375 * 32 - 0.09375 * 32).epsilon(1e-6));
    }
    SECTION("both dims: separable, W inside H") {
        tensor<float> p({1, 1, 2, 2});
        p[0] = 1.f, p[1] = 2.f, p[2] = 3.f, p[3] = 5.f;
        const auto y = resized<4>(p, {1, 1, 1, 1}, resize_method::area);
        CHECK(y[0] == 2.75f);
        const auto b = resized<4>(p, {1, 1, 1, 1}, resize_method::bilinear); // src 0.5 in both dims
        CHECK(b[0] == 2.75f);
    }
}

TEST_CASE("resize: bislerp slerps channel vectors", "[deep_shrink][resize]") {
    const double s1 = std::sin(std::numbers::pi / 8), s3 = std::sin(3 * std::numbers::pi / 8);
    // W 2 -> 4: (c1, c2, r) = (0, 1, 0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0); H 1 -> 1
    SECTION("orthogonal vectors: sin-weighted, norms interpolated linearly") {
        const auto y = resized<4>(rows_tensor({{1.f, 0.f}, {0.f, 2.f}}), {1, 2, 1, 4}, resize_method::bislerp);
        const auto v = y.as<4>();
        CHECK(v(0, 0, 0, 0) == 1.f); // r = 0: b1 itself
        CHECK(v(0, 1, 0, 0) == 0.f);
        CHECK(v(0, 0, 0, 1) == Approx(1.25 * s3).epsilon(1e-6)); // m = 0.75 * 1 + 0.25 * 2
        CHECK(v(0, 1, 0, 1) == Approx(1.25 * s1).epsilon(1e-6));
        CHECK(v(0, 0, 0, 2) == Approx(1.75 * s1).epsilon(1e-6));
        CHECK(v(0, 1, 0, 2) == Approx(1.75 * s3).epsilon(1e-6));
        CHECK(v(0, 0, 0, 3) == 0.f);
        CHECK(v(0, 1, 0, 3) == 2.f);
    }
    SECTION("the same direction: ComfyUI keeps b1 (no interpolation)") {
        const auto y = resized<4>(rows_tensor({{1.f, 2.f}, {1.f, 2.f}}), {1, 2, 1, 4}, resize_method::bislerp);
        for (index_t o = 0; o < 3; ++o) CHECK((y.as<4>()(0, 0, 0, o) == 1.f && y.as<4>()(0, 1, 0, o) == 1.f));
        CHECK(y.as<4>()(0, 0, 0, 3) == 2.f);
    }
    SECTION("opposite directions: linear") {
        const auto y = resized<4>(rows_tensor({{1.f, -3.f}, {0.f, 0.f}}), {1, 2, 1, 4}, resize_method::bislerp);
        CHECK(y.as<4>()(0, 0, 0, 1) == 0.f);  // 0.75 * 1 + 0.25 * -3
        CHECK(y.as<4>()(0, 0, 0, 2) == -2.f); // 0.25 * 1 + 0.75 * -3
    }
    SECTION("a zero vector: its direction is 0, the angle a right angle") {
        const auto y = resized<4>(rows_tensor({{0.f, 0.f}, {0.f, 2.f}}), {1, 2, 1, 4}, resize_method::bislerp);
        CHECK(y.as<4>()(0, 0, 0, 1) == 0.f);
        CHECK(y.as<4>()(0, 1, 0, 1) == Approx(0.5 * s1).epsilon(1e-6)); // sin(r pi/2) * (0.25 * 2)
        const auto z = resized<4>(rows_tensor({{0.f, 0.f}, {0.f, 0.f}}), {1, 2, 1, 4}, resize_method::bislerp);
        for (index_t i = 0; i < z.size(); ++i) CHECK(z[i] == 0.f);
    }
}

TEST_CASE("resize: strided = contiguous bit for bit, 5-D = frame by frame", "[deep_shrink][resize]") {
    const tensor<float> x4 = test::random_tensor({2, 5, 19, 27}, 1);
    const tensor<float> x5 = test::random_tensor({1, 3, 2, 11, 21}, 2);
    for (resize_method m : all_methods) {
        INFO("method " << kernels::resize_method_names[std::size_t(m)]);
        for (auto hw : {std::array<index_t, 2>{10, 13}, std::array<index_t, 2>{37, 50}, std::array<index_t, 2>{7, 27}}) {
            const auto want = resized<4>(x4, {2, 5, hw[0], hw[1]}, m);
            tensor<float> sin, sout, got({2, 5, hw[0], hw[1]});
            const view<float, 4> vin = transposed_copy<4>(x4, sin);
            const view<float, 4> vout = transposed_copy<4>(got, sout);
            workspace ws;
            kernels::resize<float, 4>(vin, vout, m, ws);
            kernels::copy<float, 4>(vout, got.as<4>());
            CHECK(test::bit_equal(want, got));
            // contiguous input, strided output; strided input, contiguous output
            tensor<float> a({2, 5, hw[0], hw[1]}), b({2, 5, hw[0], hw[1]});
            kernels::resize<float, 4>(x4.as<4>(), vout, m, ws);
            kernels::copy<float, 4>(vout, a.as<4>());
            kernels::resize<float, 4>(vin, b.as<4>(), m, ws);
            CHECK(test::bit_equal(want, a));
            CHECK(test::bit_equal(want, b));
        }
        const auto want5 = resized<5>(x5, {1, 3, 2, 6, 9}, m);
        tensor<float> s5;
        const view<float, 5> v5 = transposed_copy<5>(x5, s5);
        tensor<float> got5({1, 3, 2, 6, 9});
        workspace ws;
        kernels::resize<float, 5>(v5, got5.as<5>(), m, ws);
        CHECK(test::bit_equal(want5, got5));
        for (index_t f = 0; f < 2; ++f) { // each frame as a 4-D tensor
            tensor<float> frame({1, 3, 11, 21});
            for (index_t c = 0; c < 3; ++c)
                for (index_t y = 0; y < 11; ++y)
                    for (index_t x = 0; x < 21; ++x) frame.as<4>()(0, c, y, x) = x5.as<5>()(0, c, f, y, x);
            const auto r = resized<4>(frame, {1, 3, 6, 9}, m);
            bool same = true;
            for (index_t c = 0; c < 3; ++c)
                for (index_t y = 0; y < 6; ++y)
                    for (index_t x = 0; x < 9; ++x) same = same && r.as<4>()(0, c, y, x) == want5.as<5>()(0, c, f, y, x);
            CHECK(same);
        }
    }
}

TEST_CASE("resize: double agrees with float; an unchanged size copies", "[deep_shrink][resize]") {
    const tensor<float> x = test::random_tensor({1, 4, 12, 10}, 3);
    tensor<double> xd({1, 4, 12, 10});
    for (index_t i = 0; i < x.size(); ++i) xd[i] = x[i];
    for (resize_method m : all_methods) {
        const auto y = resized<4>(x, {1, 4, 7, 15}, m);
        tensor<double> yd({1, 4, 7, 15});
        kernels::resize<double, 4>(xd.as<4>(), yd.as<4>(), m);
        double worst = 0;
        for (index_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(double(y[i]) - yd[i]));
        CHECK(worst < 1e-5);
        CHECK(test::bit_equal(resized<4>(x, {1, 4, 12, 10}, m), x));
    }
}

TEST_CASE("deep_shrink: sizes round half to even; other blocks and factor 1 pass h through", "[deep_shrink]") {
    deep_shrink p;
    CHECK(p.shrunk_size(7, "width") == 4); // 3.5
    CHECK(p.shrunk_size(9, "width") == 4); // 4.5
    CHECK(p.shrunk_size(5, "width") == 2); // 2.5
    p.downscale_factor = 0.4;
    CHECK(p.shrunk_size(5, "width") == 12); // 12.5
    CHECK(p.shrunk_size(3, "width") == 8);  // 7.5
    p.downscale_factor = 1.5;
    CHECK(p.shrunk_size(13, "height") == 9); // 8.666...
    tensor<float> h = test::random_tensor({1, 3, 8, 6}, 4);
    workspace store;
    const deep_shrink d;
    const auto other = d.input_block_patch<float, 4>(block_site{unet_stage::input, 2, 3}, h.as<4>(), store);
    CHECK(other.data_handle() == h.data());
    CHECK(other.extents() == h.as<4>().extents());
    const auto r = d.input_block_patch<float, 4>(block_site{unet_stage::input, 3, 3}, h.as<4>(), store);
    CHECK(r.extents() == std::array<index_t, 4>{1, 3, 4, 3});
    deep_shrink one;
    one.downscale_factor = 1.0;
    CHECK(one.input_block_patch<float, 4>(block_site{unet_stage::input, 3, 3}, h.as<4>(), store).data_handle() == h.data());
    // output: dim 2 decides; an equal H with another W is left alone
    tensor<float> hsp = test::random_tensor({1, 2, 8, 12}, 5);
    CHECK(d.output_block_patch<float>({}, h.as<4>(), hsp.as<4>(), store).data_handle() == h.data());
    tensor<float> big = test::random_tensor({1, 2, 16, 12}, 6);
    const auto up = d.output_block_patch<float>({}, h.as<4>(), big.as<4>(), store);
    CHECK(up.extents() == std::array<index_t, 4>{1, 3, 16, 12});
    CHECK(test::bit_equal(tensor<float>::copy_of(up), resized<4>(h, {1, 3, 16, 12}, resize_method::bicubic)));
}

namespace {

/// One step of a chain with the patch on shrink_model at sigma (1, 4, 8, 8), cond_scale 1.
struct chain_step {
    shrink_model model{{1, 4, 8, 8}};
    patch_chain<shrink_model> chain{model, model_sampling::discrete("eps")};
    tensor<float> x = test::random_tensor({1, 4, 8, 8}, 7), out{{1, 4, 8, 8}}, sigma{std::vector<index_t>{1}};
    explicit chain_step(const deep_shrink& p) { chain.add(p); }
    void run(float s) {
        auto run = chain.begin_run();
        sigma[0] = s;
        chain.denoise(run, step_inputs<float, 4>{x.as<4>(), sigma.as<1>(), 1.0}, out.as<4>());
    }
};

} // namespace

TEST_CASE("deep_shrink: through a chain, the window and the skip point", "[deep_shrink]") {
    const model_sampling ms = model_sampling::discrete("eps");
    deep_shrink p;
    p.start_percent = 0.15;
    p.end_percent = 0.5;
    p.downscale_method = resize_method::bilinear;
    p.upscale_method = resize_method::bislerp;
    const auto start = static_cast<float>(ms.percent_to_sigma(0.15)), end = static_cast<float>(ms.percent_to_sigma(0.5));
    REQUIRE(double(start) == ms.percent_to_sigma(0.15)); // float32 edges: "equal" is exact
    REQUIRE(double(end) == ms.percent_to_sigma(0.5));
    // inside: down to 4x4 after the skip, back up at the output block
    const auto down = resized<4>(test::random_tensor({1, 4, 8, 8}, 7), {1, 4, 4, 4}, resize_method::bilinear);
    const auto want = resized<4>(down, {1, 4, 8, 8}, resize_method::bislerp);
    for (float s : {start, end, 0.5f * (start + end)}) {
        chain_step c(p);
        c.run(s);
        CHECK(c.model.skip_h == 8);
        CHECK(c.model.deep_h == 4);
        CHECK(c.model.out_h == 8);
        CHECK(test::same_arithmetic(c.out, want));
    }
    // outside (just above the start, just below the end): h passes bit for bit
    for (float s : {std::nextafter(start, 1e9f), std::nextafter(end, 0.f), 20.f, 0.1f}) {
        chain_step c(p);
        c.run(s);
        CHECK(c.model.deep_h == 8);
        CHECK(test::bit_equal(c.out, c.x));
    }
    // downscale_after_skip false: the skip sees the resized h, nothing to resize back
    p.downscale_after_skip = false;
    chain_step c(p);
    c.run(start);
    CHECK(c.model.skip_h == 4);
    CHECK(c.model.deep_h == 4);
    CHECK(c.model.out_h == 4);
    // another block: untouched
    p.block_number = 4;
    chain_step d(p);
    d.run(start);
    CHECK(d.model.deep_h == 8);
    CHECK(test::bit_equal(d.out, d.x));
}

TEST_CASE("deep_shrink: each pass and each patch keeps its own result", "[deep_shrink]") {
    deep_shrink a, b;
    b.block_number = 5;
    b.downscale_method = resize_method::area;
    state_t<deep_shrink> sa, sb;
    call_overrides<float> cond, uncond;
    for (auto* ov : {&cond, &uncond}) {
        const pass_kind k = ov == &cond ? pass_kind::cond : pass_kind::uncond;
        a.on_model_call(sa, k, *ov);
        b.on_model_call(sb, k, *ov);
    }
    tensor<float> h1 = test::random_tensor({1, 2, 16, 16}, 8), h2 = test::random_tensor({1, 2, 16, 16}, 9);
    const block_site s3{unet_stage::input, 3, 2}, s5{unet_stage::input, 5, 2};
    // batched prompts: both passes resize at block 3 before either result is used
    const auto c3 = cond.apply_input_block_after_skip(s3, h1.as<4>());
    const auto u3 = uncond.apply_input_block_after_skip(s3, h2.as<4>());
    CHECK(c3.data_handle() != u3.data_handle());
    CHECK(test::bit_equal(tensor<float>::copy_of(c3), resized<4>(h1, {1, 2, 8, 8}, resize_method::bicubic)));
    CHECK(test::bit_equal(tensor<float>::copy_of(u3), resized<4>(h2, {1, 2, 8, 8}, resize_method::bicubic)));
    // the second patch resizes the first one's result at block 5 into its own buffer
    const auto c5 = cond.apply_input_block_after_skip(s5, c3);
    CHECK(c5.extents() == std::array<index_t, 4>{1, 2, 4, 4});
    CHECK(test::bit_equal(tensor<float>::copy_of(c5), resized<4>(resized<4>(h1, {1, 2, 8, 8}, resize_method::bicubic), {1, 2, 4, 4},
                                                        resize_method::area)));
    // nothing runs before the skip
    CHECK(cond.apply_input_block(s3, h1.as<4>()).data_handle() == h1.data());
}

TEST_CASE("deep_shrink: no allocation after the first step", "[deep_shrink][alloc]") {
    for (resize_method m : all_methods) {
        deep_shrink p;
        p.downscale_method = m;
        p.upscale_method = m;
        shrink_model model({1, 4, 24, 20});
        patch_chain<shrink_model> chain(model, model_sampling::discrete("eps"));
        chain.add(p);
        auto run = chain.begin_run();
        const tensor<float> x = test::random_tensor({1, 4, 24, 20}, 10);
        tensor<float> out({1, 4, 24, 20}), sigma({1});
        sigma[0] = 10.f;
        const step_inputs<float, 4> st{x.as<4>(), sigma.as<1>(), 1.0};
        chain.denoise(run, st, out.as<4>()); // the arena and the results grow once
        const test::allocation_counter counter;
        for (int i = 0; i < 3; ++i) chain.denoise(run, st, out.as<4>());
        CHECK(counter.count() == 0);
        CHECK(model.deep_h == 12);
    }
}

TEST_CASE("deep_shrink: bad input is refused, naming the patch and the argument", "[deep_shrink]") {
    deep_shrink p;
    p.downscale_factor = 0.05;
    CHECK(test::error_of([&] { validate(p); }) ==
          "PatchModelAddDownscale: parameter 'downscale_factor' must be a finite value in [0.1, 9], got 0.05");
    p.downscale_factor = 2.0;
    p.block_number = 0;
    CHECK(test::error_of([&] { validate(p); }).find("parameter 'block_number'") != std::string::npos);
    CHECK(test::error_of([] { (void)deep_shrink::method_from("lanczos", "upscale_method"); }) ==
          "PatchModelAddDownscale: parameter 'upscale_method' must be one of bicubic, nearest-exact, bilinear, area, "
          "bislerp, got 'lanczos'");
    CHECK(deep_shrink::method_from("nearest-exact", "downscale_method") == resize_method::nearest_exact);
    const deep_shrink d;
    workspace store;
    tensor<float> h3 = test::random_tensor({4, 8, 8}, 11);
    CHECK(test::error_of([&] { d.input_block_patch<float, 3>(block_site{unet_stage::input, 3, 8}, h3.as<3>(), store); }) ==
          "PatchModelAddDownscale: argument 'h' must be 4-D (B, C, H, W) or 5-D (B, C, T, H, W), got shape (4, 8, 8)");
    deep_shrink three;
    three.downscale_factor = 3.0;
    tensor<float> thin = test::random_tensor({1, 2, 6, 1}, 12);
    CHECK(test::error_of([&] { three.input_block_patch<float, 4>(block_site{unet_stage::input, 3, 2}, thin.as<4>(), store); }) ==
          "PatchModelAddDownscale: parameter 'downscale_factor' 3 shrinks h's width 1 to 0 (round(1 / 3))");
    tensor<float> empty({1, 2, 0, 4});
    CHECK(test::error_of([&] { d.input_block_patch<float, 4>(block_site{unet_stage::input, 3, 2}, empty.as<4>(), store); })
              .find("PatchModelAddDownscale: ") == 0);
    tensor<float> a({1, 2, 4, 4}), b({2, 2, 2, 2});
    CHECK(test::error_of([&] { kernels::resize<float, 4>(a.as<4>(), b.as<4>(), resize_method::area); }).find("kernels::resize") == 0);
    // the members' defaults are the descriptor's
    const auto w = with_defaults<deep_shrink>();
    CHECK(to_string(w) == to_string(deep_shrink{}));
    CHECK(to_string(w) == "PatchModelAddDownscale(block_number=3, downscale_factor=2, start_percent=0, end_percent=0.35, "
                          "downscale_after_skip=True, downscale_method=bicubic, upscale_method=bicubic)");
    // a model without input-block hooks is refused when the run begins
    no_input_hooks_model m;
    patch_chain<no_input_hooks_model> chain(m, model_sampling::discrete("eps"));
    chain.add(d);
    CHECK(test::error_of([&] { (void)chain.begin_run(); }) ==
          "patch_chain::begin_run: patch 'PatchModelAddDownscale' needs input-block hooks, which the model does not support");
}

TEST_CASE("deep_shrink: imported from a ComfyUI workflow, its window its own inputs", "[deep_shrink][workflow]") {
    const auto text = [](const std::string& method) {
        return R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
          "10": {"class_type": "PatchModelAddDownscale", "inputs": {"model": ["4", 0], "block_number": 4,
                 "downscale_factor": 1.5, "start_percent": 0.1, "end_percent": 0.5, "downscale_after_skip": false,
                 "downscale_method": ")" + method + R"(", "upscale_method": "nearest-exact"}},
          "3": {"class_type": "KSampler", "inputs": {"model": ["10", 0], "cfg": 5.0}}})";
    };
    const auto wf = comfy::parse_workflow_text(text("bislerp"));
    REQUIRE(wf.patches.size() == 1);
    const auto& p = wf.patches[0].config.as<deep_shrink>();
    CHECK(p.block_number == 4);
    CHECK(p.downscale_factor == 1.5);
    CHECK(p.start_percent == 0.1);
    CHECK(p.end_percent == 0.5);
    CHECK_FALSE(p.downscale_after_skip);
    CHECK(p.downscale_method == resize_method::bislerp);
    CHECK(p.upscale_method == resize_method::nearest_exact);
    CHECK(wf.patches[0].window.is_full()); // the node's own inputs, not a second window
    CHECK_THROWS_WITH(comfy::parse_workflow_text(text("lanczos")),
                      Catch::Contains("PatchModelAddDownscale") && Catch::Contains("downscale_method") &&
                          Catch::Contains("lanczos"));
}

} // namespace test_patches_block_deep_shrink
