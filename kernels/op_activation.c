// Elementwise activation front ends: scale, relu, silu (one input) and swiglu (gate, up).
#include "kernels/dispatch.h"
#include "kernels/ops.h"

typedef enum { ACT_SCALE, ACT_RELU, ACT_SILU } act_kind;

static dsa_status unary_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *x = n->in[0], *dout = n->out[0]->grad, *dx = dsa_grad_buffer(c, x);
    if (!dx) return dsa_error_status();
    switch ((act_kind)n->i[0]) {
    case ACT_SCALE:
        return DSA_ON_DEVICE(x->device, dsa_scale_bwd_cpu(n->f[0], dout, dx), dsa_scale_bwd_cuda(n->f[0], dout, dx));
    case ACT_RELU: return DSA_ON_DEVICE(x->device, dsa_relu_bwd_cpu(x, dout, dx), dsa_relu_bwd_cuda(x, dout, dx));
    default: return DSA_ON_DEVICE(x->device, dsa_silu_bwd_cpu(x, dout, dx), dsa_silu_bwd_cuda(x, dout, dx));
    }
}

static dsa_tensor *unary(dsa_ctx *c, act_kind kind, const char *name, dsa_tensor *x, double s) {
    DSA_TRY_NULL(dsa_check_float(name, "x", x));
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, x->dtype, x->device, x->ndim, x->shape);
    if (!out) return NULL;
    dsa_status st;
    switch (kind) {
    case ACT_SCALE: st = DSA_ON_DEVICE(x->device, dsa_scale_fwd_cpu(x, s, out), dsa_scale_fwd_cuda(x, s, out)); break;
    case ACT_RELU: st = DSA_ON_DEVICE(x->device, dsa_relu_fwd_cpu(x, out), dsa_relu_fwd_cuda(x, out)); break;
    default: st = DSA_ON_DEVICE(x->device, dsa_silu_fwd_cpu(x, out), dsa_silu_fwd_cuda(x, out)); break;
    }
    DSA_TRY_NULL(st);
    dsa_node *n = dsa_record(c, name, unary_backward, &x, 1, &out, 1);
    if (n) {
        n->i[0] = kind;
        n->f[0] = s;
    }
    return out;
}

dsa_tensor *dsa_scale(dsa_ctx *c, dsa_tensor *a, double s) { return unary(c, ACT_SCALE, "scale", a, s); }
dsa_tensor *dsa_relu(dsa_ctx *c, dsa_tensor *x) { return unary(c, ACT_RELU, "relu", x, 0.0); }
dsa_tensor *dsa_silu(dsa_ctx *c, dsa_tensor *x) { return unary(c, ACT_SILU, "silu", x, 0.0); }

static dsa_status swiglu_backward(dsa_ctx *c, dsa_node *n) {
    dsa_tensor *g = n->in[0], *u = n->in[1], *dout = n->out[0]->grad;
    // On the GPU both gradients are written when both are fresh (the MLP's gate and up: nothing else
    // reads them), else zeroed and added into.
    bool sg = false, su = false;
    dsa_tensor *dg = dsa_gpu_store_grad(c, g, &sg), *du = dsa_gpu_store_grad(c, u, &su);
    if ((g->requires_grad && !dg) || (u->requires_grad && !du)) return dsa_error_status();
    bool store = (!dg || sg) && (!du || su);
    if (!store) {  // one of them already holds a gradient: zero the fresh one, add into both
        if (sg) DSA_TRY(dsa_memset0(dg->device, dg->data, dsa_nbytes(dg)));
        if (su) DSA_TRY(dsa_memset0(du->device, du->data, dsa_nbytes(du)));
    }
    return DSA_ON_DEVICE(g->device, dsa_swiglu_bwd_cpu(g, u, dout, dg, du), dsa_swiglu_bwd_cuda(g, u, dout, dg, du, store));
}

dsa_tensor *dsa_swiglu(dsa_ctx *c, dsa_tensor *gate, dsa_tensor *up) {
    DSA_TRY_NULL(dsa_check_float_pair("swiglu", gate, up));
    if (!dsa_same_shape(gate, up)) {
        char x[96], y[96];
        dsa_error_set(DSA_ERR_SHAPE, "swiglu: gate %s and up %s differ in shape", dsa_shape_str(gate, x, sizeof x),
                      dsa_shape_str(up, y, sizeof y));
        return NULL;
    }
    dsa_tensor *out = dsa_tensor_new(c, DSA_STEP, gate->dtype, gate->device, gate->ndim, gate->shape);
    if (!out) return NULL;
    DSA_TRY_NULL(DSA_ON_DEVICE(gate->device, dsa_swiglu_fwd_cpu(gate, up, out), dsa_swiglu_fwd_cuda(gate, up, out)));
    dsa_record(c, "swiglu", swiglu_backward, (dsa_tensor *[]){gate, up}, 2, &out, 1);
    return out;
}
