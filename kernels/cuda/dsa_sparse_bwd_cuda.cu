// Sparse MQA attention backward (SPEC 3). One CTA per (query row t, block of DSA_ATT_HB heads), the
// same slot walk as the forward (valid slots only, gathered kv rows in shared memory). P is
// recomputed from lse (log Z = logaddexp(lse, sink)); Delta = out . dout. dq stays in registers
// for the whole row; dkv is accumulated with atomics into the fp32 gradient (cast once by the
// caller); dsink gets one atomic per (t, head).
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

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

    int64_t k_end = K;
    if (topk_length) k_end = min((int64_t)max(topk_length[t], 0), K);
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
            float l = h < nh ? lse[t * H + h0 + h] : -INFINITY, logz = l;
            if (sink && h < nh) {
                float sk = (float)dsa_ld_any(sink, sink_dt, h0 + h), mx = fmaxf(l, sk);
                logz = mx + logf(expf(l - mx) + expf(sk - mx));
                if (dsink) atomicAdd(&dsink[h0 + h], -delta * expf(sk - logz));
            }
            sdelta[h] = delta;
            slogz[h] = logz;
        }
    }
    float gq[NJQ][4];
#pragma unroll
    for (int j = 0; j < NJQ; j++) gq[j][0] = gq[j][1] = gq[j][2] = gq[j][3] = 0;

    int64_t k_end = K;
    if (topk_length) k_end = min((int64_t)max(topk_length[t], 0), K);
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
    if (!dq) return;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int row = r0 + g + 8 * half;
        if (row >= nh) continue;
        float *qrow = dq + ((t * H) + h0 + row) * D + ch * (NJQ * 8) + 2 * c;
#pragma unroll
        for (int j = 0; j < NJQ; j++) {
            float2 *p = (float2 *)(qrow + j * 8), v = *p;
            v.x += gq[j][2 * half];
            v.y += gq[j][2 * half + 1];
            *p = v;
        }
    }
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

// bf16 inputs with f32 gradients, Dv = 512, D = 576 or 512; DSA_SPARSE_SIMT=1 forces the SIMT kernel.
static bool use_mma_bwd(const dsa_tensor *q, const dsa_tensor *dout, const dsa_tensor *dq, const dsa_tensor *dkv,
                        const dsa_tensor *dsink, int64_t dv) {
    static int simt = -1;
    if (simt < 0) simt = getenv("DSA_SPARSE_SIMT") && atoi(getenv("DSA_SPARSE_SIMT")) != 0;
    int64_t D = q->shape[2];
    return !simt && q->dtype == DSA_BF16 && dout->dtype == DSA_F32 && (!dq || dq->dtype == DSA_F32) &&
           (!dkv || dkv->dtype == DSA_F32) && (!dsink || dsink->dtype == DSA_F32) && dv == 512 && (D == 576 || D == 512);
}

static dsa_status bwd_dispatch(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                               const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                               const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv, int64_t h0,
                               int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink) {
    if (use_mma_bwd(q, dout, dq, dkv, dsink, dv)) {
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

// DSA_DETERMINISTIC=1: dkv and dsink without atomics, in a fixed summation order
// (dsa_sparse_bwd_det_cuda.cu; slower: the scores are recomputed key-major). Default: fp32 atomics.
static bool deterministic_bwd(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("DSA_DETERMINISTIC");
        v = e && e[0] == '1';
    }
    return v == 1;
}

extern "C" dsa_status dsa_sparse_mqa_bwd_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                           const dsa_tensor *topk_length, const dsa_tensor *sink, const dsa_tensor *out,
                                           const dsa_tensor *lse, const dsa_tensor *dout, double sigma, int64_t dv,
                                           int64_t h0, int64_t h1, dsa_tensor *dq, dsa_tensor *dkv, dsa_tensor *dsink) {
    if (!deterministic_bwd() || (!dkv && !dsink))
        return bwd_dispatch(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, dkv, dsink);
    if (dq) DSA_TRY(bwd_dispatch(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dq, NULL, NULL));
    return dsa_sparse_mqa_bwd_det_cuda(q, kv, idx, topk_length, sink, out, lse, dout, sigma, dv, h0, h1, dkv, dsink);
}
