// patchbay: umbrella header. Includes the core, kernels, model sampling, samplers and every
// patch. Adapters (Eigen, xtensor, libtorch, raw/ggml) and the ComfyUI workflow import are
// opt-in headers: include patchbay/adapters/<library>.hpp or patchbay/comfy/workflow.hpp.
#pragma once

#include "patchbay/core/config.hpp"
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
#include "patchbay/sampling/model_sampling.hpp"
#include "patchbay/sampling/samplers.hpp"
#include "patchbay/sampling/schedules.hpp"

#include "patchbay/patches/block/free_u.hpp"
#include "patchbay/patches/cfg/renorm_cfg.hpp"
#include "patchbay/patches/cfg/rescale_cfg.hpp"
#include "patchbay/patches/mask/differential_diffusion.hpp"
#include "patchbay/patches/post_cfg/cfg_norm.hpp"
#include "patchbay/patches/post_cfg/mahiro.hpp"
#include "patchbay/patches/post_cfg/pag.hpp"
#include "patchbay/patches/post_cfg/sag.hpp"
#include "patchbay/patches/pre_cfg/apg.hpp"
#include "patchbay/patches/pre_cfg/fresca.hpp"
#include "patchbay/patches/pre_cfg/tcfg.hpp"
