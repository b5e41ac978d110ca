// Window bounds (SPEC 0) and the additive masks of the dense reference path (SPEC 4) on the GPU.
// The same formulas as kernels/cpu/dsa_window_cpu.c, one thread per query row (or mask element).
#include <stdint.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

__global__ void window_bounds_kernel(const int *cu, const int *cup, int64_t n, const int *qidx, int ratio, int64_t T,
                                     int *start, int *end, uint8_t *is_real) {
    for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < T; t += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = qidx ? qidx[t] : t;
        int64_t lo = 0, hi = n + 1;  // first index with cup[i] > r
        while (lo < hi) {
            int64_t mid = (lo + hi) / 2;
            if (cup[mid] > r) hi = mid;
            else lo = mid + 1;
        }
        int64_t d = lo - 1;
        d = d < 0 ? 0 : d > n - 1 ? n - 1 : d;
        int64_t len = cu[d + 1] - cu[d], pos = r - cup[d], s, e;
        if (ratio <= 1) {
            s = cup[d];
            int64_t real_end = cup[d] + len;
            e = r + 1 < real_end ? r + 1 : real_end;
            if (e < s + 1) e = s + 1;
        } else {
            s = 0;
            for (int64_t x = 0; x < d; x++) s += (cu[x + 1] - cu[x]) / ratio;
            e = s + (pos < len ? (pos + 1) / ratio : len / ratio);
        }
        if (start) start[t] = (int)s;
        if (end) end[t] = (int)e;
        if (is_real) is_real[t] = (uint8_t)(pos < len);
    }
}

extern "C" dsa_status dsa_window_bounds_cuda(const dsa_tensor *cu, const dsa_tensor *cup,
                                             const dsa_tensor *query_indices, int ratio, dsa_tensor *start,
                                             dsa_tensor *end, dsa_tensor *is_real) {
    const dsa_tensor *any = start ? start : end ? end : is_real;
    if (!any) return DSA_OK;
    int64_t T = any->shape[0];
    if (T == 0) return DSA_OK;
    window_bounds_kernel<<<dsa_blocks(T, 256), 256, 0, dsa_stream()>>>(
        (const int *)cu->data, (const int *)cup->data, cu->shape[0] - 1,
        query_indices ? (const int *)query_indices->data : NULL, ratio, T, start ? (int *)start->data : NULL,
        end ? (int *)end->data : NULL, is_real ? (uint8_t *)is_real->data : NULL);
    CUDA_LAUNCH_CHECK("window_bounds");
    return DSA_OK;
}

__device__ __forceinline__ void clamped_window(const int *start, const int *end, int64_t t, int64_t S, int64_t *a,
                                               int64_t *b) {
    int64_t x = start[t], y = end[t];
    *a = x < 0 ? 0 : x > S ? S : x;
    *b = y < *a ? *a : y > S ? S : y;
}

template <typename O>
__global__ void window_mask_kernel(const int *start, const int *end, O *out, int64_t T, int64_t S) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < T * S; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / S, s = i % S, a, b;
        clamped_window(start, end, t, S, &a, &b);
        out[i] = dsa_from_double<O>(s >= a && s < b ? 0.0 : -INFINITY);
    }
}

// One CTA per row: fill the row with -inf, then open the selected keys inside the window.
template <typename O>
__global__ void sparse_mask_kernel(const int *idx, const int *topk_length, const int *start, const int *end, O *out,
                                   int64_t S, int64_t K) {
    int64_t t = blockIdx.x, a, b;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) out[t * S + s] = dsa_from_double<O>(-INFINITY);
    __syncthreads();
    clamped_window(start, end, t, S, &a, &b);
    int64_t kl = topk_length ? topk_length[t] : K;
    for (int64_t j = threadIdx.x; j < K && j < kl; j += blockDim.x) {
        int64_t s = idx[t * K + j];
        if (s >= a && s < b) out[t * S + s] = dsa_from_double<O>(0.0);
    }
}

extern "C" dsa_status dsa_window_mask_cuda(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t T = out->shape[0], S = out->shape[1];
    if (T * S == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(out->dtype, "dsa_window_mask",
                       window_mask_kernel<scalar_t><<<dsa_blocks(T * S, 256), 256, 0, dsa_stream()>>>(
                           (const int *)start->data, (const int *)end->data, (scalar_t *)out->data, T, S));
    CUDA_LAUNCH_CHECK("window_mask");
    return DSA_OK;
}

extern "C" dsa_status dsa_sparse_mask_cuda(const dsa_tensor *idx, const dsa_tensor *topk_length,
                                           const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t T = out->shape[0], S = out->shape[1], K = idx->shape[1];
    if (T * S == 0) return DSA_OK;
    DSA_DISPATCH_FLOAT(out->dtype, "dsa_sparse_mask",
                       sparse_mask_kernel<scalar_t><<<(unsigned)T, 256, 0, dsa_stream()>>>(
                           (const int *)idx->data, topk_length ? (const int *)topk_length->data : NULL,
                           (const int *)start->data, (const int *)end->data, (scalar_t *)out->data, S, K));
    CUDA_LAUNCH_CHECK("sparse_mask");
    return DSA_OK;
}

// Each row's window as a list over K slots (one CTA per row r, window [start[r], end[r])):
//   compact (dsa_window_slots_cpu's layout, the dense warm-up's top-k): idx[r, j] = start + j for
//     j < n = clamp(end - start, 0, K), -1 after; len[r] = n;
//   keys as slots (the dense-window ops on the sparse kernels, K = S): idx[r, j] = j inside the
//     window, -1 outside; len[r] = clamp(end, 0, K).
__global__ void window_list_kernel(const int *start, const int *end, int *idx, int *len, int64_t K, bool keys_as_slots) {
    const int64_t r = blockIdx.x, s0 = start[r], e0 = end[r];
    int64_t n = keys_as_slots ? e0 : e0 - s0;
    n = n < 0 ? 0 : n > K ? K : n;
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x)
        idx[r * K + j] = keys_as_slots ? (j >= s0 && j < e0 ? (int)j : -1) : (j < n ? (int)(s0 + j) : -1);
    if (threadIdx.x == 0) len[r] = (int)n;
}

extern "C" dsa_status dsa_window_lists_cuda(const int *start, const int *end, int *idx, int *len, int64_t rows,
                                            int64_t K, bool keys_as_slots) {
    if (rows == 0) return DSA_OK;
    window_list_kernel<<<(unsigned)rows, 256, 0, dsa_stream()>>>(start, end, idx, len, K, keys_as_slots);
    CUDA_LAUNCH_CHECK("window_lists");
    return DSA_OK;
}

extern "C" dsa_status dsa_window_slots_cuda(const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *idx,
                                            dsa_tensor *len) {
    return dsa_window_lists_cuda((const int *)start->data, (const int *)end->data, (int *)idx->data, (int *)len->data,
                                 idx->shape[0], idx->shape[1], false);
}
