// Shared by the DSA op front ends (kernels/op_dsa_*.c): backend kernels and input checks.
#pragma once
#include "kernels/dispatch.h"
#include "kernels/dsa_ops.h"
#include "kernels/cpu/dsa_cpu_kernels.h"
#ifdef DSA_HAVE_CUDA
#include "kernels/cuda/dsa_cuda_kernels.h"
#endif

// A float tensor of rank ndim on dev with the dtype of `like` (when like != NULL).
static inline dsa_status dsa_op_check_float(const char *op, const char *what, const dsa_tensor *t, int ndim,
                                            const dsa_tensor *like) {
    DSA_TRY(dsa_check_float(op, what, t));
    DSA_TRY(dsa_check_ndim(op, what, t, ndim));
    if (like) {
        DSA_TRY(dsa_check_same_device(op, like, t));
        DSA_TRY(dsa_check_dtype(op, what, t, like->dtype));
    }
    return DSA_OK;
}

// An i32 tensor of rank ndim whose first dim is rows (when rows >= 0), on like's device.
static inline dsa_status dsa_op_check_i32(const char *op, const char *what, const dsa_tensor *t, int ndim,
                                          int64_t rows, const dsa_tensor *like) {
    DSA_TRY(dsa_check_tensor(op, what, t));
    DSA_TRY(dsa_check_dtype(op, what, t, DSA_I32));
    DSA_TRY(dsa_check_ndim(op, what, t, ndim));
    if (rows >= 0) DSA_TRY(dsa_check_dim(op, what, t, 0, rows));
    if (like) DSA_TRY(dsa_check_same_device(op, like, t));
    return DSA_OK;
}

// idx i32 [T, K] and optional topk_length i32 [T].
static inline dsa_status dsa_op_check_topk(const char *op, const dsa_tensor *idx, const dsa_tensor *topk_length,
                                           int64_t T, const dsa_tensor *like) {
    DSA_TRY(dsa_op_check_i32(op, "idx", idx, 2, T, like));
    if (topk_length) DSA_TRY(dsa_op_check_i32(op, "topk_length", topk_length, 1, T, like));
    return DSA_OK;
}

// start, end i32 [T].
static inline dsa_status dsa_op_check_window(const char *op, const dsa_tensor *start, const dsa_tensor *end,
                                             int64_t T, const dsa_tensor *like) {
    DSA_TRY(dsa_op_check_i32(op, "start", start, 1, T, like));
    DSA_TRY(dsa_op_check_i32(op, "end", end, 1, T, like));
    return DSA_OK;
}

// Indexer inputs: q [T, H, D], k [S, D], w [T, H], one float dtype, one device.
static inline dsa_status dsa_op_check_indexer(const char *op, const dsa_tensor *q, const dsa_tensor *k,
                                              const dsa_tensor *w) {
    DSA_TRY(dsa_op_check_float(op, "q", q, 3, NULL));
    DSA_TRY(dsa_op_check_float(op, "k", k, 2, q));
    DSA_TRY(dsa_op_check_float(op, "w", w, 2, q));
    DSA_TRY(dsa_check_dim(op, "k", k, 1, q->shape[2]));
    DSA_TRY(dsa_check_dim(op, "w", w, 0, q->shape[0]));
    DSA_TRY(dsa_check_dim(op, "w", w, 1, q->shape[1]));
    return DSA_OK;
}
