#include "testing.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int g_test_pass = 0, g_test_fail = 0;

bool test_check(bool ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        g_test_pass++;
        return true;
    }
    g_test_fail++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return false;
}

int test_finish(void) {
    printf("%d passed, %d failed\n", g_test_pass, g_test_fail);
    return g_test_fail ? 1 : 0;
}

void test_skip(const char *reason) {
    printf("SKIP: %s\n", reason);
    exit(77);
}

void test_require_cuda(void) {
    const char *why = NULL;
    if (dsa_cuda_device_count(&why) == 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "needs a GPU: %s", why ? why : "none found");
        test_skip(msg);
    }
    if (dsa_cuda_init(0) != DSA_OK) {
        fprintf(stderr, "CUDA init failed: %s\n", dsa_error_message());
        exit(1);
    }
}

dsa_tensor *test_randn(dsa_ctx *c, dsa_dtype dt, dsa_device dev, int ndim, const int64_t *shape, dsa_rng *r,
                       double std, bool requires_grad) {
    dsa_tensor *t = dsa_tensor_new(c, DSA_PERSIST, dt, dev, ndim, shape);
    if (!t || dsa_fill_normal(t, r, 0.0, std) != DSA_OK) {
        fprintf(stderr, "test_randn: %s\n", dsa_error_message());
        exit(1);
    }
    t->requires_grad = requires_grad;
    return t;
}

static double *host_copy(const dsa_tensor *t) {
    double *h = malloc((size_t)dsa_numel(t) * sizeof(double) + 8);
    if (!h || dsa_to_host_f64(t, h) != DSA_OK) {
        fprintf(stderr, "host copy failed: %s\n", dsa_error_message());
        exit(1);
    }
    return h;
}

double test_max_abs_diff(const dsa_tensor *a, const dsa_tensor *b) {
    if (!a || !b || dsa_numel(a) != dsa_numel(b)) return INFINITY;
    double *x = host_copy(a), *y = host_copy(b), m = 0;
    for (int64_t i = 0, n = dsa_numel(a); i < n; i++) {
        if (isnan(x[i]) || isnan(y[i])) {
            m = INFINITY;
            break;
        }
        if (x[i] == y[i]) continue; // equal infinities
        double d = fabs(x[i] - y[i]);
        if (d > m) m = d;
    }
    free(x);
    free(y);
    return m;
}

double test_rel_l2(const dsa_tensor *a, const dsa_tensor *ref) {
    if (!a || !ref || dsa_numel(a) != dsa_numel(ref)) return INFINITY;
    double *x = host_copy(a), *y = host_copy(ref), num = 0, den = 0;
    for (int64_t i = 0, n = dsa_numel(a); i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i])) {
            if (x[i] == y[i] && !isnan(x[i])) continue; // same infinity
            num = INFINITY;
            break;
        }
        num += (x[i] - y[i]) * (x[i] - y[i]);
        den += y[i] * y[i];
    }
    free(x);
    free(y);
    if (num == 0) return 0;
    return den > 0 ? sqrt(num / den) : INFINITY;
}

bool test_all_finite(const dsa_tensor *t) {
    double *x = host_copy(t);
    bool ok = true;
    for (int64_t i = 0, n = dsa_numel(t); i < n && ok; i++) ok = isfinite(x[i]);
    free(x);
    return ok;
}

dsa_status test_take_error(char *msg, size_t n) {
    dsa_status s = dsa_error_status();
    if (msg) snprintf(msg, n, "%s", dsa_error_message());
    dsa_error_clear();
    return s;
}
