// CUDA twins of the optimizer kernels (same arguments as the _cpu versions; pointers on the GPU).
#pragma once
#include <stdint.h>
#include "core/error.h"
#include "optim/adamw.h"

#ifdef __cplusplus
extern "C" {
#endif

dsa_status dsa_adamw_update_cuda(float *params, const float *grads, float *m, float *v, int64_t n,
                                 const dsa_adamw_hparams *h);
dsa_status dsa_grad_sumsq_cuda(const float *g, int64_t n, double *out);
dsa_status dsa_grad_scale_cuda(float *g, int64_t n, float scale);

#ifdef __cplusplus
}
#endif
