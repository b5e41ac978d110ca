// Row-kernel helpers: warp and block reductions (sum, max) by warp shuffles, for kernels that run
// one thread block per row. Block size must be a multiple of 32 (at most 1024).
#pragma once
#include "kernels/cuda/cuda_common.cuh"

#define DSA_ROW_THREADS 256

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> __device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. Safe to call repeatedly (syncs before reuse).
template <typename T> __device__ T block_sum(T v) {
    __shared__ T part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[w] = v;
    __syncthreads();
    T r = lane < nw ? part[lane] : (T)0;
    return warp_sum(r);
}
template <typename T> __device__ T block_max(T v) {
    __shared__ T part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) part[w] = v;
    __syncthreads();
    T r = lane < nw ? part[lane] : (T)-INFINITY;
    return warp_max(r);
}

// Grid size for kernels that loop over rows with a per-block partial (e.g. weight gradients).
static inline unsigned dsa_row_blocks(int64_t rows) {
    int64_t cap = 4 * (int64_t)(dsa_cuda()->sm_count > 0 ? dsa_cuda()->sm_count : 132);
    return (unsigned)(rows < 1 ? 1 : (rows < cap ? rows : cap));
}
static inline unsigned dsa_grid_rows(int64_t rows) { return (unsigned)(rows < 1 ? 1 : (rows > 2147483647 ? 2147483647 : rows)); }
