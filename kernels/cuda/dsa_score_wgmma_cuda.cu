// Score head sums (SPEC 5), v3 to v6: Hopper warpgroup MMA (wgmma, sm_90a). bf16 q / kv, D % 64 == 0,
// D <= 576, H <= 128, bf16 out. One CTA per query row, two warpgroups, every head's Q in shared
// memory (128-byte swizzle, kernels/cuda/dsa_wgmma.cuh), kv tiles gathered by cp.async (2 stages).
//  - HQ = 64 (H <= 64): tiles of 64 slots; warpgroup w scores slots 32w .. 32w+31 for all heads.
//  - HQ = 128 (64 < H <= 128): tiles of 32 slots; warpgroup w scores heads 64w .. 64w+63, so each
//    gathered kv tile serves all 128 heads (a per-head-block kernel would gather every tile twice).
// Either way a warpgroup issues wgmma m64n32k16 over D, both operands read from shared memory (v3, v4)
// or Q from registers (v5).
// Per tile: p = exp(sigma S - lse[h]) is summed over the thread's two head rows, then over the 8 rows
// of its lane group (shuffles), then over the warps through a small double-buffered shared array;
// 32 or 64 threads add the warps in a fixed order and write the bf16 sums (0 for invalid slots), so
// the result is deterministic. S(i+1) is on the tensor cores while tile i's sums are written.
// v3 (DSA_HEADSUM_V3=1) gathers with the math warpgroups; v4 adds a gather warpgroup (as the forward's
// v4) and signals full and free stages on mbarriers; v5 (DSA_HEADSUM_SS=1 keeps v4) is v4 with each math
// warpgroup's Q read once into registers (session 24, H200, T 8192: 479.8 / 528.1 TFLOP/s at H 64 / 128
// against v4's 384.7 / 423.0); v6 (the default at D 576 for one row a CTA; DSA_HEADSUM_V5=1 keeps v5) adds
// a second accumulator set, the reduce-scatter warp sums and, at HQ 64, Q's freed region as a third kv
// stage (headsum_ws_kernel below).
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_pick_union.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define HS3_RING 4
// v5 (the default for D 576): Q held in registers by the math warpgroups (36 k16 steps x 4 registers), the
// register split of the forward's v4 (the gather warpgroup at 56, the math warpgroups at 224).
#define HS5_D 576
#define HS5_REGS_GATHER 56
#define HS5_REGS_MATH 224
static_assert(128 * HS5_REGS_GATHER + 256 * HS5_REGS_MATH <= 384 * 168, "v5 register split exceeds the launch budget");
// Head-sum buffers of one tile: [query rows][8 warps][32 slots] (HQ 64 keeps 4 query rows for merged
// groups, dsa_pick_union; HQ 128 one).
#define HS3_RED_ROWS(HQ) ((HQ) == 64 ? DSA_UNION_SLOT_ROWS : 1)

template <int HQ>
static size_t hs3_tile_bytes(int64_t D) {
    const int BK = HQ == 64 ? 64 : 32;
    return 2 * (size_t)HQ * D + 2 * 2 * (size_t)BK * D + 4 * (size_t)HQ + 4 * 2 * HS3_RED_ROWS(HQ) * 8 * 32 +
           4 * HS3_RING * 64 + 8 * HS3_RING + 8 * 8;
}

// Shared-memory carve-up of both kernels from the 1024-byte-aligned base.
template <int HQ>
struct hs3_smem {
    static constexpr int BK = HQ == 64 ? 64 : 32;
    __nv_bfloat16 *sq, *skv;    // Q [D/64][HQ][64]; kv [2][D/64][BK][64]
    float *slse, *sred;         // [HQ] (+inf for padding rows); [2][HS3_RED_ROWS][8 warps][32 columns]
    int *rkeys;                 // [RING][64]
    unsigned long long *rmask;  // [RING]
    unsigned long long *bars;   // v4: full[2], empty[2]; v6 with 3 regions: full[3], empty[3], Q read
    __device__ __forceinline__ hs3_smem(unsigned char *raw, int smem_slack, int D) {
        unsigned char *base = dsa_smem_base1024(raw, smem_slack);
        sq = (__nv_bfloat16 *)base;
        skv = sq + HQ * D;
        slse = (float *)(skv + 2 * BK * D);
        sred = slse + HQ;
        rkeys = (int *)(sred + 2 * HS3_RED_ROWS(HQ) * 8 * 32);
        rmask = (unsigned long long *)(rkeys + HS3_RING * 64);
        bars = rmask + HS3_RING;
    }
    // Row t's prologue for all threads: zeros past the last tile, Q (cp.async queued, not committed)
    // and lse into shared memory.
    __device__ __forceinline__ void load_row(const __nv_bfloat16 *q, const float *lse, __nv_bfloat16 *out, int64_t t, int H,
                                             int D, int64_t K, int nt) const {
        for (int64_t j = (int64_t)nt * BK + threadIdx.x; j < K; j += blockDim.x) out[t * K + j] = __float2bfloat16(0.f);
        dsa_load_rows_sw128(sq, HQ, D, [&](int r) -> const __nv_bfloat16 * {  // zeros for padding heads
            return r < H ? q + ((t * H) + r) * D : nullptr;
        });
        if (threadIdx.x < HQ) slse[threadIdx.x] = threadIdx.x < H ? lse[t * H + threadIdx.x] : INFINITY;  // exp(x - inf) = 0
    }
    // A merged group's prologue (rows t0 .. t0 + rows - 1, tile row m = head m % H of row t0 + m / H): the
    // rows' outputs zeroed (the entries' sums land after the CTA's next barrier), Q and lse.
    __device__ __forceinline__ void load_group(const __nv_bfloat16 *q, const float *lse, __nv_bfloat16 *out, int64_t t0,
                                               int rows, int H, int D, int64_t K) const {
        for (int64_t j = threadIdx.x; j < rows * K; j += blockDim.x) out[t0 * K + j] = __float2bfloat16(0.f);
        dsa_load_rows_sw128(sq, HQ, D, [&](int r) -> const __nv_bfloat16 * {
            int64_t t;
            int h;
            return dsa_union_tile_row(r, t0, 0, H, rows, &t, &h) ? q + ((t * H) + h) * D : nullptr;
        });
        if (threadIdx.x < HQ) {
            int64_t t;
            int h;
            slse[threadIdx.x] = dsa_union_tile_row(threadIdx.x, t0, 0, H, rows, &t, &h) ? lse[t * H + h] : INFINITY;
        }
    }
};

// The per-tile math of a math thread (threads 0 .. 255): S, its exponentials summed over heads into
// the warp sums, and the slot sums written out.
template <int HQ>
struct hs3_math {
    static constexpr int BK = HQ == 64 ? 64 : 32;
    unsigned q_base, q_base0, k_off;  // q_base0: the whole Q tile
    float *sred;
    float sigma2, lse_lo, lse_hi;  // sigma log2(e); this thread's two heads' lse, times log2(e)
    int warp, g, c, head_lo;
    __device__ __forceinline__ hs3_math(const hs3_smem<HQ> &sm, float sigma) {
        int lane = threadIdx.x & 31, wg = dsa_warpgroup_index();
        warp = threadIdx.x >> 5;
        g = lane >> 2;
        c = lane & 3;
        // This warpgroup's operands: HQ 64 -> all heads, slots 32 wg ..; HQ 128 -> heads 64 wg .., all slots.
        q_base0 = dsa_smem_addr(sm.sq);
        q_base = q_base0 + (HQ == 128 ? wg * 64 * 128 : 0);
        k_off = HQ == 64 ? wg * 32 * 128 : 0;
        sred = sm.sred;
        head_lo = (HQ == 128 ? 64 * wg : 0) + 16 * (warp & 3) + g;
        // p = exp(sigma S - lse) = 2^(sigma log2(e) S - lse log2(e)): one FMA and the ex2 per score.
        sigma2 = sigma * 1.44269504f;
        lse_lo = sm.slse[head_lo] * 1.44269504f;
        lse_hi = sm.slse[head_lo + 8] * 1.44269504f;
    }
    __device__ __forceinline__ void issue_scores(float *s, const __nv_bfloat16 *stage, int D) const {
        dsa_wgmma_scores_m64n32(s, q_base, HQ, dsa_smem_addr(stage) + k_off, BK, D);
    }
    // v5 (D = HS5_D): this warp's 16 rows of the warpgroup's Q as m64k16 A fragments, read once from the
    // swizzled Q tile (ldmatrix x4: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) of each k16 step).
    __device__ __forceinline__ void load_q_frags(unsigned (*qf)[4]) const {
        const int lane = threadIdx.x & 31, r = (HQ == 128 ? 64 * dsa_warpgroup_index() : 0) + 16 * (warp & 3) + (lane & 15);
#pragma unroll
        for (int b = 0; b < HS5_D / 64; b++)
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const int chunk = 2 * kk + (lane >> 4);
                dsa_ldsm_x4(qf[4 * b + kk], q_base0 + 2u * (unsigned)(b * HQ * 64 + r * 64 + ((chunk ^ (r & 7)) << 3)));
            }
    }
    // v5: S with Q from registers: each k16 step reads only its 32 x 16 slice of the kv tile from shared
    // memory (the SS form also reads Q's 64 x 16: 3 KB a step against shared memory's 128 B a clock,
    // more than the 16 clocks the tensor cores take for it).
    // PIN (v6): the stage's descriptor made opaque where it is used, so the compiler does not keep the
    // descriptors of both stages live through the loop (v6 at HQ 64 spilled 124-152 bytes without it).
    template <bool PIN = false>
    __device__ __forceinline__ void issue_scores_rs(float *s, const unsigned (*qf)[4], const __nv_bfloat16 *stage) const {
        unsigned long long db = dsa_wgmma_desc(dsa_smem_addr(stage) + k_off, 16, 1024);
        if constexpr (PIN) asm volatile("mov.b64 %0, %0;\n" : "+l"(db));
#pragma unroll
        for (int b = 0; b < HS5_D / 64; b++)
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
                dsa_wgmma_m64n32k16_rs(s, qf[4 * b + kk], db + b * (BK * 128 / 16) + 2 * kk, (b | kk) != 0);
        dsa_wgmma_commit();
    }
    // This thread's two head rows, then the 8 lane groups of the warp: column sums of 16 heads, into
    // the warp's row of sred buffer i & 1. SCATTER (the default since session 28; DSA_HEADSUM_ALLREDUCE=1
    // keeps the butterflies): a reduce-scatter over the lane groups, halving the values a lane holds at
    // each of 3 shuffle steps (4 + 2 + 1 shuffles), so lane (g, c) ends with column g of its 8 and every
    // lane stores one float; else each of the 8 columns is summed by 3 butterfly shuffles (24) and lanes
    // g = 0 store them.
    template <bool SCATTER = false>
    __device__ __forceinline__ void warp_sums(const float *s, int i) const {
        if constexpr (SCATTER) {
            const int lane = threadIdx.x & 31;
            float v[8];  // v[2 j + e]: column 8 j + 2 c + e
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    v[2 * j + e] = dsa_exp2(s[4 * j + e] * sigma2 - lse_lo) + dsa_exp2(s[4 * j + 2 + e] * sigma2 - lse_hi);
            // Step with lane bit `mask` (g's bits 2, 1, 0 in turn): the lane keeps the half of its n values
            // its bit selects and adds its partner's copy of that half.
            const bool b2 = lane & 16, b1 = lane & 8, b0 = lane & 4;
#pragma unroll
            for (int m = 0; m < 4; m++) {
                const float r = __shfl_xor_sync(0xffffffffu, b2 ? v[m] : v[m + 4], 16);
                v[m] = (b2 ? v[m + 4] : v[m]) + r;
            }
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const float r = __shfl_xor_sync(0xffffffffu, b1 ? v[m] : v[m + 2], 8);
                v[m] = (b1 ? v[m + 2] : v[m]) + r;
            }
            const float r = __shfl_xor_sync(0xffffffffu, b0 ? v[0] : v[1], 4);
            const float sum = (b0 ? v[1] : v[0]) + r;  // column index k = 4 b2 + 2 b1 + b0 = g: 8 (g >> 1) + 2 c + (g & 1)
            sred[((i & 1) * 8 + warp) * 32 + 8 * (g >> 1) + 2 * c + (g & 1)] = sum;
        } else {
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
        }
    }
    // Merged groups (HQ 64, H heads a row): the sums of each query row of the group apart. A warp's 16
    // tile rows span query rows m0 / H .. (m0 + 15) / H; the others get zeros.
    __device__ __forceinline__ void warp_sums_rows(const float *s, int i, int H) const {
        float pl[8], ph[8];
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                pl[2 * j + e] = dsa_exp2(s[4 * j + e] * sigma2 - lse_lo);
                ph[2 * j + e] = dsa_exp2(s[4 * j + 2 + e] * sigma2 - lse_hi);
            }
        const int m0 = 16 * (warp & 3), r_lo = head_lo / H, r_hi = (head_lo + 8) / H;
        float *buf = sred + (i & 1) * DSA_UNION_SLOT_ROWS * 8 * 32;
#pragma unroll
        for (int r = 0; r < DSA_UNION_SLOT_ROWS; r++) {
            float cs[8];
            const bool spans = r >= m0 / H && r <= (m0 + 15) / H;  // warp-uniform
#pragma unroll
            for (int k = 0; k < 8; k++) {
                float v = 0.f;
                if (spans) {
                    v = (r_lo == r ? pl[k] : 0.f) + (r_hi == r ? ph[k] : 0.f);
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                }
                cs[k] = v;
            }
            if (g == 0)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    *(float2 *)(buf + (r * 8 + warp) * 32 + 8 * j + 2 * c) = make_float2(cs[2 * j], cs[2 * j + 1]);
        }
    }
    // Threads 0 .. 63 of a merged group, once every warp's sums of tile i are in: entry i * 64 + tid, each
    // query row that picked it gets its sum at the slot where it picked it. `where` holds the entry's
    // four slots (16 bits each, -1: not picked by that row), loaded by the caller a tile ahead (two
    // dependent L2 round trips a tile in this path made the head sum 2.5x slower, H200, session 20).
    __device__ __forceinline__ void write_out_rows(int i, unsigned long long valid, __nv_bfloat16 *out, int64_t t0, int rows,
                                                   int64_t K, unsigned long long where) const {
        const int tid = threadIdx.x;
        if (tid >= 64 || !((valid >> tid) & 1ull)) return;
        const float *b = sred + (i & 1) * DSA_UNION_SLOT_ROWS * 8 * 32;
        const int w0 = 4 * (tid >> 5), col = tid & 31;
#pragma unroll
        for (int r = 0; r < DSA_UNION_SLOT_ROWS; r++) {
            const short sl = (short)(where >> (16 * r));
            if (r >= rows || sl < 0) continue;
            const float *x = b + (r * 8 + w0) * 32 + col;
            out[(t0 + r) * K + sl] = __float2bfloat16(x[0] + x[32] + x[64] + x[96]);
        }
    }
    // Threads 0 .. BK-1, once every warp's sums of tile i are in: slot tid of tile i, the warps over
    // its heads added in a fixed order (0 for an invalid slot).
    __device__ __forceinline__ void write_out(int i, unsigned long long valid, __nv_bfloat16 *out, int64_t t, int64_t K) const {
        int tid = threadIdx.x;
        if (tid >= BK) return;
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
        bool ok = (valid >> tid) & 1ull;
        if (j < K) out[t * K + j] = __float2bfloat16(ok ? v : 0.f);
    }
};

#define HS3_ARGS                                                                                                 \
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,       \
        const int *__restrict__ topk_length, const float *__restrict__ lse, __nv_bfloat16 *out, int H, int D, \
        int64_t K, int64_t S_kv, float sigma, int smem_slack
// v4's extra arguments: the query row count and, for merged groups (HQ 64), the union of their picks.
#define HS4_ARGS HS3_ARGS, int64_t T, dsa_pick_union un

// v3: the two math warpgroups gather too (256 threads). S(i+1) is on the tensor cores while tile i's
// sums are written, and the gather of tile i+2 starts as soon as tile i's stage is free: one barrier
// per tile.
template <int HQ>
__global__ void __launch_bounds__(256, 1) headsum_wgmma_kernel(HS3_ARGS) {
    constexpr int BK = hs3_smem<HQ>::BK;
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    const hs3_smem<HQ> sm(dsa_smem_raw, smem_slack, D);
    int64_t t = blockIdx.x;
    int64_t k_end = dsa_row_k_end(topk_length, t, K);
    int nt = (int)((k_end + BK - 1) / BK), warp = threadIdx.x >> 5;
    dsa_slot_ring64 ring{sm.rkeys, sm.rmask, HS3_RING, BK, idx + t * K, k_end, S_kv};
    auto issue_tile = [&](int tile) { ring.load_tile(sm.skv + (tile & 1) * BK * D, tile, kv, D); };
    sm.load_row(q, lse, out, t, H, D, K, nt);
    int2 pre = ring.start(nt, sm.skv, kv, D);  // Q, lse and tile 0 are in; warp 0: the next raw indices
    if (nt > 1) issue_tile(1);
    dsa_cp_async_commit();

    const hs3_math<HQ> mt(sm, sigma);
    float s[16];
    dsa_wgmma_fence();
    mt.issue_scores(s, sm.skv, D);  // issued unconditionally (a result past the last tile is unused)
    dsa_wgmma_wait<0>();
    for (int i = 0; i < nt; i++) {
        mt.warp_sums(s, i);
        dsa_cp_async_wait<0>();   // this thread's copies of tile i + 1 have landed
        dsa_fence_proxy_async();
        __syncthreads();  // tile i's warp sums are in; tile i + 1 is complete; tile i's stage is free
        if (i + 2 < nt) issue_tile(i + 2);
        dsa_cp_async_commit();
        if (warp == 0) ring.advance(i, nt, pre);
        dsa_wgmma_fence();
        mt.issue_scores(s, sm.skv + ((i + 1) & 1) * BK * D, D);
        mt.write_out(i, ring.tile_mask(i), out, t, K);
        dsa_wgmma_wait<0>();
    }
    dsa_cp_async_wait<0>();
}

// v4: warp-specialized as the forward's v4 (384 threads): warpgroup 2 gathers
// (dsa_slot_ring64::produce), the math warpgroups release a stage as soon as S of its tile is done.
// Merged (HQ 64, un.keys set): a CTA takes a group of un.R query rows over the union of their picks,
// tile row m = head m % H of row t0 + m / H (R H <= 64): a kv row two of them picked is gathered once.
// v5 (RS, D 576; DSA_HEADSUM_SS=1 keeps v4): the same with Q in the math threads' registers.
// SCATTER: the warp sums by a reduce-scatter (hs3_math::warp_sums).
// OVL (v6, one row a CTA): two sets of score accumulators, so S(i + 1) is issued before tile i's
// exponentials and warp sums and can run under them (v5 issues it after). Measured neutral by itself
// (session 28: the two math warpgroups already overlap each other's sums and wgmmas); it is the loop the
// third stage below is built on.
// NST 3 (v6 at HQ 64, D 576 only): Q's region, free once the math warpgroups hold Q in registers, is a
// third kv stage (tile j in region (j + 1) % 3 of sq .. skv), so three tiles can be gathered ahead
// (session 28, T 8192, H 64: 2.79 -> 2.60 ms).
template <int HQ, bool RS, bool SCATTER = false, bool OVL = false, int NST = 2>
__global__ void __launch_bounds__(384, 1) headsum_ws_kernel(HS4_ARGS) {
    constexpr int BK = hs3_smem<HQ>::BK;
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    const hs3_smem<HQ> sm(dsa_smem_raw, smem_slack, D);
    static_assert(NST == 2 || (NST == 3 && OVL && RS && HQ == 64), "three regions: v6 at HQ 64 (Q's region = one stage)");
    unsigned long long *full = sm.bars, *empty = sm.bars + NST, *q_read = sm.bars + 2 * NST;
    const bool merged = !OVL && HQ == 64 && un.keys != nullptr;  // (v6 takes one row a CTA)
    const int64_t grp = blockIdx.x, t = merged ? grp * un.R : grp;
    const int rows = merged ? (int)min((int64_t)un.R, T - t) : 1;
    int64_t k_end = merged ? un.count[grp] : dsa_row_k_end(topk_length, t, K);
    int nt = (int)((k_end + BK - 1) / BK), tid = threadIdx.x;
    if (tid == 0) {
        for (int b = 0; b < 2; b++) {
            dsa_mbar_init(full + b, DSA_GATHER_FULL_ARRIVALS);
            dsa_mbar_init(empty + b, 256);
        }
        if constexpr (NST == 3) {
            dsa_mbar_init(full + 2, DSA_GATHER_FULL_ARRIVALS);
            dsa_mbar_init(empty + 2, 256);
            dsa_mbar_init(q_read, 256);
        }
    }
    if (merged) sm.load_group(q, lse, out, t, rows, H, D, K);
    else sm.load_row(q, lse, out, t, H, D, K, nt);
    dsa_cp_async_commit();
    dsa_cp_async_wait<0>();
    dsa_fence_proxy_async();  // Q -> visible to wgmma
    __syncthreads();          // Q, lse and the barriers are ready (and a group's zeroed rows written)
    dsa_slot_ring64 ring{sm.rkeys, sm.rmask, HS3_RING, BK, merged ? un.keys + grp * un.cap : idx + t * K, k_end, S_kv};
    if (tid >= 256) {  // at least one tile: with nt = 0 the math still reads a zero tile 0
        if constexpr (RS) dsa_setmaxnreg_dec<HS5_REGS_GATHER>();
        if constexpr (NST == 3) ring.produce<BK, 3>(max(nt, 1), sm.sq, BK * D, kv, D, full, empty, tid - 256, q_read);
        else ring.produce<BK>(max(nt, 1), sm.skv, BK * D, kv, D, full, empty, tid - 256);
        return;
    }
    if constexpr (RS) dsa_setmaxnreg_inc<HS5_REGS_MATH>();
    const hs3_math<HQ> mt(sm, sigma);
    float s[16];
    unsigned qf[RS ? 4 * (HS5_D / 64) : 1][4];
    if constexpr (RS) mt.load_q_frags(qf);
    if constexpr (NST == 3) dsa_mbar_arrive(q_read);  // Q's region may take kv tiles now
    auto issue_into = [&](float *acc, const __nv_bfloat16 *stage) {
        if constexpr (RS) mt.template issue_scores_rs<OVL>(acc, qf, stage);
        else mt.issue_scores(acc, stage, D);
    };
    auto issue = [&](const __nv_bfloat16 *stage) { issue_into(s, stage); };
    // Tile j's stage, its barriers' index and its full barrier's phase.
    auto region = [](int j) { return NST == 3 ? (int)(((unsigned)j + 1) % 3) : (j & 1); };
    auto phase = [](int j) { return NST == 3 ? ((unsigned)j / 3) & 1 : ((unsigned)j >> 1) & 1; };
    __nv_bfloat16 *const stages = NST == 3 ? sm.sq : sm.skv;
    dsa_mbar_wait(full + region(0), 0);
    dsa_wgmma_fence();
    issue(stages + region(0) * BK * D);
    dsa_wgmma_wait<0>();
    dsa_mbar_arrive(empty + region(0));  // tile 0's stage: S(0) has read it
    if constexpr (OVL) {
        // Tile i's scores in cur; S(i + 1) goes into nxt before cur's sums (issued unconditionally, as
        // below), then the sums, the CTA's sums of tile i written, and S(i + 1) waited for.
        float s2[16];
        auto step = [&](int i, const float *cur, float *nxt) {
            const int r = region(i + 1);
            if (i + 1 < nt) dsa_mbar_wait(full + r, phase(i + 1));
            dsa_wgmma_fence();
            issue_into(nxt, stages + r * BK * D);
            mt.template warp_sums<SCATTER>(cur, i);
            dsa_bar_sync(1, 256);  // every math warp's sums of tile i are in
            mt.write_out(i, sm.rmask[i % HS3_RING], out, t, K);
            dsa_wgmma_wait<0>();
            if (i + 1 < nt) dsa_mbar_arrive(empty + r);  // S(i + 1) has read its stage
        };
        for (int i = 0; i < nt; i += 2) {  // two tiles a pass: the accumulator sets swap roles
            step(i, s, s2);
            if (i + 1 < nt) step(i + 1, s2, s);
        }
        return;
    }
    // Merged: this thread's entry of tile i (threads 0 .. 63), its slots loaded two tiles ahead (session 21,
    // after ncu showed the math warps waiting on global loads; measured no faster than one tile ahead,
    // 2.001 against 1.992 ms at T 8192, H 12, K 512, H200, session 22: those loads were not the cause).
    const unsigned long long *gslots = merged ? (const unsigned long long *)(un.slot + grp * un.cap * 4) : nullptr;
    unsigned long long where = merged && tid < 64 && nt > 0 ? gslots[tid] : 0ull;
    unsigned long long where_next = merged && tid < 64 && nt > 1 ? gslots[64 + tid] : 0ull;
    for (int i = 0; i < nt; i++) {
        const unsigned long long where_i = where;
        where = where_next;
        if (merged && tid < 64 && i + 2 < nt) where_next = gslots[(int64_t)(i + 2) * 64 + tid];
        if (merged) mt.warp_sums_rows(s, i, H);
        else mt.template warp_sums<SCATTER>(s, i);
        // S(i + 1) is issued unconditionally (a wgmma under a branch is serialized); past the last
        // tile it reads a stage nobody writes any more and its result is unused.
        if (i + 1 < nt) dsa_mbar_wait(full + ((i + 1) & 1), ((i + 1) >> 1) & 1);
        dsa_wgmma_fence();
        issue(sm.skv + ((i + 1) & 1) * BK * D);
        dsa_bar_sync(1, 256);  // every math warp's sums of tile i are in
        if (merged) mt.write_out_rows(i, sm.rmask[i % HS3_RING], out, t, rows, K, where_i);
        else mt.write_out(i, sm.rmask[i % HS3_RING], out, t, K);
        dsa_wgmma_wait<0>();
        if (i + 1 < nt) dsa_mbar_arrive(empty + ((i + 1) & 1));  // S(i + 1) has read its stage
    }
}

// v5 / v6 (Q in registers) with the warp sums by a reduce-scatter (scatter) or butterflies.
template <int HQ, bool OVL, int NST = 2>
static decltype(&headsum_ws_kernel<HQ, true>) headsum_rs_kernel(bool scatter) {
    return scatter ? headsum_ws_kernel<HQ, true, true, OVL, NST> : headsum_ws_kernel<HQ, true, false, OVL, NST>;
}

// Called by the head-sum dispatcher (dsa_score_cuda.cu): bf16, D % 64 == 0, D <= 576, H <= 128, on an
// sm_90 GPU when the shared memory fits. Returns DSA_ERR_UNSUPPORTED otherwise (the caller falls back).
dsa_status dsa_attn_score_headsum_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                             const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                             dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = kv->shape[0], K = idx->shape[1];
    if (T_ == 0) return DSA_OK;
    size_t optin = 0;
    DSA_TRY(dsa_smem_optin(&optin));
    bool big = H > 64;
    size_t smem = big ? hs3_tile_bytes<128>(D) : hs3_tile_bytes<64>(D);
    if (smem > optin) return DSA_ERR_UNSUPPORTED;
    int slack = dsa_smem_slack(smem, optin);
    smem += (size_t)slack;
    // Warp-specialized (v5 / v4) by default: v4 measured 316 / 435 TFLOP/s at H 64 / 128 (T 8192, H200,
    // session 16) against v3's 261 / 321; DSA_HEADSUM_V3=1 picks v3 (the math warpgroups gather).
    static int ws = -1;
    if (ws < 0) ws = !dsa_env_flag("DSA_HEADSUM_V3");
    if (!ws) {
        auto kern = big ? headsum_wgmma_kernel<128> : headsum_wgmma_kernel<64>;
        DSA_TRY(dsa_smem_setup(kern, smem, "dsa_attn_score_headsum (wgmma v3)"));
        kern<<<(unsigned)T_, 256, smem, dsa_stream()>>>(
            (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
            topk_length ? (const int *)topk_length->data : NULL, (const float *)lse->data, (__nv_bfloat16 *)out->data,
            (int)H, (int)D, K, S, (float)sigma, slack);
        CUDA_LAUNCH_CHECK("attn_score_headsum_wgmma");
        return DSA_OK;
    }
    // v4 with few heads: groups of neighbouring rows over the union of their picks (DSA_HEADSUM_ROWS=4;
    // off by default: measured slower, H200, T 8192, H 12, K 512: 1.992 against 0.975 ms; small.cfg's
    // profile 19.84 against 11.58 ms a step, session 20, cause not found yet).
    static int want = -1;
    if (want < 0) want = dsa_env_int("DSA_HEADSUM_ROWS", 1);
    dsa_pick_union un;
    int R = 1;
    DSA_TRY(dsa_pick_union_prepare(big ? 1 : want, H, idx, topk_length, S, true, &un, &R));
    // v5 (Q in registers) at D 576 unless DSA_HEADSUM_SS=1.
    static int ss = -1;
    if (ss < 0) ss = dsa_env_flag("DSA_HEADSUM_SS");
    const bool rs = !ss && D == HS5_D;
    // The warp sums by a reduce-scatter (7 shuffles a tile, not 24) unless DSA_HEADSUM_ALLREDUCE=1.
    static int allreduce = -1;
    if (allreduce < 0) allreduce = dsa_env_flag("DSA_HEADSUM_ALLREDUCE");
    // v6 (the sums of tile i under S(i + 1)) for one row a CTA unless DSA_HEADSUM_V5=1.
    static int v5 = -1;
    if (v5 < 0) v5 = dsa_env_flag("DSA_HEADSUM_V5");
    const bool ovl = !v5 && R < 2;
    // v6 at HQ 64 with Q's region as a third kv stage unless DSA_HEADSUM_STAGES2=1. Session 28 (H200, T 8192,
    // chain-only processes): the H 64 head sum 2.860 / 2.871 ms (v5, butterfly sums), 2.785 (v5, reduce-
    // scatter), 2.907 (v6, butterflies), 2.794 / 2.790 (v6, reduce-scatter), 2.600 / 2.596 (v6, reduce-
    // scatter, 3 stages); H 128: 4.773 / 4.778 (v5), 4.601 (v5, scatter), 4.574 / 4.569 (v6, scatter).
    static int st3 = -1;
    if (st3 < 0) st3 = !dsa_env_flag("DSA_HEADSUM_STAGES2");
    const bool sc = !allreduce;
    auto kern = !rs                  ? (big ? headsum_ws_kernel<128, false> : headsum_ws_kernel<64, false>)
                : ovl && st3 && !big ? headsum_rs_kernel<64, true, 3>(sc)
                : big                ? (ovl ? headsum_rs_kernel<128, true>(sc) : headsum_rs_kernel<128, false>(sc))
                                     : (ovl ? headsum_rs_kernel<64, true>(sc) : headsum_rs_kernel<64, false>(sc));
    DSA_TRY(dsa_smem_setup(kern, smem, !rs ? "dsa_attn_score_headsum (wgmma v4)" : ovl ? "dsa_attn_score_headsum (wgmma v6)" : "dsa_attn_score_headsum (wgmma v5)"));
    kern<<<(unsigned)(R >= 2 ? (T_ + R - 1) / R : T_), 384, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, (const float *)lse->data, (__nv_bfloat16 *)out->data,
        (int)H, (int)D, K, S, (float)sigma, slack, T_, un);
    CUDA_LAUNCH_CHECK("attn_score_headsum_wgmma");
    return DSA_OK;
}
