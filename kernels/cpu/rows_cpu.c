// Row gather / scatter-add along dim 0 (embedding is a gather). Indices were validated by the
// front end. Backward scatters are sequential over the index list: repeated indices hit one row.
#include <string.h>
#include "kernels/cpu/cpu_kernels.h"

static int64_t row_elems(const dsa_tensor *t) {
    int64_t n = 1;
    for (int i = 1; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static const int32_t *ids_of(const dsa_tensor *idx) { return (const int32_t *)idx->data; }

dsa_status dsa_gather_rows_fwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out) {
    int64_t M = dsa_numel(idx), row = row_elems(x);
    const int32_t *id = ids_of(idx);
#pragma omp parallel for if (M * row > DSA_OMP_MIN_WORK)
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < row; j++) dsa_set(out, m * row + j, dsa_get(x, (int64_t)id[m] * row + j));
    return DSA_OK;
}

dsa_status dsa_gather_rows_bwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout, dsa_tensor *dx) {
    int64_t M = dsa_numel(idx), row = row_elems(x);
    const int32_t *id = ids_of(idx);
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < row; j++) {
            int64_t d = (int64_t)id[m] * row + j;
            dsa_set(dx, d, dsa_get(dx, d) + dsa_get(dout, m * row + j));
        }
    return DSA_OK;
}

dsa_status dsa_embedding_fwd_cpu(const dsa_tensor *table, const dsa_tensor *ids, dsa_tensor *out) {
    return dsa_gather_rows_fwd_cpu(table, ids, out);
}

dsa_status dsa_embedding_bwd_cpu(const dsa_tensor *table, const dsa_tensor *ids, const dsa_tensor *dout,
                                 dsa_tensor *dtable) {
    return dsa_gather_rows_bwd_cpu(table, ids, dout, dtable);
}

dsa_status dsa_scatter_add_rows_fwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, dsa_tensor *out) {
    int64_t M = dsa_numel(idx), row = row_elems(out), n = dsa_numel(out);
    const int32_t *id = ids_of(idx);
    for (int64_t i = 0; i < n; i++) dsa_set(out, i, 0.0);
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < row; j++) {
            int64_t d = (int64_t)id[m] * row + j;
            dsa_set(out, d, dsa_get(out, d) + dsa_get(x, m * row + j));
        }
    return DSA_OK;
}

dsa_status dsa_scatter_add_rows_bwd_cpu(const dsa_tensor *x, const dsa_tensor *idx, const dsa_tensor *dout,
                                        dsa_tensor *dx) {
    int64_t M = dsa_numel(idx), row = row_elems(x);
    const int32_t *id = ids_of(idx);
#pragma omp parallel for if (M * row > DSA_OMP_MIN_WORK)
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = 0; j < row; j++)
            dsa_set(dx, m * row + j, dsa_get(dx, m * row + j) + dsa_get(dout, (int64_t)id[m] * row + j));
    return DSA_OK;
}
