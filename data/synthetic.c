// The synthetic key-value recall task (docs/data.md). A document of length L:
//
//     BOS  k1 v1  k2 v2 ... kN vN  SEP  kq1 vq1  kq2 vq2 ...  [SEP if one row is left]
//
// Keys are distinct within a document; each query repeats a key of the document chosen uniformly,
// and its value (the answer) can only be predicted by looking back at the pair: a retrieval over up
// to L rows that the indexer's top-k must cover.
#include <stdlib.h>
#include <string.h>
#include "core/rng.h"
#include "data/dataset_internal.h"

static int64_t n_keys(int64_t vocab) { return (vocab - 2) / 2; }

dsa_status dsa_synthetic_check(const dsa_dataset *ds) {
    const dsa_data_options *o = &ds->opt;
    if (o->n_pairs < 1) return dsa_error_set(DSA_ERR_VALUE, "synthetic data: n_pairs=%lld must be >= 1", (long long)o->n_pairs);
    if (o->vocab_size < 4 || n_keys(o->vocab_size) < o->n_pairs)
        return dsa_error_set(DSA_ERR_VALUE,
                             "synthetic data: vocab_size=%lld too small for n_pairs=%lld (need >= 2 + 2 * n_pairs)",
                             (long long)o->vocab_size, (long long)o->n_pairs);
    if (o->doc_len < 2 * o->n_pairs + 4)
        return dsa_error_set(DSA_ERR_VALUE, "synthetic data: doc_len=%lld too short for n_pairs=%lld (need >= 2 * n_pairs + 4)",
                             (long long)o->doc_len, (long long)o->n_pairs);
    return DSA_OK;
}

dsa_status dsa_synthetic_doc(const dsa_dataset *ds, int split, int64_t index, int32_t *tokens, uint8_t *answer,
                             int64_t cap, int64_t *len) {
    const int64_t V = ds->opt.vocab_size, K = n_keys(V), NV = V - 2 - K, L = ds->opt.doc_len, N = ds->opt.n_pairs;
    dsa_rng base;
    dsa_rng_init(&base, ds->opt.seed);
    dsa_rng r = dsa_rng_fork(&base, (uint64_t)index * 2 + (uint64_t)(split == DSA_SPLIT_EVAL));
    // Distinct keys: a partial Fisher-Yates shuffle of [0, K).
    int32_t *perm = malloc((size_t)K * sizeof(int32_t));
    int32_t *keys = malloc((size_t)N * 2 * sizeof(int32_t)), *vals = keys + N;
    if (!perm || !keys) {
        free(perm);
        free(keys);
        return dsa_error_set(DSA_ERR_MEMORY, "synthetic data: out of memory");
    }
    for (int64_t i = 0; i < K; i++) perm[i] = (int32_t)i;
    for (int64_t i = 0; i < N; i++) {
        int64_t j = i + (int64_t)dsa_rng_below(&r, (uint64_t)(K - i));
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
        keys[i] = 2 + perm[i];
        vals[i] = (int32_t)(2 + K + (int64_t)dsa_rng_below(&r, (uint64_t)NV));
    }
    // Build the whole document, then copy the first cap rows (truncation keeps the same prefix).
    int64_t n = L < cap ? L : cap;
    int64_t p = 0;
#define PUT(tok, ans)                          \
    do {                                       \
        if (p < n) {                           \
            tokens[p] = (tok);                 \
            if (answer) answer[p] = (ans);     \
        }                                      \
        p++;                                   \
    } while (0)
    PUT(DSA_SYN_BOS, 0);
    for (int64_t i = 0; i < N; i++) {
        PUT(keys[i], 0);
        PUT(vals[i], 0);
    }
    PUT(DSA_SYN_SEP, 0);
    while (p + 2 <= L && p < n) {
        int64_t q = (int64_t)dsa_rng_below(&r, (uint64_t)N);
        PUT(keys[q], 0);
        PUT(vals[q], 1);
    }
    if (p < L) PUT(DSA_SYN_SEP, 0);
#undef PUT
    free(perm);
    free(keys);
    *len = n;
    return DSA_OK;
}
