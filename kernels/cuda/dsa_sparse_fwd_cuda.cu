// Sparse MQA attention forward with optional sink (SPEC 3). One CTA per (query row t, block of
// DSA_ATT_HB heads). The CTA walks the row's K slots in tiles of 32, compacts each tile to its valid
// slots (invalid ones are never read), gathers only those kv rows into shared memory, and keeps an
// online softmax in fp32 (fp64 for f64 inputs). No [T, K, D] gather and no [T, S_kv] mask exist.
// Epilogue: lse = m + log l (KV-only), out = acc / l * sigmoid(lse - sink).
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

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
    } else if (topk_length) {
        k_end = min((int64_t)max(topk_length[t], 0), K);
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


// ---- tensor-core path (bf16, Dv = 512): mma.sync m16n8k16, fp32 accumulators -------------------------
// One CTA per (query row t, block of 64 heads), 8 warps. Warp (rg = warp & 3, ch = warp >> 2) owns
// heads rg*16 .. +16 and half ch of Dv (256 columns: 32 n8-tiles, 128 fp32 accumulators). Per tile of
// 32 valid slots: S = Q K^T (each warp 16 heads x 16 slots) -> smem; online softmax per head row
// (fp32) -> P (bf16) in smem; O = alpha O + P V. kv rows are gathered once per tile for 64 heads.
#define MMA_HB 64
#define MMA_BK 32


template <int NJ>  // n8-tiles per warp: Dv = 16 * NJ
__global__ void __launch_bounds__(256, 1) sparse_mqa_fwd_mma_kernel(
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

    int64_t k_end = K;
    if (topk_length) k_end = min((int64_t)max(topk_length[t], 0), K);
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

static dsa_status launch_fwd_mma(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                 const dsa_tensor *topk_length, const dsa_tensor *sink, double sigma, int64_t h0,
                                 int64_t h1, dsa_tensor *out, dsa_tensor *lse) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], K = idx->shape[1], S = kv->shape[0];
    if (T_ == 0 || h1 <= h0) return DSA_OK;
    size_t smem = 2 * (size_t)(MMA_HB + MMA_BK) * (D + 8) + 4 * (size_t)MMA_HB * (MMA_BK + 1) +
                  2 * (size_t)MMA_HB * (MMA_BK + 8) + 4 * 3 * MMA_HB + 4 * (2 * MMA_BK + 1);
    auto kern = sparse_mqa_fwd_mma_kernel<32>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_sparse_mqa fwd (mma)"));
    int64_t n_hb = (h1 - h0 + MMA_HB - 1) / MMA_HB;
    kern<<<(unsigned)(T_ * n_hb), 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, sink ? sink->data : NULL, sink ? sink->dtype : DSA_F32,
        (__nv_bfloat16 *)out->data, (float *)lse->data, (int)H, (int)h0, (int)h1, (int)D, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("sparse_mqa_fwd_mma");
    return DSA_OK;
}

// The tensor-core path takes bf16 with Dv = 512 and D a multiple of 16 (up to 1024); DSA_SPARSE_SIMT=1
// forces the SIMT kernel (for comparisons).
static bool use_mma_fwd(const dsa_tensor *q, int64_t dv) {
    static int simt = -1;
    if (simt < 0) simt = getenv("DSA_SPARSE_SIMT") && atoi(getenv("DSA_SPARSE_SIMT")) != 0;
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

// KV-only lse of dense attention over each row's window: the forward kernel with window slots and
// no output.
extern "C" dsa_status dsa_attn_lse_dense_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *start,
                                              const dsa_tensor *end, double sigma, dsa_tensor *lse) {
    int64_t H = q->shape[1];
    switch (q->dtype) {
    case DSA_F32: return launch_fwd<float, float, true>(q, kv, NULL, NULL, start, end, NULL, sigma, 0, 0, H, NULL, lse);
    case DSA_BF16:
        return launch_fwd<__nv_bfloat16, float, true>(q, kv, NULL, NULL, start, end, NULL, sigma, 0, 0, H, NULL, lse);
    case DSA_F64: return launch_fwd<double, double, true>(q, kv, NULL, NULL, start, end, NULL, sigma, 0, 0, H, NULL, lse);
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_attn_lse_dense (cuda): unsupported dtype %s", dsa_dtype_name(q->dtype));
    }
}
