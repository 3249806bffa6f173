// The node table in docs/workflow_import.md is generated from the descriptors: this test fails
// (and prints the current table) when a descriptor changes and the docs were not regenerated.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>

#include "patchbay/comfy/workflow.hpp"

namespace test_comfy_node_table {

using namespace patchbay;

TEST_CASE("docs/workflow_import.md's node table is the descriptors' table", "[workflow][docs]") {
    const std::string path = std::string(PATCHBAY_GOLDEN_DIR) + "/../../../docs/workflow_import.md";
    std::ifstream in(path);
    REQUIRE(in.good());
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string doc = ss.str();
    const std::string begin = "<!-- node-table:begin (generated from the descriptors) -->\n";
    const std::string end = "<!-- node-table:end -->";
    const auto a = doc.find(begin), b = doc.find(end);
    REQUIRE(a != std::string::npos);
    REQUIRE(b != std::string::npos);
    const std::string in_docs = doc.substr(a + begin.size(), b - a - begin.size());
    const std::string generated = comfy::node_table_markdown(comfy::builtin_node_classes());
    INFO("regenerate the table in docs/workflow_import.md with:\n" << generated);
    CHECK(in_docs == generated);
}

TEST_CASE("every built-in node class describes its inputs", "[workflow][docs]") {
    for (const auto& c : comfy::builtin_node_classes()) {
        REQUIRE(c.patch != nullptr);
        CHECK(c.patch->class_type == c.class_type);
        CHECK(!c.patch->display_name.empty());
    }
    CHECK(comfy::describe_input(input_info{"eta", input_kind::floating, 1.0, -10.0, 10.0}) == "eta 1 [-10, 10]");
}

} // namespace test_comfy_node_table
