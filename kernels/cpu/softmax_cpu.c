// Softmax, logsumexp and cross-entropy over the last dim, one row per iteration, in double.
// -inf entries get probability 0; a row of all -inf has softmax 0 and logsumexp -inf.
#include <math.h>
#include "kernels/cpu/cpu_kernels.h"

static void rows_and_dim(const dsa_tensor *x, int64_t *rows, int64_t *D) {
    *D = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    *rows = *D > 0 ? dsa_numel(x) / *D : 0;
}

// Row max and sum(exp(x - max)); max = -inf for an all -inf (or empty) row.
static void row_stats(const dsa_tensor *x, int64_t off, int64_t D, double *mx, double *se) {
    double m = -INFINITY, s = 0.0;
    for (int64_t j = 0; j < D; j++) m = fmax(m, dsa_get(x, off + j));
    if (m != -INFINITY)
        for (int64_t j = 0; j < D; j++) s += exp(dsa_get(x, off + j) - m);
    *mx = m;
    *se = s;
}

static double row_lse(const dsa_tensor *x, int64_t off, int64_t D) {
    double m, s;
    row_stats(x, off, D, &m, &s);
    return m == -INFINITY ? -INFINITY : m + log(s);
}

dsa_status dsa_softmax_fwd_cpu(const dsa_tensor *x, dsa_tensor *out) {
    int64_t rows, D;
    rows_and_dim(x, &rows, &D);
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        double m, s;
        row_stats(x, r * D, D, &m, &s);
        for (int64_t j = 0; j < D; j++)
            dsa_set(out, r * D + j, m == -INFINITY ? 0.0 : exp(dsa_get(x, r * D + j) - m) / s);
    }
    return DSA_OK;
}

dsa_status dsa_softmax_bwd_cpu(const dsa_tensor *out, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t rows, D;
    rows_and_dim(out, &rows, &D);
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        double dot = 0.0;
        for (int64_t j = 0; j < D; j++) dot += dsa_get(dout, r * D + j) * dsa_get(out, r * D + j);
        for (int64_t j = 0; j < D; j++) {
            int64_t i = r * D + j;
            dsa_set(dx, i, dsa_get(dx, i) + dsa_get(out, i) * (dsa_get(dout, i) - dot));
        }
    }
    return DSA_OK;
}

dsa_status dsa_logsumexp_fwd_cpu(const dsa_tensor *x, dsa_tensor *out) {
    int64_t rows, D;
    rows_and_dim(x, &rows, &D);
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) dsa_set(out, r, row_lse(x, r * D, D));
    return DSA_OK;
}

dsa_status dsa_logsumexp_bwd_cpu(const dsa_tensor *x, const dsa_tensor *out, const dsa_tensor *dout, dsa_tensor *dx) {
    (void)out;  // recomputed in double: out may be rounded to f32/bf16
    int64_t rows, D;
    rows_and_dim(x, &rows, &D);
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        double lse = row_lse(x, r * D, D), g = dsa_get(dout, r);
        if (lse == -INFINITY) continue;
        for (int64_t j = 0; j < D; j++) {
            int64_t i = r * D + j;
            dsa_set(dx, i, dsa_get(dx, i) + g * exp(dsa_get(x, i) - lse));
        }
    }
    return DSA_OK;
}

static bool ce_counts(int t, int ignore_index, int64_t V) { return t != ignore_index && t >= 0 && t < V; }

dsa_status dsa_cross_entropy_fwd_cpu(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                     dsa_tensor *out) {
    int64_t N = logits->shape[0], V = logits->shape[1];
    const int32_t *tg = (const int32_t *)targets->data;
    double loss = 0.0, count = 0.0;
#pragma omp parallel for reduction(+ : loss, count) if (N * V > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < N; r++) {
        if (!ce_counts(tg[r], ignore_index, V)) continue;
        loss += row_lse(logits, r * V, V) - dsa_get(logits, r * V + tg[r]);
        count += 1.0;
    }
    dsa_set(out, 0, count > 0 ? loss / count : 0.0);
    return DSA_OK;
}

dsa_status dsa_cross_entropy_bwd_cpu(const dsa_tensor *logits, const dsa_tensor *targets, int ignore_index,
                                     const dsa_tensor *dout, dsa_tensor *dlogits) {
    int64_t N = logits->shape[0], V = logits->shape[1], count = 0;
    const int32_t *tg = (const int32_t *)targets->data;
    for (int64_t r = 0; r < N; r++) count += ce_counts(tg[r], ignore_index, V);
    if (count == 0) return DSA_OK;
    double g = dsa_get(dout, 0) / (double)count;
#pragma omp parallel for if (N * V > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < N; r++) {
        if (!ce_counts(tg[r], ignore_index, V)) continue;
        double lse = row_lse(logits, r * V, V);
        for (int64_t j = 0; j < V; j++) {
            int64_t i = r * V + j;
            double p = lse == -INFINITY ? 0.0 : exp(dsa_get(logits, i) - lse);
            dsa_set(dlogits, i, dsa_get(dlogits, i) + g * (p - (j == tg[r] ? 1.0 : 0.0)));
        }
    }
    return DSA_OK;
}
