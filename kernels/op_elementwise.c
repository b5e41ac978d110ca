// Broadcast add and mul: the template every op front end follows.
//   1. check inputs (NULL, dtype, device, shapes) with messages naming the op and shapes;
//   2. allocate the output, run the device's forward kernel;
//   3. record a tape node (dsa_record) whose backward runs the device's backward kernel into the
//      gradient buffers of the inputs that need one.
#include "kernels/dispatch.h"
#include "kernels/ops.h"

static dsa_status binary_bwd(dsa_binary_op op, const dsa_tensor *a, const dsa_tensor *b, const dsa_tensor *dout,
                             dsa_tensor *da, dsa_tensor *db) {
    return DSA_ON_DEVICE(dout->device, dsa_binary_bwd_cpu(op, a, b, dout, da, db), dsa_binary_bwd_cuda(op, a, b, dout, da, db));
}

static dsa_status binary_backward(dsa_ctx *c, dsa_node *n) {
    dsa_binary_op op = (dsa_binary_op)n->i[0];
    dsa_tensor *a = n->in[0], *b = n->in[1], *dout = n->out[0]->grad;
    // An add whose a has the output's shape and no gradient yet (a residual stream): b's gradient
    // first, while dout is intact, then a takes dout over (dsa_grad_adopt: no zeroed buffer, no add).
    bool adopt = op == DSA_BIN_ADD && a != b && a->requires_grad && !a->grad && dsa_same_shape(a, dout);
    dsa_tensor *da = adopt ? NULL : dsa_grad_buffer(c, a), *db = dsa_grad_buffer(c, b);
    if ((!adopt && a->requires_grad && !da) || (b->requires_grad && !db)) return dsa_error_status();
    if (da || db) DSA_TRY(binary_bwd(op, a, b, dout, da, db));
    if (!adopt || dsa_grad_adopt(c, a, dout)) return DSA_OK;
    if (!(da = dsa_grad_buffer(c, a))) return dsa_error_status();
    return binary_bwd(op, a, b, dout, da, NULL);
}

static dsa_tensor *binary(dsa_ctx *c, dsa_binary_op op, const char *name, dsa_tensor *a, dsa_tensor *b) {
    DSA_TRY_NULL(dsa_check_float_pair(name, a, b));
    int ndim;
    int64_t shape[DSA_MAX_DIMS];
    DSA_TRY_NULL(dsa_broadcast_shape(name, a, b, &ndim, shape));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, a->dtype, a->device, ndim, shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(a->device, dsa_binary_fwd_cpu(op, a, b, out), dsa_binary_fwd_cuda(op, a, b, out)));
    dsa_node *n = dsa_record(c, name, binary_backward, (dsa_tensor *[]){a, b}, 2, &out, 1);
    if (n) n->i[0] = op;
    return out;
}

dsa_tensor *dsa_add(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b) { return binary(c, DSA_BIN_ADD, "add", a, b); }
dsa_tensor *dsa_mul(dsa_ctx *c, dsa_tensor *a, dsa_tensor *b) { return binary(c, DSA_BIN_MUL, "mul", a, b); }
