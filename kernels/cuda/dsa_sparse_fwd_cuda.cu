// Sparse MQA attention forward with optional sink (SPEC 3). One CTA per (query row t, block of
// DSA_ATT_HB heads). The CTA walks the row's K slots in tiles of 32, compacts each tile to its valid
// slots (invalid ones are never read), gathers only those kv rows into shared memory, and keeps an
// online softmax in fp32 (fp64 for f64 inputs). No [T, K, D] gather and no [T, S_kv] mask exist.
// Epilogue: lse = m + log l (KV-only), out = acc / l * sigmoid(lse - sink).
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

// v3 (wgmma, sm_90a): dsa_sparse_fwd_wgmma_cuda.cu (its entry points declared in dsa_common.cuh).

#define FWD_COLS 2  // output columns per thread: Dv <= 2 * 256

// DENSE: the slots are the keys of the window [start[t], end[t]) (dsa_attn_lse_dense), idx unused.
template <typename T, typename A, bool DENSE>
__global__ void __launch_bounds__(DSA_ATT_NT) sparse_mqa_fwd_kernel(
    const T *__restrict__ q, const T *__restrict__ kv, const int *__restrict__ idx, const int *__restrict__ topk_length,
    const int *__restrict__ start, const int *__restrict__ end, const void *sink, dsa_dtype sink_dt,
    T *__restrict__ out, A *__restrict__ lse, int H, int hbeg, int hend, int D, int Dv, int64_t K, int64_t S_kv,
    A sigma) {
    const int HB = DSA_ATT_HB, BK = DSA_ATT_BK, NT = DSA_ATT_NT;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int n_hb = (hend - hbeg + HB - 1) / HB;
    int hblk = blockIdx.x % n_hb, h0 = hbeg + hblk * HB, nh = min(HB, hend - h0);
    int64_t t = blockIdx.x / n_hb;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int ld = D + 1;
    A *sq = (A *)dsa_smem, *skv = sq + HB * ld, *sp = skv + BK * ld, *sm = sp + HB * BK, *sl = sm + HB,
      *salpha = sl + HB;
    int *keys = (int *)(salpha + HB), *slots = keys + BK, *nvalid = slots + BK;

    for (int i = tid; i < HB * D; i += NT) {
        int h = i / D, d = i % D;
        sq[h * ld + d] = h < nh ? (A)dsa_to_float(q[((t * H) + h0 + h) * D + d]) : (A)0;
    }
    if (tid < HB) {
        sm[tid] = -INFINITY;
        sl[tid] = 0;
    }
    A acc[HB][FWD_COLS];
#pragma unroll
    for (int h = 0; h < HB; h++)
#pragma unroll
        for (int c = 0; c < FWD_COLS; c++) acc[h][c] = 0;

    int64_t k_end = K, lo = 0;
    if (DENSE) {
        lo = max((int64_t)start[t], (int64_t)0);
        k_end = min((int64_t)end[t], S_kv) - lo;
    } else {
        k_end = dsa_row_k_end(topk_length, t, K);
    }
    for (int64_t j0 = 0; j0 < k_end; j0 += BK) {
        __syncthreads();  // the previous tile's readers are done
        if (DENSE) {
            if (tid < BK && j0 + tid < k_end) keys[tid] = (int)(lo + j0 + tid);
            if (tid == 0) *nvalid = (int)min((int64_t)BK, k_end - j0);
        } else if (warp == 0) {
            dsa_compact_tile32(idx, topk_length, t, K, j0, S_kv, keys, slots, nvalid);
        }
        __syncthreads();
        int n = *nvalid;
        if (n == 0) continue;
        for (int i = tid; i < n * D; i += NT) {
            int r = i / D, d = i % D;
            skv[r * ld + d] = (A)dsa_to_float(kv[(int64_t)keys[r] * D + d]);
        }
        __syncthreads();
        // Scores: lane = slot, warp = a pair of heads.
        if (lane < n) {
            const A *kr = skv + lane * ld, *qa = sq + (2 * warp) * ld, *qb = qa + ld;
            A s0 = 0, s1 = 0;
            for (int d = 0; d < D; d++) {
                A v = kr[d];
                s0 += qa[d] * v;
                s1 += qb[d] * v;
            }
            sp[(2 * warp) * BK + lane] = s0 * sigma;
            sp[(2 * warp + 1) * BK + lane] = s1 * sigma;
        }
        __syncthreads();
        // Online softmax update per head (a warp per pair of heads, a lane per slot).
        for (int hh = 0; hh < 2; hh++) {
            int h = 2 * warp + hh;
            A s = lane < n ? sp[h * BK + lane] : (A)-INFINITY;
            A mold = sm[h], mnew = dsa_warp_max(s);
            mnew = mold > mnew ? mold : mnew;
            A p = lane < n ? (A)exp(s - mnew) : (A)0;
            A psum = dsa_warp_sum(p);
            if (lane < n) sp[h * BK + lane] = p;
            __syncwarp();  // every lane has read sm[h] before lane 0 rewrites it
            if (lane == 0) {
                A alpha = exp(mold - mnew);
                sl[h] = sl[h] * alpha + psum;
                sm[h] = mnew;
                salpha[h] = alpha;
            }
        }
        __syncthreads();
#pragma unroll
        for (int h = 0; h < HB; h++) {
            A a = salpha[h];
#pragma unroll
            for (int c = 0; c < FWD_COLS; c++) acc[h][c] *= a;
        }
        for (int r = 0; r < n; r++) {
#pragma unroll
            for (int c = 0; c < FWD_COLS; c++) {
                int col = tid + c * NT;
                A v = col < Dv ? skv[r * ld + col] : (A)0;
#pragma unroll
                for (int h = 0; h < HB; h++) acc[h][c] += sp[h * BK + r] * v;
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < HB; h++) {
        if (h >= nh) break;
        A l = sl[h], lse_h = l > 0 ? (A)sm[h] + log(l) : (A)-INFINITY;
        A scale = l > 0 ? (A)1 / l : (A)0;
        if (sink && l > 0) scale /= (A)1 + exp((A)dsa_ld_any(sink, sink_dt, h0 + h) - lse_h);
#pragma unroll
        for (int c = 0; c < FWD_COLS; c++) {
            int col = tid + c * NT;
            if (col < Dv && out) out[((t * H) + h0 + h) * Dv + col] = dsa_from_double<T>((double)(acc[h][c] * scale));
        }
        if (tid == 0) lse[t * H + h0 + h] = lse_h;
    }
}

template <typename T, typename A, bool DENSE>
static dsa_status launch_fwd(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                             const dsa_tensor *topk_length, const dsa_tensor *start, const dsa_tensor *end,
                             const dsa_tensor *sink, double sigma, int64_t dv, int64_t h0, int64_t h1, dsa_tensor *out,
                             dsa_tensor *lse) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = DENSE ? 0 : idx->shape[1], S = kv->shape[0];
    if (dv > FWD_COLS * DSA_ATT_NT)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "dsa_sparse_mqa (cuda): dv %lld > %d", (long long)dv,
                             FWD_COLS * DSA_ATT_NT);
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)(DSA_ATT_HB + DSA_ATT_BK) * (D + 1) + DSA_ATT_HB * DSA_ATT_BK + 3 * DSA_ATT_HB) +
                  sizeof(int) * (2 * DSA_ATT_BK + 1);
    auto kern = sparse_mqa_fwd_kernel<T, A, DENSE>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa fwd"));
    int64_t n_hb = (h1 - h0 + DSA_ATT_HB - 1) / DSA_ATT_HB;
    kern<<<(unsigned)(T_ * n_hb), DSA_ATT_NT, smem, dsa_stream()>>>(
        (const T *)q->data, (const T *)kv->data, idx ? (const int *)idx->data : NULL,
        topk_length ? (const int *)topk_length->data : NULL, start ? (const int *)start->data : NULL,
        end ? (const int *)end->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        out ? (T *)out->data : NULL, (A *)lse->data, (int)H, (int)h0, (int)h1, (int)D, (int)dv, K, S, (A)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa_fwd");
    return DSA_OK;
}


// ---- tensor-core path v1 (bf16, Dv = 512; reference, DSA_SPARSE_FWD_V1=1): mma.sync m16n8k16 ----------
// One CTA per (query row t, block of 64 heads), 8 warps. Warp (rg = warp & 3, ch = warp >> 2) owns
// heads rg*16 .. +16 and half ch of Dv (256 columns: 32 n8-tiles, 128 fp32 accumulators). Per tile of
// 32 valid slots: S = Q K^T (each warp 16 heads x 16 slots) -> smem; online softmax per head row
// (fp32) -> P (bf16) in smem; O = alpha O + P V. kv rows are gathered once per tile for 64 heads.
#define MMA_HB 64
#define MMA_BK 32


template <int NJ>  // n8-tiles per warp: Dv = 16 * NJ
__global__ void __launch_bounds__(256, 1) sparse_mqa_fwd_mma_v1_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const void *sink, dsa_dtype sink_dt, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ lse, int H, int hbeg, int hend, int D, int64_t K, int64_t S_kv, float sigma) {
    const int HB = MMA_HB, BK = MMA_BK, NT = 256, Dv = 16 * NJ;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int n_hb = (hend - hbeg + HB - 1) / HB;
    int hblk = blockIdx.x % n_hb, h0 = hbeg + hblk * HB, nh = min(HB, hend - h0);
    int64_t t = blockIdx.x / n_hb;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    int rg = warp & 3, ch = warp >> 2, r0 = rg * 16;
    int ldq = D + 8, lds = BK + 1, ldp = BK + 8, D8 = D / 8;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem, *skv = sq + HB * ldq;
    float *ss = (float *)(skv + BK * ldq);
    __nv_bfloat16 *sp = (__nv_bfloat16 *)(ss + HB * lds);
    float *sm = (float *)(sp + HB * ldp), *sl = sm + HB, *salpha = sl + HB;
    int *keys = (int *)(salpha + HB), *slots = keys + BK, *nvalid = slots + BK;

    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    for (int i = tid; i < HB * D8; i += NT) {
        int h = i / D8, v = i % D8;
        *(uint4 *)(sq + h * ldq + v * 8) = h < nh ? ((const uint4 *)(q + ((t * H) + h0 + h) * D))[v] : zero4;
    }
    if (tid < HB) {
        sm[tid] = -INFINITY;
        sl[tid] = 0;
    }
    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0;

    int64_t k_end = dsa_row_k_end(topk_length, t, K);
    for (int64_t j0 = 0; j0 < k_end; j0 += BK) {
        __syncthreads();
        if (warp == 0) dsa_compact_tile32(idx, topk_length, t, K, j0, S_kv, keys, slots, nvalid);
        __syncthreads();
        int n = *nvalid;
        if (n == 0) continue;
        for (int i = tid; i < BK * D8; i += NT) {  // rows past n are zeroed: P = 0 must meet finite values
            int r = i / D8, v = i % D8;
            *(uint4 *)(skv + r * ldq + v * 8) = r < n ? ((const uint4 *)(kv + (int64_t)keys[r] * D))[v] : zero4;
        }
        __syncthreads();
        {  // S = Q K^T: this warp's 16 heads x slots [16 ch, 16 ch + 16)
            float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            for (int k0 = 0; k0 < D; k0 += 16) {
                const __nv_bfloat16 *qa = sq + (r0 + g) * ldq + k0 + 2 * c;
                unsigned a[4] = {dsa_ld_bf16x2(qa), dsa_ld_bf16x2(qa + 8 * ldq), dsa_ld_bf16x2(qa + 8), dsa_ld_bf16x2(qa + 8 * ldq + 8)};
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    const __nv_bfloat16 *kb = skv + (ch * 16 + x * 8 + g) * ldq + k0 + 2 * c;
                    unsigned b[2] = {dsa_ld_bf16x2(kb), dsa_ld_bf16x2(kb + 8)};
                    dsa_mma_bf16_16816(s[x], a, b);
                }
            }
#pragma unroll
            for (int x = 0; x < 2; x++) {
                int col = ch * 16 + x * 8 + 2 * c;
                ss[(r0 + g) * lds + col] = s[x][0];
                ss[(r0 + g) * lds + col + 1] = s[x][1];
                ss[(r0 + g + 8) * lds + col] = s[x][2];
                ss[(r0 + g + 8) * lds + col + 1] = s[x][3];
            }
        }
        __syncthreads();
        for (int hh = 0; hh < HB / 8; hh++) {  // online softmax: warp w owns rows 8w .. 8w+7, lane = slot
            int h = warp * (HB / 8) + hh;
            float sv = lane < n ? ss[h * lds + lane] * sigma : -INFINITY;
            float mold = sm[h], mnew = fmaxf(mold, dsa_warp_max(sv));
            float p = lane < n ? __expf(sv - mnew) : 0.f;
            float psum = dsa_warp_sum(p);
            sp[h * ldp + lane] = __float2bfloat16(p);
            __syncwarp();  // every lane has read sm[h] before lane 0 rewrites it
            if (lane == 0) {
                float alpha = __expf(mold - mnew);
                sl[h] = sl[h] * alpha + psum;
                sm[h] = mnew;
                salpha[h] = alpha;
            }
        }
        __syncthreads();
        {  // O = alpha O + P V over this warp's 256 columns
            float alo = salpha[r0 + g], ahi = salpha[r0 + g + 8];
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                acc[j][0] *= alo;
                acc[j][1] *= alo;
                acc[j][2] *= ahi;
                acc[j][3] *= ahi;
            }
            for (int k0 = 0; k0 < n; k0 += 16) {
                const __nv_bfloat16 *pa = sp + (r0 + g) * ldp + k0 + 2 * c;
                unsigned a[4] = {dsa_ld_bf16x2(pa), dsa_ld_bf16x2(pa + 8 * ldp), dsa_ld_bf16x2(pa + 8), dsa_ld_bf16x2(pa + 8 * ldp + 8)};
                const __nv_bfloat16 *v0 = skv + (k0 + 2 * c) * ldq + ch * (NJ * 8) + g;
#pragma unroll
                for (int j = 0; j < NJ; j++) {
                    const __nv_bfloat16 *vb = v0 + j * 8;
                    unsigned b[2] = {dsa_pack_bf16x2(vb[0], vb[ldq]), dsa_pack_bf16x2(vb[8 * ldq], vb[9 * ldq])};
                    dsa_mma_bf16_16816(acc[j], a, b);
                }
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int row = r0 + g + 8 * half;
        float l = sl[row], lse_h = l > 0 ? sm[row] + logf(l) : -INFINITY, scale = l > 0 ? 1.f / l : 0.f;
        if (sink && l > 0) scale /= 1.f + expf((float)dsa_ld_any(sink, sink_dt, h0 + row) - lse_h);
        if (row < nh) {
            __nv_bfloat16 *orow = out + ((t * H) + h0 + row) * Dv + ch * (NJ * 8) + 2 * c;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                __nv_bfloat162 v = __floats2bfloat162_rn(acc[j][2 * half] * scale, acc[j][2 * half + 1] * scale);
                *(__nv_bfloat162 *)(orow + j * 8) = v;
            }
            if (ch == 0 && c == 0) lse[t * H + h0 + row] = lse_h;
        }
    }
}

static dsa_status launch_fwd_mma_v1(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                 const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma, int64_t h0,
                                 int64_t h1, dsa_tensor *out, dsa_tensor *lse) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0];
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    size_t smem = 2 * (size_t)(MMA_HB + MMA_BK) * (D + 8) + 4 * (size_t)MMA_HB * (MMA_BK + 1) +
                  2 * (size_t)MMA_HB * (MMA_BK + 8) + 4 * 3 * MMA_HB + 4 * (2 * MMA_BK + 1);
    auto kern = sparse_mqa_fwd_mma_v1_kernel<32>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa fwd (mma v1)"));
    int64_t n_hb = (h1 - h0 + MMA_HB - 1) / MMA_HB;
    kern<<<(unsigned)(T_ * n_hb), 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (__nv_bfloat16 *)out->data, (float *)lse->data, (int)H, (int)h0, (int)h1, (int)D, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa_fwd_mma_v1");
    return DSA_OK;
}

// ---- tensor-core path v2 (the default): ldmatrix operands, cp.async gather, FA2-style softmax -----------
// Same CTA shape as v1: one CTA per (query row t, block of 64 heads), 8 warps, warp (rg = warp & 3,
// ch = warp >> 2) owns heads rg*16 .. +16 and Dv columns ch*256 .. +256 of O (128 fp32 accumulators).
// What changed, and why:
//  - The kv rows of slot tile i + NST - 1 are gathered with 16-byte cp.async while tile i computes
//    (NST shared-memory stages), so the L2 latency of the random row gather is off the critical path.
//    Invalid slots are not compacted: their rows are zero-filled in shared memory (never read from
//    global) and their scores are masked to -inf, so every tile has the same shape.
//  - All mma operands come from ldmatrix (.trans for V), instead of 32-bit / 16-bit scalar loads.
//  - S stays in registers. The two warps of a head group (ch = 0, 1) split S's reduction over D in
//    halves, swap their partial 16 x 32 tiles through a small shared buffer (a 64-thread named barrier),
//    and each adds the other's half: a + b == b + a in IEEE, so both warps hold bit-identical S and
//    run the same online softmax without further exchange. P feeds P V straight from registers (the
//    C fragment of m16n8k16 is the A fragment of the next mma).
//  - One __syncthreads per tile (v1: five).
// Numerics as v1: fp32 scores and online softmax (running max m, per-lane partial sums l reduced over
// the quad at the end), P rounded to bf16 for P V only, lse = m + log l, out = acc / l * sigmoid(lse - sink).
#define FWD2_HB 64
#define FWD2_BK 32
#define FWD2_RING 4  // key-ring entries: a tile's keys live from their fetch (tile - NST) to its compute

// Barrier of the two warps (64 threads) that share a head group; ids 1..4 (0 is __syncthreads).
__device__ __forceinline__ void fwd2_pair_sync(int id) { asm volatile("bar.sync %0, 64;\n" ::"r"(id) : "memory"); }

// NST: shared-memory stages of the kv gather (2 or 3). (Its split mode for one head group, opt-in
// until session 17, is gone: 2.65 against 1.18 ms for the wgmma forward at H 12, K 512 on the H200.)
template <int NST>
__global__ void __launch_bounds__(256, 1) sparse_mqa_fwd_mma_v2_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const void *sink, dsa_dtype sink_dt, __nv_bfloat16 *__restrict__ out,
    float *__restrict__ lse, int H, int hbeg, int hend, int D, int64_t K, int64_t S_kv, float sigma) {
    const int HB = FWD2_HB, BK = FWD2_BK, RING = FWD2_RING, NJ = 32, Dv = 512;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int n_hb = (hend - hbeg + HB - 1) / HB;
    int hblk = blockIdx.x % n_hb, h0 = hbeg + hblk * HB, nh = min(HB, hend - h0);
    int64_t t = blockIdx.x / n_hb;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    int rg = warp & 3, ch = warp >> 2, r0 = rg * 16;
    // Rows padded by 8 bf16: the row pitch is an odd number of 16-byte units, so the 8 row addresses
    // of each ldmatrix matrix (and the cp.async writes) hit distinct bank groups.
    int ldq = D + 8, D8 = D / 8;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem;  // [HB][ldq]
    __nv_bfloat16 *skv = sq + HB * ldq;             // [NST][BK][ldq]
    float4 *sx = (float4 *)(skv + NST * BK * ldq);  // [8 warps][4 n8-tiles][32 lanes] partial S
    int *rkeys = (int *)(sx + 8 * 4 * 32);          // [RING][BK] kv row per slot, -1 if invalid
    unsigned *rmask = (unsigned *)(rkeys + RING * BK);  // [RING] valid-slot bit mask per tile
    const uint4 zero4 = make_uint4(0, 0, 0, 0);

    int64_t k_end = dsa_row_k_end(topk_length, t, K);
    int nt = (int)((k_end + BK - 1) / BK);
    const dsa_slot_ring32<RING> ring{rkeys, rmask, idx + t * K, k_end, S_kv};
    // Warp w gathers rows 4w .. 4w+3 of a tile, lanes striding the row's 16-byte chunks (coalesced).
    auto issue_tile = [&](int tile) {
        __nv_bfloat16 *dst = skv + (tile % NST) * BK * ldq;
        const int *keys = ring.tile_keys(tile);
#pragma unroll
        for (int rr = 0; rr < 4; rr++) {
            int r = warp * 4 + rr, key = keys[r];
            __nv_bfloat16 *drow = dst + r * ldq;
            if (key >= 0) {
                const __nv_bfloat16 *src = kv + (int64_t)key * D;
                for (int v = lane; v < D8; v += 32) dsa_cp_async16(dsa_smem_addr(drow + v * 8), src + v * 8);
            } else {  // invalid slot: zeros (P = 0 must meet finite values), nothing read
                for (int v = lane; v < D8; v += 32) *(uint4 *)(drow + v * 8) = zero4;
            }
        }
    };

    // Prologue: Q (joins the first cp.async group), the first NST key tiles, the first NST - 1 kv tiles.
    for (int r = warp * 8; r < warp * 8 + 8; r++) {
        __nv_bfloat16 *drow = sq + r * ldq;
        if (r < nh) {
            const __nv_bfloat16 *src = q + ((t * H) + h0 + r) * D;
            for (int v = lane; v < D8; v += 32) dsa_cp_async16(dsa_smem_addr(drow + v * 8), src + v * 8);
        } else {
            for (int v = lane; v < D8; v += 32) *(uint4 *)(drow + v * 8) = zero4;
        }
    }
    int pre = -1;
    if (warp == 0) pre = ring.prime(nt, NST);
    __syncthreads();
#pragma unroll
    for (int s = 0; s < NST - 1; s++) {
        if (s < nt) issue_tile(s);
        dsa_cp_async_commit();  // always commit: group i is tile i (tile 0 also carries Q)
    }

    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0;
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;  // rows r0+g, r0+g+8

    // Per-lane ldmatrix row addresses (bytes). A (Q, 16x16 at k0): lanes 0-15 rows 0-15 at col k0,
    // lanes 16-31 the same rows at col k0+8 -> a0..a3 = (g, 2c), (g+8, 2c), (g, 2c+8), (g+8, 2c+8).
    unsigned q_addr = dsa_smem_addr(sq + (r0 + (lane & 15)) * ldq + (lane >> 4) * 8);
    // B of S (K rows, 16 keys x 16 d): matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7),
    // (keys 8-15, d 8-15) -> {b0, b1} of key n8-tile 0, then of n8-tile 1.
    int k_row = (lane & 7) + ((lane >> 4) << 3), k_col = ((lane >> 3) & 1) * 8;
    // B of P V (V rows, 16 keys x 16 columns, transposed): matrices (keys 0-7, cols 0-7), (keys 8-15,
    // cols 0-7), (keys 0-7, cols 8-15), (keys 8-15, cols 8-15) -> {b0, b1} of column n8-tile 0, then 1.
    int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, col0 = ch * (NJ * 8), v_col = col0 + (lane >> 4) * 8;
    int nk = D / 16, kb = ch == 0 ? 0 : nk / 2, ke = ch == 0 ? nk / 2 : nk;
    float4 *x_mine = sx + warp * 4 * 32, *x_peer = sx + (warp ^ 4) * 4 * 32;

    for (int i = 0; i < nt; i++) {
        dsa_cp_async_wait<NST - 2>();  // this thread's copies of tile i have landed
        __syncthreads();  // ... everyone's; tile i-1's readers are done (its stage and ring slot are free)
        if (i + NST - 1 < nt) issue_tile(i + NST - 1);
        dsa_cp_async_commit();
        if (warp == 0) ring.advance(i, nt, NST, pre);
        const __nv_bfloat16 *kvs = skv + (i % NST) * BK * ldq;
        unsigned kv_base = dsa_smem_addr(kvs);
        unsigned vmask = ring.tile_mask(i);
        // No valid slot: the tile would leave m, l and O exactly as they are (CTA-uniform, so both
        // warps of every pair skip the pair barrier together).
        if (vmask == 0) continue;
        // A head group without a real head (pair-uniform: both warps skip the pair barrier together):
        // it only gathers. A model with few heads (small.cfg: 12) pays for one group of four.
        if (r0 >= nh) continue;

        // S partial = Q K^T over this warp's half of D: 16 heads x 32 keys (4 n8-tiles).
        float s[4][4];
#pragma unroll
        for (int x = 0; x < 4; x++) s[x][0] = s[x][1] = s[x][2] = s[x][3] = 0.f;
        unsigned kb_addr = kv_base + (unsigned)((k_row * ldq + k_col) * 2);
#pragma unroll 2
        for (int k = kb; k < ke; k++) {
            unsigned a[4], b0[4], b1[4];
            dsa_ldsm_x4(a, q_addr + k * 32);
            dsa_ldsm_x4(b0, kb_addr + k * 32);
            dsa_ldsm_x4(b1, kb_addr + 16 * ldq * 2 + k * 32);
            dsa_mma_bf16_16816(s[0], a, b0);
            dsa_mma_bf16_16816(s[1], a, b0 + 2);
            dsa_mma_bf16_16816(s[2], a, b1);
            dsa_mma_bf16_16816(s[3], a, b1 + 2);
        }
        // Swap halves with the peer warp (same heads, other half of D). The slot is rewritten only
        // after the next __syncthreads, which the peer reaches after reading it.
#pragma unroll
        for (int x = 0; x < 4; x++) x_mine[x * 32 + lane] = make_float4(s[x][0], s[x][1], s[x][2], s[x][3]);
        fwd2_pair_sync(1 + rg);
#pragma unroll
        for (int x = 0; x < 4; x++) {
            float4 o = x_peer[x * 32 + lane];
            s[x][0] += o.x;
            s[x][1] += o.y;
            s[x][2] += o.z;
            s[x][3] += o.w;
        }

        // Online softmax in registers: this lane holds keys 8x + 2c + {0,1} of rows g and g+8; the row
        // max is reduced over the quad (lanes 4g .. 4g+3).
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
        for (int x = 0; x < 4; x++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                bool ok = (vmask >> (8 * x + 2 * c + e)) & 1u;
                s[x][e] = ok ? s[x][e] * sigma : -INFINITY;
                s[x][2 + e] = ok ? s[x][2 + e] * sigma : -INFINITY;
                mx_lo = fmaxf(mx_lo, s[x][e]);
                mx_hi = fmaxf(mx_hi, s[x][2 + e]);
            }
        }
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o));
        }
        float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
        // A row with no valid slot so far keeps m = -inf; exponentiate against 0 then, so that
        // exp(-inf - ref) = 0 instead of NaN.
        float ref_lo = mn_lo == -INFINITY ? 0.f : mn_lo, ref_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
        float al_lo = __expf(m_lo - ref_lo), al_hi = __expf(m_hi - ref_hi);
        m_lo = mn_lo;
        m_hi = mn_hi;
        float ps_lo = 0.f, ps_hi = 0.f;
#pragma unroll
        for (int x = 0; x < 4; x++) {
            s[x][0] = __expf(s[x][0] - ref_lo);
            s[x][1] = __expf(s[x][1] - ref_lo);
            s[x][2] = __expf(s[x][2] - ref_hi);
            s[x][3] = __expf(s[x][3] - ref_hi);
            ps_lo += s[x][0] + s[x][1];
            ps_hi += s[x][2] + s[x][3];
        }
        l_lo = l_lo * al_lo + ps_lo;
        l_hi = l_hi * al_hi + ps_hi;
        if (__any_sync(0xffffffffu, al_lo != 1.f || al_hi != 1.f)) {  // the max moved somewhere in the warp
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                acc[j][0] *= al_lo;
                acc[j][1] *= al_lo;
                acc[j][2] *= al_hi;
                acc[j][3] *= al_hi;
            }
        }
        // P as the A operand of P V: k16 step kk covers keys 16kk .. 16kk+15 = S n8-tiles 2kk, 2kk+1.
        unsigned pa[2][4];
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
            pa[kk][0] = dsa_pack_f32x2(s[2 * kk][0], s[2 * kk][1]);
            pa[kk][1] = dsa_pack_f32x2(s[2 * kk][2], s[2 * kk][3]);
            pa[kk][2] = dsa_pack_f32x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[kk][3] = dsa_pack_f32x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
        // O += P V over this warp's 256 columns (V = the first Dv columns of the kv rows).
        unsigned v_addr = kv_base + (unsigned)((v_row * ldq + v_col) * 2);
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
#pragma unroll
            for (int jj = 0; jj < NJ / 2; jj++) {
                unsigned b[4];
                dsa_ldsm_x4_trans(b, v_addr + (unsigned)((kk * 16 * ldq + jj * 16) * 2));
                dsa_mma_bf16_16816(acc[2 * jj], pa[kk], b);
                dsa_mma_bf16_16816(acc[2 * jj + 1], pa[kk], b + 2);
            }
        }
    }
    dsa_cp_async_wait<0>();  // nothing may be in flight at exit (only empty groups are left)

#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
        l_lo += __shfl_xor_sync(0xffffffffu, l_lo, o);
        l_hi += __shfl_xor_sync(0xffffffffu, l_hi, o);
    }
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int row = r0 + g + 8 * half;
        float l = half ? l_hi : l_lo, m = half ? m_hi : m_lo;
        float lse_h = l > 0 ? m + logf(l) : -INFINITY, scale = l > 0 ? 1.f / l : 0.f;
        if (row < nh) {
            if (sink && l > 0) scale /= 1.f + expf((float)dsa_ld_any(sink, sink_dt, h0 + row) - lse_h);
            __nv_bfloat16 *orow = out + ((t * H) + h0 + row) * Dv + col0 + 2 * c;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                __nv_bfloat162 v = __floats2bfloat162_rn(acc[j][2 * half] * scale, acc[j][2 * half + 1] * scale);
                *(__nv_bfloat162 *)(orow + j * 8) = v;
            }
            if (ch == 0 && c == 0) lse[t * H + h0 + row] = lse_h;
        }
    }
}

static size_t fwd2_smem_bytes(int64_t D, int nst) {
    return 2 * (size_t)(FWD2_HB + nst * FWD2_BK) * (size_t)(D + 8) + 16 * 8 * 4 * 32 +
           4 * (size_t)FWD2_RING * (FWD2_BK + 1);
}

template <int NST>
static dsa_status launch_fwd_mma_v2_nst(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                        const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                        int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0];
    auto kern = sparse_mqa_fwd_mma_v2_kernel<NST>;
    size_t smem = fwd2_smem_bytes(D, NST);
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa fwd (mma v2)"));
    int64_t n_hb = (h1 - h0 + FWD2_HB - 1) / FWD2_HB;
    kern<<<(unsigned)(T_ * n_hb), 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (__nv_bfloat16 *)out->data, (float *)lse->data, (int)H, (int)h0, (int)h1, (int)D, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa_fwd_mma_v2");
    return DSA_OK;
}

// Three gather stages when shared memory allows (D <= 656 with the 227 KB of an H100/H200), else two
// (D <= 832), else v1 (its single kv buffer fits up to D = 1024).
static dsa_status launch_fwd_mma(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                 const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma, int64_t h0,
                                 int64_t h1, dsa_tensor *out, dsa_tensor *lse, dsa_tensor *hs = NULL, bool *fused = NULL) {
    static int v1 = -1;
    if (v1 < 0) v1 = dsa_env_flag("DSA_SPARSE_FWD_V1");
    if (q->shape[0] == 0 || h1 <= h0) return DSA_OK;
    size_t max_optin = 0;
    DSA_TRY(dsa_smem_optin(&max_optin));
    int64_t D = q->shape[2];
    static int v3 = -1;  // v3 (wgmma) needs sm_90a (CC 9.0); DSA_SPARSE_FWD_V2=1 keeps v2
    if (v3 < 0) {
        bool sm90 = false;
        DSA_TRY(dsa_cuda_sm90(&sm90));
        v3 = sm90 && !dsa_env_flag("DSA_SPARSE_FWD_V2");
    }
    if (!v1 && v3 && D % 64 == 0 && D <= 576 && dsa_fwd3_smem_bytes(D) <= max_optin)
        return dsa_sparse_mqa_fwd_wgmma_cuda(q, kv, idx, topk_length, sink, sigma, h0, h1, out, lse, hs, fused);
    if (!v1 && fwd2_smem_bytes(D, 3) <= max_optin)
        return launch_fwd_mma_v2_nst<3>(q, kv, idx, topk_length, sink, sigma, h0, h1, out, lse);
    if (!v1 && fwd2_smem_bytes(D, 2) <= max_optin)
        return launch_fwd_mma_v2_nst<2>(q, kv, idx, topk_length, sink, sigma, h0, h1, out, lse);
    return launch_fwd_mma_v1(q, kv, idx, topk_length, sink, sigma, h0, h1, out, lse);
}

// The tensor-core path takes bf16 with Dv = 512 and D a multiple of 16 (up to 1024); DSA_SPARSE_SIMT=1
// forces the SIMT kernel, DSA_SPARSE_FWD_V1=1 the v1 tensor-core kernel (for comparisons).
static bool use_mma_fwd(const dsa_tensor *q, int64_t dv) {
    static int simt = -1;
    if (simt < 0) simt = dsa_env_flag("DSA_SPARSE_SIMT");
    int64_t D = q->shape[2];
    return !simt && q->dtype == DSA_BF16 && dv == 512 && D % 16 == 0 && D <= 1024 && D >= dv;
}

extern "C" dsa_status dsa_sparse_mqa_fwd_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                           const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                           int64_t dv, int64_t h0, int64_t h1, dsa_tensor *out, dsa_tensor *lse) {
    if (use_mma_fwd(q, dv)) return launch_fwd_mma(q, kv, idx, topk_length, sink, sigma, h0, h1, out, lse);
    switch (q->dtype) {
    case DSA_F32: return launch_fwd<float, float, false>(q, kv, idx, topk_length, NULL, NULL, sink, sigma, dv, h0, h1, out, lse);
    case DSA_BF16:
        return launch_fwd<__nv_bfloat16, float, false>(q, kv, idx, topk_length, NULL, NULL, sink, sigma, dv, h0, h1, out, lse);
    case DSA_F64: return launch_fwd<double, double, false>(q, kv, idx, topk_length, NULL, NULL, sink, sigma, dv, h0, h1, out, lse);
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_sparse_mqa (cuda): unsupported dtype %s", dsa_dtype_name(q->dtype));
    }
}

// The forward of every head (h0 = 0, h1 = H) and, when a kernel fuses it, the score head sums
// (dsa_attn_score_headsum with this lse) into hs [T, K] (bf16): *fused says whether hs was written.
extern "C" dsa_status dsa_sparse_mqa_fwd_headsum_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                                   const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma,
                                                   int64_t dv, dsa_tensor *out, dsa_tensor *lse, dsa_tensor *hs, bool *fused) {
    *fused = false;
    int64_t H = q->shape[1];
    if (use_mma_fwd(q, dv) && hs && hs->dtype == DSA_BF16)
        return launch_fwd_mma(q, kv, idx, topk_length, sink, sigma, 0, H, out, lse, hs, fused);
    return dsa_sparse_mqa_fwd_cuda(q, kv, idx, topk_length, sink, sigma, dv, 0, H, out, lse);
}

// KV-only lse of dense attention over each row's window: the forward kernel with window slots and
// no output.
extern "C" dsa_status dsa_attn_lse_dense_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                              const dsa_tensor *end, double sigma, dsa_tensor *lse) {
    if (dsa_window_slots_apply(q, kv, lse, NULL)) return dsa_attn_lse_dense_slots_cuda(q, kv, start, end, sigma, lse);
    int64_t H = q->shape[1];
    switch (q->dtype) {
    case DSA_F32: return launch_fwd<float, float, true>(q, kv, NULL, NULL, start, end, NULL, sigma, 0, 0, H, NULL, lse);
    case DSA_BF16:
        return launch_fwd<__nv_bfloat16, float, true>(q, kv, NULL, NULL, start, end, NULL, sigma, 0, 0, H, NULL, lse);
    case DSA_F64: return launch_fwd<double, double, true>(q, kv, NULL, NULL, start, end, NULL, sigma, 0, 0, H, NULL, lse);
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_attn_lse_dense (cuda): unsupported dtype %s", dsa_dtype_name(q->dtype));
    }
}
