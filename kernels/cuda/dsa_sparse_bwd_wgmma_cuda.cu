// Sparse MQA attention backward, wgmma kernel v3 (sm_90a): dq, dkv (fp32 atomics) and dsink for bf16
// q / kv / out, fp32 dout, D = 576, Dv = 512. One CTA per (query row t, block of 64 heads), 384
// threads: math warpgroups 0 and 1, gather warpgroup 2. Per tile of 64 slots (kv rows gathered into
// one swizzled stage by the gather warpgroup, dsa_slot_ring64::produce with one stage):
//   1. S = Q K^T and dP = dO V^T: warpgroup w takes slots 32w .. 32w+31 (m64n32k16 over D and Dv, both
//      operands K-major in shared memory); P = exp(sigma S - log Z) and sigma dS = sigma P (dP - Delta)
//      go to shared memory as bf16 ([head][slot], one 64-column swizzled block each).
//   2. dq (64 heads x D, fp32 registers across tiles) += (sigma dS) K_tile: A = dS (K-major), B = the
//      kv stage read MN-major (as V in the forward). Warpgroup 0 owns columns 0 .. 319 (m64n256 +
//      m64n64: 160 accumulators a thread), warpgroup 1 columns 320 .. 575 (m64n256). Then the stage is
//      released: the gather of the next tile runs beside step 3.
//   3. dkv[slot, chunk of 64 columns] = (sigma dS)^T Q + P^T dO (the second term below Dv): A = dS^T
//      and P^T (the same tiles read MN-major), B = Q and dO read MN-major; m64n64k16 over the 64 heads.
//      Warpgroup 0 takes chunks 0-3, warpgroup 1 chunks 4-8 (8 has no dO term): with step 2 both do
//      52 m64n64k16-equivalents a tile. The chunk's rows leave by float4 atomics in whole 128-byte
//      lines (RED below; lane pairs swapping halves, as in v2, until session 26).
// Why: v2 (mma.sync) loads every operand fragment per warp through ldmatrix; ncu at T 4096, H 64 showed
// its shared-memory pipe (L1/TEX 76%) and the short-scoreboard stalls on those loads as the limit
// (tensor pipe 30% active, session 17). wgmma reads each operand tile once per warpgroup.
// Shared memory: Q 72 KiB, dO 64 KiB, one kv stage 72 KiB, P and dS 8 KiB each (the whole opt-in
// window of an H100 / H200 but 1.5 KiB), hence one stage: the gather of tile i + 1 overlaps tile i's
// dkv step only.
// Measured (H200, session 17): 290.4 TFLOP/s at T 4096, H 64 (v2: 189.2), 83% of the reduction floor
// of its dkv bytes (dsa bench's red_f32x4_576 ceiling): the atomics, not the math, bound it. The
// compiler waits after each of step 2's wgmmas (warpgroup 0's m64n64 sits under a warpgroup branch);
// issuing them without the branch, together with forming each chunk's atomics first, ran slower
// (277.8 TFLOP/s, a436ca6, reverted). Session 27: the dkv rows in whole lines (4 rows a warp instruction
// instead of 32-byte sectors of 16) took it to 346.3 TFLOP/s (T 4096, H 64) and 4.79 -> 4.16 ms at T 8192,
// H 12, K 512: the atomics' access pattern, not their byte count, had bound it.
// Numerics as v2: fp32 S, dP, dq and dkv accumulation; P and dS rounded to bf16 as operands; Delta from
// the fp32 dout, dO rounded to bf16.
// Merged rows (session 20; H <= 32, DSA_SPARSE_BWD_ROWS): a CTA takes a group of R neighbouring query
// rows (4 unless the switch asks for more, at most 64 / H and 8), tile row m = head m % nh of row m / nh,
// over the union of the group's picks (dsa_pick_union.h): P and dS of a tile row are masked by whether
// its row picked the entry, and the dkv row of an entry several rows picked gets one set of atomics. small.cfg (H 12, K 512, H200): 56.44
// -> 47.24 ms a step.
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_pick_union.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define BWD3_HB 64
#define BWD3_BK 64
#define BWD3_D 576
#define BWD3_DV 512
#define BWD3_RING 4
#define BWD3_RED_LINES 0    // dkv's reduction modes (the kernel's RED)
#define BWD3_RED_SECTORS 1
#define BWD3_RED_BULK 2
// Register split (launched at 168 a thread, as forward v4): dq takes 160 accumulators in warpgroup 0.
#define BWD3_REGS_GATHER 40
#define BWD3_REGS_MATH 232
static_assert(128 * BWD3_REGS_GATHER + 256 * BWD3_REGS_MATH <= 384 * 168, "v3 register split exceeds the launch budget");

// Bytes past the 1024-byte-aligned start: Q, dO, the kv stage, dS, P, Delta and log Z, the key ring and
// its masks, two mbarriers.
static size_t bwd3_tile_bytes() {
    return 2 * ((size_t)BWD3_HB * BWD3_D + (size_t)BWD3_HB * BWD3_DV + (size_t)BWD3_BK * BWD3_D + 2 * (size_t)BWD3_HB * BWD3_BK) +
           4 * 2 * BWD3_HB + 4 * BWD3_RING * BWD3_BK + 8 * BWD3_RING + 8 * 2;
}

struct bwd3_smem {
    __nv_bfloat16 *sq, *sdo, *skv, *sds, *sp;  // [9][64][64], [8][64][64], [9][64][64], [64][64], [64][64]
    float *sdelta, *slogz;                     // [64] each
    int *rkeys;                                // [RING][BK]
    unsigned long long *rmask, *bars;          // [RING]; full, empty
    __device__ __forceinline__ bwd3_smem(unsigned char *base) {
        sq = (__nv_bfloat16 *)base;
        sdo = sq + BWD3_HB * BWD3_D;
        skv = sdo + BWD3_HB * BWD3_DV;
        sds = skv + BWD3_BK * BWD3_D;
        sp = sds + BWD3_HB * BWD3_BK;
        sdelta = (float *)(sp + BWD3_HB * BWD3_BK);
        slogz = sdelta + BWD3_HB;
        rkeys = (int *)(slogz + BWD3_HB);
        rmask = (unsigned long long *)(rkeys + BWD3_RING * BWD3_BK);
        bars = rmask + BWD3_RING;
    }
};

// P and sigma dS of this thread's S / dP fragment (m64n32: head rows row_lo / row_hi, slots 32 wg + 8j + 2c + e)
// into the swizzled [head][slot] tiles; P = dS = 0 at slots the row does not take (bit clear in mk_lo /
// mk_hi, this warpgroup's 32 slots) and for padding rows (log Z = +inf).
__device__ __forceinline__ void bwd3_p_ds(const float *s, const float *dp, unsigned mk_lo, unsigned mk_hi, int wg, int row_lo, int c, float sig2,
                                          float sigma, float lz_lo, float lz_hi, float dl_lo, float dl_hi, __nv_bfloat16 *sp,
                                          __nv_bfloat16 *sds) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int col = 8 * j + 2 * c, slot = 32 * wg + col;
        const bool ok0 = (mk_lo >> col) & 1u, ok1 = (mk_lo >> (col + 1)) & 1u;
        const bool ok2 = (mk_hi >> col) & 1u, ok3 = (mk_hi >> (col + 1)) & 1u;
        float p0 = ok0 ? dsa_exp2(s[4 * j] * sig2 - lz_lo) : 0.f, p1 = ok1 ? dsa_exp2(s[4 * j + 1] * sig2 - lz_lo) : 0.f;
        float p2 = ok2 ? dsa_exp2(s[4 * j + 2] * sig2 - lz_hi) : 0.f, p3 = ok3 ? dsa_exp2(s[4 * j + 3] * sig2 - lz_hi) : 0.f;
        const int lo = dsa_sw128(row_lo, slot, BWD3_HB), hi = dsa_sw128(row_lo + 8, slot, BWD3_HB);
        *(unsigned *)(sp + lo) = dsa_pack_f32x2(p0, p1);
        *(unsigned *)(sp + hi) = dsa_pack_f32x2(p2, p3);
        *(unsigned *)(sds + lo) = dsa_pack_f32x2(sigma * p0 * (dp[4 * j] - dl_lo), sigma * p1 * (dp[4 * j + 1] - dl_lo));
        *(unsigned *)(sds + hi) = dsa_pack_f32x2(sigma * p2 * (dp[4 * j + 2] - dl_hi), sigma * p3 * (dp[4 * j + 3] - dl_hi));
    }
}

// NK: the k16 steps of the dkv products over the tile rows (4 = 64 rows; fewer when the rows that hold a
// head fit in 16 NK: the rest are zeros, skipped; a compile-time count, since a wgmma under a runtime
// branch is serialized).
// RED: how dkv chunks leave. BWD3_RED_LINES (the default, session 27): float4 atomics in whole 128-byte
// lines, 4 rows a warp instruction, after two transposing shuffle steps (dsa_red_rows_f32x4_lines).
// BWD3_RED_SECTORS (DSA_SPARSE_BWD_SECTORS=1, the default until session 26): float4 atomics of one
// 32-byte sector in each of 16 rows a warp instruction (dsa_red_rows_f32x4).
// BWD3_RED_BULK (NK <= 3, DSA_SPARSE_BWD_BULK): dkv chunks leave by bulk reductions (cp.reduce.async.bulk .add.f32,
// one instruction a slot and 64 columns, the adds done in L2: 3806 against 2314 GB/s for the float4
// atomics in the bench's ceilings, H200, session 20) instead of float4 atomics. A chunk (64 slots x 64
// fp32 = 16 KiB) is staged in the rows 48 .. 63 of Q's and dO's column blocks (2 KiB each, 8 slots a
// piece: warpgroup 0 Q blocks 0-7, warpgroup 1 Q block 8 and dO blocks 0-6), which only tile rows past
// 16 NK occupy: no dkv product reads them, and what S, dP and dq compute from them (garbage, possibly
// NaN) stays in those rows, whose P, dS and dq nothing reads. Shared memory has no other 32 KiB free.
// MERGED (un.keys set; a template flag, as the forward's: the one-row kernel then keeps no merged state
// live, and ptxas reports no spills for it, as before session 20).
template <int NK, int RED, bool MERGED>
__global__ void __launch_bounds__(384, 1) sparse_mqa_bwd_wgmma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const void *sink, dsa_dtype sink_dt, const __nv_bfloat16 *__restrict__ out,
    const float *__restrict__ lse, const float *__restrict__ dout, float *dq, float *dkv, float *dsink, int H, int hbeg,
    int hend, int64_t T, int64_t K, int64_t S_kv, float sigma, int smem_slack, bool dq_store, dsa_pick_union un) {
    constexpr int HB = BWD3_HB, BK = BWD3_BK, D = BWD3_D, Dv = BWD3_DV, RING = BWD3_RING;
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    bwd3_smem sm(dsa_smem_base1024(dsa_smem_raw, smem_slack));
    // Tile rows: one query row's block of up to 64 heads, or (merged, un.keys set) the heads [hbeg, hend)
    // of a group of un.R rows, tile row m = (row m / nh of the group, head m % nh).
    constexpr bool merged = MERGED;
    const int n_hb = merged ? 1 : (hend - hbeg + HB - 1) / HB;
    const int h0 = hbeg + (int)(blockIdx.x % n_hb) * HB, nh = min(HB, hend - h0);
    const int64_t grp = blockIdx.x / n_hb, t0 = merged ? grp * un.R : grp;
    const int rows = merged ? (int)min((int64_t)un.R, T - t0) : 1;
    const int64_t k_end = merged ? un.count[grp] : dsa_row_k_end(topk_length, t0, K);
    const int nt = (int)((k_end + BK - 1) / BK);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    unsigned long long *full = sm.bars, *empty = sm.bars + 1;
    if (tid == 0) {
        dsa_mbar_init(full, DSA_GATHER_FULL_ARRIVALS);
        dsa_mbar_init(empty, 256);
    }
    // Prologue (all 12 warps): Q by cp.async; dO rounded to bf16 and Delta (warp w: heads w, w + 12, ..);
    // log Z and dsink; zero rows for padding heads.
    dsa_load_rows_sw128(sm.sq, HB, D, [&](int r) -> const __nv_bfloat16 * {
        int64_t tr;
        int hr;
        return dsa_union_tile_row(r, t0, h0, nh, rows, &tr, &hr) ? q + ((tr * H) + hr) * D : nullptr;
    });
    dsa_cp_async_commit();
    for (int r = warp; r < HB; r += 12) {
        float part = 0.f;
        int64_t tr;
        int hr;
        const bool real = dsa_union_tile_row(r, t0, h0, nh, rows, &tr, &hr);
        auto store = [&](int col, uint2 v) { *(uint2 *)(sm.sdo + dsa_sw128(r, col, HB)) = v; };
        if (real) part = dsa_bwd_do_delta<Dv>(dout + ((tr * H) + hr) * Dv, out + ((tr * H) + hr) * Dv, lane, store);
        else
            for (int col = 4 * lane; col < Dv; col += 128) store(col, make_uint2(0, 0));
        float delta = dsa_warp_sum(part);
        if (lane == 0) {
            float logz = real ? dsa_bwd_log_z(lse, sink, sink_dt, dsink, tr, H, h0, hr - h0, nh, delta) : -INFINITY;
            sm.sdelta[r] = delta;
            sm.slogz[r] = real && logz > -INFINITY ? logz : INFINITY;  // exp(.. - inf) = 0: P = dS = 0
        }
    }
    dsa_cp_async_wait<0>();
    dsa_fence_proxy_async();  // Q, dO -> visible to wgmma
    __syncthreads();          // ... and the mbarriers' initialisation

    if (tid >= 256) {  // the gather warpgroup
        dsa_setmaxnreg_dec<BWD3_REGS_GATHER>();
        dsa_slot_ring64 ring{sm.rkeys, sm.rmask, RING, BK, merged ? un.keys + grp * un.cap : idx + t0 * K, k_end, S_kv};
        ring.produce<BK, 1>(nt, sm.skv, BK * D, kv, D, full, empty, tid - 256);
        return;
    }
    dsa_setmaxnreg_inc<BWD3_REGS_MATH>();
    const int wg = dsa_warpgroup_index(), g = lane >> 2, c = lane & 3;
    const int row_lo = 16 * (warp & 3) + g;  // accumulator rows row_lo, row_lo + 8: heads (S, dP, dq) or slots (dkv)
    const float sig2 = sigma * 1.44269504f;  // exp(x) = 2^(x log2 e): log2 e folded into the scale and log Z
    const float dl_lo = sm.sdelta[row_lo], dl_hi = sm.sdelta[row_lo + 8];
    const float lz_lo = sm.slogz[row_lo] * 1.44269504f, lz_hi = sm.slogz[row_lo + 8] * 1.44269504f;
    const unsigned a_q = dsa_smem_addr(sm.sq), a_do = dsa_smem_addr(sm.sdo), a_kv = dsa_smem_addr(sm.skv);
    const unsigned a_mask = dsa_smem_addr(sm.rmask), a_keys = dsa_smem_addr(sm.rkeys);
    // Descriptors. MN-major operands: 64-column blocks of M or N 64 rows x 128 bytes apart (lbo), 8 k-rows
    // per 1024-byte atom (sbo); a k16 step is 16 rows (2048 bytes: + 128 in the address field). K-major:
    // + 2 (32 bytes) per k16 step.
    const unsigned long long d_ds = dsa_wgmma_desc(dsa_smem_addr(sm.sds), 16, 1024);         // A = sigma dS
    const unsigned long long d_dst = dsa_wgmma_desc(dsa_smem_addr(sm.sds), BK * 128, 1024);  // A = (sigma dS)^T
    const unsigned long long d_pt = dsa_wgmma_desc(dsa_smem_addr(sm.sp), BK * 128, 1024);    // A = P^T
    const int qb0 = wg ? 5 : 0;  // this warpgroup's first dq column block
    const unsigned long long d_kv0 = dsa_wgmma_desc(a_kv + qb0 * BK * 128, BK * 128, 1024);  // B = K_tile, MN-major
    const unsigned long long d_kv4 = dsa_wgmma_desc(a_kv + 4 * BK * 128, BK * 128, 1024);
    const int ck0 = wg ? 4 : 0, ck1 = wg ? 9 : 4;  // this warpgroup's dkv chunks
    // Merged: the group rows of this thread's two head rows (clamped: padding rows have P = 0 anyway) and
    // the row masks of the group's entries.
    const int r_lo = dsa_union_group_row(row_lo, nh), r_hi = dsa_union_group_row(row_lo + 8, nh);
    const unsigned char *grp_rows = merged ? un.rows + grp * un.cap + 32 * wg : nullptr;
    // BULK: this thread's two staging rows (slots row_lo, row_lo + 8: pieces 2 (warp & 3) and + 1, row g) and,
    // for threads 0 .. 63 of the warpgroup, the row of slot wtid it reduces.
    static_assert(RED != BWD3_RED_BULK || NK <= 3, "bulk dkv staging needs tile rows 48 .. 63 free");
    const int wtid = tid - 128 * wg;
    auto piece = [&](int p) -> unsigned char * {
        unsigned char *b = wg == 0 || p == 0 ? (unsigned char *)sm.sq + (wg ? 8 : p) * 8192 : (unsigned char *)sm.sdo + (p - 1) * 8192;
        return b + 48 * 128;
    };
    float *stage_lo = (float *)(piece(2 * (warp & 3)) + g * 256), *stage_hi = (float *)(piece(2 * (warp & 3) + 1) + g * 256);
    const unsigned stage_src = RED == BWD3_RED_BULK && wtid < 64 ? dsa_smem_addr(piece(wtid >> 3) + (wtid & 7) * 256) : 0u;

    float dqa[128], dqb[32];
#pragma unroll
    for (int j = 0; j < 128; j++) dqa[j] = 0.f;
#pragma unroll
    for (int j = 0; j < 32; j++) dqb[j] = 0.f;
    for (int i = 0; i < nt; i++) {
        float s[16], dp[16];
        dsa_mbar_wait(full, i & 1);  // tile i has landed (and its keys and mask are published)
        dsa_wgmma_fence();
        dsa_wgmma_scores_m64n32(s, a_q, HB, a_kv + 32 * wg * 128, BK, D);
        dsa_wgmma_scores_m64n32(dp, a_do, HB, a_kv + 32 * wg * 128, BK, Dv);
        // The tile's mask and this thread's dkv key by ld.shared, before the waits (through the generic
        // pointers the compiler emitted generic loads after them: 4% of the stall samples, session 17).
        const unsigned mk = (unsigned)(dsa_ld_shared_u64(a_mask + 8 * (i % RING)) >> (32 * wg));
        unsigned mk_lo = mk, mk_hi = mk;
        if (merged) {
            unsigned long long b_lo, b_hi;  // (this warpgroup's 32 slots: grp_rows starts at slot 32 wg)
            dsa_union_row_masks<4>(grp_rows + (int64_t)i * BK, c, r_lo, r_hi, &b_lo, &b_hi);
            mk_lo &= (unsigned)b_lo;
            mk_hi &= (unsigned)b_hi;
        }
        const int key = RED == BWD3_RED_SECTORS ? dsa_ld_shared_s32(a_keys + 4 * ((i % RING) * BK + ((c & 1) ? row_lo + 8 : row_lo))) : -1;
        const int key_b = RED == BWD3_RED_BULK && wtid < 64 ? dsa_ld_shared_s32(a_keys + 4 * ((i % RING) * BK + wtid)) : -1;
        dsa_bar_sync(1, 256);  // the other warpgroup's dkv(i - 1) no longer reads sP / sdS
        dsa_wgmma_wait<0>();
        bwd3_p_ds(s, dp, mk_lo, mk_hi, wg, row_lo, c, sig2, sigma, lz_lo, lz_hi, dl_lo, dl_hi, sm.sp, sm.sds);
        dsa_fence_proxy_async();  // P, dS -> visible to wgmma
        dsa_bar_sync(3, 256);     // P(i), dS(i) of all 64 slots are in
        dsa_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {  // dq += sigma dS K_tile over the 64 slots
            dsa_wgmma_m64n256k16<1>(dqa, d_ds + 2 * kk, d_kv0 + kk * 128, 1);
            if (wg == 0) dsa_wgmma_m64n64k16<0, 1>(dqb, d_ds + 2 * kk, d_kv4 + kk * 128, 1);
        }
        dsa_wgmma_commit();
        dsa_wgmma_wait<0>();
        dsa_mbar_arrive(empty);  // this thread is done with tile i's stage: the gather of i + 1 may start
        for (int ck = ck0; ck < ck1; ck++) {  // dkv[:, 64 ck ..] = (sigma dS)^T Q + P^T dO
            float acc[32];
            const unsigned long long d_qn = dsa_wgmma_desc(a_q + ck * HB * 128, HB * 128, 1024);
            const unsigned long long d_don = dsa_wgmma_desc(a_do + ck * HB * 128, HB * 128, 1024);
            dsa_wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < NK; kk++) dsa_wgmma_m64n64k16<1, 1>(acc, d_dst + kk * 128, d_qn + kk * 128, kk != 0);
            if (ck < Dv / 64)
#pragma unroll
                for (int kk = 0; kk < NK; kk++) dsa_wgmma_m64n64k16<1, 1>(acc, d_pt + kk * 128, d_don + kk * 128, 1);
            dsa_wgmma_commit();
            dsa_wgmma_wait<0>();
            if constexpr (RED == BWD3_RED_BULK) {
                dsa_bulk_wait_read<0>();    // (issuers) the previous chunk's copies have read the staging
                dsa_bar_sync(4 + wg, 128);  // the staging is free
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    *(float2 *)(stage_lo + 8 * j + 2 * c) = make_float2(acc[4 * j], acc[4 * j + 1]);
                    *(float2 *)(stage_hi + 8 * j + 2 * c) = make_float2(acc[4 * j + 2], acc[4 * j + 3]);
                }
                dsa_fence_proxy_async();    // the rows -> visible to the bulk copies
                dsa_bar_sync(4 + wg, 128);  // all 64 rows are staged
                if (key_b >= 0) dsa_bulk_reduce_add_f32(dkv + (int64_t)key_b * D + 64 * ck, stage_src, 256);
                dsa_bulk_commit();
            } else if constexpr (RED == BWD3_RED_LINES) {
                // The dkv rows of this lane's 8-lane group (quads g & ~1, g | 1; rows lo, hi), read here
                // rather than held across the chunks (the merged kernel spilled more with them held).
                // Tile i's ring entry stays until tile i + 4 is published, after the release of i + 3.
                const unsigned tile_keys = a_keys + 4 * ((i % RING) * BK + 16 * (warp & 3));
                dsa_red_rows_f32x4_lines<D>(dkv, acc, [&](int r) { return dsa_ld_shared_s32(tile_keys + 4 * r); }, 64 * ck, lane);
            } else {
                dsa_red_rows_f32x4<D>(dkv, acc, key, 64 * ck, c);
            }
        }
    }
    if constexpr (RED == BWD3_RED_BULK) dsa_bulk_wait_read<0>();  // no copy may read shared memory after the CTA exits
    // dq (the CTA's own rows: plain read-modify-write, or stores when the buffer is the gradient's first
    // and holds anything: every column of every head row < nh is written here) += the accumulators.
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int64_t tr;
        int hr;
        if (!dsa_union_tile_row(row_lo + 8 * half, t0, h0, nh, rows, &tr, &hr)) continue;
        float *qrow = dq + ((tr * H) + hr) * D + 2 * c;
#pragma unroll
        for (int j = 0; j < 32; j++) {
            float2 *p = (float2 *)(qrow + 64 * qb0 + 8 * j), v = dq_store ? make_float2(0.f, 0.f) : *p;
            *p = make_float2(v.x + dqa[4 * j + 2 * half], v.y + dqa[4 * j + 2 * half + 1]);
        }
        if (wg == 0)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float2 *p = (float2 *)(qrow + 256 + 8 * j), v = dq_store ? make_float2(0.f, 0.f) : *p;
                *p = make_float2(v.x + dqb[4 * j + 2 * half], v.y + dqb[4 * j + 2 * half + 1]);
            }
    }
}

// The instantiation for nk k16 steps (1..4), a dkv reduction mode (bulk: nk <= 3 only) and merged groups or not.
template <int NK, bool MERGED>
static auto bwd3_kernel_nk(int red) {
    if constexpr (NK <= 3)
        if (red == BWD3_RED_BULK) return sparse_mqa_bwd_wgmma_kernel<NK, BWD3_RED_BULK, MERGED>;
    return red == BWD3_RED_SECTORS ? sparse_mqa_bwd_wgmma_kernel<NK, BWD3_RED_SECTORS, MERGED>
                                   : sparse_mqa_bwd_wgmma_kernel<NK, BWD3_RED_LINES, MERGED>;
}
template <bool MERGED>
static auto bwd3_kernel(int nk, int red) {
    return nk == 1 ? bwd3_kernel_nk<1, MERGED>(red) : nk == 2 ? bwd3_kernel_nk<2, MERGED>(red)
         : nk == 3 ? bwd3_kernel_nk<3, MERGED>(red) : bwd3_kernel_nk<4, MERGED>(red);
}

// Called by the backward dispatcher (dsa_sparse_bwd_cuda.cu) for bf16 q / kv / out, fp32 dout / dq /
// dkv / dsink, dq and dkv both given, D = 576, Dv = 512, on an sm_90 GPU. DSA_ERR_UNSUPPORTED (no
// message) when the shared memory does not fit: the caller runs v2.
dsa_status dsa_sparse_mqa_bwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                         const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t h0, int64_t h1,
                                         dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink, bool dq_store) {
    int64_t T_ = q->shape[0], H = q->shape[1], K = idx->shape[1], S = kv->shape[0];
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    size_t optin = 0, smem = bwd3_tile_bytes();
    DSA_TRY(dsa_smem_optin(&optin));
    if (smem > optin) return DSA_ERR_UNSUPPORTED;
    int slack = dsa_smem_slack(smem, optin);
    smem += (size_t)slack;
    // Few heads: groups of neighbouring rows in one tile, over the union of their picks (DSA_SPARSE_BWD_ROWS,
    // default 4; 1 turns it off).
    static int want = -1;
    if (want < 0) want = dsa_env_int("DSA_SPARSE_BWD_ROWS", 4);
    dsa_pick_union un;
    int R = 1;
    DSA_TRY(dsa_pick_union_prepare(want, h1 - h0, idx, topk_length, S, false, &un, &R));
    int64_t n_ctas = R >= 2 ? (T_ + R - 1) / R : T_ * ((h1 - h0 + BWD3_HB - 1) / BWD3_HB);
    const int64_t tile_rows = R >= 2 ? R * (h1 - h0) : (h1 - h0 < BWD3_HB ? h1 - h0 : BWD3_HB);
    const int nk = (int)((tile_rows + 15) / 16);
    // dkv's reductions: whole 128-byte lines (default); DSA_SPARSE_BWD_SECTORS=1: one 32-byte sector of 16
    // rows a warp instruction (the default until session 26); DSA_SPARSE_BWD_BULK=1: bulk reductions where
    // the tile rows leave room (nk <= 3; the lines elsewhere).
    static int red = -1;
    if (red < 0)
        red = dsa_env_flag("DSA_SPARSE_BWD_BULK")      ? BWD3_RED_BULK
            : dsa_env_flag("DSA_SPARSE_BWD_SECTORS") ? BWD3_RED_SECTORS
                                                     : BWD3_RED_LINES;
    auto kern = R >= 2 ? bwd3_kernel<true>(nk, red) : bwd3_kernel<false>(nk, red);
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa bwd (wgmma v3)"));
    kern<<<(unsigned)n_ctas, 384, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (const __nv_bfloat16 *)out->data, (const float *)lse->data, (const float *)dout->data, (float *)dq->data,
        (float *)dkv->data, dsink ? (float *)dsink->data : NULL, (int)H, (int)h0, (int)h1, T_, K, S, (float)sigma, slack,
        dq_store, un);
    CUDA_LAUNCH_CHECK("sparse_mqa_bwd_wgmma");
    return DSA_OK;
}
