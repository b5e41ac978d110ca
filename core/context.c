#include "context.h"
#include <stdlib.h>
#include <string.h>
#include "device.h"

dsa_ctx *dsa_ctx_create(dsa_device dev) {
    if (dev == DSA_CUDA && !dsa_cuda()) {
        if (dsa_cuda_init(0) != DSA_OK) return NULL;
    }
    dsa_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        dsa_error_set(DSA_ERR_MEMORY, "cannot allocate a context");
        return NULL;
    }
    c->device = dev;
    for (int s = 0; s < 2; s++) {
        dsa_arena_init(&c->meta[s], DSA_CPU, (size_t)1 << 20);
        dsa_arena_init(&c->data[s][DSA_CPU], DSA_CPU, (size_t)16 << 20);
        dsa_arena_init(&c->data[s][DSA_CUDA], DSA_CUDA, (size_t)256 << 20);
    }
    c->grad_enabled = true;
    return c;
}

void dsa_ctx_free(dsa_ctx *c) {
    if (!c) return;
    for (int s = 0; s < 2; s++) {
        dsa_arena_free(&c->meta[s]);
        dsa_arena_free(&c->data[s][DSA_CPU]);
        dsa_arena_free(&c->data[s][DSA_CUDA]);
    }
    free(c->tape.nodes);
    free(c);
}

void dsa_ctx_step_reset(dsa_ctx *c) {
    c->tape.n = 0;
    dsa_arena_reset(&c->meta[DSA_STEP]);
    dsa_arena_reset(&c->data[DSA_STEP][DSA_CPU]);
    dsa_arena_reset(&c->data[DSA_STEP][DSA_CUDA]);
}

size_t dsa_ctx_peak_bytes(const dsa_ctx *c, dsa_device dev) {
    return c->data[DSA_STEP][dev].peak + c->data[DSA_PERSIST][dev].reserved;
}

size_t dsa_ctx_reserved_bytes(const dsa_ctx *c, dsa_device dev) {
    return c->data[DSA_STEP][dev].reserved + c->data[DSA_PERSIST][dev].reserved;
}

void *dsa_step_alloc(dsa_ctx *c, size_t bytes) { return dsa_arena_alloc(&c->meta[DSA_STEP], bytes); }

static dsa_tensor *new_struct(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, int ndim,
                              const int64_t *shape) {
    if (ndim < 0 || ndim > DSA_MAX_DIMS) {
        dsa_error_set(DSA_ERR_SHAPE, "tensor: %d dims requested, at most %d supported", ndim, DSA_MAX_DIMS);
        return NULL;
    }
    if (dt < 0 || dt >= DSA_NUM_DTYPES) {
        dsa_error_set(DSA_ERR_DTYPE, "tensor: unknown dtype %d", (int)dt);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            dsa_error_set(DSA_ERR_SHAPE, "tensor: negative size %lld in dim %d", (long long)shape[i], i);
            return NULL;
        }
    }
    dsa_tensor *t = dsa_arena_alloc(&c->meta[scope], sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->device = dev;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->persistent = scope == DSA_PERSIST;
    return t;
}

dsa_tensor *dsa_tensor_new(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape) {
    if (dev == DSA_CUDA && !dsa_cuda()) {
        dsa_error_set(DSA_ERR_DEVICE, "tensor on cuda requested but CUDA is not initialized%s",
                      dsa_cuda_built() ? "" : " (this build has no CUDA support)");
        return NULL;
    }
    dsa_tensor *t = new_struct(c, scope, dt, dev, ndim, shape);
    if (!t) return NULL;
    t->data = dsa_arena_alloc(&c->data[scope][dev], dsa_nbytes(t));
    return t->data ? t : NULL;
}

dsa_tensor *dsa_new(dsa_ctx *c, dsa_dtype dt, int ndim, const int64_t *shape) {
    return dsa_tensor_new(c, DSA_STEP, dt, c->device, ndim, shape);
}

dsa_tensor *dsa_zeros(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape) {
    dsa_tensor *t = dsa_tensor_new(c, scope, dt, dev, ndim, shape);
    if (t && dsa_zero(t) != DSA_OK) return NULL;
    return t;
}

dsa_tensor *dsa_wrap(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, void *data, int ndim,
                     const int64_t *shape) {
    dsa_tensor *t = new_struct(c, scope, dt, dev, ndim, shape);
    if (t) t->data = data;
    return t;
}

dsa_tensor *dsa_from_host(dsa_ctx *c, dsa_scope scope, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape,
                          const void *host) {
    dsa_tensor *t = dsa_tensor_new(c, scope, dt, dev, ndim, shape);
    if (!t) return NULL;
    if (dsa_memcpy(dev, t->data, DSA_CPU, host, dsa_nbytes(t)) != DSA_OK) return NULL;
    return t;
}

dsa_status dsa_to_host(const dsa_tensor *t, void *host) {
    return dsa_memcpy(DSA_CPU, host, t->device, t->data, dsa_nbytes(t));
}

dsa_status dsa_to_host_f64(const dsa_tensor *t, double *host) {
    int64_t n = dsa_numel(t);
    const void *src = t->data;
    void *tmp = NULL;
    if (t->device != DSA_CPU) {
        tmp = malloc(dsa_nbytes(t) + 1);
        if (!tmp) return dsa_error_set(DSA_ERR_MEMORY, "dsa_to_host_f64: no host memory");
        dsa_status s = dsa_to_host(t, tmp);
        if (s != DSA_OK) {
            free(tmp);
            return s;
        }
        src = tmp;
    }
    for (int64_t i = 0; i < n; i++) host[i] = dsa_load(src, t->dtype, i);
    free(tmp);
    return DSA_OK;
}

dsa_tensor *dsa_copy(dsa_ctx *c, dsa_scope scope, const dsa_tensor *t, dsa_device dev, dsa_dtype dt) {
    dsa_tensor *o = dsa_tensor_new(c, scope, dt, dev, t->ndim, t->shape);
    if (!o) return NULL;
    if (dt == t->dtype) {
        if (dsa_memcpy(dev, o->data, t->device, t->data, dsa_nbytes(t)) != DSA_OK) return NULL;
        return o;
    }
    // Conversion goes through the host: this is for set-up and I/O, not the step loop.
    int64_t n = dsa_numel(t);
    double *h = malloc((size_t)n * sizeof(double) + 8);
    void *conv = malloc(dsa_nbytes(o) + 8);
    dsa_status s = (h && conv) ? dsa_to_host_f64(t, h) : dsa_error_set(DSA_ERR_MEMORY, "dsa_copy: no host memory");
    if (s == DSA_OK) {
        for (int64_t i = 0; i < n; i++) dsa_store(conv, dt, i, h[i]);
        s = dsa_memcpy(dev, o->data, DSA_CPU, conv, dsa_nbytes(o));
    }
    free(h);
    free(conv);
    return s == DSA_OK ? o : NULL;
}

dsa_status dsa_zero(dsa_tensor *t) { return dsa_memset0(t->device, t->data, dsa_nbytes(t)); }

static dsa_status fill_random(dsa_tensor *t, dsa_rng *r, double a, double b, bool normal) {
    if (!dsa_dtype_is_float(t->dtype))
        return dsa_error_set(DSA_ERR_DTYPE, "random fill of '%s': dtype %s is not a float type", t->name,
                             dsa_dtype_name(t->dtype));
    int64_t n = dsa_numel(t);
    void *h = t->device == DSA_CPU ? t->data : malloc(dsa_nbytes(t) + 8);
    if (!h) return dsa_error_set(DSA_ERR_MEMORY, "random fill: no host memory");
    for (int64_t i = 0; i < n; i++)
        dsa_store(h, t->dtype, i, normal ? a + b * dsa_rng_normal(r) : a + (b - a) * dsa_rng_uniform(r));
    dsa_status s = DSA_OK;
    if (t->device != DSA_CPU) {
        s = dsa_memcpy(t->device, t->data, DSA_CPU, h, dsa_nbytes(t));
        free(h);
    }
    return s;
}

dsa_status dsa_fill_normal(dsa_tensor *t, dsa_rng *r, double mean, double std) {
    return fill_random(t, r, mean, std, true);
}
dsa_status dsa_fill_uniform(dsa_tensor *t, dsa_rng *r, double lo, double hi) {
    return fill_random(t, r, lo, hi, false);
}
