// Collectives as autograd ops (see kernels/comm_ops.h). Gradients are f32/f64, which the
// collectives carry directly; bf16 activations are not sent through these ops.
#include "kernels/comm_ops.h"
#include "kernels/dispatch.h"

static dsa_status check_sendable(const char *op, const dsa_tensor *x) {
    DSA_TRY(dsa_check_tensor(op, "x", x));
    if (x->dtype != DSA_F32 && x->dtype != DSA_F64) {
        char b[96];
        return dsa_error_set(DSA_ERR_DTYPE, "%s: only f32/f64 tensors travel, got %s", op, dsa_shape_str(x, b, 96));
    }
    return DSA_OK;
}

// out->grad accumulated into in's grad, optionally all-reduced first (in a scratch copy: the
// output's gradient buffer must not change under other readers).
static dsa_status pass_grad(dsa_ctx *c, dsa_node *n, bool all_reduce) {
    dsa_tensor *dx = dsa_grad_buffer(c, n->in[0]);
    if (!dx) return n->in[0]->requires_grad ? dsa_error_status() : DSA_OK;
    dsa_tensor *g = n->out[0]->grad;
    if (all_reduce) {
        g = dsa_copy(c, DSA_STEP, g, g->device, g->dtype);
        if (!g) return dsa_error_status();
        DSA_TRY(dsa_all_reduce_sum((const dsa_comm *)n->extra, g));
    }
    dsa_tensor *dx_view = dsa_wrap(c, DSA_STEP, dx->dtype, dx->device, dx->data, dx->ndim, dx->shape);
    if (!dx_view) return dsa_error_status();
    // dx += g, through the broadcast-add kernel (same shapes: a plain elementwise sum).
    return DSA_ON_DEVICE(dx->device, dsa_binary_fwd_cpu(DSA_BIN_ADD, dx_view, g, dx),
                         dsa_binary_fwd_cuda(DSA_BIN_ADD, dx_view, g, dx));
}

static dsa_status tp_enter_backward(dsa_ctx *c, dsa_node *n) { return pass_grad(c, n, true); }
static dsa_status tp_reduce_backward(dsa_ctx *c, dsa_node *n) { return pass_grad(c, n, false); }

// A new tensor sharing x's data, recorded as an op so gradients route through `backward`.
static dsa_tensor *alias_op(dsa_ctx *c, const char *name, const dsa_comm *comm, dsa_tensor *x,
                            dsa_backward_fn backward) {
    dsa_tensor *y = dsa_wrap(c, DSA_STEP, x->dtype, x->device, x->data, x->ndim, x->shape);
    if (!y) return NULL;
    dsa_node *n = dsa_record(c, name, backward, &x, 1, &y, 1);
    if (n) n->extra = (void *)comm;
    return y;
}

dsa_tensor *dsa_tp_enter(dsa_ctx *c, const dsa_comm *comm, dsa_tensor *x) {
    DSA_TRY_NULL(check_sendable("tp_enter", x));
    if (comm->size == 1) return x;
    return alias_op(c, "tp_enter", comm, x, tp_enter_backward);
}

dsa_tensor *dsa_tp_reduce(dsa_ctx *c, const dsa_comm *comm, dsa_tensor *x) {
    DSA_TRY_NULL(check_sendable("tp_reduce", x));
    if (comm->size == 1) return x;
    dsa_tensor *y = dsa_copy(c, DSA_STEP, x, x->device, x->dtype);
    if (!y) return NULL;
    DSA_TRY_NULL(dsa_all_reduce_sum(comm, y));
    dsa_node *n = dsa_record(c, "tp_reduce", tp_reduce_backward, &x, 1, &y, 1);
    if (n) n->extra = (void *)comm;
    return y;
}

static dsa_status cp_gather_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *dx = dsa_grad_buffer(c, x);
    if (!dx) return x->requires_grad ? dsa_error_status() : DSA_OK;
    dsa_tensor *part = dsa_tensor_new(c, DSA_STEP, dx->dtype, dx->device, dx->ndim, dx->shape);
    if (!part) return dsa_error_status();
    DSA_TRY(dsa_reduce_scatter_sum((const dsa_comm *)n->extra, n->out[0]->grad, part));
    dsa_tensor *dx_view = dsa_wrap(c, DSA_STEP, dx->dtype, dx->device, dx->data, dx->ndim, dx->shape);
    if (!dx_view) return dsa_error_status();
    return DSA_ON_DEVICE(dx->device, dsa_binary_fwd_cpu(DSA_BIN_ADD, dx_view, part, dx),
                         dsa_binary_fwd_cuda(DSA_BIN_ADD, dx_view, part, dx));
}

dsa_tensor *dsa_cp_gather(dsa_ctx *c, const dsa_comm *comm, dsa_tensor *x) {
    DSA_TRY_NULL(check_sendable("cp_gather", x));
    if (comm->size == 1) return x;
    int64_t shape[DSA_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[0] *= comm->size;
    dsa_tensor *y = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, shape);
    if (!y) return NULL;
    DSA_TRY_NULL(dsa_all_gather(comm, x, y));
    dsa_node *n = dsa_record(c, "cp_gather", cp_gather_backward, &x, 1, &y, 1);
    if (n) n->extra = (void *)comm;
    return y;
}
