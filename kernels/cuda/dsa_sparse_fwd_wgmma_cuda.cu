// Sparse MQA attention forward, v3: Hopper warpgroup MMA (wgmma, sm_90a). bf16, Dv = 512, D % 64 == 0,
// D <= 576. One CTA per (query row t, block of 64 heads): two warpgroups; tiles of 64 slots.
//  - Q (64 heads x D) and each gathered kv tile (64 rows x D) sit in shared memory in the 128-byte
//    swizzle layout of kernels/cuda/dsa_wgmma.cuh, written by 16-byte cp.async (2 kv stages: tile i+1
//    is gathered while tile i computes; invalid slots are zero rows, masked to -inf).
//  - S = Q K^T: warpgroup w takes slots 32w .. 32w+31 (wgmma m64n32k16 over D, operands read by the
//    tensor cores straight from shared memory: no ldmatrix, no per-warp duplicate reads).
//  - Online softmax in fp32 registers; the two warpgroups swap their row maxima through shared memory
//    so both rescale by the same factor; P (bf16) goes to shared memory in the swizzled A layout.
//  - O += P V: warpgroup w owns output columns 256w .. 256w+255 (m64n256k16, 128 fp32 accumulators
//    per thread); V is the kv tile itself read as a transposed (MN-major) B operand.
// Two schedules of the same steps (template SEQ):
//  - overlapped (v3, default): P(i) V(i) and S(i + 1) back to back; tile i + 2 can only be gathered
//    once P(i) V(i) is done, so it has the softmax of tile i + 1 to land.
//  - sequential (DSA_SPARSE_FWD_SEQ=1): S(i) -> softmax -> P(i) V(i); the gather of tile i + 1 is
//    issued while S(i) is on the tensor cores and has the whole iteration to land.
// Both run at the rate of the gather alone (a probe: about 3.7 us per 64-row tile per SM on the H200).
// Numerics as v2: fp32 scores, softmax and accumulation, P rounded to bf16 for P V, lse = m + log l,
// out = acc / l * sigmoid(lse - sink).
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define FWD3_HB 64
#define FWD3_BK 64
#define FWD3_RING 4
#define FWD3_DV 512

// Bytes past the 1024-byte-aligned start: Q, two kv stages, P, the row maxima (reused for the row
// sums at the end), the key ring and its masks.
static size_t fwd3_tile_bytes(int64_t D) {
    return 2 * (size_t)FWD3_HB * D + 2 * 2 * (size_t)FWD3_BK * D + 2 * (size_t)FWD3_HB * FWD3_BK + 4 * 2 * FWD3_HB +
           4 * FWD3_RING * FWD3_BK + 8 * FWD3_RING;
}
// The launch asks for 1008 bytes more (alignment slack) when the GPU allows it: the dynamic shared
// memory window normally starts 1024-aligned, and the kernel checks that it fits either way.
size_t dsa_fwd3_smem_bytes(int64_t D) { return fwd3_tile_bytes(D); }

template <bool SEQ>
__global__ void __launch_bounds__(256, 1) sparse_mqa_fwd_wgmma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const void *sink, dsa_dtype sink_dt, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ lse, int H, int hbeg, int hend, int D, int64_t K, int64_t S_kv, float sigma, unsigned v_lbo, unsigned v_sbo, int smem_slack) {
    const int HB = FWD3_HB, BK = FWD3_BK, RING = FWD3_RING, Dv = FWD3_DV;
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    // The swizzle pattern repeats every 1024 bytes: operand tiles start on 1024-byte boundaries.
    unsigned char *base = (unsigned char *)(((uintptr_t)dsa_smem_raw + 1023) & ~(uintptr_t)1023);
    if (base - dsa_smem_raw > smem_slack) __trap();  // cannot happen when the window is 1024-aligned
    int n_hb = (hend - hbeg + HB - 1) / HB;
    int hblk = blockIdx.x % n_hb, h0 = hbeg + hblk * HB, nh = min(HB, hend - h0);
    int64_t t = blockIdx.x / n_hb;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = tid >> 7, wl = warp & 3, g = lane >> 2, c = lane & 3;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)base;     // [D/64][HB][64]
    __nv_bfloat16 *skv = sq + HB * D;              // [2][D/64][BK][64]
    __nv_bfloat16 *sp = skv + 2 * BK * D;          // [HB][64] (P, one 64-wide block)
    float *smax = (float *)(sp + HB * BK);         // [2 wg][HB] row maxima; row sums at the end
    float *ssum = smax;
    int *rkeys = (int *)(smax + 2 * HB);           // [RING][BK]
    unsigned long long *rmask = (unsigned long long *)(rkeys + RING * BK);  // [RING]

    int64_t k_end = K;
    if (topk_length) k_end = min((int64_t)max(topk_length[t], 0), K);
    int nt = (int)((k_end + BK - 1) / BK);
    dsa_slot_ring64 ring{rkeys, rmask, RING, BK, idx + t * K, k_end, S_kv};
    auto issue_tile = [&](int tile) { ring.load_tile(skv + (tile & 1) * BK * D, tile, kv, D); };
    dsa_load_rows_sw128(sq, HB, D, [&](int r) -> const __nv_bfloat16 * {  // zeros for padding heads
        return r < nh ? q + ((t * H) + h0 + r) * D : nullptr;
    });
    int2 pre = ring.start(nt, skv, kv, D);  // Q and tile 0 are in; warp 0: the next raw indices

    float o[128], s[16];
#pragma unroll
    for (int j = 0; j < 128; j++) o[j] = 0.f;
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;  // rows 16 wl + g, + 8
    const int row_lo = 16 * wl + g, row_hi = row_lo + 8;
    const unsigned q_base = dsa_smem_addr(sq), p_base = dsa_smem_addr(sp);
    // S = Q K^T of tile `tile` for slots 32 wg .. +32 (rows 32 wg .. of the kv tile), issued, not waited.
    auto issue_scores = [&](int tile) {
        const unsigned kv_base = dsa_smem_addr(skv + (tile & 1) * BK * D);
#pragma unroll 4
        for (int k = 0; k < D / 16; k++) {
            unsigned long long da = dsa_wgmma_desc(q_base + (k >> 2) * HB * 128 + (k & 3) * 32, 16, 1024);
            unsigned long long db = dsa_wgmma_desc(kv_base + (k >> 2) * BK * 128 + wg * 32 * 128 + (k & 3) * 32, 16, 1024);
            dsa_wgmma_m64n32k16(s, da, db, k > 0);
        }
        dsa_wgmma_commit();
    };
    // Softmax of S(i) (in s) -> P(i) in shared memory, o rescaled; ends with P(i) visible to wgmma.
    // Mask, row max over this warpgroup's 32 slots (quad shuffles), swap with the other warpgroup.
    // A tile without valid slots runs the same code: P = 0, m and l unchanged.
    auto softmax_to_p = [&](int i) {
        unsigned mk = (unsigned)(ring.tile_mask(i) >> (32 * wg));
        float x[16];  // scaled, masked scores (s itself is only written by wgmma)
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
        for (int j = 0; j < 4; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                bool ok = (mk >> (8 * j + 2 * c + e)) & 1u;
                x[4 * j + e] = ok ? s[4 * j + e] * sigma : -INFINITY;
                x[4 * j + 2 + e] = ok ? s[4 * j + 2 + e] * sigma : -INFINITY;
                mx_lo = fmaxf(mx_lo, x[4 * j + e]);
                mx_hi = fmaxf(mx_hi, x[4 * j + 2 + e]);
            }
        }
#pragma unroll
        for (int x = 1; x <= 2; x <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, x));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, x));
        }
        if (c == 0) {
            smax[wg * HB + row_lo] = mx_lo;
            smax[wg * HB + row_hi] = mx_hi;
        }
        __syncthreads();  // both warpgroups' maxima are in
        mx_lo = fmaxf(mx_lo, smax[(wg ^ 1) * HB + row_lo]);
        mx_hi = fmaxf(mx_hi, smax[(wg ^ 1) * HB + row_hi]);
        float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
        // A row with no valid slot so far keeps m = -inf; exponentiate against 0 then (exp(-inf) = 0).
        float ref_lo = mn_lo == -INFINITY ? 0.f : mn_lo, ref_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
        float al_lo = __expf(m_lo - ref_lo), al_hi = __expf(m_hi - ref_hi);
        m_lo = mn_lo;
        m_hi = mn_hi;
        float ps_lo = 0.f, ps_hi = 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float p0 = __expf(x[4 * j] - ref_lo), p1 = __expf(x[4 * j + 1] - ref_lo);
            float p2 = __expf(x[4 * j + 2] - ref_hi), p3 = __expf(x[4 * j + 3] - ref_hi);
            ps_lo += p0 + p1;
            ps_hi += p2 + p3;
            int col = 32 * wg + 8 * j + 2 * c;
            *(unsigned *)(sp + dsa_sw128(row_lo, col, HB)) = dsa_pack_f32x2(p0, p1);
            *(unsigned *)(sp + dsa_sw128(row_hi, col, HB)) = dsa_pack_f32x2(p2, p3);
        }
        l_lo = l_lo * al_lo + ps_lo;
        l_hi = l_hi * al_hi + ps_hi;
#pragma unroll
        for (int j = 0; j < 32; j++) {
            o[4 * j] *= al_lo;
            o[4 * j + 1] *= al_lo;
            o[4 * j + 2] *= al_hi;
            o[4 * j + 3] *= al_hi;
        }
    };
    // O[:, 256 wg .. +256] += P(i) V(i) over the 64 slots (4 k16 steps), issued and committed.
    auto issue_pv = [&](int i) {
        const unsigned kv_base = dsa_smem_addr(skv + (i & 1) * BK * D);
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            unsigned long long da = dsa_wgmma_desc(p_base + kk * 32, 16, 1024);
            unsigned long long db = dsa_wgmma_desc(kv_base + (4 * wg) * BK * 128 + kk * 16 * 128, v_lbo, v_sbo);
            dsa_wgmma_m64n256k16(o, da, db, 1);
        }
        dsa_wgmma_commit();
    };
    auto publish_ahead = [&](int i) {  // warp 0: tile i + 3's keys (its ring entry held tile i - 1)
        if (warp == 0) ring.advance(i, nt, pre);
    };

    if (SEQ) {
        // Sequential schedule: S(i), softmax, P(i) V(i), while the gather of tile i + 1 (issued just
        // before S(i)) has the whole iteration to land.
        for (int i = 0; i < nt; i++) {
            if (i > 0) {
                dsa_cp_async_wait<0>();   // this thread's copies of tile i have landed
                dsa_fence_proxy_async();  // -> visible to wgmma
                __syncthreads();          // tile i is complete; every read of stage (i + 1) & 1 and P is done
            }
            // The gather is issued first: cp.async code between a wgmma and its wait made the compiler
            // serialize the wgmma (ptxas C7515).
            if (i + 1 < nt) issue_tile(i + 1);
            dsa_cp_async_commit();
            dsa_wgmma_fence();
            issue_scores(i);
            publish_ahead(i);
            dsa_wgmma_wait<0>();
            softmax_to_p(i);
            dsa_fence_proxy_async();  // P -> visible to wgmma
            __syncthreads();          // P(i) is complete
            dsa_wgmma_fence();
            issue_pv(i);
            dsa_wgmma_wait<0>();
        }
    } else {
        // Overlapped schedule (v3): P(i) V(i) and S(i + 1) go to the tensor cores back to back (one
        // wait for both), and the gather of tile i + 2 starts once tile i's stage is free. S(i + 1) is
        // issued unconditionally, a result past the last tile unused: a wgmma under a branch the
        // compiler cannot prove warpgroup-uniform is serialized.
        if (nt > 1) issue_tile(1);
        dsa_cp_async_commit();
        dsa_wgmma_fence();
        issue_scores(0);
        dsa_wgmma_wait<0>();
        for (int i = 0; i < nt; i++) {
            softmax_to_p(i);
            dsa_cp_async_wait<0>();   // this thread's copies of tile i + 1 have landed
            dsa_fence_proxy_async();  // P and the tile's rows -> visible to wgmma
            __syncthreads();          // P(i) and tile i + 1 are complete
            dsa_wgmma_fence();
            issue_pv(i);
            issue_scores(i + 1);
            dsa_wgmma_wait<1>();  // P(i) V(i) is done (S(i + 1) may still run)
            __syncthreads();    // every read of tile i's stage and of P(i) is done
            if (i + 2 < nt) issue_tile(i + 2);  // the gather overlaps the rest of S(i + 1)
            dsa_cp_async_commit();
            publish_ahead(i);
            dsa_wgmma_wait<0>();
        }
    }
    dsa_cp_async_wait<0>();

#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
        l_lo += __shfl_xor_sync(0xffffffffu, l_lo, x);
        l_hi += __shfl_xor_sync(0xffffffffu, l_hi, x);
    }
    __syncthreads();  // smax / ssum reuse
    if (c == 0) {
        ssum[wg * HB + row_lo] = l_lo;
        ssum[wg * HB + row_hi] = l_hi;
    }
    __syncthreads();
    l_lo += ssum[(wg ^ 1) * HB + row_lo];
    l_hi += ssum[(wg ^ 1) * HB + row_hi];
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int row = half ? row_hi : row_lo;
        float l = half ? l_hi : l_lo, m = half ? m_hi : m_lo;
        float lse_h = l > 0 ? m + logf(l) : -INFINITY, scale = l > 0 ? 1.f / l : 0.f;
        if (row < nh) {
            if (sink && l > 0) scale /= 1.f + expf((float)dsa_ld_any(sink, sink_dt, h0 + row) - lse_h);
            __nv_bfloat16 *orow = out + ((t * H) + h0 + row) * Dv + 256 * wg + 2 * c;
#pragma unroll
            for (int j = 0; j < 32; j++)
                *(__nv_bfloat162 *)(orow + 8 * j) = __floats2bfloat162_rn(o[4 * j + 2 * half] * scale, o[4 * j + 2 * half + 1] * scale);
            if (wg == 0 && c == 0) lse[t * H + h0 + row] = lse_h;
        }
    }
}

// Called by the forward dispatcher (dsa_sparse_fwd_cuda.cu) for bf16, Dv = 512, D % 64 == 0, D <= 576,
// on an sm_90 GPU when the shared memory fits.
dsa_status dsa_sparse_mqa_fwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                         int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0];
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    int dev = 0, max_optin = 0;
    CUDA_TRY(cudaGetDevice(&dev));
    CUDA_TRY(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    size_t smem = fwd3_tile_bytes(D);
    int slack = (int)((size_t)max_optin > smem ? ((size_t)max_optin - smem < 1008 ? (size_t)max_optin - smem : 1008) : 0);
    smem += (size_t)slack;
    // Schedule: overlapped (v3) by default; DSA_SPARSE_FWD_SEQ=1 picks the sequential one (measured on
    // the H200 at T 8192: 1% slower, both bound by the gather; see bench/RESULTS.md).
    static int seq = -1;
    if (seq < 0) seq = getenv("DSA_SPARSE_FWD_SEQ") && atoi(getenv("DSA_SPARSE_FWD_SEQ")) != 0;
    auto kern = seq ? sparse_mqa_fwd_wgmma_kernel<true> : sparse_mqa_fwd_wgmma_kernel<false>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa fwd (wgmma)"));
    // Descriptor strides of the MN-major V operand (bytes): next 64-column block (a block is BK rows
    // of 128 bytes), next 8 keys (one 1024-byte swizzle atom). Checked against a host matmul by a
    // probe on the H200 (the other three combinations of 1024 / 8192 give wrong products).
    const unsigned v_lbo = FWD3_BK * 128, v_sbo = 1024;
    int64_t n_hb = (h1 - h0 + FWD3_HB - 1) / FWD3_HB;
    kern<<<(unsigned)(T_ * n_hb), 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (__nv_bfloat16 *)out->data, (float *)lse->data, (int)H, (int)h0, (int)h1, (int)D, K, S, (float)sigma, v_lbo, v_sbo, slack);
    CUDA_LAUNCH_CHECK("sparse_mqa_fwd_wgmma");
    return DSA_OK;
}
