// AdamW over flat fp32 buffers with parameter groups (see adamw.h for the update).
#include "optim/adamw.h"
#include <math.h>
#include <string.h>
#include "core/device.h"
#include "kernels/dispatch.h"
#ifdef DSA_HAVE_CUDA
#include "optim/optim_cuda.h"
#endif

dsa_status dsa_adamw_update_cpu(float *params, const float *grads, float *m, float *v, int64_t n,
                                const dsa_adamw_hparams *h) {
    // Bias corrections in double: beta^t for large t must not lose precision.
    const double bc1 = 1.0 - pow((double)h->beta1, (double)h->t);
    const double bc2 = 1.0 - pow((double)h->beta2, (double)h->t);
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps;
    const float decay = 1.0f - h->lr * h->weight_decay;
    const float step_size = (float)(h->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float g = grads[i] * h->grad_scale;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = params[i] * decay;
        params[i] = p - step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
    return DSA_OK;
}

dsa_status dsa_adamw_update(dsa_device dev, float *params, const float *grads, float *m, float *v, int64_t n,
                            const dsa_adamw_hparams *h) {
    if (n < 0 || h->t < 1) return dsa_error_set(DSA_ERR_VALUE, "dsa_adamw_update: n=%lld t=%lld (need n >= 0, t >= 1)",
                                                (long long)n, (long long)h->t);
    if (n == 0) return DSA_OK;
    if (!params || !grads || !m || !v) return dsa_error_set(DSA_ERR_VALUE, "dsa_adamw_update: NULL buffer");
    return DSA_ON_DEVICE(dev, dsa_adamw_update_cpu(params, grads, m, v, n, h),
                         dsa_adamw_update_cuda(params, grads, m, v, n, h));
}

dsa_status dsa_adamw_init(dsa_adamw *opt, dsa_device dev, int64_t n, float beta1, float beta2, float eps) {
    memset(opt, 0, sizeof *opt);
    if (n < 1) return dsa_error_set(DSA_ERR_VALUE, "dsa_adamw_init: n=%lld must be >= 1", (long long)n);
    if (!(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f && eps > 0.0f))
        return dsa_error_set(DSA_ERR_VALUE, "dsa_adamw_init: need 0 <= beta1, beta2 < 1 and eps > 0 (got %g %g %g)",
                             beta1, beta2, eps);
    opt->beta1 = beta1; opt->beta2 = beta2; opt->eps = eps;
    opt->device = dev;
    opt->n = n;
    size_t bytes = (size_t)n * sizeof(float);
    DSA_TRY(dsa_device_malloc(dev, bytes, (void **)&opt->m));
    DSA_TRY(dsa_device_malloc(dev, bytes, (void **)&opt->v));
    DSA_TRY(dsa_memset0(dev, opt->m, bytes));
    return dsa_memset0(dev, opt->v, bytes);
}

void dsa_adamw_free(dsa_adamw *opt) {
    if (opt->m) dsa_device_free(opt->device, opt->m);
    if (opt->v) dsa_device_free(opt->device, opt->v);
    opt->m = opt->v = NULL;
}

dsa_status dsa_adamw_add_group(dsa_adamw *opt, const char *name, int64_t offset, int64_t count, float lr_mult,
                               float weight_decay, int *idx) {
    if (opt->n_groups >= DSA_ADAMW_MAX_GROUPS)
        return dsa_error_set(DSA_ERR_VALUE, "dsa_adamw_add_group: more than %d groups", DSA_ADAMW_MAX_GROUPS);
    if (offset < 0 || count < 1 || offset + count > opt->n)
        return dsa_error_set(DSA_ERR_INDEX, "dsa_adamw_add_group '%s': range [%lld, %lld) outside [0, %lld)", name,
                             (long long)offset, (long long)(offset + count), (long long)opt->n);
    for (int i = 0; i < opt->n_groups; i++) {
        const dsa_adamw_group *o = &opt->groups[i];
        if (offset < o->offset + o->count && o->offset < offset + count)
            return dsa_error_set(DSA_ERR_VALUE, "dsa_adamw_add_group '%s': range [%lld, %lld) overlaps group '%s'", name,
                                 (long long)offset, (long long)(offset + count), o->name);
    }
    dsa_adamw_group *g = &opt->groups[opt->n_groups];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name ? name : "");
    g->offset = offset;
    g->count = count;
    g->lr_mult = lr_mult;
    g->weight_decay = weight_decay;
    if (idx) *idx = opt->n_groups;
    opt->n_groups++;
    return DSA_OK;
}

int dsa_adamw_find_group(const dsa_adamw *opt, const char *name) {
    for (int i = 0; i < opt->n_groups; i++)
        if (strcmp(opt->groups[i].name, name) == 0) return i;
    return -1;
}

dsa_status dsa_adamw_step(dsa_adamw *opt, float *params, const float *grads, float lr, float grad_scale) {
    for (int i = 0; i < opt->n_groups; i++) {
        dsa_adamw_group *g = &opt->groups[i];
        if (g->frozen) continue;
        dsa_adamw_hparams h = {.lr = lr * g->lr_mult, .beta1 = opt->beta1, .beta2 = opt->beta2, .eps = opt->eps,
                               .weight_decay = g->weight_decay, .grad_scale = grad_scale, .t = g->step + 1};
        dsa_status s = dsa_adamw_update(opt->device, params + g->offset, grads + g->offset, opt->m + g->offset,
                                        opt->v + g->offset, g->count, &h);
        if (s != DSA_OK) {
            dsa_error_context("adamw group '%s'", g->name);
            return s;
        }
        g->step++;
    }
    return DSA_OK;
}
