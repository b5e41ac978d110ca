#include "gradcheck.h"
#include <stdlib.h>
#include <string.h>

static double weighted_sum(const dsa_tensor *y, const double *r) {
    double s = 0;
    for (int64_t i = 0, n = dsa_numel(y); i < n; i++) s += dsa_get(y, i) * r[i];
    return s;
}

static dsa_tensor *eval(dsa_ctx *c, gradcheck_fn f, void *user, dsa_tensor **in) {
    dsa_ctx_step_reset(c);
    dsa_tensor *y = f(c, in, user);
    if (!y) fprintf(stderr, "gradcheck: forward failed: %s\n", dsa_error_message());
    return y;
}

double gradcheck(dsa_ctx *c, const char *name, gradcheck_fn f, void *user, dsa_tensor **in, int n_in, dsa_rng *rng) {
    const double h = 1e-6;
    for (int k = 0; k < n_in; k++) {
        if (in[k] && in[k]->requires_grad && (in[k]->dtype != DSA_F64 || in[k]->device != DSA_CPU)) {
            fprintf(stderr, "gradcheck %s: input %d must be f64 on cpu\n", name, k);
            return INFINITY;
        }
        if (in[k] && in[k]->grad) dsa_zero(in[k]->grad);
    }
    dsa_set_grad_enabled(c, true);
    dsa_tensor *y = eval(c, f, user, in);
    if (!y) return INFINITY;
    int64_t ny = dsa_numel(y);
    double *r = malloc((size_t)ny * sizeof(double) + 8);
    for (int64_t i = 0; i < ny; i++) r[i] = dsa_rng_normal(rng);
    if (!test_all_finite(y)) {
        fprintf(stderr, "gradcheck %s: forward output has NaN/Inf\n", name);
        free(r);
        return INFINITY;
    }
    dsa_tensor *seed = dsa_new(c, DSA_F64, y->ndim, y->shape);
    for (int64_t i = 0; i < ny; i++) dsa_set(seed, i, r[i]);
    if (dsa_backward_with_grad(c, y, seed) != DSA_OK) {
        fprintf(stderr, "gradcheck %s: backward failed: %s\n", name, dsa_error_message());
        free(r);
        return INFINITY;
    }
    // Keep the analytic gradients before the numeric evaluations recycle memory.
    double *analytic[DSA_NODE_MAX_IN * 2] = {0};
    for (int k = 0; k < n_in; k++) {
        if (!in[k] || !in[k]->requires_grad) continue;
        int64_t n = dsa_numel(in[k]);
        analytic[k] = calloc((size_t)n + 1, sizeof(double));
        if (in[k]->grad) dsa_to_host_f64(in[k]->grad, analytic[k]);
    }
    double worst = 0;
    bool prev = dsa_set_grad_enabled(c, false);
    for (int k = 0; k < n_in; k++) {
        if (!analytic[k]) continue;
        int64_t n = dsa_numel(in[k]);
        double *x = in[k]->data, maxdiff = 0, maxnum = 0, maxana = 0;
        bool bad = false;
        for (int64_t i = 0; i < n; i++) {
            double x0 = x[i];
            x[i] = x0 + h;
            dsa_tensor *yp = eval(c, f, user, in);
            double lp = yp ? weighted_sum(yp, r) : NAN;
            x[i] = x0 - h;
            dsa_tensor *ym = eval(c, f, user, in);
            double lm = ym ? weighted_sum(ym, r) : NAN;
            x[i] = x0;
            double num = (lp - lm) / (2 * h), ana = analytic[k][i];
            if (!isfinite(num) || !isfinite(ana)) bad = true;
            double d = fabs(num - ana);
            if (d > maxdiff) maxdiff = d;
            if (fabs(num) > maxnum) maxnum = fabs(num);
            if (fabs(ana) > maxana) maxana = fabs(ana);
        }
        double err = bad ? INFINITY : (maxdiff == 0 ? 0 : maxdiff / (maxnum > 0 ? maxnum : maxana));
        printf("gradcheck %-34s d/d%-10s n=%-6lld max|grad|=%-9.3g max rel err %.2e\n", name,
               in[k]->name[0] ? in[k]->name : "input", (long long)n, maxnum, err);
        if (err > worst || isnan(err)) worst = isnan(err) ? INFINITY : err;
        free(analytic[k]);
    }
    dsa_set_grad_enabled(c, prev);
    dsa_ctx_step_reset(c);
    free(r);
    return worst;
}

void gradcheck_expect(dsa_ctx *c, const char *name, gradcheck_fn f, void *user, dsa_tensor **in, int n_in,
                      dsa_rng *rng, double tol) {
    double err = gradcheck(c, name, f, user, in, n_in, rng);
    CHECK(err <= tol, "gradcheck %s: max rel err %.3e > %.1e", name, err, tol);
}
