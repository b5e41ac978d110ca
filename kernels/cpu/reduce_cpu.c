// Full reductions to a 0-dim tensor (sum, mean), in double.
#include "kernels/cpu/cpu_kernels.h"

static double total(const dsa_tensor *x) {
    int64_t n = dsa_numel(x);
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) s += dsa_get(x, i);
    return s;
}

static void add_constant(dsa_tensor *dx, double g) {
    int64_t n = dsa_numel(dx);
#pragma omp parallel for if (n > DSA_OMP_MIN_WORK)
    for (int64_t i = 0; i < n; i++) dsa_set(dx, i, dsa_get(dx, i) + g);
}

dsa_status dsa_sum_fwd_cpu(const dsa_tensor *x, dsa_tensor *out) {
    dsa_set(out, 0, total(x));
    return DSA_OK;
}

dsa_status dsa_sum_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) {
    (void)x;
    add_constant(dx, dsa_get(dout, 0));
    return DSA_OK;
}

dsa_status dsa_mean_fwd_cpu(const dsa_tensor *x, dsa_tensor *out) {
    int64_t n = dsa_numel(x);
    dsa_set(out, 0, n > 0 ? total(x) / (double)n : 0.0);
    return DSA_OK;
}

dsa_status dsa_mean_bwd_cpu(const dsa_tensor *x, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t n = dsa_numel(x);
    if (n > 0) add_constant(dx, dsa_get(dout, 0) / (double)n);
    return DSA_OK;
}
