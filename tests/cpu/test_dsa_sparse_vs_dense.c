// Sparse path vs the dense masked reference (fp32 CPU, SPEC 9: max abs err <= 1e-5 on out, lse, dq,
// dkv, dsink), on padded documents (P = 4), a non-contiguous query subset, windows shorter than K,
// every invalid-slot kind, topk_length 0 / K / too large, an all-invalid row, head counts that are not
// a multiple of the chunk. Also head-chunked vs unchunked (1e-6) and sparse vs dense KL when K covers
// every window.
#include <string.h>
#include "test_dsa_util.h"

#define TOL 1e-5

// Real lengths 5, 6, 3 padded to multiples of 4: rows 5-7, 14-15 and 19 are padding.
static const int32_t CU[4] = {0, 5, 11, 14}, CUP[4] = {0, 8, 16, 20};
static const int32_t QI[12] = {0, 2, 3, 5, 7, 8, 10, 13, 14, 16, 18, 19};
enum { NQ = 12, SKV = 20 };

typedef struct {
    dsa_tensor *start, *end, *is_real;
} windows;

static windows make_windows(dsa_ctx *c) {
    windows w;
    dsa_tensor *cu = tu_i32(c, 1, (int64_t[]){4}, CU), *cup = tu_i32(c, 1, (int64_t[]){4}, CUP);
    dsa_tensor *qi = tu_i32(c, 1, (int64_t[]){NQ}, QI);
    CHECK_OK(dsa_window_bounds(c, cu, cup, qi, 1, &w.start, &w.end, &w.is_real));
    // Outputs live in the step scope; keep them across the per-case step resets.
    w.start = dsa_copy(c, DSA_PERSIST, w.start, DSA_CPU, DSA_I32);
    w.end = dsa_copy(c, DSA_PERSIST, w.end, DSA_CPU, DSA_I32);
    w.is_real = dsa_copy(c, DSA_PERSIST, w.is_real, DSA_CPU, DSA_U8);
    return w;
}

// max |a - b| treating equal infinities as equal; NaN -> INFINITY.
static double diff(const dsa_tensor *a, const dsa_tensor *b) {
    if (!a || !b || dsa_numel(a) != dsa_numel(b)) return INFINITY;
    double m = 0;
    for (int64_t i = 0; i < dsa_numel(a); i++) {
        double x = dsa_get(a, i), y = dsa_get(b, i);
        if (isnan(x) || isnan(y)) return INFINITY;
        if (isinf(x) || isinf(y)) {
            if (x != y) return INFINITY;
            continue;
        }
        m = fmax(m, fabs(x - y));
    }
    return m;
}

static dsa_tensor *leaf_copy(dsa_ctx *c, dsa_tensor *t) {
    if (!t) return NULL;
    dsa_tensor *x = dsa_copy(c, DSA_PERSIST, t, DSA_CPU, t->dtype);
    x->requires_grad = true;
    return x;
}

typedef struct {
    dsa_tensor *out, *lse, *dq, *dkv, *dsink;
} result;

static result run_sparse(dsa_ctx *c, dsa_tensor *q0, dsa_tensor *kv0, dsa_tensor *sink0, dsa_tensor *idx,
                         dsa_tensor *tl, const dsa_sparse_mqa_args *a, dsa_tensor *R) {
    result r = {0};
    dsa_tensor *q = leaf_copy(c, q0), *kv = leaf_copy(c, kv0), *sink = leaf_copy(c, sink0);
    CHECK_OK(dsa_sparse_mqa(c, q, kv, idx, tl, sink, a, &r.out, &r.lse));
    CHECK_OK(dsa_backward_with_grad(c, r.out, R));
    r.dq = q->grad, r.dkv = kv->grad, r.dsink = sink ? sink->grad : NULL;
    return r;
}

static result run_dense(dsa_ctx *c, dsa_tensor *q0, dsa_tensor *kv0, dsa_tensor *sink0, dsa_tensor *mask,
                        const dsa_sparse_mqa_args *a, dsa_tensor *R) {
    result r = {0};
    dsa_tensor *q = leaf_copy(c, q0), *kv = leaf_copy(c, kv0), *sink = leaf_copy(c, sink0);
    CHECK_OK(dsa_dense_mqa_reference(c, q, kv, mask, sink, a->sigma, a->dv, &r.out, &r.lse));
    CHECK_OK(dsa_backward_with_grad(c, r.out, R));
    r.dq = q->grad, r.dkv = kv->grad, r.dsink = sink ? sink->grad : NULL;
    return r;
}

static void compare(const char *what, result a, result b, double tol, int has_sink) {
    double e[5] = {diff(a.out, b.out), diff(a.lse, b.lse), diff(a.dq, b.dq), diff(a.dkv, b.dkv),
                   has_sink ? diff(a.dsink, b.dsink) : 0};
    printf("  %-44s out %.2e lse %.2e dq %.2e dkv %.2e dsink %.2e\n", what, e[0], e[1], e[2], e[3], e[4]);
    for (int i = 0; i < 5; i++) CHECK(e[i] <= tol, "%s: error #%d = %g > %g", what, i, e[i], tol);
}

static void attention_case(dsa_ctx *c, dsa_rng *rng, windows w, int64_t H, int64_t D, int64_t dv, int64_t K,
                           int with_len, int with_sink, int64_t chunk) {
    dsa_tensor *q = test_randn(c, DSA_F32, DSA_CPU, 3, (int64_t[]){NQ, H, D}, rng, 1, false);
    dsa_tensor *kv = test_randn(c, DSA_F32, DSA_CPU, 2, (int64_t[]){SKV, D}, rng, 1, false);
    dsa_tensor *sink = with_sink ? test_randn(c, DSA_F32, DSA_CPU, 1, (int64_t[]){H}, rng, 1, false) : NULL;
    dsa_tensor *R = test_randn(c, DSA_F32, DSA_CPU, 3, (int64_t[]){NQ, H, dv}, rng, 1, false);
    dsa_tensor *idx = tu_random_idx(c, rng, NQ, K, SKV, w.start->data, w.end->data);
    dsa_tensor *tl = with_len ? tu_random_len(c, rng, NQ, K) : NULL;
    dsa_tensor *mask = dsa_sparse_mask(c, idx, tl, w.start, w.end, SKV, DSA_F32);
    CHECK_T(mask);
    dsa_sparse_mqa_args a = {.sigma = 0.29, .dv = dv, .max_heads_per_kernel = chunk};
    char name[128];
    snprintf(name, sizeof name, "H=%lld D=%lld dv=%lld K=%lld len=%d sink=%d chunk=%lld", (long long)H, (long long)D,
             (long long)dv, (long long)K, with_len, with_sink, (long long)chunk);
    result sp = run_sparse(c, q, kv, sink, idx, tl, &a, R);
    result de = run_dense(c, q, kv, sink, mask, &a, R);
    compare(name, sp, de, TOL, with_sink);
    CHECK(test_all_finite(sp.out) && test_all_finite(sp.dq) && test_all_finite(sp.dkv), "%s: finite", name);
    if (chunk > 0) {  // chunked vs unchunked
        dsa_sparse_mqa_args u = a;
        u.max_heads_per_kernel = 0;
        result un = run_sparse(c, q, kv, sink, idx, tl, &u, R);
        snprintf(name + strlen(name), sizeof name - strlen(name), " vs unchunked");
        compare(name, sp, un, 1e-6, with_sink);
    }
    dsa_ctx_step_reset(c);
}

// K = 8 covers every window (<= 6 keys): the sparse KL over the selected slots equals the dense KL.
static void kl_case(dsa_ctx *c, dsa_rng *rng, windows w) {
    const int64_t HI = 3, DI = 6, H = 4, D = 7, K = 8;
    const double sigma = 0.31, coeff = 0.4, nrows = 8;
    dsa_tensor *qi = test_randn(c, DSA_F32, DSA_CPU, 3, (int64_t[]){NQ, HI, DI}, rng, 1, false);
    dsa_tensor *ki = test_randn(c, DSA_F32, DSA_CPU, 2, (int64_t[]){SKV, DI}, rng, 1, false);
    dsa_tensor *wi = test_randn(c, DSA_F32, DSA_CPU, 2, (int64_t[]){NQ, HI}, rng, 1, false);
    dsa_tensor *q = test_randn(c, DSA_F32, DSA_CPU, 3, (int64_t[]){NQ, H, D}, rng, 1, false);
    dsa_tensor *kv = test_randn(c, DSA_F32, DSA_CPU, 2, (int64_t[]){SKV, D}, rng, 1, false);
    dsa_tensor *idx, *tl, *score;
    CHECK_OK(dsa_indexer_topk(c, qi, ki, wi, w.start, w.end, K, &idx, &tl, &score));
    // Targets (no gradient): sparse over the slots, dense over the window.
    dsa_tensor *out, *lse_s;
    dsa_sparse_mqa_args a = {.sigma = sigma, .dv = D};
    CHECK_OK(dsa_sparse_mqa(c, q, kv, idx, tl, NULL, &a, &out, &lse_s));
    dsa_tensor *lse_d = dsa_attn_lse_dense(c, q, kv, w.start, w.end, sigma);
    double lse_err = diff(lse_s, lse_d);
    dsa_tensor *p_s = dsa_normalize_rows_l1(c, dsa_attn_score_headsum(c, q, kv, idx, tl, lse_s, sigma));
    dsa_tensor *p_d = dsa_normalize_rows_l1(c, dsa_attn_score_headsum_dense(c, q, kv, w.start, w.end, lse_d, sigma));
    CHECK_T(p_s);
    CHECK_T(p_d);
    // Sparse loss and gradients.
    dsa_tensor *q1 = leaf_copy(c, qi), *k1 = leaf_copy(c, ki), *w1 = leaf_copy(c, wi);
    dsa_tensor *ls = dsa_kl_indexer_loss(c, dsa_indexer_gather_logits(c, q1, k1, w1, idx, tl), p_s, w.is_real, coeff,
                                         nrows);
    CHECK_T(ls);
    CHECK_OK(dsa_backward(c, ls));
    dsa_tensor *q2 = leaf_copy(c, qi), *k2 = leaf_copy(c, ki), *w2 = leaf_copy(c, wi);
    dsa_tensor *ld = dsa_kl_indexer_loss(c, dsa_indexer_logits(c, q2, k2, w2, w.start, w.end), p_d, w.is_real, coeff,
                                         nrows);
    CHECK_T(ld);
    CHECK_OK(dsa_backward(c, ld));
    double e[5] = {lse_err, diff(ls, ld), diff(q1->grad, q2->grad), diff(k1->grad, k2->grad), diff(w1->grad, w2->grad)};
    printf("  KL sparse vs dense (K covers windows): lse %.2e loss %.2e (%.4f) dq %.2e dk %.2e dw %.2e\n", e[0], e[1],
           dsa_get(ls, 0), e[2], e[3], e[4]);
    for (int i = 0; i < 5; i++) CHECK(e[i] <= TOL, "KL sparse vs dense error #%d = %g", i, e[i]);
    double gmax = 0;
    for (int64_t i = 0; q1->grad && i < dsa_numel(q1->grad); i++) gmax = fmax(gmax, fabs(dsa_get(q1->grad, i)));
    printf("  KL: max |dq^I| = %.3g (nonzero gradients are compared)\n", gmax);
    CHECK(dsa_get(ls, 0) > 0 && gmax > 0, "KL loss and gradient nonzero");
}

int main(void) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_rng rng;
    dsa_rng_init(&rng, 77);
    windows w = make_windows(c);
    printf("sparse vs dense, fp32 (tolerance %.0e):\n", TOL);
    attention_case(c, &rng, w, 5, 8, 8, 5, 1, 1, 2);   // D = Dv, everything on, 5 heads in chunks of 2
    attention_case(c, &rng, w, 5, 10, 6, 7, 1, 0, 3);  // D > Dv, no sink
    attention_case(c, &rng, w, 3, 10, 6, 4, 0, 1, 0);  // no topk_length
    attention_case(c, &rng, w, 7, 9, 9, 11, 1, 1, 4);  // K > every window
    attention_case(c, &rng, w, 1, 5, 3, 3, 1, 1, 1);   // one head
    kl_case(c, &rng, w);
    dsa_ctx_free(c);
    return test_finish();
}
