// RoPE front end: x [T, D] or [T, H, D], pos i32 [T], rotated slice [offset, offset + rope_dim).
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static dsa_status rope_backward(dsa_ctx *c, dsa_node *n) {
    bool store = false;  // on the GPU a fresh gradient is written, not zeroed and added into
    dsa_tensor *x = n->in[0], *pos = n->in[1], *dout = n->out[0]->grad;
    dsa_tensor *dx = dsa_gpu_store_grad(c, x, &store);
    if (!dx) return dsa_error_status();
    int offset = (int)n->i[0], rd = (int)n->i[1];
    dsa_rope_pairing pr = (dsa_rope_pairing)n->i[2];
    double theta = n->f[0];
    return DSA_ON_DEVICE(x->device, dsa_rope_bwd_cpu(pos, offset, rd, theta, pr, dout, dx),
                         dsa_rope_bwd_cuda(pos, offset, rd, theta, pr, dout, dx, store));
}

static dsa_status check_rope(const dsa_tensor *x, const dsa_tensor *pos, int offset, int rope_dim, double theta,
                             dsa_rope_pairing pairing) {
    DSA_TRY(dsa_check_float("rope", "x", x));
    DSA_TRY(dsa_check_tensor("rope", "pos", pos));
    DSA_TRY(dsa_check_dtype("rope", "pos", pos, DSA_I32));
    DSA_TRY(dsa_check_same_device("rope", x, pos));
    char a[96], b[96];
    dsa_shape_str(x, a, sizeof a);
    if (x->ndim != 2 && x->ndim != 3)
        return dsa_error_set(DSA_ERR_SHAPE, "rope: x %s must be [T, D] or [T, H, D]", a);
    if (pos->ndim != 1 || pos->shape[0] != x->shape[0])
        return dsa_error_set(DSA_ERR_SHAPE, "rope: pos %s must be [T] with T = %lld (x %s)",
                             dsa_shape_str(pos, b, sizeof b), (long long)x->shape[0], a);
    int64_t D = x->shape[x->ndim - 1];
    if (rope_dim <= 0 || rope_dim % 2 || offset < 0 || offset + (int64_t)rope_dim > D)
        return dsa_error_set(DSA_ERR_SHAPE, "rope: slice [%d, %d + %d) (rope_dim even, > 0) does not fit the last dim of x %s",
                             offset, offset, rope_dim, a);
    if (!(theta > 0) || (pairing != DSA_ROPE_HALF_SPLIT && pairing != DSA_ROPE_INTERLEAVED))
        return dsa_error_set(DSA_ERR_VALUE, "rope: bad theta %g or pairing %d (x %s)", theta, (int)pairing, a);
    return DSA_OK;
}

dsa_tensor *dsa_rope(dsa_ctx *c, dsa_tensor *x, dsa_tensor *pos, int offset, int rope_dim, double theta,
                     dsa_rope_pairing pairing) {
    DSA_TRY_NULL(check_rope(x, pos, offset, rope_dim, theta, pairing));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, x->shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(x->device, dsa_rope_fwd_cpu(x, pos, offset, rope_dim, theta, pairing, out),
                               dsa_rope_fwd_cuda(x, pos, offset, rope_dim, theta, pairing, out)));
    dsa_node *n = dsa_record(c, "rope", rope_backward, (dsa_tensor *[]){x, pos}, 2, &out, 1);
    if (n) {
        n->i[0] = offset;
        n->i[1] = rope_dim;
        n->i[2] = pairing;
        n->f[0] = theta;
    }
    return out;
}
