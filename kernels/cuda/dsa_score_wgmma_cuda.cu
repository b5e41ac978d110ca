// Score head sums (SPEC 5), v3: Hopper warpgroup MMA (wgmma, sm_90a). bf16 q / kv, D % 64 == 0,
// D <= 576, H <= 128, bf16 out. One CTA per query row, two warpgroups, every head's Q in shared
// memory (128-byte swizzle, kernels/cuda/dsa_wgmma.cuh), kv tiles gathered by cp.async (2 stages).
//  - HQ = 64 (H <= 64): tiles of 64 slots; warpgroup w scores slots 32w .. 32w+31 for all heads.
//  - HQ = 128 (64 < H <= 128): tiles of 32 slots; warpgroup w scores heads 64w .. 64w+63, so each
//    gathered kv tile serves all 128 heads (a per-head-block kernel would gather every tile twice).
// Either way a warpgroup issues wgmma m64n32k16 over D with both operands read from shared memory.
// Per tile: p = exp(sigma S - lse[h]) is summed over the thread's two head rows, then over the 8 rows
// of its lane group (shuffles), then over the warps through a small double-buffered shared array;
// 32 or 64 threads add the warps in a fixed order and write the bf16 sums (0 for invalid slots), so
// the result is deterministic. S(i+1) is on the tensor cores while tile i's sums are written, and
// the gather of tile i+2 starts as soon as tile i's stage is free: one barrier per tile.
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define HS3_RING 4

template <int HQ>
static size_t hs3_tile_bytes(int64_t D) {
    const int BK = HQ == 64 ? 64 : 32;
    return 2 * (size_t)HQ * D + 2 * 2 * (size_t)BK * D + 4 * (size_t)HQ + 4 * 2 * 8 * 32 + 4 * HS3_RING * 64 +
           8 * HS3_RING;
}

template <int HQ>
__global__ void __launch_bounds__(256, 1) headsum_wgmma_kernel(const __nv_bfloat16 *__restrict__ q,
                                                             const __nv_bfloat16 *__restrict__ kv,
                                                             const int *__restrict__ idx,
                                                             const int *__restrict__ topk_length,
                                                             const float *__restrict__ lse, __nv_bfloat16 *out,
                                                             int H, int D, int64_t K, int64_t S_kv, float sigma,
                                                             int smem_slack) {
    const int BK = HQ == 64 ? 64 : 32, RING = HS3_RING;
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    unsigned char *base = (unsigned char *)(((uintptr_t)dsa_smem_raw + 1023) & ~(uintptr_t)1023);
    if (base - dsa_smem_raw > smem_slack) __trap();  // cannot happen when the window is 1024-aligned
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = dsa_warpgroup_index(), wl = warp & 3, g = lane >> 2, c = lane & 3;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)base;  // [D/64][HQ][64]
    __nv_bfloat16 *skv = sq + HQ * D;           // [2][D/64][BK][64]
    float *slse = (float *)(skv + 2 * BK * D);  // [HQ]; +inf for padding heads
    float *sred = slse + HQ;                    // [2][8 warps][32 columns]
    int *rkeys = (int *)(sred + 2 * 8 * 32);    // [RING][64]
    unsigned long long *rmask = (unsigned long long *)(rkeys + RING * 64);

    int64_t k_end = K;
    if (topk_length) k_end = min((int64_t)max(topk_length[t], 0), K);
    int nt = (int)((k_end + BK - 1) / BK);
    for (int64_t j = (int64_t)nt * BK + tid; j < K; j += 256) out[t * K + j] = __float2bfloat16(0.f);
    dsa_slot_ring64 ring{rkeys, rmask, RING, BK, idx + t * K, k_end, S_kv};
    auto issue_tile = [&](int tile) { ring.load_tile(skv + (tile & 1) * BK * D, tile, kv, D); };
    dsa_load_rows_sw128(sq, HQ, D, [&](int r) -> const __nv_bfloat16 * {  // zeros for padding heads
        return r < H ? q + ((t * H) + r) * D : nullptr;
    });
    if (tid < HQ) slse[tid] = tid < H ? lse[t * H + tid] : INFINITY;  // exp(x - inf) = 0
    int2 pre = ring.start(nt, skv, kv, D);  // Q, lse and tile 0 are in; warp 0: the next raw indices
    if (nt > 1) issue_tile(1);
    dsa_cp_async_commit();

    // This warpgroup's operands: HQ 64 -> all heads, slots 32 wg ..; HQ 128 -> heads 64 wg .., all slots.
    const unsigned q_base = dsa_smem_addr(sq) + (HQ == 128 ? wg * 64 * 128 : 0);
    const unsigned k_off = HQ == 64 ? wg * 32 * 128 : 0;
    const int head_lo = (HQ == 128 ? 64 * wg : 0) + 16 * wl + g, head_hi = head_lo + 8;
    // p = exp(sigma S - lse) = 2^(sigma log2(e) S - lse log2(e)): one FMA and the ex2 per score.
    const float sigma2 = sigma * 1.44269504f, lse_lo = slse[head_lo] * 1.44269504f, lse_hi = slse[head_hi] * 1.44269504f;
    float s[16];
    auto issue_scores = [&](int tile) {  // issued unconditionally (a result past the last tile is unused)
        dsa_wgmma_scores_m64n32(s, q_base, HQ, dsa_smem_addr(skv + (tile & 1) * BK * D) + k_off, BK, D);
    };
    dsa_wgmma_fence();
    issue_scores(0);
    dsa_wgmma_wait<0>();

    for (int i = 0; i < nt; i++) {
        // This thread's two head rows, then the 8 lane groups of the warp: column sums of 16 heads.
        float cs[8];
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float v = dsa_exp2(s[4 * j + e] * sigma2 - lse_lo) + dsa_exp2(s[4 * j + 2 + e] * sigma2 - lse_hi);
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                cs[2 * j + e] = v;
            }
        if (g == 0) {
#pragma unroll
            for (int j = 0; j < 4; j++)
                *(float2 *)(sred + ((i & 1) * 8 + warp) * 32 + 8 * j + 2 * c) = make_float2(cs[2 * j], cs[2 * j + 1]);
        }
        dsa_cp_async_wait<0>();   // this thread's copies of tile i + 1 have landed
        dsa_fence_proxy_async();
        __syncthreads();  // tile i's warp sums are in; tile i + 1 is complete; tile i's stage is free
        if (i + 2 < nt) issue_tile(i + 2);
        dsa_cp_async_commit();
        if (warp == 0) ring.advance(i, nt, pre);
        dsa_wgmma_fence();
        issue_scores(i + 1);
        if (tid < BK) {  // slot tid of tile i: the warps over its heads, in a fixed order
            int64_t j = (int64_t)i * BK + tid;
            const float *r = sred + (i & 1) * 8 * 32;
            float v = 0.f;
            if (HQ == 64) {
                int w0 = 4 * (tid >> 5), col = tid & 31;
                v = r[w0 * 32 + col] + r[(w0 + 1) * 32 + col] + r[(w0 + 2) * 32 + col] + r[(w0 + 3) * 32 + col];
            } else {
#pragma unroll
                for (int w = 0; w < 8; w++) v += r[w * 32 + tid];
            }
            bool ok = (ring.tile_mask(i) >> tid) & 1ull;
            if (j < K) out[t * K + j] = __float2bfloat16(ok ? v : 0.f);
        }
        dsa_wgmma_wait<0>();
    }
    dsa_cp_async_wait<0>();
}

// Called by the head-sum dispatcher (dsa_score_cuda.cu): bf16, D % 64 == 0, D <= 576, H <= 128, on an
// sm_90 GPU when the shared memory fits. Returns DSA_ERR_UNSUPPORTED otherwise (the caller falls back).
dsa_status dsa_attn_score_headsum_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                             const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                             dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = kv->shape[0], K = idx->shape[1];
    if (T_ == 0) return DSA_OK;
    int dev = 0, max_optin = 0;
    CUDA_TRY(cudaGetDevice(&dev));
    CUDA_TRY(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    bool big = H > 64;
    size_t smem = big ? hs3_tile_bytes<128>(D) : hs3_tile_bytes<64>(D);
    if (smem > (size_t)max_optin) return DSA_ERR_UNSUPPORTED;
    int slack = (int)((size_t)max_optin - smem < 1008 ? (size_t)max_optin - smem : 1008);
    smem += (size_t)slack;
    auto kern = big ? headsum_wgmma_kernel<128> : headsum_wgmma_kernel<64>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_attn_score_headsum (wgmma)"));
    kern<<<(unsigned)T_, 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, (const float *)lse->data, (__nv_bfloat16 *)out->data,
        (int)H, (int)D, K, S, (float)sigma, slack);
    CUDA_LAUNCH_CHECK("attn_score_headsum_wgmma");
    return DSA_OK;
}
