// Sparse MQA attention forward, wgmma kernels (sm_90a). bf16, Dv = 512, D % 64 == 0, D <= 576. One
// CTA per (query row t, block of 64 heads); tiles of 64 slots. v4 (below; the default for D < 576):
//  - Q (64 heads x D) and each gathered kv tile (64 rows x D) sit in shared memory in the 128-byte
//    swizzle layout of kernels/cuda/dsa_wgmma.cuh, written by 16-byte cp.async (2 kv stages;
//    invalid slots are zero rows, masked to -inf).
//  - S = Q K^T: math warpgroup w takes slots 32w .. 32w+31 (wgmma m64n32k16 over D, operands read by
//    the tensor cores straight from shared memory).
//  - Online softmax in fp32 registers; the two warpgroups swap their row maxima through shared memory
//    so both rescale by the same factor; P (bf16) goes to shared memory in the swizzled A layout.
//  - O += P V: warpgroup w owns output columns 256w .. 256w+255 (m64n256k16, 128 fp32 accumulators
//    per thread); V is the kv tile itself read as a transposed (MN-major) B operand.
//  - Warp-specialized: a third warpgroup only gathers. It fills the stage of tile i + 2 as soon as
//    both math warpgroups have released it (after P(i) V(i)), signalling each full stage on an
//    mbarrier, so the gather runs beside S, the softmax and P V instead of between them. (v3, where
//    the math warpgroups gathered themselves, ran 9.5-12% behind v4 and was removed in session 15.)
// v5 (further down; the default for D = 576) pairs the tiles between the math warpgroups instead.
// Numerics as v2: fp32 scores, softmax and accumulation, P rounded to bf16 for P V, lse = m + log l,
// out = acc / l * sigmoid(lse - sink).
// Merged rows (v5, H <= 32, DSA_SPARSE_FWD_ROWS): a CTA takes a group of R neighbouring query rows (4
// unless the switch asks for more, at most 64 / H and 8) over the union of their picks (dsa_pick_union.h;
// fwd3_work), each tile row's scores masked by its row's bits. small.cfg (H 12, K 512, H200): 17.31 ->
// 14.15 ms a step.
// Fused score head sums (v5, one row a CTA, H <= 64; dsa_sparse_mqa_headsum): the loop also stores each
// tile's scores for an epilogue that sums the heads' probabilities once the lse is known (fwd5_headsum).
// small.cfg, H200: 128.7 -> 120.7 ms a step (the separate head-sum kernel's 0.98 ms a layer gone).
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_pick_union.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define FWD3_HB 64
#define FWD3_BK 64
#define FWD3_RING 4
#define FWD3_DV 512
// v4's register split: launched at 168 registers a thread (65536 / 384, rounded down to 8), the gather
// warpgroup drops to FWD4_REGS_GATHER and the math warpgroups take what it frees. setmaxnreg.inc
// waits until the registers are free, so a split above the launch total hangs the CTA.
#define FWD4_REGS_GATHER 56
#define FWD4_REGS_MATH 224
static_assert(128 * FWD4_REGS_GATHER + 256 * FWD4_REGS_MATH <= 384 * 168, "v4 register split exceeds the launch budget");

// Bytes past the 1024-byte-aligned start: Q, two kv stages, P, the row maxima (reused for the row
// sums at the end), the key ring and its masks, v4's four mbarriers.
static size_t fwd3_tile_bytes(int64_t D) {
    return 2 * (size_t)FWD3_HB * D + 2 * 2 * (size_t)FWD3_BK * D + 2 * (size_t)FWD3_HB * FWD3_BK + 4 * 2 * FWD3_HB +
           4 * FWD3_RING * FWD3_BK + 8 * FWD3_RING + 8 * 4;
}
// The launch asks for 1008 bytes more (alignment slack) when the GPU allows it: the dynamic shared
// memory window normally starts 1024-aligned, and the kernel checks that it fits either way.

// Scores of NJ 8-column blocks of an m64nN fragment (s[4j + e]: row lo, s[4j + 2 + e]: row hi, column
// 8j + 2c + e) scaled by sigma2 into out (may be s), -inf where bit 8j + 2c + e of the row's mask
// (valid_lo, valid_hi) is clear; returns the two rows' maxima over the quad.
template <int NJ, typename Mask>
__device__ __forceinline__ void fwd_mask_scale(const float *s, float *out, Mask valid_lo, Mask valid_hi, int c, float sigma2,
                                               float &mx_lo, float &mx_hi) {
    mx_lo = -INFINITY;
    mx_hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const bool ok_lo = (valid_lo >> (8 * j + 2 * c + e)) & 1u, ok_hi = (valid_hi >> (8 * j + 2 * c + e)) & 1u;
            out[4 * j + e] = ok_lo ? s[4 * j + e] * sigma2 : -INFINITY;
            out[4 * j + 2 + e] = ok_hi ? s[4 * j + 2 + e] * sigma2 : -INFINITY;
            mx_lo = fmaxf(mx_lo, out[4 * j + e]);
            mx_hi = fmaxf(mx_hi, out[4 * j + 2 + e]);
        }
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
        mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, x));
        mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, x));
    }
}

// One row's online-softmax step in log2 units: the running max m becomes mn; returns the reference the
// tile's exponentials subtract (0 while the row has no valid slot, so exp2(-inf - 0) = 0, not NaN)
// and sets al to 2^(old m - reference), the factor for what was accumulated before.
__device__ __forceinline__ float fwd_new_max(float &m, float mn, float &al) {
    const float ref = mn == -INFINITY ? 0.f : mn;
    al = dsa_exp2(m - ref);
    m = mn;
    return ref;
}

// v4's math for one math warpgroup `wg` (threads 128 wg .. +127): S of a tile, its
// softmax into P, P V, and the epilogue. Row maxima and sums are swapped through `smax` between the
// two math warpgroups with named barrier 1 (256 threads).
struct fwd3_math {
    const __nv_bfloat16 *skv;  // [2][D/64][BK][64] kv stages
    __nv_bfloat16 *sp;         // [HB][64] P
    float *smax;               // [2][HB] row maxima, then row sums
    unsigned q_base, p_base, v_lbo, v_sbo;
    int D, wg, row_lo, row_hi, c;
    float sigma2, m_lo, m_hi, l_lo, l_hi;  // sigma log2(e); running max (log2 units) and sum of rows row_lo, row_hi

    __device__ __forceinline__ unsigned stage_addr(int tile) const { return dsa_smem_addr(skv + (tile & 1) * FWD3_BK * D); }
    // S = Q K^T of tile `tile` for slots 32 wg .. +32 (rows 32 wg .. of the kv tile), issued, not waited.
    __device__ __forceinline__ void issue_scores(float *s, int tile) const {
        dsa_wgmma_scores_m64n32(s, q_base, FWD3_HB, stage_addr(tile) + wg * 32 * 128, FWD3_BK, D);
    }
    // Softmax of S (in s; `valid` = the tile's valid-slot mask) -> P in shared memory, o rescaled.
    // Mask, row max over this warpgroup's 32 slots (quad shuffles), swap with the other warpgroup. A
    // tile without valid slots runs the same code: P = 0, m and l unchanged. The caller makes P
    // visible (proxy fence, barrier) before P V.
    __device__ __forceinline__ void softmax_to_p(const float *s, float *o, unsigned long long valid) {
        float x[16];  // scaled, masked scores (s itself is only written by wgmma)
        float mx_lo, mx_hi;
        const unsigned v = (unsigned)(valid >> (32 * wg));
        fwd_mask_scale<4>(s, x, v, v, c, sigma2, mx_lo, mx_hi);
        if (c == 0) {
            smax[wg * FWD3_HB + row_lo] = mx_lo;
            smax[wg * FWD3_HB + row_hi] = mx_hi;
        }
        dsa_bar_sync(1, 256);  // both warpgroups' maxima are in
        mx_lo = fmaxf(mx_lo, smax[(wg ^ 1) * FWD3_HB + row_lo]);
        mx_hi = fmaxf(mx_hi, smax[(wg ^ 1) * FWD3_HB + row_hi]);
        float al_lo, al_hi;
        const float ref_lo = fwd_new_max(m_lo, fmaxf(m_lo, mx_lo), al_lo);
        const float ref_hi = fwd_new_max(m_hi, fmaxf(m_hi, mx_hi), al_hi);
        float ps_lo = 0.f, ps_hi = 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float p0 = dsa_exp2(x[4 * j] - ref_lo), p1 = dsa_exp2(x[4 * j + 1] - ref_lo);
            float p2 = dsa_exp2(x[4 * j + 2] - ref_hi), p3 = dsa_exp2(x[4 * j + 3] - ref_hi);
            ps_lo += p0 + p1;
            ps_hi += p2 + p3;
            int col = 32 * wg + 8 * j + 2 * c;
            *(unsigned *)(sp + dsa_sw128(row_lo, col, FWD3_HB)) = dsa_pack_f32x2(p0, p1);
            *(unsigned *)(sp + dsa_sw128(row_hi, col, FWD3_HB)) = dsa_pack_f32x2(p2, p3);
        }
        l_lo = l_lo * al_lo + ps_lo;
        l_hi = l_hi * al_hi + ps_hi;
        // O is rescaled only when a row max of this warp moved (alpha != 1); once the maxima settle,
        // most tiles skip the 128 multiplies. Exact: a skipped alpha is exactly 1.
        if (__any_sync(0xffffffffu, al_lo != 1.f || al_hi != 1.f))
#pragma unroll
        for (int j = 0; j < 32; j++) {
            o[4 * j] *= al_lo;
            o[4 * j + 1] *= al_lo;
            o[4 * j + 2] *= al_hi;
            o[4 * j + 3] *= al_hi;
        }
    }
    // O[:, 256 wg .. +256] += P V(tile) over the 64 slots (4 k16 steps), issued and committed.
    __device__ __forceinline__ void issue_pv(float *o, int tile) const {
        const unsigned long long dp = dsa_wgmma_desc(p_base, 16, 1024),
                                 dv = dsa_wgmma_desc(stage_addr(tile) + (4 * wg) * FWD3_BK * 128, v_lbo, v_sbo);
#pragma unroll
        for (int kk = 0; kk < FWD3_BK / 16; kk++) dsa_wgmma_m64n256k16(o, dp + 2 * kk, dv + kk * (16 * 128 / 16), 1);
        dsa_wgmma_commit();
    }
    // Row sums over both warpgroups, then out = O / l * sigmoid(lse - sink) and lse for the tile rows
    // that hold a head: tile row m is head h0 + m % nh of query row t0 + m / nh, for m / nh < rows (one
    // query row: m < nh; a merged group: its `rows` rows).
    __device__ __forceinline__ void finish(const float *o, const void *sink, dsa_dtype sink_dt, __nv_bfloat16 *out,
                                           float *lse, int64_t t0, int H, int h0, int nh, int rows) {
#pragma unroll
        for (int x = 1; x <= 2; x <<= 1) {
            l_lo += __shfl_xor_sync(0xffffffffu, l_lo, x);
            l_hi += __shfl_xor_sync(0xffffffffu, l_hi, x);
        }
        dsa_bar_sync(1, 256);  // every read of the last maxima is done: smax becomes the row sums
        if (c == 0) {
            smax[wg * FWD3_HB + row_lo] = l_lo;
            smax[wg * FWD3_HB + row_hi] = l_hi;
        }
        dsa_bar_sync(1, 256);
        l_lo += smax[(wg ^ 1) * FWD3_HB + row_lo];
        l_hi += smax[(wg ^ 1) * FWD3_HB + row_hi];
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int row = half ? row_hi : row_lo;
            float l = half ? l_hi : l_lo, m = half ? m_hi : m_lo;
            float lse_h = l > 0 ? m * 0.69314718f + logf(l) : -INFINITY, scale = l > 0 ? 1.f / l : 0.f;
            int64_t t;
            int h;
            if (dsa_union_tile_row(row, t0, h0, nh, rows, &t, &h)) {
                if (sink && l > 0) scale /= 1.f + expf((float)dsa_ld_any(sink, sink_dt, h) - lse_h);
                __nv_bfloat16 *orow = out + ((t * H) + h) * FWD3_DV + 256 * wg + 2 * c;
#pragma unroll
                for (int j = 0; j < 32; j++)
                    *(__nv_bfloat162 *)(orow + 8 * j) =
                        __floats2bfloat162_rn(o[4 * j + 2 * half] * scale, o[4 * j + 2 * half + 1] * scale);
                if (wg == 0 && c == 0) lse[t * H + h] = lse_h;
            }
        }
    }
};

// Shared-memory carve-up of both kernels, from the 1024-byte-aligned base (the swizzle pattern repeats
// every 1024 bytes: operand tiles start on 1024-byte boundaries).
struct fwd3_smem {
    __nv_bfloat16 *sq, *skv, *sp;  // Q [D/64][HB][64]; kv [2][D/64][BK][64]; P [HB][64]
    float *smax;                   // [2 wg][HB]
    int *rkeys;                    // [RING][BK]
    unsigned long long *rmask;     // [RING]
    unsigned long long *bars;      // v4: full[2], empty[2]
    __device__ __forceinline__ fwd3_smem(unsigned char *base, int D) {
        sq = (__nv_bfloat16 *)base;
        skv = sq + FWD3_HB * D;
        sp = skv + 2 * FWD3_BK * D;
        smax = (float *)(sp + FWD3_HB * FWD3_BK);
        rkeys = (int *)(smax + 2 * FWD3_HB);
        rmask = (unsigned long long *)(rkeys + FWD3_RING * FWD3_BK);
        bars = rmask + FWD3_RING;
    }
};

#define FWD3_ARGS                                                                                                   \
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,          \
        const int *__restrict__ topk_length, const void *sink, dsa_dtype sink_dt, __nv_bfloat16 *__restrict__ out, \
        float *__restrict__ lse, int H, int hbeg, int hend, int D, int64_t T, int64_t K, int64_t S_kv, float sigma, \
        unsigned v_lbo, unsigned v_sbo, int smem_slack, dsa_pick_union un, __nv_bfloat16 *__restrict__ hs_out,  \
        float *__restrict__ hs_scratch, int64_t hs_region

// This CTA's work: query row t, heads h0 .. h0 + nh - 1, tiles 0 .. nt - 1 (slots below k_end, the
// row's picks at `picks`). Merged (v5 with un.keys set, dsa_pick_union): the heads [hbeg, hend) of the
// `rows` query rows t .. t + rows - 1 of a group, over the group's union of picks (tile row m: query row
// t + m / nh, head h0 + m % nh; `row_bits` says which rows picked each entry).
struct fwd3_work {
    int64_t t, k_end;
    int h0, nh, nt, rows;
    const int *picks;
    const unsigned char *row_bits;  // NULL unless merged
    __device__ __forceinline__ fwd3_work(int hbeg, int hend, int64_t T, int64_t K, const int *idx, const int *topk_length,
                                         const dsa_pick_union &un) {
        const bool merged = un.keys != nullptr;
        int n_hb = merged ? 1 : (hend - hbeg + FWD3_HB - 1) / FWD3_HB;
        h0 = hbeg + (int)(blockIdx.x % n_hb) * FWD3_HB;
        nh = min(FWD3_HB, hend - h0);
        const int64_t grp = blockIdx.x / n_hb;
        t = merged ? grp * un.R : grp;
        rows = merged ? (int)min((int64_t)un.R, T - t) : 1;
        k_end = merged ? un.count[grp] : dsa_row_k_end(topk_length, t, K);
        picks = merged ? un.keys + grp * un.cap : idx + t * K;
        row_bits = merged ? un.rows + grp * un.cap : nullptr;
        nt = (int)((k_end + FWD3_BK - 1) / FWD3_BK);
    }
    // Queues (cp.async, not committed) the block's Q rows into the swizzled sq; zeros for padding rows.
    __device__ __forceinline__ void load_q(__nv_bfloat16 *sq, const __nv_bfloat16 *q, int H, int D) const {
        dsa_load_rows_sw128(sq, FWD3_HB, D, [&](int r) -> const __nv_bfloat16 * {
            int64_t tr;
            int hr;
            return dsa_union_tile_row(r, t, h0, nh, rows, &tr, &hr) ? q + ((tr * H) + hr) * D : nullptr;
        });
    }
    // The query rows (of the group) of tile rows row_lo and row_lo + 8, clamped below 8 (padding rows
    // have no valid slot anyway).
    __device__ __forceinline__ int2 group_rows(int row_lo) const {
        return make_int2(dsa_union_group_row(row_lo, nh), dsa_union_group_row(row_lo + 8, nh));
    }
    // The tile's entries that tile rows row_lo / row_lo + 8 take: all (one query row), or those their
    // query rows picked. For merged tiles below nt only (the row masks end there).
    __device__ __forceinline__ void tile_rows_valid(int tile, int c, int2 gr, unsigned long long *lo, unsigned long long *hi) const {
        *lo = *hi = ~0ull;
        if (row_bits && tile < nt) dsa_union_row_masks<8>(row_bits + (int64_t)tile * FWD3_BK, c, gr.x, gr.y, lo, hi);
    }
    // The warp-specialized kernels' start: Q loaded by the whole CTA and visible to wgmma, then a CTA
    // barrier (which also publishes the mbarriers thread 0 initialised before).
    __device__ __forceinline__ void load_q_sync(__nv_bfloat16 *sq, const __nv_bfloat16 *q, int H, int D) const {
        load_q(sq, q, H, D);
        dsa_cp_async_commit();
        dsa_cp_async_wait<0>();
        dsa_fence_proxy_async();  // Q -> visible to wgmma
        __syncthreads();
    }
    // The math of the calling thread's warpgroup, with zero running sums.
    __device__ __forceinline__ fwd3_math math(const fwd3_smem &sm, unsigned v_lbo, unsigned v_sbo, int D, float sigma) const {
        int lane = threadIdx.x & 31, row_lo = 16 * ((threadIdx.x >> 5) & 3) + (lane >> 2);
        return fwd3_math{sm.skv, sm.sp, sm.smax, dsa_smem_addr(sm.sq), dsa_smem_addr(sm.sp), v_lbo, v_sbo, D, dsa_warpgroup_index(),
                         row_lo, row_lo + 8, lane & 3, sigma * 1.44269504f, -INFINITY, -INFINITY, 0.f, 0.f};
    }
};

// v4: warp-specialized (384 threads). Warpgroups 0 and 1 do the math; warpgroup 2 gathers. Stage
// tile & 1 holds tile `tile`: full[st] completes (DSA_GATHER_FULL_ARRIVALS) when its rows have
// landed, empty[st] (256 math-thread arrivals) when P V of the tile it held is done. The gather
// warpgroup also publishes each tile's keys and valid mask (ring entry tile % 4) before filling it;
// full[st]'s release / acquire makes them visible to the math warpgroups.
__global__ void __launch_bounds__(384, 1) sparse_mqa_fwd_ws_kernel(FWD3_ARGS) {
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    fwd3_smem sm(dsa_smem_base1024(dsa_smem_raw, smem_slack), D);
    unsigned long long *full = sm.bars, *empty = sm.bars + 2;
    const fwd3_work w(hbeg, hend, T, K, idx, topk_length, un);
    const int nt = w.nt, tid = threadIdx.x;
    if (tid == 0) {
        for (int b = 0; b < 2; b++) {
            dsa_mbar_init(full + b, DSA_GATHER_FULL_ARRIVALS);
            dsa_mbar_init(empty + b, 256);
        }
    }
    w.load_q_sync(sm.sq, q, H, D);  // Q and the barriers are ready

    if (tid >= 256) {
        // Gather warpgroup: tiles 0 .. nt - 1 (at least one: with nt = 0 the math still reads a zero
        // tile 0), each into stage tile & 1 once the math has released that stage.
        dsa_setmaxnreg_dec<FWD4_REGS_GATHER>();
        dsa_slot_ring64 ring{sm.rkeys, sm.rmask, FWD3_RING, FWD3_BK, w.picks, w.k_end, S_kv};
        ring.produce<FWD3_BK>(max(nt, 1), sm.skv, FWD3_BK * D, kv, D, full, empty, tid - 256);
        return;
    }
    dsa_setmaxnreg_inc<FWD4_REGS_MATH>();
    float o[128], s[16];
#pragma unroll
    for (int j = 0; j < 128; j++) o[j] = 0.f;
    fwd3_math mt = w.math(sm, v_lbo, v_sbo, D, sigma);
    dsa_mbar_wait(full, 0);
    dsa_wgmma_fence();
    mt.issue_scores(s, 0);
    dsa_wgmma_wait<0>();
    for (int i = 0; i < nt; i++) {
        mt.softmax_to_p(s, o, sm.rmask[i % FWD3_RING]);
        dsa_fence_proxy_async();  // P -> visible to wgmma
        dsa_bar_sync(1, 256);     // P(i) is complete
        dsa_wgmma_fence();
        mt.issue_pv(o, i);
        // S(i + 1) waits for its tile while P(i) V(i) runs; issued unconditionally (a wgmma under a
        // branch the compiler cannot prove warpgroup-uniform is serialized): past the last tile it
        // reads a stage nobody writes any more and its result is unused.
        if (i + 1 < nt) dsa_mbar_wait(full + ((i + 1) & 1), ((i + 1) >> 1) & 1);
        mt.issue_scores(s, i + 1);
        dsa_wgmma_wait<1>();              // P(i) V(i) is done (S(i + 1) may still run)
        dsa_mbar_arrive(empty + (i & 1));  // this thread is done with tile i's stage and P(i)
        dsa_wgmma_wait<0>();
    }
    mt.finish(o, sink, sink_dt, out, lse, w.t, H, w.h0, w.nh, w.rows);
}

// ---- v5: the two math warpgroups take alternate tiles (D = 576) ---------------------------------------
// v4 keeps both math warpgroups in lock step on every tile (each half of S, a shared row max, P, P V),
// so the tensor cores idle while both run the softmax. v5 pairs the tiles instead: warpgroup 0 owns the
// even tile a = 2p (stage 0), warpgroup 1 the odd tile b = 2p + 1 (stage 1). Each computes the whole
// S of its tile (m64n64 over D: Q is read once a tile, not twice), its softmax, and P V of its own P
// from registers into its half of O (columns 256 wg ..), then P V of the other's P from shared memory.
// The order of one pair (M0, M1, P0, P1: mbarrier signals, one side arrives, the other waits):
//   wg 0: softmax(a) with m0 = max(m, rowmax a) -> M0; P(a) V(a)[:, :256] from registers; waits M1
//         (m1 = max(m0, rowmax b)); P(a) scaled by 2^(m0 - m1) -> shared (P0) -> P0; waits P1;
//         O *= 2^(m0 - m1); P(b) V(b)[:, :256]; S(next a) issued before that product is awaited.
//   wg 1: S(b); waits M0; softmax(b) against m1 -> M1; P(b) V(b)[:, 256:] from registers; P(b) ->
//         shared -> P1; waits P0; P(a) V(a)[:, 256:].
// So warpgroup 1's S and softmax run while warpgroup 0's products do, and the other way round. Each kv
// stage lands in two parts with their own mbarriers: L = column blocks 0-3 (V's first 256 columns),
// R = blocks 4-8 (V's last 256 and the rope part). A part is released by the warpgroup whose product
// reads it last (L by warpgroup 0, R by warpgroup 1), so the gather refills it while the other part is
// still in use. P(a) goes to stage 0's rope block (dead once S(a) is done); P(b) has its own buffer.
#define FWD5_NB 9    // 64-column blocks of D = 576
#define FWD5_NB_L 4  // of them in a stage's L part
// The signals between the math warpgroups (mbarriers of 128 arrivals, one phase a pair).
#define FWD5_SIG_M0 0  // m0 is in (wg 0 -> 1)
#define FWD5_SIG_M1 1  // m1 is in (wg 1 -> 0)
#define FWD5_SIG_P0 2  // P(a) is in (wg 0 -> 1)
#define FWD5_SIG_P1 3  // P(b) is in (wg 1 -> 0)

static size_t fwd5_tile_bytes(int64_t D) { return fwd3_tile_bytes(D) + 8 * 8; }  // 12 mbarriers instead of 4

// What the kernel the launcher picks for D needs (v5 for D = 576 by default, else v4), for the dispatchers.
size_t dsa_fwd3_smem_bytes(int64_t D) { return D == 576 ? fwd5_tile_bytes(D) : fwd3_tile_bytes(D); }

// v4's carve-up: sp holds P(b), smax m0 (wg 0 -> 1) and m1 (wg 1 -> 0), then the row sums at the end;
// bars: ready[stage][part], free[stage][part] (part 0 = L, 1 = R), the 4 signals.
struct fwd5_smem : fwd3_smem {
    using fwd3_smem::fwd3_smem;
    __device__ __forceinline__ unsigned long long *ready(int st, int part) const { return bars + 2 * st + part; }
    __device__ __forceinline__ unsigned long long *freed(int st, int part) const { return bars + 4 + 2 * st + part; }
    __device__ __forceinline__ unsigned long long *sig(int k) const { return bars + 8 + k; }
};

// One math warpgroup's softmax state and the pieces both roles share.
struct fwd5_math {
    int wg, row_lo, row_hi, c;
    float sigma2, m_lo, m_hi, l_lo, l_hi;
    // Masks S (slots invalid for the row -> -inf) and scales it to log2 units in place; returns the row maxima.
    __device__ __forceinline__ void mask_scale(float *s, unsigned long long valid_lo, unsigned long long valid_hi, float &mx_lo,
                                               float &mx_hi) const {
        fwd_mask_scale<8>(s, s, valid_lo, valid_hi, c, sigma2, mx_lo, mx_hi);
    }
    // P = 2^(s - new max) in place (fp32) and as the A fragments of P V (bf16 pairs); the row sums join
    // l after its rescale; returns the factors O must be rescaled by (see fwd_new_max).
    __device__ __forceinline__ float2 exponentiate(float *s, unsigned *pa, float mn_lo, float mn_hi) {
        float al_lo, al_hi;
        const float ref_lo = fwd_new_max(m_lo, mn_lo, al_lo), ref_hi = fwd_new_max(m_hi, mn_hi, al_hi);
        float ps_lo = 0.f, ps_hi = 0.f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            s[4 * j] = dsa_exp2(s[4 * j] - ref_lo);
            s[4 * j + 1] = dsa_exp2(s[4 * j + 1] - ref_lo);
            s[4 * j + 2] = dsa_exp2(s[4 * j + 2] - ref_hi);
            s[4 * j + 3] = dsa_exp2(s[4 * j + 3] - ref_hi);
            ps_lo += s[4 * j] + s[4 * j + 1];
            ps_hi += s[4 * j + 2] + s[4 * j + 3];
            // k16 step j / 2: a[0] (row lo, k 2c), a[1] (row hi), a[2] / a[3] the same at k + 8 (odd j).
            pa[4 * (j >> 1) + 2 * (j & 1)] = dsa_pack_f32x2(s[4 * j], s[4 * j + 1]);
            pa[4 * (j >> 1) + 2 * (j & 1) + 1] = dsa_pack_f32x2(s[4 * j + 2], s[4 * j + 3]);
        }
        l_lo = l_lo * al_lo + ps_lo;
        l_hi = l_hi * al_hi + ps_hi;
        return make_float2(al_lo, al_hi);
    }
    // O *= f per row, skipped when no row of the warp changed (f = 1 exactly).
    __device__ __forceinline__ void rescale(float *o, float2 f) const {
        if (__any_sync(0xffffffffu, f.x != 1.f || f.y != 1.f))
#pragma unroll
            for (int j = 0; j < 32; j++) {
                o[4 * j] *= f.x;
                o[4 * j + 1] *= f.x;
                o[4 * j + 2] *= f.y;
                o[4 * j + 3] *= f.y;
            }
    }
    // Fused head sum: the masked, scaled scores of this thread's two rows (tile rows below n_rows; the
    // rest are padding) into the CTA's [64 rows][64 slots] fp32 tile `scr`, for the epilogue. Streaming
    // stores (evict-first in the L2), so that the scratch does not push the gathered kv rows out.
    __device__ __forceinline__ void store_scores(float *scr, const float *s, int n_rows) const {
        if (row_lo < n_rows)
#pragma unroll
            for (int j = 0; j < 8; j++) __stcs((float2 *)(scr + row_lo * 64 + 8 * j + 2 * c), make_float2(s[4 * j], s[4 * j + 1]));
        if (row_hi < n_rows)
#pragma unroll
            for (int j = 0; j < 8; j++) __stcs((float2 *)(scr + row_hi * 64 + 8 * j + 2 * c), make_float2(s[4 * j + 2], s[4 * j + 3]));
    }
    // This warpgroup's P (fp32 s times f per row) as bf16 into the swizzled [HB][64] tile sp.
    __device__ __forceinline__ void store_p(__nv_bfloat16 *sp, const float *s, float f_lo, float f_hi) const {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            *(unsigned *)(sp + dsa_sw128(row_lo, 8 * j + 2 * c, FWD3_HB)) = dsa_pack_f32x2(s[4 * j] * f_lo, s[4 * j + 1] * f_lo);
            *(unsigned *)(sp + dsa_sw128(row_hi, 8 * j + 2 * c, FWD3_HB)) = dsa_pack_f32x2(s[4 * j + 2] * f_hi, s[4 * j + 3] * f_hi);
        }
    }
};

// O[:, 256 wg ..] += P V over a 64-slot tile: P from registers (pa) or from the swizzled tile at p_addr
// (pa == NULL), V = column blocks 4 wg .. of the stage at v_addr. Issued and committed.
__device__ __forceinline__ void fwd5_issue_pv(float *o, const unsigned *pa, unsigned p_addr, unsigned v_addr, int wg, unsigned v_lbo,
                                              unsigned v_sbo) {
    const unsigned long long dv = dsa_wgmma_desc(v_addr + (FWD5_NB_L * wg) * FWD3_BK * 128, v_lbo, v_sbo);
    if (pa) {
#pragma unroll
        for (int kk = 0; kk < FWD3_BK / 16; kk++) dsa_wgmma_m64n256k16_rs(o, pa + 4 * kk, dv + kk * (16 * 128 / 16), 1);
    } else {
        const unsigned long long dp = dsa_wgmma_desc(p_addr, 16, 1024);
#pragma unroll
        for (int kk = 0; kk < FWD3_BK / 16; kk++) dsa_wgmma_m64n256k16(o, dp + 2 * kk, dv + kk * (16 * 128 / 16), 1);
    }
    dsa_wgmma_commit();
}

// ---- the score head sums fused into v5 (HS) ---------------------------------------------------------
// dsa_attn_score_headsum's sum_h exp(sigma S[t, h, j] - lse[t, h]) needs the final lse, known only after
// the last tile. The loop stores each tile's masked scores (log2 units, fp32) into a scratch region of
// its SM (one CTA an SM at a time: the launcher checks the occupancy), 64 x 64 floats a tile; the
// epilogue reads them back and sums the heads. This replaces the separate head-sum kernel's second
// gather of every picked kv row. One row a CTA (every head of it: H <= 64), never merged groups: at
// H 12, K 512 their union's scratch (48 rows x up to 2048 entries an SM, 69 MB) outgrows the L2, and
// the fused merged kernel took 2.47-2.96 ms against 1.38 + 0.98 for the merged forward and the
// separate head sum; the one-row fused kernel 1.48 against 1.21 + 0.98 (T 8192, H200, session 22).
__device__ __forceinline__ int dsa_smid() {
    unsigned id;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
    return (int)id;
}

// The row's slots past k_end (the epilogue writes the others), zeroed first.
__device__ __forceinline__ void fwd5_headsum_zero(__nv_bfloat16 *hs_out, const fwd3_work &w, int64_t K) {
    for (int64_t j = w.k_end + threadIdx.x; j < K; j += blockDim.x) hs_out[w.t * K + j] = __float2bfloat16(0.f);
}

// The epilogue (the 256 math threads, after finish): lse per head (log2 units, +inf for a head without
// valid slots) into sl, then for each slot j < k_end the sum over heads of 2^(s - lse) (invalid slots
// hold s = -inf: 0). Consecutive threads take consecutive slots (every head's read is one coalesced
// row of a score tile); each thread issues the loads of up to 16 heads of two slots before it uses them.
#define FWD5_HS_UNROLL 16
__device__ __forceinline__ float fwd5_headsum_slot(const float *x, const float *l, int nh) {
    float xs[FWD5_HS_UNROLL];
#pragma unroll
    for (int h = 0; h < FWD5_HS_UNROLL; h++) xs[h] = h < nh ? __ldcs(x + h * 64) : -INFINITY;
    float v = 0.f;
#pragma unroll
    for (int h = 0; h < FWD5_HS_UNROLL; h++) v += h < nh ? dsa_exp2(xs[h] - l[h]) : 0.f;
    for (int h = FWD5_HS_UNROLL; h < nh; h++) v += dsa_exp2(__ldcs(x + h * 64) - l[h]);
    return v;
}
__device__ __forceinline__ void fwd5_headsum(const fwd3_math &fin, float *sl, const float *scr, const fwd3_work &w,
                                             __nv_bfloat16 *hs_out, int64_t K) {
    if (fin.wg == 0 && fin.c == 0) {
        sl[fin.row_lo] = fin.l_lo > 0 ? fin.m_lo + log2f(fin.l_lo) : INFINITY;
        sl[fin.row_hi] = fin.l_hi > 0 ? fin.m_hi + log2f(fin.l_hi) : INFINITY;
    }
    dsa_bar_sync(1, 256);  // sl and every warp's score tiles are in
    const int ne = (int)w.k_end, nh = w.nh;
    __nv_bfloat16 *row = hs_out + w.t * K;
    for (int j = threadIdx.x; j < ne; j += 512) {  // two slots a thread in flight
        const float v0 = fwd5_headsum_slot(scr + (j >> 6) * 4096 + (j & 63), sl, nh);
        const int j1 = j + 256;
        const float v1 = j1 < ne ? fwd5_headsum_slot(scr + (j1 >> 6) * 4096 + (j1 & 63), sl, nh) : 0.f;
        row[j] = __float2bfloat16(v0);
        if (j1 < ne) row[j1] = __float2bfloat16(v1);
    }
}

// ASYNC_ARRIVE (the default; DSA_SPARSE_FWD_V5_SYNC=1 turns it off): each gather thread signals a
// part's mbarrier by cp.async.mbarrier.arrive (zero rows by zero-filling copies) and goes on to the next
// part at once, instead of waiting for its copies and fencing; two parts can be in flight (the next
// pair's a R and b L both wait on the end of a pair). The pattern of FlashMLA's SM90 gather. H200,
// T 4096, H 128: 573 against 549 TFLOP/s with the unrolled part copies; with session 15's generic copy
// loop it lost (333 against 363), its issue cost then hid the overlap.
// MERGED (un.keys set): groups of rows over the union of their picks, each tile row's slots masked by its
// row's bits. A template flag, not a runtime one: the per-row masks kept live through the loop cost the
// one-row kernel 18% at H 64 (T 4096: 459 against 558 TFLOP/s, H200, session 20 call 3).
// HS: the score head sums fused in (one row a CTA only: fwd5_headsum above).
template <bool ASYNC_ARRIVE, bool MERGED, bool HS>
__global__ void __launch_bounds__(384, 1) sparse_mqa_fwd_pair_kernel(FWD3_ARGS) {
    static_assert(!(HS && MERGED), "the fused head sum takes one row a CTA");
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    fwd5_smem sm(dsa_smem_base1024(dsa_smem_raw, smem_slack), D);
    const fwd3_work w(hbeg, hend, T, K, idx, topk_length, un);
    const int np = max(1, (w.nt + 1) / 2), tid = threadIdx.x;
    float *scr = nullptr;  // HS: this SM's score tiles
    if (HS) {
        scr = hs_scratch + (int64_t)dsa_smid() * hs_region;
        fwd5_headsum_zero(hs_out, w, K);  // ordered before the epilogue's writes by load_q_sync's barrier
    }
    if (tid == 0) {
        for (int b = 0; b < 4; b++) {
            dsa_mbar_init(sm.bars + b, ASYNC_ARRIVE ? DSA_GATHER_FULL_ARRIVALS : 128);  // ready: the gather warpgroup
            dsa_mbar_init(sm.bars + 4 + b, 128);  // free: the math warpgroup that reads the part last
            dsa_mbar_init(sm.bars + 8 + b, 128);  // the signals: the sending math warpgroup
        }
    }
    w.load_q_sync(sm.sq, q, H, D);  // Q and the barriers are ready

    if (tid >= 256) {
        dsa_setmaxnreg_dec<FWD4_REGS_GATHER>();
        dsa_slot_ring64 ring{sm.rkeys, sm.rmask, FWD3_RING, FWD3_BK, w.picks, w.k_end, S_kv};
        // Gather warpgroup, all 128 threads on one part after the other: per pair a's L part, b's
        // R part, a's R part, b's L part (the order the math needs them), each once the previous
        // pair has released it. Tiles past the row's end are zero rows with an empty mask. (Two
        // halves of 64 threads, one per stage, so that two parts load at once, measured slower:
        // 303.6 against 362.1 TFLOP/s, session 15 call 4.)
        const int ptid = tid - 256;
        int2 pre_a = make_int2(-1, -1), pre_b = pre_a;
        if (ptid < 32) {
            pre_a = ring.raw(0);
            pre_b = ring.raw(1);
        }
        for (int p = 0; p < np; p++) {
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const int st = k & 1, pt = (k ^ (k >> 1)) & 1;  // (0, L), (1, R), (0, R), (1, L)
                if (p > 0) dsa_mbar_wait(sm.freed(st, pt), (p - 1) & 1);
                if (k == 0) {
                    // The pair's ring entries held pair p - 2, whose masks the math read before it
                    // released pair p - 1's parts.
                    if (ptid < 32) {
                        ring.publish(2 * p, pre_a);
                        ring.publish(2 * p + 1, pre_b);
                        pre_a = ring.raw(2 * p + 2);
                        pre_b = ring.raw(2 * p + 3);
                    }
                    dsa_bar_sync(2, 128);  // the pair's keys are published
                }
                __nv_bfloat16 *stage = sm.skv + st * FWD3_BK * D;
                if (pt) dsa_gather_blocks_sw128<FWD3_BK, FWD5_NB, FWD5_NB_L, FWD5_NB>(stage, ring.shared_keys(2 * p + st), kv, ptid);
                else dsa_gather_blocks_sw128<FWD3_BK, FWD5_NB, 0, FWD5_NB_L>(stage, ring.shared_keys(2 * p + st), kv, ptid);
                if (ASYNC_ARRIVE) {
                    if (ptid == 0) dsa_mbar_arrive(sm.ready(st, pt));  // releases the pair's published masks
                    dsa_cp_async_mbar_arrive(sm.ready(st, pt));
                } else {
                    dsa_cp_async_commit();
                    dsa_cp_async_wait<0>();
                    dsa_fence_proxy_async();  // this thread's rows -> visible to wgmma
                    dsa_mbar_arrive(sm.ready(st, pt));
                }
            }
        }
        return;
    }
    dsa_setmaxnreg_inc<FWD4_REGS_MATH>();
    const int wg = dsa_warpgroup_index(), lane = tid & 31, row_lo = 16 * ((tid >> 5) & 3) + (lane >> 2);
    fwd5_math mt{wg, row_lo, row_lo + 8, lane & 3, sigma * 1.44269504f, -INFINITY, -INFINITY, 0.f, 0.f};
    const unsigned q_base = dsa_smem_addr(sm.sq), st0 = dsa_smem_addr(sm.skv), st1 = st0 + FWD3_BK * D * 2;
    const unsigned p0 = st0 + (FWD5_NB - 1) * FWD3_BK * 128, p1 = dsa_smem_addr(sm.sp);
    __nv_bfloat16 *sp0 = sm.skv + (FWD5_NB - 1) * FWD3_BK * 64;  // stage 0's rope block
    float o[128], s[32];
    unsigned pa[16];
#pragma unroll
    for (int j = 0; j < 128; j++) o[j] = 0.f;
    // Merged groups: the entries this thread's two tile rows take, loaded a tile ahead of their use.
    const int2 gr = w.group_rows(row_lo);
    unsigned long long rv_lo = ~0ull, rv_hi = ~0ull;
    if (wg == 0) {
        if (MERGED) w.tile_rows_valid(0, mt.c, gr, &rv_lo, &rv_hi);
        dsa_mbar_wait(sm.ready(0, 0), 0);
        dsa_wgmma_fence();
        dsa_wgmma_scores_m64n64<0, FWD5_NB_L, true>(s, q_base, st0);
        dsa_mbar_wait(sm.ready(0, 1), 0);
        dsa_wgmma_scores_m64n64<FWD5_NB_L, FWD5_NB, false>(s, q_base, st0);
        dsa_wgmma_commit();
        dsa_wgmma_wait<0>();
        for (int p = 0; p < np; p++) {
            float mx_lo, mx_hi;
            const unsigned long long va = sm.rmask[(2 * p) % FWD3_RING];
            mt.mask_scale(s, va & rv_lo, va & rv_hi, mx_lo, mx_hi);
            const float m0_lo = fmaxf(mt.m_lo, mx_lo), m0_hi = fmaxf(mt.m_hi, mx_hi);
            if (mt.c == 0) {
                sm.smax[row_lo] = m0_lo;
                sm.smax[row_lo + 8] = m0_hi;
            }
            dsa_mbar_arrive(sm.sig(FWD5_SIG_M0));
            if (HS && 2 * p < w.nt) mt.store_scores(scr + (int64_t)(2 * p) * 4096, s, w.nh);  // after the signal
            mt.rescale(o, mt.exponentiate(s, pa, m0_lo, m0_hi));
            dsa_wgmma_fence();
            fwd5_issue_pv(o, pa, 0, st0, 0, v_lbo, v_sbo);  // P(a) V(a), P from registers
            dsa_wgmma_wait<0>();
            dsa_mbar_arrive(sm.freed(0, 0));
            dsa_mbar_wait(sm.sig(FWD5_SIG_M1), p & 1);  // m1 = the pair's max
            const float m1_lo = sm.smax[FWD3_HB + row_lo], m1_hi = sm.smax[FWD3_HB + row_lo + 8];
            const float f_lo = dsa_exp2(m0_lo - (m1_lo == -INFINITY ? 0.f : m1_lo));
            const float f_hi = dsa_exp2(m0_hi - (m1_hi == -INFINITY ? 0.f : m1_hi));
            mt.m_lo = m1_lo;
            mt.m_hi = m1_hi;
            mt.l_lo *= f_lo;
            mt.l_hi *= f_hi;
            mt.store_p(sp0, s, f_lo, f_hi);
            dsa_fence_proxy_async();  // P(a) -> visible to warpgroup 1's wgmma
            dsa_mbar_arrive(sm.sig(FWD5_SIG_P0));
            dsa_mbar_wait(sm.sig(FWD5_SIG_P1), p & 1);  // P(b) is in
            mt.rescale(o, make_float2(f_lo, f_hi));
            dsa_wgmma_fence();
            fwd5_issue_pv(o, NULL, p1, st1, 0, v_lbo, v_sbo);  // P(b) V(b)
            // S of the next a, issued unconditionally (a wgmma under a data-dependent branch is
            // serialized); after the last pair it reads a stale stage and its result is unused.
            const bool more = p + 1 < np;
            if (MERGED) w.tile_rows_valid(2 * p + 2, mt.c, gr, &rv_lo, &rv_hi);
            if (more) dsa_mbar_wait(sm.ready(0, 0), (p + 1) & 1);
            dsa_wgmma_scores_m64n64<0, FWD5_NB_L, true>(s, q_base, st0);
            dsa_wgmma_commit();
            dsa_wgmma_wait<1>();  // P(b) V(b) is done
            dsa_mbar_arrive(sm.freed(1, 0));
            if (more) dsa_mbar_wait(sm.ready(0, 1), (p + 1) & 1);
            dsa_wgmma_scores_m64n64<FWD5_NB_L, FWD5_NB, false>(s, q_base, st0);
            dsa_wgmma_commit();
            dsa_wgmma_wait<0>();
        }
    } else {
        for (int p = 0; p < np; p++) {
            if (MERGED) w.tile_rows_valid(2 * p + 1, mt.c, gr, &rv_lo, &rv_hi);
            dsa_mbar_wait(sm.ready(1, 1), p & 1);
            dsa_wgmma_fence();
            dsa_wgmma_scores_m64n64<FWD5_NB_L, FWD5_NB, true>(s, q_base, st1);
            dsa_mbar_wait(sm.ready(1, 0), p & 1);
            dsa_wgmma_scores_m64n64<0, FWD5_NB_L, false>(s, q_base, st1);
            dsa_wgmma_commit();
            dsa_wgmma_wait<0>();
            float mx_lo, mx_hi;
            const unsigned long long vb = sm.rmask[(2 * p + 1) % FWD3_RING];
            mt.mask_scale(s, vb & rv_lo, vb & rv_hi, mx_lo, mx_hi);
            dsa_mbar_wait(sm.sig(FWD5_SIG_M0), p & 1);  // m0 (>= the running max) is in
            const float m1_lo = fmaxf(sm.smax[row_lo], mx_lo), m1_hi = fmaxf(sm.smax[row_lo + 8], mx_hi);
            if (mt.c == 0) {
                sm.smax[FWD3_HB + row_lo] = m1_lo;
                sm.smax[FWD3_HB + row_lo + 8] = m1_hi;
            }
            dsa_mbar_arrive(sm.sig(FWD5_SIG_M1));
            if (HS && 2 * p + 1 < w.nt) mt.store_scores(scr + (int64_t)(2 * p + 1) * 4096, s, w.nh);
            mt.rescale(o, mt.exponentiate(s, pa, m1_lo, m1_hi));
            dsa_wgmma_fence();
            fwd5_issue_pv(o, pa, 0, st1, 1, v_lbo, v_sbo);  // P(b) V(b), P from registers
            mt.store_p(sm.sp, s, 1.f, 1.f);
            dsa_fence_proxy_async();  // P(b) -> visible to warpgroup 0's wgmma
            dsa_mbar_arrive(sm.sig(FWD5_SIG_P1));
            dsa_mbar_wait(sm.sig(FWD5_SIG_P0), p & 1);  // P(a), scaled to m1, is in
            fwd5_issue_pv(o, NULL, p0, st0, 1, v_lbo, v_sbo);  // P(a) V(a)
            dsa_wgmma_wait<1>();
            dsa_mbar_arrive(sm.freed(1, 1));
            dsa_wgmma_wait<0>();
            dsa_mbar_arrive(sm.freed(0, 1));
        }
    }
    // Row sums over both warpgroups, out and lse: v4's epilogue (its row-max buffer is sm here).
    fwd3_math fin{nullptr, nullptr, sm.smax, 0, 0, 0, 0, D, wg, row_lo, row_lo + 8, lane & 3, 0.f, mt.m_lo, mt.m_hi, mt.l_lo, mt.l_hi};
    fin.finish(o, sink, sink_dt, out, lse, w.t, H, w.h0, w.nh, w.rows);
    if (HS) fwd5_headsum(fin, (float *)sm.sp, scr, w, hs_out, K);
}

// The largest SM id + 1 (%nsmid: ids need not be contiguous), asked once: the fused head sum's
// scratch has a region per SM id.
__global__ void fwd5_nsmid_kernel(int *n) {
    unsigned v;
    asm volatile("mov.u32 %0, %%nsmid;" : "=r"(v));
    *n = (int)v;
}
static dsa_status fwd5_nsmid(int *n) {
    static int cached = 0;
    if (cached == 0) {
        int *d = NULL;
        DSA_TRY(dsa_device_malloc(DSA_CUDA, sizeof(int), (void **)&d));
        fwd5_nsmid_kernel<<<1, 1, 0, dsa_stream()>>>(d);
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess) e = cudaMemcpyAsync(&cached, d, sizeof(int), cudaMemcpyDeviceToHost, dsa_stream());
        if (e == cudaSuccess) e = cudaStreamSynchronize(dsa_stream());
        dsa_device_free(DSA_CUDA, d);
        if (e != cudaSuccess) {
            cached = 0;
            return dsa_error_set(DSA_ERR_CUDA, "sparse_mqa_fwd_wgmma: %%nsmid query failed: %s", cudaGetErrorString(e));
        }
    }
    *n = cached;
    return DSA_OK;
}

// The v5 instantiation for the launch's gather signalling (ASYNC_ARRIVE), merging and fused head sum.
template <bool MERGED, bool HS>
static auto fwd5_kernel(bool async_arrive) {
    return async_arrive ? sparse_mqa_fwd_pair_kernel<true, MERGED, HS> : sparse_mqa_fwd_pair_kernel<false, MERGED, HS>;
}

// Called by the forward dispatcher (dsa_sparse_fwd_cuda.cu) for bf16, Dv = 512, D % 64 == 0, D <= 576,
// on an sm_90 GPU when the shared memory fits. hs (bf16 [T, K], or NULL): the score head sums
// (dsa_attn_score_headsum with this forward's lse), fused in when the kernel can (v5, every head in one
// CTA: h0 = 0, h1 = H <= 64; DSA_FWD_HEADSUM=0 turns it off); *fused says whether it did.
dsa_status dsa_sparse_mqa_fwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                         int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse, dsa_tensor *hs,
                                         bool *fused) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0];
    if (fused) *fused = false;
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    size_t optin = 0;
    DSA_TRY(dsa_smem_optin(&optin));
    // v5 (paired tiles) for D = 576 (P(a) takes the rope block of its stage, so V's 512 columns must
    // leave one), else v4 (warp-specialized); DSA_SPARSE_FWD_V4=1 keeps v4 for D = 576 too.
    static int v4 = -1;
    if (v4 < 0) v4 = dsa_env_flag("DSA_SPARSE_FWD_V4");
    const bool pair = !v4 && D == 576;
    size_t smem = pair ? fwd5_tile_bytes(D) : fwd3_tile_bytes(D);
    int slack = dsa_smem_slack(smem, optin);  // (a launch that does not fit fails in dsa_smem_setup, with its size)
    smem += (size_t)slack;
    static int async_arrive = -1;  // DSA_SPARSE_FWD_V5_SYNC=1: the gather threads wait for their copies
    if (async_arrive < 0) async_arrive = !dsa_env_flag("DSA_SPARSE_FWD_V5_SYNC");
    static int hs_on = -1;
    if (hs_on < 0) hs_on = dsa_env_int("DSA_FWD_HEADSUM", 1) != 0;
    bool with_hs = hs && hs_on && pair && h0 == 0 && h1 == H && H <= FWD3_HB && K > 0;
    // The fused head sum's scratch has a region per SM id, reused by the CTAs that SM runs one after the
    // other: only with one resident CTA an SM (asked once; the kernel and its shared memory are fixed).
    static int hs_fits = -1;
    if (with_hs && hs_fits < 0) {
        auto k = fwd5_kernel<false, true>(async_arrive);
        DSA_TRY(dsa_smem_setup(k, smem, "dsa_sparse_mqa fwd (wgmma v5)"));
        int per_sm = 0, nsmid = 0;
        CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, 384, smem));
        DSA_TRY(fwd5_nsmid(&nsmid));
        hs_fits = per_sm == 1 && nsmid > 0;
    }
    with_hs = with_hs && hs_fits == 1;
    // Descriptor strides of the MN-major V operand (bytes): next 64-column block (a block is BK rows
    // of 128 bytes), next 8 keys (one 1024-byte swizzle atom). Checked against a host matmul by a
    // probe on the H200 (the other three combinations of 1024 / 8192 give wrong products).
    const unsigned v_lbo = FWD3_BK * 128, v_sbo = 1024;
    // Few heads (v5): groups of neighbouring rows in one tile, over the union of their picks
    // (DSA_SPARSE_FWD_ROWS, default 4; 1 turns it off). Not with the fused head sum (one row a CTA).
    static int want = -1;
    if (want < 0) want = dsa_env_int("DSA_SPARSE_FWD_ROWS", 4);
    dsa_pick_union un;
    int R = 1;
    DSA_TRY(dsa_pick_union_prepare(pair && !with_hs ? want : 1, h1 - h0, idx, topk_length, S, false, &un, &R));
    auto kern = !pair ? sparse_mqa_fwd_ws_kernel
                : R >= 2 ? fwd5_kernel<true, false>(async_arrive)
                : with_hs ? fwd5_kernel<false, true>(async_arrive)
                          : fwd5_kernel<false, false>(async_arrive);
    DSA_TRY(dsa_smem_setup(kern, smem,
                           pair ? "dsa_sparse_mqa fwd (wgmma v5)" : "dsa_sparse_mqa fwd (wgmma v4)"));
    // The fused head sum's scratch: 64 tile rows x K (rounded up to a tile) fp32 per SM id.
    static dsa_scratch hs_scr = {NULL, 0};
    int64_t hs_region = 0;
    if (with_hs) {
        int nsmid = 0;
        DSA_TRY(fwd5_nsmid(&nsmid));
        hs_region = 64 * ((K + FWD3_BK - 1) / FWD3_BK * FWD3_BK);
        DSA_TRY(dsa_scratch_reserve(&hs_scr, (size_t)nsmid * (size_t)hs_region * sizeof(float)));
    }
    int64_t n_ctas = R >= 2 ? (T_ + R - 1) / R : T_ * ((h1 - h0 + FWD3_HB - 1) / FWD3_HB);
    kern<<<(unsigned)n_ctas, 384, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (__nv_bfloat16 *)out->data, (float *)lse->data, (int)H, (int)h0, (int)h1, (int)D, T_, K, S, (float)sigma, v_lbo, v_sbo,
        slack, un, with_hs ? (__nv_bfloat16 *)hs->data : NULL, with_hs ? (float *)hs_scr.p : NULL, hs_region);
    CUDA_LAUNCH_CHECK("sparse_mqa_fwd_wgmma");
    if (fused) *fused = with_hs;
    return DSA_OK;
}
