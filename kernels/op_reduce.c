// Full reductions (sum, mean) to a 0-dim tensor.
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static dsa_status reduce_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *dout = n->out[0]->grad, *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    if (n->i[0])
        return DSA_ON_DEVICE(x->device, dsa_mean_bwd_cpu(x, dout, dx), dsa_mean_bwd_cuda(x, dout, dx));
    return DSA_ON_DEVICE(x->device, dsa_sum_bwd_cpu(x, dout, dx), dsa_sum_bwd_cuda(x, dout, dx));
}

static dsa_tensor *reduce(dsa_ctx *c, dsa_tensor *x, bool mean) {
    const char *name = mean ? "mean" : "sum";
    DSA_TRY_NULL(dsa_check_float(name, "x", x));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, 0, NULL);
    if (!out) return NULL;
    DSA_TRY_NULL(mean ? DSA_ON_DEVICE(x->device, dsa_mean_fwd_cpu(x, out), dsa_mean_fwd_cuda(x, out))
                      : DSA_ON_DEVICE(x->device, dsa_sum_fwd_cpu(x, out), dsa_sum_fwd_cuda(x, out)));
    dsa_node *n = dsa_record(c, name, reduce_backward, &x, 1, &out, 1);
    if (n) n->i[0] = mean;
    return out;
}

dsa_tensor *dsa_sum(dsa_ctx *c, dsa_tensor *x) { return reduce(c, x, false); }
dsa_tensor *dsa_mean(dsa_ctx *c, dsa_tensor *x) { return reduce(c, x, true); }
