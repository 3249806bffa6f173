// patchbay: umbrella header. Includes the core, kernels, model sampling, samplers and every
// patch. Adapters (Eigen, xtensor, libtorch, raw/ggml) and the ComfyUI workflow import are
// opt-in headers: include patchbay/adapters/<library>.hpp or patchbay/comfy/workflow.hpp.
#pragma once

#include "patchbay/core/cfg_chain.hpp"
#include "patchbay/core/config.hpp"
#include "patchbay/core/descriptor.hpp"
#include "patchbay/core/dispatch.hpp"
#include "patchbay/core/error.hpp"
#include "patchbay/core/guider.hpp"
#include "patchbay/core/hooks.hpp"
#include "patchbay/core/model.hpp"
#include "patchbay/core/patch.hpp"
#include "patchbay/core/patch_chain.hpp"
#include "patchbay/core/tensor.hpp"
#include "patchbay/core/view.hpp"
#include "patchbay/core/workspace.hpp"
#include "patchbay/kernels/elementwise.hpp"
#include "patchbay/kernels/reduce.hpp"
#include "patchbay/kernels/resize.hpp"
#include "patchbay/kernels/sharpen.hpp"
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "patchbay/sampling/schedules.hpp"

#include "patchbay/builtins.hpp"
