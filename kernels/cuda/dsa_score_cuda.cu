// Score recompute (SPEC 5) and the KL indexer loss (SPEC 6) on the GPU.
// Head sums: one CTA per query row; the row's slots (selected, or every key of the window) go in
// tiles of 32 gathered kv rows; for each tile the heads go in blocks of 16 (q block in shared
// memory), and warp 0 keeps each slot's running sum over all heads in a register (SIMT path; bf16 takes
// the tensor-core kernels further down: headsum_mma_v2_kernel, v1 as its reference). Row kernels
// (L1 normalization, KL loss) use one CTA per row with fp32 (fp64) block reductions.
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

template <typename T, typename A, bool DENSE>
__global__ void __launch_bounds__(DSA_ATT_NT) headsum_kernel(const T *__restrict__ q, const T *__restrict__ kv,
                                                            const int *__restrict__ idx, const int *__restrict__ topk_length,
                                                            const int *__restrict__ start, const int *__restrict__ end,
                                                            const A *__restrict__ lse, T *__restrict__ out, int H, int D,
                                                            int64_t K, int64_t S_kv, A sigma) {
    const int HB = DSA_ATT_HB, BK = DSA_ATT_BK, NT = DSA_ATT_NT;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ld = D + 1;
    A *sq = (A *)dsa_smem, *skv = sq + HB * ld, *red = skv + BK * ld;
    int *keys = (int *)(red + (NT / 32) * BK), *slots = keys + BK, *nvalid = slots + BK;
    int64_t width = DENSE ? S_kv : K;
    for (int64_t j = tid; j < width; j += NT) out[t * width + j] = dsa_from_double<T>(0.0);
    int64_t k_end = K, lo = 0;
    if (DENSE) {
        lo = max((int64_t)start[t], (int64_t)0);
        k_end = min((int64_t)end[t], S_kv) - lo;
    } else {
        k_end = dsa_row_k_end(topk_length, t, K);
    }
    for (int64_t j0 = 0; j0 < k_end; j0 += BK) {
        __syncthreads();
        if (DENSE) {
            if (tid < BK && j0 + tid < k_end) keys[tid] = slots[tid] = (int)(lo + j0 + tid);
            if (tid == 0) *nvalid = (int)min((int64_t)BK, k_end - j0);
        } else if (warp == 0) {
            dsa_compact_tile32(idx, topk_length, t, K, j0, S_kv, keys, slots, nvalid);
        }
        __syncthreads();
        int n = *nvalid;
        if (n == 0) continue;
        for (int i = tid; i < n * D; i += NT) skv[(i / D) * ld + i % D] = (A)dsa_to_float(kv[(int64_t)keys[i / D] * D + i % D]);
        A total = 0;  // warp 0: slot `lane`'s sum over every head
        for (int h0 = 0; h0 < H; h0 += HB) {
            int nh = min(HB, H - h0);
            __syncthreads();
            for (int i = tid; i < HB * D; i += NT) {
                int h = i / D, d = i % D;
                sq[h * ld + d] = h < nh ? (A)dsa_to_float(q[((t * H) + h0 + h) * D + d]) : (A)0;
            }
            __syncthreads();
            A v = 0;
            if (lane < n) {
                const A *kr = skv + lane * ld;
                for (int hh = 0; hh < 2; hh++) {
                    int h = 2 * warp + hh;
                    if (h >= nh) break;
                    const A *qh = sq + h * ld;
                    A s = 0;
                    for (int d = 0; d < D; d++) s += qh[d] * kr[d];
                    v += exp(sigma * s - lse[t * H + h0 + h]);
                }
            }
            red[warp * BK + lane] = v;
            __syncthreads();
            if (warp == 0)
                for (int w = 0; w < NT / 32; w++) total += red[w * BK + lane];
        }
        if (warp == 0 && lane < n) out[t * width + slots[lane]] = dsa_from_double<T>((double)total);
    }
}

template <typename T, typename A, bool DENSE>
static dsa_status launch_headsum(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                 const dsa_tensor *topk_length, const dsa_tensor *start, const dsa_tensor *end,
                                 const dsa_tensor *lse, double sigma, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = kv->shape[0], K = DENSE ? 0 : idx->shape[1];
    if (T_ == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)(DSA_ATT_HB + DSA_ATT_BK) * (D + 1) + (DSA_ATT_NT / 32) * DSA_ATT_BK) +
                  sizeof(int) * (2 * DSA_ATT_BK + 1);
    auto kern = headsum_kernel<T, A, DENSE>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_attn_score_headsum"));
    kern<<<(unsigned)T_, DSA_ATT_NT, smem, dsa_stream()>>>(
        (const T *)q->data, (const T *)kv->data, idx ? (const int *)idx->data : NULL,
        topk_length ? (const int *)topk_length->data : NULL, start ? (const int *)start->data : NULL,
        end ? (const int *)end->data : NULL, (const A *)lse->data, (T *)out->data, (int)H, (int)D, K, S, (A)sigma);
    CUDA_LAUNCH_CHECK("attn_score_headsum");
    return DSA_OK;
}


// ---- tensor-core path v1 for the sparse head sum (bf16, D multiple of 16, K <= 16384) ------------------
// Kept as the reference for v2 below (DSA_HEADSUM_V1=1), and as the fallback when v2's shared memory
// does not fit. One CTA per query row, 8 warps; heads go in blocks of 64 (Q block in shared memory), the row's slots
// in tiles of 32 gathered kv rows; S = Q K^T by mma.sync (warp: 16 heads x 16 slots), then
// exp(sigma S - lse) summed over the warp's heads by shuffles and added into a per-slot fp32 sum in
// shared memory; the sums are written once at the end.
#define HS_HB 64
#define HS_BK 32
#define HS_MAXK 16384


__global__ void __launch_bounds__(256, 1) headsum_mma_kernel(const __nv_bfloat16 *__restrict__ q,
                                                            const __nv_bfloat16 *__restrict__ kv,
                                                            const int *__restrict__ idx,
                                                            const int *__restrict__ topk_length,
                                                            const float *__restrict__ lse, __nv_bfloat16 *out, int H,
                                                            int D, int64_t K, int64_t S_kv, float sigma) {
    const int HB = HS_HB, BK = HS_BK, NT = 256;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    int rg = warp & 3, ch = warp >> 2, r0 = rg * 16, ldq = D + 8, D8 = D / 8;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem, *skv = sq + HB * ldq;
    float *ssum = (float *)(skv + BK * ldq), *slse = ssum + K;
    int *keys = (int *)(slse + HB), *slots = keys + BK, *nvalid = slots + BK;
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    for (int64_t j = tid; j < K; j += NT) ssum[j] = 0;
    int64_t k_end = dsa_row_k_end(topk_length, t, K);
    for (int h0 = 0; h0 < H; h0 += HB) {
        int nh = min(HB, H - h0);
        __syncthreads();
        for (int i = tid; i < HB * D8; i += NT) {
            int h = i / D8, v = i % D8;
            *(uint4 *)(sq + h * ldq + v * 8) = h < nh ? ((const uint4 *)(q + ((t * H) + h0 + h) * D))[v] : zero4;
        }
        if (tid < HB) slse[tid] = tid < nh ? lse[t * H + h0 + tid] : INFINITY;  // exp(. - inf) = 0 for padding heads
        for (int64_t j0 = 0; j0 < k_end; j0 += BK) {
            __syncthreads();
            if (warp == 0) dsa_compact_tile32(idx, topk_length, t, K, j0, S_kv, keys, slots, nvalid);
            __syncthreads();
            int n = *nvalid;
            if (n == 0) continue;
            for (int i = tid; i < BK * D8; i += NT) {
                int r = i / D8, v = i % D8;
                *(uint4 *)(skv + r * ldq + v * 8) = r < n ? ((const uint4 *)(kv + (int64_t)keys[r] * D))[v] : zero4;
            }
            __syncthreads();
            float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            for (int k0 = 0; k0 < D; k0 += 16) {
                const __nv_bfloat16 *qa = sq + (r0 + g) * ldq + k0 + 2 * c;
                unsigned a[4] = {*(const unsigned *)qa, *(const unsigned *)(qa + 8 * ldq), *(const unsigned *)(qa + 8),
                                 *(const unsigned *)(qa + 8 * ldq + 8)};
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    const __nv_bfloat16 *kb = skv + (ch * 16 + x * 8 + g) * ldq + k0 + 2 * c;
                    unsigned b[2] = {*(const unsigned *)kb, *(const unsigned *)(kb + 8)};
                    dsa_mma_bf16_16816(s[x], a, b);
                }
            }
            float llo = slse[r0 + g], lhi = slse[r0 + g + 8];
#pragma unroll
            for (int x = 0; x < 2; x++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {  // column 2c + e of n-tile x: rows g and g + 8, then over g
                    float v = __expf(s[x][e] * sigma - llo) + __expf(s[x][2 + e] * sigma - lhi);
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                    int r = ch * 16 + x * 8 + 2 * c + e;
                    if (g == 0 && r < n) atomicAdd(&ssum[slots[r]], v);
                }
            }
        }
    }
    __syncthreads();
    for (int64_t j = tid; j < K; j += NT) out[t * K + j] = __float2bfloat16(ssum[j]);
}

static bool use_mma_headsum(const dsa_tensor *q, const dsa_tensor *lse, const dsa_tensor *out, int64_t K) {
    static int simt = -1;
    if (simt < 0) simt = dsa_env_flag("DSA_SPARSE_SIMT");
    int64_t D = q->shape[2];
    return !simt && q->dtype == DSA_BF16 && out->dtype == DSA_BF16 && lse->dtype == DSA_F32 && D % 16 == 0 &&
           D <= 1024 && K <= HS_MAXK;
}

static dsa_status launch_headsum_mma(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                     const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                     dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = kv->shape[0], K = idx->shape[1];
    if (T_ == 0) return DSA_OK;
    size_t smem = 2 * (size_t)(HS_HB + HS_BK) * (D + 8) + 4 * (size_t)K + 4 * HS_HB + 4 * (2 * HS_BK + 1);
    DSA_TRY(dsa_smem_setup(headsum_mma_kernel, smem, "dsa_attn_score_headsum (mma)"));
    headsum_mma_kernel<<<(unsigned)T_, 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, (const float *)lse->data, (__nv_bfloat16 *)out->data,
        (int)H, (int)D, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("attn_score_headsum_mma");
    return DSA_OK;
}

// ---- tensor-core path v2 (the default for bf16; DSA_HEADSUM_V1=1 selects v1 above) ------------------
// One CTA per query row t, 8 warps. What changed vs v1, and why:
//  - ALL heads' Q rows stay in shared memory (when they fit: H 128 x D 576 is 144 KB), so each kv tile
//    is gathered once for every head; v1 re-gathered every tile for each 64-head block. When Q does
//    not fit (e.g. D 768, H 72) the heads go in chunks, each re-walking the row's tiles, and the
//    per-slot sums collect in a [K] fp32 array in shared memory.
//  - kv tiles of 32 slots are gathered with 16-byte cp.async into an NST-stage ring while earlier tiles
//    compute (the ring, keys and bit masks work exactly like sparse_mqa_fwd_mma_v2_kernel): the L2
//    latency of the random row gather is off the critical path. Invalid slots are not compacted:
//    their rows are zero-filled (never read from global) and masked by the tile's valid-slot mask.
//  - Warp tiles of 32 heads x 32 slots (v1: 16 x 16 from 32-bit scalar loads) with ldmatrix operands:
//    4 ldmatrix.x4 feed 8 mma per k16 step, which keeps shared-memory bandwidth below the mma rate.
//    With only 32 slots per tile, 8 such warps need DS = 2 (H > 64) or 4 (H <= 64) warps per head
//    block, each reducing over 1/DS of D; the partial S tiles are exchanged through a small buffer
//    (two CTA barriers per exchange round) so that each warp ends with the complete S of its own slot
//    columns and applies exp to them (exp is not linear: partial S cannot be summed after it).
//  - Shared rows are not padded but XOR-swizzled (16-byte chunk c of row r sits at c ^ (r & 7)):
//    conflict-free ldmatrix and cp.async without the 8-element pad, whose 3 KB the exchange needs at
//    H 128, D 576. D that is not a multiple of 64 gets its row rounded up to 8 chunks (zeros).
//  - The head sum of a tile is complete inside the tile, so it is written (bf16) straight from a small
//    triple-buffered [3][heads/32][32] array one tile later: one __syncthreads per tile, and no [K]
//    array (it would not fit next to Q at H 128, D 576). Deterministic: fixed summation order.
// Numerics: fp32 S, p = 2^(S sigma log2e - lse log2e) (what __expf does), sums in fp32, bf16 once.
// v3 (wgmma, sm_90a): dsa_score_wgmma_cuda.cu (dsa_attn_score_headsum_wgmma_cuda, declared in dsa_common.cuh).

#define HS2_BK 32
#define HS2_RING 4  // key-ring entries: a tile's keys live from their fetch (tile - NST) to its compute
#define HS2_LOG2E 1.4426950408889634f

__device__ __forceinline__ float hs2_exp2(float x) {  // 2^x; -inf -> 0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Shared-memory layout of the v2 kernel (bytes), shared by the kernel and its launcher.
struct hs2_layout {
    size_t q, kv, xb, sred, slse, rkeys, rmask, ssum, total;
};
static __host__ __device__ inline hs2_layout hs2_make_layout(int P, int hc, int ds, int nst, int64_t K, bool chunked) {
    hs2_layout L;
    size_t row = 16 * (size_t)P, o = 0;
    L.q = o;     o += row * hc;
    L.kv = o;    o += row * HS2_BK * nst;
    L.xb = o;    o += (size_t)8 * (ds - 1) * 32 * 8 * 4;  // per warp and peer: 8 floats x 32 lanes
    L.sred = o;  o += (size_t)3 * (8 / ds) * 32 * 4;  // three tiles' sums (see finish_tile)
    L.slse = o;  o += 4 * (size_t)hc;
    L.rkeys = o; o += 4 * (size_t)HS2_RING * HS2_BK;
    L.rmask = o; o += 4 * (size_t)HS2_RING;
    L.ssum = o;  o += chunked ? 4 * (size_t)K : 0;
    L.total = o;
    return L;
}

template <int DS, int NST>  // DS: warps per head block (split of D); NST: kv gather stages
__global__ void __launch_bounds__(256, 1) headsum_mma_v2_kernel(const __nv_bfloat16 *__restrict__ q,
                                                               const __nv_bfloat16 *__restrict__ kv,
                                                               const int *__restrict__ idx,
                                                               const int *__restrict__ topk_length,
                                                               const float *__restrict__ lse,
                                                               __nv_bfloat16 *__restrict__ out, int H, int D,
                                                               int hc, int64_t K, int64_t S_kv, float sigma) {
    const int BK = HS2_BK, RING = HS2_RING, HBW = 8 / DS, NP = 4 / DS, HPP = 32 * HBW;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    int hb = warp % HBW, dp = warp / HBW;  // head block (32 heads of each pass), part of D
    int D8 = D / 8, P = (D8 + 7) & ~7, ROW = 16 * P;  // 16-byte chunks per row (data, stored)
    bool chunked = hc < H;
    hs2_layout L = hs2_make_layout(P, hc, DS, NST, K, chunked);
    unsigned sq_a = dsa_smem_addr(dsa_smem + L.q), skv_a = dsa_smem_addr(dsa_smem + L.kv);
    float4 *xb = (float4 *)(dsa_smem + L.xb);
    float *sred = (float *)(dsa_smem + L.sred), *slse = (float *)(dsa_smem + L.slse);
    int *rkeys = (int *)(dsa_smem + L.rkeys);
    unsigned *rmask = (unsigned *)(dsa_smem + L.rmask);
    float *ssum = (float *)(dsa_smem + L.ssum);
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    const float sl2 = sigma * HS2_LOG2E;

    int64_t k_end = dsa_row_k_end(topk_length, t, K);
    int nt = (int)((k_end + BK - 1) / BK);
    if (chunked) {
        for (int64_t j = tid; j < K; j += 256) ssum[j] = 0.f;
    } else {
        for (int64_t j = (int64_t)nt * BK + tid; j < K; j += 256) out[t * K + j] = __float2bfloat16(0.f);
    }
    // Padding chunks of the kv stages (D not a multiple of 64) stay zero: cp.async never writes them.
    if (P != D8)
        for (int i = tid; i < NST * BK * (P - D8); i += 256) {
            int r = i / (P - D8), v = D8 + i % (P - D8);
            *(uint4 *)(dsa_smem + L.kv + (size_t)r * ROW + ((v ^ (r & 7)) << 4)) = zero4;
        }

    const dsa_slot_ring32<RING> ring{rkeys, rmask, idx + t * K, k_end, S_kv};
    // Warp w gathers rows 4w .. 4w+3 of a tile, lanes striding the row's 16-byte chunks (coalesced).
    auto issue_tile = [&](int tile) {
        unsigned dst = skv_a + (unsigned)((tile % NST) * BK * ROW);
        const int *keys = ring.tile_keys(tile);
#pragma unroll
        for (int rr = 0; rr < 4; rr++) {
            int r = warp * 4 + rr, key = keys[r];
            unsigned drow = dst + (unsigned)(r * ROW);
            if (key >= 0) {
                const __nv_bfloat16 *src = kv + (int64_t)key * D;
                for (int v = lane; v < D8; v += 32) dsa_cp_async16(drow + ((v ^ (r & 7)) << 4), src + v * 8);
            } else {  // invalid slot: zeros (the mask drops it; the mma must meet finite values), nothing read
                unsigned char *prow = dsa_smem + L.kv + (size_t)(tile % NST) * BK * ROW + (size_t)r * ROW;
                for (int v = lane; v < D8; v += 32) *(uint4 *)(prow + ((v ^ (r & 7)) << 4)) = zero4;
            }
        }
    };
    // Tile `tile`'s head sums (sred, written one tile earlier) to out or the [K] array; invalid slots 0.
    // sred holds three tiles: the tile being summed, the one warp 7 reads, and one more so that a write
    // and a read of the same buffer are always two barriers apart.
    auto finish_tile = [&](int tile, unsigned m) {
        if (warp != 7) return;
        int64_t j = (int64_t)tile * BK + lane;
        if (j >= K) return;
        float v = 0.f;
        if ((m >> lane) & 1u)
#pragma unroll
            for (int b = 0; b < HBW; b++) v += sred[((tile % 3) * HBW + b) * 32 + lane];
        if (chunked) ssum[j] += v;
        else out[t * K + j] = __float2bfloat16(v);
    };

    // ldmatrix lane addressing (see sparse_mqa_fwd_mma_v2_kernel for the fragment order). A (Q, 16 heads
    // x 16 d): row lane & 15, chunk 2k + (lane >> 4). B (32 keys x 16 d, two x4 loads of 16 keys): key
    // (lane & 7) + 8 (lane >> 4), chunk 2k + ((lane >> 3) & 1). Swizzle: chunk 2k + h of a row with
    // (r & 7) = x sits at (2k) ^ (h ^ x), so y = h ^ x is fixed per lane.
    int yA = (lane >> 4) ^ (lane & 7), yB = ((lane >> 3) & 1) ^ (lane & 7);
    int krow = (lane & 7) + ((lane >> 4) << 3);
    int nk = P / 2, kb = dp * (nk / DS), ke = kb + nk / DS;  // P % 8 == 0: nk divides by DS
    // Exchange regions: warp `dst` receives from peer part `src` at xb + region(dst, src) (float4 units).
    auto region = [&](int dst_warp, int src_dp) -> float4 * {
        int dst_dp = dst_warp / HBW, slot = src_dp < dst_dp ? src_dp : src_dp - 1;
        return xb + (dst_warp * (DS - 1) + slot) * 64;
    };

    for (int h0 = 0; h0 < H; h0 += hc) {
        int nh = min(hc, H - h0), nh32 = (nh + 31) & ~31;
        // Prologue: Q of this chunk (joins the first cp.async group; rows past nh are zeros), lse, the
        // first NST key tiles, the first NST - 1 kv tiles.
        for (int r = warp; r < nh32; r += 8) {
            unsigned drow = sq_a + (unsigned)(r * ROW);
            const __nv_bfloat16 *src = q + ((t * H) + h0 + r) * D;
            for (int v = lane; v < P; v += 32) {
                if (r < nh && v < D8) dsa_cp_async16(drow + ((v ^ (r & 7)) << 4), src + v * 8);
                else *(uint4 *)(dsa_smem + L.q + (size_t)r * ROW + ((v ^ (r & 7)) << 4)) = zero4;
            }
        }
        for (int h = tid; h < nh32; h += 256) slse[h] = h < nh ? lse[t * H + h0 + h] * HS2_LOG2E : INFINITY;
        int pre = -1;
        if (warp == 0) pre = ring.prime(nt, NST);
        __syncthreads();
#pragma unroll
        for (int s = 0; s < NST - 1; s++) {
            if (s < nt) issue_tile(s);
            dsa_cp_async_commit();  // always commit: group i is tile i (tile 0 also carries Q)
        }

        unsigned prev_mask = 0;
        for (int i = 0; i < nt; i++) {
            dsa_cp_async_wait<NST - 2>();  // this thread's copies of tile i have landed
            __syncthreads();  // ... everyone's; tile i-1's readers are done (its stage and ring slot are free)
            if (i > 0) finish_tile(i - 1, prev_mask);
            if (i + NST - 1 < nt) issue_tile(i + NST - 1);
            dsa_cp_async_commit();
            if (warp == 0) ring.advance(i, nt, NST, pre);
            unsigned vmask = ring.tile_mask(i);
            prev_mask = vmask;  // register copy: the ring slot may be republished before finish_tile
            if (vmask == 0) continue;  // CTA-uniform: no valid slot, nothing to add
            unsigned kv_a = skv_a + (unsigned)((i % NST) * BK * ROW + krow * ROW);

            float cs[NP][2];  // this lane's part of the head sum of its own slot columns
#pragma unroll
            for (int r = 0; r < NP; r++) cs[r][0] = cs[r][1] = 0.f;
            for (int hp = 0; hp < nh32; hp += HPP) {
                int hbase = hp + hb * 32;
                // Warps past the last head block compute nothing but still meet every barrier below
                // (full-CTA barriers: compute-sanitizer's racecheck mis-orders the later sums when
                // named barriers of warp subsets are mixed in).
                const bool active = hbase < nh32;
                float s[2][4][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int x = 0; x < 4; x++) s[mt][x][0] = s[mt][x][1] = s[mt][x][2] = s[mt][x][3] = 0.f;
                unsigned qa = sq_a + (unsigned)((hbase + (lane & 15)) * ROW);
#pragma unroll 2
                for (int k = kb; k < (active ? ke : kb); k++) {
                    unsigned oa = (unsigned)(((2 * k) ^ yA) << 4), ob = (unsigned)(((2 * k) ^ yB) << 4);
                    unsigned a0[4], a1[4], b0[4], b1[4];
                    dsa_ldsm_x4(a0, qa + oa);
                    dsa_ldsm_x4(a1, qa + 16 * ROW + oa);
                    dsa_ldsm_x4(b0, kv_a + ob);
                    dsa_ldsm_x4(b1, kv_a + 16 * ROW + ob);
                    dsa_mma_bf16_16816(s[0][0], a0, b0);
                    dsa_mma_bf16_16816(s[0][1], a0, b0 + 2);
                    dsa_mma_bf16_16816(s[0][2], a0, b1);
                    dsa_mma_bf16_16816(s[0][3], a0, b1 + 2);
                    dsa_mma_bf16_16816(s[1][0], a1, b0);
                    dsa_mma_bf16_16816(s[1][1], a1, b0 + 2);
                    dsa_mma_bf16_16816(s[1][2], a1, b1);
                    dsa_mma_bf16_16816(s[1][3], a1, b1 + 2);
                }
                // Exchange: n8-tile x belongs to part x / NP. Round r moves the tiles x with x % NP == r:
                // write the peers' tiles, barrier, add the peers' partials of my own tile, barrier (the
                // buffer is rewritten next round).
#pragma unroll
                for (int r = 0; r < NP; r++) {
#pragma unroll
                    for (int x = 0; x < 4; x++) {
                        if (!active || x % NP != r || x / NP == dp) continue;
                        float4 *dst = region(hb + (x / NP) * HBW, dp);
                        dst[lane] = make_float4(s[0][x][0], s[0][x][1], s[0][x][2], s[0][x][3]);
                        dst[32 + lane] = make_float4(s[1][x][0], s[1][x][1], s[1][x][2], s[1][x][3]);
                    }
                    __syncthreads();
#pragma unroll
                    for (int x = 0; x < 4; x++) {
                        if (!active || x % NP != r || x / NP != dp) continue;
#pragma unroll
                        for (int sd = 0; sd < DS; sd++) {
                            if (sd == dp) continue;
                            const float4 *src = region(warp, sd);
                            float4 u = src[lane], w = src[32 + lane];
                            s[0][x][0] += u.x; s[0][x][1] += u.y; s[0][x][2] += u.z; s[0][x][3] += u.w;
                            s[1][x][0] += w.x; s[1][x][1] += w.y; s[1][x][2] += w.z; s[1][x][3] += w.w;
                        }
                    }
                    __syncthreads();
                }
                if (!active) continue;
                // p = exp(sigma S - lse) of my own columns, summed over this lane's 4 head rows (g, g+8
                // of both m16 tiles); padding heads have lse = +inf -> 0.
                float l0 = slse[hbase + g], l1 = slse[hbase + g + 8], l2 = slse[hbase + g + 16],
                      l3 = slse[hbase + g + 24];
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    if (x / NP != dp) continue;
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = hs2_exp2(fmaf(s[0][x][e], sl2, -l0)) + hs2_exp2(fmaf(s[0][x][2 + e], sl2, -l1)) +
                                  hs2_exp2(fmaf(s[1][x][e], sl2, -l2)) + hs2_exp2(fmaf(s[1][x][2 + e], sl2, -l3));
                        cs[x % NP][e] += ((vmask >> (8 * x + 2 * c + e)) & 1u) ? v : 0.f;
                    }
                }
            }
            // Sum over the 8 lanes g = 0..7 that hold the same columns, then one entry per (head block,
            // column): the DS warps of a head block own disjoint columns.
#pragma unroll
            for (int r = 0; r < NP; r++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float v = cs[r][e];
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                    if (g == 0) sred[((i % 3) * HBW + hb) * 32 + (dp * NP + r) * 8 + 2 * c + e] = v;
                }
        }
        dsa_cp_async_wait<0>();  // nothing may be in flight past the chunk (only empty groups are left)
        __syncthreads();
        if (nt > 0) finish_tile(nt - 1, prev_mask);
        __syncthreads();  // finish_tile's reads are done before the next chunk rewrites Q, lse, sred
    }
    if (chunked)
        for (int64_t j = tid; j < K; j += 256) out[t * K + j] = __float2bfloat16(ssum[j]);
}

// Picks the v2 configuration: all heads in one chunk with 3 gather stages, else 2, else the largest
// head chunk (a multiple of 32) that fits with 2 stages and the [K] sum array. DS = 2 (128 heads per
// pass) when the chunk has more than 64 heads, else 4 (64 heads per pass, so H 64 keeps all 8 warps
// busy). Returns false when nothing fits (v1 is tried then).
static bool hs2_pick(int64_t H, int64_t D, int64_t K, size_t max_smem, int *ds, int *nst, int *hc, size_t *smem) {
    int P = (int)(((D / 8) + 7) & ~7), Hr = (int)((H + 31) & ~31);
    for (int s = 3; s >= 2; s--) {
        int d = Hr > 64 ? 2 : 4;
        size_t b = hs2_make_layout(P, Hr, d, s, K, false).total;
        if (b <= max_smem) {
            *ds = d, *nst = s, *hc = Hr, *smem = b;
            return true;
        }
    }
    for (int c = Hr - 32; c >= 32; c -= 32) {
        int d = c > 64 ? 2 : 4;
        size_t b = hs2_make_layout(P, c, d, 2, K, true).total;
        if (b <= max_smem) {
            *ds = d, *nst = 2, *hc = c, *smem = b;
            return true;
        }
    }
    return false;
}

template <int DS, int NST>
static dsa_status launch_headsum_mma_v2_cfg(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                            const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                            dsa_tensor *out, int hc, size_t smem) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = kv->shape[0], K = idx->shape[1];
    auto kern = headsum_mma_v2_kernel<DS, NST>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_attn_score_headsum (mma v2)"));
    kern<<<(unsigned)T_, 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, (const float *)lse->data, (__nv_bfloat16 *)out->data,
        (int)H, (int)D, hc, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("attn_score_headsum_mma_v2");
    return DSA_OK;
}

// The wgmma kernels (v4, or v3 with DSA_HEADSUM_V3=1) on sm_90a for D % 64 == 0, D <= 576, H <= 128;
// else v2 unless DSA_HEADSUM_V1=1 (read once) or its shared memory does not fit the GPU's opt-in limit.
static dsa_status launch_headsum_mma_any(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                         dsa_tensor *out) {
    static int v1 = -1;
    if (v1 < 0) v1 = dsa_env_flag("DSA_HEADSUM_V1");
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1];
    if (T_ == 0) return DSA_OK;
    int ds = 0, nst = 0, hc = 0;
    size_t smem = 0, max_optin = 0;
    DSA_TRY(dsa_smem_optin(&max_optin));
    static int v3 = -1;  // the wgmma kernels need sm_90a (CC 9.0); DSA_HEADSUM_V2=1 keeps v2
    if (v3 < 0) {
        bool sm90 = false;
        DSA_TRY(dsa_cuda_sm90(&sm90));
        v3 = sm90 && !dsa_env_flag("DSA_HEADSUM_V2");
    }
    if (!v1 && v3 && H > 0 && H <= 128 && D % 64 == 0 && D <= 576) {
        dsa_status st = dsa_attn_score_headsum_wgmma_cuda(q, kv, idx, topk_length, lse, sigma, out);
        if (st != DSA_ERR_UNSUPPORTED) return st;  // else its shared memory does not fit: v2
    }
    if (v1 || H == 0 || !hs2_pick(H, D, K, max_optin, &ds, &nst, &hc, &smem))
        return launch_headsum_mma(q, kv, idx, topk_length, lse, sigma, out);
    if (ds == 2 && nst == 3) return launch_headsum_mma_v2_cfg<2, 3>(q, kv, idx, topk_length, lse, sigma, out, hc, smem);
    if (ds == 2) return launch_headsum_mma_v2_cfg<2, 2>(q, kv, idx, topk_length, lse, sigma, out, hc, smem);
    if (nst == 3) return launch_headsum_mma_v2_cfg<4, 3>(q, kv, idx, topk_length, lse, sigma, out, hc, smem);
    return launch_headsum_mma_v2_cfg<4, 2>(q, kv, idx, topk_length, lse, sigma, out, hc, smem);
}

extern "C" dsa_status dsa_attn_score_headsum_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                                  const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                                  dsa_tensor *out) {
    if (use_mma_headsum(q, lse, out, idx->shape[1])) return launch_headsum_mma_any(q, kv, idx, topk_length, lse, sigma, out);
    switch (q->dtype) {
    case DSA_F32: return launch_headsum<float, float, false>(q, kv, idx, topk_length, NULL, NULL, lse, sigma, out);
    case DSA_BF16: return launch_headsum<__nv_bfloat16, float, false>(q, kv, idx, topk_length, NULL, NULL, lse, sigma, out);
    case DSA_F64: return launch_headsum<double, double, false>(q, kv, idx, topk_length, NULL, NULL, lse, sigma, out);
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_attn_score_headsum (cuda): unsupported dtype %s", dsa_dtype_name(q->dtype));
    }
}

extern "C" dsa_status dsa_attn_score_headsum_dense_cuda(const dsa_tensor *q, const dsa_tensor *kv,
                                                        const dsa_tensor *start, const dsa_tensor *end,
                                                        const dsa_tensor *lse, double sigma, dsa_tensor *out) {
    if (dsa_window_slots_apply(q, kv, lse, out))
        return dsa_attn_score_headsum_dense_slots_cuda(q, kv, start, end, lse, sigma, out);
    switch (q->dtype) {
    case DSA_F32: return launch_headsum<float, float, true>(q, kv, NULL, NULL, start, end, lse, sigma, out);
    case DSA_BF16: return launch_headsum<__nv_bfloat16, float, true>(q, kv, NULL, NULL, start, end, lse, sigma, out);
    case DSA_F64: return launch_headsum<double, double, true>(q, kv, NULL, NULL, start, end, lse, sigma, out);
    default:
        return dsa_error_set(DSA_ERR_DTYPE, "dsa_attn_score_headsum_dense (cuda): unsupported dtype %s",
                             dsa_dtype_name(q->dtype));
    }
}

// ---- row reductions ------------------------------------------------------------------------------
#define ROW_NT 256

template <typename A> __device__ A block_reduce(A v, bool is_max, A *buf) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = is_max ? dsa_warp_max(v) : dsa_warp_sum(v);
    __syncthreads();  // buf is reused by consecutive reductions
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    A r = buf[0];
    for (int w = 1; w < ROW_NT / 32; w++) r = is_max ? (r > buf[w] ? r : buf[w]) : r + buf[w];
    return r;
}

template <typename T, typename A>
__global__ void normalize_l1_kernel(const T *x, T *out, int64_t N) {
    __shared__ A buf[32];
    int64_t t = blockIdx.x;
    A part = 0;
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) part += fabs((A)dsa_to_float(x[t * N + j]));
    A tot = block_reduce<A>(part, false, buf);
    A inv = (A)1 / (tot > (A)1e-10 ? tot : (A)1e-10);
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) out[t * N + j] = dsa_from_double<T>((double)((A)dsa_to_float(x[t * N + j]) * inv));
}

extern "C" dsa_status dsa_normalize_rows_l1_cuda(const dsa_tensor *x, dsa_tensor *out) {
    int64_t T_ = x->shape[0], N = x->shape[1];
    if (T_ == 0) return DSA_OK;
    switch (x->dtype) {
    case DSA_F32: normalize_l1_kernel<float, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>((const float *)x->data, (float *)out->data, N); break;
    case DSA_BF16:
        normalize_l1_kernel<__nv_bfloat16, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const __nv_bfloat16 *)x->data, (__nv_bfloat16 *)out->data, N);
        break;
    case DSA_F64: normalize_l1_kernel<double, double><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>((const double *)x->data, (double *)out->data, N); break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_normalize_rows_l1 (cuda): unsupported dtype %s", dsa_dtype_name(x->dtype));
    }
    CUDA_LAUNCH_CHECK("normalize_rows_l1");
    return DSA_OK;
}

// ---- KL indexer loss -------------------------------------------------------------------------------
__device__ __forceinline__ bool slot_ok(double l) { return !(isnan(l) || l == -INFINITY); }

// Row max and log-sum-exp of the valid logits of row t (m = -inf when the row has none).
template <typename T, typename A>
__device__ void row_logsumexp(const T *lg, int64_t N, A *buf, A *m_out, A *lse_out) {
    A m = -INFINITY;
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) {
        A l = (A)dsa_to_float(lg[j]);
        if (slot_ok(l) && l > m) m = l;
    }
    m = block_reduce<A>(m, true, buf);
    A part = 0;
    if (m != (A)-INFINITY)
        for (int64_t j = threadIdx.x; j < N; j += ROW_NT) {
            A l = (A)dsa_to_float(lg[j]);
            if (slot_ok(l)) part += exp(l - m);
        }
    A z = block_reduce<A>(part, false, buf);
    *m_out = m;
    *lse_out = m + log(z);
}

// Rows of at most ROW_NT * PER logits (PER > 0) are read once into registers, with their targets: one
// pass over the row instead of three (max, sum of exponentials, the loss or gradient terms). PER 0:
// any length, the logits read again for each pass.
template <typename T, typename A, int PER>
struct kl_row {
    static constexpr int N_REG = PER > 0 ? PER : 1;
    A l[N_REG], p[N_REG];  // logit and target of slot threadIdx.x + k ROW_NT (PER > 0)
    A m, lse;
    // Loads the row (PER > 0) and its max and log-sum-exp over the valid slots (m = -inf: none valid).
    __device__ void stats(const T *lg, const void *target, dsa_dtype tdt, int64_t t, int64_t N, A *buf) {
        if constexpr (PER == 0) {
            row_logsumexp<T, A>(lg, N, buf, &m, &lse);
        } else {
            A mx = -INFINITY;
#pragma unroll
            for (int k = 0; k < PER; k++) {
                const int64_t j = threadIdx.x + (int64_t)k * ROW_NT;
                l[k] = j < N ? (A)dsa_to_float(lg[j]) : (A)-INFINITY;
                p[k] = j < N ? (A)dsa_ld_any(target, tdt, t * N + j) : (A)0;
                if (slot_ok(l[k]) && l[k] > mx) mx = l[k];
            }
            m = block_reduce<A>(mx, true, buf);
            A part = 0;
            if (m != (A)-INFINITY)
#pragma unroll
                for (int k = 0; k < PER; k++)
                    if (slot_ok(l[k])) part += exp(l[k] - m);
            lse = m + log(block_reduce<A>(part, false, buf));
        }
    }
    // f(j, logit, target) for every valid slot of this thread.
    template <typename F>
    __device__ void each_valid(const T *lg, const void *target, dsa_dtype tdt, int64_t t, int64_t N, F f) const {
        if constexpr (PER == 0) {
            for (int64_t j = threadIdx.x; j < N; j += ROW_NT) {
                A lv = (A)dsa_to_float(lg[j]);
                if (slot_ok(lv)) f(j, lv, (A)dsa_ld_any(target, tdt, t * N + j));
            }
        } else {
#pragma unroll
            for (int k = 0; k < PER; k++)
                if (slot_ok(l[k])) f(threadIdx.x + (int64_t)k * ROW_NT, l[k], p[k]);
        }
    }
};

template <typename T, typename A, int PER>
__global__ void kl_fwd_kernel(const T *logits, const void *target, dsa_dtype tdt, const uint8_t *is_real, A scale,
                              int64_t N, A *loss) {
    __shared__ A buf[32];
    int64_t t = blockIdx.x;
    if (is_real && !is_real[t]) return;
    const T *lg = logits + t * N;
    kl_row<T, A, PER> r;
    r.stats(lg, target, tdt, t, N, buf);
    if (r.m == (A)-INFINITY) return;
    A part = 0;
    const A lse = r.lse;
    r.each_valid(lg, target, tdt, t, N, [&](int64_t, A l, A p) { part += p * (log(p > (A)1e-10 ? p : (A)1e-10) - (l - lse)); });
    A row = block_reduce<A>(part, false, buf);
    if (threadIdx.x == 0) atomicAdd(loss, scale * row);
}

template <typename T, typename A, int PER>
__global__ void kl_bwd_kernel(const T *logits, const void *target, dsa_dtype tdt, const uint8_t *is_real, A scale,
                              const A *dloss, int64_t N, A *dlogits) {
    __shared__ A buf[32];
    int64_t t = blockIdx.x;
    if (is_real && !is_real[t]) return;
    const T *lg = logits + t * N;
    kl_row<T, A, PER> r;
    r.stats(lg, target, tdt, t, N, buf);
    if (r.m == (A)-INFINITY) return;
    const A c = scale * dloss[0], lse = r.lse;
    A *out = dlogits + t * N;
    r.each_valid(lg, target, tdt, t, N, [&](int64_t j, A l, A p) { out[j] += c * (exp(l - lse) - p); });
}

// The row kernels by row length: 2 or 8 slots a thread in registers, or the re-reading kernel.
template <typename T, typename A>
static void launch_kl_fwd(const T *lg, const void *target, dsa_dtype tdt, const uint8_t *real, A scale, int64_t T_, int64_t N,
                          A *loss) {
    if (N <= 2 * ROW_NT) kl_fwd_kernel<T, A, 2><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(lg, target, tdt, real, scale, N, loss);
    else if (N <= 8 * ROW_NT) kl_fwd_kernel<T, A, 8><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(lg, target, tdt, real, scale, N, loss);
    else kl_fwd_kernel<T, A, 0><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(lg, target, tdt, real, scale, N, loss);
}
template <typename T, typename A>
static void launch_kl_bwd(const T *lg, const void *target, dsa_dtype tdt, const uint8_t *real, A scale, const A *dloss,
                          int64_t T_, int64_t N, A *dlogits) {
    if (N <= 2 * ROW_NT)
        kl_bwd_kernel<T, A, 2><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(lg, target, tdt, real, scale, dloss, N, dlogits);
    else if (N <= 8 * ROW_NT)
        kl_bwd_kernel<T, A, 8><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(lg, target, tdt, real, scale, dloss, N, dlogits);
    else kl_bwd_kernel<T, A, 0><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(lg, target, tdt, real, scale, dloss, N, dlogits);
}

extern "C" dsa_status dsa_kl_loss_fwd_cuda(const dsa_tensor *logits, const dsa_tensor *target,
                                           const dsa_tensor *is_real, double coeff, double n_rows, dsa_tensor *loss) {
    int64_t T_ = logits->shape[0], N = logits->shape[1];
    double scale = coeff / n_rows;
    CUDA_TRY(cudaMemsetAsync(loss->data, 0, dsa_dtype_size(loss->dtype), dsa_stream()));
    if (T_ == 0) return DSA_OK;
    const uint8_t *real = is_real ? (const uint8_t *)is_real->data : NULL;
    switch (logits->dtype) {
    case DSA_F32:
        launch_kl_fwd<float, float>((const float *)logits->data, target->data, target->dtype, real, (float)scale, T_, N,
                                    (float *)loss->data);
        break;
    case DSA_BF16:
        launch_kl_fwd<__nv_bfloat16, float>((const __nv_bfloat16 *)logits->data, target->data, target->dtype, real, (float)scale,
                                            T_, N, (float *)loss->data);
        break;
    case DSA_F64:
        launch_kl_fwd<double, double>((const double *)logits->data, target->data, target->dtype, real, scale, T_, N,
                                      (double *)loss->data);
        break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_kl_indexer_loss (cuda): unsupported dtype %s", dsa_dtype_name(logits->dtype));
    }
    CUDA_LAUNCH_CHECK("kl_loss_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_kl_loss_bwd_cuda(const dsa_tensor *logits, const dsa_tensor *target,
                                           const dsa_tensor *is_real, double coeff, double n_rows,
                                           const dsa_tensor *dloss, dsa_tensor *dlogits) {
    int64_t T_ = logits->shape[0], N = logits->shape[1];
    double scale = coeff / n_rows;
    if (T_ == 0) return DSA_OK;
    const uint8_t *real = is_real ? (const uint8_t *)is_real->data : NULL;
    switch (logits->dtype) {
    case DSA_F32:
        launch_kl_bwd<float, float>((const float *)logits->data, target->data, target->dtype, real, (float)scale,
                                    (const float *)dloss->data, T_, N, (float *)dlogits->data);
        break;
    case DSA_BF16:
        launch_kl_bwd<__nv_bfloat16, float>((const __nv_bfloat16 *)logits->data, target->data, target->dtype, real,
                                            (float)scale, (const float *)dloss->data, T_, N, (float *)dlogits->data);
        break;
    case DSA_F64:
        launch_kl_bwd<double, double>((const double *)logits->data, target->data, target->dtype, real, scale,
                                      (const double *)dloss->data, T_, N, (double *)dlogits->data);
        break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_kl_indexer_loss backward (cuda): unsupported dtype %s", dsa_dtype_name(logits->dtype));
    }
    CUDA_LAUNCH_CHECK("kl_loss_bwd");
    return DSA_OK;
}
