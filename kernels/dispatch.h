// Helpers shared by the op front ends (kernels/op_*.c): backend dispatch and input checks.
#pragma once
#include "core/context.h"
#include "core/device.h"
#include "kernels/cpu/cpu_kernels.h"
#ifdef DSA_HAVE_CUDA
#include "kernels/cuda/cuda_kernels.h"
#endif

// DSA_ON_DEVICE(dev, cpu_call, cuda_call): runs the kernel of the tensors' device. In a build without
// CUDA the CUDA branch is an error that says so (its tokens are dropped, so undeclared is fine).
#ifdef DSA_HAVE_CUDA
#define DSA_ON_DEVICE(dev, cpu_call, cuda_call) ((dev) == DSA_CPU ? (cpu_call) : (cuda_call))
#else
#define DSA_ON_DEVICE(dev, cpu_call, cuda_call) \
    ((dev) == DSA_CPU ? (cpu_call) : dsa_error_set(DSA_ERR_DEVICE, "%s: this build has no CUDA support", __func__))
#endif

// For an op not (yet) written for CUDA: a clear error instead of a wrong answer.
#define DSA_CUDA_MISSING(op) dsa_error_set(DSA_ERR_UNSUPPORTED, "%s: no CUDA implementation", op)

// Returns NULL from the enclosing op when a status is not OK.
#define DSA_TRY_NULL(expr)              \
    do {                                \
        if ((expr) != DSA_OK) return NULL; \
    } while (0)

// The gradient buffer of t for a backward whose GPU kernel can write all of it: on the GPU, where t (a
// step tensor) has none yet, a new unzeroed buffer and *store = true (write it, do not add); otherwise,
// and always on the CPU (whose kernels add), dsa_grad_buffer's zeroed or existing one and *store = false.
dsa_tensor *dsa_gpu_store_grad(dsa_ctx *c, dsa_tensor *t, bool *store);

// Float input checks shared by most ops: non-NULL, float dtype, and (for b) the same dtype and device as a.
dsa_status dsa_check_float_pair(const char *op, const dsa_tensor *a, const dsa_tensor *b);

// NumPy broadcasting of two shapes into out_shape (ndim = max). Error names the op and both shapes.
dsa_status dsa_broadcast_shape(const char *op, const dsa_tensor *a, const dsa_tensor *b, int *ndim,
                               int64_t *out_shape);
