// Helpers shared by the DSA CPU tests (tests/cpu/test_dsa_*.c).
#pragma once
#include <stdlib.h>
#include "common/testing.h"
#include "kernels/dsa_ops.h"

static inline dsa_tensor *tu_i32(dsa_ctx *c, int ndim, const int64_t *shape, const int32_t *v) {
    return dsa_from_host(c, DSA_PERSIST, DSA_I32, DSA_CPU, ndim, shape, v);
}

// Random top-k indices [T, K] exercising every invalid-slot kind: -1 in the middle, indices >= S,
// negative ones; row 0 is all invalid. Valid keys are distinct within a row and drawn inside
// [start, end) when windows are given (else [0, S)), as a top-k producer would pick them.
static inline dsa_tensor *tu_random_idx(dsa_ctx *c, dsa_rng *r, int64_t T, int64_t K, int64_t S,
                                        const int32_t *start, const int32_t *end) {
    int32_t *v = malloc((size_t)(T * K) * sizeof *v), *perm = malloc((size_t)(S + 1) * sizeof *perm);
    for (int64_t t = 0; t < T; t++) {
        int64_t lo = start ? start[t] : 0, hi = end ? end[t] : S, n = hi - lo, used = 0;
        for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)(lo + i);
        for (int64_t j = 0; j < K; j++) {
            double u = dsa_rng_uniform(r);
            int32_t s = -1;
            if (u < 0.12) s = -1;
            else if (u < 0.18) s = (int32_t)(S + (int64_t)dsa_rng_below(r, 3));
            else if (u < 0.2) s = -7;
            else if (used < n) {  // partial Fisher-Yates: the next distinct key of the window
                int64_t k = used + (int64_t)dsa_rng_below(r, (uint64_t)(n - used));
                int32_t tmp = perm[used];
                perm[used] = perm[k];
                perm[k] = tmp;
                s = perm[used++];
            }
            v[t * K + j] = t == 0 ? -1 : s;
        }
    }
    dsa_tensor *idx = tu_i32(c, 2, (int64_t[]){T, K}, v);
    free(v);
    free(perm);
    return idx;
}

// topk_length [T]: row 1 = 0, row 2 = K, others random in [0, K]; row 3 gets a too-large value.
static inline dsa_tensor *tu_random_len(dsa_ctx *c, dsa_rng *r, int64_t T, int64_t K) {
    int32_t *v = malloc((size_t)T * sizeof *v);
    for (int64_t t = 0; t < T; t++) v[t] = (int32_t)dsa_rng_below(r, (uint64_t)K + 1);
    if (T > 1) v[1] = 0;
    if (T > 2) v[2] = (int32_t)K;
    if (T > 3) v[3] = (int32_t)K + 5;
    dsa_tensor *tl = tu_i32(c, 1, &T, v);
    free(v);
    return tl;
}
