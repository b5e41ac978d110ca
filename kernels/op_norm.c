// RMSNorm and LayerNorm front ends (normalize over the last dim; weight and bias [D]).
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static dsa_status check_param(const char *op, const char *what, const dsa_tensor *x, const dsa_tensor *p) {
    DSA_TRY(dsa_check_float(op, what, p));
    DSA_TRY(dsa_check_same_device(op, x, p));
    char a[96], b[96];
    if (p->dtype != x->dtype)
        return dsa_error_set(DSA_ERR_DTYPE, "%s: %s %s and x %s differ in dtype", op, what, dsa_shape_str(p, a, sizeof a),
                             dsa_shape_str(x, b, sizeof b));
    if (x->ndim < 1 || p->ndim != 1 || p->shape[0] != x->shape[x->ndim - 1])
        return dsa_error_set(DSA_ERR_SHAPE, "%s: %s %s must be [D] with D the last dim of x %s", op, what,
                             dsa_shape_str(p, a, sizeof a), dsa_shape_str(x, b, sizeof b));
    return DSA_OK;
}

static dsa_status rmsnorm_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *w = n->in[1], *dout = n->out[0]->grad;
    bool store = false;  // on the GPU a fresh dx is written, not zeroed and added into
    dsa_tensor *dx = dsa_gpu_store_grad(c, x, &store);
    dsa_tensor *dw = dsa_grad_buffer(c, w);
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw)) return dsa_error_status();
    double eps = n->f[0];
    return DSA_ON_DEVICE(x->device, dsa_rmsnorm_bwd_cpu(x, w, eps, dout, dx, dw),
                         dsa_rmsnorm_bwd_cuda(x, w, eps, dout, dx, dw, store));
}

dsa_tensor *dsa_rmsnorm(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, double eps) {
    DSA_TRY_NULL(dsa_check_float("rmsnorm", "x", x));
    DSA_TRY_NULL(check_param("rmsnorm", "w", x, w));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, x->shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_rmsnorm_fwd_cpu(x, w, eps, out), dsa_rmsnorm_fwd_cuda(x, w, eps, out)));
    dsa_node *n = dsa_record(c, "rmsnorm", rmsnorm_backward, (dsa_tensor *[]){x, w}, 2, &out, 1);
    if (n) n->f[0] = eps;
    return out;
}

static dsa_status layernorm_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *dout = n->out[0]->grad;
    dsa_tensor *dx = dsa_grad_buffer(c, x), *dw = dsa_grad_buffer(c, w), *db = dsa_grad_buffer(c, b);
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw) || (b->requires_grad && !db)) return dsa_error_status();
    double eps = n->f[0];
    return DSA_ON_DEVICE(x->device, dsa_layernorm_bwd_cpu(x, w, b, eps, dout, dx, dw, db),
                         dsa_layernorm_bwd_cuda(x, w, b, eps, dout, dx, dw, db));
}

dsa_tensor *dsa_layernorm(dsa_ctx *c, dsa_tensor *x, dsa_tensor *w, dsa_tensor *b, double eps) {
    DSA_TRY_NULL(dsa_check_float("layernorm", "x", x));
    DSA_TRY_NULL(check_param("layernorm", "w", x, w));
    DSA_TRY_NULL(check_param("layernorm", "b", x, b));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, x->shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_layernorm_fwd_cpu(x, w, b, eps, out), dsa_layernorm_fwd_cuda(x, w, b, eps, out)));
    dsa_node *n = dsa_record(c, "layernorm", layernorm_backward, (dsa_tensor *[]){x, w, b}, 3, &out, 1);
    if (n) n->f[0] = eps;
    return out;
}
