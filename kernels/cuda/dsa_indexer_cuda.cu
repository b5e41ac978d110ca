// Lightning indexer kernels (SPEC 1, 2, 6): dense logits [T, S] inside each row's window, logits
// gathered at the selected slots [T, K], and the backward of the gathered logits (dq, dw in the
// CTA that owns the row; dk with fp32 atomics). Arithmetic in fp32 (fp64 for f64 inputs). The dense
// logits of bf16 inputs take a tensor-core (mma.sync) kernel; the simple kernel is the reference.
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

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
    int hlo = INT_MAX, hhi = 0;
#pragma unroll
    for (int r = 0; r < ROWS; r++)
        if (swin[r] < swin[ROWS + r]) {
            hlo = min(hlo, swin[r]);
            hhi = max(hhi, swin[ROWS + r]);
        }
    int64_t k_lo = 0, n_tiles = 0;
    if (hhi > 0) {
        k_lo = (int64_t)(hlo / IDXM_KT) * IDXM_KT;
        n_tiles = (hhi - k_lo + IDXM_KT - 1) / IDXM_KT;
        idxm_load_k_tile<NT>(sk, k, k_lo, S, D, ldq);
    }
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
// its slot and the coefficients c[h] = G w[h] 1[r > 0]; then every thread updates its dq elements
// and dk[s] += sum_h c[h] q[h] goes out with atomics.
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
    int *skey = (int *)(sc + IBW_SLOTS * H);
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
            if (r > 0) atomicAdd(&sdw[h], g * r);
        }
        __syncthreads();
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

// Query rows per CTA of the tensor-core path: 8 by default; DSA_INDEXER_ROWS=4 picks the two-CTAs-
// per-SM variant (for tuning on the GPU).
// Query rows per CTA: 4 by default (measured on H200, T = 8192: 4 rows 1.775 ms, 8 rows 1.836 ms);
// DSA_INDEXER_ROWS=8 selects the other variant.
static int logits_mma_rows() {
    static int rows = -1;
    if (rows < 0) rows = getenv("DSA_INDEXER_ROWS") && atoi(getenv("DSA_INDEXER_ROWS")) == 8 ? 8 : 4;
    return rows;
}

// The tensor-core path takes bf16 q, k, w with H in {16, 32, 48, 64}, D % 16 == 0, 16-byte aligned q
// and k, fp32 or bf16 logits, and shared memory that fits (H 64: D <= 160 on H100); everything else
// goes to the simple kernel. DSA_INDEXER_SIMT=1 forces the simple kernel (for comparisons).
static bool use_logits_mma(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *out) {
    static int simt = -1, max_optin = -1;
    if (simt < 0) simt = getenv("DSA_INDEXER_SIMT") && atoi(getenv("DSA_INDEXER_SIMT")) != 0;
    if (simt) return false;
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2];
    if (q->dtype != DSA_BF16 || k->dtype != DSA_BF16 || w->dtype != DSA_BF16) return false;
    if (out->dtype != DSA_F32 && out->dtype != DSA_BF16) return false;
    if (H % 16 != 0 || H < 16 || H > 64 || D % 16 != 0 || D < 16 || T_ < 1 || k->shape[0] > INT_MAX) return false;
    if (((uintptr_t)q->data | (uintptr_t)k->data) % 16 != 0) return false;
    if (max_optin < 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
            max_optin = 0;
    }
    return logits_mma_smem(logits_mma_rows(), H, D) <= (size_t)max_optin;
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
    size_t smem = sizeof(A) * ((size_t)H * (D + 1) + 2 * H + IBW_SLOTS * D + IBW_SLOTS * H) + sizeof(int) * IBW_SLOTS;
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

#define IDX_DISPATCH(dt, name, call_f32, call_bf16, call_f64)                                                   \
    switch (dt) {                                                                                              \
    case DSA_F32: return call_f32;                                                                             \
    case DSA_BF16: return call_bf16;                                                                           \
    case DSA_F64: return call_f64;                                                                             \
    default: return dsa_error_set(DSA_ERR_DTYPE, "%s (cuda): unsupported dtype %s", name, dsa_dtype_name(dt)); \
    }

extern "C" dsa_status dsa_indexer_logits_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                   const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    // The logits come out in q's dtype or in f32.
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

extern "C" dsa_status dsa_indexer_gather_fwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                   const dsa_tensor *idx, const dsa_tensor *topk_length, dsa_tensor *out) {
    IDX_DISPATCH(q->dtype, "dsa_indexer_gather_logits", (launch_gather<float, float>(q, k, w, idx, topk_length, out)),
                 (launch_gather<__nv_bfloat16, float>(q, k, w, idx, topk_length, out)),
                 (launch_gather<double, double>(q, k, w, idx, topk_length, out)));
}

extern "C" dsa_status dsa_indexer_gather_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                               const dsa_tensor *idx, const dsa_tensor *topk_length,
                                               const dsa_tensor *G, dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    IDX_DISPATCH(q->dtype, "dsa_indexer_gather_logits backward",
                 (launch_gather_bwd<float, float, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)),
                 (launch_gather_bwd<__nv_bfloat16, float, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)),
                 (launch_gather_bwd<double, double, false>(q, k, w, idx, topk_length, NULL, NULL, G, dq, dk, dw)));
}

extern "C" dsa_status dsa_indexer_logits_bwd_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                               const dsa_tensor *start, const dsa_tensor *end, const dsa_tensor *dout,
                                               dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
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
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0];
    if (T_ == 0) return DSA_OK;
    size_t esz = dsa_dtype_size(q->dtype);
    dsa_dtype ldt = score ? score->dtype : (q->dtype == DSA_BF16 ? DSA_F32 : q->dtype);
    size_t lsz = dsa_dtype_size(ldt);
    int64_t rows = (int64_t)((256u << 20) / ((size_t)(S > 0 ? S : 1) * lsz));
    if (rows < 1) rows = 1;
    if (rows > T_) rows = T_;
    // The logits scratch is kept between calls (grown when a call needs more): no allocation and no
    // device sync per call, and stream order keeps one call's kernels off the next one's scratch.
    static void *scratch = NULL;
    static size_t scratch_bytes = 0;
    size_t need = (size_t)rows * (S > 0 ? S : 1) * lsz;
    if (need > scratch_bytes) {
        DSA_TRY(dsa_device_sync(DSA_CUDA));  // earlier calls' kernels are done with the old buffer
        dsa_device_free(DSA_CUDA, scratch);
        scratch = NULL;
        scratch_bytes = 0;
        DSA_TRY(dsa_device_malloc(DSA_CUDA, need, &scratch));
        scratch_bytes = need;
    }
    dsa_status st = DSA_OK;
    for (int64_t r0 = 0; r0 < T_ && st == DSA_OK; r0 += rows) {
        int64_t n = T_ - r0 < rows ? T_ - r0 : rows;
        dsa_tensor qs = *q, ws = *w, st_ = *start, en = *end, lg = *q, ix = *idx, tl, sc;
        qs.shape[0] = n;
        qs.data = (char *)q->data + (size_t)r0 * H * D * esz;
        ws.shape[0] = n;
        ws.data = (char *)w->data + (size_t)r0 * H * esz;
        st_.shape[0] = n;
        st_.data = (int *)start->data + r0;
        en.shape[0] = n;
        en.data = (int *)end->data + r0;
        lg.ndim = 2;
        lg.dtype = ldt;
        lg.shape[0] = n;
        lg.shape[1] = S;
        lg.data = scratch;
        ix.shape[0] = n;
        ix.data = (int *)idx->data + r0 * K;
        if (topk_length) {
            tl = *topk_length;
            tl.shape[0] = n;
            tl.data = (int *)topk_length->data + r0;
        }
        if (score) {
            sc = *score;
            sc.shape[0] = n;
            sc.data = (char *)score->data + (size_t)r0 * K * dsa_dtype_size(score->dtype);
        }
        st = dsa_indexer_logits_fwd_cuda(&qs, k, &ws, &st_, &en, &lg);
        // Outside the window the scratch holds -inf, so the top-k reads only the window.
        if (st == DSA_OK) st = dsa_topk_window_cuda(&lg, &st_, &en, K, &ix, topk_length ? &tl : NULL, score ? &sc : NULL);
    }
    return st;
}
