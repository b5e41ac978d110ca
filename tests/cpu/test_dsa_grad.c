// fp64 finite-difference gradient checks of the DSA autograd ops (SPEC 9: max rel err <= 1e-6), and
// the KL gradient's exact form G = (c g / N)(pi - p) in fp32.
#include <string.h>
#include "common/gradcheck.h"
#include "test_dsa_util.h"

enum { T = 7, HI = 3, DI = 5, S = 9, K = 5 };

typedef struct {
    dsa_tensor *start, *end, *idx, *tl, *target, *is_real;
    dsa_sparse_mqa_args args;
    int use_sink;
} ctx_t;

static dsa_tensor *f_logits(dsa_ctx *c, dsa_tensor **in, void *u) {
    ctx_t *x = u;
    return dsa_indexer_logits(c, in[0], in[1], in[2], x->start, x->end);
}
static dsa_tensor *f_logits_kl(dsa_ctx *c, dsa_tensor **in, void *u) {
    ctx_t *x = u;
    dsa_tensor *l = dsa_indexer_logits(c, in[0], in[1], in[2], x->start, x->end);
    return l ? dsa_kl_indexer_loss(c, l, x->target, x->is_real, 0.3, 5.0) : NULL;
}
static dsa_tensor *f_gather(dsa_ctx *c, dsa_tensor **in, void *u) {
    ctx_t *x = u;
    return dsa_indexer_gather_logits(c, in[0], in[1], in[2], x->idx, x->tl);
}
static dsa_tensor *f_gather_kl(dsa_ctx *c, dsa_tensor **in, void *u) {
    ctx_t *x = u;
    dsa_tensor *l = dsa_indexer_gather_logits(c, in[0], in[1], in[2], x->idx, x->tl);
    return l ? dsa_kl_indexer_loss(c, l, x->target, x->is_real, 0.7, 6.0) : NULL;
}
static dsa_tensor *f_kl(dsa_ctx *c, dsa_tensor **in, void *u) {
    ctx_t *x = u;
    return dsa_kl_indexer_loss(c, in[0], x->target, x->is_real, 0.9, 4.0);
}
static dsa_tensor *f_mqa(dsa_ctx *c, dsa_tensor **in, void *u) {
    ctx_t *x = u;
    dsa_tensor *out = NULL, *lse = NULL;
    if (dsa_sparse_mqa(c, in[0], in[1], x->idx, x->tl, x->use_sink ? in[2] : NULL, &x->args, &out, &lse) != DSA_OK)
        return NULL;
    return out;
}

// Positive random target [rows, cols], L1-normalized per row over the finite entries of `logits`
// (when given) or all entries.
static dsa_tensor *random_target(dsa_ctx *c, dsa_rng *r, int64_t rows, int64_t cols, const dsa_tensor *logits) {
    dsa_tensor *p = dsa_tensor_new(c, DSA_PERSIST, DSA_F64, DSA_CPU, 2, (int64_t[]){rows, cols});
    for (int64_t t = 0; t < rows; t++) {
        double sum = 0;
        for (int64_t j = 0; j < cols; j++) {
            int ok = !logits || dsa_get(logits, t * cols + j) > -INFINITY;
            double v = ok ? 0.05 + dsa_rng_uniform(r) : 0;
            dsa_set(p, t * cols + j, v);
            sum += v;
        }
        for (int64_t j = 0; j < cols && sum > 0; j++) dsa_set(p, t * cols + j, dsa_get(p, t * cols + j) / sum);
    }
    return p;
}

static void check_indexer(dsa_ctx *c, dsa_rng *r) {
    dsa_tensor *q = test_randn(c, DSA_F64, DSA_CPU, 3, (int64_t[]){T, HI, DI}, r, 1, true);
    dsa_tensor *k = test_randn(c, DSA_F64, DSA_CPU, 2, (int64_t[]){S, DI}, r, 1, true);
    dsa_tensor *w = test_randn(c, DSA_F64, DSA_CPU, 2, (int64_t[]){T, HI}, r, 1, true);
    dsa_set_name(q, "q");
    dsa_set_name(k, "k");
    dsa_set_name(w, "w");
    ctx_t x = {0};
    int32_t zero[T], full[T], st[T], en[T];
    for (int t = 0; t < T; t++) zero[t] = 0, full[t] = S, st[t] = t / 3, en[t] = t / 3 + 1 + t % 4;
    x.start = tu_i32(c, 1, (int64_t[]){T}, zero);
    x.end = tu_i32(c, 1, (int64_t[]){T}, full);
    gradcheck_expect(c, "indexer_logits (full windows)", f_logits, &x, (dsa_tensor *[]){q, k, w}, 3, r, GRADCHECK_TOL);
    x.start = tu_i32(c, 1, (int64_t[]){T}, st);
    x.end = tu_i32(c, 1, (int64_t[]){T}, en);
    bool prev = dsa_set_grad_enabled(c, false);
    dsa_tensor *l = dsa_indexer_logits(c, q, k, w, x.start, x.end);
    dsa_set_grad_enabled(c, prev);
    x.target = random_target(c, r, T, S, l);
    x.is_real = dsa_from_host(c, DSA_PERSIST, DSA_U8, DSA_CPU, 1, (int64_t[]){T}, (uint8_t[]){1, 1, 0, 1, 1, 1, 0});
    gradcheck_expect(c, "kl(indexer_logits, windows)", f_logits_kl, &x, (dsa_tensor *[]){q, k, w}, 3, r, GRADCHECK_TOL);

    // Gather: every slot valid (finite output), then through the KL with every invalid-slot kind.
    int32_t all[T * K];
    for (int i = 0; i < T * K; i++) all[i] = (int32_t)dsa_rng_below(r, S);
    x.idx = tu_i32(c, 2, (int64_t[]){T, K}, all);
    x.tl = NULL;
    gradcheck_expect(c, "indexer_gather_logits (all valid)", f_gather, &x, (dsa_tensor *[]){q, k, w}, 3, r, GRADCHECK_TOL);
    x.idx = tu_random_idx(c, r, T, K, S, NULL, NULL);
    x.tl = tu_random_len(c, r, T, K);
    prev = dsa_set_grad_enabled(c, false);
    l = dsa_indexer_gather_logits(c, q, k, w, x.idx, x.tl);
    dsa_set_grad_enabled(c, prev);
    x.target = random_target(c, r, T, K, l);
    gradcheck_expect(c, "kl(indexer_gather_logits, invalid slots)", f_gather_kl, &x, (dsa_tensor *[]){q, k, w}, 3, r,
                     GRADCHECK_TOL);
    // The KL alone w.r.t. its logits (with -inf slots and padding rows).
    dsa_tensor *lg = dsa_copy(c, DSA_PERSIST, l, DSA_CPU, DSA_F64);
    lg->requires_grad = true;
    dsa_set_name(lg, "logits");
    gradcheck_expect(c, "kl_indexer_loss", f_kl, &x, (dsa_tensor *[]){lg}, 1, r, GRADCHECK_TOL);
}

static void check_mqa(dsa_ctx *c, dsa_rng *r, int64_t H, int64_t D, int64_t dv, int with_len, int sink, int64_t chunk) {
    dsa_tensor *q = test_randn(c, DSA_F64, DSA_CPU, 3, (int64_t[]){T, H, D}, r, 1, true);
    dsa_tensor *kv = test_randn(c, DSA_F64, DSA_CPU, 2, (int64_t[]){S, D}, r, 1, true);
    dsa_tensor *sk = test_randn(c, DSA_F64, DSA_CPU, 1, (int64_t[]){H}, r, 1, true);
    dsa_set_name(q, "q");
    dsa_set_name(kv, "kv");
    dsa_set_name(sk, "sink");
    ctx_t x = {0};
    x.idx = tu_random_idx(c, r, T, K, S, NULL, NULL);
    x.tl = with_len ? tu_random_len(c, r, T, K) : NULL;
    x.args = (dsa_sparse_mqa_args){.sigma = 0.37, .dv = dv, .max_heads_per_kernel = chunk};
    x.use_sink = sink;
    char name[128];
    snprintf(name, sizeof name, "sparse_mqa H=%lld D=%lld dv=%lld topk_length=%d sink=%d chunk=%lld", (long long)H,
             (long long)D, (long long)dv, with_len, sink, (long long)chunk);
    gradcheck_expect(c, name, f_mqa, &x, (dsa_tensor *[]){q, kv, sk}, sink ? 3 : 2, r, GRADCHECK_TOL);
}

// G = (c g / N)(pi - p) on valid slots of real rows, 0 elsewhere; fp32, compared to 1e-6.
static void check_kl_form(dsa_ctx *c, dsa_rng *r) {
    const int64_t R = 6, N = 8;
    dsa_tensor *lg = test_randn(c, DSA_F32, DSA_CPU, 2, (int64_t[]){R, N}, r, 2, true);
    for (int64_t i = 0; i < R * N; i++)
        if (i % 5 == 2 || i / N == 4) dsa_set(lg, i, -INFINITY);  // row 4: every slot invalid
    dsa_tensor *p = random_target(c, r, R, N, lg), *p32 = dsa_copy(c, DSA_PERSIST, p, DSA_CPU, DSA_F32);
    uint8_t real[6] = {1, 0, 1, 1, 1, 1};
    dsa_tensor *is_real = dsa_from_host(c, DSA_PERSIST, DSA_U8, DSA_CPU, 1, &R, real);
    const double coeff = 0.25, nrows = 5, g = 1.7;
    dsa_tensor *loss = dsa_kl_indexer_loss(c, lg, p32, is_real, coeff, nrows);
    CHECK_T(loss);
    dsa_tensor *seed = dsa_tensor_new(c, DSA_STEP, DSA_F32, DSA_CPU, 0, NULL);
    dsa_set(seed, 0, g);
    CHECK_OK(dsa_backward_with_grad(c, loss, seed));
    double err = 0, lref = 0;
    for (int64_t t = 0; t < R; t++) {
        double m = -INFINITY, z = 0;
        for (int64_t j = 0; j < N; j++) m = fmax(m, dsa_get(lg, t * N + j));
        for (int64_t j = 0; j < N; j++) z += m > -INFINITY ? exp(dsa_get(lg, t * N + j) - m) : 0;
        for (int64_t j = 0; j < N; j++) {
            double v = dsa_get(lg, t * N + j), pv = dsa_get(p32, t * N + j);
            int valid = real[t] && v > -INFINITY;
            double pi = valid ? exp(v - m) / z : 0;
            double want = valid ? coeff * g / nrows * (pi - pv) : 0;
            if (valid) lref += coeff / nrows * pv * (log(fmax(pv, 1e-10)) - log(pi));
            double got = lg->grad ? dsa_get(lg->grad, t * N + j) : NAN;
            double e = fabs(got - want);
            err = isnan(e) || e > err ? (isnan(e) ? INFINITY : e) : err;
        }
    }
    double lerr = fabs(dsa_get(loss, 0) - lref);
    printf("kl G vs (c g/N)(pi - p), fp32: max abs err %.3g; loss err %.3g\n", err, lerr);
    CHECK(err <= 1e-6, "KL gradient form err %g", err);
    CHECK(lerr <= 1e-6 * fmax(1, fabs(lref)), "KL loss value err %g", lerr);
}

int main(void) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_rng rng;
    dsa_rng_init(&rng, 20261122);
    check_indexer(c, &rng);
    check_mqa(c, &rng, 3, 6, 6, 0, 0, 0);  // D = Dv, no topk_length, no sink
    check_mqa(c, &rng, 3, 6, 6, 1, 1, 0);  // D = Dv with topk_length and sink
    check_mqa(c, &rng, 4, 7, 4, 1, 1, 3);  // D > Dv, chunked heads (4 = 3 + 1)
    check_mqa(c, &rng, 2, 7, 5, 1, 0, 1);  // D > Dv, one head per chunk, no sink
    check_kl_form(c, &rng);
    dsa_ctx_free(c);
    return test_finish();
}
