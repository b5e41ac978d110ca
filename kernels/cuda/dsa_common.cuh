// Helpers shared by the DSA CUDA kernels (kernels/cuda/dsa_*.cu): slot validity (SPEC 0), per-tile
// compaction of the valid slots of a row, warp reductions, dynamic shared memory setup.
#pragma once
#include <limits.h>
#include <math.h>
#include "kernels/cuda/cuda_common.cuh"

// The wgmma kernels' host entry points other kernels' launchers call (C++ linkage: .cu callers only).
// dsa_sparse_fwd_wgmma_cuda.cu: the forward (hs, fused: the fused score head sums, both may be NULL)
// and the shared memory it needs for D.
dsa_status dsa_sparse_mqa_fwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                         int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse, dsa_tensor *hs,
                                         bool *fused);
size_t dsa_fwd3_smem_bytes(int64_t D);
// dsa_score_wgmma_cuda.cu: the sparse score head sums.
dsa_status dsa_attn_score_headsum_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                             const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                             dsa_tensor *out);

// A slot j of row t is valid iff 0 <= idx < S_kv and j < topk_length[t] (when given). Invalid slots
// are never read: the kernels compact each tile of slots down to its valid ones first.
__device__ __forceinline__ int dsa_slot_key(const int *idx, const int *topk_length, int64_t t, int64_t K,
                                            int64_t j, int64_t S_kv) {
    if (j >= K) return -1;
    if (topk_length && j >= (int64_t)topk_length[t]) return -1;
    int s = idx[t * K + j];
    return (s >= 0 && (int64_t)s < S_kv) ? s : -1;
}

// Slots 0 .. the returned end of row t can be valid: min(max(topk_length[t], 0), K), or K without
// topk_length (the bound dsa_slot_key checks slot by slot).
__device__ __forceinline__ int64_t dsa_row_k_end(const int *topk_length, int64_t t, int64_t K) {
    return topk_length ? min((int64_t)max(topk_length[t], 0), K) : K;
}

__device__ __forceinline__ float dsa_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float dsa_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double dsa_warp_max(double v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double dsa_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Compacts the valid slots among [j0, j0 + 32) of row t into keys[0..n) (in slot order) and
// slots[0..n); run by warp 0 only. Returns n through *n_out (shared).
__device__ __forceinline__ void dsa_compact_tile32(const int *idx, const int *topk_length, int64_t t, int64_t K,
                                                   int64_t j0, int64_t S_kv, int *keys, int *slots, int *n_out) {
    int lane = threadIdx.x & 31;
    int s = dsa_slot_key(idx, topk_length, t, K, j0 + lane, S_kv);
    unsigned m = __ballot_sync(0xffffffffu, s >= 0);
    if (s >= 0) {
        int pos = __popc(m & ((1u << lane) - 1u));
        keys[pos] = s;
        slots[pos] = (int)(j0 + lane);
    }
    if (lane == 0) *n_out = __popc(m);
}

// Raises a kernel's dynamic shared memory limit when it needs more than 48 KB.
template <typename K>
static inline dsa_status dsa_smem_setup(K kernel, size_t bytes, const char *op) {
    size_t max_optin = 0;
    DSA_TRY(dsa_smem_optin(&max_optin));
    if (bytes > max_optin)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "%s (cuda): needs %zu bytes of shared memory, the GPU has %zu",
                             op, bytes, max_optin);
    if (bytes > 48 * 1024) CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return DSA_OK;
}

// Ring of published 32-slot tiles (the mma.sync v2 kernels; dsa_slot_ring64 in dsa_wgmma.cuh is the
// 64-slot one): warp 0 reads a tile's raw indices one tile ahead (a lane per slot, a plain load whose
// latency hides behind a tile of math) and publishes, for the whole CTA, each slot's kv row (-1 when
// the slot is invalid: index < 0 or >= S_kv, or past the row's k_end) and the tile's valid-slot mask.
template <int N>  // ring entries (a power of two keeps tile % N a mask)
struct dsa_slot_ring32 {
    int *keys;           // [N][32]
    unsigned *mask;      // [N]
    const int *row_idx;  // this query row's K indices
    int64_t k_end, S_kv;

    __device__ __forceinline__ int raw(int tile) const {
        int64_t j = (int64_t)tile * 32 + (threadIdx.x & 31);
        return j < k_end ? row_idx[j] : -1;
    }
    __device__ __forceinline__ void publish(int tile, int r) const {
        int key = (r >= 0 && (int64_t)r < S_kv) ? r : -1;
        unsigned m = __ballot_sync(0xffffffffu, key >= 0);
        keys[(tile % N) * 32 + (threadIdx.x & 31)] = key;
        if ((threadIdx.x & 31) == 0) mask[tile % N] = m;
    }
    __device__ __forceinline__ const int *tile_keys(int tile) const { return keys + (tile % N) * 32; }
    __device__ __forceinline__ unsigned tile_mask(int tile) const { return mask[tile % N]; }
    // Warp 0, before the first tile: publishes tiles 0 .. nst - 1 and returns tile nst's raw index (the
    // caller's barrier makes the published ones visible).
    __device__ __forceinline__ int prime(int nt, int nst) const {
        for (int s = 0; s < nst && s < nt; s++) publish(s, raw(s));
        return raw(nst);
    }
    // Warp 0, once tile i - 1's entry is free: publishes tile i + nst from pre, reads tile i + nst + 1's.
    __device__ __forceinline__ void advance(int i, int nt, int nst, int &pre) const {
        if (i + nst < nt) {
            publish(i + nst, pre);
            pre = raw(i + nst + 1);
        }
    }
};

// Key tiles [*k_lo, *k_lo + kt * *n_tiles) covering the union of the non-empty windows [lo[r], hi[r])
// of a CTA's rows (lo = win[0 .. rows), hi = win[rows .. 2 rows)); no tiles when every window is empty.
__device__ __forceinline__ void dsa_window_tiles(const int *win, int rows, int kt, int64_t *k_lo, int64_t *n_tiles) {
    int hlo = INT_MAX, hhi = 0;
    for (int r = 0; r < rows; r++)
        if (win[r] < win[rows + r]) {
            hlo = min(hlo, win[r]);
            hhi = max(hhi, win[rows + r]);
        }
    *k_lo = 0;
    *n_tiles = 0;
    if (hhi > 0) {
        *k_lo = (int64_t)(hlo / kt) * kt;
        *n_tiles = (hhi - *k_lo + kt - 1) / kt;
    }
}

// Reads element i of a float tensor of any dtype (small per-head vectors such as the sink).
__device__ __forceinline__ double dsa_ld_any(const void *p, dsa_dtype dt, int64_t i) {
    if (dt == DSA_F64) return ((const double *)p)[i];
    if (dt == DSA_BF16) return (double)__bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return (double)((const float *)p)[i];
}

// Heads per CTA and slots per tile of the sparse attention kernels (rows padded by one element so
// that a warp reading 32 different rows at one column hits 32 different banks).
#define DSA_ATT_HB 16
#define DSA_ATT_BK 32
#define DSA_ATT_NT 256

// ---- tensor-core primitives shared by the bf16 mma.sync paths (sparse fwd, bwd, score head sum) -----
// C[16x8] += A[16x16] . B[16x8], bf16 operands, fp32 accumulators (m16n8k16, row.col).
__device__ __forceinline__ void dsa_mma_bf16_16816(float c[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// Two bf16 in one 32-bit register (lo in the low half), as the mma operands want them.
__device__ __forceinline__ unsigned dsa_pack_bf16x2(__nv_bfloat16 lo, __nv_bfloat16 hi) {
    return (unsigned)__bfloat16_as_ushort(lo) | ((unsigned)__bfloat16_as_ushort(hi) << 16);
}
// Two adjacent bf16 (4-byte aligned) as one 32-bit load.
__device__ __forceinline__ unsigned dsa_ld_bf16x2(const __nv_bfloat16 *p) { return *(const unsigned *)p; }
// Shared-memory address of a generic pointer (for ldmatrix / cp.async).
__device__ __forceinline__ unsigned dsa_smem_addr(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
// Four 8x8 b16 matrices; lanes 8m .. 8m+7 give the row addresses of matrix m, register m receives it.
__device__ __forceinline__ void dsa_ldsm_x4(unsigned r[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// The same, each matrix transposed on the way (row-major V tile -> col-major B operand).
__device__ __forceinline__ void dsa_ldsm_x4_trans(unsigned r[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// 16-byte global -> shared copy that bypasses the registers (and L1); completes at a wait_group.
__device__ __forceinline__ void dsa_cp_async16(unsigned dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ int dsa_ld_shared_s32(unsigned addr) {
    int v;
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
    return v;
}
__device__ __forceinline__ unsigned long long dsa_ld_shared_u64(unsigned addr) {
    unsigned long long v;
    asm volatile("ld.shared.b64 %0, [%1];\n" : "=l"(v) : "r"(addr) : "memory");
    return v;
}
// The same reading `bytes` (16 or 0) of them and zero-filling the rest: with 0 nothing is read (src any
// valid global address), a zero row written by the copy engine like the others, so one asynchronous
// completion covers the whole tile.
__device__ __forceinline__ void dsa_cp_async16_n(unsigned dst, const void *src, unsigned bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void dsa_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void dsa_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Two fp32 rounded to bf16 in one register (lo in the low half): a C fragment becomes an A fragment.
__device__ __forceinline__ unsigned dsa_pack_f32x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
    return *(unsigned *)&v;
}

// log Z of head h0 + h of row t (the tensor-core backwards): lse, or logaddexp(lse, sink) with a sink,
// where dsink[h0 + h] also gets -Delta exp(sink - log Z). -inf for a padding head (h >= nh).
__device__ __forceinline__ float dsa_bwd_log_z(const float *lse, const void *sink, dsa_dtype sink_dt, float *dsink, int64_t t,
                                               int H, int h0, int h, int nh, float delta) {
    float l = h < nh ? lse[t * H + h0 + h] : -INFINITY, logz = l;
    if (sink && h < nh) {
        float sk = (float)dsa_ld_any(sink, sink_dt, h0 + h), mx = fmaxf(l, sk);
        logz = mx + logf(expf(l - mx) + expf(sk - mx));
        if (dsink) atomicAdd(&dsink[h0 + h], -delta * expf(sk - logz));
    }
    return logz;
}

// The tensor-core backwards' prologue for one head row, by one warp: returns the lane's part of Delta =
// out . dout (fp32 dout, bf16 out) and hands each 4 columns of dout rounded to bf16 (column col .. col + 3,
// col = 4 (lane + 32 m)) to store(col, packed). Dv % 128 == 0; 16-byte aligned rows.
template <int Dv, typename Store>
__device__ __forceinline__ float dsa_bwd_do_delta(const float *dout_row, const __nv_bfloat16 *out_row, int lane, Store store) {
    const float4 *dsrc = (const float4 *)dout_row;
    const uint2 *osrc = (const uint2 *)out_row;
    float part = 0.f;
#pragma unroll
    for (int m = 0; m < Dv / 128; m++) {
        float4 d4 = dsrc[lane + 32 * m];
        uint2 o2 = osrc[lane + 32 * m];
        float2 oa = __bfloat1622float2(*(__nv_bfloat162 *)&o2.x), ob = __bfloat1622float2(*(__nv_bfloat162 *)&o2.y);
        part += oa.x * d4.x + oa.y * d4.y + ob.x * d4.z + ob.y * d4.w;
        store(4 * (lane + 32 * m), make_uint2(dsa_pack_f32x2(d4.x, d4.y), dsa_pack_f32x2(d4.z, d4.w)));
    }
    return part;
}

// dst rows += an m64n64 accumulator fragment of 8 column groups (rows: this thread's row_lo and row_lo + 8,
// columns col0 + 8j + 2c, + 1; the wgmma m64nN and mma.sync m16n8 layout) by float4 atomics: lanes c
// and c ^ 1 swap halves, the even one adds row lo at columns 2c .. 2c+3, the odd one row hi at
// 2c-2 .. 2c+1, so a warp's instruction covers one 32-byte sector in each of 8 rows. key: the dst row of
// this lane's row (row lo for even c, hi for odd), < 0 for an invalid slot (nothing added). D: the row
// length of dst. Used by the sparse backward v3 (ALL_FIRST false: each float4 formed just before its
// atomic, so the compiler reuses four registers) and by the benchmark's reduction ceiling (ALL_FIRST:
// the eight formed first, in distinct registers, the form the ceiling was measured with). v3 with
// ALL_FIRST, together with an unbranched dq issue, ran 277.8 against 290.4 TFLOP/s (H200, T 4096, H 64,
// session 17, a436ca6, reverted).
template <int D, bool ALL_FIRST = false>
__device__ __forceinline__ void dsa_red_rows_f32x4(float *dst, const float *acc, int key, int col0, int c) {
    const bool odd = c & 1;
    float4 v[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float *a = acc + 4 * j;
        float s0 = odd ? a[0] : a[2], s1 = odd ? a[1] : a[3];
        float r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
        v[j] = odd ? make_float4(r0, r1, a[2], a[3]) : make_float4(a[0], a[1], r0, r1);
        if (!ALL_FIRST && key >= 0) atomicAdd((float4 *)(dst + (int64_t)key * D + col0 + 8 * j + 2 * c - (odd ? 2 : 0)), v[j]);
    }
    if (!ALL_FIRST || key < 0) return;
    float *row = dst + (int64_t)key * D + col0 + 2 * c - (odd ? 2 : 0);
#pragma unroll
    for (int j = 0; j < 8; j++) atomicAdd((float4 *)(row + 8 * j), v[j]);
}

// One step of an in-register transpose between a lane bit and a register bit: for each register pair
// (i, i + RB) with bit RB of i clear, the lane whose bit `mask` is 0 keeps acc[i] and receives its
// partner's acc[i] into acc[i + RB]; the partner (bit 1) keeps acc[i + RB] and receives the first's
// acc[i + RB] into acc[i]. After it, register bit RB names the source lane's bit and the lane's bit the
// source register's bit (the butterfly of a 2 x 2 transpose, one shuffle per pair).
template <int N, int RB>
__device__ __forceinline__ void dsa_swap_lane_reg_bit(float *acc, int mask, bool hi) {
#pragma unroll
    for (int i = 0; i < N; i++) {
        if (i & RB) continue;
        const float r = __shfl_xor_sync(0xffffffffu, hi ? acc[i] : acc[i + RB], mask);
        if (hi) acc[i] = r;
        else acc[i + RB] = r;
    }
}

// dst rows += a 16-row x 8 NJ-column accumulator fragment (the m16n8 / wgmma layout of dsa_red_rows_f32x4:
// acc[4 j + 2 hr + e] = row g + 8 hr, column 8 j + 2 c + e; NJ = 8 for a warp's part of an m64n64
// accumulator, 4 for four mma.sync n8 tiles), in whole 128-byte lines: each 8-lane group (quads g and
// g ^ 1) holds rows {g, g ^ 1} x {lo, hi}, and two transposing shuffle steps (lane bit 2 <-> column bit 4,
// lane bit 0 <-> column bit 3) leave each lane 4 consecutive columns of each of those 4 rows' 32-column
// blocks. A warp instruction then adds 4 rows x 128 bytes (8 lanes a row) instead of dsa_red_rows_f32x4's
// 16 rows x 32 bytes: the reduction probe's fastest pattern (3826 against 2324 GB/s, H200, session 25).
// 4 NJ shuffles against 2 NJ. key_of(r): the dst row of fragment row r (< 0: nothing added), read for the
// group's rows (g & ~1) | q + 8 hr (quad parity q, row lo hr 0 or hi hr 1) before the shuffles. acc is
// overwritten. Sparse backward v3's default (session 27).
template <int D, int NJ = 8, typename KeyOf>
__device__ __forceinline__ void dsa_red_rows_f32x4_lines(float *dst, float *acc, KeyOf key_of, int col0, int lane) {
    static_assert(NJ % 4 == 0, "32-column blocks");
    int keys[2][2];
#pragma unroll
    for (int q = 0; q < 2; q++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) keys[q][hr] = key_of((((lane >> 2) & ~1) | q) + 8 * hr);
    dsa_swap_lane_reg_bit<4 * NJ, 8>(acc, 4, (lane >> 2) & 1);  // quad parity <-> column bit 4 (j bit 1)
    dsa_swap_lane_reg_bit<4 * NJ, 4>(acc, 1, lane & 1);         // c bit 0 <-> column bit 3 (j bit 0)
    // Now acc[16 h + 8 q + 4 c0 + 2 hr + e] = row (q, hr), column 32 h + 16 (lane bit 2) + 8 (lane bit 0)
    // + 4 (lane bit 1) + 2 c0 + e.
    const int col = col0 + 16 * ((lane >> 2) & 1) + 8 * (lane & 1) + 4 * ((lane >> 1) & 1);
#pragma unroll
    for (int q = 0; q < 2; q++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            if (keys[q][hr] < 0) continue;
            float *row = dst + (int64_t)keys[q][hr] * D + col;
#pragma unroll
            for (int h = 0; h < NJ / 4; h++) {
                const float *a = acc + 16 * h + 8 * q + 2 * hr;
                atomicAdd((float4 *)(row + 32 * h), make_float4(a[0], a[1], a[4], a[5]));
            }
        }
}
