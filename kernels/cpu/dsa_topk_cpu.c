// CPU top-k (SPEC 2): per row, the K largest allowed logits (ties to the lower key), written in
// ascending key order, then -1. Sort the allowed keys by (score desc, key asc), mark the first K,
// emit the marks in key order.
#include <math.h>
#include <stdlib.h>
#include "core/error.h"
#include "kernels/cpu/dsa_cpu_kernels.h"

#define LD(t, i) dsa_load((t)->data, (t)->dtype, (i))

typedef struct {
    double v;
    int32_t s;
} key_score;

// Larger score first; equal scores: lower key first (deterministic ties).
static int by_score_then_key(const void *a, const void *b) {
    const key_score *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->s > y->s) - (x->s < y->s);
}

// One row: vals[S] (NaN / -inf = not allowed) -> idx_out[K], returns the number of picks.
static int64_t topk_row(const double *vals, int64_t S, int64_t K, key_score *buf, unsigned char *picked,
                        int32_t *idx_out) {
    int64_t m = 0;
    for (int64_t s = 0; s < S; s++) {
        picked[s] = 0;
        if (vals[s] > -INFINITY) buf[m++] = (key_score){vals[s], (int32_t)s};
    }
    qsort(buf, (size_t)m, sizeof *buf, by_score_then_key);
    int64_t n = m < K ? m : K;
    for (int64_t j = 0; j < n; j++) picked[buf[j].s] = 1;
    int64_t j = 0;
    for (int64_t s = 0; s < S && j < n; s++)
        if (picked[s]) idx_out[j++] = (int32_t)s;
    for (; j < K; j++) idx_out[j] = -1;
    return n;
}

static dsa_status topk_rows(const double *vals, int64_t T, int64_t S, int64_t K, dsa_tensor *idx,
                           dsa_tensor *topk_length, dsa_tensor *score) {
    unsigned char *picked = malloc((size_t)(S > 0 ? S : 1));
    key_score *buf = malloc((size_t)(S > 0 ? S : 1) * sizeof *buf);
    if (!picked || !buf) {
        free(picked);
        free(buf);
        return dsa_error_set(DSA_ERR_MEMORY, "dsa_topk (cpu): out of host memory");
    }
    for (int64_t t = 0; t < T; t++) {
        int32_t *row = (int32_t *)idx->data + t * K;
        int64_t n = topk_row(vals + t * S, S, K, buf, picked, row);
        if (topk_length) ((int32_t *)topk_length->data)[t] = (int32_t)n;
        if (score)
            for (int64_t j = 0; j < K; j++)
                dsa_store(score->data, score->dtype, t * K + j, j < n ? vals[t * S + row[j]] : -INFINITY);
    }
    free(picked);
    free(buf);
    return DSA_OK;
}

dsa_status dsa_topk_cpu(const dsa_tensor *logits, int64_t K, dsa_tensor *idx, dsa_tensor *topk_length,
                        dsa_tensor *score) {
    int64_t T = logits->shape[0], S = logits->shape[1];
    double *vals = malloc((size_t)(T * S > 0 ? T * S : 1) * sizeof(double));
    if (!vals) return dsa_error_set(DSA_ERR_MEMORY, "dsa_topk (cpu): out of host memory");
    for (int64_t i = 0; i < T * S; i++) vals[i] = LD(logits, i);
    dsa_status st = topk_rows(vals, T, S, K, idx, topk_length, score);
    free(vals);
    return st;
}

// The logits are rounded to q's dtype before selection, so the result equals dsa_indexer_logits
// followed by dsa_topk exactly (ties after rounding included).
dsa_status dsa_indexer_topk_cpu(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                const dsa_tensor *start, const dsa_tensor *end, int64_t K, dsa_tensor *idx,
                                dsa_tensor *topk_length, dsa_tensor *score) {
    int64_t T = q->shape[0], S = k->shape[0], n = T * S > 0 ? T * S : 1;
    dsa_tensor logits = {.dtype = q->dtype, .device = DSA_CPU, .ndim = 2, .shape = {T, S}};
    logits.data = malloc((size_t)n * dsa_dtype_size(q->dtype));
    double *vals = malloc((size_t)n * sizeof *vals);
    dsa_status st = DSA_OK;
    if (!logits.data || !vals) st = dsa_error_set(DSA_ERR_MEMORY, "dsa_indexer_topk (cpu): out of host memory");
    if (st == DSA_OK) st = dsa_indexer_logits_fwd_cpu(q, k, w, start, end, &logits);
    if (st == DSA_OK) {
        for (int64_t i = 0; i < T * S; i++) vals[i] = dsa_load(logits.data, logits.dtype, i);
        st = topk_rows(vals, T, S, K, idx, topk_length, score);
    }
    free(logits.data);
    free(vals);
    return st;
}
