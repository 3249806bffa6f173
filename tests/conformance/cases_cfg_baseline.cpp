// Conformance handlers: CFGBaseline, plain classifier-free guidance (no patch) through the
// end-to-end sampler harness. These cases check the harness itself: model sampling, toy
// model, guider and Euler sampler together.
#include "e2e.hpp"

namespace conformance_cases_cfg_baseline {

PATCHBAY_CONFORMANCE("CFGBaseline", "e2e.sample_euler") { patchbay::e2e::run(gc, out); }

} // namespace conformance_cases_cfg_baseline
