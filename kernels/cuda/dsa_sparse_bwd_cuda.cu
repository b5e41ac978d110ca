// Sparse MQA attention backward (SPEC 3). One CTA per (query row t, block of DSA_ATT_HB heads), the
// same slot walk as the forward (valid slots only, gathered kv rows in shared memory). P is
// recomputed from lse (log Z = logaddexp(lse, sink)); Delta = out . dout. dq stays in registers
// for the whole row; dkv is accumulated with atomics into the fp32 gradient (cast once by the
// caller); dsink gets one atomic per (t, head).
#include <stdlib.h>
#include <type_traits>
#include "core/context.h"
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

// v3 (wgmma, sm_90a; the default for D = 576 with dq and dkv): dsa_sparse_bwd_wgmma_cuda.cu.
dsa_status dsa_sparse_mqa_bwd_wgmma_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                         const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                         const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t h0, int64_t h1,
                                         dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink, bool dq_store);

#define BWD_COLS 3  // dq columns per thread: D <= 3 * 256

template <typename T, typename A>
__global__ void __launch_bounds__(DSA_ATT_NT) sparse_mqa_bwd_kernel(
    const T *__restrict__ q, const T *__restrict__ kv, const int *__restrict__ idx, const int *__restrict__ topk_length,
    const void *sink, dsa_dtype sink_dt, const T *__restrict__ out, const A *__restrict__ lse,
    const A *__restrict__ dout, A *dq, A *dkv, A *dsink, int H, int hbeg, int hend, int D, int Dv, int64_t K,
    int64_t S_kv, A sigma) {
    const int HB = DSA_ATT_HB, BK = DSA_ATT_BK, NT = DSA_ATT_NT;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int n_hb = (hend - hbeg + HB - 1) / HB;
    int hblk = blockIdx.x % n_hb, h0 = hbeg + hblk * HB, nh = min(HB, hend - h0);
    int64_t t = blockIdx.x / n_hb;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int ld = D + 1, ldv = Dv + 1;
    A *sq = (A *)dsa_smem, *sdo = sq + HB * ld, *skv = sdo + HB * ldv, *sP = skv + BK * ld, *sdS = sP + HB * BK,
      *sdelta = sdS + HB * BK, *slogz = sdelta + HB;
    int *keys = (int *)(slogz + HB), *slots = keys + BK, *nvalid = slots + BK;

    for (int i = tid; i < HB * D; i += NT) {
        int h = i / D, d = i % D;
        sq[h * ld + d] = h < nh ? (A)dsa_to_float(q[((t * H) + h0 + h) * D + d]) : (A)0;
    }
    for (int i = tid; i < HB * Dv; i += NT) {
        int h = i / Dv, d = i % Dv;
        sdo[h * ldv + d] = h < nh ? dout[((t * H) + h0 + h) * Dv + d] : (A)0;
    }
    // Delta and log Z per head: a warp per pair of heads.
    for (int hh = 0; hh < 2; hh++) {
        int h = 2 * warp + hh;
        A part = 0;
        if (h < nh)
            for (int d = lane; d < Dv; d += 32) part += (A)dsa_to_float(out[((t * H) + h0 + h) * Dv + d]) * dout[((t * H) + h0 + h) * Dv + d];
        A delta = dsa_warp_sum(part);
        if (lane == 0) {
            A l = h < nh ? lse[t * H + h0 + h] : (A)-INFINITY, logz = l;
            if (sink && h < nh) {
                A sk = (A)dsa_ld_any(sink, sink_dt, h0 + h), mx = l > sk ? l : sk;
                logz = mx + log(exp(l - mx) + exp(sk - mx));
                if (dsink) atomicAdd(&dsink[h0 + h], -delta * exp(sk - logz));
            }
            sdelta[h] = delta;
            slogz[h] = logz;
        }
    }
    A gq[HB][BWD_COLS];
#pragma unroll
    for (int h = 0; h < HB; h++)
#pragma unroll
        for (int c = 0; c < BWD_COLS; c++) gq[h][c] = 0;

    int64_t k_end = dsa_row_k_end(topk_length, t, K);
    for (int64_t j0 = 0; j0 < k_end; j0 += BK) {
        __syncthreads();
        if (warp == 0) dsa_compact_tile32(idx, topk_length, t, K, j0, S_kv, keys, slots, nvalid);
        __syncthreads();
        int n = *nvalid;
        if (n == 0) continue;
        for (int i = tid; i < n * D; i += NT) {
            int r = i / D, d = i % D;
            skv[r * ld + d] = (A)dsa_to_float(kv[(int64_t)keys[r] * D + d]);
        }
        __syncthreads();
        // P and sigma * dS per (head, slot): lane = slot, warp = a pair of heads.
        if (lane < n) {
            const A *kr = skv + lane * ld;
            for (int hh = 0; hh < 2; hh++) {
                int h = 2 * warp + hh;
                const A *qh = sq + h * ld, *doh = sdo + h * ldv;
                A s = 0, dp = 0;
                for (int d = 0; d < D; d++) s += qh[d] * kr[d];
                for (int d = 0; d < Dv; d++) dp += doh[d] * kr[d];
                A p = h < nh ? exp(s * sigma - slogz[h]) : (A)0;
                sP[h * BK + lane] = p;
                sdS[h * BK + lane] = sigma * p * (dp - sdelta[h]);
            }
        }
        __syncthreads();
        for (int r = 0; r < n; r++) {
#pragma unroll
            for (int c = 0; c < BWD_COLS; c++) {
                int col = tid + c * NT;
                if (col >= D) break;
                A v = skv[r * ld + col], g = 0;
#pragma unroll
                for (int h = 0; h < HB; h++) {
                    A ds = sdS[h * BK + r];
                    gq[h][c] += ds * v;
                    g += ds * sq[h * ld + col];
                    if (col < Dv) g += sP[h * BK + r] * sdo[h * ldv + col];
                }
                if (dkv) atomicAdd(&dkv[(int64_t)keys[r] * D + col], g);
            }
        }
    }
    if (!dq) return;
#pragma unroll
    for (int h = 0; h < HB; h++) {
        if (h >= nh) break;
#pragma unroll
        for (int c = 0; c < BWD_COLS; c++) {
            int col = tid + c * NT;
            if (col < D) dq[((t * H) + h0 + h) * D + col] += gq[h][c];
        }
    }
}

template <typename T, typename A>
static dsa_status launch_bwd(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                             const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                             const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                             int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0];
    if (D > BWD_COLS * DSA_ATT_NT)
        return dsa_error_set(DSA_ERR_UNSUPPORTED, "dsa_sparse_mqa backward (cuda): D %lld > %d", (long long)D,
                             BWD_COLS * DSA_ATT_NT);
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)DSA_ATT_HB * (D + 1) + DSA_ATT_HB * (dv + 1) + DSA_ATT_BK * (D + 1) +
                               2 * DSA_ATT_HB * DSA_ATT_BK + 2 * DSA_ATT_HB) +
                  sizeof(int) * (2 * DSA_ATT_BK + 1);
    auto kern = sparse_mqa_bwd_kernel<T, A>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa bwd"));
    int64_t n_hb = (h1 - h0 + DSA_ATT_HB - 1) / DSA_ATT_HB;
    kern<<<(unsigned)(T_ * n_hb), DSA_ATT_NT, smem, dsa_stream()>>>(
        (const T *)q->data, (const T *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (const T *)out->data, (const A *)lse->data, (const A *)dout->data, dq ? (A *)dq->data : NULL,
        dkv ? (A *)dkv->data : NULL, dsink ? (A *)dsink->data : NULL, (int)H, (int)h0, (int)h1, (int)D, (int)dv, K, S,
        (A)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa_bwd");
    return DSA_OK;
}


// ---- tensor-core path (bf16, Dv = 512, D = 576 or 512): mma.sync m16n8k16, fp32 accumulators ---------
// One CTA per (query row t, block of 64 heads), 8 warps; warp (rg = warp & 3, ch = warp >> 2) owns
// heads rg*16 .. +16. Per tile of 32 valid slots: S = Q K^T and dP = dO V^T (16 heads x 16 slots per
// warp) -> P = exp(sigma S - log Z), sigma dS = sigma P (dP - Delta) in bf16 -> dq (registers, this
// warp's half of D) += sigma dS K; dkv[slot] += (sigma dS)^T Q + P^T dO via mma, then float2 atomics
// into the fp32 accumulator (one atomic per element per CTA tile, for 64 heads at once).
#define BMMA_HB 64
#define BMMA_BK 32


// C[16 x 16] (two n8 tiles) += A[16 rows of sa, from col 0, ld lda] . B^T where B rows are sb[n] (ld
// ldb), over kdim (multiple of 16): the "rows times rows" product used for S and dP.
__device__ __forceinline__ void rows_x_rows(float s[2][4], const __nv_bfloat16 *sa, int lda,
                                            const __nv_bfloat16 *sb, int ldb, int kdim, int g, int c) {
    for (int k0 = 0; k0 < kdim; k0 += 16) {
        const __nv_bfloat16 *pa = sa + g * lda + k0 + 2 * c;
        unsigned a[4] = {dsa_ld_bf16x2(pa), dsa_ld_bf16x2(pa + 8 * lda), dsa_ld_bf16x2(pa + 8), dsa_ld_bf16x2(pa + 8 * lda + 8)};
#pragma unroll
        for (int x = 0; x < 2; x++) {
            const __nv_bfloat16 *pb = sb + (x * 8 + g) * ldb + k0 + 2 * c;
            unsigned b[2] = {dsa_ld_bf16x2(pb), dsa_ld_bf16x2(pb + 8)};
            dsa_mma_bf16_16816(s[x], a, b);
        }
    }
}

// dq of a CTA's head block += this thread's fp32 fragment (both tensor-core backwards): rows `row` and
// row + 8 of the block (those below nh), columns ch * 8 NJQ + 8 j + 2c, + 1. The CTA owns these rows
// of dq: plain read-modify-write.
template <int NJQ>
__device__ __forceinline__ void bwd_add_dq(float *dq, const float (*gq)[4], int64_t t, int H, int h0, int nh, int row, int ch,
                                           int c) {
    const int D = 16 * NJQ;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int r = row + 8 * half;
        if (r >= nh) continue;
        float *qrow = dq + ((t * H) + h0 + r) * D + ch * (NJQ * 8) + 2 * c;
#pragma unroll
        for (int j = 0; j < NJQ; j++) {
            float2 *p = (float2 *)(qrow + j * 8), v = *p;
            v.x += gq[j][2 * half];
            v.y += gq[j][2 * half + 1];
            *p = v;
        }
    }
}

template <int NJQ>  // dq n8-tiles per warp: D = 16 * NJQ
__global__ void __launch_bounds__(256, 1) sparse_mqa_bwd_mma_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const void *sink, dsa_dtype sink_dt, const __nv_bfloat16 *__restrict__ out,
    const float *__restrict__ lse, const float *__restrict__ dout, float *dq, float *dkv, float *dsink, int H,
    int hbeg, int hend, int Dv, int64_t K, int64_t S_kv, float sigma) {
    const int HB = BMMA_HB, BK = BMMA_BK, NT = 256, D = 16 * NJQ;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int n_hb = (hend - hbeg + HB - 1) / HB;
    int hblk = blockIdx.x % n_hb, h0 = hbeg + hblk * HB, nh = min(HB, hend - h0);
    int64_t t = blockIdx.x / n_hb;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    int rg = warp & 3, ch = warp >> 2, r0 = rg * 16;
    const int ldq = D + 8, ldo = Dv + 8, lds = BK + 1, ldp = BK + 8, D8 = D / 8;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem, *sdo = sq + HB * ldq, *skv = sdo + HB * ldo;
    float *ss = (float *)(skv + BK * ldq), *sdp = ss + HB * lds;
    __nv_bfloat16 *sP = (__nv_bfloat16 *)(sdp + HB * lds), *sdS = sP + HB * ldp;
    float *sdelta = (float *)(sdS + HB * ldp), *slogz = sdelta + HB;
    int *keys = (int *)(slogz + HB), *slots = keys + BK, *nvalid = slots + BK;

    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    for (int i = tid; i < HB * D8; i += NT) {
        int h = i / D8, v = i % D8;
        *(uint4 *)(sq + h * ldq + v * 8) = h < nh ? ((const uint4 *)(q + ((t * H) + h0 + h) * D))[v] : zero4;
    }
    for (int i = tid; i < HB * Dv; i += NT) {
        int h = i / Dv, d = i % Dv;
        sdo[h * ldo + d] = __float2bfloat16(h < nh ? dout[((t * H) + h0 + h) * Dv + d] : 0.f);
    }
    for (int hh = 0; hh < HB / 8; hh++) {  // Delta = out . dout (full-precision dout), log Z, dsink
        int h = warp * (HB / 8) + hh;
        float part = 0;
        if (h < nh)
            for (int d = lane; d < Dv; d += 32)
                part += __bfloat162float(out[((t * H) + h0 + h) * Dv + d]) * dout[((t * H) + h0 + h) * Dv + d];
        float delta = dsa_warp_sum(part);
        if (lane == 0) {
            sdelta[h] = delta;
            slogz[h] = dsa_bwd_log_z(lse, sink, sink_dt, dsink, t, H, h0, h, nh, delta);
        }
    }
    float gq[NJQ][4];
#pragma unroll
    for (int j = 0; j < NJQ; j++) gq[j][0] = gq[j][1] = gq[j][2] = gq[j][3] = 0;

    int64_t k_end = dsa_row_k_end(topk_length, t, K);
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
        {  // S and dP for this warp's 16 heads x slots [16 ch, 16 ch + 16)
            float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}}, dp[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            rows_x_rows(s, sq + r0 * ldq, ldq, skv + ch * 16 * ldq, ldq, D, g, c);
            rows_x_rows(dp, sdo + r0 * ldo, ldo, skv + ch * 16 * ldq, ldq, Dv, g, c);
#pragma unroll
            for (int x = 0; x < 2; x++) {
                int col = ch * 16 + x * 8 + 2 * c;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int row = r0 + g + (e >> 1) * 8;
                    ss[row * lds + col + (e & 1)] = s[x][e];
                    sdp[row * lds + col + (e & 1)] = dp[x][e];
                }
            }
        }
        __syncthreads();
        for (int i = tid; i < HB * BK; i += NT) {
            int h = i / BK, j = i % BK;
            float p = 0, ds = 0;
            if (j < n && h < nh) {
                p = __expf(ss[h * lds + j] * sigma - slogz[h]);
                ds = sigma * p * (sdp[h * lds + j] - sdelta[h]);
            }
            sP[h * ldp + j] = __float2bfloat16(p);
            sdS[h * ldp + j] = __float2bfloat16(ds);
        }
        __syncthreads();
        for (int k0 = 0; k0 < n; k0 += 16) {  // dq (this warp's rows, half ch of D) += sigma dS . K
            const __nv_bfloat16 *pa = sdS + (r0 + g) * ldp + k0 + 2 * c;
            unsigned a[4] = {dsa_ld_bf16x2(pa), dsa_ld_bf16x2(pa + 8 * ldp), dsa_ld_bf16x2(pa + 8), dsa_ld_bf16x2(pa + 8 * ldp + 8)};
            const __nv_bfloat16 *v0 = skv + (k0 + 2 * c) * ldq + ch * (NJQ * 8) + g;
#pragma unroll
            for (int j = 0; j < NJQ; j++) {
                const __nv_bfloat16 *vb = v0 + j * 8;
                unsigned b[2] = {dsa_pack_bf16x2(vb[0], vb[ldq]), dsa_pack_bf16x2(vb[8 * ldq], vb[9 * ldq])};
                dsa_mma_bf16_16816(gq[j], a, b);
            }
        }
        // dkv[slot] += (sigma dS)^T Q + P^T dO: M = 32 slots (2 m16 tiles), N = D (n8 tiles), K = 64 heads.
        int n_mt = (n + 15) / 16, n_nt = D / 8;
        for (int tile = warp; tile < n_mt * n_nt; tile += NT / 32) {
            int mt = tile / n_nt, nt = tile % n_nt, col = nt * 8 + g;
            float acc[4] = {0, 0, 0, 0};
#pragma unroll
            for (int k0 = 0; k0 < HB; k0 += 16) {
                const __nv_bfloat16 *pa = sdS + (k0 + 2 * c) * ldp + mt * 16 + g;
                unsigned a[4] = {dsa_pack_bf16x2(pa[0], pa[ldp]), dsa_pack_bf16x2(pa[8], pa[ldp + 8]), dsa_pack_bf16x2(pa[8 * ldp], pa[9 * ldp]),
                                 dsa_pack_bf16x2(pa[8 * ldp + 8], pa[9 * ldp + 8])};
                const __nv_bfloat16 *qb = sq + (k0 + 2 * c) * ldq + col;
                unsigned b[2] = {dsa_pack_bf16x2(qb[0], qb[ldq]), dsa_pack_bf16x2(qb[8 * ldq], qb[9 * ldq])};
                dsa_mma_bf16_16816(acc, a, b);
                if (nt * 8 < Dv) {
                    const __nv_bfloat16 *pp = sP + (k0 + 2 * c) * ldp + mt * 16 + g;
                    unsigned a2[4] = {dsa_pack_bf16x2(pp[0], pp[ldp]), dsa_pack_bf16x2(pp[8], pp[ldp + 8]), dsa_pack_bf16x2(pp[8 * ldp], pp[9 * ldp]),
                                      dsa_pack_bf16x2(pp[8 * ldp + 8], pp[9 * ldp + 8])};
                    const __nv_bfloat16 *ob = sdo + (k0 + 2 * c) * ldo + col;
                    unsigned b2[2] = {dsa_pack_bf16x2(ob[0], ob[ldo]), dsa_pack_bf16x2(ob[8 * ldo], ob[9 * ldo])};
                    dsa_mma_bf16_16816(acc, a2, b2);
                }
            }
            int slot0 = mt * 16 + g, dcol = nt * 8 + 2 * c;
            if (dkv && slot0 < n) atomicAdd((float2 *)(dkv + (int64_t)keys[slot0] * D + dcol), make_float2(acc[0], acc[1]));
            if (dkv && slot0 + 8 < n)
                atomicAdd((float2 *)(dkv + (int64_t)keys[slot0 + 8] * D + dcol), make_float2(acc[2], acc[3]));
        }
    }
    if (dq) bwd_add_dq<NJQ>(dq, gq, t, H, h0, nh, r0 + g, ch, c);
}

template <int NJQ>
static dsa_status launch_bwd_mma(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                 const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                 const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                                 int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0];
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    size_t smem = 2 * (size_t)BMMA_HB * (D + 8) + 2 * (size_t)BMMA_HB * (dv + 8) + 2 * (size_t)BMMA_BK * (D + 8) +
                  2 * 4 * (size_t)BMMA_HB * (BMMA_BK + 1) + 2 * 2 * (size_t)BMMA_HB * (BMMA_BK + 8) +
                  2 * 4 * BMMA_HB + 4 * (2 * BMMA_BK + 1);
    auto kern = sparse_mqa_bwd_mma_kernel<NJQ>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa bwd (mma)"));
    int64_t n_hb = (h1 - h0 + BMMA_HB - 1) / BMMA_HB;
    kern<<<(unsigned)(T_ * n_hb), 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (const __nv_bfloat16 *)out->data, (const float *)lse->data, (const float *)dout->data,
        dq ? (float *)dq->data : NULL, dkv ? (float *)dkv->data : NULL, dsink ? (float *)dsink->data : NULL, (int)H,
        (int)h0, (int)h1, (int)dv, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa_bwd_mma");
    return DSA_OK;
}

// ---- tensor-core path v2 (the default; DSA_SPARSE_BWD_V1=1 runs v1 above) ----------------------------
// Same CTA shape as v1: one CTA per (query row t, block of 64 heads), 8 warps. Per tile of 32 slots:
//  A. warp (rg = warp & 3, kc = warp >> 2) computes S = Q K^T and dP = dO V^T for heads rg*16 .. +16
//     and slots kc*16 .. +16 over the full D (no partial sums to exchange). The kv fragment of a k16
//     step below Dv serves both products, so A reads 3 ldmatrix per 4 mma. P = exp(sigma S - log Z)
//     and sigma dS = sigma P (dP - Delta) go to shared memory as bf16 ([head][slot]).
//  B. dq (registers: this warp's 16 heads x half ch = warp >> 2 of D) += sigma dS K, all 32 slots.
//  C. dkv[slot] += (sigma dS)^T Q + P^T dO: warp w takes the 16-column chunks w, w + 8, ... of D
//     (M = 32 slots, K = 64 heads), operands by ldmatrix.trans, then one float4 atomic per lane per
//     16x8 tile (lane pairs swap halves so that each lane holds 4 consecutive columns of one row).
// What changed from v1, and why: the kv rows of tile i + 1 are gathered with cp.async while tile i
// computes (v1 stalls on every gather); every mma operand comes from ldmatrix (v1 packs the
// transposed dkv operands from 16-bit scalar loads); dkv takes float4 atomics (v1: float2), halving
// the atomic operations; invalid slots are zero rows with P = dS = 0 instead of a compaction pass;
// two __syncthreads per tile (v1: four). Numerics as v1: fp32 S, dP, dq and dkv accumulation; P and
// dS rounded to bf16 as mma operands; Delta from the fp32 dout, dO rounded to bf16 for dP and P^T dO.
#define BWD2_HB 64
#define BWD2_BK 32
#define BWD2_RING 4  // key-ring entries: a tile's keys are read from their publication to its atomics

static size_t bwd2_smem_bytes(int64_t D, int64_t Dv) {
    return 2 * ((size_t)BWD2_HB * (D + 8) + (size_t)BWD2_HB * (Dv + 8) + 2 * (size_t)BWD2_BK * (D + 8) +
                2 * (size_t)BWD2_HB * (BWD2_BK + 8)) +
           4 * (2 * (size_t)BWD2_HB + BWD2_RING * (BWD2_BK + 1));
}

// A: S = Q K^T and dP = dO V^T for 16 heads (ldmatrix addresses qa, da at k 0) and two n8 tiles of
// slots (kb: the kv rows, one ldmatrix .x4) over the whole D; dP over the first Dv columns, whose kv
// fragments serve both products.
template <int D, int Dv>
__device__ __forceinline__ void bwd2_scores(float (*s)[4], float (*dp)[4], unsigned qa, unsigned da, unsigned kb) {
#pragma unroll 4
    for (int k = 0; k < Dv / 16; k++) {
        unsigned a[4], d[4], b[4];
        dsa_ldsm_x4(a, qa + k * 32);
        dsa_ldsm_x4(d, da + k * 32);
        dsa_ldsm_x4(b, kb + k * 32);
#pragma unroll
        for (int n = 0; n < 2; n++) dsa_mma_bf16_16816(s[n], a, b + 2 * n);
#pragma unroll
        for (int n = 0; n < 2; n++) dsa_mma_bf16_16816(dp[n], d, b + 2 * n);
    }
#pragma unroll
    for (int k = Dv / 16; k < D / 16; k++) {
        unsigned a[4], b[4];
        dsa_ldsm_x4(a, qa + k * 32);
        dsa_ldsm_x4(b, kb + k * 32);
#pragma unroll
        for (int n = 0; n < 2; n++) dsa_mma_bf16_16816(s[n], a, b + 2 * n);
    }
}

// P = exp(sigma S - log Z) and sigma dS = sigma P (dP - Delta) of one n8 tile (rows g and g + 8 of the
// row pointers, columns col, col + 1) into shared memory as bf16; invalid slots give P = dS = 0.
__device__ __forceinline__ void bwd2_p_ds(const float *s, const float *dp, int col, unsigned vmask, float sigma, float dl_lo,
                                          float dl_hi, float lz_lo, float lz_hi, __nv_bfloat16 *p_lo, __nv_bfloat16 *ds_lo,
                                          int ldp) {
    bool ok0 = (vmask >> col) & 1u, ok1 = (vmask >> (col + 1)) & 1u;
    float p0 = ok0 ? __expf(s[0] * sigma - lz_lo) : 0.f, p1 = ok1 ? __expf(s[1] * sigma - lz_lo) : 0.f;
    float p2 = ok0 ? __expf(s[2] * sigma - lz_hi) : 0.f, p3 = ok1 ? __expf(s[3] * sigma - lz_hi) : 0.f;
    *(unsigned *)(p_lo + col) = dsa_pack_f32x2(p0, p1);
    *(unsigned *)(p_lo + 8 * ldp + col) = dsa_pack_f32x2(p2, p3);
    *(unsigned *)(ds_lo + col) = dsa_pack_f32x2(sigma * p0 * (dp[0] - dl_lo), sigma * p1 * (dp[1] - dl_lo));
    *(unsigned *)(ds_lo + 8 * ldp + col) = dsa_pack_f32x2(sigma * p2 * (dp[2] - dl_hi), sigma * p3 * (dp[3] - dl_hi));
}

// W32 (the default): dkv in chunks of 32 columns, the A fragments of dS^T and P^T loaded once per 32
// columns instead of per 16 (H200, T 8192: 188-190 TFLOP/s against 178-180 with 16-column chunks,
// which DSA_SPARSE_BWD_W16=1 keeps).
// (A split mode for one head group, opt-in until session 17, is gone: four warps computing S / dP for 8
// slots each measured 6.42 against 5.57 ms at H 12, K 512 on the H200, session 17 call 1; session 14's,
// partial sums over D, 6.96 against 6.07; the wgmma backward v3 now takes few-head models, 5.24 ms.)
template <int NJQ, bool W32>  // dq n8-tiles per warp: D = 16 * NJQ; Dv = 512
__global__ void __launch_bounds__(256, 1) sparse_mqa_bwd_mma_v2_kernel(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ kv, const int *__restrict__ idx,
    const int *__restrict__ topk_length, const void *sink, dsa_dtype sink_dt, const __nv_bfloat16 *__restrict__ out,
    const float *__restrict__ lse, const float *__restrict__ dout, float *dq, float *dkv, float *dsink, int H,
    int hbeg, int hend, int64_t K, int64_t S_kv, float sigma) {
    const int HB = BWD2_HB, BK = BWD2_BK, RING = BWD2_RING, D = 16 * NJQ, Dv = 512, NST = 2;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int n_hb = (hend - hbeg + HB - 1) / HB;
    int hblk = blockIdx.x % n_hb, h0 = hbeg + hblk * HB, nh = min(HB, hend - h0);
    int64_t t = blockIdx.x / n_hb;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    // Head group rg and slot / column half ch of this warp. Pairs of consecutive warps share a head
    // group, so with one or two groups (few heads) the working warps sit on different SM sub-partitions
    // (warp % 4): with rg = warp & 3 a single group's two warps, 0 and 4, shared one tensor core.
    int rg = warp >> 1, ch = warp & 1, r0 = rg * 16;
    // Head groups of 16 with a real head: the warps of the others skip A and B, and C's head sum stops
    // there (their P and dS rows are never read). A model with few heads (small.cfg: 12) pays for one
    // group instead of four.
    const int ngr = (nh + 15) / 16;
    // Row pitches padded by 8 bf16 (an odd number of 16-byte units: conflict-free ldmatrix rows).
    const int ldq = D + 8, ldo = Dv + 8, ldp = BK + 8, D8 = D / 8;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem;  // [HB][ldq]
    __nv_bfloat16 *sdo = sq + HB * ldq;              // [HB][ldo]
    __nv_bfloat16 *skv = sdo + HB * ldo;             // [NST][BK][ldq]
    __nv_bfloat16 *sP = skv + NST * BK * ldq;        // [HB][ldp]
    __nv_bfloat16 *sdS = sP + HB * ldp;              // [HB][ldp]
    float *sdelta = (float *)(sdS + HB * ldp), *slogz = sdelta + HB;
    int *rkeys = (int *)(slogz + HB);                    // [RING][BK] kv row per slot, -1 if invalid
    unsigned *rmask = (unsigned *)(rkeys + RING * BK);  // [RING] valid-slot bit mask per tile
    const uint4 zero4 = make_uint4(0, 0, 0, 0);

    int64_t k_end = dsa_row_k_end(topk_length, t, K);
    int nt = (int)((k_end + BK - 1) / BK);
    const dsa_slot_ring32<RING> ring{rkeys, rmask, idx + t * K, k_end, S_kv};
    // Warp w gathers rows 4w .. 4w+3, 8 lanes per row: a warp's copy reads 128 bytes of each of its 4
    // rows. (A warp per row, lanes over one row's chunks, measured 187 against 192-194 TFLOP/s on the
    // H200 at T 8192; a probe gathering 64-row tiles into padded rows: 3.0 against 5.0 TB/s.)
    auto issue_tile = [&](int tile) {
        __nv_bfloat16 *dst = skv + (tile % NST) * BK * ldq;
        int r = warp * 4 + (lane >> 3), key = ring.tile_keys(tile)[r];
        __nv_bfloat16 *drow = dst + r * ldq;
        const __nv_bfloat16 *src = kv + (int64_t)(key >= 0 ? key : 0) * D;
        // An invalid slot's copies read nothing and zero-fill (P = dS = 0 must meet finite values).
        const unsigned bytes = key >= 0 ? 16 : 0;
        for (int v = lane & 7; v < D8; v += 8) dsa_cp_async16_n(dsa_smem_addr(drow + v * 8), src + v * 8, bytes);
    };

    // Prologue. Q by cp.async (joins tile 0's group); dO rounded to bf16 and Delta = out . dout
    // (fp32 dout) in one pass, warp w owning heads 8w .. 8w+7; log Z = logaddexp(lse, sink); dsink.
    for (int r = warp * 8; r < warp * 8 + 8; r++) {
        __nv_bfloat16 *qrow = sq + r * ldq, *orow = sdo + r * ldo;
        float part = 0.f;
        if (r < nh) {
            const __nv_bfloat16 *src = q + ((t * H) + h0 + r) * D;
            for (int v = lane; v < D8; v += 32) dsa_cp_async16(dsa_smem_addr(qrow + v * 8), src + v * 8);
            part = dsa_bwd_do_delta<Dv>(dout + ((t * H) + h0 + r) * Dv, out + ((t * H) + h0 + r) * Dv, lane,
                                        [&](int col, uint2 v) { *(uint2 *)(orow + col) = v; });
        } else {
            for (int v = lane; v < D8; v += 32) *(uint4 *)(qrow + v * 8) = zero4;
            for (int v = lane; v < Dv / 8; v += 32) *(uint4 *)(orow + v * 8) = zero4;
        }
        float delta = dsa_warp_sum(part);
        if (lane == 0) {
            float logz = dsa_bwd_log_z(lse, sink, sink_dt, dsink, t, H, h0, r, nh, delta);
            sdelta[r] = delta;
            // exp(sigma S - inf) = 0: padding heads (and rows whose lse is -inf, i.e. no valid slot and
            // no sink, where every slot is invalid anyway) give P = dS = 0.
            slogz[r] = r < nh && logz > -INFINITY ? logz : INFINITY;
        }
    }
    int pre = -1;
    if (warp == 0) pre = ring.prime(nt, NST);
    __syncthreads();
    if (nt > 0) issue_tile(0);
    dsa_cp_async_commit();  // group 0: Q and tile 0

    float gq[NJQ][4];
#pragma unroll
    for (int j = 0; j < NJQ; j++) gq[j][0] = gq[j][1] = gq[j][2] = gq[j][3] = 0.f;
    float dl_lo = sdelta[r0 + g], dl_hi = sdelta[r0 + g + 8], lz_lo = slogz[r0 + g], lz_hi = slogz[r0 + g + 8];

    // Per-lane ldmatrix offsets (elements). A (16 rows x 16 at k0): lanes 0-15 rows 0-15 at col 0,
    // lanes 16-31 the same rows at col 8.
    int a_row = lane & 15, a_col = (lane >> 4) * 8;
    // B from row-major rows (16 rows n x 16 k): {b0, b1} of n8-tile 0, then of n8-tile 1.
    int b_row = (lane & 7) + ((lane >> 4) << 3), b_col = ((lane >> 3) & 1) * 8;
    // B from k-major rows, transposed (16 rows k x 16 cols n): {b0, b1} of n8-tile 0, then 1.
    int t_row = (lane & 7) + ((lane >> 3) & 1) * 8, t_col = (lane >> 4) * 8;
    // A^T from k-major rows (16 rows k x 16 cols m), transposed: a0..a3.
    int at_row = (lane & 7) + ((lane >> 4) << 3), at_col = ((lane >> 3) & 1) * 8;
    const int kc = ch * 16;  // phase A: this warp's slots

    for (int i = 0; i < nt; i++) {
        dsa_cp_async_wait<0>();  // this thread's copies of tile i have landed
        __syncthreads();         // ... everyone's; tile i-1 is fully consumed (stage, sP, sdS, ring)
        if (i + 1 < nt) issue_tile(i + 1);
        dsa_cp_async_commit();
        if (warp == 0) ring.advance(i, nt, NST, pre);
        unsigned vmask = ring.tile_mask(i);
        if (vmask == 0) continue;  // CTA-uniform: nothing to add from this tile
        const __nv_bfloat16 *kvs = skv + (i % NST) * BK * ldq;
        unsigned kv_base = dsa_smem_addr(kvs);

        if (rg < ngr) {  // A. S and dP for heads r0 .. +16, slots kc .. +16
            float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}}, dp[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            unsigned qa = dsa_smem_addr(sq + (r0 + a_row) * ldq + a_col), da = dsa_smem_addr(sdo + (r0 + a_row) * ldo + a_col);
            unsigned kb = kv_base + (unsigned)(((kc + b_row) * ldq + b_col) * 2);
            bwd2_scores<D, Dv>(s, dp, qa, da, kb);
#pragma unroll
            for (int x = 0; x < 2; x++)
                bwd2_p_ds(s[x], dp[x], kc + 8 * x + 2 * c, vmask, sigma, dl_lo, dl_hi, lz_lo, lz_hi, sP + (r0 + g) * ldp,
                          sdS + (r0 + g) * ldp, ldp);
        }
        __syncthreads();  // P and dS of all 64 heads x 32 slots are in shared memory
        if (dq && rg < ngr) {  // B. dq[heads r0 .. +16, this warp's half of D] += sigma dS K
            unsigned dsa_ = dsa_smem_addr(sdS + (r0 + a_row) * ldp + a_col);
            unsigned kt = kv_base + (unsigned)((t_row * ldq + ch * (NJQ * 8) + t_col) * 2);
#pragma unroll
            for (int kk = 0; kk < 2; kk++) {
                if (((vmask >> (16 * kk)) & 0xffffu) == 0) continue;  // warp-uniform: all 16 slots invalid
                unsigned a[4];
                dsa_ldsm_x4(a, dsa_ + kk * 32);
#pragma unroll
                for (int jj = 0; jj < NJQ / 2; jj++) {
                    unsigned b[4];
                    dsa_ldsm_x4_trans(b, kt + (unsigned)((kk * 16 * ldq + jj * 16) * 2));
                    dsa_mma_bf16_16816(gq[2 * jj], a, b);
                    dsa_mma_bf16_16816(gq[2 * jj + 1], a, b + 2);
                }
            }
        }
        if (dkv) {  // C. dkv[slot, chunk of 16 NB columns] += (sigma dS)^T Q + P^T dO
            const int *keys = ring.tile_keys(i);
            unsigned ds_t = dsa_smem_addr(sdS + at_row * ldp + at_col), p_t = dsa_smem_addr(sP + at_row * ldp + at_col);
            // NB 16-column blocks at col0: the A fragments (dS^T, P^T) of a k-step serve all NB blocks.
            auto dkv_chunk = [&](auto nb, int col0, bool with_do) {
                constexpr int NB = decltype(nb)::value;
                float acc[2][2 * NB][4];
#pragma unroll
                for (int m = 0; m < 2; m++)
#pragma unroll
                    for (int n = 0; n < 2 * NB; n++) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.f;
                unsigned qt = dsa_smem_addr(sq + t_row * ldq + col0 + t_col), ot = dsa_smem_addr(sdo + t_row * ldo + col0 + t_col);
                // acc += A^T B over the heads of k-step kk: A = dS or P ([head][slot], a_t), B = Q or dO
                // (row pitch ldb, b_t).
                auto k_step = [&](int kk, unsigned a_t, unsigned b_t, int ldb) {
                    unsigned a0[4], a1[4];
                    dsa_ldsm_x4_trans(a0, a_t + kk * 16 * ldp * 2);
                    dsa_ldsm_x4_trans(a1, a_t + (kk * 16 * ldp + 16) * 2);
#pragma unroll
                    for (int bb = 0; bb < NB; bb++) {
                        unsigned b[4];
                        dsa_ldsm_x4_trans(b, b_t + (kk * 16 * ldb + 16 * bb) * 2);
                        dsa_mma_bf16_16816(acc[0][2 * bb], a0, b);
                        dsa_mma_bf16_16816(acc[0][2 * bb + 1], a0, b + 2);
                        dsa_mma_bf16_16816(acc[1][2 * bb], a1, b);
                        dsa_mma_bf16_16816(acc[1][2 * bb + 1], a1, b + 2);
                    }
                };
#pragma unroll
                for (int kk = 0; kk < HB / 16; kk++) {
                    if (kk >= ngr) break;  // CTA-uniform
                    k_step(kk, ds_t, qt, ldq);
                    if (with_do) k_step(kk, p_t, ot, ldo);
                }
                // Lane (g, c) holds rows g, g+8 at columns 2c, 2c+1 of each 16x8 tile. Lanes c and c^1
                // swap: the even one takes row g, columns 2c .. 2c+3; the odd one row g+8, columns
                // 2c-2 .. 2c+1. One float4 atomic each. (Staging the chunk's slot rows in the freed kv
                // stage and reducing each 128-byte row by cp.reduce.async.bulk measured slower: 153.8
                // against 188.7 TFLOP/s at T 4096, H 64, and 8.06 against 5.98 ms at H 12; session 16,
                // commit b390a60.)
                bool odd = c & 1;
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    int slot = m * 16 + g + (odd ? 8 : 0), key = keys[slot];
#pragma unroll
                    for (int n = 0; n < 2 * NB; n++) {
                        float *a = acc[m][n];
                        float s0 = odd ? a[0] : a[2], s1 = odd ? a[1] : a[3];
                        float r0v = __shfl_xor_sync(0xffffffffu, s0, 1), r1v = __shfl_xor_sync(0xffffffffu, s1, 1);
                        float4 v = odd ? make_float4(r0v, r1v, a[2], a[3]) : make_float4(a[0], a[1], r0v, r1v);
                        int col = col0 + n * 8 + 2 * c - (odd ? 2 : 0);
                        if (key >= 0) atomicAdd((float4 *)(dkv + (int64_t)key * D + col), v);
                    }
                }
            };
            if (W32) {  // 32-column chunks over the first Dv columns, then the rest (q part only) by 16
                for (int c32 = warp; c32 < Dv / 32; c32 += 8) dkv_chunk(std::integral_constant<int, 2>{}, c32 * 32, true);
                for (int c16 = Dv / 16 + warp; c16 < D / 16; c16 += 8) dkv_chunk(std::integral_constant<int, 1>{}, c16 * 16, false);
            } else {
                for (int chunk = warp; chunk < D / 16; chunk += 8)
                    dkv_chunk(std::integral_constant<int, 1>{}, chunk * 16, chunk * 16 < Dv);
            }
        }
    }
    dsa_cp_async_wait<0>();  // nothing in flight at exit
    if (dq) bwd_add_dq<NJQ>(dq, gq, t, H, h0, nh, r0 + g, ch, c);
}

template <int NJQ>
static dsa_status launch_bwd_mma_v2(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                    const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                    const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv,
                                    int64_t h0, int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink) {
    int64_t T_ = q->shape[0], H = q->shape[1], K = idx->shape[1], S = kv->shape[0];
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    static int w32 = -1;
    if (w32 < 0) w32 = !dsa_env_flag("DSA_SPARSE_BWD_W16");
    auto kern = w32 ? sparse_mqa_bwd_mma_v2_kernel<NJQ, true> : sparse_mqa_bwd_mma_v2_kernel<NJQ, false>;
    size_t smem = bwd2_smem_bytes(16 * NJQ, dv);
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa bwd (mma v2)"));
    int64_t n_hb = (h1 - h0 + BWD2_HB - 1) / BWD2_HB;
    kern<<<(unsigned)(T_ * n_hb), 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (const __nv_bfloat16 *)out->data, (const float *)lse->data, (const float *)dout->data,
        dq ? (float *)dq->data : NULL, dkv ? (float *)dkv->data : NULL, dsink ? (float *)dsink->data : NULL, (int)H,
        (int)h0, (int)h1, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa_bwd_mma_v2");
    return DSA_OK;
}

// bf16 inputs with f32 gradients, Dv = 512, D = 576 or 512; DSA_SPARSE_SIMT=1 forces the SIMT kernel.
static bool use_mma_bwd(const dsa_tensor *q, const dsa_tensor *dout, const dsa_tensor *dq, const dsa_tensor *dkv,
                        const dsa_tensor *dsink, int64_t dv) {
    static int simt = -1;
    if (simt < 0) simt = dsa_env_flag("DSA_SPARSE_SIMT");
    int64_t D = q->shape[2];
    return !simt && q->dtype == DSA_BF16 && dout->dtype == DSA_F32 && (!dq || dq->dtype == DSA_F32) &&
           (!dkv || dkv->dtype == DSA_F32) && (!dsink || dsink->dtype == DSA_F32) && dv == 512 && (D == 576 || D == 512);
}

// dq_store: dq holds anything; v3 stores its rows, the other kernels add into it zeroed here first
// (the caller passes dq_store only for calls covering every head).
static dsa_status bwd_dispatch(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                               const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                               const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                               int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink, bool dq_store) {
    static int v1 = -1, v2 = -1;
    if (v1 < 0) v1 = dsa_env_flag("DSA_SPARSE_BWD_V1");
    if (v2 < 0) v2 = dsa_env_flag("DSA_SPARSE_BWD_V2");
    const bool mma = use_mma_bwd(q, dout, dq, dkv, dsink, dv);
    if (mma) {
        // v3 (wgmma) for D = 576 when both dq and dkv are asked for (the deterministic mode asks for dq
        // alone), on sm_90; DSA_SPARSE_BWD_V2=1 / _V1=1 keep the mma.sync kernels.
        bool sm90 = false;
        DSA_TRY(dsa_cuda_sm90(&sm90));
        if (!v1 && !v2 && sm90 && q->shape[2] == 576 && dq && dkv) {
            dsa_status st = dsa_sparse_mqa_bwd_wgmma_cuda(q, kv, idx, topk_length, sink, out, lse, dout, sigma, h0, h1, dq,
                                                          dkv, dsink, dq_store && dq);
            if (st != DSA_ERR_UNSUPPORTED) return st;
        }
    }
    if (dq_store && dq) DSA_TRY(dsa_zero(dq));  // every kernel below adds into dq
    if (mma) {
        size_t max_optin = 0;
        DSA_TRY(dsa_smem_optin(&max_optin));
        if (!v1 && bwd2_smem_bytes(q->shape[2], dv) <= max_optin) {
            if (q->shape[2] == 576)
                return launch_bwd_mma_v2<36>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink);
            return launch_bwd_mma_v2<32>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink);
        }
        if (q->shape[2] == 576)
            return launch_bwd_mma<36>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink);
        return launch_bwd_mma<32>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink);
    }
    switch (q->dtype) {
    case DSA_F32:
        return launch_bwd<float, float>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink);
    case DSA_BF16:
        return launch_bwd<__nv_bfloat16, float>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq,
                                                dkv, dsink);
    case DSA_F64:
        return launch_bwd<double, double>(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink);
    default:
        return dsa_error_set(DSA_ERR_DTYPE, "dsa_sparse_mqa backward (cuda): unsupported dtype %s",
                             dsa_dtype_name(q->dtype));
    }
}

// DSA_DETERMINISTIC=1 (dsa_deterministic): dkv and dsink without atomics, in a fixed summation order
// (dsa_sparse_bwd_det_cuda.cu; slower: the scores are recomputed key-major). Default: fp32 atomics.
extern "C" dsa_status dsa_sparse_mqa_bwd_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                           const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                           const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv,
                                           int64_t h0, int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink,
                                           bool dq_store) {
    if (!dsa_deterministic() || (!dkv && !dsink))
        return bwd_dispatch(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink, dq_store);
    if (dq) DSA_TRY(bwd_dispatch(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, NULL, NULL, dq_store));
    return dsa_sparse_mqa_bwd_det_cuda(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dkv, dsink);
}
