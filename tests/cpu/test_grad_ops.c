// Gradient checks of every generic op (kernels/ops.h) against central finite differences, in fp64,
// over several shapes each (odd sizes included). Prints one error line per input, then the worst
// error per op.
#include <string.h>
#include "common/gradcheck.h"

typedef struct {
    int i[6];
    double f[2];
    int64_t s[4];
} args;

static dsa_ctx *C;
static dsa_rng RNG;

// Worst error per op, for the summary at the end.
#define MAX_OPS 40
static const char *g_ops[MAX_OPS];
static double g_worst[MAX_OPS];
static int g_nops;

static void note(const char *op, double err) {
    int k = 0;
    while (k < g_nops && strcmp(g_ops[k], op) != 0) k++;
    if (k == g_nops) {
        g_ops[g_nops] = op;
        g_worst[g_nops++] = 0;
    }
    if (err > g_worst[k] || isnan(err)) g_worst[k] = isnan(err) ? INFINITY : err;
}

static dsa_tensor *randn(int ndim, const int64_t *shape, const char *name) {
    dsa_tensor *t = test_randn(C, DSA_F64, DSA_CPU, ndim, shape, &RNG, 1.0, true);
    dsa_set_name(t, "%s", name);
    return t;
}

static dsa_tensor *ints(int64_t n, const int32_t *v) {
    return dsa_from_host(C, DSA_PERSIST, DSA_I32, DSA_CPU, 1, DSA_SHAPE(n), v);
}

static void check(const char *op, int shape_no, gradcheck_fn f, void *user, dsa_tensor **in, int n_in) {
    char name[64];
    snprintf(name, sizeof name, "%s #%d", op, shape_no);
    double err = gradcheck(C, name, f, user, in, n_in, &RNG);
    CHECK(err <= GRADCHECK_TOL, "%s: max rel err %.3e > %.1e", name, err, GRADCHECK_TOL);
    note(op, err);
}

// ---- forwards under test ----
static dsa_tensor *f_matmul(dsa_ctx *c, dsa_tensor **in, void *u) {
    args *a = u;
    return dsa_matmul(c, in[0], in[1], a->i[0], a->i[1]);
}
static dsa_tensor *f_matmul_heads(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_matmul_heads(c, in[0], in[1], ((args *)u)->i[0]); }
static dsa_tensor *f_scale(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_scale(c, in[0], ((args *)u)->f[0]); }
static dsa_tensor *f_relu(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_relu(c, in[0]); }
static dsa_tensor *f_silu(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_silu(c, in[0]); }
static dsa_tensor *f_swiglu(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_swiglu(c, in[0], in[1]); }
static dsa_tensor *f_sum(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_sum(c, in[0]); }
static dsa_tensor *f_mean(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_mean(c, in[0]); }
static dsa_tensor *f_embedding(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_embedding(c, in[0], in[1]); }
static dsa_tensor *f_gather(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_gather_rows(c, in[0], in[1]); }
static dsa_tensor *f_scatter(dsa_ctx *c, dsa_tensor **in, void *u) {
    return dsa_scatter_add_rows(c, in[0], in[1], ((args *)u)->s[0]);
}
static dsa_tensor *f_rmsnorm(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_rmsnorm(c, in[0], in[1], ((args *)u)->f[0]); }
static dsa_tensor *f_layernorm(dsa_ctx *c, dsa_tensor **in, void *u) {
    return dsa_layernorm(c, in[0], in[1], in[2], ((args *)u)->f[0]);
}
static dsa_tensor *f_rope(dsa_ctx *c, dsa_tensor **in, void *u) {
    args *a = u;
    return dsa_rope(c, in[0], in[1], a->i[0], a->i[1], a->f[0], (dsa_rope_pairing)a->i[2]);
}
static dsa_tensor *f_softmax(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_softmax(c, in[0]); }
static dsa_tensor *f_lse(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_logsumexp(c, in[0]); }
static dsa_tensor *f_ce(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_cross_entropy(c, in[0], in[1], ((args *)u)->i[0]); }
// view / rows feed a mul so the gradient passes through the shared-storage link into the parent.
static dsa_tensor *f_view(dsa_ctx *c, dsa_tensor **in, void *u) {
    args *a = u;
    dsa_tensor *v = dsa_view(c, in[0], a->i[0], a->s);
    return dsa_mul(c, v, v);
}
static dsa_tensor *f_rows(dsa_ctx *c, dsa_tensor **in, void *u) {
    args *a = u;
    dsa_tensor *r = dsa_rows(c, in[0], a->s[0], a->s[1]);
    return dsa_mul(c, r, r);
}
static dsa_tensor *f_slice(dsa_ctx *c, dsa_tensor **in, void *u) {
    args *a = u;
    return dsa_slice(c, in[0], a->i[0], a->s[0], a->s[1]);
}
static dsa_tensor *f_concat(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_concat(c, in[0], in[1], ((args *)u)->i[0]); }
// Pieces reassembled in another order (and one squared) so each piece's gradient is distinct.
static dsa_tensor *f_split(dsa_ctx *c, dsa_tensor **in, void *u) {
    args *a = u;
    dsa_tensor *p[3];
    if (dsa_split(c, in[0], a->i[0], 3, a->s, p) != DSA_OK) return NULL;
    return dsa_concat(c, dsa_concat(c, p[2], dsa_mul(c, p[0], p[0]), a->i[0]), p[1], a->i[0]);
}
static dsa_tensor *f_permute(dsa_ctx *c, dsa_tensor **in, void *u) { return dsa_permute(c, in[0], ((args *)u)->i); }
static dsa_tensor *f_cast(dsa_ctx *c, dsa_tensor **in, void *u) { (void)u; return dsa_cast(c, in[0], DSA_F64); }

static void test_matmul(void) {
    // {M, K, N} x transposes, 2-D; then batched (same batch) and shared-weight B.
    const int64_t mkn[][3] = {{1, 1, 1}, {3, 7, 5}, {13, 3, 7}, {2, 13, 1}};
    int no = 0;
    for (int s = 0; s < 4; s++)
        for (int t = 0; t < 4; t++) {
            args a = {.i = {t & 1, t >> 1}};
            int64_t M = mkn[s][0], K = mkn[s][1], N = mkn[s][2];
            dsa_tensor *A = randn(2, a.i[0] ? DSA_SHAPE(K, M) : DSA_SHAPE(M, K), "a");
            dsa_tensor *B = randn(2, a.i[1] ? DSA_SHAPE(N, K) : DSA_SHAPE(K, N), "b");
            check("matmul", no++, f_matmul, &a, (dsa_tensor *[]){A, B}, 2);
        }
    for (int t = 0; t < 4; t++) {
        args a = {.i = {t & 1, t >> 1}};
        dsa_tensor *A = randn(3, a.i[0] ? DSA_SHAPE(2, 5, 3) : DSA_SHAPE(2, 3, 5), "a");
        dsa_tensor *B = randn(3, a.i[1] ? DSA_SHAPE(2, 7, 5) : DSA_SHAPE(2, 5, 7), "b");
        check("matmul", no++, f_matmul, &a, (dsa_tensor *[]){A, B}, 2);
        dsa_tensor *A4 = randn(4, a.i[0] ? DSA_SHAPE(3, 1, 4, 3) : DSA_SHAPE(3, 1, 3, 4), "a");
        dsa_tensor *W = randn(2, a.i[1] ? DSA_SHAPE(5, 4) : DSA_SHAPE(4, 5), "w_shared");
        check("matmul", no++, f_matmul, &a, (dsa_tensor *[]){A4, W}, 2);
    }
}

// Per-head matmul in the [T, H, *] layout: gradients by finite differences, and the forward against
// permute -> batched matmul -> permute (the composition it replaces).
static void test_matmul_heads(void) {
    const int64_t thkn[][4] = {{1, 1, 1, 1}, {5, 3, 4, 6}, {7, 2, 9, 3}};
    const int swap01[3] = {1, 0, 2};
    int no = 0;
    for (int s = 0; s < 3; s++)
        for (int tw = 0; tw < 2; tw++) {
            args a = {.i = {tw}};
            int64_t T = thkn[s][0], H = thkn[s][1], K = thkn[s][2], N = thkn[s][3];
            dsa_tensor *x = randn(3, DSA_SHAPE(T, H, K), "x");
            dsa_tensor *w = randn(3, tw ? DSA_SHAPE(H, N, K) : DSA_SHAPE(H, K, N), "w");
            check("matmul_heads", no++, f_matmul_heads, &a, (dsa_tensor *[]){x, w}, 2);
            dsa_tensor *y = dsa_matmul_heads(C, x, w, tw);
            dsa_tensor *r = dsa_permute(C, dsa_matmul(C, dsa_permute(C, x, swap01), w, false, tw), swap01);
            CHECK(y && r && dsa_numel(y) == dsa_numel(r), "matmul_heads #%d: no result", no - 1);
            double worst = 0;
            for (int64_t i = 0; y && r && i < dsa_numel(y); i++) worst = fmax(worst, fabs(dsa_get(y, i) - dsa_get(r, i)));
            CHECK(worst <= 1e-12, "matmul_heads #%d: forward differs from permute-matmul-permute by %.3e", no - 1, worst);
        }
}

static void test_elementwise(void) {
    const int64_t shapes[][3] = {{1, 1, 1}, {3, 7, 1}, {2, 3, 13}};
    for (int s = 0; s < 3; s++) {
        int nd = s == 2 ? 3 : 2;
        dsa_tensor *x = randn(nd, shapes[s], "x"), *g = randn(nd, shapes[s], "gate"), *u = randn(nd, shapes[s], "up");
        args a = {.f = {-1.7}};
        check("scale", s, f_scale, &a, &x, 1);
        check("relu", s, f_relu, NULL, &x, 1);
        check("silu", s, f_silu, NULL, &x, 1);
        check("swiglu", s, f_swiglu, NULL, (dsa_tensor *[]){g, u}, 2);
        check("sum", s, f_sum, NULL, &x, 1);
        check("mean", s, f_mean, NULL, &x, 1);
        check("cast", s, f_cast, NULL, &x, 1);
    }
}

static void test_rows(void) {
    dsa_tensor *table = randn(2, DSA_SHAPE(7, 3), "table");
    check("embedding", 0, f_embedding, NULL, (dsa_tensor *[]){table, ints(5, (int32_t[]){6, 0, 3, 3, 6})}, 2);
    dsa_tensor *t1 = randn(2, DSA_SHAPE(1, 13), "table");
    check("embedding", 1, f_embedding, NULL, (dsa_tensor *[]){t1, ints(3, (int32_t[]){0, 0, 0})}, 2);
    dsa_tensor *x = randn(3, DSA_SHAPE(7, 3, 2), "x");
    check("gather_rows", 0, f_gather, NULL, (dsa_tensor *[]){x, ints(4, (int32_t[]){1, 6, 1, 0})}, 2);
    dsa_tensor *x1 = randn(1, DSA_SHAPE(13), "x");
    check("gather_rows", 1, f_gather, NULL, (dsa_tensor *[]){x1, ints(3, (int32_t[]){12, 5, 5})}, 2);
    args a = {.s = {7}};
    dsa_tensor *y = randn(2, DSA_SHAPE(5, 3), "x");
    check("scatter_add_rows", 0, f_scatter, &a, (dsa_tensor *[]){y, ints(5, (int32_t[]){6, 0, 6, 2, 0})}, 2);
    args b = {.s = {1}};
    dsa_tensor *y1 = randn(3, DSA_SHAPE(3, 1, 2), "x");
    check("scatter_add_rows", 1, f_scatter, &b, (dsa_tensor *[]){y1, ints(3, (int32_t[]){0, 0, 0})}, 2);
}

static void test_norms(void) {
    const int64_t shapes[][3] = {{3, 7}, {2, 3, 13}, {1, 1}};
    const int nd[] = {2, 3, 2};
    for (int s = 0; s < 3; s++) {
        int64_t D = shapes[s][nd[s] - 1];
        dsa_tensor *x = randn(nd[s], shapes[s], "x"), *w = randn(1, DSA_SHAPE(D), "w"), *b = randn(1, DSA_SHAPE(D), "b");
        args a = {.f = {1e-5}};
        if (D > 1) check("rmsnorm", s, f_rmsnorm, &a, (dsa_tensor *[]){x, w}, 2);
        else {  // D = 1: rmsnorm output = sign(x) w, dx ~ eps; still checked, larger eps keeps it conditioned
            args e = {.f = {0.5}};
            check("rmsnorm", s, f_rmsnorm, &e, (dsa_tensor *[]){x, w}, 2);
        }
        args e = {.f = {D > 1 ? 1e-5 : 0.5}};
        check("layernorm", s, f_layernorm, &e, (dsa_tensor *[]){x, w, b}, 3);
    }
}

static void test_rope(void) {
    dsa_tensor *pos5 = ints(5, (int32_t[]){0, 1, 2, 7, 300}), *pos3 = ints(3, (int32_t[]){4, 0, 13});
    dsa_tensor *x = randn(2, DSA_SHAPE(5, 8), "x"), *y = randn(3, DSA_SHAPE(3, 2, 13), "x");
    int no = 0;
    for (int p = 0; p < 2; p++) {
        args a = {.i = {0, 8, p}, .f = {10000.0}};
        check("rope", no++, f_rope, &a, (dsa_tensor *[]){x, pos5}, 2);
        args b = {.i = {3, 6, p}, .f = {500.0}};
        check("rope", no++, f_rope, &b, (dsa_tensor *[]){y, pos3}, 2);
        args d = {.i = {11, 2, p}, .f = {10000.0}};
        check("rope", no++, f_rope, &d, (dsa_tensor *[]){y, pos3}, 2);
    }
}

static void test_softmax_loss(void) {
    const int64_t shapes[][3] = {{1, 1}, {3, 7}, {2, 3, 13}};
    const int nd[] = {2, 2, 3};
    for (int s = 0; s < 3; s++) {
        dsa_tensor *x = test_randn(C, DSA_F64, DSA_CPU, nd[s], shapes[s], &RNG, 2.0, true);
        check("softmax", s, f_softmax, NULL, &x, 1);
        check("logsumexp", s, f_lse, NULL, &x, 1);
    }
    args a = {.i = {-100}};
    dsa_tensor *l = test_randn(C, DSA_F64, DSA_CPU, 2, DSA_SHAPE(5, 7), &RNG, 2.0, true);
    check("cross_entropy", 0, f_ce, &a, (dsa_tensor *[]){l, ints(5, (int32_t[]){3, -100, 0, 6, 6})}, 2);
    dsa_tensor *l1 = test_randn(C, DSA_F64, DSA_CPU, 2, DSA_SHAPE(1, 3), &RNG, 2.0, true);
    check("cross_entropy", 1, f_ce, &a, (dsa_tensor *[]){l1, ints(1, (int32_t[]){2})}, 2);
    args b = {.i = {0}};  // ignore_index 0 as a real id
    dsa_tensor *l2 = test_randn(C, DSA_F64, DSA_CPU, 2, DSA_SHAPE(13, 5), &RNG, 2.0, true);
    int32_t t2[13];
    for (int i = 0; i < 13; i++) t2[i] = i % 5;
    check("cross_entropy", 2, f_ce, &b, (dsa_tensor *[]){l2, ints(13, t2)}, 2);
}

static void test_shapes(void) {
    dsa_tensor *x = randn(2, DSA_SHAPE(3, 4), "x"), *y = randn(3, DSA_SHAPE(7, 3, 2), "x");
    args v0 = {.i = {2}, .s = {2, 6}}, v1 = {.i = {1}, .s = {42}};
    check("view", 0, f_view, &v0, &x, 1);
    check("view", 1, f_view, &v1, &y, 1);
    args r0 = {.s = {2, 3}}, r1 = {.s = {0, 1}};
    check("rows", 0, f_rows, &r0, &y, 1);
    check("rows", 1, f_rows, &r1, &x, 1);
    args s0 = {.i = {1}, .s = {1, 2}}, s1 = {.i = {0}, .s = {3, 4}}, s2 = {.i = {2}, .s = {1, 1}};
    check("slice", 0, f_slice, &s0, &y, 1);
    check("slice", 1, f_slice, &s1, &y, 1);
    check("slice", 2, f_slice, &s2, &y, 1);
    dsa_tensor *a = randn(3, DSA_SHAPE(2, 3, 5), "a"), *b = randn(3, DSA_SHAPE(2, 1, 5), "b");
    dsa_tensor *d = randn(3, DSA_SHAPE(1, 3, 5), "b");
    args c1 = {.i = {1}}, c0 = {.i = {0}};
    check("concat", 0, f_concat, &c1, (dsa_tensor *[]){a, b}, 2);
    check("concat", 1, f_concat, &c0, (dsa_tensor *[]){a, d}, 2);
    args p0 = {.i = {0}, .s = {2, 4, 1}}, p1 = {.i = {2}, .s = {1, 0, 1}};
    check("split", 0, f_split, &p0, &y, 1);
    check("split", 1, f_split, &p1, &y, 1);
    args q0 = {.i = {1, 0}}, q1 = {.i = {2, 0, 1}};
    check("permute", 0, f_permute, &q0, &x, 1);
    check("permute", 1, f_permute, &q1, &y, 1);
    dsa_tensor *z = randn(4, DSA_SHAPE(2, 3, 1, 5), "x");
    args q2 = {.i = {3, 1, 0, 2}};
    check("permute", 2, f_permute, &q2, &z, 1);
}

// The cast gradient converts back: f32 x -> f64 y -> sum; dx (f32) = 1.
static void test_cast_dtypes(void) {
    dsa_tensor *x = test_randn(C, DSA_F32, DSA_CPU, 2, DSA_SHAPE(3, 5), &RNG, 1.0, true);
    dsa_tensor *y = dsa_cast(C, x, DSA_F64);
    CHECK_T(y);
    CHECK(y && y->dtype == DSA_F64, "cast output dtype");
    double err = 0;
    for (int i = 0; y && i < 15; i++) err = fmax(err, fabs(dsa_get(y, i) - dsa_get(x, i)));
    CHECK_OK(dsa_backward(C, dsa_sum(C, dsa_scale(C, y, 2.0))));
    for (int i = 0; x->grad && i < 15; i++) err = fmax(err, fabs(dsa_get(x->grad, i) - 2.0));
    printf("cast f32->f64 forward/backward max err %.2e\n", err);
    CHECK(x->grad && x->grad->dtype == DSA_F32 && err == 0, "cast f32->f64 gradient");
    dsa_ctx_step_reset(C);
}

// concat_cast (concat written in another dtype) against cast(concat): the same bf16 values, and the
// gradients of a weighted sum of its output the same as concat's (every weight lands in its input).
static void test_concat_cast(void) {
    dsa_tensor *a = test_randn(C, DSA_F32, DSA_CPU, 3, DSA_SHAPE(2, 3, 5), &RNG, 1.0, true);
    dsa_tensor *b = test_randn(C, DSA_F32, DSA_CPU, 3, DSA_SHAPE(2, 3, 4), &RNG, 1.0, true);
    dsa_tensor *w = test_randn(C, DSA_F32, DSA_CPU, 3, DSA_SHAPE(2, 3, 9), &RNG, 1.0, false);
    dsa_tensor *y = dsa_concat_cast(C, a, b, 2, DSA_BF16), *ref = dsa_cast(C, dsa_concat(C, a, b, 2), DSA_BF16);
    if (!CHECK_T(y) || !CHECK_T(ref)) return;
    double err = 0;
    for (int i = 0; i < 54; i++) err = fmax(err, fabs(dsa_get(y, i) - dsa_get(ref, i)));
    CHECK(y->dtype == DSA_BF16 && err == 0, "concat_cast forward: dtype %s, max diff %.3e from cast(concat)",
          dsa_dtype_name(y->dtype), err);
    CHECK_OK(dsa_backward(C, dsa_sum(C, dsa_mul(C, dsa_cast(C, y, DSA_F32), w))));
    double gerr = 0;
    for (int i = 0; a->grad && b->grad && i < 54; i++) {
        int r = i / 9, k = i % 9;
        double g = k < 5 ? dsa_get(a->grad, r * 5 + k) : dsa_get(b->grad, r * 4 + k - 5);
        gerr = fmax(gerr, fabs(g - dsa_get(w, i)));
    }
    printf("concat_cast f32 -> bf16: forward max diff %.2e, gradient max err %.2e\n", err, gerr);
    CHECK(a->grad && b->grad && gerr == 0, "concat_cast gradient: max err %.3e", gerr);
    dsa_ctx_step_reset(C);
}

// Gradient adoption (dsa_grad_adopt): a cast whose gradient dtypes agree (f32 -> bf16) and a whole view
// hand their output's gradient to the input without a copy when it is the input's first; later
// contributions add into it; a persistent input gets its own persistent buffer.
// (x: a step tensor, the scaled copy of a persistent leaf.)
static dsa_tensor *step_input(void) {
    return dsa_scale(C, test_randn(C, DSA_F32, DSA_CPU, 2, DSA_SHAPE(4, 6), &RNG, 1.0, true), 1.0);
}
static void test_grad_adopt(void) {
    dsa_tensor *x = step_input();
    dsa_tensor *y = dsa_cast(C, x, DSA_BF16);
    CHECK_OK(dsa_backward(C, dsa_sum(C, dsa_scale(C, y, 2.0))));
    bool adopted = x->grad && y->grad && x->grad->data == y->grad->data;
    double err = 0;
    for (int i = 0; x->grad && i < 24; i++) err = fmax(err, fabs(dsa_get(x->grad, i) - 2.0));
    printf("grad adoption, cast f32 -> bf16: %s, max err %.2e\n", adopted ? "adopted" : "copied", err);
    CHECK(adopted && err == 0, "cast f32 -> bf16: x's gradient should be y's, 2 everywhere");
    dsa_ctx_step_reset(C);

    // x feeds a cast, a whole view and a product: dx = 2 + 3 + 2x, whichever consumer's backward runs
    // first (the last one recorded): the cast's (it adopts, the others add into it), or the product's.
    for (int order = 0; order < 2; order++) {
        x = step_input();
        dsa_tensor *a = NULL, *b, *m = NULL;
        if (order == 1) m = dsa_sum(C, dsa_mul(C, x, x));
        b = dsa_sum(C, dsa_scale(C, dsa_view(C, x, 1, DSA_SHAPE(24)), 3.0));
        a = dsa_sum(C, dsa_scale(C, dsa_cast(C, dsa_cast(C, x, DSA_BF16), DSA_F32), 2.0));
        if (order == 0) m = dsa_sum(C, dsa_mul(C, x, x));
        CHECK_OK(dsa_backward(C, dsa_add(C, dsa_add(C, a, b), m)));
        err = 0;
        for (int i = 0; x->grad && i < 24; i++) err = fmax(err, fabs(dsa_get(x->grad, i) - (5.0 + 2.0 * dsa_get(x, i))));
        printf("grad adoption, three consumers (%s first): max err %.2e\n", order ? "the cast" : "the product", err);
        CHECK(x->grad && err < 1e-5, "x with three consumers: dx = 5 + 2x (max err %.2e)", err);
        dsa_ctx_step_reset(C);
    }

    // An add (a residual stream): a takes the output's gradient over after b's is formed; a == b
    // (add(x, x)) still gives 2.
    x = step_input();
    dsa_tensor *y2 = step_input(), *sq = dsa_sum(C, dsa_mul(C, x, x)), *z = dsa_add(C, x, y2);
    CHECK_OK(dsa_backward(C, dsa_add(C, dsa_sum(C, dsa_scale(C, z, 3.0)), sq)));
    adopted = x->grad && z->grad && x->grad->data == z->grad->data;
    err = 0;
    for (int i = 0; x->grad && y2->grad && i < 24; i++)
        err = fmax(err, fmax(fabs(dsa_get(x->grad, i) - (3.0 + 2.0 * dsa_get(x, i))), fabs(dsa_get(y2->grad, i) - 3.0)));
    printf("grad adoption, add: %s, max err %.2e\n", adopted ? "adopted" : "copied", err);
    CHECK(adopted && err < 1e-5, "add: dx = 3 + 2x (adopted), dy = 3 (max err %.2e)", err);
    dsa_ctx_step_reset(C);
    x = step_input();
    CHECK_OK(dsa_backward(C, dsa_sum(C, dsa_add(C, x, x))));
    err = 0;
    for (int i = 0; x->grad && i < 24; i++) err = fmax(err, fabs(dsa_get(x->grad, i) - 2.0));
    CHECK(x->grad && err == 0, "add(x, x): dx = 2 (max err %.2e)", err);
    dsa_ctx_step_reset(C);

    dsa_tensor *p = dsa_zeros(C, DSA_PERSIST, DSA_F32, DSA_CPU, 2, DSA_SHAPE(4, 6));
    p->requires_grad = true;
    CHECK_OK(dsa_backward(C, dsa_sum(C, dsa_cast(C, p, DSA_BF16))));
    CHECK(p->grad && p->grad->persistent && dsa_get(p->grad, 5) == 1.0, "a persistent input keeps its own gradient");
    dsa_ctx_step_reset(C);
}

int main(void) {
    C = dsa_ctx_create(DSA_CPU);
    dsa_rng_init(&RNG, 20261122);
    test_matmul();
    test_matmul_heads();
    test_elementwise();
    test_rows();
    test_norms();
    test_rope();
    test_softmax_loss();
    test_shapes();
    test_cast_dtypes();
    test_concat_cast();
    test_grad_adopt();
    printf("\nworst gradcheck error per op (tol %.0e):\n", GRADCHECK_TOL);
    for (int k = 0; k < g_nops; k++) printf("  %-18s %.2e\n", g_ops[k], g_worst[k]);
    dsa_ctx_free(C);
    return test_finish();
}
