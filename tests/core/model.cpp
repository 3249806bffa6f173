// Tests of core/model.hpp: callback, call_overrides (order, capacity, attention site
// matching, input-block / resizing output-block / attention-output hooks, block skips), the
// Model concept and capability queries.
#include <catch2/catch.hpp>

#include <span>
#include <string>
#include <vector>

#include "patchbay/core/model.hpp"
#include "patchbay/core/tensor.hpp"
#include "toy_gaussian.hpp"

namespace test_core_model {

using namespace patchbay;

namespace {

struct plain_model {
    template <class T, std::size_t R>
    void predict(const model_call<void, T, R>&, view<T, R>) {}
};
struct hooked_model {
    static constexpr bool calls_block_hooks = true;
    static constexpr bool calls_attention_hooks = true;
    template <class T, std::size_t R>
    void predict(const model_call<void, T, R>&, view<T, R>) {}
};
struct runtime_model {
    bool attention = false;
    bool supports(capability c) const { return c == capability::attention_hooks && attention; }
    template <class T, std::size_t R>
    void predict(const model_call<void, T, R>&, view<T, R>) {}
};
struct network_hooks_model {
    static constexpr bool calls_input_block_hooks = true;
    static constexpr bool calls_attention_output_hooks = true;
    static constexpr bool skips_blocks = true;
    template <class T, std::size_t R>
    void predict(const model_call<void, T, R>&, view<T, R>) {}
};
struct not_a_model {
    void run() {}
};

} // namespace

TEST_CASE("Model concept and conditioning type", "[model]") {
    STATIC_REQUIRE(diffusion_model<plain_model, float, 4>);
    STATIC_REQUIRE(diffusion_model<plain_model, double, 5>);
    STATIC_REQUIRE(!diffusion_model<not_a_model, float, 4>);
    STATIC_REQUIRE(diffusion_model<examples::toy_gaussian, float, 4>);
    STATIC_REQUIRE(std::is_same_v<conditioning_t<plain_model>, void>);
    STATIC_REQUIRE(std::is_same_v<conditioning_t<const examples::toy_gaussian>, examples::toy_prompt>);
}

TEST_CASE("capabilities: compile-time declarations and run-time answers", "[model]") {
    STATIC_REQUIRE(!block_hookable<plain_model>);
    STATIC_REQUIRE(!attention_hookable<plain_model>);
    STATIC_REQUIRE(block_hookable<hooked_model>);
    STATIC_REQUIRE(attention_hookable<const hooked_model>);
    STATIC_REQUIRE(runtime_capabilities<runtime_model>);
    CHECK_FALSE(model_supports(plain_model{}, capability::block_hooks));
    CHECK(model_supports(hooked_model{}, capability::attention_hooks));
    runtime_model rm;
    CHECK_FALSE(model_supports(rm, capability::attention_hooks));
    rm.attention = true;
    CHECK(model_supports(rm, capability::attention_hooks));
    CHECK_FALSE(model_supports(rm, capability::block_hooks));
    // the network hooks the coming patches need (Deep Shrink, NAG, SLG)
    for (capability c : {capability::input_block_hooks, capability::attention_output_hooks, capability::block_skipping}) {
        CHECK(model_supports(network_hooks_model{}, c));
        CHECK_FALSE(model_supports(hooked_model{}, c));
        CHECK_FALSE(model_supports(rm, c));
    }
    CHECK_FALSE(model_supports(network_hooks_model{}, capability::block_hooks));
    CHECK(std::string(capability_name(capability::block_skipping)) == "block skipping");
}

TEST_CASE("callback refers to a callable or a function with a context", "[model]") {
    int total = 0;
    auto add = [&](int v) { total += v; };
    const auto cb = callback<void(int)>::to(add);
    cb(3);
    cb(4);
    CHECK(total == 7);
    CHECK(static_cast<bool>(cb));
    CHECK_FALSE(static_cast<bool>(callback<void(int)>{}));

    int ctx_value = 10;
    const callback<int(int)> plain([](void* c, int v) { return *static_cast<int*>(c) + v; }, &ctx_value);
    CHECK(plain(5) == 15);
}

TEST_CASE("call_overrides: output-block hooks run in order, in place", "[model]") {
    tensor<float> h({1, 2, 2, 2}), hsp({1, 2, 2, 2});
    h.fill(1.f);
    hsp.fill(1.f);
    std::vector<int> order;
    auto first = [&](const block_site& s, view<float, 4> hv, view<float, 4>) {
        order.push_back(1);
        CHECK(s.channels == 2);
        hv(0, 0, 0, 0) += 1.f;
    };
    auto second = [&](const block_site&, view<float, 4> hv, view<float, 4> sv) {
        order.push_back(2);
        hv(0, 0, 0, 0) *= 3.f; // sees the first hook's change
        sv(0, 1, 1, 1) = -1.f;
    };
    call_overrides<float> ov;
    CHECK(ov.empty());
    ov.add_output_block(call_overrides<float>::output_block_fn::to(first));
    ov.add_output_block(call_overrides<float>::output_block_fn::to(second));
    CHECK(ov.has_output_block_hooks());
    const view<float, 4> next = ov.apply_output_block(block_site{unet_stage::output, 3, 2}, h.as<4>(), hsp.as<4>());
    CHECK(next.data_handle() == h.data()); // in-place hooks: the model continues with h itself
    CHECK(order == std::vector<int>{1, 2});
    CHECK(h[0] == 6.f);
    CHECK(hsp[7] == -1.f);
    ov.clear();
    CHECK(ov.empty());
}

TEST_CASE("call_overrides: capacity is enforced with an error", "[model]") {
    auto noop = [](const block_site&, view<float, 4>, view<float, 4>) {};
    auto same = [](const block_site&, view<float, 4> h, view<float, 4>) { return h; };
    using block_fn = call_overrides<float>::output_block_fn;
    using resize_fn = call_overrides<float>::output_resize_fn;
    call_overrides<float> ov;
    // in-place and resizing output-block hooks share the capacity
    for (std::size_t i = 0; i < call_overrides<float>::capacity; ++i) {
        if (i % 2) ov.add_output_block(block_fn::to(noop));
        else ov.add_output_resize(resize_fn::to(same));
    }
    CHECK_THROWS_AS(ov.add_output_block(block_fn::to(noop)), error);
    CHECK_THROWS_AS(ov.add_output_resize(resize_fn::to(same)), error);
    CHECK_THROWS_AS(call_overrides<float>{}.add_output_block({}), error);
    CHECK_THROWS_AS(call_overrides<float>{}.add_output_resize({}), error);
}

TEST_CASE("call_overrides: attention replacement precedence and readers", "[model]") {
    int which = 0;
    auto exact = [&](const attention_site&, const attention_tensors<float>&, view<float, 3>) { which = 1; };
    auto wildcard = [&](const attention_site&, const attention_tensors<float>&, view<float, 3>) { which = 2; };
    auto later = [&](const attention_site&, const attention_tensors<float>&, view<float, 3>) { which = 3; };
    using rep = call_overrides<float>::attention_replace_fn;
    call_overrides<float> ov;
    ov.replace_attention({unet_stage::middle, 0, -1}, rep::to(wildcard));
    ov.replace_attention({unet_stage::middle, 0, 0}, rep::to(exact));
    const attention_tensors<float> qkv{};
    tensor<float> o({1, 1, 1});
    // an exact site beats the every-transformer pattern, whatever the order of registration
    ov.attention_replacement({unet_stage::middle, 0, 0})(attention_site{unet_stage::middle, 0, 0}, qkv, o.as<3>());
    CHECK(which == 1);
    ov.attention_replacement({unet_stage::middle, 0, 1})(attention_site{unet_stage::middle, 0, 1}, qkv, o.as<3>());
    CHECK(which == 2);
    CHECK_FALSE(static_cast<bool>(ov.attention_replacement({unet_stage::input, 0, 0})));
    CHECK_FALSE(static_cast<bool>(ov.attention_replacement({unet_stage::middle, 1, 0})));
    // a second replacement of the same site overwrites the first
    ov.replace_attention({unet_stage::middle, 0, 0}, rep::to(later));
    ov.attention_replacement({unet_stage::middle, 0, 0})(attention_site{unet_stage::middle, 0, 0}, qkv, o.as<3>());
    CHECK(which == 3);

    int reads = 0;
    index_t seen_heads = 0;
    auto reader = [&](const attention_site&, view<const float, 3> p, index_t heads) {
        ++reads;
        seen_heads = heads;
        CHECK(p(0, 0, 0) == 0.5f);
    };
    ov.read_attention({unet_stage::middle, 0, 0}, call_overrides<float>::attention_read_fn::to(reader));
    CHECK(ov.reads_attention({unet_stage::middle, 0, 0}));
    CHECK_FALSE(ov.reads_attention({unet_stage::middle, 0, 1}));
    tensor<float> probs({2, 1, 1});
    probs.fill(0.5f);
    ov.on_attention_probabilities({unet_stage::middle, 0, 1}, probs.as<3>(), 2);
    CHECK(reads == 0);
    ov.on_attention_probabilities({unet_stage::middle, 0, 0}, probs.as<3>(), 2);
    CHECK(reads == 1);
    CHECK(seen_heads == 2);
}

TEST_CASE("call_overrides::append keeps order and overwrites replacements", "[model]") {
    std::vector<int> order;
    auto a = [&](const block_site&, view<float, 4>, view<float, 4>) { order.push_back(1); };
    auto b = [&](const block_site&, view<float, 4>, view<float, 4>) { order.push_back(2); };
    call_overrides<float> base, extra;
    base.add_output_block(call_overrides<float>::output_block_fn::to(a));
    extra.add_output_block(call_overrides<float>::output_block_fn::to(b));
    base.append(extra);
    tensor<float> h({1, 1, 1, 1});
    base.apply_output_block({}, h.as<4>(), h.as<4>());
    CHECK(order == std::vector<int>{1, 2});
}

TEST_CASE("call_overrides: a resizing output-block hook hands the next hook and the model its h", "[model]") {
    tensor<float> small({1, 1, 1, 2}), big({1, 1, 2, 2}), hsp({1, 1, 2, 2});
    small.fill(1.f);
    hsp.fill(0.f);
    std::vector<int> order;
    auto before = [&](const block_site&, view<float, 4> h, view<float, 4>) {
        order.push_back(1);
        CHECK(h.extent(2) == 1);
        h(0, 0, 0, 1) = 2.f;
    };
    // nearest-neighbour to hsp's spatial size, into storage the "run" owns
    auto resize = [&](const block_site&, view<float, 4> h, view<float, 4> s) -> view<float, 4> {
        order.push_back(2);
        view<float, 4> out = big.as<4>();
        REQUIRE(out.extent(2) == s.extent(2));
        for (index_t y = 0; y < 2; ++y)
            for (index_t x = 0; x < 2; ++x) out(0, 0, y, x) = h(0, 0, 0, x);
        return out;
    };
    auto after = [&](const block_site&, view<float, 4> h, view<float, 4>) {
        order.push_back(3);
        CHECK(h.extent(2) == 2); // sees the resized h
        h(0, 0, 1, 1) += 10.f;
    };
    call_overrides<float> ov;
    ov.add_output_block(call_overrides<float>::output_block_fn::to(before));
    ov.add_output_resize(call_overrides<float>::output_resize_fn::to(resize));
    ov.add_output_block(call_overrides<float>::output_block_fn::to(after));
    CHECK(ov.has_output_block_hooks());
    const view<float, 4> h = ov.apply_output_block({}, small.as<4>(), hsp.as<4>());
    CHECK(order == std::vector<int>{1, 2, 3});
    CHECK(h.data_handle() == big.data());
    CHECK(big[0] == 1.f);
    CHECK(big[1] == 2.f);
    CHECK(big[2] == 1.f);
    CHECK(big[3] == 12.f);
}

TEST_CASE("call_overrides: input-block hooks chain, each on the previous h", "[model]") {
    tensor<float> a({1, 1, 2, 2}), b({1, 1, 1, 1});
    a.fill(3.f);
    auto shrink = [&](const block_site& site, view<float, 4> h) -> view<float, 4> {
        CHECK(site.stage == unet_stage::input);
        b[0] = h(0, 0, 0, 0) + h(0, 0, 1, 1); // the sum of two corners, at a quarter of the size
        return b.as<4>();
    };
    auto twice = [](const block_site&, view<float, 4> h) -> view<float, 4> {
        h(0, 0, 0, 0) *= 2.f;
        return h;
    };
    call_overrides<float> ov;
    CHECK_FALSE(ov.has_input_block_hooks());
    const view<float, 4> same = ov.apply_input_block(block_site{unet_stage::input, 1, 1}, a.as<4>());
    CHECK(same.data_handle() == a.data()); // no hooks: h unchanged
    ov.add_input_block(call_overrides<float>::input_block_fn::to(shrink));
    ov.add_input_block(call_overrides<float>::input_block_fn::to(twice));
    CHECK(ov.has_input_block_hooks());
    CHECK_FALSE(ov.empty());
    const view<float, 4> h = ov.apply_input_block(block_site{unet_stage::input, 1, 1}, a.as<4>());
    CHECK(h.data_handle() == b.data());
    CHECK(h.extent(3) == 1);
    CHECK(b[0] == 12.f);
    CHECK(a[0] == 3.f); // the original h is untouched
    CHECK_THROWS_AS(ov.add_input_block({}), error);
}

TEST_CASE("call_overrides: input-block hooks run before or after the skip connection", "[model]") {
    tensor<float> a({1, 1, 2, 2});
    a.fill(1.f);
    std::vector<int> order;
    auto first = [&](const block_site&, view<float, 4> h) -> view<float, 4> { order.push_back(1); return h; };
    auto second = [&](const block_site&, view<float, 4> h) -> view<float, 4> { order.push_back(2); return h; };
    auto third = [&](const block_site&, view<float, 4> h) -> view<float, 4> { order.push_back(3); return h; };
    call_overrides<float> ov;
    ov.add_input_block(call_overrides<float>::input_block_fn::to(first), input_block_point::after_skip);
    ov.add_input_block(call_overrides<float>::input_block_fn::to(second));
    ov.add_input_block(call_overrides<float>::input_block_fn::to(third), input_block_point::after_skip);
    const block_site site{unet_stage::input, 3, 1};
    ov.apply_input_block(site, a.as<4>());
    CHECK(order == std::vector<int>{2});
    ov.apply_input_block_after_skip(site, a.as<4>());
    CHECK(order == std::vector<int>{2, 1, 3});
    call_overrides<float> copy; // append keeps each hook's point
    copy.append(ov);
    order.clear();
    copy.apply_input_block_after_skip(site, a.as<4>());
    CHECK(order == std::vector<int>{1, 3});
}

TEST_CASE("call_overrides: attention-output hooks match sites; block skips are a set", "[model]") {
    std::vector<int> seen;
    std::vector<pass_kind> prompts_seen;
    auto every = [&](const attention_site&, view<float, 3> out, std::span<const pass_kind> prompts) {
        seen.push_back(1);
        out(0, 0, 0) += 1.f;
        prompts_seen.assign(prompts.begin(), prompts.end());
    };
    auto only_1 = [&](const attention_site& s, view<float, 3>, std::span<const pass_kind>) {
        CHECK(s.transformer == 1);
        seen.push_back(2);
    };
    using fn = call_overrides<float>::attention_output_fn;
    call_overrides<float> ov;
    ov.add_attention_output({unet_stage::middle, 0, -1}, fn::to(every));
    ov.add_attention_output({unet_stage::middle, 0, 1}, fn::to(only_1));
    CHECK(ov.has_attention_output_hooks());
    tensor<float> out({2, 1, 1});
    const pass_kind prompts[] = {pass_kind::cond, pass_kind::uncond};
    ov.apply_attention_output({unet_stage::middle, 0, 0}, out.as<3>(), prompts);
    CHECK(seen == std::vector<int>{1});
    ov.apply_attention_output({unet_stage::middle, 0, 1}, out.as<3>(), prompts);
    CHECK(seen == std::vector<int>{1, 1, 2});
    ov.apply_attention_output({unet_stage::output, 0, 1}, out.as<3>(), prompts);
    CHECK(seen.size() == 3);
    CHECK(out[0] == 2.f);
    CHECK(prompts_seen == std::vector<pass_kind>{pass_kind::cond, pass_kind::uncond});

    const dit_block_site d1{dit_block_site::kind::double_block, 1}, s1{dit_block_site::kind::single_block, 1};
    CHECK_FALSE(ov.skips(d1));
    ov.skip_block(d1);
    ov.skip_block(d1); // a second request for the same block is the same request
    CHECK(ov.skips(d1));
    CHECK_FALSE(ov.skips(s1));
    call_overrides<float> many;
    for (int i = 0; i < 64; ++i) many.skip_block({dit_block_site::kind::single_block, i});
    many.skip_block({dit_block_site::kind::single_block, 5}); // already there: no capacity used
    CHECK_THROWS_AS(many.skip_block({dit_block_site::kind::double_block, 0}), error);

    // append carries every kind of hook
    call_overrides<float> merged;
    merged.append(ov);
    CHECK(merged.has_attention_output_hooks());
    CHECK(merged.skips(d1));
    merged.clear();
    CHECK(merged.empty());
}

TEST_CASE("model_access rejects a re-evaluation prompt that is not cond or uncond", "[model]") {
    int calls = 0;
    auto eval = [&](pass_kind, view<const float, 4>, view<float, 4>, const call_overrides<float>*) { ++calls; };
    model_access<float, 4> access(model_access<float, 4>::evaluate_fn::to(eval));
    tensor<float> x({1, 1, 1, 1}), out({1, 1, 1, 1});
    access.evaluate(pass_kind::uncond, x.as<4>(), out.as<4>());
    CHECK(calls == 1);
    CHECK_THROWS_AS(access.evaluate(pass_kind::reevaluation, x.as<4>(), out.as<4>()), error);
    CHECK(calls == 1);
}

} // namespace test_core_model
