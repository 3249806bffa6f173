// patchbay conformance runner: runs every golden case under a directory and compares each
// output with ComfyUI's recorded one. One line per case, then "N passed, M failed".
//
// usage: conformance DIR [--only PATCH[,PATCH...]] [--registered-patches-only] [--batched-passes]
//                        [--storage f16|bf16] [--verbose]
//
// --batched-passes: the models of the end-to-end (and guider.predict_noise) cases declare
// predict_batch, so the guider evaluates the prompts of each step in one call. Every case must
// pass as without it; a case that made batched calls is run once more one call per prompt and
// its outputs must be the same bit for bit. The runner prints how many cases ran batched.
// --storage checks the half-precision storage path instead of the golden outputs (storage.hpp):
// single hook calls of the cfg stage, the block and attention hooks and the attention functions;
// end-to-end cases, sequences and other
// kinds are skipped, and the summary says how many and why.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "patchbay/core/isa.hpp"
#include "registry.hpp"
#include "storage.hpp"

namespace fs = std::filesystem;
using namespace patchbay;
using namespace patchbay::conformance;

namespace {

struct verdict {
    bool pass = false;
    bool skipped = false; ///< --storage: the case has no half-storage hook call to check
    std::string detail;
    int batched_calls = 0;   ///< batched model calls the case made
    bool end_to_end = false; ///< an e2e.* case (a whole sampler run)
};

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> v;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) v.push_back(item);
    return v;
}

/// numpy.allclose per element. NaN in the expected output of an equal_nan case means ComfyUI
/// gave NaN from finite input (the golden README's NaN rule): where the float64 companion
/// (`want64`, may be null) is finite there, the value must match it within the tolerance;
/// where both are NaN, patchbay's value must be finite (a unit test pins the limit).
verdict compare(const std::string& name, const npy::array& want, const npy::array* want64,
                const npy::array& got, double rtol, double atol, bool equal_nan, double& worst_ratio) {
    verdict v;
    if (got.shape != want.shape && !(got.size() == want.size() && got.size() == 1)) {
        std::string ws, gs;
        for (auto e : want.shape) ws += std::to_string(e) + ",";
        for (auto e : got.shape) gs += std::to_string(e) + ",";
        v.detail = name + ": shape (" + gs + ") != expected (" + ws + ")";
        return v;
    }
    if (want64 && want64->values.size() != want.values.size()) {
        v.detail = name + ": the float64 companion has another size than the float32 output";
        return v;
    }
    double worst = 0;
    std::size_t worst_i = 0, nan_limit = 0, nan_f64 = 0;
    for (std::size_t i = 0; i < want.values.size(); ++i) {
        double e = want.values[i];
        const double a = got.values[i];
        if (std::isnan(e)) {
            if (!equal_nan) {
                v.detail = name + ": expected NaN at " + std::to_string(i) + " in a case without equal_nan";
                return v;
            }
            if (!std::isfinite(a)) {
                v.detail = name + ": non-finite value at " + std::to_string(i) + " (NaN policy: must be finite)";
                return v;
            }
            if (!want64 || std::isnan(want64->values[i])) {
                ++nan_limit;
                continue;
            }
            e = want64->values[i]; // compare against ComfyUI's float64 run
            ++nan_f64;
        } else if (!std::isfinite(a)) {
            v.detail = name + ": non-finite value at " + std::to_string(i);
            return v;
        }
        const double ratio = std::fabs(a - e) / (atol + rtol * std::fabs(e));
        if (ratio > worst) worst = ratio, worst_i = i;
    }
    worst_ratio = std::max(worst_ratio, worst);
    std::string nan_note;
    if (nan_f64) nan_note += " (" + std::to_string(nan_f64) + " NaN positions checked against float64)";
    if (nan_limit) nan_note += " (" + std::to_string(nan_limit) + " NaN-policy positions finite)";
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s worst %.3g of tolerance at %zu%s", name.c_str(), worst, worst_i,
                  nan_note.c_str());
    v.detail = buf;
    v.pass = worst <= 1.0;
    return v;
}

/// Python's json module writes NaN, Infinity and -Infinity as bare tokens, which JSON (and
/// nlohmann) reject. Parse them as the floating-point values they stand for, so a case with a
/// non-finite parameter reaches the library (which must reject it) instead of the parser.
nlohmann::json parse_case_json(const std::string& text) {
    static const char* const tokens[] = {"-Infinity", "Infinity", "NaN"};
    static const char* const marks[] = {"\"__pb_ninf__\"", "\"__pb_inf__\"", "\"__pb_nan__\""};
    std::string out;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            out += c;
            if (c == '\\' && i + 1 < text.size()) out += text[++i];
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
            out += c;
            continue;
        }
        bool replaced = false;
        for (int k = 0; k < 3 && !replaced; ++k) {
            const std::string tok = tokens[k];
            if (text.compare(i, tok.size(), tok) == 0) {
                out += marks[k];
                i += tok.size() - 1;
                replaced = true;
            }
        }
        if (!replaced) out += c;
    }
    nlohmann::json j = nlohmann::json::parse(out);
    const auto fix = [](auto& self, nlohmann::json& v) -> void {
        if (v.is_string()) {
            const auto& str = v.get_ref<const std::string&>();
            if (str == "__pb_nan__") v = std::numeric_limits<double>::quiet_NaN();
            else if (str == "__pb_inf__") v = std::numeric_limits<double>::infinity();
            else if (str == "__pb_ninf__") v = -std::numeric_limits<double>::infinity();
        } else if (v.is_structured()) {
            for (auto& child : v) self(self, child);
        }
    };
    fix(fix, j);
    return j;
}

/// Run the handler again with one call per prompt: the first output that differs in any bit
/// from the batched run's, or an empty string.
std::string per_prompt_difference(const handler& h, const golden_case& gc, const results& batched) {
    struct restore {
        ~restore() { options().batched_passes = true; }
    } guard;
    options().batched_passes = false;
    results single;
    h(gc, single);
    const auto bits = [](double d) { return std::bit_cast<std::uint64_t>(d); };
    for (const auto& [name, a] : batched) {
        const auto b = single.find(name);
        if (b == single.end()) return name + " (not computed per prompt)";
        const npy::array& c = b->second;
        if (a.shape != c.shape || a.ints != c.ints || a.values.size() != c.values.size()) return name;
        for (std::size_t i = 0; i < a.values.size(); ++i)
            if (bits(a.values[i]) != bits(c.values[i])) return name + " at " + std::to_string(i);
    }
    return {};
}

verdict run_case(const fs::path& dir, std::string& patch, std::string& name, bool all_details) {
    verdict v;
    golden_case gc;
    gc.dir = dir.string();
    {
        std::ifstream f(dir / "case.json");
        const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        gc.spec = parse_case_json(text);
    }
    patch = gc.spec.value("patch", "?");
    name = dir.filename().string();
    const std::string function = gc.spec.value("function", "?");
    const bool expect_error = gc.spec.value("expect_error", false);
    v.end_to_end = function.rfind("e2e.", 0) == 0;
    const auto it = registry().find({patch, function});
    if (it == registry().end()) {
        v.detail = "not implemented: no handler for " + patch + " / " + function;
        return v;
    }
    const bool storage_run = storage_mode() != storage::f32;
    if (storage_run && (function.rfind("e2e", 0) == 0 || function.find(".sequence") != std::string::npos)) {
        v.skipped = true;
        v.detail = function.rfind("e2e", 0) == 0 ? "end-to-end" : "sequence";
        return v;
    }
    storage_findings() = {};
    results out;
    try {
        options().batched_calls = 0;
        it->second(gc, out);
        v.batched_calls = options().batched_calls;
        if (v.batched_calls > 0 && options().batched_passes) {
            const std::string diff = per_prompt_difference(it->second, gc, out);
            if (!diff.empty()) {
                v.detail = "batched outputs differ from one call per prompt: " + diff;
                return v;
            }
        }
    } catch (const patchbay::error& e) {
        if (expect_error) {
            v.pass = true;
            v.detail = std::string("rejected: ") + e.what();
        } else {
            v.detail = std::string("patchbay::error: ") + e.what();
        }
        return v;
    } catch (const std::exception& e) {
        v.detail = std::string(expect_error ? "wrong exception type: " : "exception: ") + e.what();
        return v;
    }
    if (expect_error) {
        v.detail = "expected a patchbay::error, got a result";
        return v;
    }
    if (storage_run) { // judged by the half path against the float32 path, not the golden outputs
        const storage_report& rep = storage_findings();
        if (rep.staged_calls == 0) {
            v.skipped = true;
            v.detail = rep.detail.empty() ? "kind " + function + " makes no cfg-stage, block or attention hook call" : rep.detail;
        } else {
            v.pass = rep.mismatches == 0;
            v.detail = std::to_string(rep.staged_calls) + " hook call(s) on the storage format" +
                       (v.pass ? ", every output within 1 ulp of the float32 path rounded once" : ": " + rep.detail);
        }
        return v;
    }
    const bool equal_nan = gc.spec.value("equal_nan", false);
    double worst_ratio = 0;
    std::string details;
    v.pass = true;
    for (const auto& [oname, file] : gc.spec.at("outputs").items()) {
        const auto want = npy::load((dir / file.get<std::string>()).string());
        double rtol = gc.spec.value("rtol", 0.0), atol = gc.spec.value("atol", 0.0);
        if (gc.spec.contains("tolerances") && gc.spec["tolerances"].contains(oname)) {
            rtol = gc.spec["tolerances"][oname].value("rtol", rtol);
            atol = gc.spec["tolerances"][oname].value("atol", atol);
        }
        const auto got = out.find(oname);
        if (got == out.end()) {
            v.pass = false;
            details += "; " + oname + ": not computed";
            continue;
        }
        // the float64 companion, read only where the float32 output holds NaN
        npy::array want64;
        const bool has64 = equal_nan && gc.spec.contains("outputs_f64") && gc.spec["outputs_f64"].contains(oname);
        if (has64) want64 = npy::load((dir / gc.spec["outputs_f64"][oname].get<std::string>()).string());
        const auto c = compare(oname, want, has64 ? &want64 : nullptr, got->second, rtol, atol,
                               equal_nan, worst_ratio);
        if (!c.pass) v.pass = false;
        if (!c.pass || details.empty() || all_details) details += "; " + c.detail;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "max err/tol %.3f", worst_ratio);
    v.detail = buf + details;
    return v;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr,
                     "usage: %s DIR [--only PATCH[,PATCH...]] [--registered-patches-only] [--batched-passes] "
                     "[--storage f16|bf16] [--verbose]\n",
                     argv[0]);
        return 2;
    }
    const fs::path root = argv[1];
    std::set<std::string> only;
    bool verbose = false;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--only" && i + 1 < argc) for (auto& p : split(argv[++i])) only.insert(p);
        else if (a == "--verbose") verbose = true;
        else if (a == "--storage" && i + 1 < argc) {
            const std::string f = argv[++i];
            if (f == "f16") storage_mode_setting() = storage::f16;
            else if (f == "bf16") storage_mode_setting() = storage::bf16;
            else {
                std::fprintf(stderr, "--storage takes f16 or bf16, got '%s'\n", f.c_str());
                return 2;
            }
        }
        else if (a == "--batched-passes") options().batched_passes = true;
        else if (a == "--registered-patches-only")
        {
            only.insert("(none registered)"); // so an empty registry runs nothing, not everything
            for (const auto& [key, fn] : registry()) only.insert(key.first);
        }
    }
    std::vector<fs::path> cases;
    if (fs::exists(root / "case.json")) cases.push_back(root);
    else if (fs::is_directory(root))
        for (const auto& e : fs::recursive_directory_iterator(root))
            if (e.is_regular_file() && e.path().filename() == "case.json") cases.push_back(e.path().parent_path());
    std::sort(cases.begin(), cases.end());
    int passed = 0, failed = 0, not_run = 0, skipped = 0;
    std::map<std::string, int> skipped_why;
    int ran_batched = 0, e2e_cases = 0, e2e_batched = 0;
    std::vector<std::string> e2e_unbatched;
    for (const auto& dir : cases) {
        std::string patch, name;
        verdict v;
        try {
            v = run_case(dir, patch, name, verbose);
        } catch (const std::exception& e) {
            v.pass = false;
            v.detail = std::string("could not run the case: ") + e.what();
            if (name.empty()) name = dir.filename().string();
        }
        if (!only.empty() && !only.count(patch)) {
            ++not_run;
            continue;
        }
        if (v.skipped) {
            ++skipped;
            ++skipped_why[v.detail];
            if (verbose) std::printf("SKIP %s/%s: %s\n", patch.c_str(), name.c_str(), v.detail.c_str());
            continue;
        }
        (v.pass ? passed : failed)++;
        ran_batched += v.batched_calls > 0 ? 1 : 0;
        if (v.end_to_end) {
            ++e2e_cases;
            if (v.batched_calls > 0) ++e2e_batched;
            else e2e_unbatched.push_back(patch + "/" + name);
        }
        std::string detail = v.detail;
        if (!verbose && detail.size() > 300) detail = detail.substr(0, 300) + "...";
        std::printf("%s %s/%s: %s\n", v.pass ? "PASS" : "FAIL", patch.c_str(), name.c_str(), detail.c_str());
    }
    if (not_run) std::printf("(%d cases of other patches not run: --only / --registered-patches-only)\n", not_run);
    if (options().batched_passes) {
        std::printf("batched passes: %d cases evaluated their prompts in one call, each also run one call per prompt "
                    "and compared bit for bit (%d of %d end-to-end cases",
                    ran_batched, e2e_batched, e2e_cases);
        if (!e2e_unbatched.empty()) {
            std::printf("; one prompt per evaluation in");
            for (const auto& n : e2e_unbatched) std::printf(" %s", n.c_str());
        }
        std::printf(")\n");
    } else if (ran_batched > 0) {
        std::printf("batched passes: off (%d cases batched by a model of their own: the skip-layer nodes')\n", ran_batched);
    }
    const std::string_view simd = simd_arch_name();
    std::printf("simd: %.*s\n", static_cast<int>(simd.size()), simd.data());
    if (storage_mode() != storage::f32) {
        std::printf("storage %s: %d cases checked on the half-storage path, %d skipped:\n",
                    storage_mode() == storage::f16 ? "f16" : "bf16", passed + failed, skipped);
        for (const auto& [why, n] : skipped_why) std::printf("  %4d  %s\n", n, why.c_str());
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
