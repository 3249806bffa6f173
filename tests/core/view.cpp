// Tests for core/view.hpp and core/tensor.hpp: accessors, slices, and the shape checks that
// raise patchbay::error naming the argument.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"
#include "test_util.hpp"

namespace test_core_view {

using namespace patchbay;

namespace {
std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const patchbay::error& e) {
        return e.what();
    }
    return "(no error)";
}
} // namespace

TEST_CASE("view accessors follow mdspan's names", "[core][view]") {
    tensor<float> t({2, 3, 4, 5});
    for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(i);
    auto v = t.as<4>();
    CHECK(v.rank() == 4);
    CHECK(v.extent(1) == 3);
    CHECK(v.stride(0) == 60);
    CHECK(v.size() == 120);
    CHECK(v.is_contiguous());
    CHECK(v(1, 2, 3, 4) == 119.f);
    const auto b = v.batch_slice(1, 1);
    CHECK(b(0, 0, 0, 0) == 60.f);
    const auto c = v.channel_slice(1, 2);
    CHECK_FALSE(c.is_contiguous());
    CHECK(c(0, 1, 0, 0) == 40.f);
    view<const float, 4> cv = v; // mutable converts to const
    CHECK(cv.data_handle() == v.data_handle());
}

TEST_CASE("shape checks name the argument and the expectation", "[core][view]") {
    tensor<float> a({2, 4, 8, 8}), b({2, 4, 8, 9}), c({3, 4, 8, 8});
    CHECK(message_of([&] { require_same_shape(a.as<4>(), b.as<4>(), "RescaleCFG", "cond", "uncond"); })
              .find("'uncond' has shape (2, 4, 8, 9) but must match 'cond' (2, 4, 8, 8)") != std::string::npos);
    CHECK(message_of([&] { require_same_shape(a.as<4>(), c.as<4>(), "APG", "cond", "uncond"); })
              .find("batch sizes differ") != std::string::npos);
    tensor<float> sigma({3});
    CHECK(message_of([&] { require_batch_vector(sigma.as<1>(), a.as<4>(), "APG", "sigma"); })
              .find("one value per batch item (2), got 3") != std::string::npos);
    view<float, 4> empty(a.data(), {0, 4, 8, 8});
    CHECK(message_of([&] { require_nonempty(empty, "CFGNorm", "x"); }).find("'x' is empty") != std::string::npos);
    CHECK(message_of([] { require_finite(std::nan(""), "APG", "sigma"); }).find("'sigma' must be finite") != std::string::npos);
    CHECK(message_of([] { require_finite(std::numeric_limits<double>::infinity(), "APG", "cond_scale"); }) != "(no error)");
    CHECK(message_of([] { require_range(1.5, -5, 1, "APG", "momentum"); })
              .find("'momentum' must be a finite value in [-5, 1], got 1.5") != std::string::npos);
    CHECK(message_of([] { require_range(std::nan(""), 0, 1, "X", "p"); }) != "(no error)");
    CHECK_THROWS_AS(a.as<5>(), patchbay::error); // wrong rank
}

TEST_CASE("overlap checks allow exact aliasing only", "[core][view]") {
    tensor<float> a({1, 2, 4, 4});
    auto v = a.as<4>();
    CHECK_NOTHROW(require_no_partial_overlap(v, view<const float, 4>(v), "k", "out", "in"));
    view<float, 4> shifted(a.data() + 1, {1, 2, 4, 3}, {32, 16, 4, 1});
    view<float, 4> base(a.data(), {1, 2, 4, 3}, {32, 16, 4, 1});
    CHECK_THROWS_AS(require_no_partial_overlap(shifted, view<const float, 4>(base), "k", "out", "in"), patchbay::error);
    tensor<float> other({1, 2, 4, 4});
    CHECK_NOTHROW(require_no_partial_overlap(v, view<const float, 4>(other.as<4>()), "k", "out", "in"));
    view<float, 4> broadcast(a.data(), {1, 2, 4, 4}, {32, 16, 0, 1}); // rows alias each other
    CHECK_THROWS_AS(require_writable_layout(broadcast, "k", "out"), patchbay::error);
    CHECK_NOTHROW(require_writable_layout(v, "k", "out"));
}

TEST_CASE("tensor copies strided views and keeps storage on shrink", "[core][tensor]") {
    auto t = test::random_tensor({1, 2, 3, 4}, 1);
    view<const float, 4> transposed(t.data(), {1, 2, 4, 3}, {24, 12, 1, 4});
    const auto packed = tensor<float>::copy_of(transposed);
    CHECK(packed.shape() == std::vector<index_t>{1, 2, 4, 3});
    CHECK(packed.as<4>()(0, 1, 3, 2) == t.as<4>()(0, 1, 2, 3));
    tensor<float> w({1, 2, 3, 4});
    const float* before = w.data();
    w.resize({1, 2, 2, 2});
    CHECK(w.data() == before); // no reallocation when shrinking: workspaces reuse storage
    tensor<float> copy = packed;
    CHECK(test::bit_equal(copy, packed));
}

} // namespace test_core_view
