// Tests for the strict .npy reader used by the conformance runner: round trips, and
// malformed or truncated files give patchbay::error, never a crash.
#include <catch2/catch.hpp>

#include "npy.hpp"

namespace test_support_npy_test {

using namespace patchbay;

namespace {
// Rebuilds the string instead of std::string::replace, which trips a false g++ 12
// -Wrestrict warning at -O3.
std::string swap_text(const std::string& s, const std::string& from, const std::string& to) {
    const auto pos = s.find(from);
    REQUIRE(pos != std::string::npos);
    return s.substr(0, pos) + to + s.substr(pos + from.size());
}
} // namespace

TEST_CASE("npy round trip of float32, float64 and int64", "[npy]") {
    npy::array a;
    a.type = npy::dtype::f4;
    a.shape = {2, 3};
    a.values = {1, 2, 3, 4.5, -5, 6};
    const auto b = npy::parse(npy::serialize(a));
    CHECK(b.shape == a.shape);
    CHECK(b.values == a.values);
    a.type = npy::dtype::f8;
    a.values[0] = 0.1;
    CHECK(npy::parse(npy::serialize(a)).values[0] == 0.1);
    a.type = npy::dtype::i8;
    a.values = {1, -2, 3, 4, 5, 999};
    a.shape = {6};
    const auto c = npy::parse(npy::serialize(a));
    CHECK(c.ints[5] == 999);
    CHECK(c.shape == std::vector<index_t>{6});
}

TEST_CASE("npy reads a golden file", "[npy]") {
    const auto s = npy::load(std::string(PATCHBAY_GOLDEN_DIR) + "/APG/default/in_sigma.npy");
    CHECK(s.type == npy::dtype::f4);
    CHECK(s.shape.size() == 1);
}

TEST_CASE("malformed npy files are rejected with patchbay::error", "[npy]") {
    npy::array a;
    a.shape = {4};
    a.values = {1, 2, 3, 4};
    const std::string good = npy::serialize(a);
    CHECK_THROWS_AS(npy::parse(""), patchbay::error);
    CHECK_THROWS_AS(npy::parse("hello world, not npy"), patchbay::error);
    for (std::size_t cut : {5u, 9u, 20u, 60u, static_cast<unsigned>(good.size() - 1)})
        CHECK_THROWS_AS(npy::parse(good.substr(0, cut)), patchbay::error);
    CHECK_THROWS_AS(npy::parse(swap_text(good, "<f4", "<f2")), patchbay::error);
    CHECK_THROWS_AS(npy::parse(swap_text(good, "False", "True ")), patchbay::error);
    CHECK_THROWS_AS(npy::parse(swap_text(good, "(4,)", "(99999999999999,)")), patchbay::error);
    CHECK_THROWS_AS(npy::parse(swap_text(good, "(4,)", "(x4,)")), patchbay::error);
    CHECK_THROWS_AS(npy::parse(swap_text(good, "(4,)", "(5,)")), patchbay::error); // data too short
    // found by fuzzing: a shape that is not a tuple once read past the end of the header
    CHECK_THROWS_AS(npy::parse(swap_text(good, "(4,)", "")), patchbay::error);
    CHECK_THROWS_AS(npy::parse(swap_text(good, "(4,)", "'x'")), patchbay::error);
    CHECK_THROWS_AS(npy::load("/nonexistent/file.npy"), patchbay::error);
}

} // namespace test_support_npy_test
