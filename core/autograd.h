// Autograd: a tape of nodes. An op whose inputs need gradients records a node (inputs, outputs,
// saved tensors, scalar arguments, backward function) while the forward runs with grad enabled.
// dsa_backward walks the tape in reverse and accumulates gradients (f32; f64 for f64 tensors).
// The tape is the graph. Detach is explicit (dsa_detach); no-grad regions use dsa_set_grad_enabled.
#pragma once
#include <stdbool.h>
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSA_NODE_MAX_IN 8
#define DSA_NODE_MAX_OUT 4
#define DSA_NODE_MAX_SAVED 8

typedef dsa_status (*dsa_backward_fn)(dsa_ctx *c, dsa_node *n);

struct dsa_node {
    const char *op;
    dsa_backward_fn backward;
    int n_in, n_out;
    dsa_tensor *in[DSA_NODE_MAX_IN];       // NULL for absent optional inputs
    dsa_tensor *out[DSA_NODE_MAX_OUT];
    dsa_tensor *saved[DSA_NODE_MAX_SAVED]; // extra forward results the backward needs
    double f[8];                           // scalar arguments (op-specific meaning)
    int64_t i[8];
    void *extra;                           // op-specific block, step-scope memory
};

typedef struct {
    dsa_node **nodes;
    int n, cap;
} dsa_tape;

// Returns the previous setting.
bool dsa_set_grad_enabled(dsa_ctx *c, bool enabled);

// Called by an op after its forward: marks the outputs as needing grad when any input does and
// records a node when grad is enabled. Returns the node (to fill saved/f/i/extra) or NULL when no
// gradient will flow (not an error). Inputs may contain NULLs.
dsa_node *dsa_record(dsa_ctx *c, const char *op, dsa_backward_fn backward, dsa_tensor *const *in, int n_in,
                     dsa_tensor *const *out, int n_out);

// The gradient buffer to accumulate into for t: NULL when t does not require grad; allocated
// (zeroed, in t's scope) on first use. Backward functions skip inputs for which this is NULL.
dsa_tensor *dsa_grad_buffer(dsa_ctx *c, dsa_tensor *t);
// The gradient buffer of t for a backward that can write every element of it. When t (a step tensor)
// has none yet, a new buffer left unzeroed and *store = true: the caller must store its whole gradient
// (or zero the buffer and add). Otherwise dsa_grad_buffer's and *store = false: add into it. Saves the
// zeroing and the read of a gradient that only one op produces (the DSA ops' dq: 226 MB a layer in
// small.cfg).
dsa_tensor *dsa_grad_buffer_to_store(dsa_ctx *c, dsa_tensor *t, bool *store);
// For backwards whose input gradient is their output gradient's values (a cast between dtypes with
// the same gradient dtype, a view): when x needs a gradient, has none yet and is a step tensor, and g
// (the output's gradient) has x's element count, gradient dtype and device, x's gradient becomes g's
// memory seen in x's shape and this returns true; no zeroing, no copy. g is complete and never read
// again by the tape (a node runs after every consumer of its outputs). Otherwise false: add as usual.
bool dsa_grad_adopt(dsa_ctx *c, dsa_tensor *x, dsa_tensor *g);

// Backward from a scalar (seeded with 1) or from any tensor with a given upstream gradient
// (same shape, grad dtype). Consumes the tape.
dsa_status dsa_backward(dsa_ctx *c, dsa_tensor *loss);
dsa_status dsa_backward_with_grad(dsa_ctx *c, dsa_tensor *t, dsa_tensor *grad);

// A tensor sharing t's data that gradients never flow through.
dsa_tensor *dsa_detach(dsa_ctx *c, dsa_tensor *t);
// Step-scope memory for a node's extra block.
void *dsa_step_alloc(dsa_ctx *c, size_t bytes);

#ifdef __cplusplus
}
#endif
