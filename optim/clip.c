// Global-norm gradient clipping: sum of squares, scale factor, scaling (see clip.h).
#include "optim/clip.h"
#include <math.h>
#include "kernels/dispatch.h"
#ifdef DSA_HAVE_CUDA
#include "optim/optim_cuda.h"
#endif

dsa_status dsa_grad_sumsq_cpu(const float *g, int64_t n, double *out) {
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n > 65536)
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    *out = s;
    return DSA_OK;
}

dsa_status dsa_grad_scale_cpu(float *g, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) g[i] *= scale;
    return DSA_OK;
}

dsa_status dsa_grad_sumsq(dsa_device dev, const float *g, int64_t n, double *out) {
    if (!out || (n > 0 && !g) || n < 0) return dsa_error_set(DSA_ERR_VALUE, "dsa_grad_sumsq: bad arguments (n=%lld)", (long long)n);
    if (n == 0) { *out = 0.0; return DSA_OK; }
    return DSA_ON_DEVICE(dev, dsa_grad_sumsq_cpu(g, n, out), dsa_grad_sumsq_cuda(g, n, out));
}

dsa_status dsa_grad_scale(dsa_device dev, float *g, int64_t n, float scale) {
    if ((n > 0 && !g) || n < 0) return dsa_error_set(DSA_ERR_VALUE, "dsa_grad_scale: bad arguments (n=%lld)", (long long)n);
    if (n == 0 || scale == 1.0f) return DSA_OK;
    return DSA_ON_DEVICE(dev, dsa_grad_scale_cpu(g, n, scale), dsa_grad_scale_cuda(g, n, scale));
}

float dsa_clip_scale(double sumsq, double max_norm, double *norm) {
    double nrm = sqrt(sumsq);
    if (norm) *norm = nrm;
    if (max_norm <= 0.0 || !isfinite(nrm)) return 1.0f;
    double s = max_norm / (nrm + 1e-6);
    return s < 1.0 ? (float)s : 1.0f;
}
