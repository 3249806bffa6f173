// patchbay: umbrella header. Includes the core, kernels, model sampling and every patch.
// Adapters (Eigen, xtensor, libtorch) and the ComfyUI workflow import are opt-in headers.
#pragma once

#include "patchbay/core/config.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"
