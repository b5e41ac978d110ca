// RMSNorm and LayerNorm over the last dim, one row per OpenMP iteration, statistics in double.
// The backward recomputes the per-row statistics instead of saving them. dw/db sum over rows, so
// they are accumulated serially after the parallel dx pass.
#include <math.h>
#include "kernels/cpu/cpu_kernels.h"

static void rows_and_dim(const dsa_tensor *x, int64_t *rows, int64_t *D) {
    *D = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    *rows = *D > 0 ? dsa_numel(x) / *D : 0;
}

static double rms_rstd(const dsa_tensor *x, int64_t off, int64_t D, double eps) {
    double ss = 0.0;
    for (int64_t j = 0; j < D; j++) {
        double v = dsa_get(x, off + j);
        ss += v * v;
    }
    return 1.0 / sqrt(ss / (double)D + eps);
}

dsa_status dsa_rmsnorm_fwd_cpu(const dsa_tensor *x, const dsa_tensor *w, double eps, dsa_tensor *out) {
    int64_t rows, D;
    rows_and_dim(x, &rows, &D);
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        double rstd = rms_rstd(x, r * D, D, eps);
        for (int64_t j = 0; j < D; j++) dsa_set(out, r * D + j, dsa_get(x, r * D + j) * rstd * dsa_get(w, j));
    }
    return DSA_OK;
}

// y = x r w, r = (mean(x^2) + eps)^-1/2: dx = r (g w) - x r^3 mean(g w x), dw = sum_rows g x r.
dsa_status dsa_rmsnorm_bwd_cpu(const dsa_tensor *x, const dsa_tensor *w, double eps, const dsa_tensor *dout,
                               dsa_tensor *dx, dsa_tensor *dw) {
    int64_t rows, D;
    rows_and_dim(x, &rows, &D);
    if (dx) {
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
        for (int64_t r = 0; r < rows; r++) {
            int64_t o = r * D;
            double rstd = rms_rstd(x, o, D, eps), dot = 0.0;
            for (int64_t j = 0; j < D; j++) dot += dsa_get(dout, o + j) * dsa_get(w, j) * dsa_get(x, o + j);
            double k = rstd * rstd * rstd * dot / (double)D;
            for (int64_t j = 0; j < D; j++)
                dsa_set(dx, o + j, dsa_get(dx, o + j) + rstd * dsa_get(dout, o + j) * dsa_get(w, j) - k * dsa_get(x, o + j));
        }
    }
    if (dw) {
        for (int64_t r = 0; r < rows; r++) {
            double rstd = rms_rstd(x, r * D, D, eps);
            for (int64_t j = 0; j < D; j++)
                dsa_set(dw, j, dsa_get(dw, j) + dsa_get(dout, r * D + j) * dsa_get(x, r * D + j) * rstd);
        }
    }
    return DSA_OK;
}

static void ln_stats(const dsa_tensor *x, int64_t off, int64_t D, double eps, double *mean, double *rstd) {
    double m = 0.0, v = 0.0;
    for (int64_t j = 0; j < D; j++) m += dsa_get(x, off + j);
    m /= (double)D;
    for (int64_t j = 0; j < D; j++) {
        double d = dsa_get(x, off + j) - m;
        v += d * d;
    }
    *mean = m;
    *rstd = 1.0 / sqrt(v / (double)D + eps);
}

dsa_status dsa_layernorm_fwd_cpu(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                 dsa_tensor *out) {
    int64_t rows, D;
    rows_and_dim(x, &rows, &D);
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        double m, rstd;
        ln_stats(x, r * D, D, eps, &m, &rstd);
        for (int64_t j = 0; j < D; j++)
            dsa_set(out, r * D + j, (dsa_get(x, r * D + j) - m) * rstd * dsa_get(w, j) + dsa_get(b, j));
    }
    return DSA_OK;
}

// xhat = (x - m) r, gh = g w: dx = r (gh - mean(gh) - xhat mean(gh xhat)); dw = sum g xhat; db = sum g.
dsa_status dsa_layernorm_bwd_cpu(const dsa_tensor *x, const dsa_tensor *w, const dsa_tensor *b, double eps,
                                 const dsa_tensor *dout, dsa_tensor *dx, dsa_tensor *dw, dsa_tensor *db) {
    (void)b;
    int64_t rows, D;
    rows_and_dim(x, &rows, &D);
    if (dx) {
#pragma omp parallel for if (rows * D > DSA_OMP_MIN_WORK)
        for (int64_t r = 0; r < rows; r++) {
            int64_t o = r * D;
            double m, rstd, s1 = 0.0, s2 = 0.0;
            ln_stats(x, o, D, eps, &m, &rstd);
            for (int64_t j = 0; j < D; j++) {
                double gh = dsa_get(dout, o + j) * dsa_get(w, j);
                s1 += gh;
                s2 += gh * (dsa_get(x, o + j) - m) * rstd;
            }
            s1 /= (double)D;
            s2 /= (double)D;
            for (int64_t j = 0; j < D; j++) {
                double gh = dsa_get(dout, o + j) * dsa_get(w, j), xh = (dsa_get(x, o + j) - m) * rstd;
                dsa_set(dx, o + j, dsa_get(dx, o + j) + rstd * (gh - s1 - xh * s2));
            }
        }
    }
    if (dw || db) {
        for (int64_t r = 0; r < rows; r++) {
            double m, rstd;
            ln_stats(x, r * D, D, eps, &m, &rstd);
            for (int64_t j = 0; j < D; j++) {
                double g = dsa_get(dout, r * D + j);
                if (dw) dsa_set(dw, j, dsa_get(dw, j) + g * (dsa_get(x, r * D + j) - m) * rstd);
                if (db) dsa_set(db, j, dsa_get(db, j) + g);
            }
        }
    }
    return DSA_OK;
}
