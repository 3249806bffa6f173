// patchbay's own start_percent / end_percent inputs on guidance nodes of a workflow.
#include <catch2/catch.hpp>

#include <string>

#include "patchbay/comfy/workflow.hpp"

namespace test_comfy_workflow_windows {

using namespace patchbay;

namespace {
std::string with_apg(const std::string& extra) {
    return R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
      "10": {"class_type": "APG", "inputs": {"model": ["4", 0], "eta": 1.0, "norm_threshold": 5.0, "momentum": 0.0)" +
           extra + R"(}},
      "11": {"class_type": "DifferentialDiffusion", "inputs": {"model": ["10", 0]}},
      "3": {"class_type": "KSampler", "inputs": {"model": ["11", 0], "cfg": 5.0}}})";
}
} // namespace

TEST_CASE("a guidance node takes patchbay's window inputs", "[workflow][window]") {
    const auto wf = comfy::parse_workflow_text(with_apg(R"(, "start_percent": 0.2, "end_percent": 0.5)"));
    REQUIRE(wf.patches.size() == 2);
    CHECK(wf.patches[0].window.start_percent == 0.2);
    CHECK(wf.patches[0].window.end_percent == 0.5);
    CHECK(wf.patches[1].window.is_full());
    CHECK(wf.describe().find("APG(eta=1, norm_threshold=5, momentum=0) window 0.2..0.5") != std::string::npos);
    const auto plain = comfy::parse_workflow_text(with_apg(""));
    CHECK(plain.patches[0].window.is_full());
}

TEST_CASE("window inputs are range-checked and refused on the mask function", "[workflow][window]") {
    try {
        (void)comfy::parse_workflow_text(with_apg(R"(, "end_percent": 1.5)"));
        FAIL("end_percent 1.5 must be refused");
    } catch (const error& e) {
        CHECK(std::string(e.what()).find("workflow node '10' (APG): input 'end_percent' must be in [0, 1], got 1.5") !=
              std::string::npos);
    }
    const std::string dd = R"({"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}},
      "11": {"class_type": "DifferentialDiffusion", "inputs": {"model": ["4", 0], "start_percent": 0.1}},
      "3": {"class_type": "KSampler", "inputs": {"model": ["11", 0], "cfg": 5.0}}})";
    CHECK_THROWS_WITH(comfy::parse_workflow_text(dd), Catch::Contains("unknown input 'start_percent'"));
}

} // namespace test_comfy_workflow_windows
