// The built-in patches' function tables, compiled once for our tests, examples and conformance
// runner (see include/patchbay/builtins.hpp); those are all built with PATCHBAY_EXTERN_BUILTINS.
#define PATCHBAY_INSTANTIATE_BUILTINS
#include "patchbay/builtins.hpp"
