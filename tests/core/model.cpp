// Tests of core/model.hpp: callback, call_overrides (order, capacity, attention site
// matching), the Model concept and capability queries.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "patchbay/core/model.hpp"
#include "patchbay/core/tensor.hpp"
#include "toy_gaussian.hpp"

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
    ov.apply_output_block(block_site{unet_stage::output, 3, 2}, h.as<4>(), hsp.as<4>());
    CHECK(order == std::vector<int>{1, 2});
    CHECK(h[0] == 6.f);
    CHECK(hsp[7] == -1.f);
    ov.clear();
    CHECK(ov.empty());
}

TEST_CASE("call_overrides: capacity is enforced with an error", "[model]") {
    auto noop = [](const block_site&, view<float, 4>, view<float, 4>) {};
    call_overrides<float> ov;
    for (std::size_t i = 0; i < call_overrides<float>::capacity; ++i)
        ov.add_output_block(call_overrides<float>::output_block_fn::to(noop));
    CHECK_THROWS_AS(ov.add_output_block(call_overrides<float>::output_block_fn::to(noop)), error);
    CHECK_THROWS_AS(ov.add_output_block({}), error);
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
