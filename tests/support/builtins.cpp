// The built-in patches' function tables, compiled once for all the tests (see
// patchbay/builtins.hpp): every test is built with PATCHBAY_EXTERN_BUILTINS.
#define PATCHBAY_INSTANTIATE_BUILTINS
#include "patchbay/builtins.hpp"
