// Conformance handlers: CFGBaseline (plain CFG through the sampler harness). Registered by the
// sampling core, which owns the end-to-end harness; this file is a placeholder until then.
#include "registry.hpp"
