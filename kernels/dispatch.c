#include "dispatch.h"

dsa_tensor *dsa_gpu_store_grad(dsa_ctx *c, dsa_tensor *t, bool *store) {
    *store = false;
    return t && t->device == DSA_CUDA ? dsa_grad_buffer_to_store(c, t, store) : dsa_grad_buffer(c, t);
}

dsa_status dsa_check_float_pair(const char *op, const dsa_tensor *a, const dsa_tensor *b) {
    DSA_TRY(dsa_check_float(op, "a", a));
    DSA_TRY(dsa_check_float(op, "b", b));
    DSA_TRY(dsa_check_same_device(op, a, b));
    char x[96], y[96];
    if (a->dtype != b->dtype)
        return dsa_error_set(DSA_ERR_DTYPE, "%s: dtypes differ: %s vs %s", op, dsa_shape_str(a, x, sizeof x),
                             dsa_shape_str(b, y, sizeof y));
    return DSA_OK;
}

dsa_status dsa_broadcast_shape(const char *op, const dsa_tensor *a, const dsa_tensor *b, int *ndim,
                               int64_t *out_shape) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = a->ndim - n + i, ib = b->ndim - n + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char x[96], y[96];
            return dsa_error_set(DSA_ERR_SHAPE, "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)", op,
                                 dsa_shape_str(a, x, sizeof x), dsa_shape_str(b, y, sizeof y), i, (long long)da,
                                 (long long)db);
        }
        out_shape[i] = da == 1 ? db : da;
    }
    *ndim = n;
    return DSA_OK;
}
