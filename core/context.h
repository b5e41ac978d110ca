// The context owns a run's memory and its autograd tape.
//   step scope:    activations, gradients of activations, tape nodes. Freed (reused) by dsa_ctx_step_reset.
//   persist scope: parameters, optimizer state, anything that outlives a step.
// Tensor metadata always lives in host memory; data lives on the tensor's device.
#pragma once
#include <stdbool.h>
#include "autograd.h"
#include "memory.h"
#include "rng.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DSA_STEP = 0, DSA_PERSIST = 1 } dsa_scope;

struct dsa_ctx {
    dsa_device device;              // default device of new tensors
    dsa_arena meta[2];              // [scope]: host memory for tensor structs, nodes
    dsa_arena data[2][2];           // [scope][device]: element storage
    dsa_tape tape;
    bool grad_enabled;
};

// Makes a context whose tensors default to `dev`. For CUDA, initializes GPU 0 unless dsa_cuda_init
// already chose one. Returns NULL (error set) when the device cannot be used.
dsa_ctx *dsa_ctx_create(dsa_device dev);
void dsa_ctx_free(dsa_ctx *c);
// Ends a step: clears the tape and recycles every step-scope tensor.
void dsa_ctx_step_reset(dsa_ctx *c);
// Peak bytes of step-scope data on a device since the context was made.
size_t dsa_ctx_peak_bytes(const dsa_ctx *c, dsa_device dev);
size_t dsa_ctx_reserved_bytes(const dsa_ctx *c, dsa_device dev);

// Shapes as compound literals: dsa_new(c, DSA_F32, 2, DSA_SHAPE(4, 8)).
#define DSA_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

// Uninitialized tensor. NULL (error set) on a bad shape or no memory.
dsa_tensor *dsa_tensor_new(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape);
// Step-scope tensor on the context's device.
dsa_tensor *dsa_new(dsa_ctx *c, dsa_dtype dt, int ndim, const int64_t *shape);
dsa_tensor *dsa_zeros(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape);
// A new tensor struct over existing memory (no copy; no autograd link).
dsa_tensor *dsa_wrap(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, void *data, int ndim,
                     const int64_t *shape);
// Copies host data (of dtype dt) into a new tensor on dev.
dsa_tensor *dsa_from_host(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape,
                          const void *host);
// Copies a tensor (any device) into host memory of its own dtype, or converted to double.
dsa_status dsa_to_host(const dsa_tensor *t, void *host);
dsa_status dsa_to_host_f64(const dsa_tensor *t, double *host);
// Copy of a tensor on another device (or the same), with another dtype if asked; no autograd link.
dsa_tensor *dsa_copy(dsa_ctx *c, dsa_scope scope, const dsa_tensor *t, dsa_device dev, dsa_dtype dt);
dsa_status dsa_zero(dsa_tensor *t);

// Random fill (drawn on the host from the core RNG, then copied: identical on CPU and GPU).
dsa_status dsa_fill_normal(dsa_tensor *t, dsa_rng *r, double mean, double std);
dsa_status dsa_fill_uniform(dsa_tensor *t, dsa_rng *r, double lo, double hi);

#ifdef __cplusplus
}
#endif
