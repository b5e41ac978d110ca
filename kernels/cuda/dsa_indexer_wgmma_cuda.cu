// Indexer logits on Hopper warpgroup MMA (wgmma, sm_90a): bf16 q / k / w, D % 64 == 0, D <= 128; H = 64
// (the dense logits also H = 16 and 32). The dense and gathered forwards are the defaults on sm_90a (H200, T 8192: 414 and 163 TFLOP/s
// against mma.sync's 310 and 143); the mma.sync kernels (dsa_indexer_cuda.cu) are what they are tested
// against and run everywhere else.
//  - dense logits (SPEC 1; the default, DSA_INDEXER_MMA=1 for the mma.sync kernel), f32 or bf16 out: below.
//  - gathered logits at the top-k slots (SPEC 6; the default, DSA_GATHER_MMA=1 for mma.sync), bf16 out, and their backward
//    (dq, dk, dw; opt-in DSA_GATHER_BWD_WGMMA=1, slower than mma.sync so far): further down.
// Both put the keys on the M side of the wgmma, so a thread's accumulator row holds 16 heads of one
// key and the w-weighted ReLU head sum needs no shared-memory reduction; in both the two warpgroups
// take alternate 64-key tiles, each with its own two cp.async stages (see ixw_stage_ready / next).
//
// Dense logits:
// One CTA per 256 / H query rows (4 at H 64, 16 at H 16; the latest rows first, as the mma.sync kernel).
// The GEMM is transposed: keys are the M side, so a key tile of 64 rows is the A operand and the rows x
// heads of q are one N = 256 B operand, both K-major and 128-byte swizzled in shared memory
// (kernels/cuda/dsa_wgmma.cuh):
//   C[key, H r + h] = k[key] . q[t0 + r, h]   (wgmma m64n256k16 over D, fp32 accumulators)
// A thread's accumulator row holds H / 4 heads of each query row (columns 8j + 2c + e, j = 0..31), so the
// head sum sum_h w[t, h] ReLU(C) is H / 2 FMAs per (key, row) in registers and a reduce-scatter over the
// 4 lanes of equal g (2 shuffle steps), after which lane c holds query rows (rows / 4) c .. of its two keys.
// (H 16 is small.cfg's indexer: 16 rows a CTA fill the same N = 256 that 4 rows of 64 heads do.)
// The two warpgroups take alternate key tiles, each with its own two cp.async stages, so one's
// epilogue runs while the other's wgmma is on the tensor cores. Outside [start[t], end[t]) -> -inf.
#include <limits.h>
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"
#include "kernels/cuda/dsa_wgmma.cuh"

#define IXW_H 64   // heads of the gathered kernels
#define IXW_NQ 256 // dense logits: query rows x heads a CTA (N = 256 / H rows x H heads)
#define IXW_KT 64  // keys per tile (the wgmma M)
#define IXW_SHARED_KEYS 4096  // gathered logits: the longest row whose keys are staged in shared memory

// Dense logits' bytes past the 1024-byte-aligned start: q (256 rows of D), 2 warpgroups x 2 key stages,
// the windows of its 256 / H rows.
static size_t ixw_tile_bytes(int64_t D, int64_t H) {
    return 2 * (size_t)IXW_NQ * D + 2 * 4 * (size_t)IXW_KT * D + sizeof(int) * 2 * (size_t)(IXW_NQ / H);
}

template <typename O>
__device__ __forceinline__ O ixw_cast(float v);
template <>
__device__ __forceinline__ float ixw_cast<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 ixw_cast<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// The two-stage tile pipeline of one warpgroup (threads wtid 0 .. 127, named barrier 1 + wg): local
// tile n sits in stage n & 1; every iteration commits one cp.async group (possibly empty), so
// "all groups but the newest" is always tile n.
// (Constant barrier ids: a register id makes the compiler reserve all 16 of the CTA's barriers.)
__device__ __forceinline__ void ixw_wg_sync(int wg) {
    if (wg == 0) dsa_bar_sync(1, 128);
    else dsa_bar_sync(2, 128);
}
__device__ __forceinline__ void ixw_stage_ready(int wg) {  // local tile n (n > 0) is in, for wgmma
    dsa_cp_async_wait<1>();
    dsa_fence_proxy_async();
    ixw_wg_sync(wg);
}
// After the wgmma of tile n has completed: its stage is refilled with tile n + 2 (when there is one).
template <typename Load>
__device__ __forceinline__ void ixw_stage_next(int wg, int n, int mine, Load load_tile) {
    ixw_wg_sync(wg);  // every warp's wgmma has read the stage
    if (n + 2 < mine) load_tile(n + 2);
    dsa_cp_async_commit();
}

// The first tiles: q and local tile 0 of both warpgroups are in (tile 1 may still be in flight).
__device__ __forceinline__ void ixw_first_ready() {
    dsa_cp_async_wait<1>();
    dsa_fence_proxy_async();  // -> visible to wgmma
    __syncthreads();          // every thread's part of q and of both warpgroups' first tiles
}
// acc = (the 64-row key tile) (the NB-row tile b)^T over D: wgmma m64n{NB}k16, both K-major, waited.
template <int NB>
__device__ __forceinline__ void ixw_tile_mma(float *acc, const __nv_bfloat16 *tile, const __nv_bfloat16 *b, int D) {
    const unsigned long long dk = dsa_wgmma_desc(dsa_smem_addr(tile), 16, 1024), db = dsa_wgmma_desc(dsa_smem_addr(b), 16, 1024);
    dsa_wgmma_fence();
    for (int blk = 0; blk < D / 64; blk++) {
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            unsigned long long da = dk + blk * (IXW_KT * 128 / 16) + 2 * kk, dbk = db + blk * (NB * 128 / 16) + 2 * kk;
            if (NB == 256) dsa_wgmma_m64n256k16<0>(acc, da, dbk, (blk | kk) != 0);
            else dsa_wgmma_m64n64k16(acc, da, dbk, (blk | kk) != 0);
        }
    }
    dsa_wgmma_commit();
    dsa_wgmma_wait<0>();
}

template <typename O, int H>
__global__ void __launch_bounds__(256, 1) indexer_logits_wgmma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ w,
    const int *__restrict__ start, const int *__restrict__ end, O *__restrict__ out, int64_t T, int D, int64_t S,
    int smem_slack) {
    constexpr int ROWS = IXW_NQ / H;  // query rows a CTA
    constexpr int JR = H / 8;         // 8-column accumulator blocks a query row
    constexpr int RQ = ROWS / 4;      // query rows a lane stores after the reduce-scatter
    static_assert(H == 16 || H == 32 || H == 64, "dense wgmma logits: H 16, 32 or 64");
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    unsigned char *base = dsa_smem_base1024(dsa_smem_raw, smem_slack);
    constexpr int NQ = IXW_NQ;                       // 256 B rows: n = H r + h
    __nv_bfloat16 *sq = (__nv_bfloat16 *)base;       // [D/64][256][64]
    __nv_bfloat16 *sk = sq + NQ * D;                 // [2 wg][2 stages][D/64][64][64]
    int *swin = (int *)(sk + 4 * IXW_KT * D);        // lo[ROWS], hi[ROWS]
    const int tid = threadIdx.x, lane = tid & 31, wg = dsa_warpgroup_index(), g = lane >> 2, c = lane & 3;
    const int64_t nblk = (T + ROWS - 1) / ROWS, t0 = (nblk - 1 - (int64_t)blockIdx.x) * ROWS;

    // Windows of the rows, clipped to [0, S); rows past T get an empty one.
    if (tid < ROWS) {
        int64_t t = t0 + tid, a = 0, b = 0;
        if (t < T) {
            a = min(max((int64_t)start[t], (int64_t)0), S);
            b = max(min((int64_t)end[t], S), a);
        }
        swin[tid] = (int)a;
        swin[ROWS + tid] = (int)b;
    }
    dsa_load_rows_sw128(sq, NQ, D, [&](int n) -> const __nv_bfloat16 * {  // rows past T: zeros
        return t0 + n / H < T ? q + (t0 * H + n) * (int64_t)D : nullptr;
    });
    dsa_cp_async_commit();
    __syncthreads();  // the windows
    // Key tiles [k_lo, k_lo + 64 n_tiles) cover the union of the non-empty windows.
    int64_t k_lo, n_tiles;
    dsa_window_tiles(swin, ROWS, IXW_KT, &k_lo, &n_tiles);
    // This warpgroup's tiles: wg, wg + 2, ...; local tile n sits in stage n & 1.
    const int mine = (int)((n_tiles - wg + 1) / 2), wtid = tid & 127;
    auto stage = [&](int n) { return sk + ((2 * wg + (n & 1)) * IXW_KT) * D; };
    auto load_tile = [&](int n) {
        int64_t s0 = k_lo + (int64_t)(wg + 2 * n) * IXW_KT;
        dsa_load_rows_sw128(
            stage(n), IXW_KT, D, [&](int r) -> const __nv_bfloat16 * { return s0 + r < S ? k + (s0 + r) * D : nullptr; }, wtid, 128);
    };
    if (mine > 0) load_tile(0);
    dsa_cp_async_commit();
    if (mine > 1) load_tile(1);
    dsa_cp_async_commit();

    // -inf outside the tile range (overlaps the loads above).
    const O ninf = ixw_cast<O>(-INFINITY);
    const int64_t k_hi = min(k_lo + n_tiles * IXW_KT, S);
    for (int r = 0; r < ROWS; r++) {
        if (t0 + r >= T) break;
        O *orow = out + (t0 + r) * S;
        for (int64_t s = tid; s < k_lo; s += 256) orow[s] = ninf;
        for (int64_t s = k_hi + tid; s < S; s += 256) orow[s] = ninf;
    }
    // w of this thread's accumulator columns: wr[2j + e] = w[t0 + j / JR, 8 (j % JR) + 2c + e].
    float wr[64];
#pragma unroll
    for (int j = 0; j < 32; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int64_t t = t0 + j / JR;
            wr[2 * j + e] = t < T ? __bfloat162float(w[t * H + 8 * (j % JR) + 2 * c + e]) : 0.f;
        }
    // The query rows this lane stores (after the reduce-scatter): t0 + RQ c + i, and their windows.
    int row_lo[RQ], row_hi[RQ];
#pragma unroll
    for (int i = 0; i < RQ; i++) {
        row_lo[i] = swin[RQ * c + i];
        row_hi[i] = swin[ROWS + RQ * c + i];
    }
    const int key_off = 16 * ((tid >> 5) & 3) + g;
    ixw_first_ready();
    float acc[128];
    for (int n = 0; n < mine; n++) {
        if (n > 0) ixw_stage_ready(wg);
        ixw_tile_mma<NQ>(acc, stage(n), sq, D);
        ixw_stage_next(wg, n, mine, load_tile);

        // v[2 r + half] = sum over this thread's H / 4 heads of row r of w ReLU(C), keys g (+8).
        float v[2 * ROWS];
#pragma unroll
        for (int i = 0; i < 2 * ROWS; i++) v[i] = 0.f;
#pragma unroll
        for (int j = 0; j < 32; j++) {
            const int r = j / JR;
            v[2 * r] = fmaf(wr[2 * j], fmaxf(acc[4 * j], 0.f), v[2 * r]);
            v[2 * r] = fmaf(wr[2 * j + 1], fmaxf(acc[4 * j + 1], 0.f), v[2 * r]);
            v[2 * r + 1] = fmaf(wr[2 * j], fmaxf(acc[4 * j + 2], 0.f), v[2 * r + 1]);
            v[2 * r + 1] = fmaf(wr[2 * j + 1], fmaxf(acc[4 * j + 3], 0.f), v[2 * r + 1]);
        }
        // Reduce-scatter over the 4 lanes of equal g: after lane mask 2 a lane keeps the upper
        // (c & 2) or lower half of the rows, after lane mask 1 a quarter: rows RQ c .. RQ c + RQ - 1 (row c
        // at H 64); each step adds the partner's copy.
        float u[ROWS];
#pragma unroll
        for (int i = 0; i < ROWS; i++) {
            float keep = (c & 2) ? v[ROWS + i] : v[i], send = (c & 2) ? v[i] : v[ROWS + i];
            u[i] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
        }
        float z[ROWS / 2];
#pragma unroll
        for (int i = 0; i < ROWS / 2; i++) {
            float keep = (c & 1) ? u[ROWS / 2 + i] : u[i], send = (c & 1) ? u[i] : u[ROWS / 2 + i];
            z[i] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
        }
        const int64_t key0 = k_lo + (int64_t)(wg + 2 * n) * IXW_KT + key_off;
#pragma unroll
        for (int i = 0; i < RQ; i++) {
            const int64_t t_out = t0 + RQ * c + i;
            if (t_out >= T) break;
            O *orow = out + t_out * S;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int64_t key = key0 + 8 * half;
                if (key < S) orow[key] = ixw_cast<O>(key >= row_lo[i] && key < row_hi[i] ? z[2 * i + half] : -INFINITY);
            }
        }
    }
    dsa_cp_async_wait<0>();  // no copy may still be in flight when the CTA exits
}

// One query row t of the gathered kernels, seen from warpgroup wg: its q rows (64 heads) in sq, its
// 64-slot tiles wg, wg + 2, ... (local tile n in stage n & 1 of the warpgroup's two), keys per SPEC 0.
// KS: the row's keys are staged in shared memory (keys_to_shared) and key() reads them there; without it
// key() reads idx (a template parameter, so that path compiles exactly as before the staging existed).
template <bool KS = false>
struct ixw_gather_row {
    const __nv_bfloat16 *k;
    const int *idx, *topk_length;
    __nv_bfloat16 *sk;  // [2 wg][2 stages][D/64][64 slots][64]
    int64_t t, K, S;
    int D, wg, mine;
    unsigned skeys = 0;  // KS: shared address of the row's K checked keys
    __device__ __forceinline__ ixw_gather_row(const __nv_bfloat16 *k_, const int *idx_, const int *tl_, __nv_bfloat16 *sk_,
                                              int64_t T, int64_t K_, int64_t S_, int D_)
        : k(k_), idx(idx_), topk_length(tl_), sk(sk_), t(T - 1 - (int64_t)blockIdx.x), K(K_), S(S_), D(D_) {
        // (rows with the longest lists first: the last rows of a causal sequence)
        wg = dsa_warpgroup_index();
        mine = (int)(((K + IXW_KT - 1) / IXW_KT - wg + 1) / 2);
    }
    __device__ __forceinline__ int key(int64_t j) const {
        if constexpr (KS) return j < K ? dsa_ld_shared_s32(skeys + 4 * (unsigned)j) : -1;
        else return dsa_slot_key(idx, topk_length, t, K, j, S);
    }
    // Every slot's checked key into shared memory (K ints at keys), all threads, then a CTA barrier: a
    // tile's copies then wait on no global load (read from idx, each tile's copies wait for that tile's
    // index loads in the issuing threads).
    __device__ __forceinline__ void keys_to_shared(int *keys) {
        for (int64_t j = threadIdx.x; j < K; j += blockDim.x) keys[j] = dsa_slot_key(idx, topk_length, t, K, j, S);
        __syncthreads();
        skeys = dsa_smem_addr(keys);
    }
    __device__ __forceinline__ int64_t slot0(int n) const { return (int64_t)(wg + 2 * n) * IXW_KT; }
    __device__ __forceinline__ __nv_bfloat16 *stage(int n) const { return sk + ((2 * wg + (n & 1)) * IXW_KT) * D; }
    __device__ __forceinline__ void load_tile(int n) const {  // invalid slots: zero rows, nothing read
        const int64_t j0 = slot0(n);
        if (D == 128) {  // unrolled, the four keys of a thread read at once (the generic loop reads each
                         // row's key from global memory in turn, inside its copy loop)
            dsa_gather_blocks_sw128<IXW_KT, 2, 0, 2>(stage(n), [&](int r) { return key(j0 + r); }, k, threadIdx.x & 127);
            return;
        }
        dsa_load_rows_sw128(
            stage(n), IXW_KT, D,
            [&](int r) -> const __nv_bfloat16 * {
                int kr = key(j0 + r);
                return kr >= 0 ? k + (int64_t)kr * D : nullptr;
            },
            threadIdx.x & 127, 128);
    }
    // Queues q (all threads) and the warpgroup's first two tiles: three cp.async groups.
    __device__ __forceinline__ void start(const __nv_bfloat16 *q, __nv_bfloat16 *sq) const {
        dsa_load_rows_sw128(sq, IXW_H, D, [&](int h) -> const __nv_bfloat16 * { return q + (t * IXW_H + h) * (int64_t)D; });
        dsa_cp_async_commit();
        if (mine > 0) load_tile(0);
        dsa_cp_async_commit();
        if (mine > 1) load_tile(1);
        dsa_cp_async_commit();
    }
    // w of the calling lane's accumulator columns (heads 8j + 2c + e): wr[2j + e].
    __device__ __forceinline__ void load_w(const __nv_bfloat16 *w, float *wr) const {
        const int c = threadIdx.x & 3;
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) wr[2 * j + e] = __bfloat162float(w[t * IXW_H + 8 * j + 2 * c + e]);
    }
};

// Gathered logits: out[t, j] = sum_h w[t, h] ReLU(q[t, h] . k[key(t, j)]) for each valid slot j, -inf
// for an invalid one (SPEC 0). One CTA per query row (the rows with the longest lists first), two CTAs
// per SM. C[slot, h] = k[key] . q[t, h] is m64n64k16 over D with the gathered key tile as A and the
// row's 64 heads as B; a thread holds 16 heads of slots g and g + 8, and the 4 lanes of equal g add
// their parts with 2 shuffles.
template <bool KS>
__global__ void __launch_bounds__(256, 2) indexer_gather_wgmma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ w,
    const int *__restrict__ idx, const int *__restrict__ topk_length, __nv_bfloat16 *__restrict__ out, int64_t T,
    int D, int64_t K, int64_t S, int smem_slack) {
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    unsigned char *base = dsa_smem_base1024(dsa_smem_raw, smem_slack);
    __nv_bfloat16 *sq = (__nv_bfloat16 *)base;       // [D/64][64 heads][64]
    ixw_gather_row<KS> gr(k, idx, topk_length, sq + IXW_H * D, T, K, S, D);
    if constexpr (KS) gr.keys_to_shared((int *)(sq + IXW_H * D + 4 * IXW_KT * D));  // after the stages
    const int tid = threadIdx.x, lane = tid & 31, wg = gr.wg, mine = gr.mine, g = lane >> 2, c = lane & 3;
    const int64_t t = gr.t;
    gr.start(q, sq);
    auto load_tile = [&](int n) { gr.load_tile(n); };
    float wr[16];
    gr.load_w(w, wr);
    const int slot_off = 16 * ((tid >> 5) & 3) + g + 8 * (c & 1);  // the slot this lane stores (c < 2)
    ixw_first_ready();
    float acc[32];
    for (int n = 0; n < mine; n++) {
        if (n > 0) ixw_stage_ready(wg);
        ixw_tile_mma<IXW_H>(acc, gr.stage(n), sq, D);
        ixw_stage_next(wg, n, mine, load_tile);

        float v0 = 0.f, v1 = 0.f;  // slots g and g + 8 of this warp's 16
#pragma unroll
        for (int j = 0; j < 8; j++) {
            v0 = fmaf(wr[2 * j], fmaxf(acc[4 * j], 0.f), v0);
            v0 = fmaf(wr[2 * j + 1], fmaxf(acc[4 * j + 1], 0.f), v0);
            v1 = fmaf(wr[2 * j], fmaxf(acc[4 * j + 2], 0.f), v1);
            v1 = fmaf(wr[2 * j + 1], fmaxf(acc[4 * j + 3], 0.f), v1);
        }
#pragma unroll
        for (int x = 1; x <= 2; x <<= 1) {
            v0 += __shfl_xor_sync(0xffffffffu, v0, x);
            v1 += __shfl_xor_sync(0xffffffffu, v1, x);
        }
        const int64_t j = gr.slot0(n) + slot_off;
        if (c < 2 && j < K) {
            bool ok = gr.key(j) >= 0;
            out[t * K + j] = __float2bfloat16(ok ? (c ? v1 : v0) : -INFINITY);
        }
    }
    dsa_cp_async_wait<0>();  // no copy may still be in flight when the CTA exits
}

// Gathered logits backward, given Gd = dL/dlogits [T, K] (fp32): dq[t] += sum_j G_j k_j, dk_j +=
// G_j^T q[t] (fp32 atomics), dw[t] += sum_j Gd_j ReLU(S_j), where S_jh = k_j . q[t, h] and
// G_jh = Gd_j w[t, h] 1[S_jh > 0] (0 at invalid slots: zero keys and Gd = 0; 1[NaN > 0] is false).
// One CTA per row, the two warpgroups on alternate 64-slot tiles (their own cp.async stages). Per tile:
//   S = K_tile q^T (m64n64k16 over D, as the forward) -> dw partials and G (bf16) into the warpgroup's
//   [slot][head] tile sG;
//   dq_acc (64 heads x D, registers across tiles) += G^T K_tile: m64n128k16, A = sG read MN-major, B =
//   the key tile read MN-major (as V in the sparse forward);
//   dk_tile = G q: m64n128k16, A = sG K-major, B = q read MN-major; float2 atomics per valid key.
// At the end the warpgroups' dq and dw partials meet in shared memory, and dq[t], dw[t] get plain
// read-modify-writes (the row is this CTA's alone).
// DK false: dq and dw only (dk wanted from elsewhere: no dk product, no atomics).
template <bool DK>
__global__ void __launch_bounds__(256, 1) indexer_gather_bwd_wgmma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ w,
    const int *__restrict__ idx, const int *__restrict__ topk_length, const float *__restrict__ Gd,
    float *__restrict__ dq, float *__restrict__ dk, float *__restrict__ dw, int64_t T, int64_t K, int64_t S,
    int smem_slack) {
    constexpr int D = 128, NB = D / 8;  // n8 column groups of a 64 x 128 accumulator
    extern __shared__ __align__(16) unsigned char dsa_smem_raw[];
    unsigned char *base = dsa_smem_base1024(dsa_smem_raw, smem_slack);
    __nv_bfloat16 *sq = (__nv_bfloat16 *)base;       // [2][64 heads][64]
    __nv_bfloat16 *sk = sq + IXW_H * D;              // [2 wg][2 stages][2][64 slots][64]
    __nv_bfloat16 *sg = sk + 4 * IXW_KT * D;         // [2 wg][64 slots][64 heads]
    float *sdw = (float *)(sg + 2 * IXW_KT * IXW_H);  // [64]
    const ixw_gather_row<> gr(k, idx, topk_length, sk, T, K, S, D);
    const int tid = threadIdx.x, lane = tid & 31, wg = gr.wg, mine = gr.mine, g = lane >> 2, c = lane & 3;
    const int64_t t = gr.t;
    gr.start(q, sq);
    if (tid < IXW_H) sdw[tid] = 0.f;
    auto load_tile = [&](int n) { gr.load_tile(n); };
    float wr[16];  // w of this thread's S columns (heads 8j + 2c + e)
    gr.load_w(w, wr);
    __nv_bfloat16 *sgw = sg + wg * IXW_KT * IXW_H;
    const int row = 16 * ((tid >> 5) & 3) + g;  // this thread's accumulator rows: row, row + 8
    // MN-major operands (rows = the k dimension, 64-column blocks of M or N 64 rows x 128 bytes apart).
    const unsigned long long dg_t = dsa_wgmma_desc(dsa_smem_addr(sgw), IXW_KT * 128, 1024);  // A = G^T
    const unsigned long long dg_k = dsa_wgmma_desc(dsa_smem_addr(sgw), 16, 1024);            // A = G
    const unsigned long long dq_n = dsa_wgmma_desc(dsa_smem_addr(sq), IXW_H * 128, 1024);    // B = q

    float dqa[64], dka[64], acc[32], dwp[16];
#pragma unroll
    for (int i = 0; i < 64; i++) dqa[i] = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++) dwp[i] = 0.f;
    ixw_first_ready();
    for (int n = 0; n < mine; n++) {
        if (n > 0) ixw_stage_ready(wg);
        ixw_tile_mma<IXW_H>(acc, gr.stage(n), sq, D);  // S^T: slots row (+8) x heads 8j + 2c + e
        const int64_t j0 = gr.slot0(n);
        const int key_lo = gr.key(j0 + row), key_hi = gr.key(j0 + row + 8);
        const float go_lo = key_lo >= 0 ? Gd[t * K + j0 + row] : 0.f, go_hi = key_hi >= 0 ? Gd[t * K + j0 + row + 8] : 0.f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float s0 = acc[4 * j], s1 = acc[4 * j + 1], s2 = acc[4 * j + 2], s3 = acc[4 * j + 3];
            dwp[2 * j] += (s0 > 0.f ? go_lo * s0 : 0.f) + (s2 > 0.f ? go_hi * s2 : 0.f);
            dwp[2 * j + 1] += (s1 > 0.f ? go_lo * s1 : 0.f) + (s3 > 0.f ? go_hi * s3 : 0.f);
            int col = 8 * j + 2 * c;
            *(unsigned *)(sgw + dsa_sw128(row, col, IXW_KT)) =
                dsa_pack_f32x2(s0 > 0.f ? go_lo * wr[2 * j] : 0.f, s1 > 0.f ? go_lo * wr[2 * j + 1] : 0.f);
            *(unsigned *)(sgw + dsa_sw128(row + 8, col, IXW_KT)) =
                dsa_pack_f32x2(s2 > 0.f ? go_hi * wr[2 * j] : 0.f, s3 > 0.f ? go_hi * wr[2 * j + 1] : 0.f);
        }
        dsa_fence_proxy_async();  // G -> visible to wgmma
        ixw_wg_sync(wg);          // this warpgroup's G tile is complete
        const unsigned long long dk_n = dsa_wgmma_desc(dsa_smem_addr(gr.stage(n)), IXW_KT * 128, 1024);  // B = K_tile
        dsa_wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < IXW_KT / 16; kk++)  // dq (heads x d) += G^T K_tile over the 64 slots
            dsa_wgmma_m64n128k16<1, 1>(dqa, dg_t + kk * (16 * 128 / 16), dk_n + kk * (16 * 128 / 16), 1);
        if constexpr (DK) {
#pragma unroll
            for (int kk = 0; kk < IXW_H / 16; kk++)  // dk (slots x d) = G q over the 64 heads
                dsa_wgmma_m64n128k16<0, 1>(dka, dg_k + 2 * kk, dq_n + kk * (16 * 128 / 16), kk != 0);
        }
        dsa_wgmma_commit();
        dsa_wgmma_wait<0>();
        ixw_stage_next(wg, n, mine, load_tile);  // (the barrier inside also frees sG for the next tile)
        if constexpr (DK)
#pragma unroll
            for (int j = 0; j < NB; j++) {
                if (key_lo >= 0) atomicAdd((float2 *)(dk + (int64_t)key_lo * D + 8 * j + 2 * c), make_float2(dka[4 * j], dka[4 * j + 1]));
                if (key_hi >= 0) atomicAdd((float2 *)(dk + (int64_t)key_hi * D + 8 * j + 2 * c), make_float2(dka[4 * j + 2], dka[4 * j + 3]));
            }
    }
    dsa_cp_async_wait<0>();
    // dw: this thread's 16 heads over its slots, then over the 8 lanes of equal c, then over the warps.
#pragma unroll
    for (int i = 0; i < 16; i++) {
        float v = dwp[i];
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
        dwp[i] = v;
    }
    __syncthreads();  // both warpgroups are done with their stages: stage memory holds warpgroup 1's dq
    if (g == 0)
#pragma unroll
        for (int i = 0; i < 16; i++) atomicAdd(&sdw[8 * (i / 2) + 2 * c + (i & 1)], dwp[i]);
    float *sdq = (float *)sk;  // [64 heads][128]
    if (wg == 1)
#pragma unroll
        for (int j = 0; j < NB; j++) {
            *(float2 *)(sdq + row * D + 8 * j + 2 * c) = make_float2(dqa[4 * j], dqa[4 * j + 1]);
            *(float2 *)(sdq + (row + 8) * D + 8 * j + 2 * c) = make_float2(dqa[4 * j + 2], dqa[4 * j + 3]);
        }
    __syncthreads();
    if (wg == 0) {
        float *q_lo = dq + (t * IXW_H + row) * D + 2 * c, *q_hi = q_lo + 8 * D;
#pragma unroll
        for (int j = 0; j < NB; j++) {
            float2 a = *(float2 *)(q_lo + 8 * j), b = *(float2 *)(q_hi + 8 * j);
            float2 x = *(float2 *)(sdq + row * D + 8 * j + 2 * c), y = *(float2 *)(sdq + (row + 8) * D + 8 * j + 2 * c);
            *(float2 *)(q_lo + 8 * j) = make_float2(a.x + dqa[4 * j] + x.x, a.y + dqa[4 * j + 1] + x.y);
            *(float2 *)(q_hi + 8 * j) = make_float2(b.x + dqa[4 * j + 2] + y.x, b.y + dqa[4 * j + 3] + y.y);
        }
    }
    if (tid < IXW_H) dw[t * IXW_H + tid] += sdw[tid];
}

// What the launchers need: bf16 q / k / w, H = 64 (dense: also 16 or 32, `dense`), D % 64 == 0, D <= 128,
// S <= INT_MAX, 16-byte aligned q and k (cp.async), an sm_90 GPU, and `bytes` of shared memory (+ up to
// 1008 bytes of alignment slack: *smem, *slack). DSA_ERR_UNSUPPORTED (no message) when one is missing.
static dsa_status ixw_check(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, size_t bytes, size_t *smem, int *slack,
                            bool dense = false) {
    int64_t H = q->shape[1], D = q->shape[2], S = k->shape[0];
    const bool h_ok = H == IXW_H || (dense && (H == 16 || H == 32));
    if (q->dtype != DSA_BF16 || k->dtype != DSA_BF16 || w->dtype != DSA_BF16 || !h_ok || D % 64 != 0 || D > 128 ||
        S > INT_MAX || ((uintptr_t)q->data | (uintptr_t)k->data) % 16 != 0)
        return DSA_ERR_UNSUPPORTED;
    size_t optin = 0;
    bool sm90 = false;
    DSA_TRY(dsa_cuda_sm90(&sm90));
    DSA_TRY(dsa_smem_optin(&optin));
    if (!sm90 || bytes > optin) return DSA_ERR_UNSUPPORTED;
    *slack = dsa_smem_slack(bytes, optin);
    *smem = bytes + (size_t)*slack;
    return DSA_OK;
}

// Called by the gathered-logits dispatcher (dsa_indexer_cuda.cu) unless DSA_GATHER_MMA=1: bf16 q / k /
// w / out, H = 64, D % 64 == 0, D <= 128, 16-byte aligned q and k, on an sm_90 GPU. Otherwise
// DSA_ERR_UNSUPPORTED (no message: the caller falls back to the mma.sync kernel).
dsa_status dsa_indexer_gather_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, dsa_tensor *out) {
    int64_t T_ = q->shape[0], D = q->shape[2], S = k->shape[0], K = idx->shape[1];
    size_t smem = 0;
    int slack = 0;
    if (out->dtype != DSA_BF16) return DSA_ERR_UNSUPPORTED;
    // The row's keys in shared memory up to K = IXW_SHARED_KEYS (16 KB more; two CTAs an SM still fit);
    // past it the tiles read idx as they go. DSA_GATHER_KEYS_GLOBAL=1 keeps that always (comparisons).
    static int keys_global = -1;
    if (keys_global < 0) keys_global = dsa_env_flag("DSA_GATHER_KEYS_GLOBAL");
    const bool keys_shared = !keys_global && K <= IXW_SHARED_KEYS;
    DSA_TRY(ixw_check(q, k, w, 2 * (size_t)IXW_H * D + 2 * 4 * (size_t)IXW_KT * D + (keys_shared ? sizeof(int) * (size_t)K : 0),
                      &smem, &slack));
    if (T_ == 0 || K == 0) return DSA_OK;
    auto kern = keys_shared ? indexer_gather_wgmma_kernel<true> : indexer_gather_wgmma_kernel<false>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits (wgmma)"));
    kern<<<(unsigned)T_, 256, smem, dsa_stream()>>>((const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data,
                                                    (const __nv_bfloat16 *)w->data, (const int *)idx->data,
                                                    topk_length ? (const int *)topk_length->data : NULL,
                                                    (__nv_bfloat16 *)out->data, T_, (int)D, K, S, slack);
    CUDA_LAUNCH_CHECK("indexer_gather_wgmma");
    return DSA_OK;
}

// One dense launch: the kernel for (O, H).
template <typename O, int H>
static dsa_status ixw_logits_launch(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *start,
                                    const dsa_tensor *end, dsa_tensor *out, size_t smem, int slack) {
    int64_t T_ = q->shape[0], D = q->shape[2], S = k->shape[0];
    auto kern = indexer_logits_wgmma_kernel<O, H>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_logits (wgmma)"));
    const unsigned grid = (unsigned)((T_ + IXW_NQ / H - 1) / (IXW_NQ / H));
    kern<<<grid, 256, smem, dsa_stream()>>>((const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data,
                                            (const __nv_bfloat16 *)w->data, (const int *)start->data, (const int *)end->data,
                                            (O *)out->data, T_, (int)D, S, slack);
    CUDA_LAUNCH_CHECK("indexer_logits_wgmma");
    return DSA_OK;
}
template <typename O>
static dsa_status ixw_logits_h(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w, const dsa_tensor *start,
                               const dsa_tensor *end, dsa_tensor *out, size_t smem, int slack) {
    switch (q->shape[1]) {
    case 16: return ixw_logits_launch<O, 16>(q, k, w, start, end, out, smem, slack);
    case 32: return ixw_logits_launch<O, 32>(q, k, w, start, end, out, smem, slack);
    default: return ixw_logits_launch<O, 64>(q, k, w, start, end, out, smem, slack);
    }
}

// Called by the logits dispatcher (dsa_indexer_cuda.cu) unless DSA_INDEXER_MMA=1, for bf16 q / k / w,
// H = 16, 32 or 64, D % 64 == 0, D <= 128, 16-byte aligned q and k, f32 or bf16 logits, on an sm_90 GPU.
// DSA_ERR_UNSUPPORTED otherwise (no message: the caller falls back to the mma.sync kernel).
dsa_status dsa_indexer_logits_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                         const dsa_tensor *start, const dsa_tensor *end, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = k->shape[0];
    size_t smem = 0;
    int slack = 0;
    if (out->dtype != DSA_F32 && out->dtype != DSA_BF16) return DSA_ERR_UNSUPPORTED;
    DSA_TRY(ixw_check(q, k, w, ixw_tile_bytes(D, H), &smem, &slack, true));
    if (T_ == 0 || S == 0) return DSA_OK;
    return out->dtype == DSA_F32 ? ixw_logits_h<float>(q, k, w, start, end, out, smem, slack)
                                 : ixw_logits_h<__nv_bfloat16>(q, k, w, start, end, out, smem, slack);
}

// Called by the gathered-logits backward dispatcher (dsa_indexer_cuda.cu) when DSA_GATHER_BWD_WGMMA=1, for
// bf16 q / k / w, H = 64, D = 128, fp32 G / dq / dk / dw (dq and dw wanted, dk or not; dq and dk 8-byte aligned),
// on an sm_90 GPU. DSA_ERR_UNSUPPORTED otherwise (no message: the caller falls back to mma.sync).
dsa_status dsa_indexer_gather_bwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *k, const dsa_tensor *w,
                                             const dsa_tensor *idx, const dsa_tensor *topk_length, const dsa_tensor *G,
                                             dsa_tensor *dq, dsa_tensor *dk, dsa_tensor *dw) {
    int64_t T_ = q->shape[0], D = q->shape[2], S = k->shape[0], K = idx->shape[1];
    size_t smem = 0;
    int slack = 0;
    if (D != 128 || !dq || !dw || G->dtype != DSA_F32 || dq->dtype != DSA_F32 || (dk && dk->dtype != DSA_F32) ||
        dw->dtype != DSA_F32 || ((uintptr_t)dq->data | (uintptr_t)(dk ? dk->data : NULL)) % 8 != 0)
        return DSA_ERR_UNSUPPORTED;
    DSA_TRY(ixw_check(q, k, w, 2 * ((size_t)IXW_H * D + 4 * (size_t)IXW_KT * D + 2 * (size_t)IXW_KT * IXW_H) + 4 * IXW_H,
                      &smem, &slack));
    if (T_ == 0 || K == 0) return DSA_OK;
    auto kern = dk ? indexer_gather_bwd_wgmma_kernel<true> : indexer_gather_bwd_wgmma_kernel<false>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_indexer_gather_logits backward (wgmma)"));
    kern<<<(unsigned)T_, 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)k->data, (const __nv_bfloat16 *)w->data,
        (const int *)idx->data, topk_length ? (const int *)topk_length->data : NULL, (const float *)G->data,
        (float *)dq->data, dk ? (float *)dk->data : NULL, (float *)dw->data, T_, K, S, slack);
    CUDA_LAUNCH_CHECK("indexer_gather_bwd_wgmma");
    return DSA_OK;
}
