// Lightning indexer kernels (SPEC 1, 2, 6): dense logits [T, S] inside each row's window, logits
// gathered at the selected slots [T, K], and the backward of the gathered logits (dq, dw in the
// CTA that owns the row; dk with fp32 atomics). Arithmetic in fp32 (fp64 for f64 inputs). The dense
// logits of bf16 inputs take a tensor-core (mma.sync) kernel; the simple kernel is the reference.
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include "core/context.h"
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define IDX_NT 256
#define IDX_KT 64  // keys per CTA of the dense logits kernel

// Dense logits: grid (key tiles, T). q[t] and w[t] in shared memory, a tile of 64 keys beside
// them; thread = (key j = tid % 64, head group g = tid / 64), partial sums reduced across groups.
template <typename T, typename A, typename O>
__global__ void __launch_bounds__(IDX_NT) indexer_logits_kernel(const T *__restrict__ q, const T *__restrict__ k,
                                                                const T *__restrict__ w, const int *__restrict__ start,
                                                                const int *__restrict__ end, O *__restrict__ out,
                                                                int H, int D, int64_t S) {
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.y, s0 = (int64_t)blockIdx.x * IDX_KT;
    int tid = threadIdx.x, ld = D + 1;
    int64_t lo = max((int64_t)start[t], (int64_t)0), hi = min((int64_t)end[t], S);
    int64_t a = s0 > lo ? s0 : lo, b = s0 + IDX_KT < hi ? s0 + IDX_KT : hi;
    if (a >= b) {  // the whole tile is outside the window
        for (int j = tid; j < IDX_KT; j += IDX_NT)
            if (s0 + j < S) out[t * S + s0 + j] = dsa_from_double<O>(-INFINITY);
        return;
    }
    A *sq = (A *)dsa_smem, *sk = sq + H * ld, *sw = sk + IDX_KT * ld, *red = sw + H;
    for (int i = tid; i < H * D; i += IDX_NT) sq[(i / D) * ld + i % D] = (A)dsa_to_float(q[t * H * D + i]);
    for (int i = tid; i < H; i += IDX_NT) sw[i] = (A)dsa_to_float(w[t * H + i]);
    for (int i = tid; i < IDX_KT * D; i += IDX_NT) {
        int j = i / D, d = i % D;
        int64_t s = s0 + j;
        sk[j * ld + d] = (s >= a && s < b) ? (A)dsa_to_float(k[s * D + d]) : (A)0;
    }
    __syncthreads();
    int j = tid % IDX_KT, g = tid / IDX_KT, ng = IDX_NT / IDX_KT;
    A part = 0;
    const A *kr = sk + j * ld;
    for (int h = g; h < H; h += ng) {
        const A *qh = sq + h * ld;
        A r = 0;
        for (int d = 0; d < D; d++) r += qh[d] * kr[d];
        part += sw[h] * (r > 0 ? r : (A)0);
    }
    red[g * IDX_KT + j] = part;
    __syncthreads();
    if (g == 0) {
        int64_t s = s0 + j;
        A tot = 0;
        for (int x = 0; x < ng; x++) tot += red[x * IDX_KT + j];
        if (s < S) out[t * S + s] = dsa_from_double<O>((s >= a && s < b) ? (double)tot : -INFINITY);
    }
}

// ---- tensor-core path of the dense logits (bf16 q/k/w, fp32 accumulators): mma.sync m16n8k16 ----------
// Per row t the logits are a GEMM Q_t [H x D] . K^T [D x S] followed by an epilogue that folds the
// head dimension away: I[t,s] = sum_h w[t,h] ReLU(C[h,s]). A CTA owns ROWS (8, or 4) consecutive query
// rows, one warp per row; q of those rows (ROWS H x D bf16) stays in shared memory while the CTA walks
// the key tiles of 64 keys that meet the union of its rows' windows (double buffered with cp.async,
// the next tile loads while this one is multiplied). Warp w computes the whole tile for its row: M =
// the H heads (MT = H/16 m16 tiles), N = 64 keys (8 n8 tiles), K = D in steps of 16, then reduces the
// heads in registers and shuffles, and stores 64 fp32 logits. Keys outside the tile range are -inf
// without any arithmetic (causal: about half of the matrix). A warp whose row window misses a tile
// writes -inf for it and skips the mma.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA; g = lane >> 2, c = lane & 3; a register = 2 bf16, low
// half first):
//   A (16 x 16, row major, rows = heads, cols = d):  a0 = A[g][2c..2c+1]     a1 = A[g+8][2c..2c+1]
//                                                    a2 = A[g][2c+8..2c+9]   a3 = A[g+8][2c+8..2c+9]
//   B (16 x 8, k x n, n = keys): b0 = B[2c..2c+1][g] = K[key g][d 2c..2c+1], b1 = K[key g][d 2c+8..2c+9]
//     (B "col" = each key's d values contiguous, i.e. exactly k's row-major storage)
//   C (16 x 8 fp32): c0 = C[g][2c]  c1 = C[g][2c+1]  c2 = C[g+8][2c]  c3 = C[g+8][2c+1]
// ldmatrix.x4: lanes 8i .. 8i+7 give the 8 row addresses (16 bytes each) of matrix i, and register i
// of lane (g, c) receives row g, elements 2c..2c+1 of matrix i. So
//   A tile (rows r0.., cols k0..): lane -> row r0 + (lane & 7) + 8 ((lane >> 3) & 1), col k0 + 8 (lane >> 4)
//     (matrices: rows 0-7/cols 0-7 = a0, rows 8-15/cols 0-7 = a1, rows 0-7/cols 8-15 = a2, rows 8-15/cols 8-15 = a3)
//   B pair of n8 tiles (keys n0 .. n0+15, d k0..): lane -> key n0 + (lane & 7) + 8 (lane >> 4), d k0 + 8 ((lane >> 3) & 1)
//     (matrices: keys 0-7/d 0-7 = b0 of tile 0, keys 0-7/d 8-15 = b1 of tile 0, keys 8-15 = b0, b1 of tile 1)
// Shared rows are D + 8 bf16 long: 2 D + 16 bytes, an odd multiple of 16 when D % 16 == 0, so the 8 rows
// of one ldmatrix phase fall on 8 different 16-byte bank groups (no conflicts), and every row start
// stays 16-byte aligned for cp.async.
#define IDXM_KT 64  // keys per tile

__device__ __forceinline__ void idxm_ldmatrix_x4(unsigned r[4], const __nv_bfloat16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
// 16-byte global -> shared copy; valid == false writes 16 zero bytes (src is not read).
__device__ __forceinline__ void idxm_cp_async16(__nv_bfloat16 *dst, const __nv_bfloat16 *src, bool valid) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void idxm_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void idxm_cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

template <typename O> __device__ __forceinline__ void idxm_store2(O *p, float a, float b);
template <> __device__ __forceinline__ void idxm_store2<float>(float *p, float a, float b) {
    *(float2 *)p = make_float2(a, b);
}
template <> __device__ __forceinline__ void idxm_store2<__nv_bfloat16>(__nv_bfloat16 *p, float a, float b) {
    *(__nv_bfloat162 *)p = __floats2bfloat162_rn(a, b);
}

// One step of the head reduce-scatter over lane bit 2 HALF (HALF = 8, 4, 2: lane masks 16, 8, 4): the
// lane keeps v[0..HALF) or v[HALF..2 HALF) by that bit, adds its partner's copy of the same half,
// and stores the sums in v[0..HALF). HALF is a template argument so that v stays in registers.
template <int HALF> __device__ __forceinline__ void idxm_reduce_scatter(float *v, int lane) {
    bool up = lane & (2 * HALF);
#pragma unroll
    for (int i = 0; i < HALF; i++) {
        float send = up ? v[i] : v[i + HALF], keep = up ? v[i + HALF] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 2 * HALF);
    }
}

// Loads keys [s0, s0 + 64) into a shared tile (keys >= S as zeros; their logits are never stored).
template <int NT>
__device__ __forceinline__ void idxm_load_k_tile(__nv_bfloat16 *dst, const __nv_bfloat16 *__restrict__ k, int64_t s0,
                                                 int64_t S, int D, int ldq) {
    int D8 = D / 8;
    for (int i = threadIdx.x; i < IDXM_KT * D8; i += NT) {
        int j = i / D8, v = i % D8;
        int64_t s = s0 + j;
        bool ok = s < S;
        idxm_cp_async16(dst + j * ldq + v * 8, k + (ok ? s : 0) * D + v * 8, ok);
    }
}

// ROWS: query rows per CTA, one warp each (8: one CTA per SM, k read once per 8 rows; 4: two CTAs
// per SM that hide each other's epilogue and barrier, twice the L2 traffic of k).
// MT = H / 16 (1..4): the m16 tiles of a row; accumulators per thread: MT * 8 * 4 fp32.
// VEC: S even and out 2-element aligned, so a lane's two adjacent logits go out as one store.
template <int ROWS, int MT, typename O, bool VEC>
__global__ void __launch_bounds__(32 * ROWS, 8 / ROWS) indexer_logits_mma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ w,
    const int *__restrict__ start, const int *__restrict__ end, O *__restrict__ out, int64_t T, int D, int64_t S) {
    const int NT = 32 * ROWS, H = 16 * MT, ldq = D + 8, D8 = D / 8;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem, *sk = sq + ROWS * H * ldq;  // sk: 2 tiles of 64 keys
    int *swin = (int *)(sk + 2 * IDXM_KT * ldq);                               // lo[ROWS], hi[ROWS]
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2;
    // Latest rows first: under a causal mask they are the longest, so the tail of the grid is short.
    int64_t nblk = (T + ROWS - 1) / ROWS, t0 = (nblk - 1 - (int64_t)blockIdx.x) * ROWS;
    int64_t t = t0 + warp;
    bool row_ok = t < T;
    // This warp's window [lo, hi) clipped to [0, S) (int: start/end are i32).
    int lo = 0, hi = 0;
    if (row_ok) {
        int64_t a = max((int64_t)start[t], (int64_t)0), b = min((int64_t)end[t], S);
        a = min(a, S);
        lo = (int)a;
        hi = (int)max(b, a);
    }
    if (lane == 0) {
        swin[warp] = lo;
        swin[ROWS + warp] = hi;
    }
    // q of the CTA's rows: one contiguous block of ROWS H rows of D (rows past T read as zeros).
    for (int i = tid; i < ROWS * H * D8; i += NT) {
        int r = i / D8, v = i % D8;
        bool ok = t0 + r / H < T;
        idxm_cp_async16(sq + r * ldq + v * 8, q + (ok ? (t0 * H + r) * (int64_t)D : 0) + v * 8, ok);
    }
    __syncthreads();
    // Key tiles [k_lo, k_lo + 64 n_tiles) cover the union of the non-empty windows of the CTA's rows.
    int64_t k_lo, n_tiles;
    dsa_window_tiles(swin, ROWS, IDXM_KT, &k_lo, &n_tiles);
    if (n_tiles > 0) idxm_load_k_tile<NT>(sk, k, k_lo, S, D, ldq);
    idxm_cp_async_commit();  // group: q and the first key tile

    // -inf outside the tile range, no arithmetic (overlaps the loads above).
    O *orow = out + (row_ok ? t : 0) * S;
    const O ninf = dsa_from_float<O>(-INFINITY);
    if (row_ok) {
        int64_t k_hi = min(k_lo + n_tiles * IDXM_KT, S);
        for (int64_t s = lane; s < k_lo; s += 32) orow[s] = ninf;
        for (int64_t s = k_hi + lane; s < S; s += 32) orow[s] = ninf;
    }
    // Weights of the heads this lane's accumulator rows hold: mi*16 + g and mi*16 + g + 8.
    float wl[MT], wh[MT];
#pragma unroll
    for (int mi = 0; mi < MT; mi++) {
        wl[mi] = row_ok ? __bfloat162float(w[t * H + mi * 16 + g]) : 0.f;
        wh[mi] = row_ok ? __bfloat162float(w[t * H + mi * 16 + g + 8]) : 0.f;
    }
    // Per-lane ldmatrix offsets (see the mapping above).
    const __nv_bfloat16 *qa = sq + (warp * H + (lane & 7) + 8 * ((lane >> 3) & 1)) * ldq + 8 * (lane >> 4);
    const int b_off = ((lane & 7) + 8 * (lane >> 4)) * ldq + 8 * ((lane >> 3) & 1);

    for (int64_t it = 0; it < n_tiles; it++) {
        idxm_cp_async_wait_all();
        __syncthreads();  // tile it landed for every thread; every warp is done with tile it - 1
        if (it + 1 < n_tiles) idxm_load_k_tile<NT>(sk + ((it + 1) & 1) * IDXM_KT * ldq, k, k_lo + (it + 1) * IDXM_KT, S, D, ldq);
        idxm_cp_async_commit();
        const __nv_bfloat16 *kb = sk + (it & 1) * IDXM_KT * ldq + b_off;
        int64_t s0 = k_lo + it * IDXM_KT, s = s0 + 2 * lane;  // this lane stores keys s and s + 1
        if (!row_ok) continue;
        if (lo >= hi || s0 >= hi || s0 + IDXM_KT <= lo) {  // the row's window misses this tile
            if (VEC && s + 1 < S) idxm_store2<O>(orow + s, -INFINITY, -INFINITY);
            else
                for (int e = 0; e < 2; e++)
                    if (s + e < S) orow[s + e] = ninf;
            continue;
        }
        float acc[MT][8][4];
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int nj = 0; nj < 8; nj++) acc[mi][nj][0] = acc[mi][nj][1] = acc[mi][nj][2] = acc[mi][nj][3] = 0.f;
#pragma unroll 2
        for (int k0 = 0; k0 < D; k0 += 16) {
            unsigned b[8][2];
#pragma unroll
            for (int p = 0; p < 4; p++) {  // keys 16p .. 16p + 15: b of n8 tiles 2p and 2p + 1
                unsigned r[4];
                idxm_ldmatrix_x4(r, kb + 16 * p * ldq + k0);
                b[2 * p][0] = r[0];
                b[2 * p][1] = r[1];
                b[2 * p + 1][0] = r[2];
                b[2 * p + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < MT; mi++) {
                unsigned a[4];
                idxm_ldmatrix_x4(a, qa + 16 * mi * ldq + k0);
#pragma unroll
                for (int nj = 0; nj < 8; nj++) dsa_mma_bf16_16816(acc[mi][nj], a, b[nj]);
            }
        }
        // Epilogue: v[2 nj + e] = sum over this lane's 2 MT heads of w ReLU(C) at key 8 nj + 2c + e.
        float v[16];
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = 0.f;
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int nj = 0; nj < 8; nj++) {
                v[2 * nj] = fmaf(wl[mi], fmaxf(acc[mi][nj][0], 0.f), v[2 * nj]);
                v[2 * nj + 1] = fmaf(wl[mi], fmaxf(acc[mi][nj][1], 0.f), v[2 * nj + 1]);
                v[2 * nj] = fmaf(wh[mi], fmaxf(acc[mi][nj][2], 0.f), v[2 * nj]);
                v[2 * nj + 1] = fmaf(wh[mi], fmaxf(acc[mi][nj][3], 0.f), v[2 * nj + 1]);
            }
        // Sum over the 8 lanes of equal c (lane bits 2..4 = g) as a reduce-scatter: at each step a
        // lane keeps the half of its values selected by one bit of g and adds its partner's copy of
        // that half. After lane masks 16, 8, 4 the lane holds the full sums of values 2g and 2g + 1,
        // i.e. n8 tile g, keys 8g + 2c + {0, 1} = 2 lane + {0, 1}: one coalesced 2-wide store.
        idxm_reduce_scatter<8>(v, lane);
        idxm_reduce_scatter<4>(v, lane);
        idxm_reduce_scatter<2>(v, lane);
        float r0 = (s >= lo && s < hi) ? v[0] : -INFINITY, r1 = (s + 1 >= lo && s + 1 < hi) ? v[1] : -INFINITY;
        if (VEC && s + 1 < S) idxm_store2<O>(orow + s, r0, r1);
        else {
            if (s < S) orow[s] = dsa_from_float<O>(r0);
            if (s + 1 < S) orow[s + 1] = dsa_from_float<O>(r1);
        }
    }
    idxm_cp_async_wait_all();  // no copy may still be in flight when the CTA exits
}

// Gathered logits: one CTA per row; a warp per slot, a lane per head (q rows padded: no conflicts).
template <typename T, typename A>
__global__ void __launch_bounds__(IDX_NT) indexer_gather_kernel(const T *__restrict__ q, const T *__restrict__ k,
                                                                const T *__restrict__ w, const int *__restrict__ idx,
                                                                const int *__restrict__ topk_length,
                                                                T *__restrict__ out, int H, int D, int64_t K, int64_t S) {
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = IDX_NT / 32, ld = D + 1;
    A *sq = (A *)dsa_smem, *sw = sq + H * ld, *skr = sw + H + warp * D;
    for (int i = tid; i < H * D; i += IDX_NT) sq[(i / D) * ld + i % D] = (A)dsa_to_float(q[t * H * D + i]);
    for (int i = tid; i < H; i += IDX_NT) sw[i] = (A)dsa_to_float(w[t * H + i]);
    __syncthreads();
    for (int64_t j = warp; j < K; j += nw) {
        int s = dsa_slot_key(idx, topk_length, t, K, j, S);
        if (s < 0) {
            if (lane == 0) out[t * K + j] = dsa_from_double<T>(-INFINITY);
            continue;
        }
        for (int d = lane; d < D; d += 32) skr[d] = (A)dsa_to_float(k[(int64_t)s * D + d]);
        __syncwarp();
        A part = 0;
        for (int h = lane; h < H; h += 32) {
            const A *qh = sq + h * ld;
            A r = 0;
            for (int d = 0; d < D; d++) r += qh[d] * skr[d];
            part += sw[h] * (r > 0 ? r : (A)0);
        }
        part = dsa_warp_sum(part);
        if (lane == 0) out[t * K + j] = dsa_from_double<T>((double)part);
        __syncwarp();
    }
}

#define IBW_SLOTS 8   // slots per tile (one per warp)
#define IBW_ELEMS 32  // dq elements per thread: H * D <= 8192

// Backward of the gathered logits, given G = dL/dlogits [T, K]. One CTA per row t; dq[t] (H x D)
// lives in registers, dw[t] in shared memory; tiles of 8 slots: each warp recomputes r = q.k for
// its slot and the coefficients c[h] = G w[h] 1[r > 0] and dw terms G relu(r); the dw terms are added
// in slot order (dq and dw come out the same run to run); then every thread updates its dq elements
// and dk[s] += sum_h c[h] q[h] goes out with atomics (DSA_DETERMINISTIC=1: key-major instead).
// DENSE: the backward of the dense logits [T, S]: slot j is key start[t] + j of the window, and
// G is read at [t, s].
template <typename T, typename A, bool DENSE>
__global__ void __launch_bounds__(IDX_NT) indexer_gather_bwd_kernel(
    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ w, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const int *__restrict__ start, const int *__restrict__ end,
    const A *__restrict__ G, A *dq, A *dk, A *dw, int H, int D, int64_t K, int64_t S) {
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ld = D + 1;
    A *sq = (A *)dsa_smem, *sw = sq + H * ld, *sdw = sw + H, *skr = sdw + H, *sc = skr + IBW_SLOTS * D;
    A *sr = sc + IBW_SLOTS * H;  // [slot][head] dw terms, added in slot order (deterministic dw)
    int *skey = (int *)(sr + IBW_SLOTS * H);
    for (int i = tid; i < H * D; i += IDX_NT) sq[(i / D) * ld + i % D] = (A)dsa_to_float(q[t * H * D + i]);
    for (int i = tid; i < H; i += IDX_NT) {
        sw[i] = (A)dsa_to_float(w[t * H + i]);
        sdw[i] = 0;
    }
    A gq[IBW_ELEMS];
#pragma unroll
    for (int e = 0; e < IBW_ELEMS; e++) gq[e] = 0;
    __syncthreads();
    int64_t lo = 0, n_slots = K;
    if (DENSE) {
        lo = max((int64_t)start[t], (int64_t)0);
        n_slots = min((int64_t)end[t], S) - lo;
    }
    for (int64_t j0 = 0; j0 < n_slots; j0 += IBW_SLOTS) {
        int64_t j = j0 + warp;
        int s;
        A g = 0;
        if (DENSE) {
            s = j < n_slots ? (int)(lo + j) : -1;
            if (s >= 0) g = G[t * S + s];
        } else {
            s = j < K ? dsa_slot_key(idx, topk_length, t, K, j, S) : -1;
            if (s >= 0) g = G[t * K + j];
        }
        if (lane == 0) skey[warp] = s;
        A *kr = skr + warp * D, *c = sc + warp * H;
        for (int d = lane; d < D; d += 32) kr[d] = s >= 0 ? (A)dsa_to_float(k[(int64_t)s * D + d]) : (A)0;
        __syncwarp();
        for (int h = lane; h < H; h += 32) {
            const A *qh = sq + h * ld;
            A r = 0;
            if (s >= 0)
                for (int d = 0; d < D; d++) r += qh[d] * kr[d];
            c[h] = r > 0 ? g * sw[h] : (A)0;
            sr[warp * H + h] = r > 0 ? g * r : (A)0;
        }
        __syncthreads();
        for (int h = tid; h < H; h += IDX_NT) {
            A a = sdw[h];
            for (int x = 0; x < IBW_SLOTS; x++) a += sr[x * H + h];
            sdw[h] = a;
        }
#pragma unroll
        for (int e = 0; e < IBW_ELEMS; e++) {
            int i = tid + e * IDX_NT;
            if (i < H * D) {
                int h = i / D, d = i % D;
                A acc = gq[e];
                for (int x = 0; x < IBW_SLOTS; x++) acc += sc[x * H + h] * skr[x * D + d];
                gq[e] = acc;
            }
        }
        if (dk)
            for (int i = tid; i < IBW_SLOTS * D; i += IDX_NT) {
                int x = i / D, d = i % D, sx = skey[x];
                if (sx < 0) continue;
                A acc = 0;
                for (int h = 0; h < H; h++) acc += sc[x * H + h] * sq[h * ld + d];
                atomicAdd(&dk[(int64_t)sx * D + d], acc);
            }
        __syncthreads();
    }
    if (dq)
#pragma unroll
        for (int e = 0; e < IBW_ELEMS; e++) {
            int i = tid + e * IDX_NT;
            if (i < H * D) dq[t * H * D + i] += gq[e];
        }
    if (dw)
        for (int i = tid; i < H; i += IDX_NT) dw[t * H + i] += sdw[i];
}

// ---- tensor-core path of the gathered logits and their backward (bf16 q/k/w, fp32 accumulators) -----
// Same GEMM shape as the dense logits above, but every query row has its own K keys (the top-k
// picks), so nothing is shared between rows: a CTA owns one row t and walks tiles of 64 slots whose
// key rows are gathered into shared memory with 16-byte cp.async (slots that are invalid -- idx < 0
// or >= S, or j >= topk_length[t] -- load zeros and come out as -inf / contribute nothing).
// The fragment layouts and ldmatrix address mappings are those described above the dense kernel;
// the backward also uses ldmatrix .trans, where register i of lane (g, c) receives elements
// [2c][g] and [2c + 1][g] of matrix i (rows = the 8 addressed shared rows). So for an operand
// B[k][n] stored k-major (rows = k, n contiguous: the key tile [key][d] for dq, q [head][d] for dk):
//   B pair of n8 tiles (k k0..k0+15, n n0..n0+15): lane -> row k0 + (lane & 7) + 8 ((lane >> 3) & 1),
//   col n0 + 8 (lane >> 4); r0, r1 = b0, b1 of n8 tile n0, r2, r3 = b0, b1 of n8 tile n0 + 8.
// and for an operand A[m][k] stored k-major (G^T for dk: G is stored [head][key], A = G^T [key][head]):
//   A tile (m m0.., k k0..): lane -> row k0 + (lane & 7) + 8 (lane >> 4), col m0 + 8 ((lane >> 3) & 1).
// The C fragment of two adjacent n8 tiles is the A fragment of one m16k16 tile (c0 c1 of tile 2p =
// a0, c2 c3 = a1, tile 2p + 1 gives a2, a3), so G = f(S) goes from the S accumulators straight into
// the dq product without shared memory.
#define IDXG_KT 64  // slots per tile
// The gathered backward's dk staging by column slices (DKM 1, 3): each warp's 16 rows of 32 floats, rows
// IDXG_DKS_ST floats apart (conflict-free float2 writes and float4 reads).
#define IDXG_DKS_ST 40
#define IDXG_DKS_BYTES(NW) ((size_t)(NW) * 16 * IDXG_DKS_ST * sizeof(float))

__device__ __forceinline__ void idxm_ldmatrix_x4_trans(unsigned r[4], const __nv_bfloat16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
// 2 NP n8 B fragments of a k16 x n(16 NP) tile by NP ldmatrix.x4 (.trans with TRANS), the i-th at
// p + i * step (p holds the lane offset: b_off for keys stored [n][k], bt_off for [k][n]); x4 number i
// gives b[2 i] and b[2 i + 1].
template <int NP, bool TRANS>
__device__ __forceinline__ void idxm_ldmatrix_b(unsigned b[2 * NP][2], const __nv_bfloat16 *p, int step) {
#pragma unroll
    for (int i = 0; i < NP; i++) {
        unsigned r[4];
        if constexpr (TRANS) idxm_ldmatrix_x4_trans(r, p + i * step);
        else idxm_ldmatrix_x4(r, p + i * step);
        b[2 * i][0] = r[0];
        b[2 * i][1] = r[1];
        b[2 * i + 1][0] = r[2];
        b[2 * i + 1][1] = r[3];
    }
}
// Waits until at most one of this thread's cp.async groups (the newest) is still in flight.
__device__ __forceinline__ void idxm_cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ unsigned idxg_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(unsigned *)&v;
}

// Forward. NW warps per CTA, one row per CTA; warp w takes the tiles w, w + NW, ... and gathers its
// own keys into its own STAGES shared tiles, so the only CTA barrier is the one after q lands.
// STAGES 2: double buffered, tile i + NW loads while tile i is multiplied (NW 4: one warp per SM
// sub-partition); STAGES 1: a warp waits for its own tile and the other warp of its sub-partition
// hides the latency (NW 8, same shared memory). Per tile the warp computes the
// 16 MT x 64 scores (M = heads, N = 64 gathered keys, K = D) and folds the heads away exactly as the
// dense kernel does; a tile without a valid slot writes -inf and skips the loads and the mma.
// VEC: K even and out 4-byte aligned, so a lane's two adjacent slots go out as one bf16x2 store.
template <int NW, int STAGES, int MT, bool VEC>
__global__ void __launch_bounds__(32 * NW, 1) indexer_gather_mma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ w,
    const int *__restrict__ idx, const int *__restrict__ topk_length, __nv_bfloat16 *__restrict__ out, int64_t T,
    int D, int64_t K, int64_t S) {
    const int NT = 32 * NW, H = 16 * MT, ldq = D + 8, D8 = D / 8;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem;
    __nv_bfloat16 *sk = sq + H * ldq + warp * STAGES * IDXG_KT * ldq;  // this warp's key tiles
    int *skey = (int *)(sq + H * ldq + NW * STAGES * IDXG_KT * ldq) + warp * STAGES * IDXG_KT;  // their keys
    // Rows with short top-k lists (the first rows of a causal document) come last: a short tail.
    int64_t t = T - 1 - (int64_t)blockIdx.x;
    for (int i = tid; i < H * D8; i += NT) {
        int r = i / D8, v = i % D8;
        idxm_cp_async16(sq + r * ldq + v * 8, q + (t * H + r) * (int64_t)D + v * 8, true);
    }
    idxm_cp_async_commit();  // group: q
    int64_t n_tiles = (K + IDXG_KT - 1) / IDXG_KT;
    const int dj = 32 / D8, dv = 32 % D8;
    // Gathers tile `tile` into buffer `buf` (one cp.async group); returns whether any slot is valid.
    auto fetch = [&](int64_t tile, int buf) -> bool {
        int64_t j0 = tile * IDXG_KT;
        int s0 = dsa_slot_key(idx, topk_length, t, K, j0 + lane, S);
        int s1 = dsa_slot_key(idx, topk_length, t, K, j0 + 32 + lane, S);
        __syncwarp();  // every lane is done reading this buffer's previous keys
        skey[buf * IDXG_KT + lane] = s0;
        skey[buf * IDXG_KT + 32 + lane] = s1;
        bool any = __any_sync(0xffffffffu, s0 >= 0 || s1 >= 0);
        __syncwarp();
        if (any) {
            // Chunk i = lane + 32 r is (key j, 16-byte piece v) = (i / D8, i % D8), stepped without
            // a division per chunk (D8 is a runtime value).
            __nv_bfloat16 *dst = sk + buf * IDXG_KT * ldq;
            int j = lane / D8, v = lane % D8;
            for (int i = lane; i < IDXG_KT * D8; i += 32) {
                int s = skey[buf * IDXG_KT + j];
                idxm_cp_async16(dst + j * ldq + v * 8, k + (int64_t)(s >= 0 ? s : 0) * D + v * 8, s >= 0);
                j += dj;
                v += dv;
                if (v >= D8) {
                    v -= D8;
                    j++;
                }
            }
        }
        idxm_cp_async_commit();
        return any;
    };
    bool any_cur = false;
    if (STAGES == 2 && warp < n_tiles) any_cur = fetch(warp, 0);
    else idxm_cp_async_commit();  // keep the group count uniform (an empty group)
    idxm_cp_async_wait_1();       // this thread's part of q landed
    __syncthreads();              // ... and everybody's

    float wl[MT], wh[MT];
#pragma unroll
    for (int mi = 0; mi < MT; mi++) {
        wl[mi] = __bfloat162float(w[t * H + mi * 16 + g]);
        wh[mi] = __bfloat162float(w[t * H + mi * 16 + g + 8]);
    }
    const __nv_bfloat16 *qa = sq + ((lane & 7) + 8 * ((lane >> 3) & 1)) * ldq + 8 * (lane >> 4);
    const int b_off = ((lane & 7) + 8 * (lane >> 4)) * ldq + 8 * ((lane >> 3) & 1);
    __nv_bfloat16 *orow = out + t * K;
    const __nv_bfloat16 ninf = dsa_from_float<__nv_bfloat16>(-INFINITY);

    int buf = 0;  // STAGES 1: always 0
    for (int64_t tile = warp; tile < n_tiles; tile += NW, buf ^= STAGES - 1) {
        bool any_next = false;
        if (STAGES == 1) {
            any_cur = fetch(tile, 0);
            idxm_cp_async_wait_all();
        } else {
            if (tile + NW < n_tiles) any_next = fetch(tile + NW, buf ^ 1);
            else idxm_cp_async_commit();
            idxm_cp_async_wait_1();  // every group but the newest: this tile
        }
        __syncwarp();  // the tile landed for every lane of the warp
        int64_t j = tile * IDXG_KT + 2 * lane;  // this lane stores slots j and j + 1
        if (!any_cur) {
            if (VEC && j + 1 < K) *(__nv_bfloat162 *)(orow + j) = __floats2bfloat162_rn(-INFINITY, -INFINITY);
            else
                for (int e = 0; e < 2; e++)
                    if (j + e < K) orow[j + e] = ninf;
            any_cur = any_next;
            continue;
        }
        const __nv_bfloat16 *kb = sk + buf * IDXG_KT * ldq + b_off;
        float acc[MT][8][4];
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int nj = 0; nj < 8; nj++) acc[mi][nj][0] = acc[mi][nj][1] = acc[mi][nj][2] = acc[mi][nj][3] = 0.f;
#pragma unroll 2
        for (int k0 = 0; k0 < D; k0 += 16) {
            unsigned b[8][2];
#pragma unroll
            for (int p = 0; p < 4; p++) {
                unsigned r[4];
                idxm_ldmatrix_x4(r, kb + 16 * p * ldq + k0);
                b[2 * p][0] = r[0];
                b[2 * p][1] = r[1];
                b[2 * p + 1][0] = r[2];
                b[2 * p + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < MT; mi++) {
                unsigned a[4];
                idxm_ldmatrix_x4(a, qa + 16 * mi * ldq + k0);
#pragma unroll
                for (int nj = 0; nj < 8; nj++) dsa_mma_bf16_16816(acc[mi][nj], a, b[nj]);
            }
        }
        float v[16];
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = 0.f;
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int nj = 0; nj < 8; nj++) {
                v[2 * nj] = fmaf(wl[mi], fmaxf(acc[mi][nj][0], 0.f), v[2 * nj]);
                v[2 * nj + 1] = fmaf(wl[mi], fmaxf(acc[mi][nj][1], 0.f), v[2 * nj + 1]);
                v[2 * nj] = fmaf(wh[mi], fmaxf(acc[mi][nj][2], 0.f), v[2 * nj]);
                v[2 * nj + 1] = fmaf(wh[mi], fmaxf(acc[mi][nj][3], 0.f), v[2 * nj + 1]);
            }
        // Head sums of tile keys 2 lane and 2 lane + 1 end up in v[0], v[1] (see the dense kernel).
        idxm_reduce_scatter<8>(v, lane);
        idxm_reduce_scatter<4>(v, lane);
        idxm_reduce_scatter<2>(v, lane);
        const int *kk = skey + buf * IDXG_KT + 2 * lane;
        float r0 = kk[0] >= 0 ? v[0] : -INFINITY, r1 = kk[1] >= 0 ? v[1] : -INFINITY;
        if (VEC && j + 1 < K) *(__nv_bfloat162 *)(orow + j) = __floats2bfloat162_rn(r0, r1);
        else {
            if (j < K) orow[j] = dsa_from_float<__nv_bfloat16>(r0);
            if (j + 1 < K) orow[j + 1] = dsa_from_float<__nv_bfloat16>(r1);
        }
        any_cur = any_next;
    }
    idxm_cp_async_wait_all();  // no copy may still be in flight when the CTA exits
}

// Backward, given Gd = dL/dlogits [T, K] (fp32). One CTA per row t with MT warps: warp w owns heads
// 16w .. 16w + 15 for the whole row, so its dw and dq (16 x DD fp32 accumulators) stay in registers
// and need no reduction. The CTA walks tiles of 64 slots (keys gathered into a shared tile, double
// buffered, the next one loading during this one). Per tile:
//   1. S = q_w K^T (16 heads x 64 keys, K = DD), dw += sum_j dout_j ReLU(S), and
//      G = dout_j w_h 1[S > 0] (bf16), kept as mma A fragments and stored to shared memory [head][key];
//   2. dq_w += G K (M = 16 heads, N = DD, K = 64 keys; the key tile read with ldmatrix .trans);
//   3. after a barrier, dk_j += G^T q for 16-key blocks spread over the warps (M = 16 keys, N = DD,
//      K = H heads; G^T and q read with ldmatrix .trans), added with 16-byte fp32 atomics.
// The simple kernel's semantics: 1[S > 0] is false for NaN; invalid slots have dout = 0 and zero keys.
// Measured (H200, H 64, D 128, session 18): issuing a tile's index and dout loads before its copies took
// T 4096 / 8192 from 2.169 / 4.775 to 1.894 / 4.105 ms (the reduction floor: 1.39 / 3.24 ms). Phases 2
// and 3 split over D across the warps instead (G read from shared memory for every head, 24 + 24
// ldmatrix a warp a tile instead of 32 + 36) measured 1.912 / 4.175: no gain, not kept. dk's float4s
// through shared memory instead of lane-pair shuffles: 1.863 / 4.139 against 1.895 / 4.121 ms at H 64,
// D 128, and 0.461 against 0.600 ms at H 16, D 64, K 512, T 8192 (small.cfg's shape; floor 0.452).
// 3 CTAs an SM (the bound holds the registers at 168; four spilled values, reloaded a few times a tile).
// BULK (sm_90a, DSA_GATHER_BWD_BULK=1): dk's rows leave by bulk reductions (cp.reduce.async.bulk, one
// instruction per key and half row, the adds done by the copy engine in L2) instead of float4 atomics.
// DKM, how the phases split over the warps (H 64, D_I 128 for 1 and 3; 0, the 16-key blocks above, the
// default elsewhere, DSA_GATHER_BWD_BLOCKS=1 at H 64, D_I 128):
//  1 (DSA_GATHER_BWD_DKCOLS=1): by column slices: warp w takes all 64 keys of the tile and columns
//    32 w .. 32 w + 31, so each warp reads q's slice once a tile (4 KB instead of all 16 KB of q for every
//    16 keys), and its rows leave as whole 128-byte lines (4 rows a warp instruction; measured 3826 GB/s
//    against 3146 for the 64-byte pieces of 8 rows, session 25).
//  (2, dk by one wgmma m64n128k16 a tile with q and G in swizzled tiles, measured slower than 3 and removed:
//    bench/RESULTS.md, session 26.)
//  3 (the default at H 64, D_I 128): every phase split so that no warp reads a whole operand it shares: S by
//    2 x 2 warps (32 heads x 32 keys each: q's and the tile's halves, 32 ldmatrix a tile instead of 40),
//    then, after the barrier, dq by column slices like dk (all 64 heads x 32 columns, G read from shared
//    memory: 24 instead of 32), and dk as in 1 (24), staged through a shared region of its own.
//  4 (the default at H 64, D_I 128 since session 27; DSA_GATHER_BWD_STAGED=1 keeps 3): 3 with dk's rows
//    formed in registers (dsa_red_rows_f32x4_lines: two transposing shuffle steps an m16 tile, 16 shuffles)
//    instead of through the staging region (8 float2 stores, 4 float4 loads and two warp barriers an m16
//    tile): the same whole 128-byte lines, less shared-memory traffic (the kernel's L1 / shared pipe was
//    91% busy under ncu, session 24).
// LINES (DKM 0, not BULK; the default since session 27, DSA_GATHER_BWD_CHUNKS=1 turns it off): a 16-key
//    block's dk rows formed in registers as whole 128-byte lines (dsa_red_rows_f32x4_lines, 4 rows a warp
//    instruction) instead of 16-column chunks through shared memory (8 rows x 64 bytes an instruction;
//    H200, T 8192, H_I 16, D_I 64, K 512, small.cfg's shape: 0.442 / 0.444 -> 0.370 / 0.379 ms).
template <int MT, int DD, bool BULK = false, int DKM = 0, bool LINES = false>
__global__ void __launch_bounds__(32 * MT, 3) indexer_gather_bwd_mma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ w,
    const int *__restrict__ idx, const int *__restrict__ topk_length, const float *__restrict__ Gd,
    float *__restrict__ dq, float *__restrict__ dk, float *__restrict__ dw, int64_t T, int64_t K, int64_t S,
    bool dq_store) {
    constexpr int NW = MT, NT = 32 * NW, H = 16 * MT, ldq = DD + 8, D8 = DD / 8, ldg = IDXG_KT + 8;
    static_assert(DKM == 0 || (MT == 4 && DD == 128 && IDXG_KT == 64 && !BULK), "dk modes 1, 3, 4: H 64, D 128");
    static_assert(!LINES || (DKM == 0 && !BULK && DD % 32 == 0), "LINES: the 16-key blocks' dk");
    constexpr bool SLICES = DKM >= 3;  // every phase by slices (3, 4)
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem, *sk = sq + H * ldq, *sg = sk + 2 * IDXG_KT * ldq;
    int *skey = (int *)(sg + H * ldg);
    float *sdo = (float *)(skey + 2 * IDXG_KT);
    float *sst = sdo + 2 * IDXG_KT;  // DKM 3: each warp's 16 x IDXG_DKS_ST floats of dk staging
    int64_t t = T - 1 - (int64_t)blockIdx.x;
    for (int i = tid; i < H * D8; i += NT) {
        int r = i / D8, v = i % D8;
        idxm_cp_async16(sq + r * ldq + v * 8, q + (t * H + r) * (int64_t)DD + v * 8, true);
    }
    int64_t n_tiles = (K + IDXG_KT - 1) / IDXG_KT;
    const int64_t k_end = dsa_row_k_end(topk_length, t, K);
    auto slot = [&](int64_t j) -> int {
        if (j >= k_end) return -1;
        int s = idx[t * K + j];
        return s >= 0 && (int64_t)s < S ? s : -1;
    };
    // Gathers tile `tile` (keys, their indices, dout with 0 at invalid slots) into buffer `buf`. Every
    // index and dout load is issued before the first copy (a cp.async is a compiler barrier to loads:
    // loads between copies would wait one L2 round trip each).
    auto fetch = [&](int64_t tile, int buf) {
        const int64_t j0 = tile * IDXG_KT;
        constexpr int RPT = (IDXG_KT + NT - 1) / NT;  // [key, dout] slots per thread
        int rs[RPT];
        float rg[RPT];
#pragma unroll
        for (int i = 0; i < RPT; i++) {
            int j = tid + i * NT;
            rs[i] = j < IDXG_KT ? slot(j0 + j) : -1;
            rg[i] = j < IDXG_KT && j0 + j < K ? Gd[t * K + j0 + j] : 0.f;
        }
        // 8 threads per key, a warp's copy reading 4 keys (H200, T 8192: 176.0 TFLOP/s against 165.1 with
        // 16 threads per key; the forward gather, per warp, measured slower that way: 110.4 against 137.2).
        constexpr bool BY8 = D8 % 8 == 0;
        constexpr int KPT = BY8 ? (IDXG_KT + NT / 8 - 1) / (NT / 8) : 1;  // keys per thread (the last may be past the tile)
        int ks[KPT];
        if constexpr (BY8) {
#pragma unroll
            for (int i = 0; i < KPT; i++) {
                int j = (tid >> 3) + i * (NT / 8);
                ks[i] = j < IDXG_KT ? slot(j0 + j) : -1;
            }
        }
#pragma unroll
        for (int i = 0; i < RPT; i++)
            if (tid + i * NT < IDXG_KT) {
                skey[buf * IDXG_KT + tid + i * NT] = rs[i];
                sdo[buf * IDXG_KT + tid + i * NT] = rs[i] >= 0 ? rg[i] : 0.f;
            }
        __nv_bfloat16 *dst = sk + buf * IDXG_KT * ldq;
        if constexpr (BY8) {
#pragma unroll
            for (int i = 0; i < KPT; i++) {
                int j = (tid >> 3) + i * (NT / 8);
                if (j < IDXG_KT)
                    for (int v = tid & 7; v < D8; v += 8)
                        idxm_cp_async16(dst + j * ldq + v * 8, k + (int64_t)(ks[i] >= 0 ? ks[i] : 0) * DD + v * 8, ks[i] >= 0);
            }
        } else {
            for (int i = tid; i < IDXG_KT * D8; i += NT) {
                int j = i / D8, v = i % D8, s = slot(j0 + j);
                idxm_cp_async16(dst + j * ldq + v * 8, k + (int64_t)(s >= 0 ? s : 0) * DD + v * 8, s >= 0);
            }
        }
    };
    if (n_tiles > 0) fetch(0, 0);
    idxm_cp_async_commit();  // group: q and tile 0

    // DKM 3, 4: warp (wh, wk) = (warp / 2, warp % 2) scores heads 32 wh .. + 31 against keys 32 wk .. + 31
    // (lane (g, c): heads 32 wh + 16 m + g, + 8); else warp w scores heads 16 w .. + 15 against all keys.
    const int h0 = SLICES ? 32 * (warp >> 1) : 16 * warp, kw0 = SLICES ? 32 * (warp & 1) : 0;
    const float w_lo = __bfloat162float(w[t * H + h0 + g]), w_hi = __bfloat162float(w[t * H + h0 + g + 8]);
    float w3_lo = 0.f, w3_hi = 0.f, dw3_lo = 0.f, dw3_hi = 0.f;  // DKM 3, 4: heads h0 + 16 + g, + 8
    if constexpr (SLICES) w3_lo = __bfloat162float(w[t * H + h0 + 16 + g]), w3_hi = __bfloat162float(w[t * H + h0 + 24 + g]);
    float dqa[DD / 8][4];
#pragma unroll
    for (int n = 0; n < DD / 8; n++) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.f;
    float dw_lo = 0.f, dw_hi = 0.f;
    // ldmatrix lane offsets: q rows of this warp's heads (A, non-trans), key tile (B for S, non-trans),
    // key tile / q as k-major B (trans), G^T as k-major A (trans).
    const int qa_row = h0 + (lane & 7) + 8 * ((lane >> 3) & 1), qa_col = 8 * (lane >> 4);
    const int b_off = ((lane & 7) + 8 * (lane >> 4)) * ldq + 8 * ((lane >> 3) & 1);
    const int bt_off = ((lane & 7) + 8 * ((lane >> 3) & 1)) * ldq + 8 * (lane >> 4);
    const int at_off = ((lane & 7) + 8 * (lane >> 4)) * ldg + 8 * ((lane >> 3) & 1);

    for (int64_t it = 0; it < n_tiles; it++) {
        int buf = (int)(it & 1);
        idxm_cp_async_wait_all();
        __syncthreads();  // tile it landed for every thread; every warp is done with tile it - 1
        if (it + 1 < n_tiles) fetch(it + 1, buf ^ 1);
        idxm_cp_async_commit();
        const int *kt = skey + buf * IDXG_KT;
        if (!__any_sync(0xffffffffu, kt[lane] >= 0 || kt[lane + 32] >= 0)) continue;  // CTA-uniform
        const __nv_bfloat16 *kb = sk + buf * IDXG_KT * ldq;
        const float *dot = sdo + buf * IDXG_KT;
        if constexpr (SLICES) {
            // 1''. Scores of heads h0 .. h0 + 31 (2 m16 tiles) against keys kw0 .. kw0 + 31 (4 n8 tiles), then
            // G (to shared memory only) and dw's partials over these keys.
            float acc[2][4][4];
#pragma unroll
            for (int m = 0; m < 2; m++)
#pragma unroll
                for (int n = 0; n < 4; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.f;
#pragma unroll
            for (int k0 = 0; k0 < DD; k0 += 16) {
                unsigned a[2][4], b[4][2];
#pragma unroll
                for (int m = 0; m < 2; m++) idxm_ldmatrix_x4(a[m], sq + (qa_row + 16 * m) * ldq + qa_col + k0);
                // (inline, not idxm_ldmatrix_b: through it ptxas schedules this kernel differently, 168
                // registers against 167, and this is the form measured on the H200, session 26)
#pragma unroll
                for (int p = 0; p < 2; p++) {
                    unsigned r[4];
                    idxm_ldmatrix_x4(r, kb + b_off + (kw0 + 16 * p) * ldq + k0);
                    b[2 * p][0] = r[0];
                    b[2 * p][1] = r[1];
                    b[2 * p + 1][0] = r[2];
                    b[2 * p + 1][1] = r[3];
                }
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int n = 0; n < 4; n++) dsa_mma_bf16_16816(acc[m][n], a[m], b[n]);
            }
#pragma unroll
            for (int n = 0; n < 4; n++) {
                const int key = kw0 + 8 * n + 2 * c;
                const float2 d2 = *(const float2 *)(dot + key);
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    const float s0 = acc[m][n][0], s1 = acc[m][n][1], s2 = acc[m][n][2], s3 = acc[m][n][3];
                    const float wl = m ? w3_lo : w_lo, wh = m ? w3_hi : w_hi;
                    const float dl = (s0 > 0.f ? d2.x * s0 : 0.f) + (s1 > 0.f ? d2.y * s1 : 0.f);
                    const float dh = (s2 > 0.f ? d2.x * s2 : 0.f) + (s3 > 0.f ? d2.y * s3 : 0.f);
                    if (m) dw3_lo += dl, dw3_hi += dh;
                    else dw_lo += dl, dw_hi += dh;
                    *(unsigned *)(sg + (h0 + 16 * m + g) * ldg + key) = idxg_pack(s0 > 0.f ? d2.x * wl : 0.f, s1 > 0.f ? d2.y * wl : 0.f);
                    *(unsigned *)(sg + (h0 + 16 * m + g + 8) * ldg + key) = idxg_pack(s2 > 0.f ? d2.x * wh : 0.f, s3 > 0.f ? d2.y * wh : 0.f);
                }
            }
            __syncthreads();  // G of every head and key is in shared memory
            // 2''. dq by column slices: M = the 64 heads (4 m16 tiles, G read non-transposed), N = this warp's
            // 32 columns, K-dim = the 64 keys; dqa[4 m + n] holds heads 16 m + g, + 8 at columns 32 w + 8 n + 2 c.
            if (dq) {
#pragma unroll
                for (int ks = 0; ks < 4; ks++) {
                    unsigned b[4][2];
                    idxm_ldmatrix_b<2, true>(b, kb + bt_off + 16 * ks * ldq + 32 * warp, 16);
#pragma unroll
                    for (int m = 0; m < 4; m++) {
                        unsigned a[4];
                        idxm_ldmatrix_x4(a, sg + (16 * m + (lane & 7) + 8 * ((lane >> 3) & 1)) * ldg + 16 * ks + 8 * (lane >> 4));
#pragma unroll
                        for (int n = 0; n < 4; n++) dsa_mma_bf16_16816(dqa[4 * m + n], a, b[n]);
                    }
                }
            }
        } else {
        // 1. Scores of this warp's 16 heads against the 64 keys.
        float acc[8][4];
#pragma unroll
        for (int nj = 0; nj < 8; nj++) acc[nj][0] = acc[nj][1] = acc[nj][2] = acc[nj][3] = 0.f;
#pragma unroll
        for (int k0 = 0; k0 < DD; k0 += 16) {
            unsigned a[4], b[8][2];
            idxm_ldmatrix_x4(a, sq + qa_row * ldq + qa_col + k0);
            idxm_ldmatrix_b<4, false>(b, kb + b_off + k0, 16 * ldq);
#pragma unroll
            for (int nj = 0; nj < 8; nj++) dsa_mma_bf16_16816(acc[nj], a, b[nj]);
        }
        // G and dw. Lane (g, c) holds heads h0 + g (acc[.][0..1]) and h0 + g + 8 (acc[.][2..3]) at
        // keys 8 nj + 2c + {0, 1}.
        unsigned ga[4][4];
#pragma unroll
        for (int nj = 0; nj < 8; nj++) {
            float2 d2 = *(const float2 *)(dot + 8 * nj + 2 * c);
            float s0 = acc[nj][0], s1 = acc[nj][1], s2 = acc[nj][2], s3 = acc[nj][3];
            dw_lo += (s0 > 0.f ? d2.x * s0 : 0.f) + (s1 > 0.f ? d2.y * s1 : 0.f);
            dw_hi += (s2 > 0.f ? d2.x * s2 : 0.f) + (s3 > 0.f ? d2.y * s3 : 0.f);
            unsigned lo = idxg_pack(s0 > 0.f ? d2.x * w_lo : 0.f, s1 > 0.f ? d2.y * w_lo : 0.f);
            unsigned hi = idxg_pack(s2 > 0.f ? d2.x * w_hi : 0.f, s3 > 0.f ? d2.y * w_hi : 0.f);
            ga[nj >> 1][(nj & 1) * 2] = lo;      // a0 / a2: head g, keys 16 (nj / 2) + 8 (nj & 1) + 2c
            ga[nj >> 1][(nj & 1) * 2 + 1] = hi;  // a1 / a3: head g + 8
            *(unsigned *)(sg + (h0 + g) * ldg + 8 * nj + 2 * c) = lo;
            *(unsigned *)(sg + (h0 + g + 8) * ldg + 8 * nj + 2 * c) = hi;
        }
        // 2. dq_w += G K: K-dim = the 64 keys in 4 steps, N = DD in pairs of n8 tiles.
        if (dq) {
#pragma unroll
            for (int ks = 0; ks < 4; ks++)
#pragma unroll
                for (int dp = 0; dp < DD / 16; dp++) {
                    unsigned r[4];
                    idxm_ldmatrix_x4_trans(r, kb + bt_off + 16 * ks * ldq + 16 * dp);
                    unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
                    dsa_mma_bf16_16816(dqa[2 * dp], ga[ks], b0);
                    dsa_mma_bf16_16816(dqa[2 * dp + 1], ga[ks], b1);
                }
        }
        __syncthreads();  // G of every head is in shared memory
        }
        // 3'. dk by column slices (DKM 1, 3, 4): M = the tile's 64 keys (4 m16 tiles), N = this warp's 32 columns.
        if constexpr (DKM >= 1) {
            if (dk) {
                constexpr int SST = IDXG_DKS_ST;
                static_assert(DKM >= 3 || IDXG_DKS_BYTES(NW) <= sizeof(__nv_bfloat16) * IDXG_KT * ldq,
                              "DKM 1 stages dk in the tile's key buffer");
                const int col0 = 32 * warp;
                float dka[4][4][4];  // [m16 tile][n8 tile][fragment]
#pragma unroll
                for (int m = 0; m < 4; m++)
#pragma unroll
                    for (int n = 0; n < 4; n++) dka[m][n][0] = dka[m][n][1] = dka[m][n][2] = dka[m][n][3] = 0.f;
#pragma unroll
                for (int hk = 0; hk < MT; hk++) {
                    unsigned b[4][2];  // this warp's 32 columns of q's heads 16 hk .. 16 hk + 15, as four n8 B tiles
                    idxm_ldmatrix_b<2, true>(b, sq + bt_off + 16 * hk * ldq + col0, 16);
#pragma unroll
                    for (int m = 0; m < 4; m++) {
                        unsigned a[4];
                        idxm_ldmatrix_x4_trans(a, sg + at_off + 16 * hk * ldg + 16 * m);
#pragma unroll
                        for (int n = 0; n < 4; n++) dsa_mma_bf16_16816(dka[m][n], a, b[n]);
                    }
                }
                if constexpr (DKM == 4) {  // whole lines formed by shuffles, an m16 tile at a time
#pragma unroll
                    for (int m = 0; m < 4; m++) {
                        dsa_red_rows_f32x4_lines<DD, 4>(dk, &dka[m][0][0], [&](int r) { return kt[16 * m + r]; }, col0, lane);
                    }
                    continue;
                }
                // Out through this warp's 16 x SST floats of the tile's key buffer (DKM 1: free, every warp
                // is past phase 2, the buffer is refilled after the next tile's barrier; DKM 3: its own
                // region, phase 2'' may still read the key buffer), one m16 tile at a time.
                float *st = (DKM >= 3 ? sst : (float *)(sk + buf * IDXG_KT * ldq)) + warp * 16 * SST;
#pragma unroll
                for (int m = 0; m < 4; m++) {
                    __syncwarp();  // the previous tile's rows have been read back
#pragma unroll
                    for (int n = 0; n < 4; n++) {
                        *(float2 *)(st + g * SST + 8 * n + 2 * c) = make_float2(dka[m][n][0], dka[m][n][1]);
                        *(float2 *)(st + (g + 8) * SST + 8 * n + 2 * c) = make_float2(dka[m][n][2], dka[m][n][3]);
                    }
                    __syncwarp();
#pragma unroll
                    for (int i = 0; i < 4; i++) {  // lane -> row 4 i + lane / 8, float4 lane % 8: 4 whole lines an instruction
                        const int row = 4 * i + (lane >> 3), c4 = lane & 7, key = kt[16 * m + row];
                        const float4 v = *(const float4 *)(st + row * SST + 4 * c4);
                        if (key >= 0) atomicAdd((float4 *)(dk + (int64_t)key * DD + col0 + 4 * c4), v);
                    }
                }
            }
            continue;
        }
        // 3. dk of 16-key blocks: M = keys, N = DD, K-dim = heads.
        if (dk)
            for (int kb0 = 16 * warp; kb0 < IDXG_KT; kb0 += 16 * NW) {
                int key_lo = kt[kb0 + g], key_hi = kt[kb0 + g + 8];
                if (!__any_sync(0xffffffffu, key_lo >= 0 || key_hi >= 0)) continue;  // warp-uniform
                float dka[DD / 8][4];
#pragma unroll
                for (int n = 0; n < DD / 8; n++) dka[n][0] = dka[n][1] = dka[n][2] = dka[n][3] = 0.f;
#pragma unroll
                for (int hk = 0; hk < MT; hk++) {
                    unsigned a[4];
                    idxm_ldmatrix_x4_trans(a, sg + at_off + 16 * hk * ldg + kb0);
#pragma unroll
                    for (int dp = 0; dp < DD / 16; dp++) {
                        unsigned r[4];
                        idxm_ldmatrix_x4_trans(r, sq + bt_off + 16 * hk * ldq + 16 * dp);
                        unsigned b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
                        dsa_mma_bf16_16816(dka[2 * dp], a, b0);
                        dsa_mma_bf16_16816(dka[2 * dp + 1], a, b1);
                    }
                }
                if constexpr (BULK) {
                    // Half rows (DD / 2 floats, rows DD / 2 + 4 apart: MT warps x 16 rows fill the
                    // tile's key buffer exactly) staged in shared memory, then lane r < 16 reduces row
                    // r into dk by one bulk copy; the half is restaged only once its copies have read it.
                    constexpr int HC = DD / 2, SB = HC + 4;
                    float *st = (float *)(sk + buf * IDXG_KT * ldq) + warp * 16 * SB;
                    const int key_b = lane < 16 ? kt[kb0 + lane] : -1;
#pragma unroll
                    for (int half = 0; half < 2; half++) {
                        if (half) {
                            dsa_bulk_wait_read<0>();
                            __syncwarp();
                        }
#pragma unroll
                        for (int n = 0; n < HC / 8; n++) {
                            const int nn = half * (HC / 8) + n;
                            *(float2 *)(st + g * SB + 8 * n + 2 * c) = make_float2(dka[nn][0], dka[nn][1]);
                            *(float2 *)(st + (g + 8) * SB + 8 * n + 2 * c) = make_float2(dka[nn][2], dka[nn][3]);
                        }
                        dsa_fence_proxy_async();  // the rows -> visible to the bulk copies
                        __syncwarp();
                        if (key_b >= 0) dsa_bulk_reduce_add_f32(dk + (int64_t)key_b * DD + half * HC, dsa_smem_addr(st + lane * SB), HC * 4);
                        dsa_bulk_commit();
                    }
                    dsa_bulk_wait_read<0>();  // the buffer is free for the next block / the next tile's copies
                    __syncwarp();
                    continue;
                }
                if constexpr (LINES) {
                    dsa_red_rows_f32x4_lines<DD, DD / 8>(dk, &dka[0][0], [&](int r) { return kt[kb0 + r]; }, 0, lane);
                    continue;
                }
                // The block goes out through shared memory, 16 columns at a time, via this warp's 16
                // rows of 20 floats in the tile's key buffer (every warp is past phase 2, and the
                // buffer is refilled only after the next tile's barrier). Each lane then reads whole
                // float4s of a row: no shuffle a value (the exchange's shuffle waits held 16.5% of
                // the stall samples, ncu, session 18).
                constexpr int SST = 20;
                float *st = (float *)(sk + buf * IDXG_KT * ldq) + warp * 16 * SST;
#pragma unroll
                for (int p = 0; p < DD / 16; p++) {
                    __syncwarp();  // the previous chunk has been read back
                    *(float2 *)(st + g * SST + 2 * c) = make_float2(dka[2 * p][0], dka[2 * p][1]);
                    *(float2 *)(st + (g + 8) * SST + 2 * c) = make_float2(dka[2 * p][2], dka[2 * p][3]);
                    *(float2 *)(st + g * SST + 8 + 2 * c) = make_float2(dka[2 * p + 1][0], dka[2 * p + 1][1]);
                    *(float2 *)(st + (g + 8) * SST + 8 + 2 * c) = make_float2(dka[2 * p + 1][2], dka[2 * p + 1][3]);
                    __syncwarp();
#pragma unroll
                    for (int i = 0; i < 2; i++) {  // 16 rows x 4 float4s: lane -> row 8 i + lane / 4, float4 lane % 4
                        const int row = 8 * i + (lane >> 2), c4 = lane & 3;
                        const float4 v = *(const float4 *)(st + row * SST + 4 * c4);
                        const int key = i ? key_hi : key_lo;  // rows g and g + 8: this lane's own keys
                        if (key >= 0) atomicAdd((float4 *)(dk + (int64_t)key * DD + 16 * p + 4 * c4), v);
                    }
                }
            }
    }
    idxm_cp_async_wait_all();
    // dq and dw of the row belong to this CTA alone: plain read-modify-write (dq: stores when its buffer
    // is the gradient's first and holds anything; the CTA writes all H x DD of row t).
    if (dq && SLICES) {  // dqa[4 m + n]: heads 16 m + g, + 8 at columns 32 warp + 8 n + 2 c
#pragma unroll
        for (int m = 0; m < 4; m++) {
            float *r_lo = dq + (t * H + 16 * m + g) * DD + 32 * warp + 2 * c, *r_hi = r_lo + 8 * DD;
#pragma unroll
            for (int n = 0; n < 4; n++) {
                const float *f = dqa[4 * m + n];
                const float2 z = make_float2(0.f, 0.f);
                float2 a = dq_store ? z : *(float2 *)(r_lo + 8 * n), b = dq_store ? z : *(float2 *)(r_hi + 8 * n);
                *(float2 *)(r_lo + 8 * n) = make_float2(a.x + f[0], a.y + f[1]);
                *(float2 *)(r_hi + 8 * n) = make_float2(b.x + f[2], b.y + f[3]);
            }
        }
    } else if (dq) {
        float *r_lo = dq + (t * H + h0 + g) * DD + 2 * c, *r_hi = r_lo + 8 * DD;
#pragma unroll
        for (int n = 0; n < DD / 8; n++) {
            const float2 z = make_float2(0.f, 0.f);
            float2 a = dq_store ? z : *(float2 *)(r_lo + 8 * n), b = dq_store ? z : *(float2 *)(r_hi + 8 * n);
            *(float2 *)(r_lo + 8 * n) = make_float2(a.x + dqa[n][0], a.y + dqa[n][1]);
            *(float2 *)(r_hi + 8 * n) = make_float2(b.x + dqa[n][2], b.y + dqa[n][3]);
        }
    }
    if (dw) {
        dw_lo += __shfl_xor_sync(0xffffffffu, dw_lo, 1);
        dw_lo += __shfl_xor_sync(0xffffffffu, dw_lo, 2);
        dw_hi += __shfl_xor_sync(0xffffffffu, dw_hi, 1);
        dw_hi += __shfl_xor_sync(0xffffffffu, dw_hi, 2);
        if constexpr (SLICES) {
            // Warps 2 wh and 2 wh + 1 hold halves (their keys) of heads h0 .. h0 + 31: the odd one's go
            // through shared memory (dout's slots: every warp is past the last tile).
            dw3_lo += __shfl_xor_sync(0xffffffffu, dw3_lo, 1);
            dw3_lo += __shfl_xor_sync(0xffffffffu, dw3_lo, 2);
            dw3_hi += __shfl_xor_sync(0xffffffffu, dw3_hi, 1);
            dw3_hi += __shfl_xor_sync(0xffffffffu, dw3_hi, 2);
            __syncthreads();
            if (kw0 && c == 0) {
                sdo[h0 + g] = dw_lo;
                sdo[h0 + g + 8] = dw_hi;
                sdo[h0 + g + 16] = dw3_lo;
                sdo[h0 + g + 24] = dw3_hi;
            }
            __syncthreads();
            if (!kw0 && c == 0) {
                dw[t * H + h0 + g] += dw_lo + sdo[h0 + g];
                dw[t * H + h0 + g + 8] += dw_hi + sdo[h0 + g + 8];
                dw[t * H + h0 + g + 16] += dw3_lo + sdo[h0 + g + 16];
                dw[t * H + h0 + g + 24] += dw3_hi + sdo[h0 + g + 24];
            }
        } else if (c == 0) {
            dw[t * H + h0 + g] += dw_lo;
            dw[t * H + h0 + g + 8] += dw_hi;
        }
    }
}

template <typename T, typename A, typename O>
static dsa_status launch_logits(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0];
    if (T_ == 0 || S == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)(H + IDX_KT) * (D + 1) + H + IDX_NT);
    auto kern = indexer_logits_kernel<T, A, O>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_logits"));
    dim3 grid((unsigned)((S + IDX_KT - 1) / IDX_KT), (unsigned)T_);
    kern<<<grid, IDX_NT, smem, dsa_stream()>>>((const T *)q->data, (const T *)k->data, (const T *)w->data,
                                               (const int *)start->data, (const int *)end->data, (O *)out->data,
                                               (int)H, (int)D, S);
    CUDA_LAUNCH_CHECK("indexer_logits");
    return DSA_OK;
}

template <int ROWS, typename O, bool VEC>
static dsa_status launch_logits_mma_o(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                      const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out, size_t smem) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0];
    void (*kern)(const __nv_bfloat16 *, const __nv_bfloat16 *, const __nv_bfloat16 *, const int *, const int *, O *,
                 int64_t, int, int64_t);
    switch (H) {
    case 16: kern = indexer_logits_mma_kernel<ROWS, 1, O, VEC>; break;
    case 32: kern = indexer_logits_mma_kernel<ROWS, 2, O, VEC>; break;
    case 48: kern = indexer_logits_mma_kernel<ROWS, 3, O, VEC>; break;
    default: kern = indexer_logits_mma_kernel<ROWS, 4, O, VEC>; break;
    }
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_logits (mma)"));
    unsigned grid = (unsigned)((T_ + ROWS - 1) / ROWS);
    kern<<<grid, 32 * ROWS, smem, dsa_stream()>>>((const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data,
                                                  (const __nv_bfloat16 *)w->data, (const int *)start->data,
                                                  (const int *)end->data, (O *)out->data, T_, (int)D, S);
    CUDA_LAUNCH_CHECK("indexer_logits_mma");
    return DSA_OK;
}

static size_t logits_mma_smem(int rows, int64_t H, int64_t D) {
    return sizeof(__nv_bfloat16) * (size_t)(rows * H + 2 * IDXM_KT) * (size_t)(D + 8) + sizeof(int) * 2 * rows;
}

// Query rows per CTA: 4 by default (measured on H200, T = 8192: 4 rows 1.775 ms, 8 rows 1.836 ms);
// DSA_INDEXER_ROWS=8 selects the other variant.
static int logits_mma_rows() {
    static int rows = -1;
    if (rows < 0) rows = dsa_env_int("DSA_INDEXER_ROWS", 4) == 8 ? 8 : 4;
    return rows;
}

// The GPU's opt-in shared memory per block for the "does the tensor-core kernel fit" checks (0 when the
// device cannot be asked: the simple kernels then).
static size_t gather_max_smem() {
    size_t optin = 0;
    return dsa_smem_optin(&optin) == DSA_OK ? optin : 0;
}

// The tensor-core path takes bf16 q, k, w with H in {16, 32, 48, 64}, D % 16 == 0, 16-byte aligned q
// and k, fp32 or bf16 logits, and shared memory that fits (H 64: D <= 160 on H100); everything else
// goes to the simple kernel. DSA_INDEXER_SIMT=1 forces the simple kernel (for comparisons).
static bool use_logits_mma(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *out) {
    static int simt = -1;
    if (simt < 0) simt = dsa_env_flag("DSA_INDEXER_SIMT");
    if (simt) return false;
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2];
    if (q->dtype != DSA_BF16 || k->dtype != DSA_BF16 || w->dtype != DSA_BF16) return false;
    if (out->dtype != DSA_F32 && out->dtype != DSA_BF16) return false;
    if (H % 16 != 0 || H < 16 || H > 64 || D % 16 != 0 || D < 16 || T_ < 1 || k->shape[0] > INT_MAX) return false;
    if (((uintptr_t)q->data | (uintptr_t)k->data) % 16 != 0) return false;
    return logits_mma_smem(logits_mma_rows(), H, D) <= gather_max_smem();
}

static dsa_status launch_logits_mma(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                    const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t H = q->shape[1], D = q->shape[2], S = k->shape[0];
    if (S == 0) return DSA_OK;
    int rows = logits_mma_rows();
    size_t smem = logits_mma_smem(rows, H, D), osz = dsa_dtype_size(out->dtype);
    bool vec = S % 2 == 0 && (uintptr_t)out->data % (2 * osz) == 0, f32 = out->dtype == DSA_F32;
#define IDXM_LAUNCH(R, O, V) launch_logits_mma_o<R, O, V>(q, k, w, start, end, out, smem)
    if (rows == 4) {
        if (f32) return vec ? IDXM_LAUNCH(4, float, true) : IDXM_LAUNCH(4, float, false);
        return vec ? IDXM_LAUNCH(4, __nv_bfloat16, true) : IDXM_LAUNCH(4, __nv_bfloat16, false);
    }
    if (f32) return vec ? IDXM_LAUNCH(8, float, true) : IDXM_LAUNCH(8, float, false);
    return vec ? IDXM_LAUNCH(8, __nv_bfloat16, true) : IDXM_LAUNCH(8, __nv_bfloat16, false);
#undef IDXM_LAUNCH
}

template <typename T, typename A>
static dsa_status launch_gather(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx,
                                const dsa_tensor *topk_length, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0], K = idx->shape[1];
    if (T_ == 0 || K == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)H * (D + 1) + H + (IDX_NT / 32) * D);
    auto kern = indexer_gather_kernel<T, A>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits"));
    kern<<<(unsigned)T_, IDX_NT, smem, dsa_stream()>>>((const T *)q->data, (const T *)k->data, (const T *)w->data,
                                                       (const int *)idx->data,
                                                       topk_length ? (const int *)topk_length->data : NULL,
                                                       (T *)out->data, (int)H, (int)D, K, S);
    CUDA_LAUNCH_CHECK("indexer_gather");
    return DSA_OK;
}

template <typename T, typename A, bool DENSE>
static dsa_status launch_gather_bwd(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                    const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *start,
                                    const dsa_tensor *end, const dsa_tensor *G, dsa_tensor *dq, dsa_tensor *dk,
                                    dsa_tensor *dw) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0], K = DENSE ? S : idx->shape[1];
    if (H * D > (int64_t)IBW_ELEMS * IDX_NT)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "dsa_indexer_gather_logits backward (cuda): H*D = %lld > %d",
                             (long long)(H * D), IBW_ELEMS * IDX_NT);
    if (T_ == 0 || K == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)H * (D + 1) + 2 * H + IBW_SLOTS * D + 2 * IBW_SLOTS * H) + sizeof(int) * IBW_SLOTS;
    auto kern = indexer_gather_bwd_kernel<T, A, DENSE>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits backward"));
    kern<<<(unsigned)T_, IDX_NT, smem, dsa_stream()>>>(
        (const T *)q->data, (const T *)k->data, (const T *)w->data, idx ? (const int *)idx->data : NULL,
        topk_length ? (const int *)topk_length->data : NULL, start ? (const int *)start->data : NULL,
        end ? (const int *)end->data : NULL, (const A *)G->data, dq ? (A *)dq->data : NULL,
        dk ? (A *)dk->data : NULL, dw ? (A *)dw->data : NULL, (int)H, (int)D, K, S);
    CUDA_LAUNCH_CHECK("indexer_gather_bwd");
    return DSA_OK;
}

// ---- dispatch of the gathered logits (forward and backward) to the tensor-core kernels ----------
// DSA_GATHER_SIMT=1 forces the simple kernels (for comparisons). The forward runs 4 warps per CTA
// with double-buffered tiles (one CTA per SM at H 64, D 128); for tuning, DSA_GATHER_NW=2 takes 2
// double-buffered warps (two CTAs per SM) and DSA_GATHER_NW=8 8 single-buffered warps.
static bool gather_simt() {
    static int simt = -1;
    if (simt < 0) simt = dsa_env_flag("DSA_GATHER_SIMT");
    return simt != 0;
}
static int gather_nw() {
    static int nw = -1;
    if (nw < 0) {
        int e = dsa_env_int("DSA_GATHER_NW", 4);
        nw = e == 2 || e == 8 ? e : 4;
    }
    return nw;
}
static size_t gather_mma_smem(int nw, int64_t H, int64_t D) {
    int tiles = nw == 8 ? 8 : 2 * nw;  // NW 8 is single buffered
    return sizeof(__nv_bfloat16) * (size_t)(H + tiles * IDXG_KT) * (size_t)(D + 8) + sizeof(int) * tiles * IDXG_KT;
}
static size_t gather_bwd_mma_smem(int64_t H, int64_t D) {
    return sizeof(__nv_bfloat16) * ((size_t)(H + 2 * IDXG_KT) * (size_t)(D + 8) + (size_t)H * (IDXG_KT + 8)) +
           (sizeof(int) + sizeof(float)) * 2 * IDXG_KT;
}
// Shared conditions: bf16 q, k, w; H in {16, 32, 48, 64}; D % 16 == 0; 16-byte aligned q and k (the
// cp.async rows); i32 slot indices.
static bool gather_mma_inputs(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx) {
    if (gather_simt()) return false;
    int64_t H = q->shape[1], D = q->shape[2];
    if (q->dtype != DSA_BF16 || k->dtype != DSA_BF16 || w->dtype != DSA_BF16 || idx->dtype != DSA_I32) return false;
    if (H % 16 != 0 || H < 16 || H > 64 || D % 16 != 0 || D < 16 || k->shape[0] > INT_MAX) return false;
    return ((uintptr_t)q->data | (uintptr_t)k->data) % 16 == 0;
}
// Forward: bf16 logits (the op's output dtype is q's) and shared memory that fits.
static bool use_gather_mma(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx,
                           const dsa_tensor *out) {
    if (!gather_mma_inputs(q, k, w, idx) || out->dtype != DSA_BF16) return false;
    return gather_mma_smem(gather_nw(), q->shape[1], q->shape[2]) <= gather_max_smem();
}
// Backward: additionally D in {32, 64, 128} (dq and dk blocks are DD / 2 fp32 registers per lane),
// fp32 dout / dq / dk / dw, dk 16-byte and dq 8-byte aligned (vector atomics and stores).
static bool use_gather_bwd_mma(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx,
                               const dsa_tensor *G, const dsa_tensor *dq, const dsa_tensor *dk, const dsa_tensor *dw) {
    if (!gather_mma_inputs(q, k, w, idx)) return false;
    int64_t D = q->shape[2];
    if (D != 32 && D != 64 && D != 128) return false;
    if (G->dtype != DSA_F32 || (dq && dq->dtype != DSA_F32) || (dk && dk->dtype != DSA_F32) ||
        (dw && dw->dtype != DSA_F32))
        return false;
    if ((dk && (uintptr_t)dk->data % 16 != 0) || (dq && (uintptr_t)dq->data % 8 != 0)) return false;
    return gather_bwd_mma_smem(q->shape[1], D) <= gather_max_smem();
}

template <int NW, int STAGES, bool VEC>
static dsa_status launch_gather_mma_nw(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                       const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0], K = idx->shape[1];
    size_t smem = gather_mma_smem(NW, H, D);
    void (*kern)(const __nv_bfloat16 *, const __nv_bfloat16 *, const __nv_bfloat16 *, const int *, const int *,
                 __nv_bfloat16 *, int64_t, int, int64_t, int64_t);
    switch (H) {
    case 16: kern = indexer_gather_mma_kernel<NW, STAGES, 1, VEC>; break;
    case 32: kern = indexer_gather_mma_kernel<NW, STAGES, 2, VEC>; break;
    case 48: kern = indexer_gather_mma_kernel<NW, STAGES, 3, VEC>; break;
    default: kern = indexer_gather_mma_kernel<NW, STAGES, 4, VEC>; break;
    }
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits (mma)"));
    kern<<<(unsigned)T_, 32 * NW, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data, (const __nv_bfloat16 *)w->data,
        (const int *)idx->data, topk_length ? (const int *)topk_length->data : NULL, (__nv_bfloat16 *)out->data, T_,
        (int)D, K, S);
    CUDA_LAUNCH_CHECK("indexer_gather_mma");
    return DSA_OK;
}

static dsa_status launch_gather_mma(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                    const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out) {
    int64_t T_ = q->shape[0], K = idx->shape[1];
    if (T_ == 0 || K == 0) return DSA_OK;
    bool vec = K % 2 == 0 && (uintptr_t)out->data % 4 == 0;
    switch (gather_nw()) {
    case 2:
        return vec ? launch_gather_mma_nw<2, 2, true>(q, k, w, idx, topk_length, out)
                   : launch_gather_mma_nw<2, 2, false>(q, k, w, idx, topk_length, out);
    case 8:
        return vec ? launch_gather_mma_nw<8, 1, true>(q, k, w, idx, topk_length, out)
                   : launch_gather_mma_nw<8, 1, false>(q, k, w, idx, topk_length, out);
    default:
        return vec ? launch_gather_mma_nw<4, 2, true>(q, k, w, idx, topk_length, out)
                   : launch_gather_mma_nw<4, 2, false>(q, k, w, idx, topk_length, out);
    }
}

typedef void (*gather_bwd_mma_kern)(const __nv_bfloat16 *, const __nv_bfloat16 *, const __nv_bfloat16 *, const int *,
                                    const int *, const float *, float *, float *, float *, int64_t, int64_t, int64_t, bool);
// The 16-key-block kernel of NW warp pairs (H = 16 NW): dk by bulk reductions, as whole lines, or in chunks.
template <int NW, int DD>
static gather_bwd_mma_kern gather_bwd_blocks_kernel(bool bulk, bool lines) {
    return bulk ? indexer_gather_bwd_mma_kernel<NW, DD, true>
         : lines ? indexer_gather_bwd_mma_kernel<NW, DD, false, 0, true>
                 : indexer_gather_bwd_mma_kernel<NW, DD>;
}

template <int DD>
static dsa_status launch_gather_bwd_mma_d(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                          const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *G,
                                          dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw, bool dq_store) {
    int64_t T_ = q->shape[0], H = q->shape[1], S = k->shape[0], K = idx->shape[1];
    size_t smem = gather_bwd_mma_smem(H, DD);
    gather_bwd_mma_kern kern;
    // DSA_GATHER_BWD_BULK=1 (sm_90): dk by bulk reductions (comparisons).
    static int bulk = -1;
    if (bulk < 0) {
        bool sm90 = false;
        DSA_TRY(dsa_cuda_sm90(&sm90));
        bulk = sm90 && dsa_env_flag("DSA_GATHER_BWD_BULK");
    }
    // The 16-key blocks' dk rows as whole lines formed by shuffles (not bulk); DSA_GATHER_BWD_CHUNKS=1: in
    // 16-column chunks through shared memory (the default until session 26).
    static int lines = -1;
    if (lines < 0) lines = !dsa_env_flag("DSA_GATHER_BWD_CHUNKS");
    switch (H) {
    case 16: kern = gather_bwd_blocks_kernel<1, DD>(bulk, lines); break;
    case 32: kern = gather_bwd_blocks_kernel<2, DD>(bulk, lines); break;
    case 48: kern = gather_bwd_blocks_kernel<3, DD>(bulk, lines); break;
    default: kern = gather_bwd_blocks_kernel<4, DD>(bulk, lines); break;
    }
    // H 64, D_I 128, not bulk: the phases by slices, dk's lines formed by shuffles (the kernel's DKM 4,
    // session 27); DSA_GATHER_BWD_STAGED=1 the same with dk staged through shared memory (DKM 3; session
    // 26, H200, chain T 4096 / 8192: 3.652 / 7.213 ms against 4.143 / 8.161 for the 16-key blocks);
    // DSA_GATHER_BWD_DKCOLS=1 only dk by column slices (DKM 1: 3.691 / 7.367), DSA_GATHER_BWD_BLOCKS=1 the
    // 16-key blocks (DKM 0).
    static int dkm = -1;
    if (dkm < 0)
        dkm = dsa_env_flag("DSA_GATHER_BWD_BLOCKS") ? 0 : dsa_env_flag("DSA_GATHER_BWD_DKCOLS") ? 1
            : dsa_env_flag("DSA_GATHER_BWD_STAGED")                                         ? 3
                                                                                              : 4;
    if constexpr (DD == 128)
        if (dkm && !bulk && H == 64) {
            kern = dkm == 4   ? indexer_gather_bwd_mma_kernel<4, 128, false, 4>
                 : dkm == 3 ? indexer_gather_bwd_mma_kernel<4, 128, false, 3>
                            : indexer_gather_bwd_mma_kernel<4, 128, false, 1>;
            if (dkm == 3) smem += IDXG_DKS_BYTES(4);  // the dk staging region
        }
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits backward (mma)"));
    kern<<<(unsigned)T_, (unsigned)(2 * H), smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data, (const __nv_bfloat16 *)w->data,
        (const int *)idx->data, topk_length ? (const int *)topk_length->data : NULL, (const float *)G->data,
        dq ? (float *)dq->data : NULL, dk ? (float *)dk->data : NULL, dw ? (float *)dw->data : NULL, T_, K, S, dq_store);
    CUDA_LAUNCH_CHECK("indexer_gather_bwd_mma");
    return DSA_OK;
}

static dsa_status launch_gather_bwd_mma(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                        const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *G,
                                        dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw, bool dq_store) {
    int64_t T_ = q->shape[0], D = q->shape[2], K = idx->shape[1];
    if (T_ == 0 || K == 0 || (!dq && !dk && !dw)) return dq_store ? dsa_zero(dq) : DSA_OK;
    switch (D) {
    case 32: return launch_gather_bwd_mma_d<32>(q, k, w, idx, topk_length, G, dq, dk, dw, dq_store);
    case 64: return launch_gather_bwd_mma_d<64>(q, k, w, idx, topk_length, G, dq, dk, dw, dq_store);
    default: return launch_gather_bwd_mma_d<128>(q, k, w, idx, topk_length, G, dq, dk, dw, dq_store);
    }
}

#define IDX_DISPATCH(dt, name, call_f32, call_bf16, call_f64)                                                   \
    switch (dt) {                                                                                              \
    case DSA_F32: return call_f32;                                                                             \
    case DSA_BF16: return call_bf16;                                                                           \
    case DSA_F64: return call_f64;                                                                             \
    default: return dsa_error_set(DSA_ERR_DTYPE, "%s (cuda): unsupported dtype %s", name, dsa_dtype_name(dt)); \
    }

// v3 (wgmma, sm_90a, H 16, 32 or 64, D <= 128): dsa_indexer_wgmma_cuda.cu, the default where it applies (414 TFLOP/s
// against the mma.sync kernel's 310 at T 8192 on an H200); DSA_INDEXER_MMA=1 keeps the mma.sync kernel.
// DSA_ERR_UNSUPPORTED (no message) where it does not apply.
dsa_status dsa_indexer_logits_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                         const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out);

extern "C" dsa_status dsa_indexer_logits_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                   const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    // The logits come out in q's dtype or in f32.
    static int wgmma = -1;
    if (wgmma < 0) wgmma = !dsa_env_flag("DSA_INDEXER_MMA") && !dsa_env_flag("DSA_INDEXER_SIMT");
    if (wgmma) {
        dsa_status st = dsa_indexer_logits_wgmma_cuda(q, k, w, start, end, out);
        if (st != DSA_ERR_UNSUPPORTED) return st;
    }
    if (use_logits_mma(q, k, w, out))  // bf16 inputs, f32 or bf16 logits: tensor cores
        return launch_logits_mma(q, k, w, start, end, out);
    if (out->dtype == DSA_F32 && q->dtype == DSA_BF16) return launch_logits<__nv_bfloat16, float, float>(q, k, w, start, end, out);
    if (out->dtype != q->dtype)
        return dsa_error_set(DSA_ERR_DTYPE, "dsa_indexer_logits (cuda): logits dtype %s for inputs %s",
                             dsa_dtype_name(out->dtype), dsa_dtype_name(q->dtype));
    IDX_DISPATCH(q->dtype, "dsa_indexer_logits", (launch_logits<float, float, float>(q, k, w, start, end, out)),
                 (launch_logits<__nv_bfloat16, float, __nv_bfloat16>(q, k, w, start, end, out)),
                 (launch_logits<double, double, double>(q, k, w, start, end, out)));
}

// Gathered logits on wgmma (dsa_indexer_wgmma_cuda.cu); DSA_ERR_UNSUPPORTED (no message) where they do not
// apply. The forward is the default (163 TFLOP/s against mma.sync's 143 at T 8192, H200; DSA_GATHER_MMA=1
// keeps mma.sync); the backward is opt-in (DSA_GATHER_BWD_WGMMA=1: 98 against mma.sync's 174, slower).
dsa_status dsa_indexer_gather_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, dsa_tensor *out);
dsa_status dsa_indexer_gather_bwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                             const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *G,
                                             dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw);
static bool gather_wgmma() {
    static int on = -1;
    if (on < 0) on = !dsa_env_flag("DSA_GATHER_MMA") && !gather_simt();
    return on;
}
static bool gather_bwd_wgmma() {
    static int on = -1;
    if (on < 0) on = dsa_env_flag("DSA_GATHER_BWD_WGMMA") && !gather_simt();
    return on;
}

extern "C" dsa_status dsa_indexer_gather_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                   const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out) {
    if (gather_wgmma()) {
        dsa_status st = dsa_indexer_gather_wgmma_cuda(q, k, w, idx, topk_length, out);
        if (st != DSA_ERR_UNSUPPORTED) return st;
    }
    if (use_gather_mma(q, k, w, idx, out))  // bf16 inputs: tensor cores
        return launch_gather_mma(q, k, w, idx, topk_length, out);
    IDX_DISPATCH(q->dtype, "dsa_indexer_gather_logits", (launch_gather<float, float>(q, k, w, idx, topk_length, out)),
                 (launch_gather<__nv_bfloat16, float>(q, k, w, idx, topk_length, out)),
                 (launch_gather<double, double>(q, k, w, idx, topk_length, out)));
}

extern "C" dsa_status dsa_indexer_gather_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                               const dsa_tensor *idx, const dsa_tensor *topk_length,
                                               const dsa_tensor *G, dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw,
                                               bool dq_store) {
    dq_store = dq_store && dq;
    // DSA_DETERMINISTIC=1: dq and dw from the kernels below (fixed order already), dk key-major.
    if (dk && dsa_deterministic()) {
        if (dq || dw) DSA_TRY(dsa_indexer_gather_bwd_cuda(q, k, w, idx, topk_length, G, dq, NULL, dw, dq_store));
        return dsa_indexer_dk_det_cuda(q, k, w, idx, topk_length, NULL, NULL, G, dk);
    }
    if (gather_bwd_wgmma()) {  // opt-in; adds into dq
        if (dq_store) DSA_TRY(dsa_zero(dq));
        dq_store = false;
        dsa_status st = dsa_indexer_gather_bwd_wgmma_cuda(q, k, w, idx, topk_length, G, dq, dk, dw);
        if (st != DSA_ERR_UNSUPPORTED) return st;
    }
    if (use_gather_bwd_mma(q, k, w, idx, G, dq, dk, dw))  // bf16 inputs, fp32 gradients: tensor cores
        return launch_gather_bwd_mma(q, k, w, idx, topk_length, G, dq, dk, dw, dq_store);
    if (dq_store) DSA_TRY(dsa_zero(dq));  // the simple kernels add into dq
    IDX_DISPATCH(q->dtype, "dsa_indexer_gather_logits backward",
                 (launch_gather_bwd<float, float, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)),
                 (launch_gather_bwd<__nv_bfloat16, float, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)),
                 (launch_gather_bwd<double, double, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)));
}

extern "C" dsa_status dsa_indexer_logits_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                               const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *dout,
                                               dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    if (dk && dsa_deterministic()) {  // as the gathered backward: dk key-major, the rest below
        if (dq || dw) DSA_TRY(dsa_indexer_logits_bwd_cuda(q, k, w, start, end, dout, dq, NULL, dw));
        return dsa_indexer_dk_det_cuda(q, k, w, NULL, NULL, start, end, dout, dk);
    }
    // The window as slot lists on the gathered backward's tensor-core kernel (dsa_window_slots_cuda.cu)
    // where it takes the operands; DSA_DENSE_SIMT=1 keeps the simple kernel below.
    dsa_tensor slots_like = *dout;
    slots_like.dtype = DSA_I32;
    if (!dsa_dense_simt() && use_gather_bwd_mma(q, k, w, &slots_like, dout, dq, dk, dw))
        return dsa_indexer_logits_bwd_slots_cuda(q, k, w, start, end, dout, dq, dk, dw);
    IDX_DISPATCH(q->dtype, "dsa_indexer_logits backward",
                 (launch_gather_bwd<float, float, true>(q, k, w, NULL, NULL, start, end, dout, dq, dk, dw)),
                 (launch_gather_bwd<__nv_bfloat16, float, true>(q, k, w, NULL, NULL, start, end, dout, dq, dk, dw)),
                 (launch_gather_bwd<double, double, true>(q, k, w, NULL, NULL, start, end, dout, dq, dk, dw)));
}

// Indexer logits + top-k without a [T, S] tensor: rows go through a scratch of at most ~256 MiB
// in chunks (logits of a chunk of rows, then their top-k).
extern "C" dsa_status dsa_indexer_topk_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                 const dsa_tensor *start, const dsa_tensor *end, int64_t K, dsa_tensor *idx,
                                 dsa_tensor *topk_length, dsa_tensor *score) {
    int64_t T_ = q->shape[0], S = k->shape[0];
    if (T_ == 0) return DSA_OK;
    dsa_dtype ldt = score ? score->dtype : (q->dtype == DSA_BF16 ? DSA_F32 : q->dtype);
    size_t lsz = dsa_dtype_size(ldt);
    int64_t rows = (int64_t)((256u << 20) / ((size_t)(S > 0 ? S : 1) * lsz));
    if (rows < 1) rows = 1;
    if (rows > T_) rows = T_;
    // The logits scratch is kept between calls (grown when a call needs more).
    static dsa_scratch scratch = {NULL, 0};
    DSA_TRY(dsa_scratch_reserve(&scratch, (size_t)rows * (S > 0 ? S : 1) * lsz));
    dsa_status st = DSA_OK;
    for (int64_t r0 = 0; r0 < T_ && st == DSA_OK; r0 += rows) {
        int64_t n = T_ - r0 < rows ? T_ - r0 : rows;
        dsa_tensor qs = dsa_row_chunk(q, r0, n), ws = dsa_row_chunk(w, r0, n), st_ = dsa_row_chunk(start, r0, n),
                   en = dsa_row_chunk(end, r0, n), ix = dsa_row_chunk(idx, r0, n), lg = *q, tl, sc;
        lg.ndim = 2;
        lg.dtype = ldt;
        lg.shape[0] = n;
        lg.shape[1] = S;
        lg.data = scratch.p;
        if (topk_length) tl = dsa_row_chunk(topk_length, r0, n);
        if (score) sc = dsa_row_chunk(score, r0, n);
        st = dsa_indexer_logits_fwd_cuda(&qs, k, &ws, &st_, &en, &lg);
        // Outside the window the scratch holds -inf, so the top-k reads only the window.
        if (st == DSA_OK) st = dsa_topk_window_cuda(&lg, &st_, &en, K, &ix, topk_length ? &tl : NULL, score ? &sc : NULL);
    }
    return st;
}
