// Core machinery: RNG determinism, arena reuse, autograd semantics (detach, no-grad, accumulation),
// f32 vs f64 agreement of matmul and rmsnorm, and the special values of softmax / logsumexp / CE.
#include <string.h>
#include "common/testing.h"

static void test_rng(void) {
    // Known first values for seed 42 (recorded once): the generator must never change.
    const uint64_t want[3] = {0xccf7d1667ea41d4dULL, 0xda9e4b397e1a2212ULL, 0x11e392617dcf385cULL};
    dsa_rng a, b;
    dsa_rng_init(&a, 42);
    dsa_rng_init(&b, 42);
    for (int i = 0; i < 3; i++) {
        uint64_t x = dsa_rng_u64(&a);
        CHECK(x == want[i], "rng seed 42 draw %d: %016llx, want %016llx", i, (unsigned long long)x,
              (unsigned long long)want[i]);
    }
    dsa_rng_init(&a, 42);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= dsa_rng_u64(&a) == dsa_rng_u64(&b);
    CHECK(same, "two generators with one seed diverge");
    dsa_rng_init(&a, 42);
    double n0 = dsa_rng_normal(&a);
    printf("rng: seed 42 first normal %.17g (want 0.40530549065103266)\n", n0);
    CHECK(fabs(n0 - 0.40530549065103266) < 1e-15, "rng first normal");
    // Forks depend on the seed and stream only, not on draws made before.
    dsa_rng fresh;
    dsa_rng_init(&fresh, 42);
    dsa_rng f1 = dsa_rng_fork(&a, 5), f2 = dsa_rng_fork(&fresh, 5), f3 = dsa_rng_fork(&fresh, 6);
    uint64_t x1 = dsa_rng_u64(&f1), x2 = dsa_rng_u64(&f2), x3 = dsa_rng_u64(&f3);
    CHECK(x1 == 0xfc742f5397cccd09ULL, "fork(42, 5) first draw %016llx", (unsigned long long)x1);
    CHECK(x1 == x2 && x1 != x3, "forks: same stream equal, other stream differs");
    // Distinct draws: k of n, each in [0, n), none twice, and k = n gives a permutation.
    enum { N = 300 };
    int32_t perm[N], out[N];
    int seen[N] = {0}, bad = 0;
    dsa_rng_distinct(&a, N, 200, perm, out);
    for (int j = 0; j < 200; j++) bad += out[j] < 0 || out[j] >= N || seen[out[j]]++;
    dsa_rng_distinct(&a, N, N, perm, out);
    int seen_all[N] = {0};
    for (int j = 0; j < N; j++) bad += out[j] < 0 || out[j] >= N || seen_all[out[j]]++;
    CHECK(bad == 0, "dsa_rng_distinct: %d values out of range or repeated", bad);
}

static void test_arena(void) {
    dsa_arena ar;
    dsa_arena_init(&ar, DSA_CPU, 1 << 16);
    void *p0 = dsa_arena_alloc(&ar, 1000);
    dsa_arena_alloc(&ar, 50000);
    size_t reserved = ar.reserved;
    dsa_arena_reset(&ar);
    void *p1 = dsa_arena_alloc(&ar, 1000);
    dsa_arena_alloc(&ar, 50000);
    CHECK(p0 == p1 && ar.reserved == reserved, "arena: reset reuses blocks (reserved %zu -> %zu)", reserved, ar.reserved);
    dsa_arena_free(&ar);

    // A context running the same step twice holds no more memory the second time.
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_rng r;
    dsa_rng_init(&r, 1);
    dsa_tensor *w = test_randn(c, DSA_F32, DSA_CPU, 2, DSA_SHAPE(64, 64), &r, 0.1, true);
    size_t after[3];
    for (int step = 0; step < 3; step++) {
        dsa_tensor *x = dsa_new(c, DSA_F32, 2, DSA_SHAPE(128, 64));
        dsa_fill_normal(x, &r, 0, 1);
        dsa_tensor *loss = dsa_mean(c, dsa_silu(c, dsa_matmul(c, x, w, false, true)));
        CHECK_OK(dsa_backward(c, loss));
        after[step] = dsa_ctx_reserved_bytes(c, DSA_CPU);
        dsa_ctx_step_reset(c);
    }
    printf("arena: reserved bytes per step %zu %zu %zu\n", after[0], after[1], after[2]);
    CHECK(after[1] == after[0] && after[2] == after[0], "context memory grows across steps");
    dsa_ctx_free(c);
}

static void test_autograd(dsa_ctx *c, dsa_rng *r) {
    dsa_tensor *x = test_randn(c, DSA_F64, DSA_CPU, 1, DSA_SHAPE(5), r, 1.0, true);
    // Detach: y = detach(x) * x, dy/dx through the live path only = x.
    CHECK_OK(dsa_backward(c, dsa_sum(c, dsa_mul(c, dsa_detach(c, x), x))));
    double e = 0;
    for (int i = 0; i < 5; i++) e = fmax(e, fabs(dsa_get(x->grad, i) - dsa_get(x, i)));
    printf("autograd: detach grad err %.2e\n", e);
    CHECK(e < 1e-15, "detach: gradient flowed through the detached copy");
    dsa_ctx_step_reset(c);
    dsa_zero(x->grad);

    // No-grad region records nothing and leaves outputs without grad.
    bool prev = dsa_set_grad_enabled(c, false);
    int n0 = c->tape.n;
    dsa_tensor *y = dsa_relu(c, dsa_scale(c, x, 2.0));
    CHECK(c->tape.n == n0 && y && !y->creator, "no-grad: tape grew from %d to %d", n0, c->tape.n);
    dsa_set_grad_enabled(c, prev);
    dsa_ctx_step_reset(c);

    // A tensor used twice: d/dx [sum(x * w) + sum(x + x)] = w + 2.
    dsa_tensor *w = test_randn(c, DSA_F64, DSA_CPU, 1, DSA_SHAPE(5), r, 1.0, false);
    dsa_tensor *loss = dsa_add(c, dsa_sum(c, dsa_mul(c, x, w)), dsa_sum(c, dsa_add(c, x, x)));
    CHECK_OK(dsa_backward(c, loss));
    e = 0;
    for (int i = 0; i < 5; i++) e = fmax(e, fabs(dsa_get(x->grad, i) - (dsa_get(w, i) + 2.0)));
    printf("autograd: accumulation grad err %.2e\n", e);
    CHECK(e < 1e-14, "gradient accumulation over two uses");
    dsa_ctx_step_reset(c);

    // view and rows share storage with their parent: a write through the view shows in x.
    dsa_tensor *m = test_randn(c, DSA_F64, DSA_CPU, 2, DSA_SHAPE(4, 3), r, 1.0, false);
    dsa_tensor *v = dsa_view(c, m, 1, DSA_SHAPE(12)), *rw = dsa_rows(c, m, 1, 2);
    CHECK(v && rw && v->data == m->data && (double *)rw->data == (double *)m->data + 3, "view/rows must not copy");
    if (rw) dsa_set(rw, 0, 123.0);
    CHECK(dsa_get(m, 3) == 123.0, "write through rows() not seen in the parent");
    dsa_ctx_step_reset(c);
}

// f32 forward against the f64 forward on the same values.
static double f32_vs_f64(dsa_ctx *c, dsa_tensor *(*f)(dsa_ctx *, dsa_tensor **), dsa_tensor **in64, int n) {
    dsa_tensor *in32[4];
    for (int i = 0; i < n; i++) in32[i] = dsa_copy(c, DSA_STEP, in64[i], DSA_CPU, DSA_F32);
    dsa_tensor *y64 = f(c, in64), *y32 = f(c, in32);
    return (y64 && y32) ? test_rel_l2(y32, y64) : INFINITY;
}
static dsa_tensor *f_mm(dsa_ctx *c, dsa_tensor **in) { return dsa_matmul(c, in[0], in[1], false, false); }
static dsa_tensor *f_mm_tt(dsa_ctx *c, dsa_tensor **in) { return dsa_matmul(c, in[0], in[1], true, true); }
static dsa_tensor *f_rms(dsa_ctx *c, dsa_tensor **in) { return dsa_rmsnorm(c, in[0], in[1], 1e-6); }

static void test_precision(dsa_ctx *c, dsa_rng *r) {
    dsa_tensor *a = test_randn(c, DSA_F64, DSA_CPU, 3, DSA_SHAPE(3, 37, 129), r, 1.0, false);
    dsa_tensor *b = test_randn(c, DSA_F64, DSA_CPU, 2, DSA_SHAPE(129, 61), r, 1.0, false);
    dsa_tensor *at = test_randn(c, DSA_F64, DSA_CPU, 2, DSA_SHAPE(257, 19), r, 1.0, false);
    dsa_tensor *bt = test_randn(c, DSA_F64, DSA_CPU, 2, DSA_SHAPE(23, 257), r, 1.0, false);
    dsa_tensor *x = test_randn(c, DSA_F64, DSA_CPU, 2, DSA_SHAPE(13, 96), r, 3.0, false);
    dsa_tensor *w = test_randn(c, DSA_F64, DSA_CPU, 1, DSA_SHAPE(96), r, 1.0, false);
    double e1 = f32_vs_f64(c, f_mm, (dsa_tensor *[]){a, b}, 2);
    double e2 = f32_vs_f64(c, f_mm_tt, (dsa_tensor *[]){at, bt}, 2);
    double e3 = f32_vs_f64(c, f_rms, (dsa_tensor *[]){x, w}, 2);
    printf("f32 vs f64 rel l2: matmul %.2e, matmul^T^T %.2e, rmsnorm %.2e\n", e1, e2, e3);
    CHECK(e1 <= 1e-5 && e2 <= 1e-5 && e3 <= 1e-5, "f32 forward differs from f64");
    dsa_ctx_step_reset(c);
}

static void test_special_values(dsa_ctx *c) {
    const double ninf = -INFINITY;
    double v[8] = {ninf, ninf, ninf, ninf, 1.0, ninf, 2.0, ninf};
    dsa_tensor *x = dsa_from_host(c, DSA_STEP, DSA_F64, DSA_CPU, 2, DSA_SHAPE(2, 4), v);
    dsa_tensor *p = dsa_softmax(c, x), *l = dsa_logsumexp(c, x);
    CHECK_T(p);
    CHECK_T(l);
    double want1 = 1.0 / (1.0 + exp(1.0));
    bool ok = dsa_get(p, 0) == 0 && dsa_get(p, 3) == 0 && dsa_get(p, 5) == 0 && dsa_get(p, 7) == 0 &&
              fabs(dsa_get(p, 4) - want1) < 1e-15 && isinf(dsa_get(l, 0)) && dsa_get(l, 0) < 0 &&
              fabs(dsa_get(l, 1) - (2.0 + log1p(exp(-1.0)))) < 1e-15;
    printf("softmax all -inf row: %g %g %g %g; lse %g %g\n", dsa_get(p, 0), dsa_get(p, 1), dsa_get(p, 2),
           dsa_get(p, 3), dsa_get(l, 0), dsa_get(l, 1));
    CHECK(ok, "softmax / logsumexp on -inf rows");
    double lg[6] = {0.3, -1, 2, 0.5, 0.1, -0.2};
    dsa_tensor *logits = dsa_from_host(c, DSA_STEP, DSA_F64, DSA_CPU, 2, DSA_SHAPE(2, 3), lg);
    dsa_tensor *all_ignored = dsa_from_host(c, DSA_STEP, DSA_I32, DSA_CPU, 1, DSA_SHAPE(2), (int32_t[]){-1, -1});
    dsa_tensor *ce = dsa_cross_entropy(c, logits, all_ignored, -1);
    CHECK(ce && dsa_get(ce, 0) == 0.0, "cross_entropy with every row ignored must be 0");
    dsa_ctx_step_reset(c);
}

int main(void) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_rng r;
    dsa_rng_init(&r, 99);
    test_rng();
    test_arena();
    test_autograd(c, &r);
    test_precision(c, &r);
    test_special_values(c);
    dsa_ctx_free(c);
    return test_finish();
}
