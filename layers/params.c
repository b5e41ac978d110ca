#include "layers/params.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/device.h"
#include "core/rng.h"

dsa_status dsa_params_declare(dsa_param_set *ps, dsa_tensor **slot, dsa_param_class cls, dsa_param_init init,
                              double init_std, int ndim, const int64_t *shape, const char *fmt, ...) {
    if (ps->n == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 64;
        dsa_param *np = realloc(ps->p, (size_t)cap * sizeof *np);
        if (!np) return dsa_error_set(DSA_ERR_MEMORY, "params: cannot grow the parameter list");
        ps->p = np;
        ps->cap = cap;
    }
    dsa_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= shape[i];
    }
    p->cls = cls;
    p->init = init;
    p->init_std = init_std;
    p->slot = slot;
    return DSA_OK;
}

dsa_status dsa_params_alloc(dsa_param_set *ps, dsa_ctx *c, dsa_dtype dt, dsa_device dev) {
    ps->dtype = dt;
    ps->device = dev;
    int64_t off = 0;
    for (int cls = 0; cls < DSA_PCLASS_COUNT; cls++) {
        ps->class_offset[cls] = off;
        for (int i = 0; i < ps->n; i++)
            if ((int)ps->p[i].cls == cls) {
                ps->p[i].offset = off;
                off += ps->p[i].numel;
            }
        ps->class_numel[cls] = off - ps->class_offset[cls];
    }
    ps->numel = off;
    ps->flat = dsa_zeros(c, DSA_PERSIST, dt, dev, 1, DSA_SHAPE(off));
    ps->grad_flat = dsa_zeros(c, DSA_PERSIST, dsa_grad_dtype(dt), dev, 1, DSA_SHAPE(off));
    if (!ps->flat || !ps->grad_flat) return dsa_error_status();
    dsa_set_name(ps->flat, "params");
    dsa_set_name(ps->grad_flat, "grads");
    size_t es = dsa_dtype_size(dt), ges = dsa_dtype_size(dsa_grad_dtype(dt));
    for (int i = 0; i < ps->n; i++) {
        dsa_param *p = &ps->p[i];
        dsa_tensor *t = dsa_wrap(c, DSA_PERSIST, dt, dev, (char *)ps->flat->data + p->offset * es, p->ndim, p->shape);
        dsa_tensor *g = dsa_wrap(c, DSA_PERSIST, dsa_grad_dtype(dt), dev, (char *)ps->grad_flat->data + p->offset * ges,
                                 p->ndim, p->shape);
        if (!t || !g) return dsa_error_status();
        dsa_set_name(t, "%s", p->name);
        dsa_set_name(g, "grad(%s)", p->name);
        t->persistent = g->persistent = true;
        t->requires_grad = true;
        t->grad = g;
        p->t = t;
        if (p->slot) *p->slot = t;
    }
    return DSA_OK;
}

dsa_status dsa_params_init(dsa_param_set *ps, uint64_t seed) {
    dsa_rng base;
    dsa_rng_init(&base, seed);
    for (int i = 0; i < ps->n; i++) {
        dsa_param *p = &ps->p[i];
        dsa_rng r = dsa_rng_fork(&base, 1000 + (uint64_t)i);
        if (p->init == DSA_INIT_NORMAL) {
            DSA_TRY(dsa_fill_normal(p->t, &r, 0.0, p->init_std));
        } else {
            DSA_TRY(dsa_fill_uniform(p->t, &r, p->init == DSA_INIT_ONES ? 1.0 : 0.0,
                                     p->init == DSA_INIT_ONES ? 1.0 : 0.0));
        }
    }
    return DSA_OK;
}

dsa_status dsa_params_zero_grad(dsa_param_set *ps) { return dsa_zero(ps->grad_flat); }

void dsa_params_set_trainable(dsa_param_set *ps, bool trunk, bool indexer) {
    for (int i = 0; i < ps->n; i++) {
        bool idx = ps->p[i].cls == DSA_PCLASS_INDEXER_DECAY || ps->p[i].cls == DSA_PCLASS_INDEXER_NODECAY;
        ps->p[i].t->requires_grad = idx ? indexer : trunk;
    }
}

const dsa_param *dsa_params_find(const dsa_param_set *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (!strcmp(ps->p[i].name, name)) return &ps->p[i];
    return NULL;
}

void dsa_params_free(dsa_param_set *ps) {
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}
