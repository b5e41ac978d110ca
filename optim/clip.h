// Global-norm gradient clipping, split in three so the caller can all-reduce between them:
//
//     double ss = 0, part;
//     dsa_grad_sumsq(dev, grads, n, &part); ss += part;       // per buffer / range, on this rank
//     dsa_all_reduce_sum(...ss...)                             // across ranks that hold distinct grads
//     float scale = dsa_clip_scale(ss, max_norm, &norm);       // norm = sqrt(ss), for the log
//     dsa_adamw_step(opt, params, grads, lr, scale);           // fused, or dsa_grad_scale(...)
//
// Replicated gradients (e.g. the indexer under TP after its average) must be counted once, not once
// per rank: the caller decides which ranges each rank contributes.
#pragma once
#include <stdint.h>
#include "core/dtype.h"
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

// *out = sum of g[i]^2 over [0, n) (double accumulation on CPU; fp32 partials summed in double on
// CUDA). NaN/Inf propagate (so a bad step is visible in the norm).
dsa_status dsa_grad_sumsq(dsa_device dev, const float *g, int64_t n, double *out);
// g[i] *= scale over [0, n).
dsa_status dsa_grad_scale(dsa_device dev, float *g, int64_t n, float scale);
// Scale factor for global-norm clipping: min(1, max_norm / (norm + 1e-6)) with norm = sqrt(sumsq);
// max_norm <= 0 means no clipping (1). A non-finite norm gives 1 (the caller sees the norm in the log
// and may skip the step). *norm (may be NULL) gets sqrt(sumsq).
float dsa_clip_scale(double sumsq, double max_norm, double *norm);

dsa_status dsa_grad_sumsq_cpu(const float *g, int64_t n, double *out);
dsa_status dsa_grad_scale_cpu(float *g, int64_t n, float scale);

#ifdef __cplusplus
}
#endif
