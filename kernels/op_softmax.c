// Softmax and logsumexp over the last dim. Softmax's backward reads its own output.
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static dsa_status softmax_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *out = n->out[0], *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    return DSA_ON_DEVICE(x->device, dsa_softmax_bwd_cpu(out, out->grad, dx), dsa_softmax_bwd_cuda(out, out->grad, dx));
}

static dsa_status check_rows_input(const char *op, const dsa_tensor *x) {
    DSA_TRY(dsa_check_float(op, "x", x));
    if (x->ndim < 1) {
        char a[96];
        return dsa_error_set(DSA_ERR_SHAPE, "%s: x %s needs at least 1 dim", op, dsa_shape_str(x, a, sizeof a));
    }
    return DSA_OK;
}

dsa_tensor *dsa_softmax(dsa_ctx *c, dsa_tensor *x) {
    DSA_TRY_NULL(check_rows_input("softmax", x));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, x->shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_softmax_fwd_cpu(x, out), dsa_softmax_fwd_cuda(x, out)));
    dsa_record(c, "softmax", softmax_backward, &x, 1, &out, 1);
    return out;
}

static dsa_status logsumexp_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *out = n->out[0], *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    return DSA_ON_DEVICE(x->device, dsa_logsumexp_bwd_cpu(x, out, out->grad, dx),
                         dsa_logsumexp_bwd_cuda(x, out, out->grad, dx));
}

dsa_tensor *dsa_logsumexp(dsa_ctx *c, dsa_tensor *x) {
    DSA_TRY_NULL(check_rows_input("logsumexp", x));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim - 1, x->shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_logsumexp_fwd_cpu(x, out), dsa_logsumexp_fwd_cuda(x, out)));
    dsa_record(c, "logsumexp", logsumexp_backward, &x, 1, &out, 1);
    return out;
}
