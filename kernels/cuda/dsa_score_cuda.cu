// Score recompute (SPEC 5) and the KL indexer loss (SPEC 6) on the GPU.
// Head sums: one CTA per query row; the row's slots (selected, or every key of the window) go in
// tiles of 32 gathered kv rows; for each tile the heads go in blocks of 16 (q block in shared
// memory), and warp 0 keeps each slot's running sum over all heads in a register. Row kernels
// (L1 normalization, KL loss) use one CTA per row with fp32 (fp64) block reductions.
#include <stdlib.h>
#include "kernels/cuda/dsa_common.cuh"
#include "kernels/cuda/dsa_cuda_kernels.h"

template <typename T, typename A, bool DENSE>
__global__ void __launch_bounds__(DSA_ATT_NT) headsum_kernel(const T *__restrict__ q, const T *__restrict__ kv,
                                                            const int *__restrict__ idx, const int *__restrict__ topk_length,
                                                            const int *__restrict__ start, const int *__restrict__ end,
                                                            const A *__restrict__ lse, T *__restrict__ out, int H, int D,
                                                            int64_t K, int64_t S_kv, A sigma) {
    const int HB = DSA_ATT_HB, BK = DSA_ATT_BK, NT = DSA_ATT_NT;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ld = D + 1;
    A *sq = (A *)dsa_smem, *skv = sq + HB * ld, *red = skv + BK * ld;
    int *keys = (int *)(red + (NT / 32) * BK), *slots = keys + BK, *nvalid = slots + BK;
    int64_t width = DENSE ? S_kv : K;
    for (int64_t j = tid; j < width; j += NT) out[t * width + j] = dsa_from_double<T>(0.0);
    int64_t k_end = K, lo = 0;
    if (DENSE) {
        lo = max((int64_t)start[t], (int64_t)0);
        k_end = min((int64_t)end[t], S_kv) - lo;
    } else if (topk_length) {
        k_end = min((int64_t)max(topk_length[t], 0), K);
    }
    for (int64_t j0 = 0; j0 < k_end; j0 += BK) {
        __syncthreads();
        if (DENSE) {
            if (tid < BK && j0 + tid < k_end) keys[tid] = slots[tid] = (int)(lo + j0 + tid);
            if (tid == 0) *nvalid = (int)min((int64_t)BK, k_end - j0);
        } else if (warp == 0) {
            dsa_compact_tile32(idx, topk_length, t, K, j0, S_kv, keys, slots, nvalid);
        }
        __syncthreads();
        int n = *nvalid;
        if (n == 0) continue;
        for (int i = tid; i < n * D; i += NT) skv[(i / D) * ld + i % D] = (A)dsa_to_float(kv[(int64_t)keys[i / D] * D + i % D]);
        A total = 0;  // warp 0: slot `lane`'s sum over every head
        for (int h0 = 0; h0 < H; h0 += HB) {
            int nh = min(HB, H - h0);
            __syncthreads();
            for (int i = tid; i < HB * D; i += NT) {
                int h = i / D, d = i % D;
                sq[h * ld + d] = h < nh ? (A)dsa_to_float(q[((t * H) + h0 + h) * D + d]) : (A)0;
            }
            __syncthreads();
            A v = 0;
            if (lane < n) {
                const A *kr = skv + lane * ld;
                for (int hh = 0; hh < 2; hh++) {
                    int h = 2 * warp + hh;
                    if (h >= nh) break;
                    const A *qh = sq + h * ld;
                    A s = 0;
                    for (int d = 0; d < D; d++) s += qh[d] * kr[d];
                    v += exp(sigma * s - lse[t * H + h0 + h]);
                }
            }
            red[warp * BK + lane] = v;
            __syncthreads();
            if (warp == 0)
                for (int w = 0; w < NT / 32; w++) total += red[w * BK + lane];
        }
        if (warp == 0 && lane < n) out[t * width + slots[lane]] = dsa_from_double<T>((double)total);
    }
}

template <typename T, typename A, bool DENSE>
static dsa_status launch_headsum(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                 const dsa_tensor *topk_length, const dsa_tensor *start, const dsa_tensor *end,
                                 const dsa_tensor *lse, double sigma, dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = kv->shape[0], K = DENSE ? 0 : idx->shape[1];
    if (T_ == 0) return DSA_OK;
    size_t smem = sizeof(A) * ((size_t)(DSA_ATT_HB + DSA_ATT_BK) * (D + 1) + (DSA_ATT_NT / 32) * DSA_ATT_BK) +
                  sizeof(int) * (2 * DSA_ATT_BK + 1);
    auto kern = headsum_kernel<T, A, DENSE>;
    DSA_TRY(dsa_smem_setup(kern, smem, "dsa_attn_score_headsum"));
    kern<<<(unsigned)T_, DSA_ATT_NT, smem, dsa_stream()>>>(
        (const T *)q->data, (const T *)kv->data, idx ? (const int *)idx->data : NULL,
        topk_length ? (const int *)topk_length->data : NULL, start ? (const int *)start->data : NULL,
        end ? (const int *)end->data : NULL, (const A *)lse->data, (T *)out->data, (int)H, (int)D, K, S, (A)sigma);
    CUDA_LAUNCH_CHECK("attn_score_headsum");
    return DSA_OK;
}


// ---- tensor-core path for the sparse head sum (bf16, D multiple of 16, K <= 16384) ---------------------
// One CTA per query row, 8 warps; heads go in blocks of 64 (Q block in shared memory), the row's slots
// in tiles of 32 gathered kv rows; S = Q K^T by mma.sync (warp: 16 heads x 16 slots), then
// exp(sigma S - lse) summed over the warp's heads by shuffles and added into a per-slot fp32 sum in
// shared memory; the sums are written once at the end.
#define HS_HB 64
#define HS_BK 32
#define HS_MAXK 16384


__global__ void __launch_bounds__(256, 1) headsum_mma_kernel(const __nv_bfloat16 *__restrict__ q,
                                                            const __nv_bfloat16 *__restrict__ kv,
                                                            const int *__restrict__ idx,
                                                            const int *__restrict__ topk_length,
                                                            const float *__restrict__ lse, __nv_bfloat16 *out, int H,
                                                            int D, int64_t K, int64_t S_kv, float sigma) {
    const int HB = HS_HB, BK = HS_BK, NT = 256;
    extern __shared__ __align__(16) unsigned char dsa_smem[];
    int64_t t = blockIdx.x;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, c = lane & 3;
    int rg = warp & 3, ch = warp >> 2, r0 = rg * 16, ldq = D + 8, D8 = D / 8;
    __nv_bfloat16 *sq = (__nv_bfloat16 *)dsa_smem, *skv = sq + HB * ldq;
    float *ssum = (float *)(skv + BK * ldq), *slse = ssum + K;
    int *keys = (int *)(slse + HB), *slots = keys + BK, *nvalid = slots + BK;
    const uint4 zero4 = make_uint4(0, 0, 0, 0);
    for (int64_t j = tid; j < K; j += NT) ssum[j] = 0;
    int64_t k_end = K;
    if (topk_length) k_end = min((int64_t)max(topk_length[t], 0), K);
    for (int h0 = 0; h0 < H; h0 += HB) {
        int nh = min(HB, H - h0);
        __syncthreads();
        for (int i = tid; i < HB * D8; i += NT) {
            int h = i / D8, v = i % D8;
            *(uint4 *)(sq + h * ldq + v * 8) = h < nh ? ((const uint4 *)(q + ((t * H) + h0 + h) * D))[v] : zero4;
        }
        if (tid < HB) slse[tid] = tid < nh ? lse[t * H + h0 + tid] : INFINITY;  // exp(. - inf) = 0 for padding heads
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
            float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            for (int k0 = 0; k0 < D; k0 += 16) {
                const __nv_bfloat16 *qa = sq + (r0 + g) * ldq + k0 + 2 * c;
                unsigned a[4] = {*(const unsigned *)qa, *(const unsigned *)(qa + 8 * ldq), *(const unsigned *)(qa + 8),
                                 *(const unsigned *)(qa + 8 * ldq + 8)};
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    const __nv_bfloat16 *kb = skv + (ch * 16 + x * 8 + g) * ldq + k0 + 2 * c;
                    unsigned b[2] = {*(const unsigned *)kb, *(const unsigned *)(kb + 8)};
                    dsa_mma_bf16_16816(s[x], a, b);
                }
            }
            float llo = slse[r0 + g], lhi = slse[r0 + g + 8];
#pragma unroll
            for (int x = 0; x < 2; x++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {  // column 2c + e of n-tile x: rows g and g + 8, then over g
                    float v = __expf(s[x][e] * sigma - llo) + __expf(s[x][2 + e] * sigma - lhi);
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                    int r = ch * 16 + x * 8 + 2 * c + e;
                    if (g == 0 && r < n) atomicAdd(&ssum[slots[r]], v);
                }
            }
        }
    }
    __syncthreads();
    for (int64_t j = tid; j < K; j += NT) out[t * K + j] = __float2bfloat16(ssum[j]);
}

static bool use_mma_headsum(const dsa_tensor *q, const dsa_tensor *lse, const dsa_tensor *out, int64_t K) {
    static int simt = -1;
    if (simt < 0) simt = getenv("DSA_SPARSE_SIMT") && atoi(getenv("DSA_SPARSE_SIMT")) != 0;
    int64_t D = q->shape[2];
    return !simt && q->dtype == DSA_BF16 && out->dtype == DSA_BF16 && lse->dtype == DSA_F32 && D % 16 == 0 &&
           D <= 1024 && K <= HS_MAXK;
}

static dsa_status launch_headsum_mma(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                     const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                     dsa_tensor *out) {
    int64_t T_ = q->shape[0], H = q->shape[1], D = q->shape[2], S = kv->shape[0], K = idx->shape[1];
    if (T_ == 0) return DSA_OK;
    size_t smem = 2 * (size_t)(HS_HB + HS_BK) * (D + 8) + 4 * (size_t)K + 4 * HS_HB + 4 * (2 * HS_BK + 1);
    DSA_TRY(dsa_smem_setup(headsum_mma_kernel, smem, "dsa_attn_score_headsum (mma)"));
    headsum_mma_kernel<<<(unsigned)T_, 256, smem, dsa_stream()>>>(
        (const __nv_bfloat16 *)q->data, (const __nv_bfloat16 *)kv->data, (const int *)idx->data,
        topk_length ? (const int *)topk_length->data : NULL, (const float *)lse->data, (__nv_bfloat16 *)out->data,
        (int)H, (int)D, K, S, (float)sigma);
    CUDA_LAUNCH_CHECK("attn_score_headsum_mma");
    return DSA_OK;
}

extern "C" dsa_status dsa_attn_score_headsum_cuda(const dsa_tensor *q, const dsa_tensor *kv, const dsa_tensor *idx,
                                                  const dsa_tensor *topk_length, const dsa_tensor *lse, double sigma,
                                                  dsa_tensor *out) {
    if (use_mma_headsum(q, lse, out, idx->shape[1])) return launch_headsum_mma(q, kv, idx, topk_length, lse, sigma, out);
    switch (q->dtype) {
    case DSA_F32: return launch_headsum<float, float, false>(q, kv, idx, topk_length, NULL, NULL, lse, sigma, out);
    case DSA_BF16: return launch_headsum<__nv_bfloat16, float, false>(q, kv, idx, topk_length, NULL, NULL, lse, sigma, out);
    case DSA_F64: return launch_headsum<double, double, false>(q, kv, idx, topk_length, NULL, NULL, lse, sigma, out);
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_attn_score_headsum (cuda): unsupported dtype %s", dsa_dtype_name(q->dtype));
    }
}

extern "C" dsa_status dsa_attn_score_headsum_dense_cuda(const dsa_tensor *q, const dsa_tensor *kv,
                                                        const dsa_tensor *start, const dsa_tensor *end,
                                                        const dsa_tensor *lse, double sigma, dsa_tensor *out) {
    switch (q->dtype) {
    case DSA_F32: return launch_headsum<float, float, true>(q, kv, NULL, NULL, start, end, lse, sigma, out);
    case DSA_BF16: return launch_headsum<__nv_bfloat16, float, true>(q, kv, NULL, NULL, start, end, lse, sigma, out);
    case DSA_F64: return launch_headsum<double, double, true>(q, kv, NULL, NULL, start, end, lse, sigma, out);
    default:
        return dsa_error_set(DSA_ERR_DTYPE, "dsa_attn_score_headsum_dense (cuda): unsupported dtype %s",
                             dsa_dtype_name(q->dtype));
    }
}

// ---- row reductions ------------------------------------------------------------------------------
#define ROW_NT 256

template <typename A> __device__ A block_reduce(A v, bool is_max, A *buf) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = is_max ? dsa_warp_max(v) : dsa_warp_sum(v);
    __syncthreads();  // buf is reused by consecutive reductions
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    A r = buf[0];
    for (int w = 1; w < ROW_NT / 32; w++) r = is_max ? (r > buf[w] ? r : buf[w]) : r + buf[w];
    return r;
}

template <typename T, typename A>
__global__ void normalize_l1_kernel(const T *x, T *out, int64_t N) {
    __shared__ A buf[32];
    int64_t t = blockIdx.x;
    A part = 0;
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) part += fabs((A)dsa_to_float(x[t * N + j]));
    A tot = block_reduce<A>(part, false, buf);
    A inv = (A)1 / (tot > (A)1e-10 ? tot : (A)1e-10);
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) out[t * N + j] = dsa_from_double<T>((double)((A)dsa_to_float(x[t * N + j]) * inv));
}

extern "C" dsa_status dsa_normalize_rows_l1_cuda(const dsa_tensor *x, dsa_tensor *out) {
    int64_t T_ = x->shape[0], N = x->shape[1];
    if (T_ == 0) return DSA_OK;
    switch (x->dtype) {
    case DSA_F32: normalize_l1_kernel<float, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>((const float *)x->data, (float *)out->data, N); break;
    case DSA_BF16:
        normalize_l1_kernel<__nv_bfloat16, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const __nv_bfloat16 *)x->data, (__nv_bfloat16 *)out->data, N);
        break;
    case DSA_F64: normalize_l1_kernel<double, double><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>((const double *)x->data, (double *)out->data, N); break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_normalize_rows_l1 (cuda): unsupported dtype %s", dsa_dtype_name(x->dtype));
    }
    CUDA_LAUNCH_CHECK("normalize_rows_l1");
    return DSA_OK;
}

// ---- KL indexer loss -------------------------------------------------------------------------------
__device__ __forceinline__ bool slot_ok(double l) { return !(isnan(l) || l == -INFINITY); }

// Row max and log-sum-exp of the valid logits of row t (m = -inf when the row has none).
template <typename T, typename A>
__device__ void row_logsumexp(const T *lg, int64_t N, A *buf, A *m_out, A *lse_out) {
    A m = -INFINITY;
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) {
        A l = (A)dsa_to_float(lg[j]);
        if (slot_ok(l) && l > m) m = l;
    }
    m = block_reduce<A>(m, true, buf);
    A part = 0;
    if (m != (A)-INFINITY)
        for (int64_t j = threadIdx.x; j < N; j += ROW_NT) {
            A l = (A)dsa_to_float(lg[j]);
            if (slot_ok(l)) part += exp(l - m);
        }
    A z = block_reduce<A>(part, false, buf);
    *m_out = m;
    *lse_out = m + log(z);
}

template <typename T, typename A>
__global__ void kl_fwd_kernel(const T *logits, const void *target, dsa_dtype tdt, const uint8_t *is_real, A scale,
                              int64_t N, A *loss) {
    __shared__ A buf[32];
    int64_t t = blockIdx.x;
    if (is_real && !is_real[t]) return;
    const T *lg = logits + t * N;
    A m, lse;
    row_logsumexp<T, A>(lg, N, buf, &m, &lse);
    if (m == (A)-INFINITY) return;
    A part = 0;
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) {
        A l = (A)dsa_to_float(lg[j]);
        if (!slot_ok(l)) continue;
        A p = (A)dsa_ld_any(target, tdt, t * N + j);
        part += p * (log(p > (A)1e-10 ? p : (A)1e-10) - (l - lse));
    }
    A row = block_reduce<A>(part, false, buf);
    if (threadIdx.x == 0) atomicAdd(loss, scale * row);
}

template <typename T, typename A>
__global__ void kl_bwd_kernel(const T *logits, const void *target, dsa_dtype tdt, const uint8_t *is_real, A scale,
                              const A *dloss, int64_t N, A *dlogits) {
    __shared__ A buf[32];
    int64_t t = blockIdx.x;
    if (is_real && !is_real[t]) return;
    const T *lg = logits + t * N;
    A m, lse;
    row_logsumexp<T, A>(lg, N, buf, &m, &lse);
    if (m == (A)-INFINITY) return;
    A c = scale * dloss[0];
    for (int64_t j = threadIdx.x; j < N; j += ROW_NT) {
        A l = (A)dsa_to_float(lg[j]);
        if (!slot_ok(l)) continue;
        dlogits[t * N + j] += c * (exp(l - lse) - (A)dsa_ld_any(target, tdt, t * N + j));
    }
}

extern "C" dsa_status dsa_kl_loss_fwd_cuda(const dsa_tensor *logits, const dsa_tensor *target,
                                           const dsa_tensor *is_real, double coeff, double n_rows, dsa_tensor *loss) {
    int64_t T_ = logits->shape[0], N = logits->shape[1];
    double scale = coeff / n_rows;
    CUDA_TRY(cudaMemsetAsync(loss->data, 0, dsa_dtype_size(loss->dtype), dsa_stream()));
    if (T_ == 0) return DSA_OK;
    const uint8_t *real = is_real ? (const uint8_t *)is_real->data : NULL;
    switch (logits->dtype) {
    case DSA_F32:
        kl_fwd_kernel<float, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const float *)logits->data, target->data, target->dtype, real, (float)scale, N, (float *)loss->data);
        break;
    case DSA_BF16:
        kl_fwd_kernel<__nv_bfloat16, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const __nv_bfloat16 *)logits->data, target->data, target->dtype, real, (float)scale, N, (float *)loss->data);
        break;
    case DSA_F64:
        kl_fwd_kernel<double, double><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const double *)logits->data, target->data, target->dtype, real, scale, N, (double *)loss->data);
        break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_kl_indexer_loss (cuda): unsupported dtype %s", dsa_dtype_name(logits->dtype));
    }
    CUDA_LAUNCH_CHECK("kl_loss_fwd");
    return DSA_OK;
}

extern "C" dsa_status dsa_kl_loss_bwd_cuda(const dsa_tensor *logits, const dsa_tensor *target,
                                           const dsa_tensor *is_real, double coeff, double n_rows,
                                           const dsa_tensor *dloss, dsa_tensor *dlogits) {
    int64_t T_ = logits->shape[0], N = logits->shape[1];
    double scale = coeff / n_rows;
    if (T_ == 0) return DSA_OK;
    const uint8_t *real = is_real ? (const uint8_t *)is_real->data : NULL;
    switch (logits->dtype) {
    case DSA_F32:
        kl_bwd_kernel<float, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const float *)logits->data, target->data, target->dtype, real, (float)scale, (const float *)dloss->data, N,
            (float *)dlogits->data);
        break;
    case DSA_BF16:
        kl_bwd_kernel<__nv_bfloat16, float><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const __nv_bfloat16 *)logits->data, target->data, target->dtype, real, (float)scale,
            (const float *)dloss->data, N, (float *)dlogits->data);
        break;
    case DSA_F64:
        kl_bwd_kernel<double, double><<<(unsigned)T_, ROW_NT, 0, dsa_stream()>>>(
            (const double *)logits->data, target->data, target->dtype, real, scale, (const double *)dloss->data, N,
            (double *)dlogits->data);
        break;
    default: return dsa_error_set(DSA_ERR_DTYPE, "dsa_kl_indexer_loss backward (cuda): unsupported dtype %s", dsa_dtype_name(logits->dtype));
    }
    CUDA_LAUNCH_CHECK("kl_loss_bwd");
    return DSA_OK;
}
