// patchbay tests: the toy Gaussian model lives with the examples (an engine author copies it);
// tests use that same header.
#pragma once

#include "../../examples/toy_gaussian.hpp"
