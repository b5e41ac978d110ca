// Elementwise activations (scale, relu, silu, swiglu), any shape; backward accumulates.
#include <math.h>
#include "kernels/cpu/cpu_kernels.h"

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

dsa_status dsa_scale_fwd_cpu(const dsa_tensor *x, double s, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dsa_set(out, i, s * dsa_get(x, i));
    return DSA_OK;
}

dsa_status dsa_scale_bwd_cpu(double s, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(dout);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dsa_set(dx, i, dsa_get(dx, i) + s * dsa_get(dout, i));
    return DSA_OK;
}

dsa_status dsa_relu_fwd_cpu(const dsa_tensor *x, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        double v = dsa_get(x, i);
        dsa_set(out, i, v > 0 ? v : 0.0);
    }
    return DSA_OK;
}

dsa_status dsa_relu_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        if (dsa_get(x, i) > 0) dsa_set(dx, i, dsa_get(dx, i) + dsa_get(dout, i));
    return DSA_OK;
}

dsa_status dsa_silu_fwd_cpu(const dsa_tensor *x, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        double v = dsa_get(x, i);
        dsa_set(out, i, v * sigmoid(v));
    }
    return DSA_OK;
}

// d silu / dx = s + x s (1 - s), s = sigmoid(x).
static double silu_grad(double x) {
    double s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
}

dsa_status dsa_silu_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(x);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dsa_set(dx, i, dsa_get(dx, i) + dsa_get(dout, i) * silu_grad(dsa_get(x, i)));
    return DSA_OK;
}

dsa_status dsa_swiglu_fwd_cpu(const dsa_tensor *gate, const dsa_tensor *up, dsa_tensor *out) {
    int64_t n = dsa_numel(gate);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        double g = dsa_get(gate, i);
        dsa_set(out, i, g * sigmoid(g) * dsa_get(up, i));
    }
    return DSA_OK;
}

dsa_status dsa_swiglu_bwd_cpu(const dsa_tensor *gate, const dsa_tensor *up, const dsa_tensor *dout, dsa_tensor *dgate,
                              dsa_tensor *dup) {
    int64_t n = dsa_numel(gate);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) {
        double g = dsa_get(gate, i), u = dsa_get(up, i), d = dsa_get(dout, i);
        if (dgate) dsa_set(dgate, i, dsa_get(dgate, i) + d * u * silu_grad(g));
        if (dup) dsa_set(dup, i, dsa_get(dup, i) + d * g * sigmoid(g));
    }
    return DSA_OK;
}
