// Top-k selection per row (SPEC 2), for any K. One CTA per row: the logits are mapped to ordered
// uint32 keys (larger float -> larger key; -inf and NaN are "not allowed"), a 4-pass 8-bit radix
// select finds the K-th largest key, then one pass in key-index order compacts the picks (every key
// above the threshold, and the lowest-index ties at it), so the output is deterministic and in
// ascending key order. When a row allows <= K keys, all of them are selected.
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

#define TOPK_NT 1024

__device__ __forceinline__ unsigned ordered_key(float f) {
    unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ bool allowed(float f) { return !(isnan(f) || f == -INFINITY); }

// Exclusive prefix of a 0/1 flag over the CTA (in thread order) and the CTA total. Uses warp_tot[32].
__device__ __forceinline__ int block_scan01(int flag, int *warp_tot, int *total) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    unsigned m = __ballot_sync(0xffffffffu, flag);
    if (lane == 0) warp_tot[warp] = __popc(m);
    __syncthreads();
    int before = 0, tot = 0;
    for (int w = 0; w < nw; w++) {
        int v = warp_tot[w];
        before += w < warp ? v : 0;
        tot += v;
    }
    __syncthreads();  // warp_tot is reused by the next scan
    *total = tot;
    return before + __popc(m & ((1u << lane) - 1u));
}

template <typename T>
__global__ void __launch_bounds__(TOPK_NT) topk_kernel(const T *__restrict__ logits, int64_t S, int64_t K,
                                                        int *__restrict__ idx, int *__restrict__ topk_length,
                                                        T *__restrict__ score) {
    __shared__ unsigned hist[256];
    __shared__ int warp_tot[32];
    __shared__ unsigned s_prefix, s_remaining;
    __shared__ int s_count;
    int64_t t = blockIdx.x;
    const T *row = logits + t * S;
    int tid = threadIdx.x;

    int cnt = 0;
    for (int64_t s = tid; s < S; s += TOPK_NT) cnt += allowed((float)dsa_to_float(row[s]));
    if (tid == 0) s_count = 0;
    __syncthreads();
    atomicAdd(&s_count, cnt);
    __syncthreads();
    int64_t n_allowed = s_count;
    bool take_all = n_allowed <= K;
    unsigned prefix = 0, mask = 0, remaining = (unsigned)(take_all ? 0 : K);
    if (!take_all) {
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int b = tid; b < 256; b += TOPK_NT) hist[b] = 0;
            __syncthreads();
            for (int64_t s = tid; s < S; s += TOPK_NT) {
                float f = (float)dsa_to_float(row[s]);
                unsigned u = ordered_key(f);
                if (allowed(f) && (u & mask) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                unsigned cum = 0;
                int b = 255;
                for (; b > 0; b--) {
                    if (cum + hist[b] >= remaining) break;
                    cum += hist[b];
                }
                s_prefix = prefix | ((unsigned)b << shift);
                s_remaining = remaining - cum;
            }
            __syncthreads();
            prefix = s_prefix;
            remaining = s_remaining;
            mask |= 255u << shift;
            __syncthreads();
        }
    }
    // prefix = the K-th largest key; remaining = how many of the keys equal to it are taken.
    int64_t written = 0, ties_seen = 0;
    for (int64_t base = 0; base < S; base += TOPK_NT) {
        int64_t s = base + tid;
        float f = s < S ? (float)dsa_to_float(row[s]) : -INFINITY;
        bool ok = allowed(f);
        unsigned u = ordered_key(f);
        int tie = ok && !take_all && u == prefix, ties_total;
        int tie_rank = block_scan01(tie, warp_tot, &ties_total);
        int pick = ok && (take_all || u > prefix || (tie && ties_seen + tie_rank < (int64_t)remaining));
        int total, pos = block_scan01(pick, warp_tot, &total);
        if (pick && written + pos < K) {
            idx[t * K + written + pos] = (int)s;
            if (score) score[t * K + written + pos] = row[s];
        }
        written += total;
        ties_seen += ties_total;
    }
    if (written > K) written = K;
    for (int64_t j = written + tid; j < K; j += TOPK_NT) {
        idx[t * K + j] = -1;
        if (score) score[t * K + j] = dsa_from_double<T>(-INFINITY);
    }
    if (tid == 0 && topk_length) topk_length[t] = (int)written;
}

// logits [T, S] -> idx [T, K], topk_length [T] (or NULL), score [T, K] (or NULL; logits' dtype).
extern "C" dsa_status dsa_topk_cuda(const dsa_tensor *logits, int64_t K, dsa_tensor *idx, dsa_tensor *topk_length,
                         dsa_tensor *score) {
    int64_t T_ = logits->shape[0], S = logits->shape[1];
    if (T_ == 0) return DSA_OK;
    if (score && score->dtype != logits->dtype)
        return dsa_error_set(DSA_ERR_DTYPE, "dsa_topk (cuda): score dtype %s differs from the logits' %s",
                             dsa_dtype_name(score->dtype), dsa_dtype_name(logits->dtype));
    int *pi = (int *)idx->data, *pl = topk_length ? (int *)topk_length->data : NULL;
    switch (logits->dtype) {
    case DSA_F32:
        topk_kernel<float><<<(unsigned)T_, TOPK_NT, 0, dsa_stream()>>>((const float *)logits->data, S, K, pi, pl,
                                                                       score ? (float *)score->data : NULL);
        break;
    case DSA_BF16:
        topk_kernel<__nv_bfloat16><<<(unsigned)T_, TOPK_NT, 0, dsa_stream()>>>(
            (const __nv_bfloat16 *)logits->data, S, K, pi, pl, score ? (__nv_bfloat16 *)score->data : NULL);
        break;
    case DSA_F64:
        topk_kernel<double><<<(unsigned)T_, TOPK_NT, 0, dsa_stream()>>>((const double *)logits->data, S, K, pi, pl,
                                                                        score ? (double *)score->data : NULL);
        break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_topk (cuda): unsupported dtype %s", dsa_dtype_name(logits->dtype));
    }
    CUDA_LAUNCH_CHECK("topk");
    return DSA_OK;
}
