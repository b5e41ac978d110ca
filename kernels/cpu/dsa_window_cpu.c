// CPU kernels of SPEC 0 (window bounds) and SPEC 4 (additive masks).
#include <math.h>
#include "kernels/cpu/dsa_cpu_kernels.h"

#define I32(t) ((const int32_t *)(t)->data)

// The document of global padded row r: clamp(searchsorted_right(cup, r) - 1, 0, n - 1).
static int64_t doc_of_row(const int32_t *cup, int64_t n, int64_t r) {
    int64_t lo = 0, hi = n + 1;  // first index with cup[i] > r, in [0, n + 1]
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (cup[mid] > r) hi = mid;
        else lo = mid + 1;
    }
    int64_t d = lo - 1;
    return d < 0 ? 0 : d > n - 1 ? n - 1 : d;
}

// Compressed-key offset of document d for ratio > 1: sum over earlier documents of floor(len / ratio).
static int64_t compressed_offset(const int32_t *cu, int64_t d, int ratio) {
    int64_t off = 0;
    for (int64_t e = 0; e < d; e++) off += (cu[e + 1] - cu[e]) / ratio;
    return off;
}

dsa_status dsa_window_bounds_cpu(const dsa_tensor *cu_t, const dsa_tensor *cup_t, const dsa_tensor *query_indices,
                                 int ratio, dsa_tensor *start, dsa_tensor *end, dsa_tensor *is_real) {
    const int32_t *cu = I32(cu_t), *cup = I32(cup_t);
    int64_t n = cu_t->shape[0] - 1;
    int64_t T = query_indices ? query_indices->shape[0] : cup[n];
    for (int64_t t = 0; t < T; t++) {
        int64_t r = query_indices ? I32(query_indices)[t] : t;
        int64_t d = doc_of_row(cup, n, r), len = cu[d + 1] - cu[d];
        int64_t pos = r - cup[d];
        int64_t s, e;
        if (ratio <= 1) {
            s = cup[d];
            int64_t real_end = cup[d] + len;
            e = r + 1 < real_end ? r + 1 : real_end;
            if (e < s + 1) e = s + 1;
        } else {
            s = compressed_offset(cu, d, ratio);
            int64_t visible = pos < len ? (pos + 1) / ratio : len / ratio;  // padding rows: whole document
            e = s + visible;
        }
        if (start) ((int32_t *)start->data)[t] = (int32_t)s;
        if (end) ((int32_t *)end->data)[t] = (int32_t)e;
        if (is_real) ((uint8_t *)is_real->data)[t] = (uint8_t)(pos < len);
    }
    return DSA_OK;
}

static void window_clamped(const dsa_tensor *start, const dsa_tensor *end, int64_t t, int64_t S, int64_t *s0,
                           int64_t *s1) {
    int64_t a = I32(start)[t], b = I32(end)[t];
    *s0 = a < 0 ? 0 : a > S ? S : a;
    *s1 = b < *s0 ? *s0 : b > S ? S : b;
}

dsa_status dsa_window_mask_cpu(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t T = out->shape[0], S = out->shape[1];
    for (int64_t t = 0; t < T; t++) {
        int64_t s0, s1;
        window_clamped(start, end, t, S, &s0, &s1);
        for (int64_t s = 0; s < S; s++) dsa_store(out->data, out->dtype, t * S + s, s >= s0 && s < s1 ? 0.0 : -INFINITY);
    }
    return DSA_OK;
}

dsa_status dsa_sparse_mask_cpu(const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *start,
                               const dsa_tensor *end, dsa_tensor *out) {
    int64_t T = out->shape[0], S = out->shape[1], K = idx->shape[1];
    for (int64_t i = 0; i < T * S; i++) dsa_store(out->data, out->dtype, i, -INFINITY);
    for (int64_t t = 0; t < T; t++) {
        int64_t s0, s1;
        window_clamped(start, end, t, S, &s0, &s1);
        int64_t kl = topk_length ? I32(topk_length)[t] : K;
        for (int64_t j = 0; j < K && j < kl; j++) {
            int64_t s = I32(idx)[t * K + j];
            if (s >= s0 && s < s1) dsa_store(out->data, out->dtype, t * S + s, 0.0);
        }
    }
    return DSA_OK;
}

dsa_status dsa_window_slots_cpu(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *idx, dsa_tensor *len) {
    int64_t T = idx->shape[0], K = idx->shape[1];
    for (int64_t t = 0; t < T; t++) {
        int64_t s0 = I32(start)[t], n = (int64_t)I32(end)[t] - s0;
        n = n < 0 ? 0 : n > K ? K : n;
        int32_t *row = (int32_t *)idx->data + t * K;
        for (int64_t j = 0; j < K; j++) row[j] = j < n ? (int32_t)(s0 + j) : -1;
        ((int32_t *)len->data)[t] = (int32_t)n;
    }
    return DSA_OK;
}
