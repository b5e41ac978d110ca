// Packed THD batches: allocation, invariant checks, and the CP query-row splits (see batch.h).
#include "data/batch.h"
#include <stdlib.h>
#include <string.h>

dsa_status dsa_batch_alloc(dsa_batch *b, int64_t max_rows, int64_t max_docs) {
    memset(b, 0, sizeof *b);
    if (max_rows < 1 || max_docs < 1 || max_rows > INT32_MAX)
        return dsa_error_set(DSA_ERR_VALUE, "dsa_batch_alloc: max_rows=%lld max_docs=%lld", (long long)max_rows,
                             (long long)max_docs);
    size_t r = (size_t)max_rows, d = (size_t)max_docs + 1;
    b->tokens = calloc(r, sizeof(int32_t));
    b->targets = calloc(r, sizeof(int32_t));
    b->positions = calloc(r, sizeof(int32_t));
    b->answer = calloc(r, 1);
    b->real = calloc(r, 1);
    b->cu_seqlens = calloc(d, sizeof(int32_t));
    b->cu_seqlens_padded = calloc(d, sizeof(int32_t));
    if (!b->tokens || !b->targets || !b->positions || !b->answer || !b->real || !b->cu_seqlens || !b->cu_seqlens_padded) {
        dsa_batch_free(b);
        return dsa_error_set(DSA_ERR_MEMORY, "dsa_batch_alloc: out of memory (%lld rows)", (long long)max_rows);
    }
    b->cap_rows = max_rows;
    b->cap_docs = max_docs;
    return DSA_OK;
}

void dsa_batch_free(dsa_batch *b) {
    free(b->tokens);
    free(b->targets);
    free(b->positions);
    free(b->answer);
    free(b->real);
    free(b->cu_seqlens);
    free(b->cu_seqlens_padded);
    memset(b, 0, sizeof *b);
}

dsa_status dsa_batch_copy(dsa_batch *dst, const dsa_batch *src) {
    if (dst->cap_rows < src->T || dst->cap_docs < src->n_docs) {
        dsa_batch_free(dst);
        DSA_TRY(dsa_batch_alloc(dst, src->T > 0 ? src->T : 1, src->n_docs > 0 ? src->n_docs : 1));
    }
    size_t r = (size_t)src->T, d = (size_t)src->n_docs + 1;
    memcpy(dst->tokens, src->tokens, r * sizeof(int32_t));
    memcpy(dst->targets, src->targets, r * sizeof(int32_t));
    memcpy(dst->positions, src->positions, r * sizeof(int32_t));
    memcpy(dst->answer, src->answer, r);
    memcpy(dst->real, src->real, r);
    memcpy(dst->cu_seqlens, src->cu_seqlens, d * sizeof(int32_t));
    memcpy(dst->cu_seqlens_padded, src->cu_seqlens_padded, d * sizeof(int32_t));
    dst->T = src->T;
    dst->n_docs = src->n_docs;
    dst->n_real = src->n_real;
    dst->n_targets = src->n_targets;
    dst->n_answers = src->n_answers;
    return DSA_OK;
}

static dsa_status check_docs(const dsa_batch *b, int64_t P) {
    const int32_t *cu = b->cu_seqlens, *cup = b->cu_seqlens_padded;
    if (b->n_docs < 1 || cu[0] != 0 || cup[0] != 0 || cup[b->n_docs] != b->T)
        return dsa_error_set(DSA_ERR_VALUE, "batch: n_docs=%d cu[0]=%d cup[0]=%d cup[n]=%d T=%lld", b->n_docs, cu[0],
                             cup[0], cup[b->n_docs], (long long)b->T);
    for (int d = 0; d < b->n_docs; d++) {
        int32_t len = cu[d + 1] - cu[d], plen = cup[d + 1] - cup[d];
        if (len < 1 || plen < len || plen % P != 0)
            return dsa_error_set(DSA_ERR_VALUE, "batch doc %d: real length %d, padded length %d (P=%lld)", d, len, plen,
                                 (long long)P);
    }
    return DSA_OK;
}

dsa_status dsa_batch_validate(const dsa_batch *b, int64_t P, int64_t vocab) {
    DSA_TRY(check_docs(b, P));
    const int32_t *cu = b->cu_seqlens, *cup = b->cu_seqlens_padded;
    for (int d = 0; d < b->n_docs; d++) {
        int64_t real_end = cup[d] + (cu[d + 1] - cu[d]);
        for (int64_t r = cup[d]; r < cup[d + 1]; r++) {
            bool real = r < real_end;
            int32_t tok = b->tokens[r], tgt = b->targets[r];
            if (b->real[r] != real || b->positions[r] != r - cup[d] || tok < 0 || tok >= vocab || tgt < -1 ||
                tgt >= vocab || (!real && tgt != -1) || (r == real_end - 1 && tgt != -1) ||
                (tgt >= 0 && tgt != b->tokens[r + 1]) || (b->answer[r] && tgt < 0))
                return dsa_error_set(DSA_ERR_VALUE, "batch row %lld (doc %d, real=%d): token %d target %d position %d answer %d",
                                     (long long)r, d, (int)b->real[r], tok, tgt, b->positions[r], (int)b->answer[r]);
        }
    }
    return DSA_OK;
}

dsa_status dsa_cp_query_indices(const int32_t *cup, int n_docs, int cp_size, int cp_rank, int kind, int32_t *out,
                                int64_t *n_out) {
    if (cp_size < 1 || cp_rank < 0 || cp_rank >= cp_size || n_docs < 1)
        return dsa_error_set(DSA_ERR_VALUE, "dsa_cp_query_indices: cp_rank=%d cp_size=%d n_docs=%d", cp_rank, cp_size, n_docs);
    int64_t T = cup[n_docs], n = 0;
    if (T % cp_size != 0)
        return dsa_error_set(DSA_ERR_SHAPE, "dsa_cp_query_indices: T=%lld rows not a multiple of cp_size=%d", (long long)T, cp_size);
    if (kind == DSA_CP_SPLIT_CONTIGUOUS) {
        int64_t per = T / cp_size;
        for (int64_t i = 0; i < per; i++) out[n++] = (int32_t)(cp_rank * per + i);
    } else if (kind == DSA_CP_SPLIT_ZIGZAG) {
        for (int d = 0; d < n_docs; d++) {
            int64_t len = cup[d + 1] - cup[d];
            if (len % (2 * cp_size) != 0)
                return dsa_error_set(DSA_ERR_SHAPE, "dsa_cp_query_indices (zigzag): doc %d padded length %lld not a multiple of 2*cp=%d",
                                     d, (long long)len, 2 * cp_size);
            int64_t chunk = len / (2 * cp_size);
            int64_t a = cup[d] + cp_rank * chunk, b = cup[d] + (2 * cp_size - 1 - cp_rank) * chunk;
            for (int64_t i = 0; i < chunk; i++) out[n++] = (int32_t)(a + i);
            for (int64_t i = 0; i < chunk; i++) out[n++] = (int32_t)(b + i);
        }
    } else {
        return dsa_error_set(DSA_ERR_VALUE, "dsa_cp_query_indices: unknown split kind %d", kind);
    }
    *n_out = n;
    return DSA_OK;
}
