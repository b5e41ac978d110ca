// Top-k (SPEC 2): exact sets against a brute-force sort on ties-free inputs, deterministic ties,
// K non-power-of-two and K > window / > S, output order, score gather, and
// dsa_indexer_topk == dsa_indexer_logits + dsa_topk.
#include <string.h>
#include "test_dsa_util.h"

// Brute force for one row: repeatedly take the best remaining allowed key (ties: lower key).
static int brute_row(const double *v, int64_t S, int64_t K, int32_t *want) {
    char *used = calloc((size_t)S + 1, 1);
    int n = 0;
    for (; n < K; n++) {
        int64_t best = -1;
        for (int64_t s = 0; s < S; s++)
            if (!used[s] && v[s] > -INFINITY && (best < 0 || v[s] > v[best])) best = s;
        if (best < 0) break;
        used[best] = 1;
    }
    int j = 0;
    for (int64_t s = 0; s < S; s++)
        if (used[s]) want[j++] = (int32_t)s;
    for (; j < K; j++) want[j] = -1;
    free(used);
    return n;
}

// Checks idx / topk_length / score of dsa_topk(logits, K) against the brute force; returns #mismatching rows.
static int check_topk(dsa_ctx *c, dsa_tensor *logits, int64_t K, const char *what) {
    int64_t T = logits->shape[0], S = logits->shape[1];
    dsa_tensor *idx, *tl, *score;
    CHECK_OK(dsa_topk(c, logits, K, &idx, &tl, &score));
    double *v = malloc((size_t)(T * S) * sizeof *v);
    int32_t *want = malloc((size_t)K * sizeof *want);
    dsa_to_host_f64(logits, v);
    int bad = 0;
    for (int64_t t = 0; t < T; t++) {
        int n = brute_row(v + t * S, S, K, want);
        const int32_t *got = (const int32_t *)idx->data + t * K;
        int ok = memcmp(got, want, (size_t)K * sizeof *want) == 0 && ((int32_t *)tl->data)[t] == n;
        for (int64_t j = 0; j < K; j++) {
            double sc = dsa_get(score, t * K + j);
            ok &= j < n ? sc == v[t * S + got[j]] : sc == -INFINITY;
        }
        bad += !ok;
    }
    printf("  %-46s T=%lld S=%lld K=%lld: %d mismatching rows\n", what, (long long)T, (long long)S, (long long)K, bad);
    CHECK(bad == 0, "%s: %d rows differ from brute force", what, bad);
    free(v);
    free(want);
    return bad;
}

// Random distinct-valued logits with windows [start, end) (ties-free), -inf outside.
static dsa_tensor *windowed_logits(dsa_ctx *c, dsa_rng *r, int64_t T, int64_t S, int quantize) {
    dsa_tensor *l = dsa_tensor_new(c, DSA_PERSIST, DSA_F32, DSA_CPU, 2, (int64_t[]){T, S});
    for (int64_t t = 0; t < T; t++) {
        int64_t a = (int64_t)dsa_rng_below(r, (uint64_t)S), b = a + 1 + (int64_t)dsa_rng_below(r, (uint64_t)(S - a));
        if (t % 7 == 3) a = 0, b = S;
        for (int64_t s = 0; s < S; s++) {
            double x = quantize ? (double)dsa_rng_below(r, 4) : dsa_rng_normal(r);
            dsa_set(l, t * S + s, s >= a && s < b ? x : -INFINITY);
        }
    }
    return l;
}

int main(void) {
    dsa_ctx *c = dsa_ctx_create(DSA_CPU);
    dsa_rng rng;
    dsa_rng_init(&rng, 4242);
    printf("top-k vs brute force:\n");
    dsa_tensor *l = windowed_logits(c, &rng, 40, 37, 0);
    const int64_t Ks[] = {1, 3, 7, 13, 37, 50};
    for (int i = 0; i < 6; i++) check_topk(c, l, Ks[i], "ties-free, windows");
    // Heavy ties (values in {0,1,2,3}): the brute force takes the lower key; the same row twice agrees.
    dsa_tensor *tied = windowed_logits(c, &rng, 30, 29, 1);
    check_topk(c, tied, 5, "ties (values in {0..3})");
    check_topk(c, tied, 11, "ties (values in {0..3})");
    dsa_tensor *i1, *i2;
    CHECK_OK(dsa_topk(c, tied, 6, &i1, NULL, NULL));
    CHECK_OK(dsa_topk(c, tied, 6, &i2, NULL, NULL));
    CHECK(memcmp(i1->data, i2->data, 30 * 6 * sizeof(int32_t)) == 0, "top-k deterministic");
    // All equal: the K lowest keys.
    dsa_tensor *flat = dsa_zeros(c, DSA_PERSIST, DSA_F64, DSA_CPU, 2, (int64_t[]){1, 9});
    CHECK_OK(dsa_topk(c, flat, 4, &i1, NULL, NULL));
    CHECK(memcmp(i1->data, (int32_t[]){0, 1, 2, 3}, 16) == 0, "all-equal row picks the lowest keys");
    CHECK(dsa_topk(c, flat, 0, &i1, NULL, NULL) != DSA_OK, "K = 0 is an error");
    dsa_error_clear();

    // Fused indexer top-k == indexer_logits + top-k (idx, topk_length, score exactly).
    const int64_t T = 12, HI = 3, DI = 8, S = 20;
    dsa_tensor *q = test_randn(c, DSA_F32, DSA_CPU, 3, (int64_t[]){T, HI, DI}, &rng, 1, false);
    dsa_tensor *k = test_randn(c, DSA_F32, DSA_CPU, 2, (int64_t[]){S, DI}, &rng, 1, false);
    dsa_tensor *w = test_randn(c, DSA_F32, DSA_CPU, 2, (int64_t[]){T, HI}, &rng, 1, false);
    int32_t st[12], en[12];
    for (int t = 0; t < T; t++) st[t] = t / 4 * 5, en[t] = st[t] + 1 + t % 4 * 2;
    dsa_tensor *start = tu_i32(c, 1, &T, st), *end = tu_i32(c, 1, &T, en);
    dsa_tensor *logits = dsa_indexer_logits(c, q, k, w, start, end);
    CHECK_T(logits);
    const int64_t fk[] = {1, 5, 6, 9};
    for (int i = 0; i < 4; i++) {
        dsa_tensor *ia, *la, *sa, *ib, *lb, *sb;
        CHECK_OK(dsa_indexer_topk(c, q, k, w, start, end, fk[i], &ia, &la, &sa));
        CHECK_OK(dsa_topk(c, logits, fk[i], &ib, &lb, &sb));
        int same = memcmp(ia->data, ib->data, (size_t)(T * fk[i]) * 4) == 0 &&
                   memcmp(la->data, lb->data, (size_t)T * 4) == 0;
        double e = 0;
        for (int64_t j = 0; j < T * fk[i]; j++) {
            double x = dsa_get(sa, j), y = dsa_get(sb, j);
            e = fmax(e, x == y ? 0 : fabs(x - y));
        }
        printf("  indexer_topk vs logits+topk K=%lld: idx/len %s, score max diff %.3g\n", (long long)fk[i],
               same ? "identical" : "DIFFER", e);
        CHECK(same && e == 0, "indexer_topk K=%lld", (long long)fk[i]);
        check_topk(c, logits, fk[i], "indexer logits (K > some windows)");
    }
    dsa_ctx_free(c);
    return test_finish();
}
