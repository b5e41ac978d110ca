// Front ends of SPEC 0 (window bounds, with cu_seqlens validation) and SPEC 4 (additive masks).
#include <stdint.h>
#include <stdlib.h>
#include "kernels/op_dsa_internal.h"

// Host copy of an i32 tensor (it may live on the GPU). Caller frees.
static int32_t *host_i32(const dsa_tensor *t) {
    int32_t *h = malloc((size_t)(dsa_numel(t) > 0 ? dsa_numel(t) : 1) * sizeof *h);
    if (!h) {
        dsa_error_set(DSA_ERR_MEMORY, "dsa_window_bounds: out of host memory");
        return NULL;
    }
    if (dsa_to_host(t, h) != DSA_OK) {
        free(h);
        return NULL;
    }
    return h;
}

// cu and cup start at 0, are non-decreasing, and every padded length covers its real length.
static dsa_status check_seqlens(const int32_t *cu, const int32_t *cup, int64_t n1) {
    const char *op = "dsa_window_bounds";
    if (cu[0] != 0 || cup[0] != 0)
        return dsa_error_set(DSA_ERR_VALUE, "%s: cu_seqlens[0] = %d and cu_seqlens_padded[0] = %d must be 0", op,
                             cu[0], cup[0]);
    for (int64_t d = 0; d + 1 < n1; d++) {
        int64_t len = (int64_t)cu[d + 1] - cu[d], plen = (int64_t)cup[d + 1] - cup[d];
        if (len < 0 || plen < 0)
            return dsa_error_set(DSA_ERR_VALUE, "%s: cu_seqlens%s not monotone at document %lld", op,
                                 len < 0 ? "" : "_padded", (long long)d);
        if (plen < len)
            return dsa_error_set(DSA_ERR_VALUE,
                                 "%s: document %lld: padded length %lld < real length %lld (cu_seqlens_padded must "
                                 "cover cu_seqlens)",
                                 op, (long long)d, (long long)plen, (long long)len);
    }
    return DSA_OK;
}

static dsa_status check_query_indices(const int32_t *qi, int64_t T, int64_t rows) {
    for (int64_t t = 0; t < T; t++)
        if (qi[t] < 0 || qi[t] >= rows)
            return dsa_error_set(DSA_ERR_INDEX, "dsa_window_bounds: query_indices[%lld] = %d outside [0, %lld)",
                                 (long long)t, qi[t], (long long)rows);
    return DSA_OK;
}

static dsa_status validate(dsa_tensor *cu, dsa_tensor *cup, dsa_tensor *qi, int64_t *T) {
    const char *op = "dsa_window_bounds";
    DSA_TRY(dsa_op_check_i32(op, "cu_seqlens", cu, 1, -1, NULL));
    DSA_TRY(dsa_op_check_i32(op, "cu_seqlens_padded", cup, 1, cu->shape[0], cu));
    if (cu->shape[0] < 2)
        return dsa_error_set(DSA_ERR_SHAPE, "%s: cu_seqlens needs n_docs + 1 >= 2 entries, got %lld", op,
                             (long long)cu->shape[0]);
    if (qi) DSA_TRY(dsa_op_check_i32(op, "query_indices", qi, 1, -1, cu));
    int32_t *hcu = host_i32(cu), *hcup = hcu ? host_i32(cup) : NULL, *hqi = NULL;
    dsa_status st = hcu && hcup ? check_seqlens(hcu, hcup, cu->shape[0]) : dsa_error_status();
    int64_t rows = hcup ? hcup[cu->shape[0] - 1] : 0;
    if (st == DSA_OK && qi) {
        hqi = host_i32(qi);
        st = hqi ? check_query_indices(hqi, qi->shape[0], rows) : dsa_error_status();
    }
    *T = qi ? qi->shape[0] : rows;
    free(hcu);
    free(hcup);
    free(hqi);
    return st;
}

dsa_status dsa_window_bounds(dsa_ctx *c, dsa_tensor *cu_seqlens, dsa_tensor *cu_seqlens_padded,
                             dsa_tensor *query_indices, int ratio, dsa_tensor **start, dsa_tensor **end,
                             dsa_tensor **is_real) {
    if (ratio < 1) return dsa_error_set(DSA_ERR_VALUE, "dsa_window_bounds: ratio %d must be >= 1", ratio);
    int64_t T;
    DSA_TRY(validate(cu_seqlens, cu_seqlens_padded, query_indices, &T));
    dsa_device dev = cu_seqlens->device;
    dsa_tensor *s = NULL, *e = NULL, *r = NULL;
    if (start && !(s = dsa_tensor_new(c, DSA_STEP, DSA_I32, dev, 1, &T))) return dsa_error_status();
    if (end && !(e = dsa_tensor_new(c, DSA_STEP, DSA_I32, dev, 1, &T))) return dsa_error_status();
    if (is_real && !(r = dsa_tensor_new(c, DSA_STEP, DSA_U8, dev, 1, &T))) return dsa_error_status();
    if (T > 0)
        DSA_TRY(DSA_ON_DEVICE(dev, dsa_window_bounds_cpu(cu_seqlens, cu_seqlens_padded, query_indices, ratio, s, e, r),
                              dsa_window_bounds_cuda(cu_seqlens, cu_seqlens_padded, query_indices, ratio, s, e, r)));
    if (start) *start = s;
    if (end) *end = e;
    if (is_real) *is_real = r;
    return DSA_OK;
}

static dsa_tensor *new_mask(dsa_ctx *c, const char *op, dsa_tensor *start, dsa_tensor *end, int64_t S, dsa_dtype dt) {
    if (dsa_op_check_i32(op, "start", start, 1, -1, NULL) != DSA_OK) return NULL;
    if (dsa_op_check_window(op, start, end, start->shape[0], start) != DSA_OK) return NULL;
    if (S < 0 || !dsa_dtype_is_float(dt)) {
        dsa_error_set(DSA_ERR_VALUE, "%s: bad S %lld or non-float dtype %s", op, (long long)S, dsa_dtype_name(dt));
        return NULL;
    }
    int64_t shape[2] = {start->shape[0], S};
    return dsa_tensor_new(c, DSA_STEP, dt, start->device, 2, shape);
}

dsa_tensor *dsa_sparse_mask(dsa_ctx *c, dsa_tensor *idx, dsa_tensor *topk_length, dsa_tensor *start,
                            dsa_tensor *end, int64_t S, dsa_dtype dt) {
    dsa_tensor *out = new_mask(c, "dsa_sparse_mask", start, end, S, dt);
    if (!out) return NULL;
    DSA_TRY_NULL(dsa_op_check_topk("dsa_sparse_mask", idx, topk_length, start->shape[0], start));
    if (dsa_numel(out) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(out->device, dsa_sparse_mask_cpu(idx, topk_length, start, end, out),
                                   dsa_sparse_mask_cuda(idx, topk_length, start, end, out)));
    return out;
}

dsa_tensor *dsa_window_mask(dsa_ctx *c, dsa_tensor *start, dsa_tensor *end, int64_t S, dsa_dtype dt) {
    dsa_tensor *out = new_mask(c, "dsa_window_mask", start, end, S, dt);
    if (!out) return NULL;
    if (dsa_numel(out) > 0)
        DSA_TRY_NULL(DSA_ON_DEVICE(out->device, dsa_window_mask_cpu(start, end, out),
                                   dsa_window_mask_cuda(start, end, out)));
    return out;
}

dsa_status dsa_window_slots(dsa_ctx *c, dsa_tensor *start, dsa_tensor *end, int64_t K, dsa_tensor **idx,
                            dsa_tensor **len) {
    const char *op = "dsa_window_slots";
    DSA_TRY(dsa_op_check_i32(op, "start", start, 1, -1, NULL));
    DSA_TRY(dsa_op_check_window(op, start, end, start->shape[0], start));
    if (K < 1 || K > INT32_MAX)
        return dsa_error_set(DSA_ERR_VALUE, "%s: K = %lld outside [1, 2^31)", op, (long long)K);
    int64_t T = start->shape[0], shape[2] = {T, K};
    *idx = dsa_tensor_new(c, DSA_STEP, DSA_I32, start->device, 2, shape);
    *len = *idx ? dsa_tensor_new(c, DSA_STEP, DSA_I32, start->device, 1, &T) : NULL;
    if (!*idx || !*len) return dsa_error_status();
    if (T == 0) return DSA_OK;
    return DSA_ON_DEVICE(start->device, dsa_window_slots_cpu(start, end, *idx, *len),
                         dsa_window_slots_cuda(start, end, *idx, *len));
}
