#include "autograd.h"
#include <stdlib.h>
#include <string.h>
#include "context.h"
#include "device.h"
#include "profile.h"

bool dsa_set_grad_enabled(dsa_ctx *c, bool enabled) {
    bool prev = c->grad_enabled;
    c->grad_enabled = enabled;
    return prev;
}

dsa_node *dsa_record(dsa_ctx *c, const char *op, dsa_backward_fn backward, dsa_tensor *const *in, int n_in,
                     dsa_tensor *const *out, int n_out) {
    dsa_profile_mark(op, DSA_PROF_FWD);  // the op's forward work ends here
    bool any = false;
    for (int i = 0; i < n_in; i++) any |= in[i] && in[i]->requires_grad;
    if (!any || !c->grad_enabled) return NULL;
    if (n_in > DSA_NODE_MAX_IN || n_out > DSA_NODE_MAX_OUT) DSA_FATAL("op %s: too many inputs/outputs", op);
    dsa_node *n = dsa_arena_alloc(&c->meta[DSA_STEP], sizeof *n);
    if (!n) return NULL;
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    n->n_in = n_in;
    n->n_out = n_out;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    for (int i = 0; i < n_out; i++) {
        n->out[i] = out[i];
        if (out[i] && dsa_dtype_is_float(out[i]->dtype)) {
            out[i]->requires_grad = true;
            out[i]->creator = n;
        }
    }
    if (c->tape.n == c->tape.cap) {
        int cap = c->tape.cap ? 2 * c->tape.cap : 256;
        dsa_node **nn = realloc(c->tape.nodes, (size_t)cap * sizeof *nn);
        if (!nn) DSA_FATAL("cannot grow the autograd tape to %d nodes", cap);
        c->tape.nodes = nn;
        c->tape.cap = cap;
    }
    c->tape.nodes[c->tape.n++] = n;
    return n;
}

dsa_tensor *dsa_grad_buffer(dsa_ctx *c, dsa_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        dsa_scope scope = t->persistent ? DSA_PERSIST : DSA_STEP;
        t->grad = dsa_zeros(c, scope, dsa_grad_dtype(t->dtype), t->device, t->ndim, t->shape);
        if (t->grad) dsa_set_name(t->grad, "grad(%s)", t->name);
    }
    return t->grad;
}

dsa_tensor *dsa_grad_buffer_to_store(dsa_ctx *c, dsa_tensor *t, bool *store) {
    *store = false;
    if (!t || !t->requires_grad || t->grad || t->persistent) return dsa_grad_buffer(c, t);
    t->grad = dsa_tensor_new(c, DSA_STEP, dsa_grad_dtype(t->dtype), t->device, t->ndim, t->shape);
    if (!t->grad) return NULL;
    dsa_set_name(t->grad, "grad(%s)", t->name);
    *store = true;
    return t->grad;
}

bool dsa_grad_adopt(dsa_ctx *c, dsa_tensor *x, dsa_tensor *g) {
    if (!x || !x->requires_grad || x->grad || x->persistent || !g || g->persistent) return false;
    if (g->dtype != dsa_grad_dtype(x->dtype) || g->device != x->device || dsa_numel(g) != dsa_numel(x)) return false;
    dsa_tensor *w = dsa_wrap(c, DSA_STEP, g->dtype, g->device, g->data, x->ndim, x->shape);
    if (!w) return false;  // (the caller's buffer path reports an allocation failure)
    dsa_set_name(w, "grad(%s)", x->name);
    x->grad = w;
    return true;
}

static dsa_status run_tape(dsa_ctx *c) {
    for (int k = c->tape.n - 1; k >= 0; k--) {
        dsa_node *n = c->tape.nodes[k];
        bool has_grad = false;
        for (int i = 0; i < n->n_out; i++) has_grad |= n->out[i] && n->out[i]->grad;
        if (!has_grad) continue;
        dsa_profile_mark("(autograd)", DSA_PROF_OTHER);
        dsa_status s = n->backward(c, n);
        dsa_profile_mark(n->op, DSA_PROF_BWD);
        if (s != DSA_OK) {
            dsa_error_context("backward of %s", n->op);
            c->tape.n = 0;
            return s;
        }
    }
    c->tape.n = 0;
    return DSA_OK;
}

dsa_status dsa_backward(dsa_ctx *c, dsa_tensor *loss) {
    DSA_TRY(dsa_check_tensor("backward", "loss", loss));
    if (dsa_numel(loss) != 1) {
        char b[96];
        return dsa_error_set(DSA_ERR_SHAPE, "backward: loss must be a scalar, got %s",
                             dsa_shape_str(loss, b, sizeof b));
    }
    if (!loss->requires_grad)
        return dsa_error_set(DSA_ERR_STATE, "backward: '%s' does not depend on anything that requires grad",
                             loss->name);
    dsa_tensor *g = dsa_grad_buffer(c, loss);
    if (!g) return dsa_error_status();
    dsa_tensor *one = dsa_tensor_new(c, DSA_STEP, g->dtype, DSA_CPU, 0, NULL);
    if (!one) return dsa_error_status();
    dsa_set(one, 0, 1.0);
    DSA_TRY(dsa_memcpy(g->device, g->data, DSA_CPU, one->data, dsa_dtype_size(g->dtype)));
    return run_tape(c);
}

dsa_status dsa_backward_with_grad(dsa_ctx *c, dsa_tensor *t, dsa_tensor *grad) {
    DSA_TRY(dsa_check_tensor("backward", "output", t));
    DSA_TRY(dsa_check_tensor("backward", "grad", grad));
    char a[96], b[96];
    if (!dsa_same_shape(t, grad) || grad->dtype != dsa_grad_dtype(t->dtype) || grad->device != t->device)
        return dsa_error_set(DSA_ERR_SHAPE, "backward: upstream grad %s does not fit output %s",
                             dsa_shape_str(grad, b, sizeof b), dsa_shape_str(t, a, sizeof a));
    if (!t->requires_grad)
        return dsa_error_set(DSA_ERR_STATE, "backward: '%s' does not depend on anything that requires grad", t->name);
    dsa_tensor *g = dsa_grad_buffer(c, t);
    if (!g) return dsa_error_status();
    DSA_TRY(dsa_memcpy(g->device, g->data, grad->device, grad->data, dsa_nbytes(g)));
    return run_tape(c);
}

dsa_tensor *dsa_detach(dsa_ctx *c, dsa_tensor *t) {
    if (dsa_check_tensor("detach", "input", t) != DSA_OK) return NULL;
    dsa_tensor *d = dsa_wrap(c, DSA_STEP, t->dtype, t->device, t->data, t->ndim, t->shape);
    if (d) dsa_set_name(d, "detach(%s)", t->name);
    return d;
}
