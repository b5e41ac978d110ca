// Float dtype conversion; the gradient converts back (into x's gradient dtype).
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static dsa_status cast_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *dout = n->out[0]->grad;
    if (dsa_grad_adopt(c, x, dout)) return DSA_OK;  // f32 -> bf16 -> f32 gradients: x's first is dout itself
    dsa_tensor *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    return DSA_ON_DEVICE(x->device, dsa_cast_bwd_cpu(dout, dx), dsa_cast_bwd_cuda(dout, dx));
}

dsa_tensor *dsa_cast(dsa_ctx *c, dsa_tensor *x, dsa_dtype dt) {
    DSA_TRY_NULL(dsa_check_float("cast", "x", x));
    if (dt != DSA_F32 && dt != DSA_F64 && dt != DSA_BF16) {
        char a[96];
        dsa_error_set(DSA_ERR_DTYPE, "cast: x %s can only be cast to a float dtype (asked for %d)",
                      dsa_shape_str(x, a, sizeof a), (int)dt);
        return NULL;
    }
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, dt, x->device, x->ndim, x->shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_cast_fwd_cpu(x, out), dsa_cast_fwd_cuda(x, out)));
    dsa_record(c, "cast", cast_backward, &x, 1, &out, 1);
    return out;
}
